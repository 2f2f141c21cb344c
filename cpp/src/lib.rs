//! C++ bindings for the msgflo core: the cxx bridge.
//!
//! The bridge is internal: C++ users include only the hand-written C++11
//! header `include/msgflo/msgflo.hpp`, implemented in `src/msgflo.cpp` on
//! top of these functions. Every call here blocks the calling C++ thread
//! (never a runtime thread) on the one tokio runtime of the process, with a
//! timeout where it waits for messages.
//!
//! Errors cross as `rust::Error` whose message starts with the core's code,
//! `"[UNKNOWN_PORT] ..."`; `msgflo.cpp` turns them into `msgflo::Error`
//! (a `std::runtime_error`) with `code()`. Codes: every `ErrorCode::as_str`,
//! and `INTERNAL`: a panic in here is caught (`guard`, around the body of
//! every entry point) and becomes an error, never an abort.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use msgflo::{Definition, Delivery, Options, Participant, PortDef};

#[cxx::bridge(namespace = "msgflo::ffi")]
mod ffi {
    /// A port, typed (empty strings: not given).
    struct PortArg {
        id: String,
        type_: String,
        queue: String,
        hidden: bool,
        persistent: bool,
    }

    /// A definition, typed (empty strings: not given; the core fills
    /// queues, the id and defaults).
    struct DefinitionArg {
        component: String,
        label: String,
        icon: String,
        id: String,
        inports: Vec<PortArg>,
        outports: Vec<PortArg>,
    }

    extern "Rust" {
        type CoreParticipant;
        type CoreBatch;
        type CoreDelivery;

        fn connect(definition: &DefinitionArg, role: &str, broker: &str, prefetch: u16) -> Result<Box<CoreParticipant>>;
        fn resolve_broker(url: &str) -> Result<String>;
        fn default_prefetch() -> Result<u16>;
        fn listen_stop_signals() -> Result<()>;
        fn wait_stop_signal(timeout_ms: u32) -> Result<bool>;
        fn announce(self: &CoreParticipant) -> Result<()>;
        fn discovery(self: &CoreParticipant) -> Result<String>;
        fn id(self: &CoreParticipant) -> Result<String>;
        fn queue(self: &CoreParticipant, inport: bool, port: &str) -> Result<String>;
        fn broker(self: &CoreParticipant) -> Result<String>;
        fn readiness_line(self: &CoreParticipant) -> Result<String>;
        fn stopped(self: &CoreParticipant) -> Result<bool>;
        fn recv_batch(self: &CoreParticipant, max: usize, timeout_ms: u32) -> Result<Box<CoreBatch>>;
        fn send(self: &CoreParticipant, port: &str, payload: &[u8]) -> Result<()>;
        fn send_json(self: &CoreParticipant, port: &str, json: &str) -> Result<()>;
        fn fail(self: &CoreParticipant, delivery: &CoreDelivery, error: &str) -> Result<()>;
        fn stop(self: &CoreParticipant) -> Result<()>;

        fn len(self: &CoreBatch) -> Result<usize>;
        fn take(self: &mut CoreBatch, i: usize) -> Result<Box<CoreDelivery>>;

        fn inport(self: &CoreDelivery) -> Result<&str>;
        fn payload(self: &CoreDelivery) -> Result<&[u8]>;
        fn settled(self: &CoreDelivery) -> Result<bool>;
        fn ack(self: &CoreDelivery) -> Result<()>;
        fn nack(self: &CoreDelivery) -> Result<()>;
    }
}

use msgflo::runtime::get as runtime;

type Res<T> = Result<T, String>;

fn err(e: msgflo::Error) -> String {
    format!("[{}] {}", e.code(), e)
}

/// Run `f`, turning a panic into an error so it never unwinds into C++.
/// Every entry point of the bridge runs its body in here (cxx itself
/// would abort the process on a panic), which is why even the accessors
/// return `Result`. Nothing here calls back into C++: C++ exceptions
/// (handlers) are caught on the C++ side and never cross Rust frames.
fn guard<T>(f: impl FnOnce() -> Res<T>) -> Res<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(format!("[INTERNAL] msgflo panicked: {}", msgflo::runtime::panic_message(&*p))))
}

pub struct CoreParticipant {
    inner: Participant,
}

pub struct CoreBatch {
    items: Vec<Option<Delivery>>,
}

pub struct CoreDelivery {
    inner: Delivery,
}

fn given(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn port(p: &ffi::PortArg) -> PortDef {
    PortDef {
        id: p.id.clone(),
        type_: given(&p.type_).unwrap_or_else(|| "any".into()),
        queue: given(&p.queue),
        description: None,
        schema: None,
        hidden: p.hidden,
        persistent: (!p.persistent).then_some(false),
    }
}

fn connect(def: &ffi::DefinitionArg, role: &str, broker: &str, prefetch: u16) -> Res<Box<CoreParticipant>> {
    guard(|| {
        let def = Definition {
            component: def.component.clone(),
            label: given(&def.label),
            icon: given(&def.icon),
            id: given(&def.id),
            inports: def.inports.iter().map(port).collect(),
            outports: def.outports.iter().map(port).collect(),
        };
        let mut options = Options { broker: given(broker), ..Default::default() };
        options.connect.prefetch = prefetch;
        let inner = runtime().block_on(Participant::connect(&def, role, options)).map_err(err)?;
        Ok(Box::new(CoreParticipant { inner }))
    })
}

/// The broker URL the core uses for `url` (empty: from the environment).
fn resolve_broker(url: &str) -> Res<String> {
    guard(|| Ok(msgflo::broker::resolve(given(url).as_deref())))
}

fn default_prefetch() -> Res<u16> {
    guard(|| Ok(msgflo::transport::DEFAULT_PREFETCH))
}

/// Becomes true at the first SIGTERM or SIGINT once listening started.
fn stop_signals() -> tokio::sync::watch::Receiver<bool> {
    static RX: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> = std::sync::OnceLock::new();
    RX.get_or_init(|| {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let rt = runtime();
        // Made inside the runtime, listening from now on.
        let mut signals = rt.block_on(async { msgflo::participant::StopSignals::listen() });
        rt.spawn(async move {
            signals.recv().await;
            let _ = tx.send(true);
        });
        rx
    })
    .clone()
}

/// Start listening for SIGTERM and SIGINT (`Engine::stopOnSignals`).
fn listen_stop_signals() -> Res<()> {
    guard(|| {
        stop_signals();
        Ok(())
    })
}

/// Whether SIGTERM or SIGINT came, waiting up to `timeout_ms` for one.
fn wait_stop_signal(timeout_ms: u32) -> Res<bool> {
    guard(|| {
        let mut rx = stop_signals();
        let wait = Duration::from_millis(timeout_ms.into());
        Ok(runtime().block_on(async move { tokio::time::timeout(wait, rx.wait_for(|v| *v)).await.is_ok_and(|r| r.is_ok()) }))
    })
}

impl CoreParticipant {
    fn announce(&self) -> Res<()> {
        guard(|| runtime().block_on(self.inner.announce()).map_err(err))
    }

    fn discovery(&self) -> Res<String> {
        guard(|| Ok(self.inner.info().discovery_payload().to_string()))
    }

    fn broker(&self) -> Res<String> {
        guard(|| Ok(self.inner.transport().describe()))
    }

    fn readiness_line(&self) -> Res<String> {
        guard(|| Ok(self.inner.readiness_line()))
    }

    fn id(&self) -> Res<String> {
        guard(|| Ok(self.inner.info().id.clone()))
    }

    /// The queue of a port ("" for hidden or unknown ports).
    fn queue(&self, inport: bool, port: &str) -> Res<String> {
        guard(|| {
            let info = self.inner.info();
            let p = if inport { info.inport(port) } else { info.outport(port) };
            Ok(p.and_then(|p| p.queue.clone()).unwrap_or_default())
        })
    }

    fn stopped(&self) -> Res<bool> {
        guard(|| Ok(self.inner.is_stopped()))
    }

    fn recv_batch(&self, max: usize, timeout_ms: u32) -> Res<Box<CoreBatch>> {
        guard(|| {
            let batch = runtime()
                .block_on(self.inner.recv_batch_timeout(max, Duration::from_millis(timeout_ms.into())));
            Ok(Box::new(CoreBatch { items: batch.into_iter().map(Some).collect() }))
        })
    }

    fn send(&self, port: &str, payload: &[u8]) -> Res<()> {
        guard(|| runtime().block_on(self.inner.send(port, payload)).map_err(err))
    }

    /// Send JSON text by the core's JSON rule (refused, nothing sent, when
    /// it is not valid JSON, e.g. NaN).
    fn send_json(&self, port: &str, json: &str) -> Res<()> {
        guard(|| {
            let payload = msgflo::Payload::json_text(json).map_err(err)?;
            runtime().block_on(self.inner.send(port, payload)).map_err(err)
        })
    }

    /// A handler failed on `delivery`: nack (unless it settled it itself)
    /// and the error-port rule, as the core's `Participant::complete`.
    fn fail(&self, delivery: &CoreDelivery, error: &str) -> Res<()> {
        guard(|| {
            let failure = Err(msgflo::Failure::new(error));
            runtime().block_on(self.inner.complete(&delivery.inner, failure)).map_err(err)
        })
    }

    fn stop(&self) -> Res<()> {
        guard(|| runtime().block_on(self.inner.stop()).map_err(err))
    }
}

impl CoreBatch {
    fn len(&self) -> Res<usize> {
        guard(|| Ok(self.items.len()))
    }

    /// Take item `i` (each once; the C++ side takes them in order).
    fn take(&mut self, i: usize) -> Res<Box<CoreDelivery>> {
        guard(|| {
            let item = self.items.get_mut(i).ok_or_else(|| format!("[INTERNAL] no delivery {i} in the batch"))?;
            let inner = item.take().ok_or_else(|| format!("[INTERNAL] delivery {i} was taken already"))?;
            Ok(Box::new(CoreDelivery { inner }))
        })
    }
}

impl CoreDelivery {
    fn inport(&self) -> Res<&str> {
        guard(|| Ok(self.inner.inport()))
    }

    fn payload(&self) -> Res<&[u8]> {
        guard(|| Ok(self.inner.payload().as_bytes()))
    }

    fn settled(&self) -> Res<bool> {
        guard(|| Ok(self.inner.is_settled()))
    }

    fn ack(&self) -> Res<()> {
        guard(|| self.inner.ack().map_err(err))
    }

    fn nack(&self) -> Res<()> {
        guard(|| self.inner.nack().map_err(err))
    }
}
