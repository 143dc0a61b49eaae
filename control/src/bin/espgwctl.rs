//! `espgwctl` — the operator's CLI over the espgw HTTP API, in the spirit of
//! KLIPS's `ipsec eroute`, `ipsec spi` and `ipsec look`.
//!
//! Human tables by default, `--json` for scripts. Exit codes scripts can trust:
//! 0 ok, 1 other error, 2 usage, 3 not found, 4 conflict, 5 rejected input,
//! 6 not authorised, 7 API unreachable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use control::client::{self, Answer, Endpoint};
use serde_json::{json, Map, Value};

/// Control an espgw gateway through its HTTP API.
#[derive(Parser, Debug)]
#[command(name = "espgwctl", version, about)]
struct Cli {
    /// The gateway's control socket.
    #[arg(long, env = "ESPGW_SOCKET", default_value = control::config::DEFAULT_CONTROL_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Use the TCP API at this URL (http://HOST:PORT) instead of the socket;
    /// it needs the bearer token.
    #[arg(long, env = "ESPGW_API", value_name = "URL")]
    api: Option<String>,
    /// Bearer token (always needed over TCP).
    #[arg(long, env = "ESPGW_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the bearer token from this file.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Repeat a read-only command (sa list/show, eroute list, stats, look,
    /// health) every SECS seconds, redrawing the screen, until interrupted.
    #[arg(long, global = true, value_name = "SECS")]
    watch: Option<f64>,
    /// With --watch: stop after this many rounds (scripts, tests).
    #[arg(long, global = true, value_name = "N", requires = "watch", hide = true)]
    watch_count: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Security associations (keys are never shown).
    Sa {
        #[command(subcommand)]
        cmd: SaCmd,
    },
    /// Eroutes: which traffic is protected by which SA.
    Eroute {
        #[command(subcommand)]
        cmd: ErouteCmd,
    },
    /// IKEv2: connections, IKE SAs and their child SAs, counters.
    Ike {
        #[command(subcommand)]
        cmd: IkeCmd,
    },
    /// Counters: ports, workers, drops by reason, SAs.
    Stats,
    /// Everything at a glance: eroutes → SAs → counters → path MTU.
    Look,
    /// Is the gateway up?
    Health,
    /// Print a shell completion script (e.g. `espgwctl completion bash >
    /// /usr/share/bash-completion/completions/espgwctl`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the espgwctl(8) manual page (roff).
    #[command(hide = true)]
    Man,
    /// Follow the event stream (SA expiry, %trap ACQUIREs, failures, links,
    /// config changes) until interrupted; one line per event.
    Events {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Only events of these types (comma-separated, e.g. acquire,sa_hard_expired).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SaCmd {
    /// List SAs with their counters.
    List,
    /// Show one SA.
    Show { name: String },
    /// Add an SA (or replace one with --replace: a rekey).
    Add(Box<SaAdd>),
    /// Rekey an SA make-before-break: new SPI and keys, same settings.
    /// Outbound: its eroutes move to the new SA, the old one goes. Inbound:
    /// the old one stays as NAME.prev for packets in flight until deleted.
    Rekey {
        name: String,
        /// The new SPI, decimal or 0x-hex.
        #[arg(long, value_parser = parse_u32)]
        spi: u32,
        /// The new key (hex; GCM: key + salt), or @FILE.
        #[arg(long, value_name = "HEX|@FILE")]
        enc_key: String,
        /// The new HMAC key (CBC), or @FILE.
        #[arg(long, value_name = "HEX|@FILE")]
        auth_key: Option<String>,
    },
    /// Delete an SA; --force turns eroutes that use it into trap.
    Del {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct SaAdd {
    name: String,
    /// Replace the existing SA of this name (rekey) instead of adding.
    #[arg(long)]
    replace: bool,
    /// Take the SA from a JSON file: fields as in a config [[sa]], or what
    /// `sa show --json` printed (state and redacted keys are ignored: give
    /// the keys with --enc-key/--auth-key); flags override.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    #[arg(long, value_parser = ["in", "out"])]
    direction: Option<String>,
    /// SPI, decimal or 0x-hex.
    #[arg(long, value_parser = parse_u32)]
    spi: Option<u32>,
    #[arg(long)]
    algorithm: Option<String>,
    /// ring, rustcrypto or auto.
    #[arg(long)]
    backend: Option<String>,
    /// Hex key (GCM: key + 4-byte salt), or @FILE to read it from a file.
    #[arg(long, value_name = "HEX|@FILE")]
    enc_key: Option<String>,
    /// Hex HMAC key, or @FILE.
    #[arg(long, value_name = "HEX|@FILE")]
    auth_key: Option<String>,
    #[arg(long, value_parser = ["tunnel", "transport"])]
    mode: Option<String>,
    #[arg(long)]
    local: Option<String>,
    #[arg(long)]
    remote: Option<String>,
    #[arg(long)]
    esn: bool,
    #[arg(long)]
    replay_window: Option<u32>,
    #[arg(long, value_parser = ["copy", "set", "clear"])]
    df: Option<String>,
    #[arg(long)]
    ttl: Option<u8>,
    /// Inbound: the eroute decrypted traffic must match.
    #[arg(long)]
    eroute: Option<String>,
    #[arg(long)]
    soft_bytes: Option<u64>,
    #[arg(long)]
    hard_bytes: Option<u64>,
    #[arg(long)]
    soft_packets: Option<u64>,
    #[arg(long)]
    hard_packets: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum IkeCmd {
    /// Connections, their IKE SAs (state, peer, NAT, child SPIs in/out) and the daemon's counters.
    List,
    /// Start an IKE SA and its child SA for a connection now.
    Initiate { connection: String },
    /// Delete the connection's IKE SAs (and their child SAs), telling the peer.
    Terminate { connection: String },
    /// Rekey the connection's child SAs now, make-before-break.
    Rekey { connection: String },
}

#[derive(Subcommand, Debug)]
enum ErouteCmd {
    /// List eroutes.
    List,
    /// Add an eroute (or replace one with --replace).
    Add(ErouteAdd),
    /// Delete an eroute.
    Del { name: String },
}

#[derive(Args, Debug)]
struct ErouteAdd {
    name: String,
    #[arg(long)]
    replace: bool,
    /// Source prefix, e.g. 10.0.1.0/24.
    #[arg(long)]
    src: String,
    /// Destination prefix.
    #[arg(long)]
    dst: String,
    /// any, tcp, udp, icmp, icmpv6, sctp, gre or a number.
    #[arg(long)]
    proto: Option<String>,
    /// Port or range (1000-2000).
    #[arg(long)]
    sport: Option<String>,
    #[arg(long)]
    dport: Option<String>,
    #[arg(long)]
    priority: Option<u32>,
    #[arg(long, value_parser = ["protect", "pass", "drop", "trap"])]
    action: String,
    /// Outbound SA for protect.
    #[arg(long)]
    sa: Option<String>,
    #[arg(long)]
    mss_clamp: bool,
    #[arg(long)]
    fragment_before_encryption: bool,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    control::config::parse_u32_field(s).ok_or_else(|| format!("{s:?} is not a 32-bit number"))
}

/// Exit codes.
mod exit {
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONFLICT: u8 = 4;
    pub const REJECTED: u8 = 5;
    pub const AUTH: u8 = 6;
    pub const UNREACHABLE: u8 = 7;
}

/// A failed call: what to print and which exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn other(message: impl Into<String>) -> Failure {
        Failure { code: exit::OTHER, message: message.into() }
    }
    fn usage(message: impl Into<String>) -> Failure {
        Failure { code: exit::USAGE, message: message.into() }
    }
}

struct Client {
    endpoint: Endpoint,
    token: Option<String>,
}

impl Client {
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, Failure> {
        let body = body.map(|b| b.to_string().into_bytes());
        let a = client::request(
            &self.endpoint,
            method,
            path,
            self.token.as_deref(),
            body.as_deref(),
            Duration::from_secs(30),
        )
        .map_err(|e| Failure {
            code: exit::UNREACHABLE,
            message: format!("cannot reach the API at {}: {e}", self.endpoint),
        })?;
        if a.status >= 300 {
            let text = a.text();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let reason = v["reason"].as_str().unwrap_or(text.trim());
            let field = v["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default();
            let code = match a.status {
                404 => exit::NOT_FOUND,
                409 => exit::CONFLICT,
                400 | 413 | 415 => exit::REJECTED,
                401 | 403 => exit::AUTH,
                _ => exit::OTHER,
            };
            return Err(Failure { code, message: format!("{}: {reason}{field}", a.status) });
        }
        Ok(a)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let a = self.send(method, path, body)?;
        serde_json::from_slice(&a.body).map_err(|e| Failure::other(format!("the answer is not JSON: {e}")))
    }

    /// Every page of a list endpoint, following `Link: rel="next"`.
    fn list(&self, path: &str) -> Result<Value, Failure> {
        let mut all = Vec::new();
        let mut next = Some(format!("{path}{}limit={}", if path.contains('?') { "&" } else { "?" }, PAGE));
        while let Some(p) = next {
            let a = self.send("GET", &p, None)?;
            let v: Value =
                serde_json::from_slice(&a.body).map_err(|e| Failure::other(format!("the answer is not JSON: {e}")))?;
            if let Value::Array(items) = v {
                all.extend(items);
            }
            next = a.next_page();
        }
        Ok(Value::Array(all))
    }
}

/// SAs or eroutes asked for per request when listing.
const PAGE: usize = 5000;

fn key_arg(v: &str) -> Result<String, Failure> {
    match v.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| Failure::other(format!("cannot read key file {path}: {e}"))),
        None => Ok(v.to_string()),
    }
}

fn sa_body(a: &SaAdd) -> Result<Value, Failure> {
    let mut m: Map<String, Value> = match &a.from {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| Failure::other(format!("{}: {e}", f.display())))?;
            match serde_json::from_str(&text).map(control::config::sa_input_from_view) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(Failure::other(format!("{}: expected a JSON object", f.display()))),
                Err(e) => return Err(Failure::other(format!("{}: {e}", f.display()))),
            }
        }
        None => Map::new(),
    };
    m.insert("name".into(), json!(a.name));
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put("direction", a.direction.as_ref().map(|v| json!(v)));
    put("spi", a.spi.map(|v| json!(v)));
    put("algorithm", a.algorithm.as_ref().map(|v| json!(v)));
    put("backend", a.backend.as_ref().map(|v| json!(v)));
    put("enc_key", a.enc_key.as_deref().map(key_arg).transpose()?.map(Value::String));
    put("auth_key", a.auth_key.as_deref().map(key_arg).transpose()?.map(Value::String));
    put("mode", a.mode.as_ref().map(|v| json!(v)));
    put("local", a.local.as_ref().map(|v| json!(v)));
    put("remote", a.remote.as_ref().map(|v| json!(v)));
    put("esn", a.esn.then_some(json!(true)));
    put("replay_window", a.replay_window.map(|v| json!(v)));
    put("df", a.df.as_ref().map(|v| json!(v)));
    put("ttl", a.ttl.map(|v| json!(v)));
    put("eroute", a.eroute.as_ref().map(|v| json!(v)));
    put("soft_bytes", a.soft_bytes.map(|v| json!(v)));
    put("hard_bytes", a.hard_bytes.map(|v| json!(v)));
    put("soft_packets", a.soft_packets.map(|v| json!(v)));
    put("hard_packets", a.hard_packets.map(|v| json!(v)));
    Ok(Value::Object(m))
}

fn eroute_body(a: &ErouteAdd) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(a.name));
    m.insert("src".into(), json!(a.src));
    m.insert("dst".into(), json!(a.dst));
    m.insert("action".into(), json!(a.action));
    for (k, v) in [("proto", &a.proto), ("sport", &a.sport), ("dport", &a.dport), ("sa", &a.sa)] {
        if let Some(v) = v {
            // Numbers go as numbers (a protocol number, a single port).
            m.insert(k.into(), v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)));
        }
    }
    if let Some(p) = a.priority {
        m.insert("priority".into(), json!(p));
    }
    if a.mss_clamp {
        m.insert("mss_clamp".into(), json!(true));
    }
    if a.fragment_before_encryption {
        m.insert("fragment_before_encryption".into(), json!(true));
    }
    Value::Object(m)
}

fn enc(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `esp0x1001@198.51.100.1`, KLIPS's SA identifier.
fn said(sa: &Value) -> String {
    let spi = sa["spi"].as_u64().unwrap_or(0);
    let dst = if sa["direction"] == "in" { &sa["local"] } else { &sa["remote"] };
    match dst.as_str() {
        Some(d) => format!("esp0x{spi:x}@{d}"),
        None => format!("esp0x{spi:x}"),
    }
}

/// Print rows as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l: String =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}  ", width = w[i])).collect::<String>();
        l.truncate(l.trim_end().len());
        l + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

fn sa_rows(sas: &[Value]) -> String {
    let rows: Vec<Vec<String>> = sas
        .iter()
        .map(|sa| {
            let st = &sa["state"];
            let ends = match (sa["local"].as_str(), sa["remote"].as_str()) {
                (Some(l), Some(r)) => format!("{l} -> {r}"),
                _ => "transport".into(),
            };
            let mut flags = Vec::new();
            if st["hard_expired"] == true {
                flags.push("HARD-EXPIRED");
            } else if st["soft_expired"] == true {
                flags.push("soft-expired");
            }
            if sa["esn"] == true {
                flags.push("esn");
            }
            vec![
                s(&sa["name"]),
                s(&sa["direction"]),
                said(sa),
                s(&sa["algorithm"]),
                ends,
                s(&st["packets"]),
                s(&st["bytes"]),
                s(&st["path_mtu"]),
                format!("{:.0}%", st["lifetime_used"].as_f64().unwrap_or(0.0) * 100.0),
                flags.join(","),
            ]
        })
        .collect();
    table(&["NAME", "DIR", "SAID", "ALGORITHM", "TUNNEL", "PACKETS", "BYTES", "PMTU", "LIFE", "FLAGS"], &rows)
}

fn eroute_rows(eroutes: &[Value], sas: &[Value]) -> String {
    let rows: Vec<Vec<String>> = eroutes
        .iter()
        .map(|e| {
            let sel = {
                let mut x = format!("{} -> {}", s(&e["src"]), s(&e["dst"]));
                if e["proto"] != "any" {
                    x += &format!(" {}", s(&e["proto"]));
                }
                if e["sport"] != "any" {
                    x += &format!(" sport {}", s(&e["sport"]));
                }
                if e["dport"] != "any" {
                    x += &format!(" dport {}", s(&e["dport"]));
                }
                x
            };
            let target = match e["sa"].as_str() {
                Some(n) => sas
                    .iter()
                    .find(|x| x["name"] == n)
                    .map_or_else(|| n.to_string(), |sa| format!("{n} ({})", said(sa))),
                None => format!("%{}", s(&e["action"])),
            };
            let packets = e["sa"]
                .as_str()
                .and_then(|n| sas.iter().find(|x| x["name"] == n))
                .map_or("-".into(), |sa| s(&sa["state"]["packets"]));
            vec![s(&e["name"]), sel, "=>".into(), target, s(&e["priority"]), packets]
        })
        .collect();
    table(&["NAME", "SELECTOR", "", "SA", "PRIO", "PACKETS"], &rows)
}

/// `espgw ike list` for people: connections, then IKE SAs, then counters.
fn ike_text(v: &Value) -> String {
    let empty = Vec::new();
    let arr = |k: &str| v[k].as_array().unwrap_or(&empty).clone();
    let conns: Vec<Vec<String>> = arr("connections")
        .iter()
        .map(|c| {
            let ts = |k: &str| c[k].as_array().map_or(String::new(), |a| a.iter().map(s).collect::<Vec<_>>().join(","));
            vec![
                s(&c["name"]),
                format!("{} -> {}", s(&c["local"]), s(&c["remote"])),
                s(&c["start"]),
                format!("{} === {}", ts("local_ts"), ts("remote_ts")),
            ]
        })
        .collect();
    if conns.is_empty() {
        return "no [[connection]] configured\n".into();
    }
    let sas: Vec<Vec<String>> = arr("ike_sas")
        .iter()
        .map(|x| {
            let children =
                x["children"].as_array().map_or(String::new(), |a| a.iter().map(s).collect::<Vec<_>>().join(" "));
            vec![
                s(&x["connection"]),
                s(&x["state"]),
                if x["initiator"] == true { "initiator".into() } else { "responder".into() },
                format!("{} -> {}{}", s(&x["local"]), s(&x["remote"]), if x["nat"] == true { " (NAT-T)" } else { "" }),
                format!("{}_i {}_r", s(&x["spi_i"]), s(&x["spi_r"])),
                if s(&x["proposal"]).is_empty() { "-".into() } else { s(&x["proposal"]) },
                format!("{}s", s(&x["age_s"])),
                if children.is_empty() { "-".into() } else { children },
            ]
        })
        .collect();
    let mut out = table(&["CONNECTION", "ADDRESSES", "START", "SELECTORS"], &conns);
    out += "\n";
    out += &table(&["CONNECTION", "STATE", "ROLE", "ADDRESSES", "SPIS", "PROPOSAL", "AGE", "CHILD SPIS IN/OUT"], &sas);
    let counters = v["counters"].as_object().map_or(String::new(), |m| {
        m.iter().filter(|(_, n)| n.as_u64() != Some(0)).map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
    });
    out += &format!("\ncounters: {}\n", if counters.is_empty() { "all zero" } else { &counters });
    out
}

fn stats_text(st: &Value) -> String {
    let mut out = String::new();
    let ports: Vec<Vec<String>> = st["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["name"]),
                s(&p["role"]),
                if p["link_up"] == true { "up".into() } else { "DOWN".into() },
                s(&p["mtu"]),
                s(&p["rx_packets"]),
                s(&p["rx_bytes"]),
                s(&p["tx_packets"]),
                s(&p["tx_bytes"]),
                s(&p["hw"]["imissed"]),
            ]
        })
        .collect();
    out += &table(&["PORT", "ROLE", "LINK", "MTU", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "MISSED"], &ports);
    out += "\n";
    let workers: Vec<Vec<String>> = st["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            vec![
                s(&w["index"]),
                s(&w["core"]),
                s(&w["rx_packets"]),
                s(&w["tx_packets"]),
                s(&w["drops"]),
                format!("{:.1}%", w["busy_ratio"].as_f64().unwrap_or(0.0) * 100.0),
            ]
        })
        .collect();
    out += &table(&["WORKER", "CORE", "RX PKTS", "TX PKTS", "DROPS", "BUSY"], &workers);
    let events: Vec<String> = st["events"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !events.is_empty() {
        out += &format!("\nevents: {}\n", events.join(", "));
    }
    let drops: Vec<Vec<String>> = st["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    if drops.is_empty() {
        out += "\ndrops: none\n";
    } else {
        out += "\n";
        out += &table(&["DROP REASON", "PACKETS"], &drops);
    }
    for m in st["mempools"].as_array().into_iter().flatten() {
        out += &format!("mempool {}: {} of {} mbufs in use\n", s(&m["name"]), s(&m["in_use"]), s(&m["size"]));
    }
    out
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Failure::other(format!("cannot read token file {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let endpoint = match &cli.api {
        Some(url) => Endpoint::parse(url).map_err(Failure::usage)?,
        None => Endpoint::Unix(cli.socket.clone()),
    };
    let c = Client { endpoint, token };
    let print = |v: &Value, human: String| {
        if cli.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print!("{human}");
        }
    };
    match &cli.cmd {
        Cmd::Sa { cmd } => match cmd {
            SaCmd::List => {
                let v = c.list("/api/v1/sas")?;
                print(&v, sa_rows(v.as_array().map_or(&[][..], |a| a)));
            }
            SaCmd::Show { name } => {
                let v = c.call("GET", &format!("/api/v1/sas/{}", enc(name)), None)?;
                let mut h = String::new();
                for (k, x) in v.as_object().into_iter().flatten() {
                    if k == "state" {
                        for (k2, y) in x.as_object().into_iter().flatten() {
                            let text = match y.as_object() {
                                // drops: replay=0 auth=0 policy=0 ...
                                Some(m) => m.iter().map(|(a, b)| format!("{a}={}", s(b))).collect::<Vec<_>>().join(" "),
                                None => s(y),
                            };
                            h += &format!("{k2:<14} {text}\n");
                        }
                    } else {
                        h += &format!("{k:<14} {}\n", s(x));
                    }
                }
                print(&v, h);
            }
            SaCmd::Add(a) => {
                let body = sa_body(a)?;
                let v = if a.replace {
                    c.call("PUT", &format!("/api/v1/sas/{}", enc(&a.name)), Some(&body))?
                } else {
                    c.call("POST", "/api/v1/sas", Some(&body))?
                };
                let verb = if a.replace { "replaced" } else { "added" };
                print(&v, format!("SA {} {verb}: {}\n", a.name, said(&v)));
            }
            SaCmd::Rekey { name, spi, enc_key, auth_key } => {
                let mut body = json!({ "spi": spi, "enc_key": key_arg(enc_key)? });
                if let Some(a) = auth_key {
                    body["auth_key"] = json!(key_arg(a)?);
                }
                let v = c.call("POST", &format!("/api/v1/sas/{}/rekey", enc(name)), Some(&body))?;
                let prev = v["previous"]
                    .as_str()
                    .map(|p| format!("; the old SA stays as {p} until deleted"))
                    .unwrap_or_default();
                print(&v, format!("SA {name} rekeyed: {}{prev}\n", said(&v["sa"])));
            }
            SaCmd::Del { name, force } => {
                let q = if *force { "?force=true" } else { "" };
                let v = c.call("DELETE", &format!("/api/v1/sas/{}{q}", enc(name)), None)?;
                let trapped: Vec<String> = v["eroutes_trapped"].as_array().into_iter().flatten().map(s).collect();
                let extra = if trapped.is_empty() {
                    String::new()
                } else {
                    format!(" (eroutes now trap: {})", trapped.join(", "))
                };
                print(&v, format!("SA {name} deleted{extra}\n"));
            }
        },
        Cmd::Eroute { cmd } => match cmd {
            ErouteCmd::List => {
                let v = c.list("/api/v1/eroutes")?;
                let sas = c.list("/api/v1/sas")?;
                print(&v, eroute_rows(v.as_array().map_or(&[][..], |a| a), sas.as_array().map_or(&[][..], |a| a)));
            }
            ErouteCmd::Add(a) => {
                let body = eroute_body(a);
                let v = if a.replace {
                    c.call("PUT", &format!("/api/v1/eroutes/{}", enc(&a.name)), Some(&body))?
                } else {
                    c.call("POST", "/api/v1/eroutes", Some(&body))?
                };
                let verb = if a.replace { "replaced" } else { "added" };
                print(
                    &v,
                    format!("eroute {} {verb}: {} -> {} {}\n", a.name, s(&v["src"]), s(&v["dst"]), s(&v["action"])),
                );
            }
            ErouteCmd::Del { name } => {
                let v = c.call("DELETE", &format!("/api/v1/eroutes/{}", enc(name)), None)?;
                print(&v, format!("eroute {name} deleted\n"));
            }
        },
        Cmd::Ike { cmd } => match cmd {
            IkeCmd::List => {
                let v = c.call("GET", "/api/v1/ike", None)?;
                print(&v, ike_text(&v));
            }
            IkeCmd::Initiate { connection } => {
                let v = c.call("POST", &format!("/api/v1/ike/{}/initiate", enc(connection)), Some(&json!({})))?;
                print(&v, format!("{connection}: initiating\n"));
            }
            IkeCmd::Terminate { connection } => {
                let v = c.call("POST", &format!("/api/v1/ike/{}/terminate", enc(connection)), Some(&json!({})))?;
                print(&v, format!("{connection}: {} IKE SA(s) deleted\n", s(&v["terminated"])));
            }
            IkeCmd::Rekey { connection } => {
                let v = c.call("POST", &format!("/api/v1/ike/{}/rekey", enc(connection)), Some(&json!({})))?;
                print(&v, format!("{connection}: rekeying {} IKE SA(s)' child SAs\n", s(&v["rekeying"])));
            }
        },
        Cmd::Stats => {
            let v = c.call("GET", "/api/v1/stats", None)?;
            print(&v, stats_text(&v));
        }
        Cmd::Events { count, types } => {
            let (status, mut r) = client::stream(&c.endpoint, "/api/v1/events", c.token.as_deref()).map_err(|e| {
                Failure { code: exit::UNREACHABLE, message: format!("cannot reach the API at {}: {e}", c.endpoint) }
            })?;
            if status != 200 {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut r, &mut text);
                let code = if status == 401 || status == 403 { exit::AUTH } else { exit::OTHER };
                return Err(Failure { code, message: format!("{status}: {}", text.trim()) });
            }
            let mut seen = 0u64;
            let mut line = String::new();
            loop {
                line.clear();
                if std::io::BufRead::read_line(&mut r, &mut line).map_err(|e| Failure::other(e.to_string()))? == 0 {
                    return Err(Failure { code: exit::UNREACHABLE, message: "the event stream ended".into() });
                }
                let Some(data) = line.trim_end().strip_prefix("data: ") else { continue };
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if !types.is_empty() && !types.iter().any(|t| v["type"] == t.as_str()) {
                    continue;
                }
                if cli.json {
                    println!("{data}");
                } else {
                    let mut fields: Vec<String> = v
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| !matches!(k.as_str(), "type" | "seq" | "time"))
                        .map(|(k, x)| format!("{k}={}", s(x)))
                        .collect();
                    fields.sort();
                    println!("{:<16} {}", s(&v["type"]), fields.join(" "));
                }
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    return Ok(());
                }
            }
        }
        Cmd::Health => {
            let v = c.call("GET", "/api/v1/health", None)?;
            let up = v["uptime_s"].as_f64().map(|u| format!(", up {u:.0} s")).unwrap_or_default();
            print(&v, format!("{}: {} SAs, {} eroutes{up}\n", s(&v["status"]), s(&v["sas"]), s(&v["eroutes"])));
        }
        Cmd::Completion { .. } | Cmd::Man => {} // local: done in main
        Cmd::Look => {
            let health = c.call("GET", "/api/v1/health", None)?;
            let eroutes = c.list("/api/v1/eroutes")?;
            let sas = c.list("/api/v1/sas")?;
            let stats = c.call("GET", "/api/v1/stats", None)?;
            let pmtu = c.call("GET", "/api/v1/pmtu", None)?;
            let all = json!({ "health": health, "eroutes": eroutes, "sas": sas, "stats": stats, "pmtu": pmtu });
            let mut h = format!(
                "espgw {} — {}, up {:.0} s, {} workers\n\n",
                s(&health["version"]),
                s(&health["status"]),
                health["uptime_s"].as_f64().unwrap_or(0.0),
                s(&health["workers"])
            );
            let sa_list = sas.as_array().map_or(&[][..], |a| a);
            h += "eroutes:\n";
            h += &eroute_rows(eroutes.as_array().map_or(&[][..], |a| a), sa_list);
            h += "\nSAs:\n";
            h += &sa_rows(sa_list);
            let pm: Vec<Vec<String>> = pmtu
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| vec![s(&p["sa"]), s(&p["learned"]), s(&p["egress_mtu"]), s(&p["effective"])])
                .collect();
            if !pm.is_empty() {
                h += "\npath MTU:\n";
                h += &table(&["SA", "LEARNED", "EGRESS", "IN USE"], &pm);
            }
            h += "\n";
            h += &stats_text(&stats);
            print(&all, h);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Local commands: no API needed.
    match &cli.cmd {
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "espgwctl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Cmd::Man => {
            use clap::CommandFactory;
            return match clap_mangen::Man::new(Cli::command()).section("8").render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("espgwctl: {e}");
                    ExitCode::from(exit::OTHER)
                }
            };
        }
        _ => {}
    }
    if let Some(secs) = cli.watch {
        let read_only = matches!(
            &cli.cmd,
            Cmd::Sa { cmd: SaCmd::List | SaCmd::Show { .. } }
                | Cmd::Eroute { cmd: ErouteCmd::List }
                | Cmd::Stats
                | Cmd::Look
                | Cmd::Health
        );
        if !read_only || !(0.1..=86_400.0).contains(&secs) {
            eprintln!(
                "espgwctl: --watch: takes 0.1..86400 seconds and a read-only command (list, show, stats, look, health)"
            );
            return ExitCode::from(exit::USAGE);
        }
        let mut round = 0u64;
        loop {
            if !cli.json {
                // Clear the screen and say when, as watch(1) does.
                print!("\x1b[H\x1b[2J");
                println!("every {secs}s: espgwctl {}\n", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
            }
            if let Err(f) = run(&cli) {
                eprintln!("espgwctl: {}", f.message);
            }
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            round += 1;
            if cli.watch_count.is_some_and(|n| round >= n) {
                return ExitCode::SUCCESS;
            }
            std::thread::sleep(Duration::from_secs_f64(secs));
        }
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if cli.json {
                println!("{}", json!({ "error": f.message, "exit_code": f.code }));
            }
            eprintln!("espgwctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
