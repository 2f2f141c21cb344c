//! The `msgflo guv` loop: per role, observe the queues, ask the backend
//! for the current count, decide, log the decision, apply. Every role is
//! isolated: a missing queue, a broker hiccup or a backend error fails
//! that role's poll only, which is retried with backoff.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::transport::{self, ConnectOptions, Transport};

use super::backend::{self, Backend};
use super::config::{BackendKind, RoleConfig};
use super::metrics::Metrics;
use super::policy::{self, Decision, Observation, Policy};
use super::keda;
use super::source;

#[derive(Clone, Default)]
pub struct RunOptions {
    /// The processes of `msgflo run --scale` (the `local` backend).
    pub local: Option<Arc<dyn backend::LocalScaler>>,
    /// Stop when cancelled (default: on Ctrl-C).
    pub stop: Option<tokio_util::sync::CancellationToken>,
    pub dry_run: bool,
    pub oneshot: bool,
    pub json: bool,
    pub broker: String,
    pub metrics: Option<SocketAddr>,
    pub decisions: Option<PathBuf>,
    /// Where the KEDA external scaler listens (roles with `backend: keda`);
    /// default 0.0.0.0:9090.
    pub keda: Option<SocketAddr>,
}

struct RoleState {
    role: RoleConfig,
    policy: Box<dyn Policy>,
    due: Instant,
    failures: u32,
    last_published: Option<u64>,
}

/// One line per decision (stdout with `--json`, and the decision log).
pub fn decision_json(role: &RoleConfig, obs: &Observation, current: Option<u32>, d: &Decision, backend: &str, applied: Option<&Result<u32, String>>) -> serde_json::Value {
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    serde_json::json!({
        "time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "role": role.name,
        "queue": role.queues.join(","),
        "jobs": obs.jobs(),
        "ready": obs.ready,
        "unacked": obs.unacked,
        "current": current,
        "desired": d.desired,
        "reason": d.reason,
        "alert": d.alert,
        "policy": role.policy.to_string(),
        "backend": backend,
        "required": r(d.required),
        "rate": r(d.rate),
        "processing_mean": r(d.processing_mean),
        "processing_quantile": r(d.processing_quantile),
        "predicted_wait": r(d.predicted_wait),
        "warning": d.warning,
        "applied": applied.map(|a| match a { Ok(n) => serde_json::json!(n), Err(e) => serde_json::json!({"error": e}) }),
    })
}

/// Run until Ctrl-C (or one poll with `oneshot`). With `oneshot`, returns
/// an error when any role could not be decided.
pub async fn run(roles: Vec<RoleConfig>, opts: RunOptions) -> Result<(), String> {
    if roles.is_empty() {
        return Err("no roles configured".into());
    }
    let broker = opts.broker.clone();
    if !(broker.starts_with("amqp://") || broker.starts_with("amqps://")) {
        return Err(format!(
            "guv reads queue depths from AMQP (RabbitMQ); {broker} is not AMQP. MQTT has no queue depth, and scaling from participants' reports is not implemented yet"
        ));
    }
    let metrics = Metrics::default();
    if let Some(addr) = opts.metrics {
        let bound = metrics.serve(addr).await.map_err(|e| format!("--metrics {addr}: {e}"))?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    let mut log = match &opts.decisions {
        Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(|e| format!("--decisions {}: {e}", p.display()))?),
        None => None,
    };
    let management = source::management_url(&broker);
    let mut backends: BTreeMap<&'static str, Box<dyn Backend>> = BTreeMap::new();
    let keda_roles: Vec<String> = roles.iter().filter(|r| r.backend == BackendKind::Keda).map(|r| r.name.clone()).collect();
    if !keda_roles.is_empty() {
        let desired = keda::Desired::default();
        let period = roles.iter().filter(|r| r.backend == BackendKind::Keda).map(|r| r.pollinterval).fold(f64::INFINITY, f64::min);
        let scaler = keda::Scaler { desired: desired.clone(), roles: keda_roles, period: Duration::from_secs_f64(period.clamp(0.1, 3600.0)) };
        let addr = opts.keda.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9090)));
        let bound = keda::serve(scaler, addr).await.map_err(|e| format!("KEDA external scaler on {addr}: {e}"))?;
        tracing::info!("KEDA external scaler (gRPC) on {bound}");
        backends.insert(BackendKind::Keda.name(), Box::new(keda::KedaBackend { desired }));
    }
    if let Some(local) = &opts.local {
        backends.insert(BackendKind::Local.name(), Box::new(backend::Local { scaler: Some(local.clone()) }));
    }
    for r in &roles {
        backends.entry(r.backend.name()).or_insert_with(|| backend::make(r.backend));
    }
    let now = Instant::now();
    let mut states: Vec<RoleState> = roles
        .into_iter()
        .map(|role| RoleState { policy: policy::make(role.policy, &role), role, due: now, failures: 0, last_published: None })
        .collect();
    let start = Instant::now();
    let mut transport: Option<Arc<dyn Transport>> = None;
    // Processing times participants measured (their `stats` reports on the
    // observers' channel), by inport queue, until the next poll of the role
    // that reads that queue.
    let measured: Measured = Default::default();
    // Reports come with each heartbeat; three missed ones mean gone.
    let fresh = crate::discovery::heartbeat_interval() * 3;
    let mut failed = Vec::new();
    loop {
        if transport.is_none() {
            let o = ConnectOptions { connection_name: "msgflo guv".into(), ..Default::default() };
            match transport::connect(&broker, &o).await {
                Ok(t) => {
                    listen_for_stats(&t, measured.clone()).await;
                    transport = Some(t);
                }
                Err(e) => {
                    if opts.oneshot {
                        return Err(format!("cannot connect to {broker}: {e}"));
                    }
                    tracing::warn!(error = %e, "cannot connect to the broker; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        }
        let t = transport.clone().expect("connected above");
        let now = Instant::now();
        let due: Vec<usize> = (0..states.len()).filter(|&i| states[i].due <= now).collect();
        // Current counts: one call per backend for all its due roles (the
        // Heroku backend reads each app's formation once).
        let mut currents: BTreeMap<String, Result<Option<u32>, String>> = BTreeMap::new();
        for (kind, be) in &backends {
            let roles: Vec<&RoleConfig> = due.iter().map(|&i| &states[i].role).filter(|r| r.backend.name() == *kind).collect();
            if !roles.is_empty() {
                currents.extend(be.current(&roles).await);
            }
        }
        // Observe and decide, role by role.
        let mut decided: Vec<(usize, Observation, Option<u32>, Decision)> = Vec::new();
        let mut failures: Vec<(usize, String)> = Vec::new();
        for &i in &due {
            let st = &mut states[i];
            let role = st.role.clone();
            let be = backends.get(role.backend.name()).expect("one backend per kind");
            let result: Result<(Observation, Option<u32>, Decision), String> = async {
                let depth = source::depth(&t, &broker, management.as_deref(), &role.queues).await?;
                let current = match currents.remove(&role.name) {
                    Some(Ok(c)) => c,
                    Some(Err(e)) if opts.dry_run => {
                        tracing::debug!(role = %role.name, error = %e, "backend cannot tell the current count (dry run)");
                        None
                    }
                    Some(Err(e)) => return Err(e),
                    None => None,
                };
                let arrivals = match (depth.published, st.last_published) {
                    (Some(p), Some(l)) if p >= l => Some((p - l) as f64),
                    _ => None,
                };
                st.last_published = depth.published;
                let mut role_for_cap = role.clone();
                if let Some(cap) = be.cap(&role.name) {
                    role_for_cap.maximum = role_for_cap.maximum.min(cap);
                }
                // Local instances that have not announced themselves yet
                // are booting: counted, but not as running.
                let booting = match (&opts.local, role.backend) {
                    (Some(l), BackendKind::Local) => l.booting(&role.name).min(current.unwrap_or(0)),
                    _ => 0,
                };
                let obs = Observation {
                    now: start.elapsed().as_secs_f64(),
                    ready: depth.ready,
                    // In flight: the management API's count, else what
                    // the role's participants reported lately.
                    unacked: depth.unacked.or_else(|| reported_inflight(&measured, &role.queues, fresh)),
                    running: current.map(|c| c.saturating_sub(booting)),
                    booting,
                    arrivals,
                    processing_samples: take_measured(&measured, &role.queues),
                };
                let mut d = st.policy.decide(&obs);
                d.desired = d.desired.min(role_for_cap.maximum.max(role.minimum));
                if d.alert {
                    tracing::warn!(role = %role.name, jobs = obs.jobs(), "deadline {} s cannot be met even at maximum {} workers", role.deadline, role.maximum);
                }
                if let Some(w) = &d.warning {
                    tracing::warn!(role = %role.name, "{w}");
                }
                Ok((obs, current, d))
            }
            .await;
            match result {
                Ok((obs, current, d)) => decided.push((i, obs, current, d)),
                Err(e) => failures.push((i, e)),
            }
        }
        // Apply: one call per backend with every change (one PATCH per
        // Heroku app).
        let mut applied: BTreeMap<String, Result<u32, String>> = BTreeMap::new();
        if !opts.dry_run {
            for (kind, be) in &backends {
                let changes: Vec<(&RoleConfig, u32)> = decided
                    .iter()
                    .filter(|(i, _, current, d)| states[*i].role.backend.name() == *kind && *current != Some(d.desired))
                    .map(|(i, _, _, d)| (&states[*i].role, d.desired))
                    .collect();
                if !changes.is_empty() {
                    applied.extend(be.apply(&changes).await);
                }
            }
        }
        // Tell, log, and schedule the next poll.
        for (i, obs, current, d) in decided {
            let role = &states[i].role;
            let applied = applied.remove(&role.name);
            let line = decision_json(role, &obs, current, &d, role.backend.name(), applied.as_ref());
            if opts.json {
                println!("{line}");
            } else {
                println!(
                    "{}: jobs {} (ready {}, in flight {}), workers {} -> {} ({}){}",
                    role.name,
                    obs.jobs(),
                    obs.ready,
                    obs.unacked.map_or("unknown".into(), |u| u.to_string()),
                    current.map_or("unknown".into(), |c| c.to_string()),
                    d.desired,
                    d.reason,
                    if opts.dry_run { " [dry run]" } else { "" }
                );
            }
            if let Some(f) = log.as_mut() {
                if let Err(e) = writeln!(f, "{line}") {
                    tracing::warn!(error = %e, "cannot write the decision log");
                }
            }
            metrics.update(&role.name, |m| {
                m.ready = obs.ready;
                m.inflight = obs.unacked;
                m.rate = d.rate;
                m.processing_mean = d.processing_mean;
                m.processing_quantile = d.processing_quantile;
                m.percentile = role.percentile;
                m.current = current;
                m.desired = d.desired;
                m.predicted_wait = d.predicted_wait;
                m.alert = d.alert;
            });
            match applied {
                Some(Err(e)) => failures.push((i, format!("applying {} workers: {e}", d.desired))),
                _ => {
                    let st = &mut states[i];
                    st.failures = 0;
                    st.due = now + Duration::from_secs_f64(st.role.pollinterval);
                }
            }
        }
        for (i, e) in failures {
            let st = &mut states[i];
            st.failures += 1;
            let wait = (st.role.pollinterval * 2f64.powi(st.failures.min(5) as i32 - 1)).min(300.0);
            tracing::warn!(role = %st.role.name, error = %e, retry_in_s = wait, "poll failed");
            metrics.update(&st.role.name, |m| m.errors += 1);
            if opts.json && opts.oneshot {
                println!("{}", serde_json::json!({"role": st.role.name, "queue": st.role.queues.join(","), "error": e}));
            }
            failed.push(format!("{}: {e}", st.role.name));
            st.due = now + Duration::from_secs_f64(wait);
        }
        if opts.oneshot {
            let _ = t.close().await;
            return if failed.is_empty() { Ok(()) } else { Err(format!("could not decide for {}", failed.join("; "))) };
        }
        failed.clear();
        let next = states.iter().map(|s| s.due).min().unwrap_or(now + Duration::from_secs(1));
        let stop = opts.stop.clone();
        let stopped = async move {
            match stop {
                Some(s) => s.cancelled().await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stopped => {
                tracing::info!("stopping");
                let _ = t.close().await;
                return Ok(());
            }
        }
    }
}

/// What participants reported in their `stats` messages.
#[derive(Default)]
struct Reports {
    /// Processing times by inport queue, until a poll takes them.
    samples: std::collections::HashMap<String, Vec<f64>>,
    /// (inport queue, participant id) -> (deliveries in its handler, when
    /// reported).
    inflight: std::collections::HashMap<(String, String), (u64, Instant)>,
}

type Measured = Arc<std::sync::Mutex<Reports>>;

/// Samples kept per queue between two polls (the latest).
const MEASURED_KEEP: usize = 2000;

/// Read the participants' `stats` reports into `measured`. Without them
/// (the original's participants) the configured times are used.
async fn listen_for_stats(t: &Arc<dyn Transport>, measured: Measured) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::Delivery>(1024);
    if let Err(e) = t.subscribe_discovery(tx).await {
        tracing::warn!(error = %e, "cannot listen for participants' processing times; using the configured ones");
        return;
    }
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if let Ok(crate::coordinator::observer::ObserverMessage::Stats(report)) =
                crate::coordinator::observer::ObserverMessage::decode(d.payload().as_bytes())
            {
                let mut m = measured.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                for port in report.inports.values() {
                    m.inflight.insert((port.queue.clone(), report.id.clone()), (port.inflight, now));
                    let samples = m.samples.entry(port.queue.clone()).or_default();
                    samples.extend(port.processing.iter().copied().filter(|x| x.is_finite() && *x >= 0.0));
                    let extra = samples.len().saturating_sub(MEASURED_KEEP);
                    samples.drain(..extra);
                }
            }
            let _ = d.ack();
        }
    });
}

/// The samples measured for `queues` since the previous call.
fn take_measured(measured: &Measured, queues: &[String]) -> Vec<f64> {
    let mut m = measured.lock().unwrap_or_else(|p| p.into_inner());
    queues.iter().flat_map(|q| m.samples.remove(q).unwrap_or_default()).collect()
}

/// Deliveries in the handlers of the participants reading `queues`, as
/// they reported within `fresh` (a participant silent for longer is gone,
/// and its deliveries back in the queue); `None` when none reported.
fn reported_inflight(measured: &Measured, queues: &[String], fresh: Duration) -> Option<u64> {
    let mut m = measured.lock().unwrap_or_else(|p| p.into_inner());
    m.inflight.retain(|_, (_, at)| at.elapsed() <= fresh);
    let mut seen = false;
    let total = m.inflight.iter().filter(|((q, _), _)| queues.contains(q)).map(|(_, (n, _))| *n).inspect(|_| seen = true).sum();
    seen.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{PortStats, StatsReport};

    #[tokio::test]
    async fn participants_reports_become_the_roles_samples() {
        let name = format!("guv-stats-{}", uuid::Uuid::new_v4().simple());
        let t: Arc<dyn Transport> = Arc::new(crate::transport::memory::MemoryTransport::connect(&name));
        let measured: Measured = Default::default();
        listen_for_stats(&t, measured.clone()).await;
        let report = |queue: &str, processing: Vec<f64>| StatsReport {
            role: "w".into(),
            id: "w1".into(),
            inports: [("in".to_owned(), PortStats { queue: queue.into(), acked: processing.len() as u64, inflight: processing.len() as u64 + 1, processing: processing.into(), ..Default::default() })].into(),
        };
        let send = |r: StatsReport| {
            let t = t.clone();
            async move {
                let m = serde_json::json!({"protocol": "msgflo", "command": "stats", "payload": r});
                t.broadcast_to_observers(crate::Payload::json(&m)).await.unwrap();
            }
        };
        send(report("w.IN", vec![0.3, 0.31])).await;
        send(report("other.IN", vec![9.0])).await;
        send(report("w.IN", vec![0.29, -1.0])).await;
        let queues = vec!["w.IN".to_owned()];
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 3 {
            got.extend(take_measured(&measured, &queues));
            assert!(tokio::time::Instant::now() < deadline, "samples in time: {got:?}");
            tokio::task::yield_now().await;
        }
        assert_eq!(got, vec![0.3, 0.31, 0.29], "this role's queue only, a negative time dropped");
        assert!(take_measured(&measured, &queues).is_empty(), "taken once");
        assert_eq!(take_measured(&measured, &["other.IN".to_owned()]), vec![9.0]);
        // In flight: the latest report of each participant, while fresh.
        let minute = Duration::from_secs(60);
        assert_eq!(reported_inflight(&measured, &queues, minute), Some(3), "w1's latest report for w.IN");
        assert_eq!(reported_inflight(&measured, &["w.IN".to_owned(), "other.IN".to_owned()], minute), Some(5));
        assert_eq!(reported_inflight(&measured, &["none.IN".to_owned()], minute), None, "nobody reported");
        assert_eq!(reported_inflight(&measured, &queues, Duration::ZERO), None, "stale reports are dropped");
    }
}
