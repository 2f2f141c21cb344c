//! MQTT 3.1.1 with rumqttc. Topic = queue name verbatim, discovery on `fbp`.
//!
//! As in the original: QoS 0, clean session, random client id, no retain.
//! MQTT has no ack/nack and brokers cannot bind topics, so declarations are
//! no-ops and settlements are dropped. Payload bytes are passed as received.
//!
//! Opt-in QoS 1 (`?qos=1` in the URL): inports are subscribed and outputs
//! published at QoS 1 (discovery stays QoS 0) on a persistent session
//! (`clean_session=false`) under a stable client id, so the broker keeps
//! what arrives while the participant is away; an input is acked (PUBACK)
//! only when the handler settled it, after the outputs it sent (the same
//! connection carries them in order), and one dropped unsettled is not
//! acked: the broker redelivers it to the session. The id comes from the
//! connection name (the role) and a per-instance file in the state folder
//! (`MSGFLO_STATE_DIR`, else `$XDG_STATE_HOME/msgflo`, else
//! `~/.local/state/msgflo`), locked while in use: a restarted instance
//! takes the session back, a second live instance gets its own.
//!
//! One task polls the rumqttc event loop (it owns the socket) until
//! `closed`: it routes incoming publishes by topic to the subscribers'
//! channels, and after every reconnect it re-subscribes and bumps
//! `generation`. It never stops polling to wait for a full channel: the
//! same loop carries this client's own publishes, and a participant busy
//! sending would deadlock with it. Deliveries for a full channel wait in a
//! backlog (up to `MAX_BACKLOG`; past that, QoS 0 messages are dropped with
//! a warning, as a broker does for a slow subscriber).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{Backoff, ConnectOptions, Declaration, Target, Transport, DISCOVERY_FANOUT, DISCOVERY_QUEUE};
use crate::broker::{BrokerUrl, Scheme};
use crate::error::{Error, Result};
use crate::message::{Delivery, Message, Payload, Settle, Settlement};

/// Deliveries held while their receiver is full, before new ones are dropped.
const MAX_BACKLOG: usize = 100_000;

/// Largest packet accepted or sent (Mosquitto's own default limit is 256 MiB).
const MAX_PACKET: usize = 256 * 1024 * 1024;

type Subscribers = HashMap<String, Vec<(Arc<str>, mpsc::Sender<Delivery>)>>;

/// QoS 1 messages of a resumed session that arrive (right after CONNACK)
/// for a topic nobody here subscribed to yet: held, not acked, until the
/// subscriber is there; the event task then hands them over through its
/// backlog (there can be more than the receiver holds: Mosquitto resends
/// every unacked message of the session at once). Locked after
/// `Subscribers`, never alone before it.
type Early = Arc<Mutex<HashMap<String, Vec<rumqttc::Publish>>>>;

/// Topics unsubscribed from (and not subscribed to again): a QoS 1
/// message the broker sent before it took the UNSUBSCRIBE is acked and
/// dropped, not held as if a subscriber were coming. Locked after
/// `Subscribers`, like `Early`.
type Unsubscribed = Arc<Mutex<std::collections::HashSet<String>>>;

/// Waiters for SUBACKs, in the order the SUBSCRIBEs were queued (the broker
/// answers in order). Cleared on reconnect: those subscriptions are redone.
type SubAckWaiters = Arc<Mutex<std::collections::VecDeque<oneshot::Sender<()>>>>;

/// Publishes asked for, per QoS (0 and 1), counted before they are queued
/// (a publish that fails or is cancelled before it is queued is taken
/// back, see [`AskGuard`]). `flush` compares them with [`Sent`].
#[derive(Default)]
struct Asked([AtomicU64; 2]);

impl Asked {
    fn now(&self) -> (u64, u64) {
        (self.0[0].load(Ordering::SeqCst), self.0[1].load(Ordering::SeqCst))
    }
}

/// Counts a publish in [`Asked`] until it is queued; dropped before that
/// (the publish failed, or its future was dropped while the request
/// channel was full) it takes the publish back, so `flush` does not wait
/// for one that never went.
struct AskGuard<'a> {
    counter: &'a AtomicU64,
    queued: bool,
}

impl Drop for AskGuard<'_> {
    fn drop(&mut self) {
        if !self.queued {
            self.counter.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What the event task has seen of this client's publishes: QoS 0 ones
/// written to the socket (rumqttc reports a publish once it has handled
/// it; the write follows in the same step) and QoS 1 ones acknowledged by
/// the broker (PUBACK; a publish sent again after a reconnect is acked
/// once). Publishes that rumqttc keeps for the next connection and then
/// drops (QoS 0 ones, or QoS 1 ones of a session the broker did not keep)
/// are counted here when they are dropped, so that `flush` never waits
/// for them.
#[derive(Clone, Copy, Default, Debug)]
struct Sent {
    written: u64,
    acked: u64,
}

/// A connection to an MQTT broker.
pub struct Mqtt {
    url: BrokerUrl,
    client: AsyncClient,
    subscribers: Arc<Mutex<Subscribers>>,
    /// Tells the event task that a topic with held messages now has a
    /// subscriber: it hands them over, ahead of anything newer.
    adopt: mpsc::UnboundedSender<String>,
    early: Early,
    unsubscribed: Unsubscribed,
    subacks: SubAckWaiters,
    generation: watch::Receiver<u64>,
    /// Fires when the event loop has sent DISCONNECT (everything queued
    /// before it went out first).
    disconnected: Mutex<Option<oneshot::Receiver<()>>>,
    closed: CancellationToken,
    /// The event task and what it spawns; `close` waits for them.
    tasks: TaskTracker,
    /// QoS of inports and outputs (discovery is always QoS 0).
    qos: QoS,
    asked: Arc<Asked>,
    sent: watch::Receiver<Sent>,
    _session: Option<Session>,
}

struct NoSettle;

/// PUBACK of a QoS 1 input once every delivery made of it is settled, unless
/// one was dropped unsettled (the broker then redelivers it to the session).
struct AckWhenSettled {
    client: AsyncClient,
    publish: rumqttc::Publish,
    remaining: std::sync::atomic::AtomicUsize,
    requeue: std::sync::atomic::AtomicBool,
}

impl Settle for AckWhenSettled {
    fn settle(&self, _tag: u64, _generation: u64, how: Settlement) {
        if how == Settlement::Requeue {
            self.requeue.store(true, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            if self.requeue.load(Ordering::SeqCst) {
                tracing::debug!(topic = %self.publish.topic, "QoS 1 input not acked; the broker redelivers it to this session");
            } else if let Err(e) = self.client.try_ack(&self.publish) {
                tracing::debug!(topic = %self.publish.topic, error = %e, "PUBACK not queued; the broker redelivers after a reconnect");
            }
        }
    }
}

/// The stable identity of a QoS 1 session; the lock lives as long as this.
struct Session {
    id: String,
    _lock: std::fs::File,
}

/// Claim the first per-instance file of `name` not locked by a live
/// process; its content is the client id (made on first use).
fn claim_session(name: &str) -> Result<Session> {
    claim_session_in(&super::state_dir(), name)
}

fn claim_session_in(dir: &std::path::Path, name: &str) -> Result<Session> {
    use std::io::{Read, Seek, Write};
    let base: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .chars()
        .take(64)
        .collect();
    let fail = |e: std::io::Error| Error::broker(format!("MQTT session file in {}", dir.display()), e.to_string());
    std::fs::create_dir_all(dir).map_err(fail)?;
    for k in 0..1024 {
        let path = dir.join(format!("mqtt-{base}-{k}.id"));
        let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(fail)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
        let mut id = String::new();
        f.read_to_string(&mut id).map_err(fail)?;
        let id = id.trim().to_owned();
        if !id.is_empty() {
            return Ok(Session { id, _lock: f });
        }
        let id = format!("msgflo-{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        f.set_len(0).and_then(|_| f.rewind()).and_then(|_| f.write_all(id.as_bytes())).and_then(|_| f.sync_all()).map_err(fail)?;
        return Ok(Session { id, _lock: f });
    }
    Err(Error::broker("MQTT session", format!("no free session file for {name:?} in {}", dir.display())))
}

fn is_discovery(topic: &str) -> bool {
    topic == DISCOVERY_QUEUE || topic == DISCOVERY_FANOUT
}

/// The QoS used on `topic`: discovery is always QoS 0, everything else
/// the connection's.
fn topic_qos(topic: &str, qos: QoS) -> QoS {
    if is_discovery(topic) {
        QoS::AtMostOnce
    } else {
        qos
    }
}

impl Settle for NoSettle {
    fn settle(&self, _tag: u64, _generation: u64, how: Settlement) {
        if how == Settlement::Nack {
            tracing::debug!("nack on MQTT: the protocol has no dead-letter route; message dropped");
        }
    }
}

fn options(url: &BrokerUrl, session: Option<&Session>) -> Result<MqttOptions> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let id = session.map(|s| s.id.clone()).unwrap_or_else(|| format!("msgflo-{}", &id[..16]));
    let mut o = MqttOptions::new(id, url.host.clone(), url.port);
    let keep_alive = url.heartbeat.unwrap_or(crate::broker::DEFAULT_MQTT_KEEP_ALIVE);
    // 0: no keep-alive, as with AMQP's heartbeat=0.
    o.set_keep_alive(Duration::from_secs(keep_alive as u64));
    o.set_clean_session(session.is_none());
    o.set_manual_acks(session.is_some());
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(user) = &url.username {
        o.set_credentials(user.clone(), url.password.clone().unwrap_or_default());
    }
    if matches!(url.scheme, Scheme::Mqtt { tls: true }) {
        // rustls needs a process-wide crypto provider; ring keeps builds lean.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let files = crate::broker::TlsFiles::from_env()?;
        o.set_transport(match files.ca {
            Some(ca) => rumqttc::Transport::tls(ca, files.client, None),
            None => rumqttc::Transport::tls_with_default_config(),
        });
    }
    Ok(o)
}

impl Mqtt {
    /// Connect, failing if the broker does not accept us now. After this,
    /// a lost connection is re-established in the background.
    pub async fn connect(url: BrokerUrl, options_: &ConnectOptions) -> Result<Self> {
        let session = if url.qos == 1 { Some(claim_session(&options_.connection_name)?) } else { None };
        let qos = if session.is_some() { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        let (client, mut eventloop) = AsyncClient::new(options(&url, session.as_ref())?, 1024);
        // Messages go out at once: with Nagle a publish that follows another
        // waits for the broker's delayed ACK (~40 ms per hop).
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let subscribers: Arc<Mutex<Subscribers>> = Default::default();
        let early: Early = Default::default();
        let unsubscribed: Unsubscribed = Default::default();
        let (adopt_tx, adopt_rx) = mpsc::unbounded_channel();
        let subacks: SubAckWaiters = Default::default();
        let (gen_tx, gen_rx) = watch::channel(0u64);
        let (first_tx, first_rx) = oneshot::channel();
        let (disc_tx, disc_rx) = oneshot::channel();
        let closed = CancellationToken::new();
        let asked: Arc<Asked> = Default::default();
        let (sent_tx, sent) = watch::channel(Sent::default());
        let task = EventTask {
            url: url.clone(),
            client: client.clone(),
            subscribers: subscribers.clone(),
            early: early.clone(),
            unsubscribed: unsubscribed.clone(),
            subacks: subacks.clone(),
            generation: gen_tx,
            closed: closed.clone(),
            tasks: TaskTracker::new(),
            qos,
            sent: sent_tx,
        };
        let tasks = task.tasks.clone();
        tasks.spawn(task.run(eventloop, adopt_rx, first_tx, disc_tx));
        match first_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                closed.cancel();
                return Err(Error::Connection { url: url.redacted(), reason });
            }
            Err(_) => return Err(Error::Connection { url: url.redacted(), reason: "event loop ended".into() }),
        }
        Ok(Mqtt {
            url,
            client,
            subscribers,
            adopt: adopt_tx,
            early,
            unsubscribed,
            subacks,
            generation: gen_rx,
            disconnected: Mutex::new(Some(disc_rx)),
            closed,
            tasks,
            qos,
            asked,
            sent,
            _session: session,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.is_cancelled() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

struct EventTask {
    url: BrokerUrl,
    client: AsyncClient,
    subscribers: Arc<Mutex<Subscribers>>,
    early: Early,
    unsubscribed: Unsubscribed,
    subacks: SubAckWaiters,
    generation: watch::Sender<u64>,
    closed: CancellationToken,
    tasks: TaskTracker,
    qos: QoS,
    sent: watch::Sender<Sent>,
}

impl EventTask {
    async fn run(
        self,
        mut eventloop: EventLoop,
        mut adopt: mpsc::UnboundedReceiver<String>,
        first: oneshot::Sender<Result<(), String>>,
        disconnected: oneshot::Sender<()>,
    ) {
        let mut first = Some(first);
        let mut disconnected = Some(disconnected);
        let mut backoff = Backoff::new();
        let mut down_since: Option<std::time::Instant> = None;
        let mut backlog = Backlog::new();
        let mut dropped = 0u64;
        // This client's publishes rumqttc holds for the next connection
        // (QoS 0, QoS 1) after a loss: sent on it if it resumes the
        // session, dropped if not.
        let mut held_at_loss: Option<(u64, u64)> = None;
        loop {
            // Hand buffered deliveries to their (full) receivers while
            // still polling the event loop: it also carries this client's
            // own publishes, which a receiver may be waiting on.
            let next_sink = backlog.front().map(|(sink, _)| sink.clone());
            let event = tokio::select! {
                biased;
                permit = async { next_sink.expect("guarded").reserve_owned().await }, if !backlog.is_empty() => {
                    let (_, delivery) = backlog.pop_front().expect("guarded");
                    if let Ok(permit) = permit {
                        permit.send(delivery);
                    }
                    continue;
                }
                Some(topic) = adopt.recv() => {
                    let (held, sinks) = {
                        let subs = self.subscribers.lock().unwrap();
                        let held = self.early.lock().unwrap().remove(&topic).unwrap_or_default();
                        (held, subs.get(&topic).cloned().unwrap_or_default())
                    };
                    if !held.is_empty() {
                        tracing::debug!(topic, held = held.len(), "handing over QoS 1 messages that arrived before the subscription");
                    }
                    for p in held {
                        self.dispatch(p, &sinks, &mut backlog, &mut dropped);
                    }
                    continue;
                }
                e = eventloop.poll() => e,
                _ = self.closed.cancelled() => return,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    let generation = *self.generation.borrow() + 1;
                    tracing::debug!(session_present = ack.session_present, generation, "CONNACK");
                    if let Some(held) = held_at_loss.take() {
                        if !ack.session_present {
                            self.forget_dropped(held);
                        }
                    }
                    if generation > 1 {
                        let topics: Vec<String> = self.subscribers.lock().unwrap().keys().cloned().collect();
                        let client = self.client.clone();
                        let subacks = self.subacks.clone();
                        let closed = self.closed.clone();
                        let qos = self.qos;
                        // Waiters of the lost connection: their topics are in
                        // `topics` and get subscribed again right here.
                        subacks.lock().unwrap().clear();
                        // Not awaited here: the request channel is drained by
                        // this loop. Several topics per SUBSCRIBE; each waits
                        // for room in the request channel, so none is lost
                        // however many there are.
                        self.tasks.spawn(async move {
                            for chunk in topics.chunks(RESUBSCRIBE_CHUNK) {
                                let filters = chunk.iter().map(|t| rumqttc::SubscribeFilter::new(t.clone(), topic_qos(t, qos)));
                                if let Err(e) = queue_subscribe(&client, &subacks, &closed, filters.collect()).await {
                                    warn!(error = %e, "cannot subscribe again after reconnecting");
                                }
                            }
                        });
                        let away = down_since.take().map(|t| t.elapsed()).unwrap_or_default();
                        info!(broker = %self.url.redacted(), ?away, "reconnected to broker; subscriptions restored");
                    }
                    backoff.reset();
                    self.generation.send_replace(generation);
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at_least_once = p.qos != QoS::AtMostOnce;
                    let sinks: Vec<_> = {
                        let subs = self.subscribers.lock().unwrap();
                        let sinks = subs.get(p.topic.as_str()).cloned().unwrap_or_default();
                        if sinks.is_empty() && self.unsubscribed.lock().unwrap().contains(p.topic.as_str()) {
                            if at_least_once {
                                let _ = self.client.try_ack(&p);
                            }
                            continue;
                        }
                        let mut early = self.early.lock().unwrap();
                        // Behind held ones of the same topic, until they are handed over.
                        if at_least_once && (sinks.is_empty() || early.contains_key(p.topic.as_str())) {
                            early.entry(p.topic.clone()).or_default().push(p);
                            continue;
                        }
                        sinks
                    };
                    self.dispatch(p, &sinks, &mut backlog, &mut dropped);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    // Packet id 0 is QoS 0; QoS 1 ones count when acked.
                    if pkid == 0 {
                        self.sent.send_modify(|s| s.written += 1);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    self.sent.send_modify(|s| s.acked += 1);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = self.subacks.lock().unwrap().pop_front() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    if let Some(tx) = disconnected.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                    if disconnected.is_none() || self.closed.is_cancelled() {
                        return; // we asked to disconnect
                    }
                    // rumqttc moved what it had not sent (and the unacked
                    // QoS 1 publishes) to `pending`; that changes only when
                    // a connection is lost, so this is what the next one
                    // sends or drops.
                    held_at_loss = Some(held_publishes(&eventloop.pending));
                    if down_since.is_none() {
                        down_since = Some(std::time::Instant::now());
                        warn!(broker = %self.url.redacted(), error = %e, "lost connection to broker; reconnecting");
                    }
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = self.closed.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// After a connection that did not resume a session: rumqttc dropped
    /// the publishes it held; they count as done for `flush`.
    fn forget_dropped(&self, (qos0, qos1): (u64, u64)) {
        if (qos0, qos1) == (0, 0) {
            return;
        }
        self.sent.send_modify(|s| {
            s.written += qos0;
            s.acked += qos1;
        });
        warn!(qos0, qos1, "publishes queued when the connection was lost were not sent (no session kept them)");
    }

    /// Hand one incoming publish to every subscriber of its topic: at once
    /// where there is room and nothing waits before it, else in order
    /// through the backlog.
    fn dispatch(&self, p: rumqttc::Publish, sinks: &[(Arc<str>, mpsc::Sender<Delivery>)], backlog: &mut Backlog, dropped: &mut u64) {
        let generation = *self.generation.borrow();
        let at_least_once = p.qos != QoS::AtMostOnce;
        let settler: Arc<dyn Settle> = if at_least_once {
            Arc::new(AckWhenSettled {
                client: self.client.clone(),
                publish: p.clone(),
                remaining: sinks.len().into(),
                requeue: false.into(),
            })
        } else {
            Arc::new(NoSettle)
        };
        for (inport, sink) in sinks {
            let msg = Message { inport: inport.clone(), payload: Payload::new(p.payload.to_vec()), redelivered: p.dup, timestamp: None };
            let delivery = Delivery::new(msg, 0, generation, settler.clone());
            if !backlog.is_empty() {
                // QoS 1 is never dropped: the broker bounds what is in flight.
                if backlog.len() >= MAX_BACKLOG && !at_least_once {
                    *dropped += 1;
                    if *dropped == 1 || (*dropped).is_multiple_of(10_000) {
                        warn!(dropped = *dropped, topic = %p.topic, "receiver too slow; dropping QoS 0 messages (as the broker would)");
                    }
                    continue;
                }
                backlog.push_back((sink.clone(), delivery));
                continue;
            }
            match sink.try_send(delivery) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => backlog.push_back((sink.clone(), d)),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// This client's publishes among `pending` requests: (QoS 0, QoS 1).
fn held_publishes(pending: &std::collections::VecDeque<rumqttc::Request>) -> (u64, u64) {
    let mut held = (0, 0);
    for r in pending {
        if let rumqttc::Request::Publish(p) = r {
            if p.qos == QoS::AtMostOnce {
                held.0 += 1;
            } else {
                held.1 += 1;
            }
        }
    }
    held
}

/// Topics per SUBSCRIBE when a reconnect subscribes everything again.
const RESUBSCRIBE_CHUNK: usize = 64;

/// Queue one SUBSCRIBE and its SUBACK waiter, under one lock so that the
/// waiters are in SUBSCRIBE order (the broker answers in order). A full
/// request channel (a busy connection, or thousands of topics after a
/// reconnect) is waited out, never taken as a refusal; an invalid filter
/// is an error at once.
async fn queue_subscribe(
    client: &AsyncClient,
    subacks: &SubAckWaiters,
    closed: &CancellationToken,
    filters: Vec<rumqttc::SubscribeFilter>,
) -> Result<oneshot::Receiver<()>> {
    if let Some(f) = filters.iter().find(|f| !rumqttc::valid_filter(&f.path)) {
        return Err(Error::broker(format!("subscribe {:?}", f.path), "not a valid MQTT topic filter"));
    }
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        {
            let mut waiting = subacks.lock().unwrap();
            if client.try_subscribe_many(filters.clone()).is_ok() {
                let (tx, rx) = oneshot::channel();
                waiting.push_back(tx);
                return Ok(rx);
            }
        }
        if closed.is_cancelled() {
            return Err(Error::Closed);
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(Error::Timeout(Duration::from_secs(30), "room for a SUBSCRIBE in the MQTT request queue".into()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Deliveries waiting for room in their receivers, in arrival order.
type Backlog = std::collections::VecDeque<(mpsc::Sender<Delivery>, Delivery)>;

#[async_trait]
impl Transport for Mqtt {
    fn describe(&self) -> String {
        self.url.redacted()
    }

    async fn declare(&self, _decl: &Declaration) -> Result<()> {
        self.check_open()
    }

    async fn subscribe(&self, queue: &str, inport: Arc<str>, sink: mpsc::Sender<Delivery>) -> Result<()> {
        self.check_open()?;
        let (first, held) = {
            let mut subs = self.subscribers.lock().unwrap();
            self.unsubscribed.lock().unwrap().remove(queue);
            let entry = subs.entry(queue.to_owned()).or_default();
            entry.push((inport.clone(), sink.clone()));
            (entry.len() == 1, self.early.lock().unwrap().contains_key(queue))
        };
        if held {
            // The event task hands them over (not here: they may be more
            // than `sink` holds, and nobody reads it until we return).
            let _ = self.adopt.send(queue.to_owned());
        }
        if first {
            // Wait for the SUBACK, so that "connected" means messages sent
            // from now on arrive (QoS 0 drops what has no subscriber yet).
            let filter = rumqttc::SubscribeFilter::new(queue.to_owned(), topic_qos(queue, self.qos));
            let rx = queue_subscribe(&self.client, &self.subacks, &self.closed, vec![filter]).await?;
            tracing::debug!(queue, "waiting for SUBACK");
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(_) => {} // acked, or the connection was replaced and it is redone
                Err(_) => {
                    return Err(Error::Timeout(Duration::from_secs(30), format!("SUBACK for {queue:?}")));
                }
            }
        }
        Ok(())
    }

    /// Forgets those subscribers at once (nothing more is handed to
    /// them). When the topic has none left, sends UNSUBSCRIBE; a QoS 1
    /// message still on its way is then acked and dropped.
    async fn unsubscribe(&self, queue: &str, sink: &mpsc::Sender<Delivery>) -> Result<()> {
        self.check_open()?;
        {
            let mut subs = self.subscribers.lock().unwrap();
            let Some(list) = subs.get_mut(queue) else { return Ok(()) };
            list.retain(|(_, s)| !s.same_channel(sink));
            if list.is_empty() {
                subs.remove(queue);
                self.unsubscribed.lock().unwrap().insert(queue.to_owned());
                for p in self.early.lock().unwrap().remove(queue).unwrap_or_default() {
                    let _ = self.client.try_ack(&p);
                }
                // Queued under the lock, so a SUBSCRIBE to the same topic
                // made right after cannot overtake it.
                self.client.try_unsubscribe(queue).map_err(|e| Error::broker(format!("unsubscribe {queue:?}"), e.to_string()))?;
            }
        }
        Ok(())
    }

    async fn publish(&self, target: Target, payload: Payload, _persistent: bool) -> Result<()> {
        self.check_open()?;
        let topic = match target {
            Target::Exchange(t) | Target::Queue(t) => t,
        };
        let qos = topic_qos(&topic, self.qos);
        let counter = &self.asked.0[usize::from(qos != QoS::AtMostOnce)];
        counter.fetch_add(1, Ordering::SeqCst);
        let mut guard = AskGuard { counter, queued: false };
        self.client.publish(topic, qos, false, payload.into_bytes()).await.map_err(|_| Error::Closed)?;
        guard.queued = true;
        Ok(())
    }

    async fn bind(&self, exchange: &str, queue: &str) -> Result<()> {
        self.check_open()?;
        Err(Error::broker(
            format!("bind {exchange:?} to {queue:?}"),
            "MQTT brokers cannot bind topics; name the same topic on both ports, or let a coordinator forward",
        ))
    }

    async fn unbind(&self, exchange: &str, queue: &str) -> Result<()> {
        self.bind(exchange, queue).await
    }

    async fn delete(&self, _name: &str) -> Result<()> {
        self.check_open()
    }

    /// Topics fan out: every observer gets `fbp` and the observers' own
    /// topic ([`DISCOVERY_FANOUT`]), both tagged `fbp`.
    async fn subscribe_discovery(&self, sink: mpsc::Sender<Delivery>) -> Result<()> {
        self.subscribe(DISCOVERY_QUEUE, Arc::from(DISCOVERY_QUEUE), sink.clone()).await?;
        self.subscribe(DISCOVERY_FANOUT, Arc::from(DISCOVERY_QUEUE), sink).await
    }

    async fn announce(&self, message: Payload) -> Result<()> {
        self.publish(Target::Queue(DISCOVERY_QUEUE.into()), message, false).await
    }

    fn generation(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// Waits until every publish made before the call is written to the
    /// socket (QoS 0) or acknowledged by the broker (QoS 1). Through an
    /// outage it waits for the next connection: QoS 0 publishes still
    /// queued then go out on it; a QoS 1 one is acked on a resumed
    /// session; what a connection without a session dropped is given up
    /// with a warning (see [`Sent`]).
    async fn flush(&self) -> Result<()> {
        self.check_open()?;
        let (want0, want1) = self.asked.now();
        let mut sent = self.sent.clone();
        tokio::select! {
            done = sent.wait_for(|s| s.written >= want0 && s.acked >= want1) => done.map(|_| ()).map_err(|_| Error::Closed),
            _ = self.closed.cancelled() => Err(Error::Closed),
        }
    }

    async fn close(&self) -> Result<()> {
        if self.closed.is_cancelled() {
            return Ok(());
        }
        let limit = Duration::from_secs(5);
        if tokio::time::timeout(limit, self.flush()).await.is_err() {
            let (s, (a0, a1)) = (*self.sent.borrow(), self.asked.now());
            warn!(qos0 = a0 - s.written.min(a0), qos1 = a1 - s.acked.min(a1), "closing with publishes not written or acknowledged within {limit:?}");
        }
        let rx = self.disconnected.lock().unwrap().take();
        if self.client.disconnect().await.is_ok() {
            if let Some(rx) = rx {
                let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
            }
        }
        self.closed.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await.is_err() {
            warn!("closing: the MQTT event task did not end within 5 s");
        }
        Ok(())
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_kept_per_instance() {
        let dir = std::env::temp_dir().join(format!("msgflo-session-{}", uuid::Uuid::new_v4().simple()));
        let a = claim_session_in(&dir, "msgflo r (Repeat)").unwrap();
        let b = claim_session_in(&dir, "msgflo r (Repeat)").unwrap();
        assert_ne!(a.id, b.id, "a second live instance gets its own session");
        assert!(a.id.starts_with("msgflo-msgflo_r__Repeat-"), "{}", a.id);
        let first = a.id.clone();
        drop(a);
        let again = claim_session_in(&dir, "msgflo r (Repeat)").unwrap();
        assert_eq!(again.id, first, "a restarted instance takes its session back");
        let other = claim_session_in(&dir, "msgflo s (Repeat)").unwrap();
        assert_ne!(other.id, b.id);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
