//! msgflo-spec: run the conformance scenarios against a participant command.
//!
//! `msgflo-spec --broker URL [--filter PATTERN] [--skip PATTERN] -- CMD ARGS...`
//!
//! For every scenario (spec/scenarios/*.json) the runner starts `CMD ARGS...
//! ROLE` with `MSGFLO_BROKER` set and a fresh role, and observes it only
//! through the broker (discovery on `fbp`, its queues) and its stdout,
//! stderr and exit status. The participant must behave like the shims in
//! spec/shims: inport `in`; outports `out` and `error`; payloads repeated
//! unchanged; `{"command":"nack"}` nacked; `{"command":"error"}` failing in
//! the handler (nack, and data on `error`); `{"command":"whoami"}` answered
//! with `{"pid": <process id>}`.
//!
//! Ends with `N passed, N failed[, N skipped]`; exit status 1 on failure.
//! Scenarios are data; this file is the only code that interprets them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use msgflo::transport::{self, ConnectOptions, Declaration, PortKind, Target, Transport};
use msgflo::Delivery;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(about = "Run the msgflo conformance scenarios against a participant command")]
struct Args {
    /// Broker URL (amqp://... or mqtt://...).
    #[arg(long, env = "MSGFLO_BROKER")]
    broker: String,
    /// Run only scenarios whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Skip scenarios whose name contains this (counted as skipped). Repeatable.
    #[arg(long)]
    skip: Vec<String>,
    /// Folder with the scenario files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))]
    scenarios: PathBuf,
    /// The participant command; the role is appended.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Deserialize)]
struct Scenario {
    name: String,
    #[allow(dead_code)]
    description: String,
    /// "amqp", "mqtt"; default both.
    #[serde(default)]
    brokers: Option<Vec<String>>,
    #[serde(default)]
    env: HashMap<String, String>,
    steps: Vec<Step>,
}

/// A payload in a scenario: exactly one of json, text, hex.
#[derive(Deserialize, Clone, Debug)]
struct Body {
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hex: Option<String>,
}

impl Body {
    fn bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.json, &self.text, &self.hex) {
            (Some(j), None, None) => Ok(serde_json::to_vec(j).unwrap()),
            (None, Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, None, Some(h)) => unhex(h),
            _ => Err("a body needs exactly one of json, text, hex".into()),
        }
    }

    /// JSON is compared as values; text and hex byte for byte; an empty
    /// body matches any payload.
    fn matches(&self, got: &[u8]) -> bool {
        if self.json.is_none() && self.text.is_none() && self.hex.is_none() {
            return true;
        }
        match &self.json {
            Some(j) => serde_json::from_slice::<Value>(got).ok().as_ref() == Some(j),
            None => self.bytes().map(|b| b == got).unwrap_or(false),
        }
    }
}

fn unhex(h: &str) -> Result<Vec<u8>, String> {
    if !h.len().is_multiple_of(2) {
        return Err(format!("odd hex length: {h}"));
    }
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|e| e.to_string())).collect()
}

fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(t) if t.len() <= 200 => format!("{t:?}"),
        Ok(t) => format!("{:?}... ({} bytes)", &t[..t.char_indices().nth(200).map(|(i, _)| i).unwrap_or(t.len())], t.len()),
        Err(_) => format!("<{} bytes: {}>", b.len(), b.iter().take(32).map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Step {
    /// Readiness line on stdout before the first discovery; nothing on stderr before it.
    CheckReadiness {},
    /// Exact discovery keys, port fields, default queues, string label/icon.
    CheckDiscovery {},
    /// At least `count` discovery messages within `within_ms`, all with one id.
    ExpectHeartbeats { count: usize, within_ms: u64 },
    /// (AMQP) The contract's declarations of the ports succeed (no 406).
    CheckDeclarations {},
    Send {
        port: String,
        #[serde(flatten)]
        body: Body,
        #[serde(default = "one")]
        repeat: usize,
    },
    /// Send JSON numbers 0..count.
    SendNumbers { port: String, count: usize },
    Expect {
        port: String,
        #[serde(flatten)]
        body: Body,
        #[serde(default = "default_timeout")]
        timeout_ms: u64,
    },
    ExpectNothing { port: String, ms: u64 },
    /// Until every number 0..count has been seen on `port` (duplicates allowed
    /// unless `unique`), in order if `ordered`.
    ExpectNumbers {
        port: String,
        count: usize,
        #[serde(default)]
        ordered: bool,
        #[serde(default)]
        unique: bool,
        #[serde(default = "long_timeout")]
        timeout_ms: u64,
    },
    /// Collect `count` messages on `port`; at least `at_least` distinct values of `field`.
    ExpectDistinct { port: String, count: usize, field: String, at_least: usize },
    /// Start another instance with the same role.
    StartInstance {},
    /// SIGTERM every instance; each must exit with status 0 within `within_ms`.
    Sigterm { within_ms: u64 },
    /// Wait a little.
    Sleep { ms: u64 },
    /// Restart the broker (AMQP: rabbitmqctl stop_app/start_app).
    RestartBroker {},
    /// Remember how many discovery messages have been seen.
    Mark {},
    /// A discovery message of the role after the last mark.
    ExpectDiscoveryAfterMark { within_ms: u64 },
}

fn one() -> usize {
    1
}
fn default_timeout() -> u64 {
    10_000
}
fn long_timeout() -> u64 {
    30_000
}

/// Port label used for the dead-letter tap.
const DEAD: &str = "deadletter";

struct Instance {
    child: Child,
    ready_at: Option<Instant>,
    stderr_before_ready: Option<String>,
}

struct Run {
    amqp: bool,
    role: String,
    command: Vec<String>,
    broker: String,
    env: HashMap<String, String>,
    transport: Arc<dyn Transport>,
    discovery_rx: mpsc::Receiver<Delivery>,
    discoveries: Vec<(Instant, Value)>,
    mark: usize,
    taps_tx: mpsc::Sender<Delivery>,
    taps_rx: mpsc::Receiver<Delivery>,
    pending: Vec<(String, Vec<u8>)>,
    seen: HashMap<String, Vec<i64>>,
    queues: HashMap<String, String>,
    cleanup: Vec<String>,
    instances: Vec<Instance>,
}

type R<T = ()> = Result<T, String>;

impl Run {
    async fn spawn(&mut self) -> R {
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .arg(&self.role)
            .env("MSGFLO_BROKER", &self.broker)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", self.command))?;
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = child.stderr.take().unwrap();
        // stderr read while waiting for the first stdout line.
        let mut err_buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        let line = loop {
            tokio::select! {
                biased;
                l = stdout.next_line() => break l.map_err(|e| e.to_string())?,
                // Discovery that arrives before the line is recorded with its time.
                Some(d) = self.discovery_rx.recv() => self.record_discovery(d),
                n = stderr.read(&mut chunk) => match n {
                    Ok(0) | Err(_) => {}
                    Ok(n) => err_buf.extend_from_slice(&chunk[..n]),
                },
                _ = &mut deadline => return Err("no line on stdout within 30 s".into()),
            }
        };
        if line.is_none() {
            let status = child.wait().await.ok();
            return Err(format!("exited ({status:?}) without a readiness line; stderr: {}", show(&err_buf)));
        }
        let ready_at = Instant::now();
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stderr, &mut sink).await;
        });
        self.instances.push(Instance {
            child,
            ready_at: Some(ready_at),
            stderr_before_ready: (!err_buf.is_empty()).then(|| String::from_utf8_lossy(&err_buf).into_owned()),
        });
        Ok(())
    }

    fn record_discovery(&mut self, d: Delivery) {
        let _ = d.ack();
        if let Ok(v) = serde_json::from_slice::<Value>(d.payload().as_bytes()) {
            if v["payload"]["role"] == self.role.as_str() {
                self.discoveries.push((Instant::now(), v));
            }
        }
    }

    /// Take discovery messages of our role that have arrived.
    fn drain_discovery(&mut self) {
        while let Ok(d) = self.discovery_rx.try_recv() {
            self.record_discovery(d);
        }
    }

    async fn wait_discoveries(&mut self, n: usize, within: Duration) -> R {
        let deadline = Instant::now() + within;
        loop {
            self.drain_discovery();
            if self.discoveries.len() >= n {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{} discovery message(s) of role {} within {within:?}; expected {n}", self.discoveries.len(), self.role));
            }
            if let Ok(Some(d)) = tokio::time::timeout(left, self.discovery_rx.recv()).await {
                self.record_discovery(d);
            }
        }
    }

    /// Queues from the first discovery; taps on the outports and dead-letter.
    async fn setup_taps(&mut self) -> R {
        let payload = self.discoveries[0].1["payload"].clone();
        for kind in ["inports", "outports"] {
            for p in payload[kind].as_array().cloned().unwrap_or_default() {
                if let (Some(id), Some(q)) = (p["id"].as_str(), p["queue"].as_str()) {
                    self.queues.insert(format!("{kind}:{id}"), q.to_owned());
                }
            }
        }
        let mut taps: Vec<(String, String)> = payload["outports"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| Some((p["id"].as_str()?.to_owned(), p["queue"].as_str()?.to_owned())))
            .collect();
        if self.amqp {
            if let Some(inq) = self.queues.get("inports:in").cloned() {
                let dead = format!("dead-{inq}");
                self.transport
                    .declare(&Declaration { kind: PortKind::Out, queue: dead.clone(), persistent: true })
                    .await
                    .map_err(|e| e.to_string())?;
                self.cleanup.push(dead.clone());
                taps.push((DEAD.to_owned(), dead));
            }
        }
        for (label, exchange) in taps {
            let queue = if self.amqp {
                let q = format!("spec-tap-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                self.transport
                    .declare(&Declaration { kind: PortKind::In, queue: q.clone(), persistent: false })
                    .await
                    .map_err(|e| e.to_string())?;
                self.transport.bind(&exchange, &q).await.map_err(|e| format!("tap {exchange}: {e}"))?;
                // Transient: it goes away with this connection.
                q
            } else {
                exchange
            };
            self.transport
                .subscribe(&queue, Arc::from(label.as_str()), self.taps_tx.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn inqueue(&self, port: &str) -> R<String> {
        self.queues.get(&format!("inports:{port}")).cloned().ok_or_else(|| format!("participant announced no inport {port:?}"))
    }

    async fn next_on(&mut self, port: &str, timeout: Duration) -> R<Vec<u8>> {
        if let Some(i) = self.pending.iter().position(|(p, _)| p == port) {
            return Ok(self.pending.remove(i).1);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.taps_rx.recv()).await {
                Ok(Some(d)) => {
                    let _ = d.ack();
                    let body = d.payload().as_bytes().to_vec();
                    if d.inport() == port {
                        return Ok(body);
                    }
                    self.pending.push((d.inport().to_owned(), body));
                }
                _ => return Err(format!("nothing on {port} within {timeout:?}")),
            }
        }
    }

    async fn step(&mut self, step: &Step) -> R {
        match step {
            Step::CheckReadiness {} => {
                let first = &self.instances[0];
                if let Some(err) = &first.stderr_before_ready {
                    return Err(format!("stderr before the readiness line: {}", show(err.as_bytes())));
                }
                let ready = first.ready_at.ok_or("no readiness line")?;
                let disc = self.discoveries.first().ok_or("no discovery")?.0;
                // Discovery received before the line was read came first.
                if disc < ready {
                    return Err("discovery arrived before the readiness line on stdout".into());
                }
                Ok(())
            }
            Step::CheckDiscovery {} => {
                let msg = &self.discoveries[0].1;
                if msg["protocol"] != "discovery" || msg["command"] != "participant" {
                    return Err(format!("envelope is not discovery/participant: {msg}"));
                }
                let p = &msg["payload"];
                let mut keys: Vec<&str> = p.as_object().ok_or("payload is not an object")?.keys().map(String::as_str).collect();
                keys.sort_unstable();
                let want = ["component", "icon", "id", "inports", "label", "outports", "role"];
                if keys != want {
                    return Err(format!("payload keys {keys:?}, expected exactly {want:?}"));
                }
                for k in ["id", "component", "label", "icon"] {
                    if !p[k].is_string() {
                        return Err(format!("{k} is not a string: {}", p[k]));
                    }
                }
                for (kind, ids) in [("inports", vec!["in"]), ("outports", vec!["out", "error"])] {
                    let ports = p[kind].as_array().ok_or(format!("{kind} is not an array"))?;
                    for port in ports {
                        for f in ["id", "type", "queue"] {
                            if !port[f].is_string() {
                                return Err(format!("{kind} entry without string {f}: {port}"));
                            }
                        }
                    }
                    for id in ids {
                        let port = ports.iter().find(|x| x["id"] == id).ok_or(format!("no {kind} {id:?}"))?;
                        let want = format!("{}.{}", self.role, id.to_uppercase());
                        if port["queue"] != want.as_str() {
                            return Err(format!("default queue of {id} is {}, expected {want}", port["queue"]));
                        }
                    }
                }
                Ok(())
            }
            Step::ExpectHeartbeats { count, within_ms } => {
                self.wait_discoveries(*count, Duration::from_millis(*within_ms)).await?;
                let ids: HashSet<String> = self.discoveries.iter().map(|(_, v)| v["payload"]["id"].to_string()).collect();
                if ids.len() != 1 {
                    return Err(format!("the id changed between discovery messages: {ids:?}"));
                }
                Ok(())
            }
            Step::CheckDeclarations {} => {
                if !self.amqp {
                    return Ok(());
                }
                for (kind, key) in [(PortKind::In, "inports:in"), (PortKind::Out, "outports:out"), (PortKind::Out, "outports:error")] {
                    let queue = self.queues.get(key).cloned().ok_or(format!("no {key}"))?;
                    self.transport
                        .declare(&Declaration { kind, queue, persistent: true })
                        .await
                        .map_err(|e| format!("contract declaration refused: {e}"))?;
                }
                Ok(())
            }
            Step::Send { port, body, repeat } => {
                let q = self.inqueue(port)?;
                let bytes = body.bytes()?;
                for _ in 0..*repeat {
                    self.transport.publish(Target::Queue(q.clone()), bytes.clone().into(), true).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Step::SendNumbers { port, count } => {
                let q = self.inqueue(port)?;
                for i in 0..*count {
                    self.transport.publish(Target::Queue(q.clone()), i.to_string().into(), true).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Step::Expect { port, body, timeout_ms } => {
                let got = self.next_on(port, Duration::from_millis(*timeout_ms)).await?;
                if body.matches(&got) {
                    Ok(())
                } else {
                    Err(format!("on {port}: got {}, expected {:?}", show(&got), body))
                }
            }
            Step::ExpectNothing { port, ms } => match self.next_on(port, Duration::from_millis(*ms)).await {
                Ok(got) => Err(format!("unexpected message on {port}: {}", show(&got))),
                Err(_) => Ok(()),
            },
            Step::ExpectNumbers { port, count, ordered, unique, timeout_ms } => {
                let deadline = Instant::now() + Duration::from_millis(*timeout_ms);
                loop {
                    let seen = self.seen.entry(port.clone()).or_default();
                    let distinct: HashSet<i64> = seen.iter().copied().collect();
                    if (0..*count as i64).all(|i| distinct.contains(&i)) {
                        if *unique && distinct.len() != seen.len() {
                            return Err(format!("duplicates on {port}: {} messages for {} values", seen.len(), distinct.len()));
                        }
                        if *ordered && seen.windows(2).any(|w| w[0] > w[1]) {
                            return Err(format!("out of order on {port}"));
                        }
                        return Ok(());
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    let got = self
                        .next_on(port, left)
                        .await
                        .map_err(|_| format!("{} of {count} numbers on {port} within {timeout_ms} ms", distinct.len()))?;
                    let n: i64 = std::str::from_utf8(&got).ok().and_then(|t| t.trim().parse().ok()).ok_or(format!("not a number on {port}: {}", show(&got)))?;
                    self.seen.entry(port.clone()).or_default().push(n);
                }
            }
            Step::ExpectDistinct { port, count, field, at_least } => {
                let mut values = HashSet::new();
                for _ in 0..*count {
                    let got = self.next_on(port, Duration::from_millis(default_timeout())).await?;
                    let v: Value = serde_json::from_slice(&got).map_err(|_| format!("not JSON on {port}: {}", show(&got)))?;
                    values.insert(v[field].to_string());
                }
                if values.len() < *at_least {
                    return Err(format!("{} distinct {field} values among {count} messages, expected at least {at_least}", values.len()));
                }
                Ok(())
            }
            Step::StartInstance {} => self.spawn().await,
            Step::Sigterm { within_ms } => {
                for inst in &mut self.instances {
                    if let Some(pid) = inst.child.id() {
                        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
                    }
                }
                for inst in &mut self.instances {
                    match tokio::time::timeout(Duration::from_millis(*within_ms), inst.child.wait()).await {
                        Ok(Ok(st)) if st.success() => {}
                        Ok(Ok(st)) => return Err(format!("exit status after SIGTERM: {st}")),
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err(format!("still running {within_ms} ms after SIGTERM")),
                    }
                }
                self.instances.clear();
                Ok(())
            }
            Step::Sleep { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(())
            }
            Step::RestartBroker {} => {
                if !self.amqp {
                    return Err("restart_broker is implemented for RabbitMQ only".into());
                }
                for arg in ["stop_app", "start_app", "await_startup"] {
                    let st = Command::new("rabbitmqctl").arg(arg).output().await.map_err(|e| format!("rabbitmqctl: {e}"))?;
                    if !st.status.success() {
                        return Err(format!("rabbitmqctl {arg} failed"));
                    }
                }
                Ok(())
            }
            Step::Mark {} => {
                self.drain_discovery();
                self.mark = self.discoveries.len();
                Ok(())
            }
            Step::ExpectDiscoveryAfterMark { within_ms } => self.wait_discoveries(self.mark + 1, Duration::from_millis(*within_ms)).await,
        }
    }
}

async fn run_scenario(args: &Args, sc: &Scenario) -> R {
    let amqp = args.broker.starts_with("amqp");
    let transport = transport::connect(&args.broker, &ConnectOptions::default()).await.map_err(|e| e.to_string())?;
    let (dtx, discovery_rx) = mpsc::channel(1024);
    transport.subscribe_discovery(dtx).await.map_err(|e| e.to_string())?;
    let (taps_tx, taps_rx) = mpsc::channel(4096);
    let mut run = Run {
        amqp,
        role: format!("spec{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        command: args.command.clone(),
        broker: args.broker.clone(),
        env: sc.env.clone(),
        transport,
        discovery_rx,
        discoveries: Vec::new(),
        mark: 0,
        taps_tx,
        taps_rx,
        pending: Vec::new(),
        seen: HashMap::new(),
        queues: HashMap::new(),
        cleanup: Vec::new(),
        instances: Vec::new(),
    };
    let result = async {
        run.spawn().await?;
        run.wait_discoveries(1, Duration::from_secs(20)).await?;
        run.setup_taps().await?;
        for (i, step) in sc.steps.iter().enumerate() {
            run.step(step).await.map_err(|e| format!("step {}: {e}", i + 1))?;
        }
        Ok(())
    }
    .await;
    for inst in &mut run.instances {
        let _ = inst.child.kill().await;
    }
    if amqp {
        // The participant's queues and exchanges, and the dead-letter exchange.
        let mut names = run.cleanup.clone();
        names.extend(run.queues.values().cloned());
        for n in names {
            let _ = run.transport.delete(&n).await;
        }
    }
    let _ = run.transport.close().await;
    result
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "msgflo=error,lapin=off".into()))
        .init();
    let args = Args::parse();
    let scheme = if args.broker.starts_with("amqp") { "amqp" } else { "mqtt" };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&args.scenarios) {
        Ok(d) => d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect(),
        Err(e) => {
            eprintln!("msgflo-spec: cannot read {}: {e}", args.scenarios.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    files.sort();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for f in files {
        let sc: Scenario = match std::fs::read_to_string(&f).map_err(|e| e.to_string()).and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())) {
            Ok(s) => s,
            Err(e) => {
                println!("FAILED {}: bad scenario file: {e}", f.display());
                failed += 1;
                continue;
            }
        };
        if args.filter.as_ref().is_some_and(|p| !sc.name.contains(p.as_str())) {
            continue;
        }
        if sc.brokers.as_ref().is_some_and(|b| !b.iter().any(|x| x == scheme)) {
            continue; // does not apply to this broker
        }
        if args.skip.iter().any(|p| sc.name.contains(p.as_str())) {
            println!("skipped {} (asked)", sc.name);
            skipped += 1;
            continue;
        }
        let start = Instant::now();
        match run_scenario(&args, &sc).await {
            Ok(()) => {
                passed += 1;
                println!("ok {} ({:.1} s)", sc.name, start.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("FAILED {}: {e}", sc.name);
            }
        }
    }
    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
