//! The FBP runtime protocol (fbp-protocol 0.7-0.9): what lets an IDE such as
//! Flowhub, the protocol's own test tools (fbp-test, fbp-spec) and our live
//! view see and change the running system.
//!
//! Layout:
//! - this file: the transport-free dispatcher [`Runtime::handle`] (one text
//!   frame in, the frames to send out), the envelope, permissions, errors;
//! - one file per sub-protocol, each a serde enum of its requests:
//!   [`runtime`], [`graph`], [`network`], [`component`], and our own
//!   extension [`status`] (protocol `msgflo`) for the live view;
//! - [`Host`]: what the dispatcher needs from the running system (the
//!   coordinator implements it in [`host`]; unit tests use a recording one);
//! - [`server`]: the WebSocket (subprotocol `noflo`) and HTTP server of
//!   `msgflo run`, which also serves the live view page.
//!
//! Rules every reply follows: a request gets its reply or a
//! `<protocol>:error {message}`, in request order; replies carry
//! `responseTo` when the request had a `requestId`; no reply carries `null`
//! for an absent optional field or the secret.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::graph::Graph;
use crate::Payload;

pub mod component;
pub mod graph;
pub mod host;
pub mod network;
pub mod runtime;
pub mod server;
pub mod status;
#[cfg(test)]
mod tests;

/// The protocol version we report (the newest fbp-spec accepts is 0.9).
pub const PROTOCOL_VERSION: &str = "0.7";
/// Our runtime type (graphs' `properties.environment.type`).
pub const RUNTIME_TYPE: &str = "msgflo";
/// Frames larger than this are refused with an error.
pub const MAX_FRAME: usize = 1 << 20;

/// A connected client, as the server numbers them.
pub type ClientId = u64;

/// An edge of a graph, as the protocol names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub graph: String,
    pub src: (String, String),
    pub tgt: (String, String),
}

/// A component as `component:list` shows it.
#[derive(Debug, Clone, Default)]
pub struct ComponentInfo {
    pub name: String,
    pub description: String,
    pub icon: Option<String>,
    /// `(id, type)` of each port.
    pub inports: Vec<(String, String)>,
    pub outports: Vec<(String, String)>,
}

/// What the dispatcher needs from the running system.
pub trait Host: Send + Sync {
    /// Run this graph (the union of the started graphs) from now on.
    fn set_graph(&self, graph: Graph) -> Result<(), String>;
    /// Send a value into `role.port` once it can arrive.
    fn deliver(&self, role: &str, port: &str, payload: Payload) -> Result<(), String>;
    /// Watch these outports `(role, port)` (the set replaces the last one).
    fn tap(&self, outports: BTreeSet<(String, String)>);
    /// The components that can be used: the library's (under their library
    /// names, with the ports of a participant of theirs in `running`) and
    /// the ones only discovered on the broker.
    fn components(&self, running: &Graph) -> Vec<ComponentInfo>;
    /// A component's source from the library folder: (language, code).
    fn component_source(&self, _name: &str) -> Result<(String, String), String> {
        Err("this runtime has no component folder".into())
    }
    /// Write a component's source into the library folder, usable at once.
    fn write_component(&self, _name: &str, _language: &str, _code: &str) -> Result<(), String> {
        Err("this runtime has no component folder".into())
    }
    /// Whether any of these roles has messages waiting (for `running`).
    fn busy(&self, roles: &[String]) -> bool;
    /// The coordinator's picture (for `msgflo:status`).
    fn snapshot(&self) -> crate::coordinator::Snapshot {
        crate::coordinator::Snapshot::default()
    }
    /// Messages waiting per inport queue, where the broker says (AMQP).
    fn depths(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// Settings of a runtime.
#[derive(Debug, Clone)]
pub struct Settings {
    pub id: String,
    pub label: String,
    /// Required in every request when set.
    pub secret: Option<String>,
    /// The graph given on the command line (or the empty one).
    pub main_graph: String,
    /// The IDE the live URL points at.
    pub ide: String,
    /// The broker, password hidden.
    pub broker: String,
    /// The component library's namespace (`getruntime`'s `namespace`).
    pub namespace: Option<String>,
}

/// A graph as the runtime keeps it: the graph and the protocol's extras.
#[derive(Debug, Clone, Default)]
pub struct RtGraph {
    pub graph: Graph,
    pub name: String,
    pub main: bool,
    pub library: Option<String>,
    pub icon: Option<String>,
    pub description: Option<String>,
    /// Groups: name -> {nodes, metadata}.
    pub groups: BTreeMap<String, (Vec<String>, Map<String, Value>)>,
    /// Since when it runs (`None`: stopped).
    pub started: Option<SystemTime>,
}

/// Frames to send after one request (or event).
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// To the client that asked, in order.
    pub reply: Vec<Value>,
    /// To every other client (a graph edit is seen by everybody).
    pub others: Vec<Value>,
    /// A graph changed (for auto-save): its id.
    pub changed: Option<String>,
}

/// An error reply's text.
pub type Failure = String;

/// The protocol state of one runtime: graphs, what runs, who watches what.
pub struct Runtime {
    pub settings: Settings,
    pub graphs: BTreeMap<String, RtGraph>,
    host: Box<dyn Host>,
    /// Per client: the edges it watches (`None`: every edge of running graphs).
    selections: BTreeMap<ClientId, Option<BTreeSet<EdgeKey>>>,
    /// Per watched role: (outport, client, edge) that its data goes to,
    /// made in `retap` so that a tapped message costs a lookup, not a walk
    /// over every client's edges.
    routes: std::collections::HashMap<String, Vec<(String, ClientId, EdgeKey)>>,
    /// Clients that asked for `msgflo:status` frames, and for which graph.
    pub(crate) status_clients: BTreeMap<ClientId, String>,
    /// Messages seen per watched outport, for rates.
    meters: BTreeMap<(String, String), Meter>,
}

/// Messages per second on one watched outport, over windows of at least a
/// second (no figure before the first window is full).
#[derive(Debug)]
struct Meter {
    count: u64,
    since: std::time::Instant,
    rate: Option<f64>,
    last: std::time::Instant,
}

/// The envelope of every frame.
#[derive(Deserialize)]
struct Envelope {
    protocol: String,
    command: String,
    #[serde(default)]
    payload: Value,
    #[serde(rename = "requestId", default)]
    request_id: Option<Value>,
    #[serde(default)]
    secret: Option<String>,
}

/// One frame.
pub fn frame(protocol: &str, command: &str, payload: Value) -> Value {
    json!({"protocol": protocol, "command": command, "payload": payload})
}

/// Parse a request payload into its typed form, or say what is wrong.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(command: &str, payload: Value) -> Result<T, Failure> {
    serde_json::from_value(json!({"command": command, "payload": payload})).map_err(|e| {
        let e = e.to_string();
        if e.starts_with("unknown variant") {
            format!("unknown command {command:?}")
        } else {
            format!("bad {command} request: {e}")
        }
    })
}

impl Runtime {
    pub fn new(settings: Settings, main: Graph, host: Box<dyn Host>) -> Runtime {
        let mut graphs = BTreeMap::new();
        let name = main.properties.get("name").and_then(Value::as_str).unwrap_or(&settings.main_graph).to_owned();
        graphs.insert(settings.main_graph.clone(), RtGraph { graph: main, name, main: true, started: Some(SystemTime::now()), ..Default::default() });
        let mut rt = Runtime { settings, graphs, host, selections: BTreeMap::new(), routes: Default::default(), status_clients: BTreeMap::new(), meters: BTreeMap::new() };
        if let Err(e) = rt.apply() {
            tracing::warn!("the main graph cannot run: {e}");
        }
        rt
    }

    /// A client connected.
    pub fn connect(&mut self, client: ClientId) {
        self.selections.insert(client, None);
        self.retap();
    }

    /// A client went away.
    pub fn disconnect(&mut self, client: ClientId) {
        self.selections.remove(&client);
        self.status_clients.remove(&client);
        self.retap();
    }

    /// Handle one text frame from `client`.
    pub fn handle(&mut self, client: ClientId, text: &str) -> Outcome {
        if text.len() > MAX_FRAME {
            return Outcome { reply: vec![frame("runtime", "error", json!({"message": format!("frame of {} bytes refused (at most {MAX_FRAME})", text.len())}))], ..Default::default() };
        }
        let env: Envelope = match serde_json::from_str::<Value>(text) {
            Err(e) => return error_only("runtime", None, format!("not JSON: {e}")),
            Ok(v) if !v.is_object() => return error_only("runtime", None, "a frame must be a JSON object with protocol, command and payload".into()),
            Ok(v) => {
                let protocol = v.get("protocol").and_then(Value::as_str).unwrap_or("runtime").to_owned();
                let request_id = v.get("requestId").cloned();
                match serde_json::from_value(v) {
                    Ok(e) => e,
                    Err(e) => return error_only(&protocol, request_id, format!("bad frame: {e}")),
                }
            }
        };
        let Envelope { protocol, command, mut payload, request_id, secret } = env;
        if payload.is_null() {
            payload = json!({});
        }
        let Some(obj) = payload.as_object_mut() else {
            return error_only(&protocol, request_id, "payload must be a JSON object".into());
        };
        let given = obj.remove("secret").and_then(|s| s.as_str().map(str::to_owned)).or(secret);
        let permitted = match &self.settings.secret {
            None => true,
            Some(s) => given.as_deref() == Some(s.as_str()),
        };
        let mut out = Outcome::default();
        let result = if !(permitted || protocol == "runtime" && command == "getruntime") {
            Err(format!("{protocol}:{command} not permitted: the runtime needs its secret"))
        } else {
            match protocol.as_str() {
                "runtime" => runtime::handle(self, client, &command, payload, permitted, &mut out),
                "graph" => graph::handle(self, &command, payload, &mut out),
                "network" => network::handle(self, client, &command, payload, &mut out),
                "component" => component::handle(self, &command, payload, &mut out),
                "msgflo" => status::handle(self, client, &command, payload, &mut out),
                "trace" => Err("trace is not supported by this runtime".into()),
                other => Err(format!("unknown protocol {other:?}")),
            }
        };
        if let Err(message) = result {
            out.reply.push(frame(error_protocol(&protocol), "error", json!({"message": message})));
            out.others.clear();
            out.changed = None;
        }
        if let Some(id) = request_id {
            for f in &mut out.reply {
                f["responseTo"] = id.clone();
            }
        }
        out
    }

    pub(crate) fn graph_mut(&mut self, id: Option<&str>) -> Result<&mut RtGraph, Failure> {
        let id = id.ok_or("No graph specified")?;
        self.graphs.get_mut(id).ok_or_else(|| "Requested graph not found".to_owned())
    }

    pub(crate) fn graph_ref(&self, id: Option<&str>) -> Result<&RtGraph, Failure> {
        let id = id.ok_or("No graph specified")?;
        self.graphs.get(id).ok_or_else(|| "Requested graph not found".to_owned())
    }

    /// The graph to run: every started graph together. A node id may run
    /// in one started graph only (it is the participant's role).
    pub(crate) fn running_graph(&self) -> Result<Graph, Failure> {
        let mut g = Graph::default();
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (id, rg) in self.graphs.iter().filter(|(_, g)| g.started.is_some()) {
            for (name, p) in &rg.graph.processes {
                if let Some(other) = owner.insert(name, id) {
                    return Err(format!("node {name:?} runs in graph {other:?} already (node ids are the participants' roles)"));
                }
                g.processes.insert(name.clone(), p.clone());
            }
            g.connections.extend(rg.graph.connections.iter().cloned());
        }
        Ok(g)
    }

    /// Hand the running graph to the host (after an edit or start/stop).
    pub(crate) fn apply(&mut self) -> Result<(), Failure> {
        let g = self.running_graph()?;
        self.host.set_graph(g)?;
        self.retap();
        Ok(())
    }

    /// Tell the host which outports are watched: the sources of every
    /// selected edge of a running graph, and exported outports.
    pub(crate) fn retap(&mut self) {
        let mut taps = BTreeSet::new();
        let mut routes: std::collections::HashMap<String, Vec<(String, ClientId, EdgeKey)>> = Default::default();
        for (client, sel) in &self.selections {
            for e in self.edges_of_interest(sel.as_ref()) {
                routes.entry(e.src.0.clone()).or_default().push((e.src.1.clone(), *client, e.clone()));
                taps.insert(e.src);
            }
        }
        self.routes = routes;
        if !self.selections.is_empty() {
            for rg in self.graphs.values().filter(|g| g.started.is_some()) {
                for e in rg.graph.outports.values() {
                    taps.insert((e.process.clone(), e.port.clone()));
                }
            }
        }
        // An outport no longer watched has no rate; watched again, it is
        // measured afresh.
        self.meters.retain(|(role, port), _| taps.iter().any(|(r, p)| r == role && p.eq_ignore_ascii_case(port)));
        self.host.tap(taps);
    }

    fn edges_of_interest(&self, sel: Option<&BTreeSet<EdgeKey>>) -> Vec<EdgeKey> {
        match sel {
            Some(s) => s.iter().filter(|e| self.graphs.get(&e.graph).is_some_and(|g| g.started.is_some())).cloned().collect(),
            None => self
                .graphs
                .iter()
                .filter(|(_, g)| g.started.is_some())
                .flat_map(|(id, g)| {
                    g.graph.connections.iter().filter_map(move |c| {
                        let s = c.src.as_ref()?;
                        Some(EdgeKey { graph: id.clone(), src: (s.process.clone(), s.port.clone()), tgt: (c.tgt.process.clone(), c.tgt.port.clone()) })
                    })
                })
                .collect(),
        }
    }

    pub(crate) fn select(&mut self, client: ClientId, edges: BTreeSet<EdgeKey>) {
        self.selections.insert(client, Some(edges));
        self.retap();
    }

    /// Whether no client is connected.
    pub fn selections_empty(&self) -> bool {
        self.selections.is_empty()
    }

    pub(crate) fn host(&self) -> &dyn Host {
        self.host.as_ref()
    }

    /// Messages per second seen lately on the outport `role.port`: only
    /// while it is watched, once a first window of a second is full; 0 when
    /// watched and nothing came for 3 s.
    pub fn rate(&self, role: &str, port: &str) -> Option<f64> {
        let m = self.meters.iter().find(|((r, p), _)| r == role && p.eq_ignore_ascii_case(port)).map(|(_, m)| m)?;
        if m.last.elapsed() > std::time::Duration::from_secs(3) {
            return Some(0.0);
        }
        m.rate
    }

    /// Frames for one event on the wire, per client.
    pub fn on_event(&mut self, event: &crate::coordinator::Event) -> Vec<(ClientId, Value)> {
        use crate::coordinator::Event;
        let mut out = Vec::new();
        if let Event::Data { role, port, .. } = event {
            let now = std::time::Instant::now();
            // The first message starts the window; the ones after it count.
            match self.meters.entry((role.clone(), port.clone())) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Meter { count: 0, since: now, rate: None, last: now });
                }
                std::collections::btree_map::Entry::Occupied(o) => {
                    let m = o.into_mut();
                    m.count += 1;
                    m.last = now;
                    let window = now.duration_since(m.since).as_secs_f64();
                    if window >= 1.0 {
                        m.rate = Some(m.count as f64 / window);
                        m.count = 0;
                        m.since = now;
                    }
                }
            }
        }
        match event {
            Event::Data { role, port, payload } => {
                let data = data_value(payload);
                for (p, client, e) in self.routes.get(role.as_str()).into_iter().flatten() {
                    if p.eq_ignore_ascii_case(port) {
                        out.push((*client, network::data_frame(e, data.clone())));
                    }
                }
                for (gid, rg) in self.graphs.iter().filter(|(_, g)| g.started.is_some()) {
                    for (public, e) in &rg.graph.outports {
                        if e.process == *role && e.port.eq_ignore_ascii_case(port) {
                            let f = frame("runtime", "packet", json!({"port": public, "event": "data", "payload": data, "graph": gid}));
                            out.extend(self.selections.keys().map(|c| (*c, f.clone())));
                        }
                    }
                }
            }
            Event::Exited { role, participant, how } => {
                // Told to every client of a graph that has the node: the
                // IDE shows it on the node, and as a line of output.
                let line = format!("participant {role} ({participant}) exited ({how}); restarting it");
                for gid in self.graphs.iter().filter(|(_, g)| g.started.is_some() && g.graph.processes.contains_key(role)).map(|(id, _)| id) {
                    let f = frame("network", "processerror", json!({"id": role, "error": line, "graph": gid}));
                    out.extend(self.selections.keys().map(|c| (*c, f.clone())));
                }
                let f = frame("network", "output", json!({"message": line, "type": "message"}));
                out.extend(self.selections.keys().map(|c| (*c, f.clone())));
            }
            Event::Sent { role, port, payload } => {
                let data = data_value(payload);
                for (gid, rg) in self.graphs.iter().filter(|(_, g)| g.started.is_some()) {
                    if !rg.graph.processes.contains_key(role) {
                        continue;
                    }
                    let f = frame(
                        "network",
                        "data",
                        json!({"id": format!("DATA -> {} {role}()", port.to_uppercase()), "graph": gid, "tgt": {"node": role, "port": port}, "data": data}),
                    );
                    for (client, sel) in &self.selections {
                        let wanted = match sel {
                            None => true,
                            Some(s) => s.iter().any(|e| e.graph == *gid && e.tgt.0 == *role),
                        };
                        if wanted {
                            out.push((*client, f.clone()));
                        }
                    }
                }
            }
        }
        out
    }
}

/// A payload as protocol data: JSON as JSON, other UTF-8 as a string,
/// binary as `{"base64": ...}`.
pub fn data_value(p: &Payload) -> Value {
    let bytes = p.as_bytes();
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({"base64": base64(bytes)}),
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A value given over the protocol as a payload: strings that are JSON
/// text are sent as that text, other strings as JSON strings, other
/// values serialised (the same rule as IIPs in graph files).
pub fn payload_of(data: &Value) -> Payload {
    match data {
        Value::String(s) if serde_json::from_str::<Value>(s).is_ok() => Payload::from(s.as_str()),
        other => Payload::json(other),
    }
}

/// The protocol an error about a request of `protocol` is sent on: its
/// own where clients know it, else `runtime`.
fn error_protocol(protocol: &str) -> &str {
    const KNOWN: [&str; 6] = ["runtime", "graph", "network", "component", "msgflo", "trace"];
    if KNOWN.contains(&protocol) {
        protocol
    } else {
        "runtime"
    }
}

fn error_only(protocol: &str, request_id: Option<Value>, message: String) -> Outcome {
    let mut f = frame(error_protocol(protocol), "error", json!({"message": message}));
    if let Some(id) = request_id {
        f["responseTo"] = id;
    }
    Outcome { reply: vec![f], ..Default::default() }
}
