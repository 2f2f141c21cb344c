//! `msgflo run` and `msgflo setup`: one coordinator, two lifetimes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use msgflo::coordinator::embedded::EmbeddedBroker;
use msgflo::coordinator::launcher::Launcher;
use msgflo::coordinator::supervisor::Supervisor;
use msgflo::coordinator::{Coordinator, Options, Snapshot};
use msgflo::graph::Graph;
use msgflo::library::Library;

use crate::{Failure, GraphArgs, RuntimeArgs};

/// What `msgflo run` runs: a graph file (optional) and its library.
pub struct RunGraph {
    pub graph: Option<PathBuf>,
    pub library: Option<PathBuf>,
    pub ignore: Vec<String>,
    /// A guv config: these roles are autoscaled.
    pub scale: Option<PathBuf>,
    /// guv's metrics address and decision log (with `scale`).
    pub metrics: Option<std::net::SocketAddr>,
    pub decisions: Option<PathBuf>,
}

/// The coordinator's processes as guv's `local` backend: a role's count is
/// its instances; the ones not announced yet are booting.
struct Scaler {
    coordinator: std::sync::Arc<Coordinator>,
    counts: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
}

impl msgflo::guv::backend::LocalScaler for Scaler {
    fn current(&self, role: &str) -> Option<u32> {
        self.counts.lock().unwrap().get(role).copied()
    }
    fn set(&self, role: &str, n: u32) -> Result<(), String> {
        self.coordinator.scale(role, n).map_err(|e| e.to_string())?;
        self.counts.lock().unwrap().insert(role.to_owned(), n);
        Ok(())
    }
    fn booting(&self, role: &str) -> u32 {
        let want = self.current(role).unwrap_or(0);
        let alive = self.coordinator.snapshot().participants.iter().find(|p| p.role == role).map(|p| p.alive as u32).unwrap_or(0);
        want.saturating_sub(alive)
    }
}

/// The graph and the library it is run with.
pub struct Loaded {
    pub graph: Graph,
    pub library: Library,
    /// Where commands run: the library file's folder (or the current one).
    pub dir: PathBuf,
}

/// Read the graph and the library; every problem is an input error that
/// names the file (and line:column for graphs).
pub fn load(args: &GraphArgs) -> Result<Loaded, Failure> {
    load_from(Some(&args.graph), args.library.as_ref())
}

fn load_from(graph: Option<&PathBuf>, library: Option<&PathBuf>) -> Result<Loaded, Failure> {
    let graph = match graph {
        Some(path) => {
            let g = Graph::from_file(path).map_err(|e| Failure::input(e.to_string()))?;
            g.validate().map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
            g
        }
        None => Graph::default(),
    };
    let found = library.cloned().or_else(|| {
        ["msgflo.json", "package.json"].iter().map(PathBuf::from).find(|p| p.exists())
    });
    let (library, dir) = match found {
        Some(path) => {
            // Absolute, so component files resolve from the children's folder.
            let path = path.canonicalize().map_err(|e| Failure::input(format!("library {}: {e}", path.display())))?;
            let lib = Library::from_file(&path).map_err(|e| Failure::input(e.to_string()))?;
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| ".".into());
            (lib, dir)
        }
        None => (Library::default(), PathBuf::from(".")),
    };
    Ok(Loaded { graph, library, dir })
}

fn launcher(loaded: &Loaded, url: &str, only: Vec<String>, ignore: Vec<String>) -> Launcher {
    Launcher {
        library: loaded.library.clone(),
        dir: loaded.dir.clone(),
        broker_url: url.to_owned(),
        only,
        ignore,
        supervisor: Supervisor::default(),
    }
}

/// Log progress lines as the picture changes (discovered, wired, complete).
fn summary(s: &Snapshot) -> String {
    let alive = s.participants.iter().filter(|p| p.alive > 0).count();
    let wired = s.wires.iter().filter(|w| w.error.is_none()).count();
    format!(
        "{alive} participant(s) up, {wired}/{} edge(s) wired, {} waiting, {} IIP(s) sent",
        s.wires.len(),
        s.pending.len(),
        s.iips_sent
    )
}

/// The runtime's id: the same for the same graph file (or folder) across
/// restarts, so an IDE recognises the runtime; shaped as a UUID v4.
fn runtime_id(anchor: &Path) -> String {
    let key = anchor.canonicalize().unwrap_or_else(|_| anchor.to_path_buf());
    let h = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.display().to_string().as_bytes());
    uuid::Builder::from_random_bytes(*h.as_bytes()).into_uuid().to_string()
}

/// `<ide>#runtime/endpoint?` + the percent-encoded connection parameters.
pub fn live_url(ide: &str, address: &str, id: &str, secret: Option<&str>) -> String {
    let mut q = format!("protocol=websocket&address={address}&id={id}");
    if let Some(s) = secret {
        q.push_str(&format!("&secret={s}"));
    }
    let enc: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    format!("{}#runtime/endpoint?{}", ide.trim_end_matches('/'), enc.replace('+', "%20"))
}

pub async fn run(args: RunGraph, broker: Option<String>, rt_args: RuntimeArgs, no_start: bool, expire: Option<Duration>) -> Result<(), Failure> {
    let loaded = load_from(args.graph.as_ref(), args.library.as_ref())?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let (main_id, anchor) = match &args.graph {
        Some(p) => (p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "main".into()), p.clone()),
        None => (cwd.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "main".into()), cwd.clone()),
    };
    if rt_args.auto_save && args.graph.is_none() {
        return Err(Failure::input("--auto-save needs a graph file to write to"));
    }
    let scaled = match &args.scale {
        Some(path) => crate::guv::load(path, &[])?,
        None => Vec::new(),
    };
    // Listen first, and say so on stdout before anything else: tools that
    // start runtimes take the first line as "up".
    let listener = if rt_args.no_runtime {
        None
    } else {
        let l = msgflo::fbp::server::bind(&rt_args.host, rt_args.port).await.map_err(Failure::run)?;
        let addr = l.local_addr().map_err(|e| Failure::run(e.to_string()))?;
        Some((l, addr))
    };
    let id = runtime_id(&anchor);
    if let Some((_, addr)) = &listener {
        let address = format!("ws://{addr}");
        println!("runtime: {address}");
        println!("live view: http://{addr}/");
        println!("flowhub: {}", live_url(&rt_args.ide, &address, &id, rt_args.secret.as_deref()));
        if !addr.ip().is_loopback() && rt_args.secret.is_none() {
            tracing::warn!("the runtime listens on {addr}, beyond this machine, without a secret: anybody who reaches it can change the running system (set --secret or MSGFLO_RUNTIME_SECRET)");
        }
    }
    let (url, embedded) = match broker.or_else(msgflo::broker::configured) {
        Some(u) => (u, false),
        None => {
            let b = tokio::task::spawn_blocking(EmbeddedBroker::start)
                .await
                .map_err(|e| Failure::run(e.to_string()))??;
            (b.url(), true)
        }
    };
    if !scaled.is_empty() && !url.starts_with("amqp") {
        return Err(Failure::input(format!(
            "--scale decides from queue depths, which only RabbitMQ (AMQP) reports; {} has none (use --broker amqp://...)",
            msgflo::broker::BrokerUrl::parse(&url).map(|u| u.redacted()).unwrap_or(url.clone())
        )));
    }
    let transport = crate::connect(&url, "coordinator").await?;
    let mut options = Options::new(loaded.graph.clone());
    if let Some(e) = expire {
        options.expiry = e.max(Duration::from_millis(100));
    }
    // Scaled roles start at their minimum, and take `concurrency` jobs at
    // a time, so that new instances get a share of the queue.
    let local: Vec<_> = scaled.iter().filter(|r| r.backend == msgflo::guv::config::BackendKind::Local).collect();
    for r in &local {
        options.scale.insert(r.name.clone(), r.minimum);
        options.role_env.insert(r.name.clone(), vec![("MSGFLO_PREFETCH".into(), r.concurrency.max(1).to_string())]);
    }
    // The IIPs sent are noted per graph, so that a coordinator started again
    // does not send them twice to participants still running.
    options.iip_journal = Some(msgflo::transport::state_dir().join(format!("iips-{id}.json")));
    let l = launcher(&loaded, &url, vec![], args.ignore.clone());
    let roles = l.roles(&loaded.graph).len();
    if !no_start {
        options.launcher = Some(l);
    }
    let shown = msgflo::broker::BrokerUrl::parse(&url).map(|u| u.redacted()).unwrap_or(url.clone());
    println!(
        "msgflo: running {} on {shown}{} with {roles} participant(s); Ctrl-C stops",
        args.graph.as_ref().map(|g| g.display().to_string()).unwrap_or_else(|| format!("an empty graph {main_id:?}")),
        if embedded { " (embedded broker)" } else { "" },
    );
    let counts = options.scale.clone();
    let coordinator = std::sync::Arc::new(Coordinator::start(transport.clone(), &url, options).await?);
    let guv_stop = tokio_util::sync::CancellationToken::new();
    let guv = (!scaled.is_empty()).then(|| {
        let scaler = Scaler { coordinator: coordinator.clone(), counts: std::sync::Mutex::new(counts) };
        let opts = msgflo::guv::run::RunOptions {
            local: Some(std::sync::Arc::new(scaler)),
            stop: Some(guv_stop.clone()),
            broker: url.clone(),
            metrics: args.metrics,
            decisions: args.decisions.clone(),
            ..Default::default()
        };
        tracing::info!("autoscaling {} role(s) with guv", scaled.len());
        tokio::spawn(msgflo::guv::run::run(scaled.clone(), opts))
    });
    let server = match listener {
        None => None,
        Some((l, _)) => {
            let depths = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
            let host = msgflo::fbp::host::CoordinatorHost { coordinator: coordinator.clone(), library: loaded.library.clone(), depths: depths.clone() };
            let settings = msgflo::fbp::Settings {
                id: id.clone(),
                label: format!("msgflo {main_id}"),
                secret: rt_args.secret.clone(),
                main_graph: main_id.clone(),
                ide: rt_args.ide.clone(),
                broker: shown.clone(),
                namespace: loaded.library.namespace.clone(),
            };
            let mut graph = loaded.graph.clone();
            graph.properties.entry("name".into()).or_insert_with(|| main_id.clone().into());
            let runtime = msgflo::fbp::Runtime::new(settings, graph, Box::new(host));
            let amqp = url.starts_with("amqp");
            let config = msgflo::fbp::server::Config {
                allow_origins: rt_args.allow_origin.clone(),
                ide: rt_args.ide.clone(),
                auto_save: rt_args.auto_save.then(|| args.graph.clone()).flatten(),
            };
            let events = coordinator.events();
            Some(
                msgflo::fbp::server::Server::start(l, runtime, events, amqp.then(|| transport.clone()), depths, config)
                    .map_err(|e| Failure::run(e.to_string()))?,
            )
        }
    };
    let mut last = String::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let stop = msgflo::participant::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {
                let s = coordinator.snapshot();
                let line = summary(&s);
                if line != last {
                    tracing::info!("{line}{}", if s.complete { " (graph complete)" } else { "" });
                    last = line;
                }
            }
        }
    }
    tracing::info!("stopping participants");
    guv_stop.cancel();
    if let Some(g) = guv {
        if let Ok(Err(e)) = g.await {
            tracing::warn!("autoscaling ended: {e}");
        }
    }
    if let Some(s) = server {
        s.stop().await;
    }
    match std::sync::Arc::try_unwrap(coordinator) {
        Ok(c) => c.stop().await,
        Err(shared) => shared.shutdown().await,
    }
    let _ = transport.close().await;
    Ok(())
}

pub async fn setup(
    args: GraphArgs,
    broker: Option<String>,
    participants: bool,
    only: Vec<String>,
    forever: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    let loaded = load(&args)?;
    let url = msgflo::broker::resolve(broker.as_deref());
    if url.starts_with("mqtt") && !forever {
        tracing::warn!("MQTT edges are forwarded by a running coordinator: they stop when setup exits (use --forever, or msgflo run)");
    }
    let transport = crate::connect(&url, "coordinator").await?;
    let mut options = Options::new(loaded.graph.clone());
    if participants {
        options.launcher = Some(launcher(&loaded, &url, only, args.ignore.clone()));
    }
    let coordinator = Coordinator::start(transport.clone(), &url, options).await?;
    let waited = coordinator.wait_for(timeout, |s| s.complete).await;
    let result = match waited {
        Ok(s) => {
            for w in &s.wires {
                println!("{}", w.wire);
            }
            println!("msgflo: setup of {} complete: {}", args.graph.display(), summary(&s));
            Ok(())
        }
        Err(_) => {
            let s = coordinator.snapshot();
            let mut why: Vec<String> = s.missing.iter().map(|r| format!("  participant {r}: not discovered")).collect();
            why.extend(s.pending.iter().map(|(e, p)| format!("  {e}: {p:?}")));
            why.extend(s.wires.iter().filter_map(|w| Some(format!("  {}: {}", w.wire, w.error.as_ref()?))));
            why.extend(s.iips_pending.iter().map(|(t, r)| format!("  IIP to {t}: {r}")));
            Err(Failure::run(format!("setup incomplete after {} s:\n{}", timeout.as_secs_f64(), why.join("\n"))))
        }
    };
    if forever && result.is_ok() {
        msgflo::participant::stop_signal().await;
    }
    coordinator.stop().await;
    let _ = transport.close().await;
    result
}
