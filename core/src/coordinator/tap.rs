//! Taps: copies of what participants send on watched outports, for the FBP
//! runtime's `network:data` and the live view.
//!
//! On AMQP an outport is a fanout exchange, so a tap is one more queue bound
//! to it: private to this coordinator, auto-deleted with its connection,
//! never touching the participants' own queues (a watched edge loses
//! nothing and delivers nothing twice). On MQTT a tap is a second
//! subscription to the outport's topic. Taps are made when the outport's
//! queue is known (from discovery). A tap nobody watches any more stops
//! costing anything: on AMQP it is unbound from the outport (the broker
//! stops copying), on MQTT its subscription ends (the broker stops
//! sending; an MQTT edge the coordinator forwards from the same topic is a
//! subscription of its own and goes on). Watched again, it is bound or
//! subscribed again.

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
    /// Made taps: `(role, port)` -> (outport queue, tap queue, bound or
    /// subscribed now).
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

    /// Make the taps that are wanted and possible now, stop the taps
    /// nobody wants, start again those wanted again. A tap is remade when
    /// the participant announces another queue.
    pub(super) async fn reconcile(&mut self, transport: &dyn Transport, registry: &Registry) {
        let mqtt = self.mqtt;
        for (key, (queue, tap, on)) in self.made.iter_mut() {
            let wanted = self.wanted.contains(key);
            if wanted == *on {
                continue;
            }
            let done = match (mqtt, wanted) {
                (false, true) => transport.bind(queue, tap).await,
                (false, false) => transport.unbind(queue, tap).await,
                (true, true) => transport.subscribe(tap, Arc::from(tap.as_str()), self.sink.clone()).await,
                (true, false) => transport.unsubscribe(tap, &self.sink).await,
            };
            match done {
                Ok(()) => {
                    debug!("{} {}.{} ({queue})", if wanted { "tapping again" } else { "no longer tapping" }, key.0, key.1);
                    *on = wanted;
                }
                Err(e) => warn!("cannot {} the tap of {}.{} ({queue}): {e}", if wanted { "start" } else { "stop" }, key.0, key.1),
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

    /// Delete the tap queues (they would go with the connection anyway),
    /// or end the MQTT subscriptions.
    pub(super) async fn close(&mut self, transport: &dyn Transport) {
        for (_, tap, on) in std::mem::take(&mut self.made).into_values() {
            if !self.mqtt {
                let _ = transport.delete(&tap).await;
            } else if on {
                let _ = transport.unsubscribe(&tap, &self.sink).await;
            }
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
