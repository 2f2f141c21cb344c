//! Broker addresses: where the URL comes from, and what it means.
//!
//! The order of precedence is the original MsgFlo's: an explicit value
//! (`--broker`), then `MSGFLO_BROKER`, then `CLOUDAMQP_URL`, then
//! `amqp://localhost`. Tools that embed a broker (the coordinator) look at
//! [`configured`] to learn whether the user asked for one.

use crate::error::{Error, Result};

/// Fallback when nothing is configured, as in the original.
pub const DEFAULT_URL: &str = "amqp://localhost";

/// Seconds between AMQP heartbeats when the URL has no `?heartbeat=N`: a
/// dead connection (a network partition, a frozen broker) is noticed within
/// about this long. RabbitMQ's own default (60 s) is too slow to notice.
pub const DEFAULT_AMQP_HEARTBEAT: u16 = 10;

/// MQTT keep-alive (seconds) when the URL has no `?heartbeat=N`.
pub const DEFAULT_MQTT_KEEP_ALIVE: u16 = 30;

/// Which protocol family a URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// AMQP 0-9-1 (RabbitMQ), `amqp://` or `amqps://`.
    Amqp { tls: bool },
    /// MQTT 3.1.1, `mqtt://` or `mqtts://`.
    Mqtt { tls: bool },
    /// The in-process broker, `memory://NAME`, for tests and embedding.
    Memory,
}

/// A parsed, validated broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// AMQP virtual host; `/` when the URL has an empty path.
    pub vhost: String,
    /// `?heartbeat=N`: seconds between AMQP heartbeats, or the MQTT
    /// keep-alive. `None`: [`DEFAULT_AMQP_HEARTBEAT`] / [`DEFAULT_MQTT_KEEP_ALIVE`].
    pub heartbeat: Option<u16>,
    /// `?qos=1` (MQTT): at-least-once delivery with a persistent session.
    /// 0, the original's QoS, is the default.
    pub qos: u8,
    /// AMQP connection options from the query, read by lapin's own URI
    /// parser: `heartbeat`, `frame_max`, `channel_max`,
    /// `connection_timeout` (ms), `auth_mechanism`.
    pub amqp_options: lapin::uri::AMQPQueryString,
    raw: String,
}

/// Query options each scheme understands; any other is refused (a typo
/// must not be dropped silently).
const AMQP_OPTIONS: [&str; 5] = ["heartbeat", "frame_max", "channel_max", "connection_timeout", "auth_mechanism"];
const MQTT_OPTIONS: [&str; 2] = ["heartbeat", "qos"];

/// The URL from the environment, if the user configured one.
pub fn configured() -> Option<String> {
    ["MSGFLO_BROKER", "CLOUDAMQP_URL"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
}

/// Resolve the broker URL: `explicit` first, then the environment, then the default.
pub fn resolve(explicit: Option<&str>) -> String {
    explicit
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
        .or_else(configured)
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl BrokerUrl {
    /// Parse and validate a broker URL.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: redact(raw),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
        let (scheme, default_port) = match url.scheme() {
            "amqp" => (Scheme::Amqp { tls: false }, 5672),
            "amqps" => (Scheme::Amqp { tls: true }, 5671),
            "mqtt" | "tcp" => (Scheme::Mqtt { tls: false }, 1883),
            "mqtts" | "ssl" => (Scheme::Mqtt { tls: true }, 8883),
            "memory" => (Scheme::Memory, 0),
            other => {
                return Err(bad(&format!(
                    "unsupported scheme {other:?}; use amqp, amqps, mqtt, mqtts or memory"
                )))
            }
        };
        let host = url.host_str().unwrap_or("").to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = url.path();
        let vhost = match path {
            "" | "/" => "/".to_owned(),
            p => percent_decode(&p[1..]),
        };
        let username = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        let password = url.password().map(percent_decode);
        let mut heartbeat = None;
        let mut qos = 0;
        let known: &[&str] = match scheme {
            Scheme::Amqp { .. } => &AMQP_OPTIONS,
            Scheme::Mqtt { .. } => &MQTT_OPTIONS,
            Scheme::Memory => &[],
        };
        if let Some((k, _)) = url.query_pairs().find(|(k, _)| !known.contains(&k.as_ref())) {
            return Err(bad(&format!("unknown option {k:?}; this scheme takes {}", if known.is_empty() { "none".to_owned() } else { known.join(", ") })));
        }
        let amqp_options = match scheme {
            Scheme::Amqp { .. } => raw
                .trim()
                .parse::<lapin::uri::AMQPUri>()
                .map_err(|e| bad(&format!("AMQP options: {e}")))?
                .query,
            _ => Default::default(),
        };
        for (k, v) in url.query_pairs() {
            if k == "heartbeat" {
                let n = v.parse::<u16>().map_err(|_| bad(&format!("heartbeat={v:?}: whole seconds, 0-65535, expected")))?;
                heartbeat = Some(n);
            } else if k == "qos" {
                qos = match v.as_ref() {
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(bad(&format!("qos={v:?}: 0 or 1 expected"))),
                };
            }
        }
        Ok(BrokerUrl {
            heartbeat,
            qos,
            amqp_options,
            scheme,
            port: url.port().unwrap_or(default_port),
            host,
            username,
            password,
            vhost,
            raw: raw.trim().to_owned(),
        })
    }

    /// The URL as given (with credentials; use [`BrokerUrl::redacted`] in logs).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The URL with any password replaced, for log lines and errors.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }
}

/// TLS files for `amqps://` and `mqtts://`, from the environment (so the
/// participants a coordinator starts get them too):
///
/// - `MSGFLO_TLS_CA`: a PEM file of CA certificates the broker's
///   certificate is verified with (AMQP: in addition to the system's roots;
///   MQTT: instead of them). Without it, the system's roots.
/// - `MSGFLO_TLS_CERT` and `MSGFLO_TLS_KEY`: a PEM client certificate and
///   its PEM (PKCS#8) key, for brokers that ask for one. Both or neither.
///
/// The broker's name in the URL is checked against its certificate; there
/// is never a fallback to plain TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// (certificate, key), PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// Read the files the environment names; a missing or unreadable one
    /// is an error that names the variable and the file.
    pub fn from_env() -> Result<TlsFiles> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<TlsFiles> {
        let read = |key: &str| -> Result<Option<Vec<u8>>> {
            let Some(path) = var(key) else { return Ok(None) };
            std::fs::read(path.trim()).map(Some).map_err(|e| Error::Connection {
                url: format!("{key}={path}"),
                reason: format!("cannot read the TLS file: {e}"),
            })
        };
        let ca = read("MSGFLO_TLS_CA")?;
        let client = match (read("MSGFLO_TLS_CERT")?, read("MSGFLO_TLS_KEY")?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(Error::Connection {
                    url: "MSGFLO_TLS_CERT / MSGFLO_TLS_KEY".into(),
                    reason: "a client certificate needs both: the certificate and its key".into(),
                })
            }
        };
        Ok(TlsFiles { ca, client })
    }
}

/// Hide the password of a URL so it can be logged.
pub fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_defaults() {
        let u = BrokerUrl::parse("amqp://localhost").unwrap();
        assert_eq!(u.scheme, Scheme::Amqp { tls: false });
        assert_eq!((u.host.as_str(), u.port, u.vhost.as_str()), ("localhost", 5672, "/"));
        assert_eq!(u.username, None);
    }

    #[test]
    fn heartbeat_from_the_query() {
        assert_eq!(BrokerUrl::parse("amqp://h").unwrap().heartbeat, None);
        assert_eq!(BrokerUrl::parse("amqp://h/?heartbeat=4").unwrap().heartbeat, Some(4));
        assert_eq!(BrokerUrl::parse("mqtt://h:1884?heartbeat=0").unwrap().heartbeat, Some(0));
        assert_eq!(BrokerUrl::parse("mqtt://h").unwrap().qos, 0);
        assert_eq!(BrokerUrl::parse("mqtt://h?qos=1&heartbeat=5").unwrap().qos, 1);
        for bad in [
            "amqp://h?heartbeat=x",
            "amqp://h?heartbeat=-1",
            "amqp://h?heartbeat=70000",
            "amqp://h?heartbeat=",
            "mqtt://h?qos=2",
            "mqtt://h?qos=",
            "amqp://h?frame_max=big",
            "amqp://h?channel_max=-3",
            "amqp://h?connection_timeout=soon",
            "amqp://h?auth_mechanism=MAGIC",
            "amqp://h?heartbeet=5",
            "amqp://h?qos=1",
            "mqtt://h?frame_max=4096",
            "memory://x?heartbeat=1",
        ] {
            assert!(matches!(BrokerUrl::parse(bad), Err(Error::InvalidUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn tls_files_from_the_environment() {
        let dir = std::env::temp_dir().join(format!("msgflo-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, b"CA").unwrap();
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let vars = |pairs: Vec<(&'static str, String)>| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(TlsFiles::from_vars(vars(vec![])).unwrap(), TlsFiles::default());
        let t = TlsFiles::from_vars(vars(vec![("MSGFLO_TLS_CA", path(&ca))])).unwrap();
        assert_eq!(t.ca.as_deref(), Some(&b"CA"[..]));
        let t = TlsFiles::from_vars(vars(vec![("MSGFLO_TLS_CERT", path(&ca)), ("MSGFLO_TLS_KEY", path(&ca))])).unwrap();
        assert_eq!(t.client, Some((b"CA".to_vec(), b"CA".to_vec())));
        let e = TlsFiles::from_vars(vars(vec![("MSGFLO_TLS_CA", "/no/such/ca.pem".into())])).unwrap_err().to_string();
        assert!(e.contains("MSGFLO_TLS_CA=/no/such/ca.pem") && e.contains("cannot read"), "{e}");
        let e = TlsFiles::from_vars(vars(vec![("MSGFLO_TLS_CERT", path(&ca))])).unwrap_err().to_string();
        assert!(e.contains("needs both"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn amqp_options_from_lapins_parser() {
        let u = BrokerUrl::parse("amqp://h/?frame_max=8192&channel_max=32&connection_timeout=2500&auth_mechanism=external&heartbeat=7").unwrap();
        let q = &u.amqp_options;
        assert_eq!((q.frame_max, q.channel_max, q.connection_timeout, q.heartbeat), (Some(8192), Some(32), Some(2500), Some(7)));
        assert_eq!(q.auth_mechanism.map(|m| m.to_string()), Some("EXTERNAL".to_owned()));
        assert_eq!(u.heartbeat, Some(7));
        assert_eq!(BrokerUrl::parse("amqp://h").unwrap().amqp_options, Default::default());
    }

    #[test]
    fn credentials_vhost_and_port() {
        let u = BrokerUrl::parse("amqps://us%40er:p%3Ass@h.local:1234/my%2Fvhost").unwrap();
        assert_eq!(u.scheme, Scheme::Amqp { tls: true });
        assert_eq!(u.port, 1234);
        assert_eq!(u.username.as_deref(), Some("us@er"));
        assert_eq!(u.password.as_deref(), Some("p:ss"));
        assert_eq!(u.vhost, "my/vhost");
        assert!(!u.redacted().contains("p%3Ass"));
    }

    #[test]
    fn mqtt_schemes() {
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1").unwrap().port, 1883);
        let u = BrokerUrl::parse("mqtts://127.0.0.1").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Mqtt { tls: true }, 8883));
    }

    #[test]
    fn rejects_unknown_scheme_and_garbage() {
        for bad in ["http://x", "not a url", "amqp://"] {
            let e = BrokerUrl::parse(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidUrl, "{bad}");
        }
    }

    #[test]
    fn explicit_wins() {
        assert_eq!(resolve(Some("mqtt://a")), "mqtt://a");
    }
}
