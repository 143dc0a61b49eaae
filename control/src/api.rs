//! The HTTP API and `/metrics`, served by one control thread.
//!
//! Routing is a pure function from [`ApiRequest`] to [`ApiResponse`] so that
//! it is unit-tested without sockets or DPDK; [`crate::server`] only moves
//! requests between hyper and [`handle`] (and decides, from headers, what may
//! not reach it). The control thread runs on the main lcore (never a
//! worker's) and only takes the policy store's lock, which the workers never
//! touch: they read published snapshots.
//!
//! The contract is `docs/openapi.json`, served at `/api/v1/openapi.json` and
//! checked against this router by the tests.

use std::sync::{Mutex, MutexGuard};

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
    /// The event stream (`GET /api/v1/events`).
    pub events: crate::events::EventBus,
    /// `None` before the data plane runs (unit tests): live endpoints answer 503.
    pub live: Option<Live<'a>>,
    pub token: Option<Zeroizing<String>>,
    /// What `/metrics` exports per SA.
    pub metrics: crate::config::MetricsConfig,
    /// The IKE daemon (`None` without `[[connection]]`). The control loop
    /// polls it every 20 ms; `/api/v1/ike` reads and commands it. Lock
    /// order: this, then the store (the daemon writes SAs into the store).
    pub ike: Option<Mutex<crate::ike::daemon::Daemon>>,
}

impl crate::ike::daemon::Control for ControlState<'_> {
    fn store(&self) -> MutexGuard<'_, PolicyStore> {
        ControlState::store(self)
    }
    fn events(&self) -> &crate::events::EventBus {
        &self.events
    }
}

impl ControlState<'_> {
    pub fn store(&self) -> MutexGuard<'_, PolicyStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The IKE daemon, locked, if there is one.
    pub fn ike(&self) -> Option<MutexGuard<'_, crate::ike::daemon::Daemon>> {
        self.ike.as_ref().map(|d| d.lock().unwrap_or_else(|p| p.into_inner()))
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
    /// It came over the control socket, whose file permissions already
    /// decided who may connect: no token needed (as with strongSwan's vici).
    pub via_socket: bool,
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
            408 => "request_timeout",
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
    ("POST", "/api/v1/sas/{name}/rekey"),
    ("GET", "/api/v1/eroutes"),
    ("POST", "/api/v1/eroutes"),
    ("GET", "/api/v1/eroutes/{name}"),
    ("PUT", "/api/v1/eroutes/{name}"),
    ("DELETE", "/api/v1/eroutes/{name}"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/ports"),
    ("GET", "/api/v1/pmtu"),
    ("GET", "/api/v1/ike"),
    ("POST", "/api/v1/ike/{name}/initiate"),
    ("POST", "/api/v1/ike/{name}/terminate"),
    ("POST", "/api/v1/ike/{name}/rekey"),
    // Served by the HTTP layer (an endless stream): server.rs.
    ("GET", "/api/v1/events"),
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
pub fn check_auth(state: &ControlState<'_>, req: &ApiRequest) -> Option<ApiResponse> {
    if req.via_socket {
        return None;
    }
    let token = state.token.as_ref()?;
    let challenge = |r: ApiResponse| r.with_header("WWW-Authenticate", "Bearer realm=\"espgw\"");
    match req.authorization.as_deref().map(str::trim) {
        None => {
            Some(challenge(ApiResponse::error(401, "this API needs a bearer token (Authorization: Bearer ...)", None)))
        }
        // RFC 6750 §2.1: "Bearer" 1*SP token; the scheme is case-blind (RFC 7235 §2.1).
        Some(h) => match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => {
                if constant_time_eq(t.trim().as_bytes(), token.as_bytes()) {
                    None
                } else {
                    Some(ApiResponse::error(403, "the bearer token is not valid", None))
                }
            }
            _ => Some(challenge(ApiResponse::error(401, "only bearer tokens are accepted", None))),
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

/// A query parameter's (percent-decoded) value.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(&v.replace('+', " "))).flatten()
    })
}

/// Page size when the client names none, and the largest it may ask for.
pub const DEFAULT_PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;

/// `limit` and `cursor` of a list request.
fn paging(query: &str) -> Result<(usize, Option<String>), ApiResponse> {
    let limit = match query_value(query, "limit") {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(ApiResponse::error(400, format!("limit must be 1..={MAX_PAGE}"), Some("limit".into()))),
        },
    };
    Ok((limit, query_value(query, "cursor")))
}

/// Encode a name for a query string.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A list answer: the page as a JSON array; when more follow, a
/// `Link: <...>; rel="next"` header (RFC 8288) whose cursor is the last name.
fn page_answer<T: Serialize>(
    path: &str,
    query: &str,
    limit: usize,
    page: &[T],
    last: Option<&str>,
    more: bool,
) -> ApiResponse {
    let mut r = ApiResponse::json(200, &page);
    if let (true, Some(last)) = (more, last) {
        let mut q: Vec<String> = query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("cursor=") && !kv.starts_with("limit="))
            .map(String::from)
            .collect();
        q.push(format!("limit={limit}"));
        q.push(format!("cursor={}", percent_encode(last)));
        r = r.with_header("Link", format!("<{path}?{}>; rel=\"next\"", q.join("&")));
    }
    r
}

fn list_sas(state: &ControlState<'_>, req: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
    let (limit, cursor) = paging(&req.query)?;
    let name = query_value(&req.query, "name");
    let spi = match query_value(&req.query, "spi") {
        None => None,
        Some(v) => Some(crate::config::parse_u32_field(&v).ok_or_else(|| {
            ApiResponse::error(400, format!("{v:?} is not an SPI (decimal or 0x-hex)"), Some("spi".into()))
        })?),
    };
    let peer = match query_value(&req.query, "peer") {
        None => None,
        Some(v) => Some(
            v.parse::<std::net::IpAddr>()
                .map_err(|_| ApiResponse::error(400, format!("{v:?} is not an IP address"), Some("peer".into())))?,
        ),
    };
    let direction = query_value(&req.query, "direction");
    if direction.as_deref().is_some_and(|d| d != "in" && d != "out") {
        return Err(ApiResponse::error(400, "direction is \"in\" or \"out\"", Some("direction".into())));
    }
    let (page, more) = state.store().sas_page(cursor.as_deref(), limit, |v| {
        name.as_deref().is_none_or(|n| v.name.contains(n))
            && spi.is_none_or(|s| v.spi == s)
            && peer.is_none_or(|p| v.remote == Some(p) || v.local == Some(p))
            && direction.as_deref().is_none_or(|d| v.direction == d)
    });
    let last = page.last().map(|s| s.sa.name.clone());
    Ok(page_answer(&req.path, &req.query, limit, &page, last.as_deref(), more))
}

fn list_eroutes(state: &ControlState<'_>, req: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
    let (limit, cursor) = paging(&req.query)?;
    let name = query_value(&req.query, "name");
    let sa = query_value(&req.query, "sa");
    let (page, more) = state.store().eroutes_page(cursor.as_deref(), limit, |e| {
        name.as_deref().is_none_or(|n| e.name.contains(n)) && sa.as_deref().is_none_or(|s| e.sa.as_deref() == Some(s))
    });
    let last = page.last().map(|e| e.name.clone());
    Ok(page_answer(&req.path, &req.query, limit, &page, last.as_deref(), more))
}

fn live<'s>(state: &'s ControlState<'_>) -> Result<&'s Live<'s>, ApiResponse> {
    state.live.as_ref().ok_or_else(|| ApiResponse::error(503, "the data plane is not running", None))
}

/// Route one request.
pub fn handle(state: &ControlState<'_>, req: &ApiRequest) -> ApiResponse {
    if let Some(denied) = check_auth(state, req) {
        return denied;
    }
    let method = route_method(&req.method);
    let mut allowed = Vec::new();
    let mut route = None;
    for (m, p) in ROUTES {
        if let Some(name) = matches(p, &req.path) {
            allowed.push(*m);
            if *m == method {
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
    let result = match (method, pattern) {
        (_, "/api/v1/health") => health(state),
        (_, "/api/v1/openapi.json") => Ok(ApiResponse {
            status: 200,
            content_type: "application/json",
            body: OPENAPI.to_string(),
            headers: Vec::new(),
        }),
        ("GET", "/api/v1/sas") => list_sas(state, req),
        ("GET", "/api/v1/sas/{name}") => {
            state.store().sa(&name).map(|s| ApiResponse::json(200, &s)).map_err(Into::into)
        }
        ("POST", "/api/v1/sas") => sa_write(state, req, None),
        ("PUT", "/api/v1/sas/{name}") => sa_write(state, req, Some(&name)),
        ("POST", "/api/v1/sas/{name}/rekey") => rekey(state, req, &name),
        ("DELETE", "/api/v1/sas/{name}") => {
            let force = query_flag(&req.query, "force");
            state
                .store()
                .delete_sa(&name, force)
                .map(|trapped| ApiResponse::json(200, &json!({ "deleted": name, "eroutes_trapped": trapped })))
                .map_err(Into::into)
        }
        ("GET", "/api/v1/eroutes") => list_eroutes(state, req),
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
        ("GET", "/api/v1/ike") => Ok(ike_list(state)),
        ("POST", "/api/v1/ike/{name}/initiate") => ike_command(state, &name, IkeCommand::Initiate),
        ("POST", "/api/v1/ike/{name}/terminate") => ike_command(state, &name, IkeCommand::Terminate),
        ("POST", "/api/v1/ike/{name}/rekey") => ike_command(state, &name, IkeCommand::Rekey),
        ("GET", "/metrics") => live(state).map(|l| {
            let sas = state.store().sas();
            let ike = state.ike().map(|d| (d.counters, d.list(std::time::Instant::now()).len()));
            ApiResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::metrics::render(l, &sas, &state.metrics, ike),
                headers: Vec::new(),
            }
        }),
        // The HTTP server streams a GET itself (it never ends, so it is not
        // the router's); what reaches the router is a HEAD (the stream's
        // headers) or a direct caller: an event stream that holds only a
        // comment saying where the events are.
        ("GET", "/api/v1/events") => Ok(ApiResponse {
            status: 200,
            content_type: "text/event-stream",
            body: ": events are streamed by the HTTP server (GET /api/v1/events over the socket or TCP)\n\n".into(),
            headers: Vec::new(),
        }),
        _ => Err(ApiResponse::error(405, "method not allowed", None)),
    };
    result.unwrap_or_else(|e| e)
}

/// What `POST /api/v1/ike/{name}/...` asks of the daemon.
#[derive(Debug, Clone, Copy)]
enum IkeCommand {
    Initiate,
    Terminate,
    Rekey,
}

/// `GET /api/v1/ike`: connections, IKE SAs (no keys) and counters.
fn ike_list(state: &ControlState<'_>) -> ApiResponse {
    let now = std::time::Instant::now();
    match state.ike() {
        Some(d) => ApiResponse::json(
            200,
            &json!({ "connections": d.connections(), "ike_sas": d.list(now), "counters": d.counters }),
        ),
        None => ApiResponse::json(
            200,
            &json!({ "connections": [], "ike_sas": [], "counters": crate::ike::daemon::IkeCounters::default() }),
        ),
    }
}

fn ike_command(state: &ControlState<'_>, name: &str, cmd: IkeCommand) -> Result<ApiResponse, ApiResponse> {
    let now = std::time::Instant::now();
    let unknown = || ApiResponse::error(404, format!("no connection named {name:?}"), None);
    let Some(mut d) = state.ike() else { return Err(unknown()) };
    if !d.connections().iter().any(|c| c.name == name) {
        return Err(unknown());
    }
    match cmd {
        IkeCommand::Initiate => {
            d.initiate_named(name, now).map_err(|e| ApiResponse::error(409, e, None))?;
            Ok(ApiResponse::json(202, &json!({ "connection": name, "initiating": true })))
        }
        IkeCommand::Terminate => {
            let n = d.terminate_named(state, name);
            Ok(ApiResponse::json(200, &json!({ "connection": name, "terminated": n })))
        }
        IkeCommand::Rekey => match d.rekey_named(name, now) {
            Ok(n) => Ok(ApiResponse::json(202, &json!({ "connection": name, "rekeying": n }))),
            Err(e) => Err(ApiResponse::error(409, e, None)),
        },
    }
}

fn health(state: &ControlState<'_>) -> Result<ApiResponse, ApiResponse> {
    let (nsa, ner) = state.store().counts();
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

/// `{"spi": .., "enc_key": "..", "auth_key": ".."}`: see [`PolicyStore::rekey_sa`].
fn rekey(state: &ControlState<'_>, req: &ApiRequest, name: &str) -> Result<ApiResponse, ApiResponse> {
    let body = body_json(req)?;
    let bad = |field: &str, reason: &str| ApiResponse::error(400, reason.to_string(), Some(field.into()));
    let spi = match &body["spi"] {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => crate::config::parse_u32_field(s),
        _ => None,
    }
    .filter(|&s| s >= 256)
    .ok_or_else(|| bad("spi", "a new SPI (256..2^32-1, number or 0x-hex string) is required"))?;
    let enc_key = body["enc_key"].as_str().ok_or_else(|| bad("enc_key", "the new enc_key (hex) is required"))?;
    let auth_key = body["auth_key"].as_str();
    let (sa, previous) = state.store().rekey_sa(name, spi, enc_key, auth_key)?;
    Ok(ApiResponse::json(200, &json!({ "sa": sa, "previous": previous })))
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

/// The method a request is routed and documented as: HEAD is GET without
/// the body (the server drops it).
pub fn route_method(method: &str) -> &str {
    if method == "HEAD" {
        "GET"
    } else {
        method
    }
}

/// The route pattern a request path falls under (for contract checks).
pub fn route_pattern(method: &str, path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    ROUTES.iter().find(|(m, p)| *m == method && matches(p, path).is_some()).map(|(_, p)| *p)
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
