//! Core errors become instances of the classes in `msgflo/errors.py`.
//!
//! | core `ErrorCode`      | Python class                 |
//! |-----------------------|------------------------------|
//! | `Connection`          | `msgflo.ConnectionError`     |
//! | `DeclarationConflict` | `msgflo.DeclarationConflict` |
//! | `Broker`              | `msgflo.ProtocolError`       |
//! | `Timeout`             | `msgflo.TimeoutError`        |
//! | `Handler`             | `msgflo.HandlerError`        |
//! | `InvalidUrl`, `UnknownPort`, `AlreadyCompleted`, `InvalidDefinition`, `InvalidPayload`, `Closed` | `msgflo.UsageError` |
//!
//! Every instance has `.code` (e.g. `"UNKNOWN_PORT"`), the core's code.
//! The match is exhaustive: a new core code does not compile until mapped.

use msgflo::ErrorCode;
use pyo3::prelude::*;

fn class_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Connection => "ConnectionError",
        ErrorCode::DeclarationConflict => "DeclarationConflict",
        ErrorCode::Broker => "ProtocolError",
        ErrorCode::Timeout => "TimeoutError",
        ErrorCode::Handler => "HandlerError",
        ErrorCode::InvalidUrl
        | ErrorCode::UnknownPort
        | ErrorCode::AlreadyCompleted
        | ErrorCode::InvalidDefinition
        | ErrorCode::InvalidPayload
        | ErrorCode::Closed => "UsageError",
    }
}

/// Build the Python exception for a core error.
pub fn to_py(e: msgflo::Error) -> PyErr {
    let code = e.code();
    Python::attach(|py| {
        let made = (|| -> PyResult<PyErr> {
            let module = py.import("msgflo.errors")?;
            let cls = module.getattr(class_name(code))?;
            let exc = cls.call1((e.to_string(), code.as_str()))?;
            Ok(PyErr::from_value(exc))
        })();
        made.unwrap_or_else(|import_failed| import_failed)
    })
}

/// A usage error raised by the binding itself (not by the core).
pub fn usage(message: impl Into<String>) -> PyErr {
    to_py(msgflo::Error::InvalidDefinition(message.into()))
}

/// `{code: class name}` for every core code (for tests and docs).
#[pyfunction]
pub fn error_codes() -> Vec<(&'static str, &'static str)> {
    ErrorCode::ALL.iter().map(|c| (c.as_str(), class_name(*c))).collect()
}
