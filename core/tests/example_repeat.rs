//! The repeat example as a process: readiness line first, data through,
//! clean exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn example(name: &str) -> std::path::PathBuf {
    // Test binaries live in target/<profile>/deps; examples beside it.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

#[tokio::test]
async fn repeat_process_ready_line_data_and_sigterm() {
    let role = unique("exrep");
    let mut child = Command::new(example("repeat"))
        .arg(&role)
        .env("MSGFLO_BROKER", amqp_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo test builds examples");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains(&role), "readiness line names the role: {first}");

    let raw = Raw::connect().await;
    let out = raw.tap(&format!("{role}.OUT")).await;
    raw.send_to_queue(&format!("{role}.IN"), b"{\"n\":1}").await;
    assert_eq!(raw.get(&out, Duration::from_secs(10)).await.delivery.data, b"{\"n\":1}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    assert_eq!(raw.depth(&format!("{role}.IN")).await, 0);
    let q = format!("{role}.IN");
    raw.cleanup(&[&q], &[&q, &format!("{role}.OUT")]).await;
}
