//! A broker connection without a participant: what msgflo-nodejs's
//! `transport.getClient/getBroker` give tools and tests (declare queues,
//! send, subscribe, bind). Mirrors `core/src/transport/mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use msgflo::edge::{self, Wire};
use msgflo::transport::{self, ConnectOptions, Declaration, PortKind, Target, Transport};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::sync::{mpsc, Mutex};

use crate::error::{to_js, usage, Result};
use crate::message::CoreDelivery;

#[napi]
pub struct CoreClient {
    transport: Arc<dyn Transport>,
    tx: mpsc::Sender<msgflo::Delivery>,
    rx: Mutex<mpsc::Receiver<msgflo::Delivery>>,
}

fn kind(t: &str) -> Result<PortKind> {
    match t {
        "inqueue" => Ok(PortKind::In),
        "outqueue" => Ok(PortKind::Out),
        other => Err(usage(format!("queue type must be 'inqueue' or 'outqueue', not {other:?}"))),
    }
}

#[napi]
impl CoreClient {
    #[napi(factory)]
    pub async fn connect(url: String) -> Result<CoreClient> {
        let transport = transport::connect(&url, &ConnectOptions::default()).await.map_err(to_js)?;
        let (tx, rx) = mpsc::channel(usize::from(transport::DEFAULT_PREFETCH));
        Ok(CoreClient { transport, tx, rx: Mutex::new(rx) })
    }

    /// Declare an inport queue or outport exchange, as participants do.
    #[napi]
    pub async fn create_queue(&self, queue_type: String, name: String, persistent: Option<bool>) -> Result<()> {
        let decl = Declaration { kind: kind(&queue_type)?, queue: name, persistent: persistent.unwrap_or(true) };
        self.transport.declare(&decl).await.map_err(to_js)
    }

    /// Publish to an inqueue (straight into the queue) or outqueue (exchange).
    #[napi]
    pub async fn send_to(&self, queue_type: String, name: String, payload: Buffer) -> Result<()> {
        let target = match kind(&queue_type)? {
            PortKind::In => Target::Queue(name),
            PortKind::Out | PortKind::Router => Target::Exchange(name),
        };
        self.transport.publish(target, payload.to_vec().into(), true).await.map_err(to_js)
    }

    /// Consume a queue; its deliveries come out of `recvBatch`.
    #[napi]
    pub async fn subscribe(&self, queue: String) -> Result<()> {
        let port: Arc<str> = Arc::from(queue.as_str());
        self.transport.subscribe(&queue, port, self.tx.clone()).await.map_err(to_js)
    }

    #[napi]
    pub async fn recv_batch(&self, max: u32, timeout_ms: u32) -> Vec<CoreDelivery> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(timeout_ms.into()), rx.recv()).await {
            out.push(CoreDelivery { inner: d.into() });
            while out.len() < max.max(1) as usize {
                match rx.try_recv() {
                    Ok(d) => out.push(CoreDelivery { inner: d.into() }),
                    Err(_) => break,
                }
            }
        }
        out
    }

    /// A broker edge of the original's kinds: `pubsub` (src exchange ->
    /// tgt queue), `roundrobin` (through `out-<src>`), `deadletter` (nacked
    /// messages of queue src go to queue tgt). `add` false removes it.
    #[napi]
    pub async fn edge(&self, kind: String, src: String, tgt: String, add: bool) -> Result<()> {
        let w = match kind.as_str() {
            "pubsub" => Wire::PubSub { src, tgt },
            "roundrobin" => Wire::RoundRobin { src, tgt },
            "deadletter" => Wire::DeadLetter { tgt: src, deadletter: tgt },
            other => return Err(to_js(msgflo::Error::InvalidDefinition(format!("unsupported binding type {other:?}")))),
        };
        let t = self.transport.as_ref();
        if add { edge::add(t, &w).await } else { edge::remove(t, &w).await }.map_err(to_js)
    }

    /// Receive every discovery message (through `recvBatch`, inport `fbp`).
    #[napi]
    pub async fn subscribe_discovery(&self) -> Result<()> {
        self.transport.subscribe_discovery(self.tx.clone()).await.map_err(to_js)
    }

    /// Publish a discovery message (JSON text of the whole envelope) on `fbp`.
    #[napi]
    pub async fn announce(&self, message: Buffer) -> Result<()> {
        self.transport.announce(message.to_vec().into()).await.map_err(to_js)
    }

    #[napi]
    pub async fn close(&self) -> Result<()> {
        self.transport.close().await.map_err(to_js)
    }
}
