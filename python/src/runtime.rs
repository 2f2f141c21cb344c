//! The process's runtime (the core's, guarded against fork) and logging.

use std::sync::mpsc::{sync_channel, TrySendError};
use std::sync::OnceLock;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pub use msgflo::runtime::{created_here, get};

/// Log lines waiting for the logging thread; beyond this they are dropped
/// (a logging call never blocks the core).
const QUEUE: usize = 4096;

/// The core's log lines into Python's `logging`, as records of the loggers
/// `msgflo.<module>` (e.g. `msgflo.transport.amqp`): Python's logging
/// configuration decides what is shown and where. `level` (`"debug"`,
/// `"info"`, ...) chooses what the core hands over; the default is
/// `RUST_LOG`, else info. Done once when `msgflo` is imported; call again
/// to change the level.
#[pyfunction]
#[pyo3(signature = (level = None))]
pub fn init_logging(level: Option<&str>) -> PyResult<()> {
    static FORWARDING: OnceLock<bool> = OnceLock::new();
    if FORWARDING.get().is_some() {
        return msgflo::logs::set_filter(level).map(|_| ()).map_err(PyValueError::new_err);
    }
    let (tx, rx) = sync_channel::<msgflo::logs::Record>(QUEUE);
    let installed = msgflo::logs::forward(level, move |record| {
        if let Err(TrySendError::Full(_)) = tx.try_send(record) {
            // Dropped: the logging thread is QUEUE lines behind.
        }
    })
    .map_err(PyValueError::new_err)?;
    let _ = FORWARDING.set(installed);
    if installed {
        // Records cross to Python on a thread of their own, never on the
        // runtime's workers (which must not wait for the GIL).
        std::thread::Builder::new()
            .name("msgflo-logging".into())
            .spawn(move || {
                while let Ok(record) = rx.recv() {
                    let attached = Python::try_attach(|py| {
                        let logged = py
                            .import("logging")
                            .and_then(|logging| logging.call_method1("getLogger", (record.logger.as_str(),)))
                            .and_then(|logger| logger.call_method1("log", (record.python_level(), record.message.as_str())));
                        // logging reports its handlers' failures itself; one
                        // here (logging torn down) loses this line only.
                        drop(logged);
                    });
                    if attached.is_none() {
                        break; // the interpreter is shutting down
                    }
                }
            })
            .map_err(|e| PyValueError::new_err(format!("cannot start the logging thread: {e}")))?;
    }
    Ok(())
}
