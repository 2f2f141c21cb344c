//! A very small HTTP/1.1 client and server on tokio, enough for the
//! RabbitMQ management API, the Kubernetes and Heroku APIs (plain `http://`
//! only for now) and the metrics endpoint.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One request; `url` must be `http://` (credentials in the URL become
/// basic auth). Errors are text for the caller's log line.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>, timeout: Duration) -> Result<Response, String> {
    let u = url::Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!("{url}: only http:// is supported by guv's HTTP client so far (put a TLS-terminating proxy in front, e.g. `kubectl proxy`)"));
    }
    let host = u.host_str().ok_or_else(|| format!("{url}: no host"))?.to_string();
    let port = u.port_or_known_default().unwrap_or(80);
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nUser-Agent: msgflo-guv\r\n");
    if !u.username().is_empty() {
        let user = url::form_urlencoded::parse(u.username().as_bytes()).map(|(k, v)| format!("{k}{v}")).collect::<String>();
        let pass = u.password().unwrap_or("");
        head.push_str(&format!("Authorization: Basic {}\r\n", b64(format!("{user}:{pass}").as_bytes())));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let work = async {
        let mut s = TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("{method} {url}: connect: {e}"))?;
        s.write_all(head.as_bytes()).await.map_err(|e| format!("{method} {url}: {e}"))?;
        s.write_all(body.as_bytes()).await.map_err(|e| format!("{method} {url}: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| format!("{method} {url}: {e}"))?;
        parse_response(&buf).ok_or_else(|| format!("{method} {url}: not an HTTP response"))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("{method} {url}: no answer within {timeout:?}"))?
}

fn parse_response(buf: &[u8]) -> Option<Response> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    let raw = &buf[split + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        let mut rest = raw;
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[eol + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        out
    } else {
        raw.to_vec()
    };
    Some(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
}

/// A request as a server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Read one request from `s` (headers and a Content-Length body).
pub async fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let split = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Request { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// Write a whole response and close.
pub async fn respond(s: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        _ => "Status",
    };
    let msg = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = s.write_all(msg.as_bytes()).await;
    let _ = s.shutdown().await;
}
