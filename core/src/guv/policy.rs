//! Policies: observations of one role in, a worker count out.
//!
//! - [`MsgfloPolicy`] (ours): required workers from the arrival rate
//!   (robust), the backlog against the queue the deadline allows, busy
//!   (in-flight) workers while the queue waits long, measured
//!   processing-time quantiles, boot time and concurrency; bursts drained
//!   by their deadline; fast boot-aware scale-up,
//!   scale-down through a stabilisation window with a rate limit and a
//!   tolerance band, scale to zero with an activation threshold, and an
//!   alert when the deadline cannot be met at `maximum`.
//! - [`GuvPolicy`]: the original guv 0.3 rule and hysteresis, exactly.
//! - [`KedaPolicy`]: KEDA's RabbitMQ QueueLength scaler (ready messages
//!   only) with the HPA's default behaviour.
//! - [`FixedPolicy`]: a constant count.
//!
//! The same code decides in `msgflo guv` and in the simulator.

use std::collections::VecDeque;

use super::config::{PolicyKind, RoleConfig};

/// What one poll saw for a role.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Seconds on a monotonic clock.
    pub now: f64,
    /// Messages ready in the role's queues.
    pub ready: u64,
    /// Messages delivered and not yet acked (in flight), when known.
    pub unacked: Option<u64>,
    /// Workers up and consuming; `None` when the backend cannot tell
    /// (then the decision is computed as from zero workers).
    pub running: Option<u32>,
    /// Workers started and still booting.
    pub booting: u32,
    /// Jobs that arrived since the previous poll, when the source can tell
    /// (RabbitMQ publish counts, the simulator); else estimated from depth.
    pub arrivals: Option<f64>,
    /// Processing times measured since the previous poll, s.
    pub processing_samples: Vec<f64>,
}

impl Observation {
    pub fn jobs(&self) -> u64 {
        self.ready + self.unacked.unwrap_or(0)
    }
    pub fn current(&self) -> u32 {
        self.running.unwrap_or(0) + self.booting
    }
}

/// A policy's answer, with the inputs that led to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: u32,
    /// The rule that limited the answer (`backlog`, `rate`, `minimum`,
    /// `maximum`, `stabilisation`, `tolerance`, `rate-limit`,
    /// `scale-to-zero`, `activation`, `guv-rule`, `guv-hysteresis`, `fixed`,
    /// `keda`, `deadline-unreachable`, ...).
    pub reason: &'static str,
    /// The deadline cannot be met even at `maximum`.
    pub alert: bool,
    /// Workers required before bounds and smoothing.
    pub required: f64,
    /// Arrival rate used, jobs/s.
    pub rate: f64,
    /// Mean and percentile processing time used, s.
    pub processing_mean: f64,
    pub processing_quantile: f64,
    /// Predicted time for the current backlog to be taken at `desired`, s.
    pub predicted_wait: f64,
    /// Warnings worth a log line (cold start cannot meet the deadline...).
    pub warning: Option<String>,
}

pub trait Policy: Send {
    fn decide(&mut self, obs: &Observation) -> Decision;
    /// Seconds between decisions.
    fn period(&self) -> f64;
    /// Scale-down lets busy workers finish (true) or kills them (false).
    fn drains(&self) -> bool;
    fn name(&self) -> String;
}

pub fn make(kind: PolicyKind, role: &RoleConfig) -> Box<dyn Policy> {
    match kind {
        PolicyKind::Msgflo => Box::new(MsgfloPolicy::new(role.clone())),
        PolicyKind::Guv => Box::new(GuvPolicy::new(role.clone())),
        PolicyKind::Keda => Box::new(KedaPolicy::new(role.clone())),
        PolicyKind::Fixed(n) => Box::new(FixedPolicy { n: n.unwrap_or(role.maximum), period: role.pollinterval }),
    }
}

fn base_decision(desired: u32, reason: &'static str, role: &RoleConfig) -> Decision {
    Decision {
        desired,
        reason,
        alert: false,
        required: desired as f64,
        rate: 0.0,
        processing_mean: role.processing,
        processing_quantile: role.processing_quantile(),
        predicted_wait: 0.0,
        warning: None,
    }
}

/// The original's estimate for `jobs` messages: `(workers, reason)`.
pub fn guv_estimate(role: &RoleConfig, jobs: u64) -> (u32, &'static str) {
    if jobs == 0 {
        return (role.minimum, "minimum");
    }
    let p = role.processing;
    let mut target = role.guv_target();
    if target <= p {
        target = p + 0.01;
    }
    let available = p.max(target - p);
    let c = role.concurrency.max(1) as u64;
    let work = jobs.div_ceil(c) as f64 * p;
    let n = (work / available).ceil();
    if n >= role.maximum as f64 {
        (role.maximum, "maximum")
    } else if n <= role.minimum as f64 {
        (role.minimum, "minimum")
    } else {
        (n as u32, "guv-rule")
    }
}

/// guv 0.3: the proportional rule, up at once, down only to the largest
/// estimate within `history` (history / pollinterval polls).
pub struct GuvPolicy {
    role: RoleConfig,
    history: VecDeque<u32>,
}

impl GuvPolicy {
    pub fn new(role: RoleConfig) -> Self {
        GuvPolicy { role, history: VecDeque::new() }
    }
    fn window(&self) -> usize {
        ((self.role.history / self.role.pollinterval).round() as usize).max(1)
    }
    /// One step of the original's hysteresis given its estimate.
    pub fn step(&mut self, estimate: u32, current: u32) -> (u32, bool) {
        self.history.push_back(estimate);
        while self.history.len() > self.window() {
            self.history.pop_front();
        }
        if estimate > current {
            return (estimate, false);
        }
        let m = self.history.iter().copied().max().unwrap_or(estimate);
        if m < current {
            (m, false)
        } else {
            (current, m != estimate)
        }
    }
}

impl Policy for GuvPolicy {
    fn decide(&mut self, obs: &Observation) -> Decision {
        let (n, reason) = guv_estimate(&self.role, obs.jobs());
        let current = obs.current();
        let (desired, held) = self.step(n, current);
        let reason = if held || (desired != n && desired <= current) { "guv-hysteresis" } else { reason };
        let mut d = base_decision(desired, reason, &self.role);
        d.required = n as f64;
        d
    }
    fn period(&self) -> f64 {
        self.role.pollinterval
    }
    fn drains(&self) -> bool {
        false
    }
    fn name(&self) -> String {
        "guv".into()
    }
}

/// Constant count.
pub struct FixedPolicy {
    pub n: u32,
    pub period: f64,
}

impl Policy for FixedPolicy {
    fn decide(&mut self, _obs: &Observation) -> Decision {
        Decision {
            desired: self.n,
            reason: "fixed",
            alert: false,
            required: self.n as f64,
            rate: 0.0,
            processing_mean: 0.0,
            processing_quantile: 0.0,
            predicted_wait: 0.0,
            warning: None,
        }
    }
    fn period(&self) -> f64 {
        self.period
    }
    fn drains(&self) -> bool {
        true
    }
    fn name(&self) -> String {
        format!("fixed:{}", self.n)
    }
}

/// KEDA RabbitMQ scaler (QueueLength, ready messages only) under the HPA's
/// default behaviour: 15 s sync, tolerance 0.1, scale-down window 300 s
/// (largest recommendation), scale-up at most max(100 %, 4 pods) per sync,
/// cooldown 300 s before 1 -> 0. The target value per pod is the number of
/// jobs one worker finishes within the guv target (`A / P * c`).
pub struct KedaPolicy {
    role: RoleConfig,
    value: f64,
    recs: VecDeque<(f64, u32)>,
    last_active: f64,
}

impl KedaPolicy {
    pub fn new(role: RoleConfig) -> Self {
        let p = role.processing;
        let t = role.guv_target().max(p + 0.01);
        let value = ((p.max(t - p) / p).floor() * role.concurrency as f64).max(1.0);
        KedaPolicy { role, value, recs: VecDeque::new(), last_active: f64::NEG_INFINITY }
    }
}

impl Policy for KedaPolicy {
    fn decide(&mut self, obs: &Observation) -> Decision {
        let metric = obs.ready as f64;
        let current = obs.current();
        let r = &self.role;
        if metric > 0.0 {
            self.last_active = obs.now;
        }
        let floor = r.minimum.max(1);
        let mut reason = "keda";
        let desired = if metric == 0.0 && obs.now - self.last_active >= 300.0 {
            reason = "scale-to-zero";
            r.minimum
        } else if current == 0 {
            reason = "activation";
            ((metric / self.value).ceil() as u32).max(floor)
        } else {
            let raw = ((metric / self.value).ceil() as u32).max(floor);
            let ratio = metric / (self.value * current as f64);
            let raw = if (ratio - 1.0).abs() <= 0.1 { current } else { raw };
            self.recs.push_back((obs.now, raw));
            while self.recs.front().is_some_and(|(t, _)| obs.now - t > 300.0) {
                self.recs.pop_front();
            }
            if raw > current {
                let limit = (current * 2).max(current + 4);
                if raw > limit {
                    reason = "rate-limit";
                }
                raw.min(limit)
            } else {
                let m = self.recs.iter().map(|x| x.1).max().unwrap_or(raw);
                if m > raw {
                    reason = "stabilisation";
                }
                m.min(current)
            }
        };
        let bounded = desired.clamp(r.minimum, r.maximum);
        if bounded != desired {
            reason = if bounded == r.maximum { "maximum" } else { "minimum" };
        }
        let mut d = base_decision(bounded, reason, r);
        d.required = metric / self.value;
        d
    }
    fn period(&self) -> f64 {
        15.0
    }
    fn drains(&self) -> bool {
        false
    }
    fn name(&self) -> String {
        "keda".into()
    }
}

/// Measured processing times: the last few hundred, for quantiles.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    buf: VecDeque<f64>,
}

impl Samples {
    const KEEP: usize = 500;
    pub fn push(&mut self, x: f64) {
        if x.is_finite() && x >= 0.0 {
            self.buf.push_back(x);
            if self.buf.len() > Self::KEEP {
                self.buf.pop_front();
            }
        }
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn mean(&self) -> f64 {
        self.buf.iter().sum::<f64>() / self.buf.len().max(1) as f64
    }
    /// Empirical quantile (q in 0..1), nearest rank.
    pub fn quantile(&self, q: f64) -> f64 {
        quantile(&mut self.buf.iter().copied().collect::<Vec<_>>(), q)
    }
}

/// Nearest-rank quantile of `xs` (sorted in place); 0 when empty.
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q.clamp(0.0, 1.0) * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// Ours. See the module documentation and docs/guv.md.
pub struct MsgfloPolicy {
    role: RoleConfig,
    samples: Samples,
    rates: VecDeque<f64>,
    last: Option<(f64, u64, u32)>,
    recs: VecDeque<(f64, u32)>,
    last_down: f64,
    /// When the backlog last became a burst (None while it is not one).
    burst_since: Option<f64>,
}

/// Polls whose arrival rates make up the robust (median) rate.
const RATE_POLLS: usize = 24;
/// Polls whose median rate the alert looks at: short enough to notice an
/// overload within a minute, a median so that one burst is not a load.
const ALERT_POLLS: usize = 5;
/// The queue may hold what arrives in this share of the waiting budget:
/// workers then always find work (no one idles waiting for a job), and a
/// job still starts in time. Staffing exactly the load would leave the
/// queue to chance; staffing above it idles workers.
const TARGET_WAIT_SHARE: f64 = 0.7;
/// Below its target the queue refills over this many budgets (staffing
/// slightly under the load): gently, so that few workers stop and start.
const REFILL_BUDGETS: f64 = 2.0;
/// A backlog over this many times the target queue (or than the workers
/// hold) is a burst: it is drained by the deadline of its own jobs (the
/// horizon shrinks from when it became a burst), not within a fresh
/// budget at every poll.
const BURST_FACTOR: f64 = 3.0;
/// The drain horizon of a burst never gets shorter than this share of
/// the budget (older jobs are late anyway; this bounds the jump).
const MIN_HORIZON_SHARE: f64 = 0.25;
/// The boot-aware jump applies when the backlog alone needs more workers
/// than there are (and at least one).
const JUMP_GATE: f64 = 1.0;
/// Workers holding unacked messages are kept (no scale-down below them)
/// only when the queue already waits this share of the budget.
const HOLD_WAIT_SHARE: f64 = 0.9;
/// Down moves within this share of the current count are ignored.
const TOLERANCE: f64 = 0.1;
/// At most this share of the workers goes per scale-down (at least one).
const DOWN_STEP: f64 = 0.25;
/// Measured samples needed before they replace the configured times.
const MIN_SAMPLES: usize = 20;

fn median(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let mut r: Vec<f64> = xs.collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(|a, b| a.total_cmp(b));
    let n = r.len();
    Some(if n % 2 == 1 { r[n / 2] } else { (r[n / 2 - 1] + r[n / 2]) / 2.0 })
}

impl MsgfloPolicy {
    pub fn new(role: RoleConfig) -> Self {
        MsgfloPolicy {
            role,
            samples: Samples::default(),
            rates: VecDeque::new(),
            last: None,
            recs: VecDeque::new(),
            last_down: f64::NEG_INFINITY,
            burst_since: None,
        }
    }

    fn rate(&mut self, obs: &Observation) -> f64 {
        let total = obs.jobs();
        if let Some((t, prev_total, prev_current)) = self.last {
            let dt = obs.now - t;
            if dt > 0.0 {
                let arrivals = obs.arrivals.unwrap_or_else(|| {
                    // Estimate: growth of the backlog plus what the workers
                    // that were there took.
                    let p = self.processing().0;
                    let done = (prev_current.min(prev_total as u32) as f64) * self.role.concurrency as f64 * dt / p;
                    (total as f64 - prev_total as f64 + done).max(0.0)
                });
                self.rates.push_back(arrivals / dt);
                while self.rates.len() > RATE_POLLS {
                    self.rates.pop_front();
                }
            }
        }
        self.last = Some((obs.now, total, obs.running.unwrap_or(0)));
        median(self.rates.iter().copied()).unwrap_or(0.0)
    }

    fn processing(&self) -> (f64, f64) {
        if self.samples.len() >= MIN_SAMPLES {
            (self.samples.mean().max(1e-3), self.samples.quantile(self.role.percentile / 100.0))
        } else {
            (self.role.processing, self.role.processing_quantile())
        }
    }
}

impl Policy for MsgfloPolicy {
    fn decide(&mut self, obs: &Observation) -> Decision {
        for s in &obs.processing_samples {
            self.samples.push(*s);
        }
        let lambda = self.rate(obs);
        let r = &self.role;
        let (p, pq) = self.processing();
        let c = r.concurrency.max(1) as f64;
        let max = r.maximum as f64;
        let inflight = obs.unacked.unwrap_or(0) as f64;
        let ready = obs.ready as f64;
        let running = obs.running.unwrap_or(0) as f64;
        let booting = obs.booting as f64;
        let existing = running + booting;
        let current = obs.current();
        let boot = r.boot;
        // Waiting budget: what the deadline leaves after a slow job.
        let budget = r.deadline - pq;
        let load = lambda * p / c;
        let backlog_work = ready * p / c;
        let mut reason = "rate";
        let mut warning = None;
        let mut required;
        if budget <= 0.0 {
            required = max;
            reason = "deadline-unreachable";
            self.burst_since = None;
        } else {
            // The queue the deadline allows: what arrives while a job may wait.
            let target = lambda * TARGET_WAIT_SHARE * budget;
            let excess_work = (ready - target) * p / c;
            let burst = excess_work > 0.0 && ready > BURST_FACTOR * target.max(c * existing.max(1.0));
            if !burst {
                self.burst_since = None;
            }
            let horizon = if burst {
                // The burst's own jobs have waited since it came.
                let since = *self.burst_since.get_or_insert(obs.now);
                (budget - (obs.now - since)).max(MIN_HORIZON_SHARE * budget)
            } else if excess_work > 0.0 {
                budget
            } else {
                REFILL_BUDGETS * budget
            };
            required = (load + excess_work / horizon).max(0.0);
            if excess_work > 0.0 {
                reason = "backlog";
            }
            // What the workers already there (booting ones once up) can
            // take within the budget beyond the arrivals.
            let spare = ((running - load) * budget + booting * (budget - boot).max(0.0)).max(0.0);
            // Only for a backlog that needs a real jump (a burst), not for the
            // noise of a steady queue. Workers started now help once booted:
            // the rest must be done in what the budget leaves after the boot
            // (at least half of it: older jobs are late anyway).
            if excess_work > spare && excess_work / budget > (JUMP_GATE * existing).max(1.0) {
                let jump = existing + (excess_work - spare) / (budget - boot).max(0.5 * budget);
                if jump > required {
                    required = jump;
                    reason = "backlog";
                }
            }
            if boot + pq > r.deadline {
                warning = Some(format!(
                    "boot {boot:.0} s + processing p{} {pq:.1} s exceed the deadline {} s: a cold start cannot meet it",
                    r.percentile, r.deadline
                ));
            }
        }
        // Workers busy with a queue that already waits long are not let go.
        let holding = (inflight / c).ceil();
        let queue_wait = backlog_work / running.max(1.0);
        if holding > required && queue_wait > HOLD_WAIT_SHARE * budget {
            required = holding;
            reason = "in-flight";
        }
        let mut raw = (required - 1e-9).ceil().max(0.0) as u32;
        if ready + inflight == 0.0 && load < 0.5 {
            raw = 0;
            reason = "idle";
        }
        if current == 0 && raw > 0 && ((ready + inflight) as u32) < r.activation {
            raw = 0;
            reason = "activation";
        }
        // Alert: the arrivals of the last polls need more than `maximum`, or
        // at `maximum` the newest queued job cannot start in time.
        let recent = median(self.rates.iter().rev().take(ALERT_POLLS).copied()).unwrap_or(0.0) * p / c;
        let alert = budget <= 0.0 || load >= max || recent >= max || (ready > 0.0 && backlog_work / max + pq > r.deadline);

        self.recs.push_back((obs.now, raw));
        while self.recs.front().is_some_and(|(t, _)| obs.now - t > r.stabilisation) {
            self.recs.pop_front();
        }
        let mut desired = if raw >= current {
            raw
        } else {
            let stable = self.recs.iter().map(|x| x.1).max().unwrap_or(raw);
            if stable >= current {
                reason = "stabilisation";
                current
            } else if stable > 0 && (current - stable) as f64 <= TOLERANCE * current as f64 {
                reason = "tolerance";
                current
            } else if obs.now - self.last_down < r.pollinterval * 0.999 {
                reason = "rate-limit";
                current
            } else {
                let step = ((current as f64 * DOWN_STEP).ceil() as u32).max(1);
                if current - stable > step {
                    reason = "rate-limit";
                    current - step
                } else {
                    if stable == 0 {
                        reason = "scale-to-zero";
                    }
                    stable
                }
            }
        };
        if desired < current {
            self.last_down = obs.now;
        }
        if desired > r.maximum {
            desired = r.maximum;
            reason = "maximum";
        }
        if desired < r.minimum {
            desired = r.minimum;
            reason = "minimum";
        }
        if alert {
            reason = if budget <= 0.0 { "deadline-unreachable" } else { "alert: deadline cannot be met at maximum" };
        }
        Decision {
            desired,
            reason,
            alert,
            required,
            rate: lambda,
            processing_mean: p,
            processing_quantile: pq,
            // The newest queued job starts once the jobs before it are
            // taken by every worker (FIFO).
            predicted_wait: if ready > 0.0 { backlog_work / (desired.max(1) as f64) } else { 0.0 },
            warning,
        }
    }
    fn period(&self) -> f64 {
        self.role.pollinterval
    }
    fn drains(&self) -> bool {
        true
    }
    fn name(&self) -> String {
        "msgflo".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guv::config::parse;

    fn role(yaml: &str) -> RoleConfig {
        let p = parse(yaml, &[]);
        p.roles.into_iter().next().unwrap()
    }

    fn est(yaml: &str, q: u64) -> u32 {
        guv_estimate(&role(yaml), q).0
    }

    /// The values from the original's tests (min 0, max 100).
    #[test]
    fn guv_rule_matches_the_original_values() {
        let d = "r: {min: 0, max: 100}\n";
        for (q, n) in [(0, 0), (1, 1), (2, 1), (4, 2), (10, 3), (40, 11), (100, 27)] {
            assert_eq!(est(d, q), n, "defaults, Q {q}");
        }
        let c4 = "r: {min: 0, max: 100, concurrency: 4}\n";
        assert_eq!(est(c4, 40), 3);
        assert_eq!(est(c4, 100), 7);
        let d30 = "r: {min: 0, max: 100, processing: 10, deadline: 30}\n";
        assert_eq!(est(d30, 40), 40);
        assert_eq!(est(d30, 100), 100);
    }

    /// The original's scale table (spec/scaletests.yaml).
    #[test]
    fn guv_scale_table() {
        assert_eq!(est("r: {min: 2, max: 9}\n", 0), 2, "no messages -> min");
        assert_eq!(est("r: {min: 1, max: 9}\n", 10000), 9, "10000 -> max");
        assert_eq!(est("r: {processing: 60, deadline: 61, max: 9}\n", 100), 9, "impossible config -> max");
        assert_eq!(est("r: {processing: 25, stddev: 12, deadline: 50, max: 9}\n", 100), 9, "unrealistic -> max");
        assert_eq!(est("r: {min: 0, max: 100, concurrency: 1}\n", 40), 11);
        assert_eq!(est("r: {min: 0, max: 100, concurrency: 3}\n", 40), 4);
        assert_eq!(est("r: {min: 0, max: 100, concurrency: 1, deadline: 90}\n", 5), 1);
    }

    #[test]
    fn guv_hysteresis_decreasing_history() {
        let mut g = GuvPolicy::new(role("r: {min: 0, max: 100, pollinterval: 30, history: 120}\n"));
        for e in [10, 9, 8] {
            g.step(e, 12);
        }
        assert_eq!(g.step(0, 12).0, 10);
        // Up at once.
        assert_eq!(g.step(40, 10).0, 40);
        // Within the window the high estimate holds.
        assert_eq!(g.step(3, 40).0, 40);
    }

    fn obs(now: f64, ready: u64, running: u32) -> Observation {
        Observation { now, ready, unacked: Some(0), running: Some(running), ..Default::default() }
    }

    #[test]
    fn msgflo_scales_up_for_a_backlog_and_down_slowly() {
        let mut p = MsgfloPolicy::new(role("r: {processing: 5, stddev: 5, min: 0, max: 20, boot: 30, deadline: 180, pollinterval: 10, history: 60, stabilisation: 60}\n"));
        let d = p.decide(&obs(0.0, 300, 0));
        assert!(d.desired >= 10, "{d:?}");
        assert!(!d.alert, "{d:?}");
        let mut cur = d.desired;
        let mut t = 10.0;
        let mut seen_hold = false;
        let mut steps = vec![];
        while cur > 0 && t < 1000.0 {
            let d = p.decide(&Observation { now: t, ready: 0, unacked: Some(0), running: Some(cur), arrivals: Some(0.0), ..Default::default() });
            seen_hold |= d.reason == "stabilisation";
            assert!(d.desired <= cur);
            steps.push(d.desired);
            cur = d.desired;
            t += 10.0;
        }
        assert!(seen_hold, "{steps:?}");
        assert_eq!(cur, 0, "{steps:?}");
        assert!(t > 60.0);
    }

    #[test]
    fn msgflo_alerts_when_max_cannot_keep_up() {
        let mut p = MsgfloPolicy::new(role("r: {processing: 5, stddev: 5, min: 0, max: 2, boot: 10, deadline: 60, pollinterval: 10}\n"));
        let d = p.decide(&obs(0.0, 500, 2));
        assert!(d.alert, "{d:?}");
        assert_eq!(d.desired, 2);
        let mut p = MsgfloPolicy::new(role("r: {processing: 5, stddev: 5, min: 0, max: 20, boot: 10, deadline: 60, pollinterval: 10}\n"));
        assert!(!p.decide(&obs(0.0, 5, 2)).alert);
    }

    fn at(now: f64, ready: u64, running: u32, arrivals: f64) -> Observation {
        Observation { now, ready, unacked: Some(running as u64), running: Some(running), arrivals: Some(arrivals), ..Default::default() }
    }

    /// A queue below what the deadline allows is left to wait (the workers
    /// always find work); one above it gets workers.
    #[test]
    fn msgflo_lets_a_short_queue_wait_and_staffs_a_long_one() {
        let mut p = MsgfloPolicy::new(role("r: {processing: 5, stddev: 5, min: 0, max: 20, boot: 30, deadline: 60, pollinterval: 10}\n"));
        // 1.5 jobs/s: a load of 7.5 workers; the configured p99 is
        // 5 + 2.326 x 5 = 16.6 s, so the budget is 43.4 s and the queue may
        // hold about 45 jobs.
        let mut d = p.decide(&at(0.0, 10, 8, 0.0));
        for i in 1..=24 {
            d = p.decide(&at(10.0 * i as f64, 20, 8, 15.0));
        }
        assert!((d.rate - 1.5).abs() < 1e-9, "{d:?}");
        assert!(d.required < 7.5 && d.desired <= 8, "20 queued: no more workers: {d:?}");
        let d = p.decide(&at(250.0, 120, 8, 15.0));
        assert!(d.desired >= 9 && (d.reason == "backlog" || d.reason == "maximum"), "120 queued: more workers: {d:?}");
    }

    /// A burst is drained by the deadline of its own jobs: the longer it
    /// has waited, the more workers the same backlog needs.
    #[test]
    fn msgflo_drains_a_burst_by_its_deadline() {
        let mut p = MsgfloPolicy::new(role("r: {processing: 5, stddev: 5, min: 0, max: 40, boot: 30, deadline: 180, pollinterval: 10, stabilisation: 0}\n"));
        for i in 0..6 {
            p.decide(&at(10.0 * i as f64, 0, 2, 3.0));
        }
        // 300 arrive at once; then the same 200 wait, at the same rate.
        p.decide(&at(60.0, 300, 14, 303.0));
        let early = p.decide(&at(70.0, 200, 14, 3.0));
        for i in 8..15 {
            p.decide(&at(10.0 * i as f64, 200, 14, 3.0));
        }
        let late = p.decide(&at(150.0, 200, 14, 3.0));
        assert_eq!(early.rate, late.rate);
        assert!(late.required > early.required + 1.0, "90 s into the burst: {late:?}; 10 s in: {early:?}");
    }

    /// The alert follows the arrivals of the last polls (a minute), not the
    /// 4-minute median the staffing uses; a single burst is not a load.
    #[test]
    fn msgflo_alerts_on_recent_arrivals_not_on_one_burst() {
        let cfg = "r: {processing: 5, stddev: 5, min: 0, max: 10, boot: 30, deadline: 60, pollinterval: 10}\n";
        let mut p = MsgfloPolicy::new(role(cfg));
        for i in 0..20 {
            assert!(!p.decide(&at(10.0 * i as f64, 5, 5, 10.0)).alert);
        }
        // One poll with a burst of 200 arrivals (all taken at once).
        assert!(!p.decide(&at(200.0, 5, 10, 200.0)).alert, "one burst");
        assert!(!p.decide(&at(210.0, 5, 10, 10.0)).alert);
        // Then 2.5 jobs/s (12.5 workers' worth, max 10) for a few polls.
        let alerts: Vec<bool> = (22..28).map(|i| p.decide(&at(10.0 * i as f64, 5, 10, 25.0)).alert).collect();
        assert!(alerts[2..].iter().all(|a| *a), "{alerts:?}");
    }

    #[test]
    fn msgflo_activation_threshold() {
        let mut p = MsgfloPolicy::new(role("r: {min: 0, max: 5, activation: 3}\n"));
        assert_eq!(p.decide(&obs(0.0, 2, 0)).desired, 0);
        assert!(p.decide(&obs(10.0, 3, 0)).desired >= 1);
    }

    #[test]
    fn keda_counts_ready_only() {
        let mut k = KedaPolicy::new(role("r: {processing: 5, stddev: 5, min: 0, max: 20}\n"));
        let d = k.decide(&Observation { now: 0.0, ready: 0, unacked: Some(50), running: Some(3), ..Default::default() });
        assert!(d.desired <= 3);
    }

    #[test]
    fn quantiles() {
        let mut xs: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(quantile(&mut xs, 0.99), 99.0);
        assert_eq!(quantile(&mut xs, 0.5), 50.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }
}
