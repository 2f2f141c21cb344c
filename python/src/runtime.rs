//! The one tokio runtime of the process, guarded against fork.
//!
//! A forked child has none of the parent's runtime threads, so the child
//! gets a fresh runtime (the parent's is leaked: dropping it would wait for
//! threads that do not exist). Participants created before the fork belong
//! to the parent; using one in the child is refused with a clear error.

use std::sync::Mutex;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The runtime for this process (created on first use, again after fork).
pub fn get() -> &'static Runtime {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    match *slot {
        Some((owner, rt)) if owner == pid => rt,
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("msgflo")
                .enable_all()
                .build()
                .expect("tokio runtime");
            let rt: &'static Runtime = Box::leak(Box::new(rt));
            *slot = Some((pid, rt));
            rt
        }
    }
}

/// Send core logs (tracing) to stderr, filtered by `level` or `RUST_LOG`.
#[pyfunction]
#[pyo3(signature = (level = None))]
pub fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(format!("msgflo={l}")),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("msgflo=warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}
