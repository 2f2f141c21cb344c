//! Participants on a real Mosquitto: discovery on `fbp`, topics = queues,
//! payload bytes unchanged. Every test uses its own role.

mod common;

use std::time::Duration;

use common::*;
use msgflo::{Definition, ErrorCode, Options, Participant, PortDef};

const T: Duration = Duration::from_secs(10);


#[tokio::test]
async fn discovery_on_fbp_with_heartbeat() {
    init_logs();
    let mut raw = RawMqtt::connect(&["fbp"]).await;
    let role = unique("mdisc");
    let opts = Options { heartbeat: Some(Duration::from_millis(300)), ..Options::broker(mqtt_url()) };
    let (p, _h) = start_repeat(&role, opts).await;
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let body = raw.next_on("fbp", T).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["payload"]["role"] != role.as_str() {
            continue;
        }
        let mut keys: Vec<_> = v["payload"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["component", "icon", "id", "inports", "label", "outports", "role"]);
        assert_eq!(v["payload"]["inports"][0]["queue"], format!("{role}.IN"));
        ids.push(v["payload"]["id"].clone());
    }
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(ids[0], p.info().id.as_str());
    p.stop().await.unwrap();
}

#[tokio::test]
async fn payload_bytes_pass_unchanged() {
    init_logs();
    let role = unique("mrt");
    let out = format!("{role}.OUT");
    let mut raw = RawMqtt::connect(&[&out]).await;
    let (p, h) = start_repeat(&role, Options::broker(mqtt_url())).await;
    let large: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let bodies: Vec<Vec<u8>> = vec![
        br#"{"temperature": 22.3}"#.to_vec(),
        b"not json at all".to_vec(),
        vec![0xff, 0x00, 0xc3, 0x28],
        large,
    ];
    for b in &bodies {
        raw.publish(&format!("{role}.IN"), b).await;
        assert_eq!(&raw.next_on(&out, T).await, b);
    }
    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
}

#[tokio::test]
async fn explicit_queue_names_are_topics_verbatim() {
    init_logs();
    let role = unique("mq");
    let topic_in = format!("devices/{role}/set");
    let topic_out = format!("devices/{role}/state");
    let def = Definition::new("Repeat")
        .inport(PortDef::new("in").with_queue(&topic_in))
        .outport(PortDef::new("out").with_queue(&topic_out));
    let mut raw = RawMqtt::connect(&[&topic_out]).await;
    let p = Participant::start(&def, &role, Options::broker(mqtt_url())).await.unwrap();
    raw.publish(&topic_in, b"1").await;
    let d = p.recv_batch_timeout(1, T).await.pop().expect("delivery");
    assert_eq!(d.inport(), "in");
    p.send("out", d.payload().clone()).await.unwrap();
    d.ack().unwrap();
    assert_eq!(raw.next_on(&topic_out, T).await, b"1");
    assert_eq!(p.send("nope", "x").await.unwrap_err().code(), ErrorCode::UnknownPort);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn unreachable_broker_is_a_connection_error() {
    let e = Participant::connect(&repeat_def(), "x", Options::broker("mqtt://127.0.0.1:1")).await.err().unwrap();
    assert_eq!(e.code(), ErrorCode::Connection);
}

#[tokio::test]
async fn bind_is_refused_with_a_clear_error() {
    let p = Participant::start(&repeat_def(), &unique("mbind"), Options::broker(mqtt_url())).await.unwrap();
    let e = p.transport().bind("a", "b").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Broker);
    assert!(e.to_string().contains("cannot bind"));
    p.stop().await.unwrap();
}

#[tokio::test]
async fn busy_sender_with_a_full_inbox_does_not_deadlock() {
    // Inputs fill the participant's inbox while it is busy sending many
    // outputs; the event loop must keep carrying both.
    init_logs();
    let role = unique("mbusy");
    let (in_t, out_t) = (format!("{role}.IN"), format!("{role}.OUT"));
    let mut raw = RawMqtt::connect(&[&out_t]).await;
    let p = Participant::start(&repeat_def(), &role, Options::broker(mqtt_url())).await.unwrap();
    let n = 3000;
    for i in 0..n {
        raw.publish(&in_t, i.to_string().as_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sending = async {
        for i in 0..n {
            p.send("out", i.to_string()).await.unwrap();
        }
    };
    tokio::time::timeout(T, sending).await.expect("sends completed while the inbox was full");
    let mut got = 0;
    while got < n {
        raw.next_on(&out_t, T).await;
        got += 1;
    }
    let mut received = 0;
    while received < n {
        let batch = p.recv_batch_timeout(512, T).await;
        assert!(!batch.is_empty(), "inputs kept, not dropped: {received} of {n}");
        received += batch.len();
    }
    p.stop().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_ends_one_subscriber_of_a_topic() {
    use msgflo::transport::{connect, ConnectOptions};
    init_logs();
    let t = connect(&mqtt_url(), &ConnectOptions::default()).await.unwrap();
    let (topic, marker) = (unique("unsub"), unique("unsub-marker"));
    let (a_tx, mut a) = tokio::sync::mpsc::channel(16);
    let (b_tx, mut b) = tokio::sync::mpsc::channel(16);
    let (c_tx, mut c) = tokio::sync::mpsc::channel(16);
    t.subscribe(&topic, "a".into(), a_tx.clone()).await.unwrap();
    t.subscribe(&topic, "b".into(), b_tx.clone()).await.unwrap();
    t.subscribe(&marker, "c".into(), c_tx).await.unwrap();
    let raw = RawMqtt::connect(&[]).await;
    let next = |rx: &mut tokio::sync::mpsc::Receiver<msgflo::Delivery>| {
        let got = rx.try_recv().map(|d| d.payload().as_bytes().to_vec());
        got.ok()
    };
    raw.publish(&topic, b"1").await;
    assert_eq!(wait_on(&mut a).await, b"1");
    assert_eq!(wait_on(&mut b).await, b"1");

    // One subscriber ends; the other still gets the topic. Both are handed
    // a message in the same step, so once b has it a would have it too.
    t.unsubscribe(&topic, &a_tx).await.unwrap();
    raw.publish(&topic, b"2").await;
    assert_eq!(wait_on(&mut b).await, b"2");
    assert_eq!(next(&mut a), None, "nothing for an ended subscription");

    // The last one ends: the client unsubscribes from the topic. What is
    // published next on the topic, and then on the marker topic (same
    // publisher, so in that order), arrives only on the marker.
    t.unsubscribe(&topic, &b_tx).await.unwrap();
    raw.publish(&topic, b"3").await;
    raw.publish(&marker, b"m").await;
    assert_eq!(wait_on(&mut c).await, b"m");
    assert_eq!(next(&mut b), None);
    assert_eq!(next(&mut a), None);

    // Subscribed again, it flows again.
    t.subscribe(&topic, "a".into(), a_tx).await.unwrap();
    raw.publish(&topic, b"4").await;
    assert_eq!(wait_on(&mut a).await, b"4");
    t.close().await.unwrap();
}

async fn wait_on(rx: &mut tokio::sync::mpsc::Receiver<msgflo::Delivery>) -> Vec<u8> {
    let d = tokio::time::timeout(T, rx.recv()).await.expect("a delivery in time").expect("open");
    d.payload().as_bytes().to_vec()
}

/// `flush` returns only when what was published before it is on its way:
/// written to the socket (QoS 0) or acknowledged by the broker (QoS 1).
/// The publisher runs on a runtime of its own that is shut down right
/// after `flush`, as when a process exits: anything still queued in the
/// client is lost then, as the tail of a stream was before `flush` waited
/// (the soak found it).
async fn flush_then_drop(qos_query: &str) {
    use msgflo::transport::{connect, ConnectOptions, Target};
    init_logs();
    let topic = unique("flush");
    let mut raw = RawMqtt::connect(&[&topic]).await;
    let url = format!("{}{qos_query}", mqtt_url());
    let name = unique("flush-publisher");
    let n = 5000u32;
    let publisher_topic = topic.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let t = connect(&url, &ConnectOptions { connection_name: name, ..Default::default() }).await.unwrap();
            for i in 0..n {
                t.publish(Target::Queue(publisher_topic.clone()), msgflo::Payload::new(i.to_be_bytes().to_vec()), false).await.unwrap();
            }
            tokio::time::timeout(Duration::from_secs(30), t.flush()).await.expect("flush within 30 s").unwrap();
            std::mem::forget(t); // no close, no drop: the runtime just stops
        });
        rt.shutdown_background();
    })
    .join()
    .unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n as usize {
        let got = tokio::time::timeout(T, raw.rx.recv()).await;
        match got {
            Ok(Some((tp, body))) if tp == topic => {
                seen.insert(u32::from_be_bytes(body[..4].try_into().unwrap()));
            }
            Ok(Some(_)) => {}
            _ => {
                let missing: Vec<u32> = (0..n).filter(|i| !seen.contains(i)).take(5).collect();
                panic!("{} of {n} arrived after flush and drop; first missing {missing:?}", seen.len());
            }
        }
    }
}

#[tokio::test]
async fn flush_waits_until_qos0_publishes_are_written() {
    flush_then_drop("").await;
}

#[tokio::test]
async fn flush_waits_until_qos1_publishes_are_acknowledged() {
    flush_then_drop("?qos=1").await;
}
