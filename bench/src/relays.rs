//! Relays shared by the benchmarks: the raw lapin and rumqttc baselines
//! (what a participant does, written directly against the client library),
//! relay processes started from a command line, and small helpers.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// What relays in a benchmark: the raw client relay, our participant in
/// the bench process, or a relay process (`--external LABEL=COMMAND`).
#[derive(Clone)]
pub enum Kind {
    Raw,
    Participant,
    External { label: String, command: Vec<String> },
}

/// The relay processes of `--external LABEL=COMMAND ARGS...` options.
pub fn externals(specs: &[String]) -> Vec<Kind> {
    specs
        .iter()
        .map(|e| {
            let (label, cmd) = e.split_once('=').expect("--external LABEL=COMMAND");
            Kind::External { label: label.to_owned(), command: cmd.split_whitespace().map(str::to_owned).collect() }
        })
        .collect()
}

pub fn unique(p: &str) -> String {
    format!("bench-{p}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Start a relay process (`command` + the role, `MSGFLO_BROKER` set) and
/// wait for its readiness line (the first on stdout).
pub async fn spawn_external(command: &[String], role: &str, broker: &str) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .arg(role)
        .env("MSGFLO_BROKER", broker)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    match tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await {
        Ok(Ok(Some(_))) => {}
        other => panic!("{command:?} printed no readiness line: {other:?}"),
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// An inport queue as a participant declares it (durable, dead-letter
/// exchange `dead-QUEUE`), so that relays find it as they expect.
pub async fn declare_inport(ch: &lapin::Channel, q: &str) {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(format!("dead-{q}").into()));
    ch.queue_declare(q.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args).await.unwrap();
}

/// The AMQP baseline: lapin used directly, with a participant's settings
/// (prefetch, publisher confirms, persistent, ack after the confirm).
pub async fn raw_amqp_relay(url: &str, in_q: &str, out_x: &str, prefetch: u16) {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch_in = conn.create_channel().await.unwrap();
    ch_in.basic_qos(prefetch, Default::default()).await.unwrap();
    let ch_out = conn.create_channel().await.unwrap();
    ch_out.confirm_select(Default::default()).await.unwrap();
    let mut consumer = ch_in.basic_consume(in_q.into(), "".into(), Default::default(), FieldTable::default()).await.unwrap();
    while let Some(Ok(d)) = consumer.next().await {
        let confirm = ch_out
            .basic_publish(out_x.into(), "".into(), Default::default(), &d.data, BasicProperties::default().with_delivery_mode(2))
            .await
            .unwrap();
        let ch = ch_in.clone();
        tokio::spawn(async move {
            if confirm.await.map(|c| c.is_ack()).unwrap_or(false) {
                let _ = ch.basic_ack(d.delivery_tag, Default::default()).await;
            }
        });
    }
    drop(conn);
}

pub fn mqtt_client(url: &str, cap: usize) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let u = url::Url::parse(url).unwrap();
    let mut o = rumqttc::MqttOptions::new(unique("c"), u.host_str().unwrap(), u.port().unwrap_or(1883));
    o.set_keep_alive(Duration::from_secs(30));
    rumqttc::AsyncClient::new(o, cap)
}

/// Poll an event loop forever, sending incoming publishes' payloads to `tx`.
pub fn spawn_loop(mut el: rumqttc::EventLoop, tx: tokio::sync::mpsc::Sender<Vec<u8>>, subacked: tokio::sync::oneshot::Sender<()>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut subacked = Some(subacked);
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if tx.send(p.payload.to_vec()).await.is_err() {
                        return;
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(s) = subacked.take() {
                        let _ = s.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("mqtt: {e}"),
            }
        }
    })
}

/// A client subscribed to `topic` at `qos`, returned once its SUBACK came:
/// the client, the payloads that arrive (`channel` of them may wait), and
/// the task polling its event loop.
pub async fn mqtt_subscriber(url: &str, topic: &str, cap: usize, channel: usize, qos: rumqttc::QoS) -> (rumqttc::AsyncClient, tokio::sync::mpsc::Receiver<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (client, el) = mqtt_client(url, cap);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(channel);
    let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
    let task = spawn_loop(el, tx, ack_tx);
    client.subscribe(topic, qos).await.unwrap();
    ack_rx.await.unwrap();
    (client, rx, task)
}

/// A client that only publishes, and the task polling its event loop.
pub fn mqtt_publisher(url: &str, cap: usize) -> (rumqttc::AsyncClient, tokio::task::JoinHandle<()>) {
    let (client, el) = mqtt_client(url, cap);
    let (tx, _) = tokio::sync::mpsc::channel(1);
    let (subacked, _) = tokio::sync::oneshot::channel();
    (client, spawn_loop(el, tx, subacked))
}

/// The MQTT baseline: rumqttc used directly, `qos` in and out (QoS 1:
/// rumqttc acknowledges each input when it arrives). Returns once
/// subscribed.
pub async fn raw_mqtt_relay(url: &str, in_t: &str, out_t: &str, qos: rumqttc::QoS) -> tokio::task::JoinHandle<()> {
    let (client, mut rx, el_task) = mqtt_subscriber(url, in_t, 1024, 256, qos).await;
    let out_t = out_t.to_owned();
    tokio::spawn(async move {
        while let Some(body) = rx.recv().await {
            client.publish(&out_t, qos, false, body).await.unwrap();
        }
        el_task.abort();
    })
}
