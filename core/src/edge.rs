//! Broker edges between ports, by queue names, and how each is made on a
//! broker that can bind (AMQP, the in-process broker). Coordinators use
//! these, and so do bindings that expose the original's broker API
//! (msgflo-nodejs `getBroker().addBinding`). MQTT cannot bind: a
//! coordinator forwards instead (`coordinator::forward`).

use serde::Serialize;

use crate::transport::{Declaration, PortKind, Transport};
use crate::Result;

/// One broker-level edge, by queue names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Wire {
    /// Every message on outport exchange `src` also goes to inport queue
    /// `tgt` (AMQP queue binding; MQTT: forwarded by the coordinator).
    PubSub { src: String, tgt: String },
    /// Like pubsub, through a direct exchange `out-<src>` (the original's
    /// roundrobin edge: workers of `tgt` share its queue).
    RoundRobin { src: String, tgt: String },
    /// Messages nacked on `tgt` go to queue `deadletter` (AMQP: fanout
    /// exchange `dead-<tgt>`, which `tgt` names as its dead-letter exchange).
    DeadLetter { tgt: String, deadletter: String },
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wire::PubSub { src, tgt } => write!(f, "{src} -> {tgt}"),
            Wire::RoundRobin { src, tgt } => write!(f, "{src} -> {tgt} (roundrobin)"),
            Wire::DeadLetter { tgt, deadletter } => write!(f, "{tgt} -x {deadletter} (dead letters)"),
        }
    }
}

/// Make `w` on the broker: a queue binding (pubsub); a durable direct
/// exchange `out-<src>` bound to `src` with `tgt` bound to it (roundrobin);
/// a durable fanout exchange `dead-<tgt>` with the dead-letter queue bound
/// to it (the inport queue `tgt` names `dead-<tgt>` as its dead-letter
/// exchange). Idempotent.
pub async fn add(t: &dyn Transport, w: &Wire) -> Result<()> {
    match w {
        Wire::PubSub { src, tgt } => t.bind(src, tgt).await,
        Wire::RoundRobin { src, tgt } => {
            let router = format!("out-{src}");
            t.declare(&Declaration { kind: PortKind::Router, queue: router.clone(), persistent: true }).await?;
            t.bind_exchange(src, &router).await?;
            t.bind(&router, tgt).await
        }
        Wire::DeadLetter { tgt, deadletter } => {
            let dead = format!("dead-{tgt}");
            t.declare(&Declaration { kind: PortKind::Out, queue: dead.clone(), persistent: true }).await?;
            t.bind(&dead, deadletter).await
        }
    }
}

/// Undo [`add`] (the exchanges stay; other edges may use them).
pub async fn remove(t: &dyn Transport, w: &Wire) -> Result<()> {
    match w {
        Wire::PubSub { src, tgt } => t.unbind(src, tgt).await,
        Wire::RoundRobin { src, tgt } => t.unbind(&format!("out-{src}"), tgt).await,
        Wire::DeadLetter { tgt, deadletter } => t.unbind(&format!("dead-{tgt}"), deadletter).await,
    }
}
