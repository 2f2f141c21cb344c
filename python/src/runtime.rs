//! The process's runtime (the core's, guarded against fork) and logging.

use pyo3::prelude::*;

pub use msgflo::runtime::{created_here, get};

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
