//! Node.js bindings for the msgflo core: the addon `msgflo.node`.
//!
//! Thin by design: one file per core module (`participant.rs`,
//! `message.rs`, `transport.rs`, `error.rs`). Waiting calls return
//! Promises and run on napi's tokio runtime (the one runtime of the
//! process), never on the event loop thread. Deliveries cross in batches.
//! The msgflo-nodejs compatible API and the modern API are JavaScript in
//! `lib/`. Synchronous functions are built with `catch_unwind`, so a Rust
//! panic becomes a JS exception instead of aborting Node. Async ones run as
//! tasks on napi's tokio runtime, which catches a panicking task (not yet
//! covered by a test).

mod error;
mod message;
mod participant;
mod transport;

/// Send core logs (tracing) to stderr; `level` like "info", else RUST_LOG.
#[napi_derive::napi(catch_unwind)]
pub fn init_logging(level: Option<String>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(format!("msgflo={l}")),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("msgflo=warn")),
    };
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).with_env_filter(filter).try_init();
}
