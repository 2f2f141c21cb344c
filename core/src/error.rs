//! The one error type of the core, and the codes the bindings map.
//!
//! Every variant says what the caller should do about it. Bindings never look
//! at message text: they match [`ErrorCode`] exhaustively, so adding a code
//! fails to compile until Python, Node and C++ decide what it becomes.

use std::fmt;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker URL cannot be used: fix the configuration.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The broker could not be reached or refused the login. Retry later or
    /// check address and credentials. (Once connected, losing the broker is
    /// not an error: the transport reconnects on its own.)
    #[error("cannot connect to broker at {url}: {reason}")]
    Connection { url: String, reason: String },

    /// The broker already has this queue or exchange with other options
    /// (AMQP 406 PRECONDITION_FAILED). Delete it or align the options.
    #[error("broker refused to declare {kind} {name:?} as {wanted}: {reason}")]
    DeclarationConflict {
        kind: &'static str,
        name: String,
        wanted: String,
        reason: String,
    },

    /// The broker failed an operation for another reason.
    #[error("broker error during {operation}: {reason}")]
    Broker { operation: String, reason: String },

    /// A port name that the participant does not declare.
    #[error("role {role:?} has no {direction} named {port:?} (known: {known})")]
    UnknownPort {
        role: String,
        direction: &'static str,
        port: String,
        known: String,
    },

    /// `ack`/`nack` was called on a delivery that was already completed.
    #[error("delivery was already {0}; a delivery is acked or nacked exactly once")]
    AlreadyCompleted(&'static str),

    /// A participant definition or message cannot be used as given.
    #[error("invalid definition: {0}")]
    InvalidDefinition(String),

    /// A value to send is not valid JSON (NaN, Infinity, or text that does
    /// not parse). Nothing was sent.
    #[error("{0}")]
    InvalidPayload(String),

    /// The participant or transport was stopped; nothing more can be done with it.
    #[error("participant is closed")]
    Closed,

    /// An operation did not finish in the time it was given.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),

    /// User code (a handler) failed; the delivery it was handling was nacked.
    #[error("handler failed: {0}")]
    Handler(String),
}

/// Stable, language-neutral error codes. Bindings expose these as
/// `err.code` (Node), `exc.code` and exception classes (Python) and
/// `msgflo::Error::code()` (C++).
///
/// Exhaustive on purpose (no `#[non_exhaustive]`): the bindings match every
/// code without a wildcard, so a new code does not compile until each
/// binding maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidUrl,
    Connection,
    DeclarationConflict,
    Broker,
    UnknownPort,
    AlreadyCompleted,
    InvalidDefinition,
    InvalidPayload,
    Closed,
    Timeout,
    Handler,
}

impl ErrorCode {
    /// Every code, for bindings that register one class per code.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidUrl,
        ErrorCode::Connection,
        ErrorCode::DeclarationConflict,
        ErrorCode::Broker,
        ErrorCode::UnknownPort,
        ErrorCode::AlreadyCompleted,
        ErrorCode::InvalidDefinition,
        ErrorCode::InvalidPayload,
        ErrorCode::Closed,
        ErrorCode::Timeout,
        ErrorCode::Handler,
    ];

    /// The code as it appears on the other side of a binding.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidUrl => "INVALID_URL",
            ErrorCode::Connection => "CONNECTION",
            ErrorCode::DeclarationConflict => "DECLARATION_CONFLICT",
            ErrorCode::Broker => "BROKER",
            ErrorCode::UnknownPort => "UNKNOWN_PORT",
            ErrorCode::AlreadyCompleted => "ALREADY_COMPLETED",
            ErrorCode::InvalidDefinition => "INVALID_DEFINITION",
            ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
            ErrorCode::Closed => "CLOSED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Handler => "HANDLER",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The code bindings use to pick the native error class.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidUrl { .. } => ErrorCode::InvalidUrl,
            Error::Connection { .. } => ErrorCode::Connection,
            Error::DeclarationConflict { .. } => ErrorCode::DeclarationConflict,
            Error::Broker { .. } => ErrorCode::Broker,
            Error::UnknownPort { .. } => ErrorCode::UnknownPort,
            Error::AlreadyCompleted(_) => ErrorCode::AlreadyCompleted,
            Error::InvalidDefinition(_) => ErrorCode::InvalidDefinition,
            Error::InvalidPayload(_) => ErrorCode::InvalidPayload,
            Error::Closed => ErrorCode::Closed,
            Error::Timeout(..) => ErrorCode::Timeout,
            Error::Handler(_) => ErrorCode::Handler,
        }
    }

    pub(crate) fn broker(operation: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Broker {
            operation: operation.into(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn error_names_the_port() {
        let e = Error::UnknownPort {
            role: "r".into(),
            direction: "outport",
            port: "nope".into(),
            known: "out".into(),
        };
        assert_eq!(e.code(), ErrorCode::UnknownPort);
        assert!(e.to_string().contains("\"nope\""));
    }
}
