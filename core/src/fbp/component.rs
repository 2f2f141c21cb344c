//! The `component` sub-protocol: the components that can be used (the
//! component library's and those discovered on the broker) and the graph
//! sources an IDE reads.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{frame, typed, Failure, Outcome, Runtime};

#[derive(Debug, Deserialize)]
#[serde(tag = "command", content = "payload", rename_all = "lowercase")]
pub enum Request {
    List {},
    GetSource { name: String },
    Source {},
}

fn ports(ps: &[(String, String)]) -> Vec<Value> {
    ps.iter().map(|(id, t)| json!({"id": id, "type": if t.is_empty() { "any" } else { t.as_str() }, "description": "", "addressable": false, "required": false})).collect()
}

pub(super) fn handle(rt: &mut Runtime, command: &str, payload: Value, out: &mut Outcome) -> Result<(), Failure> {
    match typed::<Request>(command, payload)? {
        Request::List {} => {
            let comps = rt.host().components();
            for c in &comps {
                let mut p = json!({
                    "name": c.name,
                    "description": c.description,
                    "subgraph": false,
                    "inPorts": ports(&c.inports),
                    "outPorts": ports(&c.outports),
                });
                if let Some(i) = &c.icon {
                    p["icon"] = json!(i);
                }
                out.reply.push(frame("component", "component", p));
            }
            out.reply.push(frame("component", "componentsready", json!(comps.len())));
        }
        Request::GetSource { name } => {
            // Graphs are readable as JSON graphs; participants' code lives
            // in their own processes, often on other machines.
            let (id, g) = rt
                .graphs
                .iter()
                .find(|(id, _)| **id == name || name.rsplit('/').next() == Some(id.as_str()))
                .ok_or_else(|| format!("no graph or readable component {name:?}"))?;
            let code = serde_json::to_string_pretty(&super::graph::to_json(id, g)).unwrap_or_default();
            out.reply.push(frame("component", "source", json!({"name": id, "language": "json", "code": code})));
        }
        Request::Source {} => return Err("component:source is not supported: participants are programs started from the component library".into()),
    }
    Ok(())
}
