//! The IPsec part of the config: `[policy]`, `[[sa]]`, `[[eroute]]`,
//! `[[route]]` and `[[neighbor]]`, validated into what the data plane takes.
//!
//! ```toml
//! [[sa]]
//! name = "to-b"
//! direction = "out"            # or "in"
//! spi = 0x1001
//! algorithm = "aes128-gcm16"   # aes256-gcm16, chacha20-poly1305, aes128-cbc-hmac-sha1-96, aes256-cbc-hmac-sha1-96, null-hmac-sha1-96
//! enc_key = "0x..."            # GCM: key + 4-byte salt
//! auth_key = "0x..."           # HMAC key (CBC/NULL)
//! mode = "tunnel"              # or "transport"
//! local = "192.0.2.1"          # tunnel endpoints
//! remote = "198.51.100.1"
//! esn = false
//! replay_window = 1024
//! df = "copy"                  # set, clear
//! encap = "udp"                # NAT-T: ESP in UDP (RFC 3948), default "none"
//! local_port = 4500            #   our UDP port, and the peer's
//! remote_port = 4500
//! nat_follow = true            #   follow the peer when its NAT rebinds
//! eroute = "nets"              # inbound: the eroute(s) decrypted traffic must match,
//!                              # or ["nets4", "nets6"], or the SA's own selectors:
//! # src = "10.0.2.0/24"        #   decrypted packets as they arrive (src = the peer's side)
//! # dst = "10.0.1.0/24"        #   with optional proto / sport / dport
//!
//! [[eroute]]
//! name = "nets"
//! src = "10.0.1.0/24"
//! dst = "10.0.2.0/24"
//! proto = "any"                # tcp, udp, icmp, or a number
//! dport = "any"                # 443, 1000-2000
//! action = "protect"           # pass, drop, trap
//! sa = "to-b"
//! mss_clamp = true
//! fragment_before_encryption = false
//!
//! [[route]]
//! prefix = "0.0.0.0/0"
//! port = "public"
//! via = "198.51.100.254"
//!
//! [[neighbor]]
//! ip = "198.51.100.254"
//! mac = "02:00:00:00:00:fe"
//! ```

use std::collections::HashMap;
use std::net::IpAddr;

use espgw_core::crypto::{Algorithm, Backend};
use espgw_core::esp::{DfPolicy, Lifetime, Mode, SaConfig, UdpEncap};
use espgw_core::packet::ip::proto;
use espgw_core::policy::{Action, Defaults, Direction, Eroute, PortRange, Prefix, ProtectOptions, Selector};
use espgw_core::route::Route;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Locator};

/// A validated SA.
#[derive(Debug, Clone)]
pub struct SaSpec {
    pub name: String,
    pub id: u32,
    pub role: SaRoleSpec,
    pub cfg: SaConfig,
    /// ESP in UDP: follow the peer to a new address/port when an
    /// authenticated packet shows that its NAT rebound (RFC 3948).
    pub nat_follow: bool,
}

impl SaSpec {
    pub fn direction(&self) -> Direction {
        match self.role {
            SaRoleSpec::Outbound => Direction::Outbound,
            SaRoleSpec::Inbound { .. } => Direction::Inbound,
        }
    }
    /// Inbound: the outer destination it is bound to.
    pub fn bind(&self) -> Option<IpAddr> {
        match &self.role {
            SaRoleSpec::Outbound => None,
            SaRoleSpec::Inbound { bind, .. } => *bind,
        }
    }
}

/// An SA's direction, and what an inbound SA checks its traffic against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaRoleSpec {
    Outbound,
    Inbound {
        /// The outer destination it is bound to (`local` of a tunnel SA).
        bind: Option<IpAddr>,
        check: InboundCheck,
    },
}

/// The selectors an inbound SA's decrypted traffic must match (RFC 4301
/// §5.2); never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundCheck {
    /// These eroutes (by name), mirrored.
    Eroutes(Vec<String>),
    /// Its own selectors, as the decrypted packets arrive.
    Selectors(Vec<Selector>),
}

/// A validated eroute.
#[derive(Debug, Clone)]
pub struct ErouteSpec {
    pub name: String,
    pub eroute: Eroute,
}

/// `[policy]`.
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig {
    pub defaults: Defaults,
    pub pmtu_ageing_ms: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    default_outbound: Option<Spanned<String>>,
    default_inbound_clear: Option<Spanned<String>>,
    pmtu_ageing_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSa {
    name: Spanned<String>,
    direction: Spanned<String>,
    spi: Spanned<i64>,
    algorithm: Spanned<String>,
    #[serde(default)]
    backend: Option<Spanned<String>>,
    #[serde(default)]
    enc_key: Option<Spanned<String>>,
    #[serde(default)]
    auth_key: Option<Spanned<String>>,
    mode: Spanned<String>,
    local: Option<Spanned<String>>,
    remote: Option<Spanned<String>>,
    #[serde(default)]
    esn: bool,
    replay_window: Option<Spanned<i64>>,
    df: Option<Spanned<String>>,
    ttl: Option<Spanned<i64>>,
    encap: Option<Spanned<String>>,
    local_port: Option<Spanned<i64>>,
    remote_port: Option<Spanned<i64>>,
    nat_follow: Option<Spanned<bool>>,
    eroute: Option<Spanned<toml::Value>>,
    src: Option<Spanned<String>>,
    dst: Option<Spanned<String>>,
    proto: Option<Spanned<toml::Value>>,
    sport: Option<Spanned<toml::Value>>,
    dport: Option<Spanned<toml::Value>>,
    soft_bytes: Option<Spanned<i64>>,
    hard_bytes: Option<Spanned<i64>>,
    soft_packets: Option<Spanned<i64>>,
    hard_packets: Option<Spanned<i64>>,
    soft_seconds: Option<Spanned<i64>>,
    hard_seconds: Option<Spanned<i64>>,
    soft_use_seconds: Option<Spanned<i64>>,
    hard_use_seconds: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEroute {
    name: Spanned<String>,
    src: Spanned<String>,
    dst: Spanned<String>,
    proto: Option<Spanned<toml::Value>>,
    sport: Option<Spanned<toml::Value>>,
    dport: Option<Spanned<toml::Value>>,
    priority: Option<Spanned<i64>>,
    action: Spanned<String>,
    sa: Option<Spanned<String>>,
    #[serde(default)]
    mss_clamp: bool,
    #[serde(default)]
    fragment_before_encryption: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    prefix: Spanned<String>,
    port: Spanned<String>,
    via: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNeighbor {
    ip: Spanned<String>,
    mac: Spanned<String>,
}

pub(super) struct Validated {
    pub sas: Vec<SaSpec>,
    pub eroutes: Vec<ErouteSpec>,
    pub routes: Vec<Route>,
    pub neighbors: Vec<(IpAddr, [u8; 6])>,
    pub policy: PolicyConfig,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Hex key material, with or without `0x`, `:` or spaces. Never echoes it.
fn parse_key(s: &str) -> Result<Vec<u8>, String> {
    let t: Vec<u8> = s.trim().trim_start_matches("0x").bytes().filter(|c| !matches!(c, b':' | b' ' | b'_')).collect();
    // Checked byte by byte (not sliced as text: a non-ASCII character must
    // be refused, not split; the fuzzer found that panic).
    let nibble =
        |c: u8| char::from(c).to_digit(16).map(|d| d as u8).ok_or_else(|| "key is not hexadecimal".to_string());
    if !t.len().is_multiple_of(2) {
        return Err("key is not a whole number of hex bytes".into());
    }
    t.chunks_exact(2).map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

fn action_of(s: &str) -> Option<&'static str> {
    ["protect", "pass", "drop", "trap"].into_iter().find(|a| *a == s)
}

fn default_action(loc: &Locator<'_>, v: &Option<Spanned<String>>, field: &str) -> Result<Action, ConfigError> {
    match v {
        None => Ok(Action::Drop),
        Some(s) => match s.get_ref().as_str() {
            "pass" => Ok(Action::Pass),
            "drop" => Ok(Action::Drop),
            other => Err(loc.at(s, field, format!("{other:?}: a default must be \"pass\" or \"drop\""))),
        },
    }
}

fn proto_of(v: &toml::Value) -> Result<Option<u8>, String> {
    match v {
        toml::Value::Integer(n) if (0..=255).contains(n) => Ok(Some(*n as u8)),
        toml::Value::String(s) if s == "any" => Ok(None),
        toml::Value::String(s) => proto::by_name(s).map(Some).ok_or_else(|| {
            let names: Vec<&str> = proto::NAMES.iter().map(|(n, _)| *n).collect();
            format!("unknown protocol {s:?} (any, {} or 0..255)", names.join(", "))
        }),
        other => Err(format!("{other} is not a protocol")),
    }
}

fn ports_of(v: &toml::Value) -> Result<PortRange, String> {
    match v {
        toml::Value::Integer(n) if (0..=65535).contains(n) => Ok(PortRange::single(*n as u16)),
        toml::Value::String(s) => s.parse(),
        other => Err(format!("{other} is not a port or port range")),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn validate(
    loc: &Locator<'_>,
    policy: &RawPolicy,
    raw_sas: &[Spanned<RawSa>],
    raw_eroutes: &[Spanned<RawEroute>],
    raw_routes: &[Spanned<RawRoute>],
    raw_neighbors: &[Spanned<RawNeighbor>],
    port_names: &[String],
    host_port: Option<&str>,
) -> Result<Validated, ConfigError> {
    let defaults = Defaults {
        outbound: default_action(loc, &policy.default_outbound, "policy.default_outbound")?,
        inbound_clear: default_action(loc, &policy.default_inbound_clear, "policy.default_inbound_clear")?,
    };
    let pmtu_ageing_ms = match &policy.pmtu_ageing_s {
        None => espgw_core::mtu::PMTU_AGEING_MS,
        Some(v) if (1..=86_400).contains(v.get_ref()) => *v.get_ref() as u64 * 1000,
        Some(v) => return Err(loc.at(v, "policy.pmtu_ageing_s", format!("{} s: must be in 1..86400", v.get_ref()))),
    };

    // SAs.
    let mut sas = Vec::new();
    let mut sa_ids: HashMap<String, (u32, Direction)> = HashMap::new();
    let mut spis: HashMap<(Direction, u32, Option<IpAddr>), usize> = HashMap::new();
    for (i, raw) in raw_sas.iter().enumerate() {
        let s = raw.get_ref();
        let mut spec = sa_spec(loc, &format!("sa[{i}]"), s)?;
        if sa_ids.contains_key(&spec.name) {
            return Err(loc.at(&s.name, format!("sa[{i}].name"), format!("SA name {:?} is used twice", spec.name)));
        }
        let spi = spec.cfg.spi;
        if let Some(prev) = spis.insert((spec.direction(), spi, spec.bind()), i) {
            return Err(loc.at(
                &s.spi,
                format!("sa[{i}].spi"),
                format!("SPI 0x{spi:08x} is already used by sa[{prev}] in the same direction"),
            ));
        }
        spec.id = i as u32 + 1;
        sa_ids.insert(spec.name.clone(), (spec.id, spec.direction()));
        sas.push(spec);
    }

    // Eroutes.
    let mut eroutes = Vec::new();
    let mut eroute_names: HashMap<String, usize> = HashMap::new();
    for (i, raw) in raw_eroutes.iter().enumerate() {
        let e = raw.get_ref();
        let find_sa = |n: &str| sa_ids.get(n).copied();
        let spec = eroute_spec(loc, &format!("eroute[{i}]"), e, i as u32 + 1, &find_sa)?;
        if let Some(prev) = eroute_names.insert(spec.name.clone(), i) {
            return Err(loc.at(
                &e.name,
                format!("eroute[{i}].name"),
                format!("eroute name {:?} is already used by eroute[{prev}]", spec.name),
            ));
        }
        eroutes.push(spec);
    }

    // Inbound SAs name existing eroutes.
    for (i, spec) in sas.iter().enumerate() {
        if let SaRoleSpec::Inbound { check: InboundCheck::Eroutes(names), .. } = &spec.role {
            if let Some(n) = names.iter().find(|n| !eroute_names.contains_key(*n)) {
                let at = raw_sas[i].get_ref().eroute.as_ref().expect("named eroutes come from the eroute field");
                return Err(loc.at(at, format!("sa[{i}].eroute"), format!("no eroute named {n:?}")));
            }
        }
    }
    let out_sas = sas;

    // Routes and neighbours.
    let mut routes = Vec::new();
    for (i, r) in raw_routes.iter().enumerate() {
        let r = r.get_ref();
        let f = |k: &str| format!("route[{i}].{k}");
        let prefix: Prefix = r.prefix.get_ref().parse().map_err(|e| loc.at(&r.prefix, f("prefix"), e))?;
        let port = port_names
            .iter()
            .position(|p| p == r.port.get_ref())
            .ok_or_else(|| loc.at(&r.port, f("port"), format!("no port named {:?}", r.port.get_ref())))?;
        if host_port == Some(r.port.get_ref().as_str()) {
            return Err(loc.at(
                &r.port,
                f("port"),
                "the host port takes no routes: traffic for the gateway's own addresses goes there by itself",
            ));
        }
        let via = match &r.via {
            None => None,
            Some(v) => {
                let ip: IpAddr = v
                    .get_ref()
                    .parse()
                    .map_err(|_| loc.at(v, f("via"), format!("{:?} is not an IP address", v.get_ref())))?;
                if ip.is_ipv6() != prefix.is_v6() {
                    return Err(loc.at(v, f("via"), "next hop and prefix are of different families"));
                }
                Some(ip)
            }
        };
        routes.push(Route { prefix, port, via });
    }
    let mut neighbors = Vec::new();
    for (i, n) in raw_neighbors.iter().enumerate() {
        let n = n.get_ref();
        let ip: IpAddr = n.ip.get_ref().parse().map_err(|_| {
            loc.at(&n.ip, format!("neighbor[{i}].ip"), format!("{:?} is not an IP address", n.ip.get_ref()))
        })?;
        let mac = parse_mac(n.mac.get_ref()).map_err(|r| loc.at(&n.mac, format!("neighbor[{i}].mac"), r))?;
        neighbors.push((ip, mac));
    }
    Ok(Validated { sas: out_sas, eroutes, routes, neighbors, policy: PolicyConfig { defaults, pmtu_ageing_ms } })
}

/// Validate one `[[sa]]` table; `what` names it in errors (`sa[3]`, or `sa`
/// for API input). Uniqueness of name and SPI, and the existence of named
/// eroutes, are the caller's, which sees everything. The id is left 0 for
/// the caller to assign.
fn sa_spec(loc: &Locator<'_>, what: &str, s: &RawSa) -> Result<SaSpec, ConfigError> {
    let f = |k: &str| format!("{what}.{k}");
    let name = s.name.get_ref().clone();
    if name.is_empty() {
        return Err(loc.at(&s.name, f("name"), "empty name"));
    }
    let direction = match s.direction.get_ref().as_str() {
        "in" => Direction::Inbound,
        "out" => Direction::Outbound,
        other => return Err(loc.at(&s.direction, f("direction"), format!("{other:?}: expected \"in\" or \"out\""))),
    };
    let spi = *s.spi.get_ref();
    if !(256..=i64::from(u32::MAX)).contains(&spi) {
        return Err(loc.at(&s.spi, f("spi"), format!("SPI {spi} is outside 256..4294967295 (0..255 are reserved)")));
    }
    let spi = spi as u32;
    let algorithm = Algorithm::from_name(s.algorithm.get_ref()).ok_or_else(|| {
        let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        loc.at(
            &s.algorithm,
            f("algorithm"),
            format!("unknown algorithm {:?} (one of {})", s.algorithm.get_ref(), names.join(", ")),
        )
    })?;
    let backend = match &s.backend {
        None => Backend::Auto,
        Some(b) => Backend::from_name(b.get_ref()).ok_or_else(|| {
            loc.at(b, f("backend"), format!("unknown backend {:?} (auto, ring, rustcrypto, ipsec-mb)", b.get_ref()))
        })?,
    };
    if backend == Backend::IpsecMb && algorithm == Algorithm::NullHmacSha1 {
        return Err(loc.at(
            s.backend.as_ref().expect("set"),
            f("backend"),
            format!("ipsec-mb does not implement {}", algorithm.name()),
        ));
    }
    if backend == Backend::Ring && !algorithm.is_aead() {
        return Err(loc.at(
            s.backend.as_ref().expect("set"),
            f("backend"),
            format!("ring does not implement {}", algorithm.name()),
        ));
    }
    let key = |k: &Option<Spanned<String>>, field: &str, want: usize| -> Result<Vec<u8>, ConfigError> {
        match k {
            None if want == 0 => Ok(Vec::new()),
            None => Err(loc.at(&s.algorithm, f(field), format!("{} needs {field} ({want} bytes)", algorithm.name()))),
            Some(k) => {
                let bytes = parse_key(k.get_ref()).map_err(|r| loc.at(k, f(field), r))?;
                if bytes.len() != want {
                    let extra = if algorithm.is_aead() && field == "enc_key" { " (key + 4-byte salt)" } else { "" };
                    return Err(loc.at(
                        k,
                        f(field),
                        format!("{} needs a {want}-byte {field}{extra}, got {} bytes", algorithm.name(), bytes.len()),
                    ));
                }
                Ok(bytes)
            }
        }
    };
    let enc_key = key(&s.enc_key, "enc_key", algorithm.enc_key_len())?;
    let auth_key = key(&s.auth_key, "auth_key", algorithm.auth_key_len())?;
    let addr = |a: &Option<Spanned<String>>, k: &str| -> Result<Option<IpAddr>, ConfigError> {
        a.as_ref()
            .map(|a| {
                a.get_ref()
                    .parse::<IpAddr>()
                    .map_err(|_| loc.at(a, f(k), format!("{:?} is not an IP address", a.get_ref())))
            })
            .transpose()
    };
    let (local, remote) = (addr(&s.local, "local")?, addr(&s.remote, "remote")?);
    let mode = match s.mode.get_ref().as_str() {
        "tunnel" => match (local, remote) {
            (Some(l), Some(r)) if l.is_ipv4() == r.is_ipv4() => Mode::Tunnel { local: l, remote: r },
            (Some(_), Some(_)) => {
                return Err(loc.at(
                    s.remote.as_ref().expect("set"),
                    f("remote"),
                    "tunnel endpoints must be of one address family",
                ))
            }
            _ => return Err(loc.at(&s.mode, f("mode"), "tunnel mode needs local and remote")),
        },
        "transport" => {
            if local.is_some() || remote.is_some() {
                return Err(loc.at(&s.mode, f("mode"), "transport mode takes no local/remote"));
            }
            Mode::Transport
        }
        other => return Err(loc.at(&s.mode, f("mode"), format!("{other:?}: expected \"tunnel\" or \"transport\""))),
    };
    let replay_window = match &s.replay_window {
        None => espgw_core::esp::replay::DEFAULT_WINDOW,
        Some(w) if (64..=4096).contains(w.get_ref()) => *w.get_ref() as u32,
        // 0: no anti-replay (RFC 4303 §3.4.3), e.g. to replay a capture in a benchmark.
        Some(w) if *w.get_ref() == 0 && !s.esn => 0,
        Some(w) if *w.get_ref() == 0 => {
            return Err(loc.at(w, f("replay_window"), "0 turns anti-replay off, which ESN cannot do without"))
        }
        Some(w) => {
            return Err(loc.at(
                w,
                f("replay_window"),
                format!("{} is outside 64..4096 (or 0: no anti-replay)", w.get_ref()),
            ))
        }
    };
    let df = match s.df.as_ref().map(|d| d.get_ref().as_str()) {
        None | Some("copy") => DfPolicy::Copy,
        Some("set") => DfPolicy::Set,
        Some("clear") => DfPolicy::Clear,
        Some(other) => {
            return Err(loc.at(s.df.as_ref().expect("set"), f("df"), format!("{other:?}: expected copy, set or clear")))
        }
    };
    let ttl = match &s.ttl {
        None => 64,
        Some(t) if (1..=255).contains(t.get_ref()) => *t.get_ref() as u8,
        Some(t) => return Err(loc.at(t, f("ttl"), format!("{} is outside 1..255", t.get_ref()))),
    };
    let role = match direction {
        Direction::Outbound => {
            if let Some(er) = &s.eroute {
                return Err(loc.at(
                    er,
                    f("eroute"),
                    "only inbound SAs name eroutes (outbound SAs are named by eroutes)",
                ));
            }
            if let Some(x) = s.src.as_ref().or(s.dst.as_ref()) {
                let k = if s.src.is_some() { "src" } else { "dst" };
                return Err(loc.at(x, f(k), "only inbound SAs carry selectors (outbound SAs are chosen by eroutes)"));
            }
            SaRoleSpec::Outbound
        }
        Direction::Inbound => SaRoleSpec::Inbound { bind: local, check: inbound_check(loc, what, s)? },
    };
    let lifetime = lifetime(loc, what, s)?;
    let (encap, nat_follow) = encap_of(loc, what, s)?;
    let mut cfg = SaConfig::new(spi, algorithm, &enc_key, &auth_key, mode);
    cfg.backend = backend;
    cfg.esn = s.esn;
    cfg.replay_window = replay_window;
    cfg.df = df;
    cfg.ttl = ttl;
    cfg.lifetime = lifetime;
    cfg.encap = encap;
    Ok(SaSpec { name, id: 0, role, cfg, nat_follow })
}

/// `encap = "udp"` with its ports (RFC 3948), and whether to follow NAT rebinding.
fn encap_of(loc: &Locator<'_>, what: &str, s: &RawSa) -> Result<(Option<UdpEncap>, bool), ConfigError> {
    let f = |k: &str| format!("{what}.{k}");
    let udp = match s.encap.as_ref().map(|e| (e, e.get_ref().as_str())) {
        None | Some((_, "none")) => false,
        Some((_, "udp")) => true,
        Some((e, other)) => return Err(loc.at(e, f("encap"), format!("{other:?}: expected \"none\" or \"udp\""))),
    };
    let port = |v: &Option<Spanned<i64>>, k: &str| -> Result<u16, ConfigError> {
        match v {
            None => Ok(espgw_core::esp::natt::NAT_T_PORT),
            Some(_) if !udp => Err(loc.at(v.as_ref().expect("set"), f(k), format!("{k} needs encap = \"udp\""))),
            Some(p) if (1..=65535).contains(p.get_ref()) => Ok(*p.get_ref() as u16),
            Some(p) => Err(loc.at(p, f(k), format!("{} is outside 1..65535", p.get_ref()))),
        }
    };
    let e =
        UdpEncap { local_port: port(&s.local_port, "local_port")?, remote_port: port(&s.remote_port, "remote_port")? };
    let follow = match &s.nat_follow {
        Some(b) if *b.get_ref() && !udp => return Err(loc.at(b, f("nat_follow"), "nat_follow needs encap = \"udp\"")),
        Some(b) => *b.get_ref(),
        None => false,
    };
    Ok((udp.then_some(e), follow))
}

/// An inbound SA's selectors: named eroutes, or its own src/dst/proto/ports.
fn inbound_check(loc: &Locator<'_>, what: &str, s: &RawSa) -> Result<InboundCheck, ConfigError> {
    let f = |k: &str| format!("{what}.{k}");
    let own = s.src.is_some() || s.dst.is_some();
    match &s.eroute {
        Some(er) if own => {
            let at = s.src.as_ref().or(s.dst.as_ref()).expect("own");
            let _ = er;
            Err(loc.at(at, f("src"), "give eroute or src/dst, not both"))
        }
        Some(er) => {
            let names: Vec<String> = match er.get_ref() {
                toml::Value::String(n) => vec![n.clone()],
                toml::Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| loc.at(er, f("eroute"), "a list of eroute names is expected"))?,
                _ => return Err(loc.at(er, f("eroute"), "an eroute name or a list of them is expected")),
            };
            if names.is_empty() || names.iter().any(String::is_empty) {
                return Err(loc.at(er, f("eroute"), "an empty eroute list leaves the SA without selectors"));
            }
            Ok(InboundCheck::Eroutes(names))
        }
        None if own => {
            let (Some(src), Some(dst)) = (&s.src, &s.dst) else {
                let at = s.src.as_ref().or(s.dst.as_ref()).expect("own");
                let k = if s.src.is_none() { "src" } else { "dst" };
                return Err(loc.at(at, f(k), format!("own selectors need both src and dst ({k} is missing)")));
            };
            let prefix = |p: &Spanned<String>, k: &str| -> Result<Prefix, ConfigError> {
                p.get_ref().parse().map_err(|r| loc.at(p, f(k), r))
            };
            let proto = match &s.proto {
                None => None,
                Some(p) => proto_of(p.get_ref()).map_err(|r| loc.at(p, f("proto"), r))?,
            };
            let range = |v: &Option<Spanned<toml::Value>>, k: &str| -> Result<PortRange, ConfigError> {
                v.as_ref().map_or(Ok(PortRange::ANY), |v| ports_of(v.get_ref()).map_err(|r| loc.at(v, f(k), r)))
            };
            let sel = Selector {
                src: prefix(src, "src")?,
                dst: prefix(dst, "dst")?,
                proto,
                sport: range(&s.sport, "sport")?,
                dport: range(&s.dport, "dport")?,
            };
            sel.validate().map_err(|r| loc.at(dst, f("dst"), r))?;
            Ok(InboundCheck::Selectors(vec![sel]))
        }
        None => Err(loc.at(
            &s.name,
            f("eroute"),
            "an inbound SA needs selectors (RFC 4301 §5.2): name its eroute(s) with eroute = \"name\" \
             (or [\"v4\", \"v6\"]), or give its own src and dst",
        )),
    }
}

/// Soft and hard limits: each at least 1, soft never above hard.
fn lifetime(loc: &Locator<'_>, what: &str, s: &RawSa) -> Result<Lifetime, ConfigError> {
    let f = |k: &str| format!("{what}.{k}");
    let limit = |v: &Option<Spanned<i64>>, k: &str| -> Result<Option<u64>, ConfigError> {
        match v {
            None => Ok(None),
            Some(x) if *x.get_ref() >= 1 => Ok(Some(*x.get_ref() as u64)),
            Some(x) => Err(loc.at(x, f(k), format!("{}: a limit must be at least 1", x.get_ref()))),
        }
    };
    let lt = Lifetime {
        soft_bytes: limit(&s.soft_bytes, "soft_bytes")?,
        hard_bytes: limit(&s.hard_bytes, "hard_bytes")?,
        soft_packets: limit(&s.soft_packets, "soft_packets")?,
        hard_packets: limit(&s.hard_packets, "hard_packets")?,
        soft_add_secs: limit(&s.soft_seconds, "soft_seconds")?,
        hard_add_secs: limit(&s.hard_seconds, "hard_seconds")?,
        soft_use_secs: limit(&s.soft_use_seconds, "soft_use_seconds")?,
        hard_use_secs: limit(&s.hard_use_seconds, "hard_use_seconds")?,
    };
    for (soft, hard, sk, hk) in [
        (&s.soft_bytes, lt.hard_bytes, "soft_bytes", "hard_bytes"),
        (&s.soft_packets, lt.hard_packets, "soft_packets", "hard_packets"),
        (&s.soft_seconds, lt.hard_add_secs, "soft_seconds", "hard_seconds"),
        (&s.soft_use_seconds, lt.hard_use_secs, "soft_use_seconds", "hard_use_seconds"),
    ] {
        if let (Some(sv), Some(h)) = (soft, hard) {
            if *sv.get_ref() as u64 > h {
                return Err(loc.at(sv, f(sk), format!("{} is above {hk} = {h}", sv.get_ref())));
            }
        }
    }
    Ok(lt)
}

/// Validate one `[[eroute]]` table; `what` names it in errors. `find_sa`
/// resolves an SA name to its id and direction.
fn eroute_spec(
    loc: &Locator<'_>,
    what: &str,
    e: &RawEroute,
    id: u32,
    find_sa: &dyn Fn(&str) -> Option<(u32, Direction)>,
) -> Result<ErouteSpec, ConfigError> {
    let f = |k: &str| format!("{what}.{k}");
    let name = e.name.get_ref().clone();
    if name.is_empty() {
        return Err(loc.at(&e.name, f("name"), "empty name"));
    }
    let src: Prefix = e.src.get_ref().parse().map_err(|r| loc.at(&e.src, f("src"), r))?;
    let dst: Prefix = e.dst.get_ref().parse().map_err(|r| loc.at(&e.dst, f("dst"), r))?;
    let proto = match &e.proto {
        None => None,
        Some(p) => proto_of(p.get_ref()).map_err(|r| loc.at(p, f("proto"), r))?,
    };
    let range = |v: &Option<Spanned<toml::Value>>, k: &str| -> Result<PortRange, ConfigError> {
        v.as_ref().map_or(Ok(PortRange::ANY), |v| ports_of(v.get_ref()).map_err(|r| loc.at(v, f(k), r)))
    };
    let selector = Selector { src, dst, proto, sport: range(&e.sport, "sport")?, dport: range(&e.dport, "dport")? };
    if let Err(r) = selector.validate() {
        // Point at the field that is wrong: the port range, or the prefix.
        return Err(match (r.contains("port"), &e.dport, &e.sport) {
            (true, Some(d), _) => loc.at(d, f("dport"), r),
            (true, None, Some(sp)) => loc.at(sp, f("sport"), r),
            _ => loc.at(&e.dst, f("dst"), r),
        });
    }
    let priority = match &e.priority {
        None => 100,
        Some(p) if (0..=i64::from(u32::MAX)).contains(p.get_ref()) => *p.get_ref() as u32,
        Some(p) => return Err(loc.at(p, f("priority"), format!("{} is not a valid priority", p.get_ref()))),
    };
    let action = match action_of(e.action.get_ref()) {
        Some("protect") => {
            let Some(sa) = &e.sa else {
                return Err(loc.at(&e.action, f("sa"), "protect needs an sa"));
            };
            match find_sa(sa.get_ref()) {
                None => return Err(loc.at(sa, f("sa"), format!("no SA named {:?}", sa.get_ref()))),
                Some((_, Direction::Inbound)) => {
                    return Err(loc.at(
                        sa,
                        f("sa"),
                        format!("SA {:?} is inbound; eroutes protect with outbound SAs", sa.get_ref()),
                    ))
                }
                Some((id, Direction::Outbound)) => Action::Protect {
                    sa: id,
                    options: ProtectOptions {
                        fragment_before_encryption: e.fragment_before_encryption,
                        mss_clamp: e.mss_clamp,
                    },
                },
            }
        }
        Some(other) => {
            if let Some(sa) = &e.sa {
                return Err(loc.at(sa, f("sa"), format!("action {other:?} takes no SA")));
            }
            match other {
                "pass" => Action::Pass,
                "drop" => Action::Drop,
                _ => Action::Trap,
            }
        }
        None => {
            return Err(loc.at(
                &e.action,
                f("action"),
                format!("{:?}: expected protect, pass, drop or trap", e.action.get_ref()),
            ))
        }
    };
    Ok(ErouteSpec { name, eroute: Eroute { id, selector, priority, action } })
}

/// Where API input comes from, in its error messages.
const API_ORIGIN: &str = "request";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneSa {
    sa: RawSa,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneEroute {
    eroute: RawEroute,
}

/// Deserialise API input (a JSON object) into the raw type of `kind`.
fn from_json<T: serde::de::DeserializeOwned>(kind: &str, v: &serde_json::Value) -> Result<T, ConfigError> {
    let err = |field: String, reason: String| ConfigError { file: API_ORIGIN.into(), line: None, field, reason };
    if !v.is_object() {
        return Err(err(String::new(), format!("the body must be a JSON object describing one {kind}")));
    }
    if let Some(f) = super::json::first_null(v) {
        return Err(err(format!("{kind}.{f}"), "null is not allowed; leave the field out".into()));
    }
    let doc = serde_json::json!({ kind: v });
    T::deserialize(super::json::JsonDe(doc)).map_err(|e| err(String::new(), super::json::message(&e)))
}

/// Locate API input errors by field only (it has no lines).
fn api_loc() -> Locator<'static> {
    Locator { file: std::path::Path::new(API_ORIGIN), src: "" }
}

fn no_line(mut e: ConfigError) -> ConfigError {
    e.line = None;
    e
}

/// One SA given alone (API input, a JSON object with the fields of a config
/// `[[sa]]`): the very same checks apply. Errors name the field as
/// `sa.<field>`. The id is left 0; eroute names (inbound) are unchecked.
/// An SA as the API shows it (`GET /api/v1/sas/{name}`, `espgwctl sa show
/// --json`) turned back into input: what is reported but not configured
/// (`id`, `state`), the `<redacted>` keys and nulls go, so that the result
/// with keys added is a valid SA (rekey; `espgwctl sa add --from`).
pub fn sa_input_from_view(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, x| {
            !matches!(k.as_str(), "id" | "state" | "spi_hex") && !x.is_null() && x.as_str() != Some("<redacted>")
        });
    }
    v
}

pub fn parse_one_sa(v: &serde_json::Value) -> Result<SaSpec, ConfigError> {
    let one: OneSa = from_json("sa", v)?;
    sa_spec(&api_loc(), "sa", &one.sa).map_err(no_line)
}

/// One eroute given alone (API input, a JSON object with the fields of a
/// config `[[eroute]]`).
pub fn parse_one_eroute(
    v: &serde_json::Value,
    id: u32,
    find_sa: &dyn Fn(&str) -> Option<(u32, Direction)>,
) -> Result<ErouteSpec, ConfigError> {
    let one: OneEroute = from_json("eroute", v)?;
    eroute_spec(&api_loc(), "eroute", &one.eroute, id, find_sa).map_err(no_line)
}
