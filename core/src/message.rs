//! Payloads, their views, and deliveries with once-only completion.
//!
//! A payload is the exact bytes that crossed the broker. Nothing here
//! re-encodes it: JSON, text and binary all pass through a participant
//! unchanged unless user code builds a new payload.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The bytes of one message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(Vec<u8>);

/// What a payload holds, as the original libraries present it: parsed JSON
/// when it parses, else the text, else (invalid UTF-8) the raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Json(serde_json::Value),
    Text(String),
    Binary(Vec<u8>),
}

impl Payload {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Payload(bytes.into())
    }

    /// Serialise a JSON value (what the original does for every send).
    pub fn json(value: &serde_json::Value) -> Self {
        Payload(serde_json::to_vec(value).expect("serde_json::Value always serialises"))
    }

    /// The one JSON rule for values a handler returns (every language):
    /// `text` is what the host's serializer wrote for the value, compact and
    /// UTF-8 unescaped (Python `json.dumps(v, ensure_ascii=False,
    /// separators=(",", ":"))`, JavaScript `JSON.stringify`). It is sent as
    /// it is when it is valid JSON; otherwise (NaN, Infinity, anything that
    /// does not parse) it is refused with [`Error::InvalidPayload`] and
    /// nothing is sent. Bytes are never passed through this: they go as they
    /// are.
    pub fn json_text(text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            Ok(_) => Ok(Payload(text.into_bytes())),
            Err(e) => Err(Error::InvalidPayload(format!(
                "not JSON, nothing sent: {e} (NaN, Infinity and -Infinity are not JSON numbers; send null or a string)"
            ))),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The payload as text, if it is valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The payload parsed as JSON, if it is JSON.
    pub fn parse_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.0).ok()
    }

    /// JSON if it parses, else text, else bytes. Never fails.
    pub fn data(&self) -> Data {
        if let Some(v) = self.parse_json() {
            return Data::Json(v);
        }
        match self.text() {
            Some(t) => Data::Text(t.to_owned()),
            None => Data::Binary(self.0.clone()),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v)
    }
}
impl From<&[u8]> for Payload {
    fn from(v: &[u8]) -> Self {
        Payload(v.to_vec())
    }
}
impl From<String> for Payload {
    fn from(v: String) -> Self {
        Payload(v.into_bytes())
    }
}
impl From<&str> for Payload {
    fn from(v: &str) -> Self {
        Payload(v.as_bytes().to_vec())
    }
}
impl From<&serde_json::Value> for Payload {
    fn from(v: &serde_json::Value) -> Self {
        Payload::json(v)
    }
}
impl From<serde_json::Value> for Payload {
    fn from(v: serde_json::Value) -> Self {
        Payload::json(&v)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 64;
        match self.text() {
            Some(t) if t.len() <= SHOW => write!(f, "Payload({t:?})"),
            Some(t) => {
                let cut = (0..=SHOW).rev().find(|i| t.is_char_boundary(*i)).unwrap_or(0);
                write!(f, "Payload({:?}... {} bytes)", &t[..cut], t.len())
            }
            None => write!(f, "Payload(<{} bytes binary>)", self.0.len()),
        }
    }
}

/// One message received on an inport.
#[derive(Debug, Clone)]
pub struct Message {
    /// The inport (port id, not queue) it arrived on.
    pub inport: Arc<str>,
    pub payload: Payload,
    /// True when the broker says this was delivered before (AMQP only).
    pub redelivered: bool,
    /// When it was sent, in seconds since the Unix epoch, if the sender said
    /// (AMQP `timestamp` property; our discovery messages carry it, so a
    /// stale one left in the `fbp` queue is recognised as old).
    pub timestamp: Option<u64>,
}

/// How a delivery is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Processed: remove it (after the outputs it caused are confirmed).
    Ack,
    /// Failed: never requeued; goes to the dead-letter route when one exists.
    Nack,
    /// Not handled (dropped unsettled, or its outputs were refused): put it
    /// back so it is delivered again.
    Requeue,
}

/// The transport side of a delivery: where its settlement goes.
///
/// `settle` must not block; transports queue the settlement and perform it
/// in order with the publishes issued before it.
pub(crate) trait Settle: Send + Sync {
    fn settle(&self, tag: u64, generation: u64, how: Settlement);
}

const PENDING: u8 = 0;
const ACKED: u8 = 1;
const NACKED: u8 = 2;

/// A message plus the right (and duty) to settle it exactly once.
///
/// Dropping an unsettled delivery requeues it, so nothing is lost when user
/// code forgets it or a host-language exception skips the ack.
pub struct Delivery {
    message: Message,
    state: AtomicU8,
    tag: u64,
    generation: u64,
    settler: Arc<dyn Settle>,
    /// Set when a participant hands it to its handler: the settlement is
    /// counted in the participant's stats.
    handed: Option<crate::stats::Handed>,
}

impl Delivery {
    pub(crate) fn new(message: Message, tag: u64, generation: u64, settler: Arc<dyn Settle>) -> Self {
        Delivery {
            message,
            state: AtomicU8::new(PENDING),
            tag,
            generation,
            settler,
            handed: None,
        }
    }

    /// Being handed to a handler now; its settlement goes into `stats`.
    pub(crate) fn hand_over(&mut self, stats: &Arc<crate::stats::Stats>, queue: &str) {
        stats.handed(&self.message.inport, queue);
        self.handed = Some(crate::stats::Handed { at: std::time::Instant::now(), stats: stats.clone() });
    }

    fn count(&self, how: Settlement) {
        if let Some(h) = &self.handed {
            h.stats.settled(&self.message.inport, how, h.at.elapsed());
        }
    }

    pub fn message(&self) -> &Message {
        &self.message
    }

    pub fn inport(&self) -> &str {
        &self.message.inport
    }

    pub fn payload(&self) -> &Payload {
        &self.message.payload
    }

    /// Mark as processed. The broker is told once every output sent before
    /// this call is confirmed.
    pub fn ack(&self) -> Result<()> {
        self.complete(ACKED, Settlement::Ack)
    }

    /// Mark as failed; it goes to the dead-letter route, never back to the queue.
    pub fn nack(&self) -> Result<()> {
        self.complete(NACKED, Settlement::Nack)
    }

    /// Whether ack or nack was already called.
    pub fn is_settled(&self) -> bool {
        self.state.load(Ordering::Acquire) != PENDING
    }

    fn complete(&self, to: u8, how: Settlement) -> Result<()> {
        match self.state.compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.count(how);
                self.settler.settle(self.tag, self.generation, how);
                Ok(())
            }
            Err(ACKED) => Err(Error::AlreadyCompleted("acked")),
            Err(_) => Err(Error::AlreadyCompleted("nacked")),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.state.load(Ordering::Acquire) == PENDING {
            tracing::debug!(inport = %self.message.inport, "delivery dropped unsettled; requeueing it");
            self.count(Settlement::Requeue);
            self.settler.settle(self.tag, self.generation, Settlement::Requeue);
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("inport", &self.message.inport)
            .field("payload", &self.message.payload)
            .field("settled", &self.is_settled())
            .finish()
    }
}

#[cfg(test)]
mod json_rule_tests {
    use super::*;

    #[test]
    fn valid_json_passes_unchanged_and_unescaped() {
        for t in ["{\"text\":\"æ€𝄞\"}", "[1,2.5,null]", "\"x\"", "0", "{\"b\":1,\"a\":2}"] {
            assert_eq!(Payload::json_text(t).unwrap().as_bytes(), t.as_bytes());
        }
    }

    #[test]
    fn nan_and_infinity_are_refused_with_a_clear_error() {
        for t in ["NaN", "Infinity", "-Infinity", "{\"x\":NaN}", "[1,Infinity]", "", "{"] {
            let e = Payload::json_text(t).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidPayload, "{t}");
            assert!(e.to_string().starts_with("not JSON, nothing sent: "), "{e}");
        }
        assert_eq!(
            Payload::json_text("NaN").unwrap_err().to_string(),
            "not JSON, nothing sent: expected value at line 1 column 1 \
             (NaN, Infinity and -Infinity are not JSON numbers; send null or a string)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Record(Mutex<Vec<Settlement>>);
    impl Settle for Record {
        fn settle(&self, _tag: u64, _gen: u64, how: Settlement) {
            self.0.lock().unwrap().push(how);
        }
    }

    fn delivery(rec: &Arc<Record>) -> Delivery {
        let msg = Message { inport: "in".into(), payload: "x".into(), redelivered: false, timestamp: None };
        Delivery::new(msg, 1, 1, rec.clone())
    }

    #[test]
    fn views() {
        assert_eq!(Payload::from("{\"a\":1}").data(), Data::Json(serde_json::json!({"a":1})));
        assert_eq!(Payload::from("hello").data(), Data::Text("hello".into()));
        assert_eq!(Payload::new(vec![0xff, 0x00]).data(), Data::Binary(vec![0xff, 0x00]));
    }

    #[test]
    fn settles_exactly_once() {
        let rec = Arc::new(Record::default());
        let d = delivery(&rec);
        d.ack().unwrap();
        assert_eq!(d.ack().unwrap_err().code(), crate::ErrorCode::AlreadyCompleted);
        assert_eq!(d.nack().unwrap_err().code(), crate::ErrorCode::AlreadyCompleted);
        drop(d);
        assert_eq!(*rec.0.lock().unwrap(), vec![Settlement::Ack]);
    }

    #[test]
    fn drop_unsettled_requeues() {
        let rec = Arc::new(Record::default());
        drop(delivery(&rec));
        assert_eq!(*rec.0.lock().unwrap(), vec![Settlement::Requeue]);
    }
}
