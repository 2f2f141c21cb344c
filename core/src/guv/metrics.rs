//! The latest decision per role as Prometheus metrics (OpenMetrics text,
//! encoded by `prometheus-client`), served on `--metrics ADDR` at
//! `/metrics` (any path answers the same).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    role: String,
    quantile: String,
}

/// A label value as the text format wants it. prometheus-client 0.23
/// writes label values as given, so quotes, backslashes and newlines in a
/// role's name are escaped here (the unit test pins the output).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

type Whole = Family<RoleLabel, Gauge>;
type Real = Family<RoleLabel, Gauge<f64, AtomicU64>>;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    pub fn update(&self, role: &str, f: impl FnOnce(&mut RoleMetrics)) {
        if let Ok(mut m) = self.roles.lock() {
            f(m.entry(role.to_string()).or_default());
        }
    }

    /// The metrics now, as a fresh registry (no stale role is kept).
    pub fn render(&self) -> String {
        let roles = self.roles.lock().map(|m| m.clone()).unwrap_or_default();
        let mut reg = Registry::default();
        let whole = |reg: &mut Registry, name: &str, help: &str, f: &dyn Fn(&RoleMetrics) -> Option<i64>| {
            let fam = Whole::default();
            for (r, m) in &roles {
                if let Some(v) = f(m) {
                    fam.get_or_create(&RoleLabel { role: esc(r) }).set(v);
                }
            }
            reg.register(name, help, fam);
        };
        let real = |reg: &mut Registry, name: &str, help: &str, f: &dyn Fn(&RoleMetrics) -> f64| {
            let fam = Real::default();
            for (r, m) in &roles {
                fam.get_or_create(&RoleLabel { role: esc(r) }).set(f(m));
            }
            reg.register(name, help, fam);
        };
        whole(&mut reg, "guv_queue_ready", "Messages ready in the role's queues", &|m| Some(m.ready as i64));
        whole(&mut reg, "guv_queue_inflight", "Messages delivered and not acked (management API or participants' reports)", &|m| m.inflight.map(|x| x as i64));
        real(&mut reg, "guv_arrival_rate", "Arrival rate used by the policy, jobs per second", &|m| m.rate);
        real(&mut reg, "guv_processing_mean_seconds", "Mean processing time used by the policy", &|m| m.processing_mean);
        let q = Family::<QuantileLabels, Gauge<f64, AtomicU64>>::default();
        for (r, m) in &roles {
            q.get_or_create(&QuantileLabels { role: esc(r), quantile: format!("{}", m.percentile / 100.0) }).set(m.processing_quantile);
        }
        reg.register("guv_processing_quantile_seconds", "Processing time at the configured percentile", q);
        whole(&mut reg, "guv_workers_current", "Workers the backend reports", &|m| m.current.map(i64::from));
        whole(&mut reg, "guv_workers_desired", "Workers the policy wants", &|m| Some(i64::from(m.desired)));
        real(&mut reg, "guv_predicted_wait_seconds", "Predicted time to take the current backlog", &|m| m.predicted_wait);
        whole(&mut reg, "guv_alert", "1 when the deadline cannot be met even at maximum", &|m| Some(i64::from(m.alert)));
        let errors = Family::<RoleLabel, Counter>::default();
        for (r, m) in &roles {
            errors.get_or_create(&RoleLabel { role: esc(r) }).inc_by(m.errors);
        }
        reg.register("guv_poll_errors", "Failed polls (queue, broker or backend)", errors);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        out
    }

    /// Serve on `addr` (axum) until the runtime ends. Returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let me = self.clone();
        let app = axum::Router::new().fallback(move || {
            let text = me.render();
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text) }
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("metrics server on {bound} ended: {e}");
            }
        });
        Ok(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_with_its_type_and_labels() {
        let m = Metrics::default();
        m.update("work\"er", |r| {
            r.ready = 10;
            r.desired = 3;
            r.current = Some(1);
            r.rate = 2.5;
            r.percentile = 99.0;
            r.processing_quantile = 0.75;
            r.alert = true;
            r.errors = 2;
        });
        let text = m.render();
        for line in [
            "# TYPE guv_queue_ready gauge",
            r#"guv_queue_ready{role="work\"er"} 10"#,
            r#"guv_workers_desired{role="work\"er"} 3"#,
            r#"guv_workers_current{role="work\"er"} 1"#,
            r#"guv_arrival_rate{role="work\"er"} 2.5"#,
            r#"guv_processing_quantile_seconds{role="work\"er",quantile="0.99"} 0.75"#,
            r#"guv_alert{role="work\"er"} 1"#,
            "# TYPE guv_poll_errors counter",
            r#"guv_poll_errors_total{role="work\"er"} 2"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in:\n{text}");
        }
        assert!(!text.contains("guv_queue_inflight{"), "no value, no sample:\n{text}");
    }
}
