//! The `msgflo` command as a process: run (on RabbitMQ, Mosquitto and the
//! embedded broker), supervision and no orphans, setup, register, send,
//! dump, procfile, status, and bad input.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use msgflo::coordinator::{Coordinator, Options};
use msgflo::transport::{self, ConnectOptions, Declaration, PortKind, Target, Transport};
use msgflo::Payload;

const T: Duration = Duration::from_secs(30);

fn msgflo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_msgflo"));
    c.env_remove("MSGFLO_BROKER").env_remove("CLOUDAMQP_URL").env("MSGFLO_DISCOVERY_PERIOD", "2");
    c
}

fn example(name: &str) -> PathBuf {
    examples(&["repeat"]).join(name)
}

/// A folder with a graph and a library whose `Repeat` is our example.
fn project(graph: &str, extra_components: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("msgflo-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("graph.fbp"), graph).unwrap();
    let lib = format!(
        r#"{{"components": {{"Repeat": "{} #ROLE"{extra_components}}}}}"#,
        example("repeat").display()
    );
    std::fs::write(dir.join("msgflo.json"), lib).unwrap();
    dir
}

/// A running `msgflo` process with its output lines collected.
struct Proc {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    seen_out: Vec<String>,
    seen_err: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("msgflo starts");
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Proc { child, out, err, seen_out: vec![], seen_err: vec![] }
    }

    fn drain(&mut self) {
        self.seen_out.extend(self.out.try_iter());
        self.seen_err.extend(self.err.try_iter());
    }

    /// Wait for a line (stdout or stderr) containing `text`; returns it.
    fn wait_line(&mut self, text: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            self.drain();
            if let Some(l) = self.seen_out.iter().chain(&self.seen_err).find(|l| l.contains(text)) {
                return l.clone();
            }
            if start.elapsed() > timeout {
                panic!("no line with {text:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}", self.seen_out.join("\n"), self.seen_err.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < timeout, "msgflo did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !cmd.contains("msgflo-cli") {
                // Zombies do not count: they are gone, waiting to be reaped.
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                if !stat.contains(") Z ") {
                    out.push(pid);
                }
            }
        }
    }
    out
}

fn wait_no_processes(needle: &str, timeout: Duration) {
    let start = Instant::now();
    while !processes_with(needle).is_empty() {
        assert!(start.elapsed() < timeout, "processes with {needle:?} still running: {:?}", processes_with(needle));
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn connect(url: &str) -> Arc<dyn Transport> {
    transport::connect(url, &ConnectOptions::default()).await.unwrap()
}

async fn tap(url: &str, outqueue: &str) -> (Arc<dyn Transport>, tokio::sync::mpsc::Receiver<msgflo::Delivery>) {
    tap_outport(url, outqueue).await
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<msgflo::Delivery>) -> Vec<u8> {
    next_payload(rx, T).await
}

async fn delete_ports(url: &str, roles: &[&str]) {
    if url.starts_with("amqp") {
        let t = connect(url).await;
        for r in roles {
            for q in [format!("{r}.IN"), format!("{r}.OUT")] {
                let _ = t.delete(&q).await;
                let _ = t.delete(&format!("dead-{q}")).await;
            }
        }
    }
}

/// `msgflo run`: participants started, graph wired, IIP delivered, data
/// flows; SIGTERM stops everything and leaves no process behind.
async fn run_graph(broker: Option<String>) {
    let (a, b) = (unique("runa"), unique("runb"));
    let dir = project(&format!("'\"hi\"' -> IN {a}(Repeat)\n{a} OUT -> IN {b}(Repeat)\n"), "");
    let mut cmd = msgflo();
    cmd.arg("run").arg(dir.join("graph.fbp")).arg("--library").arg(dir.join("msgflo.json")).args(["--port", "0"]);
    if let Some(b) = &broker {
        cmd.args(["--broker", b]);
    }
    let mut p = Proc::spawn(cmd);
    let first = p.wait_line("msgflo: running", T);
    let url = match &broker {
        Some(b) => b.clone(),
        None => {
            assert!(first.contains("(embedded broker)"), "{first}");
            first.split(" on ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
        }
    };
    // The tap is there before the b participant publishes the IIP echo
    // (AMQP: the tap declares b.OUT; MQTT: QoS 0 needs a subscriber first).
    let (_t, mut rx) = tap(&url, &format!("{b}.OUT")).await;
    p.wait_line("(graph complete)", T);
    assert_eq!(processes_with(&a).len(), 1, "one process per role");
    // The IIP went through a and b. On MQTT it may have passed before the
    // tap subscribed, so check data sent now instead.
    let sender = connect(&url).await;
    sender.publish(Target::Queue(format!("{a}.IN")), Payload::from("[42]"), true).await.unwrap();
    loop {
        let got = next(&mut rx).await;
        if got == b"[42]" {
            break;
        }
        assert_eq!(got, b"\"hi\"", "only the IIP echo may come first");
    }
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(T);
    assert!(status.success(), "{status:?}");
    wait_no_processes(&a, Duration::from_secs(5));
    wait_no_processes(&b, Duration::from_secs(5));
    delete_ports(&url, &[&a, &b]).await;
}

#[tokio::test]
async fn run_on_rabbitmq() {
    run_graph(Some(amqp_url())).await;
}

#[tokio::test]
async fn run_on_mosquitto() {
    run_graph(Some(mqtt_url())).await;
}

#[tokio::test]
async fn run_on_the_embedded_broker() {
    run_graph(None).await;
}

/// A killed coordinator (SIGKILL: no chance to clean up) takes its
/// participants with it.
#[tokio::test]
async fn children_die_with_a_killed_coordinator() {
    let a = unique("orphan");
    let dir = project(&format!("{a}(Repeat)\n"), "");
    let mut cmd = msgflo();
    cmd.arg("run").arg(dir.join("graph.fbp")).arg("--library").arg(dir.join("msgflo.json")).args(["--port", "0"]);
    let mut p = Proc::spawn(cmd);
    p.wait_line(&format!("{a} | "), T);
    assert_eq!(processes_with(&a).len(), 1);
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    wait_no_processes(&a, Duration::from_secs(5));
}

/// A participant that exits at once is restarted with a backoff and a clear
/// log line; an unknown component is reported; the coordinator keeps
/// running.
#[tokio::test]
async fn crashing_and_unknown_participants_do_not_stop_the_coordinator() {
    let (crash, ghost, ok) = (unique("crash"), unique("ghost"), unique("fine"));
    let dir = project(
        &format!("{crash}(Crash)\n{ghost}(NoSuchComponent)\n{ok}(Repeat)\n"),
        r#", "Crash": "sh -c 'echo starting #ROLE; exit 3'""#,
    );
    let mut cmd = msgflo();
    cmd.arg("run").arg(dir.join("graph.fbp")).arg("--library").arg(dir.join("msgflo.json")).args(["--port", "0"]);
    let mut p = Proc::spawn(cmd);
    let line = p.wait_line(&format!("not starting {ghost}"), T);
    assert!(line.contains("NoSuchComponent"), "{line}");
    let line = p.wait_line(&format!("participant {crash} exited (exit code 3)"), T);
    assert!(line.contains("restarting in"), "{line}");
    p.wait_line(&format!("participant {crash} restarted"), T);
    p.wait_line(&format!("{ok} | "), T);
    assert!(p.child.try_wait().unwrap().is_none(), "still running");
    p.signal(libc::SIGINT);
    assert!(p.wait_exit(T).success());
    wait_no_processes(&ok, Duration::from_secs(5));
}

#[test]
fn a_broken_graph_gives_file_line_and_column() {
    let dir = project("a(Repeat) OUT -> IN b(Repeat)\nb OUT -> -> c\n", "");
    let out = msgflo().arg("run").arg(dir.join("graph.fbp")).arg("--library").arg(dir.join("msgflo.json")).args(["--port", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("graph.fbp:2:"), "{err}");
    // Broken library, missing graph: clear messages too.
    std::fs::write(dir.join("bad.json"), "{\"components\": 5").unwrap();
    let out = msgflo().arg("procfile").arg(dir.join("graph.fbp")).arg("--library").arg(dir.join("bad.json")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = msgflo().arg("run").arg(dir.join("missing.fbp")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.fbp"));
}

#[test]
fn procfile_lists_one_command_per_participant() {
    let dir = project("a(Repeat) OUT -> IN rr(msgflo/RoundRobin) OUT -> IN b(Repeat)\n", "");
    let out = msgflo().arg("procfile").arg(dir.join("graph.fbp")).arg("--library").arg(dir.join("msgflo.json")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("a: ") && lines[0].ends_with("repeat a"), "{text}");
    assert!(lines[1].starts_with("b: "), "{text}");
}

/// `msgflo setup`: wires participants that already run, sends the IIP,
/// exits; on AMQP the binding outlives it.
#[tokio::test]
async fn setup_wires_and_exits() {
    let url = amqp_url();
    let (a, b) = (unique("seta"), unique("setb"));
    let (pa, _ha) = start_repeat(&a, msgflo::Options::broker(&url)).await;
    let (pb, _hb) = start_repeat(&b, msgflo::Options::broker(&url)).await;
    let (_t, mut rx) = tap(&url, &format!("{b}.OUT")).await;
    let dir = project(&format!("'\"iip\"' -> IN {a}(Repeat)\n{a} OUT -> IN {b}(Repeat)\n"), "");
    // The participants announced before setup started: setup still finds
    // them (a running coordinator replays, else their next heartbeat).
    let owner = Coordinator::start(connect(&url).await, &url, Options::new(Default::default())).await.unwrap();
    owner.wait_for(T, |s| s.participants.iter().filter(|p| p.role == a || p.role == b).count() == 2).await.unwrap();
    let out = tokio::task::spawn_blocking({
        let (dir, url) = (dir.clone(), url.clone());
        move || msgflo().arg("setup").arg(dir.join("graph.fbp")).args(["--broker", &url, "--timeout", "20"]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{a}.OUT -> {b}.IN")), "{stdout}");
    assert_eq!(next(&mut rx).await, b"\"iip\"");
    pa.transport().publish(Target::Queue(format!("{a}.IN")), Payload::from("7"), true).await.unwrap();
    assert_eq!(next(&mut rx).await, b"7");
    owner.stop().await;
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
    delete_ports(&url, &[&a, &b]).await;
}

/// Every seconds flag goes through one checked parser: infinity, NaN,
/// negatives, overflow and a period that rounds to zero are usage errors
/// (exit 2, the flag named), never a panic or a busy loop.
#[test]
fn bad_seconds_are_usage_errors() {
    let dir = project("a(Repeat) OUT -> IN b(Repeat)\n", "");
    let graph = dir.join("graph.fbp");
    let g = graph.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["status"], "--wait"),
        (&["dump", "--queue", "q"], "--timeout"),
        (&["setup", g], "--timeout"),
        (&["register", "--role", "r:x.yaml"], "--interval"),
        (&["run", g], "--expire"),
    ];
    for (args, flag) in cases {
        for bad in ["inf", "NaN", "-1", "1e30", "ten"] {
            let out = msgflo().args(*args).arg(format!("{flag}={bad}")).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {flag}={bad}: {err}");
            assert!(err.contains(flag) && err.contains("seconds") && !err.contains("panicked"), "{args:?} {flag}={bad}: {err}");
        }
    }
    for args in [&["register", "--role", "r:x.yaml", "--interval", "1e-300"][..], &["run", g, "--expire", "0"][..]] {
        let out = msgflo().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn setup_times_out_with_what_is_missing() {
    let dir = project("a-never(Repeat) OUT -> IN b-never(Repeat)\n", "");
    let out = msgflo().arg("setup").arg(dir.join("graph.fbp")).args(["--broker", &amqp_url(), "--timeout", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("setup incomplete") && err.contains("a-never.out -> b-never.in"), "{err}");
}

/// send + dump through a queue: JSON, text, and raw bytes from stdin.
#[tokio::test]
async fn send_and_dump_amqp() {
    let url = amqp_url();
    let q = unique("sendq");
    let t = connect(&url).await;
    t.declare(&Declaration { kind: PortKind::In, queue: q.clone(), persistent: true }).await.unwrap();
    let send = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = msgflo();
        c.args(["send", "--broker", &url, "--queue", &q]).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(data) = stdin {
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    assert!(send(&["--json", "{\"a\": 1}"], None).status.success());
    assert!(send(&["--data", "plain text"], None).status.success());
    assert!(send(&["--data"], Some(b"bytes from stdin")).status.success());
    let bad = send(&["--json", "{nope"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not valid JSON"));
    let missing = msgflo().args(["send", "--broker", &url, "--queue", &unique("noqueue"), "--json", "1"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    let out = msgflo().args(["dump", "--broker", &url, "--queue", &q, "--amount", "3", "--timeout", "10"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"a\": 1}\nplain text\nbytes from stdin\n");
    // Nothing left: dump with a timeout fails and says so.
    let out = msgflo().args(["dump", "--broker", &url, "--queue", &q, "--timeout", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("got 0 of 1"));
    t.delete(&q).await.unwrap();
}

#[tokio::test]
async fn send_and_dump_mqtt() {
    let url = mqtt_url();
    let q = unique("sendtopic");
    let mut dump = Proc::spawn({
        let mut c = msgflo();
        c.args(["dump", "--broker", &url, "--queue", &q, "--amount", "0", "--timeout", "30"]);
        c
    });
    // QoS 0: the subscription must exist first; resend until it does.
    let start = Instant::now();
    loop {
        let out = msgflo().args(["send", "--broker", &url, "--queue", &q, "--json", "[1]"]).output().unwrap();
        assert!(out.status.success());
        dump.drain();
        if !dump.seen_out.is_empty() {
            break;
        }
        assert!(start.elapsed() < T);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = msgflo().args(["send", "--broker", &url, "--queue", &q, "--data", "done"]).output().unwrap();
    assert!(out.status.success());
    dump.wait_line("done", T);
    assert!(dump.seen_out.iter().all(|l| l == "[1]" || l == "done"), "{:?}", dump.seen_out);
    // --amount 0 runs until Ctrl-C, then exits cleanly.
    dump.signal(libc::SIGINT);
    assert!(dump.wait_exit(T).success());
}

/// `msgflo status --json`: participants with ports and queue depths, and
/// the edges a running coordinator wired.
async fn status(url: &str) {
    let (a, b) = (unique("sta"), unique("stb"));
    let graph = msgflo::graph::fbp::parse(&format!("{a}(Repeat) OUT -> IN {b}(Repeat)")).unwrap();
    let c = Coordinator::start(connect(url).await, url, Options::new(graph)).await.unwrap();
    let (pa, _ha) = start_repeat(&a, msgflo::Options::broker(url)).await;
    let (pb, _hb) = start_repeat(&b, msgflo::Options::broker(url)).await;
    c.wait_for(T, |s| s.complete && !s.wires.is_empty()).await.unwrap();
    // A participant whose queue is gone from the broker (AMQP): shown as
    // missing, without a reconnect or an error.
    let ghost = unique("ghost");
    if url.starts_with("amqp") {
        let t = connect(url).await;
        let body = serde_json::json!({"protocol": "discovery", "command": "participant", "payload": {
            "id": format!("{ghost}-1"), "role": ghost, "component": "Ghost", "inports": [{"id": "in", "queue": format!("{ghost}.IN")}], "outports": []}});
        t.announce(msgflo::Payload::json(&body)).await.unwrap();
        c.wait_for(T, |s| s.participants.iter().any(|p| p.role == ghost)).await.unwrap();
        t.close().await.unwrap();
    }
    let out = tokio::task::spawn_blocking({
        let url = url.to_owned();
        move || msgflo().args(["status", "--broker", &url, "--json", "--wait", "1.5"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |role: &str| v["participants"].as_array().unwrap().iter().find(|p| p["role"] == role).cloned();
    let pa_status = find(&a).expect("a listed");
    assert_eq!(pa_status["alive"], 1);
    assert_eq!(pa_status["inports"][0]["queue"], format!("{a}.IN"));
    if url.starts_with("amqp") {
        assert_eq!(pa_status["inports"][0]["depth"], 0, "{pa_status} {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(find(&b).is_some());
    if url.starts_with("amqp") {
        let g = find(&ghost).expect("the ghost listed");
        assert_eq!(g["inports"][0]["missing"], true, "{g}");
        assert!(pa_status["inports"][0].get("missing").is_none(), "{pa_status}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("INFO") && !err.contains("ERROR") && !err.contains("reconnect"), "status logs only warnings: {err}");
    let edges = v["edges"].as_array().unwrap();
    assert!(edges.iter().any(|e| e["src"] == format!("{a}.OUT") && e["tgt"] == format!("{b}.IN")), "{v}");
    // Text output says the same, briefly.
    let out = tokio::task::spawn_blocking({
        let url = url.to_owned();
        move || msgflo().args(["status", "--broker", &url, "--wait", "1"]).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&a) && text.contains(&format!("{a}.OUT -> {b}.IN")), "{text}");
    c.stop().await;
    pa.stop().await.unwrap();
    pb.stop().await.unwrap();
    delete_ports(url, &[&a, &b]).await;
}

#[tokio::test]
async fn status_on_rabbitmq() {
    status(&amqp_url()).await;
}

#[tokio::test]
async fn status_on_mosquitto() {
    status(&mqtt_url()).await;
}

/// `msgflo register`: a foreign participant from YAML is announced (once,
/// and periodically), with `#ROLE` in queue names replaced.
async fn register(url: &str) {
    let role = unique("foreign");
    let dir = std::env::temp_dir().join(unique("msgflo-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = "component: legacy/Mailer\nlabel: Sends mail\ninports:\n  send:\n    queue: '#ROLE.mail.send'\n    type: object\noutports:\n  sent:\n    queue: '#ROLE.mail.sent'\n";
    std::fs::write(dir.join("mailer.yaml"), yaml).unwrap();
    let observer = Coordinator::start(connect(url).await, url, Options::observer()).await.unwrap();
    let arg = format!("{role}:{}", dir.join("mailer.yaml").display());
    let mut p = Proc::spawn({
        let mut c = msgflo();
        c.args(["register", "--broker", url, "--role", &arg, "--interval", "1.1"]);
        c
    });
    let s = observer
        .wait_for(T, |s| s.participants.iter().any(|p| p.role == role))
        .await
        .unwrap();
    let st = s.participants.iter().find(|p| p.role == role).unwrap().clone();
    assert_eq!(st.component, "legacy/Mailer");
    assert_eq!(st.inports[0].queue.as_deref(), Some(format!("{role}.mail.send").as_str()));
    assert_eq!(st.outports[0].queue.as_deref(), Some(format!("{role}.mail.sent").as_str()));
    // Re-announced every 0.5 s: seen again and again.
    let beats = |s: &msgflo::coordinator::Snapshot| s.participants.iter().find(|p| p.role == role).map_or(0, |p| p.heartbeats);
    let first = beats(&s);
    observer.wait_for(T, |s| beats(s) >= first + 2).await.expect("register re-announces");
    p.signal(libc::SIGINT);
    assert!(p.wait_exit(T).success());
    // A broken file: exit 2, names the problem.
    std::fs::write(dir.join("bad.yaml"), "label: no component\n").unwrap();
    let out = msgflo().args(["register", "--broker", url, "--once", "--role"]).arg(format!("x:{}", dir.join("bad.yaml").display())).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".component is not defined"));
    observer.stop().await;
}

#[tokio::test]
async fn register_on_rabbitmq() {
    register(&amqp_url()).await;
}

#[tokio::test]
async fn register_on_mosquitto() {
    register(&mqtt_url()).await;
}
