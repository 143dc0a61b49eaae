//! The control plane's fuzz drivers (`fuzz/fuzz_targets/{config,api}.rs`;
//! feature `fuzzing`, and the unit tests). Like the data path's lab, each
//! checks what comes out, not only that nothing panicked: a config error
//! points at a line of the text and never prints a key; an API answer has a
//! documented status and shape (the OpenAPI document), an error says why in
//! JSON, nothing is changed without the token or by a refused request, and
//! no key ever comes back.

use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::api::{handle, route_pattern, ApiRequest, ControlState};
use crate::config::Config;
use crate::store::PolicyStore;

/// The token the API driver's gateway requires.
pub const TOKEN: &str = "fuzz-token";
/// The key of the gateway's configured SA: no answer may contain it.
pub const BASE_KEY: &str = "00112233445566778899aabbccddeeff01020304";

/// The API driver's gateway (and the router tests'): two ports, one
/// outbound SA, one eroute.
pub fn base_config() -> String {
    format!(
        r#"
[workers]
cores = [0]

[[port]]
name = "clear"
device = "net_null0"
role = "cleartext"

[[port]]
name = "public"
device = "net_null1"
role = "protected"

[[sa]]
name = "to-b"
direction = "out"
spi = 0x1001
algorithm = "aes128-gcm16"
enc_key = "0x{BASE_KEY}"
mode = "tunnel"
local = "192.0.2.1"
remote = "198.51.100.1"

[[eroute]]
name = "nets"
src = "10.0.1.0/24"
dst = "10.0.2.0/24"
action = "protect"
sa = "to-b"
"#
    )
}

/// The API driver's gateway, without a data plane.
pub fn gateway() -> ControlState<'static> {
    let cfg = Config::parse(Path::new("base.toml"), &base_config()).expect("the base config is valid");
    ControlState {
        events: Default::default(),
        store: Mutex::new(PolicyStore::from_config(&cfg).expect("the base policy is valid")),
        live: None,
        token: Some(Zeroizing::new(TOKEN.to_string())),
        metrics: Default::default(),
        ike: None,
    }
}

/// Hex runs of 8 or more digits in key values (of `enc_key` / `auth_key`,
/// TOML or JSON) that appear nowhere else in the text: what must never be
/// echoed. (A run that also appears in, say, a port name may rightly be
/// quoted as that name.)
fn keys_in(text: &str) -> Vec<String> {
    let elsewhere = outside_key_values(text);
    let mut keys = hex_runs_on_key_lines(text);
    keys.retain(|k| !elsewhere.contains(&k.to_ascii_lowercase()));
    keys
}

/// The text (lowercased) without the values of its key fields: what a
/// client sent as something else than a key.
fn outside_key_values(text: &str) -> String {
    let mut elsewhere = text.to_ascii_lowercase();
    for v in text.lines().filter_map(key_value) {
        elsewhere = elsewhere.replacen(&v.to_ascii_lowercase(), "", 1);
    }
    elsewhere
}

/// The value part of a line that sets a key (`enc_key = ...`,
/// `"auth_key": ...`), if it is one. A field merely named like a key
/// (`enc_key4711 = 1`) is not: its name may rightly be quoted.
fn key_value(l: &str) -> Option<&str> {
    for name in ["enc_key", "auth_key"] {
        if let Some((k, v)) = l.split_once('=') {
            if k.trim() == name {
                return Some(v);
            }
        }
        if let Some((_, v)) = l.split_once(&format!("\"{name}\"")) {
            // JSON: only the string value (other members may share the line).
            let v = v.trim_start().strip_prefix(':')?.trim_start();
            let v = v.strip_prefix('"').unwrap_or(v);
            return Some(v.split(['"', ',', '}']).next().unwrap_or(v));
        }
    }
    None
}

fn hex_runs_on_key_lines(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for value in text.lines().filter_map(key_value) {
        let mut run = String::new();
        for c in value.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_hexdigit() {
                run.push(c);
            } else {
                if run.len() >= 8 {
                    keys.push(std::mem::take(&mut run));
                }
                run.clear();
            }
        }
    }
    keys
}

/// The config parser on any text: an error names the file and a line that
/// exists, and never contains a key; an accepted config builds its policy
/// store or is refused with a reason.
pub fn config(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let keys = keys_in(&text);
    let leaks = |msg: &str| keys.iter().find(|k| msg.to_ascii_lowercase().contains(&k.to_ascii_lowercase())).cloned();
    let lines = text.lines().count().max(1);
    let err = match Config::parse(Path::new("fuzz.toml"), &text) {
        Ok(cfg) => {
            // What the gateway does next: build its policy from it.
            return match PolicyStore::from_config(&cfg) {
                Ok(_) => Ok(()),
                Err(e) => match leaks(&e.to_string()) {
                    Some(k) => Err(format!("policy error prints key material {k}: {e}")),
                    None => Ok(()),
                },
            };
        }
        Err(e) => e,
    };
    let msg = err.to_string();
    if !msg.starts_with("fuzz.toml") {
        return Err(format!("error does not name the file: {msg}"));
    }
    if let Some(l) = err.line {
        if l == 0 || l > lines + 1 {
            return Err(format!("error at line {l} of a {lines}-line file: {msg}"));
        }
    }
    if err.reason.trim().is_empty() {
        return Err(format!("error without a reason: {msg}"));
    }
    if let Some(k) = leaks(&msg) {
        return Err(format!("error message prints key material {k}: {msg}"));
    }
    Ok(())
}

/// Parse one request of the API driver's text format: a request line
/// `METHOD PATH[?QUERY]`, header lines `Name: value` (`Authorization`,
/// `Content-Type`, `Via: socket`), an empty line, the body. A method that
/// is not an upper-case token (which hyper would refuse) becomes GET.
pub fn parse_request(raw: &[u8]) -> ApiRequest {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    // hyper hands the router only methods that are HTTP tokens.
    let token = !method.is_empty() && method.len() <= 16 && method.bytes().all(|b| b.is_ascii_uppercase());
    let mut req = ApiRequest {
        method: if token { method } else { "GET" }.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        body: body.as_bytes().to_vec(),
        ..Default::default()
    };
    for l in lines {
        match l.split_once(": ") {
            Some(("Authorization", v)) => req.authorization = Some(v.to_string()),
            Some(("Content-Type", v)) => req.content_type = Some(v.to_string()),
            Some(("Via", "socket")) => req.via_socket = true,
            _ => {}
        }
    }
    req
}

/// A sequence of API requests (separated by NUL bytes) against one gateway.
pub fn api(data: &[u8]) -> Result<(), String> {
    let state = gateway();
    // Keys the gateway holds: the configured one, and every key a request
    // got accepted. No later answer may contain any of them.
    let mut held = vec![BASE_KEY.to_string()];
    for raw in data.split(|b| *b == 0).take(64) {
        let req = parse_request(raw);
        let status = check_answer(&state, &req, &held)?;
        if (200..300).contains(&status) && matches!(req.method.as_str(), "POST" | "PUT") {
            held.extend(keys_in(&String::from_utf8_lossy(&req.body)));
        }
    }
    Ok(())
}

/// Route one request and hold its answer to the invariants; `held` are the
/// keys the gateway holds. Returns the status.
pub fn check_answer(state: &ControlState<'_>, req: &ApiRequest, held: &[String]) -> Result<u16, String> {
    let generation = || state.store().db().reader().load().generation;
    let before = generation();
    let r = handle(state, req);
    let changed = generation() != before;
    let what = format!("{} {}?{} -> {}: {}", req.method, req.path, req.query, r.status, r.body);
    if !matches!(r.status, 200 | 201 | 204 | 400 | 401 | 403 | 404 | 405 | 409 | 413 | 415 | 422 | 429 | 503) {
        return Err(format!("unexpected status: {what}"));
    }
    // RFC 6750 §2.1 credentials: a case-blind "Bearer", one or more spaces, the token.
    let authorised = req.via_socket
        || req.authorization.as_deref().and_then(|h| h.trim().split_once(' ')).is_some_and(|(scheme, t)| {
            scheme.eq_ignore_ascii_case("bearer") && t.trim_start_matches(' ').trim_end() == TOKEN
        });
    if changed && (!authorised || r.status >= 400 || matches!(req.method.as_str(), "GET" | "HEAD")) {
        return Err(format!("state changed by a request that may not change it: {what}"));
    }
    // The keys held and this request's own, unless the client put the key
    // in the path, query, a header or a body field that is not a key itself
    // (a 404 quotes the path it was given, a 415 the content type, a 400 the
    // bad value of a field).
    let target = format!(
        "{}?{} {} {} {}",
        req.path,
        req.query,
        req.content_type.as_deref().unwrap_or_default(),
        req.authorization.as_deref().unwrap_or_default(),
        outside_key_values(&String::from_utf8_lossy(&req.body)),
    )
    .to_ascii_lowercase();
    let lower = r.body.to_ascii_lowercase();
    let own = keys_in(&String::from_utf8_lossy(&req.body));
    let leaked = held
        .iter()
        .cloned()
        .chain(own)
        .map(|k| k.to_ascii_lowercase())
        .find(|k| !target.contains(k.as_str()) && lower.contains(k.as_str()));
    if let Some(k) = leaked {
        return Err(format!("a key came back ({k}): {what}"));
    }
    if r.status >= 400 {
        let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("error body is not JSON ({e}): {what}"))?;
        if !(v["error"].is_string() && v["reason"].is_string()) {
            return Err(format!("error body without error/reason: {what}"));
        }
    }
    let method = crate::api::route_method(&req.method);
    if let Some(pattern) = route_pattern(method, &req.path) {
        if r.status != 405 {
            espgw_testkit::openapi::check_response(method, pattern, r.status, r.content_type, &r.body)
                .map_err(|e| format!("answer outside the OpenAPI document ({e}): {what}"))?;
        }
    }
    Ok(r.status)
}

/// The libFuzzer dictionary of the `config` or `api` target, generated from
/// the tables the parser and the router use (the configuration schema, the
/// route list, the OpenAPI document), so it cannot drift from them. A test
/// keeps `fuzz/dict/<target>.dict` equal to it.
pub fn dictionary(target: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    match target {
        "config" => {
            use crate::config::schema::{KEYS, SECTIONS};
            for s in SECTIONS {
                words.push(if s.repeated { format!("[[{}]]", s.name) } else { format!("[{}]", s.name) });
            }
            for k in KEYS {
                words.push(format!("{} = ", k.key));
                // Quoted values named in the type: "cleartext" | "protected", ...
                words.extend(k.ty.split('"').skip(1).step_by(2).map(|v| format!("\"{v}\"")));
            }
            words.extend(["0x", "true", "false", "192.0.2.1", "10.0.1.0/24", "fd00:1::/64", "\n"].map(String::from));
        }
        "api" => {
            for (m, p) in crate::api::ROUTES {
                words.push(format!("{m} {}", p.replace("{name}", "to-b")));
                words.push((*m).to_string());
            }
            words.extend(
                [
                    &format!("Authorization: Bearer {TOKEN}") as &str,
                    "Content-Type: application/json",
                    "Via: socket",
                    "?limit=",
                    "&after=",
                    "\n\n",
                ]
                .map(String::from),
            );
            let doc: Value = serde_json::from_str(crate::api::OPENAPI).unwrap_or(Value::Null);
            let mut stack = vec![&doc];
            while let Some(v) = stack.pop() {
                match v {
                    Value::Object(m) => {
                        if let Some(Value::Object(props)) = m.get("properties") {
                            words.extend(props.keys().map(|k| format!("\"{k}\":")));
                        }
                        if let Some(Value::Array(e)) = m.get("enum") {
                            words.extend(e.iter().filter_map(Value::as_str).map(|s| format!("\"{s}\"")));
                        }
                        stack.extend(m.values());
                    }
                    Value::Array(a) => stack.extend(a),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    words.sort();
    words.dedup();
    let escape = |w: &str| {
        w.bytes()
            .map(|b| match b {
                b'"' | b'\\' => format!("\\{}", b as char),
                0x20..=0x7e => (b as char).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect::<String>()
    };
    let mut out = format!("# Generated by control::fuzzing::dictionary(\"{target}\"); the tests keep it current.\n");
    for w in words {
        out.push_str(&format!("\"{}\"\n", escape(&w)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, auth: bool, body: &str) -> Vec<u8> {
        let mut s = format!("{method} {target}\nContent-Type: application/json\n");
        if auth {
            s.push_str(&format!("Authorization: Bearer {TOKEN}\n"));
        }
        s.push('\n');
        s.push_str(body);
        s.into_bytes()
    }

    #[test]
    fn the_api_driver_changes_state_and_holds_the_invariants() {
        let sa = format!(
            r#"{{"name":"c","direction":"out","spi":8193,"algorithm":"aes128-gcm16","enc_key":"0x{}","mode":"tunnel","local":"192.0.2.1","remote":"198.51.100.7"}}"#,
            "11".repeat(20)
        );
        let mut input = req("POST", "/api/v1/sas", true, &sa);
        input.push(0);
        input.extend(req("GET", "/api/v1/sas", true, ""));
        input.push(0);
        input.extend(req("DELETE", "/api/v1/sas/c", false, ""));
        api(&input).unwrap();
        // Not vacuous: the same requests really change and refuse.
        let state = gateway();
        let r = handle(&state, &parse_request(&req("POST", "/api/v1/sas", true, &sa)));
        assert_eq!(r.status, 201, "{}", r.body);
        let r = handle(&state, &parse_request(&req("DELETE", "/api/v1/sas/c", false, "")));
        assert_eq!(r.status, 401);
    }

    /// A key with a non-ASCII character once panicked the parser (the fuzzer
    /// found it through the config text; the API reaches the same parser).
    #[test]
    fn a_non_ascii_key_is_refused_not_a_panic() {
        let raw =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/api/non-ascii-key")).unwrap();
        let state = gateway();
        let r = handle(&state, &parse_request(&raw));
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains("not hexadecimal"), "{}", r.body);
    }

    #[test]
    fn the_config_driver_catches_a_printed_key() {
        config(base_config().as_bytes()).unwrap();
        config(b"[[sa]]\nname = 1\n").unwrap();
        assert_eq!(keys_in("enc_key = \"0xdeadbeef00\""), vec!["deadbeef00".to_string()]);
        assert!(keys_in("name = \"deadbeef00 key\"").is_empty());
        assert!(keys_in("enc_key4711deadbeef = 1").is_empty(), "a field named like a key");
        assert_eq!(keys_in(r#"{"enc_key": "0xdeadbeef00"}"#), vec!["deadbeef00".to_string()]);
        assert_eq!(keys_in(r#"{"enc_key":"0xdeadbeef00","beef0042":1}"#), vec!["deadbeef00".to_string()]);
        assert!(keys_in(r#"{"enc_key":"0xdeadbeef00","name":"xdeadbeef00"}"#).is_empty(), "also elsewhere");
    }

    /// The committed dictionaries are the generated ones
    /// (`ESPGW_WRITE_DICTS=1 cargo test -p control fuzzing` rewrites them).
    #[test]
    fn dictionaries_are_current() {
        for target in ["config", "api"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/dict/{target}.dict"));
            let want = dictionary(target);
            if std::env::var_os("ESPGW_WRITE_DICTS").is_some() {
                std::fs::write(&path, &want).unwrap();
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(have == want, "{} is stale: ESPGW_WRITE_DICTS=1 cargo test -p control fuzzing", path.display());
            assert!(want.lines().count() > 30, "{target}: a real dictionary");
        }
    }

    /// The fuzz seeds and every input a fuzzer found run in the normal suite.
    #[test]
    fn seeds_and_regressions_hold_every_invariant() {
        for (target, run) in [("config", config as fn(&[u8]) -> Result<(), String>), ("api", api)] {
            let n = espgw_testkit::fuzz_corpus::replay(target, run);
            assert!(n >= 5, "{n} {target} seeds");
        }
        let n = espgw_testkit::fuzz_corpus::replay("ike", crate::ike::message::check_roundtrip);
        assert!(n >= 3, "{n} ike seeds");
        let n = espgw_testkit::fuzz_corpus::replay("ike_daemon", crate::ike::fuzzing::daemons);
        assert!(n >= 3, "{n} ike_daemon seeds");
        let n = espgw_testkit::fuzz_corpus::replay("ike_fragments", crate::ike::fuzzing::fragments);
        assert!(n >= 3, "{n} ike_fragments seeds");
    }
}
