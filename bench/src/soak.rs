//! Soak: `msgflo run` on its embedded MQTT broker for minutes, with many
//! simulated participants heartbeating and a steady stream forwarded over
//! one graph edge by the coordinator. Samples the coordinator process's
//! resident memory every interval and counts every message (each carries
//! its sequence number): lost, duplicated, and the RSS curve.
//!
//! Not part of CI (it takes ten minutes by default): `scripts/soak`.
//! Writes `<out>.csv` (one row per sample) and `<out>.svg` (the curve).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use msgflo::transport::{self, ConnectOptions, Target};
use msgflo::{Definition, Payload, PortDef};

#[derive(Parser)]
#[command(about = "Soak msgflo run: simulated participants heartbeating, an MQTT edge forwarded, memory sampled")]
struct Args {
    /// Minutes to run.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Simulated participants, each announcing once per heartbeat.
    #[arg(long, default_value_t = 1000)]
    participants: usize,
    /// Messages per second through the forwarded edge.
    #[arg(long, default_value_t = 10000)]
    rate: u64,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 10)]
    sample: u64,
    /// Seconds the participants wait between heartbeats (the coordinator
    /// expires a participant after three missed ones).
    #[arg(long, default_value_t = 10.0)]
    heartbeat: f64,
    /// Seconds of warm-up, not counted in the memory growth figure.
    #[arg(long, default_value_t = 60)]
    warmup: u64,
    /// The msgflo binary.
    #[arg(long, default_value = "target/release/msgflo")]
    msgflo: String,
    /// Files written: OUT.csv and OUT.svg.
    #[arg(long, default_value = "target/soak")]
    out: String,
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Sample {
    t: f64,
    rss_mib: f64,
    sent: u64,
    received: u64,
    participants: usize,
}

fn plot(samples: &[Sample], title: &str) -> String {
    let (w, h, left, top, bottom, right) = (800.0, 360.0, 70.0, 40.0, 50.0, 20.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let tmax = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let ymax = samples.iter().map(|s| s.rss_mib).fold(1.0, f64::max) * 1.15;
    let x = |t: f64| left + pw * t / tmax;
    let y = |v: f64| top + ph * (1.0 - v / ymax);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="24" font-size="15" font-weight="bold">{title}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">seconds</text>
<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">resident MiB</text>
"#,
        top + ph,
        left + pw,
        top + ph,
        top + ph,
        left + pw / 2.0,
        h - 10.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0}</text><line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
            left - 6.0,
            y(v) + 4.0,
            y(v),
            left + pw,
            y(v)
        ));
        let t = tmax * i as f64 / 5.0;
        s.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{t:.0}</text>\n", x(t), top + ph + 16.0));
    }
    let points: Vec<String> = samples.iter().map(|p| format!("{:.1},{:.1}", x(p.t), y(p.rss_mib))).collect();
    s.push_str(&format!("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>\n</svg>\n", points.join(" ")));
    s
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // Our transports' warnings (a receiver too slow, QoS 0 drops) show.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "msgflo=warn".into())).with_writer(std::io::stderr).init();
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (src, dst) = (format!("soaksrc{id}"), format!("soakdst{id}"));
    let (a, b) = (format!("{src}.OUT"), format!("{dst}.IN"));
    let dir = std::env::temp_dir().join(format!("msgflo-soak-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let graph = dir.join("soak.fbp");
    std::fs::write(&graph, format!("{src}(soak/Source) OUT -> IN {dst}(soak/Sink)\n")).unwrap();
    // Participants heartbeat every `heartbeat` s: the coordinator's period
    // is set to match, so its expiry (three heartbeats) keeps them alive.
    let period = args.heartbeat * 2.2;
    // Absolute: the child runs in the temp folder.
    let msgflo = std::fs::canonicalize(&args.msgflo).unwrap_or_else(|e| panic!("{}: {e} (build it: cargo build --release -p msgflo)", args.msgflo));
    let mut child = Command::new(&msgflo)
        .args(["run", "--no-start", "--no-runtime"])
        .arg(&graph)
        .env("MSGFLO_DISCOVERY_PERIOD", format!("{period}"))
        .env_remove("MSGFLO_BROKER")
        .env_remove("CLOUDAMQP_URL")
        // rumqttd warns when a reader fell behind what it keeps (a loss).
        .env("RUST_LOG", "msgflo=warn,rumqttd=warn")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it: cargo build --release -p msgflo)", args.msgflo));
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("msgflo run prints its broker").unwrap();
        if let Some(rest) = line.split(" on ").nth(1).filter(|_| line.contains("(embedded broker)")) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    println!("soak: msgflo run (pid {pid}) on its embedded broker {url}; {} participants heartbeating every {} s; {} msg/s over {a} -> {b}; {} min", args.participants, args.heartbeat, args.rate, args.minutes);

    let connect = |u: String| async move { transport::connect(&u, &ConnectOptions::default()).await.expect("embedded broker reachable") };
    // The two roles of the edge, and the simulated crowd.
    let mut announcements = vec![
        Payload::json(&Definition::new("soak/Source").outport(PortDef::new("out").with_queue(a.clone())).instantiate(&src).unwrap().discovery_message()),
        Payload::json(&Definition::new("soak/Sink").inport(PortDef::new("in").with_queue(b.clone())).instantiate(&dst).unwrap().discovery_message()),
    ];
    for i in 0..args.participants {
        let def = Definition::new("soak/Simulated").inport(PortDef::new("in")).inport(PortDef::new("config")).outport(PortDef::new("out")).outport(PortDef::new("error"));
        announcements.push(Payload::json(&def.instantiate(&format!("soaksim{id}-{i}")).unwrap().discovery_message()));
    }
    let crowd = connect(url.clone()).await;
    let beat = Duration::from_secs_f64(args.heartbeat);
    let heartbeats = tokio::spawn({
        let crowd = crowd.clone();
        async move {
            // Spread over the interval, as real participants are.
            let gap = beat.div_f64(announcements.len() as f64);
            let mut tick = tokio::time::interval(gap);
            loop {
                for m in &announcements {
                    tick.tick().await;
                    crowd.announce(m.clone()).await.expect("announce");
                }
            }
        }
    });

    // The sink counts each sequence number.
    let sink = connect(url.clone()).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<msgflo::Delivery>(8192);
    sink.subscribe(&b, Arc::from("soak"), tx).await.unwrap();
    let seen = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let (received, duplicated, probes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    tokio::spawn({
        let (seen, received, duplicated, probes) = (seen.clone(), received.clone(), duplicated.clone(), probes.clone());
        async move {
            while let Some(d) = rx.recv().await {
                let n: Option<u64> = std::str::from_utf8(d.payload().as_bytes()).ok().and_then(|s| s.parse().ok());
                let _ = d.ack();
                if n == Some(0) {
                    probes.fetch_add(1, Ordering::Relaxed);
                } else if let Some(n) = n {
                    received.fetch_add(1, Ordering::Relaxed);
                    if !seen.lock().unwrap().insert(n) {
                        duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });

    // Wait until the coordinator wired the edge: a probe gets through.
    let publisher = connect(url.clone()).await;
    let wired = Instant::now();
    while probes.load(Ordering::Relaxed) == 0 {
        assert!(wired.elapsed() < Duration::from_secs(60), "the coordinator did not wire {a} -> {b} within 60 s");
        publisher.publish(Target::Queue(a.clone()), Payload::from("0"), false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("soak: edge wired after {:.1} s; streaming", wired.elapsed().as_secs_f64());

    let sent = Arc::new(AtomicU64::new(0));
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let start = Instant::now();
    let pump = tokio::spawn({
        let (sent, a, rate) = (sent.clone(), a.clone(), args.rate);
        async move {
            // In 10 ms steps, as many as the rate says by now.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut next = 1u64;
            while start.elapsed() < total {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while next <= due {
                    publisher.publish(Target::Queue(a.clone()), Payload::from(next.to_string()), false).await.unwrap();
                    next += 1;
                }
                sent.store(next - 1, Ordering::Relaxed);
            }
            // Close: flush what is queued, then say goodbye to the broker.
            publisher.close().await.unwrap();
        }
    });

    let mut samples = Vec::new();
    let mut sampler = tokio::time::interval(Duration::from_secs(args.sample));
    println!("{:>6}  {:>9}  {:>10}  {:>10}  {:>8}", "s", "RSS MiB", "sent", "received", "msg/s");
    let mut last = (0.0, 0u64);
    loop {
        sampler.tick().await;
        let t = start.elapsed().as_secs_f64();
        let Some(rss) = rss_kib(pid) else { panic!("msgflo run (pid {pid}) is gone") };
        let (s, r) = (sent.load(Ordering::Relaxed), received.load(Ordering::Relaxed));
        let rate = if t > last.0 { (r - last.1) as f64 / (t - last.0) } else { 0.0 };
        last = (t, r);
        println!("{t:>6.0}  {:>9.1}  {s:>10}  {r:>10}  {rate:>8.0}", rss as f64 / 1024.0);
        samples.push(Sample { t, rss_mib: rss as f64 / 1024.0, sent: s, received: r, participants: args.participants });
        if pump.is_finished() {
            break;
        }
    }
    pump.await.unwrap();
    // The tail: wait until nothing more arrives for 3 s.
    let sent = sent.load(Ordering::Relaxed);
    let mut quiet = (Instant::now(), received.load(Ordering::Relaxed));
    while quiet.0.elapsed() < Duration::from_secs(3) && seen.lock().unwrap().len() < sent as usize {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = received.load(Ordering::Relaxed);
        if r != quiet.1 {
            quiet = (Instant::now(), r);
        }
    }
    heartbeats.abort();
    let distinct = seen.lock().unwrap().len() as u64;
    let lost = sent.saturating_sub(distinct);
    if lost > 0 {
        let s = seen.lock().unwrap();
        let missing: Vec<u64> = (1..=sent).filter(|n| !s.contains(n)).take(20).collect();
        println!("soak: first missing sequence numbers (of {sent}): {missing:?}");
    }
    let dup = duplicated.load(Ordering::Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let after: Vec<&Sample> = samples.iter().filter(|s| s.t >= args.warmup as f64).collect();
    let (first, lastv) = (after.first().map_or(0.0, |s| s.rss_mib), after.last().map_or(0.0, |s| s.rss_mib));
    let peak = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let mut csv = String::from("seconds,rss_mib,sent,received,participants\n");
    for s in &samples {
        csv.push_str(&format!("{:.1},{:.2},{},{},{}\n", s.t, s.rss_mib, s.sent, s.received, s.participants));
    }
    std::fs::write(format!("{}.csv", args.out), csv).unwrap();
    let title = format!("msgflo run, {} participants, {} msg/s forwarded (MQTT, embedded broker)", args.participants, args.rate);
    std::fs::write(format!("{}.svg", args.out), plot(&samples, &title)).unwrap();
    println!(
        "SOAK {:.0} s: sent {sent}, received {distinct} distinct, lost {lost}, duplicated {dup}; coordinator RSS after {} s warm-up {first:.1} -> {lastv:.1} MiB ({:+.1} MiB), peak {peak:.1} MiB; {}.csv, {}.svg",
        start.elapsed().as_secs_f64(),
        args.warmup,
        lastv - first,
        args.out,
        args.out
    );
    if lost > 0 {
        std::process::exit(1);
    }
}
