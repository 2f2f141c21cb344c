//! A Drop participant: whatever arrives on `in` is taken and acknowledged,
//! nothing is sent (the FBP protocol's test suite needs one).
//!
//! `cargo run -p msgflo --example drop -- ROLE [--broker URL]`
//!
//! Prints one readiness line on stdout before its first discovery message
//! (what spawning tools wait for) and exits cleanly on SIGTERM or Ctrl-C:
//! the message being handled is finished, unhandled ones go back to the queue.

use clap::Parser;
use msgflo::{Definition, Options, Participant, PortDef};

#[derive(Parser)]
#[command(about = "Drop participant: takes `in`, sends nothing")]
struct Args {
    /// Role (name in the graph); its queue is ROLE.IN.
    role: String,
    /// Broker URL (default: MSGFLO_BROKER, CLOUDAMQP_URL, amqp://localhost).
    #[arg(long)]
    broker: Option<String>,
    /// AMQP prefetch.
    #[arg(long, default_value_t = msgflo::transport::DEFAULT_PREFETCH)]
    prefetch: u16,
}

#[tokio::main]
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
            eprintln!("drop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> msgflo::Result<()> {
    let def = Definition::new("Drop").label("Takes input, sends nothing").inport(PortDef::new("in"));
    let mut options = Options { broker: args.broker, ..Default::default() };
    options.connect.prefetch = args.prefetch;
    let participant = Participant::connect(&def, &args.role, options).await?;
    participant.serve_until_signal(|_msg| async move { Ok(Vec::new()) }).await
}
