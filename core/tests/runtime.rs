//! The FBP runtime protocol of `msgflo run`, as a client sees it: a real
//! `msgflo` process, real participants (Rust and Python) on the embedded
//! broker, RabbitMQ and Mosquitto, a WebSocket client speaking the protocol.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

fn examples() -> PathBuf {
    common::examples(&["repeat", "drop"])
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A folder with `graph` and a library: Repeat (Rust), Drop (Rust),
/// PyRepeat (the Python conformance shim, run by the repository's .venv).
fn project(graph: &str, file: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("msgflo-rt"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), graph).unwrap();
    let ex = examples();
    let py = repo().join(".venv/bin/python");
    let shim = repo().join("spec/shims/python/shim.py");
    let lib = json!({"components": {
        "Repeat": format!("{} #ROLE", ex.join("repeat").display()),
        "Drop": format!("{} #ROLE", ex.join("drop").display()),
        "PyRepeat": format!("{} {} #ROLE", py.display(), shim.display()),
        "Formatter": format!("{} {} #ROLE", py.display(), repo().join("examples/temperature/formatter.py").display()),
    }});
    std::fs::write(dir.join("msgflo.json"), lib.to_string()).unwrap();
    dir
}

/// A running `msgflo run` with its output collected.
struct Run {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    address: String,
}

impl Run {
    async fn start(dir: &Path, graph: Option<&str>, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgflo"));
        cmd.current_dir(dir).arg("run");
        if let Some(g) = graph {
            cmd.arg(g);
        }
        cmd.args(["--library", "msgflo.json", "--port", "0"]).args(args);
        cmd.env_remove("MSGFLO_BROKER").env_remove("CLOUDAMQP_URL").env_remove("MSGFLO_RUNTIME_SECRET").env("MSGFLO_DISCOVERY_PERIOD", "2");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("msgflo starts");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        for r in [Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box::new(child.stderr.take().unwrap())] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut l = BufReader::new(r).lines();
                while let Ok(Some(line)) = l.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        let mut run = Run { child, lines, seen: Vec::new(), address: String::new() };
        let line = run.wait_line("runtime: ws://").await;
        run.address = line.trim_start_matches("runtime: ").to_owned();
        run
    }

    async fn wait_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), self.lines.recv()).await {
                Ok(Some(l)) => self.seen.push(l),
                _ => panic!("no line with {text:?}; output:\n{}", self.seen.join("\n")),
            }
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let status = tokio::time::timeout(T, self.child.wait()).await.expect("msgflo exits on SIGTERM").unwrap();
        assert!(status.success(), "msgflo exit status {status:?}");
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A protocol client that keeps every frame it saw.
struct Client {
    ws: Ws,
    seen: Vec<Value>,
    /// Frames read while waiting for another one and not taken yet: a
    /// later `expect` finds them (frames of different kinds may come in
    /// either order, e.g. an exported port's packet before the edge's data).
    pending: Vec<Value>,
    secret: Option<String>,
}

impl Client {
    async fn connect(address: &str) -> Client {
        Self::connect_with(address, None).await.expect("WebSocket connects")
    }

    async fn connect_with(address: &str, origin: Option<&str>) -> Result<Client, String> {
        let mut req = address.into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "noflo".parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.map_err(|e| e.to_string())?;
        assert_eq!(resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()), Some("noflo"));
        Ok(Client { ws, seen: Vec::new(), pending: Vec::new(), secret: None })
    }

    async fn send(&mut self, protocol: &str, command: &str, mut payload: Value) {
        if let Some(s) = &self.secret {
            payload["secret"] = json!(s);
        }
        let f = json!({"protocol": protocol, "command": command, "payload": payload});
        self.ws.send(Message::Text(f.to_string().into())).await.unwrap();
    }

    async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_owned().into())).await.unwrap();
    }

    /// The next frame with this protocol:command (others are kept).
    async fn expect(&mut self, protocol: &str, command: &str) -> Value {
        self.expect_where(protocol, command, |_| true).await
    }

    async fn expect_where(&mut self, protocol: &str, command: &str, f: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(|v| v["protocol"] == protocol && v["command"] == command && f(v)) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.ws.next()).await;
            let Ok(Some(Ok(Message::Text(t)))) = m else {
                match m {
                    Ok(Some(Ok(_))) => continue,
                    _ => panic!("no {protocol}:{command} frame within {T:?}; saw:\n{}", self.seen.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")),
                }
            };
            let v: Value = serde_json::from_str(&t).expect("frames are JSON");
            assert!(v.get("secret").is_none(), "a frame carried the secret: {v}");
            self.seen.push(v.clone());
            if v["protocol"] == protocol && v["command"] == command && f(&v) {
                return v;
            }
            if v["command"] == "error" && command != "error" {
                panic!("unexpected error frame while waiting for {protocol}:{command}: {v}");
            }
            self.pending.push(v);
        }
    }

    /// A frame for which `f` holds within `timeout`, if any.
    async fn try_expect(&mut self, timeout: Duration, f: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).expect("frames are JSON");
                    self.seen.push(v.clone());
                    if f(&v) {
                        return Some(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => return None,
            }
        }
    }

    /// Ask and wait for the reply.
    async fn ask(&mut self, protocol: &str, command: &str, payload: Value) -> Value {
        self.send(protocol, command, payload).await;
        let reply = match (protocol, command) {
            ("runtime", "getruntime") => "runtime",
            ("runtime", "packet") => "packetsent",
            ("network", "start") => "started",
            ("network", "stop") => "stopped",
            ("network", "getstatus") => "status",
            ("component", "list") => "componentsready",
            ("component", "getsource") => "source",
            ("msgflo", "subscribe") => "status",
            (_, c) => c,
        };
        self.expect(protocol, reply).await
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn edge(s: &str, sp: &str, t: &str, tp: &str) -> Value {
    json!({"src": {"node": s, "port": sp}, "tgt": {"node": t, "port": tp}})
}

/// The seed's scenario: a running sensor -> display pipeline (two Rust
/// participants); the example's Python formatter is inserted between them
/// while everything runs, a value given live goes through it and arrives
/// formatted at the display, and the formatter's parameter is changed on
/// the fly. Nothing is restarted.
async fn insert_an_adapter(broker: Option<&str>) {
    let (a, b, fmt) = (unique("src"), unique("dst"), unique("fmt"));
    let graph = format!("{a}(Repeat) OUT -> IN {b}(Repeat)\n");
    let dir = project(&graph, "graph.fbp");
    let mut args = vec![];
    if let Some(u) = broker {
        args.extend(["--broker", u]);
    }
    let mut run = Run::start(&dir, Some("graph.fbp"), &args).await;
    let mut c = Client::connect(&run.address).await;
    let rt = c.ask("runtime", "getruntime", json!({})).await;
    let main = rt["payload"]["graph"].as_str().unwrap().to_owned();
    assert_eq!(main, "graph");
    run.wait_line(&format!("wired {a}")).await;
    let (pid_a, pid_b) = (pid_of(&a), pid_of(&b));
    // What the display receives comes out of its OUT (Repeat): exported,
    // so every value it got arrives here as runtime:packet.
    c.ask("graph", "addoutport", json!({"public": "shown", "node": b, "port": "out", "graph": main})).await;
    c.ask("graph", "addnode", json!({"id": fmt, "component": "Formatter", "graph": main})).await;
    c.ask("graph", "removeedge", json!({"src": {"node": a, "port": "out"}, "tgt": {"node": b, "port": "in"}, "graph": main})).await;
    let e1 = edge(&a, "out", &fmt, "in");
    let e2 = edge(&fmt, "out", &b, "in");
    for e in [&e1, &e2] {
        let mut p = e.clone();
        p["graph"] = json!(main);
        c.ask("graph", "addedge", p).await;
    }
    c.ask("network", "edges", json!({"graph": main, "edges": [e2]})).await;
    // A value given live, into the producer: formatted on the watched edge,
    // and at the display.
    let reading = |celsius: f64| json!({"src": {"data": {"celsius": celsius}}, "tgt": {"node": a, "port": "in"}, "graph": main});
    c.ask("graph", "addinitial", reading(21.5)).await;
    let d = c.expect_where("network", "data", |v| v["payload"]["src"]["node"] == fmt.as_str()).await;
    assert_eq!(d["payload"]["data"], json!("Temperature: 21.5 C"));
    assert_eq!(d["payload"]["id"], format!("{fmt}() OUT -> IN {b}()"));
    let shown = |text: &'static str| move |v: &Value| v["payload"]["port"] == "shown" && v["payload"]["payload"] == text;
    c.expect_where("runtime", "packet", shown("Temperature: 21.5 C")).await;
    // A parameter changed on the fly: the formatter's unit.
    // The unit and the reading travel on different queues, so the reading
    // may overtake the unit: give the reading again until it comes out in
    // the new unit (each try a new value given live).
    c.ask("graph", "addinitial", json!({"src": {"data": "F"}, "tgt": {"node": fmt, "port": "unit"}, "graph": main})).await;
    let start = Instant::now();
    loop {
        c.ask("graph", "addinitial", reading(100.0)).await;
        if c.try_expect(Duration::from_secs(2), |v| v["command"] == "packet" && v["payload"]["payload"] == "Temperature: 212.0 F").await.is_some() {
            break;
        }
        assert!(start.elapsed() < T, "no reading in F; saw:\n{}", c.seen.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
    }
    // Back to C, and the first reading again: a value given before is sent
    // again (the IIP journal must not take it as sent).
    c.ask("graph", "addinitial", json!({"src": {"data": "C"}, "tgt": {"node": fmt, "port": "unit"}, "graph": main})).await;
    let start = Instant::now();
    loop {
        c.ask("graph", "addinitial", reading(21.5)).await;
        let again = c.try_expect(Duration::from_secs(2), |v| v["command"] == "packet" && v["payload"]["payload"] == "Temperature: 21.5 C").await;
        if again.is_some() {
            break;
        }
        assert!(start.elapsed() < T, "the repeated value did not arrive; saw:\n{}", c.seen.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
    }
    assert_eq!((pid_of(&a), pid_of(&b)), (pid_a, pid_b), "producer and display were not restarted");
    c.close().await;
    run.stop().await;
    if broker.is_some_and(|u| u.starts_with("amqp")) {
        let raw = Raw::connect().await;
        let mut qs: Vec<String> = [&a, &b, &fmt].iter().flat_map(|r| [format!("{r}.IN"), format!("{r}.OUT")]).collect();
        qs.extend([format!("{fmt}.UNIT"), format!("{fmt}.ERROR")]);
        let refs: Vec<&str> = qs.iter().map(String::as_str).collect();
        raw.cleanup(&refs, &refs).await;
    }
}

/// The pid of the participant process running `role`.
fn pid_of(role: &str) -> u32 {
    find_pid(role).unwrap_or_else(|| panic!("no process for role {role}"))
}

fn find_pid(role: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.ends_with(&format!(" {role} ")) && !cmd.contains("msgflo run") {
                return Some(pid);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_an_adapter_live_embedded() {
    insert_an_adapter(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_an_adapter_live_rabbitmq() {
    insert_an_adapter(Some(&amqp_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_an_adapter_live_mosquitto() {
    insert_an_adapter(Some(&mqtt_url())).await;
}

/// Watching an edge takes copies: the consumer still gets every message
/// exactly once, and the watcher sees each of them.
async fn watched_edge_loses_nothing(url: &str) {
    const N: usize = 300;
    let (a, b) = (unique("wa"), unique("wb"));
    let dir = project(&format!("{a}(Repeat) OUT -> IN {b}(Repeat)\n"), "graph.fbp");
    let mut run = Run::start(&dir, Some("graph.fbp"), &["--broker", url]).await;
    run.wait_line(&format!("wired {a}")).await;
    let (_t, mut out) = tap_outport(url, &format!("{b}.OUT")).await;
    let mut c = Client::connect(&run.address).await;
    c.ask("network", "edges", json!({"graph": "graph", "edges": [edge(&a, "out", &b, "in")]})).await;
    // The tap is made after the reply: send markers until the watcher
    // sees one, then every message after it must be seen.
    let t = msgflo::transport::connect(url, &Default::default()).await.unwrap();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < T, "the watched edge never showed data");
        t.publish(msgflo::transport::Target::Queue(format!("{a}.IN")), msgflo::Payload::from("\"marker\""), true).await.unwrap();
        if c.try_expect(Duration::from_millis(500), |v| v["command"] == "data" && v["payload"]["data"] == "marker").await.is_some() {
            break;
        }
    }
    for i in 0..N {
        t.publish(msgflo::transport::Target::Queue(format!("{a}.IN")), msgflo::Payload::json(&json!({"i": i})), true).await.unwrap();
    }
    let mut got = std::collections::BTreeMap::<u64, usize>::new();
    let deadline = Instant::now() + T;
    while got.values().sum::<usize>() < N {
        assert!(Instant::now() < deadline, "consumer got {} of {N}", got.len());
        let body = next_payload(&mut out, T).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        if let Some(i) = v["i"].as_u64() {
            *got.entry(i).or_default() += 1;
        }
    }
    let mut watched = std::collections::BTreeSet::new();
    while watched.len() < N {
        let d = c.expect_where("network", "data", |v| v["payload"]["data"]["i"].is_u64()).await;
        watched.insert(d["payload"]["data"]["i"].as_u64().unwrap());
    }
    assert_eq!(got.len(), N, "every message arrived");
    assert!(got.values().all(|n| *n == 1), "none twice");
    // Nothing more arrives at the consumer (no duplicates late).
    assert!(tokio::time::timeout(Duration::from_millis(300), out.recv()).await.is_err());
    c.close().await;
    run.stop().await;
    if url.starts_with("amqp") {
        let raw = Raw::connect().await;
        let qs = [format!("{a}.IN"), format!("{a}.OUT"), format!("{b}.IN"), format!("{b}.OUT")];
        let refs: Vec<&str> = qs.iter().map(String::as_str).collect();
        raw.cleanup(&refs, &refs).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_edge_loses_nothing_rabbitmq() {
    watched_edge_loses_nothing(&amqp_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_edge_loses_nothing_mosquitto() {
    watched_edge_loses_nothing(&mqtt_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_required_and_never_shown() {
    let dir = project("", "graph.fbp");
    let secret = "s3cret-value";
    let mut run = Run::start(&dir, None, &["--secret", secret]).await;
    let flowhub = Some(run.wait_line("flowhub: ").await);
    let mut c = Client::connect(&run.address).await;
    let r = c.ask("runtime", "getruntime", json!({})).await;
    assert_eq!(r["payload"]["capabilities"], json!([]));
    c.send("graph", "clear", json!({"id": "x"})).await;
    let e = c.expect("graph", "error").await;
    assert!(e["payload"]["message"].as_str().unwrap().contains("not permitted"), "{e}");
    c.secret = Some("wrong".into());
    c.send("graph", "clear", json!({"id": "x"})).await;
    c.expect_where("graph", "error", |_| true).await;
    c.secret = Some(secret.into());
    let r = c.ask("runtime", "getruntime", json!({})).await;
    assert!(r["payload"]["capabilities"].as_array().unwrap().contains(&json!("protocol:graph")));
    c.ask("graph", "clear", json!({"id": "x"})).await;
    // The secret at the top level of the frame (as fbp-test sends it).
    c.secret = None;
    c.send_raw(&json!({"protocol": "graph", "command": "clear", "payload": {"id": "y"}, "secret": secret}).to_string()).await;
    c.expect("graph", "clear").await;
    c.send_raw(&json!({"protocol": "graph", "command": "clear", "payload": {"id": "z"}, "secret": "wrong"}).to_string()).await;
    c.expect("graph", "error").await;
    for f in &c.seen {
        assert!(!f.to_string().contains(secret), "a frame showed the secret: {f}");
    }
    // The page needs no secret to load (it asks for it); it never holds it.
    let page = http_get(&run.address, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(!page.contains(secret));
    // The live URL the user copies holds it, percent-encoded.
    assert!(flowhub.is_some_and(|l| l.contains("secret%3Ds3cret-value")));
    c.close().await;
    run.stop().await;
}

async fn http_get(ws_address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = ws_address.trim_start_matches("ws://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(hostport).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_origins_are_checked() {
    let dir = project("", "graph.fbp");
    let run = Run::start(&dir, None, &["--allow-origin", "http://allowed.example"]).await;
    let host = run.address.trim_start_matches("ws://").trim_end_matches('/').to_owned();
    let refused = Client::connect_with(&run.address, Some("http://evil.example")).await;
    assert!(refused.err().is_some_and(|e| e.contains("403")), "a foreign origin is refused");
    for ok in [format!("http://{host}"), "http://allowed.example".to_owned(), "https://app.flowhub.io".to_owned()] {
        let mut c = Client::connect_with(&run.address, Some(&ok)).await.unwrap_or_else(|e| panic!("{ok}: {e}"));
        c.ask("runtime", "getruntime", json!({})).await;
        c.close().await;
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_closes_the_connection() {
    let dir = project("", "graph.fbp");
    let run = Run::start(&dir, None, &[]).await;
    let mut c = Client::connect(&run.address).await;
    let garbage = ["", "{", "null", "[]", "\"text\"", r#"{"protocol":"graph","command":"addnode","payload":"x"}"#, r#"{"protocol":"nope","command":"x"}"#, r#"{"protocol":"graph","command":"addnode","payload":{"id":1}}"#];
    for g in garbage {
        c.send_raw(g).await;
        let e = c.try_expect(T, |v| v["command"] == "error").await;
        assert!(e.is_some_and(|e| e["payload"]["message"].as_str().is_some_and(|m| !m.is_empty())), "an error frame for {g:?}");
    }
    // Errors of a known protocol come back as that protocol's error.
    c.send_raw(r#"{"protocol":"graph","command":"fly","payload":{},"requestId":"q1"}"#).await;
    let e = c.expect("graph", "error").await;
    assert_eq!(e["responseTo"], "q1");
    // Over-large frames: an error, and the connection goes on (up to 16
    // MiB; beyond, the socket cannot skip the frame: an error, then closed).
    for size in [1_100_000, 4_000_000, 12_000_000] {
        c.send_raw(&format!(r#"{{"protocol":"graph","command":"clear","payload":{{"id":"{}"}}}}"#, "x".repeat(size))).await;
        let e = c.expect("runtime", "error").await;
        assert!(e["payload"]["message"].as_str().unwrap().contains("refused"), "{e}");
        let r = c.ask("runtime", "getruntime", json!({})).await;
        assert_eq!(r["payload"]["type"], "msgflo");
    }
    c.close().await;
    // A client that sends a frame over the limit (tungstenite's own client
    // would refuse to send it: its limits are lifted here).
    let mut req = run.address.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "noflo".parse().unwrap());
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().max_frame_size(None).max_message_size(None);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await.unwrap();
    let mut big = Client { ws, seen: Vec::new(), pending: Vec::new(), secret: None };
    // The server stops reading at the frame's header, says why (best
    // effort: the client may still be writing when the socket closes) and
    // closes this connection only; the runtime goes on.
    let _ = big.ws.send(Message::Text("x".repeat(20_000_000).into())).await;
    let said = big.try_expect(T, |v| v["command"] == "error").await;
    if let Some(e) = said {
        assert!(e["payload"]["message"].as_str().unwrap().contains("connection closed"), "{e}");
    }
    assert!(big.try_expect(Duration::from_secs(2), |_| true).await.is_none(), "the connection is closed");
    let mut again = Client::connect(&run.address).await;
    assert_eq!(again.ask("runtime", "getruntime", json!({})).await["payload"]["type"], "msgflo");
    again.close().await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = project("", "graph.fbp");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgflo"))
        .current_dir(&dir)
        .args(["run", "--library", "msgflo.json", "--port", &port])
        .env_remove("MSGFLO_BROKER")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.contains("--port"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: tools take a line there as 'up'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_see_each_others_edits() {
    let dir = project("", "graph.fbp");
    let run = Run::start(&dir, None, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c = Client::connect(&run.address).await;
        c.ask("runtime", "getruntime", json!({})).await;
        clients.push(c);
    }
    let main = dir.file_name().unwrap().to_string_lossy().into_owned();
    clients[0].ask("graph", "addnode", json!({"id": "n1", "component": "Drop", "graph": main, "metadata": {"x": 1}})).await;
    for c in clients.iter_mut().skip(1) {
        let f = c.expect("graph", "addnode").await;
        assert_eq!(f["payload"]["id"], "n1");
        assert!(f.get("responseTo").is_none());
    }
    // The node runs: it is a participant of the running main graph.
    let mut c = clients.pop().unwrap();
    c.ask("msgflo", "subscribe", json!({"graph": main})).await;
    c.expect_where("msgflo", "status", |v| v["payload"]["roles"][0]["status"] == "alive").await;
    for c in clients {
        c.close().await;
    }
    c.close().await;
    run.stop().await;
}

async fn auto_save(file: &str) {
    let dir = project(if file.ends_with(".fbp") { "first(Drop)\n" } else { r#"{"processes": {"first": {"component": "Drop"}}, "connections": []}"# }, file);
    let run = Run::start(&dir, Some(file), &["--auto-save"]).await;
    let mut c = Client::connect(&run.address).await;
    let main = file.split('.').next().unwrap();
    c.ask("graph", "addnode", json!({"id": "second", "component": "Repeat", "graph": main})).await;
    c.ask("graph", "addedge", json!({"src": {"node": "second", "port": "out"}, "tgt": {"node": "first", "port": "in"}, "graph": main})).await;
    c.ask("graph", "addinitial", json!({"src": {"data": "it's 5"}, "tgt": {"node": "second", "port": "in"}, "graph": main})).await;
    let path = dir.join(file);
    let g = eventually("the graph file has the edits", T, || {
        let path = path.clone();
        async move {
            let g = msgflo::graph::Graph::from_file(&path).ok()?;
            (g.connections.len() == 2).then_some(g)
        }
    })
    .await;
    assert_eq!(g.processes["second"].component, "Repeat");
    assert!(g.connections.iter().any(|c| c.data == Some(json!("it's 5"))));
    assert!(!std::fs::read_dir(&dir).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".saving")));
    c.close().await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_save_fbp() {
    auto_save("graph.fbp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_save_json() {
    auto_save("graph.json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_is_served() {
    let dir = project("", "graph.fbp");
    let run = Run::start(&dir, None, &[]).await;
    let page = http_get(&run.address, "/").await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("text/html"), "{page}");
    for f in ["app.js", "client.js", "layout.js", "style.css"] {
        let r = http_get(&run.address, &format!("/view/{f}")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{f}: {r}");
    }
    assert!(http_get(&run.address, "/view/../Cargo.toml").await.starts_with("HTTP/1.1 404"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_clear_stops_what_the_graph_started() {
    let dir = project("", "graph.fbp");
    let run = Run::start(&dir, None, &[]).await;
    let mut c = Client::connect(&run.address).await;
    let role = unique("other");
    c.ask("graph", "clear", json!({"id": "other", "name": "other"})).await;
    c.ask("graph", "addnode", json!({"id": role, "component": "Repeat", "graph": "other"})).await;
    c.ask("network", "start", json!({"graph": "other"})).await;
    let pid = eventually("the node's participant runs", T, || async { find_pid(&role) }).await;
    // Its exported ports are told to everybody.
    c.ask("graph", "addinport", json!({"public": "in", "node": role, "port": "in", "graph": "other"})).await;
    let ports = c.expect("runtime", "ports").await;
    assert_eq!(ports["payload"]["inPorts"][0]["id"], "in");
    c.ask("graph", "clear", json!({"id": "other"})).await;
    eventually("the participant is stopped", T, || async { find_pid(&role).is_none().then_some(()) }).await;
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || find_pid(&role).is_none());
    c.close().await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_id_is_stable_and_stdout_says_up_first() {
    let dir = project("", "graph.fbp");
    let other = project("", "graph.fbp");
    let mut ids = Vec::new();
    for d in [&dir, &dir, &other] {
        // stdout and stderr in one pipe, in the order written: the first
        // line must be the runtime's address (tools take it as "up").
        let mut child = tokio::process::Command::new("sh")
            .current_dir(d)
            .arg("-c")
            .arg(format!("exec {} run --library msgflo.json --port 0 2>&1", env!("CARGO_BIN_EXE_msgflo")))
            .env_remove("MSGFLO_BROKER")
            .env_remove("CLOUDAMQP_URL")
            .env_remove("MSGFLO_RUNTIME_SECRET")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(T, lines.next_line()).await.unwrap().unwrap().unwrap();
        assert!(first.starts_with("runtime: ws://127.0.0.1:"), "first line: {first:?}");
        let mut c = Client::connect(first.trim_start_matches("runtime: ")).await;
        let r = c.ask("runtime", "getruntime", json!({})).await;
        let id = r["payload"]["id"].as_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 4), "{id}");
        ids.push(id);
        c.close().await;
        unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
        assert!(tokio::time::timeout(T, child.wait()).await.unwrap().unwrap().success());
    }
    assert_eq!(ids[0], ids[1], "same folder, same id across restarts");
    assert_ne!(ids[0], ids[2], "another folder, another id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_written_over_the_protocol_runs_at_once() {
    let dir = project("", "graph.fbp");
    let run = Run::start(&dir, None, &[]).await;
    let mut c = Client::connect(&run.address).await;
    let main = dir.file_name().unwrap().to_string_lossy().into_owned();
    // A YAML component: a participant announced by `msgflo register`.
    let code = "component: legacy/Mailer\nlabel: Sends mail\ninports:\n  send:\n    queue: '#ROLE.mail.send'\n    type: object\noutports:\n  sent:\n    queue: '#ROLE.mail.sent'\n";
    c.send("component", "source", json!({"name": "Mailer", "language": "yaml", "code": code})).await;
    let comp = c.expect("component", "component").await;
    assert_eq!(comp["payload"]["name"], "Mailer");
    assert_eq!(std::fs::read_to_string(dir.join("components/Mailer.yml")).unwrap(), code);
    let src = c.ask("component", "getsource", json!({"name": "Mailer"})).await;
    assert_eq!(src["payload"]["code"], code);
    assert_eq!(src["payload"]["language"], "yaml");
    // Usable at once: a node of it starts, announces itself, and the
    // component list shows it under its library name with its ports.
    let role = unique("mailer");
    c.ask("graph", "addnode", json!({"id": role, "component": "Mailer", "graph": main})).await;
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < T, "Mailer never showed its ports; saw:\n{}", c.seen.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
        c.send("component", "list", json!({})).await;
        let mut listed = None;
        loop {
            let f = c.try_expect(T, |v| v["protocol"] == "component").await.expect("component frames");
            if f["command"] == "componentsready" {
                break;
            }
            if f["payload"]["name"] == "Mailer" {
                listed = Some(f);
            }
        }
        let l = listed.expect("Mailer is listed");
        if l["payload"]["inPorts"][0]["id"] == "send" {
            assert_eq!(l["payload"]["outPorts"][0]["id"], "sent");
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Names that would leave the folder are refused, nothing is written.
    for evil in ["../Evil", "/tmp/Evil", "a/b/Evil", "..", "Evil.py"] {
        c.send("component", "source", json!({"name": evil, "language": "python", "code": "x"})).await;
        let e = c.expect("component", "error").await;
        assert!(e["payload"]["message"].as_str().unwrap().contains("not a plain name"), "{evil}: {e}");
    }
    assert!(!dir.parent().unwrap().join("Evil.py").exists());
    c.close().await;
    run.stop().await;
}
