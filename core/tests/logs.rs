//! The core's log lines as a host language gets them (msgflo::logs). Its
//! own test binary: the tracing subscriber is installed once per process.

use std::sync::{Arc, Mutex};

use msgflo::logs::{forward, set_filter, Record};
use tracing::Level;

#[test]
fn events_become_records_and_the_level_can_change() {
    let seen: Arc<Mutex<Vec<Record>>> = Default::default();
    let s = seen.clone();
    assert!(forward(Some("info"), move |r| s.lock().unwrap().push(r)).unwrap());
    // Installed once per process.
    assert!(!forward(None, |_| {}).unwrap());
    tracing::warn!(target: "msgflo::transport::amqp", queue = "a.IN", attempts = 3, "lost connection");
    tracing::debug!(target: "msgflo::transport::amqp", "not at info");
    tracing::info!(target: "other_crate", "not ours");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].level, Level::WARN);
        assert_eq!(seen[0].python_level(), 30);
        assert_eq!(seen[0].level_name(), "warn");
        assert_eq!(seen[0].logger, "msgflo.transport.amqp");
        assert_eq!(seen[0].message, "lost connection queue=a.IN attempts=3");
    }
    assert!(set_filter(Some("debug")).unwrap());
    tracing::debug!(target: "msgflo::participant", "now shown");
    assert_eq!(seen.lock().unwrap().last().unwrap().message, "now shown");
    for bad in ["loud", "debug,x=1"] {
        assert!(set_filter(Some(bad)).unwrap_err().contains("debug"), "{bad}");
    }
}
