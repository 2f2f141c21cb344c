//! Our extension, protocol `msgflo`: what the live view shows beyond the
//! standard protocol. `msgflo:subscribe {graph}` answers with a
//! `msgflo:status` frame at once, and the server sends a new one whenever
//! the picture changes (at most every 500 ms):
//!
//! `{graph, ide, broker, roles: [{role, component, alive, expected, status,
//! reason?, inports: [{id, queue}], outports: [...]}], edges: [{src, tgt,
//! kind, state, reason?, depth?}], iips: [{tgt, data, sent}]}`
//!
//! `status` is `alive`, `gone` (seen, none alive now), `missing` (never
//! seen) or `failed` (could not be started); `kind` is `pubsub`,
//! `roundrobin` or `deadletter`; `state` is `wired` or `pending`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{frame, typed, ClientId, Failure, Outcome, Runtime};
use crate::coordinator::wiring::{self, Pending, ROUND_ROBIN};
use crate::graph::PortRef;

#[derive(Debug, Deserialize)]
#[serde(tag = "command", content = "payload", rename_all = "lowercase")]
pub enum Request {
    Subscribe { graph: Option<String> },
    Unsubscribe {},
}

pub(super) fn handle(rt: &mut Runtime, client: ClientId, command: &str, payload: Value, out: &mut Outcome) -> Result<(), Failure> {
    match typed::<Request>(command, payload)? {
        Request::Subscribe { graph } => {
            let id = graph.unwrap_or_else(|| rt.settings.main_graph.clone());
            rt.graph_ref(Some(&id))?;
            rt.status_clients.insert(client, id.clone());
            out.reply.push(build(rt, &id));
        }
        Request::Unsubscribe {} => {
            rt.status_clients.remove(&client);
            out.reply.push(frame("msgflo", "unsubscribe", json!({})));
        }
    }
    Ok(())
}

fn end(p: &PortRef) -> Value {
    json!({"node": p.process, "port": p.port})
}

fn edge_text(s: &PortRef, t: &PortRef) -> String {
    format!("{}.{} -> {}.{}", s.process, s.port, t.process, t.port)
}

/// The `msgflo:status` frame for graph `id`.
pub fn build(rt: &Runtime, id: &str) -> Value {
    let Some(g) = rt.graphs.get(id) else {
        return frame("msgflo", "error", json!({"message": "Requested graph not found"}));
    };
    let host = rt.host();
    let snap = host.snapshot();
    let depths = host.depths();
    let running = g.started.is_some();
    let roles: Vec<Value> = g
        .graph
        .processes
        .iter()
        .filter(|(_, p)| p.component != ROUND_ROBIN)
        .map(|(name, p)| {
            let seen = snap.participants.iter().find(|s| s.role == *name);
            let failed = snap.not_started.iter().find(|(r, _)| r == name);
            let alive = seen.map(|s| s.alive).unwrap_or(0);
            let launched = snap.expected.get(name).copied();
            let (status, reason) = match (seen, failed) {
                (Some(s), _) if s.alive > 0 => ("alive", None),
                (_, Some((_, why))) if running => ("failed", Some(why.clone())),
                (Some(_), _) => ("gone", Some("its process ended, or no discovery message within the expiry".to_owned())),
                (None, _) if running && launched.is_some_and(|n| n > 0) => ("starting", Some("started, not announced yet".to_owned())),
                (None, _) => ("missing", Some(if running { "not discovered yet" } else { "graph not started" }.to_owned())),
            };
            let ports = |ps: Option<&Vec<crate::coordinator::registry::PortStatus>>| -> Vec<Value> {
                ps.map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let mut v = json!({"id": p.id});
                            if let Some(q) = &p.queue {
                                v["queue"] = json!(q);
                            }
                            v
                        })
                        .collect()
                })
                .unwrap_or_default()
            };
            let mut v = json!({
                "role": name,
                "component": p.component,
                "alive": alive,
                "expected": if running { launched.unwrap_or(1) } else { 0 },
                "status": status,
                "inports": ports(seen.map(|s| &s.inports)),
                "outports": ports(seen.map(|s| &s.outports)),
            });
            if let Some(r) = reason {
                v["reason"] = json!(r);
            }
            if let Some(icon) = p.metadata.get("icon").cloned().or_else(|| seen.and_then(|s| s.icon.clone()).map(Value::from)) {
                v["icon"] = icon;
            }
            if let Some(label) = p.metadata.get("label").cloned().or_else(|| seen.and_then(|s| s.label.clone()).map(Value::from)) {
                v["label"] = label;
            }
            v
        })
        .collect();
    let mut edges = Vec::new();
    for c in &g.graph.connections {
        let Some(s) = &c.src else { continue };
        let text = edge_text(s, &c.tgt);
        let via_rr = !wiring::is_participant(&g.graph, &s.process) || !wiring::is_participant(&g.graph, &c.tgt.process);
        let kind = if s.port.eq_ignore_ascii_case("deadletter") && via_rr {
            "deadletter"
        } else if via_rr {
            "roundrobin"
        } else {
            "pubsub"
        };
        let wired = snap.wires.iter().find(|w| w.edges.iter().any(|e| *e == text || e.starts_with(&format!("{}.{} -> ", s.process, s.port)) && e.ends_with(&format!(" -> {}.{}", c.tgt.process, c.tgt.port))));
        let pending = snap.pending.iter().find(|(e, _)| *e == text);
        let mut v = json!({"src": end(s), "tgt": end(&c.tgt), "kind": kind});
        match (wired, pending) {
            (Some(w), _) if w.error.is_none() => {
                v["state"] = json!("wired");
            }
            (Some(w), _) => {
                v["state"] = json!("pending");
                v["reason"] = json!(w.error.clone().unwrap_or_default());
            }
            (None, Some((_, why))) => {
                v["state"] = json!("pending");
                v["reason"] = json!(match why {
                    Pending::Waiting { role } => format!("waiting for participant {role}"),
                    Pending::Invalid { reason } => reason.clone(),
                });
            }
            (None, None) => {
                v["state"] = json!("pending");
                v["reason"] = json!(if running { "not resolved yet" } else { "graph not started" });
            }
        }
        let tq = snap.participants.iter().find(|p| p.role == c.tgt.process).and_then(|p| p.inports.iter().find(|i| i.id.eq_ignore_ascii_case(&c.tgt.port))).and_then(|i| i.queue.clone());
        if let Some(d) = tq.and_then(|q| depths.get(&q).copied()) {
            v["depth"] = json!(d);
        }
        if let Some(r) = rt.rate(&s.process, &s.port) {
            v["rate"] = json!((r * 10.0).round() / 10.0);
        }
        edges.push(v);
    }
    let iips: Vec<Value> = g
        .graph
        .connections
        .iter()
        .filter(|c| c.src.is_none())
        .map(|c| {
            let key = format!("{}.{}", c.tgt.process, c.tgt.port);
            let sent = running && !snap.iips_pending.iter().any(|(t, _)| *t == key);
            json!({"tgt": end(&c.tgt), "data": c.data.clone().unwrap_or(Value::Null), "sent": sent})
        })
        .collect();
    frame(
        "msgflo",
        "status",
        json!({"graph": id, "ide": rt.settings.ide, "broker": rt.settings.broker, "running": running, "roles": roles, "edges": edges, "iips": iips}),
    )
}
