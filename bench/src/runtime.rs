//! Live programming, measured through the protocol from outside: a real
//! `msgflo run` (release build) with Rust repeat participants, a WebSocket
//! client, and a plain broker client as the independent observer.
//!
//! - **addedge -> first message**: `a` is fed at a steady rate; an edge
//!   `a.out -> c.in` is added over the protocol; timed until the first
//!   message comes out of `c` (seen on the broker). Then the edge is
//!   removed and the output goes quiet before the next try.
//! - **addinitial -> seen**: a value given live into `a` until it shows up
//!   as `network:data` on the watched edge `a -> b`.
//! - **edge throughput, watched vs unwatched**: N messages into `a`, timed
//!   until all came out of `b`; once with no client watching, once with a
//!   client watching `a -> b` (the cost of the copies).
//!
//! `cargo run --release -p msgflo-bench --bin msgflo-bench-runtime [-- --brokers amqp://127.0.0.1,mqtt://127.0.0.1]`

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use msgflo::transport::{self, Declaration, PortKind, Target, Transport};
use msgflo::{Delivery, Payload};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Live programming latency and the cost of watching an edge")]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "amqp://127.0.0.1:5672,mqtt://127.0.0.1:1883")]
    brokers: Vec<String>,
    /// Tries per latency figure.
    #[arg(long, default_value_t = 200)]
    tries: usize,
    /// Messages for the throughput figure.
    #[arg(long, default_value_t = 20000)]
    messages: usize,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Client {
    ws: Ws,
}

impl Client {
    async fn connect(address: &str) -> Client {
        let mut req = address.into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "noflo".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("runtime reachable");
        Client { ws }
    }

    async fn send(&mut self, protocol: &str, command: &str, payload: Value) {
        let f = json!({"protocol": protocol, "command": command, "payload": payload});
        self.ws.send(Message::Text(f.to_string().into())).await.unwrap();
    }

    async fn until(&mut self, timeout: Duration, f: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["command"] == "error" {
                        panic!("error from the runtime: {v}");
                    }
                    if f(&v) {
                        return Some(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => return None,
            }
        }
    }

    async fn ask(&mut self, protocol: &str, command: &str, payload: Value) {
        self.send(protocol, command, payload).await;
        let want = command.to_owned();
        self.until(Duration::from_secs(10), |v| v["protocol"] == protocol && v["command"] == want.as_str()).await.expect("a reply");
    }
}

fn unique(p: &str) -> String {
    format!("{p}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn release_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

/// `msgflo run` in a fresh folder; returns the child and the runtime address.
async fn start_run(url: &str, graph: &str) -> (tokio::process::Child, String, PathBuf) {
    let dir = std::env::temp_dir().join(unique("msgflo-bench-rt-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("graph.fbp"), graph).unwrap();
    let repeat = release_dir().join("examples/repeat");
    std::fs::write(dir.join("msgflo.json"), json!({"components": {"Repeat": format!("{} #ROLE", repeat.display())}}).to_string()).unwrap();
    let mut child = tokio::process::Command::new(release_dir().join("msgflo"))
        .current_dir(&dir)
        .args(["run", "graph.fbp", "--library", "msgflo.json", "--port", "0", "--broker", url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("target/release/msgflo (cargo build --release -p msgflo)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut address = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        if let Some(a) = l.strip_prefix("runtime: ") {
            address = a.to_owned();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address, dir)
}

/// Everything published on `outqueue`, through a plain client of ours.
async fn observe(url: &str, outqueue: &str) -> (Arc<dyn Transport>, mpsc::Receiver<Delivery>) {
    let t = transport::connect(url, &Default::default()).await.unwrap();
    let (tx, rx) = mpsc::channel(65536);
    if url.starts_with("amqp") {
        t.declare(&Declaration { kind: PortKind::Out, queue: outqueue.into(), persistent: true }).await.unwrap();
        let q = unique("bench-obs-");
        t.declare(&Declaration { kind: PortKind::In, queue: q.clone(), persistent: false }).await.unwrap();
        t.bind(outqueue, &q).await.unwrap();
        t.subscribe(&q, Arc::from("obs"), tx).await.unwrap();
    } else {
        t.subscribe(outqueue, Arc::from("obs"), tx).await.unwrap();
    }
    (t, rx)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn wait_discovered(c: &mut Client, graph: &str, roles: usize) {
    c.send("msgflo", "subscribe", json!({"graph": graph})).await;
    c.until(Duration::from_secs(30), |v| {
        v["command"] == "status" && v["payload"]["roles"].as_array().is_some_and(|r| r.len() == roles && r.iter().all(|r| r["status"] == "alive"))
            && v["payload"]["edges"].as_array().is_some_and(|e| e.iter().all(|e| e["state"] == "wired"))
    })
    .await
    .expect("participants up and wired");
}

async fn bench(url: &str, args: &Args) {
    let (a, b, c) = (unique("ra"), unique("rb"), unique("rc"));
    let graph = format!("{a}(Repeat) OUT -> IN {b}(Repeat)\n{c}(Repeat)\n");
    let (mut child, address, dir) = start_run(url, &graph).await;
    let mut ws = Client::connect(&address).await;
    wait_discovered(&mut ws, "graph", 3).await;
    let feeder = transport::connect(url, &Default::default()).await.unwrap();

    // addedge -> first message out of c, with a fed at ~200 msg/s.
    let (_o, mut from_c) = observe(url, &format!("{c}.OUT")).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let feed = {
        let (t, q, stop) = (feeder.clone(), format!("{a}.IN"), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !stop.is_cancelled() {
                tick.tick().await;
                let _ = t.publish(Target::Queue(q.clone()), Payload::from("\"tick\""), false).await;
            }
        })
    };
    let mut addedge = Vec::new();
    for _ in 0..args.tries {
        while let Ok(d) = from_c.try_recv() {
            let _ = d.ack();
        }
        let t0 = Instant::now();
        ws.send("graph", "addedge", json!({"src": {"node": a, "port": "out"}, "tgt": {"node": c, "port": "in"}, "graph": "graph"})).await;
        let d = tokio::time::timeout(Duration::from_secs(10), from_c.recv()).await.expect("a message through the new edge").unwrap();
        addedge.push(t0.elapsed().as_secs_f64() * 1000.0);
        let _ = d.ack();
        ws.ask("graph", "removeedge", json!({"src": {"node": a, "port": "out"}, "tgt": {"node": c, "port": "in"}, "graph": "graph"})).await;
        // Quiet: nothing more from c for 100 ms.
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), from_c.recv()).await {
            let _ = d.ack();
        }
    }
    stop.cancel();
    let _ = feed.await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the feed drain out of a

    // addinitial -> network:data on the watched edge a -> b.
    ws.ask("network", "edges", json!({"graph": "graph", "edges": [{"src": {"node": a, "port": "out"}, "tgt": {"node": b, "port": "in"}}]})).await;
    let mut addinitial = Vec::new();
    for i in 0..args.tries {
        let t0 = Instant::now();
        ws.send("graph", "addinitial", json!({"src": {"data": {"live": i}}, "tgt": {"node": a, "port": "in"}, "graph": "graph"})).await;
        ws.until(Duration::from_secs(10), |v| v["command"] == "data" && v["payload"]["data"]["live"] == i).await.expect("the value on the watched edge");
        addinitial.push(t0.elapsed().as_secs_f64() * 1000.0);
        ws.ask("graph", "removeinitial", json!({"tgt": {"node": a, "port": "in"}, "graph": "graph"})).await;
    }

    // Throughput through a -> b, unwatched and watched.
    let (_o2, mut from_b) = observe(url, &format!("{b}.OUT")).await;
    let mut rates = Vec::new();
    for watched in [false, true] {
        let edges = if watched { json!([{"src": {"node": a, "port": "out"}, "tgt": {"node": b, "port": "in"}}]) } else { json!([]) };
        ws.ask("network", "edges", json!({"graph": "graph", "edges": edges})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(d) = from_b.try_recv() {
            let _ = d.ack();
        }
        let t0 = Instant::now();
        for i in 0..args.messages {
            feeder.publish(Target::Queue(format!("{a}.IN")), Payload::json(&json!({"n": i})), url.starts_with("amqp")).await.unwrap();
        }
        let mut got = 0;
        while got < args.messages {
            match tokio::time::timeout(Duration::from_secs(10), from_b.recv()).await {
                Ok(Some(d)) => {
                    let _ = d.ack();
                    got += 1;
                }
                _ => break,
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        rates.push((got, got as f64 / secs));
        // The watcher's frames: drain them so the socket does not back up.
        while ws.until(Duration::from_millis(200), |_| true).await.is_some() {}
    }
    let proto = if url.starts_with("amqp") { "amqp" } else { "mqtt" };
    let (mut addedge_all, mut addinitial_all) = (addedge.clone(), addinitial.clone());
    println!(
        "{proto}: addedge -> first message: p50 {:.1} ms, p99 {:.1} ms ({} tries)",
        pct(&mut addedge.clone(), 0.5),
        pct(&mut addedge, 0.99),
        args.tries
    );
    println!(
        "{proto}: addinitial -> seen on the watched edge: p50 {:.1} ms, p99 {:.1} ms ({} tries)",
        pct(&mut addinitial.clone(), 0.5),
        pct(&mut addinitial, 0.99),
        args.tries
    );
    println!(
        "{proto}: edge throughput unwatched {:.0} msg/s ({} of {}), watched {:.0} msg/s ({} of {}): ratio watched/unwatched {:.2}",
        rates[0].1, rates[0].0, args.messages, rates[1].1, rates[1].0, args.messages, rates[1].1 / rates[0].1
    );
    println!(
        "RESULT\tlive programming {proto}\tmsgflo run\taddedge p50 {:.1} / p99 {:.1} ms; addinitial p50 {:.1} / p99 {:.1} ms\twatched edge {:.2}x unwatched",
        pct(&mut addedge_all.clone(), 0.5),
        pct(&mut addedge_all, 0.99),
        pct(&mut addinitial_all.clone(), 0.5),
        pct(&mut addinitial_all, 0.99),
        rates[1].1 / rates[0].1
    );
    ws.ws.close(None).await.ok();
    if let Some(pid) = child.id() {
        unsafe { libc_kill(pid as i32, 15) };
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let _ = std::fs::remove_dir_all(dir);
    if url.starts_with("amqp") {
        for r in [&a, &b, &c] {
            for q in [format!("{r}.IN"), format!("{r}.OUT"), format!("dead-{r}.IN")] {
                let _ = feeder.delete(&q).await;
            }
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    for url in &args.brokers {
        bench(url, &args).await;
    }
}
