//! AMQP 0-9-1 (RabbitMQ) with lapin, declaring exactly what the original
//! MsgFlo declares, and losing nothing while the broker comes and goes.
//!
//! Three tasks per connection, all ended by `closed`:
//! - the **supervisor** (`amqp/supervisor.rs`) notices a lost connection (lapin's error events, a
//!   consumer stream failing, a failed publish), reconnects with backoff,
//!   replays declarations and subscriptions, then bumps `generation`;
//! - the **pipeline** (`amqp/pipeline.rs`) owns every publish and settlement, in the order they
//!   were issued: publishes go out on a confirm channel; an ack waits until
//!   the publishes issued before it are confirmed (a refused publish turns
//!   the ack of the delivery that caused it into a requeue); publishes not
//!   confirmed when the connection drops are sent again after reconnecting;
//!   acks released together whose delivery tags follow everything settled
//!   so far go out as one `basic.ack` with `multiple` (settlement frames
//!   are made in order, so it covers exactly them);
//!   the bookkeeping of both (which publishes a settlement waits for,
//!   which acks go out together) is `amqp/ledger.rs`, without I/O,
//!   unit-tested without a broker;
//! - one **consumer** task per subscription (`amqp/connection.rs`),
//!   forwarding deliveries to the participant's channel with the generation
//!   they belong to (settlements for an older generation are dropped: the
//!   broker has requeued those).
//!   A consumer the broker cancels (its queue was deleted) concerns that
//!   subscription only: a queue this connection declared is declared
//!   again and consumed again, one someone else declared ends the
//!   subscription; the connection and the others go on.
//!
//! Every task is spawned on the connection's `TaskTracker`; `close` waits
//! for them. The supervisor holds the state lock only while it tries to
//! connect, not for a whole outage: declarations, bindings and
//! subscriptions made while the broker is away are recorded and replayed.
//!
//! The files:
//! - this one: [`Amqp`] and its shared state (`Inner`, `State`, `Live`,
//!   `Subscription`, the pipeline's `Op`s), declarations and bindings (each
//!   on a fresh channel), and the `Transport` implementation, which
//!   delegates to the modules below;
//! - `amqp/connection.rs`: opening a connection (`Inner::open`: a cluster's
//!   nodes in turn, channels, replaying the records, watching its events),
//!   the consumer tasks (`Inner::start_consumer`), and a consumer the broker
//!   cancels (`consumer_cancelled`);
//! - `amqp/supervisor.rs`: reconnecting after a loss;
//! - `amqp/pipeline.rs` and `amqp/ledger.rs`: publishes and settlements, as
//!   above;
//! - `amqp/discovery.rs`: the discovery queue `fbp` (declared once per
//!   connection, quorum or classic), announcements and their expiration,
//!   broadcasts to observers, and each observer's relay from `fbp` to the
//!   observers' fanout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicCancelOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use tokio::sync::{mpsc, oneshot, watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

mod connection;
mod discovery;
mod ledger;
mod pipeline;
mod supervisor;

use pipeline::Pipeline;
use supervisor::supervise;

pub use discovery::discovery_expiration;

use super::{ConnectOptions, Declaration, PortKind, Target, Transport};
use crate::broker::{BrokerUrl, QueueType};
use crate::error::{Error, Result};
use crate::message::{Delivery, Payload, Settle, Settlement};

/// AMQP reply code for "declared before with other options".
const PRECONDITION_FAILED: u16 = 406;

/// A connection to RabbitMQ (or any AMQP 0-9-1 broker).
pub struct Amqp {
    inner: Arc<Inner>,
}

struct Inner {
    url: BrokerUrl,
    options: ConnectOptions,
    /// The live connection and the records replayed after a reconnect. An
    /// async mutex held across a whole declaration or replay, so a reconnect
    /// never interleaves with a declaration.
    state: Mutex<State>,
    /// Bumped (by the supervisor) after each successful (re)connect.
    generation: watch::Sender<u64>,
    /// Into the pipeline task. Also held by every delivery's settler.
    ops: mpsc::UnboundedSender<Op>,
    /// Tells the supervisor that generation N's connection failed.
    lost: mpsc::UnboundedSender<(u64, String)>,
    /// Bounds unconfirmed publishes; a permit lives until its confirm.
    unconfirmed: Arc<Semaphore>,
    /// Cancelled by `close` or drop; every task of this connection ends.
    closed: CancellationToken,
    /// Every task of this connection; `close` waits for them.
    tasks: TaskTracker,
    /// Ids of subscriptions (to find one again when its consumer ends).
    next_subscription: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    declarations: Vec<Declaration>,
    /// (exchange, queue) bindings made through `bind`, replayed too (a
    /// transient queue is gone after a broker restart, and its bindings).
    bindings: Vec<(String, String)>,
    /// (source, destination) exchange-to-exchange bindings, replayed too.
    exchange_bindings: Vec<(String, String)>,
    subscriptions: Vec<Subscription>,
    /// The connection generation on which `fbp` was last declared: once per
    /// connection, not per announcement (a channel round trip each).
    fbp_declared: Option<u64>,
    /// The address (of the URL's list) of the live connection, or of the
    /// last one: after a loss the next attempt starts with the next.
    address: usize,
}

#[derive(Clone)]
struct Live {
    generation: u64,
    connection: Arc<Connection>,
    /// Shared, not cloned: a lapin `Channel` is a dozen `Arc`s, and the
    /// pipeline takes one per publish and settlement.
    publish: Arc<Channel>,
    consume: Arc<Channel>,
}

#[derive(Clone)]
struct Subscription {
    id: u64,
    queue: String,
    inport: Arc<str>,
    sink: mpsc::Sender<Delivery>,
    /// Cancelled by `unsubscribe`: the consumer's end is expected.
    ended: CancellationToken,
    /// The tag of its consumer on the live connection.
    tag: Arc<std::sync::Mutex<Option<lapin::types::ShortString>>>,
}

struct Pending {
    exchange: String,
    routing_key: String,
    /// Shared with lapin's publish call, which outlives the pipeline's
    /// turn; a resend after a reconnect uses it again.
    payload: Arc<Payload>,
    persistent: bool,
    /// AMQP `timestamp` property (discovery messages).
    timestamp: Option<u64>,
    seq: u64,
    _permit: OwnedSemaphorePermit,
}

enum Op {
    Publish(Pending),
    Settle { tag: u64, generation: u64, how: Settlement },
    Flush(oneshot::Sender<()>),
}

struct Settler {
    ops: mpsc::UnboundedSender<Op>,
}

impl Settle for Settler {
    fn settle(&self, tag: u64, generation: u64, how: Settlement) {
        // After close the pipeline is gone; the broker requeues on disconnect.
        let _ = self.ops.send(Op::Settle { tag, generation, how });
    }
}

fn describe_err(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => format!("{} ({})", p.get_message(), p.get_id()),
        _ => e.to_string(),
    }
}

fn declare_error(e: lapin::Error, kind: &'static str, name: &str, wanted: String) -> Error {
    if let lapin::ErrorKind::ProtocolError(p) = e.kind() {
        if p.get_id() == PRECONDITION_FAILED {
            return Error::DeclarationConflict {
                kind,
                name: name.to_owned(),
                wanted,
                reason: p.get_message().to_string(),
            };
        }
    }
    Error::broker(format!("declare {kind} {name:?}"), describe_err(&e))
}

impl Amqp {
    /// Connect, failing if the broker cannot be reached now. After this,
    /// a lost connection is re-established in the background.
    pub async fn connect(url: BrokerUrl, options: &ConnectOptions) -> Result<Self> {
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            url,
            options: options.clone(),
            state: Mutex::new(State::default()),
            generation: watch::channel(0).0,
            ops: ops_tx,
            lost: lost_tx,
            unconfirmed: Arc::new(Semaphore::new(options.max_unconfirmed.max(1))),
            closed: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_subscription: Default::default(),
        });
        {
            let mut state = inner.state.lock().await;
            inner.open(&mut state, 1).await?;
        }
        inner.tasks.spawn(supervise(inner.clone(), lost_rx));
        inner.tasks.spawn(Pipeline::new(inner.clone()).run(ops_rx));
        Ok(Amqp { inner })
    }

    /// Run `f` on a short-lived channel of the live connection.
    async fn with_channel<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let connection = {
            let state = self.inner.state.lock().await;
            match &state.live {
                Some(l) => l.connection.clone(),
                None => return Err(Error::broker("open channel", "not connected to the broker")),
            }
        };
        on_fresh_channel(&connection, f).await
    }
}

/// Run `f` on a fresh channel of `connection`, then close the channel if
/// the broker left it open. One-off operations never share a channel: a
/// refused one (404, 406) closes the channel it was made on.
async fn on_fresh_channel<T, F, Fut>(connection: &Connection, f: F) -> Result<T>
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let ch = connection
        .create_channel()
        .await
        .map_err(|e| Error::broker("open channel", describe_err(&e)))?;
    let out = f(ch.clone()).await;
    if ch.status().connected() {
        let _ = ch.close(200, "done".into()).await;
    }
    out
}

fn durable_exchange(persistent: bool) -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: persistent, auto_delete: !persistent, ..Default::default() }
}

impl Inner {
    /// Queue a publish for the pipeline (see [`Transport::publish`]).
    async fn publish(&self, target: Target, payload: Payload, persistent: bool, timestamp: Option<u64>) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let permit = tokio::select! {
            biased;
            p = self.unconfirmed.clone().acquire_owned() => p.map_err(|_| Error::Closed)?,
            _ = self.closed.cancelled() => return Err(Error::Closed),
        };
        let (exchange, routing_key) = match target {
            Target::Exchange(x) => (x, String::new()),
            Target::Queue(q) => (String::new(), q),
        };
        let p = Pending { exchange, routing_key, payload: Arc::new(payload), persistent, timestamp, seq: 0, _permit: permit };
        self.ops.send(Op::Publish(p)).map_err(|_| Error::Closed)
    }
}

/// Declare one port's objects on a fresh channel (a refused declaration
/// closes the channel it was made on, so it must not be a shared one).
/// `queue_type`: quorum applies to the queues of persistent inports (a
/// quorum queue is always durable, never auto-deleted).
async fn declare_on(connection: &Connection, decl: &Declaration, queue_type: QueueType) -> Result<()> {
    let q = decl.queue.as_str();
    let p = decl.persistent;
    let exchange_wanted = format!("fanout exchange durable={p} auto_delete={}", !p);
    on_fresh_channel(connection, |ch| async move {
        if decl.kind == PortKind::Router {
            let wanted = format!("direct exchange durable={p} auto_delete={}", !p);
            return ch
                .exchange_declare(q.into(), ExchangeKind::Direct, durable_exchange(p), FieldTable::default())
                .await
                .map_err(|e| declare_error(e, "exchange", q, wanted));
        }
        if decl.kind == PortKind::In {
            let mut args = FieldTable::default();
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(format!("dead-{q}").into()));
            let quorum = p && queue_type == QueueType::Quorum;
            if quorum {
                args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            }
            let opts = QueueDeclareOptions { durable: p, auto_delete: !p, ..Default::default() };
            ch.queue_declare(q.into(), opts, args).await.map_err(|e| {
                let kind = if quorum { " x-queue-type=quorum" } else { "" };
                let wanted = format!("queue durable={p} auto_delete={} x-dead-letter-exchange=dead-{q}{kind}", !p);
                declare_error(e, "queue", q, wanted)
            })?;
        }
        ch.exchange_declare(q.into(), ExchangeKind::Fanout, durable_exchange(p), FieldTable::default())
            .await
            .map_err(|e| declare_error(e, "exchange", q, exchange_wanted))?;
        if decl.kind == PortKind::In {
            ch.queue_bind(q.into(), q.into(), "".into(), QueueBindOptions::default(), FieldTable::default())
                .await
                .map_err(|e| Error::broker(format!("bind queue {q:?} to exchange {q:?}"), describe_err(&e)))?;
        }
        Ok(())
    })
    .await
}

/// Bind a queue to a fanout exchange on a fresh channel.
async fn bind_on(connection: &Connection, exchange: &str, queue: &str) -> Result<()> {
    on_fresh_channel(connection, |ch| async move {
        ch.queue_bind(queue.into(), exchange.into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(|e| Error::broker(format!("bind queue {queue:?} to exchange {exchange:?}"), describe_err(&e)))
    })
    .await
}

/// Bind exchange `destination` to exchange `source` on a fresh channel.
async fn bind_exchange_on(connection: &Connection, source: &str, destination: &str) -> Result<()> {
    on_fresh_channel(connection, |ch| async move {
        ch.exchange_bind(destination.into(), source.into(), "".into(), ExchangeBindOptions::default(), FieldTable::default())
            .await
            .map_err(|e| Error::broker(format!("bind exchange {destination:?} to exchange {source:?}"), describe_err(&e)))
    })
    .await
}

#[async_trait]
impl Transport for Amqp {
    fn describe(&self) -> String {
        self.inner.url.redacted()
    }

    async fn declare(&self, decl: &Declaration) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        if let Some(live) = &state.live {
            declare_on(&live.connection, decl, self.inner.url.queue_type).await?;
        }
        if !state.declarations.contains(decl) {
            state.declarations.push(decl.clone());
        }
        Ok(())
    }

    async fn subscribe(&self, queue: &str, inport: Arc<str>, sink: mpsc::Sender<Delivery>) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let id = self.inner.next_subscription.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sub = Subscription { id, queue: queue.to_owned(), inport, sink, ended: CancellationToken::new(), tag: Default::default() };
        if let Some(live) = state.live.clone() {
            self.inner.start_consumer(&live, sub.clone()).await?;
        }
        state.subscriptions.push(sub);
        Ok(())
    }

    /// Cancels those consumers and waits for the broker to confirm:
    /// nothing more is delivered; what was delivered before is handed over
    /// and settles as usual.
    async fn unsubscribe(&self, queue: &str, sink: &mpsc::Sender<Delivery>) -> Result<()> {
        let (ended, live) = {
            let mut state = self.inner.state.lock().await;
            let (ended, kept) = std::mem::take(&mut state.subscriptions)
                .into_iter()
                .partition(|s| s.queue == queue && s.sink.same_channel(sink));
            state.subscriptions = kept;
            (ended, state.live.clone())
        };
        let mut failed = None;
        for sub in ended as Vec<Subscription> {
            sub.ended.cancel();
            let tag = sub.tag.lock().unwrap().take();
            if let (Some(live), Some(tag)) = (&live, tag) {
                // On a connection replaced meanwhile there is nothing to
                // cancel: the subscription is not replayed.
                if let Err(e) = live.consume.basic_cancel(tag, BasicCancelOptions::default()).await {
                    if live.connection.status().connected() {
                        failed = Some(Error::broker(format!("stop consuming {queue:?}"), describe_err(&e)));
                    }
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn publish(&self, target: Target, payload: Payload, persistent: bool) -> Result<()> {
        self.inner.publish(target, payload, persistent, None).await
    }

    async fn bind(&self, exchange: &str, queue: &str) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        if let Some(live) = &state.live {
            bind_on(&live.connection, exchange, queue).await?;
        }
        let edge = (exchange.to_owned(), queue.to_owned());
        if !state.bindings.contains(&edge) {
            state.bindings.push(edge);
        }
        Ok(())
    }

    async fn unbind(&self, exchange: &str, queue: &str) -> Result<()> {
        self.inner.state.lock().await.bindings.retain(|(x, q)| !(x == exchange && q == queue));
        self.with_channel(|ch| async move {
            ch.queue_unbind(queue.into(), exchange.into(), "".into(), FieldTable::default())
                .await
                .map_err(|e| Error::broker(format!("unbind queue {queue:?} from exchange {exchange:?}"), describe_err(&e)))
        })
        .await
    }

    async fn bind_exchange(&self, source: &str, destination: &str) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        if let Some(live) = &state.live {
            bind_exchange_on(&live.connection, source, destination).await?;
        }
        let edge = (source.to_owned(), destination.to_owned());
        if !state.exchange_bindings.contains(&edge) {
            state.exchange_bindings.push(edge);
        }
        Ok(())
    }

    async fn unbind_exchange(&self, source: &str, destination: &str) -> Result<()> {
        self.inner.state.lock().await.exchange_bindings.retain(|(s, d)| !(s == source && d == destination));
        self.with_channel(|ch| async move {
            ch.exchange_unbind(destination.into(), source.into(), "".into(), Default::default(), FieldTable::default())
                .await
                .map_err(|e| Error::broker(format!("unbind exchange {destination:?} from {source:?}"), describe_err(&e)))
        })
        .await
    }

    async fn queue_depth(&self, queue: &str) -> Result<Option<u64>> {
        // A passive declare of a missing queue closes its channel (404):
        // harmless on a fresh one, and answers "no such queue".
        let res = self
            .with_channel(|ch| async move {
                ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
                    .await
                    .map(|q| q.message_count() as u64)
                    .map_err(|e| Error::broker(format!("queue {queue:?}"), describe_err(&e)))
            })
            .await;
        match res {
            Ok(n) => Ok(Some(n)),
            Err(Error::Broker { ref reason, .. }) if reason.contains("404") || reason.contains("NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        // Also forget it, so a reconnect does not declare it again.
        {
            let mut state = self.inner.state.lock().await;
            state.declarations.retain(|d| d.queue != name);
            state.bindings.retain(|(x, q)| x != name && q != name);
            state.exchange_bindings.retain(|(x, d)| x != name && d != name);
            state.subscriptions.retain(|s| s.queue != name);
        }
        self.with_channel(|ch| async move {
            ch.queue_delete(name.into(), Default::default())
                .await
                .map_err(|e| Error::broker(format!("delete queue {name:?}"), describe_err(&e)))?;
            ch.exchange_delete(name.into(), Default::default())
                .await
                .map_err(|e| Error::broker(format!("delete exchange {name:?}"), describe_err(&e)))
        })
        .await
    }

    async fn subscribe_discovery(&self, sink: mpsc::Sender<Delivery>) -> Result<()> {
        discovery::subscribe(self, sink).await
    }

    async fn broadcast_to_observers(&self, message: Payload) -> Result<()> {
        discovery::broadcast(self, message).await
    }

    async fn announce(&self, message: Payload) -> Result<()> {
        discovery::announce(self, message).await
    }


    fn generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.inner.ops.send(Op::Flush(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.is_cancelled() {
            return Ok(());
        }
        let limit = Duration::from_secs(10);
        if tokio::time::timeout(limit, self.flush()).await.is_err() {
            warn!("closing with publishes the broker has not confirmed within {limit:?}");
        }
        self.inner.closed.cancel();
        let live = self.inner.state.lock().await.live.take();
        if let Some(live) = live {
            let _ = live.connection.close(200, "bye".into()).await;
        }
        self.inner.tasks.close();
        if tokio::time::timeout(limit, self.inner.tasks.wait()).await.is_err() {
            warn!("closing: some tasks of the AMQP connection did not end within {limit:?}");
        }
        Ok(())
    }
}

impl Drop for Amqp {
    fn drop(&mut self) {
        self.inner.closed.cancel();
    }
}
