//! Participant definitions and the discovery message that announces them.
//!
//! A [`Definition`] is what a component author writes (ports, label, icon).
//! Instantiating it for a role gives a [`ParticipantInfo`]: the id, the role,
//! and a queue for every port that is not hidden. Its JSON is the `payload`
//! of the discovery envelope, with exactly the seven keys the original's
//! tools check: `id, role, component, label, icon, inports, outports`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Icon used when a definition names none (the original's default).
pub const DEFAULT_ICON: &str = "file-word-o";

/// Default period between discovery messages is `period / 2.2`.
pub const DEFAULT_PERIOD_SECS: f64 = 60.0;

/// One port as a component author declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PortDef {
    pub id: String,
    #[serde(rename = "type", default = "any")]
    pub type_: String,
    /// Explicit queue/topic; `None` means `role.PORTID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Hidden ports get no queue and are left out of discovery.
    #[serde(default)]
    pub hidden: bool,
    /// `Some(false)` declares transient, auto-deleted queues/exchanges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

fn any() -> String {
    "any".to_owned()
}

impl PortDef {
    /// A port of type `any` with the default queue.
    pub fn new(id: impl Into<String>) -> Self {
        PortDef { id: id.into(), type_: any(), ..Default::default() }
    }

    pub fn with_type(mut self, t: impl Into<String>) -> Self {
        self.type_ = t.into();
        self
    }

    pub fn with_queue(mut self, q: impl Into<String>) -> Self {
        self.queue = Some(q.into());
        self
    }

    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    pub fn transient(mut self) -> Self {
        self.persistent = Some(false);
        self
    }
}

/// What a component author declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Definition {
    pub component: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Fixed participant id; normally generated as `role-uuid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub inports: Vec<PortDef>,
    #[serde(default)]
    pub outports: Vec<PortDef>,
}

impl Definition {
    pub fn new(component: impl Into<String>) -> Self {
        Definition { component: component.into(), ..Default::default() }
    }

    pub fn inport(mut self, p: PortDef) -> Self {
        self.inports.push(p);
        self
    }

    pub fn outport(mut self, p: PortDef) -> Self {
        self.outports.push(p);
        self
    }

    pub fn label(mut self, l: impl Into<String>) -> Self {
        self.label = Some(l.into());
        self
    }

    pub fn icon(mut self, i: impl Into<String>) -> Self {
        self.icon = Some(i.into());
        self
    }

    /// Parse a definition from JSON (the shape the bindings hand over).
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::InvalidDefinition(e.to_string()))
    }

    /// Check and bind to a role: unique port ids, a component name, a role.
    pub fn instantiate(&self, role: &str) -> Result<ParticipantInfo> {
        if role.trim().is_empty() {
            return Err(Error::InvalidDefinition("role must not be empty".into()));
        }
        if self.component.trim().is_empty() {
            return Err(Error::InvalidDefinition("component name must not be empty".into()));
        }
        let ports = |defs: &[PortDef], dir: &str| -> Result<Vec<Port>> {
            let mut seen = std::collections::HashSet::new();
            defs.iter()
                .map(|p| {
                    if p.id.is_empty() {
                        return Err(Error::InvalidDefinition(format!("{dir} with an empty id")));
                    }
                    if !seen.insert(p.id.as_str()) {
                        return Err(Error::InvalidDefinition(format!("{dir} {:?} declared twice", p.id)));
                    }
                    let queue = match (&p.queue, p.hidden) {
                        (_, true) => None,
                        (Some(q), false) if !q.is_empty() => Some(q.clone()),
                        _ => Some(default_queue(role, &p.id)),
                    };
                    Ok(Port {
                        id: p.id.clone(),
                        type_: p.type_.clone(),
                        queue,
                        description: p.description.clone(),
                        schema: p.schema.clone(),
                        hidden: p.hidden,
                        persistent: p.persistent.unwrap_or(true),
                    })
                })
                .collect()
        };
        Ok(ParticipantInfo {
            id: self
                .id
                .clone()
                .filter(|s| !s.is_empty())
                .or_else(|| given_id(role))
                .unwrap_or_else(|| format!("{role}-{}", uuid::Uuid::new_v4())),
            role: role.to_owned(),
            component: self.component.clone(),
            label: self.label.clone().unwrap_or_else(|| self.component.clone()),
            icon: self.icon.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_ICON.to_owned()),
            inports: ports(&self.inports, "inport")?,
            outports: ports(&self.outports, "outport")?,
        })
    }
}

/// `role.PORTID` with the port id upper-cased, as the original names queues.
pub fn default_queue(role: &str, port: &str) -> String {
    format!("{role}.{}", port.to_uppercase())
}

/// A port of a running participant.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub id: String,
    pub type_: String,
    /// `None` for hidden ports.
    pub queue: Option<String>,
    pub description: Option<String>,
    pub schema: Option<String>,
    pub hidden: bool,
    /// Durable queue/exchange and persistent messages (the default).
    pub persistent: bool,
}

/// A participant bound to a role: what discovery announces.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantInfo {
    pub id: String,
    pub role: String,
    pub component: String,
    pub label: String,
    pub icon: String,
    pub inports: Vec<Port>,
    pub outports: Vec<Port>,
}

impl ParticipantInfo {
    pub fn inport(&self, id: &str) -> Option<&Port> {
        self.inports.iter().find(|p| p.id == id)
    }

    pub fn outport(&self, id: &str) -> Option<&Port> {
        self.outports.iter().find(|p| p.id == id)
    }

    /// The discovery payload: exactly the seven keys; hidden ports left out.
    pub fn discovery_payload(&self) -> serde_json::Value {
        let ports = |ps: &[Port]| -> serde_json::Value {
            ps.iter()
                .filter_map(|p| {
                    let queue = p.queue.as_ref()?;
                    let mut o = serde_json::Map::new();
                    o.insert("id".into(), p.id.clone().into());
                    o.insert("type".into(), p.type_.clone().into());
                    o.insert("queue".into(), queue.clone().into());
                    if let Some(d) = &p.description {
                        o.insert("description".into(), d.clone().into());
                    }
                    if let Some(s) = &p.schema {
                        o.insert("schema".into(), s.clone().into());
                    }
                    o.insert("hidden".into(), false.into());
                    Some(serde_json::Value::Object(o))
                })
                .collect()
        };
        serde_json::json!({
            "id": self.id,
            "role": self.role,
            "component": self.component,
            "label": self.label,
            "icon": self.icon,
            "inports": ports(&self.inports),
            "outports": ports(&self.outports),
        })
    }

    /// The full discovery message as sent on `fbp`.
    pub fn discovery_message(&self) -> serde_json::Value {
        serde_json::json!({
            "protocol": "discovery",
            "command": "participant",
            "payload": self.discovery_payload(),
        })
    }
}

/// Interval between discovery messages: `period / 2.2`, with the period in
/// seconds from `MSGFLO_DISCOVERY_PERIOD` (default 60). Bad values fall back
/// to the default with a warning.
pub fn heartbeat_interval() -> std::time::Duration {
    let period = match std::env::var("MSGFLO_DISCOVERY_PERIOD") {
        Ok(v) => crate::seconds::parse_period("MSGFLO_DISCOVERY_PERIOD", &v).unwrap_or_else(|e| {
            tracing::warn!("{e}; using {DEFAULT_PERIOD_SECS} s");
            std::time::Duration::from_secs_f64(DEFAULT_PERIOD_SECS)
        }),
        Err(_) => std::time::Duration::from_secs_f64(DEFAULT_PERIOD_SECS),
    };
    period.div_f64(2.2)
}

/// A discovery message as received, checked enough to be trusted.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Announced {
    pub id: String,
    pub role: String,
    #[serde(default)]
    pub component: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default)]
    pub inports: Vec<AnnouncedPort>,
    #[serde(default)]
    pub outports: Vec<AnnouncedPort>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct AnnouncedPort {
    pub id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// The participant id a coordinator gave this process in
/// `MSGFLO_PARTICIPANT_ID` (so it knows which instance ended when the
/// process exits): taken by the first participant of the process with the
/// role in `MSGFLO_PARTICIPANT_ROLE`, once.
fn given_id(role: &str) -> Option<String> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let id = std::env::var("MSGFLO_PARTICIPANT_ID").ok().filter(|s| !s.is_empty())?;
    if std::env::var("MSGFLO_PARTICIPANT_ROLE").ok().as_deref() != Some(role) {
        return None;
    }
    (!TAKEN.swap(true, std::sync::atomic::Ordering::Relaxed)).then_some(id)
}

/// Parse a message from `fbp`. Anything that is not a participant discovery
/// is an error that says why (callers log it and carry on).
pub fn parse_discovery(bytes: &[u8]) -> Result<Announced> {
    #[derive(Deserialize)]
    struct Envelope {
        protocol: String,
        command: String,
        payload: serde_json::Value,
    }
    let bad = |why: String| Error::InvalidDefinition(format!("not a discovery message: {why}"));
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if env.protocol != "discovery" || env.command != "participant" {
        return Err(bad(format!("protocol {:?} command {:?}", env.protocol, env.command)));
    }
    serde_json::from_value(env.payload).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeat() -> Definition {
        Definition::new("Repeat")
            .inport(PortDef::new("in"))
            .outport(PortDef::new("out"))
            .outport(PortDef::new("secret").hidden())
    }

    #[test]
    fn default_queues_and_id() {
        let info = repeat().instantiate("rep").unwrap();
        assert_eq!(info.inports[0].queue.as_deref(), Some("rep.IN"));
        assert_eq!(info.outports[0].queue.as_deref(), Some("rep.OUT"));
        assert_eq!(info.outports[1].queue, None);
        assert!(info.id.starts_with("rep-"));
        assert_eq!(info.id.len(), "rep-".len() + 36);
        assert_ne!(info.id, repeat().instantiate("rep").unwrap().id);
    }

    #[test]
    fn discovery_has_exactly_the_seven_keys() {
        let msg = repeat().instantiate("rep").unwrap().discovery_message();
        assert_eq!(msg["protocol"], "discovery");
        assert_eq!(msg["command"], "participant");
        let mut keys: Vec<_> = msg["payload"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["component", "icon", "id", "inports", "label", "outports", "role"]);
        assert_eq!(msg["payload"]["icon"], DEFAULT_ICON);
        let outs = msg["payload"]["outports"].as_array().unwrap();
        assert_eq!(outs.len(), 1, "hidden port left out");
        assert_eq!(outs[0], serde_json::json!({"id":"out","type":"any","queue":"rep.OUT","hidden":false}));
    }

    #[test]
    fn round_trips_through_parse() {
        let info = repeat().instantiate("rep").unwrap();
        let bytes = serde_json::to_vec(&info.discovery_message()).unwrap();
        let a = parse_discovery(&bytes).unwrap();
        assert_eq!((a.id.as_str(), a.role.as_str()), (info.id.as_str(), "rep"));
        assert_eq!(a.inports[0].queue.as_deref(), Some("rep.IN"));
    }

    #[test]
    fn rejects_bad_definitions_and_messages() {
        let dup = Definition::new("X").inport(PortDef::new("a")).inport(PortDef::new("a"));
        assert_eq!(dup.instantiate("r").unwrap_err().code(), crate::ErrorCode::InvalidDefinition);
        assert!(Definition::new("X").instantiate("").is_err());
        assert!(Definition::from_json("{\"inports\": 3}").is_err());
        for bad in [&b"garbage"[..], b"{}", b"{\"protocol\":\"x\",\"command\":\"participant\",\"payload\":{}}"] {
            assert!(parse_discovery(bad).is_err());
        }
    }

    #[test]
    fn definition_json_uses_type_key() {
        let d = Definition::from_json(r#"{"component":"C","inports":[{"id":"in","type":"string"}]}"#).unwrap();
        assert_eq!(d.inports[0].type_, "string");
        assert_eq!(d.instantiate("r").unwrap().label, "C");
    }
}
