//! `msgflo guv`: deadline-based autoscaling (see docs/guv.md).
//!
//! - `msgflo guv --config FILE [--dry-run] [--oneshot] [--json] [--broker URL] [--metrics ADDR] [--decisions FILE]`
//! - `msgflo guv validate FILE [--allow-key K]...`
//! - `msgflo guv simulate --config FILE (--scenario S | --trace CSV) [--policy P]... [--seed N] [--json] [--plot FILE.svg]`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use msgflo::guv::config::{self, PolicyKind, RoleConfig, Severity};
use msgflo::guv::run::{self, RunOptions};
use msgflo::guv::simulate::{self, SimOptions};
use msgflo::guv::svg;

use crate::Failure;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GuvArgs {
    #[command(subcommand)]
    action: Option<GuvCmd>,
    /// guv configuration (YAML or JSON; the original guv format).
    #[arg(long, short = 'c', env = "GUV_CONFIG")]
    config: Option<PathBuf>,
    /// Decide and print, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// One poll, then exit.
    #[arg(long)]
    oneshot: bool,
    /// One JSON object per decision on stdout.
    #[arg(long)]
    json: bool,
    /// AMQP broker URL (else GUV_BROKER, the config's `broker`,
    /// MSGFLO_BROKER, CLOUDAMQP_URL).
    #[arg(long)]
    broker: Option<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Append one JSON line per decision to this file.
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// Where the KEDA external scaler (gRPC) listens for roles with
    /// `backend: keda` (default 0.0.0.0:9090).
    #[arg(long)]
    keda: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum GuvCmd {
    /// Check a configuration: schema, unknown keys, types, impossible
    /// deadlines. One line per problem; exit 1 when there are errors.
    Validate {
        file: PathBuf,
        /// Accept this key although it is unknown (repeatable).
        #[arg(long = "allow-key")]
        allow_key: Vec<String>,
    },
    /// Replay a scenario or a trace through policies in the simulator.
    Simulate {
        #[arg(long, short = 'c', env = "GUV_CONFIG")]
        config: PathBuf,
        /// Built-in scenario: steady, diurnal, bursty, overload, sparse.
        #[arg(long, conflicts_with = "trace", required_unless_present = "trace")]
        scenario: Option<String>,
        /// CSV with header `arrival,processing[,role]` (seconds).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// msgflo, guv, keda, fixed or fixed:N (repeatable; default msgflo and guv).
        #[arg(long)]
        policy: Vec<String>,
        /// The role to simulate (default: the first in the config).
        #[arg(long)]
        role: Option<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One JSON object per (policy, trace).
        #[arg(long)]
        json: bool,
        /// Draw workers, queue and late jobs over time (SVG).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))
}

pub fn load(path: &Path, allow: &[String]) -> Result<Vec<RoleConfig>, Failure> {
    let parsed = config::parse(&read(path)?, allow);
    for p in &parsed.problems {
        if p.severity == Severity::Warning {
            tracing::warn!("{}: {p}", path.display());
        }
    }
    if !parsed.is_ok() {
        let lines: Vec<String> = parsed.errors().map(|p| p.to_string()).collect();
        return Err(Failure::input(format!("{} is not a valid guv config:\n  {}", path.display(), lines.join("\n  "))));
    }
    Ok(parsed.roles)
}

pub async fn guv(args: GuvArgs) -> Result<(), Failure> {
    match args.action {
        Some(GuvCmd::Validate { file, allow_key }) => validate(&file, &allow_key),
        Some(GuvCmd::Simulate { config, scenario, trace, policy, role, seed, json, plot }) => {
            simulate(&config, scenario, trace, policy, role, seed, json, plot)
        }
        None => {
            let path = args.config.ok_or_else(|| Failure::input("give the configuration with --config FILE (or GUV_CONFIG)"))?;
            let roles = load(&path, &[])?;
            let broker = args
                .broker
                .filter(|b| !b.trim().is_empty())
                .or_else(|| std::env::var("GUV_BROKER").ok().filter(|b| !b.trim().is_empty()))
                .or_else(|| roles.iter().find_map(|r| r.broker.clone()))
                .unwrap_or_else(|| msgflo::broker::resolve(None));
            let opts = RunOptions { local: None, stop: None, dry_run: args.dry_run, oneshot: args.oneshot, json: args.json, broker, metrics: args.metrics, decisions: args.decisions, keda: args.keda };
            run::run(roles, opts).await.map_err(Failure::run)
        }
    }
}

fn validate(file: &Path, allow: &[String]) -> Result<(), Failure> {
    let parsed = config::parse(&read(file)?, allow);
    for p in &parsed.problems {
        println!("{}: {p}", file.display());
    }
    if parsed.is_ok() {
        println!("{}: ok ({} roles)", file.display(), parsed.roles.len());
        Ok(())
    } else {
        Err(Failure::run(format!("{}: {} errors", file.display(), parsed.errors().count())))
    }
}

#[allow(clippy::too_many_arguments)]
fn simulate(
    config: &Path,
    scenario: Option<String>,
    trace: Option<PathBuf>,
    policies: Vec<String>,
    role: Option<String>,
    seed: u64,
    json: bool,
    plot: Option<PathBuf>,
) -> Result<(), Failure> {
    let roles = load(config, &[])?;
    let role = match &role {
        Some(name) => roles.iter().find(|r| &r.name == name).ok_or_else(|| Failure::input(format!("no role {name:?} in {}", config.display())))?,
        None => &roles[0],
    };
    let kinds: Vec<PolicyKind> = if policies.is_empty() {
        vec![PolicyKind::Msgflo, PolicyKind::Guv]
    } else {
        policies
            .iter()
            .map(|p| PolicyKind::parse(p).ok_or_else(|| Failure::input(format!("unknown policy {p:?} (msgflo, guv, keda, fixed, fixed:N)"))))
            .collect::<Result<_, _>>()?
    };
    let tr = match (&scenario, &trace) {
        (Some(s), _) => simulate::scenario(s, role, seed).map_err(Failure::input)?,
        (None, Some(path)) => {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "trace".into());
            simulate::read_csv(&name, &read(path)?, Some(&role.name)).map_err(|e| Failure::input(format!("{}: {e}", path.display())))?
        }
        (None, None) => return Err(Failure::input("give --scenario NAME or --trace FILE.csv")),
    };
    let opts = SimOptions { timeline: plot.is_some(), ..Default::default() };
    let results: Vec<_> = kinds.iter().map(|k| simulate::run(role, *k, &tr, seed, opts)).collect();
    if json {
        for r in &results {
            println!("{}", r.to_json());
        }
    } else {
        println!("role {}, trace {} ({} jobs), deadline {} s, seed {seed}", role.name, tr.name, tr.jobs.len(), role.deadline);
        println!("{:<10} {:>9} {:>8} {:>8} {:>11} {:>7} {:>7} {:>6} {:>8}", "policy", "in time %", "p50 s", "p99 s", "worker-s", "/oracle", "actions", "kills", "alert s");
        for r in &results {
            println!(
                "{:<10} {:>9.2} {:>8.1} {:>8.1} {:>11.0} {:>7.2} {:>7} {:>6} {:>8}",
                r.policy,
                r.within_deadline * 100.0,
                r.sojourn_p50,
                r.sojourn_p99,
                r.worker_seconds,
                r.worker_seconds / r.oracle_worker_seconds.max(1e-9),
                r.scale_actions,
                r.busy_kills,
                r.first_alert_s.map(|a| format!("{a:.0}")).unwrap_or_else(|| "-".into())
            );
        }
    }
    if let Some(p) = plot {
        let title = format!("{}: {} (D = {} s, seed {seed})", role.name, tr.name, role.deadline);
        std::fs::write(&p, svg::plot(&title, &results)).map_err(|e| Failure::run(format!("cannot write {}: {e}", p.display())))?;
    }
    Ok(())
}
