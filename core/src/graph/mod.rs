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
        self.check().map_err(|(message, _)| message)
    }

    /// [`Graph::validate`], with the process name the complaint is about.
    fn check(&self) -> Result<(), (String, String)> {
        for c in &self.connections {
            for end in c.src.iter().chain(std::iter::once(&c.tgt)) {
                if !self.processes.contains_key(&end.process) {
                    return Err((format!("connection to undeclared process {:?}", end.process), end.process.clone()));
                }
            }
            if c.src.is_none() && c.data.is_none() {
                let message = format!("connection to {}.{} has neither source nor data", c.tgt.process, c.tgt.port);
                return Err((message, c.tgt.process.clone()));
            }
        }
        for (name, e) in self.inports.iter().chain(&self.outports) {
            if !self.processes.contains_key(&e.process) {
                return Err((format!("exported port {name:?} refers to undeclared process {:?}", e.process), e.process.clone()));
            }
        }
        Ok(())
    }

    /// [`Graph::validate`] for a graph parsed from `text`: the error points
    /// at the first place the process it is about appears in the text (as a
    /// word in `.fbp`, as a JSON string with `quoted`); 1:1 only when the
    /// name cannot be found there.
    pub(crate) fn validate_in(&self, text: &str, quoted: bool) -> Result<(), ParseError> {
        self.check().map_err(|(message, process)| {
            let (line, column) = locate(text, &process, quoted).unwrap_or((1, 1));
            ParseError { line, column, message }
        })
    }
}

/// 1-based line and column (in characters) of the first occurrence of
/// `name` in `text`: as a whole word, or as the JSON string `"name"`.
fn locate(text: &str, name: &str, quoted: bool) -> Option<(usize, usize)> {
    if name.is_empty() {
        return None;
    }
    let needle = if quoted { serde_json::to_string(name).ok()? } else { name.to_owned() };
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '/' || c == '-');
    let mut from = 0;
    while let Some(i) = text[from..].find(&needle).map(|i| i + from) {
        let end = i + needle.len();
        if quoted || (!word(text[..i].chars().next_back()) && !word(text[end..].chars().next())) {
            let before = &text[..i];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Some((line, column));
        }
        from = i + needle.len().max(1);
    }
    None
}
