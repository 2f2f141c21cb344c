//! A delivery, handed to Python. Mirrors `core/src/message.rs`.

use msgflo::Delivery;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::to_py;

/// One received message and its once-only ack/nack.
#[pyclass(name = "CoreDelivery", module = "msgflo._msgflo", frozen)]
pub struct CoreDelivery {
    pub(crate) inner: Delivery,
}

#[pymethods]
impl CoreDelivery {
    /// The inport (port id) it arrived on.
    #[getter]
    fn inport(&self) -> &str {
        self.inner.inport()
    }

    /// The payload bytes, exactly as received.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.payload().as_bytes())
    }

    #[getter]
    fn redelivered(&self) -> bool {
        self.inner.message().redelivered
    }

    #[getter]
    fn settled(&self) -> bool {
        self.inner.is_settled()
    }

    /// Processed. Raises UsageError (code ALREADY_COMPLETED) the second time.
    fn ack(&self) -> PyResult<()> {
        self.inner.ack().map_err(to_py)
    }

    /// Failed: goes to the dead-letter route, never back to the queue.
    fn nack(&self) -> PyResult<()> {
        self.inner.nack().map_err(to_py)
    }
}

/// The payload for JSON text Python's serializer wrote for a value: the
/// core's JSON rule (`Payload::json_text`) refuses NaN/Infinity with
/// UsageError (code INVALID_PAYLOAD).
#[pyfunction]
pub fn json_payload<'py>(py: Python<'py>, text: String) -> PyResult<Bound<'py, PyBytes>> {
    let payload = msgflo::Payload::json_text(text).map_err(to_py)?;
    Ok(PyBytes::new(py, payload.as_bytes()))
}
