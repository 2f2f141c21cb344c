//! The KEDA external scaler: `msgflo guv` serves `externalscaler.proto`
//! (IsActive, StreamIsActive, GetMetricSpec, GetMetrics) so KEDA scales a
//! Deployment to our decisions. A ScaledObject names the guv role in its
//! metadata (`role: NAME`; default: the ScaledObject's name). The metric is
//! the desired worker count with target size 1, so the HPA's
//! `ceil(value / target)` is exactly our decision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::backend::{Backend, PerRole};
use super::config::{BackendKind, RoleConfig};

#[allow(clippy::all)]
pub mod pb {
    include!("externalscaler.rs");
}

use pb::external_scaler_server::{ExternalScaler, ExternalScalerServer};

/// Desired counts per role, shared by the guv loop and the gRPC service.
#[derive(Clone, Default)]
pub struct Desired {
    map: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Desired {
    pub fn set(&self, role: &str, n: u32) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(role.to_string(), n);
        }
    }
    pub fn get(&self, role: &str) -> Option<u32> {
        self.map.lock().ok()?.get(role).copied()
    }
}

/// The backend side: decisions are stored for KEDA to fetch.
pub struct KedaBackend {
    pub desired: Desired,
}

#[async_trait::async_trait]
impl Backend for KedaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Keda
    }
    async fn current(&self, roles: &[&RoleConfig]) -> PerRole<Option<u32>> {
        // KEDA owns the Deployment; what we last published is what it has
        // been asked for.
        roles.iter().map(|r| (r.name.clone(), Ok(self.desired.get(&r.name)))).collect()
    }
    async fn apply(&self, changes: &[(&RoleConfig, u32)]) -> PerRole<u32> {
        changes
            .iter()
            .map(|(r, n)| {
                self.desired.set(&r.name, *n);
                (r.name.clone(), Ok(*n))
            })
            .collect()
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct Scaler {
    pub desired: Desired,
    /// Roles served (those with `backend: keda`).
    pub roles: Vec<String>,
    /// How often StreamIsActive reports.
    pub period: Duration,
}

impl Scaler {
    #[allow(clippy::result_large_err)] // tonic's Status is what the service returns anyway
    fn role(&self, r: &pb::ScaledObjectRef) -> Result<String, Status> {
        let name = r.scaler_metadata.get("role").cloned().unwrap_or_else(|| r.name.clone());
        if self.roles.iter().any(|x| x == &name) {
            Ok(name)
        } else {
            Err(Status::not_found(format!(
                "no guv role {name:?} with backend keda (known: {}); set `role` in the ScaledObject's metadata",
                self.roles.join(", ")
            )))
        }
    }
    fn value(&self, role: &str) -> u32 {
        self.desired.get(role).unwrap_or(0)
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(&self, req: Request<pb::ScaledObjectRef>) -> Result<Response<pb::IsActiveResponse>, Status> {
        let role = self.role(req.get_ref())?;
        Ok(Response::new(pb::IsActiveResponse { result: self.value(&role) > 0 }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(&self, req: Request<pb::ScaledObjectRef>) -> Result<Response<ActiveStream>, Status> {
        let role = self.role(req.get_ref())?;
        let me = self.clone();
        let s = futures_util::stream::unfold((me, role, true), |(me, role, first)| async move {
            if !first {
                tokio::time::sleep(me.period).await;
            }
            let v = me.value(&role) > 0;
            Some((Ok(pb::IsActiveResponse { result: v }), (me, role, false)))
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn get_metric_spec(&self, req: Request<pb::ScaledObjectRef>) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let role = self.role(req.get_ref())?;
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec { metric_name: format!("guv-{role}"), target_size: 1, target_size_float: 1.0 }],
        }))
    }

    async fn get_metrics(&self, req: Request<pb::GetMetricsRequest>) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let r = req.get_ref().scaled_object_ref.clone().ok_or_else(|| Status::invalid_argument("scaledObjectRef is missing"))?;
        let role = self.role(&r)?;
        let v = self.value(&role);
        let name = if req.get_ref().metric_name.is_empty() { format!("guv-{role}") } else { req.get_ref().metric_name.clone() };
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue { metric_name: name, metric_value: v as i64, metric_value_float: v as f64 }],
        }))
    }
}

/// Serve the scaler on `addr` in the background; returns the bound address.
pub async fn serve(scaler: Scaler, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(l);
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder().add_service(ExternalScalerServer::new(scaler)).serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "the KEDA external scaler stopped");
        }
    });
    Ok(bound)
}
