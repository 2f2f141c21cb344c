//! The `graph` sub-protocol: building and changing graphs. A change to a
//! started graph reaches the running system at once (participants are
//! started and stopped, edges wired and unwired, IIPs sent).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{frame, typed, Failure, Outcome, RtGraph, Runtime};
use crate::graph::{Connection, Export, PortRef, Process};

#[derive(Debug, Deserialize)]
pub struct End {
    pub node: String,
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Iip {
    pub data: Value,
}

type Meta = Option<Map<String, Value>>;

#[derive(Debug, Deserialize)]
#[serde(tag = "command", content = "payload", rename_all = "lowercase")]
pub enum Request {
    Clear { id: String, name: Option<String>, #[serde(default)] main: Option<bool>, library: Option<String>, icon: Option<String>, description: Option<String> },
    AddNode { id: String, component: String, metadata: Meta, graph: Option<String> },
    RemoveNode { id: String, graph: Option<String> },
    RenameNode { from: String, to: String, graph: Option<String> },
    ChangeNode { id: String, metadata: Meta, graph: Option<String> },
    AddEdge { src: End, tgt: End, metadata: Meta, graph: Option<String> },
    RemoveEdge { src: End, tgt: End, graph: Option<String> },
    ChangeEdge { src: End, tgt: End, metadata: Meta, graph: Option<String> },
    AddInitial { src: Iip, tgt: End, metadata: Meta, graph: Option<String> },
    RemoveInitial { tgt: End, graph: Option<String> },
    AddInport { public: String, node: String, port: String, metadata: Meta, graph: Option<String> },
    RemoveInport { public: String, graph: Option<String> },
    RenameInport { from: String, to: String, graph: Option<String> },
    AddOutport { public: String, node: String, port: String, metadata: Meta, graph: Option<String> },
    RemoveOutport { public: String, graph: Option<String> },
    RenameOutport { from: String, to: String, graph: Option<String> },
    AddGroup { name: String, nodes: Vec<String>, metadata: Meta, graph: Option<String> },
    RemoveGroup { name: String, graph: Option<String> },
    RenameGroup { from: String, to: String, graph: Option<String> },
    ChangeGroup { name: String, metadata: Meta, graph: Option<String> },
}

fn end_json(e: &PortRef) -> Value {
    let mut v = json!({"node": e.process, "port": e.port});
    if let Some(i) = e.index {
        v["index"] = json!(i);
    }
    v
}

fn port_ref(e: &End) -> PortRef {
    PortRef { process: e.node.clone(), port: e.port.clone(), index: e.index }
}

fn same(a: &PortRef, b: &End) -> bool {
    a.process == b.node && a.port.eq_ignore_ascii_case(&b.port) && (b.index.is_none() || a.index == b.index)
}

/// Merge metadata: keys set to `null` are removed.
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        if v.is_null() {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

/// A reply echo: the request payload as the client sent it, plus `graph`.
fn echo(command: &str, payload: Value) -> Value {
    frame("graph", command, payload)
}

pub(super) fn handle(rt: &mut Runtime, command: &str, payload: Value, out: &mut Outcome) -> Result<(), Failure> {
    let req: Request = typed(command, payload.clone())?;
    let changed;
    match req {
        Request::Clear { id, name, main, library, icon, description } => {
            if id.is_empty() {
                return Err("graph id must not be empty".into());
            }
            let was_started = rt.graphs.get(&id).and_then(|g| g.started);
            let name = name.unwrap_or_else(|| id.clone());
            let main = main.unwrap_or(false);
            let mut g = RtGraph { name: name.clone(), main, library: library.clone(), icon: icon.clone(), description: description.clone(), started: was_started, ..Default::default() };
            g.graph.properties.insert("name".into(), json!(name));
            g.graph.properties.insert("environment".into(), json!({"type": super::RUNTIME_TYPE}));
            rt.graphs.insert(id.clone(), g);
            let mut reply = json!({"id": id, "name": name, "main": main});
            for (k, v) in [("library", library), ("icon", icon), ("description", description)] {
                if let Some(v) = v {
                    reply[k] = json!(v);
                }
            }
            out.reply.push(frame("graph", "clear", reply.clone()));
            out.others.push(frame("graph", "clear", reply));
            if was_started.is_some() {
                rt.apply()?;
            }
            out.changed = Some(id);
            return Ok(());
        }
        Request::AddNode { id, component, metadata, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            if id.is_empty() || component.is_empty() {
                return Err("a node needs an id and a component".into());
            }
            if g.graph.processes.contains_key(&id) {
                return Err(format!("node {id:?} exists already in graph {:?}", graph.as_deref().unwrap_or("")));
            }
            let metadata = metadata.unwrap_or_default();
            g.graph.processes.insert(id.clone(), Process { component: component.clone(), metadata: metadata.clone() });
            let p = json!({"id": id, "component": component, "metadata": metadata, "graph": graph});
            out.reply.push(echo("addnode", p));
            changed = graph;
        }
        Request::RemoveNode { id, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            if g.graph.processes.remove(&id).is_none() {
                return Err(format!("no node {id:?} in graph {:?}", graph.as_deref().unwrap_or("")));
            }
            let gid = graph.clone().unwrap_or_default();
            // Edges and IIPs of the node go first, each announced.
            let (gone, keep): (Vec<Connection>, Vec<Connection>) =
                g.graph.connections.drain(..).partition(|c| c.tgt.process == id || c.src.as_ref().is_some_and(|s| s.process == id));
            g.graph.connections = keep;
            for c in gone {
                let f = match &c.src {
                    Some(s) => echo("removeedge", json!({"src": end_json(s), "tgt": end_json(&c.tgt), "graph": gid})),
                    None => echo("removeinitial", json!({"src": {"data": c.data.clone().unwrap_or(Value::Null)}, "tgt": end_json(&c.tgt), "graph": gid})),
                };
                out.reply.push(f);
            }
            g.graph.inports.retain(|_, e| e.process != id);
            g.graph.outports.retain(|_, e| e.process != id);
            for (nodes, _) in g.groups.values_mut() {
                nodes.retain(|n| *n != id);
            }
            out.reply.push(echo("removenode", json!({"id": id, "graph": gid})));
            changed = graph;
        }
        Request::RenameNode { from, to, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            if g.graph.processes.contains_key(&to) {
                return Err(format!("node {to:?} exists already"));
            }
            let p = g.graph.processes.remove(&from).ok_or_else(|| format!("no node {from:?}"))?;
            g.graph.processes.insert(to.clone(), p);
            for c in &mut g.graph.connections {
                for e in c.src.iter_mut().chain(std::iter::once(&mut c.tgt)) {
                    if e.process == from {
                        e.process = to.clone();
                    }
                }
            }
            for e in g.graph.inports.values_mut().chain(g.graph.outports.values_mut()) {
                if e.process == from {
                    e.process = to.clone();
                }
            }
            for (nodes, _) in g.groups.values_mut() {
                for n in nodes.iter_mut().filter(|n| **n == from) {
                    *n = to.clone();
                }
            }
            out.reply.push(echo("renamenode", json!({"from": from, "to": to, "graph": graph})));
            changed = graph;
        }
        Request::ChangeNode { id, metadata, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            let p = g.graph.processes.get_mut(&id).ok_or_else(|| format!("no node {id:?}"))?;
            merge(&mut p.metadata, metadata.unwrap_or_default());
            out.reply.push(echo("changenode", json!({"id": id, "metadata": p.metadata, "graph": graph})));
            // Metadata does not change what runs.
            out.others = out.reply.clone();
            out.changed = graph;
            return Ok(());
        }
        Request::AddEdge { src, tgt, metadata, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            for e in [&src, &tgt] {
                if !g.graph.processes.contains_key(&e.node) {
                    return Err(format!("no node {:?} in graph {:?}", e.node, graph.as_deref().unwrap_or("")));
                }
            }
            let exists = g.graph.connections.iter().any(|c| c.src.as_ref().is_some_and(|s| same(s, &src)) && same(&c.tgt, &tgt));
            let metadata = metadata.unwrap_or_default();
            if !exists {
                g.graph.connections.push(Connection { src: Some(port_ref(&src)), data: None, tgt: port_ref(&tgt), metadata: metadata.clone() });
            }
            let mut p = strip(payload);
            p["metadata"] = json!(metadata);
            out.reply.push(echo("addedge", p));
            changed = graph;
        }
        Request::RemoveEdge { src, tgt, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            let before = g.graph.connections.len();
            g.graph.connections.retain(|c| !(c.src.as_ref().is_some_and(|s| same(s, &src)) && same(&c.tgt, &tgt)));
            if g.graph.connections.len() == before {
                return Err(format!("no edge {}.{} -> {}.{}", src.node, src.port, tgt.node, tgt.port));
            }
            out.reply.push(echo("removeedge", strip(payload)));
            changed = graph;
        }
        Request::ChangeEdge { src, tgt, metadata, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            let c = g
                .graph
                .connections
                .iter_mut()
                .find(|c| c.src.as_ref().is_some_and(|s| same(s, &src)) && same(&c.tgt, &tgt))
                .ok_or_else(|| format!("no edge {}.{} -> {}.{}", src.node, src.port, tgt.node, tgt.port))?;
            merge(&mut c.metadata, metadata.unwrap_or_default());
            let mut p = strip(payload);
            p["metadata"] = json!(c.metadata);
            out.reply.push(echo("changeedge", p));
            out.others = out.reply.clone();
            out.changed = graph;
            return Ok(());
        }
        Request::AddInitial { src, tgt, metadata, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            if !g.graph.processes.contains_key(&tgt.node) {
                return Err(format!("no node {:?} in graph {:?}", tgt.node, graph.as_deref().unwrap_or("")));
            }
            let metadata = metadata.unwrap_or_default();
            g.graph.connections.push(Connection { src: None, data: Some(src.data), tgt: port_ref(&tgt), metadata: metadata.clone() });
            let mut p = strip(payload);
            p["metadata"] = json!(metadata);
            out.reply.push(echo("addinitial", p));
            changed = graph;
        }
        Request::RemoveInitial { tgt, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            let i = g
                .graph
                .connections
                .iter()
                .position(|c| c.src.is_none() && same(&c.tgt, &tgt))
                .ok_or_else(|| format!("no IIP to {}.{}", tgt.node, tgt.port))?;
            let c = g.graph.connections.remove(i);
            let mut p = strip(payload);
            p["src"] = json!({"data": c.data.unwrap_or(Value::Null)});
            out.reply.push(echo("removeinitial", p));
            changed = graph;
        }
        Request::AddInport { public, node, port, metadata, graph } | Request::AddOutport { public, node, port, metadata, graph } => {
            let inport = command == "addinport";
            let g = rt.graph_mut(graph.as_deref())?;
            if !g.graph.processes.contains_key(&node) {
                return Err(format!("no node {node:?} in graph {:?}", graph.as_deref().unwrap_or("")));
            }
            let ports = if inport { &mut g.graph.inports } else { &mut g.graph.outports };
            ports.insert(public.clone(), Export { process: node.clone(), port: port.clone() });
            let mut p = json!({"public": public, "node": node, "port": port, "graph": graph});
            if let Some(m) = metadata {
                p["metadata"] = json!(m);
            }
            out.reply.push(echo(command, p));
            changed = graph;
        }
        Request::RemoveInport { public, graph } | Request::RemoveOutport { public, graph } => {
            let inport = command == "removeinport";
            let g = rt.graph_mut(graph.as_deref())?;
            let ports = if inport { &mut g.graph.inports } else { &mut g.graph.outports };
            ports.remove(&public).ok_or_else(|| format!("no exported port {public:?}"))?;
            out.reply.push(echo(command, json!({"public": public, "graph": graph})));
            changed = graph;
        }
        Request::RenameInport { from, to, graph } | Request::RenameOutport { from, to, graph } => {
            let inport = command == "renameinport";
            let g = rt.graph_mut(graph.as_deref())?;
            let ports = if inport { &mut g.graph.inports } else { &mut g.graph.outports };
            let e = ports.remove(&from).ok_or_else(|| format!("no exported port {from:?}"))?;
            ports.insert(to.clone(), e);
            out.reply.push(echo(command, json!({"from": from, "to": to, "graph": graph})));
            changed = graph;
        }
        Request::AddGroup { name, nodes, metadata, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            let metadata = metadata.unwrap_or_default();
            g.groups.insert(name.clone(), (nodes.clone(), metadata.clone()));
            out.reply.push(echo("addgroup", json!({"name": name, "nodes": nodes, "metadata": metadata, "graph": graph})));
            out.others = out.reply.clone();
            out.changed = graph;
            return Ok(());
        }
        Request::RemoveGroup { name, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            g.groups.remove(&name).ok_or_else(|| format!("no group {name:?}"))?;
            out.reply.push(echo("removegroup", json!({"name": name, "graph": graph})));
            out.others = out.reply.clone();
            out.changed = graph;
            return Ok(());
        }
        Request::RenameGroup { from, to, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            let v = g.groups.remove(&from).ok_or_else(|| format!("no group {from:?}"))?;
            g.groups.insert(to.clone(), v);
            out.reply.push(echo("renamegroup", json!({"from": from, "to": to, "graph": graph})));
            out.others = out.reply.clone();
            out.changed = graph;
            return Ok(());
        }
        Request::ChangeGroup { name, metadata, graph } => {
            let g = rt.graph_mut(graph.as_deref())?;
            let (_, m) = g.groups.get_mut(&name).ok_or_else(|| format!("no group {name:?}"))?;
            merge(m, metadata.unwrap_or_default());
            let m = m.clone();
            out.reply.push(echo("changegroup", json!({"name": name, "metadata": m, "graph": graph})));
            out.others = out.reply.clone();
            out.changed = graph;
            return Ok(());
        }
    }
    // Exported ports changed: every client hears the graph's new ports.
    if command.ends_with("inport") || command.ends_with("outport") {
        if let Some(id) = &changed {
            if let Some(g) = rt.graphs.get(id) {
                out.reply.push(super::runtime::ports_frame(id, g));
            }
        }
    }
    // A started graph changes what runs at once. The edit stays in the
    // graph either way; when it cannot run, everybody is told why.
    if changed.as_ref().and_then(|id| rt.graphs.get(id)).is_some_and(|g| g.started.is_some()) {
        if let Err(e) = rt.apply() {
            tracing::warn!("graph change not applied: {e}");
            let id = changed.clone().unwrap_or_default();
            out.reply.push(super::frame("network", "error", json!({"message": format!("graph {id:?} changed, but cannot run so: {e}"), "graph": id})));
        }
    }
    out.others = out.reply.clone();
    out.changed = changed.clone();
    Ok(())
}

/// An echo without `null` fields (the dispatcher took the secret out
/// before the request got here).
fn strip(mut payload: Value) -> Value {
    if let Some(o) = payload.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    payload
}

/// The graph in the JSON graph format (for `component:getsource`).
pub fn to_json(id: &str, g: &RtGraph) -> Value {
    let end = |p: &PortRef| {
        let mut v = json!({"process": p.process, "port": p.port});
        if let Some(i) = p.index {
            v["index"] = json!(i);
        }
        v
    };
    let mut props: Map<String, Value> = g.graph.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    props.insert("name".into(), json!(g.name));
    props.insert("id".into(), json!(id));
    props.insert("environment".into(), json!({"type": super::RUNTIME_TYPE}));
    let processes: Map<String, Value> =
        g.graph.processes.iter().map(|(k, p)| (k.clone(), json!({"component": p.component, "metadata": p.metadata}))).collect();
    let connections: Vec<Value> = g
        .graph
        .connections
        .iter()
        .map(|c| {
            let mut v = match &c.src {
                Some(s) => json!({"src": end(s), "tgt": end(&c.tgt)}),
                None => json!({"data": c.data.clone().unwrap_or(Value::Null), "tgt": end(&c.tgt)}),
            };
            if !c.metadata.is_empty() {
                v["metadata"] = json!(c.metadata);
            }
            v
        })
        .collect();
    let exports = |m: &std::collections::BTreeMap<String, Export>| -> Map<String, Value> {
        m.iter().map(|(k, e)| (k.clone(), json!({"process": e.process, "port": e.port}))).collect()
    };
    let groups: Vec<Value> = g.groups.iter().map(|(n, (nodes, m))| json!({"name": n, "nodes": nodes, "metadata": m})).collect();
    json!({
        "caseSensitive": true,
        "properties": props,
        "inports": exports(&g.graph.inports),
        "outports": exports(&g.graph.outports),
        "groups": groups,
        "processes": processes,
        "connections": connections,
    })
}
