//! The coordinator: keeps the live picture of every participant discovered on
//! the broker, and keeps the broker wired as a graph says.
//!
//! It is a reconcile loop, not a one-shot setup: whenever discovery changes
//! what is known (a participant appears late, comes back with other queues)
//! or the graph changes (live editing, later over the FBP runtime protocol),
//! the wanted broker edges are computed again ([`wiring::resolve`]) and the
//! difference is applied. Nothing fails because a participant is missing: its
//! edges wait, and are wired the moment it announces itself.
//!
//! - [`registry`]: participants by role and id, heartbeats, expiry.
//! - [`wiring`]: graph + registry -> broker edges (pure, unit-tested).
//! - `forward`: MQTT edges, forwarded by the coordinator.
//! - [`launcher`] and [`supervisor`]: which participants to start (from the
//!   component library), spawning and restarting them.
//! - [`embedded`]: the MQTT broker used when none is configured.
//! - [`observer`]: the messages observers exchange on the discovery
//!   channel (announcements, queries, replays, wires), typed.
//! - `reconcile`: the reconcile step itself (wire and unwire edges, send
//!   IIPs and held values, start and stop participants to match the graph).
//! - [`journal`]: which IIPs were sent, so a coordinator started again does
//!   not send them twice.
//! - `tap`: copies of what participants send on watched outports.
//!
//! This file: the [`Coordinator`] handle and its event loop (discovery
//! messages, commands, snapshots).
//!
//! Several coordinators and tools can observe discovery at once (see
//! [`Transport::subscribe_discovery`]); a coordinator answers a newcomer's
//! query by replaying what it knows, with ages, so `msgflo status` sees the
//! whole system at once instead of waiting for heartbeats.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::{BrokerUrl, Scheme};
use crate::graph::{Connection, Graph, PortRef};
use crate::transport::{Target, Transport};
use crate::{Delivery, Error, Payload, Result};

pub mod embedded;
mod forward;
pub mod journal;
pub mod launcher;
pub mod observer;
mod reconcile;
pub mod registry;
pub mod supervisor;
mod tap;
pub mod wiring;

use registry::{Observed, Registry, RoleStatus};
use observer::ObserverMessage;
use wiring::{Pending, Resolution, Wire};

/// How a coordinator behaves.
pub struct Options {
    /// The graph to keep wired (empty: only observe).
    pub graph: Graph,
    /// A participant silent for this long is shown as gone.
    pub expiry: Duration,
    /// Send the graph's IIPs (each once, after the edges it feeds exist).
    pub send_iips: bool,
    /// Answer other observers' queries with what this one knows. Tools
    /// that only look (`msgflo status`) do not.
    pub answer_queries: bool,
    /// Ask other coordinators for what they know at start.
    pub query: bool,
    /// Change the broker (bind, forward, send IIPs). Off for tools that
    /// only look.
    pub wire: bool,
    /// Start (and stop) the graph's participants, following the graph.
    pub launcher: Option<launcher::Launcher>,
    /// Instances to run per role from the start (absent: 1); see
    /// [`Coordinator::scale`].
    pub scale: BTreeMap<String, u32>,
    /// Extra environment for the participants of a role.
    pub role_env: BTreeMap<String, Vec<(String, String)>>,
    /// Where to note the IIPs sent, so that a coordinator started again
    /// does not send them twice to participants that got them
    /// ([`journal`]). `None`: every coordinator sends them.
    pub iip_journal: Option<std::path::PathBuf>,
}

impl Options {
    pub fn new(graph: Graph) -> Self {
        Options {
            graph,
            expiry: default_expiry(),
            send_iips: true,
            answer_queries: true,
            query: true,
            wire: true,
            launcher: None,
            scale: BTreeMap::new(),
            role_env: BTreeMap::new(),
            iip_journal: None,
        }
    }

    /// Look, never touch: for `msgflo status` and other observers.
    pub fn observer() -> Self {
        Options { send_iips: false, answer_queries: false, wire: false, ..Options::new(Graph::default()) }
    }
}

/// Three missed heartbeats of a participant using the same
/// `MSGFLO_DISCOVERY_PERIOD` as this process (about 82 s by default).
pub fn default_expiry() -> Duration {
    crate::discovery::heartbeat_interval() * 3 + Duration::from_secs(1)
}

/// How far the clocks of two hosts may differ: a timestamped discovery
/// message younger than this counts as sent now; an older one counts from
/// its timestamp (so backlog that sat in `fbp` shows its true age).
pub const CLOCK_SKEW: Duration = Duration::from_secs(10);

/// One wired (or failing) broker edge, for status.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct WireStatus {
    #[serde(flatten)]
    pub wire: Wire,
    /// The graph edges it serves.
    pub edges: Vec<String>,
    /// `None` when wired; the last error otherwise.
    pub error: Option<String>,
}

/// Everything a coordinator knows, as plain data.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub participants: Vec<RoleStatus>,
    pub wires: Vec<WireStatus>,
    /// Graph edges not wired, and why.
    pub pending: Vec<(String, Pending)>,
    /// IIPs not sent yet, and why.
    pub iips_pending: Vec<(String, String)>,
    pub iips_sent: usize,
    /// Discovery messages handled; messages on `fbp` that were not.
    pub observed: u64,
    pub rejected: u64,
    /// Graph participants with no live instance.
    pub missing: Vec<String>,
    /// Every graph participant alive, every edge wired, every IIP sent.
    pub complete: bool,
    /// Edges other coordinators reported wiring (answers to a query).
    pub reported_wires: Vec<WireStatus>,
    /// Graph participants the launcher could not start, and why.
    pub not_started: Vec<(String, String)>,
    /// Instances this coordinator runs per role it starts.
    pub expected: BTreeMap<String, u32>,
}

/// Changes a running coordinator accepts (the FBP runtime protocol drives
/// these).
enum Command {
    SetGraph(Box<Graph>),
    Send(Target, Payload, oneshot::Sender<Result<()>>),
    Tap(BTreeSet<(String, String)>),
    Deliver(PortRef, Payload),
    Scale(String, u32),
}

/// What happened on the wire, for watchers (the FBP runtime's
/// `network:data`). Lossy by design: a slow watcher misses events, the
/// system never waits for it.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message left the outport `role.port` (seen through a tap).
    Data { role: String, port: String, payload: Payload },
    /// The coordinator sent an IIP or a delivered value into `role.port`.
    Sent { role: String, port: String, payload: Payload },
    /// A participant process the coordinator started ended (`how`: exit
    /// code or signal); the supervisor restarts it.
    Exited { role: String, participant: String, how: String },
}

/// How long a value given with [`Coordinator::deliver`] waits for its
/// target to appear before it is dropped (with a log line).
pub const DELIVER_WAIT: Duration = Duration::from_secs(60);

/// A running coordinator. Dropping it stops the loop (not the transport).
pub struct Coordinator {
    commands: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Snapshot>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    observed: Arc<std::sync::atomic::AtomicU64>,
    supervisor: Option<supervisor::Supervisor>,
    events: tokio::sync::broadcast::Sender<Event>,
}

impl Coordinator {
    /// Discovery messages handled so far (up to date, unlike a snapshot).
    pub fn observed(&self) -> u64 {
        self.observed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Start observing discovery on `transport` (connected to `url`) and
    /// wiring `options.graph`.
    pub async fn start(transport: Arc<dyn Transport>, url: &str, options: Options) -> Result<Coordinator> {
        let mqtt = matches!(BrokerUrl::parse(url)?.scheme, Scheme::Mqtt { .. });
        let (dtx, drx) = mpsc::channel(4096);
        transport.subscribe_discovery(dtx).await?;
        if options.query {
            transport.broadcast_to_observers(Payload::json(&ObserverMessage::Query.to_json())).await?;
        }
        let (stx, srx) = watch::channel(Snapshot::default());
        let (ctx, crx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let forwarder = mqtt.then(|| forward::Forwarder::new(transport.clone()));
        let (events, _) = tokio::sync::broadcast::channel(4096);
        let (tap_tx, tap_rx) = mpsc::channel(4096);
        let mut state = State {
            events: events.clone(),
            taps: tap::Taps::new(tap_tx, mqtt),
            held: Vec::new(),
            scale: options.scale,
            role_env: options.role_env,
            journal: options.iip_journal.map(journal::Journal::open),
            transport,
            registry: Registry::new(options.expiry),
            iips: options
                .graph
                .connections
                .iter()
                .filter(|c| c.src.is_none() && options.send_iips)
                .cloned()
                .map(|c| Iip { conn: c, sent: None, at_start: true })
                .collect(),
            graph: options.graph,
            applied: BTreeSet::new(),
            wire: options.wire,
            reported_wires: Vec::new(),
            observed: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            failed: BTreeMap::new(),
            reported: BTreeSet::new(),
            resolution: Resolution::default(),
            forwarder,
            answer_queries: options.answer_queries,
            rejected: 0,
            iips_sent: 0,
            snapshot: stx,
            snapshot_due: true,
            launcher: options.launcher,
            not_started: BTreeMap::new(),
        };
        state.reconcile_processes().await;
        state.reconcile().await;
        state.publish_snapshot();
        let observed = state.observed.clone();
        let supervisor = state.launcher.as_ref().map(|l| l.supervisor.clone());
        let task = tokio::spawn(state.run(drx, crx, tap_rx, stop.clone()));
        Ok(Coordinator { commands: ctx, snapshot: srx, stop, task: Some(task), observed, supervisor, events })
    }

    /// The latest picture (updated after changes and every second).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Wait until `f` holds for the picture, or `timeout` passes.
    pub async fn wait_for(&self, timeout: Duration, f: impl Fn(&Snapshot) -> bool) -> Result<Snapshot> {
        let mut rx = self.snapshot.clone();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| f(s))).await;
        match res {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(timeout, "the coordinator to reach the wanted state".into())),
        }
    }

    /// Replace the graph; edges are added and removed to match.
    pub fn set_graph(&self, graph: Graph) -> Result<()> {
        graph.validate().map_err(Error::InvalidDefinition)?;
        self.commands.send(Command::SetGraph(Box::new(graph))).map_err(|_| Error::Closed)
    }

    /// Send a message into a queue (an IIP given live).
    pub async fn send(&self, target: Target, payload: Payload) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Send(target, payload, tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Watch the outports `(role, port)` (replacing the previous set):
    /// their messages come out of [`Coordinator::events`]. A private,
    /// auto-deleted copy queue per outport (AMQP) or a second subscription
    /// (MQTT); the participants' own queues are not touched.
    pub fn tap(&self, outports: BTreeSet<(String, String)>) -> Result<()> {
        self.commands.send(Command::Tap(outports)).map_err(|_| Error::Closed)
    }

    /// Send `payload` into `role.port` as soon as the role is known and the
    /// edges downstream of it exist (like an IIP, but once and not kept in
    /// the graph); dropped with a log line after [`DELIVER_WAIT`].
    pub fn deliver(&self, tgt: PortRef, payload: Payload) -> Result<()> {
        self.commands.send(Command::Deliver(tgt, payload)).map_err(|_| Error::Closed)
    }

    /// Run `n` instances of `role` (default 1) from now on. They share the
    /// role's queues, so work is spread over them; scaling down stops the
    /// newest instances with SIGTERM, which lets each finish and settle
    /// what it holds. `0` stops the role (its queue keeps the work).
    pub fn scale(&self, role: &str, n: u32) -> Result<()> {
        self.commands.send(Command::Scale(role.to_owned(), n)).map_err(|_| Error::Closed)
    }

    /// Data seen on tapped outports and values sent by this coordinator.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Messages waiting in the queues of these inports (AMQP); `None` where
    /// the broker cannot say (MQTT) or the role is unknown.
    pub async fn depths(&self, transport: &dyn Transport, queues: &[String]) -> Vec<Option<u64>> {
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            out.push(transport.queue_depth(q).await.ok().flatten());
        }
        out
    }

    /// Stop the loop and the participants it started, and wait for them.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(s) = self.supervisor.take() {
            s.shutdown().await;
        }
    }

    /// Stop the loop and the participants it started, through a shared
    /// reference (when [`Coordinator::stop`] cannot take it): the loop ends
    /// on its own, the participants are waited for.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(s) = &self.supervisor {
            s.shutdown().await;
        }
    }

    /// The participants this coordinator started, as they are now.
    pub async fn children(&self) -> Vec<supervisor::ChildStatus> {
        match &self.supervisor {
            Some(s) => s.status().await,
            None => Vec::new(),
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An IIP of the graph and whether it went out.
struct Iip {
    conn: Connection,
    sent: Option<Instant>,
    /// Part of the graph the coordinator started with (the IIP journal
    /// applies), not set live.
    at_start: bool,
}

struct State {
    transport: Arc<dyn Transport>,
    registry: Registry,
    graph: Graph,
    /// IIPs and whether (when) they were sent.
    iips: Vec<Iip>,
    applied: BTreeSet<Wire>,
    wire: bool,
    reported_wires: Vec<WireStatus>,
    /// Discovery messages handled, readable without waiting for a snapshot.
    observed: Arc<std::sync::atomic::AtomicU64>,
    /// Wires that failed: when to retry, and the error.
    failed: BTreeMap<Wire, (Instant, String)>,
    /// Pending edges already logged (each problem is said once).
    reported: BTreeSet<String>,
    resolution: Resolution,
    forwarder: Option<forward::Forwarder>,
    answer_queries: bool,
    rejected: u64,
    iips_sent: usize,
    snapshot: watch::Sender<Snapshot>,
    /// Something changed since the last snapshot. Snapshots cost O(roles),
    /// so they are made at most every 50 ms, not per discovery message.
    snapshot_due: bool,
    launcher: Option<launcher::Launcher>,
    not_started: BTreeMap<String, String>,
    events: tokio::sync::broadcast::Sender<Event>,
    taps: tap::Taps,
    /// Values to deliver once their target is ready, and since when.
    held: Vec<(PortRef, Payload, Instant)>,
    /// Instances wanted per role (absent: 1).
    scale: BTreeMap<String, u32>,
    role_env: BTreeMap<String, Vec<(String, String)>>,
    journal: Option<journal::Journal>,
}

impl State {
    async fn run(
        mut self,
        mut discovery: mpsc::Receiver<Delivery>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut tapped: mpsc::Receiver<Delivery>,
        stop: CancellationToken,
    ) {
        let mut exits = self.launcher.as_ref().map(|l| l.supervisor.exits());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snap_tick = tokio::time::interval(Duration::from_millis(50));
        snap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.close().await;
                    return;
                }
                // Before discovery, so a flood of it cannot starve expiry.
                _ = tick.tick() => self.on_tick().await,
                _ = snap_tick.tick(), if self.snapshot_due => {
                    self.publish_snapshot();
                }
                c = commands.recv() => match c {
                    Some(c) => self.on_command(c).await,
                    None => {
                        self.close().await;
                        return;
                    }
                },
                Some(e) = async {
                    match exits.as_mut() {
                        Some(r) => loop {
                            match r.recv().await {
                                Ok(e) => break Some(e),
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                                Err(_) => break None,
                            }
                        },
                        None => std::future::pending().await,
                    }
                } => self.on_exit(e),
                Some(d) = tapped.recv() => {
                    if let Some((role, port)) = self.taps.source(d.inport()) {
                        let _ = self.events.send(Event::Data { role, port, payload: d.payload().clone() });
                    }
                    let _ = d.ack();
                }
                d = discovery.recv() => {
                    let Some(d) = d else {
                        warn!("discovery subscription ended");
                        return;
                    };
                    // Take what is queued too, then reconcile once.
                    let mut dirty = self.handle(d).await;
                    for _ in 0..4096 {
                        match discovery.try_recv() {
                            Ok(d) => dirty |= self.handle(d).await,
                            Err(_) => break,
                        }
                    }
                    if dirty {
                        self.reconcile().await;
                    }
                }
            }
        }
    }

    /// Once a second: expire participants not heard from, reconcile.
    async fn on_tick(&mut self) {
        for (role, id) in self.registry.expire(Instant::now()) {
            warn!(role = %role, "participant {role} ({id}) gone: no discovery for {:.0} s", self.registry.expiry().as_secs_f64());
        }
        self.reconcile().await;
    }

    async fn on_command(&mut self, c: Command) {
        match c {
            Command::SetGraph(g) => {
                // An IIP still in the graph keeps its state (each old one
                // matched once: the same value added twice is sent twice);
                // a new one is sent.
                let mut keep: Vec<Option<Iip>> = self.iips.drain(..).map(Some).collect();
                self.iips = g
                    .connections
                    .iter()
                    .filter(|c| c.src.is_none())
                    .cloned()
                    .map(|c| {
                        keep.iter_mut()
                            .find(|k| k.as_ref().is_some_and(|k| k.conn == c))
                            .and_then(Option::take)
                            .unwrap_or(Iip { conn: c, sent: None, at_start: false })
                    })
                    .collect();
                self.graph = *g;
                self.reconcile_processes().await;
                self.reconcile().await;
            }
            Command::Send(target, payload, reply) => {
                let _ = reply.send(self.transport.publish(target, payload, true).await);
            }
            Command::Tap(wanted) => {
                self.taps.want(wanted);
                self.reconcile().await;
            }
            Command::Scale(role, n) => {
                info!(role = %role, "scaling {role} to {n} instance(s)");
                self.scale.insert(role, n);
                self.reconcile_processes().await;
            }
            Command::Deliver(tgt, payload) => {
                self.held.push((tgt, payload, Instant::now()));
                self.reconcile().await;
            }
        }
    }

    /// A started process ended: its participant is gone at once.
    fn on_exit(&mut self, e: supervisor::Exited) {
        let _ = self.events.send(Event::Exited { role: e.role.clone(), participant: e.participant.clone(), how: e.how.clone() });
        let single = self.scale.get(&e.role).copied().unwrap_or(1) == 1;
        if self.registry.mark_gone(&e.role, &e.participant, single) {
            info!(role = %e.role, "participant {} ({}) is gone: its process ended ({})", e.role, e.participant, e.how);
            self.snapshot_due = true;
        }
    }

    /// Handle one message from `fbp`; true if wiring may have changed.
    async fn handle(&mut self, d: Delivery) -> bool {
        let at = self.sent_at(d.message().timestamp);
        let dirty = self.handle_bytes(d.payload().as_bytes(), at).await;
        let _ = d.ack();
        dirty
    }

    /// When a discovery message was sent. Ours carry a timestamp (AMQP,
    /// seconds): up to [`CLOCK_SKEW`] old (or in the future: another
    /// host's clock) it counts as now, older from its timestamp, so the
    /// last-seen time and expiry are true for backlog that waited in `fbp`.
    /// The original's messages carry none and count as now.
    fn sent_at(&self, timestamp: Option<u64>) -> Instant {
        let now = Instant::now();
        let Some(ts) = timestamp else { return now };
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let age = Duration::from_secs(wall.saturating_sub(ts));
        if age <= CLOCK_SKEW {
            return now;
        }
        // A monotonic clock cannot go back before boot: as far as it can.
        let mut back = age;
        loop {
            match now.checked_sub(back) {
                Some(t) => return t,
                None if back > Duration::from_secs(1) => back /= 2,
                None => return now,
            }
        }
    }

    async fn handle_bytes(&mut self, bytes: &[u8], at: Instant) -> bool {
        match ObserverMessage::decode(bytes) {
            Ok(m) => self.handle_message(m, at, false).await,
            Err(why) => {
                self.reject(why, bytes);
                false
            }
        }
    }

    /// `true` when the registry learned a new role or definition.
    /// `replay`: `m` is another coordinator's copy of what it saw at `at`.
    async fn handle_message(&mut self, m: ObserverMessage, at: Instant, replay: bool) -> bool {
        match m {
            ObserverMessage::Participant(a) => {
                let (role, id, component) = (a.role.clone(), a.id.clone(), a.component.clone());
                let what = if replay { self.registry.observe_replay(*a, at) } else { self.registry.observe(*a, at) };
                self.observed.store(self.registry.observed, std::sync::atomic::Ordering::Relaxed);
                match what {
                    Observed::NewRole => info!(role = %role, "discovered {role} ({component})"),
                    Observed::NewInstance => info!(role = %role, "another instance of {role}: {id}"),
                    Observed::Returned => info!(role = %role, "participant {role} ({id}) is back"),
                    Observed::Changed => info!(role = %role, "participant {role} announced a new definition"),
                    Observed::Heartbeat => {}
                }
                matches!(what, Observed::NewRole | Observed::Changed)
            }
            ObserverMessage::Query => {
                self.answer_query().await;
                false
            }
            ObserverMessage::Wires(wires) => {
                for w in wires {
                    if !self.reported_wires.contains(&w) {
                        self.reported_wires.push(w);
                    }
                }
                self.snapshot_due = true;
                false
            }
            // For guv; the coordinator does not use them (yet).
            ObserverMessage::Stats(_) => false,
            ObserverMessage::Replay { age_ms, message } => {
                let at = Instant::now().checked_sub(Duration::from_millis(age_ms)).unwrap_or_else(Instant::now);
                // Decoding made sure it holds an announcement.
                Box::pin(self.handle_message(*message, at, true)).await
            }
        }
    }

    fn reject(&mut self, why: String, bytes: &[u8]) {
        self.rejected += 1;
        // Say it, but not ten thousand times.
        if self.rejected <= 5 || self.rejected.is_power_of_two() {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
            warn!("ignored a message on fbp ({} so far): {why}: {shown}", self.rejected);
        }
    }

    /// Replay the latest discovery of every live instance to all observers.
    async fn answer_query(&mut self) {
        if !self.answer_queries {
            return;
        }
        let now = Instant::now();
        let mut replays = Vec::new();
        // Rebuilt from what the registry keeps (what observers use), so no
        // copy of every message is held for this.
        for (_, role) in self.registry.roles() {
            for (id, inst) in role.instances.iter().filter(|(_, i)| i.alive) {
                let mut a = role.definition.clone();
                a.id = id.clone();
                let age_ms = now.saturating_duration_since(inst.last_seen).as_millis() as u64;
                replays.push(ObserverMessage::Replay { age_ms, message: Box::new(ObserverMessage::Participant(Box::new(a))) });
            }
        }
        debug!("answering a discovery query with {} participants", replays.len());
        let wires: Vec<WireStatus> = self.wire_status().into_iter().filter(|w| w.error.is_none()).collect();
        if !wires.is_empty() {
            replays.push(ObserverMessage::Wires(wires));
        }
        for r in replays {
            if let Err(e) = self.transport.broadcast_to_observers(Payload::json(&r.to_json())).await {
                warn!("cannot answer a discovery query: {e}");
                return;
            }
        }
    }

    /// The loop ends: taps and MQTT forwarding end with it.
    async fn close(&mut self) {
        self.taps.close(self.transport.as_ref()).await;
        if let Some(f) = &self.forwarder {
            f.close().await;
        }
    }

    fn wire_status(&self) -> Vec<WireStatus> {
        self
            .resolution
            .wires
            .iter()
            .map(|(w, edges)| WireStatus {
                wire: w.clone(),
                edges: edges.clone(),
                error: if self.applied.contains(w) {
                    None
                } else {
                    Some(self.failed.get(w).map(|(_, e)| e.clone()).unwrap_or_else(|| "not wired yet".into()))
                },
            })
            .collect()
    }

    fn publish_snapshot(&mut self) {
        self.snapshot_due = false;
        let now = Instant::now();
        let wires = self.wire_status();
        let iips_pending: Vec<(String, String)> = self
            .iips
            .iter()
            .filter(|i| i.sent.is_none())
            .map(|Iip { conn: c, .. }| {
                let why = wiring::iip_ready(&self.graph, &self.resolution, &self.registry, &c.tgt.process, |w| self.applied.contains(w))
                    .err()
                    .unwrap_or_else(|| "no such inport".into());
                (format!("{}.{}", c.tgt.process, c.tgt.port), why)
            })
            .collect();
        let missing: Vec<String> = self
            .graph
            .processes
            .keys()
            .filter(|r| wiring::is_participant(&self.graph, r))
            .filter(|r| self.registry.role(r).is_none_or(|role| role.alive() == 0))
            .cloned()
            .collect();
        let complete = missing.is_empty()
            && self.resolution.pending.is_empty()
            && wires.iter().all(|w| w.error.is_none())
            && iips_pending.is_empty();
        self.snapshot.send_replace(Snapshot {
            participants: self.registry.status(now),
            wires,
            pending: self.resolution.pending.clone(),
            iips_pending,
            iips_sent: self.iips_sent,
            observed: self.registry.observed,
            rejected: self.rejected,
            missing,
            complete,
            reported_wires: self.reported_wires.clone(),
            not_started: self.not_started.iter().map(|(r, e)| (r.clone(), e.clone())).collect(),
            expected: self
                .launcher
                .as_ref()
                .map(|l| {
                    l.roles(&self.graph)
                        .into_iter()
                        .map(|r| {
                            let n = self.scale.get(&r).copied().unwrap_or(1);
                            (r, n)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
}
