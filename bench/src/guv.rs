//! The guv benchmark: every policy over every built-in scenario in the
//! deterministic simulator (docs/guv.md). Prints a table with ratios to
//! guv's rule and to the oracle; `--plots DIR` writes one SVG per scenario.
//!
//! `cargo run --release -p msgflo-bench --bin msgflo-bench-guv -- [--seed N] [--plots docs]`

use std::path::PathBuf;

use clap::Parser;
use msgflo::guv::config::PolicyKind;
use msgflo::guv::simulate::{self, SimOptions, SCENARIOS};
use msgflo::guv::svg;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write guv-SCENARIO.svg files into this folder.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    let policies = [PolicyKind::Msgflo, PolicyKind::Guv, PolicyKind::Keda, PolicyKind::Fixed(None), PolicyKind::Fixed(Some(1))];
    if !args.json {
        println!(
            "{:<9} {:<9} {:>6} {:>8} {:>7} {:>7} {:>9} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8}",
            "scenario", "policy", "jobs", "in-time%", "p50 s", "p99 s", "worker-s", "/guv", "/orcl", "actions", "starts", "kills", "alert s"
        );
    }
    for name in SCENARIOS {
        let role = simulate::bench_role(name);
        let trace = simulate::scenario(name, &role, args.seed).expect("built-in scenario");
        let opts = SimOptions { timeline: args.plots.is_some(), ..Default::default() };
        let results: Vec<_> = policies.iter().map(|p| simulate::run(&role, *p, &trace, args.seed, opts)).collect();
        let guv_ws = results[1].worker_seconds;
        for r in &results {
            if args.json {
                println!("{}", r.to_json());
                continue;
            }
            println!(
                "{:<9} {:<9} {:>6} {:>8.2} {:>7.1} {:>7.1} {:>9.0} {:>6.2} {:>6.2} {:>7} {:>6} {:>6} {:>8}",
                name,
                r.policy,
                r.jobs,
                r.within_deadline * 100.0,
                r.sojourn_p50,
                r.sojourn_p99,
                r.worker_seconds,
                r.worker_seconds / guv_ws,
                r.worker_seconds / r.oracle_worker_seconds,
                r.scale_actions,
                r.starts,
                r.busy_kills,
                r.first_alert_s.map(|a| format!("{a:.0}")).unwrap_or_else(|| "-".into()),
            );
        }
        if let Some(dir) = &args.plots {
            let shown: Vec<_> = results.into_iter().filter(|r| r.policy != "fixed:1").collect();
            let title = format!("guv simulator: {name}, D = {} s, seed {}", role.deadline, args.seed);
            let path = dir.join(format!("guv-{name}.svg"));
            if let Err(e) = std::fs::write(&path, svg::plot(&title, &shown)) {
                eprintln!("msgflo-bench-guv: cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
}
