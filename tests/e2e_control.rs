//! The operator's side on the real binary: the HTTP API and `espgwctl`
//! changing policy under live traffic, `/metrics` scraped by a real
//! Prometheus server (and the Grafana dashboard's queries run through it),
//! DPDK telemetry, and control config errors.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use control::client::Endpoint;
use espgw_testkit::openapi::check_response;

fn espgwctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_espgwctl"))
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const TOKEN: &str = "test-token-5f1d0c2b9a8e7d6c";
const GCM_KEY: &str = "0x00112233445566778899aabbccddeeff01020304";

/// A gateway whose private port replays `in.pcap` forever (net_pcap
/// `infinite_rx`) and whose public port is a `net_null` sink.
fn gateway_config(s: &Scratch, test: &str, api_port: u16, token: bool, with_sa: bool) -> PathBuf {
    let frames = mixed_frames(64, 7);
    write_frames(&s.path("in.pcap"), &frames);
    let eal = eal_args_toml(test).replace(", \"--no-telemetry\"", "");
    // The control socket always; TCP (which always needs the token) when asked.
    let tcp_lines =
        if token { format!("listen = \"127.0.0.1:{api_port}\"\ntoken = \"{TOKEN}\"") } else { String::new() };
    let sa = if with_sa {
        format!(
            r#"
[[sa]]
name = "to-b"
direction = "out"
spi = 0x1001
algorithm = "aes128-gcm16"
enc_key = "{GCM_KEY}"
mode = "tunnel"
local = "192.0.2.1"
remote = "198.51.100.1"

[[eroute]]
name = "nets"
src = "10.0.0.0/8"
dst = "0.0.0.0/0"
action = "protect"
sa = "to-b"
"#
        )
    } else {
        String::new()
    };
    s.config(&format!(
        r#"
[eal]
{eal}

[workers]
cores = [1]

[policy]
default_outbound = "drop"

[control]
socket = "api.sock"
{tcp_lines}

[[port]]
name = "private"
device = "net_pcap0,rx_pcap={},infinite_rx=1"
role = "cleartext"
addresses = ["10.0.1.254"]
peer_mac = "02:00:00:00:00:01"

[[port]]
name = "public"
device = "net_null0,no-rx=1"
role = "protected"
addresses = ["192.0.2.1"]
peer_mac = "02:00:00:00:0b:01"

[[route]]
prefix = "0.0.0.0/0"
port = "public"
via = "198.51.100.1"
{sa}
"#,
        s.path("in.pcap").display()
    ))
}

/// A client for the API over its socket or TCP (control::client, what
/// espgwctl speaks); every answer is checked against the OpenAPI document.
struct Api {
    ep: Endpoint,
    token: Option<String>,
}

impl Api {
    fn socket(s: &Scratch) -> Api {
        Api { ep: Endpoint::Unix(s.path("api.sock")), token: None }
    }

    fn tcp(port: u16) -> Api {
        Api { ep: Endpoint::Tcp(format!("127.0.0.1:{port}")), token: Some(TOKEN.into()) }
    }

    /// espgwctl's arguments that reach this API.
    fn ctl_args(&self) -> Vec<String> {
        match &self.ep {
            Endpoint::Unix(p) => vec!["--socket".into(), p.display().to_string()],
            Endpoint::Tcp(h) => vec!["--api".into(), format!("http://{h}")],
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
        let b = body.map(|b| b.to_string().into_bytes());
        let a = control::client::request(
            &self.ep,
            method,
            path,
            self.token.as_deref(),
            b.as_deref(),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let (status, ct, body) = (a.status, a.content_type.clone(), a.text());
        if let Some(p) = control::api::route_pattern(method, path) {
            check_response(method, p, status, &ct, &body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        }
        (status, ct, body)
    }

    fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.request("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Wait until the API answers (the gateway is up).
    fn wait_up(&self, child: &mut Child) {
        let t = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("espgw exited early: {st}");
            }
            let r = control::client::request(
                &self.ep,
                "GET",
                "/api/v1/health",
                self.token.as_deref(),
                None,
                Duration::from_secs(2),
            );
            if r.is_ok_and(|a| a.status == 200) {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "the API did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn ctl(api: &Api, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(espgwctl_bin());
    c.args(api.ctl_args());
    if let Some(t) = &api.token {
        c.env("ESPGW_TOKEN", t);
    }
    let out = c.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `espgwctl sa add NAME` for an outbound AES-128-GCM tunnel SA 192.0.2.1 ->
/// 198.51.100.1 with the test key, plus `extra` flags.
fn gcm_sa_args<'a>(name: &'a str, spi: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["sa", "add", name, "--direction", "out", "--spi", spi, "--algorithm", "aes128-gcm16"];
    v.extend(["--enc-key", GCM_KEY, "--mode", "tunnel", "--local", "192.0.2.1", "--remote", "198.51.100.1"]);
    v.extend_from_slice(extra);
    v
}

/// Follow the event stream over `api` (status checked here); each event's
/// JSON arrives on the channel.
fn listen_events(api: &Api) -> std::sync::mpsc::Receiver<Value> {
    let (status, mut r) = control::client::stream(&api.ep, "/api/v1/events", api.token.as_deref()).unwrap();
    assert_eq!(status, 200);
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) > 0 {
            if let Some(d) = line.trim_end().strip_prefix("data: ") {
                if tx.send(serde_json::from_str(d).unwrap()).is_err() {
                    return;
                }
            }
            line.clear();
        }
    });
    rx
}

fn sa_packets(api: &Api, name: &str) -> Option<u64> {
    let sas = api.get("/api/v1/sas");
    sas.as_array().unwrap().iter().find(|s| s["name"] == name).map(|s| s["state"]["packets"].as_u64().unwrap())
}

fn drops(api: &Api, reason: &str) -> u64 {
    api.get("/api/v1/stats")["drops"][reason].as_u64().unwrap()
}

/// Poll until `f` holds (traffic moves asynchronously).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Live policy changes through `espgwctl`: traffic is dropped by default,
/// flows once an SA and an eroute are added, and stops (counted) when the SA
/// is deleted. Every API answer on the way matches the OpenAPI document.
#[test]
fn live_sa_add_and_delete_steer_traffic() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let port = free_port();
    let cfg = gateway_config(&s, "ctl-live", port, false, false);
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let api = Api::socket(&s);
    api.wait_up(&mut child);

    // No policy: everything is dropped by the default, and counted.
    eventually("default drops", || drops(&api, "policy_drop") > 1000);
    let health = api.get("/api/v1/health");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["sas"], 0);

    // Add an SA and an eroute with the CLI: traffic flows as ESP.
    let (rc, out, err) = ctl(&api, &gcm_sa_args("to-b", "0x1001", &[]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("esp0x1001@198.51.100.1"), "{out}");
    let (rc, out, err) = ctl(
        &api,
        &["eroute", "add", "nets", "--src", "10.0.0.0/8", "--dst", "0.0.0.0/0", "--action", "protect", "--sa", "to-b"],
    );
    assert_eq!(rc, 0, "{out}{err}");
    eventually("ESP through the new SA", || sa_packets(&api, "to-b").unwrap_or(0) > 1000);
    let ports = api.get("/api/v1/ports");
    let public = ports.as_array().unwrap().iter().find(|p| p["name"] == "public").unwrap();
    assert!(public["tx_packets"].as_u64().unwrap() > 1000, "{public}");
    assert!(api.get("/api/v1/stats")["events"]["encrypted"].as_u64().unwrap() > 1000);
    let pmtu = api.get("/api/v1/pmtu");
    assert_eq!(pmtu[0]["sa"], "to-b");
    assert_eq!(pmtu[0]["effective"], 1500, "{pmtu}");

    // The CLI's views: tables for people, JSON for scripts; keys never shown.
    let (rc, look, _) = ctl(&api, &["look"]);
    assert_eq!(rc, 0);
    for want in ["eroutes:", "nets", "10.0.0.0/8 -> 0.0.0.0/0", "to-b (esp0x1001@198.51.100.1)", "path MTU:", "public"]
    {
        assert!(look.contains(want), "look lacks {want:?}:\n{look}");
    }
    let (rc, json, _) = ctl(&api, &["--json", "sa", "list"]);
    assert_eq!(rc, 0);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["enc_key"], "<redacted>");
    let (_, show, _) = ctl(&api, &["sa", "show", "to-b"]);
    assert!(!show.contains("00112233445566778899aabbccddeeff"), "a key was printed:\n{show}");
    for want in
        ["spi_hex        0x00001001", "drops          auth=0 lifetime=0 malformed=0 policy=0 replay=0", "replay_top"]
    {
        assert!(show.contains(want), "sa show lacks {want:?}:\n{show}");
    }
    // --watch repeats a read-only command; writes are refused.
    let (rc, watched, err) = ctl(&api, &["--watch", "0.2", "--watch-count", "2", "sa", "list"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(watched.matches("every 0.2s: espgwctl").count(), 2, "{watched}");
    assert_eq!(ctl(&api, &["--watch", "1", "sa", "del", "to-b"]).0, 2, "--watch with a write is a usage error");
    let (rc, stats, _) = ctl(&api, &["stats"]);
    assert!(rc == 0 && stats.contains("WORKER") && stats.contains("policy_drop"), "{stats}");

    // Exit codes scripts can rely on.
    assert_eq!(ctl(&api, &["sa", "show", "ghost"]).0, 3, "not found");
    assert_eq!(ctl(&api, &["sa", "del", "to-b"]).0, 4, "in use: conflict");
    let (rc, _, err) = ctl(
        &api,
        &[
            "sa",
            "add",
            "bad",
            "--direction",
            "out",
            "--spi",
            "0x1002",
            "--algorithm",
            "aes128-gcm16",
            "--enc-key",
            "0x00",
            "--mode",
            "transport",
        ],
    );
    assert_eq!(rc, 5, "rejected input");
    assert!(err.contains("enc_key"), "{err}");
    let (rc, _, _) = Command::new(espgwctl_bin())
        .args(["--api", &format!("http://127.0.0.1:{}", free_port()), "health"])
        .output()
        .map(|o| (o.status.code().unwrap(), (), ()))
        .unwrap();
    assert_eq!(rc, 7, "unreachable");

    // Delete the SA (forced: its eroute becomes trap). Traffic stops and is counted.
    let (rc, out, err) = ctl(&api, &["sa", "del", "to-b", "--force"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("trap"), "{out}");
    let encrypted_then = api.get("/api/v1/stats")["events"]["encrypted"].as_u64().unwrap();
    eventually("trap drops", || drops(&api, "policy_trap") > 1000);
    std::thread::sleep(Duration::from_millis(300));
    let encrypted_now = api.get("/api/v1/stats")["events"]["encrypted"].as_u64().unwrap();
    assert!(encrypted_now - encrypted_then < 64, "encryption went on after the SA was deleted");
    assert_eq!(sa_packets(&api, "to-b"), None);

    // The metrics endpoint is in the contract too.
    let (status, ct, metrics) = api.request("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"));
    assert!(metrics.contains("espgw_drops_total{reason=\"policy_trap\",worker=\"0\"}"), "{metrics}");
    // HEAD is GET's headers, over the real server too (the event stream's
    // HEAD included: the server streams only a GET).
    for path in ["/metrics", "/api/v1/sas", "/api/v1/events"] {
        let (status, ct, body) = api.request("HEAD", path, None);
        let (get_status, get_ct) = if path == "/api/v1/events" {
            (200, "text/event-stream".to_string())
        } else {
            let (s, c, _) = api.request("GET", path, None);
            (s, c)
        };
        assert_eq!((status, ct.as_str(), body.as_str()), (get_status, get_ct.as_str(), ""), "HEAD {path}");
    }

    let run = stop_espgw(child, &report);
    run.assert_ok();
    // Every change made through the API left one audit line naming who
    // (the socket peer's uid) and what, never the key.
    let audit: Vec<&str> = run.stderr.lines().filter(|l| l.contains("espgw::audit")).collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("POST") && l.contains("/api/v1/sas") && l.contains("uid ") && l.contains("applied")),
        "{}",
        run.stderr
    );
    assert!(audit.iter().any(|l| l.contains("DELETE") && l.contains("/api/v1/sas/to-b")), "{}", run.stderr);
    assert!(audit.iter().any(|l| l.contains("refused") && l.contains("status=400")), "{}", run.stderr);
    assert!(!run.stderr.contains(&GCM_KEY[2..]) && !run.stdout.contains(&GCM_KEY[2..]), "a key was logged");
}

/// A Prometheus query through its HTTP API.
fn prom_query(base: &str, expr: &str) -> Value {
    let r = ureq::get(&format!("{base}/api/v1/query")).query("query", expr).timeout(Duration::from_secs(10)).call();
    let body = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.into_string().unwrap(),
        Err(e) => panic!("prometheus: {e}"),
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "query {expr}: {body}");
    v["data"]["result"].clone()
}

fn prom_value(result: &Value) -> f64 {
    result[0]["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every PromQL expression in the Grafana dashboard, with its variables set
/// to match everything.
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap();
            let e = e
                .replace("$__rate_interval", "10s")
                .replace("$sa", ".*")
                .replace("$job", ".*")
                .replace("$instance", ".*")
                .replace("$port", ".*")
                .replace("$worker", ".*");
            out.push((p["title"].as_str().unwrap().to_string(), e));
        }
    }
    out
}

/// A real Prometheus server scrapes `/metrics` (with the bearer token) and
/// the test reads values back through Prometheus's query API; then every
/// query of the shipped Grafana dashboard runs against it and returns data.
#[test]
fn prometheus_scrapes_espgw_and_the_dashboard_queries_work() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let port = free_port();
    let cfg = gateway_config(&s, "ctl-prom", port, true, true);
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let api = Api::tcp(port);
    api.wait_up(&mut child);

    let prom_port = free_port();
    std::fs::write(
        s.path("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: espgw\n    authorization:\n      type: Bearer\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/espgw-alerts.yml").display()
        ),
    )
    .unwrap();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", s.path("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", s.path("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prometheus is installed (apt-get install prometheus; scripts/deps.sh does it)");
    let _prom = KillOnDrop(prom);
    let base = format!("http://127.0.0.1:{prom_port}");

    // Scrapes succeed (with the token) and the SA's packets arrive.
    eventually("prometheus sees espgw up with SA traffic", || {
        let up = ureq::get(&format!("{base}/api/v1/query")).query("query", "up{job=\"espgw\"}").call();
        if up.is_err() {
            return false;
        }
        let r = prom_query(&base, "espgw_sa_packets_total{sa=\"to-b\",direction=\"out\"}");
        !r.as_array().unwrap().is_empty() && prom_value(&r) > 0.0
    });
    assert_eq!(prom_value(&prom_query(&base, "up{job=\"espgw\"}")), 1.0, "scrape with the bearer token works");
    assert_eq!(prom_value(&prom_query(&base, "espgw_sa_path_mtu_bytes{sa=\"to-b\"}")), 1500.0);
    assert_eq!(prom_value(&prom_query(&base, "espgw_port_mtu_bytes{port=\"public\"}")), 1500.0);
    assert!(prom_value(&prom_query(&base, "sum(espgw_port_tx_packets_total{port=\"public\"})")) > 0.0);
    assert!(prom_value(&prom_query(&base, "espgw_esp_encrypted_packets_total")) > 0.0);
    assert!(
        prom_value(&prom_query(&base, "espgw_fragments_created_total")) > 0.0,
        "big frames are fragmented after encryption"
    );
    assert!(prom_value(&prom_query(&base, "espgw_icmp_too_big_sent_total")) > 0.0, "DF frames get need-frag");
    assert!(prom_value(&prom_query(&base, "sum(espgw_drops_total{reason=\"too_big_df\"})")) > 0.0);
    assert!(prom_value(&prom_query(&base, "espgw_mempool_mbufs{pool=\"mbufs\"}")) > 1000.0);
    let busy = prom_value(&prom_query(&base, "espgw_worker_busy_ratio{worker=\"0\"}"));
    assert!((0.0..=1.0).contains(&busy), "{busy}");
    // Replay drops are counted once: as drop reasons, not in a second metric.
    assert!(prom_query(&base, "espgw_replay_drops_total").as_array().unwrap().is_empty());
    assert_eq!(prom_query(&base, "espgw_drops_total{reason=~\"replay_.*\"}").as_array().unwrap().len(), 2);
    assert_eq!(prom_value(&prom_query(&base, "espgw_sas{direction=\"out\",state=\"active\"}")), 1.0);
    // The shipped alert rules load and evaluate against the real series.
    let shipped = include_str!("../configs/espgw-alerts.yml").matches("- alert: ").count();
    eventually("prometheus evaluates the shipped alert rules", || {
        let v: Value = ureq::get(&format!("{base}/api/v1/rules")).call().unwrap().into_json().unwrap();
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        let rules: Vec<&Value> = groups.iter().flat_map(|g| g["rules"].as_array().unwrap().iter()).collect();
        rules.len() == shipped && rules.iter().all(|r| r["health"] == "ok")
    });

    // An SA with a time limit, so the expiry panels have data.
    let (st, _, body) = api.request(
        "POST",
        "/api/v1/sas",
        Some(&serde_json::json!({
            "name": "timed", "direction": "out", "spi": 0x7777, "algorithm": "aes128-gcm16",
            "enc_key": "0x77777777777777777777777777777777deadbeef", "mode": "tunnel",
            "local": "192.0.2.1", "remote": "198.51.100.9",
            "hard_seconds": 3600,
        })),
    );
    assert_eq!(st, 201, "{body}");

    // The dashboard's queries, after enough scrapes for rate() windows.
    std::thread::sleep(Duration::from_secs(3));
    let dash = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/grafana-espgw.json");
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 8, "{queries:?}");
    for (title, q) in &queries {
        let r = prom_query(&base, q);
        assert!(!r.as_array().unwrap().is_empty(), "dashboard panel {title:?}: {q} returned no data");
    }

    // Without the token Prometheus would fail: espgw answers 401 there.
    let r = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))));

    let run = stop_espgw(child, &report);
    run.assert_ok();
}

/// The Grafana dashboard: valid JSON, its datasource a variable, and every
/// metric its queries name is one espgw exports.
#[test]
fn grafana_dashboard_uses_a_datasource_variable_and_real_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/grafana-espgw.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["type"] == "datasource").expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    // Metric names are in metrics.rs, and the events' in their one list in the core.
    let metrics_src = [include_str!("../control/src/metrics.rs"), include_str!("../core/src/stats.rs")].concat();
    let mut titles = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        titles.push(p["title"].as_str().unwrap().to_lowercase());
        assert_eq!(p["datasource"]["uid"].as_str(), Some(ds_ref.as_str()), "panel {}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"].as_str(), Some(ds_ref.as_str()));
            let e = t["expr"].as_str().unwrap();
            for name in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("espgw_"))
            {
                assert!(metrics_src.contains(&format!("\"{name}\"")), "panel {}: unknown metric {name}", p["title"]);
            }
        }
    }
    for want in ["port", "sa", "drops", "path mtu", "worker"] {
        assert!(titles.iter().any(|t| t.contains(want)), "no panel about {want}: {titles:?}");
    }
}

/// Ask DPDK's telemetry socket of `prefix` (with `dpdk-telemetry.py`, as an
/// operator would) each command; the answers as JSON, once all came.
fn telemetry(prefix: &str, cmds: &[&str]) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let mut c = Command::new("dpdk-telemetry.py")
            .args(["-f", prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dpdk-telemetry.py (package dpdk)");
        use std::io::Write;
        c.stdin.take().unwrap().write_all(format!("{}\n", cmds.join("\n")).as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let answers: Vec<Value> = text
            .lines()
            .filter_map(|l| l.find('{').map(|i| &l[i..]))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| cmds.iter().any(|c| v.get(c.split(',').next().unwrap()).is_some()))
            .collect();
        if answers.len() == cmds.len() {
            return answers;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "telemetry did not answer {cmds:?}: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dpdk-telemetry.py` shows the gateway: DPDK's own `/ethdev/list` and
/// espgw's `/espgw/...` commands, answered by the control thread.
#[test]
fn dpdk_telemetry_shows_the_gateway() {
    let s = Scratch::new();
    let prefix = file_prefix("telemetry");
    let cfg = s.config(&format!(
        r#"
[eal]
args = ["--no-pci", "--no-huge", "-m", "256", "--file-prefix", "{prefix}", "--log-level", "*:error"]
[workers]
cores = [0]
idle_sleep_us = 100
[control]
socket = "api.sock"
[[port]]
name = "a"
device = "net_null0,no-rx=1"
role = "cleartext"
[[port]]
name = "b"
device = "net_null1,no-rx=1"
role = "protected"
[[sa]]
name = "to-b"
direction = "out"
spi = 0x1001
algorithm = "aes128-gcm16"
enc_key = "{GCM_KEY}"
mode = "tunnel"
local = "192.0.2.1"
remote = "198.51.100.1"
hard_bytes = 1000000
[[eroute]]
name = "nets"
src = "10.0.1.0/24"
dst = "10.0.2.0/24"
action = "protect"
sa = "to-b"
"#
    ));
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    Api::socket(&s).wait_up(&mut child);
    let a = telemetry(
        &prefix,
        &[
            "/ethdev/list",
            "/espgw/sa/list",
            "/espgw/sa/info,to-b",
            "/espgw/eroute/list",
            "/espgw/stats",
            "/help,/espgw/sa/info",
        ],
    );
    assert_eq!(a[0]["/ethdev/list"], serde_json::json!([0, 1]));
    assert_eq!(a[1]["/espgw/sa/list"], serde_json::json!(["to-b"]));
    let info = &a[2]["/espgw/sa/info"];
    assert_eq!(info["spi_hex"], "0x00001001", "{info}");
    assert_eq!(info["direction"], "out");
    assert_eq!(info["bytes_left"], 1_000_000);
    assert_eq!(info["drops_replay"], 0);
    assert!(!info.to_string().contains("0011223344"), "no key material: {info}");
    assert_eq!(a[3]["/espgw/eroute/list"], serde_json::json!(["nets"]));
    let stats = &a[4]["/espgw/stats"];
    assert_eq!((stats["sas"].as_u64(), stats["eroutes"].as_u64()), (Some(1), Some(1)), "{stats}");
    assert!(stats["uptime_s"].is_u64());
    assert!(a[5]["/help"].to_string().contains("SA name"), "{}", a[5]);
    let unknown = telemetry(&prefix, &["/espgw/sa/info,nope"]);
    assert!(unknown[0]["/espgw/sa/info"]["error"].as_str().unwrap().contains("nope"));
    let run = stop_espgw(child, &report);
    run.assert_ok();
}

/// With `eal.capture`, `dpdk-dumpcap` attaches to a running espgw (rte_pdump,
/// over the multi-process channel) and captures what a port receives. The
/// port is a net_tap whose traffic the test sends itself, so the capture
/// ends when the traffic does (see `eal.capture` in espgw.toml(5) for why
/// that matters on DPDK 22.11).
#[test]
fn dpdk_dumpcap_captures_a_running_gateway() {
    let _heavy = heavy_test_lock();
    ensure_hugepages(128);
    let s = Scratch::new();
    let prefix = file_prefix("dumpcap");
    let iface = format!("egc{}", std::process::id() % 100_000);
    let mut rng = Rng::new(7);
    let frames: Vec<Vec<u8>> = (0..8u16)
        .map(|i| udp4_frame(100 + i as usize, [10, 0, 1, 2], [10, 0, 2, 2], 5000 + i, 9, i, false, &mut rng))
        .collect();
    let cfg = s.config(&format!(
        r#"
[eal]
args = ["--no-pci", "-m", "128", "--file-prefix", "{prefix}", "--log-level", "*:error", "--no-telemetry"]
capture = true
[mempool]
mbufs = 4095
[workers]
cores = [0]
idle_sleep_us = 1000
[[port]]
name = "a"
device = "net_tap0,iface={iface}"
role = "cleartext"
[[port]]
name = "b"
device = "net_null0,no-rx=1"
role = "cleartext"
[[forward]]
from = "a"
to = "b"
"#
    ));
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    // The kernel side of the tap: up, and quiet (no IPv6 chatter).
    let t = Instant::now();
    while !Path::new(&format!("/sys/class/net/{iface}")).exists() {
        assert!(child.try_wait().unwrap().is_none(), "espgw exited");
        assert!(t.elapsed() < Duration::from_secs(20), "no {iface}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
    assert!(Command::new("ip").args(["link", "set", &iface, "up"]).status().unwrap().success());

    let out = s.path("cap.pcapng");
    // Line-buffered (stdbuf), so its "Capturing on" arrives when printed.
    let mut dump = Command::new("stdbuf")
        .args(["-oL", "dpdk-dumpcap"])
        .arg(format!("--file-prefix={prefix}"))
        .args(["-i", "net_tap0", "-c", &frames.len().to_string(), "-w"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(s.path("dumpcap.err")).unwrap())
        .spawn()
        .expect("dpdk-dumpcap (package dpdk-dev)");
    // It prints "Capturing on 'net_tap0'" once the primary's callbacks are in.
    let mut said = std::io::BufReader::new(dump.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Capturing on") {
        line.clear();
        if std::io::BufRead::read_line(&mut said, &mut line).unwrap() == 0 {
            panic!("dpdk-dumpcap ended: {}", std::fs::read_to_string(s.path("dumpcap.err")).unwrap_or_default());
        }
    }
    // Send the frames into the tap from the kernel side (AF_PACKET).
    let hex: Vec<String> = frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect()).collect();
    let py = format!(
        "import socket,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{iface}',0))\n\
         for h in {hex:?}:\n    s.send(bytes.fromhex(h)); time.sleep(0.05)\n"
    );
    assert!(Command::new("python3").args(["-c", &py]).status().unwrap().success());
    let t = Instant::now();
    let st = loop {
        if let Some(st) = dump.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "dpdk-dumpcap did not see the frames");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        st.success(),
        "dpdk-dumpcap failed: {}",
        std::fs::read_to_string(s.path("dumpcap.err")).unwrap_or_default()
    );
    // pcapng: a section header block, and the captured packets are our frames.
    let cap = std::fs::read(&out).unwrap();
    assert_eq!(&cap[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "a pcapng file");
    let found = frames.iter().filter(|f| cap.windows(f.len()).any(|w| w == &f[..])).count();
    assert_eq!(found, frames.len(), "every frame sent into the port is in the capture");
    let run = stop_espgw(child, &report);
    run.assert_ok();
}

/// Control-section errors stop the gateway before DPDK starts, and a taken
/// API address is a clear runtime error.
#[test]
fn control_config_errors() {
    let s = Scratch::new();
    let base = |control: &str| {
        format!(
            "[eal]\n{}\n[workers]\ncores = [0]\n[control]\n{control}\n[[port]]\nname = \"a\"\ndevice = \"net_null0,no-rx=1\"\nrole = \"cleartext\"\n",
            eal_args_toml("ctl-err")
        )
    };
    let cases = [
        ("listen = \"0.0.0.0:9470\"", "control.listen", "needs control.token"),
        ("listen = \"127.0.0.1:9470\"", "control.listen", "loopback too"),
        ("socket_group = \"no-such-group-here\"", "control.socket_group", "no group"),
        ("listen = \"localhost\"", "control.listen", "not an address:port"),
        ("token = \"short\"\nlisten = \"127.0.0.1:1\"", "control.token", "at least 16"),
        ("token_file = \"missing.token\"", "control.token_file", "cannot read"),
    ];
    for (control, field, reason) in cases {
        let cfg = s.config(&base(control));
        let run = run_espgw(&s, &cfg, &[]);
        assert_eq!(run.code(), Some(2), "{control}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("espgw.toml:6: {field}: ")), "{control}: {}", run.stderr);
        assert!(run.stderr.contains(reason), "{}", run.stderr);
        assert!(!run.stderr.contains("EAL"), "DPDK must not start: {}", run.stderr);
    }
    // Off loopback with a token from a file: valid.
    std::fs::write(s.path("api.token"), "0123456789abcdef0123\n").unwrap();
    let cfg = s.config(&base("listen = \"0.0.0.0:9470\"\ntoken_file = \"api.token\""));
    let run = run_espgw(&s, &cfg, &["--check"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    // The address is taken: a clear error, exit 1.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = s.config(&base(&format!("listen = \"{}\"\ntoken = \"{TOKEN}\"", taken.local_addr().unwrap())));
    let run = run_espgw(&s, &cfg, &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("cannot listen on 127.0.0.1:"), "{}", run.stderr);
}

/// The shipped two-gateway pairs mirror each other: each side's outbound SA
/// is the other's inbound SA (SPI, algorithm, keys, endpoints swapped) and
/// the protected networks are each other's mirror image.
#[test]
fn shipped_gateway_pairs_mirror_each_other() {
    use control::config::Config;
    use espgw_core::esp::Mode;
    use espgw_core::policy::{Action, Direction};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for (a, b) in [("pair-west.toml", "pair-east.toml"), ("demo.toml", "demo-peer.toml")] {
        let ca = Config::load(&dir.join(a)).unwrap();
        let cb = Config::load(&dir.join(b)).unwrap();
        for (x, y, xn, yn) in [(&ca, &cb, a, b), (&cb, &ca, b, a)] {
            for out in x.sas.iter().filter(|s| s.direction() == Direction::Outbound) {
                let inb = y
                    .sas
                    .iter()
                    .find(|s| s.direction() == Direction::Inbound && s.cfg.spi == out.cfg.spi)
                    .unwrap_or_else(|| panic!("{yn} has no inbound SA for {xn}'s {}", out.name));
                assert_eq!(out.cfg.algorithm, inb.cfg.algorithm, "{xn} {}", out.name);
                assert_eq!(*out.cfg.enc_key, *inb.cfg.enc_key, "{xn} {}: keys differ", out.name);
                assert_eq!(*out.cfg.auth_key, *inb.cfg.auth_key, "{xn} {}", out.name);
                assert_eq!(out.cfg.esn, inb.cfg.esn, "{xn} {}", out.name);
                if let (Mode::Tunnel { local, remote }, Mode::Tunnel { local: il, remote: ir }) =
                    (out.cfg.mode, inb.cfg.mode)
                {
                    assert_eq!((local, remote), (ir, il), "{xn} {}: endpoints are not swapped in {yn}", out.name);
                    assert_eq!(inb.bind(), Some(remote), "{yn} {} must be bound to its own address", inb.name);
                }
                // The traffic it protects is what the peer's inbound SA accepts.
                let er = x
                    .eroutes
                    .iter()
                    .find(|e| matches!(e.eroute.action, Action::Protect { sa, .. } if sa == out.id))
                    .unwrap();
                let control::config::SaRoleSpec::Inbound {
                    check: control::config::InboundCheck::Eroutes(names), ..
                } = &inb.role
                else {
                    panic!("{yn} {} checks no eroute", inb.name)
                };
                let peer_er = y.eroutes.iter().find(|e| e.name == names[0]).unwrap();
                assert_eq!(
                    er.eroute.selector,
                    peer_er.eroute.selector.mirrored(),
                    "{xn} {} vs {yn} {}",
                    er.name,
                    peer_er.name
                );
            }
        }
    }
}

/// The event stream a key daemon listens to, on the real binary: a `%trap`
/// eroute hit under traffic gives (rate-limited) ACQUIREs with the packet's
/// selectors; an SA reaching its soft and hard packet limits gives one event
/// each; API changes give `config_change`; `espgwctl events` prints them.
#[test]
fn events_report_acquires_expiry_and_changes() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let cfg = gateway_config(&s, "ctl-events", free_port(), false, false);
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let api = Api::socket(&s);
    api.wait_up(&mut child);

    // Listen first: over the socket with the library client, and with espgwctl.
    let rx = listen_events(&api);
    let ctl_events = Command::new(espgwctl_bin())
        .args(api.ctl_args())
        .args(["events", "--types", "acquire", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // A trap eroute over the replayed traffic.
    let (rc, out, err) =
        ctl(&api, &["eroute", "add", "wanted", "--src", "10.0.0.0/8", "--dst", "0.0.0.0/0", "--action", "trap"]);
    assert_eq!(rc, 0, "{out}{err}");
    let mut seen: Vec<Value> = Vec::new();
    let mut wait_for = |what: &str, f: &dyn Fn(&Value) -> bool| -> Value {
        let t = Instant::now();
        loop {
            if let Some(v) = seen.iter().find(|v| f(v)) {
                return v.clone();
            }
            let left =
                Duration::from_secs(15).checked_sub(t.elapsed()).unwrap_or_else(|| panic!("no {what}: {seen:?}"));
            if let Ok(v) = rx.recv_timeout(left) {
                seen.push(v);
            }
        }
    };
    let change = wait_for("config_change", &|v| v["type"] == "config_change");
    assert_eq!((change["method"].as_str(), change["path"].as_str()), (Some("POST"), Some("/api/v1/eroutes")));
    let acq = wait_for("acquire", &|v| v["type"] == "acquire");
    assert_eq!(acq["eroute"], "wanted");
    assert!(acq["src"].as_str().unwrap().starts_with("10."), "{acq}");
    assert!(acq["proto"].as_u64().is_some() && acq["dst"].is_string(), "{acq}");
    std::thread::sleep(Duration::from_millis(1500));
    let out = ctl_events.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.starts_with("acquire") && printed.contains("eroute=wanted"), "{printed}");

    // An SA with packet limits: soft, then hard expiry, one event each.
    let (rc, out, err) =
        ctl(&api, &gcm_sa_args("short", "0x3001", &["--soft-packets", "20000", "--hard-packets", "40000"]));
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = ctl(
        &api,
        &[
            "eroute",
            "add",
            "wanted",
            "--replace",
            "--src",
            "10.0.0.0/8",
            "--dst",
            "0.0.0.0/0",
            "--action",
            "protect",
            "--sa",
            "short",
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let soft = wait_for("soft expiry", &|v| v["type"] == "sa_soft_expired");
    assert_eq!((soft["sa"].as_str(), soft["limit"].as_str()), (Some("short"), Some("packets")));
    let hard = wait_for("hard expiry", &|v| v["type"] == "sa_hard_expired");
    assert_eq!(hard["sa"], "short");
    std::thread::sleep(Duration::from_millis(1500));
    while let Ok(v) = rx.try_recv() {
        seen.push(v);
    }
    let hards = seen.iter().filter(|v| v["type"] == "sa_hard_expired").count();
    assert_eq!(hards, 1, "one event per expiry: {seen:?}");
    let seqs: Vec<u64> = seen.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events in order: {seqs:?}");

    let run = stop_espgw(child, &report);
    run.assert_ok();
    assert!(run.stderr.contains("espgw::event"), "events are logged too");
}

/// `kill -HUP` re-reads the config: added SAs and eroutes appear (as API
/// changes would), an unchanged SA keeps its counters, a broken file is
/// logged with file:line and changes nothing, removed ones go.
#[test]
fn sighup_reloads_the_config_file() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let cfg = gateway_config(&s, "ctl-hup", free_port(), false, true);
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let api = Api::socket(&s);
    api.wait_up(&mut child);
    eventually("ESP through to-b", || sa_packets(&api, "to-b").unwrap_or(0) > 1000);
    let hup = |child: &Child| {
        let st = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
        assert!(st.success());
    };
    let original = std::fs::read_to_string(&cfg).unwrap();
    let with_c = format!(
        "{original}\n[[sa]]\nname = \"to-c\"\ndirection = \"out\"\nspi = 0x1009\nalgorithm = \"aes128-gcm16\"\n\
         enc_key = \"0x{}\"\nmode = \"tunnel\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.9\"\n\n\
         [[eroute]]\nname = \"c-nets\"\nsrc = \"10.0.0.0/8\"\ndst = \"10.99.0.0/16\"\naction = \"protect\"\nsa = \"to-c\"\n",
        "ab".repeat(20)
    );
    std::fs::write(&cfg, &with_c).unwrap();
    let before = sa_packets(&api, "to-b").unwrap();
    hup(&child);
    eventually("to-c added by the reload", || sa_packets(&api, "to-c").is_some());
    assert_eq!(api.get("/api/v1/eroutes/c-nets")["sa"], "to-c");
    assert!(sa_packets(&api, "to-b").unwrap() >= before, "to-b was left alone (counters kept)");

    // A broken file: logged with file:line, nothing changes, still running.
    std::fs::write(
        &cfg,
        with_c.replace("algorithm = \"aes128-gcm16\"\nenc_key = \"0xabab", "algorithm = \"rot13\"\nenc_key = \"0xabab"),
    )
    .unwrap();
    hup(&child);
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP must not kill the gateway");
    assert!(sa_packets(&api, "to-c").is_some());

    // Back to the original: to-c and its eroute go.
    std::fs::write(&cfg, &original).unwrap();
    hup(&child);
    eventually("to-c removed by the reload", || sa_packets(&api, "to-c").is_none());
    let (status, _, _) = api.request("GET", "/api/v1/eroutes/c-nets", None);
    assert_eq!(status, 404);

    let run = stop_espgw(child, &report);
    run.assert_ok();
    assert!(run.stderr.contains("reload refused"), "{}", run.stderr);
    assert!(run.stderr.contains("espgw.toml:") && run.stderr.contains("rot13"), "file:line named: {}", run.stderr);
}

/// `espgwctl sa rekey` under full-rate traffic: the eroute moves to the new
/// SA in one step, nothing is dropped on the way (every drop counter stays
/// where it was), ESP leaves under the new SPI.
#[test]
fn rekey_under_traffic_loses_nothing() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let cfg = gateway_config(&s, "ctl-rekey", free_port(), false, true);
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let api = Api::socket(&s);
    api.wait_up(&mut child);
    eventually("ESP through to-b", || sa_packets(&api, "to-b").unwrap_or(0) > 10_000);
    // The replayed traffic has DF packets too big for the tunnel: those are
    // refused all along. Which reasons grow without a rekey?
    let by_reason = |api: &Api| -> std::collections::BTreeMap<String, u64> {
        let d = api.get("/api/v1/stats")["drops"].clone();
        d.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect()
    };
    let grew = |a: &std::collections::BTreeMap<String, u64>, b: &std::collections::BTreeMap<String, u64>| {
        b.iter().filter(|(k, v)| a.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect::<Vec<_>>()
    };
    let t0 = by_reason(&api);
    std::thread::sleep(Duration::from_millis(500));
    let steady = grew(&t0, &by_reason(&api));
    assert!(steady.iter().all(|r| !r.starts_with("policy") && !r.starts_with("sa_")), "{steady:?}");
    let drops_before = by_reason(&api);
    std::fs::write(s.path("new.key"), format!("0x{}\n", "5a".repeat(20))).unwrap();
    let (rc, out, err) = ctl(
        &api,
        &["sa", "rekey", "to-b", "--spi", "0x1005", "--enc-key", &format!("@{}", s.path("new.key").display())],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("esp0x1005@198.51.100.1"), "{out}");
    eventually("ESP under the new SPI", || {
        let v = api.get("/api/v1/sas/to-b");
        v["spi"] == 0x1005 && v["state"]["packets"].as_u64().unwrap() > 10_000
    });
    let after = grew(&drops_before, &by_reason(&api));
    assert!(after.iter().all(|r| steady.contains(r)), "drops caused by the rekey: {after:?} (steady: {steady:?})");
    let run = stop_espgw(child, &report);
    run.assert_ok();
    assert!(!run.stderr.contains(&"5a".repeat(20)), "the new key was logged");
}

/// Time lifetimes (seconds since added, XFRM's add_time): under traffic the
/// SA shows the time left, raises soft then hard expiry by "time" (one event
/// each), and once hard-expired carries nothing more.
#[test]
fn time_lifetimes_expire_sas() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let cfg = gateway_config(&s, "ctl-time", free_port(), false, true);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("remote = \"198.51.100.1\"\n", "remote = \"198.51.100.1\"\nsoft_seconds = 1\nhard_seconds = 3\n");
    std::fs::write(&cfg, text).unwrap();
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let api = Api::socket(&s);
    api.wait_up(&mut child);
    let rx = listen_events(&api);
    let v = api.get("/api/v1/sas/to-b");
    assert_eq!((v["soft_seconds"].as_u64(), v["hard_seconds"].as_u64()), (Some(1), Some(3)));
    assert!(v["state"]["seconds_left"].as_u64().unwrap() <= 3, "{v}");
    let mut got = Vec::new();
    let t = Instant::now();
    while !got.iter().any(|e: &Value| e["type"] == "sa_hard_expired") {
        assert!(t.elapsed() < Duration::from_secs(15), "no hard expiry: {got:?}");
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(500)) {
            got.push(e);
        }
    }
    let soft = got.iter().find(|e| e["type"] == "sa_soft_expired").expect("soft before hard");
    assert_eq!((soft["sa"].as_str(), soft["limit"].as_str()), (Some("to-b"), Some("time")));
    let hard = got.iter().find(|e| e["type"] == "sa_hard_expired").unwrap();
    assert_eq!(hard["limit"], "time");
    let at_expiry = sa_packets(&api, "to-b").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let v = api.get("/api/v1/sas/to-b");
    assert_eq!(v["state"]["hard_expired"], true);
    assert_eq!(v["state"]["seconds_left"], 0);
    assert!(v["state"]["packets"].as_u64().unwrap() <= at_expiry + 64, "an expired SA carries nothing more");
    let run = stop_espgw(child, &report);
    run.assert_ok();
}

/// 100 000 SAs: `espgwctl sa list` (human and JSON) and `look` page through
/// all of them over the socket.
#[test]
fn espgwctl_lists_100000_sas() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let cfg = gateway_config(&s, "ctl-100k", free_port(), false, false);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    const N: u32 = 100_000;
    for i in 0..N {
        text += &format!(
            "\n[[sa]]\nname = \"sa{i:06}\"\ndirection = \"out\"\nspi = {}\nalgorithm = \"aes128-gcm16\"\n\
             enc_key = \"0x{:032x}{i:08x}\"\nmode = \"tunnel\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.{}\"\n",
            0x10000 + i,
            u128::from(i) + 1,
            1 + i % 200
        );
    }
    std::fs::write(&cfg, text).unwrap();
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let api = Api::socket(&s);
    let t = Instant::now();
    while control::client::request(&api.ep, "GET", "/api/v1/health", None, None, Duration::from_secs(5))
        .map_or(true, |a| a.status != 200)
    {
        assert!(child.try_wait().unwrap().is_none(), "espgw exited");
        assert!(t.elapsed() < Duration::from_secs(120), "the API did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rc, out, err) = ctl(&api, &["sa", "list"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("sa")).count(), N as usize);
    let (rc, out, err) = ctl(&api, &["--json", "sa", "list"]);
    assert_eq!(rc, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), N as usize);
    assert_eq!((names[0], names[N as usize - 1]), ("sa000000", "sa099999"));
    let (rc, _, err) = ctl(&api, &["look"]);
    assert_eq!(rc, 0, "{err}");
    let v = api.get("/api/v1/sas?peer=198.51.100.7&limit=10000");
    assert_eq!(v.as_array().unwrap().len(), (N / 200) as usize);
    // /metrics stays small by default: totals plus the busiest SAs only.
    let m = control::client::request(&api.ep, "GET", "/metrics", None, None, Duration::from_secs(30)).unwrap();
    assert_eq!(m.status, 200);
    let body = String::from_utf8_lossy(&m.body);
    assert!(body.len() < 1_000_000, "/metrics is {} bytes at {N} SAs", body.len());
    assert!(body.contains("espgw_sas{direction=\"out\",state=\"active\"} 100000"), "totals cover every SA");
    assert!(body.contains(&format!("espgw_sa_series_omitted {}", N - 100)), "the cap is the default 100");
    let per_sa: std::collections::HashSet<&str> =
        body.lines().filter_map(|l| l.split("sa=\"").nth(1)).filter_map(|r| r.split('"').next()).collect();
    assert_eq!(per_sa.len(), 100, "series for 100 SAs");
    let run = stop_espgw(child, &report);
    run.assert_ok();
}

/// Manual pages and completions come from the CLIs themselves.
#[test]
fn man_pages_and_completions_are_generated() {
    let out = Command::new(espgw_bin()).arg("--man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH espgw 8"), "{page:.200}");
    assert!(page.contains("config") && page.contains("log\\-format"), "options are documented");
    // All three pages render with man(1), without warnings from groff.
    let dir = tempfile::tempdir().unwrap();
    for (name, bin, args) in [
        ("espgw.8", espgw_bin(), &["--man"][..]),
        ("espgwctl.8", espgwctl_bin(), &["man"][..]),
        ("espgw.toml.5", espgw_bin(), &["--man-config"][..]),
    ] {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{name}");
        let path = dir.path().join(name);
        std::fs::write(&path, &out.stdout).unwrap();
        let r = Command::new("man")
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_STDERR", "1")
            .arg("-l")
            .arg(&path)
            .output()
            .expect("man (package man-db)");
        let text = String::from_utf8_lossy(&r.stdout);
        assert!(r.status.success() && text.len() > 500, "man -l {name}: {}", String::from_utf8_lossy(&r.stderr));
        if name == "espgw.toml.5" {
            for key in ["replay_window", "pmtu_ageing_s", "top_sas", "token_file", "fragment_before_encryption"] {
                assert!(text.contains(key), "espgw.toml(5) documents {key}");
            }
        }
    }
    let out = Command::new(espgwctl_bin()).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && page.contains(".TH espgwctl 8") && page.contains("events"), "{page:.300}");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(espgwctl_bin()).args(["completion", shell]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("rekey") && text.contains("events"), "{shell}");
    }
}
