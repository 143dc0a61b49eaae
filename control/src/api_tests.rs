//! The router, without sockets or DPDK: CRUD, errors, auth, and every answer
//! checked against the OpenAPI document.

use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::config::Config;
use espgw_testkit::openapi::{check_response, document};

/// The router tests' gateway is the API fuzz driver's.
use crate::fuzzing::base_config;

const SECRET_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90deadbeef";

fn state(token: Option<&str>) -> ControlState<'static> {
    let cfg = Config::parse(Path::new("t.toml"), &base_config()).unwrap();
    ControlState {
        events: Default::default(),
        store: Mutex::new(PolicyStore::from_config(&cfg).unwrap()),
        live: None,
        token: token.map(|t| Zeroizing::new(t.to_string())),
        metrics: Default::default(),
        ike: None,
    }
}

/// Send a request and check the answer against the OpenAPI document.
fn call(st: &ControlState<'_>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_raw(st, method, path, body.map(|b| b.to_string()), None, Some("application/json"))
}

fn call_raw(
    st: &ControlState<'_>,
    method: &str,
    path: &str,
    body: Option<String>,
    auth: Option<&str>,
    ct: Option<&str>,
) -> (u16, Value) {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let req = ApiRequest {
        method: method.into(),
        path: p.into(),
        query: q.into(),
        authorization: auth.map(str::to_string),
        content_type: ct.map(str::to_string),
        body: body.unwrap_or_default().into_bytes(),
        via_socket: false,
    };
    let r = handle(st, &req);
    assert!(!r.body.contains(SECRET_KEY), "a key came back: {}", r.body);
    if let Some(pattern) = route_pattern(method, p) {
        if r.status != 405 {
            check_response(method, pattern, r.status, r.content_type, &r.body).unwrap();
        }
    }
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    if r.status >= 400 {
        assert!(v["error"].is_string() && v["reason"].is_string(), "error body: {}", r.body);
    }
    (r.status, v)
}

fn sa_in(name: &str, spi: u32) -> Value {
    json!({
        "name": name, "direction": "out", "spi": spi, "algorithm": "aes128-gcm16",
        "enc_key": format!("0x{SECRET_KEY}"), "mode": "tunnel",
        "local": "192.0.2.1", "remote": "198.51.100.7", "hard_packets": 1000
    })
}

#[test]
fn sa_and_eroute_lifecycle() {
    let st = state(None);
    let (s, v) = call(&st, "GET", "/api/v1/sas", None);
    assert_eq!(s, 200);
    assert_eq!(v[0]["name"], "to-b");
    assert_eq!(v[0]["enc_key"], "<redacted>");

    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa_in("to-c", 0x2001)));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["spi"], 0x2001);
    assert_eq!(v["hard_packets"], 1000);
    assert_eq!(v["state"]["packets"], 0);
    let (s, _) = call(&st, "POST", "/api/v1/sas", Some(sa_in("to-c", 0x2002)));
    assert_eq!(s, 409, "same name");
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa_in("to-d", 0x2001)));
    assert_eq!(s, 409, "same outbound SPI: {v}");

    let er = json!({"name": "c-nets", "src": "10.0.1.0/24", "dst": "10.0.3.0/24", "proto": "tcp",
                    "dport": "1000-2000", "action": "protect", "sa": "to-c", "mss_clamp": true});
    let (s, v) = call(&st, "POST", "/api/v1/eroutes", Some(er.clone()));
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["proto"].as_str(), v["dport"].as_str(), v["sa"].as_str()),
        (Some("tcp"), Some("1000-2000"), Some("to-c"))
    );
    assert_eq!(call(&st, "POST", "/api/v1/eroutes", Some(er)).0, 409);
    // The published snapshot sees it.
    {
        let store = st.store();
        let snap = store.db().reader().load_full();
        let k =
            espgw_core::policy::FlowKey::new("10.0.1.5".parse().unwrap(), "10.0.3.9".parse().unwrap(), 6, 40000, 1500);
        assert!(matches!(snap.outbound(&k), espgw_core::policy::Verdict::Protect { .. }));
    }

    // Rekey: same name, new SPI.
    let (s, v) = call(&st, "PUT", "/api/v1/sas/to-c", Some(sa_in("to-c", 0x2003)));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["spi"], 0x2003);
    assert_eq!(call(&st, "PUT", "/api/v1/sas/to-c", Some(sa_in("other", 0x2003))).0, 400);
    assert_eq!(call(&st, "PUT", "/api/v1/sas/nope", Some(sa_in("nope", 0x2003))).0, 404);

    // An SA in use cannot go, unless forced: then its eroute traps.
    let (s, v) = call(&st, "DELETE", "/api/v1/sas/to-c", None);
    assert_eq!(s, 409);
    assert!(v["reason"].as_str().unwrap().contains("c-nets"), "{v}");
    let (s, v) = call(&st, "DELETE", "/api/v1/sas/to-c?force=true", None);
    assert_eq!(s, 200);
    assert_eq!(v["eroutes_trapped"], json!(["c-nets"]));
    let (s, v) = call(&st, "GET", "/api/v1/eroutes/c-nets", None);
    assert_eq!((s, v["action"].as_str()), (200, Some("trap")));
    assert_eq!(call(&st, "GET", "/api/v1/sas/to-c", None).0, 404);
    assert_eq!(call(&st, "DELETE", "/api/v1/eroutes/c-nets", None).0, 200);
    assert_eq!(call(&st, "DELETE", "/api/v1/eroutes/c-nets", None).0, 404);
    let (s, v) = call(&st, "GET", "/api/v1/eroutes", None);
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));

    // Replace an eroute in place.
    let er = json!({"name": "nets", "src": "10.0.1.0/24", "dst": "10.0.9.0/24", "action": "drop"});
    let (s, v) = call(&st, "PUT", "/api/v1/eroutes/nets", Some(er));
    assert_eq!((s, v["dst"].as_str(), v["id"].as_u64()), (200, Some("10.0.9.0/24"), Some(1)));
    // Now nothing uses to-b: it can go.
    assert_eq!(call(&st, "DELETE", "/api/v1/sas/to-b", None).0, 200);
}

#[test]
fn inbound_sa_binds_to_an_eroute_by_name() {
    let st = state(None);
    let mut sa = sa_in("from-b", 0x3001);
    sa["direction"] = json!("in");
    sa["eroute"] = json!("nope");
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa.clone()));
    assert_eq!((s, v["field"].as_str()), (400, Some("eroute")), "{v}");
    // No selectors at all: refused (RFC 4301 §5.2), naming the field.
    let mut bare = sa.clone();
    bare.as_object_mut().unwrap().remove("eroute");
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(bare));
    assert_eq!((s, v["field"].as_str()), (400, Some("eroute")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("needs selectors"), "{v}");
    sa["eroute"] = json!("nets");
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa.clone()));
    assert_eq!((s, v["eroute"][0].as_str(), v["direction"].as_str()), (201, Some("nets"), Some("in")), "{v}");
    sa["name"] = json!("from-b2");
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa.clone()));
    assert_eq!(s, 409, "inbound SPI for the same destination: {v}");
    // Own selectors instead of an eroute; shown back as given.
    let mut own = sa.clone();
    own["name"] = json!("from-b3");
    own["spi"] = json!(0x3003);
    own.as_object_mut().unwrap().remove("eroute");
    own["src"] = json!("10.0.2.0/24");
    own["dst"] = json!("10.0.1.0/24");
    own["proto"] = json!("udp");
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(own));
    assert_eq!((s, v["src"].as_str(), v["proto"].as_str()), (201, Some("10.0.2.0/24"), Some("udp")), "{v}");
}

/// The nonce rule through the API: one key drives one outbound SA; a
/// replace with the same key keeps the counter; delete + add continues it;
/// soft above hard and zero limits are refused.
#[test]
fn outbound_keys_never_restart_their_counter() {
    let st = state(None);
    let (s, _) = call(&st, "POST", "/api/v1/sas", Some(sa_in("to-c", 0x2001)));
    assert_eq!(s, 201);
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa_in("to-d", 0x2002)));
    assert_eq!(s, 409, "same key as to-c: {v}");
    assert!(v["reason"].as_str().unwrap().contains("already sends with these keys"), "{v}");
    st.store().db().sa(2).unwrap().sa.advance_seq(1_805_814);
    let mut again = sa_in("to-c", 0x2001);
    again["ttl"] = json!(7);
    let (s, v) = call(&st, "PUT", "/api/v1/sas/to-c", Some(again.clone()));
    assert_eq!((s, v["state"]["next_seq"].as_u64()), (200, Some(1_805_814)), "{v}");
    assert_eq!(call(&st, "DELETE", "/api/v1/sas/to-c", None).0, 200);
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa_in("to-e", 0x2005)));
    assert_eq!((s, v["state"]["next_seq"].as_u64()), (201, Some(1_805_814)), "{v}");
    for (patch, field) in [
        (json!({"soft_packets": 2000}), "soft_packets"),
        (json!({"hard_packets": 0}), "hard_packets"),
        (json!({"soft_bytes": 0}), "soft_bytes"),
    ] {
        let mut sa = sa_in("bad", 0x2009);
        sa["enc_key"] = json!("0x0000000000000000000000000000000001020309");
        for (k, v) in patch.as_object().unwrap() {
            sa[k] = v.clone();
        }
        let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa));
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{v}");
    }
}

#[test]
fn bad_input_names_the_field() {
    let st = state(None);
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (json!({"enc_key": "0x0011"}), Some("enc_key"), "needs a 20-byte enc_key"),
        (json!({"spi": 7}), Some("spi"), "reserved"),
        (json!({"algorithm": "rot13"}), Some("algorithm"), "unknown algorithm"),
        (json!({"mode": "tunnel", "remote": "2001:db8::1"}), Some("remote"), "one address family"),
        (json!({"color": "red"}), None, "unknown field"),
        (json!({"esn": null}), Some("esn"), "null"),
        (json!({"replay_window": 5000}), Some("replay_window"), "outside 64..4096"),
    ];
    for (patch, field, reason) in cases {
        let mut sa = sa_in("bad", 0x4001);
        for (k, v) in patch.as_object().unwrap() {
            sa[k] = v.clone();
        }
        let (s, v) = call(&st, "POST", "/api/v1/sas", Some(sa));
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["field"].as_str(), field, "{v}");
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
    }
    let bad_eroutes: Vec<(Value, &str)> = vec![
        (json!({"name": "x", "src": "10.0.0.0/33", "dst": "10.1.0.0/16", "action": "pass"}), "src"),
        (json!({"name": "x", "src": "10.0.0.0/8", "dst": "10.1.0.0/16", "action": "protect", "sa": "ghost"}), "sa"),
        (json!({"name": "x", "src": "10.0.0.0/8", "dst": "10.1.0.0/16", "action": "pass", "sa": "to-b"}), "sa"),
        (json!({"name": "x", "src": "10.0.0.0/8", "dst": "10.1.0.0/16", "action": "encrypt"}), "action"),
        (json!({"name": "x", "src": "10.0.0.0/8", "dst": "10.1.0.0/16", "action": "pass", "dport": "9-1"}), "dport"),
    ];
    for (e, field) in bad_eroutes {
        let (s, v) = call(&st, "POST", "/api/v1/eroutes", Some(e));
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{v}");
    }
    let (s, v) = call_raw(&st, "POST", "/api/v1/sas", Some("{not json".into()), None, Some("application/json"));
    assert_eq!(s, 400, "{v}");
    let (s, _) = call_raw(&st, "POST", "/api/v1/sas", Some("[1,2]".into()), None, None);
    assert_eq!(s, 400);
    let (s, _) = call_raw(&st, "POST", "/api/v1/sas", Some("spi=1".into()), None, Some("text/plain"));
    assert_eq!(s, 415);
    assert_eq!(call(&st, "GET", "/api/v1/nothing", None).0, 404);
    let r = handle(&st, &ApiRequest { method: "PATCH".into(), path: "/api/v1/sas".into(), ..Default::default() });
    assert_eq!(r.status, 405);
    assert_eq!(r.headers, vec![("Allow", "GET, POST".to_string())]);
    // Live endpoints before the data plane runs.
    assert_eq!(call(&st, "GET", "/api/v1/stats", None).0, 503);
    assert_eq!(call(&st, "GET", "/metrics", None).0, 503);
}

#[test]
fn a_token_guards_every_endpoint() {
    let token = "s3cret-token-0123456789";
    let st = state(Some(token));
    for path in ["/api/v1/health", "/api/v1/sas", "/metrics"] {
        let (s, _) = call_raw(&st, "GET", path, None, None, None);
        assert_eq!(s, 401, "{path}");
        let (s, _) = call_raw(&st, "GET", path, None, Some("Basic Zm9vOmJhcg=="), None);
        assert_eq!(s, 401, "{path}");
        let (s, _) = call_raw(&st, "GET", path, None, Some("Bearer wrong-token-0123456789"), None);
        assert_eq!(s, 403, "{path}");
    }
    let (s, v) = call_raw(&st, "GET", "/api/v1/health", None, Some(&format!("Bearer {token}")), None);
    assert_eq!((s, v["status"].as_str()), (200, Some("starting")));
    // RFC 6750 §2.1 / RFC 7235 §2.1: one or more spaces, a case-blind scheme
    // (the API fuzzer sent two spaces; its oracle had only known one).
    for h in [format!("Bearer  {token}"), format!("bearer {token}"), format!("BEARER {token}")] {
        assert_eq!(call_raw(&st, "GET", "/api/v1/health", None, Some(&h), None).0, 200, "{h}");
    }
    for (h, want) in [(format!("Bearer{token}"), 401), (format!("Bearer {token}x"), 403), ("Bearer".into(), 401)] {
        assert_eq!(call_raw(&st, "GET", "/api/v1/health", None, Some(&h), None).0, want, "{h}");
    }
    let r = handle(&st, &ApiRequest { method: "GET".into(), path: "/api/v1/sas".into(), ..Default::default() });
    assert!(r.headers.iter().any(|(k, v)| *k == "WWW-Authenticate" && v.starts_with("Bearer")));
    // Over the control socket the file permissions decided: no token.
    let r = handle(
        &st,
        &ApiRequest { method: "GET".into(), path: "/api/v1/health".into(), via_socket: true, ..Default::default() },
    );
    assert_eq!(r.status, 200);
}

/// Lists come in pages (name order) with a `Link: rel="next"` to the rest,
/// and filter by name, SPI, peer and direction.
#[test]
fn lists_page_and_filter() {
    let st = state(None);
    for i in 0..25u32 {
        let body = json!({
            "name": format!("sa-{i:03}"), "direction": "out", "spi": 0x2000 + i,
            "algorithm": "aes128-gcm16", "enc_key": format!("0x{}{i:08x}", "11".repeat(16)),
            "mode": "tunnel", "local": "192.0.2.1", "remote": if i % 5 == 0 { "198.51.100.9" } else { "198.51.100.1" },
        });
        let (s, v) = call_raw(&st, "POST", "/api/v1/sas", Some(body.to_string()), None, Some("application/json"));
        assert_eq!(s, 201, "{v}");
    }
    let get = |path: &str| {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        handle(&st, &ApiRequest { method: "GET".into(), path: p.into(), query: q.into(), ..Default::default() })
    };
    let mut names = Vec::new();
    let mut next = Some("/api/v1/sas?limit=10".to_string());
    let mut pages = 0;
    while let Some(p) = next {
        let r = get(&p);
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        names.extend(v.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()));
        next = r.headers.iter().find(|(k, _)| *k == "Link").map(|(_, l)| {
            assert!(l.ends_with("; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_string()
        });
        pages += 1;
    }
    assert_eq!(pages, 3);
    let mut want: Vec<String> = (0..25).map(|i| format!("sa-{i:03}")).collect();
    want.push("to-b".into()); // the state's own SA
    assert_eq!(names, want);
    let count = |path: &str| serde_json::from_str::<Value>(&get(path).body).unwrap().as_array().unwrap().len();
    assert_eq!(count("/api/v1/sas?peer=198.51.100.9"), 5);
    assert_eq!(count("/api/v1/sas?spi=0x2003"), 1);
    assert_eq!(count("/api/v1/sas?name=sa-01"), 10);
    assert_eq!(count("/api/v1/sas?direction=in"), 0);
    assert_eq!(get("/api/v1/sas?limit=0").status, 400);
    assert_eq!(get("/api/v1/sas?direction=sideways").status, 400);
}

/// The document lists exactly the routes the server has.
#[test]
fn openapi_lists_exactly_the_routes() {
    let doc = document();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "delete", "patch"] {
            if item.get(m).is_some() {
                documented.push((m.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    let mut served: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    // Every $ref resolves.
    let text = OPENAPI;
    for r in text.split("\"$ref\": \"").skip(1) {
        let target = r.split('"').next().unwrap();
        assert!(doc.pointer(target.trim_start_matches('#')).is_some(), "dangling $ref {target}");
    }
    let (s, v) = call(&state(None), "GET", "/api/v1/openapi.json", None);
    assert_eq!((s, v["openapi"].as_str()), (200, Some("3.1.0")));
}

/// The nonce rule as a property: any sequence of API operations (add,
/// replace with the same or another key, delete, re-add), restarts of the
/// process on the same config and state file, and packets sent in between,
/// never puts two ESP packets on the wire under one key with one IV.
mod nonce_property {
    use super::*;
    use crate::state::{SharedState, StateFile};
    use espgw_core::packet::{PacketBuf, VecBuf};
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// A small pool of keys so that the operations keep running into each other.
    const KEYS: [&str; 3] = [
        "0x00112233445566778899aabbccddeeff01020304", // the config's to-b key
        "0x1111111111111111111111111111111111111111",
        "0x2222222222222222222222222222222222222222",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Add { sa: usize, key: usize },
        Replace { sa: usize, key: usize, ttl: u8 },
        Delete { sa: usize },
        Send { packets: usize },
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 0..3usize).prop_map(|(sa, key)| Op::Add { sa, key }),
            (0..3usize, 0..3usize, 1..255u8).prop_map(|(sa, key, ttl)| Op::Replace { sa, key, ttl }),
            (0..3usize).prop_map(|sa| Op::Delete { sa }),
            (1..40usize).prop_map(|packets| Op::Send { packets }),
            Just(Op::Restart),
        ]
    }

    /// A restart. The previous run's lock can outlive it for a moment: a
    /// process another test spawns meanwhile holds a copy of the file
    /// descriptor between its fork and its exec (close-on-exec), and flock
    /// belongs to the open file, so opening is retried briefly.
    fn start(cfg: &Config) -> (ControlState<'static>, SharedState) {
        let mut tries = 0;
        let file = loop {
            match StateFile::open(&cfg.state_file) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => break r.unwrap(),
            }
        };
        let st = SharedState::new(file);
        let store = PolicyStore::from_config_with(cfg, Some(Box::new(st.clone()))).unwrap();
        (
            ControlState {
                store: Mutex::new(store),
                events: Default::default(),
                live: None,
                token: None,
                metrics: Default::default(),
                ike: None,
            },
            st,
        )
    }

    fn sa_body(sa: usize, key: usize, ttl: u8) -> Value {
        json!({
            "name": format!("p{sa}"), "direction": "out", "spi": 0x7000 + sa, "algorithm": "aes128-gcm16",
            "enc_key": KEYS[key], "mode": "tunnel", "local": "192.0.2.1", "remote": "198.51.100.7", "ttl": ttl
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_key_and_iv_pair_ever_leaves_twice(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("gw.toml");
            std::fs::write(&path, base_config()).unwrap();
            let cfg = Config::load(&path).unwrap();
            let (mut ctl, mut st) = start(&cfg);
            let mut seen: HashSet<(Vec<u8>, [u8; 8])> = HashSet::new();
            let mut sent = 0usize;
            for op in ops {
                match op {
                    Op::Add { sa, key } => {
                        call(&ctl, "POST", "/api/v1/sas", Some(sa_body(sa, key, 64)));
                    }
                    Op::Replace { sa, key, ttl } => {
                        call(&ctl, "PUT", &format!("/api/v1/sas/p{sa}"), Some(sa_body(sa, key, ttl)));
                    }
                    Op::Delete { sa } => {
                        call(&ctl, "DELETE", &format!("/api/v1/sas/p{sa}"), None);
                    }
                    Op::Restart => {
                        drop(ctl);
                        drop(st);
                        (ctl, st) = start(&cfg);
                    }
                    Op::Send { packets } => {
                        let store = ctl.store();
                        for e in store.db().sas() {
                            if e.direction() != espgw_core::policy::Direction::Outbound {
                                continue;
                            }
                            for _ in 0..packets {
                                let inner = [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 1, 10, 0, 2, 2,
                                             0, 1, 0, 2, 0, 8, 0, 0];
                                let mut b = VecBuf::from_slice(&inner);
                                if e.sa.encap(&mut b).is_ok() {
                                    // GCM: the IV follows the 20-byte outer header and the ESP header.
                                    let iv: [u8; 8] = b.data()[28..36].try_into().unwrap();
                                    let key = e.sa.key_id().to_hex().into_bytes();
                                    prop_assert!(seen.insert((key, iv)), "IV {iv:?} reused under one key");
                                    sent += 1;
                                }
                            }
                        }
                    }
                }
            }
            let _ = sent;
        }
    }
}

/// Rekey: outbound moves its eroutes to the new SA (same name, new SPI and
/// key, settings kept) and the old one goes; inbound keeps the old one as
/// NAME.prev; `sa show` output fed back (as espgwctl --from does) is valid.
#[test]
fn rekey_is_make_before_break() {
    let st = state(None);
    let (s, v) = call(
        &st,
        "POST",
        "/api/v1/sas/to-b/rekey",
        Some(json!({ "spi": "0x1002", "enc_key": format!("0x{SECRET_KEY}") })),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["sa"]["name"].as_str(), v["sa"]["spi"].as_u64()), (Some("to-b"), Some(0x1002)));
    assert_eq!(v["sa"]["remote"], "198.51.100.1", "settings kept");
    assert!(v["previous"].is_null());
    let (_, e) = call(&st, "GET", "/api/v1/eroutes/nets", None);
    assert_eq!(e["sa"], "to-b");
    let sas = st.store().sas();
    assert_eq!(sas.len(), 1, "the old outbound SA is gone");
    let new_id = sas[0].sa.id;
    let nets = st.store().eroute("nets").unwrap();
    assert_eq!(nets.sa.as_deref(), Some("to-b"));
    assert_ne!(new_id, 1, "a new SA, not the old one renamed");
    // The same key again under another SPI: the nonce rule refuses it.
    let (s, v) = call(
        &st,
        "POST",
        "/api/v1/sas/to-b/rekey",
        Some(json!({ "spi": 0x1003, "enc_key": format!("0x{SECRET_KEY}") })),
    );
    assert_eq!(s, 409, "{v}");
    let (s, _) = call(&st, "POST", "/api/v1/sas/nope/rekey", Some(json!({ "spi": 0x1003, "enc_key": "0x00" })));
    assert_eq!(s, 404);
    let (s, v) = call(&st, "POST", "/api/v1/sas/to-b/rekey", Some(json!({ "enc_key": "0x00" })));
    assert_eq!((s, v["field"].as_str()), (400, Some("spi")));

    // Inbound: the old SA stays as NAME.prev.
    let inbound = json!({
        "name": "from-b", "direction": "in", "spi": 0x2001, "algorithm": "aes128-gcm16",
        "enc_key": format!("0x{}", "22".repeat(20)), "mode": "tunnel",
        "local": "192.0.2.1", "remote": "198.51.100.1", "eroute": "nets",
    });
    assert_eq!(call(&st, "POST", "/api/v1/sas", Some(inbound)).0, 201);
    let (s, v) = call(
        &st,
        "POST",
        "/api/v1/sas/from-b/rekey",
        Some(json!({ "spi": 0x2002, "enc_key": format!("0x{}", "33".repeat(20)) })),
    );
    assert_eq!((s, v["previous"].as_str()), (200, Some("from-b.prev")), "{v}");
    assert_eq!(call(&st, "GET", "/api/v1/sas/from-b.prev", None).1["spi"], 0x2001);
    assert_eq!(call(&st, "GET", "/api/v1/sas/from-b", None).1["spi"], 0x2002);

    // What `sa show --json` prints goes back in once keys are given.
    let (_, shown) = call(&st, "GET", "/api/v1/sas/from-b", None);
    let mut input = crate::config::sa_input_from_view(shown);
    input["name"] = json!("from-c");
    input["spi"] = json!(0x2003);
    input["enc_key"] = json!(format!("0x{}", "44".repeat(20)));
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(input));
    assert_eq!(s, 201, "{v}");
}

/// The document's algorithm list is the data path's (one list of names).
#[test]
fn openapi_algorithms_are_the_data_paths() {
    let doc = document();
    let mut stack = vec![doc];
    let mut found = None;
    while let Some(v) = stack.pop() {
        if let Some(e) = v.pointer("/properties/algorithm/enum") {
            found = Some(e.clone());
        }
        match v {
            Value::Object(m) => stack.extend(m.values()),
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    let documented: Vec<String> =
        found.expect("an algorithm enum").as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let ours: Vec<String> = espgw_core::crypto::Algorithm::ALL.iter().map(|a| a.name().to_string()).collect();
    assert_eq!(documented, ours);
}

/// NAT-T SAs through the API: encap and ports in and out; a NAT rebinding
/// moves the SAs with `nat_follow` (and only those) to the new address and
/// port, keeping the key's sequence counter.
#[test]
fn udp_sas_follow_a_nat_rebinding() {
    let st = state(None);
    let udp = |name: &str, dir: &str, spi: u32, follow: bool| {
        let mut v = sa_in(name, spi);
        v["direction"] = json!(dir);
        v["encap"] = json!("udp");
        v["remote_port"] = json!(4500);
        v["nat_follow"] = json!(follow);
        // One key per SA (an outbound key is never shared: the nonce rule).
        v["enc_key"] = json!(format!("0x{:08x}{}", spi, &SECRET_KEY[8..]));
        if dir == "in" {
            v["src"] = json!("10.0.7.0/24");
            v["dst"] = json!("10.0.1.0/24");
        }
        v
    };
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(udp("out-c", "out", 0x3001, true)));
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["encap"].as_str(), v["local_port"].as_u64(), v["nat_follow"].as_bool()),
        (Some("udp"), Some(4500), Some(true))
    );
    assert_eq!(call(&st, "POST", "/api/v1/sas", Some(udp("in-c", "in", 0x3002, true))).0, 201);
    assert_eq!(call(&st, "POST", "/api/v1/sas", Some(udp("stay-c", "out", 0x3003, false))).0, 201);
    let (s, v) = call(&st, "GET", "/api/v1/sas/to-b", None);
    assert_eq!((s, v["encap"].as_str()), (200, Some("none")));
    let mut bad = udp("bad", "out", 0x3004, false);
    bad["encap"] = json!("tcp");
    let (s, v) = call(&st, "POST", "/api/v1/sas", Some(bad));
    assert_eq!((s, v["field"].as_str()), (400, Some("encap")), "{v}");

    // Packets went out under the old mapping.
    let out_id = st.store().find_sa("out-c").unwrap().0;
    let seq_before = {
        let store = st.store();
        let e = store.db().sas().find(|e| e.id == out_id).unwrap().clone();
        e.sa.reserve(10).unwrap();
        e.sa.usage().next_seq
    };
    let in_id = st.store().find_sa("in-c").unwrap().0;
    let to: std::net::IpAddr = "203.0.113.50".parse().unwrap();
    let f = st.store().follow_nat(in_id, (to, 31000)).expect("a change");
    assert_eq!(f.sa, "in-c");
    assert_eq!(f.from, (Some("198.51.100.7".parse().unwrap()), 4500));
    assert_eq!(f.followed, vec!["out-c".to_string(), "in-c".to_string()], "by id");
    for name in ["out-c", "in-c"] {
        let (_, v) = call(&st, "GET", &format!("/api/v1/sas/{name}"), None);
        assert_eq!((v["remote"].as_str(), v["remote_port"].as_u64()), (Some("203.0.113.50"), Some(31000)), "{name}");
    }
    let (_, v) = call(&st, "GET", "/api/v1/sas/stay-c", None);
    assert_eq!(v["remote"].as_str(), Some("198.51.100.7"), "without nat_follow it stays");
    // Same key: the counter continues (no nonce reuse), the id is the same.
    {
        let store = st.store();
        let e = store.db().sas().find(|e| e.id == out_id).unwrap();
        assert_eq!(e.sa.usage().next_seq, seq_before);
        assert_eq!(e.sa.mode(), espgw_core::esp::Mode::Tunnel { local: "192.0.2.1".parse().unwrap(), remote: to });
    }
    // A late report of the same mapping changes nothing.
    assert_eq!(st.store().follow_nat(in_id, (to, 31000)), None);
}

/// `/api/v1/ike` lists the connections and IKE SAs (never the PSK) and
/// drives the daemon: initiate sends IKE_SA_INIT through the workers'
/// queue, rekey without an established SA is a conflict, unknown names 404.
#[test]
fn ike_endpoints_list_and_command_the_daemon() {
    let psk = "an-ike-psk-that-never-leaves";
    let text = base_config().replacen("role = \"protected\"", "role = \"protected\"\naddresses = [\"192.0.2.1\"]", 1)
        + &format!(
            "[[connection]]\nname = \"east\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.9\"\npsk = \"{psk}\"\n\
             local_ts = [\"10.9.1.0/24\"]\nremote_ts = [\"10.9.2.0/24\"]\n"
        );
    let cfg = Config::parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let queues = espgw_core::pipeline::IkeQueues::new();
    let mut st = state(None);
    st.ike = Some(Mutex::new(crate::ike::daemon::Daemon::new(cfg.connections.clone(), queues.clone())));

    let (s, v) = call(&st, "GET", "/api/v1/ike", None);
    assert_eq!(s, 200);
    assert_eq!(v["connections"][0]["name"], "east");
    assert_eq!(v["connections"][0]["remote_ts"][0], "10.9.2.0/24");
    assert_eq!(v["ike_sas"], json!([]));
    assert!(!v.to_string().contains(psk));

    assert_eq!(call(&st, "POST", "/api/v1/ike/east/rekey", Some(json!({}))).0, 409);
    assert_eq!(call(&st, "POST", "/api/v1/ike/west/initiate", Some(json!({}))).0, 404);
    let (s, v) = call(&st, "POST", "/api/v1/ike/east/initiate", Some(json!({})));
    assert_eq!((s, &v["initiating"]), (202, &json!(true)));
    let d = queues.from_control.pop().expect("IKE_SA_INIT queued for a worker");
    assert_eq!((d.local.to_string(), d.remote.to_string()), ("192.0.2.1:500".into(), "198.51.100.9:500".into()));
    assert_eq!(d.payload()[18], 34, "exchange type IKE_SA_INIT");
    let (_, v) = call(&st, "GET", "/api/v1/ike", None);
    assert_eq!(
        (v["ike_sas"][0]["state"].as_str(), v["ike_sas"][0]["initiator"].as_bool()),
        (Some("connecting"), Some(true))
    );
    assert_eq!(v["counters"]["sent"], 1);
    let (s, v) = call(&st, "POST", "/api/v1/ike/east/terminate", Some(json!({})));
    assert_eq!((s, &v["terminated"]), (200, &json!(0)), "nothing established to delete");

    // Without connections: empty lists, commands 404.
    let plain = state(None);
    let (s, v) = call(&plain, "GET", "/api/v1/ike", None);
    assert_eq!((s, &v["connections"]), (200, &json!([])));
    assert_eq!(call(&plain, "POST", "/api/v1/ike/east/initiate", Some(json!({}))).0, 404);
}

/// The event stream's GET is the HTTP server's (it never ends); a HEAD
/// reaches the router and gets the stream's status and type, as the OpenAPI
/// document says (the API fuzzer once sent the router a GET and got an
/// undocumented 400).
#[test]
fn the_event_stream_through_the_router_is_a_documented_stream() {
    let st = state(None);
    for method in ["GET", "HEAD"] {
        let req = ApiRequest { method: method.into(), path: "/api/v1/events".into(), ..Default::default() };
        let r = handle(&st, &req);
        assert_eq!((r.status, r.content_type), (200, "text/event-stream"), "{method}: {}", r.body);
        check_response("GET", "/api/v1/events", r.status, r.content_type, &r.body).unwrap();
        assert!(r.body.lines().all(|l| l.is_empty() || l.starts_with(':')), "only SSE comments: {}", r.body);
    }
}

/// HEAD is answered as GET on every GET route (the server drops the body);
/// it was matched to the route and then refused with a 405 everywhere but
/// health and the OpenAPI document.
#[test]
fn head_answers_as_get_on_every_get_route() {
    let st = state(None);
    for (m, p) in ROUTES.iter().filter(|(m, _)| *m == "GET") {
        let path = p.replace("{name}", "to-b");
        let ask =
            |method: &str| handle(&st, &ApiRequest { method: method.into(), path: path.clone(), ..Default::default() });
        let (get, head) = (ask(m), ask("HEAD"));
        assert_eq!((head.status, head.content_type), (get.status, get.content_type), "HEAD {path}: {}", head.body);
        assert_ne!(head.status, 405, "HEAD {path}");
    }
}
