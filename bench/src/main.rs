//! Relay throughput: a msgflo participant against a raw client doing the
//! same work with the same settings, in one run, on the same broker.
//!
//! "Relay" = consume, trivial callback, publish, ack: what a participant
//! does. 16-byte JSON messages by default.
//!
//! - AMQP: the input queue is filled first, then the relay is started and
//!   timed until the N-th output reaches a sink queue bound to its outport.
//!   Both relays use prefetch P, publisher confirms, persistent messages,
//!   and ack an input only after its output is confirmed.
//! - MQTT: QoS 0 (as the original). A publisher sends N messages while the
//!   relay runs; timed from the first publish to the N-th output at the
//!   sink (or until outputs stop for 2 s; losses are reported).
//!
//! Rounds alternate raw and participant; the best round of each counts.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use msgflo::{Definition, Options, Participant, PortDef};

mod relays;
use relays::{declare_inport, externals, mqtt_publisher, mqtt_subscriber, raw_amqp_relay, raw_mqtt_relay, spawn_external, unique, Kind};

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Proto {
    Amqp,
    Mqtt,
    Both,
}

#[derive(Parser)]
#[command(about = "Relay throughput: msgflo participant vs raw client relay")]
struct Args {
    #[arg(long, value_enum, default_value = "both")]
    proto: Proto,
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    amqp: String,
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt: String,
    /// Messages per round.
    #[arg(long, default_value_t = 20000)]
    messages: usize,
    /// Rounds per relay (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// AMQP prefetch for both relays.
    #[arg(long, default_value_t = msgflo::transport::DEFAULT_PREFETCH)]
    prefetch: u16,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Also measure a relay process: `LABEL=COMMAND ARGS...`; the role is
    /// appended, MSGFLO_BROKER set, and timing starts at its first stdout
    /// line. Repeatable.
    #[arg(long = "external", value_name = "LABEL=COMMAND")]
    externals: Vec<String>,
    /// MQTT QoS of every client and relay: 0, or 1 (participants get
    /// `?qos=1`: QoS 1 subscriptions and publishes, a persistent session).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    mqtt_qos: u8,
}

impl Args {
    fn mqtt_qos(&self) -> rumqttc::QoS {
        if self.mqtt_qos == 1 { rumqttc::QoS::AtLeastOnce } else { rumqttc::QoS::AtMostOnce }
    }

    /// The broker URL relays get (with `?qos=1` for QoS 1).
    fn mqtt_relay_url(&self) -> String {
        if self.mqtt_qos == 1 { format!("{}?qos=1", self.mqtt) } else { self.mqtt.clone() }
    }
}

impl Kind {
    fn label(&self) -> &str {
        match self {
            Kind::Raw => "raw relay",
            Kind::Participant => "participant",
            Kind::External { label, .. } => label,
        }
    }

    fn all(args: &Args) -> Vec<Kind> {
        let mut kinds = vec![Kind::Raw, Kind::Participant];
        kinds.extend(externals(&args.externals));
        kinds
    }
}

fn payload(size: usize) -> Vec<u8> {
    // A JSON string of exactly `size` bytes (minimum 2).
    let inner = size.saturating_sub(2);
    format!("\"{}\"", "x".repeat(inner)).into_bytes()
}

/// CPU time (user + system, all threads) process `pid` ("self" for this
/// one) has used so far, from /proc (10 ms ticks).
fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name; utime and stime are
    // fields 14 and 15 of the whole line, i.e. 12 and 13 after it.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    (f.len() > 13).then(|| (f[11] + f[12]) / 100.0)
}

fn cpu_seconds() -> f64 {
    cpu_seconds_of("self").unwrap_or(0.0)
}

/// CPU seconds used so far by the broker process (`beam.smp` or
/// `mosquitto`), if it runs on this machine and can be read.
fn broker_cpu_seconds(name: &str) -> Option<f64> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return cpu_seconds_of(entry.file_name().to_str()?);
        }
    }
    None
}

/// One round's figures: the rate, and CPU microseconds per message of the
/// relay process (external relays only: in-process ones share the bench
/// process with the publisher and the sink) and of the broker.
struct Round {
    rate: f64,
    relay_us: Option<f64>,
    broker_us: Option<f64>,
}

impl Round {
    fn cpu_note(&self) -> String {
        cpu_note(self.relay_us, self.broker_us)
    }
}

fn cpu_note(relay_us: Option<f64>, broker_us: Option<f64>) -> String {
    let f = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    format!("CPU us/msg: relay process {}, broker {}", f(relay_us), f(broker_us))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.proto != Proto::Mqtt {
        amqp_bench(&args).await;
    }
    if args.proto != Proto::Amqp {
        mqtt_bench(&args).await;
    }
}

fn report(proto: &str, kinds: &[Kind], rounds: &[Vec<Round>]) {
    let rates: Vec<Vec<f64>> = rounds.iter().map(|r| r.iter().map(|x| x.rate).collect()).collect();
    let rates = &rates[..];
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
    for (k, r) in kinds.iter().zip(rates) {
        println!("{proto}: {:<22} {:>9.0} msg/s  (rounds: {})", k.label(), best(r), fmt(r));
    }
    // CPU per message, the median over the rounds (the machine is noisy).
    let median = |v: Vec<f64>| -> Option<f64> {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    for (k, r) in kinds.iter().zip(rounds) {
        let relay = median(r.iter().filter_map(|x| x.relay_us).collect());
        let broker = median(r.iter().filter_map(|x| x.broker_us).collect());
        let note = cpu_note(relay, broker);
        println!("{proto}: {:<22} {note} (median of rounds)", k.label());
        if let Some(relay) = relay {
            let b = broker.map(|b| format!("{b:.1} us/msg")).unwrap_or_else(|| "-".into());
            println!("RESULT\tCPU per message {proto}\t{}\t{relay:.1} us/msg\tbroker {b} (median of rounds)", k.label());
        }
    }
    let (raw, ours) = (best(&rates[0]), best(&rates[1]));
    println!("{proto}: ratio participant/raw relay = {:.2}", ours / raw);
    // For bench/run's table: best rate, and the ratio to the raw relay and
    // to the last external (bench/run puts the plain client-library relay
    // there).
    let plain = rates.last().map(|r| best(r)).filter(|_| kinds.len() > 2 && kinds.last().is_some_and(|k| k.label().contains("amqplib")));
    for (k, r) in kinds.iter().zip(rates) {
        let vs_plain = plain.map(|p| format!(", {:.2}x {}", best(r) / p, kinds.last().unwrap().label())).unwrap_or_default();
        println!("RESULT\tthroughput {proto}\t{}\t{:.0} msg/s\t{:.2}x raw{vs_plain}", k.label(), best(r), best(r) / raw);
    }
    for (k, r) in kinds.iter().zip(rates).skip(2) {
        println!("{proto}: ratio {}/participant = {:.2}, {}/raw relay = {:.2}", k.label(), best(r) / ours, k.label(), best(r) / raw);
    }
}

/// A running relay of either kind.
enum Relay {
    Raw(tokio::task::JoinHandle<()>),
    Participant(Participant, tokio::task::JoinHandle<msgflo::Result<()>>),
    External(tokio::process::Child),
}

impl Relay {
    /// CPU seconds used so far by an external relay process.
    fn cpu_seconds(&self) -> Option<f64> {
        match self {
            Relay::External(c) => cpu_seconds_of(&c.id()?.to_string()),
            _ => None,
        }
    }

    fn participant(p: Participant) -> Relay {
        let p2 = p.clone();
        let h = tokio::spawn(async move { p2.serve(|m| async move { Ok(vec![("out".to_string(), m.payload)]) }).await });
        Relay::Participant(p, h)
    }

    async fn stop(self) {
        match self {
            Relay::Raw(h) => h.abort(),
            Relay::Participant(p, h) => {
                p.stop().await.unwrap();
                h.await.unwrap().unwrap();
            }
            Relay::External(mut c) => {
                let _ = c.kill().await;
            }
        }
    }
}

// ---------------------------------------------------------------- AMQP

async fn amqp_bench(args: &Args) {
    let conn = Connection::connect(&args.amqp, ConnectionProperties::default()).await.expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.unwrap();
    println!(
        "AMQP relay, {} messages of {} bytes, prefetch {}, confirms, persistent, ack after confirm",
        args.messages, args.size, args.prefetch
    );
    let kinds = Kind::all(args);
    let mut rates: Vec<Vec<Round>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (i, kind) in kinds.iter().enumerate() {
            let r = amqp_round(&conn, &ch, args, kind).await;
            eprintln!("  round {} {}: {:.0} msg/s ({})", round + 1, kind.label(), r.rate, r.cpu_note());
            rates[i].push(r);
        }
    }
    report("AMQP", &kinds, &rates);
}

async fn amqp_round(conn: &Connection, ch: &lapin::Channel, args: &Args, kind: &Kind) -> Round {
    let role = unique("relay");
    let (in_q, out_x) = (format!("{role}.IN"), format!("{role}.OUT"));
    let sink = unique("sink");
    declare_inport(ch, &in_q).await;
    ch.exchange_declare(out_x.as_str().into(), ExchangeKind::Fanout, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.queue_declare(sink.as_str().into(), QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default()).await.unwrap();
    ch.queue_bind(sink.as_str().into(), out_x.as_str().into(), "".into(), Default::default(), FieldTable::default()).await.unwrap();

    // Fill the input queue.
    let fill = conn.create_channel().await.unwrap();
    fill.confirm_select(Default::default()).await.unwrap();
    let body = payload(args.size);
    for _ in 0..args.messages {
        // The confirm is awaited for all at once below (wait_for_confirms).
        drop(fill
            .basic_publish("".into(), in_q.as_str().into(), Default::default(), &body, BasicProperties::default().with_delivery_mode(2))
            .await
            .unwrap());
    }
    fill.wait_for_confirms().await.unwrap();

    let sink_ch = conn.create_channel().await.unwrap();
    let mut sink_consumer = sink_ch
        .basic_consume(sink.as_str().into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();

    let mut start = Instant::now();
    let cpu0 = cpu_seconds();
    let broker0 = broker_cpu_seconds("beam.smp");
    let relay = match kind {
        Kind::Participant => {
            let def = Definition::new("Relay").inport(PortDef::new("in")).outport(PortDef::new("out"));
            let mut opts = Options::broker(args.amqp.clone());
            opts.connect.prefetch = args.prefetch;
            Relay::participant(Participant::start(&def, &role, opts).await.unwrap())
        }
        Kind::Raw => {
            let url = args.amqp.clone();
            let (in_q, out_x, prefetch) = (in_q.clone(), out_x.clone(), args.prefetch);
            Relay::Raw(tokio::spawn(async move { raw_amqp_relay(&url, &in_q, &out_x, prefetch).await }))
        }
        Kind::External { command, .. } => {
            let child = spawn_external(command, &role, &args.amqp).await;
            start = Instant::now();
            Relay::External(child)
        }
    };
    let relay_cpu0 = relay.cpu_seconds();
    let mut n = 0;
    while n < args.messages {
        match tokio::time::timeout(Duration::from_secs(30), sink_consumer.next()).await {
            Ok(Some(Ok(_))) => n += 1,
            _ => panic!("relay stalled after {n} messages"),
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let per_msg = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1e6 / n as f64);
    let relay_us = per_msg(relay_cpu0, relay.cpu_seconds());
    let broker_us = per_msg(broker0, broker_cpu_seconds("beam.smp"));
    if !matches!(kind, Kind::External { .. }) {
        let cpu = cpu_seconds() - cpu0;
        eprintln!("    bench process CPU (relay + publisher + sink): {:.1} us/msg", cpu * 1e6 / n as f64);
    }
    relay.stop().await;
    let _ = ch.queue_delete(in_q.as_str().into(), Default::default()).await;
    let _ = ch.queue_delete(sink.as_str().into(), Default::default()).await;
    for x in [&in_q, &out_x] {
        let _ = ch.exchange_delete(x.as_str().into(), Default::default()).await;
    }
    // Let the aborted relay's connection close before the next round.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Round { rate, relay_us, broker_us }
}

// ---------------------------------------------------------------- MQTT

/// Messages in flight between the publisher and the sink at QoS 1.
const QOS1_WINDOW: usize = 500;

async fn mqtt_bench(args: &Args) {
    println!("MQTT relay, {} messages of {} bytes, QoS {}", args.messages, args.size, args.mqtt_qos);
    let kinds = Kind::all(args);
    let mut rates: Vec<Vec<Round>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (i, kind) in kinds.iter().enumerate() {
            let (r, got) = mqtt_round(args, kind).await;
            eprintln!("  round {} {}: {:.0} msg/s ({got}/{} delivered; {})", round + 1, kind.label(), r.rate, args.messages, r.cpu_note());
            rates[i].push(r);
        }
    }
    report(if args.mqtt_qos == 1 { "MQTT QoS 1" } else { "MQTT" }, &kinds, &rates);
}

async fn mqtt_round(args: &Args, kind: &Kind) -> (Round, usize) {
    let role = unique("mrelay");
    let (in_t, out_t) = (format!("{role}.IN"), format!("{role}.OUT"));

    let (_sink, mut srx, sink_task) = mqtt_subscriber(&args.mqtt, &out_t, 1024, 4096, args.mqtt_qos()).await;

    let relay = if let Kind::External { command, .. } = kind {
        Relay::External(spawn_external(command, &role, &args.mqtt_relay_url()).await)
    } else if matches!(kind, Kind::Participant) {
        let def = Definition::new("Relay").inport(PortDef::new("in")).outport(PortDef::new("out"));
        Relay::participant(Participant::start(&def, &role, Options::broker(args.mqtt_relay_url())).await.unwrap())
    } else {
        Relay::Raw(raw_mqtt_relay(&args.mqtt, &in_t, &out_t, args.mqtt_qos()).await)
    };
    // Both relays subscribe before they return/are spawned with a SUBACK;
    // give the participant's subscription the same guarantee.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let relay_cpu0 = relay.cpu_seconds();
    let broker0 = broker_cpu_seconds("mosquitto");
    let (publisher, pub_task) = mqtt_publisher(&args.mqtt, 1024);
    let body = payload(args.size);
    let start = Instant::now();
    let n = args.messages;
    let in_t2 = in_t.clone();
    let qos = args.mqtt_qos();
    // QoS 1: at most QOS1_WINDOW messages between publisher and sink.
    // Mosquitto queues at most 1,000 QoS 1 messages for a client that is
    // behind (`max_queued_messages`) and drops the rest; an open flood would
    // measure that, not the relay. QoS 0 floods, as it always did.
    let window = (args.mqtt_qos == 1).then(|| std::sync::Arc::new(tokio::sync::Semaphore::new(QOS1_WINDOW)));
    let send_window = window.clone();
    let send = tokio::spawn(async move {
        for _ in 0..n {
            if let Some(w) = &send_window {
                match w.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
            }
            publisher.publish(&in_t2, qos, false, body.clone()).await.unwrap();
        }
    });
    let mut got = 0;
    let mut last = start;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(2), srx.recv()).await {
            Ok(Some(_)) => {
                got += 1;
                last = Instant::now();
                if let Some(w) = &window {
                    w.add_permits(1);
                }
            }
            _ => break,
        }
    }
    if let Some(w) = &window {
        w.close(); // a stalled relay: the publisher gives up too
    }
    let rate = got as f64 / last.duration_since(start).as_secs_f64();
    let per_msg = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1e6 / got.max(1) as f64);
    let relay_us = per_msg(relay_cpu0, relay.cpu_seconds());
    let broker_us = per_msg(broker0, broker_cpu_seconds("mosquitto"));
    let _ = send.await;
    relay.stop().await;
    pub_task.abort();
    sink_task.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    (Round { rate, relay_us, broker_us }, got)
}
