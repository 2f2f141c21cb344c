//! From a graph and what discovery told us to the broker objects that make
//! its edges: pure functions, so every rule is unit-tested without a broker.
//!
//! Queue names come from discovery (a participant chooses its own), never
//! guessed: an edge whose ends are not both known yet is *pending*, and is
//! wired the moment the missing participant appears.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::registry::Registry;
pub use crate::edge::Wire;
use crate::graph::{Connection, Graph, PortRef};

/// The component that marks a roundrobin edge instead of a participant.
pub const ROUND_ROBIN: &str = "msgflo/RoundRobin";

/// Whether a graph process is a participant (something that runs).
pub fn is_participant(graph: &Graph, process: &str) -> bool {
    graph.processes.get(process).is_some_and(|p| p.component != ROUND_ROBIN)
}

/// Why a graph edge is not wired yet, or cannot be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Pending {
    /// The role has not been discovered.
    Waiting { role: String },
    /// The role is known but has no such port (a graph error).
    Invalid { reason: String },
}

/// The result of resolving a graph against the registry.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Resolution {
    /// Wires and, for each, the graph edges it serves (as text).
    pub wires: BTreeMap<Wire, Vec<String>>,
    /// Graph edges (as text) not wired, and why.
    pub pending: Vec<(String, Pending)>,
}

fn edge_text(c: &Connection) -> String {
    let end = |p: &PortRef| format!("{}.{}", p.process, p.port);
    match &c.src {
        Some(s) => format!("{} -> {}", end(s), end(&c.tgt)),
        None => format!("IIP -> {}", end(&c.tgt)),
    }
}

/// The queue of `role.port`: Ok(None) while the role is unknown.
fn queue_of(reg: &Registry, end: &PortRef, inport: bool) -> Result<Option<String>, Pending> {
    match reg.role(&end.process) {
        None => Err(Pending::Waiting { role: end.process.clone() }),
        Some(role) => match role.queue(&end.port, inport) {
            Ok(Some(q)) => Ok(Some(q.to_owned())),
            Ok(None) => Err(Pending::Invalid {
                reason: format!("port {}.{} has no queue (hidden?)", end.process, end.port),
            }),
            Err(reason) => Err(Pending::Invalid { reason }),
        },
    }
}

/// Resolve every edge of `graph` that the registry allows.
pub fn resolve(graph: &Graph, reg: &Registry) -> Resolution {
    let mut out = Resolution::default();
    // RoundRobin nodes: collect their three ends first.
    #[derive(Default)]
    struct Rr {
        src: Vec<Connection>,
        tgt: Option<Connection>,
        dead: Option<Connection>,
    }
    let mut rrs: BTreeMap<&str, Rr> = BTreeMap::new();
    for c in &graph.connections {
        let Some(src) = &c.src else { continue };
        if !is_participant(graph, &src.process) && graph.processes.contains_key(&src.process) {
            let rr = rrs.entry(src.process.as_str()).or_default();
            if src.port.eq_ignore_ascii_case("deadletter") {
                rr.dead = Some(c.clone());
            } else {
                rr.tgt = Some(c.clone());
            }
        } else if !is_participant(graph, &c.tgt.process) && graph.processes.contains_key(&c.tgt.process) {
            rrs.entry(c.tgt.process.as_str()).or_default().src.push(c.clone());
        } else {
            let text = edge_text(c);
            match (queue_of(reg, src, false), queue_of(reg, &c.tgt, true)) {
                (Ok(Some(s)), Ok(Some(t))) => out.wires.entry(Wire::PubSub { src: s, tgt: t }).or_default().push(text),
                (Err(p), _) | (_, Err(p)) => out.pending.push((text, p)),
                _ => unreachable!("queue_of never returns Ok(None)"),
            }
        }
    }
    for (name, rr) in rrs {
        let Some(tgt_conn) = rr.tgt else {
            for c in rr.src.iter().chain(rr.dead.iter()) {
                let reason = format!("roundrobin node {name:?} has no OUT edge");
                out.pending.push((edge_text(c), Pending::Invalid { reason }));
            }
            continue;
        };
        let tgt = match queue_of(reg, &tgt_conn.tgt, true) {
            Ok(Some(t)) => t,
            Err(p) => {
                for c in rr.src.iter().chain(std::iter::once(&tgt_conn)).chain(rr.dead.iter()) {
                    out.pending.push((edge_text(c), p.clone()));
                }
                continue;
            }
            Ok(None) => unreachable!(),
        };
        for c in &rr.src {
            let text = format!("{} -> {name} -> {}.{}", edge_text(c).split(" -> ").next().unwrap_or(""), tgt_conn.tgt.process, tgt_conn.tgt.port);
            match queue_of(reg, c.src.as_ref().expect("edge"), false) {
                Ok(Some(s)) => out.wires.entry(Wire::RoundRobin { src: s, tgt: tgt.clone() }).or_default().push(text),
                Err(p) => out.pending.push((text, p)),
                Ok(None) => unreachable!(),
            }
        }
        if let Some(d) = rr.dead {
            let text = format!("{}.{} dead letters -> {}.{}", tgt_conn.tgt.process, tgt_conn.tgt.port, d.tgt.process, d.tgt.port);
            match queue_of(reg, &d.tgt, true) {
                Ok(Some(q)) => out.wires.entry(Wire::DeadLetter { tgt: tgt.clone(), deadletter: q }).or_default().push(text),
                Err(p) => out.pending.push((text, p)),
                Ok(None) => unreachable!(),
            }
        }
    }
    out
}

/// The processes data sent to `role` can flow to: `role` itself and every
/// process downstream of it (through roundrobin nodes too), cycles allowed.
pub fn downstream(graph: &Graph, role: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([role.to_owned()]);
    let mut todo = vec![role.to_owned()];
    while let Some(p) = todo.pop() {
        for c in &graph.connections {
            if c.src.as_ref().is_some_and(|s| s.process == p) && seen.insert(c.tgt.process.clone()) {
                todo.push(c.tgt.process.clone());
            }
        }
    }
    seen
}

/// Whether an IIP to `role` can be sent: the role is known and every edge
/// its data can travel along (from `role` and everything downstream of it)
/// exists, so nothing that follows from the IIP is lost. `Err` says what it
/// waits for.
pub fn iip_ready(graph: &Graph, res: &Resolution, reg: &Registry, role: &str, applied: impl Fn(&Wire) -> bool) -> Result<(), String> {
    reg.role(role).ok_or_else(|| format!("participant {role:?} not discovered yet"))?;
    let feeds = downstream(graph, role);
    let starts_in = |text: &str| feeds.iter().any(|p| text.starts_with(&format!("{p}.")));
    if let Some((text, _)) = res.pending.iter().find(|(text, _)| starts_in(text)) {
        return Err(format!("edge {text} not wired yet"));
    }
    for (w, edges) in &res.wires {
        if edges.iter().any(|e| starts_in(e)) && !applied(w) {
            return Err(format!("edge {w} not wired yet"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn reg(parts: &[(&str, &[&str], &[&str])]) -> Registry {
        let mut r = Registry::new(Duration::from_secs(60));
        for (role, ins, outs) in parts {
            let port = |p: &&str| serde_json::json!({"id": p, "queue": format!("{role}.{}", p.to_uppercase())});
            let msg = serde_json::json!({"protocol":"discovery","command":"participant","payload":{
                "id": format!("{role}-1"), "role": role, "component": "C",
                "inports": ins.iter().map(port).collect::<Vec<_>>(),
                "outports": outs.iter().map(port).collect::<Vec<_>>()}});
            r.observe(crate::discovery::parse_discovery(msg.to_string().as_bytes()).unwrap(), Instant::now());
        }
        r
    }

    #[test]
    fn pubsub_edges_resolve_when_both_ends_are_known() {
        let g = crate::graph::fbp::parse("a(A) OUT -> IN b(B)\nb OUT -> IN c(C)\n'5' -> IN a").unwrap();
        let r = reg(&[("a", &["in"], &["out"]), ("b", &["in"], &["out"])]);
        let res = resolve(&g, &r);
        assert_eq!(res.wires.keys().collect::<Vec<_>>(), vec![&Wire::PubSub { src: "a.OUT".into(), tgt: "b.IN".into() }]);
        assert_eq!(res.pending, vec![("b.out -> c.in".to_string(), Pending::Waiting { role: "c".into() })]);
    }

    #[test]
    fn a_wrong_port_is_reported_not_wired() {
        let g = crate::graph::fbp::parse("a(A) NOPE -> IN b(B)").unwrap();
        let r = reg(&[("a", &["in"], &["out"]), ("b", &["in"], &[])]);
        let res = resolve(&g, &r);
        assert!(res.wires.is_empty());
        match &res.pending[0].1 {
            Pending::Invalid { reason } => assert!(reason.contains("no outport \"nope\""), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn roundrobin_nodes_make_roundrobin_and_deadletter_wires() {
        let g = crate::graph::fbp::parse(
            "api(Api) JOB -> IN rr(msgflo/RoundRobin) OUT -> IN worker(W)\nrr DEADLETTER -> IN failed(F)",
        )
        .unwrap();
        let r = reg(&[("api", &[], &["job"]), ("worker", &["in"], &[]), ("failed", &["in"], &[])]);
        let res = resolve(&g, &r);
        assert!(res.pending.is_empty(), "{:?}", res.pending);
        let wires: Vec<_> = res.wires.keys().cloned().collect();
        assert_eq!(
            wires,
            vec![
                Wire::RoundRobin { src: "api.JOB".into(), tgt: "worker.IN".into() },
                Wire::DeadLetter { tgt: "worker.IN".into(), deadletter: "failed.IN".into() },
            ]
        );
        assert!(!is_participant(&g, "rr") && is_participant(&g, "api"));
    }

    #[test]
    fn iip_waits_for_the_wires_of_its_target() {
        let g = crate::graph::fbp::parse("'x' -> IN a(A)\na OUT -> IN b(B) OUT -> IN c(C)\nc OUT -> IN a").unwrap();
        let none = reg(&[]);
        assert!(iip_ready(&g, &resolve(&g, &none), &none, "a", |_| true).unwrap_err().contains("not discovered"));
        let only_a = reg(&[("a", &["in"], &["out"])]);
        assert!(iip_ready(&g, &resolve(&g, &only_a), &only_a, "a", |_| true).unwrap_err().contains("a.out -> b.in"));
        // Downstream edges count too: b -> c is fed by the IIP to a.
        let ab = reg(&[("a", &["in"], &["out"]), ("b", &["in"], &["out"])]);
        assert!(iip_ready(&g, &resolve(&g, &ab), &ab, "a", |_| true).unwrap_err().contains("b.out -> c.in"));
        let all = reg(&[("a", &["in"], &["out"]), ("b", &["in"], &["out"]), ("c", &["in"], &["out"])]);
        let res = resolve(&g, &all);
        assert!(iip_ready(&g, &res, &all, "a", |_| false).is_err(), "resolved but not applied");
        assert_eq!(iip_ready(&g, &res, &all, "a", |_| true), Ok(()), "the cycle ends");
        assert_eq!(downstream(&g, "b").len(), 3);
    }
}
