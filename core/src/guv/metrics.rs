//! Prometheus text exposition (format 0.0.4) of the latest decision per
//! role, served on `--metrics ADDR` at any path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

use super::http;

/// The latest numbers of one role.
#[derive(Debug, Clone, Default)]
pub struct RoleMetrics {
    pub ready: u64,
    pub inflight: Option<u64>,
    pub rate: f64,
    pub processing_mean: f64,
    pub processing_quantile: f64,
    pub percentile: f64,
    pub current: Option<u32>,
    pub desired: u32,
    pub predicted_wait: f64,
    pub alert: bool,
    pub errors: u64,
}

#[derive(Clone, Default)]
pub struct Metrics {
    roles: Arc<Mutex<BTreeMap<String, RoleMetrics>>>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn update(&self, role: &str, f: impl FnOnce(&mut RoleMetrics)) {
        if let Ok(mut m) = self.roles.lock() {
            f(m.entry(role.to_string()).or_default());
        }
    }

    pub fn render(&self) -> String {
        let roles = self.roles.lock().map(|m| m.clone()).unwrap_or_default();
        let mut s = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(s, "{name}{{{labels}}} {v}");
            }
        };
        let per = |f: &dyn Fn(&RoleMetrics) -> Option<f64>| -> Vec<(String, f64)> {
            roles.iter().filter_map(|(r, m)| f(m).map(|v| (format!("role=\"{}\"", esc(r)), v))).collect()
        };
        family("guv_queue_ready", "gauge", "Messages ready in the role's queues.", per(&|m| Some(m.ready as f64)));
        family("guv_queue_inflight", "gauge", "Messages delivered and not acked (when the management API answers).", per(&|m| m.inflight.map(|x| x as f64)));
        family("guv_arrival_rate", "gauge", "Arrival rate used by the policy, jobs per second.", per(&|m| Some(m.rate)));
        family("guv_processing_mean_seconds", "gauge", "Mean processing time used by the policy.", per(&|m| Some(m.processing_mean)));
        let q: Vec<(String, f64)> = roles
            .iter()
            .map(|(r, m)| (format!("role=\"{}\",quantile=\"{}\"", esc(r), m.percentile / 100.0), m.processing_quantile))
            .collect();
        family("guv_processing_quantile_seconds", "gauge", "Processing time at the configured percentile.", q);
        family("guv_workers_current", "gauge", "Workers the backend reports.", per(&|m| m.current.map(|x| x as f64)));
        family("guv_workers_desired", "gauge", "Workers the policy wants.", per(&|m| Some(m.desired as f64)));
        family("guv_predicted_wait_seconds", "gauge", "Predicted time to take the current backlog.", per(&|m| Some(m.predicted_wait)));
        family("guv_alert", "gauge", "1 when the deadline cannot be met even at maximum.", per(&|m| Some(if m.alert { 1.0 } else { 0.0 })));
        family("guv_poll_errors_total", "counter", "Failed polls (queue, broker or backend).", per(&|m| Some(m.errors as f64)));
        s
    }

    /// Serve on `addr` until the task is dropped. Returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let l = TcpListener::bind(addr).await?;
        let bound = l.local_addr()?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { continue };
                let me = me.clone();
                tokio::spawn(async move {
                    if http::read_request(&mut s).await.is_some() {
                        http::respond(&mut s, 200, "text/plain; version=0.0.4; charset=utf-8", &me.render()).await;
                    }
                });
            }
        });
        Ok(bound)
    }
}
