//! A participant, driven from JS. Mirrors `core/src/participant.rs`.

use std::time::Duration;

use msgflo::{Definition, Options, Participant, PortDef};
use napi::bindgen_prelude::{Buffer, ClassInstance};
use napi_derive::napi;

use crate::error::{to_js, usage, Result};
use crate::message::CoreDelivery;

/// A port as msgflo-nodejs definitions give it (other keys are ignored).
#[napi(object)]
pub struct PortArg {
    pub id: String,
    #[napi(js_name = "type")]
    pub type_: Option<String>,
    pub queue: Option<String>,
    pub description: Option<String>,
    /// Only a string schema is announced.
    pub schema: Option<serde_json::Value>,
    pub hidden: Option<bool>,
    pub persistent: Option<bool>,
}

/// A definition as msgflo-nodejs gives it (other keys are ignored).
#[napi(object)]
pub struct DefinitionArg {
    pub component: String,
    pub label: Option<String>,
    pub icon: Option<String>,
    pub id: Option<String>,
    pub inports: Option<Vec<PortArg>>,
    pub outports: Option<Vec<PortArg>>,
}

fn port(p: PortArg) -> PortDef {
    PortDef {
        id: p.id,
        type_: p.type_.unwrap_or_else(|| "any".into()),
        queue: p.queue,
        description: p.description,
        schema: match p.schema {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        },
        hidden: p.hidden.unwrap_or(false),
        persistent: p.persistent,
    }
}

fn definition(d: DefinitionArg) -> Definition {
    Definition {
        component: d.component,
        label: d.label,
        icon: d.icon,
        id: d.id.filter(|id| !id.is_empty()),
        inports: d.inports.unwrap_or_default().into_iter().map(port).collect(),
        outports: d.outports.unwrap_or_default().into_iter().map(port).collect(),
    }
}

/// The queue the core gives port `port_id` of `role` when none is set.
#[napi(catch_unwind)]
pub fn default_queue(role: String, port_id: String) -> String {
    msgflo::discovery::default_queue(&role, &port_id)
}

/// One output of a handler: bytes for an outport.
#[napi(object)]
pub struct Output {
    pub port: String,
    pub payload: Buffer,
}

#[napi]
pub struct CoreParticipant {
    inner: Participant,
}

#[napi]
impl CoreParticipant {
    /// Connect, declare every port, subscribe; nothing announced yet.
    #[napi(factory)]
    pub async fn connect(
        definition: DefinitionArg,
        role: String,
        broker: Option<String>,
        prefetch: Option<u32>,
        heartbeat_secs: Option<f64>,
    ) -> Result<CoreParticipant> {
        let definition = self::definition(definition);
        let mut options = Options { broker, ..Default::default() };
        if let Some(p) = prefetch {
            options.connect.prefetch = u16::try_from(p).map_err(|_| usage("prefetch must be at most 65535"))?;
        }
        if let Some(h) = heartbeat_secs {
            options.heartbeat = Some(msgflo::seconds::period("heartbeat", h).map_err(usage)?);
        }
        let inner = Participant::connect(&definition, &role, options).await.map_err(to_js)?;
        Ok(CoreParticipant { inner })
    }

    /// Send the first discovery message and start the heartbeat.
    #[napi]
    pub async fn announce(&self) -> Result<()> {
        self.inner.announce().await.map_err(to_js)
    }

    /// The discovery payload as JSON text.
    #[napi(getter, catch_unwind)]
    pub fn discovery(&self) -> String {
        self.inner.info().discovery_payload().to_string()
    }

    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> String {
        self.inner.info().id.clone()
    }

    #[napi(getter, catch_unwind)]
    pub fn role(&self) -> String {
        self.inner.role().to_owned()
    }

    /// The broker URL, password hidden.
    #[napi(getter, catch_unwind)]
    pub fn broker(&self) -> String {
        self.inner.transport().describe()
    }

    /// `ROLE(COMPONENT) ready on BROKER`: the line printed before the first
    /// discovery message.
    #[napi(getter, catch_unwind)]
    pub fn readiness_line(&self) -> String {
        self.inner.readiness_line()
    }

    #[napi(getter, catch_unwind)]
    pub fn stopped(&self) -> bool {
        self.inner.is_stopped()
    }

    /// Up to `max` deliveries; waits up to `timeoutMs` for the first (empty
    /// array on timeout or once stopped).
    #[napi]
    pub async fn recv_batch(&self, max: u32, timeout_ms: u32) -> Vec<CoreDelivery> {
        let batch = self.inner.recv_batch_timeout(max as usize, Duration::from_millis(timeout_ms.into())).await;
        batch.into_iter().map(|d| CoreDelivery { inner: d.into() }).collect()
    }

    /// Publish without waiting; false when it would have to wait
    /// (backpressure), and nothing was sent. Throws UNKNOWN_PORT.
    #[napi(catch_unwind)]
    pub fn try_send(&self, port: String, payload: Buffer) -> Result<bool> {
        self.inner.try_send(&port, payload.to_vec()).map_err(to_js)
    }

    /// Publish, waiting while backpressure lasts.
    #[napi]
    pub async fn send(&self, port: String, payload: Buffer) -> Result<()> {
        self.inner.send(&port, payload.to_vec()).await.map_err(to_js)
    }

    /// Complete deliveries from their handlers' outcomes, without waiting:
    /// `outputs[i]` and `errors[i]` belong to `deliveries[i]`; outputs
    /// sent, then ack; or, with an error, nack and the error-port rule (the
    /// core's `Participant::complete`). Completions happen in the order
    /// they are given; `stop` finishes them first. The JS side collects the
    /// outcomes of one turn of the event loop and hands them over at once.
    #[napi(catch_unwind)]
    pub fn complete_all_in_order(
        &self,
        deliveries: Vec<ClassInstance<CoreDelivery>>,
        outputs: Vec<Vec<Output>>,
        errors: Vec<Option<String>>,
    ) -> Result<()> {
        if outputs.len() != deliveries.len() || errors.len() != deliveries.len() {
            return Err(usage(format!(
                "completeAllInOrder: {} deliveries, {} outputs, {} errors",
                deliveries.len(),
                outputs.len(),
                errors.len()
            )));
        }
        let batch = deliveries
            .iter()
            .zip(outputs)
            .zip(errors)
            .map(|((d, outputs), error)| {
                let outputs: msgflo::Outputs = outputs.into_iter().map(|o| (o.port, o.payload.to_vec().into())).collect();
                let result = match error {
                    None => Ok(outputs),
                    Some(error) => Err(msgflo::Failure { error, outputs }),
                };
                (d.inner.clone(), result)
            })
            .collect();
        self.inner.complete_all_in_order(batch);
        Ok(())
    }

    /// Stop receiving, requeue what was not handled, wait for outputs and
    /// acks to reach the broker, close.
    #[napi]
    pub async fn stop(&self) -> Result<()> {
        self.inner.stop().await.map_err(to_js)
    }
}
