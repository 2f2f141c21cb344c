//! Core errors become JS `Error`s whose `code` is the core's code.
//!
//! napi can only give async functions errors with its own status codes, so
//! the core's code travels at the start of the message, `"[UNKNOWN_PORT]
//! role ... has no outport ..."`, and `lib/errors.js` (which wraps every
//! call into the addon) moves it to `err.code` and strips it from
//! `err.message`.
//!
//! | core `ErrorCode` | JS `err.code` |
//! |---|---|
//! | each code | its name: `INVALID_URL`, `CONNECTION`, `DECLARATION_CONFLICT`, `BROKER`, `UNKNOWN_PORT`, `ALREADY_COMPLETED`, `INVALID_DEFINITION`, `INVALID_PAYLOAD`, `CLOSED`, `TIMEOUT`, `HANDLER` |

use msgflo::ErrorCode;

pub type Result<T> = napi::Result<T>;

fn code(c: ErrorCode) -> &'static str {
    // Exhaustive on purpose: a new core code must be decided on here.
    match c {
        ErrorCode::InvalidUrl
        | ErrorCode::Connection
        | ErrorCode::DeclarationConflict
        | ErrorCode::Broker
        | ErrorCode::UnknownPort
        | ErrorCode::AlreadyCompleted
        | ErrorCode::InvalidDefinition
        | ErrorCode::InvalidPayload
        | ErrorCode::Closed
        | ErrorCode::Timeout
        | ErrorCode::Handler => c.as_str(),
    }
}

pub fn to_js(e: msgflo::Error) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("[{}] {}", code(e.code()), e))
}

pub fn usage(message: impl Into<String>) -> napi::Error {
    to_js(msgflo::Error::InvalidDefinition(message.into()))
}
