//! The temperature sensor of the example graph, in Rust: sends a reading
//! `{"celsius": 22.3, "sensor": ROLE}` on outport `temperature` every
//! interval (seconds, set through inport `interval`, e.g. by an IIP).
//!
//! `temperature-sensor ROLE` (broker from MSGFLO_BROKER, as the coordinator
//! sets it). A real sensor would read hardware here; this one drifts
//! around 22.3 C so the output is easy to check.

use std::time::Duration;

use msgflo::participant::StopSignals;
use msgflo::{Definition, Options, Participant, Payload, PortDef};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let role = std::env::args().nth(1).unwrap_or_else(|| "sensor".into());
    match run(&role).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(role: &str) -> msgflo::Result<()> {
    let def = Definition::new("examples/Sensor")
        .label("Simulated temperature sensor")
        .icon("thermometer")
        .inport(PortDef::new("interval").with_type("number"))
        .outport(PortDef::new("temperature").with_type("object"));
    let p = Participant::connect(&def, role, Options::default()).await?;
    let mut signals = StopSignals::listen();
    println!("{}", p.readiness_line());
    p.announce().await?;
    let mut interval = Duration::from_secs(1);
    let mut n = 0u32;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = signals.recv() => break,
            batch = p.recv_batch(16) => {
                if batch.is_empty() {
                    break; // stopped
                }
                for d in batch {
                    let secs = d.payload().parse_json().and_then(|v| v.as_f64()).filter(|s| *s >= 0.01);
                    match secs.and_then(|s| msgflo::seconds::period("interval", s).ok()) {
                        Some(secs) => {
                            // Configured: start the series again, now.
                            interval = secs;
                            next = tokio::time::Instant::now();
                            n = 0;
                            d.ack()?;
                        }
                        None => {
                            eprintln!("{role}: interval must be a number of seconds >= 0.01");
                            d.nack()?;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next) => {
                let celsius = (223.0 + 4.0 * (n as f64 / 3.0).sin()).round() / 10.0;
                p.send("temperature", Payload::json(&serde_json::json!({"celsius": celsius, "sensor": role}))).await?;
                n += 1;
                next += interval;
            }
        }
    }
    p.stop().await
}
