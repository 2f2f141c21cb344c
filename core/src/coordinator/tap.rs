//! Taps: copies of what participants send on watched outports, for the FBP
//! runtime's `network:data` and the live view.
//!
//! On AMQP an outport is a fanout exchange, so a tap is one more queue bound
//! to it: private to this coordinator, auto-deleted with its connection,
//! never touching the participants' own queues (a watched edge loses
//! nothing and delivers nothing twice). On MQTT a tap is a second
//! subscription to the outport's topic. Taps are made when the outport's
//! queue is known (from discovery). An AMQP tap nobody watches any more is
//! unbound from the outport (the broker stops copying; it is bound again
//! when watched again); an MQTT tap stays subscribed (the transport has no
//! unsubscribe yet) and its copies are dropped here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::registry::Registry;
use crate::transport::{Declaration, PortKind, Transport};
use crate::Delivery;

pub(super) struct Taps {
    /// Outports `(role, port)` someone watches.
    wanted: BTreeSet<(String, String)>,
    /// Made taps: `(role, port)` -> (outport queue, tap queue, bound now).
    made: BTreeMap<(String, String), (String, String, bool)>,
    /// Tap queue (the deliveries' inport) -> `(role, port)`.
    by_queue: BTreeMap<String, (String, String)>,
    sink: mpsc::Sender<Delivery>,
    /// Failures already logged.
    said: BTreeSet<String>,
    prefix: String,
    /// The coordinator's broker speaks MQTT (taps are subscriptions).
    mqtt: bool,
}

impl Taps {
    pub(super) fn new(sink: mpsc::Sender<Delivery>, mqtt: bool) -> Taps {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Taps { wanted: BTreeSet::new(), made: BTreeMap::new(), by_queue: BTreeMap::new(), sink, said: BTreeSet::new(), prefix: format!("msgflo-tap.{}", &id[..8]), mqtt }
    }

    pub(super) fn want(&mut self, wanted: BTreeSet<(String, String)>) {
        self.wanted = wanted;
    }

    /// The watched outport a tapped delivery came from (`None` once it is
    /// no longer watched: its copies are dropped).
    pub(super) fn source(&self, inport: &str) -> Option<(String, String)> {
        let key = self.by_queue.get(inport)?;
        self.wanted.contains(key).then(|| key.clone())
    }

    /// Make the taps that are wanted and possible now, unbind the AMQP
    /// taps nobody wants, bind again those wanted again. A tap is remade
    /// when the participant announces another queue.
    pub(super) async fn reconcile(&mut self, transport: &dyn Transport, registry: &Registry) {
        let mqtt = self.mqtt;
        if !mqtt {
            for (key, (queue, tap, bound)) in self.made.iter_mut() {
                let wanted = self.wanted.contains(key);
                if wanted == *bound {
                    continue;
                }
                let done = if wanted { transport.bind(queue, tap).await } else { transport.unbind(queue, tap).await };
                match done {
                    Ok(()) => {
                        debug!("{} {}.{} ({queue})", if wanted { "tapping again" } else { "no longer tapping" }, key.0, key.1);
                        *bound = wanted;
                    }
                    Err(e) => warn!("cannot {} the tap of {}.{} ({queue}): {e}", if wanted { "bind" } else { "unbind" }, key.0, key.1),
                }
            }
        }
        for key in self.wanted.clone() {
            let Some(queue) = registry.role(&key.0).and_then(|r| r.queue(&key.1, false).ok().flatten()).map(str::to_owned) else {
                continue;
            };
            if self.made.get(&key).is_some_and(|(q, _, _)| *q == queue) {
                continue;
            }
            let tap = if mqtt { queue.clone() } else { format!("{}.{queue}", self.prefix) };
            match make(transport, mqtt, &queue, &tap, self.sink.clone()).await {
                Ok(()) => {
                    debug!("tapping {}.{} ({queue})", key.0, key.1);
                    self.by_queue.insert(tap.clone(), key.clone());
                    self.made.insert(key, (queue, tap, true));
                }
                Err(e) => {
                    if self.said.insert(queue.clone()) {
                        warn!("cannot watch {}.{} ({queue}): {e}", key.0, key.1);
                    }
                }
            }
        }
    }

    /// Delete the tap queues (they would go with the connection anyway).
    pub(super) async fn close(&mut self, transport: &dyn Transport) {
        if self.mqtt {
            return;
        }
        for (_, tap, _) in std::mem::take(&mut self.made).into_values() {
            let _ = transport.delete(&tap).await;
        }
    }
}

async fn make(transport: &dyn Transport, mqtt: bool, queue: &str, tap: &str, sink: mpsc::Sender<Delivery>) -> crate::Result<()> {
    if !mqtt {
        transport.declare(&Declaration { kind: PortKind::In, queue: tap.to_owned(), persistent: false }).await?;
        transport.bind(queue, tap).await?;
    }
    transport.subscribe(tap, Arc::from(tap), sink).await
}
