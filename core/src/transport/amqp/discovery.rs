//! Discovery on AMQP, as the original does it, plus the observers' relay.
//!
//! Participants announce themselves on the shared durable queue `fbp`
//! ([`DISCOVERY_QUEUE`]), declared once per connection. Several observers
//! (coordinators, `msgflo status`) may listen at once: each hears the
//! fanout exchange [`DISCOVERY_FANOUT`] through a transient queue of its
//! own, and takes its turn consuming `fbp` and republishing what it takes
//! there to the fanout (the relay). Observers also talk to each other
//! (queries, replays) on the fanout directly.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;
use tokio::sync::mpsc;
use tracing::warn;

use super::{declare_error, on_fresh_channel, Amqp, Inner};
use crate::broker::QueueType;
use crate::error::{Error, Result};
use crate::message::{Delivery, Payload};
use crate::transport::{Declaration, PortKind, Target, Transport, DISCOVERY_FANOUT, DISCOVERY_QUEUE};

/// Declare `fbp` if this connection has not yet.
async fn ensure_discovery_queue(amqp: &Amqp) -> Result<()> {
    let mut state = amqp.inner.state.lock().await;
    if let Some(live) = state.live.clone() {
        if state.fbp_declared != Some(live.generation) {
            declare_discovery_queue(&live.connection, amqp.inner.url.queue_type).await?;
            state.fbp_declared = Some(live.generation);
        }
    }
    Ok(())
}

/// [`Transport::subscribe_discovery`]: hear the fanout, and relay from `fbp`.
pub(super) async fn subscribe(amqp: &Amqp, sink: mpsc::Sender<Delivery>) -> Result<()> {
    ensure_discovery_queue(amqp).await?;
    // Every observer hears the fanout through its own transient queue...
    amqp.declare(&Declaration { kind: PortKind::Out, queue: DISCOVERY_FANOUT.into(), persistent: true }).await?;
    let private = format!("{DISCOVERY_FANOUT}.{}", uuid::Uuid::new_v4().simple());
    amqp.declare(&Declaration { kind: PortKind::In, queue: private.clone(), persistent: false }).await?;
    amqp.bind(DISCOVERY_FANOUT, &private).await?;
    amqp.subscribe(&private, Arc::from(DISCOVERY_QUEUE), sink).await?;
    // ...and takes its turn relaying from the shared `fbp` queue. The
    // ack follows the confirm of the republish (pipeline order), so a
    // message is never lost between the two.
    let (tx, rx) = mpsc::channel::<Delivery>(256);
    amqp.subscribe(DISCOVERY_QUEUE, Arc::from(DISCOVERY_QUEUE), tx).await?;
    amqp.inner.tasks.spawn(relay(amqp.inner.clone(), rx));
    Ok(())
}

/// Republish what this observer takes from `fbp` to the fanout, until
/// closed.
async fn relay(inner: Arc<Inner>, mut rx: mpsc::Receiver<Delivery>) {
    loop {
        let d = tokio::select! {
            _ = inner.closed.cancelled() => return,
            d = rx.recv() => match d { Some(d) => d, None => return },
        };
        let target = Target::Exchange(DISCOVERY_FANOUT.into());
        // The sender's timestamp travels with it.
        match inner.publish(target, d.payload().clone(), false, d.message().timestamp).await {
            Ok(()) => {
                let _ = d.ack();
            }
            Err(_) => return, // closed: dropping `d` requeues it
        }
    }
}

/// [`Transport::broadcast_to_observers`]. Declares the observers' exchange
/// first (recorded, so once per connection): a participant's stats report
/// may be the first message for it on a broker no observer has used yet,
/// and a publish to a missing exchange would close the publish channel.
pub(super) async fn broadcast(amqp: &Amqp, message: Payload) -> Result<()> {
    let fanout = Declaration { kind: PortKind::Out, queue: DISCOVERY_FANOUT.into(), persistent: true };
    // Recorded declarations are replayed on every connection: one
    // round trip the first time only (a coordinator answers a query
    // with one broadcast per participant).
    if !amqp.inner.state.lock().await.declarations.contains(&fanout) {
        amqp.declare(&fanout).await?;
    }
    amqp.inner.publish(Target::Exchange(DISCOVERY_FANOUT.into()), message, false, None).await
}

/// [`Transport::announce`]. Stamped with the time (seconds), so an observer
/// that finds it in the `fbp` backlog later knows how old it is.
pub(super) async fn announce(amqp: &Amqp, message: Payload) -> Result<()> {
    ensure_discovery_queue(amqp).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).ok();
    amqp.inner.publish(Target::Queue(DISCOVERY_QUEUE.into()), message, false, now).await
}

/// How long an announcement may wait in `fbp` (AMQP `expiration`, in
/// milliseconds): three heartbeat periods, the same as an observer's expiry,
/// and at least 10 s, so that a busy observer (or a short test period) does
/// not lose a fresh one.
pub fn discovery_expiration() -> String {
    (crate::discovery::heartbeat_interval() * 3).max(Duration::from_secs(10)).as_millis().to_string()
}

/// The `fbp` queue as the original declares it: durable, no arguments.
/// With `queue_type=quorum`, a quorum queue (so discovery survives the
/// loss of the node it lived on) unless it exists already as the original
/// declared it: then that one is used, with a warning (a coordinator or
/// participant of the original's on the same vhost keeps working).
pub(super) async fn declare_discovery_queue(connection: &Connection, queue_type: QueueType) -> Result<()> {
    let declare = |quorum: bool| {
        on_fresh_channel(connection, move |ch| async move {
            let mut args = FieldTable::default();
            let mut wanted = "queue durable=true".to_owned();
            if quorum {
                args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
                wanted.push_str(" x-queue-type=quorum");
            }
            ch.queue_declare(DISCOVERY_QUEUE.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
                .await
                .map(|_| ())
                .map_err(|e| declare_error(e, "queue", DISCOVERY_QUEUE, wanted))
        })
    };
    if queue_type == QueueType::Quorum {
        match declare(true).await {
            Err(Error::DeclarationConflict { reason, .. }) => {
                warn!(%reason, "the discovery queue {DISCOVERY_QUEUE:?} exists as a classic queue (declared the original's way); using it, so discovery is not replicated");
            }
            other => return other,
        }
    }
    declare(false).await
}
