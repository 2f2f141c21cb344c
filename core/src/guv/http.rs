//! guv's HTTP calls (the RabbitMQ management API, the Kubernetes and
//! Heroku APIs) through one shared `reqwest` client: `http://` and
//! `https://` (rustls; the system's roots plus `MSGFLO_TLS_CA` when set, as
//! for brokers), credentials in the URL sent as basic auth.

use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let mut b = reqwest::Client::builder().user_agent(concat!("msgflo-guv/", env!("CARGO_PKG_VERSION")));
            let files = crate::broker::TlsFiles::from_env().map_err(|e| e.to_string())?;
            if let Some(ca) = files.ca {
                for cert in reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| format!("MSGFLO_TLS_CA: {e}"))? {
                    b = b.add_root_certificate(cert);
                }
            }
            b.build().map_err(|e| format!("HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One request. Errors are text for the caller's log line; an HTTP error
/// status is a [`Response`], not an error.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>, timeout: Duration) -> Result<Response, String> {
    let mut u = url::Url::parse(url).map_err(|e| format!("bad URL {}: {e}", crate::broker::redact(url)))?;
    let shown = crate::broker::redact(url);
    let decode = crate::broker::percent_decode;
    let user = (!u.username().is_empty()).then(|| (decode(u.username()), u.password().map(decode)));
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| format!("{method}: {e}"))?;
    let mut req = client()?.request(method.clone(), u).timeout(timeout);
    if let Some((name, password)) = user {
        req = req.basic_auth(name, password);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let resp = req.send().await.map_err(|e| describe(&method, &shown, e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| describe(&method, &shown, e))?;
    Ok(Response { status, body })
}

/// The error and its causes, without the URL (it may hold a password;
/// the caller's `url` is redacted).
fn describe(method: &reqwest::Method, url: &str, e: reqwest::Error) -> String {
    use std::error::Error;
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let top = if e.is_timeout() { "no answer in time".to_owned() } else { e.without_url().to_string() };
    std::iter::once(top).chain(causes).fold(format!("{method} {url}"), |acc, c| format!("{acc}: {c}"))
}
