//! The HTTP stack of the control API: hyper (HTTP/1.1) on a tokio
//! current-thread runtime inside the control thread, never on a worker core.
//!
//! What a hostile local client or a web page must not be able to do, and
//! what stops it:
//! - freeze the API with a slow or stalled request: header and body reads
//!   have deadlines ([`HEADER_TIMEOUT`], [`BODY_TIMEOUT`]), and every
//!   connection is its own future, so one slow peer delays nobody else;
//! - exhaust memory with a huge header or body: headers are capped by
//!   hyper's read buffer ([`MAX_HEADER_BYTES`], answered 431), bodies at
//!   [`api::MAX_BODY`] (413), and authorisation is decided from the headers
//!   before a byte of body is read;
//! - take the API down with many idle connections: at most
//!   [`MAX_CONNECTIONS`] are served, later ones get a 503 and are closed,
//!   idle ones time out, and running out of file descriptors (EMFILE) backs
//!   off instead of failing;
//! - drive the API from a browser (CSRF, DNS rebinding): a request with an
//!   `Origin` header, or (on TCP) a `Host` that is not the listener's, is
//!   refused with 403; writes must be `application/json` (a form post cannot
//!   be), and TCP always needs the bearer token.
//!
//! The default listener is a Unix socket (mode 0660, group configurable), as
//! strongSwan's vici and VPP's API socket: who may connect is decided by
//! file permissions, and the peer's uid goes into the audit log.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::api::{self, ApiRequest, ApiResponse, ControlState, MAX_BODY};
use crate::config::ControlConfig;

/// A request's headers must arrive within this time (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The body must arrive within this time once the headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The header block (request line included) may be at most this large.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once; more are refused with 503.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection that has been silent this long between requests is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API listens, bound before DPDK starts so that a taken address
/// or a bad socket path fails fast.
pub struct Bound {
    tcp: Option<(std::net::TcpListener, SocketAddr)>,
    unix: Option<(std::os::unix::net::UnixListener, PathBuf)>,
}

impl Bound {
    /// The TCP address, if any (port 0 in the config resolves here).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|(_, a)| *a)
    }
    pub fn socket_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, p)| p.as_path())
    }
}

/// Bind the configured listeners.
pub fn bind(cfg: &ControlConfig) -> std::io::Result<Bound> {
    let tcp = match cfg.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            l.set_nonblocking(true)?;
            let a = l.local_addr()?;
            Some((l, a))
        }
        None => None,
    };
    let unix = match &cfg.socket {
        Some(path) => Some((bind_unix(path, cfg.socket_group)?, path.clone())),
        None => None,
    };
    // Many connections need many descriptors: raise the soft limit to the hard one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    Ok(Bound { tcp, unix })
}

fn bind_unix(path: &Path, group: Option<u32>) -> std::io::Result<std::os::unix::net::UnixListener> {
    let ctx = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ctx("cannot create the folder of", e))?;
    }
    if path.exists() {
        // A socket left by a gateway that died can go; one that answers is in use.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use (another espgw runs?)", path.display()),
            ));
        }
        std::fs::remove_file(path).map_err(|e| ctx("cannot remove the stale socket", e))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| ctx("cannot listen on", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| ctx("cannot chmod", e))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| ctx("cannot chown", e))?;
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Who sent a request, for the audit log and for the TCP rules.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A Unix-socket client, by its uid (`SO_PEERCRED`).
    Unix { uid: Option<u32> },
    /// A TCP client; `listener` is the address it connected to.
    Tcp { addr: SocketAddr, listener: SocketAddr },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { uid: Some(u) } => write!(f, "uid {u} (unix socket)"),
            Peer::Unix { uid: None } => write!(f, "unix socket"),
            Peer::Tcp { addr, .. } => write!(f, "{addr} (token)"),
        }
    }
}

/// A running control thread.
pub struct ControlServer<'scope> {
    stop: Arc<AtomicBool>,
    thread: std::thread::ScopedJoinHandle<'scope, ()>,
}

impl ControlServer<'_> {
    /// Stop serving and join the thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// Serve on a thread of `scope` until stopped.
pub fn serve<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    bound: Bound,
    state: &'env ControlState<'_>,
) -> std::io::Result<ControlServer<'scope>> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name("espgw-control".into()).spawn_scoped(scope, move || {
        rt.block_on(run(bound, state, &stop2));
    })?;
    Ok(ControlServer { stop, thread })
}

type ConnFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The accept loop and every connection, polled together on one thread (the
/// connections borrow the control state; nothing is spawned).
async fn run(bound: Bound, state: &ControlState<'_>, stop: &AtomicBool) {
    let tcp = bound.tcp.and_then(|(l, a)| tokio::net::TcpListener::from_std(l).ok().map(|l| (l, a)));
    let (unix, socket_path) = match bound.unix {
        Some((l, p)) => (tokio::net::UnixListener::from_std(l).ok(), Some(p)),
        None => (None, None),
    };
    let open = AtomicUsize::new(0);
    let mut conns: FuturesUnordered<ConnFuture<'_>> = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut backoff_until: Option<Instant> = None;
    let mut telemetry = crate::telemetry::attach();
    loop {
        let accepting = backoff_until.is_none_or(|t| Instant::now() >= t);
        tokio::select! {
            r = async { tcp.as_ref().expect("guarded").0.accept().await }, if tcp.is_some() && accepting => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let listener = tcp.as_ref().map(|(_, a)| *a).unwrap_or(addr);
                    conns.push(connection(stream, Peer::Tcp { addr, listener }, state, &open));
                }
                Err(e) => backoff_until = Some(accept_failed(e)),
            },
            r = async { unix.as_ref().expect("guarded").accept().await }, if unix.is_some() && accepting => match r {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    conns.push(connection(stream, Peer::Unix { uid }, state, &open));
                }
                Err(e) => backoff_until = Some(accept_failed(e)),
            },
            Some(()) = conns.next(), if !conns.is_empty() => {}
            Some(req) = telemetry.recv() => crate::telemetry::serve(state, req),
            _ = tick.tick() => {
                if let Some(l) = &state.live {
                    l.sample_load();
                }
                if backoff_until.is_some_and(|t| Instant::now() >= t) {
                    backoff_until = None;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    crate::telemetry::detach();
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
}

/// accept() failed: out of descriptors (EMFILE/ENFILE) or a transient
/// error. Back off for a moment instead of spinning or dying; connections
/// being served free descriptors meanwhile.
fn accept_failed(e: std::io::Error) -> Instant {
    tracing::warn!(target: "espgw::api", error = %e, "accept failed; backing off 100 ms");
    Instant::now() + Duration::from_millis(100)
}

/// Serve one connection (or refuse it when too many are open).
fn connection<'a, S>(stream: S, peer: Peer, state: &'a ControlState<'_>, open: &'a AtomicUsize) -> ConnFuture<'a>
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    Box::pin(async move {
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            refuse_busy(stream).await;
            return;
        }
        // Activity: when the last request ended, and how many are running.
        let last = std::cell::Cell::new(Instant::now());
        let running = std::cell::Cell::new(0usize);
        let service = hyper::service::service_fn(|req: Request<Incoming>| {
            let peer = peer.clone();
            let (last, running) = (&last, &running);
            running.set(running.get() + 1);
            // An event stream keeps its connection busy for as long as it lasts.
            let streaming = req.uri().path() == EVENTS_PATH;
            async move {
                let r = answer(state, &peer, req).await;
                if !streaming || r.status() != StatusCode::OK {
                    running.set(running.get() - 1);
                }
                last.set(Instant::now());
                Ok::<_, Infallible>(r)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        // The header deadline covers a request that has started; this watch
        // covers the silence between requests (an idle keep-alive
        // connection, or one that never sends a byte).
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)), if !closing => {
                    if running.get() == 0 && last.get().elapsed() >= IDLE_TIMEOUT {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
        open.fetch_sub(1, Ordering::Relaxed);
    })
}

/// Over the connection cap: a short 503 and close, without reading the request.
async fn refuse_busy<S: AsyncWrite + Unpin>(mut stream: S) {
    let body = "{\"error\":\"unavailable\",\"reason\":\"too many API connections; retry later\"}\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// One request: decided from its headers first (who, from where, what
/// kind of body), then the body is read under its limits and deadline, then
/// the router answers.
async fn answer(state: &ControlState<'_>, peer: &Peer, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let header =
        |name: hyper::header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let mut areq = ApiRequest {
        method: parts.method.as_str().to_ascii_uppercase(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        authorization: header(hyper::header::AUTHORIZATION),
        content_type: header(CONTENT_TYPE),
        body: Vec::new(),
        via_socket: matches!(peer, Peer::Unix { .. }),
    };
    let head = areq.method == "HEAD";
    if let Some(denied) = screen(state, peer, &parts.headers, &areq) {
        return to_hyper(denied, head, true);
    }
    let declared = parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return to_hyper(too_large(), head, true);
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => {
            return to_hyper(ApiResponse::error(408, "the request body did not arrive in time", None), head, true)
        }
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return to_hyper(too_large(), head, true)
        }
        Ok(Err(e)) => return to_hyper(ApiResponse::error(400, format!("cannot read the body: {e}"), None), head, true),
        Ok(Ok(b)) => areq.body = b.to_bytes().to_vec(),
    }
    if areq.path == EVENTS_PATH && areq.method == "GET" {
        return events(state);
    }
    let started = Instant::now();
    let resp = api::handle(state, &areq);
    audit(peer, &areq, &resp, started);
    if resp.status < 300 && matches!(areq.method.as_str(), "POST" | "PUT" | "DELETE" | "PATCH") {
        state.events.publish(
            "config_change",
            serde_json::json!({ "method": areq.method, "path": areq.path, "by": peer.to_string() }),
        );
    }
    to_hyper(resp, head, false)
}

/// The event stream's path (served here, not by the router: it never ends).
pub const EVENTS_PATH: &str = "/api/v1/events";
/// A comment line this often keeps proxies and idle timers from closing it.
const EVENTS_KEEPALIVE: Duration = Duration::from_secs(15);

/// Server-Sent Events: one `data:` line per event, from now on.
fn events(state: &ControlState<'_>) -> Response<Body> {
    use tokio::sync::broadcast::error::RecvError;
    let rx = state.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let text = match tokio::time::timeout(EVENTS_KEEPALIVE, rx.recv()).await {
            Err(_) => ": keepalive\n\n".to_string(),
            Ok(Ok(line)) => format!("data: {line}\n\n"),
            Ok(Err(RecvError::Lagged(n))) => format!("data: {{\"type\":\"lost\",\"count\":{n}}}\n\n"),
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text))), rx))
    });
    let mut resp = Response::new(UnsyncBoxBody::new(StreamBody::new(stream)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Every answer's body: a whole one, or the event stream.
type Body = UnsyncBoxBody<Bytes, Infallible>;

fn too_large() -> ApiResponse {
    ApiResponse::error(413, format!("the body is larger than {MAX_BODY} bytes"), None)
}

/// The checks made on headers alone, before any body is read: browsers
/// (`Origin`), DNS rebinding (`Host` on TCP), authorisation, and the media
/// type of writes.
fn screen(state: &ControlState<'_>, peer: &Peer, headers: &hyper::HeaderMap, req: &ApiRequest) -> Option<ApiResponse> {
    if headers.contains_key(hyper::header::ORIGIN) {
        return Some(ApiResponse::error(
            403,
            "requests from web pages (an Origin header) are refused: use espgwctl or a client without Origin",
            None,
        ));
    }
    if let Peer::Tcp { listener, .. } = peer {
        if let Some(host) = headers.get(hyper::header::HOST) {
            let ok = host.to_str().is_ok_and(|h| host_is_listener(h, *listener));
            if !ok {
                return Some(ApiResponse::error(
                    403,
                    format!("Host {:?} is not this API's address ({listener})", host.to_str().unwrap_or("?")),
                    None,
                ));
            }
        }
    }
    if let Some(denied) = api::check_auth(state, req) {
        return Some(denied);
    }
    if matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        let json = req
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
        if !json {
            return Some(ApiResponse::error(
                415,
                format!(
                    "writes must be application/json, not {}",
                    req.content_type.as_deref().map_or("(none)".to_string(), |c| format!("{c:?}"))
                ),
                None,
            ));
        }
    }
    None
}

/// Does a `Host` header name the listener? Its IP and port (any IP when it
/// listens on all addresses), or `localhost` on loopback: never a DNS name an
/// attacker could point at this machine (DNS rebinding).
pub fn host_is_listener(host: &str, listener: SocketAddr) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((n, _)) if !n.ends_with(']') && n.contains(':') => (host.as_str(), None), // bare IPv6
        Some((n, p)) => (n, Some(p)),
        None => (host.as_str(), None),
    };
    if port.is_some_and(|p| p.parse::<u16>().ok() != Some(listener.port())) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == listener.ip() || listener.ip().is_unspecified(),
        Err(_) => name == "localhost" && (listener.ip().is_loopback() || listener.ip().is_unspecified()),
    }
}

/// One log line per change made through the API (who, what, the answer);
/// never a key: only the method, the path and the status are logged.
fn audit(peer: &Peer, req: &ApiRequest, resp: &ApiResponse, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if matches!(req.method.as_str(), "POST" | "PUT" | "DELETE" | "PATCH") {
        tracing::info!(
            target: "espgw::audit",
            peer = %peer,
            method = %req.method,
            path = %req.path,
            status = resp.status,
            ms = format_args!("{ms:.1}"),
            "api change {}",
            if resp.status < 300 { "applied" } else { "refused" }
        );
    } else {
        tracing::debug!(target: "espgw::api", peer = %peer, method = %req.method, path = %req.path, status = resp.status, "api read");
    }
}

fn to_hyper(r: ApiResponse, head: bool, close: bool) -> Response<Body> {
    let body = if head { Bytes::new() } else { Bytes::from(r.body) };
    let mut resp = Response::new(UnsyncBoxBody::new(Full::new(body)));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    for (k, v) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    if close {
        // A refused request may have left a body unread: do not reuse the connection.
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_must_name_the_listener() {
        let l: SocketAddr = "127.0.0.1:9470".parse().unwrap();
        assert!(host_is_listener("127.0.0.1:9470", l));
        assert!(host_is_listener("localhost:9470", l));
        assert!(host_is_listener("127.0.0.1", l));
        assert!(!host_is_listener("rebind.evil.example:9470", l));
        assert!(!host_is_listener("127.0.0.1:80", l));
        assert!(!host_is_listener("10.0.0.1:9470", l));
        let v6: SocketAddr = "[::1]:9470".parse().unwrap();
        assert!(host_is_listener("[::1]:9470", v6));
        assert!(!host_is_listener("[::2]:9470", v6));
        let any: SocketAddr = "0.0.0.0:9470".parse().unwrap();
        assert!(host_is_listener("127.0.0.1:9470", any));
        assert!(!host_is_listener("evil.example:9470", any));
    }
}
