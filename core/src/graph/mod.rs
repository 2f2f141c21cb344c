//! Graphs: processes (roles) with components, and the connections between
//! their ports, read from the `.fbp` DSL ([`fbp`]) or the JSON graph format
//! ([`json`]). The coordinator turns a graph into bindings and IIPs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod fbp;
pub mod json;

/// A node: one role, and the component it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub component: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// One end of an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRef {
    pub process: String,
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// An edge: from a port, or an initial information packet (IIP), to a port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<PortRef>,
    /// IIP data (with `src` absent): in the DSL always the quoted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    pub tgt: PortRef,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Connection {
    /// An IIP's payload: JSON text is sent as it is, other text as a JSON
    /// string, other values serialised.
    pub fn iip_payload(&self) -> Option<crate::Payload> {
        match self.data.as_ref()? {
            serde_json::Value::String(s) if serde_json::from_str::<serde_json::Value>(s).is_ok() => Some(s.as_str().into()),
            other => Some(crate::Payload::json(other)),
        }
    }
}

/// An exported port of the graph (`INPORT=proc.PORT:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub process: String,
    pub port: String,
}

/// A whole graph.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Graph {
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub processes: BTreeMap<String, Process>,
    #[serde(default)]
    pub connections: Vec<Connection>,
    #[serde(default)]
    pub inports: BTreeMap<String, Export>,
    #[serde(default)]
    pub outports: BTreeMap<String, Export>,
}

/// Where a graph file went wrong: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Graph {
    /// Read a graph by file extension: `.fbp`, else JSON.
    pub fn from_file(path: &std::path::Path) -> crate::Result<Graph> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::InvalidDefinition(format!("cannot read graph {}: {e}", path.display())))?;
        let parsed = if path.extension().is_some_and(|e| e == "fbp") { fbp::parse(&text) } else { json::parse(&text) };
        parsed.map_err(|e| crate::Error::InvalidDefinition(format!("{}:{e}", path.display())))
    }

    /// Check that every connection names declared processes.
    pub fn validate(&self) -> Result<(), String> {
        for c in &self.connections {
            for end in c.src.iter().chain(std::iter::once(&c.tgt)) {
                if !self.processes.contains_key(&end.process) {
                    return Err(format!("connection to undeclared process {:?}", end.process));
                }
            }
            if c.src.is_none() && c.data.is_none() {
                return Err(format!("connection to {}.{} has neither source nor data", c.tgt.process, c.tgt.port));
            }
        }
        for (name, e) in self.inports.iter().chain(&self.outports) {
            if !self.processes.contains_key(&e.process) {
                return Err(format!("exported port {name:?} refers to undeclared process {:?}", e.process));
            }
        }
        Ok(())
    }
}
