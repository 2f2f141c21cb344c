//! guv: deadline-based autoscaling of participants.
//!
//! - [`config`]: the original guv YAML format, unchanged, plus our keys.
//! - [`policy`]: ours, the original rule, KEDA/HPA-style, fixed.
//! - [`simulate`]: a deterministic discrete-event simulator that runs the
//!   same policy code over built-in scenarios or a CSV trace.
//! - [`source`]: queue depth from RabbitMQ.
//! - [`backend`]: where worker counts go (local, Kubernetes, Heroku).
//! - [`metrics`]: Prometheus text; [`decisions`]: the JSON-lines log.
//! - [`svg`]: plots of simulated runs.

pub mod config;
pub mod policy;
pub mod simulate;
pub mod svg;
pub mod http;
pub mod source;
pub mod backend;
pub mod metrics;
pub mod run;
pub mod keda;
