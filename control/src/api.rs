//! The HTTP API and `/metrics`, served by one control thread.
//!
//! Routing is a pure function from [`ApiRequest`] to [`ApiResponse`] so that
//! it is unit-tested without sockets or DPDK; [`serve`] only moves requests
//! between `tiny_http` and [`handle`]. The control thread runs on the main
//! lcore (never a worker's) and only takes the policy store's lock, which the
//! workers never touch: they read published snapshots.
//!
//! The contract is `docs/openapi.json`, served at `/api/v1/openapi.json` and
//! checked against this router by the tests.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::config::{parse_one_eroute, parse_one_sa, ConfigError};
use crate::live::Live;
use crate::store::{PolicyStore, StoreError};

/// The OpenAPI document (the API's contract).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// What the control thread shares with the rest of the process.
pub struct ControlState<'a> {
    pub store: Mutex<PolicyStore>,
    /// `None` before the data plane runs (unit tests): live endpoints answer 503.
    pub live: Option<Live<'a>>,
    pub token: Option<Zeroizing<String>>,
}

impl ControlState<'_> {
    pub fn store(&self) -> MutexGuard<'_, PolicyStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request as the router sees it.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A response: status, content type and body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra headers (`Allow`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiResponse {
    fn json<T: Serialize>(status: u16, v: &T) -> ApiResponse {
        let mut body = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
        body.push('\n');
        ApiResponse { status, content_type: "application/json", body, headers: Vec::new() }
    }

    /// A JSON error: `{"error": <kind>, "reason": ..., "field": ...}`.
    pub fn error(status: u16, reason: impl Into<String>, field: Option<String>) -> ApiResponse {
        let kind = match status {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            503 => "unavailable",
            _ => "error",
        };
        let mut v = json!({ "error": kind, "reason": reason.into() });
        if let Some(f) = field {
            v["field"] = Value::String(f);
        }
        ApiResponse::json(status, &v)
    }

    fn with_header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
}

impl From<StoreError> for ApiResponse {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid { field, reason } => ApiResponse::error(400, reason, field),
            StoreError::NotFound(r) => ApiResponse::error(404, r, None),
            StoreError::Conflict(r) => ApiResponse::error(409, r, None),
            StoreError::Unavailable(r) => ApiResponse::error(503, r, None),
        }
    }
}

/// A config-validation error on API input: 400, naming the field.
fn input_error(e: ConfigError, kind: &str) -> ApiResponse {
    let prefix = format!("{kind}.");
    let field = e.field.strip_prefix(&prefix).map(str::to_string).or((!e.field.is_empty()).then(|| e.field.clone()));
    ApiResponse::error(400, e.reason, field)
}

/// Every route: (method, path pattern). `{name}` matches one segment.
/// The OpenAPI test checks this list against `docs/openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/sas"),
    ("POST", "/api/v1/sas"),
    ("GET", "/api/v1/sas/{name}"),
    ("PUT", "/api/v1/sas/{name}"),
    ("DELETE", "/api/v1/sas/{name}"),
    ("GET", "/api/v1/eroutes"),
    ("POST", "/api/v1/eroutes"),
    ("GET", "/api/v1/eroutes/{name}"),
    ("PUT", "/api/v1/eroutes/{name}"),
    ("DELETE", "/api/v1/eroutes/{name}"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/ports"),
    ("GET", "/api/v1/pmtu"),
    ("GET", "/metrics"),
];

/// Match `path` against a pattern; returns the `{name}` segment if any.
fn matches(pattern: &str, path: &str) -> Option<Option<String>> {
    let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    if p.len() != s.len() {
        return None;
    }
    let mut name = None;
    for (a, b) in p.iter().zip(&s) {
        if *a == "{name}" {
            if b.is_empty() {
                return None;
            }
            name = Some(percent_decode(b)?);
        } else if a != b {
            return None;
        }
    }
    Some(name)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Compare without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 401 without credentials, 403 with wrong ones, `None` when allowed.
fn check_auth(state: &ControlState<'_>, req: &ApiRequest) -> Option<ApiResponse> {
    let token = state.token.as_ref()?;
    let challenge = |r: ApiResponse| r.with_header("WWW-Authenticate", "Bearer realm=\"espgw\"");
    match req.authorization.as_deref().map(str::trim) {
        None => {
            Some(challenge(ApiResponse::error(401, "this API needs a bearer token (Authorization: Bearer ...)", None)))
        }
        Some(h) => match h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")) {
            None => Some(challenge(ApiResponse::error(401, "only bearer tokens are accepted", None))),
            Some(t) if constant_time_eq(t.trim().as_bytes(), token.as_bytes()) => None,
            Some(_) => Some(ApiResponse::error(403, "the bearer token is not valid", None)),
        },
    }
}

/// The request body as JSON.
fn body_json(req: &ApiRequest) -> Result<Value, ApiResponse> {
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiResponse::error(400, format!("the body is not valid JSON: {e}"), None))
}

fn need_json(req: &ApiRequest) -> Option<ApiResponse> {
    match req.content_type.as_deref() {
        Some(ct) if !ct.trim_start().to_ascii_lowercase().starts_with("application/json") => {
            Some(ApiResponse::error(415, format!("send application/json, not {ct:?}"), None))
        }
        _ => None,
    }
}

fn query_flag(query: &str, key: &str) -> bool {
    query.split('&').any(|kv| kv == key || kv == format!("{key}=true") || kv == format!("{key}=1"))
}

fn live<'s>(state: &'s ControlState<'_>) -> Result<&'s Live<'s>, ApiResponse> {
    state.live.as_ref().ok_or_else(|| ApiResponse::error(503, "the data plane is not running", None))
}

/// Route one request.
pub fn handle(state: &ControlState<'_>, req: &ApiRequest) -> ApiResponse {
    if let Some(denied) = check_auth(state, req) {
        return denied;
    }
    let mut allowed = Vec::new();
    let mut route = None;
    for (m, p) in ROUTES {
        if let Some(name) = matches(p, &req.path) {
            allowed.push(*m);
            if *m == req.method || (req.method == "HEAD" && *m == "GET") {
                route = Some((*p, name));
            }
        }
    }
    let Some((pattern, name)) = route else {
        if allowed.is_empty() {
            return ApiResponse::error(404, format!("no such endpoint: {}", req.path), None);
        }
        return ApiResponse::error(405, format!("{} is not allowed on {}", req.method, req.path), None)
            .with_header("Allow", allowed.join(", "));
    };
    if matches!(req.method.as_str(), "POST" | "PUT") {
        if let Some(r) = need_json(req) {
            return r;
        }
    }
    let name = name.unwrap_or_default();
    let result = match (req.method.as_str(), pattern) {
        (_, "/api/v1/health") => health(state),
        (_, "/api/v1/openapi.json") => Ok(ApiResponse {
            status: 200,
            content_type: "application/json",
            body: OPENAPI.to_string(),
            headers: Vec::new(),
        }),
        ("GET", "/api/v1/sas") => Ok(ApiResponse::json(200, &state.store().sas())),
        ("GET", "/api/v1/sas/{name}") => {
            state.store().sa(&name).map(|s| ApiResponse::json(200, &s)).map_err(Into::into)
        }
        ("POST", "/api/v1/sas") => sa_write(state, req, None),
        ("PUT", "/api/v1/sas/{name}") => sa_write(state, req, Some(&name)),
        ("DELETE", "/api/v1/sas/{name}") => {
            let force = query_flag(&req.query, "force");
            state
                .store()
                .delete_sa(&name, force)
                .map(|trapped| ApiResponse::json(200, &json!({ "deleted": name, "eroutes_trapped": trapped })))
                .map_err(Into::into)
        }
        ("GET", "/api/v1/eroutes") => Ok(ApiResponse::json(200, &state.store().eroutes())),
        ("GET", "/api/v1/eroutes/{name}") => {
            state.store().eroute(&name).map(|e| ApiResponse::json(200, &e)).map_err(Into::into)
        }
        ("POST", "/api/v1/eroutes") => eroute_write(state, req, None),
        ("PUT", "/api/v1/eroutes/{name}") => eroute_write(state, req, Some(&name)),
        ("DELETE", "/api/v1/eroutes/{name}") => state
            .store()
            .delete_eroute(&name)
            .map(|()| ApiResponse::json(200, &json!({ "deleted": name })))
            .map_err(Into::into),
        ("GET", "/api/v1/stats") => stats(state),
        ("GET", "/api/v1/ports") => live(state).map(|l| ApiResponse::json(200, &l.ports())),
        ("GET", "/api/v1/pmtu") => live(state).map(|l| {
            let sas = state.store().sas();
            ApiResponse::json(200, &l.pmtu(&sas))
        }),
        ("GET", "/metrics") => live(state).map(|l| {
            let sas = state.store().sas();
            ApiResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::metrics::render(l, &sas),
                headers: Vec::new(),
            }
        }),
        _ => Err(ApiResponse::error(405, "method not allowed", None)),
    };
    result.unwrap_or_else(|e| e)
}

fn health(state: &ControlState<'_>) -> Result<ApiResponse, ApiResponse> {
    let store = state.store();
    let (nsa, ner) = (store.sas().len(), store.eroutes().len());
    drop(store);
    let mut v = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "sas": nsa,
        "eroutes": ner,
    });
    if let Some(l) = &state.live {
        let ports = l.ports();
        let down: Vec<&str> = ports.iter().filter(|p| !p.link_up).map(|p| p.name.as_str()).collect();
        v["uptime_s"] = json!(l.uptime_s());
        v["workers"] = json!(l.workers.len());
        v["links_down"] = json!(down);
        if !down.is_empty() {
            v["status"] = json!("degraded");
        }
    } else {
        v["status"] = json!("starting");
    }
    Ok(ApiResponse::json(200, &v))
}

fn sa_write(state: &ControlState<'_>, req: &ApiRequest, name: Option<&str>) -> Result<ApiResponse, ApiResponse> {
    let spec = parse_one_sa(&body_json(req)?).map_err(|e| input_error(e, "sa"))?;
    let mut store = state.store();
    match name {
        None => store.add_sa(spec).map(|s| ApiResponse::json(201, &s)),
        Some(n) => store.replace_sa(n, spec).map(|s| ApiResponse::json(200, &s)),
    }
    .map_err(Into::into)
}

fn eroute_write(state: &ControlState<'_>, req: &ApiRequest, name: Option<&str>) -> Result<ApiResponse, ApiResponse> {
    let body = body_json(req)?;
    let mut store = state.store();
    let id = match name {
        None => store.next_eroute_id(),
        Some(n) => store.eroute_id(n).ok_or_else(|| ApiResponse::error(404, format!("no eroute named {n:?}"), None))?,
    };
    let spec = {
        let find = |n: &str| store.find_sa(n);
        parse_one_eroute(&body, id, &find).map_err(|e| input_error(e, "eroute"))?
    };
    match name {
        None => store.add_eroute(spec).map(|e| ApiResponse::json(201, &e)),
        Some(n) => store.replace_eroute(n, spec).map(|e| ApiResponse::json(200, &e)),
    }
    .map_err(Into::into)
}

fn stats(state: &ControlState<'_>) -> Result<ApiResponse, ApiResponse> {
    let l = live(state)?;
    let sas = state.store().sas();
    let drops: serde_json::Map<String, Value> =
        l.drops().into_iter().map(|(r, n)| (r.label().into(), n.into())).collect();
    let events: serde_json::Map<String, Value> =
        l.events().into_iter().map(|(e, n)| (e.label().into(), n.into())).collect();
    let sa_counts: Vec<Value> = sas
        .iter()
        .map(|s| {
            json!({
                "name": s.sa.name, "direction": s.sa.direction, "spi": s.sa.spi,
                "packets": s.state.packets, "bytes": s.state.bytes,
                "path_mtu": s.state.path_mtu, "lifetime_used": s.state.lifetime_used,
            })
        })
        .collect();
    Ok(ApiResponse::json(
        200,
        &json!({
            "uptime_s": l.uptime_s(),
            "ports": l.ports(),
            "workers": l.workers(),
            "drops": drops,
            "events": events,
            "sas": sa_counts,
            "mempools": l.pools(),
        }),
    ))
}

/// A running control thread.
pub struct ControlServer<'scope> {
    pub addr: SocketAddr,
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

/// Bind the API's address (before DPDK starts, so a taken address fails fast).
pub fn bind(addr: SocketAddr) -> std::io::Result<tiny_http::Server> {
    tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(format!("cannot listen on {addr}: {e}")))
}

/// Serve on a thread of `scope` until stopped.
pub fn serve<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    server: tiny_http::Server,
    state: &'env ControlState<'_>,
) -> std::io::Result<ControlServer<'scope>> {
    let bound = server.server_addr().to_ip().ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new().name("espgw-control".into()).spawn_scoped(scope, move || {
        while !stop2.load(Ordering::Relaxed) {
            if let Some(l) = &state.live {
                l.sample_load();
            }
            match server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(rq)) => respond(state, rq),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("espgw: control API: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })?;
    Ok(ControlServer { addr: bound, stop, thread })
}

fn respond(state: &ControlState<'_>, mut rq: tiny_http::Request) {
    let header = |name: &str| {
        rq.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.to_string())
    };
    let url = rq.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut req = ApiRequest {
        method: rq.method().as_str().to_ascii_uppercase(),
        path: path.to_string(),
        query: query.to_string(),
        authorization: header("Authorization"),
        content_type: header("Content-Type"),
        body: Vec::new(),
    };
    let too_big = rq.body_length().is_some_and(|n| n > MAX_BODY);
    let resp = if too_big {
        ApiResponse::error(413, format!("the body is larger than {MAX_BODY} bytes"), None)
    } else {
        let mut body = Vec::new();
        match rq.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body) {
            Ok(_) if body.len() > MAX_BODY => {
                ApiResponse::error(413, format!("the body is larger than {MAX_BODY} bytes"), None)
            }
            Ok(_) => {
                req.body = body;
                handle(state, &req)
            }
            Err(e) => ApiResponse::error(400, format!("cannot read the body: {e}"), None),
        }
    };
    let mut r = tiny_http::Response::from_string(if req.method == "HEAD" { String::new() } else { resp.body })
        .with_status_code(resp.status);
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", resp.content_type) {
        r = r.with_header(h);
    }
    for (k, v) in resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k, v.as_bytes()) {
            r = r.with_header(h);
        }
    }
    let _ = rq.respond(r);
}

/// The route pattern a request path falls under (for contract checks).
pub fn route_pattern(method: &str, path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    ROUTES.iter().find(|(m, p)| *m == method && matches(p, path).is_some()).map(|(_, p)| *p)
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
