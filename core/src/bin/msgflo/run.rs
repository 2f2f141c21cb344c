//! `msgflo run` and `msgflo setup`: one coordinator, two lifetimes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use msgflo::coordinator::embedded::EmbeddedBroker;
use msgflo::coordinator::launcher::Launcher;
use msgflo::coordinator::supervisor::Supervisor;
use msgflo::coordinator::{Coordinator, Options, Snapshot};
use msgflo::graph::Graph;
use msgflo::library::Library;

use crate::{Failure, GraphArgs};

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
    let graph = Graph::from_file(&args.graph).map_err(|e| Failure::input(e.to_string()))?;
    graph.validate().map_err(|e| Failure::input(format!("{}: {e}", args.graph.display())))?;
    let found = args.library.clone().or_else(|| {
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

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
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

pub async fn run(args: GraphArgs, broker: Option<String>, no_start: bool, expire: Option<f64>) -> Result<(), Failure> {
    let loaded = load(&args)?;
    let (url, embedded) = match broker.or_else(msgflo::broker::configured) {
        Some(u) => (u, false),
        None => {
            let b = tokio::task::spawn_blocking(EmbeddedBroker::start)
                .await
                .map_err(|e| Failure::run(e.to_string()))??;
            (b.url(), true)
        }
    };
    let transport = crate::connect(&url, "coordinator").await?;
    let mut options = Options::new(loaded.graph.clone());
    if let Some(e) = expire {
        options.expiry = Duration::from_secs_f64(e.max(0.1));
    }
    let l = launcher(&loaded, &url, vec![], args.ignore.clone());
    let roles = l.roles(&loaded.graph).len();
    if !no_start {
        options.launcher = Some(l);
    }
    println!(
        "msgflo: running {} on {}{} with {roles} participant(s); Ctrl-C stops",
        args.graph.display(),
        msgflo::broker::BrokerUrl::parse(&url).map(|u| u.redacted()).unwrap_or(url.clone()),
        if embedded { " (embedded broker)" } else { "" },
    );
    let coordinator = Coordinator::start(transport.clone(), &url, options).await?;
    let mut last = String::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let stop = shutdown_signal();
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
    coordinator.stop().await;
    let _ = transport.close().await;
    Ok(())
}

pub async fn setup(
    args: GraphArgs,
    broker: Option<String>,
    participants: bool,
    only: Vec<String>,
    forever: bool,
    timeout: f64,
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
    let waited = coordinator.wait_for(Duration::from_secs_f64(timeout), |s| s.complete).await;
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
            Err(Failure::run(format!("setup incomplete after {timeout} s:\n{}", why.join("\n"))))
        }
    };
    if forever && result.is_ok() {
        shutdown_signal().await;
    }
    coordinator.stop().await;
    let _ = transport.close().await;
    result
}
