//! Python bindings for the msgflo core: the extension module `msgflo._msgflo`.
//!
//! Thin by design: one file per core module (`participant.rs`,
//! `message.rs`, `error.rs`) plus `runtime.rs` for the one tokio runtime.
//! Everything a user sees (the msgflo-python 0.4.1 compatible `Participant`,
//! `main`, the asyncio API) is Python in `pysrc/msgflo/`, built on these
//! few blocking calls, which release the GIL while they wait.

use pyo3::prelude::*;

mod error;
mod message;
mod participant;
mod runtime;

#[pymodule]
fn _msgflo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<participant::CoreParticipant>()?;
    m.add_class::<message::CoreDelivery>()?;
    m.add_function(wrap_pyfunction!(runtime::init_logging, m)?)?;
    m.add_function(wrap_pyfunction!(error::error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(message::json_payload, m)?)?;
    m.add("DEFAULT_PREFETCH", msgflo::transport::DEFAULT_PREFETCH)?;
    Ok(())
}
