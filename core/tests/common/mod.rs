//! Helpers for tests against real brokers. The checks talk to the broker
//! with plain lapin / rumqttc, not through the code under test.
#![allow(dead_code)]

pub mod brokers;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

pub fn amqp_url() -> String {
    std::env::var("MSGFLO_TEST_AMQP").unwrap_or_else(|_| "amqp://127.0.0.1:5672".into())
}

pub fn mqtt_url() -> String {
    std::env::var("MSGFLO_TEST_MQTT").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// A name no other test (or run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn repeat_def() -> msgflo::Definition {
    msgflo::Definition::new("Repeat").inport(msgflo::PortDef::new("in")).outport(msgflo::PortDef::new("out"))
}

/// A Repeat participant serving in the background.
pub async fn start_repeat(
    role: &str,
    opts: msgflo::Options,
) -> (msgflo::Participant, tokio::task::JoinHandle<msgflo::Result<()>>) {
    let p = msgflo::Participant::start(&repeat_def(), role, opts).await.unwrap();
    let p2 = p.clone();
    let h = tokio::spawn(async move { p2.serve(|m| async move { Ok(vec![("out".to_string(), m.payload)]) }).await });
    (p, h)
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "msgflo=debug".into()))
        .try_init();
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain lapin connection for arranging and checking broker state.
pub struct Raw {
    pub conn: Connection,
    pub ch: Channel,
}

impl Raw {
    pub async fn connect() -> Raw {
        Self::connect_to(&amqp_url()).await
    }

    pub async fn connect_to(url: &str) -> Raw {
        let conn = Connection::connect(url, ConnectionProperties::default()).await.expect("raw amqp connect");
        let ch = conn.create_channel().await.unwrap();
        Raw { conn, ch }
    }

    /// A fresh channel (a failed declaration closes the one it was made on).
    pub async fn channel(&self) -> Channel {
        self.conn.create_channel().await.unwrap()
    }

    /// A queue that collects everything published to `exchange`; deleted with the connection.
    pub async fn tap(&self, exchange: &str) -> String {
        let q = unique("tap");
        self.ch
            .queue_declare(q.as_str().into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        self.ch
            .exchange_declare(exchange.into(), ExchangeKind::Fanout, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        self.ch.queue_bind(q.as_str().into(), exchange.into(), "".into(), Default::default(), FieldTable::default()).await.unwrap();
        q
    }

    /// Publish persistently to a queue via the default exchange.
    pub async fn send_to_queue(&self, queue: &str, body: &[u8]) {
        self.ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, BasicProperties::default().with_delivery_mode(2))
            .await
            .unwrap();
    }

    pub async fn try_get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        self.ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap()
    }

    /// Wait for one message on `queue`.
    pub async fn get(&self, queue: &str, timeout: Duration) -> lapin::message::BasicGetMessage {
        eventually(&format!("a message on {queue}"), timeout, || self.try_get(queue)).await
    }

    pub async fn depth(&self, queue: &str) -> u32 {
        let ch = self.channel().await;
        let q = ch
            .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        q.message_count()
    }

    /// Remove what a participant with inport/outport queues declared.
    pub async fn cleanup(&self, queues: &[&str], exchanges: &[&str]) {
        for q in queues {
            let _ = self.ch.queue_delete((*q).into(), Default::default()).await;
        }
        for x in exchanges {
            let _ = self.ch.exchange_delete((*x).into(), Default::default()).await;
        }
    }
}

pub fn dead_letter_args(queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(format!("dead-{queue}").into()));
    args
}

/// Every discovery message seen on RabbitMQ's `fbp` queue by this test
/// binary. One consumer per process, so parallel tests do not steal each
/// other's discovery messages.
pub struct DiscoveryTap {
    seen: Mutex<Vec<serde_json::Value>>,
}

impl DiscoveryTap {
    pub fn amqp() -> &'static DiscoveryTap {
        static TAP: OnceLock<&'static DiscoveryTap> = OnceLock::new();
        TAP.get_or_init(|| {
            let tap: &'static DiscoveryTap = Box::leak(Box::new(DiscoveryTap { seen: Mutex::new(Vec::new()) }));
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    use futures_util::StreamExt;
                    let raw = Raw::connect().await;
                    raw.ch
                        .queue_declare("fbp".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
                        .await
                        .unwrap();
                    let mut consumer = raw
                        .ch
                        .basic_consume("fbp".into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
                        .await
                        .unwrap();
                    ready_tx.send(()).unwrap();
                    while let Some(Ok(d)) = consumer.next().await {
                        if let Ok(v) = serde_json::from_slice(&d.data) {
                            tap.seen.lock().unwrap().push(v);
                        }
                    }
                });
            });
            ready_rx.recv().unwrap();
            tap
        })
    }

    /// Discovery payloads seen so far for `role`.
    pub fn for_role(&self, role: &str) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().iter().filter(|m| m["payload"]["role"] == role).cloned().collect()
    }

    pub async fn wait(&self, role: &str, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        eventually(&format!("{count} discovery messages of {role}"), timeout, || async {
            let v = self.for_role(role);
            (v.len() >= count).then_some(v)
        })
        .await
    }
}

/// A plain rumqttc client for MQTT checks: subscribe, publish, receive.
pub struct RawMqtt {
    pub client: rumqttc::AsyncClient,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl RawMqtt {
    pub async fn connect(topics: &[&str]) -> RawMqtt {
        Self::connect_to(&mqtt_url(), topics).await
    }

    pub async fn connect_to(url: &str, topics: &[&str]) -> RawMqtt {
        let url = url::Url::parse(url).unwrap();
        let mut o = rumqttc::MqttOptions::new(unique("raw"), url.host_str().unwrap(), url.port().unwrap_or(1883));
        o.set_max_packet_size(64 << 20, 64 << 20);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for t in topics {
            client.subscribe(*t, rumqttc::QoS::AtMostOnce).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), sub_rx.recv()).await.expect("suback");
        }
        RawMqtt { client, rx }
    }

    pub async fn publish(&self, topic: &str, body: &[u8]) {
        self.client.publish(topic, rumqttc::QoS::AtMostOnce, false, body.to_vec()).await.unwrap();
    }

    /// Next message on `topic`, skipping others.
    pub async fn next_on(&mut self, topic: &str, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((t, body))) if t == topic => return body,
                Ok(Some(_)) => continue,
                _ => panic!("no message on {topic} within {timeout:?}"),
            }
        }
    }
}

/// Everything published on outport `outqueue` from now on, through our own
/// transport: AMQP, a transient queue bound to the outport's exchange
/// (declared first: its participant may start later); MQTT, the topic.
pub async fn tap_outport(
    url: &str,
    outqueue: &str,
) -> (std::sync::Arc<dyn msgflo::Transport>, tokio::sync::mpsc::Receiver<msgflo::Delivery>) {
    use msgflo::transport::{self, Declaration, PortKind};
    let t = transport::connect(url, &transport::ConnectOptions::default()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    if url.starts_with("amqp") {
        t.declare(&Declaration { kind: PortKind::Out, queue: outqueue.into(), persistent: true }).await.unwrap();
        let q = unique("tap");
        t.declare(&Declaration { kind: PortKind::In, queue: q.clone(), persistent: false }).await.unwrap();
        t.bind(outqueue, &q).await.unwrap();
        t.subscribe(&q, std::sync::Arc::from("tap"), tx).await.unwrap();
    } else {
        t.subscribe(outqueue, std::sync::Arc::from("tap"), tx).await.unwrap();
    }
    (t, rx)
}

/// The next message from a tap (acked), or panic after `timeout`.
pub async fn next_payload(rx: &mut tokio::sync::mpsc::Receiver<msgflo::Delivery>, timeout: Duration) -> Vec<u8> {
    let d = tokio::time::timeout(timeout, rx.recv()).await.expect("a message on the tap").expect("tap open");
    d.ack().unwrap();
    d.payload().as_bytes().to_vec()
}

/// The folder of the example binaries, building the named ones if they are
/// missing. `cargo test` builds examples; `cargo test --test X` does not.
/// Never rebuilt when present: a `cargo build -p msgflo` from inside a
/// test unifies features differently from the workspace build and would
/// recompile half the dependency tree, back and forth.
pub fn examples(names: &[&str]) -> std::path::PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let missing: Vec<&str> = names.iter().copied().filter(|n| !dir.join(n).exists()).collect();
    if !missing.is_empty() {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "msgflo"]);
        for m in &missing {
            cmd.args(["--example", m]);
        }
        assert!(cmd.status().unwrap().success(), "building the examples {missing:?}");
    }
    dir
}
