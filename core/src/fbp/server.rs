//! The runtime's server: WebSocket on `/` (subprotocol `noflo`) for the
//! protocol, plain HTTP for the live view page (`/` and `/view/<file>`,
//! compiled into the binary).
//!
//! Every connection is one task that owns its socket: it answers its own
//! requests in order, and receives other clients' edits and watched data
//! through a bounded queue (a client too slow to read loses data frames,
//! never blocks the others). Three more tasks, owned and stopped with the
//! server: the event pump (coordinator events -> `network:data`), the status
//! pump (`msgflo:status` when the picture changes) and, on AMQP, the queue
//! depth poller.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ClientId, Runtime};
use crate::coordinator::Event;
use crate::transport::Transport;

/// The live view's files, compiled in.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../../view/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../view/app.js")),
    ("client.js", "text/javascript; charset=utf-8", include_str!("../../../view/client.js")),
    ("layout.js", "text/javascript; charset=utf-8", include_str!("../../../view/layout.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../../view/style.css")),
];

/// Per-client queue for frames it did not ask for.
const CLIENT_QUEUE: usize = 4096;

/// How the server behaves beyond the protocol.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Web origins allowed besides the page's own and the IDE's.
    pub allow_origins: Vec<String>,
    /// The IDE URL (its origin is allowed).
    pub ide: String,
    /// Write the main graph here after every change.
    pub auto_save: Option<PathBuf>,
}

struct Hub {
    runtime: Mutex<Runtime>,
    clients: Mutex<BTreeMap<ClientId, mpsc::Sender<String>>>,
    next: AtomicU64,
    config: Config,
    stop: CancellationToken,
}

/// A running server; [`Server::stop`] ends its tasks and connections.
pub struct Server {
    pub addr: SocketAddr,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Bind the runtime's address; a taken port is an error that says what to do.
pub async fn bind(host: &str, port: u16) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind((host, port)).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("cannot serve the FBP runtime on {host}:{port}: the port is in use (choose another with --port, or --port 0 for a free one, or --no-runtime)")
        } else {
            format!("cannot serve the FBP runtime on {host}:{port}: {e}")
        }
    })
}

impl Server {
    /// Serve `runtime` on `listener`. `events` feeds `network:data`;
    /// `transport` (AMQP) is polled for queue depths.
    pub fn start(
        listener: tokio::net::TcpListener,
        runtime: Runtime,
        events: broadcast::Receiver<Event>,
        transport: Option<Arc<dyn Transport>>,
        depths: Arc<Mutex<BTreeMap<String, u64>>>,
        config: Config,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let hub = Arc::new(Hub { runtime: Mutex::new(runtime), clients: Mutex::new(BTreeMap::new()), next: AtomicU64::new(1), config, stop: stop.clone() });
        let app = Router::new()
            .route("/", get(root))
            .route("/view/{file}", get(asset))
            .with_state(hub.clone());
        let s = stop.clone();
        // Small frames go out at once (else Nagle holds a data frame that
        // follows a reply for the client's delayed ACK, ~40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let mut tasks = vec![tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await });
            if let Err(e) = serve.await {
                warn!("FBP runtime server ended: {e}");
            }
        })];
        tasks.push(tokio::spawn(pump_events(hub.clone(), events)));
        tasks.push(tokio::spawn(pump_status(hub.clone())));
        if let Some(t) = transport {
            tasks.push(tokio::spawn(poll_depths(hub.clone(), t, depths)));
        }
        Ok(Server { addr, stop, tasks })
    }

    /// Stop serving and wait for every task.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// `GET /`: a WebSocket upgrade is the protocol; anything else gets the
/// live view page.
async fn root(State(hub): State<Arc<Hub>>, headers: HeaderMap, req: axum::extract::Request) -> Response {
    let (mut parts, _) = req.into_parts();
    if !headers.contains_key(header::UPGRADE) {
        return page("index.html");
    }
    if let Err(why) = origin_ok(&hub.config, &headers) {
        warn!("refused a WebSocket connection: {why}");
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws.protocols(["noflo"]).max_message_size(READ_LIMIT).max_frame_size(READ_LIMIT).on_upgrade(move |socket| connection(hub, socket)),
        Err(e) => e.into_response(),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    page(&file)
}

fn page(file: &str) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "no-cache")], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// Browsers say where a page comes from; only our own page, the IDE and
/// origins allowed with `--allow-origin` may drive the runtime. Other
/// clients (tools) send no Origin.
fn origin_ok(config: &Config, headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let own = [format!("http://{host}"), format!("https://{host}")];
    let ide = config.ide.split('#').next().unwrap_or("").trim_end_matches('/');
    let ide_origin = ide.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    if own.iter().any(|o| o == origin) || (!ide_origin.is_empty() && ide_origin == origin) || config.allow_origins.iter().any(|a| a.trim_end_matches('/') == origin || a == "*") {
        Ok(())
    } else {
        Err(format!("web origin {origin:?} is not allowed (msgflo run --allow-origin {origin} allows it)"))
    }
}

/// Frames up to this size are read (and those over [`super::MAX_FRAME`]
/// answered with an error, the connection staying open); a larger one ends
/// the connection, as the socket cannot skip it.
const READ_LIMIT: usize = super::MAX_FRAME * 16;

async fn connection(hub: Arc<Hub>, socket: WebSocket) {
    let id = hub.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<String>(CLIENT_QUEUE);
    hub.clients.lock().unwrap().insert(id, tx);
    hub.runtime.lock().unwrap().connect(id);
    debug!("runtime client {id} connected");
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            _ = hub.stop.cancelled() => break,
            m = stream.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        // Beyond READ_LIMIT the WebSocket cannot go on: say
                        // why before it closes.
                        let f = super::frame("runtime", "error", serde_json::json!({"message": format!("connection closed: {e}")}));
                        let _ = sink.send(Message::Text(f.to_string().into())).await;
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let (outcome, main) = {
                    let mut rt = hub.runtime.lock().unwrap();
                    let o = rt.handle(id, &text);
                    (o, rt.settings.main_graph.clone())
                };
                let mut failed = false;
                for f in &outcome.reply {
                    if sink.send(Message::Text(f.to_string().into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                broadcast_others(&hub, id, &outcome.others);
                if outcome.changed.as_deref() == Some(main.as_str()) {
                    save(&hub);
                }
                if failed {
                    break;
                }
            }
            Some(f) = rx.recv() => {
                if sink.send(Message::Text(f.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    hub.clients.lock().unwrap().remove(&id);
    hub.runtime.lock().unwrap().disconnect(id);
    debug!("runtime client {id} went away");
}

fn broadcast_others(hub: &Hub, from: ClientId, frames: &[Value]) {
    if frames.is_empty() {
        return;
    }
    let clients = hub.clients.lock().unwrap();
    for (id, tx) in clients.iter().filter(|(id, _)| **id != from) {
        for f in frames {
            if tx.try_send(f.to_string()).is_err() {
                debug!("runtime client {id} is not reading; a frame was dropped");
            }
        }
    }
}

/// Write the main graph to the auto-save file, atomically (a temporary
/// file beside it, renamed over it).
fn save(hub: &Hub) {
    let Some(path) = &hub.config.auto_save else { return };
    let text = {
        let rt = hub.runtime.lock().unwrap();
        let Some(g) = rt.graphs.get(&rt.settings.main_graph) else { return };
        if path.extension().is_some_and(|e| e == "fbp") {
            crate::graph::fbp::write(&g.graph)
        } else {
            serde_json::to_string_pretty(&super::graph::to_json(&rt.settings.main_graph, g)).unwrap_or_default() + "\n"
        }
    };
    let tmp = path.with_extension(format!("{}.saving", path.extension().and_then(|e| e.to_str()).unwrap_or("graph")));
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    match result {
        Ok(()) => info!("saved the graph to {}", path.display()),
        Err(e) => warn!("cannot save the graph to {}: {e}", path.display()),
    }
}

async fn pump_events(hub: Arc<Hub>, mut events: broadcast::Receiver<Event>) {
    loop {
        let ev = tokio::select! {
            _ = hub.stop.cancelled() => return,
            e = events.recv() => e,
        };
        match ev {
            Ok(ev) => {
                let frames = hub.runtime.lock().unwrap().on_event(&ev);
                let clients = hub.clients.lock().unwrap();
                for (client, f) in frames {
                    if let Some(tx) = clients.get(&client) {
                        let _ = tx.try_send(f.to_string());
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => debug!("{n} wire events not shown: watchers too slow"),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What changed between two pictures of role -> (instances alive,
/// component), as lines for people.
fn alive_changes(before: &BTreeMap<String, (usize, String)>, now: &BTreeMap<String, (usize, String)>) -> Vec<String> {
    let mut lines = Vec::new();
    for (role, (n, component)) in now {
        let was = before.get(role).map(|(n, _)| *n).unwrap_or(0);
        match (was, *n) {
            (0, n) if n > 0 => lines.push(format!("participant {role} ({component}) is up")),
            (w, 0) if w > 0 => lines.push(format!("participant {role} ({component}) is gone")),
            (w, n) if w != n => lines.push(format!("participant {role} ({component}): {n} instance(s) alive, were {w}")),
            _ => {}
        }
    }
    for (role, (w, component)) in before {
        if *w > 0 && !now.contains_key(role) {
            lines.push(format!("participant {role} ({component}) is gone"));
        }
    }
    lines
}

async fn pump_status(hub: Arc<Hub>) {
    let mut last: BTreeMap<ClientId, String> = BTreeMap::new();
    let mut alive: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = hub.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Participants that came or went, as output lines to every client
        // (an IDE shows them in its console; the live view has the status).
        // Nobody connected: no picture taken; the next client hears what
        // changed since the last one.
        if hub.clients.lock().unwrap().is_empty() {
            continue;
        }
        let lines: Vec<String> = {
            let rt = hub.runtime.lock().unwrap();
            let now: BTreeMap<String, (usize, String)> =
                rt.host().snapshot().participants.into_iter().map(|p| (p.role, (p.alive, p.component))).collect();
            let lines = alive_changes(&alive, &now);
            alive = now;
            lines
        };
        if !lines.is_empty() {
            let clients = hub.clients.lock().unwrap();
            for line in lines {
                let f = super::frame("network", "output", serde_json::json!({"message": line, "type": "message"})).to_string();
                for tx in clients.values() {
                    let _ = tx.try_send(f.clone());
                }
            }
        }
        let frames: Vec<(ClientId, String)> = {
            let rt = hub.runtime.lock().unwrap();
            let mut built: BTreeMap<&str, String> = BTreeMap::new();
            rt.status_clients
                .iter()
                .map(|(c, g)| (*c, built.entry(g.as_str()).or_insert_with(|| super::status::build(&rt, g).to_string()).clone()))
                .collect()
        };
        last.retain(|c, _| frames.iter().any(|(f, _)| f == c));
        let clients = hub.clients.lock().unwrap();
        for (c, text) in frames {
            if last.get(&c) == Some(&text) {
                continue;
            }
            if let Some(tx) = clients.get(&c) {
                if tx.try_send(text.clone()).is_ok() {
                    last.insert(c, text);
                }
            }
        }
    }
}

async fn poll_depths(hub: Arc<Hub>, transport: Arc<dyn Transport>, depths: Arc<Mutex<BTreeMap<String, u64>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = hub.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let queues: Vec<String> = {
            let rt = hub.runtime.lock().unwrap();
            if rt.selections_empty() {
                continue;
            }
            rt.host().snapshot().participants.iter().flat_map(|p| p.inports.iter().filter_map(|i| i.queue.clone())).collect()
        };
        let mut found = BTreeMap::new();
        for q in queues {
            if let Ok(Some(d)) = transport.queue_depth(&q).await {
                found.insert(q, d);
            }
        }
        *depths.lock().unwrap() = found;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_coming_and_going_are_lines() {
        let m = |v: &[(&str, usize)]| v.iter().map(|(r, n)| (r.to_string(), (*n, "C".to_string()))).collect::<BTreeMap<_, _>>();
        assert_eq!(alive_changes(&m(&[]), &m(&[("a", 1)])), vec!["participant a (C) is up"]);
        assert_eq!(alive_changes(&m(&[("a", 1)]), &m(&[("a", 0)])), vec!["participant a (C) is gone"]);
        assert_eq!(alive_changes(&m(&[("a", 1)]), &m(&[])), vec!["participant a (C) is gone"]);
        assert_eq!(alive_changes(&m(&[("a", 1)]), &m(&[("a", 3)])), vec!["participant a (C): 3 instance(s) alive, were 1"]);
        assert!(alive_changes(&m(&[("a", 2), ("b", 0)]), &m(&[("a", 2), ("b", 0)])).is_empty());
    }
}
