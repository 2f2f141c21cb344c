//! The broker goes away and comes back: participants reconnect, re-declare,
//! re-subscribe, re-announce, and lose nothing.
//!
//! Every test here restarts a private broker of its own (common::brokers):
//! a RabbitMQ node with its own port, data folder and node name
//! (`rabbitmqctl stop_app; start_app`), or a Mosquitto on a free port. The
//! machine's shared brokers are never touched. The harsher faults (SIGKILL,
//! alarms, full queues) are in faults.rs.

mod common;

use std::time::Duration;

use common::brokers::{PrivateMosquitto as Mosquitto, PrivateRabbit};
use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use msgflo::{Options, Participant};

const T: Duration = Duration::from_secs(30);

/// The tests that start a private RabbitMQ node take turns (two cores).
static RABBITMQ_RESTART: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rabbitmqctl(rabbit: &PrivateRabbit, arg: &str) {
    if let Err(e) = rabbit.ctl(&[arg]) {
        panic!("{e}");
    }
}

#[tokio::test]
async fn amqp_broker_restart() {
    init_logs();
    let _turn = RABBITMQ_RESTART.lock().await;
    let rabbit = PrivateRabbit::start("reconnect");
    let role = unique("reconn");
    let in_q = format!("{role}.IN");
    let opts = Options { heartbeat: Some(Duration::from_secs(3600)), ..Options::broker(rabbit.url()) };
    let p = Participant::start(&repeat_def(), &role, opts.clone()).await.unwrap();
    let mut generation = p.transport().generation();
    assert_eq!(*generation.borrow_and_update(), 1);

    // A durable queue bound to the outport survives the restart, as does a
    // second participant's unacked delivery (it must come back).
    let raw = Raw::connect_to(&rabbit.url()).await;
    let sink = unique("sink");
    raw.ch
        .queue_declare(sink.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    raw.ch.queue_bind(sink.as_str().into(), format!("{role}.OUT").as_str().into(), "".into(), Default::default(), FieldTable::default()).await.unwrap();
    // A second one, bound while the broker is away.
    let sink2 = unique("sink2");
    raw.ch
        .queue_declare(sink2.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    // A binding to an exchange the restart takes away (not durable): the
    // broker refuses it on reconnect; it is dropped, the rest replayed
    // (one refused record used to fail every reconnect attempt).
    let gone = unique("gone-x");
    raw.ch
        .exchange_declare(gone.as_str().into(), lapin::ExchangeKind::Fanout, Default::default(), FieldTable::default())
        .await
        .unwrap();
    p.transport().bind(&gone, &sink).await.unwrap();
    raw.send_to_queue(&in_q, b"\"before\"").await;
    let d = p.recv_batch_timeout(1, T).await.pop().expect("before restart");
    assert_eq!(d.payload().as_bytes(), b"\"before\"");
    drop(raw);

    rabbitmqctl(&rabbit, "stop_app");
    // Binding while the broker is away is recorded at once (the reconnect
    // loop holds the connection's state only while it tries to connect;
    // it used to hold it for the whole outage, so this waited for the
    // broker). Until the loss is noticed it fails; no attempt may hang.
    let out_x = format!("{role}.OUT");
    eventually("bind recorded while the broker is away", T, || async {
        match tokio::time::timeout(Duration::from_secs(3), p.transport().bind(&out_x, &sink2)).await {
            Ok(Ok(())) => Some(()),
            Ok(Err(_)) => None,
            Err(_) => panic!("bind blocked while the broker is away"),
        }
    })
    .await;
    // Sent while the broker is away: held, then published after reconnect.
    let p2 = p.clone();
    let during = tokio::spawn(async move { p2.send("out", "\"during\"").await });
    rabbitmqctl(&rabbit, "start_app");
    rabbitmqctl(&rabbit, "await_startup");

    tokio::time::timeout(T, generation.changed()).await.expect("reconnected").unwrap();
    assert_eq!(*generation.borrow(), 2);
    during.await.unwrap().expect("send while away succeeds once back");

    // The unacked delivery from before is redelivered; acking the stale one
    // is harmless.
    d.ack().expect("stale ack is accepted and dropped");
    let again = p.recv_batch_timeout(1, T).await.pop().expect("redelivered");
    assert_eq!(again.payload().as_bytes(), b"\"before\"");
    assert!(again.message().redelivered);
    p.send("out", again.payload().clone()).await.unwrap();
    again.ack().unwrap();

    // Re-announced after reconnecting (heartbeat is an hour away).
    let raw = Raw::connect_to(&rabbit.url()).await;
    eventually("re-announce on fbp", T, || async {
        while let Some(m) = raw.try_get("fbp").await {
            let v: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap_or_default();
            if v["payload"]["role"] == role.as_str() {
                return Some(());
            }
        }
        None
    })
    .await;

    // Declarations and subscription restored: new input flows.
    raw.send_to_queue(&in_q, b"\"after\"").await;
    let d = p.recv_batch_timeout(1, T).await.pop().expect("after restart");
    p.send("out", d.payload().clone()).await.unwrap();
    d.ack().unwrap();
    p.transport().flush().await.unwrap();

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(raw.get(&sink, T).await.delivery.data);
    }
    got.sort();
    assert_eq!(got, vec![b"\"after\"".to_vec(), b"\"before\"".to_vec(), b"\"during\"".to_vec()]);
    // The binding made during the outage was replayed: the same three.
    let mut got2 = Vec::new();
    for _ in 0..3 {
        got2.push(raw.get(&sink2, T).await.delivery.data);
    }
    got2.sort();
    assert_eq!(got2, got);
    p.stop().await.unwrap();
    assert_eq!(raw.depth(&in_q).await, 0);
    raw.cleanup(&[&in_q, &sink, &sink2], &[&in_q, &format!("{role}.OUT")]).await;
}

#[tokio::test]
async fn mqtt_broker_restart() {
    init_logs();
    let mut broker = Mosquitto::start(false);
    let role = unique("mreconn");
    let (in_t, out_t) = (format!("{role}.IN"), format!("{role}.OUT"));
    let p = Participant::start(&repeat_def(), &role, Options::broker(broker.url())).await.unwrap();
    let p2 = p.clone();
    let h = tokio::spawn(async move { p2.serve(|m| async move { Ok(vec![("out".to_string(), m.payload)]) }).await });
    let mut generation = p.transport().generation();
    generation.borrow_and_update();

    let mut raw = RawMqtt::connect_to(&broker.url(), &[&out_t]).await;
    raw.publish(&in_t, b"1").await;
    assert_eq!(raw.next_on(&out_t, T).await, b"1");

    broker.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.run();
    tokio::time::timeout(T, generation.changed()).await.expect("reconnected").unwrap();

    let mut raw = RawMqtt::connect_to(&broker.url(), &[&out_t]).await;
    // Re-subscription happens right after CONNACK; retry until it is active.
    let start = std::time::Instant::now();
    let got = loop {
        assert!(start.elapsed() < T, "no output after reconnect");
        raw.publish(&in_t, b"2").await;
        if let Ok(Some((t, b))) = tokio::time::timeout(Duration::from_millis(300), raw.rx.recv()).await {
            if t == out_t {
                break b;
            }
        }
    };
    assert_eq!(got, b"2");
    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
}

/// A coordinator across a broker restart: it reconnects, keeps observing
/// (its private discovery queue and relay come back), and wires a
/// participant that appears only after the restart.
async fn coordinator_across_restart(url: &str, restart: impl AsyncFnOnce()) {
    use msgflo::coordinator::{Coordinator, Options as CoordinatorOptions};
    use msgflo::transport::{self, ConnectOptions, Target};
    let (a, b) = (unique("rca"), unique("rcb"));
    let graph = msgflo::graph::fbp::parse(&format!("{a}(Repeat) OUT -> IN {b}(Repeat)")).unwrap();
    let t = transport::connect(url, &ConnectOptions::default()).await.unwrap();
    let mut generation = t.generation();
    generation.borrow_and_update();
    let c = Coordinator::start(t.clone(), url, CoordinatorOptions::new(graph)).await.unwrap();
    let opts = Options { heartbeat: Some(Duration::from_millis(500)), ..Options::broker(url) };
    let (pa, _ha) = start_repeat(&a, opts.clone()).await;
    c.wait_for(T, |s| s.participants.iter().any(|p| p.role == a)).await.unwrap();
    restart().await;
    tokio::time::timeout(T, generation.changed()).await.expect("coordinator reconnected").unwrap();
    let seen_before = c.snapshot().participants.iter().find(|p| p.role == a).map(|p| p.heartbeats).unwrap();
    let (pb, _hb) = start_repeat(&b, opts).await;
    let (_tap, mut rx) = tap_outport(url, &format!("{b}.OUT")).await;
    c.wait_for(T, |s| s.complete).await.expect("wired after the restart");
    // It keeps observing: a's heartbeats after the restart arrive (a
    // heartbeats every 0.5 s; `complete` alone may come first).
    c.wait_for(T, |s| s.participants.iter().any(|p| p.role == a && p.heartbeats > seen_before)).await.expect("a's heartbeats are seen again");
    // Data flows; on MQTT the forwarder's subscription may need a moment.
    let start = std::time::Instant::now();
    loop {
        t.publish(Target::Queue(format!("{a}.IN")), msgflo::Payload::from("\"x\""), true).await.unwrap();
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            assert_eq!(d.payload().as_bytes(), b"\"x\"");
            break;
        }
        assert!(start.elapsed() < T, "no data through the edge after the restart");
    }
    c.stop().await;
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
    if url.starts_with("amqp") {
        for r in [&a, &b] {
            for q in [format!("{r}.IN"), format!("{r}.OUT")] {
                let _ = t.delete(&q).await;
            }
        }
    }
}

#[tokio::test]
async fn coordinator_amqp_broker_restart() {
    init_logs();
    let _turn = RABBITMQ_RESTART.lock().await;
    let rabbit = PrivateRabbit::start("reconnect-coord");
    coordinator_across_restart(&rabbit.url(), async || {
        rabbitmqctl(&rabbit, "stop_app");
        rabbitmqctl(&rabbit, "start_app");
        rabbitmqctl(&rabbit, "await_startup");
    })
    .await;
}

#[tokio::test]
async fn coordinator_mqtt_broker_restart() {
    init_logs();
    let broker = std::sync::Arc::new(std::sync::Mutex::new(Mosquitto::start(false)));
    let url = broker.lock().unwrap().url();
    let b2 = broker.clone();
    coordinator_across_restart(&url, async move || {
        b2.lock().unwrap().stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b2.lock().unwrap().run();
    })
    .await;
}

/// A QoS 1 participant comes back to a persistent session that holds far
/// more messages than its prefetch: Mosquitto resends them all at once,
/// before the inport is subscribed again. Every one is delivered (they used
/// to be handed over inside `subscribe`, which waited for room in a
/// receiver nobody read yet: the restarted participant hung at start).
#[tokio::test]
async fn mqtt_qos1_session_resumed_with_more_than_prefetch() {
    init_logs();
    let mut broker = Mosquitto::start(false);
    let role = unique("mheld");
    let url = format!("{}?qos=1", broker.url());
    let opts = || {
        let mut o = Options::broker(url.clone());
        o.connect.prefetch = 2;
        o
    };
    // The session is made, then left (clean_session=false keeps it).
    let p = Participant::start(&repeat_def(), &role, opts()).await.unwrap();
    p.stop().await.unwrap();
    drop(p);

    let n = 200u64;
    let u = url::Url::parse(&broker.url()).unwrap();
    let (client, mut el) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new(unique("mheldpub"), "127.0.0.1", u.port().unwrap()), 1000);
    let acked = tokio::spawn(async move {
        let mut acks = 0;
        while acks < n {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    for i in 0..n {
        client.publish(format!("{role}.IN"), rumqttc::QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    tokio::time::timeout(T, acked).await.expect("the broker took every message").unwrap();

    let p = tokio::time::timeout(T, Participant::start(&repeat_def(), &role, opts()))
        .await
        .expect("the participant starts on a session holding more than its prefetch")
        .unwrap();
    let mut got = std::collections::BTreeSet::new();
    let start = std::time::Instant::now();
    while got.len() < n as usize {
        assert!(start.elapsed() < T, "only {} of {n} held messages delivered", got.len());
        for d in p.recv_batch_timeout(16, Duration::from_secs(1)).await {
            got.insert(d.payload().as_bytes().to_vec());
            d.ack().unwrap();
        }
    }
    assert_eq!(got.len(), n as usize);
    p.stop().await.unwrap();
    // The session's id file (made under the state folder for this role).
    for e in std::fs::read_dir(msgflo::transport::state_dir()).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().contains(&role) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    broker.stop();
}

/// More topics than the MQTT client's request queue holds (1024) are all
/// subscribed again after a broker restart (they are re-subscribed in
/// batches that wait for room; a full queue used to drop the rest).
#[tokio::test]
async fn mqtt_resubscribes_more_than_1024_topics() {
    init_logs();
    let mut broker = Mosquitto::start(false);
    let n = 1500;
    let base = unique("mmany");
    let topics: Vec<String> = (0..n).map(|i| format!("{base}/{i}")).collect();
    let t = msgflo::transport::connect(&broker.url(), &msgflo::ConnectOptions::default()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4 * n);
    for topic in &topics {
        t.subscribe(topic, std::sync::Arc::from(topic.as_str()), tx.clone()).await.unwrap();
    }
    let mut generation = t.generation();
    generation.borrow_and_update();
    broker.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.run();
    tokio::time::timeout(T, generation.changed()).await.expect("reconnected").unwrap();

    // Publish to every topic not heard from yet, until each has delivered.
    let raw = RawMqtt::connect_to(&broker.url(), &[]).await;
    let mut heard = std::collections::BTreeSet::new();
    let start = std::time::Instant::now();
    while heard.len() < n {
        assert!(start.elapsed() < T, "after the restart only {} of {n} topics deliver", heard.len());
        for topic in topics.iter().filter(|t| !heard.contains(t.as_str())) {
            raw.publish(topic, b"x").await;
        }
        let round = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(d)) = tokio::time::timeout_at(round, rx.recv()).await {
            heard.insert(d.inport().to_owned());
        }
    }
    t.close().await.unwrap();
    broker.stop();
}

/// A participant's stats report on a broker no observer has used yet (no
/// `msgflo.discovery` exchange): it declares the exchange instead of
/// publishing into nothing, which closed the publish channel and looped
/// reconnects (found by this file's restart test spinning).
#[tokio::test]
async fn stats_on_a_broker_without_observers() {
    init_logs();
    let _turn = RABBITMQ_RESTART.lock().await;
    let rabbit = PrivateRabbit::start("stats");
    let role = unique("stats");
    let opts = Options { heartbeat: Some(Duration::from_millis(200)), ..Options::broker(rabbit.url()) };
    let p = Participant::start(&repeat_def(), &role, opts).await.unwrap();
    let generation = p.transport().generation();
    let raw = Raw::connect_to(&rabbit.url()).await;
    raw.send_to_queue(&format!("{role}.IN"), b"1").await;
    let d = p.recv_batch_timeout(1, T).await.pop().expect("a delivery");
    d.ack().unwrap();
    // The next heartbeat reports it, declaring the observers' exchange.
    eventually("the observers' exchange declared by the report", T, || async {
        let ch = raw.channel().await;
        let opts = lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() };
        ch.exchange_declare("msgflo.discovery".into(), lapin::ExchangeKind::Fanout, opts, FieldTable::default()).await.ok()
    })
    .await;
    raw.send_to_queue(&format!("{role}.IN"), b"2").await;
    let d = p.recv_batch_timeout(1, T).await.pop().expect("still consuming");
    d.ack().unwrap();
    p.transport().flush().await.unwrap();
    assert_eq!(*generation.borrow(), 1, "no reconnect");
    p.stop().await.unwrap();
}

/// `flush` across a broker outage: the client's request channel fills
/// while the broker is away, a publish waiting for room is cancelled, and
/// once the broker is back `flush` returns (it does not wait for the
/// cancelled publish, nor for what the lost connection took with it) and
/// everything queued after the loss arrives.
#[tokio::test]
async fn mqtt_flush_survives_an_outage_and_a_cancelled_publish() {
    use msgflo::transport::{connect, ConnectOptions, Target};
    init_logs();
    let mut broker = Mosquitto::start(false);
    let topic = unique("mflush");
    let t = connect(&broker.url(), &ConnectOptions::default()).await.unwrap();
    let mut generation = t.generation();
    generation.borrow_and_update();
    broker.stop();
    // The event loop notices the loss (its next poll fails); publishes
    // then wait in the request channel (1024) until it is full.
    let publish = |i: u32| t.publish(Target::Queue(topic.clone()), msgflo::Payload::new(i.to_be_bytes().to_vec()), false);
    let mut queued = 0u32;
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < T, "the request channel never filled ({queued} queued)");
        match tokio::time::timeout(Duration::from_millis(200), publish(queued)).await {
            Ok(r) => {
                r.unwrap();
                queued += 1;
            }
            Err(_) => break, // waiting for room: cancelled by the timeout
        }
    }
    assert!(queued >= 1024, "{queued}");
    broker.run();
    tokio::time::timeout(T, generation.changed()).await.expect("reconnected").unwrap();
    let mut raw = RawMqtt::connect_to(&broker.url(), &[&topic]).await;
    tokio::time::timeout(T, t.flush()).await.expect("flush returns once the broker is back").unwrap();
    // A marker published after the flush arrives: the connection carries
    // new publishes again.
    publish(u32::MAX).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < T, "the marker did not arrive");
        if raw.next_on(&topic, T).await == u32::MAX.to_be_bytes() {
            break;
        }
    }
    t.close().await.unwrap();
}
