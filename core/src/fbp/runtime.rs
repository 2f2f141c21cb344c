//! The `runtime` sub-protocol: what this runtime is, and packets to and
//! from a graph's exported ports.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{frame, payload_of, typed, ClientId, Failure, Outcome, Runtime, PROTOCOL_VERSION, RUNTIME_TYPE};

#[derive(Debug, Deserialize)]
#[serde(tag = "command", content = "payload", rename_all = "lowercase")]
pub enum Request {
    GetRuntime {},
    Packet { port: String, event: String, payload: Option<Value>, graph: Option<String>, #[serde(rename = "type")] type_: Option<String> },
}

/// What a client may do once it gave the secret (or when there is none).
pub const CAPABILITIES: &[&str] = &[
    "protocol:runtime",
    "protocol:graph",
    "protocol:network",
    "protocol:component",
    "network:control",
    "network:status",
    "network:data",
    "component:getsource",
    "component:setsource",
];

/// `runtime:ports`: a graph's exported ports (sent after `getruntime` and
/// to every client when they change).
pub fn ports_frame(id: &str, g: &super::RtGraph) -> Value {
    let list = |ports: &std::collections::BTreeMap<String, crate::graph::Export>, inport: bool| -> Vec<Value> {
        ports
            .iter()
            .map(|(public, e)| {
                json!({"id": public, "type": "any", "description": format!("{} {}.{}", if inport { "into" } else { "from" }, e.process, e.port), "addressable": false, "required": false})
            })
            .collect()
    };
    frame("runtime", "ports", json!({"graph": id, "inPorts": list(&g.graph.inports, true), "outPorts": list(&g.graph.outports, false)}))
}

pub(super) fn handle(rt: &mut Runtime, _client: ClientId, command: &str, payload: Value, permitted: bool, out: &mut Outcome) -> Result<(), Failure> {
    match typed::<Request>(command, payload)? {
        Request::GetRuntime {} => {
            let caps: Vec<&str> = if permitted { CAPABILITIES.to_vec() } else { Vec::new() };
            let s = &rt.settings;
            let mut p = json!({
                "type": RUNTIME_TYPE,
                "version": PROTOCOL_VERSION,
                "capabilities": caps,
                "allCapabilities": CAPABILITIES,
                "id": s.id,
                "label": s.label,
            });
            if let Some(ns) = &s.namespace {
                p["namespace"] = json!(ns);
            }
            if permitted {
                p["graph"] = json!(s.main_graph);
            }
            out.reply.push(frame("runtime", "runtime", p));
            if permitted {
                let main = s.main_graph.clone();
                if let Some(g) = rt.graphs.get(&main) {
                    out.reply.push(ports_frame(&main, g));
                }
            }
        }
        Request::Packet { port, event, payload, graph, type_ } => {
            let id = graph.ok_or("No graph specified")?;
            let g = rt.graph_ref(Some(&id))?;
            let export = g.graph.inports.get(&port).or_else(|| g.graph.inports.iter().find(|(k, _)| k.eq_ignore_ascii_case(&port)).map(|(_, e)| e));
            let export = export.ok_or_else(|| format!("graph {id:?} has no exported inport {port:?}"))?.clone();
            if g.started.is_none() {
                return Err(format!("graph {id:?} is not running (network:start first)"));
            }
            if event == "data" {
                let data = payload.clone().unwrap_or(Value::Null);
                rt.host().deliver(&export.process, &export.port, payload_of(&data))?;
            }
            // Brackets and other events carry nothing over a message queue.
            let mut p = json!({"port": port, "event": event, "graph": id});
            if let Some(v) = payload {
                p["payload"] = v;
            }
            if let Some(t) = type_ {
                p["type"] = json!(t);
            }
            out.reply.push(frame("runtime", "packetsent", p));
        }
    }
    Ok(())
}
