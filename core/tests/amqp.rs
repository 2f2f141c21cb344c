//! Participants on a real RabbitMQ: the wire contract, discovery, data,
//! ack/nack. Every test uses its own role, so tests run in parallel.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use msgflo::{ErrorCode, Options, Participant, PortDef};

const T: Duration = Duration::from_secs(10);

fn options() -> Options {
    Options::broker(amqp_url())
}


async fn cleanup(raw: &Raw, role: &str) {
    let in_q = format!("{role}.IN");
    let out_q = format!("{role}.OUT");
    raw.cleanup(&[&in_q], &[&in_q, &out_q, &format!("dead-{in_q}")]).await;
}

#[tokio::test]
async fn declarations_match_the_contract() {
    init_logs();
    let role = unique("decl");
    let def = repeat_def().inport(PortDef::new("config").transient()).outport(PortDef::new("status").transient());
    let p = Participant::connect(&def, &role, options()).await.unwrap();
    let raw = Raw::connect().await;
    let in_q = format!("{role}.IN");

    // Re-declaring with exactly the contract's options succeeds...
    let ch = raw.channel().await;
    ch.queue_declare(in_q.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, dead_letter_args(&in_q))
        .await
        .expect("inport queue: durable, x-dead-letter-exchange=dead-Q");
    for x in [in_q.clone(), format!("{role}.OUT")] {
        ch.exchange_declare(x.as_str().into(), ExchangeKind::Fanout, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
            .await
            .expect("port exchange: fanout, durable");
    }
    let cfg = format!("{role}.CONFIG");
    ch.queue_declare(cfg.as_str().into(), QueueDeclareOptions { auto_delete: true, ..Default::default() }, dead_letter_args(&cfg))
        .await
        .expect("transient inport queue: not durable, auto-delete");
    ch.exchange_declare(format!("{role}.STATUS").as_str().into(), ExchangeKind::Fanout, ExchangeDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("transient outport exchange: not durable, auto-delete");

    // ...and the check can fail: other options are refused with 406.
    let ch = raw.channel().await;
    let err = ch
        .queue_declare(in_q.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("406") || format!("{err:?}").contains("PRECONDITION"), "{err:?}");

    // The inport's shadow exchange delivers into the inport queue.
    let ch = raw.channel().await;
    ch.basic_publish(in_q.as_str().into(), "".into(), Default::default(), b"\"via exchange\"", Default::default())
        .await
        .unwrap();
    let d = p.recv_batch_timeout(1, T).await.pop().expect("delivered through exchange Q");
    assert_eq!(d.payload().as_bytes(), b"\"via exchange\"");
    d.ack().unwrap();

    p.stop().await.unwrap();
    raw.cleanup(&[&cfg], &[&cfg, &format!("{role}.STATUS")]).await;
    cleanup(&raw, &role).await;
}

#[tokio::test]
async fn conflicting_declaration_names_the_queue() {
    init_logs();
    let role = unique("conflict");
    let raw = Raw::connect().await;
    let in_q = format!("{role}.IN");
    raw.ch
        .queue_declare(in_q.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    let err = Participant::connect(&repeat_def(), &role, options()).await.err().expect("406 expected");
    assert_eq!(err.code(), ErrorCode::DeclarationConflict, "{err}");
    let text = err.to_string();
    assert!(text.contains(&in_q) && text.contains("x-dead-letter-exchange"), "{text}");
    cleanup(&raw, &role).await;
}

/// `?queue_type=quorum` declares the inport as a quorum queue: it carries
/// messages, and a participant declaring it the original's way (classic)
/// gets the clear conflict error, as does the reverse.
#[tokio::test]
async fn quorum_queues_are_opt_in_and_conflicts_are_named() {
    init_logs();
    let quorum = |url: String| if url.contains('?') { format!("{url}&queue_type=quorum") } else { format!("{url}?queue_type=quorum") };
    let raw = Raw::connect().await;
    let role = unique("quorum");
    let (p, _h) = start_repeat(&role, Options::broker(quorum(amqp_url()))).await;
    let in_q = format!("{role}.IN");
    let out = raw.tap(&format!("{role}.OUT")).await;
    raw.send_to_queue(&in_q, b"q1").await;
    assert_eq!(raw.get(&out, T).await.data, b"q1");
    let err = Participant::connect(&repeat_def(), &role, options()).await.err().expect("406 expected");
    assert_eq!(err.code(), ErrorCode::DeclarationConflict, "{err}");
    p.stop().await.unwrap();
    cleanup(&raw, &role).await;

    let role = unique("quorum");
    let in_q = format!("{role}.IN");
    raw.ch.queue_declare(in_q.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, dead_letter_args(&in_q)).await.unwrap();
    let err = Participant::connect(&repeat_def(), &role, Options::broker(quorum(amqp_url()))).await.err().expect("406 expected");
    assert_eq!(err.code(), ErrorCode::DeclarationConflict, "{err}");
    assert!(err.to_string().contains(&in_q) && err.to_string().contains("x-queue-type=quorum"), "{err}");
    cleanup(&raw, &role).await;
}

#[tokio::test]
async fn discovery_has_exact_keys_and_repeats_with_a_stable_id() {
    init_logs();
    let tap = DiscoveryTap::amqp();
    let role = unique("disc");
    let opts = Options { heartbeat: Some(Duration::from_millis(300)), ..options() };
    let (p, _h) = start_repeat(&role, opts).await;
    let msgs = tap.wait(&role, 3, T).await;
    let first = &msgs[0];
    assert_eq!(first["protocol"], "discovery");
    assert_eq!(first["command"], "participant");
    let payload = first["payload"].as_object().unwrap();
    let mut keys: Vec<_> = payload.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["component", "icon", "id", "inports", "label", "outports", "role"]);
    assert_eq!(first["payload"]["inports"][0]["queue"], format!("{role}.IN"));
    assert_eq!(first["payload"]["outports"][0]["queue"], format!("{role}.OUT"));
    assert_eq!(first["payload"]["id"], p.info().id.as_str());
    assert!(msgs.iter().all(|m| m["payload"]["id"] == first["payload"]["id"]), "id is stable");
    p.stop().await.unwrap();
    cleanup(&Raw::connect().await, &role).await;
}

#[tokio::test]
async fn json_text_binary_and_large_payloads_pass_unchanged() {
    init_logs();
    let role = unique("rt");
    let (p, h) = start_repeat(&role, options()).await;
    let raw = Raw::connect().await;
    let tap = raw.tap(&format!("{role}.OUT")).await;
    let large: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let bodies: Vec<Vec<u8>> = vec![
        br#"{"a":[1,2.5,"x"],"b":null}"#.to_vec(),
        b"plain text, not JSON".to_vec(),
        vec![0x00, 0xff, 0xfe, 0x80, 0x01],
        Vec::new(),
        large,
    ];
    for b in &bodies {
        raw.send_to_queue(&format!("{role}.IN"), b).await;
    }
    for b in &bodies {
        let m = raw.get(&tap, T).await;
        assert_eq!(&m.delivery.data, b);
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(2), "persistent on a durable port");
    }
    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
    assert_eq!(raw.depth(&format!("{role}.IN")).await, 0);
    cleanup(&raw, &role).await;
}

#[tokio::test]
async fn nack_goes_to_dead_letter_and_never_back_to_the_queue() {
    init_logs();
    let role = unique("nack");
    let p = Participant::start(&repeat_def(), &role, options()).await.unwrap();
    let raw = Raw::connect().await;
    let in_q = format!("{role}.IN");
    let dead = raw.tap(&format!("dead-{in_q}")).await;
    raw.send_to_queue(&in_q, b"\"bad\"").await;
    raw.send_to_queue(&in_q, b"\"good\"").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(p.recv_batch_timeout(2, T).await);
    }
    got[0].nack().unwrap();
    got[1].ack().unwrap();
    assert_eq!(got[0].ack().unwrap_err().code(), ErrorCode::AlreadyCompleted);
    assert_eq!(got[1].nack().unwrap_err().code(), ErrorCode::AlreadyCompleted);
    let m = raw.get(&dead, T).await;
    assert_eq!(m.delivery.data, b"\"bad\"");
    // The channel survived the refused second settlements: more traffic flows.
    raw.send_to_queue(&in_q, b"\"after\"").await;
    let d = p.recv_batch_timeout(1, T).await.pop().expect("channel still alive");
    assert_eq!(d.payload().as_bytes(), b"\"after\"");
    d.ack().unwrap();
    p.transport().flush().await.unwrap();
    p.stop().await.unwrap();
    assert_eq!(raw.depth(&in_q).await, 0, "nothing requeued");
    cleanup(&raw, &role).await;
}

#[tokio::test]
async fn handler_errors_nack_and_feed_the_error_port() {
    init_logs();
    let role = unique("err");
    let def = repeat_def().outport(PortDef::new("error"));
    let p = Participant::start(&def, &role, options()).await.unwrap();
    let raw = Raw::connect().await;
    let in_q = format!("{role}.IN");
    let dead = raw.tap(&format!("dead-{in_q}")).await;
    let errors = raw.tap(&format!("{role}.ERROR")).await;
    let out = raw.tap(&format!("{role}.OUT")).await;
    let p2 = p.clone();
    let h = tokio::spawn(async move {
        p2.serve(|m| async move {
            match m.payload.parse_json() {
                Some(serde_json::Value::Number(n)) => Ok(vec![("out".into(), format!("{}", n.as_i64().unwrap() * 2).into())]),
                _ => Err(msgflo::Failure::new("expected a number")),
            }
        })
        .await
    });
    raw.send_to_queue(&in_q, b"not json").await;
    raw.send_to_queue(&in_q, b"21").await;
    assert_eq!(raw.get(&out, T).await.delivery.data, b"42");
    assert_eq!(raw.get(&dead, T).await.delivery.data, b"not json");
    let e: serde_json::Value = serde_json::from_slice(&raw.get(&errors, T).await.delivery.data).unwrap();
    assert_eq!(e["error"], "expected a number");
    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
    raw.cleanup(&[], &[&format!("{role}.ERROR")]).await;
    cleanup(&raw, &role).await;
}

#[tokio::test]
async fn unknown_outport_is_an_error() {
    init_logs();
    let role = unique("port");
    let p = Participant::start(&repeat_def(), &role, options()).await.unwrap();
    let e = p.send("nope", "1").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownPort);
    p.send("out", "1").await.expect("known port still works");
    p.stop().await.unwrap();
    cleanup(&Raw::connect().await, &role).await;
}

#[tokio::test]
async fn unreachable_broker_is_a_connection_error() {
    // Port 1 on loopback: nothing listens there.
    let e = Participant::connect(&repeat_def(), "x", Options::broker("amqp://127.0.0.1:1")).await.err().unwrap();
    assert_eq!(e.code(), ErrorCode::Connection);
    let e = Participant::connect(&repeat_def(), "x", Options::broker("amqp://guest:wrong@127.0.0.1:5672")).await.err().unwrap();
    assert_eq!(e.code(), ErrorCode::Connection);
    assert!(!e.to_string().contains("wrong"), "password not shown: {e}");
}

#[tokio::test]
async fn outputs_are_confirmed_before_the_input_is_acked() {
    // With many messages in flight, stop() returns only once every output is
    // confirmed and every input acked: the queue is empty and all outputs
    // arrived, none twice.
    init_logs();
    let role = unique("conf");
    let (p, h) = start_repeat(&role, options()).await;
    let raw = Raw::connect().await;
    let tap = raw.tap(&format!("{role}.OUT")).await;
    let n = 2000;
    for i in 0..n {
        raw.send_to_queue(&format!("{role}.IN"), i.to_string().as_bytes()).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        let m = raw.get(&tap, T).await;
        let i: usize = std::str::from_utf8(&m.delivery.data).unwrap().parse().unwrap();
        assert!(seen.insert(i), "duplicate {i}");
    }
    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
    assert_eq!(raw.depth(&format!("{role}.IN")).await, 0);
    cleanup(&raw, &role).await;
}

#[tokio::test]
async fn bind_and_unbind_make_a_pubsub_edge() {
    init_logs();
    let (a, b) = (unique("bind-a"), unique("bind-b"));
    let pa = Participant::start(&repeat_def(), &a, options()).await.unwrap();
    let pb = Participant::start(&repeat_def(), &b, options()).await.unwrap();
    let (a_out, b_in) = (format!("{a}.OUT"), format!("{b}.IN"));
    pa.transport().bind(&a_out, &b_in).await.unwrap();
    pa.send("out", "1").await.unwrap();
    let d = pb.recv_batch_timeout(1, T).await.pop().expect("through the edge");
    assert_eq!(d.payload().as_bytes(), b"1");
    d.ack().unwrap();
    pa.transport().unbind(&a_out, &b_in).await.unwrap();
    pa.send("out", "2").await.unwrap();
    pa.transport().flush().await.unwrap();
    assert!(pb.recv_batch_timeout(1, Duration::from_millis(300)).await.is_empty(), "edge removed");
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
    let raw = Raw::connect().await;
    cleanup(&raw, &a).await;
    cleanup(&raw, &b).await;
}

/// Consumers on `queue` as the broker counts them, and messages ready.
async fn consumers_and_ready(raw: &Raw, queue: &str) -> (u32, u32) {
    let ch = raw.channel().await;
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    (q.consumer_count(), q.message_count())
}

async fn transport_with_two_queues() -> (std::sync::Arc<dyn msgflo::transport::Transport>, String, String) {
    use msgflo::transport::{ConnectOptions, Declaration, PortKind};
    let t = msgflo::transport::connect(&amqp_url(), &ConnectOptions::default()).await.unwrap();
    let (q1, q2) = (unique("unsub-1"), unique("unsub-2"));
    for q in [&q1, &q2] {
        // Durable: an auto-delete queue would go with its last consumer.
        t.declare(&Declaration { kind: PortKind::In, queue: q.clone(), persistent: true }).await.unwrap();
    }
    (t, q1, q2)
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<msgflo::Delivery>) -> Vec<u8> {
    let d = tokio::time::timeout(T, rx.recv()).await.expect("a delivery in time").expect("open");
    let body = d.payload().as_bytes().to_vec();
    d.ack().unwrap();
    body
}

#[tokio::test]
async fn unsubscribe_ends_that_subscription_only() {
    init_logs();
    let raw = Raw::connect().await;
    let (t, q1, q2) = transport_with_two_queues().await;
    let (a_tx, mut a) = tokio::sync::mpsc::channel(16);
    let (b_tx, mut b) = tokio::sync::mpsc::channel(16);
    t.subscribe(&q1, "a".into(), a_tx.clone()).await.unwrap();
    t.subscribe(&q2, "b".into(), b_tx.clone()).await.unwrap();
    raw.send_to_queue(&q1, b"1").await;
    assert_eq!(next(&mut a).await, b"1");
    assert_eq!(consumers_and_ready(&raw, &q1).await.0, 1);

    // Another sink's subscription is not this one: nothing changes.
    let (other, _) = tokio::sync::mpsc::channel(1);
    t.unsubscribe(&q1, &other).await.unwrap();
    assert_eq!(consumers_and_ready(&raw, &q1).await.0, 1);

    // The broker has confirmed the cancel when unsubscribe returns.
    t.unsubscribe(&q1, &a_tx).await.unwrap();
    assert_eq!(consumers_and_ready(&raw, &q1).await.0, 0, "consumer cancelled");
    assert_eq!(consumers_and_ready(&raw, &q2).await.0, 1, "the other subscription goes on");
    raw.send_to_queue(&q1, b"2").await;
    eventually("the message stays in its queue", T, || async { (consumers_and_ready(&raw, &q1).await.1 == 1).then_some(()) }).await;
    assert!(a.try_recv().is_err(), "nothing delivered after unsubscribe");
    raw.send_to_queue(&q2, b"3").await;
    assert_eq!(next(&mut b).await, b"3");

    // Subscribed again, it gets what waited.
    t.subscribe(&q1, "a".into(), a_tx).await.unwrap();
    assert_eq!(next(&mut a).await, b"2");
    t.close().await.unwrap();
    raw.cleanup(&[&q1, &q2], &[&q1, &q2, &format!("dead-{q1}"), &format!("dead-{q2}")]).await;
}

#[tokio::test]
async fn a_deleted_queue_concerns_its_subscription_not_the_connection() {
    init_logs();
    let raw = Raw::connect().await;
    // q1 and q2 declared by the transport; q3 by someone else.
    let (t, q1, q2) = transport_with_two_queues().await;
    let q3 = unique("unsub-3");
    let durable = || QueueDeclareOptions { durable: true, ..Default::default() };
    raw.ch.queue_declare(q3.as_str().into(), durable(), FieldTable::default()).await.unwrap();
    let generation = *t.generation().borrow();
    let (a_tx, mut a) = tokio::sync::mpsc::channel(16);
    let (b_tx, mut b) = tokio::sync::mpsc::channel(16);
    let (c_tx, mut c) = tokio::sync::mpsc::channel(16);
    t.subscribe(&q1, "a".into(), a_tx).await.unwrap();
    t.subscribe(&q2, "b".into(), b_tx).await.unwrap();
    t.subscribe(&q3, "c".into(), c_tx).await.unwrap();
    raw.ch.queue_delete(q1.as_str().into(), Default::default()).await.unwrap();
    raw.ch.queue_delete(q3.as_str().into(), Default::default()).await.unwrap();
    // Its own queue is declared again and consumed again...
    eventually("q1 declared again and consumed", T, || async {
        let ch = raw.channel().await;
        let q = ch.queue_declare(q1.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.ok()?;
        (q.consumer_count() == 1).then_some(())
    })
    .await;
    raw.send_to_queue(&q1, b"again").await;
    assert_eq!(next(&mut a).await, b"again");
    // ...the other subscription kept working...
    for i in 0..3u8 {
        raw.send_to_queue(&q2, &[i]).await;
        assert_eq!(next(&mut b).await, vec![i]);
    }
    // ...on the same connection (before, a cancelled consumer was taken
    // for a lost connection: reconnect, everything replayed).
    assert_eq!(*t.generation().borrow(), generation, "no reconnect");
    // Someone else's queue is not declared again: that subscription is
    // over, and when its owner makes it again, it keeps its messages.
    raw.ch.queue_declare(q3.as_str().into(), durable(), FieldTable::default()).await.unwrap();
    raw.send_to_queue(&q3, b"kept").await;
    eventually("the message waits in q3 made again", T, || async { (consumers_and_ready(&raw, &q3).await == (0, 1)).then_some(()) }).await;
    raw.send_to_queue(&q2, b"still").await;
    assert_eq!(next(&mut b).await, b"still");
    assert_eq!(*t.generation().borrow(), generation, "no reconnect");
    assert!(c.try_recv().is_err());
    t.close().await.unwrap();
    raw.cleanup(&[&q1, &q2, &q3], &[&q1, &q2, &format!("dead-{q1}"), &format!("dead-{q2}")]).await;
}

#[tokio::test]
async fn processing_times_reach_observers_with_the_heartbeat() {
    init_logs();
    let role = unique("stats");
    let opts = Options { heartbeat: Some(Duration::from_millis(300)), ..options() };
    let p = Participant::start(&repeat_def(), &role, opts).await.unwrap();
    let observer = msgflo::transport::connect(&amqp_url(), &msgflo::ConnectOptions::default()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    observer.subscribe_discovery(tx).await.unwrap();
    let raw = Raw::connect().await;
    for i in 0..3 {
        raw.send_to_queue(&format!("{role}.IN"), format!("{i}").as_bytes()).await;
    }
    let mut handled = 0;
    while handled < 3 {
        for d in p.recv_batch_timeout(3, T).await {
            tokio::time::sleep(Duration::from_millis(50)).await; // the work
            d.ack().unwrap();
            handled += 1;
        }
    }
    // Reports come with heartbeats, on the observers' channel only.
    let (mut acked, mut samples) = (0, Vec::new());
    let deadline = tokio::time::Instant::now() + T;
    while acked < 3 {
        let d = tokio::time::timeout_at(deadline, rx.recv()).await.expect("stats in time").unwrap();
        let v: serde_json::Value = serde_json::from_slice(d.payload().as_bytes()).unwrap();
        let _ = d.ack();
        if v["command"] == "stats" && v["payload"]["role"] == role.as_str() {
            let port = &v["payload"]["inports"]["in"];
            assert_eq!(port["queue"], format!("{role}.IN"));
            acked += port["acked"].as_u64().unwrap();
            samples.extend(port["processing"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()));
        }
    }
    assert_eq!(acked, 3);
    assert_eq!(samples.len(), 3);
    assert!(samples.iter().all(|s| (0.05..10.0).contains(s)), "{samples:?}");
    p.stop().await.unwrap();
    observer.close().await.unwrap();
    cleanup(&raw, &role).await;
}
