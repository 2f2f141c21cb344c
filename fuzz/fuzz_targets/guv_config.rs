//! guv's configuration (YAML/JSON, the original's format and ours), and
//! every policy deciding on what it parsed: odd numbers that pass
//! validation must not make a decision panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use msgflo::guv::config::{self, PolicyKind};
use msgflo::guv::policy::{self, Observation};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = config::parse(text, &[]);
    if !parsed.is_ok() {
        return;
    }
    for role in parsed.roles.iter().take(4) {
        for kind in [PolicyKind::Msgflo, PolicyKind::Guv, PolicyKind::Keda, PolicyKind::Fixed(None)] {
            let mut p = policy::make(kind, role);
            let mut now = 0.0;
            for (ready, samples) in [(0u64, vec![]), (1_000_000, vec![0.5, 30.0]), (3, vec![0.0]), (0, vec![])] {
                now += p.period().clamp(0.0, 1e6);
                let obs = Observation { now, ready, unacked: Some(ready / 2), running: Some(1), booting: 0, arrivals: Some(ready as f64), processing_samples: samples };
                let _ = p.decide(&obs);
            }
        }
    }
});
