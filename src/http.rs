//! HTTP on the WebSocket port: the upgrade on `/` and `/ws`, `/healthz`, `/readyz`,
//! `/metrics`, and optional static files (the demo frontend).

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::admission::Ticket;
use crate::app::App;
use crate::bus::pg_probe;

type Body = Full<Bytes>;
/// The connection's admission ticket, handed from the HTTP connection to the session.
pub type Slot = Arc<Mutex<Option<Ticket>>>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub async fn handle(
    req: Request<Incoming>,
    state: Arc<App>,
    peer: std::net::SocketAddr,
    slot: Slot,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/" | "/ws") if is_upgrade(&req) => upgrade(req, state, peer, slot),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if ready(&state).await {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            crate::gauges::refresh(&state);
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET | &Method::HEAD, _) => match &state.config.static_dir {
            Some(dir) => static_file(dir, &path).await,
            None if path == "/" => text(StatusCode::OK, "pgchat: connect a WebSocket to /ws\n"),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    })
}

/// Longest a pool ping may take before `/readyz` says 503: well under the 1 s a probe
/// of an orchestrator is commonly allowed, well over a healthy round trip.
const READY_PING_DEADLINE: Duration = Duration::from_millis(800);
/// The LISTEN connection must have answered more recently than this: a probe is due
/// every interval and may take up to its deadline.
const READY_LISTEN_AGE: Duration = Duration::from_secs(
    pg_probe::PROBE_INTERVAL.as_secs() + pg_probe::PROBE_DEADLINE.as_secs() + 1,
);

/// Ready when LISTEN is established and answered recently, and a pooled connection
/// answers within [`READY_PING_DEADLINE`]. Never waits longer than that: when unsure, not
/// ready (a hung database must not hang the orchestrator's probe too).
async fn ready(state: &App) -> bool {
    let bus = &state.bus;
    if !bus.is_connected() || !bus.alive.within(READY_LISTEN_AGE) {
        return false;
    }
    let deadline = tokio::time::Instant::now() + READY_PING_DEADLINE;
    let Ok(Ok(client)) = tokio::time::timeout_at(deadline, state.db.client()).await else {
        return false;
    };
    match tokio::time::timeout_at(deadline, client.simple_query("")).await {
        Ok(answer) => answer.is_ok(),
        Err(_) => {
            // Likely dead (its peer gone without a word): keep it from the next user action,
            // which would otherwise wait for the TCP user timeout to fail it.
            drop(deadpool_postgres::Object::take(client));
            false
        }
    }
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// The token may come with the upgrade: `Authorization: Bearer …` or `?token=…`.
fn upgrade_token(req: &Request<Incoming>) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().to_string());
        }
    }
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the connection in a task of its own, so the task holds only the session's
/// state: the upgrade's (two stream types, handshake futures) would otherwise be laid
/// out in every connection's task for its whole life, more than doubling it.
fn spawn_session<S>(
    io: S,
    fd: Option<std::os::fd::RawFd>,
    early_bytes: Vec<u8>,
    state: Arc<App>,
    token: Option<String>,
    ticket: Option<Ticket>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tasks = state.tasks.clone();
    tasks.spawn(crate::session::Session::new(io, fd, early_bytes, state, ticket).run(token));
}

fn upgrade(
    mut req: Request<Incoming>,
    state: Arc<App>,
    peer: std::net::SocketAddr,
    slot: Slot,
) -> Response<Body> {
    // RFC 6455 §4.4: the one version spoken here, advertised on refusal.
    let version = req.headers().get(header::SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes().trim_ascii() != b"13") {
        let mut r = text(StatusCode::UPGRADE_REQUIRED, "websocket version 13 only\n");
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    if let Some(allowed) = state.config.allowed_origins() {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        // Browsers always send Origin; other clients may not, and are not CSRF vectors.
        if origin.is_some_and(|o| !allowed.iter().any(|a| a == o)) {
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let key = match req.headers().get(header::SEC_WEBSOCKET_KEY) {
        Some(k) => derive_accept_key(k.as_bytes()),
        None => return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"),
    };
    let token = upgrade_token(&req);
    let mut ticket = slot.lock().unwrap().take();
    if let Some(ticket) = ticket.as_mut() {
        if let Err(refusal) = forwarded_for(&req, &state, peer, ticket) {
            return text(StatusCode::SERVICE_UNAVAILABLE, refusal_text(refusal));
        }
    }
    // Only the upgrade handle goes into the connection's task: the request (headers
    // and all) is dropped now instead of living as long as the socket.
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
        };
        // Unwrap hyper's boxed IO back into the TcpStream when possible: one less
        // allocation and indirection per socket.
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // hyper's leftover read buffer is a view of its whole 8 KiB buffer: copy
                // out what is in it and let the buffer go, or it lives as long as the socket.
                let early_bytes = parts.read_buf.to_vec();
                drop(parts.read_buf);
                let stream = parts.io.into_inner();
                let fd = Some(std::os::fd::AsRawFd::as_raw_fd(&stream));
                spawn_session(stream, fd, early_bytes, state, token, ticket);
            }
            Err(upgraded) => {
                spawn_session(
                    TokioIo::new(upgraded),
                    None,
                    Vec::new(),
                    state,
                    token,
                    ticket,
                );
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&key).expect("base64 is a valid header"),
    );
    r
}

/// Behind a trusted proxy, the upgrade is counted against the client's address from
/// `X-Forwarded-For` (a WebSocket connection carries one client; a keep-alive
/// connection of the proxy may carry many, so plain requests are not re-attributed).
fn forwarded_for(
    req: &Request<Incoming>,
    state: &App,
    peer: std::net::SocketAddr,
    ticket: &mut Ticket,
) -> Result<(), crate::admission::Refusal> {
    let admission = &state.admission;
    if !admission.is_trusted_proxy(peer.ip()) {
        return Ok(());
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = admission.trusted_proxies().client_ip(peer.ip(), forwarded);
    ticket.forwarded_for(client)
}

fn refusal_text(refusal: crate::admission::Refusal) -> &'static str {
    match refusal {
        crate::admission::Refusal::PerIpCap => "too many connections from this address\n",
        crate::admission::Refusal::UnauthenticatedCap => "server busy, try again later\n",
    }
}

/// Serves a file under `dir`; `/` is `index.html`. Paths that climb out are refused.
async fn static_file(dir: &Path, path: &str) -> Response<Body> {
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() {
        "index.html"
    } else {
        relative
    };
    let rel = PathBuf::from(percent_decode(relative));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let full = dir.join(&rel);
    match tokio::fs::read(&full).await {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&full)),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(_) => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_query_tokens() {
        assert_eq!(percent_decode("a%2Eb"), "a.b");
        assert_eq!(percent_decode("abc"), "abc");
        assert_eq!(percent_decode("x%zz"), "x%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
