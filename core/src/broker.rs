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
    /// Every address given, `(host, port)`, the first being `host`/`port`:
    /// `amqp://user:pass@node1:5672,node2:5673,node3/vhost` names the nodes
    /// of a RabbitMQ cluster; the connection goes to the first that
    /// answers, and after a loss to the next one (AMQP only).
    pub addresses: Vec<(String, u16)>,
    /// `?queue_type=quorum` (AMQP): inport queues of persistent ports and
    /// the `fbp` discovery queue are declared as quorum queues (replicated
    /// over a cluster's nodes). Off by default: the original declares
    /// classic queues, and a queue declared both ways is refused (406).
    pub queue_type: QueueType,
    raw: String,
}

/// The type of the queues a participant declares for its durable inports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// What the original declares: no `x-queue-type` argument.
    #[default]
    Classic,
    /// `x-queue-type: quorum`: replicated, survives the loss of a minority
    /// of a cluster's nodes.
    Quorum,
}

/// Query options each scheme understands; any other is refused (a typo
/// must not be dropped silently).
const AMQP_OPTIONS: [&str; 6] = ["heartbeat", "frame_max", "channel_max", "connection_timeout", "auth_mechanism", "queue_type"];
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

/// `%XX` escapes decoded (a URL's user information, vhost); nothing else
/// changes (`+` stays `+`).
pub(crate) fn percent_decode(s: &str) -> String {
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
        let (first, others) = split_addresses(raw.trim());
        let url = url::Url::parse(&first).map_err(|e| bad(&e.to_string()))?;
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
        let port = url.port().unwrap_or(default_port);
        let mut addresses = vec![(host.clone(), port)];
        if !others.is_empty() && !matches!(scheme, Scheme::Amqp { .. }) {
            return Err(bad("several addresses are for AMQP (the nodes of a RabbitMQ cluster); give one"));
        }
        for other in &others {
            let u = url::Url::parse(&format!("{}://{other}", url.scheme())).map_err(|e| bad(&format!("address {other:?}: {e}")))?;
            let h = u.host_str().unwrap_or("");
            if h.is_empty() || u.path().len() > 1 || u.query().is_some() || !u.username().is_empty() {
                return Err(bad(&format!("address {other:?}: host[:port] expected (credentials, vhost and options go with the first)")));
            }
            addresses.push((h.to_owned(), u.port().unwrap_or(default_port)));
        }
        let mut queue_type = QueueType::Classic;
        let amqp_options = match scheme {
            Scheme::Amqp { .. } => lapin_query(&first)
                .parse::<lapin::uri::AMQPUri>()
                .map_err(|e| bad(&format!("AMQP options: {e}")))?
                .query,
            _ => Default::default(),
        };
        for (k, v) in url.query_pairs() {
            if k == "heartbeat" {
                let n = v.parse::<u16>().map_err(|_| bad(&format!("heartbeat={v:?}: whole seconds, 0-65535, expected")))?;
                heartbeat = Some(n);
            } else if k == "queue_type" {
                queue_type = match v.as_ref() {
                    "classic" => QueueType::Classic,
                    "quorum" => QueueType::Quorum,
                    _ => return Err(bad(&format!("queue_type={v:?}: classic or quorum expected"))),
                };
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
            addresses,
            queue_type,
            scheme,
            port,
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

/// The authority of `scheme://authority/...`: its byte range in `raw`.
fn authority_range(raw: &str) -> Option<(usize, usize)> {
    let start = raw.find("://")? + 3;
    let end = raw[start..].find(['/', '?', '#']).map_or(raw.len(), |i| start + i);
    Some((start, end))
}

/// `scheme://[userinfo@]h1[:p1],h2[:p2]/rest` -> the URL with the first
/// address only, and the other addresses (`h2[:p2]`, ...).
fn split_addresses(raw: &str) -> (String, Vec<String>) {
    let Some((start, end)) = authority_range(raw) else { return (raw.to_owned(), vec![]) };
    let authority = &raw[start..end];
    let hosts_at = authority.rfind('@').map_or(0, |i| i + 1);
    let mut hosts = authority[hosts_at..].split(',');
    let first = hosts.next().unwrap_or("");
    let others: Vec<String> = hosts.map(str::to_owned).collect();
    if others.is_empty() {
        return (raw.to_owned(), vec![]);
    }
    (format!("{}{}{first}{}", &raw[..start], &authority[..hosts_at], &raw[end..]), others)
}

/// The query keys lapin's URI parser reads (ours, `queue_type`, removed).
fn lapin_query(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_owned(),
        Some((base, query)) => {
            let kept: Vec<&str> = query.split('&').filter(|kv| !kv.starts_with("queue_type=") && *kv != "queue_type").collect();
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
    }
}

/// Hide the password of a URL so it can be logged: whatever follows the
/// first `:` of the user information (before the last `@` of the
/// authority) becomes `***`. Textual, so it works on URLs that do not
/// parse and on address lists too.
pub fn redact(raw: &str) -> String {
    let Some((start, end)) = authority_range(raw) else { return raw.to_owned() };
    let authority = &raw[start..end];
    let Some(at) = authority.rfind('@') else { return raw.to_owned() };
    let Some(colon) = authority[..at].find(':') else { return raw.to_owned() };
    format!("{}***{}", &raw[..start + colon + 1], &raw[start + at..])
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
    fn several_addresses_for_a_cluster() {
        let u = BrokerUrl::parse("amqp://u:p%40ss@n1:5701,n2:5702,[::1]/v?heartbeat=5&queue_type=quorum").unwrap();
        assert_eq!(u.addresses, vec![("n1".into(), 5701), ("n2".into(), 5702), ("[::1]".into(), 5672)]);
        assert_eq!((u.host.as_str(), u.port, u.vhost.as_str(), u.heartbeat), ("n1", 5701, "v", Some(5)));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.queue_type, QueueType::Quorum);
        assert_eq!(u.redacted(), "amqp://u:***@n1:5701,n2:5702,[::1]/v?heartbeat=5&queue_type=quorum");
        let one = BrokerUrl::parse("amqp://h").unwrap();
        assert_eq!((one.addresses, one.queue_type), (vec![("h".into(), 5672)], QueueType::Classic));
        for bad in ["mqtt://a,b", "amqp://a,", "amqp://a,b:x", "amqp://h?queue_type=stream", "amqp://a,b?x=1"] {
            assert!(matches!(BrokerUrl::parse(bad), Err(Error::InvalidUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn redaction_is_textual() {
        assert_eq!(redact("amqp://guest:secret@localhost:5672/"), "amqp://guest:***@localhost:5672/");
        assert_eq!(redact("amqp://user@h"), "amqp://user@h");
        assert_eq!(redact("amqp://h/x@y:z"), "amqp://h/x@y:z");
        assert_eq!(redact("amqp://u:a@b@h"), "amqp://u:***@h", "the last @ ends the user information");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("mqtt://u:p@h1,h2?qos=1"), "mqtt://u:***@h1,h2?qos=1");
    }

    #[test]
    fn explicit_wins() {
        assert_eq!(resolve(Some("mqtt://a")), "mqtt://a");
    }
}
