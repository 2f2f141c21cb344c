//! MQTT edges: brokers cannot bind one topic to another, so the coordinator
//! subscribes to the source topic and republishes every message to each
//! target topic, bytes unchanged (the original re-encoded payloads, which
//! broke binary data).
//!
//! One subscription per source topic, made once and kept: removing an edge
//! only drops the target from the list, and adding it back puts it there
//! again. A message is therefore forwarded at most once per edge, however
//! often edges are removed and added (the original subscribed again on each
//! add and forwarded twice). The forwarding task ends with the coordinator
//! ([`Forwarder::close`]); the subscriptions end with the transport.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::transport::{Target, Transport};
use crate::{Delivery, Result};

pub struct Forwarder {
    transport: Arc<dyn Transport>,
    routes: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    subscribed: Mutex<BTreeSet<String>>,
    sink: mpsc::Sender<Delivery>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: CancellationToken,
}

impl Forwarder {
    pub fn new(transport: Arc<dyn Transport>) -> Forwarder {
        let (sink, rx) = mpsc::channel(4096);
        let routes: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Default::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(transport.clone(), routes.clone(), rx, stop.clone()));
        Forwarder { transport, routes, subscribed: Default::default(), sink, task: Mutex::new(Some(task)), stop }
    }

    /// Let the task forward what it already received, and wait for it.
    /// The subscriptions are left to end with the transport: on a
    /// persistent (QoS 1) session an UNSUBSCRIBE would tell the broker to
    /// keep nothing for them until the next start, and what is published
    /// meanwhile would be lost.
    pub async fn close(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Forward `src` to `tgt` from now on.
    pub async fn add(&self, src: &str, tgt: &str) -> Result<()> {
        if src == tgt {
            return Ok(()); // same topic: already connected, forwarding would loop
        }
        self.routes.lock().unwrap().entry(src.to_owned()).or_default().insert(tgt.to_owned());
        let first = self.subscribed.lock().unwrap().insert(src.to_owned());
        if first {
            if let Err(e) = self.transport.subscribe(src, Arc::from(src), self.sink.clone()).await {
                self.subscribed.lock().unwrap().remove(src);
                self.remove(src, tgt);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stop forwarding `src` to `tgt`.
    pub fn remove(&self, src: &str, tgt: &str) {
        if let Some(t) = self.routes.lock().unwrap().get_mut(src) {
            t.remove(tgt);
        }
    }
}

/// Until stopped, and then until what was received is forwarded.
async fn run(transport: Arc<dyn Transport>, routes: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>, mut rx: mpsc::Receiver<Delivery>, stop: CancellationToken) {
    loop {
        let d = tokio::select! {
            biased;
            d = rx.recv() => match d {
                Some(d) => d,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let targets: Vec<String> = routes.lock().unwrap().get(d.inport()).map(|t| t.iter().cloned().collect()).unwrap_or_default();
        for t in targets {
            if let Err(e) = transport.publish(Target::Queue(t.clone()), d.payload().clone(), false).await {
                warn!("forwarding {} -> {t} failed: {e}", d.inport());
            }
        }
        let _ = d.ack();
    }
}
