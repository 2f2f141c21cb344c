//! A participant: a definition bound to a role, connected to a broker.
//!
//! The core API is pull-based: [`Participant::recv_batch`] yields
//! deliveries, the caller runs user code, then acks or nacks each one, and
//! [`Participant::send`]s outputs. [`Participant::serve`] is the
//! handler-style API built on that (the msgflo-nodejs contract: a handler
//! returns outputs, or an error which nacks the input).
//!
//! Start-up is two steps so a program can print its readiness line between
//! them: [`Participant::connect`] declares every port and subscribes, then
//! [`Participant::announce`] sends the first discovery message and starts
//! the heartbeat (every `period / 2.2`, and again after each reconnect).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::broker;
use crate::discovery::{heartbeat_interval, Definition, ParticipantInfo};
use crate::error::{Error, Result};
use crate::message::{Delivery, Message, Payload};
use crate::transport::{self, ConnectOptions, Declaration, PortKind, Target, Transport};

/// How to connect and behave.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Broker URL; `None` resolves from the environment (see [`broker::resolve`]).
    pub broker: Option<String>,
    pub connect: ConnectOptions,
    /// Time between discovery messages; `None` reads `MSGFLO_DISCOVERY_PERIOD`.
    pub heartbeat: Option<Duration>,
}

impl Options {
    pub fn broker(url: impl Into<String>) -> Self {
        Options { broker: Some(url.into()), ..Default::default() }
    }
}

/// What a handler returns: outputs as `(outport, payload)` pairs.
pub type Outputs = Vec<(String, Payload)>;

/// A handler's failure: the input is nacked. `outputs` are sent first; when
/// there are none and the participant has an `error` outport,
/// [`error_body`]`(error)` is sent there (see [`Participant::complete`]).
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: String,
    pub outputs: Outputs,
}

impl Failure {
    pub fn new(error: impl Into<String>) -> Self {
        Failure { error: error.into(), outputs: Vec::new() }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

/// Result of a handler.
pub type HandlerResult = std::result::Result<Outputs, Failure>;

/// The payload sent on the `error` outport for a failure with `message`:
/// the JSON object `{"error": message}`, nothing else (every language sends
/// exactly this; the message is the error's own text, see
/// docs/architecture.md, "Completing a delivery").
pub fn error_body(message: &str) -> Payload {
    Payload::json(&serde_json::json!({ "error": message }))
}

/// A running participant. Cheap to clone; all clones are one participant.
#[derive(Clone)]
pub struct Participant {
    shared: Arc<Shared>,
}

struct Shared {
    info: ParticipantInfo,
    transport: Arc<dyn Transport>,
    /// Deliveries of every inport. Locked by whoever is receiving.
    deliveries: Mutex<mpsc::Receiver<Delivery>>,
    /// Completions queued by [`Participant::complete_in_order`], worked
    /// through in order by one task; `None` until first used, and after
    /// `stop` took it.
    completions: std::sync::Mutex<Option<Completions>>,
    /// The runtime the participant was connected on (for that task).
    runtime: tokio::runtime::Handle,
    /// Held by `serve` while it works on a batch, so `stop` can wait for it.
    processing: Mutex<()>,
    heartbeat: Duration,
    /// Cancelled by `stop` (or drop): receiving ends, the heartbeat ends.
    stop: CancellationToken,
    announced: std::sync::atomic::AtomicBool,
    /// The heartbeat task; `stop` waits for it before closing.
    tasks: tokio_util::task::TaskTracker,
    /// Processing times and outcomes per inport, reported with heartbeats.
    stats: Arc<crate::stats::Stats>,
}

struct Completions {
    tx: mpsc::UnboundedSender<Vec<(Arc<Delivery>, HandlerResult)>>,
    done: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Participant {
    /// Connect, declare all ports and subscribe to the inports; nothing is
    /// announced yet (see [`Participant::announce`]).
    /// `options.connect.prefetch` must be at least 1 (0 is refused: it has
    /// no single meaning across brokers and the original libraries).
    pub async fn connect(definition: &Definition, role: &str, options: Options) -> Result<Self> {
        let info = definition.instantiate(role)?;
        if options.connect.prefetch == 0 {
            return Err(Error::InvalidDefinition(format!(
                "prefetch must be at least 1 (messages in flight per participant; default {})",
                crate::transport::DEFAULT_PREFETCH
            )));
        }
        let url = broker::resolve(options.broker.as_deref());
        let mut connect = options.connect.clone();
        if connect.connection_name == ConnectOptions::default().connection_name {
            connect.connection_name = format!("msgflo {} ({})", info.role, info.component);
        }
        let transport = transport::connect(&url, &connect).await?;
        Self::with_transport(info, transport, &options).await
    }

    /// Like [`Participant::connect`] over an existing transport.
    pub async fn with_transport(info: ParticipantInfo, transport: Arc<dyn Transport>, options: &Options) -> Result<Self> {
        for port in &info.outports {
            if let Some(queue) = &port.queue {
                let decl = Declaration { kind: PortKind::Out, queue: queue.clone(), persistent: port.persistent };
                transport.declare(&decl).await?;
            }
        }
        for port in &info.inports {
            if let Some(queue) = &port.queue {
                let decl = Declaration { kind: PortKind::In, queue: queue.clone(), persistent: port.persistent };
                transport.declare(&decl).await?;
            }
        }
        let capacity = usize::from(options.connect.prefetch.max(1)); // 0 refused by connect
        let (tx, rx) = mpsc::channel(capacity);
        for port in &info.inports {
            if let Some(queue) = &port.queue {
                transport.subscribe(queue, Arc::from(port.id.as_str()), tx.clone()).await?;
            }
        }
        debug!(role = %info.role, id = %info.id, broker = %transport.describe(), "participant connected");
        Ok(Participant {
            shared: Arc::new(Shared {
                heartbeat: options.heartbeat.unwrap_or_else(heartbeat_interval),
                info,
                transport,
                deliveries: Mutex::new(rx),
                completions: std::sync::Mutex::new(None),
                runtime: tokio::runtime::Handle::current(),
                processing: Mutex::new(()),
                stop: CancellationToken::new(),
                announced: Default::default(),
                tasks: tokio_util::task::TaskTracker::new(),
                stats: Default::default(),
            }),
        })
    }

    /// Connect and announce in one step.
    pub async fn start(definition: &Definition, role: &str, options: Options) -> Result<Self> {
        let p = Self::connect(definition, role, options).await?;
        p.announce().await?;
        Ok(p)
    }

    /// Send discovery now; the first call also starts the heartbeat.
    pub async fn announce(&self) -> Result<()> {
        let s = &self.shared;
        s.transport.announce(discovery_payload(&s.info)).await?;
        if !s.announced.swap(true, std::sync::atomic::Ordering::AcqRel) {
            s.tasks.spawn(heartbeat(Arc::downgrade(&self.shared), s.transport.generation(), s.stop.clone(), s.heartbeat));
            info!(role = %s.info.role, component = %s.info.component, broker = %s.transport.describe(), "participant announced");
        }
        Ok(())
    }

    pub fn info(&self) -> &ParticipantInfo {
        &self.shared.info
    }

    pub fn role(&self) -> &str {
        &self.shared.info.role
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// Next delivery, or `None` once stopped.
    pub async fn recv(&self) -> Option<Delivery> {
        self.recv_batch(1).await.pop()
    }

    /// Wait for at least one delivery, then take up to `max` that are ready.
    /// Empty once stopped.
    pub async fn recv_batch(&self, max: usize) -> Vec<Delivery> {
        if self.shared.stop.is_cancelled() {
            return Vec::new();
        }
        let mut rx = tokio::select! {
            biased;
            rx = self.shared.deliveries.lock() => rx,
            _ = self.shared.stop.cancelled() => return Vec::new(),
        };
        let first = tokio::select! {
            biased;
            d = rx.recv() => d,
            _ = self.shared.stop.cancelled() => return Vec::new(),
        };
        let mut out: Vec<Delivery> = first.into_iter().collect();
        while out.len() < max.max(1) {
            match rx.try_recv() {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        let (info, stats) = (&self.shared.info, &self.shared.stats);
        for d in &mut out {
            let queue = info.inport(d.inport()).and_then(|p| p.queue.as_deref()).unwrap_or("");
            d.hand_over(stats, queue);
        }
        out
    }

    /// What this participant measured since the previous call (the
    /// heartbeat reports it to observers); `None` when idle.
    pub fn stats_report(&self) -> Option<crate::stats::StatsReport> {
        self.shared.stats.report(&self.shared.info.role, &self.shared.info.id)
    }

    /// Like [`Participant::recv_batch`], giving up after `timeout` (empty).
    pub async fn recv_batch_timeout(&self, max: usize, timeout: Duration) -> Vec<Delivery> {
        tokio::time::timeout(timeout, self.recv_batch(max)).await.unwrap_or_default()
    }

    /// Send on an outport. Unknown (or hidden) outports are an error.
    pub async fn send(&self, outport: &str, payload: impl Into<Payload>) -> Result<()> {
        let info = &self.shared.info;
        let port = info.outport(outport).ok_or_else(|| unknown_port(info, "outport", outport))?;
        match &port.queue {
            Some(q) => {
                self.shared
                    .transport
                    .publish(Target::Exchange(q.clone()), payload.into(), port.persistent)
                    .await
            }
            // Hidden ports have no queue: data goes nowhere (as in the original).
            None => Ok(()),
        }
    }

    /// Send without waiting: `Ok(false)` when the send would have to wait
    /// (backpressure: too many unconfirmed, or the broker is away); nothing
    /// was sent then. For hosts whose thread must not block (Node).
    pub fn try_send(&self, outport: &str, payload: impl Into<Payload>) -> Result<bool> {
        match self.send(outport, payload).now_or_never() {
            Some(result) => result.map(|()| true),
            None => Ok(false),
        }
    }

    /// Run `handler` on every delivery until stopped. Outputs are sent, then
    /// the input is acked (and the ack reaches the broker only after they are
    /// confirmed). A failure, a panic, or an output to an unknown port nacks
    /// the input; the participant keeps running.
    pub async fn serve<H, Fut>(&self, mut handler: H) -> Result<()>
    where
        H: FnMut(Message) -> Fut,
        Fut: Future<Output = HandlerResult>,
    {
        let batch_size = 64;
        loop {
            let batch = self.recv_batch(batch_size).await;
            if batch.is_empty() {
                return Ok(());
            }
            let _busy = self.shared.processing.lock().await;
            for delivery in batch {
                if self.shared.stop.is_cancelled() {
                    // Dropped unsettled: requeued for whoever runs next.
                    return Ok(());
                }
                let result = AssertUnwindSafe(handler(delivery.message().clone())).catch_unwind().await;
                let result = result.unwrap_or_else(|panic| {
                    Err(Failure::new(format!("handler panicked: {}", crate::runtime::panic_message(&*panic))))
                });
                self.complete(&delivery, result).await?;
            }
        }
    }

    /// Complete a delivery from its handler's outcome: the one place every
    /// language's handler API ends (Rust `serve`, Python, Node, C++).
    ///
    /// - `Ok(outputs)`: each output is sent, then the input is acked (the
    ///   ack reaches the broker only after the outputs are confirmed).
    /// - `Err(failure)`: `failure.outputs` are sent, the input is nacked
    ///   (dead-letter route, never requeued), and when `failure.outputs` is
    ///   empty and the participant has a visible `error` outport,
    ///   [`error_body`]`(failure.error)` is sent there.
    /// - An output that cannot be sent (unknown port, broker refusal) turns
    ///   success into failure with that error's text (outputs were given, so
    ///   nothing goes to `error`).
    /// - A delivery the handler already acked or nacked itself (the
    ///   msgflo-python/-cpp style) keeps that settlement; the rest applies.
    ///
    /// Errors only when the participant is closed.
    pub async fn complete(&self, delivery: &Delivery, result: HandlerResult) -> Result<()> {
        self.finish(Some(delivery), result).await
    }

    /// [`Participant::complete`] for input that did not come from the
    /// broker (an IIP, data a source injects): the same rule, nothing to
    /// settle.
    pub async fn finish(&self, delivery: Option<&Delivery>, result: HandlerResult) -> Result<()> {
        let (outputs, failure) = match result {
            Ok(outputs) => (outputs, None),
            Err(f) => (f.outputs, Some(f.error)),
        };
        let mut send_failed = None;
        let had_outputs = !outputs.is_empty();
        for (port, payload) in outputs {
            if let Err(e) = self.send(&port, payload).await {
                if e.code() == crate::ErrorCode::Closed {
                    return Err(e);
                }
                send_failed = Some(e.to_string());
            }
        }
        let failure = failure.or(send_failed);
        let settle = |how: fn(&Delivery) -> Result<()>| match delivery {
            Some(d) if !d.is_settled() => how(d),
            _ => Ok(()),
        };
        let inport = delivery.map_or("-", |d| d.inport());
        match failure {
            None => settle(Delivery::ack),
            Some(error) => {
                warn!(role = %self.role(), %inport, %error, "processing failed; message nacked");
                if !had_outputs && self.info().outport("error").is_some_and(|p| !p.hidden) {
                    if let Err(e) = self.send("error", error_body(&error)).await {
                        error!(error = %e, "could not send to the error outport");
                    }
                }
                settle(Delivery::nack)
            }
        }
    }

    /// [`Participant::complete`] without waiting, for a host whose thread
    /// must not block (Node): completions are worked through in the order
    /// they are given, by one task; a failure to complete is logged.
    /// [`Participant::stop`] finishes every completion given before it.
    pub fn complete_in_order(&self, delivery: Arc<Delivery>, result: HandlerResult) {
        self.complete_all_in_order(vec![(delivery, result)]);
    }

    /// [`Participant::complete_in_order`] for several deliveries at once
    /// (a host that collects its handlers' outcomes for a moment hands
    /// them over in one call and wakes the completing task once).
    pub fn complete_all_in_order(&self, completions: Vec<(Arc<Delivery>, HandlerResult)>) {
        if completions.is_empty() {
            return;
        }
        let mut slot = self.shared.completions.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            if self.is_stopped() {
                drop(completions); // requeued, as any delivery not handled before stop
                return;
            }
            let (tx, mut rx) = mpsc::unbounded_channel::<Vec<(Arc<Delivery>, HandlerResult)>>();
            let weak = Arc::downgrade(&self.shared);
            let done = self.shared.runtime.spawn(async move {
                while let Some(batch) = rx.recv().await {
                    let Some(shared) = weak.upgrade() else { return };
                    let p = Participant { shared };
                    for (delivery, result) in batch {
                        if let Err(e) = p.complete(&delivery, result).await {
                            warn!(role = %p.role(), error = %e, "could not complete a delivery");
                        }
                    }
                }
            });
            *slot = Some(Completions { tx, done });
        }
        if let Some(c) = slot.as_ref() {
            let _ = c.tx.send(completions);
        }
    }

    /// Stop receiving, wait for the batch being served, requeue deliveries
    /// not yet handled, wait for outputs and settlements to reach the broker,
    /// and close the connection.
    pub async fn stop(&self) -> Result<()> {
        let s = &self.shared;
        s.stop.cancel();
        let _idle = s.processing.lock().await;
        let completions = s.completions.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Completions { tx, done }) = completions {
            drop(tx);
            let _ = done.await;
        }
        {
            let mut rx = s.deliveries.lock().await;
            rx.close();
            while let Ok(d) = rx.try_recv() {
                drop(d); // requeues
            }
        }
        // The heartbeat ends on `stop`; no announcement after the close.
        s.tasks.close();
        s.tasks.wait().await;
        s.transport.close().await
    }

    /// Whether `stop` was called (or the participant dropped).
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.is_cancelled()
    }

    /// Resolves once the participant is stopped.
    pub async fn stopped(&self) {
        self.shared.stop.cancelled().await
    }

    /// `ROLE(COMPONENT) ready on BROKER` (password hidden): the line a
    /// participant process prints on stdout before its first discovery
    /// message, in every language (tools that start participants wait for
    /// it).
    pub fn readiness_line(&self) -> String {
        let info = &self.shared.info;
        format!("{}({}) ready on {}", info.role, info.component, self.shared.transport.describe())
    }

    /// The life of a participant process: print the readiness line
    /// `ROLE(COMPONENT) ready on BROKER` on stdout (what tools that start
    /// participants wait for; it comes before the first discovery message),
    /// announce, serve with `handler` until SIGTERM or SIGINT, then
    /// [`stop`](Self::stop): the batch being handled is finished and settled,
    /// what was not handled goes back to the queue, outputs and acks reach
    /// the broker. Returns when all that is done (or serving failed).
    pub async fn serve_until_signal<H, Fut>(&self, handler: H) -> Result<()>
    where
        H: FnMut(Message) -> Fut + Send + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        // Listening before the readiness line: a tool may signal right after it.
        let mut signals = StopSignals::listen();
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", self.readiness_line());
            let _ = out.flush();
        }
        self.announce().await?;
        let serving = self.clone();
        let server = tokio::spawn(async move { serving.serve(handler).await });
        tokio::select! {
            _ = signals.recv() => {}
            _ = self.stopped() => {}
        }
        self.stop().await?;
        server.await.map_err(|e| Error::Handler(format!("serving task: {e}")))?
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment this is made
/// (so that one arriving before [`recv`](Self::recv) is awaited is not
/// lost, nor left to its default action of killing the process). Made
/// inside the tokio runtime.
pub struct StopSignals {
    #[cfg(unix)]
    signals: Vec<tokio::signal::unix::Signal>,
}

impl StopSignals {
    pub fn listen() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = [SignalKind::terminate(), SignalKind::interrupt()].into_iter().filter_map(|k| signal(k).ok()).collect();
            StopSignals { signals }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves on the first of them.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.signals.is_empty() {
                return std::future::pending().await;
            }
            let waits = self.signals.iter_mut().map(|s| Box::pin(s.recv()));
            futures_util::future::select_all(waits).await;
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C) the process gets after
/// this is first polled; see [`StopSignals`] to listen from an earlier point.
pub async fn stop_signal() {
    StopSignals::listen().recv().await
}

fn unknown_port(info: &ParticipantInfo, direction: &'static str, port: &str) -> Error {
    let ports = if direction == "outport" { &info.outports } else { &info.inports };
    Error::UnknownPort {
        role: info.role.clone(),
        direction,
        port: port.to_owned(),
        known: ports.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", "),
    }
}

fn discovery_payload(info: &ParticipantInfo) -> Payload {
    Payload::json(&info.discovery_message())
}

/// Re-announces every `interval`, and at once after a reconnect. Holds only a
/// weak reference so it ends when the participant is dropped.
async fn heartbeat(
    shared: std::sync::Weak<Shared>,
    mut generation: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
    interval: Duration,
) {
    generation.borrow_and_update();
    loop {
        let reconnected = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => false,
            changed = generation.changed() => match changed {
                Ok(()) => true,
                Err(_) => return,
            },
        };
        let Some(s) = shared.upgrade() else { return };
        // `stop` waits for this task: an announcement held up by a broker
        // outage gives way to it.
        let announced = tokio::select! {
            _ = stop.cancelled() => return,
            r = s.transport.announce(discovery_payload(&s.info)) => r,
        };
        match announced {
            Ok(()) if reconnected => info!(role = %s.info.role, "re-announced after reconnect"),
            Ok(()) => debug!(role = %s.info.role, "discovery heartbeat sent"),
            Err(e) => warn!(role = %s.info.role, error = %e, "discovery heartbeat failed"),
        }
        // What was measured since, to observers only (guv).
        if let Some(report) = s.stats.report(&s.info.role, &s.info.id) {
            let message = serde_json::json!({"protocol": "msgflo", "command": "stats", "payload": report});
            let sent = tokio::select! {
                _ = stop.cancelled() => return,
                r = s.transport.broadcast_to_observers(Payload::json(&message)) => r,
            };
            if let Err(e) = sent {
                debug!(role = %s.info.role, error = %e, "stats not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::PortDef;
    use crate::transport::memory::MemoryBroker;

    fn unique(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    fn repeat_def() -> Definition {
        Definition::new("Repeat")
            .inport(PortDef::new("in"))
            .outport(PortDef::new("out"))
            .outport(PortDef::new("error"))
    }

    /// Deadline for a test's wait on a condition: a bug fails the test
    /// instead of hanging it. Only an upper bound, never a pacing delay.
    const WAIT: Duration = Duration::from_secs(10);

    async fn within<T>(what: &str, wait: impl Future<Output = T>) -> T {
        match tokio::time::timeout(WAIT, wait).await {
            Ok(v) => v,
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
        }
    }

    async fn start(name: &str, role: &str) -> Participant {
        let opts = Options { heartbeat: Some(Duration::from_secs(3600)), ..Options::broker(format!("memory://{name}")) };
        Participant::start(&repeat_def(), role, opts).await.unwrap()
    }

    #[tokio::test]
    async fn repeat_roundtrip_and_discovery() {
        let name = unique("b");
        // In-process discovery fans out through the `fbp` exchange.
        let broker = MemoryBroker::named(&name);
        broker.declare_queue("disc", None);
        broker.declare_exchange("fbp");
        broker.bind("fbp", "disc");
        let p = start(&name, "rep").await;
        let disc = broker.take("disc").expect("discovery sent");
        let a = crate::discovery::parse_discovery(&disc).unwrap();
        assert_eq!(a.role, "rep");

        broker.declare_queue("sink", None);
        broker.bind("rep.OUT", "sink");
        broker.publish(&Target::Queue("rep.IN".into()), b"{\"x\":1}");
        broker.publish(&Target::Queue("rep.IN".into()), &[0xff, 0xfe]);

        let p2 = p.clone();
        let serving = tokio::spawn(async move {
            p2.serve(|m| async move { Ok(vec![("out".to_string(), m.payload)]) }).await
        });
        let got = within("both messages to reach rep.OUT", async {
            let mut got = Vec::new();
            while got.len() < 2 {
                if let Some(b) = broker.take("sink") {
                    got.push(b);
                } else {
                    tokio::task::yield_now().await;
                }
            }
            got
        })
        .await;
        assert_eq!(got, vec![b"{\"x\":1}".to_vec(), vec![0xff, 0xfe]]);
        p.stop().await.unwrap();
        serving.await.unwrap().unwrap();
        assert_eq!(broker.unacked_len("rep.IN"), Some(0));
    }

    #[tokio::test]
    async fn failure_nacks_to_dead_letter_and_error_port() {
        let name = unique("b");
        let p = start(&name, "rep").await;
        let broker = MemoryBroker::named(&name);
        broker.declare_queue("dead", None);
        broker.bind("dead-rep.IN", "dead");
        broker.declare_queue("errors", None);
        broker.bind("rep.ERROR", "errors");
        broker.publish(&Target::Queue("rep.IN".into()), b"\"boom\"");
        let d = p.recv().await.unwrap();
        p.complete(&d, Err(Failure::new("bad input"))).await.unwrap();
        assert_eq!(broker.take("dead").unwrap(), b"\"boom\"");
        assert_eq!(broker.take("errors").unwrap(), b"{\"error\":\"bad input\"}");
        assert_eq!(d.ack().unwrap_err().code(), crate::ErrorCode::AlreadyCompleted);
    }

    #[tokio::test]
    async fn error_body_is_exactly_the_message() {
        assert_eq!(error_body("bad \"input\" æ").as_bytes(), "{\"error\":\"bad \\\"input\\\" æ\"}".as_bytes());
    }

    #[tokio::test]
    async fn failure_with_outputs_sends_them_not_the_error_body() {
        let name = unique("b");
        let p = start(&name, "rep").await;
        let broker = MemoryBroker::named(&name);
        for (q, x) in [("out", "rep.OUT"), ("errors", "rep.ERROR"), ("dead", "dead-rep.IN")] {
            broker.declare_queue(q, None);
            broker.bind(x, q);
        }
        broker.publish(&Target::Queue("rep.IN".into()), b"1");
        let d = p.recv().await.unwrap();
        let failure = Failure { error: "partial".into(), outputs: vec![("out".into(), "2".into())] };
        p.complete(&d, Err(failure)).await.unwrap();
        assert_eq!(broker.take("out").unwrap(), b"2");
        assert_eq!(broker.take("dead").unwrap(), b"1");
        assert!(broker.take("errors").is_none());
    }

    #[tokio::test]
    async fn completing_a_delivery_the_handler_settled_keeps_its_settlement() {
        let name = unique("b");
        let p = start(&name, "rep").await;
        let broker = MemoryBroker::named(&name);
        for (q, x) in [("errors", "rep.ERROR"), ("dead", "dead-rep.IN")] {
            broker.declare_queue(q, None);
            broker.bind(x, q);
        }
        broker.publish(&Target::Queue("rep.IN".into()), b"1");
        let d = p.recv().await.unwrap();
        d.ack().unwrap();
        p.complete(&d, Err(Failure::new("after ack"))).await.unwrap();
        assert!(broker.take("dead").is_none(), "acked stays acked");
        assert_eq!(broker.take("errors").unwrap(), error_body("after ack").as_bytes());
        // Input that came from no delivery (an IIP) follows the same rule.
        p.finish(None, Err(Failure::new("iip"))).await.unwrap();
        assert_eq!(broker.take("errors").unwrap(), error_body("iip").as_bytes());
    }

    #[tokio::test]
    async fn complete_in_order_keeps_order_and_stop_finishes_it() {
        let name = unique("b");
        let p = start(&name, "rep").await;
        let broker = MemoryBroker::named(&name);
        broker.declare_queue("sink", None);
        broker.bind("rep.OUT", "sink");
        for i in 0..200 {
            broker.publish(&Target::Queue("rep.IN".into()), i.to_string().as_bytes());
        }
        within("all 200 deliveries to be received", async {
            let mut n = 0;
            while n < 200 {
                for d in p.recv_batch_timeout(64, Duration::from_secs(5)).await {
                    let out = d.payload().clone();
                    p.complete_in_order(Arc::new(d), Ok(vec![("out".into(), out)]));
                    n += 1;
                }
            }
        })
        .await;
        p.stop().await.unwrap();
        let got: Vec<Vec<u8>> = std::iter::from_fn(|| broker.take("sink")).collect();
        let want: Vec<Vec<u8>> = (0..200).map(|i: i32| i.to_string().into_bytes()).collect();
        assert_eq!(got, want);
        assert_eq!(broker.unacked_len("rep.IN"), Some(0));
    }

    #[tokio::test]
    async fn unknown_outport_is_an_error_and_nacks() {
        let name = unique("b");
        let p = start(&name, "rep").await;
        let e = p.send("nope", "x").await.unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::UnknownPort);
        let broker = MemoryBroker::named(&name);
        broker.declare_queue("dead", None);
        broker.bind("dead-rep.IN", "dead");
        broker.publish(&Target::Queue("rep.IN".into()), b"1");
        let d = p.recv().await.unwrap();
        p.complete(&d, Ok(vec![("nope".into(), "x".into())])).await.unwrap();
        assert_eq!(broker.take("dead").unwrap(), b"1");
    }

    #[tokio::test]
    async fn handler_panic_is_a_nack_not_a_crash() {
        let name = unique("b");
        let p = start(&name, "rep").await;
        let broker = MemoryBroker::named(&name);
        broker.declare_queue("dead", None);
        broker.bind("dead-rep.IN", "dead");
        broker.declare_queue("sink", None);
        broker.bind("rep.OUT", "sink");
        broker.publish(&Target::Queue("rep.IN".into()), b"\"panic\"");
        broker.publish(&Target::Queue("rep.IN".into()), b"\"fine\"");
        let p2 = p.clone();
        let serving = tokio::spawn(async move {
            p2.serve(|m| async move {
                if m.payload.as_bytes() == b"\"panic\"" {
                    panic!("user bug");
                }
                Ok(vec![("out".to_string(), m.payload)])
            })
            .await
        });
        let ok = within("the message after the panicking one to reach rep.OUT", async {
            loop {
                if let Some(b) = broker.take("sink") {
                    break b;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(ok, b"\"fine\"");
        assert_eq!(broker.take("dead").unwrap(), b"\"panic\"");
        p.stop().await.unwrap();
        serving.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn processing_times_and_outcomes_are_measured_per_inport() {
        let name = unique("stats");
        let p = start(&name, "rep").await;
        let broker = MemoryBroker::named(&name);
        for i in 0..4 {
            broker.publish(&Target::Queue("rep.IN".into()), i.to_string().as_bytes());
        }
        assert!(p.stats_report().is_none(), "nothing handed over yet");
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(within("four deliveries", p.recv_batch(4)).await);
        }
        tokio::time::sleep(Duration::from_millis(30)).await; // "work"
        got.pop().unwrap().nack().unwrap();
        got.pop().unwrap().ack().unwrap();
        got.pop().unwrap().ack().unwrap();
        let held = got.pop().unwrap();
        let r = p.stats_report().expect("a report");
        let port = &r.inports["in"];
        assert_eq!((port.queue.as_str(), port.acked, port.nacked, port.requeued, port.inflight), ("rep.IN", 2, 1, 0, 1));
        assert_eq!(port.processing.len(), 3);
        assert!(port.processing.iter().all(|s| *s >= 0.03 && *s < 10.0), "{:?}", port.processing);
        // The next report starts from zero; the one in flight carries over.
        drop(held); // requeued: counted, not a processing time
        let r = p.stats_report().expect("a report");
        let port = &r.inports["in"];
        assert_eq!((port.acked, port.nacked, port.requeued, port.inflight, port.processing.len()), (0, 0, 1, 0, 0));
        assert!(p.stats_report().is_none(), "idle");
        p.stop().await.unwrap();
    }

    #[tokio::test]
    async fn stop_requeues_unhandled_deliveries() {
        let name = unique("b");
        let p = start(&name, "rep").await;
        let broker = MemoryBroker::named(&name);
        for i in 0..5 {
            broker.publish(&Target::Queue("rep.IN".into()), i.to_string().as_bytes());
        }
        let first = p.recv().await.unwrap();
        first.ack().unwrap();
        // Let the consumer move the rest into the participant's buffer.
        within("the consumer to drain rep.IN into the participant's buffer", async {
            while broker.queue_len("rep.IN") != Some(0) {
                tokio::task::yield_now().await;
            }
        })
        .await;
        p.stop().await.unwrap();
        assert!(p.recv().await.is_none());
        assert_eq!(broker.queue_len("rep.IN"), Some(4), "unhandled messages are back in the queue");
        assert_eq!(broker.unacked_len("rep.IN"), Some(0));
    }
}
