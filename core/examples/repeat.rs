//! A Repeat participant: whatever arrives on `in` is sent unchanged on `out`.
//!
//! `cargo run -p msgflo --example repeat -- ROLE [--broker URL]`
//!
//! Prints one readiness line on stdout before its first discovery message
//! (what spawning tools wait for) and exits cleanly on SIGTERM or Ctrl-C:
//! the message being handled is finished, unhandled ones go back to the queue.

use clap::Parser;
use msgflo::{Definition, Options, Participant, PortDef};

#[derive(Parser)]
#[command(about = "Repeat participant: forwards `in` to `out` unchanged")]
struct Args {
    /// Role (name in the graph); queues are ROLE.IN and ROLE.OUT.
    role: String,
    /// Broker URL (default: MSGFLO_BROKER, CLOUDAMQP_URL, amqp://localhost).
    #[arg(long)]
    broker: Option<String>,
    /// AMQP prefetch (default: MSGFLO_PREFETCH, else 256).
    #[arg(long)]
    prefetch: Option<u16>,
    /// Seconds each message takes (a slow worker, for scaling tests).
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,msgflo=info".into()),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("repeat: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> msgflo::Result<()> {
    let def = Definition::new("Repeat")
        .label("Repeats input on outport unchanged")
        .inport(PortDef::new("in"))
        .outport(PortDef::new("out"));
    let mut options = Options { broker: args.broker, ..Default::default() };
    if let Some(p) = args.prefetch {
        options.connect.prefetch = p;
    }
    let delay = std::time::Duration::try_from_secs_f64(args.delay).map_err(|e| msgflo::Error::InvalidDefinition(format!("--delay: {e}")))?;
    let participant = Participant::connect(&def, &args.role, options).await?;
    participant
        .serve_until_signal(move |msg| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(vec![("out".to_string(), msg.payload)])
        })
        .await
}
