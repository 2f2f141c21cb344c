//! Latency and CPU per message of relays: a msgflo participant (in this
//! process, and every binding's relay process) against the raw client
//! relays and plain client-library relays, in one run, on the same broker.
//!
//! - **Latency**: messages carrying their send time (`{"t": microseconds
//!   since the epoch}`) are published at a steady offered load (100, 1,000,
//!   10,000 msg/s) into the first of a chain of relays (1 or 3 hops; AMQP
//!   bindings between them); the sink takes the time at arrival. Prints
//!   p50/p99/p99.9 per relay, load and chain length. MQTT is measured
//!   through one relay (a chain on MQTT needs a coordinator to forward).
//! - **Instructions per message** (`--instructions`): each relay process
//!   runs under `valgrind --tool=callgrind` twice, relaying N and 3N
//!   messages; (instructions(3N) - instructions(N)) / 2N is the cost of a
//!   message without start-up. Repeatable on a noisy machine, unlike
//!   seconds. The top functions of the longer run are printed.
//!
//! Lines starting `RESULT` are for `bench/run`'s table.
//!
//! `cargo run --release -p msgflo-bench --bin msgflo-bench-latency -- [--proto amqp|mqtt|both] [--external LABEL=COMMAND ...] [--instructions]`

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use msgflo::{Definition, Options, Participant, PortDef};

mod relays;
use relays::{declare_inport, externals, mqtt_publisher, mqtt_subscriber, raw_amqp_relay, raw_mqtt_relay, spawn_external, unique, Kind};

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Proto {
    Amqp,
    Mqtt,
    Both,
}

#[derive(Parser)]
#[command(about = "Relay latency (p50/p99/p99.9) and instructions per message: msgflo participants vs raw and plain client relays")]
struct Args {
    #[arg(long, value_enum, default_value = "both")]
    proto: Proto,
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    amqp: String,
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt: String,
    /// Offered loads, messages per second.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    rates: Vec<u32>,
    /// Seconds of load per rate (at most 20,000 messages).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Chain lengths (AMQP).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    hops: Vec<usize>,
    #[arg(long, default_value_t = msgflo::transport::DEFAULT_PREFETCH)]
    prefetch: u16,
    /// A relay process: `LABEL=COMMAND ARGS...` (the role is appended,
    /// MSGFLO_BROKER set, the first stdout line means ready). Repeatable.
    #[arg(long = "external", value_name = "LABEL=COMMAND")]
    externals: Vec<String>,
    /// Count instructions per message under callgrind instead of latency.
    #[arg(long)]
    instructions: bool,
    /// N for --instructions (runs relay N and 3N messages).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Internal: run one relay as this process (`raw` or `participant`),
    /// for --instructions.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// The role, with --serve.
    role: Option<String>,
}

impl Kind {
    fn label(&self, proto: Proto) -> String {
        match (self, proto) {
            (Kind::Raw, Proto::Mqtt) => "raw rumqttc relay".into(),
            (Kind::Raw, _) => "raw lapin relay".into(),
            (Kind::Participant, _) => "participant (in process)".into(),
            (Kind::External { label, .. }, _) => label.clone(),
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn stamped() -> Vec<u8> {
    format!("{{\"t\":{}}}", now_us()).into_bytes()
}

/// Microseconds since the stamp in `body` (None: not ours).
fn age_us(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let t = v.get("t")?.as_f64()? as u64;
    Some(now_us().saturating_sub(t))
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(what) = &args.serve {
        serve(&args, what).await;
        return;
    }
    for proto in [Proto::Amqp, Proto::Mqtt] {
        if args.proto != Proto::Both && args.proto != proto {
            continue;
        }
        if args.instructions {
            instructions(&args, proto).await;
        } else {
            latency(&args, proto).await;
        }
    }
}

// ------------------------------------------------------------ latency

async fn latency(args: &Args, proto: Proto) {
    let mut kinds = vec![Kind::Raw, Kind::Participant];
    kinds.extend(externals(&args.externals));
    let hops: Vec<usize> = if proto == Proto::Mqtt { vec![1] } else { args.hops.clone() };
    println!("{proto:?} latency, offered loads {:?} msg/s, {} s each, chains of {hops:?}", args.rates, args.seconds);
    for h in hops {
        for kind in &kinds {
            let label = kind.label(proto);
            let rows = match proto {
                Proto::Amqp => amqp_latency(args, kind, h).await,
                _ => mqtt_latency(args, kind).await,
            };
            for (rate, mut lat, sent) in rows {
                lat.sort_unstable();
                let (p50, p99, p999) = (quantile(&lat, 0.5), quantile(&lat, 0.99), quantile(&lat, 0.999));
                println!(
                    "{proto:?} {h} hop(s) {label:<26} {rate:>6} msg/s: p50 {p50:7.2} ms  p99 {p99:7.2} ms  p99.9 {p999:7.2} ms  ({}/{sent})",
                    lat.len()
                );
                println!("RESULT\tlatency {proto:?} {h} hop(s) @{rate}/s\t{label}\tp50 {p50:.2} / p99 {p99:.2} / p99.9 {p999:.2} ms\t{}/{sent}", lat.len());
            }
        }
    }
}

/// A started chain of relays (stopped on drop of the handles).
enum Running {
    Task(tokio::task::JoinHandle<()>),
    Participant(Participant),
    Process(tokio::process::Child),
}

async fn stop_all(relays: Vec<Running>) {
    for r in relays {
        match r {
            Running::Task(h) => h.abort(),
            Running::Participant(p) => {
                let _ = p.stop().await;
            }
            Running::Process(mut c) => {
                if let Some(pid) = c.id() {
                    unsafe { libc_kill(pid as i32) };
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
                let _ = c.kill().await;
            }
        }
    }
}

/// SIGTERM, so relays stop as they would in production.
unsafe fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, 15);
}

async fn start_relay(kind: &Kind, role: &str, url: &str, prefetch: u16, mqtt: bool) -> Running {
    match kind {
        Kind::Raw if mqtt => Running::Task(raw_mqtt_relay(url, &format!("{role}.IN"), &format!("{role}.OUT"), rumqttc::QoS::AtMostOnce).await),
        Kind::Raw => {
            let (url, in_q, out_x) = (url.to_owned(), format!("{role}.IN"), format!("{role}.OUT"));
            Running::Task(tokio::spawn(async move { raw_amqp_relay(&url, &in_q, &out_x, prefetch).await }))
        }
        Kind::Participant => {
            let def = Definition::new("Relay").inport(PortDef::new("in")).outport(PortDef::new("out"));
            let mut opts = Options::broker(url.to_owned());
            opts.connect.prefetch = prefetch;
            let p = Participant::start(&def, role, opts).await.unwrap();
            let p2 = p.clone();
            tokio::spawn(async move { p2.serve(|m| async move { Ok(vec![("out".to_string(), m.payload)]) }).await });
            Running::Participant(p)
        }
        Kind::External { command, .. } => Running::Process(spawn_external(command, role, url).await),
    }
}

/// Publish `n` stamped messages at `rate` per second with `publish`.
async fn paced<F, Fut>(n: usize, rate: u32, mut publish: F)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = tokio::time::Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if due > tokio::time::Instant::now() + Duration::from_micros(500) {
            tokio::time::sleep_until(due).await;
        }
        publish(stamped()).await;
    }
}

/// The next `n` ages from `rx` (taken at arrival), until 10 s pass
/// without one.
async fn collect(rx: &mut tokio::sync::mpsc::Receiver<Option<u64>>, n: usize) -> Vec<u64> {
    let mut ages = Vec::with_capacity(n);
    while ages.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(a)) => ages.extend(a),
            _ => break,
        }
    }
    ages
}

/// An MQTT sink whose messages' ages are taken as they arrive.
async fn mqtt_sink(url: &str, topic: String) -> (tokio::sync::mpsc::Receiver<Option<u64>>, Vec<tokio::task::JoinHandle<()>>) {
    let (sink, mut raw, el) = mqtt_subscriber(url, &topic, 4096, 65536, rumqttc::QoS::AtMostOnce).await;
    let (atx, arx) = tokio::sync::mpsc::channel(65536);
    let ages = tokio::spawn(async move {
        let _keep = sink;
        while let Some(b) = raw.recv().await {
            if atx.send(age_us(&b)).await.is_err() {
                return;
            }
        }
    });
    (arx, vec![el, ages])
}

fn messages(args: &Args, rate: u32) -> usize {
    ((rate as f64 * args.seconds) as usize).clamp(20, 20_000)
}

async fn amqp_latency(args: &Args, kind: &Kind, hops: usize) -> Vec<(u32, Vec<u64>, usize)> {
    let conn = Connection::connect(&args.amqp, ConnectionProperties::default()).await.expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.unwrap();
    let roles: Vec<String> = (0..hops).map(|_| unique("lat")).collect();
    for r in &roles {
        declare_inport(&ch, &format!("{r}.IN")).await;
        ch.exchange_declare(format!("{r}.OUT").as_str().into(), ExchangeKind::Fanout, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
    }
    for w in roles.windows(2) {
        ch.queue_bind(format!("{}.IN", w[1]).as_str().into(), format!("{}.OUT", w[0]).as_str().into(), "".into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
    }
    let sink = unique("latsink");
    ch.queue_declare(sink.as_str().into(), QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default()).await.unwrap();
    ch.queue_bind(sink.as_str().into(), format!("{}.OUT", roles[hops - 1]).as_str().into(), "".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut running = Vec::new();
    for r in &roles {
        running.push(start_relay(kind, r, &args.amqp, args.prefetch, false).await);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(65536);
    let sink_ch = conn.create_channel().await.unwrap();
    let mut consumer = sink_ch
        .basic_consume(sink.as_str().into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    // Ages are taken at arrival, here, not when the results are read.
    let sink_task = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if tx.send(age_us(&d.data)).await.is_err() {
                return;
            }
        }
    });
    let pub_ch = conn.create_channel().await.unwrap();
    let first = format!("{}.IN", roles[0]);
    let publish = |body: Vec<u8>| {
        let (pub_ch, first) = (pub_ch.clone(), first.clone());
        async move {
            drop(pub_ch.basic_publish("".into(), first.as_str().into(), Default::default(), &body, BasicProperties::default().with_delivery_mode(2)).await.unwrap());
        }
    };
    // Warm up: connections made, code paths taken.
    paced(50, 1000, publish).await;
    collect(&mut rx, 50).await;
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let n = messages(args, rate);
        paced(n, rate, publish).await;
        rows.push((rate, collect(&mut rx, n).await, n));
    }
    stop_all(running).await;
    sink_task.abort();
    for r in &roles {
        let _ = ch.queue_delete(format!("{r}.IN").as_str().into(), Default::default()).await;
        let _ = ch.exchange_delete(format!("{r}.OUT").as_str().into(), Default::default()).await;
        let _ = ch.exchange_delete(format!("dead-{r}.IN").as_str().into(), Default::default()).await;
    }
    let _ = ch.queue_delete(sink.as_str().into(), Default::default()).await;
    let _ = conn.close(0, "done".into()).await;
    rows
}

async fn mqtt_latency(args: &Args, kind: &Kind) -> Vec<(u32, Vec<u64>, usize)> {
    let role = unique("mlat");
    let (mut rx, sink_tasks) = mqtt_sink(&args.mqtt, format!("{role}.OUT")).await;
    let running = start_relay(kind, &role, &args.mqtt, args.prefetch, true).await;
    let (publisher, pub_task) = mqtt_publisher(&args.mqtt, 65536);
    let topic = format!("{role}.IN");
    let publish = |body: Vec<u8>| {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        async move { publisher.publish(topic, rumqttc::QoS::AtMostOnce, false, body).await.unwrap() }
    };
    // Warm up until the relay's subscription is surely in place.
    loop {
        paced(10, 1000, publish).await;
        if !collect_some(&mut rx, Duration::from_millis(500)).await.is_empty() {
            break;
        }
    }
    while !collect_some(&mut rx, Duration::from_millis(300)).await.is_empty() {}
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let n = messages(args, rate);
        paced(n, rate, publish).await;
        rows.push((rate, collect_some(&mut rx, Duration::from_secs(2)).await, n));
    }
    stop_all(vec![running]).await;
    pub_task.abort();
    sink_tasks.iter().for_each(|t| t.abort());
    rows
}

/// Ages of what arrives until `quiet` passes without a message (MQTT QoS 0
/// may lose messages: the count shows it).
async fn collect_some(rx: &mut tokio::sync::mpsc::Receiver<Option<u64>>, quiet: Duration) -> Vec<u64> {
    let mut ages = Vec::new();
    while let Ok(Some(a)) = tokio::time::timeout(quiet, rx.recv()).await {
        ages.extend(a);
    }
    ages
}

// ------------------------------------------------- instructions per message

async fn instructions(args: &Args, proto: Proto) {
    let me = std::env::current_exe().unwrap().display().to_string();
    let mut kinds = vec![
        Kind::External { label: Kind::Raw.label(proto), command: vec![me.clone(), "--serve".into(), "raw".into(), "--proto".into(), format!("{proto:?}").to_lowercase()] },
        Kind::External { label: "participant (process)".into(), command: vec![me, "--serve".into(), "participant".into(), "--proto".into(), format!("{proto:?}").to_lowercase()] },
    ];
    kinds.extend(externals(&args.externals));
    println!("{proto:?} instructions per relayed message (callgrind; {} and {} messages)", args.count, 3 * args.count);
    let mut baseline = None;
    for kind in &kinds {
        let Kind::External { label, command } = kind else { continue };
        let mut totals = Vec::new();
        let mut top = String::new();
        for n in [args.count, 3 * args.count] {
            match callgrind_run(args, proto, command, n).await {
                Ok((ir, relayed, file)) => {
                    totals.push((ir, relayed));
                    if n > args.count {
                        top = top_functions(&file);
                    }
                    if std::env::var_os("BENCH_KEEP_CALLGRIND").is_some() {
                        println!("{proto:?} {label}: callgrind profile of {n} messages kept in {}", file.display());
                    } else {
                        let _ = std::fs::remove_file(&file);
                    }
                }
                Err(e) => {
                    println!("{proto:?} {label}: {e}");
                    break;
                }
            }
        }
        if let [(ir1, n1), (ir2, n2)] = totals[..] {
            let per = (ir2 as f64 - ir1 as f64) / (n2 as f64 - n1 as f64).max(1.0);
            let base = *baseline.get_or_insert(per);
            println!("{proto:?} {label:<26} {per:>9.0} instructions/msg  ({:.2}x the raw relay; start-up {:.1} M)", per / base, (ir1 as f64 - per * n1 as f64) / 1e6);
            println!("RESULT\tinstructions/msg {proto:?}\t{label}\t{per:.0} ({:.2}x raw)\t", per / base);
            for l in top.lines() {
                println!("    {l}");
            }
        }
    }
}

/// Run a relay under callgrind for `n` messages; (instructions, messages
/// relayed, callgrind file).
async fn callgrind_run(args: &Args, proto: Proto, command: &[String], n: usize) -> Result<(u64, usize, PathBuf), String> {
    let file = std::env::temp_dir().join(format!("{}.callgrind", unique("cg")));
    let mut cmd = vec!["valgrind".to_owned(), "--tool=callgrind".into(), "--quiet".into(), format!("--callgrind-out-file={}", file.display())];
    cmd.extend(command.iter().cloned());
    let role = unique("icount");
    let relayed = match proto {
        Proto::Amqp => {
            let conn = Connection::connect(&args.amqp, ConnectionProperties::default()).await.map_err(|e| e.to_string())?;
            let ch = conn.create_channel().await.unwrap();
            let (in_q, out_x, sink) = (format!("{role}.IN"), format!("{role}.OUT"), unique("isink"));
            declare_inport(&ch, &in_q).await;
            ch.exchange_declare(out_x.as_str().into(), ExchangeKind::Fanout, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
                .await
                .unwrap();
            ch.queue_declare(sink.as_str().into(), QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default()).await.unwrap();
            ch.queue_bind(sink.as_str().into(), out_x.as_str().into(), "".into(), Default::default(), FieldTable::default()).await.unwrap();
            ch.confirm_select(Default::default()).await.unwrap();
            for _ in 0..n {
                drop(ch.basic_publish("".into(), in_q.as_str().into(), Default::default(), &stamped(), BasicProperties::default().with_delivery_mode(2)).await.unwrap());
            }
            ch.wait_for_confirms().await.unwrap();
            let child = spawn_external(&cmd, &role, &args.amqp).await;
            let sink_ch = conn.create_channel().await.unwrap();
            let mut consumer = sink_ch
                .basic_consume(sink.as_str().into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
                .await
                .unwrap();
            let mut got = 0;
            while got < n {
                match tokio::time::timeout(Duration::from_secs(120), consumer.next()).await {
                    Ok(Some(Ok(_))) => got += 1,
                    _ => break,
                }
            }
            stop_all(vec![Running::Process(child)]).await;
            let _ = ch.queue_delete(in_q.as_str().into(), Default::default()).await;
            let _ = ch.queue_delete(sink.as_str().into(), Default::default()).await;
            let _ = ch.exchange_delete(out_x.as_str().into(), Default::default()).await;
            let _ = ch.exchange_delete(format!("dead-{in_q}").as_str().into(), Default::default()).await;
            let _ = conn.close(0, "done".into()).await;
            got
        }
        _ => {
            let (mut rx, sink_tasks) = mqtt_sink(&args.mqtt, format!("{role}.OUT")).await;
            let child = spawn_external(&cmd, &role, &args.mqtt).await;
            let (publisher, pub_task) = mqtt_publisher(&args.mqtt, 65536);
            let topic = format!("{role}.IN");
            // Slowly: a relay under valgrind is ~50x slower, and QoS 0
            // drops what does not fit in the broker's queue for it.
            paced(n, 300, |body| {
                let (publisher, topic) = (publisher.clone(), topic.clone());
                async move { publisher.publish(topic, rumqttc::QoS::AtMostOnce, false, body).await.unwrap() }
            })
            .await;
            let got = collect_some(&mut rx, Duration::from_secs(10)).await.len();
            stop_all(vec![Running::Process(child)]).await;
            pub_task.abort();
            sink_tasks.iter().for_each(|t| t.abort());
            got
        }
    };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("no callgrind output ({e}); is valgrind installed?"))?;
    let ir = text
        .lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or("callgrind output without totals")?;
    Ok((ir, relayed, file))
}

/// The five functions with the most instructions of their own.
fn top_functions(file: &std::path::Path) -> String {
    let out = std::process::Command::new("callgrind_annotate").arg(file).output();
    let Ok(out) = out else { return String::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .take(5)
        .map(|l| {
            let l = l.trim();
            if l.len() > 140 { format!("{}...", &l[..l.char_indices().nth(137).map(|(i, _)| i).unwrap_or(l.len())]) } else { l.to_owned() }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ------------------------------------------------ a relay as this process

/// `--serve raw|participant ROLE`: one relay, ready line on stdout, until
/// SIGTERM (then it returns, so callgrind writes its counts).
async fn serve(args: &Args, what: &str) {
    let role = args.role.clone().expect("--serve needs the role");
    let mqtt = args.proto == Proto::Mqtt;
    let url = std::env::var("MSGFLO_BROKER").unwrap_or_else(|_| if mqtt { args.mqtt.clone() } else { args.amqp.clone() });
    let kind = match what {
        "raw" => Kind::Raw,
        "participant" => Kind::Participant,
        other => panic!("--serve raw|participant, not {other:?}"),
    };
    let running = start_relay(&kind, &role, &url, args.prefetch, mqtt).await;
    println!("{what} relay {role} ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    term.recv().await;
    stop_all(vec![running]).await;
}
