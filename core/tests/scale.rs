//! `msgflo run GRAPH --scale FILE` on RabbitMQ: guv runs a slow worker role
//! as several instances while its queue is long, every job is done once,
//! and the role goes back to its minimum when the queue is empty; an
//! instance killed with SIGKILL and a queue deleted and recreated under it
//! do not stop the scaling.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use msgflo::transport::Target;
use msgflo::Payload;

const T: Duration = Duration::from_secs(60);

/// Pids of the worker processes of `role` (the repeat example with that role).
fn worker_pids(role: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if cmd.contains("examples/repeat") && cmd.contains(&format!(" {role} ")) && !stat.contains(") Z ") {
            pids.push(pid);
        }
    }
    pids
}

fn workers(role: &str) -> usize {
    worker_pids(role).len()
}

async fn wait_workers(role: &str, what: &str, f: impl Fn(usize) -> bool) -> usize {
    let start = Instant::now();
    loop {
        let n = workers(role);
        if f(n) {
            return n;
        }
        assert!(start.elapsed() < T, "{what}: {n} worker(s) after {T:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_role_scales_up_and_back_on_rabbitmq() {
    let url = amqp_url();
    let role = unique("slow");
    let dir = std::env::temp_dir().join(unique("msgflo-scale"));
    std::fs::create_dir_all(&dir).unwrap();
    let repeat = examples(&["repeat"]).join("repeat");
    std::fs::write(dir.join("graph.fbp"), format!("{role}(Slow)\n")).unwrap();
    std::fs::write(dir.join("msgflo.json"), format!(r#"{{"components": {{"Slow": "{} #ROLE --delay 0.3"}}}}"#, repeat.display())).unwrap();
    // 150 jobs of 0.3 s are 45 s for one worker; the deadline asks for more.
    std::fs::write(
        dir.join("scale.yaml"),
        format!(
            "{role}:\n  queue: {role}.IN\n  processing: 0.3\n  stddev: 0.05\n  deadline: 10\n  boot: 1\n  minimum: 1\n  maximum: 5\n  concurrency: 1\n  pollinterval: 1\n  stabilisation: 3\n  backend: local\n"
        ),
    )
    .unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgflo"))
        .current_dir(&dir)
        .args(["run", "graph.fbp", "--library", "msgflo.json", "--port", "0", "--broker", &url, "--scale", "scale.yaml"])
        .args(["--metrics", &metrics_addr, "--decisions", "decisions.jsonl"])
        .env_remove("MSGFLO_BROKER")
        .env("MSGFLO_DISCOVERY_PERIOD", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (_t, mut out) = tap_outport(&url, &format!("{role}.OUT")).await;
    wait_workers(&role, "the minimum runs", |n| n == 1).await;
    let publisher = msgflo::transport::connect(&url, &Default::default()).await.unwrap();
    // The worker has declared its queue once it runs; wait for its consumer.
    eventually("the worker consumes", T, || {
        let raw = &publisher;
        let q = format!("{role}.IN");
        async move { raw.queue_depth(&q).await.ok().flatten().map(|_| ()) }
    })
    .await;
    let t0 = Instant::now();
    for i in 0..150 {
        publisher.publish(Target::Queue(format!("{role}.IN")), Payload::from(format!("{i}")), true).await.unwrap();
    }
    let up = wait_workers(&role, "scaled up", |n| n >= 3).await;
    let took = t0.elapsed();
    // guv's metrics and decision log, from `msgflo run --scale` itself.
    let wanted = format!("guv_workers_desired{{role=\"{role}\"}} ");
    let text = eventually("guv's metrics", T, || async {
        let r = msgflo::guv::http::request("GET", &format!("http://{metrics_addr}/metrics"), &[], None, Duration::from_secs(2)).await.ok()?;
        r.body.lines().any(|l| l.strip_prefix(wanted.as_str()).and_then(|v| v.parse::<u32>().ok()).is_some_and(|n| n >= 2)).then_some(r.body)
    })
    .await;
    assert!(text.contains(&format!("guv_queue_ready{{role=\"{role}\"}}")), "{text}");
    let mut got = BTreeSet::new();
    while got.len() < 150 {
        let body = next_payload(&mut out, T).await;
        assert!(got.insert(body.clone()), "job {} done twice", String::from_utf8_lossy(&body));
    }
    let drained = t0.elapsed();
    assert!(tokio::time::timeout(Duration::from_millis(500), out.recv()).await.is_err(), "nothing more than the 150");
    wait_workers(&role, "back to the minimum", |n| n == 1).await;
    println!("150 jobs: scaled to {up} within {took:?}, all done once in {drained:?}, back to 1 after {:?}", t0.elapsed());

    // The backend's instance killed (SIGKILL, idle: nothing unacked): the
    // supervisor starts it again and scaling goes on.
    let killed = worker_pids(&role);
    assert_eq!(killed.len(), 1);
    unsafe { libc::kill(killed[0], libc::SIGKILL) };
    eventually("the killed instance replaced by one new instance", T, || async {
        let pids = worker_pids(&role);
        (pids.len() == 1 && pids[0] != killed[0]).then_some(())
    })
    .await;
    // The queue deleted and recreated under the running system: the worker
    // reconnects and declares it again, and scaling goes on.
    publisher.delete(&format!("{role}.IN")).await.unwrap();
    eventually("the queue is back", T, || {
        let raw = &publisher;
        let q = format!("{role}.IN");
        async move { raw.queue_depth(&q).await.ok().flatten().map(|_| ()) }
    })
    .await;
    for i in 150..250 {
        publisher.publish(Target::Queue(format!("{role}.IN")), Payload::from(format!("{i}")), true).await.unwrap();
    }
    wait_workers(&role, "scaled up again after the queue was recreated", |n| n >= 2).await;
    while got.len() < 250 {
        let body = next_payload(&mut out, T).await;
        assert!(got.insert(body.clone()), "job {} done twice", String::from_utf8_lossy(&body));
    }
    if let Some(pid) = child.id() {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = tokio::time::timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    wait_workers(&role, "no worker left", |n| n == 0).await;
    let log = std::fs::read_to_string(dir.join("decisions.jsonl")).unwrap();
    let decisions: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(decisions.len() >= 5 && decisions.iter().all(|d| d["role"] == role.as_str()), "{log}");
    // Within two polls of the first that saw the jobs, guv asked for (and
    // applied) at least three instances: counted in polls, not seconds, so
    // a busy machine does not fail it.
    let saw = decisions.iter().position(|d| d["jobs"].as_u64().unwrap_or(0) > 0).expect("a poll saw the jobs");
    let scaled = decisions.iter().position(|d| d["desired"].as_u64().unwrap_or(0) >= 3 && d["applied"].is_u64()).expect("a scale-up applied");
    assert!(scaled <= saw + 2, "scale-up {} polls after the first that saw jobs: {log}", scaled - saw);
    let raw = Raw::connect().await;
    let qs = [format!("{role}.IN"), format!("{role}.OUT"), format!("dead-{role}.IN")];
    let refs: Vec<&str> = qs.iter().map(String::as_str).collect();
    raw.cleanup(&refs, &refs).await;
}
