//! The conformance shim written with the Rust API (see spec/README.md):
//! repeats `in` to `out`; `{"command":"nack"}` nacks, `{"command":"error"}`
//! fails in the handler (nack + `error` outport), `{"command":"whoami"}`
//! answers `{"pid": N}`. Usage: msgflo-spec-shim ROLE (MSGFLO_BROKER).

use msgflo::participant::StopSignals;
use msgflo::{Definition, Failure, Options, Participant, PortDef};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(role) = std::env::args().nth(1) else {
        eprintln!("usage: msgflo-spec-shim ROLE");
        return std::process::ExitCode::from(2);
    };
    let def = Definition::new("SpecShim")
        .inport(PortDef::new("in"))
        .outport(PortDef::new("out"))
        .outport(PortDef::new("error").with_type("object"));
    let p = match Participant::connect(&def, &role, Options::default()).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("msgflo-spec-shim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut signals = StopSignals::listen();
    println!("{}", p.readiness_line());
    if let Err(e) = p.announce().await {
        eprintln!("msgflo-spec-shim: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let worker = p.clone();
    let serving = tokio::spawn(async move {
        loop {
            let batch = worker.recv_batch(64).await;
            if batch.is_empty() {
                return Ok::<_, msgflo::Error>(());
            }
            for d in batch {
                let command = d.payload().parse_json().and_then(|v| v.get("command").and_then(|c| c.as_str()).map(str::to_owned));
                match command.as_deref() {
                    Some("nack") => d.nack()?,
                    Some("error") => worker.complete(&d, Err(Failure::new("error requested"))).await?,
                    Some("unicode") => {
                        let out = msgflo::Payload::json(&serde_json::json!({ "text": "æ€𝄞" }));
                        worker.complete(&d, Ok(vec![("out".into(), out)])).await?
                    }
                    Some("nan") => {
                        let result = msgflo::Payload::json_text(f64::NAN.to_string()).map(|p| vec![("out".into(), p)]);
                        worker.complete(&d, result.map_err(Failure::from)).await?
                    }
                    Some("whoami") => {
                        worker.send("out", serde_json::json!({ "pid": std::process::id() })).await?;
                        d.ack()?;
                    }
                    _ => worker.complete(&d, Ok(vec![("out".into(), d.payload().clone())])).await?,
                }
            }
        }
    });
    signals.recv().await;
    let stopped = p.stop().await;
    let served = serving.await;
    match (stopped, served) {
        (Ok(()), Ok(Ok(()))) => std::process::ExitCode::SUCCESS,
        (s, r) => {
            eprintln!("msgflo-spec-shim: stop: {s:?}, serve: {r:?}");
            std::process::ExitCode::FAILURE
        }
    }
}
