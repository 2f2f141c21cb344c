//! The fault-injection suite: violence against private brokers and
//! participants, with loss and duplicate accounting. Each scenario prints
//! one `FAULTS` line (sent, received, lost, duplicated, and what it
//! measured) and fails on any loss.
//!
//! Every scenario starts a RabbitMQ node of its own (own port, data folder
//! and node name; never the machine's shared broker), one at a time.
//! Needs what scripts/test builds first: .venv (Python) and the Node addon.
//! Run: `scripts/faults` (CI sizes) or `scripts/faults --big`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::brokers::*;
use common::*;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use msgflo::transport::{self, ConnectOptions, Declaration, PortKind, Target, Transport};
use msgflo::{Options, Participant, Payload};

/// One private node at a time (the machine has two cores).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Everything logged by this process, for scenarios that check the log.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Capture)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "msgflo=info".into()))
        .try_init();
}

fn logged(needle: &str) -> usize {
    let log = LOG.lock().unwrap();
    String::from_utf8_lossy(&log).matches(needle).count()
}

/// CI size, or the big one with MSGFLO_FAULTS_BIG=1 (`scripts/faults --big`).
fn size(ci: u64, big: u64) -> u64 {
    if std::env::var("MSGFLO_FAULTS_BIG").is_ok_and(|v| !v.is_empty() && v != "0") {
        big
    } else {
        ci
    }
}

/// Counts every message that reaches a queue bound to an outport: each
/// payload is a JSON number, the message's id.
struct Sink {
    _t: Option<Arc<dyn Transport>>,
    counts: Arc<Mutex<HashMap<u64, u32>>>,
    distinct: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    /// Payloads that are not ids (IIPs), as text.
    others: Arc<Mutex<Vec<String>>>,
    queue: String,
}

impl Sink {
    async fn start(url: &str, outport: &str) -> Sink {
        let t = transport::connect(url, &ConnectOptions::default()).await.unwrap();
        let queue = unique("sink");
        t.declare(&Declaration { kind: PortKind::Out, queue: outport.into(), persistent: true }).await.unwrap();
        t.declare(&Declaration { kind: PortKind::In, queue: queue.clone(), persistent: true }).await.unwrap();
        t.bind(outport, &queue).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<msgflo::Delivery>(1024);
        t.subscribe(&queue, Arc::from("sink"), tx).await.unwrap();
        let s = Sink {
            _t: Some(t),
            counts: Default::default(),
            distinct: Default::default(),
            total: Default::default(),
            others: Default::default(),
            queue,
        };
        let (counts, distinct, total, others) = (s.counts.clone(), s.distinct.clone(), s.total.clone(), s.others.clone());
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let id: Option<u64> = serde_json::from_slice(d.payload().as_bytes()).ok();
                let _ = d.ack();
                let Some(id) = id else {
                    others.lock().unwrap().push(String::from_utf8_lossy(d.payload().as_bytes()).into_owned());
                    continue;
                };
                total.fetch_add(1, Ordering::SeqCst);
                let mut c = counts.lock().unwrap();
                let n = c.entry(id).or_insert(0);
                *n += 1;
                if *n == 1 {
                    distinct.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        s
    }

    fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::SeqCst)
    }

    /// Wait until `n` distinct messages arrived (then the fault is
    /// injected); fails naming `what` after `timeout`. Returns how many had
    /// arrived by then.
    async fn wait_distinct(&self, n: u64, what: &str, timeout: Duration) -> u64 {
        let start = Instant::now();
        while self.distinct() < n {
            assert!(start.elapsed() < timeout, "{what}: {} of {n} arrived within {timeout:?}", self.distinct());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.distinct()
    }

    /// (received, lost, duplicated) of ids 0..sent.
    fn tally(&self, sent: u64) -> (u64, u64, u64) {
        let c = self.counts.lock().unwrap();
        let received: u64 = c.values().map(|n| *n as u64).sum();
        let lost = (0..sent).filter(|i| !c.contains_key(i)).count() as u64;
        let dup: u64 = c.values().map(|n| (*n as u64).saturating_sub(1)).sum();
        (received, lost, dup)
    }

    /// Print the scenario's line; fail on loss or too many duplicates.
    fn report(&self, scenario: &str, sent: u64, dup_bound: u64, extra: &str) {
        let (received, lost, dup) = self.tally(sent);
        println!("FAULTS {scenario}: sent {sent}, received {received}, lost {lost}, duplicated {dup} (bound {dup_bound}){extra}");
        assert_eq!(lost, 0, "{scenario}: {lost} of {sent} messages lost");
        assert!(dup <= dup_bound, "{scenario}: {dup} duplicates, more than the in-flight bound {dup_bound}");
    }

    /// Wait until every id 0..sent arrived; on timeout report and fail.
    async fn wait_all(&self, scenario: &str, sent: u64, timeout: Duration) {
        let start = Instant::now();
        while self.distinct() < sent {
            if start.elapsed() > timeout {
                let (received, lost, dup) = self.tally(sent);
                let missing: Vec<u64> = {
                    let c = self.counts.lock().unwrap();
                    (0..sent).filter(|i| !c.contains_key(i)).take(20).collect()
                };
                eprintln!("{scenario}: first missing ids {missing:?}");
                panic!("FAULTS {scenario}: timed out after {timeout:?}: sent {sent}, received {received}, lost {lost}, duplicated {dup}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publish ids from..to (persistent) to `queue`, then wait for the confirms.
fn send_range(t: Arc<dyn Transport>, queue: String, from: u64, to: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in from..to {
            t.publish(Target::Queue(queue.clone()), Payload::from(i.to_string()), true).await.expect("publish");
        }
        t.flush().await.expect("flush");
    })
}

/// Consumers on `queue`, None while it does not exist.
async fn consumers(url: &str, queue: &str) -> Option<u32> {
    let raw = Raw::connect_to(url).await;
    let ch = raw.channel().await;
    let q = ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.ok()?;
    Some(q.consumer_count())
}

async fn wait_consumers(url: &str, queue: &str, n: u32, procs: &mut [&mut Proc]) {
    let start = Instant::now();
    loop {
        if consumers(url, queue).await.is_some_and(|c| c >= n) {
            return;
        }
        for p in procs.iter_mut() {
            assert!(!p.exited(), "{} exited:\n{}", p.name, p.output());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{n} consumer(s) on {queue} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Messages ready in `queue` (0 when it is gone).
async fn ready(url: &str, queue: &str) -> u32 {
    let raw = Raw::connect_to(url).await;
    let ch = raw.channel().await;
    ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or(0)
}

/// Run a blocking broker operation without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn in_decl(queue: &str) -> Declaration {
    Declaration { kind: PortKind::In, queue: queue.into(), persistent: true }
}

fn out_decl(queue: &str) -> Declaration {
    Declaration { kind: PortKind::Out, queue: queue.into(), persistent: true }
}

/// Unacked deliveries a participant may hold, and unconfirmed publishes a
/// transport may have out: what one connection can replay after a fault.
fn window() -> u64 {
    let o = ConnectOptions::default();
    o.prefetch as u64 + o.max_unconfirmed as u64
}

/// RabbitMQ SIGKILLed in the middle of a stream of persistent messages
/// through Rust -> Python -> Node, then restarted: everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed() {
    init();
    let _turn = TURN.lock().await;
    let n = size(20_000, 100_000);
    let mut rabbit = blocking(|| PrivateRabbit::start("faults-kill"));
    let url = rabbit.url();
    let (a, b, c) = (unique("krust"), unique("kpython"), unique("knode"));
    let (pa, _ha) = start_repeat(&a, Options::broker(&url)).await;
    let mut py = Proc::spawn("python", python_shim(&b, &url), &rabbit.dir);
    let mut nd = Proc::spawn("node", node_shim(&c, &url), &rabbit.dir);
    let w = transport::connect(&url, &ConnectOptions::default()).await.unwrap();
    for q in [&a, &b, &c] {
        w.declare(&in_decl(&format!("{q}.IN"))).await.unwrap();
        w.declare(&out_decl(&format!("{q}.OUT"))).await.unwrap();
    }
    w.bind(&format!("{a}.OUT"), &format!("{b}.IN")).await.unwrap();
    w.bind(&format!("{b}.OUT"), &format!("{c}.IN")).await.unwrap();
    wait_consumers(&url, &format!("{b}.IN"), 1, &mut [&mut py]).await;
    wait_consumers(&url, &format!("{c}.IN"), 1, &mut [&mut nd]).await;
    let sink = Sink::start(&url, &format!("{c}.OUT")).await;

    let started = Instant::now();
    let sender = send_range(w.clone(), format!("{a}.IN"), 0, n);
    let kill_at = n / 3;
    let at_kill = sink.wait_distinct(kill_at, "through the chain before the kill", Duration::from_secs(180)).await;
    let down = Instant::now();
    rabbit = tokio::task::spawn_blocking(move || {
        rabbit.kill();
        rabbit.run();
        rabbit
    })
    .await
    .unwrap();
    let downtime = down.elapsed();
    let mut generation = pa.transport().generation();
    sink.wait_all("broker-killed", n, Duration::from_secs(240)).await;
    sender.await.unwrap();
    assert!(*generation.borrow_and_update() >= 2, "the Rust participant reconnected");
    // Let late duplicates land before counting them.
    for q in [format!("{a}.IN"), format!("{b}.IN"), format!("{c}.IN"), sink.queue.clone()] {
        eventually(&format!("{q} drained"), Duration::from_secs(60), || async { (ready(&url, &q).await == 0).then_some(()) }).await;
    }
    assert!(!py.exited() && !nd.exited(), "the Python and Node participants survived the broker's death");
    // Sender + three hops + the sink, each replaying at most its window.
    let bound = 5 * window();
    sink.report(
        "broker-killed (Rust -> Python -> Node, SIGKILL + restart of RabbitMQ)",
        n,
        bound,
        &format!(
            "; killed after {at_kill} arrived; broker down {:.1} s; total {:.1} s",
            downtime.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
    );
    pa.stop().await.unwrap();
    drop((py, nd));
    drop(rabbit);
}

/// One of two instances of a role SIGKILLed mid-batch: its unacked
/// deliveries go to the other; none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_killed() {
    init();
    let _turn = TURN.lock().await;
    let n = size(5_000, 50_000);
    let rabbit = blocking(|| PrivateRabbit::start("faults-part"));
    let url = rabbit.url();
    let r = unique("kpart");
    let mut one = Proc::spawn("python-1", python_shim(&r, &url), &rabbit.dir);
    let mut two = Proc::spawn("python-2", python_shim(&r, &url), &rabbit.dir);
    wait_consumers(&url, &format!("{r}.IN"), 2, &mut [&mut one, &mut two]).await;
    // Nobody observes this node: the announcements wait in `fbp`, each
    // with a per-message expiration, so such a backlog never outlives it
    // (the broker drops them; `msgflo status` never sees stale ones).
    let raw = Raw::connect_to(&url).await;
    let announced = raw.get("fbp", Duration::from_secs(30)).await;
    let expiration = announced.properties.expiration().as_ref().map(|e| e.to_string());
    let expiration: u64 = expiration.as_deref().unwrap_or("none").parse().unwrap_or_else(|_| panic!("announcement expiration {expiration:?}"));
    assert!((10_000..=600_000).contains(&expiration), "announcement expiration {expiration} ms");
    let sink = Sink::start(&url, &format!("{r}.OUT")).await;
    let w = transport::connect(&url, &ConnectOptions::default()).await.unwrap();
    let started = Instant::now();
    let sender = send_range(w.clone(), format!("{r}.IN"), 0, n);
    let at_kill = sink.wait_distinct(n / 4, "a quarter through before the kill", Duration::from_secs(120)).await;
    let pid = one.pid();
    one.sigkill();
    sink.wait_all("participant-killed", n, Duration::from_secs(180)).await;
    sender.await.unwrap();
    eventually("drained", Duration::from_secs(60), || async { (ready(&url, &format!("{r}.IN")).await == 0).then_some(()) }).await;
    assert!(!two.exited(), "the surviving instance is still running");
    // The killed instance's unacked deliveries (prefetch) may be processed twice.
    let bound = ConnectOptions::default().prefetch as u64;
    sink.report(
        "participant-killed (2 Python instances, one SIGKILLed)",
        n,
        bound,
        &format!("; killed pid {pid} after {at_kill} arrived; total {:.1} s", started.elapsed().as_secs_f64()),
    );
}

/// An outport bound to a full queue (`x-max-length` + `x-overflow:
/// reject-publish`): the broker refuses the output, the participant does
/// not ack the input (it comes back redelivered) and says so in the log;
/// once the queue has room everything arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue() {
    init();
    let _turn = TURN.lock().await;
    let n = size(300, 3_000);
    let max_len = 20u32;
    let rabbit = blocking(|| PrivateRabbit::start("faults-full"));
    let url = rabbit.url();
    let r = unique("kfull");
    let redelivered = Arc::new(AtomicU64::new(0));
    let p = Participant::start(&repeat_def(), &r, Options::broker(&url)).await.unwrap();
    let (p2, red) = (p.clone(), redelivered.clone());
    let _h = tokio::spawn(async move {
        p2.serve(move |m| {
            if m.redelivered {
                red.fetch_add(1, Ordering::SeqCst);
            }
            async move { Ok(vec![("out".to_string(), m.payload)]) }
        })
        .await
    });
    let raw = Raw::connect_to(&url).await;
    let full = unique("full");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(max_len as i32));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    raw.ch
        .queue_declare(full.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .unwrap();
    raw.ch.queue_bind(full.as_str().into(), format!("{r}.OUT").as_str().into(), "".into(), Default::default(), FieldTable::default()).await.unwrap();

    let refusals_before = logged("the input that caused it will be requeued");
    let w = transport::connect(&url, &ConnectOptions::default()).await.unwrap();
    let started = Instant::now();
    send_range(w.clone(), format!("{r}.IN"), 0, n).await.unwrap();
    // The queue fills up, the broker refuses, the participant says so.
    eventually("a refused output in the log", Duration::from_secs(60), || async {
        (logged("the input that caused it will be requeued") > refusals_before).then_some(())
    })
    .await;
    eventually("a redelivered input", Duration::from_secs(60), || async {
        (redelivered.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    assert!(ready(&url, &full).await <= max_len);
    // A slow consumer drains the queue, one message at a time.
    let mut counts: HashMap<u64, u32> = HashMap::new();
    let start = Instant::now();
    while counts.len() < n as usize {
        match raw.ch.basic_get(full.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(m) => {
                let id: u64 = serde_json::from_slice(&m.delivery.data).expect("an id");
                *counts.entry(id).or_insert(0) += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "FAULTS full-queue: timed out: {} of {n} arrived",
            counts.len()
        );
    }
    let received: u64 = counts.values().map(|c| *c as u64).sum();
    let lost = (0..n).filter(|i| !counts.contains_key(i)).count();
    let dup = received - counts.len() as u64;
    let refusals = logged("the input that caused it will be requeued") - refusals_before;
    println!(
        "FAULTS full-queue (x-max-length {max_len}, reject-publish): sent {n}, received {received}, lost {lost}, duplicated {dup} (bound 0); \
         {refusals} refusals logged (input requeued, not acked), {} redeliveries; total {:.1} s",
        redelivered.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0);
    // A refused output was never routed, so its input's redelivery adds none.
    assert_eq!(dup, 0);
    p.stop().await.unwrap();
}

/// Disk alarm, then memory alarm, on the private node: publishers block;
/// nothing is lost when the alarm clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_alarms() {
    init();
    let _turn = TURN.lock().await;
    let part = size(2_000, 20_000);
    let n = 3 * part;
    let rabbit = blocking(|| PrivateRabbit::start("faults-alarm"));
    let url = rabbit.url();
    let r = unique("kalarm");
    let (p, _h) = start_repeat(&r, Options::broker(&url)).await;
    let sink = Sink::start(&url, &format!("{r}.OUT")).await;
    let w = transport::connect(&url, &ConnectOptions::default()).await.unwrap();
    let started = Instant::now();
    send_range(w.clone(), format!("{r}.IN"), 0, part).await.unwrap();
    eventually("the first part through", Duration::from_secs(60), || async { (sink.distinct() >= part).then_some(()) }).await;

    let mut figures = String::new();
    let alarms: [(&str, &[&str], &[&str]); 2] = [
        ("disk", &["set_disk_free_limit", "1000000GB"], &["set_disk_free_limit", "50MB"]),
        ("memory", &["set_vm_memory_high_watermark", "0"], &["set_vm_memory_high_watermark", "0.4"]),
    ];
    for (i, (name, raise, clear)) in alarms.iter().enumerate() {
        let from = part * (i as u64 + 1);
        blocking(|| rabbit.ctl(raise)).unwrap();
        eventually(&format!("the {name} alarm"), Duration::from_secs(30), || async {
            let alarms = blocking(|| rabbit.ctl(&["eval", "rabbit_alarm:get_alarms()."])).unwrap_or_default();
            alarms.contains(if *name == "disk" { "disk" } else { "memory" }).then_some(())
        })
        .await;
        let before = sink.distinct();
        let sender = send_range(w.clone(), format!("{r}.IN"), from, from + part);
        eventually(&format!("a publisher blocked by the {name} alarm"), Duration::from_secs(30), || async {
            let states = blocking(|| rabbit.ctl(&["list_connections", "state"])).unwrap_or_default();
            states.lines().any(|l| l.trim() == "blocked").then_some(())
        })
        .await;
        let through = sink.distinct() - before;
        blocking(|| rabbit.ctl(clear)).unwrap();
        sender.await.unwrap();
        eventually(&format!("everything after the {name} alarm"), Duration::from_secs(60), || async {
            (sink.distinct() >= from + part).then_some(())
        })
        .await;
        figures.push_str(&format!("; {name} alarm: publishers blocked, {through} of {part} got through before the block"));
    }
    sink.wait_all("resource-alarms", n, Duration::from_secs(60)).await;
    eventually("drained", Duration::from_secs(60), || async { (ready(&url, &format!("{r}.IN")).await == 0).then_some(()) }).await;
    sink.report("resource-alarms (disk, memory)", n, 0, &format!("{figures}; total {:.1} s", started.elapsed().as_secs_f64()));
    p.stop().await.unwrap();
}

/// `msgflo run --no-start` SIGKILLed while data flows: the AMQP edges are
/// broker bindings and keep flowing; a new coordinator adopts the running
/// participants without duplicating an edge (one binding, no message twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed() {
    init();
    let _turn = TURN.lock().await;
    let part = size(2_000, 20_000);
    let rabbit = blocking(|| PrivateRabbit::start("faults-coord"));
    let url = rabbit.url();
    let (a, b) = (unique("kcoa"), unique("kcob"));
    let (pa, _ha) = start_repeat(&a, Options::broker(&url)).await;
    let (pb, _hb) = start_repeat(&b, Options::broker(&url)).await;
    let sink = Sink::start(&url, &format!("{b}.OUT")).await;
    let graph = rabbit.dir.join("graph.fbp");
    std::fs::write(&graph, format!("'\"iip\"' -> IN {a}(Repeat)\n{a} OUT -> IN {b}(Repeat)\n")).unwrap();
    let coordinator = |name: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_msgflo"));
        c.arg("run").arg(&graph).args(["--no-start", "--port", "0", "--broker", &url]).env("MSGFLO_DISCOVERY_PERIOD", "1");
        c.env("MSGFLO_STATE_DIR", rabbit.dir.join("state"));
        Proc::spawn(name, c, &rabbit.dir)
    };
    let mut first = coordinator("coordinator-1");
    let start = Instant::now();
    while !first.output().contains("(graph complete)") {
        assert!(!first.exited(), "coordinator exited:\n{}", first.output());
        assert!(start.elapsed() < Duration::from_secs(60), "graph complete within 60 s:\n{}", first.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the IIP through the edge", Duration::from_secs(30), || async {
        (!sink.others.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let w = transport::connect(&url, &ConnectOptions::default()).await.unwrap();
    let started = Instant::now();
    let sender = send_range(w.clone(), format!("{a}.IN"), 0, part);
    eventually("a third through", Duration::from_secs(60), || async { (sink.distinct() >= part / 3).then_some(()) }).await;
    first.sigkill();
    sender.await.unwrap();
    // Without any coordinator: a second part, sent after the kill.
    send_range(w.clone(), format!("{a}.IN"), part, 2 * part).await.unwrap();
    eventually("everything sent without a coordinator", Duration::from_secs(60), || async {
        (sink.distinct() >= 2 * part).then_some(())
    })
    .await;
    let mut second = coordinator("coordinator-2");
    let start = Instant::now();
    while !second.output().contains("(graph complete)") {
        assert!(!second.exited(), "coordinator exited:\n{}", second.output());
        assert!(start.elapsed() < Duration::from_secs(60), "graph complete again within 60 s:\n{}", second.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_range(w.clone(), format!("{a}.IN"), 2 * part, 3 * part).await.unwrap();
    sink.wait_all("coordinator-killed", 3 * part, Duration::from_secs(60)).await;
    eventually("drained", Duration::from_secs(60), || async {
        (ready(&url, &format!("{a}.IN")).await == 0 && ready(&url, &format!("{b}.IN")).await == 0).then_some(())
    })
    .await;
    let bindings = blocking(|| rabbit.ctl(&["list_bindings", "source_name", "destination_name"])).unwrap();
    let edge = bindings
        .lines()
        .filter(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            f.len() == 2 && f[0] == format!("{a}.OUT") && f[1] == format!("{b}.IN")
        })
        .count();
    let iips = sink.others.lock().unwrap().len();
    sink.report(
        "coordinator-killed (msgflo run SIGKILLed, a new one adopts)",
        3 * part,
        0,
        &format!(
            "; {part} sent with no coordinator running; bindings {a}.OUT -> {b}.IN after the second coordinator: {edge}; IIP deliveries: {iips}; total {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    assert_eq!(edge, 1, "one binding for the edge, not one per coordinator:\n{bindings}");
    assert_eq!(iips, 1, "the IIP once, not once per coordinator:\n{}", second.output());
    drop((first, second));
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
}

/// Publish to ROLE.IN until it comes back on ROLE.OUT (QoS 0: until the
/// participant's subscription is active, a publish may go nowhere).
async fn mqtt_roundtrip(raw: &mut RawMqtt, role: &str, body: &[u8]) {
    let (i, o) = (format!("{role}.IN"), format!("{role}.OUT"));
    let start = Instant::now();
    loop {
        raw.publish(&i, body).await;
        if let Ok(Some((t, b))) = tokio::time::timeout(Duration::from_millis(300), raw.rx.recv()).await {
            if t == o && b == body {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "MQTT round trip through {role}");
    }
}

/// Wait until `p`'s log has `needle` more than `before` times; the time it took.
async fn wait_log(p: &mut Proc, needle: &str, before: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if p.output().matches(needle).count() > before {
            return start.elapsed();
        }
        assert!(!p.exited(), "{} exited:\n{}", p.name, p.output());
        assert!(start.elapsed() < timeout, "{needle:?} in {}'s log within {timeout:?}:\n{}", p.name, p.output());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A participant in a network namespace of its own loses its link to the
/// broker (veth down) for longer than the heartbeat: it notices within
/// the heartbeat interval, reconnects when the link is back, nothing lost.
/// Then the same with MQTT keep-alive (QoS 0: only detection and recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_partition() {
    init();
    let _turn = TURN.lock().await;
    let ns = NetNs::create().unwrap_or_else(|e| panic!("a network namespace (the suite runs as root): {e}"));
    let heartbeat = size(3, 10);
    let partition = Duration::from_secs(size(10, 30));
    let part = size(1_000, 10_000);
    let n = 3 * part;
    let rabbit = blocking(|| PrivateRabbit::start_on("faults-net", &[&ns.host_ip]));
    let url = rabbit.url();
    let remote = format!("amqp://{}:{}/?heartbeat={heartbeat}", ns.host_ip, rabbit.port);
    let r = unique("knet");
    let mut p = Proc::spawn("repeat-in-netns", ns.wrap(rust_repeat(&r, &remote)), &rabbit.dir);
    wait_consumers(&url, &format!("{r}.IN"), 1, &mut [&mut p]).await;
    let sink = Sink::start(&url, &format!("{r}.OUT")).await;
    let w = transport::connect(&url, &ConnectOptions::default()).await.unwrap();
    let started = Instant::now();
    send_range(w.clone(), format!("{r}.IN"), 0, part).await.unwrap();
    eventually("the first part through", Duration::from_secs(60), || async { (sink.distinct() >= part).then_some(()) }).await;

    let lost_before = p.output().matches("lost connection to broker").count();
    let back_before = p.output().matches("reconnected to broker").count();
    ns.partition();
    let cut = Instant::now();
    let sender = send_range(w.clone(), format!("{r}.IN"), part, 2 * part);
    let detected = wait_log(&mut p, "lost connection to broker", lost_before, partition).await;
    sender.await.unwrap();
    // The fault lasts its full length: a partition is a span of time.
    tokio::time::sleep(partition.saturating_sub(cut.elapsed())).await;
    ns.heal();
    let healed = Instant::now();
    wait_log(&mut p, "reconnected to broker", back_before, Duration::from_secs(60)).await;
    let reconnect = healed.elapsed();
    send_range(w.clone(), format!("{r}.IN"), 2 * part, n).await.unwrap();
    sink.wait_all("network-partition", n, Duration::from_secs(120)).await;
    eventually("drained", Duration::from_secs(60), || async { (ready(&url, &format!("{r}.IN")).await == 0).then_some(()) }).await;
    sink.report(
        "network-partition (AMQP, participant in its own netns, veth down)",
        n,
        window(),
        &format!(
            "; heartbeat {heartbeat} s, link down {:.0} s; dead connection detected after {:.1} s; reconnected {:.1} s after the link came back; total {:.1} s",
            partition.as_secs_f64(),
            detected.as_secs_f64(),
            reconnect.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
    );
    assert!(
        detected <= Duration::from_secs(2 * heartbeat + 1),
        "detected after {detected:?}, heartbeat {heartbeat} s"
    );
    drop(p);

    // MQTT keep-alive: a private Mosquitto on the link too.
    let mut mosq = blocking(|| PrivateMosquitto::start_on(false, &[&ns.host_ip]));
    let murl = mosq.url();
    let remote = format!("mqtt://{}:{}?heartbeat={heartbeat}", ns.host_ip, mosq.port);
    let m = unique("kmnet");
    let mut p = Proc::spawn("mqtt-repeat-in-netns", ns.wrap(rust_repeat(&m, &remote)), &rabbit.dir);
    let mut raw = RawMqtt::connect_to(&murl, &[&format!("{m}.OUT")]).await;
    mqtt_roundtrip(&mut raw, &m, b"1").await;
    let lost_before = p.output().matches("lost connection to broker").count();
    let back_before = p.output().matches("reconnected to broker").count();
    ns.partition();
    let mdetected = wait_log(&mut p, "lost connection to broker", lost_before, partition + Duration::from_secs(2 * heartbeat)).await;
    tokio::time::sleep(Duration::from_secs(2 * heartbeat + 1).saturating_sub(mdetected)).await;
    ns.heal();
    let healed = Instant::now();
    wait_log(&mut p, "reconnected to broker", back_before, Duration::from_secs(60)).await;
    let mreconnect = healed.elapsed();
    mqtt_roundtrip(&mut raw, &m, b"2").await;
    println!(
        "FAULTS network-partition (MQTT keep-alive {heartbeat} s, QoS 0): dead connection detected after {:.1} s; reconnected {:.1} s after the link came back; data flows again",
        mdetected.as_secs_f64(),
        mreconnect.as_secs_f64()
    );
    // rumqttc pings after a keep-alive without traffic, and gives up when
    // the next ping is due without an answer: at most two keep-alives.
    assert!(mdetected <= Duration::from_secs(2 * heartbeat + 2), "MQTT detected after {mdetected:?}");
    drop(p);
    mosq.stop();
    drop(ns);
}

/// A plain rumqttc client on a persistent session (QoS 1): counts what
/// arrives on `topic` into `sink`'s tally, and the PUBACKs of its own
/// publishes.
struct Mqtt1 {
    client: rumqttc::AsyncClient,
    subscribed: Arc<AtomicU64>,
    pubacks: Arc<AtomicU64>,
}

impl Mqtt1 {
    fn start(url: &str, topic: Option<String>, sink: Option<&Sink>) -> Mqtt1 {
        let u = url::Url::parse(url).unwrap();
        let mut o = rumqttc::MqttOptions::new(unique("raw1"), u.host_str().unwrap(), u.port().unwrap());
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
        let m = Mqtt1 { client: client.clone(), subscribed: Default::default(), pubacks: Default::default() };
        let (subscribed, pubacks) = (m.subscribed.clone(), m.pubacks.clone());
        let counts = sink.map(|s| (s.counts.clone(), s.distinct.clone(), s.total.clone()));
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(t) = &topic {
                            let _ = client.try_subscribe(t.clone(), rumqttc::QoS::AtLeastOnce);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        subscribed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        pubacks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if let (Some((counts, distinct, total)), Ok(id)) = (&counts, serde_json::from_slice::<u64>(&p.payload)) {
                            total.fetch_add(1, Ordering::SeqCst);
                            let mut c = counts.lock().unwrap();
                            let n = c.entry(id).or_insert(0);
                            *n += 1;
                            if *n == 1 {
                                distinct.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        m
    }

    fn send(&self, topic: String, from: u64, to: u64) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        tokio::spawn(async move {
            for i in from..to {
                client.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
            }
        })
    }
}

impl Sink {
    /// A tally without an AMQP consumer (fed by an [`Mqtt1`]).
    fn tally_only() -> Sink {
        Sink {
            _t: None,
            counts: Default::default(),
            distinct: Default::default(),
            total: Default::default(),
            others: Default::default(),
            queue: String::new(),
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// MQTT with `?qos=1`, on a private Mosquitto with persistence: the
/// participant SIGKILLed and restarted (its persistent session kept what
/// arrived meanwhile), then the broker restarted: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_qos1() {
    init();
    let _turn = TURN.lock().await;
    let n = size(2_000, 20_000);
    let half = n / 2;
    let mut mosq = blocking(|| PrivateMosquitto::start(true));
    let url = format!("{}?qos=1", mosq.url());
    let state = mosq.dir.join("state");
    let r = unique("kq1");
    let spawn = |name: &str| {
        let mut c = rust_repeat(&r, &url);
        c.env("MSGFLO_STATE_DIR", &state);
        Proc::spawn(name, c, &mosq.dir)
    };
    let mut p = spawn("repeat-1");
    wait_log(&mut p, "ready on", 0, Duration::from_secs(60)).await;
    let sink = Sink::tally_only();
    let out = Mqtt1::start(&mosq.url(), Some(format!("{r}.OUT")), Some(&sink));
    wait_until("the sink's subscription", Duration::from_secs(30), || out.subscribed.load(Ordering::SeqCst) > 0).await;
    let sender = Mqtt1::start(&mosq.url(), None, None);
    let started = Instant::now();

    // The participant killed mid-stream and started again.
    let sending = sender.send(format!("{r}.IN"), 0, half);
    wait_until("an eighth through", Duration::from_secs(60), || sink.distinct() >= n / 8).await;
    let at_kill = sink.distinct();
    p.sigkill();
    sending.await.unwrap();
    wait_until("the first half accepted by the broker", Duration::from_secs(60), || sender.pubacks.load(Ordering::SeqCst) >= half).await;
    let while_away = half - sink.distinct().min(half);
    let mut p = spawn("repeat-2");
    sink.wait_all("mqtt-qos1 participant restart", half, Duration::from_secs(120)).await;
    let (_, lost1, dup1) = sink.tally(half);

    // The broker restarted (SIGTERM: Mosquitto saves its database).
    let sending = sender.send(format!("{r}.IN"), half, n);
    wait_until("more through", Duration::from_secs(60), || sink.distinct() >= half + n / 8).await;
    let at_restart = sink.distinct();
    blocking(|| {
        mosq.terminate();
        mosq.run();
    });
    sending.await.unwrap();
    sink.wait_all("mqtt-qos1 broker restart", n, Duration::from_secs(120)).await;
    assert!(!p.exited(), "the participant survived the broker restart:\n{}", p.output());
    // A participant restart replays what the broker had sent it unacked
    // (Mosquitto resends all of it at once on the resumed session, measured
    // up to 264, more than the prefetch: see reconnect.rs) and its own
    // unacked publishes (rumqttc: 100): measured 0-1 duplicates. A
    // broker restart replays more than the clients' windows account for
    // (measured 137-702 of 1000; Mosquitto's restored sessions resend): counted,
    // and bounded here only loosely, by the number of messages sent.
    let bound = n;
    sink.report(
        "mqtt-qos1 (participant SIGKILLed + restarted, then Mosquitto restarted; persistence on)",
        n,
        bound,
        &format!(
            "; killed after {at_kill} arrived, {while_away} waited for it in its session (lost {lost1}, duplicated {dup1} at that point); broker restarted after {at_restart}; total {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    drop(p);
}

/// The coordinator's MQTT edge forwarding with `?qos=1`: `msgflo run
/// --no-start` forwards a.OUT -> b.IN at QoS 1 on its own persistent
/// session; SIGKILLed mid-stream and started again, it forwards what
/// arrived for it meanwhile: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_qos1_coordinator_killed() {
    init();
    let _turn = TURN.lock().await;
    let n = size(1_000, 10_000);
    let mosq = blocking(|| PrivateMosquitto::start(true));
    let url = format!("{}?qos=1", mosq.url());
    let state = mosq.dir.join("state");
    let (a, b) = (unique("kq1a"), unique("kq1b"));
    let mut pa = {
        let mut c = rust_repeat(&a, &url);
        c.env("MSGFLO_STATE_DIR", &state);
        Proc::spawn("repeat-a", c, &mosq.dir)
    };
    let mut pb = {
        let mut c = rust_repeat(&b, &url);
        c.env("MSGFLO_STATE_DIR", &state);
        Proc::spawn("repeat-b", c, &mosq.dir)
    };
    wait_log(&mut pa, "ready on", 0, Duration::from_secs(60)).await;
    wait_log(&mut pb, "ready on", 0, Duration::from_secs(60)).await;
    let graph = mosq.dir.join("graph.fbp");
    std::fs::write(&graph, format!("{a}(Repeat) OUT -> IN {b}(Repeat)\n")).unwrap();
    let coordinator = |name: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_msgflo"));
        c.arg("run").arg(&graph).args(["--no-start", "--port", "0", "--broker", &url]);
        c.env("MSGFLO_DISCOVERY_PERIOD", "1").env("MSGFLO_STATE_DIR", &state);
        Proc::spawn(name, c, &mosq.dir)
    };
    let mut first = coordinator("coordinator-1");
    wait_log(&mut first, "(graph complete)", 0, Duration::from_secs(60)).await;
    let sink = Sink::tally_only();
    let out = Mqtt1::start(&mosq.url(), Some(format!("{b}.OUT")), Some(&sink));
    wait_until("the sink's subscription", Duration::from_secs(30), || out.subscribed.load(Ordering::SeqCst) > 0).await;
    let sender = Mqtt1::start(&mosq.url(), None, None);
    let started = Instant::now();
    let sending = sender.send(format!("{a}.IN"), 0, n);
    wait_until("a quarter through the forwarding", Duration::from_secs(60), || sink.distinct() >= n / 4).await;
    let at_kill = sink.distinct();
    first.sigkill();
    sending.await.unwrap();
    wait_until("everything accepted by the broker", Duration::from_secs(60), || sender.pubacks.load(Ordering::SeqCst) >= n).await;
    let before_restart = sink.distinct();
    let mut second = coordinator("coordinator-2");
    sink.wait_all("mqtt-qos1-coordinator-killed", n, Duration::from_secs(120)).await;
    assert!(!second.exited(), "{}", second.output());
    sink.report(
        "mqtt-qos1-coordinator-killed (msgflo run forwarding a.OUT -> b.IN at QoS 1, SIGKILLed, started again)",
        n,
        n / 2,
        &format!(
            "; killed after {at_kill} arrived; {} waited in its session for the new coordinator; total {:.1} s",
            n - before_restart.min(n),
            started.elapsed().as_secs_f64()
        ),
    );
    drop((pa, pb, first, second));
}

/// A three-node RabbitMQ cluster of the suite's own; the node that a Rust
/// and a Python participant are connected to is SIGKILLed mid-stream.
/// They fail over to the next node of their URL's list, and with
/// `queue_type=quorum` (replicated queues) nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_killed() {
    init();
    let _turn = TURN.lock().await;
    let n = size(5_000, 50_000);
    let started = Instant::now();
    let (mut a, b, c) = blocking(|| {
        let a = PrivateRabbit::start("faults-cla");
        let b = PrivateRabbit::start("faults-clb");
        let c = PrivateRabbit::start("faults-clc");
        b.join(&a);
        c.join(&a);
        (a, b, c)
    });
    let formed = started.elapsed();
    let members = b.ctl(&["cluster_status", "--formatter", "json"]).unwrap();
    for node in [&a.node, &b.node, &c.node] {
        assert!(members.contains(node.as_str()), "{node} in the cluster: {members}");
    }
    // Participants list node a first; the test's own clients start on b and c.
    let list = |first: &PrivateRabbit, rest: [&PrivateRabbit; 2]| {
        format!("amqp://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/?queue_type=quorum", first.port, rest[0].port, rest[1].port)
    };
    let (on_a, on_b, on_c) = (list(&a, [&b, &c]), list(&b, [&c, &a]), list(&c, [&a, &b]));
    let (r, p) = (unique("clrust"), unique("clpython"));
    let (pr, _h) = start_repeat(&r, Options::broker(&on_a)).await;
    let mut py = Proc::spawn("python", python_shim(&p, &on_a), &b.dir);
    let w = transport::connect(&on_b, &ConnectOptions::default()).await.unwrap();
    for q in [&r, &p] {
        w.declare(&in_decl(&format!("{q}.IN"))).await.unwrap();
        w.declare(&out_decl(&format!("{q}.OUT"))).await.unwrap();
    }
    w.bind(&format!("{r}.OUT"), &format!("{p}.IN")).await.unwrap();
    wait_consumers(&b.url(), &format!("{p}.IN"), 1, &mut [&mut py]).await;
    let sink = Sink::start(&on_c, &format!("{p}.OUT")).await;
    let types = b.ctl(&["list_queues", "name", "type"]).unwrap();
    for q in [format!("{r}.IN"), format!("{p}.IN"), sink.queue.clone(), "fbp".into()] {
        let line = types.lines().find(|l| l.split_whitespace().next() == Some(q.as_str())).unwrap_or_else(|| panic!("queue {q} in {types}"));
        assert!(line.ends_with("quorum"), "{q} is a quorum queue: {line}");
    }
    let mut generation = pr.transport().generation();
    generation.borrow_and_update();

    let stream = Instant::now();
    let sender = send_range(w.clone(), format!("{r}.IN"), 0, n);
    let at_kill = sink.wait_distinct(n / 3, "a third through before the kill", Duration::from_secs(120)).await;
    let killed = Instant::now();
    blocking(|| a.kill());
    // Failover: the Rust participant's connection is replaced.
    eventually("the Rust participant fails over", Duration::from_secs(60), || {
        let changed = generation.has_changed().unwrap_or(false);
        async move { changed.then_some(()) }
    })
    .await;
    let failover = killed.elapsed();
    sink.wait_all("cluster-node-killed", n, Duration::from_secs(240)).await;
    sender.await.unwrap();
    for q in [format!("{r}.IN"), format!("{p}.IN"), sink.queue.clone()] {
        eventually(&format!("{q} drained"), Duration::from_secs(60), || async { (ready(&b.url(), &q).await == 0).then_some(()) }).await;
    }
    assert!(!py.exited(), "the Python participant survived its node's death:\n{}", py.output());
    assert!(logged("connected to cluster node 2 of 3") >= 1, "the failover is logged");
    // The sender's and two hops' windows at most (the sink is on c).
    let bound = 3 * window();
    sink.report(
        "cluster-node-killed (3-node RabbitMQ cluster, quorum queues; Rust -> Python on the killed node)",
        n,
        bound,
        &format!(
            "; cluster formed in {:.1} s; killed after {at_kill} arrived; Rust participant failed over after {:.1} s; total {:.1} s",
            formed.as_secs_f64(),
            failover.as_secs_f64(),
            stream.elapsed().as_secs_f64()
        ),
    );
    pr.stop().await.unwrap();
    drop(py);
    drop((b, c));
}
