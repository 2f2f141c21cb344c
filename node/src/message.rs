//! A delivery, handed to JS. Mirrors `core/src/message.rs`.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::error::{to_js, Result};

/// One received message and its once-only ack/nack.
#[napi]
pub struct CoreDelivery {
    pub(crate) inner: std::sync::Arc<msgflo::Delivery>,
}

#[napi]
impl CoreDelivery {
    /// The inport (port id) it arrived on.
    #[napi(getter, catch_unwind)]
    pub fn inport(&self) -> String {
        self.inner.inport().to_owned()
    }

    /// The payload bytes, exactly as received.
    #[napi(getter, catch_unwind)]
    pub fn payload(&self) -> Buffer {
        self.inner.payload().as_bytes().to_vec().into()
    }

    #[napi(getter, catch_unwind)]
    pub fn redelivered(&self) -> bool {
        self.inner.message().redelivered
    }

    #[napi(getter, catch_unwind)]
    pub fn settled(&self) -> bool {
        self.inner.is_settled()
    }

    /// Processed. Throws (code ALREADY_COMPLETED) the second time.
    #[napi(catch_unwind)]
    pub fn ack(&self) -> Result<()> {
        self.inner.ack().map_err(to_js)
    }

    /// Failed: dead-letter route, never back to the queue.
    #[napi(catch_unwind)]
    pub fn nack(&self) -> Result<()> {
        self.inner.nack().map_err(to_js)
    }
}

/// The payload for JSON text `JSON.stringify` wrote for a value: the core's
/// JSON rule (`Payload::json_text`) refuses NaN/Infinity (INVALID_PAYLOAD).
#[napi(catch_unwind)]
pub fn json_payload(text: String) -> Result<Buffer> {
    let payload = msgflo::Payload::json_text(text).map_err(to_js)?;
    Ok(payload.into_bytes().into())
}
