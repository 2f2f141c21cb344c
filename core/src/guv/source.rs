//! Queue depth on AMQP: `ready` from a passive declare (exact, now), plus
//! in-flight (unacked) messages and the publish count from the RabbitMQ
//! management API when it is reachable. The management API lags about
//! 5 s, so `ready` always comes from the passive declare.

use std::sync::Arc;
use std::time::Duration;

use crate::transport::Transport;

use super::http;

/// One poll of one role's queues.
#[derive(Debug, Clone, Default)]
pub struct Depth {
    pub ready: u64,
    /// `None` when the management API cannot be asked.
    pub unacked: Option<u64>,
    /// Messages ever published to the queues (management API), for rates.
    pub published: Option<u64>,
}

/// The management API base for a broker URL: `GUV_MANAGEMENT_URL`, else
/// the broker's host on port 15672 with its credentials (guest/guest when
/// none are given).
pub fn management_url(broker: &str) -> Option<String> {
    if let Ok(m) = std::env::var("GUV_MANAGEMENT_URL") {
        if !m.trim().is_empty() {
            return Some(m.trim_end_matches('/').to_string());
        }
    }
    let u = url::Url::parse(broker).ok()?;
    if u.scheme() != "amqp" {
        return None;
    }
    let user = if u.username().is_empty() { "guest" } else { u.username() };
    let pass = u.password().unwrap_or(if u.username().is_empty() { "guest" } else { "" });
    Some(format!("http://{user}:{pass}@{}:15672", u.host_str()?))
}

fn vhost(broker: &str) -> String {
    let v = url::Url::parse(broker).ok().map(|u| u.path().trim_start_matches('/').to_string()).unwrap_or_default();
    if v.is_empty() {
        "%2F".into()
    } else {
        v
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Depth of `queues` (summed). A missing queue is an error for this role.
pub async fn depth(t: &Arc<dyn Transport>, broker: &str, management: Option<&str>, queues: &[String]) -> Result<Depth, String> {
    let mut d = Depth::default();
    for q in queues {
        match t.queue_depth(q).await {
            Ok(Some(n)) => d.ready += n,
            Ok(None) => return Err(format!("queue {q:?} does not exist (or the broker cannot tell its depth)")),
            Err(e) => return Err(format!("queue {q:?}: {e}")),
        }
    }
    if let Some(m) = management {
        let mut unacked = 0u64;
        let mut published = 0u64;
        let mut ok = true;
        for q in queues {
            let url = format!("{m}/api/queues/{}/{}", vhost(broker), enc(q));
            match http::request("GET", &url, &[], None, Duration::from_secs(2)).await {
                Ok(r) if r.status == 200 => {
                    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                    unacked += v["messages_unacknowledged"].as_u64().unwrap_or(0);
                    published += v["message_stats"]["publish"].as_u64().unwrap_or(0);
                }
                Ok(r) => {
                    tracing::debug!(queue = %q, status = r.status, "management API did not answer for the queue");
                    ok = false;
                }
                Err(e) => {
                    tracing::debug!(queue = %q, error = %e, "management API not reachable");
                    ok = false;
                }
            }
        }
        if ok {
            d.unacked = Some(unacked);
            d.published = Some(published);
        }
    }
    Ok(d)
}
