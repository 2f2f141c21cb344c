//! The core's log lines for a host language: every `tracing` event becomes
//! a [`Record`] (level, logger name, text) handed to a callback the binding
//! gives, which passes it to the host's own logging (Python's `logging`,
//! Node's `console`), where the host's configuration decides what is shown.
//!
//! One subscriber per process, installed once by [`forward`]; the level
//! can be changed later with [`set_filter`]. The callback is called on
//! whatever thread logs (a runtime worker): it must not block (hand the
//! record to a queue or a thread-safe function and return).

use std::fmt::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};


/// One log line of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub level: Level,
    /// The module path with dots: `msgflo.transport.amqp`.
    pub logger: String,
    /// The message, then the event's other fields as `key=value`.
    pub message: String,
}

impl Record {
    /// The level as Python's `logging` numbers it (DEBUG 10 .. ERROR 40;
    /// TRACE is 5).
    pub fn python_level(&self) -> u8 {
        match self.level {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        }
    }

    /// The level's name in lower case (`"warn"`, ...): Node's console
    /// method for it is `console[name]` (trace and debug map to debug).
    pub fn level_name(&self) -> &'static str {
        match self.level {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        }
    }
}

type Deliver = Box<dyn Fn(Record) + Send + Sync>;

struct Forward(Deliver);

impl<S: Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        let mut message = text.message;
        if !text.fields.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&text.fields);
        }
        (self.0)(Record { level: *meta.level(), logger: meta.target().replace("::", "."), message });
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.push_field(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.push_field(field, format_args!("{value:?}"));
        }
    }
}

impl Text {
    fn push_field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value}", field.name());
    }
}

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter for `level` (`"debug"`, `"info"`, ...: the core's events at
/// that level and above), or else `RUST_LOG`, or else `msgflo=info`.
fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    let bad = |e: &dyn std::fmt::Display| format!("log level {:?}: {e}", level.unwrap_or(""));
    match level {
        Some(l) => {
            let l: tracing_subscriber::filter::LevelFilter = l.trim().parse().map_err(|e| bad(&e))?;
            EnvFilter::try_new(format!("msgflo={l}")).map_err(|e| bad(&e))
        }
        None => Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("msgflo=info"))),
    }
}

/// Hand every core log line at `level` and above (see [`set_filter`] for
/// the default) to `deliver`, from now on. Installs the process's tracing
/// subscriber: `false` (and `deliver` unused) when one was installed
/// already, by this or by the host.
pub fn forward(level: Option<&str>, deliver: impl Fn(Record) + Send + Sync + 'static) -> Result<bool, String> {
    let (layer, handle) = reload::Layer::new(filter(level)?);
    let installed = tracing_subscriber::registry().with(layer).with(Forward(Box::new(deliver))).try_init().is_ok();
    if installed {
        let _ = FILTER.set(handle);
    }
    Ok(installed)
}

/// Change the level of the lines [`forward`] hands over: `Some("debug")`
/// etc., or `None` for `RUST_LOG` (else `msgflo=info`). An unknown level is
/// an error that says which levels there are. `false` when [`forward`] was not called
/// (or another subscriber was installed first).
pub fn set_filter(level: Option<&str>) -> Result<bool, String> {
    let f = filter(level)?;
    match FILTER.get() {
        Some(h) => Ok(h.reload(f).is_ok()),
        None => Ok(false),
    }
}
