//! What observers (coordinators, `msgflo status`, the original's tools) say
//! to each other on the discovery channel, as typed messages. Every message
//! is the original's envelope `{"protocol", "command", "payload"}`:
//!
//! | protocol / command | payload | meaning |
//! |---|---|---|
//! | `discovery` / `participant` | a discovery message | a participant announces itself (the original's, unchanged) |
//! | `msgflo` / `query` | none | a newcomer asks running coordinators what they know |
//! | `msgflo` / `replay` | `{age_ms, message}` | an answer: one participant's latest announcement and how old it is |
//! | `msgflo` / `wires` | `{wires: [WireStatus]}` | an answer: the broker edges a coordinator wired |
//! | `msgflo` / `stats` | a [`StatsReport`] | a participant's processing times and outcomes since its previous heartbeat (for guv) |
//!
//! Anything else is refused with a reason (and counted by the caller).

use serde_json::{json, Value};

use super::WireStatus;
use crate::discovery::Announced;
use crate::stats::StatsReport;

/// One message on the discovery channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ObserverMessage {
    Participant(Box<Announced>),
    Query,
    /// A replayed announcement, `age_ms` old when it was sent.
    Replay { age_ms: u64, message: Box<ObserverMessage> },
    Wires(Vec<WireStatus>),
    Stats(Box<StatsReport>),
}

impl ObserverMessage {
    /// Read one message; `Err` says why it is not one. A replay holds a
    /// participant's announcement, nothing else (a replay of a replay, or
    /// of a query, is refused).
    pub fn decode(bytes: &[u8]) -> Result<ObserverMessage, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        Self::from_value(v, true)
    }

    fn from_value(mut v: Value, replay_allowed: bool) -> Result<ObserverMessage, String> {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(protocol), Some(command)) = (text(&v, "protocol"), text(&v, "command")) else {
            return Err("no protocol and command".into());
        };
        let payload = v.get_mut("payload").map(Value::take).unwrap_or(Value::Null);
        match (protocol.as_str(), command.as_str()) {
            ("discovery", "participant") => serde_json::from_value::<Announced>(payload)
                .map(|a| ObserverMessage::Participant(Box::new(a)))
                .map_err(|e| format!("not a discovery message: {e}")),
            ("msgflo", "query") => Ok(ObserverMessage::Query),
            ("msgflo", "wires") => serde_json::from_value::<Vec<WireStatus>>(payload["wires"].clone())
                .map(ObserverMessage::Wires)
                .map_err(|e| format!("not a list of wires: {e}")),
            ("msgflo", "stats") => serde_json::from_value::<StatsReport>(payload)
                .map(|r| ObserverMessage::Stats(Box::new(r)))
                .map_err(|e| format!("not a stats report: {e}")),
            ("msgflo", "replay") if replay_allowed => {
                let age_ms = payload["age_ms"].as_u64().unwrap_or(0);
                match Self::from_value(payload["message"].clone(), false)? {
                    m @ ObserverMessage::Participant(_) => Ok(ObserverMessage::Replay { age_ms, message: Box::new(m) }),
                    _ => Err("a replay holds a participant's announcement only".into()),
                }
            }
            (p, c) => Err(format!("unknown protocol {p:?} command {c:?}")),
        }
    }

    /// The message as JSON, in the envelope.
    pub fn to_json(&self) -> Value {
        match self {
            ObserverMessage::Participant(a) => json!({"protocol": "discovery", "command": "participant", "payload": a}),
            ObserverMessage::Query => json!({"protocol": "msgflo", "command": "query"}),
            ObserverMessage::Replay { age_ms, message } => {
                json!({"protocol": "msgflo", "command": "replay", "payload": {"age_ms": age_ms, "message": message.to_json()}})
            }
            ObserverMessage::Wires(wires) => json!({"protocol": "msgflo", "command": "wires", "payload": {"wires": wires}}),
            ObserverMessage::Stats(report) => json!({"protocol": "msgflo", "command": "stats", "payload": report}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::wiring::Wire;

    fn announced() -> Announced {
        serde_json::from_value(json!({"id": "r1", "role": "r", "component": "C", "inports": [], "outports": []})).unwrap()
    }

    #[test]
    fn every_message_goes_there_and_back() {
        let wire = WireStatus { wire: Wire::PubSub { src: "a.OUT".into(), tgt: "b.IN".into() }, edges: vec!["a OUT -> IN b".into()], error: None };
        for m in [
            ObserverMessage::Participant(Box::new(announced())),
            ObserverMessage::Query,
            ObserverMessage::Replay { age_ms: 1500, message: Box::new(ObserverMessage::Participant(Box::new(announced()))) },
            ObserverMessage::Wires(vec![wire]),
            ObserverMessage::Stats(Box::new(StatsReport {
                role: "r".into(),
                id: "r1".into(),
                inports: [("in".to_owned(), crate::stats::PortStats { queue: "r.IN".into(), acked: 2, nacked: 1, requeued: 0, inflight: 1, processing: [0.25, 0.5, 1.0].into() })].into(),
            })),
        ] {
            let bytes = serde_json::to_vec(&m.to_json()).unwrap();
            assert_eq!(ObserverMessage::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn what_is_not_one_says_why() {
        let cases: [(&str, &str); 7] = [
            ("{", "not JSON"),
            (r#"{"command": "query"}"#, "no protocol"),
            (r#"{"protocol": "discovery", "command": "participant", "payload": {"role": 5}}"#, "not a discovery message"),
            (r#"{"protocol": "msgflo", "command": "wires", "payload": {"wires": 3}}"#, "not a list of wires"),
            (r#"{"protocol": "msgflo", "command": "replay", "payload": {"message": {"protocol": "msgflo", "command": "query"}}}"#, "participant's announcement only"),
            (
                r#"{"protocol": "msgflo", "command": "replay", "payload": {"message": {"protocol": "msgflo", "command": "replay", "payload": {}}}}"#,
                "unknown protocol",
            ),
            (r#"{"protocol": "noflo", "command": "x"}"#, "unknown protocol \"noflo\""),
        ];
        for (text, why) in cases {
            let e = ObserverMessage::decode(text.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
