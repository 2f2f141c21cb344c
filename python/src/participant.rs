//! A participant, driven from Python. Mirrors `core/src/participant.rs`.
//!
//! Every call that can wait releases the GIL; `recv_batch` waits in short
//! slices so Ctrl-C and signal handlers run promptly.

use std::time::{Duration, Instant};

use msgflo::{Definition, Options, Participant, PortDef};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::error::{to_py, usage};
use crate::message::CoreDelivery;
use crate::runtime;

/// How long `recv_batch` waits before looking at pending signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

#[pyclass(name = "CoreParticipant", module = "msgflo._msgflo", frozen)]
pub struct CoreParticipant {
    inner: Participant,
    /// The process that created it: its tasks live in that process's runtime.
    pid: u32,
}

impl CoreParticipant {
    fn check_process(&self) -> PyResult<()> {
        if !runtime::created_here(self.pid) {
            return Err(usage(
                "this participant was created before fork(); it belongs to the parent process. \
                 Create participants in the child (or use multiprocessing's 'spawn' start method)",
            ));
        }
        Ok(())
    }
}

/// `d[key]`, None when missing or None.
fn item<'py>(d: &Bound<'py, PyAny>, key: &str) -> Option<Bound<'py, PyAny>> {
    d.get_item(key).ok().filter(|v| !v.is_none())
}

fn string(d: &Bound<'_, PyAny>, key: &str) -> PyResult<Option<String>> {
    item(d, key).map(|v| v.extract::<String>()).transpose()
}

fn port_from(p: &Bound<'_, PyAny>) -> PyResult<PortDef> {
    Ok(PortDef {
        id: string(p, "id")?.unwrap_or_default(),
        type_: string(p, "type")?.unwrap_or_else(|| "any".into()),
        queue: string(p, "queue")?,
        description: string(p, "description")?,
        // msgflo-python allows any schema value; only a string is announced.
        schema: item(p, "schema").filter(|v| v.is_instance_of::<PyString>()).map(|v| v.extract()).transpose()?,
        hidden: item(p, "hidden").map(|v| v.is_truthy()).transpose()?.unwrap_or(false),
        persistent: item(p, "persistent").map(|v| v.is_truthy()).transpose()?,
    })
}

fn ports_from(d: &Bound<'_, PyAny>, key: &str) -> PyResult<Vec<PortDef>> {
    match item(d, key) {
        None => Ok(Vec::new()),
        Some(list) => list.try_iter()?.map(|p| port_from(&p?)).collect(),
    }
}

/// A definition dict, typed for the core.
fn definition_from(d: &Bound<'_, PyAny>) -> PyResult<Definition> {
    Ok(Definition {
        component: string(d, "component")?.unwrap_or_default(),
        label: string(d, "label")?,
        icon: string(d, "icon")?,
        id: string(d, "id")?.filter(|id| !id.is_empty()),
        inports: ports_from(d, "inports")?,
        outports: ports_from(d, "outports")?,
    })
}

#[pymethods]
impl CoreParticipant {
    /// Connect, declare every port, subscribe; nothing announced yet.
    /// `definition` is a dict in msgflo's shape (component, label, icon,
    /// id, inports and outports of {id, type, queue, description, schema,
    /// hidden, persistent}); the core fills queues and the id.
    #[staticmethod]
    #[pyo3(signature = (definition, role, broker = None, prefetch = None, heartbeat = None))]
    fn connect(
        py: Python<'_>,
        definition: &Bound<'_, PyAny>,
        role: &str,
        broker: Option<String>,
        prefetch: Option<u16>,
        heartbeat: Option<f64>,
    ) -> PyResult<Self> {
        let definition = definition_from(definition)?;
        let mut options = Options { broker, ..Default::default() };
        if let Some(p) = prefetch {
            options.connect.prefetch = p;
        }
        if let Some(h) = heartbeat {
            options.heartbeat = Some(msgflo::seconds::period("heartbeat", h).map_err(usage)?);
        }
        let rt = runtime::get();
        let inner = py
            .detach(|| rt.block_on(Participant::connect(&definition, role, options)))
            .map_err(to_py)?;
        Ok(CoreParticipant { inner, pid: std::process::id() })
    }

    /// Send the first discovery message and start the heartbeat.
    fn announce(&self, py: Python<'_>) -> PyResult<()> {
        self.check_process()?;
        py.detach(|| runtime::get().block_on(self.inner.announce())).map_err(to_py)
    }

    /// The discovery payload (JSON text): id, role, component, ports, queues.
    #[getter]
    fn discovery(&self) -> String {
        self.inner.info().discovery_payload().to_string()
    }

    #[getter]
    fn id(&self) -> &str {
        &self.inner.info().id
    }

    #[getter]
    fn role(&self) -> &str {
        self.inner.role()
    }

    /// The broker URL, password hidden.
    #[getter]
    fn broker(&self) -> String {
        self.inner.transport().describe()
    }

    /// `ROLE(COMPONENT) ready on BROKER`: the line printed before the first
    /// discovery message.
    #[getter]
    fn readiness_line(&self) -> String {
        self.inner.readiness_line()
    }

    #[getter]
    fn stopped(&self) -> bool {
        self.inner.is_stopped()
    }

    /// Up to `max` deliveries: waits for the first one up to `timeout`
    /// seconds (None: until one arrives or the participant stops). Empty on
    /// timeout or once stopped.
    #[pyo3(signature = (max, timeout = None))]
    fn recv_batch(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<Vec<CoreDelivery>> {
        self.check_process()?;
        let deadline = match timeout {
            Some(t) => Some(Instant::now() + msgflo::seconds::wait("timeout", t).map_err(usage)?),
            None => None,
        };
        let rt = runtime::get();
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SIGNAL_SLICE),
                None => SIGNAL_SLICE,
            };
            let batch = py.detach(|| rt.block_on(self.inner.recv_batch_timeout(max, slice)));
            if !batch.is_empty() {
                return Ok(batch.into_iter().map(|inner| CoreDelivery { inner }).collect());
            }
            if self.inner.is_stopped() || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
            py.check_signals()?;
        }
    }

    /// Publish `payload` on an outport. Raises UsageError (UNKNOWN_PORT) for
    /// a port the definition does not have.
    fn send(&self, py: Python<'_>, port: &str, payload: Vec<u8>) -> PyResult<()> {
        self.check_process()?;
        py.detach(|| runtime::get().block_on(self.inner.send(port, payload))).map_err(to_py)
    }

    /// Publish without waiting: False when the send would have to wait
    /// (backpressure, or the broker is away); nothing was sent then.
    fn try_send(&self, port: &str, payload: Vec<u8>) -> PyResult<bool> {
        self.check_process()?;
        let _in_runtime = runtime::get().enter();
        self.inner.try_send(port, payload).map_err(to_py)
    }

    /// Publish on the core's runtime and return at once; `resolve(None)`,
    /// or `resolve(exception)`, is called from a runtime thread when done
    /// (asyncio passes a callable that hands it to its loop thread-safely).
    /// The calling thread never waits: for the asyncio API.
    fn send_async(&self, port: String, payload: Vec<u8>, resolve: Py<PyAny>) -> PyResult<()> {
        self.check_process()?;
        let inner = self.inner.clone();
        runtime::get().spawn(async move {
            let result = inner.send(&port, payload).await;
            Python::attach(|py| {
                let error = result.err().map(|e| to_py(e).into_value(py));
                // Fails only when the loop is closed: nothing waits any more.
                let _ = resolve.call1(py, (error,));
            });
        });
        Ok(())
    }

    /// Complete a delivery (None: input that came from no delivery, e.g. an
    /// IIP) from its handler's outcome: `outputs` sent, then ack; or, with
    /// `error`, nack and the error-port rule. The rule is the core's
    /// (`Participant::complete`).
    #[pyo3(signature = (delivery, outputs, error = None))]
    fn complete(
        &self,
        py: Python<'_>,
        delivery: Option<PyRef<'_, CoreDelivery>>,
        outputs: Vec<(String, Vec<u8>)>,
        error: Option<String>,
    ) -> PyResult<()> {
        self.check_process()?;
        let outputs: msgflo::Outputs = outputs.into_iter().map(|(port, bytes)| (port, bytes.into())).collect();
        let result = match error {
            None => Ok(outputs),
            Some(error) => Err(msgflo::Failure { error, outputs }),
        };
        let delivery = delivery.as_ref().map(|d| &d.inner);
        py.detach(|| runtime::get().block_on(self.inner.finish(delivery, result))).map_err(to_py)
    }

    /// Stop receiving, requeue what was not handled, wait for outputs and
    /// acks to reach the broker, close.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        if !runtime::created_here(self.pid) {
            return Ok(()); // the parent's connection; nothing to do here
        }
        py.detach(|| runtime::get().block_on(self.inner.stop())).map_err(to_py)
    }
}
