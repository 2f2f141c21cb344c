//! A deterministic discrete-event simulator: one role, a job trace, a
//! policy (the same code `msgflo guv` runs), workers that boot, process,
//! drain or get killed, and shut down. Same seed, same result.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::config::{PolicyKind, RoleConfig};
use super::policy::{self, quantile, Observation};

/// A small, fast, seedable generator (xoshiro256++ seeded by splitmix64).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E3779B97F4A7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[0].wrapping_add(self.s[3]).rotate_left(23).wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn exp(&mut self, rate: f64) -> f64 {
        -self.uniform().ln() / rate
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Lognormal with the given mean and coefficient of variation.
    pub fn lognormal(&mut self, mean: f64, cv: f64) -> f64 {
        if cv <= 0.0 {
            return mean;
        }
        let s2 = (1.0 + cv * cv).ln();
        let mu = mean.ln() - s2 / 2.0;
        (mu + s2.sqrt() * self.normal()).exp()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    pub arrival: f64,
    pub processing: f64,
}

/// Jobs to replay, sorted by arrival.
#[derive(Debug, Clone)]
pub struct Trace {
    pub name: String,
    pub jobs: Vec<Job>,
    /// Seconds covered by the trace.
    pub duration: f64,
    /// When arrivals first exceed what `maximum` workers can take (only
    /// known for built-in scenarios).
    pub overload_onset: Option<f64>,
}

pub const SCENARIOS: [&str; 5] = ["steady", "diurnal", "bursty", "overload", "sparse"];

const HOURS4: f64 = 4.0 * 3600.0;

/// A built-in scenario (see docs/guv.md): 4 h of arrivals, processing
/// times lognormal with the role's `processing` as mean and
/// `stddev / processing` as coefficient of variation.
pub fn scenario(name: &str, role: &RoleConfig, seed: u64) -> Result<Trace, String> {
    let mut rng = Rng::new(seed ^ 0x5CE7A810);
    let cv = role.stddev / role.processing;
    let mut arrivals: Vec<f64> = Vec::new();
    let poisson = |rate: &dyn Fn(f64) -> f64, bound: f64, rng: &mut Rng, out: &mut Vec<f64>| {
        let mut t = 0.0;
        loop {
            t += rng.exp(bound);
            if t >= HOURS4 {
                break;
            }
            if rng.uniform() * bound <= rate(t) {
                out.push(t);
            }
        }
    };
    let capacity = role.maximum as f64 * role.concurrency as f64 / role.processing;
    let mut onset = None;
    match name {
        "steady" => poisson(&|_| 1.5, 1.5, &mut rng, &mut arrivals),
        "diurnal" => poisson(&|t| 1.5 * (1.0 + 0.8 * (2.0 * std::f64::consts::PI * t / 3600.0).sin()), 2.7, &mut rng, &mut arrivals),
        "bursty" => {
            poisson(&|_| 0.3, 0.3, &mut rng, &mut arrivals);
            let mut b = 600.0;
            while b < HOURS4 {
                for _ in 0..300 {
                    arrivals.push(b + 10.0 * rng.uniform());
                }
                b += 1200.0;
            }
        }
        "overload" => {
            let rate = |t: f64| overload_rate(t);
            poisson(&rate, 5.0, &mut rng, &mut arrivals);
            // First moment the rate exceeds what `maximum` workers take.
            let mut t = 0.0;
            while t < HOURS4 {
                if overload_rate(t) > capacity {
                    onset = Some(t);
                    break;
                }
                t += 1.0;
            }
        }
        "sparse" => {
            let mut t = 0.0;
            loop {
                t += 300.0 + 600.0 * rng.uniform();
                if t >= HOURS4 {
                    break;
                }
                arrivals.push(t);
            }
        }
        other => return Err(format!("unknown scenario '{other}' (known: {})", SCENARIOS.join(", "))),
    }
    arrivals.sort_by(|a, b| a.total_cmp(b));
    let jobs = arrivals.into_iter().map(|a| Job { arrival: a, processing: rng.lognormal(role.processing, cv) }).collect();
    Ok(Trace { name: name.to_string(), jobs, duration: HOURS4, overload_onset: onset })
}

/// 1.5 jobs/s, from 1 h a 5 min ramp to 5/s, 10 min at 5/s, 5 min ramp
/// back down.
fn overload_rate(t: f64) -> f64 {
    let (a, b, c, d) = (3600.0, 3900.0, 4500.0, 4800.0);
    if t < a || t >= d {
        1.5
    } else if t < b {
        1.5 + 3.5 * (t - a) / (b - a)
    } else if t < c {
        5.0
    } else {
        5.0 - 3.5 * (t - c) / (d - c)
    }
}

/// A trace from CSV: header `arrival,processing[,role]` (seconds). With
/// `role` given, only that role's rows (rows without a role count for
/// every role).
pub fn read_csv(name: &str, text: &str, role: Option<&str>) -> Result<Trace, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let (_, header) = lines.next().ok_or("the trace is empty (expected a header `arrival,processing[,role]`)")?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    let find = |n: &str| cols.iter().position(|c| c == n);
    let ia = find("arrival").ok_or("the trace header has no `arrival` column")?;
    let ip = find("processing").ok_or("the trace header has no `processing` column")?;
    let ir = find("role");
    let mut jobs = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(|x| x.trim()).collect();
        let get = |k: usize, what: &str| -> Result<f64, String> {
            let s = f.get(k).ok_or(format!("line {}: no {what} value", i + 1))?;
            let x: f64 = s.parse().map_err(|_| format!("line {}: {what} '{s}' is not a number", i + 1))?;
            if !x.is_finite() || x < 0.0 {
                return Err(format!("line {}: {what} {x} must be a number >= 0", i + 1));
            }
            Ok(x)
        };
        if let (Some(ir), Some(want)) = (ir, role) {
            if let Some(r) = f.get(ir) {
                if !r.is_empty() && *r != want {
                    continue;
                }
            }
        }
        jobs.push(Job { arrival: get(ia, "arrival")?, processing: get(ip, "processing")? });
    }
    if jobs.is_empty() {
        return Err("the trace has no jobs (for this role)".into());
    }
    jobs.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    let duration = jobs.last().map(|j| j.arrival).unwrap_or(0.0);
    Ok(Trace { name: name.to_string(), jobs, duration, overload_onset: None })
}

/// Worker lifecycle parameters.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    /// Coefficient of variation of boot time (its mean is the role's `boot`).
    pub boot_cv: f64,
    /// Seconds from stop to gone (billed).
    pub shutdown: f64,
    /// Record a timeline point per decision (for plots).
    pub timeline: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions { boot_cv: 0.3, shutdown: 5.0, timeline: false }
    }
}

/// One point of the timeline, at a decision.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub t: f64,
    pub workers: u32,
    pub queue: u64,
    /// Jobs finished late so far.
    pub misses: u64,
    pub alert: bool,
}

#[derive(Debug, Clone)]
pub struct SimResult {
    pub policy: String,
    pub trace: String,
    pub jobs: usize,
    pub within_deadline: f64,
    pub sojourn_p50: f64,
    pub sojourn_p95: f64,
    pub sojourn_p99: f64,
    pub worker_seconds: f64,
    pub oracle_worker_seconds: f64,
    pub scale_actions: u64,
    pub starts: u64,
    pub busy_kills: u64,
    /// Seconds from overload onset (or from the start, when the trace has
    /// no onset) to the first alert.
    pub first_alert_s: Option<f64>,
    pub alerts: u64,
    pub unfinished: usize,
    pub timeline: Vec<Point>,
}

impl SimResult {
    pub fn to_json(&self) -> serde_json::Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        serde_json::json!({
            "policy": self.policy,
            "trace": self.trace,
            "jobs": self.jobs,
            "within_deadline": r(self.within_deadline),
            "sojourn_p50": r(self.sojourn_p50),
            "sojourn_p95": r(self.sojourn_p95),
            "sojourn_p99": r(self.sojourn_p99),
            "worker_seconds": r(self.worker_seconds),
            "oracle_worker_seconds": r(self.oracle_worker_seconds),
            "scale_actions": self.scale_actions,
            "starts": self.starts,
            "busy_kills": self.busy_kills,
            "first_alert_s": self.first_alert_s.map(r),
            "alerts": self.alerts,
            "unfinished": self.unfinished,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Booting,
    Up,
    Draining,
    Gone,
}

struct Worker {
    state: State,
    started: f64,
    ended: Option<f64>,
    slots: Vec<Option<usize>>,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Arrival(usize),
    BootDone(usize),
    JobDone { worker: usize, slot: usize, job: usize, generation: u64 },
    Gone,
    Decide,
}

struct Timed {
    t: f64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap.
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

struct Sim<'a> {
    role: &'a RoleConfig,
    trace: &'a Trace,
    opts: SimOptions,
    rng: Rng,
    heap: BinaryHeap<Timed>,
    seq: u64,
    workers: Vec<Worker>,
    queue: VecDeque<usize>,
    done: Vec<Option<f64>>,
    finished: usize,
    arrivals_since: f64,
    samples_since: Vec<f64>,
    busy_kills: u64,
}

impl Sim<'_> {
    fn at(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Timed { t, seq: self.seq, ev });
    }

    fn start_worker(&mut self, t: f64, booted: bool) {
        let w = self.workers.len();
        let c = self.role.concurrency.max(1) as usize;
        self.workers.push(Worker { state: if booted { State::Up } else { State::Booting }, started: t, ended: None, slots: vec![None; c], generation: 0 });
        if !booted {
            let boot = self.rng.lognormal(self.role.boot.max(1e-3), self.opts.boot_cv);
            self.at(t + boot, Ev::BootDone(w));
        }
    }

    fn dispatch(&mut self, t: f64) {
        for w in 0..self.workers.len() {
            if self.queue.is_empty() {
                return;
            }
            if self.workers[w].state != State::Up {
                continue;
            }
            for s in 0..self.workers[w].slots.len() {
                if self.workers[w].slots[s].is_none() {
                    let Some(job) = self.queue.pop_front() else { return };
                    self.workers[w].slots[s] = Some(job);
                    let generation = self.workers[w].generation;
                    let end = t + self.trace.jobs[job].processing;
                    self.at(end, Ev::JobDone { worker: w, slot: s, job, generation });
                }
            }
        }
    }

    fn stop(&mut self, t: f64, w: usize) {
        self.workers[w].state = State::Draining;
        if self.workers[w].slots.iter().all(|s| s.is_none()) {
            let end = t + self.opts.shutdown;
            self.at(end, Ev::Gone);
            self.workers[w].state = State::Gone;
            self.workers[w].ended = Some(end);
        }
    }

    fn scale_down(&mut self, t: f64, mut k: u32, drains: bool) {
        // Booting first (stopped at once), then idle, then busy.
        for w in 0..self.workers.len() {
            if k == 0 {
                return;
            }
            if self.workers[w].state == State::Booting {
                self.workers[w].state = State::Gone;
                self.workers[w].ended = Some(t);
                self.workers[w].generation += 1;
                k -= 1;
            }
        }
        for w in 0..self.workers.len() {
            if k == 0 {
                return;
            }
            if self.workers[w].state == State::Up && self.workers[w].slots.iter().all(|s| s.is_none()) {
                self.stop(t, w);
                k -= 1;
            }
        }
        // Busy ones: the most recently started first.
        for w in (0..self.workers.len()).rev() {
            if k == 0 {
                return;
            }
            if self.workers[w].state == State::Up {
                if !drains {
                    // Killed: its jobs go back to the head of the queue.
                    let jobs: Vec<usize> = self.workers[w].slots.iter_mut().filter_map(|s| s.take()).collect();
                    self.busy_kills += jobs.len() as u64;
                    for j in jobs.into_iter().rev() {
                        self.queue.push_front(j);
                    }
                    self.workers[w].generation += 1;
                }
                self.stop(t, w);
                k -= 1;
            }
        }
    }
}

/// Run `kind` over `trace` for `role`. Deterministic in `seed`.
pub fn run(role: &RoleConfig, kind: PolicyKind, trace: &Trace, seed: u64, opts: SimOptions) -> SimResult {
    let mut pol = policy::make(kind, role);
    let mut sim = Sim {
        role,
        trace,
        opts,
        rng: Rng::new(seed.wrapping_mul(0x2545F4914F6CDD1D) ^ 0xB007),
        heap: BinaryHeap::new(),
        seq: 0,
        workers: Vec::new(),
        queue: VecDeque::new(),
        done: vec![None; trace.jobs.len()],
        finished: 0,
        arrivals_since: 0.0,
        samples_since: Vec::new(),
        busy_kills: 0,
    };
    let initial = match kind {
        PolicyKind::Fixed(n) => n.unwrap_or(role.maximum),
        _ => role.minimum,
    };
    for _ in 0..initial {
        sim.start_worker(0.0, true);
    }
    for (i, j) in trace.jobs.iter().enumerate() {
        sim.at(j.arrival, Ev::Arrival(i));
    }
    sim.at(0.0, Ev::Decide);
    let period = pol.period().max(0.1);
    let drains = pol.drains();
    let hard_end = trace.duration + 24.0 * 3600.0;
    let mut end = trace.duration;
    let (mut actions, mut starts, mut alerts) = (0u64, 0u64, 0u64);
    let mut first_alert: Option<f64> = None;
    let mut timeline = Vec::new();
    let mut misses = 0u64;
    while let Some(Timed { t, ev, .. }) = sim.heap.pop() {
        if t > hard_end {
            end = hard_end;
            break;
        }
        match ev {
            Ev::Arrival(i) => {
                sim.queue.push_back(i);
                sim.arrivals_since += 1.0;
                sim.dispatch(t);
            }
            Ev::BootDone(w) => {
                if sim.workers[w].state == State::Booting {
                    sim.workers[w].state = State::Up;
                    sim.dispatch(t);
                }
            }
            Ev::JobDone { worker, slot, job, generation } => {
                if sim.workers[worker].generation != generation || sim.workers[worker].slots[slot] != Some(job) {
                    continue;
                }
                sim.workers[worker].slots[slot] = None;
                sim.done[job] = Some(t);
                sim.finished += 1;
                sim.samples_since.push(trace.jobs[job].processing);
                if t - trace.jobs[job].arrival > role.deadline {
                    misses += 1;
                }
                if sim.workers[worker].state == State::Draining {
                    sim.stop(t, worker);
                } else {
                    sim.dispatch(t);
                }
            }
            Ev::Gone => {}
            Ev::Decide => {
                let running = sim.workers.iter().filter(|w| w.state == State::Up).count() as u32;
                let booting = sim.workers.iter().filter(|w| w.state == State::Booting).count() as u32;
                let unacked = sim.workers.iter().filter(|w| w.state != State::Gone).flat_map(|w| w.slots.iter()).filter(|s| s.is_some()).count() as u64;
                let obs = Observation {
                    now: t,
                    ready: sim.queue.len() as u64,
                    unacked: Some(unacked),
                    running: Some(running),
                    booting,
                    arrivals: Some(std::mem::take(&mut sim.arrivals_since)),
                    processing_samples: std::mem::take(&mut sim.samples_since),
                };
                let d = pol.decide(&obs);
                if d.alert {
                    alerts += 1;
                    if first_alert.is_none() {
                        first_alert = Some(t);
                    }
                }
                let current = running + booting;
                if d.desired > current {
                    actions += 1;
                    for _ in current..d.desired {
                        sim.start_worker(t, false);
                        starts += 1;
                    }
                } else if d.desired < current {
                    actions += 1;
                    sim.scale_down(t, current - d.desired, drains);
                    sim.dispatch(t);
                }
                if opts.timeline {
                    timeline.push(Point { t, workers: d.desired, queue: obs.ready + unacked, misses, alert: d.alert });
                }
                let busy = unacked > 0 || !sim.queue.is_empty();
                if t + period <= trace.duration || sim.finished < trace.jobs.len() || busy {
                    sim.at(t + period, Ev::Decide);
                } else {
                    end = end.max(t);
                }
            }
        }
        end = end.max(t.min(hard_end));
    }
    // Bill every worker from start to gone (or the end of the run).
    let worker_seconds: f64 = sim.workers.iter().map(|w| w.ended.unwrap_or(end).min(end).max(w.started) - w.started).sum();
    let mut soj: Vec<f64> = Vec::with_capacity(trace.jobs.len());
    let mut within = 0usize;
    for (i, d) in sim.done.iter().enumerate() {
        match d {
            Some(t) => {
                let s = t - trace.jobs[i].arrival;
                if s <= role.deadline {
                    within += 1;
                }
                soj.push(s);
            }
            None => soj.push(f64::INFINITY),
        }
    }
    let n = trace.jobs.len();
    let oracle = trace.jobs.iter().map(|j| j.processing).sum::<f64>() / role.concurrency.max(1) as f64;
    SimResult {
        policy: pol.name(),
        trace: trace.name.clone(),
        jobs: n,
        within_deadline: if n == 0 { 1.0 } else { within as f64 / n as f64 },
        sojourn_p50: quantile(&mut soj.clone(), 0.5),
        sojourn_p95: quantile(&mut soj.clone(), 0.95),
        sojourn_p99: quantile(&mut soj, 0.99),
        worker_seconds,
        oracle_worker_seconds: oracle,
        scale_actions: actions,
        starts,
        busy_kills: sim.busy_kills,
        first_alert_s: first_alert.map(|a| a - trace.overload_onset.unwrap_or(0.0)),
        alerts,
        unfinished: n - sim.finished,
        timeline,
    }
}

/// The role the benchmark uses (GUV.md): c 1, boot 30 s, min 0, max 20,
/// D 60 s at p99 (bursty: 180 s), poll 10 s, processing mean 5 s cv 1.
pub fn bench_role(scenario: &str) -> RoleConfig {
    let mut r = RoleConfig::defaults("worker");
    r.processing = 5.0;
    r.stddev = 5.0;
    r.deadline = if scenario == "bursty" { 180.0 } else { 60.0 };
    r.minimum = 0;
    r.maximum = 20;
    r.pollinterval = 10.0;
    r.history = 120.0;
    r.boot = 30.0;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_result_other_seed_other_trace() {
        let role = bench_role("steady");
        let a = scenario("steady", &role, 7).unwrap();
        let b = scenario("steady", &role, 7).unwrap();
        let c = scenario("steady", &role, 8).unwrap();
        assert_eq!(a.jobs, b.jobs);
        assert_ne!(a.jobs, c.jobs);
        let ra = run(&role, PolicyKind::Msgflo, &a, 7, SimOptions::default());
        let rb = run(&role, PolicyKind::Msgflo, &b, 7, SimOptions::default());
        assert_eq!(ra.to_json(), rb.to_json());
        assert!(ra.jobs > 15000 && ra.jobs < 28000, "{}", ra.jobs);
    }

    #[test]
    fn fixed_max_meets_steady_and_costs_max() {
        let role = bench_role("steady");
        let t = scenario("steady", &role, 1).unwrap();
        let r = run(&role, PolicyKind::Fixed(None), &t, 1, SimOptions::default());
        assert!(r.within_deadline > 0.99, "{:?}", r.to_json());
        assert!(r.worker_seconds >= 20.0 * t.duration);
        assert_eq!(r.busy_kills, 0);
        assert_eq!(r.unfinished, 0);
    }

    #[test]
    fn too_few_workers_miss_and_never_hang() {
        let role = bench_role("steady");
        let t = scenario("steady", &role, 1).unwrap();
        let r = run(&role, PolicyKind::Fixed(Some(2)), &t, 1, SimOptions::default());
        assert!(r.within_deadline < 0.2, "{:?}", r.to_json());
        let r = run(&role, PolicyKind::Fixed(Some(0)), &t, 1, SimOptions::default());
        assert_eq!(r.within_deadline, 0.0);
        assert_eq!(r.unfinished, r.jobs);
    }

    #[test]
    fn csv_traces() {
        let t = read_csv("t", "arrival,processing,role\n0,1,a\n2,3,b\n1,2,\n", Some("a")).unwrap();
        assert_eq!(t.jobs.len(), 2);
        assert_eq!(t.jobs[1], Job { arrival: 1.0, processing: 2.0 });
        assert!(read_csv("t", "", None).unwrap_err().contains("empty"));
        assert!(read_csv("t", "arrival\n1\n", None).unwrap_err().contains("processing"));
        assert!(read_csv("t", "arrival,processing\n1,x\n", None).unwrap_err().contains("line 2"));
        assert!(read_csv("t", "arrival,processing\n-1,1\n", None).is_err());
    }
}
