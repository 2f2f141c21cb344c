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
//! - one **consumer** task per subscription, forwarding deliveries to the
//!   participant's channel with the generation they belong to (settlements
//!   for an older generation are dropped: the broker has requeued those).
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
//! This file: the connection (`Inner`, its state and `open`), consumers,
//! declarations, and the `Transport` implementation with the discovery
//! relay.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{mpsc, oneshot, watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

mod ledger;
mod pipeline;
mod supervisor;

use pipeline::Pipeline;
use supervisor::supervise;

use super::{ConnectOptions, Declaration, PortKind, Target, Transport, DISCOVERY_FANOUT, DISCOVERY_QUEUE};
use crate::broker::{BrokerUrl, QueueType};
use crate::error::{Error, Result};
use crate::message::{Delivery, Message, Payload, Settle, Settlement};

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
    publish: Channel,
    consume: Channel,
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
    payload: Payload,
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

/// The URI of address `i` of `url` (a cluster's node; 0 for a single broker).
fn amqp_uri(url: &BrokerUrl, i: usize) -> lapin::uri::AMQPUri {
    let mut uri = lapin::uri::AMQPUri::default();
    uri.scheme = if matches!(url.scheme, crate::broker::Scheme::Amqp { tls: true }) {
        lapin::uri::AMQPScheme::AMQPS
    } else {
        lapin::uri::AMQPScheme::AMQP
    };
    let (host, port) = url.addresses.get(i).cloned().unwrap_or_else(|| (url.host.clone(), url.port));
    uri.authority.host = host;
    uri.authority.port = port;
    if let Some(u) = &url.username {
        uri.authority.userinfo.username = u.clone();
    }
    if let Some(p) = &url.password {
        uri.authority.userinfo.password = p.clone();
    }
    uri.vhost = url.vhost.clone();
    // frame_max, channel_max, connection_timeout, auth_mechanism as lapin
    // read them; the heartbeat defaults to ours.
    uri.query = url.amqp_options.clone();
    // The client's proposal; RabbitMQ takes the lower of its own and ours.
    uri.query.heartbeat = Some(url.heartbeat.unwrap_or(crate::broker::DEFAULT_AMQP_HEARTBEAT));
    uri
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
    /// Declare `fbp` if this connection has not yet.
    async fn ensure_discovery_queue(&self) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        if let Some(live) = state.live.clone() {
            if state.fbp_declared != Some(live.generation) {
                declare_discovery_queue(&live.connection, self.inner.url.queue_type).await?;
                state.fbp_declared = Some(live.generation);
            }
        }
        Ok(())
    }

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
        let p = Pending { exchange, routing_key, payload, persistent, timestamp, seq: 0, _permit: permit };
        self.ops.send(Op::Publish(p)).map_err(|_| Error::Closed)
    }

    /// A connection to address `i` of the URL.
    /// `tls`: the TLS files, for `amqps://`.
    async fn connect_to(&self, i: usize, tls: Option<&crate::broker::TlsFiles>) -> std::result::Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default().with_connection_name(self.options.connection_name.clone().into());
        if let Some(files) = tls.cloned() {
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: files.client.map(|(pem, key)| lapin::tcp::OwnedIdentity::PKCS8 { pem, key }),
                cert_chain: files.ca.map(|ca| String::from_utf8_lossy(&ca).into_owned()),
            };
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connect_uri_with_config(amqp_uri(&self.url, i), props, tls, runtime).await
        } else {
            Connection::connect_uri(amqp_uri(&self.url, i), props).await
        }
    }

    /// Connect, open channels, replay declarations and subscriptions, and
    /// install the result as generation `generation`.
    async fn open(self: &Arc<Self>, state: &mut State, generation: u64) -> Result<()> {
        let conn_err = |e: lapin::Error| Error::Connection { url: self.url.redacted(), reason: describe_err(&e) };
        // A cluster: the first node that answers, starting after the one
        // whose connection was lost (the first of the list at start).
        let tls = match self.url.scheme {
            crate::broker::Scheme::Amqp { tls: true } => Some(crate::broker::TlsFiles::from_env()?),
            _ => None,
        };
        let n = self.url.addresses.len().max(1);
        let first = if generation == 1 { 0 } else { (state.address + 1) % n };
        let mut failures = Vec::new();
        let mut connected = None;
        for k in 0..n {
            let i = (first + k) % n;
            match self.connect_to(i, tls.as_ref()).await {
                Ok(c) => {
                    if n > 1 {
                        let (host, port) = &self.url.addresses[i];
                        tracing::info!(node = %format!("{host}:{port}"), "connected to cluster node {} of {n}", i + 1);
                    }
                    state.address = i;
                    connected = Some(c);
                    break;
                }
                Err(e) if n == 1 => return Err(conn_err(e)),
                Err(e) => {
                    let (host, port) = &self.url.addresses[i];
                    failures.push(format!("{host}:{port}: {}", describe_err(&e)));
                }
            }
        }
        let Some(connection) = connected else {
            return Err(Error::Connection { url: self.url.redacted(), reason: format!("no node answers ({})", failures.join("; ")) });
        };
        let connection = Arc::new(connection);
        let result = async {
            let publish = connection.create_channel().await.map_err(conn_err)?;
            publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(conn_err)?;
            let consume = connection.create_channel().await.map_err(conn_err)?;
            consume
                .basic_qos(self.options.prefetch, BasicQosOptions::default())
                .await
                .map_err(conn_err)?;
            let live = Live { generation, connection: connection.clone(), publish, consume };
            // A record the broker refuses now (each on a channel of its
            // own: a conflicting declaration, a binding to an exchange
            // gone with a broker that lost its data) is dropped with a
            // warning; the rest is replayed. Only a failing connection
            // fails the attempt (else one bad record would keep the
            // connection from ever coming back).
            let conn = &live.connection;
            let kept = |what: String, res: Result<()>| -> Result<bool> {
                match res {
                    Ok(()) => Ok(true),
                    Err(e) if conn.status().connected() => {
                        warn!(error = %e, "{what}, made earlier, is refused by the broker now; dropped");
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            };
            // Records are dropped only once the attempt succeeded: a
            // failing connection keeps every one for the next attempt.
            let mut refused_declarations = Vec::new();
            for (i, decl) in state.declarations.iter().enumerate() {
                let res = declare_on(conn, decl, self.url.queue_type).await;
                if !kept(format!("the declaration of {:?}", decl.queue), res)? {
                    refused_declarations.push(i);
                }
            }
            let mut refused_bindings = Vec::new();
            for (i, (exchange, queue)) in state.bindings.iter().enumerate() {
                let res = bind_on(conn, exchange, queue).await;
                if !kept(format!("binding {queue:?} to {exchange:?}"), res)? {
                    refused_bindings.push(i);
                }
            }
            let mut refused_exchange_bindings = Vec::new();
            for (i, (source, destination)) in state.exchange_bindings.iter().enumerate() {
                let res = bind_exchange_on(conn, source, destination).await;
                if !kept(format!("binding exchange {destination:?} to {source:?}"), res)? {
                    refused_exchange_bindings.push(i);
                }
            }
            if state.subscriptions.iter().any(|s| s.queue == DISCOVERY_QUEUE) {
                declare_discovery_queue(conn, self.url.queue_type).await?;
            }
            // A queue someone else declared may be gone: consuming it would
            // close the shared consume channel, so look first.
            let mut refused_subscriptions = Vec::new();
            for (i, sub) in state.subscriptions.iter().enumerate() {
                let ours = sub.queue == DISCOVERY_QUEUE || state.declarations.iter().any(|d| d.queue == sub.queue);
                if !ours {
                    let queue = sub.queue.as_str();
                    let res = on_fresh_channel(conn, |ch| async move {
                        ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
                            .await
                            .map(|_| ())
                            .map_err(|e| Error::broker(format!("queue {queue:?}"), describe_err(&e)))
                    })
                    .await;
                    if !kept(format!("the subscription to {queue:?}"), res)? {
                        refused_subscriptions.push(i);
                        continue;
                    }
                }
                self.start_consumer(&live, sub.clone()).await?;
            }
            remove_at(&mut state.declarations, &refused_declarations);
            remove_at(&mut state.bindings, &refused_bindings);
            remove_at(&mut state.exchange_bindings, &refused_exchange_bindings);
            remove_at(&mut state.subscriptions, &refused_subscriptions);
            if state.subscriptions.iter().any(|s| s.queue == DISCOVERY_QUEUE) {
                state.fbp_declared = Some(generation);
            }
            Ok::<_, Error>(live)
        }
        .await;
        match result {
            Ok(live) => {
                let mut events = connection.events_listener();
                let lost = self.lost.clone();
                let closed = self.closed.clone();
                let (publish, consume) = (live.publish.clone(), live.consume.clone());
                self.tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = closed.cancelled() => return,
                            ev = events.next() => match ev {
                                Some(lapin::Event::Error(e)) => {
                                    // A channel-level error (a passive declare of a
                                    // missing queue on a one-off channel) closes that
                                    // channel only: the connection is fine unless it
                                    // was one of ours.
                                    if e.is_amqp_soft_error() {
                                        tokio::time::sleep(Duration::from_millis(20)).await;
                                        if publish.status().connected() && consume.status().connected() {
                                            debug!("channel error on a one-off channel: {}", describe_err(&e));
                                            continue;
                                        }
                                    }
                                    let _ = lost.send((generation, describe_err(&e)));
                                    return;
                                }
                                Some(_) => {}
                                None => {
                                    let _ = lost.send((generation, "connection closed".into()));
                                    return;
                                }
                            }
                        }
                    }
                });
                state.live = Some(live);
                self.generation.send_replace(generation);
                Ok(())
            }
            Err(e) => {
                let _ = connection.close(200, "setup failed".into()).await;
                Err(e)
            }
        }
    }

    async fn start_consumer(self: &Arc<Self>, live: &Live, sub: Subscription) -> Result<()> {
        let mut consumer = live
            .consume
            .basic_consume(
                sub.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker(format!("consume {:?}", sub.queue), describe_err(&e)))?;
        *sub.tag.lock().unwrap() = Some(consumer.tag());
        let settler: Arc<dyn Settle> = Arc::new(Settler { ops: self.ops.clone() });
        let generation = live.generation;
        let lost = self.lost.clone();
        let closed = self.closed.clone();
        let channel = live.consume.clone();
        let inner = self.clone();
        self.tasks.spawn(async move {
            loop {
                // Biased, hot branch first: the others are only polled
                // (and register wakers) when no delivery is ready.
                let next = tokio::select! {
                    biased;
                    n = consumer.next() => n,
                    _ = closed.cancelled() => return,
                    _ = sub.sink.closed() => return,
                };
                match next {
                    Some(Ok(d)) => {
                        let timestamp = *d.properties.timestamp();
                        let msg = Message { inport: sub.inport.clone(), payload: Payload::new(d.data), redelivered: d.redelivered, timestamp };
                        let delivery = Delivery::new(msg, d.delivery_tag, generation, settler.clone());
                        // A full receiver is waited for, but not past close.
                        let sent = match sub.sink.try_send(delivery) {
                            Ok(()) => true,
                            Err(mpsc::error::TrySendError::Full(delivery)) => tokio::select! {
                                r = sub.sink.send(delivery) => r.is_ok(),
                                _ = closed.cancelled() => false,
                            },
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        };
                        if !sent {
                            return; // receiver gone or closing; the delivery requeued itself on drop
                        }
                    }
                    Some(Err(e)) => {
                        let _ = lost.send((generation, describe_err(&e)));
                        return;
                    }
                    // The consumer ended, with everything it had received
                    // handed over. Asked for (unsubscribe, close), or by the
                    // broker on a channel still open (its queue was
                    // deleted): only that subscription is concerned. A
                    // closed channel is a lost connection.
                    None => {
                        if closed.is_cancelled() || sub.ended.is_cancelled() {
                            return;
                        }
                        if channel.status().connected() {
                            inner.consumer_cancelled(sub, generation).await;
                            return;
                        }
                        let _ = lost.send((generation, format!("consumer of {:?} was cancelled", sub.queue)));
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

impl Inner {
    /// The broker cancelled a subscription's consumer (its queue was
    /// deleted), on a connection that is fine. A queue this connection
    /// declared is declared again, with its bindings, and consumed again
    /// (a participant's inport keeps working when someone deletes it);
    /// a queue someone else declared ends that subscription. Nothing else
    /// is touched: no reconnect.
    ///
    /// Boxed: `start_consumer` spawns the task that calls this, which calls
    /// `start_consumer` again.
    fn consumer_cancelled(self: Arc<Self>, sub: Subscription, generation: u64) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { self.consumer_cancelled_now(sub, generation).await })
    }

    async fn consumer_cancelled_now(self: &Arc<Self>, sub: Subscription, generation: u64) {
        let state = self.state.lock().await;
        let Some(live) = state.live.clone().filter(|l| l.generation == generation) else {
            return; // replaced: the new connection replays everything
        };
        if !state.subscriptions.iter().any(|s| s.id == sub.id) {
            return; // unsubscribed meanwhile
        }
        let queue = sub.queue.clone();
        let declared = state.declarations.iter().find(|d| d.queue == queue && d.kind == PortKind::In).cloned();
        let again = match declared {
            None => Err(Error::broker(format!("consume {queue:?}"), "deleted, and declared by someone else")),
            Some(decl) => {
                let bindings: Vec<String> = state.bindings.iter().filter(|(_, q)| *q == queue).map(|(x, _)| x.clone()).collect();
                async {
                    declare_on(&live.connection, &decl, self.url.queue_type).await?;
                    for exchange in &bindings {
                        bind_on(&live.connection, exchange, &queue).await?;
                    }
                    self.start_consumer(&live, sub.clone()).await
                }
                .await
            }
        };
        let mut state = state;
        match again {
            Ok(()) => warn!(queue = %queue, "queue {queue:?} was deleted under its consumer; declared again, consuming on"),
            // The connection failed meanwhile: the reconnect replays it.
            Err(e) if !live.connection.status().connected() => {
                let _ = self.lost.send((generation, format!("consuming {queue:?} again failed: {e}")));
            }
            Err(e) => {
                warn!(queue = %queue, error = %e, "the broker cancelled the consumer of {queue:?} (queue deleted?); that subscription ends");
                state.subscriptions.retain(|s| s.id != sub.id);
            }
        }
    }
}

/// Remove the items at `indices` (ascending) from `v`.
fn remove_at<T>(v: &mut Vec<T>, indices: &[usize]) {
    let mut i = 0;
    v.retain(|_| {
        let keep = !indices.contains(&i);
        i += 1;
        keep
    });
}

/// How long an announcement may wait in `fbp` (AMQP `expiration`, in
/// milliseconds): three heartbeat periods, the same as an observer's expiry,
/// and at least 10 s, so that a busy observer (or a short test period) does
/// not lose a fresh one.
pub fn discovery_expiration() -> String {
    (crate::discovery::heartbeat_interval() * 3).max(Duration::from_secs(10)).as_millis().to_string()
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
        self.ensure_discovery_queue().await?;
        // Every observer hears the fanout through its own transient queue...
        self.declare(&Declaration { kind: PortKind::Out, queue: DISCOVERY_FANOUT.into(), persistent: true }).await?;
        let private = format!("{DISCOVERY_FANOUT}.{}", uuid::Uuid::new_v4().simple());
        self.declare(&Declaration { kind: PortKind::In, queue: private.clone(), persistent: false }).await?;
        self.bind(DISCOVERY_FANOUT, &private).await?;
        self.subscribe(&private, Arc::from(DISCOVERY_QUEUE), sink).await?;
        // ...and takes its turn relaying from the shared `fbp` queue. The
        // ack follows the confirm of the republish (pipeline order), so a
        // message is never lost between the two.
        let (tx, mut rx) = mpsc::channel::<Delivery>(256);
        self.subscribe(DISCOVERY_QUEUE, Arc::from(DISCOVERY_QUEUE), tx).await?;
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
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
        });
        Ok(())
    }

    /// Declares the observers' exchange first (recorded, so once per
    /// connection): a participant's stats report may be the first message
    /// for it on a broker no observer has used yet, and a publish to a
    /// missing exchange would close the publish channel.
    async fn broadcast_to_observers(&self, message: Payload) -> Result<()> {
        let fanout = Declaration { kind: PortKind::Out, queue: DISCOVERY_FANOUT.into(), persistent: true };
        // Recorded declarations are replayed on every connection: one
        // round trip the first time only (a coordinator answers a query
        // with one broadcast per participant).
        if !self.inner.state.lock().await.declarations.contains(&fanout) {
            self.declare(&fanout).await?;
        }
        self.inner.publish(Target::Exchange(DISCOVERY_FANOUT.into()), message, false, None).await
    }

    /// Stamped with the time (seconds), so an observer that finds it in
    /// the `fbp` backlog later knows how old it is.
    async fn announce(&self, message: Payload) -> Result<()> {
        self.ensure_discovery_queue().await?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).ok();
        self.inner.publish(Target::Queue(DISCOVERY_QUEUE.into()), message, false, now).await
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

/// The `fbp` queue as the original declares it: durable, no arguments.
/// With `queue_type=quorum`, a quorum queue (so discovery survives the
/// loss of the node it lived on) unless it exists already as the original
/// declared it: then that one is used, with a warning (a coordinator or
/// participant of the original's on the same vhost keeps working).
async fn declare_discovery_queue(connection: &Connection, queue_type: QueueType) -> Result<()> {
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

impl Drop for Amqp {
    fn drop(&mut self) {
        self.inner.closed.cancel();
    }
}
