//! Coordinator benchmarks, each against a baseline measured in the same run
//! on the same broker:
//!
//! - **discovery**: N simulated participants (2 inports, 2 outports each)
//!   announce K times. Timed from the first announcement until the
//!   coordinator has handled all N*K; baseline: a bare subscriber counting
//!   the same messages on the broker (AMQP: straight off the `fbp` queue, so
//!   the coordinator's relay through `msgflo.discovery` is part of the
//!   cost). Memory: the process's resident set before and after, per
//!   participant.
//! - **forward**: MQTT edge throughput. A publisher sends M messages to
//!   topic A, the coordinator forwards A -> B, a subscriber counts them on B;
//!   baseline: the publisher sends to B directly. QoS 0, so losses are
//!   reported, not hidden.
//!
//! `cargo run --release -p msgflo-bench --bin msgflo-bench-coordinator`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use msgflo::coordinator::embedded::EmbeddedBroker;
use msgflo::coordinator::{Coordinator, Options};
use msgflo::graph::fbp;
use msgflo::transport::{self, ConnectOptions, Target, Transport};
use msgflo::{Definition, Payload, PortDef};

#[derive(Parser)]
#[command(about = "Coordinator benchmarks: discovery handling and MQTT forwarding")]
struct Args {
    /// Brokers: amqp/mqtt URLs, or `embedded`.
    #[arg(long, value_delimiter = ',', default_value = "amqp://127.0.0.1:5672,mqtt://127.0.0.1:1883,embedded")]
    brokers: Vec<String>,
    /// Simulated participant counts.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    participants: Vec<usize>,
    /// Announcements per participant.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Messages for the forwarding benchmark.
    #[arg(long, default_value_t = 50000)]
    messages: usize,
    /// Only one benchmark: discovery or forward.
    #[arg(long)]
    only: Option<String>,
    /// Measure discovery in this process (the parent runs one child per
    /// broker and size, so each memory figure starts from a fresh process).
    #[arg(long, hide = true)]
    child: bool,
    /// The broker's name in RESULT lines (the parent passes `embedded` for
    /// the embedded broker, whose URL says mqtt).
    #[arg(long, hide = true)]
    broker_name: Option<String>,
}

/// Counts live heap bytes, so memory per participant is measured exactly
/// (RSS also holds freed-but-kept pages and burst buffers).
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn heap_bytes() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

async fn connect(url: &str) -> Arc<dyn Transport> {
    transport::connect(url, &ConnectOptions::default()).await.expect("broker reachable")
}

fn discovery_messages(n: usize, tag: &str) -> Vec<Payload> {
    (0..n)
        .map(|i| {
            let def = Definition::new("bench/Simulated")
                .inport(PortDef::new("in"))
                .inport(PortDef::new("config"))
                .outport(PortDef::new("out"))
                .outport(PortDef::new("error"));
            let info = def.instantiate(&format!("{tag}-{i}")).unwrap();
            Payload::json(&info.discovery_message())
        })
        .collect()
}

async fn announce_all(t: &Arc<dyn Transport>, msgs: &[Payload], rounds: usize) {
    for _ in 0..rounds {
        for m in msgs {
            t.announce(m.clone()).await.unwrap();
        }
    }
    t.flush().await.unwrap();
}

/// Baseline: count discovery messages straight off the broker.
async fn raw_discovery(url: &str, msgs: &[Payload], rounds: usize, tag: &str) -> (f64, usize) {
    let t = connect(url).await;
    // A coordinator declares what discovery needs (the `fbp` queue).
    let pre = connect(url).await;
    Coordinator::start(pre.clone(), url, Options::observer()).await.unwrap().stop().await;
    let _ = pre.close().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    subscribe_fbp(&t, tx).await;
    let total = msgs.len() * rounds;
    let publisher = connect(url).await;
    let start = Instant::now();
    let msgs = msgs.to_vec();
    let p = tokio::spawn(async move { announce_all(&publisher, &msgs, rounds).await });
    let mut got = 0;
    let marker = format!("\"{tag}-");
    while got < total {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(d)) => {
                if std::str::from_utf8(d.payload().as_bytes()).is_ok_and(|s| s.contains(&marker)) {
                    got += 1;
                }
                let _ = d.ack();
            }
            _ => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    p.await.unwrap();
    let _ = t.close().await;
    (got as f64 / secs, got)
}

/// Subscribe to discovery without the coordinator's relay: the `fbp` queue
/// itself (AMQP) or topic (MQTT).
async fn subscribe_fbp(t: &Arc<dyn Transport>, tx: tokio::sync::mpsc::Sender<msgflo::Delivery>) {
    t.subscribe(transport::DISCOVERY_QUEUE, Arc::from("fbp"), tx).await.unwrap();
}

async fn coordinator_discovery(url: &str, msgs: &[Payload], rounds: usize) -> (f64, u64, i64, isize) {
    let rss_before = rss_kib();
    let t = connect(url).await;
    let mut o = Options::new(Default::default());
    o.query = false;
    let c = Coordinator::start(t.clone(), url, o).await.unwrap();
    let heap_before = heap_bytes();
    let base = c.observed();
    let total = (msgs.len() * rounds) as u64;
    let publisher = connect(url).await;
    let start = Instant::now();
    let msgs_owned = msgs.to_vec();
    let p = tokio::spawn(async move { announce_all(&publisher, &msgs_owned, rounds).await });
    let mut last = (Instant::now(), c.observed());
    while c.observed() - base < total {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now = c.observed();
        if now != last.1 {
            last = (Instant::now(), now);
        } else if last.0.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let got = c.observed() - base;
    let secs = last.0.duration_since(start).as_secs_f64().max(1e-6);
    p.await.unwrap();
    let n = msgs.len();
    let roles = c.wait_for(Duration::from_secs(2), |s| s.participants.len() >= n).await.map(|s| s.participants.len()).unwrap_or_else(|_| c.snapshot().participants.len());
    // Let in-flight buffers drain, then count what the coordinator keeps.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heap = heap_bytes() - heap_before;
    let rss_after = rss_kib();
    c.stop().await;
    let _ = t.close().await;
    println!("    coordinator knew {roles} roles");
    (got as f64 / secs, got, rss_after as i64 - rss_before as i64, heap)
}

async fn discovery(url: &str, name: &str, n: usize, rounds: usize) {
    let tag = format!("sim{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let msgs = discovery_messages(n, &tag);
    let bytes: usize = msgs.iter().map(|m| m.len()).sum::<usize>() / n;
    println!("  {n} participants x {rounds} announcements ({bytes} bytes each)");
    let (raw_rate, raw_got) = raw_discovery(url, &msgs, rounds, &tag).await;
    println!("    raw subscriber:  {raw_rate:>9.0} msg/s  ({raw_got} of {})", n * rounds);
    let tag2 = format!("sim{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let msgs = discovery_messages(n, &tag2);
    let (rate, got, rss, heap) = coordinator_discovery(url, &msgs, rounds).await;
    println!("    coordinator:     {rate:>9.0} msg/s  ({got} of {})  ratio {:.2}", n * rounds, rate / raw_rate);
    println!(
        "    memory: heap kept {:.0} bytes per participant (+{} KiB); resident +{} KiB ({:.0} bytes per participant)",
        heap as f64 / n as f64,
        heap / 1024,
        rss,
        rss as f64 * 1024.0 / n as f64
    );
    println!("RESULT\tdiscovery {name}, {n} participants\tcoordinator\t{rate:.0} msg/s\t{:.2}x a bare subscriber ({raw_rate:.0}); {:.0} bytes heap per participant", rate / raw_rate, heap as f64 / n as f64);
}

async fn count_on(url: &str, topic: &str) -> (Arc<dyn Transport>, tokio::sync::mpsc::Receiver<msgflo::Delivery>) {
    let t = connect(url).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8192);
    t.subscribe(topic, Arc::from("sink"), tx).await.unwrap();
    (t, rx)
}

/// Publish `m` messages to `publish_to` and count them at `sink`.
async fn pump(url: &str, publish_to: &str, rx: &mut tokio::sync::mpsc::Receiver<msgflo::Delivery>, m: usize) -> (f64, usize) {
    let publisher = connect(url).await;
    let body = Payload::from("{\"t\":12345678901}");
    let topic = publish_to.to_owned();
    let start = Instant::now();
    let p = tokio::spawn(async move {
        for _ in 0..m {
            publisher.publish(Target::Queue(topic.clone()), body.clone(), false).await.unwrap();
        }
        publisher.flush().await.unwrap();
        publisher
    });
    let mut got = 0;
    let mut last = start;
    while got < m {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Some(_)) => {
                got += 1;
                last = Instant::now();
            }
            _ => break,
        }
    }
    let publisher = p.await.unwrap();
    let _ = publisher.close().await;
    (got as f64 / last.duration_since(start).as_secs_f64().max(1e-6), got)
}

async fn forward(url: &str, name: &str, m: usize) {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (a, b) = (format!("fwd{id}.OUT"), format!("fwd{id}.IN"));
    let (sink_t, mut rx) = count_on(url, &b).await;
    let (raw_rate, raw_got) = pump(url, &b, &mut rx, m).await;
    println!("  direct publish -> subscriber:   {raw_rate:>9.0} msg/s  ({raw_got} of {m} arrived)");
    // A coordinator forwarding a -> b, for a graph of two foreign roles.
    let graph = fbp::parse(&format!("src{id}(X) OUT -> IN dst{id}(Y)")).unwrap();
    let t = connect(url).await;
    let c = Coordinator::start(t.clone(), url, Options::new(graph)).await.unwrap();
    for (role, port, inport) in [(format!("src{id}"), "out", false), (format!("dst{id}"), "in", true)] {
        let p = PortDef::new(port).with_queue(if inport { b.clone() } else { a.clone() });
        let def = if inport { Definition::new("Y").inport(p) } else { Definition::new("X").outport(p) };
        t.announce(Payload::json(&def.instantiate(&role).unwrap().discovery_message())).await.unwrap();
    }
    c.wait_for(Duration::from_secs(10), |s| s.complete).await.expect("edge wired");
    let (rate, got) = pump(url, &a, &mut rx, m).await;
    println!("  publish -> coordinator -> sub:  {rate:>9.0} msg/s  ({got} of {m} arrived)  ratio {:.2}", rate / raw_rate);
    println!("RESULT\tMQTT edge forwarding, {name}\tcoordinator\t{rate:.0} msg/s\t{:.2}x direct ({raw_rate:.0}); {got} of {m} arrived", rate / raw_rate);
    c.stop().await;
    let _ = t.close().await;
    let _ = sink_t.close().await;
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut embedded: Option<String> = None;
    for b in &args.brokers {
        let url = if b == "embedded" {
            embedded.get_or_insert_with(|| EmbeddedBroker::start().expect("embedded broker").url()).clone()
        } else {
            b.clone()
        };
        let label = if b == "embedded" { format!("embedded ({url})") } else { url.clone() };
        let name = match (&args.broker_name, b.as_str()) {
            (Some(n), _) => n.clone(),
            (None, "embedded") => "embedded".to_string(),
            _ => url.split("://").next().unwrap_or(&url).to_string(),
        };
        if args.child {
            for &n in &args.participants {
                discovery(&url, &name, n, args.rounds).await;
            }
            continue;
        }
        if args.only.as_deref().is_none_or(|o| o == "discovery") {
            println!("discovery on {label}");
            for &n in &args.participants {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--child", "--brokers", &url, "--broker-name", &name, "--participants", &n.to_string(), "--rounds", &args.rounds.to_string()])
                    .status()
                    .expect("bench child runs");
                assert!(status.success(), "discovery bench failed on {label} with {n} participants");
            }
        }
        if args.only.as_deref().is_none_or(|o| o == "forward") && url.starts_with("mqtt") {
            println!("MQTT edge forwarding on {label}, {} messages", args.messages);
            forward(&url, &name, args.messages).await;
        }
    }
}
