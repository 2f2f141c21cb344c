//! The dispatcher without a socket or a broker: a recording host.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::*;

#[derive(Default)]
struct Record {
    snapshot: crate::coordinator::Snapshot,
    depths: std::collections::BTreeMap<String, u64>,
    graphs: Vec<Graph>,
    delivered: Vec<(String, String, Vec<u8>)>,
    taps: Vec<BTreeSet<(String, String)>>,
}

struct Fake(Arc<Mutex<Record>>);

/// Component sources the fake host keeps.
static SOURCES: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

impl Host for Fake {
    fn set_graph(&self, graph: Graph) -> Result<(), String> {
        self.0.lock().unwrap().graphs.push(graph);
        Ok(())
    }
    fn deliver(&self, role: &str, port: &str, payload: Payload) -> Result<(), String> {
        self.0.lock().unwrap().delivered.push((role.into(), port.into(), payload.as_bytes().to_vec()));
        Ok(())
    }
    fn tap(&self, outports: BTreeSet<(String, String)>) {
        self.0.lock().unwrap().taps.push(outports);
    }
    fn components(&self, _: &Graph) -> Vec<ComponentInfo> {
        vec![ComponentInfo { name: "C/Repeat".into(), inports: vec![("in".into(), String::new())], outports: vec![("out".into(), String::new())], ..Default::default() }]
    }
    fn busy(&self, _: &[String]) -> bool {
        false
    }
    fn snapshot(&self) -> crate::coordinator::Snapshot {
        self.0.lock().unwrap().snapshot.clone()
    }
    fn depths(&self) -> std::collections::BTreeMap<String, u64> {
        self.0.lock().unwrap().depths.clone()
    }
    fn component_source(&self, name: &str) -> Result<(String, String), String> {
        SOURCES.lock().unwrap().iter().rev().find(|(n, _, _)| n == name).map(|(_, l, c)| (l.clone(), c.clone())).ok_or_else(|| "no such file".into())
    }
    fn write_component(&self, name: &str, language: &str, code: &str) -> Result<(), String> {
        if name.contains("..") {
            return Err("not a plain name".into());
        }
        SOURCES.lock().unwrap().push((name.into(), language.into(), code.into()));
        Ok(())
    }
}

fn runtime(secret: Option<&str>) -> (Runtime, Arc<Mutex<Record>>) {
    runtime_in(secret, None)
}

fn runtime_in(secret: Option<&str>, namespace: Option<&str>) -> (Runtime, Arc<Mutex<Record>>) {
    let rec = Arc::new(Mutex::new(Record::default()));
    let settings = Settings { id: "id".into(), label: "test".into(), secret: secret.map(str::to_owned), main_graph: "main".into(), ide: "https://ide.invalid".into(), broker: "mqtt://x".into(), namespace: namespace.map(str::to_owned) };
    (Runtime::new(settings, Graph::default(), Box::new(Fake(rec.clone()))), rec)
}

fn ask(rt: &mut Runtime, protocol: &str, command: &str, payload: Value) -> Vec<Value> {
    rt.handle(1, &json!({"protocol": protocol, "command": command, "payload": payload}).to_string()).reply
}

#[test]
fn getruntime_reports_capabilities_and_never_null() {
    let (mut rt, _) = runtime(None);
    let r = ask(&mut rt, "runtime", "getruntime", json!({}));
    assert_eq!(r.len(), 2, "runtime, then the main graph's ports: {r:?}");
    assert_eq!(r[0]["command"], "runtime");
    assert_eq!(r[1]["command"], "ports");
    assert_eq!(r[1]["payload"], json!({"graph": "main", "inPorts": [], "outPorts": []}));
    assert!(r[0]["payload"]["capabilities"].as_array().unwrap().iter().any(|c| c == "protocol:graph"));
    assert_eq!(r[0]["payload"]["graph"], "main");
    assert!(!r[0].to_string().contains("null"));
}

#[test]
fn the_secret_is_needed_and_never_echoed() {
    let (mut rt, _) = runtime(Some("s3cret"));
    let r = ask(&mut rt, "runtime", "getruntime", json!({}));
    assert_eq!(r[0]["payload"]["capabilities"], json!([]));
    let r = ask(&mut rt, "graph", "clear", json!({"id": "g"}));
    assert_eq!(r[0]["command"], "error");
    assert!(r[0]["payload"]["message"].as_str().unwrap().contains("not permitted"));
    let r = ask(&mut rt, "graph", "clear", json!({"id": "g", "secret": "s3cret"}));
    assert_eq!(r[0]["command"], "clear");
    assert!(!r[0].to_string().contains("s3cret"));
}

#[test]
fn request_ids_come_back_and_garbage_gets_errors() {
    let (mut rt, _) = runtime(None);
    let o = rt.handle(1, r#"{"protocol":"graph","command":"clear","payload":{"id":"g"},"requestId":"r1"}"#);
    assert_eq!(o.reply[0]["responseTo"], "r1");
    for garbage in ["", "nope", "[1,2]", "42", r#"{"protocol":"graph"}"#, r#"{"protocol":"graph","command":"addnode","payload":[1]}"#, r#"{"protocol":"x","command":"y","payload":{}}"#, r#"{"protocol":"graph","command":"fly","payload":{}}"#] {
        let o = rt.handle(1, garbage);
        assert_eq!(o.reply.len(), 1, "{garbage}");
        assert_eq!(o.reply[0]["command"], "error", "{garbage}: {:?}", o.reply);
    }
    let big = format!(r#"{{"protocol":"graph","command":"clear","payload":{{"id":"{}"}}}}"#, "x".repeat(MAX_FRAME));
    assert_eq!(rt.handle(1, &big).reply[0]["command"], "error");
}

#[test]
fn graph_edits_follow_fbp_test() {
    let (mut rt, _) = runtime(None);
    let r = ask(&mut rt, "graph", "clear", json!({"id": "foo", "main": true, "name": "Foo graph", "baseDir": "/x"}));
    assert_eq!(r[0]["payload"], json!({"id": "foo", "main": true, "name": "Foo graph"}));
    ask(&mut rt, "graph", "addnode", json!({"id": "R", "component": "C/Repeat", "metadata": {"hello": "World"}, "graph": "foo"}));
    ask(&mut rt, "graph", "addnode", json!({"id": "D", "component": "C/Drop", "graph": "foo"}));
    let r = ask(&mut rt, "graph", "addedge", json!({"src": {"node": "R", "port": "out"}, "tgt": {"node": "D", "port": "in"}, "metadata": {"route": 5}, "graph": "foo"}));
    assert_eq!(r[0]["payload"]["metadata"], json!({"route": 5}));
    for (m, want) in [(json!({"sort": 1}), json!({"sort": 1})), (json!({"tag": "a"}), json!({"sort": 1, "tag": "a"})), (json!({}), json!({"sort": 1, "tag": "a"})), (json!({"sort": null, "tag": null}), json!({}))] {
        let r = ask(&mut rt, "graph", "changenode", json!({"id": "D", "metadata": m, "graph": "foo"}));
        assert_eq!(r[0]["payload"], json!({"id": "D", "metadata": want, "graph": "foo"}));
    }
    ask(&mut rt, "graph", "addinitial", json!({"src": {"data": "hi"}, "tgt": {"node": "R", "port": "in"}, "graph": "foo"}));
    let r = ask(&mut rt, "graph", "removenode", json!({"id": "D", "graph": "foo"}));
    assert_eq!(r.iter().map(|f| f["command"].as_str().unwrap()).collect::<Vec<_>>(), ["removeedge", "removenode"]);
    assert_eq!(r[0]["payload"], json!({"src": {"node": "R", "port": "out"}, "tgt": {"node": "D", "port": "in"}, "graph": "foo"}));
    let r = ask(&mut rt, "graph", "removeinitial", json!({"tgt": {"node": "R", "port": "in"}, "graph": "foo"}));
    assert_eq!(r[0]["payload"], json!({"src": {"data": "hi"}, "tgt": {"node": "R", "port": "in"}, "graph": "foo"}));
    let r = ask(&mut rt, "graph", "addnode", json!({"id": "R", "component": "C/Repeat", "graph": "nope"}));
    assert_eq!(r[0]["payload"], json!({"message": "Requested graph not found"}));
    let r = ask(&mut rt, "graph", "addnode", json!({"id": "R", "component": "C/Repeat"}));
    assert_eq!(r[0]["payload"], json!({"message": "No graph specified"}));
    let r = ask(&mut rt, "graph", "renamenode", json!({"from": "R", "to": "R2", "graph": "foo"}));
    assert_eq!(r[0]["payload"], json!({"from": "R", "to": "R2", "graph": "foo"}));
    let r = ask(&mut rt, "graph", "addoutport", json!({"public": "out", "node": "R2", "port": "out", "graph": "foo"}));
    assert_eq!(r[0]["payload"], json!({"public": "out", "node": "R2", "port": "out", "graph": "foo"}));
    let r = ask(&mut rt, "graph", "removeoutport", json!({"public": "out", "graph": "foo"}));
    assert_eq!(r[0]["payload"], json!({"public": "out", "graph": "foo"}));
}

#[test]
fn starting_runs_the_graph_and_edits_reach_it() {
    let (mut rt, rec) = runtime(None);
    rt.connect(1);
    ask(&mut rt, "graph", "clear", json!({"id": "bar"}));
    ask(&mut rt, "graph", "addnode", json!({"id": "H", "component": "C/Repeat", "graph": "bar"}));
    let before = rec.lock().unwrap().graphs.len();
    let r = ask(&mut rt, "network", "start", json!({"graph": "bar"}));
    assert_eq!(r[0]["command"], "started");
    let last = rec.lock().unwrap().graphs.last().cloned().unwrap();
    assert!(last.processes.contains_key("H"));
    assert!(rec.lock().unwrap().graphs.len() > before);
    ask(&mut rt, "graph", "addnode", json!({"id": "W", "component": "C/Drop", "graph": "bar"}));
    ask(&mut rt, "graph", "addedge", json!({"src": {"node": "H", "port": "out"}, "tgt": {"node": "W", "port": "in"}, "graph": "bar"}));
    assert!(rec.lock().unwrap().graphs.last().unwrap().processes.contains_key("W"));
    // Every edge of a running graph is watched by a client without a selection.
    assert!(rec.lock().unwrap().taps.last().unwrap().contains(&("H".to_string(), "out".to_string())));
    let r = ask(&mut rt, "network", "getstatus", json!({"graph": "bar"}));
    assert_eq!(r[0]["payload"], json!({"graph": "bar", "running": false, "started": true}));
    let ev = crate::coordinator::Event::Data { role: "H".into(), port: "out".into(), payload: Payload::from("\"x\"") };
    let frames = rt.on_event(&ev);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1["payload"]["id"], "H() OUT -> IN W()");
    assert_eq!(frames[0].1["payload"]["data"], "x");
    let r = ask(&mut rt, "network", "stop", json!({"graph": "bar"}));
    assert_eq!(r[0]["payload"]["started"], false);
    assert!(!rec.lock().unwrap().graphs.last().unwrap().processes.contains_key("H"));
    let r = ask(&mut rt, "network", "getstatus", json!({"graph": "bar"}));
    assert_eq!(r[0]["payload"], json!({"graph": "bar", "running": false, "started": false}));
}

#[test]
fn a_packet_to_an_exported_port_is_delivered() {
    let (mut rt, rec) = runtime(None);
    ask(&mut rt, "graph", "clear", json!({"id": "f"}));
    ask(&mut rt, "graph", "addnode", json!({"id": "a", "component": "C/Repeat", "graph": "f"}));
    ask(&mut rt, "graph", "addinport", json!({"public": "in", "node": "a", "port": "in", "graph": "f"}));
    let r = ask(&mut rt, "runtime", "packet", json!({"port": "in", "event": "data", "payload": {"x": 1}, "graph": "f"}));
    assert_eq!(r[0]["command"], "error", "not started yet");
    ask(&mut rt, "network", "start", json!({"graph": "f"}));
    let r = ask(&mut rt, "runtime", "packet", json!({"port": "in", "event": "data", "payload": {"x": 1}, "graph": "f"}));
    assert_eq!(r[0]["command"], "packetsent");
    assert_eq!(rec.lock().unwrap().delivered, vec![("a".to_string(), "in".to_string(), br#"{"x":1}"#.to_vec())]);
}

#[test]
fn two_started_graphs_cannot_share_a_role() {
    let (mut rt, _) = runtime(None);
    for g in ["a", "b"] {
        ask(&mut rt, "graph", "clear", json!({"id": g}));
        ask(&mut rt, "graph", "addnode", json!({"id": "same", "component": "C/Repeat", "graph": g}));
    }
    assert_eq!(ask(&mut rt, "network", "start", json!({"graph": "a"}))[0]["command"], "started");
    let r = ask(&mut rt, "network", "start", json!({"graph": "b"}));
    assert_eq!(r[0]["command"], "error");
    let r = ask(&mut rt, "network", "getstatus", json!({"graph": "b"}));
    assert_eq!(r[0]["payload"]["started"], false);
}

#[test]
fn components_end_with_componentsready() {
    let (mut rt, _) = runtime(None);
    let r = ask(&mut rt, "component", "list", json!({}));
    assert_eq!(r.first().unwrap()["payload"]["name"], "C/Repeat");
    assert_eq!(r.last().unwrap()["command"], "componentsready");
    let r = ask(&mut rt, "component", "getsource", json!({"name": "main"}));
    let code: Value = serde_json::from_str(r[0]["payload"]["code"].as_str().unwrap()).unwrap();
    assert_eq!(code["properties"]["environment"]["type"], "msgflo");
}

#[test]
fn binary_data_is_base64() {
    assert_eq!(data_value(&Payload::from(&[0xffu8, 0, 1][..])), json!({"base64": "/wAB"}));
    assert_eq!(data_value(&Payload::from("plain")), json!("plain"));
}

#[test]
fn the_secret_counts_at_the_top_level_too() {
    let (mut rt, _) = runtime(Some("s3cret"));
    let o = rt.handle(1, r#"{"protocol":"graph","command":"clear","payload":{"id":"g"},"secret":"s3cret"}"#);
    assert_eq!(o.reply[0]["command"], "clear", "{:?}", o.reply);
    assert!(!o.reply[0].to_string().contains("s3cret"));
    let o = rt.handle(1, r#"{"protocol":"graph","command":"clear","payload":{"id":"h"},"secret":"wrong"}"#);
    assert_eq!(o.reply[0]["command"], "error");
    assert!(!rt.graphs.contains_key("h"), "a refused frame changes nothing");
}

#[test]
fn getruntime_names_the_namespace_and_can_set_sources() {
    let (mut rt, _) = runtime_in(None, Some("lib"));
    let r = ask(&mut rt, "runtime", "getruntime", json!({}));
    assert_eq!(r[0]["payload"]["namespace"], "lib");
    assert!(r[0]["payload"]["capabilities"].as_array().unwrap().iter().any(|c| c == "component:setsource"));
}

#[test]
fn exported_ports_changes_are_told_to_everybody() {
    let (mut rt, _) = runtime(None);
    ask(&mut rt, "graph", "clear", json!({"id": "f"}));
    ask(&mut rt, "graph", "addnode", json!({"id": "a", "component": "C/Repeat", "graph": "f"}));
    let o = rt.handle(1, &json!({"protocol": "graph", "command": "addinport", "payload": {"public": "in", "node": "a", "port": "IN", "graph": "f"}}).to_string());
    assert_eq!(o.reply.len(), 2);
    assert_eq!(o.reply[1]["command"], "ports");
    assert_eq!(o.reply[1]["payload"]["inPorts"][0]["id"], "in");
    assert_eq!(o.reply[1]["payload"]["graph"], "f");
    assert_eq!(o.others, o.reply);
    let o = rt.handle(1, &json!({"protocol": "graph", "command": "removeinport", "payload": {"public": "in", "graph": "f"}}).to_string());
    assert_eq!(o.reply[1]["payload"]["inPorts"], json!([]));
}

#[test]
fn groups_are_added_changed_renamed_and_removed() {
    let (mut rt, _) = runtime(None);
    ask(&mut rt, "graph", "clear", json!({"id": "g"}));
    assert_eq!(ask(&mut rt, "graph", "addgroup", json!({"name": "x", "nodes": [], "graph": "g"}))[0]["command"], "addgroup");
    assert_eq!(ask(&mut rt, "graph", "changegroup", json!({"name": "x", "metadata": {"a": 1}, "graph": "g"}))[0]["payload"]["metadata"], json!({"a": 1}));
    assert_eq!(ask(&mut rt, "graph", "renamegroup", json!({"from": "x", "to": "y", "graph": "g"}))[0]["command"], "renamegroup");
    let r = ask(&mut rt, "graph", "removegroup", json!({"name": "y", "graph": "g"}));
    assert_eq!(r[0]["command"], "removegroup", "{r:?}");
    assert_eq!(ask(&mut rt, "graph", "removegroup", json!({"name": "y", "graph": "g"}))[0]["command"], "error");
}

#[test]
fn component_sources_are_written_and_read() {
    let (mut rt, _) = runtime(None);
    let r = ask(&mut rt, "component", "source", json!({"name": "Shout", "language": "python", "library": "t", "code": "print(1)"}));
    assert_eq!(r[0]["command"], "component", "{r:?}");
    assert_eq!(r[0]["payload"]["name"], "t/Shout");
    let r = ask(&mut rt, "component", "getsource", json!({"name": "t/Shout"}));
    assert_eq!(r[0]["payload"], json!({"name": "Shout", "library": "t", "language": "python", "code": "print(1)"}));
    let r = ask(&mut rt, "component", "source", json!({"name": "../x", "language": "python", "code": ""}));
    assert_eq!(r[0]["command"], "error");
    let r = ask(&mut rt, "component", "getsource", json!({"name": "Nothing"}));
    assert_eq!(r[0]["command"], "error");
}

#[test]
fn a_participant_that_exits_is_a_processerror() {
    let (mut rt, _) = runtime(None);
    rt.connect(7);
    ask(&mut rt, "graph", "clear", json!({"id": "g"}));
    ask(&mut rt, "graph", "addnode", json!({"id": "a", "component": "C/Repeat", "graph": "g"}));
    ask(&mut rt, "network", "start", json!({"graph": "g"}));
    let frames = rt.on_event(&crate::coordinator::Event::Exited { role: "a".into(), participant: "a-1".into(), how: "exit code 3".into() });
    let cmds: Vec<_> = frames.iter().map(|(c, f)| (*c, f["command"].as_str().unwrap().to_owned())).collect();
    assert_eq!(cmds, [(7, "processerror".to_owned()), (7, "output".to_owned())]);
    assert_eq!(frames[0].1["payload"]["id"], "a");
    assert_eq!(frames[0].1["payload"]["graph"], "g");
    assert!(frames[0].1["payload"]["error"].as_str().unwrap().contains("exit code 3"));
}

#[test]
fn the_status_tells_edge_kinds_pending_reasons_depths_and_labels() {
    use crate::coordinator::registry::{PortStatus, RoleStatus};
    let (mut rt, rec) = runtime(None);
    let graph = "a(Repeat) OUT -> IN rr(msgflo/RoundRobin) OUT -> IN b(Repeat)\nrr DEADLETTER -> IN d(Drop)\nb OUT -> IN y(Repeat)\n";
    let g = crate::graph::fbp::parse(graph).unwrap();
    rt.graphs.get_mut("main").unwrap().graph = g;
    let port = |id: &str, q: &str| PortStatus { id: id.into(), type_: None, queue: Some(q.into()), depth: None, missing: false };
    {
        let mut r = rec.lock().unwrap();
        r.snapshot.participants.push(RoleStatus {
            role: "b".into(),
            component: "Repeat".into(),
            alive: 1,
            instances: 1,
            last_seen_secs: Some(1.0),
            heartbeats: 1,
            label: Some("Says it again".into()),
            icon: None,
            inports: vec![port("in", "b.IN")],
            outports: vec![port("out", "b.OUT")],
        });
        r.snapshot.pending.push(("b.out -> y.in".into(), crate::coordinator::wiring::Pending::Waiting { role: "y".into() }));
        r.depths.insert("b.IN".into(), 7);
    }
    let st = super::status::build(&rt, "main");
    let p = &st["payload"];
    let edge = |s: &str, t: &str| p["edges"].as_array().unwrap().iter().find(|e| e["src"]["node"] == s && e["tgt"]["node"] == t).cloned().unwrap_or_else(|| panic!("no edge {s} -> {t}: {p}"));
    assert_eq!(edge("a", "rr")["kind"], "roundrobin");
    assert_eq!(edge("rr", "b")["kind"], "roundrobin");
    assert_eq!(edge("rr", "b")["depth"], 7);
    assert_eq!(edge("rr", "d")["kind"], "deadletter");
    let by = edge("b", "y");
    assert_eq!(by["kind"], "pubsub");
    assert_eq!(by["state"], "pending");
    assert_eq!(by["reason"], "waiting for participant y");
    assert!(by.get("rate").is_none(), "no rate for an edge nobody watches");
    let roles = p["roles"].as_array().unwrap();
    assert!(roles.iter().all(|r| r["role"] != "rr"), "a round-robin node is an edge, not a role");
    let b = roles.iter().find(|r| r["role"] == "b").unwrap();
    assert_eq!((b["status"].as_str(), b["label"].as_str(), b["inports"][0]["queue"].as_str()), (Some("alive"), Some("Says it again"), Some("b.IN")));
    let y = roles.iter().find(|r| r["role"] == "y").unwrap();
    assert_eq!(y["status"], "missing");
}
