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
    Source {
        name: String,
        language: String,
        code: String,
        #[serde(default)]
        library: Option<String>,
        #[serde(default)]
        #[allow(dead_code)]
        tests: Option<String>,
    },
}

fn ports(ps: &[(String, String)]) -> Vec<Value> {
    ps.iter().map(|(id, t)| json!({"id": id, "type": if t.is_empty() { "any" } else { t.as_str() }, "description": "", "addressable": false, "required": false})).collect()
}

fn component_frame(c: &super::ComponentInfo) -> Value {
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
    p
}

/// `ns/Name` -> (Some("ns"), "Name"); a bare name takes the library's
/// namespace.
fn split_name<'a>(name: &'a str, namespace: Option<&'a str>) -> (Option<&'a str>, &'a str) {
    match name.rsplit_once('/') {
        Some((l, n)) => (Some(l), n),
        None => (namespace, name),
    }
}

pub(super) fn handle(rt: &mut Runtime, command: &str, payload: Value, out: &mut Outcome) -> Result<(), Failure> {
    match typed::<Request>(command, payload)? {
        Request::List {} => {
            let running = rt.running_graph().unwrap_or_default();
            let comps = rt.host().components(&running);
            for c in &comps {
                out.reply.push(frame("component", "component", component_frame(c)));
            }
            out.reply.push(frame("component", "componentsready", json!(comps.len())));
        }
        Request::GetSource { name } => {
            // Graphs are readable as JSON graphs; components as the files
            // of the library's component folder. Participants started
            // otherwise have their code in their own processes.
            let graph = rt.graphs.iter().find(|(id, _)| **id == name || name.rsplit('/').next() == Some(id.as_str()));
            if let Some((id, g)) = graph {
                let code = serde_json::to_string_pretty(&super::graph::to_json(id, g)).unwrap_or_default();
                out.reply.push(frame("component", "source", json!({"name": id, "language": "json", "code": code})));
            } else {
                let (language, code) = rt.host().component_source(&name).map_err(|e| format!("no graph or readable component {name:?}: {e}"))?;
                let (library, short) = split_name(&name, rt.settings.namespace.as_deref());
                let mut p = json!({"name": short, "language": language, "code": code});
                if let Some(l) = library {
                    p["library"] = json!(l);
                }
                out.reply.push(frame("component", "source", p));
            }
        }
        Request::Source { name, language, code, library, .. } => {
            // The schema: `name` without the library prefix, `library` apart.
            let full = match library.filter(|l| !l.is_empty()) {
                Some(l) if !name.contains('/') => format!("{l}/{name}"),
                _ => name,
            };
            rt.host().write_component(&full, &language, &code)?;
            let running = rt.running_graph().unwrap_or_default();
            let c = rt
                .host()
                .components(&running)
                .into_iter()
                .find(|c| c.name == full || c.name.rsplit('/').next() == full.rsplit('/').next())
                .unwrap_or(super::ComponentInfo { name: full.clone(), description: "written over the protocol (not running yet)".into(), ..Default::default() });
            let f = frame("component", "component", component_frame(&c));
            out.reply.push(f.clone());
            out.others.push(f);
        }
    }
    Ok(())
}
