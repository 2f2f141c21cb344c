//! Interoperability with the original msgflo-nodejs 0.11.1 on the same
//! broker: both declare the same queues without a 406, and data flows both
//! ways between an original participant and ours.
//!
//! Needs `npm ci --prefix interop` (the test script does it). A missing
//! install is a failure, not a skip, unless MSGFLO_SKIP_INTEROP=1.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use msgflo::transport::{self, ConnectOptions, Declaration, PortKind};
use msgflo::{Definition, Options, Participant, PortDef};

const T: Duration = Duration::from_secs(20);

fn interop_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/node_modules/msgflo-nodejs");
    if dir.join("bin/msgflo-nodejs").exists() {
        return Some(dir);
    }
    if std::env::var("MSGFLO_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("skipping interop test: MSGFLO_SKIP_INTEROP=1");
        return None;
    }
    panic!("msgflo-nodejs is not installed: run `npm ci --prefix interop` (or set MSGFLO_SKIP_INTEROP=1)");
}

/// An original msgflo-nodejs Repeat participant, killed on drop.
struct NodeRepeat(Child);

impl NodeRepeat {
    fn start(dir: &std::path::Path, role: &str, broker: &str) -> NodeRepeat {
        let mut child = Command::new("node")
            .arg(dir.join("bin/msgflo-nodejs"))
            .args(["--name", role, "--broker", broker])
            .arg(dir.join("examples/Repeat.coffee"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is installed");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(T).expect("msgflo-nodejs printed its start line");
        assert!(line.contains(role), "{line}");
        NodeRepeat(child)
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for NodeRepeat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ours: `in` -> `out`, and `back` -> `done`.
fn relay_def(queues: Option<(&str, &str)>) -> Definition {
    let (mut out, mut back) = (PortDef::new("out"), PortDef::new("back"));
    if let Some((o, b)) = queues {
        out = out.with_queue(o);
        back = back.with_queue(b);
    }
    Definition::new("Relay").inport(PortDef::new("in")).inport(back).outport(out).outport(PortDef::new("done"))
}

fn serve_relay(p: &Participant) -> tokio::task::JoinHandle<msgflo::Result<()>> {
    let p = p.clone();
    tokio::spawn(async move {
        p.serve(|m| async move {
            let port = if &*m.inport == "in" { "out" } else { "done" };
            Ok(vec![(port.to_string(), m.payload)])
        })
        .await
    })
}

#[tokio::test]
async fn amqp_original_and_ours_share_a_broker() {
    init_logs();
    let Some(dir) = interop_dir() else { return };
    let url = amqp_url();
    let n = unique("orig");
    let r = unique("ours");
    let mut node = NodeRepeat::start(&dir, &n, &url);

    // Our declarations of the original's queues are identical: no 406.
    let t = transport::connect(&url, &ConnectOptions::default()).await.unwrap();
    for (kind, q) in [(PortKind::In, format!("{n}.IN")), (PortKind::Out, format!("{n}.OUT"))] {
        t.declare(&Declaration { kind, queue: q, persistent: true }).await.expect("same declaration as msgflo-nodejs");
    }
    t.close().await.unwrap();

    let p = Participant::start(&relay_def(None), &r, Options::broker(&url)).await.unwrap();
    let h = serve_relay(&p);
    let raw = Raw::connect().await;
    // ours.OUT -> orig.IN, orig.OUT -> ours.BACK (pubsub bindings)
    for (src, tgt) in [(format!("{r}.OUT"), format!("{n}.IN")), (format!("{n}.OUT"), format!("{r}.BACK"))] {
        raw.ch.queue_bind(tgt.as_str().into(), src.as_str().into(), "".into(), Default::default(), Default::default()).await.unwrap();
    }
    let done = raw.tap(&format!("{r}.DONE")).await;
    raw.send_to_queue(&format!("{r}.IN"), br#"{"hello":"world","n":[1,2]}"#).await;
    let got = raw.get(&done, T).await.delivery.data;
    let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(v, serde_json::json!({"hello":"world","n":[1,2]}));

    // The original declares our queues without a 406 (it would crash).
    let mut node2 = NodeRepeat::start(&dir, &r, &url);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node2.alive(), "msgflo-nodejs accepted our declarations");
    assert!(node.alive());
    drop(node2);
    drop(node); // before deleting its queues (it crashes on a cancelled consumer)

    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
    let (ri, rb, ni) = (format!("{r}.IN"), format!("{r}.BACK"), format!("{n}.IN"));
    raw.cleanup(
        &[&ri, &rb, &ni],
        &[&ri, &rb, &ni, &format!("{r}.OUT"), &format!("{r}.DONE"), &format!("{n}.OUT")],
    )
    .await;
}

#[tokio::test]
async fn mqtt_original_and_ours_exchange_data() {
    init_logs();
    let Some(dir) = interop_dir() else { return };
    let url = mqtt_url();
    let n = unique("morig");
    let r = unique("mours");
    let _node = NodeRepeat::start(&dir, &n, &url);
    // MQTT cannot bind topics: wire by naming the original's topics.
    let (n_in, n_out) = (format!("{n}.IN"), format!("{n}.OUT"));
    let p = Participant::start(&relay_def(Some((&n_in, &n_out))), &r, Options::broker(&url)).await.unwrap();
    let h = serve_relay(&p);
    let done = format!("{r}.DONE");
    let mut raw = RawMqtt::connect(&[&done]).await;
    raw.publish(&format!("{r}.IN"), br#"{"temperature":22.3}"#).await;
    let v: serde_json::Value = serde_json::from_slice(&raw.next_on(&done, T).await).unwrap();
    assert_eq!(v, serde_json::json!({"temperature":22.3}));
    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
}

/// Our coordinator discovers original msgflo-nodejs participants (their
/// discovery on the shared `fbp` queue or topic), wires them as a graph
/// (original -> original, and original -> ours), and sends an IIP.
async fn our_coordinator_wires_original_participants(url: &str) {
    use msgflo::coordinator::{Coordinator, Options as CoordinatorOptions};
    use msgflo::transport::Target;
    init_logs();
    let Some(dir) = interop_dir() else { return };
    let (a, b, r) = (unique("origa"), unique("origb"), unique("oursc"));
    let graph = msgflo::graph::fbp::parse(&format!(
        "'{{\"iip\":true}}' -> IN {a}(Repeat)\n{a} OUT -> IN {b}(Repeat)\n{b} OUT -> IN {r}(Relay)"
    ))
    .unwrap();
    let t = transport::connect(url, &ConnectOptions::default()).await.unwrap();
    let c = Coordinator::start(t.clone(), url, CoordinatorOptions::new(graph)).await.unwrap();
    // Ours at the end of the chain; a collector on its `out`.
    let p = Participant::start(&relay_def(None), &r, Options::broker(url)).await.unwrap();
    let (_tap, mut rx) = tap_outport(url, &format!("{r}.OUT")).await;
    async fn next(rx: &mut tokio::sync::mpsc::Receiver<msgflo::Delivery>) -> serde_json::Value {
        serde_json::from_slice(&next_payload(rx, T).await).unwrap()
    }
    let h = serve_relay(&p);
    let mut na = NodeRepeat::start(&dir, &a, url);
    let mut nb = NodeRepeat::start(&dir, &b, url);
    let s = c.wait_for(T, |s| s.complete).await.expect("graph of original participants wired");
    assert_eq!(s.wires.len(), 2, "{s:?}");
    assert_eq!(s.iips_sent, 1);
    assert_eq!(next(&mut rx).await, serde_json::json!({"iip": true}));
    t.publish(Target::Queue(format!("{a}.IN")), msgflo::Payload::from("{\"n\":[1,2,3]}"), true).await.unwrap();
    assert_eq!(next(&mut rx).await, serde_json::json!({"n": [1, 2, 3]}));
    assert!(na.alive() && nb.alive());
    c.stop().await;
    p.stop().await.unwrap();
    h.await.unwrap().unwrap();
    drop((na, nb));
    if url.starts_with("amqp") {
        for role in [&a, &b, &r] {
            for port in ["IN", "OUT", "BACK", "DONE"] {
                let _ = t.delete(&format!("{role}.{port}")).await;
            }
        }
    }
    t.close().await.unwrap();
}

#[tokio::test]
async fn amqp_our_coordinator_wires_original_participants() {
    our_coordinator_wires_original_participants(&amqp_url()).await;
}

#[tokio::test]
async fn mqtt_our_coordinator_wires_original_participants() {
    our_coordinator_wires_original_participants(&mqtt_url()).await;
}
