//! One interface over the brokers: AMQP 0-9-1, MQTT 3.1.1 and in-process.
//!
//! A transport owns one broker connection and keeps it alive: it records
//! every declaration and subscription it was asked for and replays them
//! after a reconnect, then bumps its [`Transport::generation`] so the owner
//! can re-announce. Publishes are queued in order with settlements, so an
//! input is acked only after the outputs sent before its ack are confirmed.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::broker::{BrokerUrl, Scheme};
use crate::error::{Error, Result};
use crate::message::{Delivery, Payload};

pub mod amqp;
pub mod memory;
pub mod mqtt;

/// The queue discovery messages go to (AMQP queue, MQTT topic).
pub const DISCOVERY_QUEUE: &str = "fbp";

/// AMQP only: the fanout exchange every observer of discovery listens on.
/// Participants (ours and the original's) send discovery into the shared
/// work queue `fbp`, where each message reaches one consumer only; whichever
/// observer takes it from `fbp` republishes it here, so every observer (each
/// with a private queue bound to this exchange) sees every message once.
pub const DISCOVERY_FANOUT: &str = "msgflo.discovery";

/// The two kinds of port object a participant declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Queue `Q` with dead-letter exchange `dead-Q`, plus a fanout exchange
    /// `Q` bound to it (so sending to the "port" as an exchange works too).
    In,
    /// Fanout exchange `Q`.
    Out,
    /// Direct exchange `Q` (durable): the `out-<src>` exchange of a
    /// roundrobin edge. Not a port; declared by coordinators.
    Router,
}

/// A declaration to make on the broker (and to replay after reconnects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub kind: PortKind,
    pub queue: String,
    /// Durable objects and persistent messages (`false`: auto-delete, transient).
    pub persistent: bool,
}

/// Where a publish goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An outport: the fanout exchange of that name (AMQP), the topic (MQTT).
    Exchange(String),
    /// Straight into a queue: default exchange, routing key = queue (AMQP).
    Queue(String),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Exchange(n) | Target::Queue(n) => n,
        }
    }
}

/// Per-connection options.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// AMQP consumer prefetch (unacked deliveries in flight per consumer).
    pub prefetch: u16,
    /// Most unconfirmed publishes before `publish` waits (backpressure).
    pub max_unconfirmed: usize,
    /// Name shown in the broker's management UI.
    pub connection_name: String,
}

/// Where this machine keeps msgflo's small state between runs (MQTT
/// session ids, the IIPs a coordinator sent): `MSGFLO_STATE_DIR`, else
/// `$XDG_STATE_HOME/msgflo`, else `~/.local/state/msgflo`.
pub fn state_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("MSGFLO_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("msgflo")))
        .or_else(|| env("HOME").map(|d| d.join(".local/state/msgflo")))
        .unwrap_or_else(|| std::env::temp_dir().join("msgflo-state"))
}

/// Default prefetch. 1 is 3-5x slower; the relay benchmark (`bench/`) levels
/// off from about 100; 256 keeps memory small with 16-byte to 64 KiB messages.
pub const DEFAULT_PREFETCH: u16 = 256;

/// The prefetch a process was given in `MSGFLO_PREFETCH` (1..=65535; the
/// coordinator sets it to a scaled role's concurrency, so that the jobs
/// are shared between its instances instead of held by the first).
pub fn prefetch_from_env() -> Option<u16> {
    let v = std::env::var("MSGFLO_PREFETCH").ok()?;
    match v.trim().parse::<u16>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            tracing::warn!(value = %v, "ignoring MSGFLO_PREFETCH: not a whole number from 1 to 65535");
            None
        }
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            prefetch: prefetch_from_env().unwrap_or(DEFAULT_PREFETCH),
            max_unconfirmed: 4096,
            connection_name: "msgflo".into(),
        }
    }
}

/// What every broker implementation provides.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The broker URL with the password hidden, for logs.
    fn describe(&self) -> String;

    /// Declare port objects; recorded and replayed after reconnects.
    async fn declare(&self, decl: &Declaration) -> Result<()>;

    /// Consume `queue`; deliveries, tagged with `inport`, go to `sink`.
    /// Recorded and resumed after reconnects. Ends when `sink` is closed.
    async fn subscribe(&self, queue: &str, inport: Arc<str>, sink: mpsc::Sender<Delivery>) -> Result<()>;

    /// End the subscriptions to `queue` that deliver into `sink` (others to
    /// the same queue go on). When it returns nothing more is taken from
    /// the broker for them; what was already received may still be handed
    /// to `sink` and settles as usual. Not resumed after a reconnect.
    /// Nothing to end is fine.
    async fn unsubscribe(&self, queue: &str, sink: &mpsc::Sender<Delivery>) -> Result<()>;

    /// Publish. Returns once queued in order; confirmation is tracked by the
    /// transport (and gates the acks issued after this call). Waits while
    /// too many publishes are unconfirmed or the broker is away.
    async fn publish(&self, target: Target, payload: Payload, persistent: bool) -> Result<()>;

    /// Route everything published to `exchange` (an outport) into `queue`
    /// (an inport): a pubsub edge. Not available on MQTT, which cannot bind
    /// topics (a coordinator forwards instead).
    async fn bind(&self, exchange: &str, queue: &str) -> Result<()>;

    /// Remove a binding made by [`Transport::bind`].
    async fn unbind(&self, exchange: &str, queue: &str) -> Result<()>;

    /// Route everything published to exchange `source` into exchange
    /// `destination` (AMQP exchange-to-exchange binding, used for roundrobin
    /// edges); recorded and replayed after reconnects. Other transports
    /// refuse with a clear error.
    async fn bind_exchange(&self, source: &str, destination: &str) -> Result<()> {
        Err(Error::broker(
            format!("bind exchange {destination:?} to {source:?}"),
            format!("{} cannot bind exchanges", self.describe()),
        ))
    }

    /// Remove a binding made by [`Transport::bind_exchange`].
    async fn unbind_exchange(&self, source: &str, destination: &str) -> Result<()> {
        self.bind_exchange(source, destination).await
    }

    /// Messages ready in `queue` (AMQP; the in-process broker), `None` where
    /// the protocol cannot tell (MQTT) or the queue does not exist.
    async fn queue_depth(&self, _queue: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Delete a queue and an exchange of this name, if they exist (tools,
    /// tests). Nothing to delete on MQTT.
    async fn delete(&self, name: &str) -> Result<()>;

    /// Receive every discovery message sent to `fbp`, tagged with inport
    /// `fbp`. Several observers (on one connection or many) each get every
    /// message. AMQP: the observer also consumes the shared `fbp` work queue,
    /// as the original coordinator does, and republishes what it takes there
    /// to [`DISCOVERY_FANOUT`], which every observer hears through a private
    /// queue. MQTT topics fan out by themselves.
    async fn subscribe_discovery(&self, sink: mpsc::Sender<Delivery>) -> Result<()>;

    /// Send a discovery message to `fbp`.
    async fn announce(&self, message: Payload) -> Result<()>;

    /// Send a message to every discovery observer and nobody else (queries
    /// and replays between coordinators and tools; never seen by original
    /// participants or the original coordinator). AMQP: the
    /// [`DISCOVERY_FANOUT`] exchange; MQTT: the topic of that name.
    async fn broadcast_to_observers(&self, message: Payload) -> Result<()> {
        self.publish(Target::Exchange(DISCOVERY_FANOUT.into()), message, false).await
    }

    /// Connection generation: 1 after the first connect, +1 per reconnect.
    fn generation(&self) -> watch::Receiver<u64>;

    /// Wait until everything published and settled so far has reached the
    /// broker (confirmed where the protocol confirms).
    async fn flush(&self) -> Result<()>;

    /// Flush, then close the connection. Later calls fail with `Closed`.
    async fn close(&self) -> Result<()>;
}

/// Connect to the broker the URL names.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Transport>> {
    let parsed = BrokerUrl::parse(url)?;
    Ok(match parsed.scheme {
        Scheme::Amqp { .. } => Arc::new(amqp::Amqp::connect(parsed, options).await?),
        Scheme::Mqtt { .. } => Arc::new(mqtt::Mqtt::connect(parsed, options).await?),
        Scheme::Memory => Arc::new(memory::MemoryTransport::connect(&parsed.host)),
    })
}

/// Exponential backoff for reconnects: 100 ms doubling to 5 s, each delay
/// drawn at random from its upper half ("equal jitter"), so that the
/// participants of a restarted broker do not all reconnect in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: std::time::Duration,
}

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(crate) fn next_delay(&mut self) -> std::time::Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d / 2 + d.mul_f64(fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn delays_double_to_the_cap_within_their_upper_half_and_vary() {
        let mut b = Backoff::new();
        let mut bound = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= bound / 2 && d <= bound, "{d:?} not in [{:?}, {bound:?}]", bound / 2);
            bound = (bound * 2).min(Duration::from_secs(5));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        // Two participants after the same outage: not in lockstep.
        let draws: std::collections::BTreeSet<Duration> = (0..20).map(|_| Backoff::new().next_delay()).collect();
        assert!(draws.len() > 1, "{draws:?}");
    }
}
