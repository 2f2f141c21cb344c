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

/// napi's tokio runtime, with the core's worker count (see
/// `msgflo::runtime::WORKER_THREADS`) instead of one per CPU.
#[napi_derive::module_init]
fn init() {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(msgflo::runtime::WORKER_THREADS)
        .thread_name("msgflo")
        .enable_all()
        .build()
    {
        Ok(rt) => napi::bindgen_prelude::create_custom_tokio_runtime(rt),
        // napi then makes its default runtime.
        Err(e) => eprintln!("msgflo: cannot build the tokio runtime ({e}); using napi's default"),
    }
}

mod error;
mod message;
mod participant;
mod transport;

/// One of the core's log lines, for JS.
#[napi_derive::napi(object)]
pub struct LogLine {
    /// "error", "warn", "info", "debug" or "trace".
    pub level: String,
    /// The core's module: "msgflo.transport.amqp".
    pub logger: String,
    pub message: String,
}

/// A JS function that gets the core's log lines.
/// Lines waiting for the event loop; beyond this they are dropped.
const LOG_QUEUE: usize = 1024;
type LogSink = napi::threadsafe_function::ThreadsafeFunction<LogLine, (), LogLine, napi::Status, false, true, LOG_QUEUE>;

/// Hand the core's log lines at `level` and above (none: RUST_LOG, else
/// info) to `deliver({level, logger, message})` from now on; lib/native.js
/// passes one that writes to `console`. Weak: it never keeps Node running.
/// `false` when a tracing subscriber was installed before.
#[napi_derive::napi(catch_unwind)]
pub fn forward_logs(level: Option<String>, deliver: napi::bindgen_prelude::Function<LogLine, ()>) -> napi::Result<bool> {
    let sink: LogSink = deliver.build_threadsafe_function().callee_handled::<false>().weak::<true>().max_queue_size::<LOG_QUEUE>().build()?;
    msgflo::logs::forward(level.as_deref(), move |r| {
        let line = LogLine { level: r.level_name().to_owned(), logger: r.logger, message: r.message };
        // Non-blocking: a line the event loop cannot take now is dropped.
        sink.call(line, napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking);
    })
    .map_err(error::usage)
}

/// Change which of the core's log lines reach `console`: `"debug"`,
/// `"info"`, `"warn"`, ...; none: RUST_LOG, else info (index.js passes
/// "warn" when RUST_LOG is not set).
#[napi_derive::napi(catch_unwind)]
pub fn init_logging(level: Option<String>) -> napi::Result<()> {
    msgflo::logs::set_filter(level.as_deref()).map(|_| ()).map_err(error::usage)
}
