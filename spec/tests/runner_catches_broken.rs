//! The runner itself is tested: a deliberately broken participant
//! (spec/shims/broken/broken.js: wrong discovery keys, inport declared
//! without the dead-letter argument, never acks, crashes on non-JSON, dies
//! on SIGTERM) must fail exactly the scenarios it breaks, and a correct one
//! (the Rust shim) must pass them all. Real RabbitMQ on loopback.

use std::process::Command;

fn amqp() -> String {
    std::env::var("MSGFLO_TEST_AMQP").unwrap_or_else(|_| "amqp://127.0.0.1:5672".into())
}

/// One run at a time: the broker-restart scenario restarts RabbitMQ.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_spec(cmd: &[&str]) -> (bool, String) {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_msgflo-spec"))
        .args(["--broker", &amqp(), "--"])
        .args(cmd)
        .output()
        .expect("run msgflo-spec");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn broken_participant_fails_the_right_scenarios() {
    let broken = concat!(env!("CARGO_MANIFEST_DIR"), "/shims/broken/broken.js");
    let (ok, out) = run_spec(&["node", broken]);
    assert!(!ok, "the run must fail:\n{out}");
    for failing in [
        "discovery-payload",
        "amqp-declarations",
        "text-and-binary-passthrough",
        "nack-dead-letter",
        "handler-error",
        "heartbeat",
        "sigterm-no-loss",
        "broker-restart",
        "ordered-stream",
        "json-rule",
    ] {
        assert!(out.contains(&format!("FAILED {failing}:")), "{failing} should fail:\n{out}");
    }
    for passing in ["readiness", "json-repeat"] {
        assert!(out.contains(&format!("ok {passing} ")), "{passing} should pass:\n{out}");
    }
    assert!(out.trim_end().ends_with("2 passed, 11 failed"), "{out}");
}

#[test]
fn correct_participant_passes_everything() {
    let (ok, out) = run_spec(&[env!("CARGO_BIN_EXE_msgflo-spec-shim")]);
    assert!(ok, "{out}");
    assert!(out.trim_end().ends_with("13 passed, 0 failed"), "{out}");
}
