//! The guv configuration: the original YAML (or JSON) format read
//! unchanged, plus our keys.
//!
//! The top level maps a role name to its keys; role `'*'` holds defaults
//! copied into every role first. Short keys (`p`, `d`, `min`, `max`, `w`,
//! `q`) mean the same as their long forms. Ours: `policy`, `backend`,
//! `boot`, per-role `pollinterval`/`history`, `activation`, `schedule`, and
//! `queue` may be a list.

use std::collections::BTreeMap;
use std::fmt;

use yaml_serde::Value;

/// Which rule turns observations into a worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Ours: deadline-, rate- and boot-aware (see `policy.rs`).
    Msgflo,
    /// The original guv 0.3 rule and hysteresis, exactly.
    Guv,
    /// KEDA (RabbitMQ QueueLength) with the HPA's default behaviour.
    Keda,
    /// Always `maximum` workers (or `fixed:N`).
    Fixed(Option<u32>),
}

impl PolicyKind {
    pub fn parse(s: &str) -> Option<PolicyKind> {
        match s {
            "msgflo" => Some(PolicyKind::Msgflo),
            "guv" => Some(PolicyKind::Guv),
            "keda" | "hpa" => Some(PolicyKind::Keda),
            "fixed" => Some(PolicyKind::Fixed(None)),
            _ => s.strip_prefix("fixed:").and_then(|n| n.parse().ok()).map(|n| PolicyKind::Fixed(Some(n))),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyKind::Msgflo => f.write_str("msgflo"),
            PolicyKind::Guv => f.write_str("guv"),
            PolicyKind::Keda => f.write_str("keda"),
            PolicyKind::Fixed(None) => f.write_str("fixed"),
            PolicyKind::Fixed(Some(n)) => write!(f, "fixed:{n}"),
        }
    }
}

/// Where the worker count is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Local,
    Kubernetes,
    Keda,
    Heroku,
}

impl BackendKind {
    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "local" => Some(BackendKind::Local),
            "kubernetes" | "k8s" => Some(BackendKind::Kubernetes),
            "keda" => Some(BackendKind::Keda),
            "heroku" => Some(BackendKind::Heroku),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Kubernetes => "kubernetes",
            BackendKind::Keda => "keda",
            BackendKind::Heroku => "heroku",
        }
    }
}

/// One role's settings after defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConfig {
    pub name: String,
    /// Mean processing time of one job, s.
    pub processing: f64,
    /// One sigma of the processing time, s.
    pub stddev: f64,
    /// Seconds from enqueue within which a job should be done.
    pub deadline: f64,
    /// Share of jobs (percent) that should meet the deadline.
    pub percentile: f64,
    /// Override of the computed target (guv rule), s.
    pub target: Option<f64>,
    pub concurrency: u32,
    pub minimum: u32,
    pub maximum: u32,
    pub worker: String,
    pub queues: Vec<String>,
    pub app: Option<String>,
    pub broker: Option<String>,
    pub apikey: Option<String>,
    pub pollinterval: f64,
    pub history: f64,
    /// Worker boot time, s.
    pub boot: f64,
    /// Scale-down stabilisation window of our policy, s (the largest
    /// recommendation within it wins).
    pub stabilisation: f64,
    /// Jobs waiting before a role at zero workers starts one.
    pub activation: u32,
    pub policy: PolicyKind,
    pub backend: BackendKind,
    pub dynosize: Option<String>,
    pub statuspage: Option<String>,
    pub metric: Option<String>,
    pub schedule: Option<String>,
}

impl RoleConfig {
    /// A role with every default (the original's, and ours).
    pub fn defaults(name: &str) -> RoleConfig {
        RoleConfig {
            name: name.to_string(),
            processing: 10.0,
            stddev: 5.0,
            deadline: 60.0,
            percentile: 99.0,
            target: None,
            concurrency: 1,
            minimum: 1,
            maximum: 5,
            worker: name.to_string(),
            queues: vec![name.to_string()],
            app: None,
            broker: None,
            apikey: None,
            pollinterval: 30.0,
            history: 120.0,
            boot: 30.0,
            stabilisation: 30.0,
            activation: 1,
            policy: PolicyKind::Msgflo,
            backend: BackendKind::Local,
            dynosize: None,
            statuspage: None,
            metric: None,
            schedule: None,
        }
    }

    /// The guv rule's target: `deadline - z * stddev` unless overridden.
    pub fn guv_target(&self) -> f64 {
        self.target.unwrap_or(self.deadline - inverse_normal_cdf(self.percentile / 100.0) * self.stddev)
    }

    /// Processing time at the configured percentile under the original's
    /// Gaussian model (used until measured times are available).
    pub fn processing_quantile(&self) -> f64 {
        self.processing + inverse_normal_cdf(self.percentile / 100.0) * self.stddev
    }
}

/// How bad a finding is: errors make `validate` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub role: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: role '{}': {}", self.role, self.message)
    }
}

/// A parsed configuration and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub roles: Vec<RoleConfig>,
    pub problems: Vec<Problem>,
}

impl Parsed {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Error)
    }
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }
}

const KNOWN: &[&str] = &[
    "processing", "stddev", "deadline", "percentile", "target", "concurrency", "minimum", "maximum", "worker",
    "queue", "app", "broker", "apikey", "pollinterval", "history", "boot", "dynosize", "statuspage", "metric",
    "policy", "backend", "activation", "schedule", "stabilisation",
];

fn canonical(key: &str) -> Option<&'static str> {
    let long = match key {
        "p" => "processing",
        "d" => "deadline",
        "min" => "minimum",
        "max" => "maximum",
        "w" => "worker",
        "q" => "queue",
        other => other,
    };
    KNOWN.iter().copied().find(|k| *k == long)
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => yaml_serde::to_string(other).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into()),
    }
}

/// Parse a configuration (YAML; JSON is YAML too). Never panics: every
/// problem is a line in `problems`; roles with errors are still returned
/// with defaults in place of the bad values.
pub fn parse(text: &str, allowed_extra: &[String]) -> Parsed {
    let mut problems = Vec::new();
    let top: Value = match yaml_serde::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(Problem { role: "*".into(), severity: Severity::Error, message: format!("not YAML/JSON: {e}") });
            return Parsed { roles: vec![], problems };
        }
    };
    let map = match top {
        Value::Mapping(m) => m,
        Value::Null => Default::default(),
        _ => {
            problems.push(Problem {
                role: "*".into(),
                severity: Severity::Error,
                message: "the top level must map role names to their settings".into(),
            });
            return Parsed { roles: vec![], problems };
        }
    };
    // Collect each role's keys (canonical name -> value), checking names.
    let mut raw: Vec<(String, BTreeMap<&'static str, Value>)> = Vec::new();
    let mut defaults: BTreeMap<&'static str, Value> = BTreeMap::new();
    for (k, v) in map {
        let role = key_text(&k);
        let keys = match v {
            Value::Mapping(m) => m,
            Value::Null => Default::default(),
            _ => {
                problems.push(Problem { role: role.clone(), severity: Severity::Error, message: "settings must be a mapping of keys".into() });
                continue;
            }
        };
        let mut out = BTreeMap::new();
        for (key, value) in keys {
            let name = key_text(&key);
            match canonical(&name) {
                Some(c) => {
                    if out.insert(c, value).is_some() {
                        problems.push(Problem {
                            role: role.clone(),
                            severity: Severity::Error,
                            message: format!("key '{c}' given twice (long and short form)"),
                        });
                    }
                }
                None if allowed_extra.iter().any(|a| a == &name) => {}
                None => {
                    let hint = if name.contains(':') { " (a missing space after ':'? YAML reads 'p:60' as one key)" } else { "" };
                    problems.push(Problem { role: role.clone(), severity: Severity::Error, message: format!("unknown key '{name}'{hint}") });
                }
            }
        }
        if role == "*" {
            defaults = out;
        } else {
            raw.push((role, out));
        }
    }
    if raw.is_empty() && problems.is_empty() {
        problems.push(Problem { role: "*".into(), severity: Severity::Error, message: "no roles configured".into() });
    }
    let mut roles = Vec::new();
    for (name, own) in raw {
        let mut merged = defaults.clone();
        merged.extend(own);
        roles.push(build(&name, &merged, &mut problems));
    }
    Parsed { roles, problems }
}

fn build(name: &str, keys: &BTreeMap<&'static str, Value>, problems: &mut Vec<Problem>) -> RoleConfig {
    let mut r = RoleConfig::defaults(name);
    let mut err = |msg: String| problems.push(Problem { role: name.to_string(), severity: Severity::Error, message: msg });
    let num = |k: &str, err: &mut dyn FnMut(String)| -> Option<f64> {
        let v = keys.get(k)?;
        match v.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                err(format!("'{k}' must be a number, not {}", key_text(v)));
                None
            }
        }
    };
    let int = |k: &str, err: &mut dyn FnMut(String)| -> Option<u32> {
        let v = keys.get(k)?;
        match v.as_u64() {
            Some(x) if x <= u32::MAX as u64 => Some(x as u32),
            _ => {
                err(format!("'{k}' must be a whole number >= 0, not {}", key_text(v)));
                None
            }
        }
    };
    let text = |k: &str, err: &mut dyn FnMut(String)| -> Option<String> {
        let v = keys.get(k)?;
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => {
                err(format!("'{k}' must be text, not {}", key_text(v)));
                None
            }
        }
    };
    if let Some(x) = num("processing", &mut err) {
        match crate::seconds::period("'processing'", x) {
            Ok(_) => r.processing = x,
            Err(e) => err(e),
        }
    }
    r.stddev = 0.5 * r.processing;
    if let Some(x) = num("stddev", &mut err) {
        if x >= 0.0 {
            r.stddev = x;
        } else {
            err(format!("'stddev' must be >= 0, not {x}"));
        }
    }
    if let Some(x) = num("deadline", &mut err) {
        match crate::seconds::period("'deadline'", x) {
            Ok(_) => r.deadline = x,
            Err(e) => err(e),
        }
    }
    if let Some(x) = num("percentile", &mut err) {
        if x > 0.0 && x < 100.0 {
            r.percentile = x;
        } else {
            err(format!("'percentile' must be between 0 and 100 (exclusive), not {x}"));
        }
    }
    r.target = num("target", &mut err);
    if let Some(x) = int("concurrency", &mut err) {
        if x >= 1 {
            r.concurrency = x;
        } else {
            err("'concurrency' must be at least 1".into());
        }
    }
    if let Some(x) = int("minimum", &mut err) {
        r.minimum = x;
    }
    if let Some(x) = int("maximum", &mut err) {
        r.maximum = x;
    }
    if let Some(x) = int("activation", &mut err) {
        r.activation = x.max(1);
    }
    for (k, slot) in [("pollinterval", &mut r.pollinterval), ("history", &mut r.history), ("boot", &mut r.boot), ("stabilisation", &mut r.stabilisation)] {
        if let Some(x) = num(k, &mut err) {
            let what = format!("'{k}'");
            let checked = match k {
                "boot" | "stabilisation" => crate::seconds::wait(&what, x),
                _ => crate::seconds::period(&what, x),
            };
            match checked {
                Ok(_) => *slot = x,
                Err(e) => err(e),
            }
        }
    }
    if let Some(w) = text("worker", &mut err) {
        r.worker = w;
    }
    match keys.get("queue") {
        None => {}
        Some(Value::Sequence(items)) => {
            let mut qs = Vec::new();
            for it in items {
                match it {
                    Value::String(s) if !s.is_empty() => qs.push(s.clone()),
                    other => err(format!("'queue' list items must be queue names, not {}", key_text(other))),
                }
            }
            if qs.is_empty() {
                err("'queue' list is empty".into());
            } else {
                r.queues = qs;
            }
        }
        Some(_) => {
            if let Some(q) = text("queue", &mut err) {
                r.queues = vec![q];
            }
        }
    }
    r.app = text("app", &mut err);
    r.broker = text("broker", &mut err);
    r.apikey = text("apikey", &mut err);
    r.dynosize = text("dynosize", &mut err);
    r.statuspage = text("statuspage", &mut err);
    r.metric = text("metric", &mut err);
    r.schedule = text("schedule", &mut err);
    if let Some(p) = text("policy", &mut err) {
        match PolicyKind::parse(&p) {
            Some(k) => r.policy = k,
            None => err(format!("'policy' must be msgflo, guv, keda or fixed, not '{p}'")),
        }
    }
    if let Some(b) = text("backend", &mut err) {
        match BackendKind::parse(&b) {
            Some(k) => r.backend = k,
            None => err(format!("'backend' must be local, kubernetes, keda or heroku, not '{b}'")),
        }
    }
    if r.minimum > r.maximum {
        err(format!("'minimum' ({}) is above 'maximum' ({})", r.minimum, r.maximum));
    }
    let target = r.guv_target();
    if target <= r.processing {
        err(format!(
            "target {:.2} s (deadline {} s at the {}th percentile, stddev {} s) is lower than processing time {} s: the deadline cannot be met",
            target, r.deadline, r.percentile, r.stddev, r.processing
        ));
    }
    let cold = r.boot + r.processing_quantile();
    if cold > r.deadline {
        problems.push(Problem {
            role: name.to_string(),
            severity: Severity::Warning,
            message: format!(
                "boot {} s + processing at p{} {:.1} s = {:.1} s exceeds the deadline {} s: a job that needs a new worker cannot meet it{}",
                r.boot,
                r.percentile,
                r.processing_quantile(),
                cold,
                r.deadline,
                if r.minimum == 0 { " (minimum 0: every cold start misses)" } else { "" }
            ),
        });
    }
    r
}

/// Inverse of the standard normal CDF (Acklam's rational approximation,
/// relative error below 1.2e-9). `p` outside (0, 1) is clamped.
#[allow(clippy::excessive_precision)]
pub fn inverse_normal_cdf(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.383577518672690e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let plow = 0.02425;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_for_99_percent() {
        assert!((inverse_normal_cdf(0.99) - 2.3263).abs() < 1e-3);
        assert!(inverse_normal_cdf(0.5).abs() < 1e-9);
    }

    #[test]
    fn defaults_short_keys_and_star() {
        let p = parse("'*': {max: 20, d: 90}\nanalyze: {p: 4, q: analyze.IN, w: analyzer}\nother: {}\n", &[]);
        assert!(p.is_ok(), "{:?}", p.problems);
        let a = &p.roles[0];
        assert_eq!((a.name.as_str(), a.processing, a.stddev, a.deadline), ("analyze", 4.0, 2.0, 90.0));
        assert_eq!((a.maximum, a.minimum, a.worker.as_str()), (20, 1, "analyzer"));
        assert_eq!(a.queues, vec!["analyze.IN".to_string()]);
        let o = &p.roles[1];
        assert_eq!((o.processing, o.queues[0].as_str(), o.worker.as_str(), o.maximum), (10.0, "other", "other", 20));
    }

    #[test]
    fn the_missing_space_trap_is_an_unknown_key() {
        let p = parse("r: {p:60, deadline: 240}\n", &[]);
        assert!(!p.is_ok());
        assert!(p.problems.iter().any(|x| x.message.contains("unknown key 'p:60'")), "{:?}", p.problems);
        // Allowed explicitly, it passes.
        assert!(parse("r: {p:60, deadline: 240}\n", &["p:60".into()]).is_ok());
    }

    #[test]
    fn impossible_deadline_is_reported() {
        let p = parse("r: {processing: 60, deadline: 61}\n", &[]);
        assert!(p.errors().any(|x| x.message.contains("lower than processing time")), "{:?}", p.problems);
        let p = parse("r: {processing: 25, stddev: 12, deadline: 50}\n", &[]);
        assert!(!p.is_ok());
    }

    #[test]
    fn types_and_bounds() {
        let p = parse("r: {processing: fast, minimum: -1, maximum: 2.5, concurrency: 0}\n", &[]);
        let msgs: Vec<_> = p.errors().map(|x| x.message.clone()).collect();
        assert!(msgs.iter().any(|m| m.contains("'processing' must be a number")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("'minimum' must be a whole number")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("'maximum' must be a whole number")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("'concurrency' must be at least 1")), "{msgs:?}");
        let p = parse("r: {min: 6, max: 2}\n", &[]);
        assert!(p.errors().any(|x| x.message.contains("above 'maximum'")));
        assert!(!parse("[1, 2]", &[]).is_ok());
        assert!(!parse("r: {p: 1\n", &[]).is_ok());
        assert!(!parse("", &[]).is_ok());
    }

    #[test]
    fn our_keys() {
        let p = parse(
            "r: {policy: guv, backend: heroku, boot: 12, pollinterval: 5, history: 20, queue: [a.IN, b.IN], activation: 3}\n",
            &[],
        );
        assert!(p.is_ok(), "{:?}", p.problems);
        let r = &p.roles[0];
        assert_eq!((r.policy, r.backend, r.boot, r.pollinterval, r.history, r.activation), (PolicyKind::Guv, BackendKind::Heroku, 12.0, 5.0, 20.0, 3));
        assert_eq!(r.queues, vec!["a.IN".to_string(), "b.IN".to_string()]);
        assert!(!parse("r: {policy: magic}\n", &[]).is_ok());
        assert!(!parse("r: {backend: mainframe}\n", &[]).is_ok());
    }

    #[test]
    fn cold_start_warning() {
        let p = parse("r: {processing: 5, stddev: 5, deadline: 40, boot: 30, min: 0}\n", &[]);
        assert!(p.is_ok());
        assert!(p.problems.iter().any(|x| x.severity == Severity::Warning && x.message.contains("cold start")), "{:?}", p.problems);
    }

    #[test]
    fn json_parses_too() {
        let p = parse(r#"{"*": {"max": 3}, "r": {"processing": 2}}"#, &[]);
        assert!(p.is_ok());
        assert_eq!(p.roles[0].maximum, 3);
    }
}
