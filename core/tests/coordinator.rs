//! The coordinator against real brokers (RabbitMQ, Mosquitto) and the
//! embedded one: late participants get wired, IIPs wait for their edges,
//! participants expire, several observers see everything, MQTT edges
//! forward bytes unchanged without duplicates, roundrobin and dead-letter
//! routes on AMQP, garbage on `fbp` is survived.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use msgflo::coordinator::embedded::EmbeddedBroker;
use msgflo::coordinator::{Coordinator, Options};
use msgflo::graph::fbp;
use msgflo::transport::{self, ConnectOptions, Target, Transport};
use msgflo::{Definition, Participant, Payload, PortDef};

const T: Duration = Duration::from_secs(20);

fn embedded() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| EmbeddedBroker::start().expect("embedded broker").url())
}

async fn connect(url: &str) -> Arc<dyn Transport> {
    transport::connect(url, &ConnectOptions::default()).await.unwrap()
}

fn opts(url: &str) -> msgflo::Options {
    let mut o = msgflo::Options::broker(url);
    o.heartbeat = Some(Duration::from_millis(300));
    o
}

/// What arrives on an outport.
struct Tap {
    rx: tokio::sync::mpsc::Receiver<msgflo::Delivery>,
    _t: Arc<dyn Transport>,
}

impl Tap {
    async fn on(url: &str, outqueue: &str) -> Tap {
        let (t, rx) = tap_outport(url, outqueue).await;
        Tap { rx, _t: t }
    }

    async fn next(&mut self) -> Vec<u8> {
        next_payload(&mut self.rx, T).await
    }

    async fn nothing_within(&mut self, d: Duration) {
        if let Ok(Some(m)) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("unexpected message {:?}", String::from_utf8_lossy(m.payload().as_bytes()));
        }
    }
}

async fn cleanup(url: &str, names: &[String]) {
    if url.starts_with("amqp") {
        let t = connect(url).await;
        for n in names {
            let _ = t.delete(n).await;
            let _ = t.delete(&format!("dead-{n}")).await;
            let _ = t.delete(&format!("out-{n}")).await;
        }
    }
}

/// A graph a -> b where b appears only after the coordinator started, and
/// an IIP to a that must wait until the a -> b edge exists.
async fn late_participant_and_iip(url: &str) {
    init_logs();
    let (a, b) = (unique("ca"), unique("cb"));
    let graph = fbp::parse(&format!("'\"hello\"' -> IN {a}(Repeat)\n{a} OUT -> IN {b}(Repeat)")).unwrap();
    let t = connect(url).await;
    let c = Coordinator::start(t.clone(), url, Options::new(graph)).await.unwrap();
    let (pa, _ha) = start_repeat(&a, opts(url)).await;
    let s = c.wait_for(T, |s| s.participants.iter().any(|p| p.role == a)).await.unwrap();
    assert!(!s.complete, "b is missing: {s:?}");
    assert_eq!(s.iips_sent, 0, "the IIP waits for a's outgoing edge");
    // b's outport is where the IIP ends up.
    let mut tap = Tap::on(url, &format!("{b}.OUT")).await;
    let (pb, _hb) = start_repeat(&b, opts(url)).await;
    let s = c.wait_for(T, |s| s.complete).await.unwrap();
    assert_eq!(s.iips_sent, 1);
    assert_eq!(s.wires.len(), 1, "{s:?}");
    assert_eq!(tap.next().await, b"\"hello\"");
    // And the edge carries data.
    pa.transport().publish(Target::Queue(format!("{a}.IN")), Payload::from("[1,2]"), true).await.unwrap();
    assert_eq!(tap.next().await, b"[1,2]");
    c.stop().await;
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
    cleanup(url, &[format!("{a}.IN"), format!("{a}.OUT"), format!("{b}.IN"), format!("{b}.OUT")]).await;
}

#[tokio::test]
async fn late_participant_and_iip_amqp() {
    late_participant_and_iip(&amqp_url()).await;
}

#[tokio::test]
async fn late_participant_and_iip_mqtt() {
    late_participant_and_iip(&mqtt_url()).await;
}

#[tokio::test]
async fn late_participant_and_iip_embedded() {
    late_participant_and_iip(embedded()).await;
}

/// A participant that stops announcing is shown as gone; its definition
/// (and so its wiring) stays.
async fn expiry(url: &str) {
    let role = unique("cexp");
    let t = connect(url).await;
    let mut o = Options::new(fbp::parse("").unwrap());
    o.expiry = Duration::from_millis(1500);
    let c = Coordinator::start(t, url, o).await.unwrap();
    let (p, _h) = start_repeat(&role, opts(url)).await;
    let alive = |s: &msgflo::coordinator::Snapshot, n: usize| s.participants.iter().any(|p| p.role == role && p.alive == n);
    c.wait_for(T, |s| alive(s, 1)).await.unwrap();
    // Still alive after more than the expiry: heartbeats keep it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(alive(&c.snapshot(), 1), "{:?}", c.snapshot().participants);
    p.stop().await.unwrap();
    let s = c.wait_for(Duration::from_secs(10), |s| alive(s, 0)).await.unwrap();
    let st = s.participants.iter().find(|p| p.role == role).unwrap();
    assert_eq!(st.instances, 1);
    assert!(st.last_seen_secs.unwrap() >= 1.4, "{st:?}");
    c.stop().await;
    cleanup(url, &[format!("{role}.IN"), format!("{role}.OUT")]).await;
}

#[tokio::test]
async fn participants_expire_amqp() {
    expiry(&amqp_url()).await;
}

#[tokio::test]
async fn participants_expire_mqtt() {
    expiry(&mqtt_url()).await;
}

/// Two coordinators and an observer that comes late all see a participant
/// that announced once (the original's shared `fbp` queue gave each
/// message to one of them only).
async fn several_observers(url: &str) {
    let role = unique("cobs");
    let def = Definition::new("Once").inport(PortDef::new("in"));
    let c1 = Coordinator::start(connect(url).await, url, Options::new(Default::default())).await.unwrap();
    let c2 = Coordinator::start(connect(url).await, url, Options::new(Default::default())).await.unwrap();
    // Announce three times, with no heartbeat after.
    let mut o = msgflo::Options::broker(url);
    o.heartbeat = Some(Duration::from_secs(3600));
    let p = Participant::connect(&def, &role, o).await.unwrap();
    for _ in 0..3 {
        p.announce().await.unwrap();
    }
    // Then, on the same connection, another role's announcement: seen
    // after the three (as far as the broker keeps order), it bounds the
    // wait below for a copy of them that comes late.
    let marker = unique("cobsmark");
    let marker_info = Definition::new("Marker").instantiate(&marker).unwrap();
    p.transport().announce(Payload::json(&marker_info.discovery_message())).await.unwrap();
    let seen = |s: &msgflo::coordinator::Snapshot| s.participants.iter().any(|p| p.role == role);
    let beats =
        |s: &msgflo::coordinator::Snapshot| s.participants.iter().find(|p| p.role == role).map_or(0, |p| p.heartbeats);
    // Each coordinator counted the three announcements exactly once each:
    // none lost, none twice (on AMQP each goes through the shared `fbp`
    // queue to one of them, which relays it to the fanout all observers
    // hear). Counted before the late observer below: the replays its
    // query brings count as sightings too.
    for (name, c) in [("c1", &c1), ("c2", &c2)] {
        let s = c
            .wait_for(T, |s| beats(s) >= 3 && s.participants.iter().any(|p| p.role == marker))
            .await
            .unwrap_or_else(|e| panic!("{name} did not see the three announcements and the marker: {e}"));
        assert_eq!(beats(&s), 3, "{name} counted the three announcements as {}", beats(&s));
    }
    // A late observer (like `msgflo status`) hears it through a replay.
    let late = Coordinator::start(connect(url).await, url, Options::observer()).await.unwrap();
    let s = late.wait_for(T, seen).await.unwrap();
    let st = s.participants.iter().find(|p| p.role == role).unwrap();
    assert_eq!(st.alive, 1);
    for c in [c1, c2, late] {
        c.stop().await;
    }
    p.stop().await.unwrap();
    cleanup(url, &[format!("{role}.IN")]).await;
}

#[tokio::test]
async fn several_observers_amqp() {
    several_observers(&amqp_url()).await;
}

#[tokio::test]
async fn several_observers_mqtt() {
    several_observers(&mqtt_url()).await;
}

/// MQTT edges: bytes unchanged (binary, non-JSON), and exactly one copy per
/// message after the edge is removed and added again.
async fn mqtt_forwarding(url: &str) {
    let (a, b) = (unique("cfa"), unique("cfb"));
    let edge = format!("{a}(Repeat) OUT -> IN {b}(Repeat)");
    let graph = fbp::parse(&edge).unwrap();
    let c = Coordinator::start(connect(url).await, url, Options::new(graph.clone())).await.unwrap();
    let (pa, _ha) = start_repeat(&a, opts(url)).await;
    let (pb, _hb) = start_repeat(&b, opts(url)).await;
    c.wait_for(T, |s| s.complete && !s.wires.is_empty()).await.unwrap();
    let mut tap = Tap::on(url, &format!("{b}.OUT")).await;
    let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    let send = |body: Vec<u8>| {
        let t = pa.transport().clone();
        let q = format!("{a}.IN");
        async move { t.publish(Target::Queue(q), Payload::new(body), false).await.unwrap() }
    };
    send(binary.clone()).await;
    assert_eq!(tap.next().await, binary);
    // Remove and re-add the edge three times.
    for _ in 0..3 {
        c.set_graph(fbp::parse(&format!("{a}(Repeat)\n{b}(Repeat)")).unwrap()).unwrap();
        c.wait_for(T, |s| s.wires.is_empty()).await.unwrap();
        c.set_graph(graph.clone()).unwrap();
        c.wait_for(T, |s| s.complete && !s.wires.is_empty()).await.unwrap();
    }
    send(b"once".to_vec()).await;
    assert_eq!(tap.next().await, b"once");
    tap.nothing_within(Duration::from_millis(700)).await;
    // Removed: nothing arrives.
    c.set_graph(fbp::parse(&format!("{a}(Repeat)\n{b}(Repeat)")).unwrap()).unwrap();
    c.wait_for(T, |s| s.wires.is_empty()).await.unwrap();
    send(b"gone".to_vec()).await;
    tap.nothing_within(Duration::from_millis(700)).await;
    c.stop().await;
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
    cleanup(url, &[format!("{a}.IN"), format!("{a}.OUT"), format!("{b}.IN"), format!("{b}.OUT")]).await;
}

#[tokio::test]
async fn mqtt_edges_forward_bytes_once_mosquitto() {
    mqtt_forwarding(&mqtt_url()).await;
}

#[tokio::test]
async fn mqtt_edges_forward_bytes_once_embedded() {
    mqtt_forwarding(embedded()).await;
}

/// AMQP: live unbinding works the same way (no copies after remove/re-add).
#[tokio::test]
async fn amqp_edges_rewire_without_duplicates() {
    mqtt_forwarding(&amqp_url()).await;
}

/// Roundrobin edge with a dead-letter route: two workers share the jobs,
/// a nacked job lands in the dead-letter participant's queue.
#[tokio::test]
async fn roundrobin_and_deadletter_amqp() {
    let url = amqp_url();
    let (api, worker, failed) = (unique("capi"), unique("cwork"), unique("cfail"));
    let graph = fbp::parse(&format!(
        "{api}(Api) OUT -> IN rr(msgflo/RoundRobin) OUT -> IN {worker}(Worker)\nrr DEADLETTER -> IN {failed}(Repeat)"
    ))
    .unwrap();
    let c = Coordinator::start(connect(&url).await, &url, Options::new(graph)).await.unwrap();
    let (papi, _h1) = start_repeat(&api, opts(&url)).await;
    let (pfail, _h2) = start_repeat(&failed, opts(&url)).await;
    // Two worker instances: they nack "bad", ack the rest.
    let mut workers = Vec::new();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..2 {
        let p = Participant::start(&repeat_def(), &worker, opts(&url)).await.unwrap();
        let p2 = p.clone();
        let tx = seen_tx.clone();
        tokio::spawn(async move {
            p2.serve(move |m| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((i, m.payload.as_bytes().to_vec()));
                    if m.payload.as_bytes() == b"\"bad\"" {
                        Err(msgflo::Failure::new("bad job"))
                    } else {
                        Ok(vec![])
                    }
                }
            })
            .await
        });
        workers.push(p);
    }
    let s = c.wait_for(T, |s| s.complete && s.wires.len() == 2).await.unwrap();
    let kinds: Vec<String> = s.wires.iter().map(|w| serde_json::to_value(&w.wire).unwrap()["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["roundrobin", "deadletter"]);
    let mut dead = Tap::on(&url, &format!("{failed}.OUT")).await;
    for i in 0..20 {
        papi.transport().publish(Target::Queue(format!("{api}.IN")), Payload::from(format!("{i}")), true).await.unwrap();
    }
    papi.transport().publish(Target::Queue(format!("{api}.IN")), Payload::from("\"bad\""), true).await.unwrap();
    assert_eq!(dead.next().await, b"\"bad\"");
    let mut by_worker = [0usize; 2];
    let mut jobs = 0;
    while jobs < 21 {
        let (i, _) = tokio::time::timeout(T, seen_rx.recv()).await.unwrap().unwrap();
        by_worker[i] += 1;
        jobs += 1;
    }
    assert_eq!(by_worker.iter().sum::<usize>(), 21, "each job once");
    c.stop().await;
    for p in workers.iter().chain([&papi, &pfail]) {
        p.stop().await.unwrap();
    }
    let mut names = vec![];
    for r in [&api, &worker, &failed] {
        names.push(format!("{r}.IN"));
        names.push(format!("{r}.OUT"));
    }
    cleanup(&url, &names).await;
}

/// Garbage on `fbp` is counted and logged; discovery keeps working.
async fn garbage_on_fbp(url: &str) {
    let role = unique("cgarb");
    let t = connect(url).await;
    let c = Coordinator::start(t.clone(), url, Options::new(Default::default())).await.unwrap();
    for junk in [&b"not json"[..], b"{\"protocol\":\"discovery\",\"command\":\"participant\",\"payload\":{}}", b"[1,2,3]", b"\xff\xfe"] {
        t.announce(Payload::new(junk.to_vec())).await.unwrap();
    }
    let (p, _h) = start_repeat(&role, opts(url)).await;
    let s = c.wait_for(T, |s| s.rejected >= 4 && s.participants.iter().any(|p| p.role == role)).await.unwrap();
    assert_eq!(s.rejected, 4);
    c.stop().await;
    p.stop().await.unwrap();
    cleanup(url, &[format!("{role}.IN"), format!("{role}.OUT")]).await;
}

#[tokio::test]
async fn garbage_on_fbp_is_survived_amqp() {
    garbage_on_fbp(&amqp_url()).await;
}

#[tokio::test]
async fn garbage_on_fbp_is_survived_mqtt() {
    garbage_on_fbp(&mqtt_url()).await;
}

/// A graph edge naming a port the participant does not have is reported
/// (not wired, not a crash); the rest of the graph is wired.
#[tokio::test]
async fn wrong_port_names_are_reported() {
    let url = amqp_url();
    let (a, b) = (unique("cwa"), unique("cwb"));
    let graph = fbp::parse(&format!("{a}(Repeat) NOPE -> IN {b}(Repeat)\n{a} OUT -> IN {b}")).unwrap();
    let c = Coordinator::start(connect(&url).await, &url, Options::new(graph)).await.unwrap();
    let (pa, _ha) = start_repeat(&a, opts(&url)).await;
    let (pb, _hb) = start_repeat(&b, opts(&url)).await;
    let s = c.wait_for(T, |s| s.wires.iter().any(|w| w.error.is_none()) && !s.pending.is_empty()).await.unwrap();
    let text = format!("{:?}", s.pending);
    assert!(text.contains("no outport \\\"nope\\\""), "{text}");
    assert!(!s.complete);
    c.stop().await;
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
    cleanup(&url, &[format!("{a}.IN"), format!("{a}.OUT"), format!("{b}.IN"), format!("{b}.OUT")]).await;
}

/// A coordinator that starts the graph's participants (`Repeat` is the
/// repeat example).
async fn launching(url: &str, graph: &str) -> Coordinator {
    use msgflo::coordinator::launcher::Launcher;
    use msgflo::coordinator::supervisor::Supervisor;
    let repeat = examples(&["repeat"]).join("repeat");
    let library = msgflo::library::Library::from_json(&format!(r#"{{"components": {{"Repeat": "{} #ROLE"}}}}"#, repeat.display())).unwrap();
    let mut o = Options::new(fbp::parse(graph).unwrap());
    o.launcher = Some(Launcher {
        library,
        dir: std::env::temp_dir(),
        broker_url: url.to_owned(),
        only: vec![],
        ignore: vec![],
        supervisor: Supervisor::new(Duration::from_secs(5)),
    });
    Coordinator::start(connect(url).await, url, o).await.unwrap()
}

/// With a launcher, the graph decides which participants run: adding a node
/// starts its participant (and wires it), removing it stops the process.
#[tokio::test]
async fn set_graph_starts_and_stops_participants() {
    let url = amqp_url();
    let (a, b) = (unique("la"), unique("lb"));
    let c = launching(&url, &format!("{a}(Repeat)")).await;
    c.wait_for(T, |s| s.complete).await.unwrap();
    let roles = |cs: Vec<msgflo::coordinator::supervisor::ChildStatus>| cs.into_iter().map(|c| c.role).collect::<Vec<_>>();
    assert_eq!(roles(c.children().await), vec![a.clone()]);
    // Add b and an edge: b is started and wired.
    let mut tap = Tap::on(&url, &format!("{b}.OUT")).await;
    c.set_graph(fbp::parse(&format!("{a}(Repeat) OUT -> IN {b}(Repeat)")).unwrap()).unwrap();
    c.wait_for(T, |s| s.complete && s.wires.len() == 1).await.unwrap();
    let mut both = roles(c.children().await);
    both.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(both, want);
    let t = connect(&url).await;
    t.publish(Target::Queue(format!("{a}.IN")), Payload::from("1"), true).await.unwrap();
    assert_eq!(tap.next().await, b"1");
    // Remove a: its process stops; b keeps running.
    let pid_a = c.children().await.into_iter().find(|ch| ch.role == a).unwrap().pid.unwrap();
    c.set_graph(fbp::parse(&format!("{b}(Repeat)")).unwrap()).unwrap();
    let start = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid_a}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid_a}/stat")).unwrap_or_default().contains(") Z ")
    {
        assert!(start.elapsed() < T, "participant {a} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(roles(c.children().await), vec![b.clone()]);
    c.stop().await;
    cleanup(&url, &[format!("{a}.IN"), format!("{a}.OUT"), format!("{b}.IN"), format!("{b}.OUT")]).await;
}

/// Scaling a role runs several instances on the role's queues: work is
/// shared, every message is handled once; scaling down stops the newest.
#[tokio::test]
async fn a_role_scales_to_several_instances_and_back() {
    let url = amqp_url();
    let a = unique("scale");
    let c = launching(&url, &format!("{a}(Repeat)")).await;
    c.wait_for(T, |s| s.complete).await.unwrap();
    c.scale(&a, 3).unwrap();
    let alive = |n: usize| {
        let a = a.clone();
        move |s: &msgflo::coordinator::Snapshot| s.participants.iter().any(|p| p.role == a && p.alive == n)
    };
    c.wait_for(T, alive(3)).await.unwrap();
    let mut instances: Vec<u32> = c.children().await.into_iter().filter(|ch| ch.role == a).map(|ch| ch.instance).collect();
    instances.sort();
    assert_eq!(instances, vec![0, 1, 2]);
    // 60 messages are shared by the three and each comes out once.
    let mut tap = Tap::on(&url, &format!("{a}.OUT")).await;
    let t = connect(&url).await;
    for i in 0..60 {
        t.publish(Target::Queue(format!("{a}.IN")), Payload::from(format!("{i}")), true).await.unwrap();
    }
    let mut got = std::collections::BTreeSet::new();
    for _ in 0..60 {
        assert!(got.insert(tap.next().await), "a message came out twice");
    }
    c.scale(&a, 1).unwrap();
    let start = std::time::Instant::now();
    loop {
        let left: Vec<u32> = c.children().await.into_iter().filter(|ch| ch.role == a).map(|ch| ch.instance).collect();
        if left == vec![0] {
            break;
        }
        assert!(start.elapsed() < T, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
    cleanup(&url, &[format!("{a}.IN"), format!("{a}.OUT")]).await;
}

/// Discovery left in the durable `fbp` queue long ago (no observer ran) is
/// recognised by its timestamp and shown as gone; a fresh announcement (ours
/// are stamped) is alive. The original replayed such backlog as live.
#[tokio::test]
async fn stale_discovery_backlog_shows_as_gone_amqp() {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
    let url = amqp_url();
    let (stale, recent, fresh) = (unique("cstale"), unique("crecent"), unique("cfresh"));
    let raw = Raw::connect().await;
    raw.ch
        .queue_declare("fbp".into(), QueueDeclareOptions { durable: true, ..Default::default() }, Default::default())
        .await
        .unwrap();
    // The coordinator first: other tests' observers may take the message
    // from `fbp` at once and relay it; ours must be listening by then.
    let mut o = Options::new(Default::default());
    o.expiry = Duration::from_secs(60);
    let c = Coordinator::start(connect(&url).await, &url, o).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // An hour old (backlog of a participant long gone), and 30 s old (a
    // heartbeat that waited in the queue): each counts from its timestamp.
    for (role, at) in [(&stale, now - 3600), (&recent, now - 30)] {
        let body = serde_json::json!({"protocol": "discovery", "command": "participant", "payload": {
            "id": format!("{role}-1"), "role": role, "component": "Old", "label": "old", "icon": "x",
            "inports": [], "outports": []}});
        raw.ch
            .basic_publish(
                "".into(),
                "fbp".into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                lapin::BasicProperties::default().with_timestamp(at),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (p, _h) = start_repeat(&fresh, opts(&url)).await;
    let s = c
        .wait_for(T, |s| [&stale, &recent, &fresh].iter().all(|r| s.participants.iter().any(|p| &p.role == *r)))
        .await
        .unwrap();
    let get = |r: &str| s.participants.iter().find(|p| p.role == r).unwrap().clone();
    let (old, mid, new) = (get(&stale), get(&recent), get(&fresh));
    assert_eq!(old.alive, 0, "{old:?}");
    // Gone long ago: its instance may already be forgotten (the role stays).
    assert!(old.last_seen_secs.is_none_or(|s| s > 60.0), "{old:?}");
    assert_eq!(mid.alive, 1, "{mid:?}");
    let mid_age = mid.last_seen_secs.unwrap();
    assert!((28.0..=45.0).contains(&mid_age), "last seen from its timestamp: {mid:?}");
    assert_eq!(new.alive, 1, "{new:?}");
    assert!(new.last_seen_secs.unwrap() < 5.0, "{new:?}");
    c.stop().await;
    p.stop().await.unwrap();
    cleanup(&url, &[format!("{fresh}.IN"), format!("{fresh}.OUT")]).await;
}

/// The embedded broker bounds what it keeps per topic (segments of 1 MiB),
/// yet a message larger than a segment passes whole, in order with small
/// ones around it.
#[tokio::test]
async fn embedded_broker_passes_messages_larger_than_its_segments() {
    let url = embedded();
    let topic = unique("cbig");
    let mut tap = Tap::on(url, &topic).await;
    let t = connect(url).await;
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    for body in [b"before".to_vec(), big.clone(), b"after".to_vec()] {
        t.publish(Target::Queue(topic.clone()), Payload::new(body), false).await.unwrap();
    }
    assert_eq!(tap.next().await, b"before");
    assert_eq!(tap.next().await, big);
    assert_eq!(tap.next().await, b"after");
}
