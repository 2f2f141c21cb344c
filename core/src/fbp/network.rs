//! The `network` sub-protocol: starting and stopping graphs, their status,
//! and which edges a client watches (`network:edges` -> `network:data`).

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{frame, typed, ClientId, EdgeKey, Failure, Outcome, Runtime};

#[derive(Debug, Deserialize)]
pub struct End {
    pub node: String,
    pub port: String,
}

#[derive(Debug, Deserialize)]
pub struct Edge {
    pub src: End,
    pub tgt: End,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "command", content = "payload", rename_all = "lowercase")]
pub enum Request {
    Start { graph: Option<String> },
    Stop { graph: Option<String> },
    GetStatus { graph: Option<String> },
    Edges { graph: Option<String>, edges: Vec<Edge> },
    Debug { graph: Option<String>, enable: bool },
    Persist {},
}

fn iso(t: SystemTime) -> String {
    // RFC 3339 in UTC, second precision, without a date library.
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// `network:data` for a message seen on `edge`.
pub fn data_frame(edge: &EdgeKey, data: Value) -> Value {
    frame(
        "network",
        "data",
        json!({
            "id": format!("{}() {} -> {} {}()", edge.src.0, edge.src.1.to_uppercase(), edge.tgt.1.to_uppercase(), edge.tgt.0),
            "graph": edge.graph,
            "src": {"node": edge.src.0, "port": edge.src.1},
            "tgt": {"node": edge.tgt.0, "port": edge.tgt.1},
            "data": data,
        }),
    )
}

pub(super) fn handle(rt: &mut Runtime, client: ClientId, command: &str, payload: Value, out: &mut Outcome) -> Result<(), Failure> {
    match typed::<Request>(command, payload)? {
        Request::Start { graph } => {
            let id = graph.clone().ok_or("No graph specified")?;
            let now = SystemTime::now();
            let was = rt.graph_mut(Some(&id))?.started;
            rt.graph_mut(Some(&id))?.started = Some(was.unwrap_or(now));
            if let Err(e) = rt.apply() {
                rt.graph_mut(Some(&id))?.started = was;
                return Err(e);
            }
            let roles: Vec<String> = rt.graph_ref(Some(&id))?.graph.processes.keys().cloned().collect();
            let running = rt.host().busy(&roles);
            let f = frame("network", "started", json!({"graph": id, "started": true, "running": running, "time": iso(now)}));
            out.reply.push(f.clone());
            out.others.push(f);
        }
        Request::Stop { graph } => {
            let id = graph.clone().ok_or("No graph specified")?;
            let was = rt.graph_mut(Some(&id))?.started.take();
            if let Err(e) = rt.apply() {
                rt.graph_mut(Some(&id))?.started = was;
                return Err(e);
            }
            let uptime = was.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            let f = frame("network", "stopped", json!({"graph": id, "started": false, "running": false, "time": iso(SystemTime::now()), "uptime": uptime}));
            out.reply.push(f.clone());
            out.others.push(f);
        }
        Request::GetStatus { graph } => {
            let id = graph.ok_or("No graph specified")?;
            let g = rt.graph_ref(Some(&id))?;
            let started = g.started.is_some();
            let roles: Vec<String> = g.graph.processes.keys().cloned().collect();
            let running = started && rt.host().busy(&roles);
            out.reply.push(frame("network", "status", json!({"graph": id, "running": running, "started": started})));
        }
        Request::Edges { graph, edges } => {
            let id = graph.ok_or("No graph specified")?;
            let g = rt.graph_ref(Some(&id))?;
            let mut sel = BTreeSet::new();
            let mut echo = Vec::new();
            for e in edges {
                let exists = g.graph.connections.iter().any(|c| {
                    c.src.as_ref().is_some_and(|s| s.process == e.src.node && s.port.eq_ignore_ascii_case(&e.src.port))
                        && c.tgt.process == e.tgt.node
                        && c.tgt.port.eq_ignore_ascii_case(&e.tgt.port)
                });
                if !exists {
                    return Err(format!("no edge {}.{} -> {}.{} in graph {id:?}", e.src.node, e.src.port, e.tgt.node, e.tgt.port));
                }
                echo.push(json!({"src": {"node": e.src.node, "port": e.src.port}, "tgt": {"node": e.tgt.node, "port": e.tgt.port}}));
                sel.insert(EdgeKey { graph: id.clone(), src: (e.src.node, e.src.port), tgt: (e.tgt.node, e.tgt.port) });
            }
            rt.select(client, sel);
            out.reply.push(frame("network", "edges", json!({"graph": id, "edges": echo})));
        }
        Request::Debug { graph, enable } => {
            let id = graph.ok_or("No graph specified")?;
            rt.graph_ref(Some(&id))?;
            out.reply.push(frame("network", "debug", json!({"graph": id, "enable": enable})));
        }
        Request::Persist {} => return Err("network:persist is not supported: graphs are saved with msgflo run --auto-save".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(super::iso(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(super::iso(UNIX_EPOCH + Duration::from_secs(1_796_169_599)), "2026-12-01T23:59:59Z");
    }
}
