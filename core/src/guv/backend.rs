//! Where worker counts go. Each backend reads the current count per role
//! and applies new ones; a failure is reported per role and never stops
//! the other roles.
//!
//! - `local`: the coordinator's supervisor, through [`LocalScaler`]
//!   (implemented by `msgflo run --scale`).
//! - `kubernetes`: the `/scale` subresource of a Deployment (name: the
//!   role's `worker`), `GET` and `PATCH` (merge patch).
//! - `heroku`: Platform API formations, one `PATCH` per app for all its
//!   roles; a 422 (a count above the dyno size's cap) is reported once and
//!   lowers that role's maximum instead of being repeated every poll.
//! - `keda`: KEDA asks us (external scaler, `keda.rs`); decisions are
//!   stored for it to fetch.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::config::{BackendKind, RoleConfig};
use super::http;

const T: Duration = Duration::from_secs(10);

/// What the coordinator implements to run N instances of a role.
pub trait LocalScaler: Send + Sync {
    fn current(&self, role: &str) -> Option<u32>;
    fn set(&self, role: &str, n: u32) -> Result<(), String>;
    /// Instances started but not announced yet (still booting).
    fn booting(&self, _role: &str) -> u32 {
        0
    }
}

/// Per-role outcome of a read or an apply.
pub type PerRole<T> = BTreeMap<String, Result<T, String>>;

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Current workers per role (`Ok(None)`: the backend cannot tell).
    async fn current(&self, roles: &[&RoleConfig]) -> PerRole<Option<u32>>;
    /// Apply counts; returns per role the count applied (possibly clamped).
    async fn apply(&self, changes: &[(&RoleConfig, u32)]) -> PerRole<u32>;
    /// A maximum lowered by what the backend refused (Heroku 422).
    fn cap(&self, _role: &str) -> Option<u32> {
        None
    }
}

/// Local processes; without a scaler (plain `msgflo guv`) it can only
/// report that it cannot tell.
pub struct Local {
    pub scaler: Option<std::sync::Arc<dyn LocalScaler>>,
}

#[async_trait::async_trait]
impl Backend for Local {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }
    async fn current(&self, roles: &[&RoleConfig]) -> PerRole<Option<u32>> {
        roles.iter().map(|r| (r.name.clone(), Ok(self.scaler.as_ref().and_then(|s| s.current(&r.name))))).collect()
    }
    async fn apply(&self, changes: &[(&RoleConfig, u32)]) -> PerRole<u32> {
        changes
            .iter()
            .map(|(r, n)| {
                let res = match &self.scaler {
                    Some(s) => s.set(&r.name, *n).map(|_| *n),
                    None => Err("the local backend scales the processes of `msgflo run GRAPH --scale FILE`; plain `msgflo guv` has none to scale (use --dry-run, or backend kubernetes/heroku/keda)".into()),
                };
                (r.name.clone(), res)
            })
            .collect()
    }
}

/// Kubernetes API: base URL from `GUV_KUBERNETES_URL` (e.g. a
/// `kubectl proxy` on http://127.0.0.1:8001), namespace from the role's
/// `app` (default `default`), bearer token from `apikey` if given.
pub struct Kubernetes {
    pub base: String,
}

impl Kubernetes {
    pub fn from_env() -> Kubernetes {
        Kubernetes { base: std::env::var("GUV_KUBERNETES_URL").unwrap_or_else(|_| "http://127.0.0.1:8001".into()).trim_end_matches('/').to_string() }
    }
    fn url(&self, r: &RoleConfig) -> String {
        format!("{}/apis/apps/v1/namespaces/{}/deployments/{}/scale", self.base, r.app.as_deref().unwrap_or("default"), r.worker)
    }
    fn auth(r: &RoleConfig) -> Option<String> {
        r.apikey.as_ref().map(|k| format!("Bearer {k}"))
    }
}

#[async_trait::async_trait]
impl Backend for Kubernetes {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }
    async fn current(&self, roles: &[&RoleConfig]) -> PerRole<Option<u32>> {
        let mut out = BTreeMap::new();
        for r in roles {
            let auth = Self::auth(r);
            let mut h = vec![("Accept", "application/json")];
            if let Some(a) = &auth {
                h.push(("Authorization", a));
            }
            let res = match http::request("GET", &self.url(r), &h, None, T).await {
                Ok(resp) if resp.status == 200 => serde_json::from_str::<serde_json::Value>(&resp.body)
                    .ok()
                    .and_then(|v| v["spec"]["replicas"].as_u64())
                    .map(|n| Some(n as u32))
                    .ok_or_else(|| "the scale answer has no spec.replicas".to_string()),
                Ok(resp) => Err(format!("deployment {} scale: HTTP {}: {}", r.worker, resp.status, resp.body.trim())),
                Err(e) => Err(e),
            };
            out.insert(r.name.clone(), res);
        }
        out
    }
    async fn apply(&self, changes: &[(&RoleConfig, u32)]) -> PerRole<u32> {
        let mut out = BTreeMap::new();
        for (r, n) in changes {
            let auth = Self::auth(r);
            let mut h = vec![("Content-Type", "application/merge-patch+json"), ("Accept", "application/json")];
            if let Some(a) = &auth {
                h.push(("Authorization", a));
            }
            let body = serde_json::json!({"spec": {"replicas": n}}).to_string();
            let res = match http::request("PATCH", &self.url(r), &h, Some(&body), T).await {
                Ok(resp) if (200..300).contains(&resp.status) => Ok(*n),
                Ok(resp) => Err(format!("deployment {} scale to {n}: HTTP {}: {}", r.worker, resp.status, resp.body.trim())),
                Err(e) => Err(e),
            };
            out.insert(r.name.clone(), res);
        }
        out
    }
}

/// Heroku Platform API: base from `GUV_HEROKU_URL` (default
/// https://api.heroku.com), app from the role's `app` or `GUV_APP`, token from `apikey` or
/// `HEROKU_API_KEY`.
pub struct Heroku {
    pub base: String,
    caps: Mutex<BTreeMap<String, u32>>,
    reported: Mutex<HashSet<String>>,
}

impl Heroku {
    pub fn new(base: &str) -> Heroku {
        Heroku { base: base.trim_end_matches('/').to_string(), caps: Mutex::default(), reported: Mutex::default() }
    }
    pub fn from_env() -> Heroku {
        Heroku::new(&std::env::var("GUV_HEROKU_URL").unwrap_or_else(|_| "https://api.heroku.com".into()))
    }
    fn app(r: &RoleConfig) -> Result<String, String> {
        r.app.clone().or_else(|| std::env::var("GUV_APP").ok()).ok_or_else(|| format!("role {}: no Heroku app (key `app` or GUV_APP)", r.name))
    }
    fn key(r: &RoleConfig) -> Result<String, String> {
        r.apikey.clone().or_else(|| std::env::var("HEROKU_API_KEY").ok()).ok_or_else(|| format!("role {}: no Heroku API key (key `apikey` or HEROKU_API_KEY)", r.name))
    }
    fn headers(auth: &str) -> Vec<(&'static str, String)> {
        vec![("Accept", "application/vnd.heroku+json; version=3".into()), ("Content-Type", "application/json".into()), ("Authorization", format!("Bearer {auth}"))]
    }
    async fn formation(&self, app: &str, key: &str) -> Result<BTreeMap<String, u32>, String> {
        let h = Self::headers(key);
        let hr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = http::request("GET", &format!("{}/apps/{app}/formation", self.base), &hr, None, T).await?;
        if resp.status != 200 {
            return Err(format!("app {app} formation: HTTP {}: {}", resp.status, resp.body.trim()));
        }
        let v: serde_json::Value = serde_json::from_str(&resp.body).map_err(|e| format!("app {app} formation: not JSON: {e}"))?;
        Ok(v.as_array()
            .map(|a| a.iter().filter_map(|f| Some((f["type"].as_str()?.to_string(), f["quantity"].as_u64()? as u32))).collect())
            .unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl Backend for Heroku {
    fn kind(&self) -> BackendKind {
        BackendKind::Heroku
    }
    fn cap(&self, role: &str) -> Option<u32> {
        self.caps.lock().ok()?.get(role).copied()
    }
    async fn current(&self, roles: &[&RoleConfig]) -> PerRole<Option<u32>> {
        let mut out = BTreeMap::new();
        let mut by_app: BTreeMap<(String, String), Vec<&RoleConfig>> = BTreeMap::new();
        for r in roles {
            match (Self::app(r), Self::key(r)) {
                (Ok(a), Ok(k)) => by_app.entry((a, k)).or_default().push(r),
                (Err(e), _) | (_, Err(e)) => {
                    out.insert(r.name.clone(), Err(e));
                }
            }
        }
        for ((app, key), rs) in by_app {
            match self.formation(&app, &key).await {
                Ok(f) => {
                    for r in rs {
                        let res = f.get(&r.worker).map(|n| Some(*n)).ok_or_else(|| format!("app {app} has no process type {:?}", r.worker));
                        out.insert(r.name.clone(), res);
                    }
                }
                Err(e) => {
                    for r in rs {
                        out.insert(r.name.clone(), Err(e.clone()));
                    }
                }
            }
        }
        out
    }
    async fn apply(&self, changes: &[(&RoleConfig, u32)]) -> PerRole<u32> {
        let mut out = BTreeMap::new();
        let mut by_app: BTreeMap<(String, String), Vec<(&RoleConfig, u32)>> = BTreeMap::new();
        for (r, n) in changes {
            let n = self.cap(&r.name).map_or(*n, |c| (*n).min(c));
            match (Self::app(r), Self::key(r)) {
                (Ok(a), Ok(k)) => by_app.entry((a, k)).or_default().push((r, n)),
                (Err(e), _) | (_, Err(e)) => {
                    out.insert(r.name.clone(), Err(e));
                }
            }
        }
        for ((app, key), rs) in by_app {
            let updates: Vec<_> = rs.iter().map(|(r, n)| serde_json::json!({"type": r.worker, "quantity": n})).collect();
            let body = serde_json::json!({ "updates": updates }).to_string();
            let h = Self::headers(&key);
            let hr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let res = http::request("PATCH", &format!("{}/apps/{app}/formation", self.base), &hr, Some(&body), T).await;
            match res {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    for (r, n) in rs {
                        out.insert(r.name.clone(), Ok(n));
                    }
                }
                Ok(resp) if resp.status == 422 => {
                    // Refused (e.g. above the dyno size's cap): lower the
                    // maximum of the roles that grew, say so once.
                    for (r, n) in rs {
                        let newcap = n.saturating_sub(1);
                        if let Ok(mut caps) = self.caps.lock() {
                            caps.insert(r.name.clone(), newcap);
                        }
                        let first = self.reported.lock().map(|mut s| s.insert(r.name.clone())).unwrap_or(true);
                        if first {
                            tracing::warn!(role = %r.name, app = %app, requested = n, "Heroku refused the formation (422: {}); limiting the role to {newcap} workers", resp.body.trim());
                        }
                        out.insert(r.name.clone(), Err(format!("Heroku refused {n} workers (422); maximum lowered to {newcap}")));
                    }
                }
                Ok(resp) => {
                    for (r, _) in rs {
                        out.insert(r.name.clone(), Err(format!("app {app} formation: HTTP {}: {}", resp.status, resp.body.trim())));
                    }
                }
                Err(e) => {
                    for (r, _) in rs {
                        out.insert(r.name.clone(), Err(e.clone()));
                    }
                }
            }
        }
        out
    }
}

pub fn make(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Local | BackendKind::Keda => Box::new(Local { scaler: None }),
        BackendKind::Kubernetes => Box::new(Kubernetes::from_env()),
        BackendKind::Heroku => Box::new(Heroku::from_env()),
    }
}
