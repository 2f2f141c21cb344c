//! `msgflo`: the coordinator and the command-line tools.
//!
//! - `run`: start a graph's participants, keep them running, wire the graph,
//!   send IIPs (on an embedded MQTT broker when none is configured).
//! - `setup`: wire a graph once (the original msgflo-setup).
//! - `register`: announce foreign participants described in YAML.
//! - `send`, `dump`: put messages into a queue, take them out.
//! - `procfile`: a Procfile that starts a graph's participants.
//! - `status`: participants, edges and queue depths, as text or JSON.
//!
//! Exit codes: 0 done, 1 failed (broker, timeout), 2 bad input (graph,
//! library, arguments).

use std::time::Duration;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod guv;
mod run;
mod tools;

#[derive(Parser)]
#[command(name = "msgflo", version, about = "Flow-based programming over message queues: coordinator and tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where the broker is. Without `--broker`: `MSGFLO_BROKER`, then
/// `CLOUDAMQP_URL`; `run` starts an embedded MQTT broker when none is set,
/// the other commands use `amqp://localhost`.
#[derive(Args, Clone)]
struct BrokerArg {
    /// Broker URL: amqp://, amqps://, mqtt://, mqtts://
    #[arg(long)]
    broker: Option<String>,
}

#[derive(Args, Clone)]
struct GraphArgs {
    /// Graph file: .fbp, or .json
    graph: PathBuf,
    /// Component library (JSON, or package.json with a `msgflo` key).
    /// Default: msgflo.json or package.json in the current directory.
    #[arg(long)]
    library: Option<PathBuf>,
    /// Roles not to start (comma-separated).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
}

/// The graph of `msgflo run`: optional (edits then arrive over the FBP
/// runtime protocol).
#[derive(Args, Clone)]
struct RunGraphArgs {
    /// Graph file: .fbp, or .json (none: an empty graph named after the
    /// current folder).
    graph: Option<PathBuf>,
    /// Component library (JSON, or package.json with a `msgflo` key).
    /// Default: msgflo.json or package.json in the current directory.
    #[arg(long)]
    library: Option<PathBuf>,
    /// Roles not to start (comma-separated).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
}

/// The FBP runtime protocol server of `msgflo run` (and the live view).
#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// Address to serve the FBP runtime protocol and the live view on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: a free one chosen by the system).
    #[arg(long, default_value_t = 3569)]
    pub port: u16,
    /// Secret every protocol client must give.
    #[arg(long, env = "MSGFLO_RUNTIME_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Do not serve the protocol.
    #[arg(long)]
    pub no_runtime: bool,
    /// The IDE the printed live URL opens.
    #[arg(long, default_value = "https://app.flowhub.io")]
    pub ide: String,
    /// Write live edits back to the graph file (atomically).
    #[arg(long)]
    pub auto_save: bool,
    /// Web origins allowed to connect besides the live view and the IDE
    /// (repeatable; `*` allows any).
    #[arg(long)]
    pub allow_origin: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a graph: start its participants, keep them running, wire the
    /// edges, send IIPs; show what happens. Ctrl-C stops everything.
    Run {
        #[command(flatten)]
        graph: RunGraphArgs,
        #[command(flatten)]
        broker: BrokerArg,
        #[command(flatten)]
        runtime: RuntimeArgs,
        /// Autoscale roles with guv: FILE is a guv config (`backend: local`
        /// roles are run as N instances, N decided from their queues;
        /// needs an AMQP broker).
        #[arg(long, value_name = "FILE")]
        scale: Option<PathBuf>,
        /// With --scale: serve guv's Prometheus metrics on this address
        /// (e.g. 127.0.0.1:9464), at /metrics.
        #[arg(long, value_name = "ADDR", requires = "scale")]
        metrics: Option<std::net::SocketAddr>,
        /// With --scale: append one JSON line per guv decision to FILE.
        #[arg(long, value_name = "FILE", requires = "scale")]
        decisions: Option<PathBuf>,
        /// Do not start participants; only wire the ones that appear.
        #[arg(long)]
        no_start: bool,
        /// Seconds without discovery before a participant shows as gone
        /// (default: three heartbeats, from MSGFLO_DISCOVERY_PERIOD).
        #[arg(long, value_parser = period_arg)]
        expire: Option<Duration>,
    },
    /// Wire a graph once: bind the edges as soon as the participants are
    /// discovered, send the IIPs, exit.
    Setup {
        #[command(flatten)]
        graph: GraphArgs,
        #[command(flatten)]
        broker: BrokerArg,
        /// Also start the participants (from the library).
        #[arg(long)]
        participants: bool,
        /// Only these roles (comma-separated) are started.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Keep running (and keep participants running) after the setup.
        #[arg(long)]
        forever: bool,
        /// Seconds to wait for participants before giving up.
        #[arg(long, default_value = "60", value_parser = wait_arg)]
        timeout: Duration,
    },
    /// Announce foreign participants (ports described in YAML), then again
    /// every `interval / 2.2` seconds.
    Register {
        /// ROLE:FILE.yaml, repeatable.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        broker: BrokerArg,
        /// Discovery period in seconds.
        #[arg(long, default_value = "60", value_parser = period_arg)]
        interval: Duration,
        /// Announce once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Send one message into a queue.
    Send {
        #[arg(long)]
        queue: String,
        /// JSON text (checked).
        #[arg(long, conflicts_with = "data")]
        json: Option<String>,
        /// Raw text; without a value, raw bytes from stdin.
        #[arg(long, num_args = 0..=1, default_missing_value = "-")]
        data: Option<String>,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Take messages out of a queue and print them, one per line.
    Dump {
        #[arg(long)]
        queue: String,
        /// How many messages, then exit (0: until Ctrl-C).
        #[arg(long, default_value_t = 1)]
        amount: u64,
        /// Give up after this many seconds.
        #[arg(long, value_parser = wait_arg)]
        timeout: Option<Duration>,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Print a Procfile that starts the graph's participants.
    Procfile {
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Show the participants on the broker, their queues and the edges
    /// running coordinators wired. A running coordinator answers at once;
    /// without one, only participants that announce during the wait are
    /// seen (on AMQP also discovery left in the `fbp` queue).
    Status {
        #[command(flatten)]
        broker: BrokerArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Seconds to listen for discovery and coordinator answers.
        #[arg(long, default_value = "2", value_parser = wait_arg)]
        wait: Duration,
        /// Also log what happens (info), not only warnings.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Deadline-based autoscaling: run, validate a config, simulate.
    Guv(guv::GuvArgs),
}

/// A failure with the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn input(message: impl Into<String>) -> Self {
        Failure { code: 2, message: message.into() }
    }
    pub fn run(message: impl Into<String>) -> Self {
        Failure { code: 1, message: message.into() }
    }
}

impl From<msgflo::Error> for Failure {
    fn from(e: msgflo::Error) -> Self {
        let code = match e.code() {
            msgflo::ErrorCode::InvalidDefinition | msgflo::ErrorCode::InvalidUrl | msgflo::ErrorCode::UnknownPort => 2,
            _ => 1,
        };
        Failure { code, message: e.to_string() }
    }
}

/// Connect to `url`, named `msgflo NAME` in the broker's connection list.
pub async fn connect(url: &str, name: &str) -> Result<std::sync::Arc<dyn msgflo::Transport>, Failure> {
    let options = msgflo::transport::ConnectOptions { connection_name: format!("msgflo {name}"), ..Default::default() };
    Ok(msgflo::transport::connect(url, &options).await?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `status` prints its table and warnings; the others say what they do.
    let quiet = matches!(&cli.command, Cmd::Status { verbose: false, .. });
    // lapin logs a probe of a missing queue (a closed one-off channel) as an
    // ERROR; what matters (a lost connection) is logged by the transport.
    let default = if quiet { "warn,rumqttd=off,lapin=off,rumqttc=error" } else { "info,rumqttd=off,lapin=off,rumqttc=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("msgflo: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Cmd::Run { graph, broker, runtime, scale, metrics, decisions, no_start, expire } => {
                let graph = run::RunGraph { graph: graph.graph, library: graph.library, ignore: graph.ignore, scale, metrics, decisions };
                run::run(graph, broker.broker, runtime, no_start, expire).await
            }
            Cmd::Setup { graph, broker, participants, only, forever, timeout } => {
                run::setup(graph, broker.broker, participants, only, forever, timeout).await
            }
            Cmd::Register { roles, broker, interval, once } => tools::register(roles, broker.broker, interval, once).await,
            Cmd::Send { queue, json, data, broker } => tools::send(queue, json, data, broker.broker).await,
            Cmd::Dump { queue, amount, timeout, broker } => tools::dump(queue, amount, timeout, broker.broker).await,
            Cmd::Procfile { graph } => tools::procfile(graph),
            Cmd::Status { broker, json, wait, .. } => tools::status(broker.broker, json, wait).await,
            Cmd::Guv(args) => guv::guv(args).await,
        }
    });
    // Children and sockets are closed by now; do not wait for stray tasks.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("msgflo: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Seconds given on the command line: finite and in range, else clap's
/// usage error (exit 2); see [`msgflo::seconds`].
fn period_arg(s: &str) -> Result<Duration, String> {
    msgflo::seconds::parse_period("the period", s)
}

fn wait_arg(s: &str) -> Result<Duration, String> {
    msgflo::seconds::parse_wait("the wait", s)
}
