//! # msgflo
//!
//! Flow-based programming across processes over message brokers. A
//! **participant** is a process with inports and outports, each mapped to a
//! queue (AMQP) or topic (MQTT); it announces itself with **discovery**
//! messages on `fbp`; a coordinator wires participants into a graph by
//! binding their queues. This crate is the one implementation of everything
//! on the wire; the Python, Node and C++ bindings are thin layers over it.
//! It interoperates with the original MsgFlo on the same broker.
//!
//! ## Layout
//! - [`error`]: the error enum and the [`ErrorCode`]s bindings map.
//! - [`broker`]: broker URLs and where they come from (`--broker`,
//!   `MSGFLO_BROKER`, `CLOUDAMQP_URL`).
//! - [`message`]: payload bytes and their JSON/text/binary views; a
//!   [`Delivery`] that must be acked or nacked exactly once.
//! - [`discovery`]: definitions, instantiation for a role (queue names,
//!   ids), the discovery message.
//! - [`transport`]: one trait; `amqp` (lapin), `mqtt` (rumqttc), `memory`
//!   (in-process). Reconnects, confirms and ack ordering live here.
//! - [`edge`]: broker edges (pubsub, roundrobin, dead-letter) and how each
//!   is bound.
//! - [`participant`]: connect, declare, announce, heartbeat; the pull API
//!   (`recv_batch`, `send`, ack/nack) and the handler API (`serve`).
//! - [`runtime`]: the one tokio runtime for hosts (Python, C++), fork guard.
//! - [`seconds`]: seconds given by people, checked into durations.
//! - [`logs`]: the core's log lines handed to a host language's logging.
//! - [`stats`]: what a participant measures of its work (processing times
//!   per inport), reported to observers with each heartbeat.
//! - `graph` (feature `coordinator`): graphs from the `.fbp` DSL and the
//!   JSON format, and `library`: how to start a participant for a
//!   component. The bindings build without them.
//! - `coordinator` (feature `coordinator`, on by default): discovery
//!   registry with expiry, the reconcile loop that wires a graph, MQTT
//!   forwarding, process supervision, the embedded broker. The `msgflo`
//!   command (`src/bin/msgflo/`) is its command line.
//!
//! ## Quick start
//! ```no_run
//! use msgflo::{Definition, Options, Participant, PortDef};
//! # async fn run() -> msgflo::Result<()> {
//! let def = Definition::new("Repeat").inport(PortDef::new("in")).outport(PortDef::new("out"));
//! let p = Participant::start(&def, "repeat", Options::broker("amqp://localhost")).await?;
//! p.serve(|msg| async move { Ok(vec![("out".to_string(), msg.payload)]) }).await
//! # }
//! ```

pub mod broker;
#[cfg(feature = "coordinator")]
pub mod coordinator;
pub mod discovery;
pub mod edge;
#[cfg(feature = "coordinator")]
pub mod fbp;
pub mod error;
#[cfg(feature = "coordinator")]
pub mod graph;
#[cfg(feature = "coordinator")]
pub mod guv;
#[cfg(feature = "coordinator")]
pub mod library;
pub mod logs;
pub mod message;
pub mod participant;
pub mod runtime;
pub mod seconds;
pub mod stats;
pub mod transport;

pub use discovery::{Definition, ParticipantInfo, Port, PortDef};
pub use error::{Error, ErrorCode, Result};
pub use message::{Data, Delivery, Message, Payload};
pub use participant::{error_body, Failure, HandlerResult, Options, Outputs, Participant};
pub use transport::{ConnectOptions, Transport};
