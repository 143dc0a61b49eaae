//! The gateway's TOML configuration, validated before DPDK starts.
//!
//! Every error names the file, the line, the field and the reason, e.g.
//! `configs/demo.toml:14: port[1].role: unknown role "public" (expected "cleartext" or "protected")`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod ike;
mod ipsec;
mod json;
pub mod preflight;
pub mod schema;
pub use ike::{identity, ConnectionSpec, Start};
pub use ipsec::{
    fmt_mac, parse_mac, parse_one_eroute, parse_one_sa, sa_input_from_view, ErouteSpec, InboundCheck, PolicyConfig,
    SaRoleSpec, SaSpec,
};

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted field path, e.g. `port[0].mtu`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.reason)
        } else {
            write!(f, ": {}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which side of the gateway a port is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Private side: cleartext traffic to protect, decrypted traffic out.
    Cleartext,
    /// Public side: ESP in and out.
    Protected,
    /// The kernel's side of the host path (`net_tap`): traffic for the
    /// gateway's own addresses, and the kernel's own traffic out.
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cleartext => "cleartext",
            Role::Protected => "protected",
            Role::Host => "host",
        }
    }
}

/// A host port's settings (see [`Role::Host`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortConfig {
    /// Packets per second per worker to the kernel, per bucket (IKE and the rest).
    pub rate: u32,
    /// Give the kernel interface the gateway's addresses and a policy route
    /// (addresses, `ip rule from ADDR lookup TABLE`, default routes in TABLE).
    pub kernel_setup: bool,
    pub kernel_table: u32,
    /// The kernel interface's name (`iface=` of the net_tap spec, else `dtap0`...).
    pub iface: Option<String>,
}

/// How a port's device reaches EAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// A virtual device: `--vdev SPEC`; its ethdev name is the part before the first comma.
    Vdev { spec: String },
    /// A PCI device: `-a ADDR`.
    Pci { addr: String },
}

impl Device {
    /// Parse a device string: a PCI address (`0000:01:00.0` or `01:00.0`,
    /// optionally with `,devargs`) or a vdev spec (`net_pcap0,rx_pcap=...`).
    pub fn parse(s: &str) -> Result<Device, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty device".into());
        }
        let name = s.split(',').next().unwrap_or("");
        if is_pci_addr(name) {
            Ok(Device::Pci { addr: s.to_string() })
        } else if name.starts_with("net_") || name.starts_with("crypto_") || name.starts_with("eth_") {
            if name.chars().any(|c| c.is_whitespace()) {
                return Err(format!("device name {name:?} contains white space"));
            }
            Ok(Device::Vdev { spec: s.to_string() })
        } else {
            Err(format!(
                "{name:?} is neither a PCI address (e.g. 0000:01:00.0) nor a DPDK virtual device (e.g. net_pcap0,rx_pcap=in.pcap)"
            ))
        }
    }

    /// The ethdev name DPDK gives the port.
    pub fn port_name(&self) -> &str {
        match self {
            Device::Vdev { spec } => spec.split(',').next().unwrap_or(spec),
            Device::Pci { addr } => {
                let a = addr.split(',').next().unwrap_or(addr);
                a
            }
        }
    }

    /// The EAL arguments that bring the device up.
    pub fn eal_args(&self) -> [String; 2] {
        match self {
            Device::Vdev { spec } => ["--vdev".into(), spec.clone()],
            Device::Pci { addr } => ["-a".into(), addr.clone()],
        }
    }
}

fn is_pci_addr(s: &str) -> bool {
    // [dddd:]bb:dd.f with hex digits.
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if dom.len() == 4 && dom.chars().all(|c| c.is_ascii_hexdigit()) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    let Some((dev, func)) = devfn.split_once('.') else { return false };
    bus.len() == 2
        && dev.len() == 2
        && func.len() == 1
        && [bus, dev, func].iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Smallest MTU a port may have (IPv6 minimum).
pub const MIN_MTU: u16 = 1280;
/// Largest MTU a port may have (jumbo).
pub const MAX_MTU: u16 = 9600;

/// A validated port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub name: String,
    pub device: Device,
    pub role: Role,
    /// `None`: take the device's MTU.
    pub mtu: Option<u16>,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Source MAC written on egress (default: the device's).
    pub mac: Option<[u8; 6]>,
    /// The gateway's own addresses on this port (source of ICMP errors).
    pub addresses: Vec<std::net::IpAddr>,
    /// Next-hop MAC when no `[[neighbor]]` entry matches (point-to-point peer, upstream router).
    pub peer_mac: Option<[u8; 6]>,
    /// Role `host`: its settings.
    pub host: Option<HostPortConfig>,
}

/// Mbuf pool sizing.
#[derive(Debug, Clone)]
pub struct MempoolConfig {
    pub mbufs: u32,
    pub cache: u32,
    /// Data room per mbuf, DPDK headroom included.
    pub data_room: u16,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub eal_args: Vec<String>,
    /// Let dpdk-dumpcap attach (`rte_pdump_init`); off by default, see the schema.
    pub capture: bool,
    pub ports: Vec<PortConfig>,
    pub worker_cores: Vec<usize>,
    /// Sleep after a run of idle polls (0 = pure busy polling).
    pub idle_sleep_us: u64,
    pub mempool: MempoolConfig,
    /// Plain forwarding (bypass): egress port index per ingress port index.
    pub forward: Vec<Option<usize>>,
    /// SAs, in config order (ids 1, 2, ...).
    pub sas: Vec<SaSpec>,
    /// Eroutes, in config order (ids 1, 2, ...).
    pub eroutes: Vec<ErouteSpec>,
    pub routes: Vec<espgw_core::route::Route>,
    pub neighbors: Vec<(std::net::IpAddr, [u8; 6])>,
    pub policy: PolicyConfig,
    /// The HTTP API / metrics endpoint; `None` when the config has no `[control]`.
    pub control: Option<ControlConfig>,
    /// What `/metrics` exports per SA.
    pub metrics: MetricsConfig,
    /// Where sequence-number leases and replay tops persist across restarts
    /// (`[state] file`; default: next to the config, `<stem>.state`).
    pub state_file: PathBuf,
    /// IKEv2 peers (`[[connection]]`): the control thread negotiates their SAs.
    pub connections: Vec<ConnectionSpec>,
}

/// Default control socket (when `[control]` names no listener), like
/// strongSwan's `/var/run/charon.vici`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/espgw/api.sock";

/// `[control]`: where the HTTP API and `/metrics` listen, and who may use them.
#[derive(Clone)]
pub struct ControlConfig {
    /// The Unix socket (mode 0660): who may connect is decided by the file's
    /// owner and group.
    pub socket: Option<PathBuf>,
    /// The socket's group (numeric gid, resolved from a name at load).
    pub socket_group: Option<u32>,
    /// A TCP listener (for Prometheus or remote tools): always needs the token.
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer token; required with `listen`, optional on the socket.
    pub token: Option<zeroize::Zeroizing<String>>,
}

impl fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlConfig")
            .field("socket", &self.socket)
            .field("socket_group", &self.socket_group)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which SAs get series of their own on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerSa {
    /// Every SA (small deployments; 6+ series per SA).
    All,
    /// The `n` busiest SAs by bytes plus the `n` with the most drops.
    Top(usize),
    /// None: totals only.
    Off,
}

/// `[metrics]`: bounds what `/metrics` exports per SA, so a gateway with
/// 100 000 SAs stays scrapeable (totals over all SAs are always exported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    pub per_sa: PerSa,
}

/// Per-SA series by default: the 100 busiest SAs (and the 100 with most drops).
pub const DEFAULT_TOP_SAS: usize = 100;

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { per_sa: PerSa::Top(DEFAULT_TOP_SAS) }
    }
}

fn metrics_config(loc: &Locator<'_>, m: &RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let top = match &m.top_sas {
        None => DEFAULT_TOP_SAS,
        Some(t) if (1..=100_000).contains(t.get_ref()) => *t.get_ref() as usize,
        Some(t) => return Err(loc.at(t, "metrics.top_sas", format!("{} is out of range 1..100000", t.get_ref()))),
    };
    let per_sa = match m.per_sa.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "top")) => PerSa::Top(top),
        Some((_, "all")) => PerSa::All,
        Some((_, "off")) => PerSa::Off,
        Some((p, other)) => {
            return Err(loc.at(
                p,
                "metrics.per_sa",
                format!("unknown value {other:?} (expected \"top\", \"all\" or \"off\")"),
            ))
        }
    };
    Ok(MetricsConfig { per_sa })
}

/// A 32-bit number in decimal or `0x` hex (SPIs on command lines and queries).
pub fn parse_u32_field(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A group name from /etc/group (or a number) as a gid.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok()).flatten()
    })
}

// ---- raw TOML shape --------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    eal: RawEal,
    #[serde(default)]
    mempool: RawMempool,
    workers: Spanned<RawWorkers>,
    #[serde(default, rename = "port")]
    ports: Vec<Spanned<RawPort>>,
    #[serde(default)]
    forward: Vec<Spanned<RawForward>>,
    #[serde(default)]
    policy: ipsec::RawPolicy,
    #[serde(default, rename = "sa")]
    sas: Vec<Spanned<ipsec::RawSa>>,
    #[serde(default, rename = "eroute")]
    eroutes: Vec<Spanned<ipsec::RawEroute>>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<ipsec::RawRoute>>,
    #[serde(default, rename = "neighbor")]
    neighbors: Vec<Spanned<ipsec::RawNeighbor>>,
    #[serde(default, rename = "connection")]
    connections: Vec<Spanned<ike::RawConnection>>,
    control: Option<Spanned<RawControl>>,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    per_sa: Option<Spanned<String>>,
    top_sas: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<Spanned<String>>,
    socket_group: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEal {
    #[serde(default)]
    args: Vec<Spanned<String>>,
    #[serde(default)]
    capture: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMempool {
    mbufs: Option<Spanned<u32>>,
    cache: Option<Spanned<u32>>,
    data_room: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    cores: Spanned<Vec<Spanned<i64>>>,
    #[serde(default)]
    idle_sleep_us: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    device: Spanned<String>,
    role: Spanned<String>,
    mtu: Option<Spanned<i64>>,
    rx_desc: Option<Spanned<i64>>,
    tx_desc: Option<Spanned<i64>>,
    mac: Option<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    peer_mac: Option<Spanned<String>>,
    host_rate: Option<Spanned<i64>>,
    kernel_setup: Option<Spanned<bool>>,
    kernel_table: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    from: Spanned<String>,
    to: Spanned<String>,
}

/// A port's host-role settings: only a `host` port takes them, there is at
/// most one, it has no addresses of its own (the kernel gets every other
/// port's) and it forwards nothing.
fn host_port(
    loc: &Locator<'_>,
    f: &dyn Fn(&str) -> String,
    p: &RawPort,
    role: Role,
    device: &Device,
    earlier: &[PortConfig],
) -> Result<Option<HostPortConfig>, ConfigError> {
    if role != Role::Host {
        let extra = [
            ("host_rate", p.host_rate.as_ref().map(|s| s.span())),
            ("kernel_table", p.kernel_table.as_ref().map(|s| s.span())),
            ("kernel_setup", p.kernel_setup.as_ref().map(|s| s.span())),
        ];
        for (k, span) in extra {
            if let Some(span) = span {
                return Err(loc.err::<()>(span, f(k), format!("{k} is for role = \"host\" ports")));
            }
        }
        return Ok(None);
    }
    if let Some(prev) = earlier.iter().position(|q| q.role == Role::Host) {
        return Err(loc.at(&p.role, f("role"), format!("port[{prev}] is already the host port (one at most)")));
    }
    if let Some(a) = p.addresses.first() {
        return Err(loc.at(
            a,
            f("addresses[0]"),
            "a host port has no addresses of its own: the kernel gets every other port's",
        ));
    }
    let rate = match &p.host_rate {
        None => espgw_core::pipeline::DEFAULT_HOST_RATE,
        Some(r) if (100..=10_000_000).contains(r.get_ref()) => *r.get_ref() as u32,
        Some(r) => {
            return Err(loc.at(r, f("host_rate"), format!("{} packets/s is outside 100..10000000", r.get_ref())))
        }
    };
    let kernel_table = match &p.kernel_table {
        None => DEFAULT_KERNEL_TABLE,
        // 0 and 253..255 are the kernel's own tables (unspec, default, main, local).
        Some(t) if (1..=252).contains(t.get_ref()) || (256..=i64::from(i32::MAX)).contains(t.get_ref()) => {
            *t.get_ref() as u32
        }
        Some(t) => {
            return Err(loc.at(t, f("kernel_table"), format!("table {} is reserved or out of range", t.get_ref())))
        }
    };
    let iface = match device {
        Device::Vdev { spec } => spec.split(',').find_map(|kv| kv.strip_prefix("iface=")).map(str::to_string),
        Device::Pci { .. } => None,
    };
    let kernel_setup = p.kernel_setup.as_ref().is_none_or(|b| *b.get_ref());
    if kernel_setup && iface.is_none() {
        return Err(loc.at(
            &p.device,
            f("device"),
            "name the kernel interface (net_tap0,iface=espgw0), or set kernel_setup = false and set it up yourself",
        ));
    }
    Ok(Some(HostPortConfig { rate, kernel_setup, kernel_table, iface }))
}

/// The routing table the kernel side of the host path uses by default.
pub const DEFAULT_KERNEL_TABLE: u32 = 4500;

/// Turns byte offsets into line numbers and builds errors.
struct Locator<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Locator<'_> {
    fn line(&self, offset: usize) -> usize {
        1 + self.src.as_bytes()[..offset.min(self.src.len())].iter().filter(|&&b| b == b'\n').count()
    }
    fn err<T>(&self, span: std::ops::Range<usize>, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        let _ = std::marker::PhantomData::<T>;
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line(span.start)),
            field: field.into(),
            reason: reason.into(),
        }
    }
    fn at<T>(&self, s: &Spanned<T>, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        self.err::<()>(s.span(), field, reason)
    }
}

/// `[control]`: a Unix socket (the default) and/or a TCP listen address, and
/// a token (inline or from a file, relative to the config's folder) that TCP
/// always needs: on loopback too, since any local process and any web page
/// the operator opens can reach a loopback port.
fn control_config(loc: &Locator<'_>, c: &Spanned<RawControl>) -> Result<ControlConfig, ConfigError> {
    let r = c.get_ref();
    let listen = match &r.listen {
        None => None,
        Some(l) => Some(l.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
            loc.at(l, "control.listen", format!("{:?} is not an address:port (e.g. 127.0.0.1:9470)", l.get_ref()))
        })?),
    };
    let dir = loc.file.parent().unwrap_or(Path::new("."));
    let socket = match &r.socket {
        Some(p) if p.get_ref().is_empty() => None,
        Some(p) => Some(dir.join(p.get_ref())),
        None if listen.is_none() => Some(PathBuf::from(DEFAULT_CONTROL_SOCKET)),
        None => None,
    };
    let socket_group =
        match &r.socket_group {
            None => None,
            Some(g) => Some(group_id(g.get_ref()).ok_or_else(|| {
                loc.at(g, "control.socket_group", format!("no group {:?} in /etc/group", g.get_ref()))
            })?),
        };
    let token = match (&r.token, &r.token_file) {
        (Some(t), Some(_)) => return Err(loc.at(t, "control.token", "give token or token_file, not both")),
        (Some(t), None) => Some((t, t.get_ref().trim().to_string())),
        (None, Some(f)) => {
            let path = loc.file.parent().unwrap_or(Path::new(".")).join(f.get_ref());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| loc.at(f, "control.token_file", format!("cannot read {}: {e}", path.display())))?;
            Some((f, text.trim().to_string()))
        }
        (None, None) => None,
    };
    if let Some((at, t)) = &token {
        if t.len() < 16 || t.chars().any(|ch| !ch.is_ascii_graphic()) {
            return Err(loc.at(
                *at,
                "control.token",
                "a token must be at least 16 printable characters without spaces",
            ));
        }
    }
    if let (Some(listen), None) = (listen, &token) {
        let at = r.listen.as_ref().map_or(c.span(), |l| l.span());
        return Err(loc.err::<()>(
            at,
            "control.listen",
            format!(
                "a TCP listener ({listen}) needs control.token or control.token_file (loopback too: \
                 web pages and every local user can reach it); without one, use control.socket"
            ),
        ));
    }
    Ok(ControlConfig { socket, socket_group, listen, token: token.map(|(_, t)| zeroize::Zeroizing::new(t)) })
}

/// Longest quoted value an error message shows.
const QUOTED_MAX: usize = 80;

/// An error message with every quoted value that spans lines or runs past
/// [`QUOTED_MAX`] characters replaced by its length: an unterminated
/// multi-line string swallows the lines after it, keys included, and the
/// parser's "invalid type: string ..." would quote them all.
fn quiet_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let body = &rest[open + 1..];
        // The closing quote: the first one not escaped by a backslash.
        let (mut close, mut escaped) = (None, false);
        for (i, c) in body.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    close = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let content = &body[..close.unwrap_or(body.len())];
        if content.contains("\\n") || content.contains('\n') || content.chars().count() > QUOTED_MAX {
            out.push_str(&format!("…\" ({} characters, not shown)", content.chars().count()));
        } else {
            out.push_str(content);
            if close.is_some() {
                out.push('"');
            }
        }
        rest = close.map_or("", |c| &body[c + 1..]);
    }
    out.push_str(rest);
    out
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            field: String::new(),
            reason: format!("cannot read config: {e}"),
        })?;
        Self::parse(path, &src)
    }

    /// Parse and validate config text; `path` is used in error messages.
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        Self::parse_unquiet(path, src).map_err(|mut e| {
            e.reason = quiet_quoted(&e.reason);
            e
        })
    }

    fn parse_unquiet(path: &Path, src: &str) -> Result<Config, ConfigError> {
        let loc = Locator { file: path, src };
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let line = e.span().map(|s| loc.line(s.start));
            // toml has no message for some errors (a control character in a
            // comment); its Display would quote the line, which may hold a key.
            let reason = match e.message().trim() {
                "" => "invalid TOML (a character TOML does not allow here, such as a control character)".to_string(),
                m => m.replace('\n', "; "),
            };
            ConfigError { file: path.to_path_buf(), line, field: String::new(), reason }
        })?;
        Self::validate(&loc, raw)
    }

    fn validate(loc: &Locator<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
        // Workers.
        let workers = raw.workers.get_ref();
        let cores_spanned = &workers.cores;
        if cores_spanned.get_ref().is_empty() {
            return Err(loc.at(cores_spanned, "workers.cores", "at least one worker core is needed"));
        }
        let mut seen = HashSet::new();
        let mut worker_cores = Vec::new();
        for (i, c) in cores_spanned.get_ref().iter().enumerate() {
            let v = *c.get_ref();
            if !(0..=1023).contains(&v) {
                return Err(loc.at(c, format!("workers.cores[{i}]"), format!("core {v} is out of range 0..1023")));
            }
            if !seen.insert(v) {
                return Err(loc.at(c, format!("workers.cores[{i}]"), format!("core {v} is used twice")));
            }
            worker_cores.push(v as usize);
        }

        // EAL args: espgw places the lcores itself (workers on their own).
        for (i, a) in raw.eal.args.iter().enumerate() {
            let v = a.get_ref().as_str();
            let lcore_opt = matches!(v, "-l" | "-c" | "--lcores" | "--main-lcore" | "--master-lcore")
                || v.starts_with("--lcores=")
                || v.starts_with("--main-lcore=")
                || ((v.starts_with("-l") || v.starts_with("-c")) && v.len() > 2 && !v.starts_with("--"));
            if lcore_opt {
                return Err(loc.at(
                    a,
                    format!("eal.args[{i}]"),
                    format!(
                        "{v:?}: espgw places the lcores from workers.cores (main lcore 0, worker i on lcore i+1); \
                         remove this option"
                    ),
                ));
            }
        }

        // Ports.
        if raw.ports.is_empty() {
            return Err(ConfigError {
                file: loc.file.to_path_buf(),
                line: None,
                field: "port".into(),
                reason: "no [[port]] is configured".into(),
            });
        }
        let mut ports = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut dev_names: HashMap<String, usize> = HashMap::new();
        for (i, p) in raw.ports.iter().enumerate() {
            let p = p.get_ref();
            let f = |k: &str| format!("port[{i}].{k}");
            let name = p.name.get_ref().trim().to_string();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(loc.at(
                    &p.name,
                    f("name"),
                    format!("{name:?} is not a valid port name (letters, digits, '-', '_')"),
                ));
            }
            if let Some(prev) = by_name.insert(name.clone(), i) {
                return Err(loc.at(&p.name, f("name"), format!("name {name:?} is already used by port[{prev}]")));
            }
            let device = Device::parse(p.device.get_ref()).map_err(|r| loc.at(&p.device, f("device"), r))?;
            if let Some(prev) = dev_names.insert(device.port_name().to_string(), i) {
                return Err(loc.at(
                    &p.device,
                    f("device"),
                    format!("device {:?} is already used by port[{prev}]", device.port_name()),
                ));
            }
            let role = match p.role.get_ref().as_str() {
                "cleartext" => Role::Cleartext,
                "protected" => Role::Protected,
                "host" => Role::Host,
                other => {
                    return Err(loc.at(
                        &p.role,
                        f("role"),
                        format!("unknown role {other:?} (expected \"cleartext\", \"protected\" or \"host\")"),
                    ))
                }
            };
            let host = host_port(loc, &f, p, role, &device, &ports)?;
            let mtu = match &p.mtu {
                None => None,
                Some(m) => {
                    let v = *m.get_ref();
                    if !(MIN_MTU as i64..=MAX_MTU as i64).contains(&v) {
                        return Err(loc.at(m, f("mtu"), format!("MTU {v} is out of range {MIN_MTU}..{MAX_MTU}")));
                    }
                    Some(v as u16)
                }
            };
            let desc = |d: &Option<Spanned<i64>>, k: &str, default: u16| -> Result<u16, ConfigError> {
                match d {
                    None => Ok(default),
                    Some(d) => {
                        let v = *d.get_ref();
                        if !(64..=16384).contains(&v) || (v as u64).count_ones() != 1 {
                            Err(loc.at(d, f(k), format!("{v} descriptors: must be a power of two in 64..16384")))
                        } else {
                            Ok(v as u16)
                        }
                    }
                }
            };
            let mac = |m: &Option<Spanned<String>>, k: &str| -> Result<Option<[u8; 6]>, ConfigError> {
                m.as_ref().map(|m| ipsec::parse_mac(m.get_ref()).map_err(|r| loc.at(m, f(k), r))).transpose()
            };
            let mut addresses = Vec::new();
            for (j, a) in p.addresses.iter().enumerate() {
                let ip: std::net::IpAddr = a.get_ref().parse().map_err(|_| {
                    loc.at(a, f(&format!("addresses[{j}]")), format!("{:?} is not an IP address", a.get_ref()))
                })?;
                addresses.push(ip);
            }
            ports.push(PortConfig {
                name,
                device,
                role,
                mtu,
                rx_desc: desc(&p.rx_desc, "rx_desc", 1024)?,
                tx_desc: desc(&p.tx_desc, "tx_desc", 1024)?,
                mac: mac(&p.mac, "mac")?,
                addresses,
                peer_mac: mac(&p.peer_mac, "peer_mac")?,
                host,
            });
        }

        // Forwarding pairs.
        let mut forward = vec![None; ports.len()];
        for (i, fw) in raw.forward.iter().enumerate() {
            let fw = fw.get_ref();
            let find = |s: &Spanned<String>, k: &str| {
                by_name
                    .get(s.get_ref().as_str())
                    .copied()
                    .ok_or_else(|| loc.at(s, format!("forward[{i}].{k}"), format!("no port named {:?}", s.get_ref())))
            };
            let from = find(&fw.from, "from")?;
            let to = find(&fw.to, "to")?;
            if forward[from].is_some() {
                return Err(loc.at(
                    &fw.from,
                    format!("forward[{i}].from"),
                    format!("port {:?} already forwards elsewhere", fw.from.get_ref()),
                ));
            }
            forward[from] = Some(to);
        }

        // Mempool.
        let mp = &raw.mempool;
        let mbufs = match &mp.mbufs {
            None => 16383,
            Some(v) if (1023..=4_194_303).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                return Err(loc.at(v, "mempool.mbufs", format!("{} mbufs: must be in 1023..4194303", v.get_ref())))
            }
        };
        let cache = match &mp.cache {
            None => 256,
            Some(v) if *v.get_ref() <= 512 => *v.get_ref(),
            Some(v) => return Err(loc.at(v, "mempool.cache", format!("cache of {} mbufs: at most 512", v.get_ref()))),
        };
        let data_room = match &mp.data_room {
            None => 2048 + 128,
            Some(v) if (1024 + 128..=65535).contains(v.get_ref()) => *v.get_ref() as u16,
            Some(v) => {
                return Err(loc.at(v, "mempool.data_room", format!("{} bytes: must be in 1152..65535", v.get_ref())))
            }
        };

        let control = raw.control.as_ref().map(|c| control_config(loc, c)).transpose()?;
        let dir = loc.file.parent().unwrap_or(Path::new("."));
        let state_file = match &raw.state.file {
            Some(f) if f.get_ref().trim().is_empty() => {
                return Err(loc.at(f, "state.file", "empty path (the state file keeps sequence numbers unique)"))
            }
            Some(f) => dir.join(f.get_ref()),
            None => {
                let stem = loc.file.file_stem().map_or("espgw".into(), |s| s.to_string_lossy().into_owned());
                dir.join(format!("{stem}.state"))
            }
        };
        let port_names: Vec<String> = ports.iter().map(|p| p.name.clone()).collect();
        let host_port = ports.iter().find(|p| p.role == Role::Host).map(|p| p.name.as_str());
        let ipsec = ipsec::validate(
            loc,
            &raw.policy,
            &raw.sas,
            &raw.eroutes,
            &raw.routes,
            &raw.neighbors,
            &port_names,
            host_port,
        )?;
        let metrics = metrics_config(loc, &raw.metrics)?;
        let own: Vec<std::net::IpAddr> = ports.iter().flat_map(|p| p.addresses.iter().copied()).collect();
        let connections = ike::validate(loc, &raw.connections, &own)?;
        Ok(Config {
            file: loc.file.to_path_buf(),
            capture: raw.eal.capture,
            eal_args: raw.eal.args.into_iter().map(Spanned::into_inner).collect(),
            ports,
            worker_cores,
            idle_sleep_us: workers.idle_sleep_us,
            mempool: MempoolConfig { mbufs, cache, data_room },
            forward,
            sas: ipsec.sas,
            eroutes: ipsec.eroutes,
            routes: ipsec.routes,
            neighbors: ipsec.neighbors,
            policy: ipsec.policy,
            control,
            metrics,
            state_file,
            connections,
        })
    }

    /// Line of the `workers.cores[i]` entry, for errors found after parsing
    /// (e.g. a core the machine does not have).
    pub fn core_error(&self, i: usize, reason: impl Into<String>) -> ConfigError {
        let line = self.line_of(|r| Some(r.workers.get_ref().cores.get_ref().get(i)?.span().start));
        ConfigError { file: self.file.clone(), line, field: format!("workers.cores[{i}]"), reason: reason.into() }
    }
}

/// A config with one protected port and `n` outbound GCM tunnel SAs named
/// `sa00000`, `sa00001`, ... with distinct keys (tests of what scales with SAs).
#[cfg(test)]
pub(crate) fn n_outbound_sas(n: u32) -> Config {
    let mut text =
        String::from("[workers]\ncores = [0]\n[[port]]\nname = \"p\"\ndevice = \"net_null0\"\nrole = \"protected\"\n");
    for i in 0..n {
        text += &format!(
            "[[sa]]\nname = \"sa{i:05}\"\ndirection = \"out\"\nspi = {}\nalgorithm = \"aes128-gcm16\"\n\
             enc_key = \"0x{:032x}{i:08x}\"\nmode = \"tunnel\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.1\"\n",
            0x1000 + i,
            i + 1
        );
    }
    Config::parse(Path::new("sas.toml"), &text).expect("a valid config")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[eal]
args = ["--no-pci"]

[workers]
cores = [0]

[[port]]
name = "clear0"
device = "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap"
role = "cleartext"
mtu = 1500

[[port]]
name = "prot0"
device = "0000:01:00.0"
role = "protected"

[[forward]]
from = "clear0"
to = "prot0"
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), s)
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].device.port_name(), "net_pcap0");
        assert_eq!(c.ports[1].device, Device::Pci { addr: "0000:01:00.0".into() });
        assert_eq!(c.ports[1].device.eal_args(), ["-a".to_string(), "0000:01:00.0".to_string()]);
        assert_eq!(c.ports[0].mtu, Some(1500));
        assert_eq!(c.ports[1].mtu, None);
        assert_eq!(c.forward, vec![Some(1), None]);
        assert_eq!(c.worker_cores, vec![0]);
        assert_eq!(c.mempool.data_room, 2176);
    }

    /// Each broken config gives the expected line, field and a reason.
    #[test]
    fn errors_name_line_field_and_reason() {
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            ("role = \"cleartext\"", "role = \"public\"", 11, "port[0].role", "unknown role \"public\""),
            ("mtu = 1500", "mtu = 70000", 12, "port[0].mtu", "out of range"),
            ("cores = [0]", "cores = [0, 0]", 6, "workers.cores[1]", "used twice"),
            ("cores = [0]", "cores = []", 6, "workers.cores", "at least one"),
            ("to = \"prot0\"", "to = \"nowhere\"", 21, "forward[0].to", "no port named \"nowhere\""),
            ("name = \"prot0\"", "name = \"clear0\"", 15, "port[1].name", "already used"),
            ("device = \"0000:01:00.0\"", "device = \"eth0\"", 16, "port[1].device", "neither a PCI address"),
            ("mtu = 1500", "mtu = 1500\nspeed = 10", 13, "", "unknown field `speed`"),
            ("mtu = 1500", "mtu = \"big\"", 12, "", "invalid type"),
        ];
        for (from, to, line, field, reason) in cases {
            let src = GOOD.replacen(from, to, 1);
            let e = parse(&src).expect_err(to);
            assert_eq!(e.line, Some(*line), "{to}: {e}");
            assert_eq!(e.field, *field, "{to}: {e}");
            assert!(e.reason.contains(reason), "{to}: {e}");
            assert!(e.to_string().starts_with(&format!("test.toml:{line}: ")), "{e}");
        }
    }

    #[test]
    fn missing_sections_are_reported() {
        let e = parse("[eal]\nargs=[]\n").unwrap_err();
        assert!(e.reason.contains("missing field `workers`"), "{e}");
        let e = parse("[workers]\ncores=[1]\n").unwrap_err();
        assert_eq!(e.field, "port");
    }

    const IPSEC: &str = r#"
[workers]
cores = [0]

[[port]]
name = "private"
device = "net_null0"
role = "cleartext"
addresses = ["10.0.1.254"]

[[port]]
name = "public"
device = "net_null1"
role = "protected"
peer_mac = "02:00:00:00:00:fe"

[[sa]]
name = "out"
direction = "out"
spi = 0x1001
algorithm = "aes128-cbc-hmac-sha1-96"
enc_key = "000102030405060708090a0b0c0d0e0f"
auth_key = "0x a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3"
mode = "tunnel"
local = "192.0.2.1"
remote = "198.51.100.1"

[[sa]]
name = "in"
direction = "in"
spi = 0x2001
algorithm = "aes128-gcm16"
enc_key = "000102030405060708090a0b0c0d0e0f10111213"
mode = "tunnel"
local = "192.0.2.1"
remote = "198.51.100.1"
eroute = "nets"

[[eroute]]
name = "nets"
src = "10.0.1.0/24"
dst = "10.0.2.0/24"
proto = "tcp"
dport = "1000-2000"
action = "protect"
sa = "out"
mss_clamp = true

[[route]]
prefix = "0.0.0.0/0"
port = "public"
via = "198.51.100.254"

[[neighbor]]
ip = "198.51.100.254"
mac = "02:00:00:00:00:aa"
"#;

    /// The host port: one at most, no addresses, no routes, its keys only on
    /// it, and a named kernel interface when espgw sets it up.
    #[test]
    fn host_port_settings_are_checked() {
        let base = "[workers]\ncores = [0]\n[[port]]\nname = \"pub\"\ndevice = \"net_null0\"\nrole = \"protected\"\n\
                    addresses = [\"192.0.2.1\"]\n";
        let host = "[[port]]\nname = \"host\"\ndevice = \"net_tap0,iface=espgw0\"\nrole = \"host\"\n";
        let c = parse(&format!("{base}{host}host_rate = 500\nkernel_table = 77\n")).unwrap();
        let h = c.ports[1].host.as_ref().unwrap();
        assert_eq!((h.rate, h.kernel_setup, h.kernel_table, h.iface.as_deref()), (500, true, 77, Some("espgw0")));
        assert_eq!(c.ports[0].host, None);
        let d = parse(&format!("{base}{host}")).unwrap();
        assert_eq!(d.ports[1].host.as_ref().map(|h| (h.rate, h.kernel_table)), Some((10_000, DEFAULT_KERNEL_TABLE)));
        let cases: &[(String, &str, &str)] = &[
            (
                format!(
                    "{base}{host}{}",
                    host.replace(
                        "\"host\"\ndevice = \"net_tap0,iface=espgw0\"",
                        "\"host2\"\ndevice = \"net_tap1,iface=e1\""
                    )
                ),
                "port[2].role",
                "already the host port",
            ),
            (format!("{base}{host}addresses = [\"10.0.0.1\"]\n"), "port[1].addresses[0]", "no addresses of its own"),
            (format!("{base}host_rate = 500\n{host}"), "port[0].host_rate", "for role = \"host\""),
            (format!("{base}{host}host_rate = 5\n"), "port[1].host_rate", "outside 100..10000000"),
            (format!("{base}{host}kernel_table = 254\n"), "port[1].kernel_table", "reserved"),
            (format!("{base}{}", host.replace(",iface=espgw0", "")), "port[1].device", "name the kernel interface"),
            (
                format!("{base}{host}[[route]]\nprefix = \"0.0.0.0/0\"\nport = \"host\"\n"),
                "route[0].port",
                "takes no routes",
            ),
        ];
        for (text, field, reason) in cases {
            let e = parse(text).expect_err(field);
            assert_eq!(e.field, *field, "{e}");
            assert!(e.reason.contains(reason), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
        // kernel_setup = false: any device, set up by the operator.
        let own = parse(&format!("{base}{}kernel_setup = false\n", host.replace(",iface=espgw0", ""))).unwrap();
        assert!(!own.ports[1].host.as_ref().unwrap().kernel_setup);
    }

    #[test]
    fn ipsec_sections_parse() {
        let c = parse(IPSEC).unwrap();
        assert_eq!(c.sas.len(), 2);
        assert_eq!(c.sas[0].cfg.spi, 0x1001);
        assert_eq!(c.sas[0].cfg.auth_key.len(), 20);
        assert_eq!(
            c.sas[1].role,
            SaRoleSpec::Inbound {
                bind: Some("192.0.2.1".parse().unwrap()),
                check: InboundCheck::Eroutes(vec!["nets".into()])
            }
        );
        assert_eq!(c.state_file, Path::new("test.state"), "next to the config by default");
        let e = &c.eroutes[0].eroute;
        assert_eq!(e.selector.proto, Some(6));
        assert_eq!((e.selector.dport.lo, e.selector.dport.hi), (1000, 2000));
        assert!(matches!(e.action, espgw_core::policy::Action::Protect { sa: 1, options } if options.mss_clamp));
        assert_eq!(c.routes[0].port, 1);
        assert_eq!(c.neighbors[0].1, [2, 0, 0, 0, 0, 0xaa]);
        assert_eq!(c.ports[1].peer_mac, Some([2, 0, 0, 0, 0, 0xfe]));
        assert_eq!(c.ports[0].addresses, vec!["10.0.1.254".parse::<std::net::IpAddr>().unwrap()]);
    }

    /// An unterminated multi-line string swallows the lines after it, an
    /// SA's key among them; the error names the line but shows neither the
    /// swallowed text nor the key (the config fuzzer's find: the parser's
    /// "invalid type: string ..." quoted the whole value).
    #[test]
    fn a_runaway_string_is_not_quoted_back() {
        let key = "c286696d887c9aa0611bbb3e2025a45a";
        let text = format!("[workers]\ncores = '''[0]\n[[sa]]\nenc_key = \"0x{key}\"\n'''\n");
        let e = Config::parse(Path::new("espgw.toml"), &text).unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains(key), "{msg}");
        assert!(msg.starts_with("espgw.toml:") && msg.contains("not shown"), "{msg}");
        assert_eq!(quiet_quoted(r#"a "short" one, "an \"escaped\" one""#), r#"a "short" one, "an \"escaped\" one""#);
        assert_eq!(quiet_quoted(r#"x "one\ntwo" y"#), "x \"…\" (8 characters, not shown) y");
        assert_eq!(quiet_quoted("open \"end"), "open \"end");
    }

    /// Each broken IPsec setting names its line and field, says why, and never echoes a key.
    #[test]
    fn ipsec_errors_name_line_field_and_reason() {
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            (
                "enc_key = \"000102030405060708090a0b0c0d0e0f\"",
                "enc_key = \"000102\"",
                22,
                "sa[0].enc_key",
                "needs a 16-byte enc_key, got 3 bytes",
            ),
            (
                "enc_key = \"000102030405060708090a0b0c0d0e0f10111213\"",
                "enc_key = \"000102030405060708090a0b0c0d0e0f\"",
                33,
                "sa[1].enc_key",
                "20-byte enc_key (key + 4-byte salt)",
            ),
            ("auth_key = \"0x a0a1", "auth_key = \"0x zz", 23, "sa[0].auth_key", "not hexadecimal"),
            ("spi = 0x2001", "spi = 0x1001\nlocal_unused = 1", 32, "", "unknown field `local_unused`"),
            ("spi = 0x1001", "spi = 7", 20, "sa[0].spi", "reserved"),
            ("algorithm = \"aes128-gcm16\"", "algorithm = \"des\"", 32, "sa[1].algorithm", "unknown algorithm \"des\""),
            ("direction = \"in\"", "direction = \"inbound\"", 30, "sa[1].direction", "expected \"in\" or \"out\""),
            (
                "remote = \"198.51.100.1\"\n\n[[sa]]",
                "remote = \"2001:db8::1\"\n\n[[sa]]",
                26,
                "sa[0].remote",
                "one address family",
            ),
            ("sa = \"out\"", "sa = \"nope\"", 46, "eroute[0].sa", "no SA named \"nope\""),
            ("sa = \"out\"", "sa = \"in\"", 46, "eroute[0].sa", "is inbound"),
            ("dst = \"10.0.2.0/24\"", "dst = \"10.0.2.0/33\"", 42, "eroute[0].dst", "longer than 32 bits"),
            ("proto = \"tcp\"", "proto = \"tcpp\"", 43, "eroute[0].proto", "unknown protocol"),
            ("proto = \"tcp\"\n", "", 43, "eroute[0].dport", "port ranges need protocol"),
            ("eroute = \"nets\"", "eroute = \"other\"", 37, "sa[1].eroute", "no eroute named \"other\""),
            ("port = \"public\"", "port = \"wan\"", 51, "route[0].port", "no port named \"wan\""),
            ("via = \"198.51.100.254\"", "via = \"fe80::1\"", 52, "route[0].via", "different families"),
            ("mac = \"02:00:00:00:00:aa\"", "mac = \"02:00:00:00:aa\"", 56, "neighbor[0].mac", "not a MAC address"),
            ("peer_mac = \"02:00:00:00:00:fe\"", "peer_mac = \"nope\"", 15, "port[1].peer_mac", "not a MAC address"),
            (
                "action = \"protect\"",
                "action = \"encrypt\"",
                45,
                "eroute[0].action",
                "expected protect, pass, drop or trap",
            ),
        ];
        for (from, to, line, field, reason) in cases {
            assert!(IPSEC.contains(from), "fixture lacks {from:?}");
            let src = IPSEC.replacen(from, to, 1);
            let e = parse(&src).expect_err(to);
            assert_eq!((e.line, e.field.as_str()), (Some(*line), *field), "{to}: {e}");
            assert!(e.reason.contains(reason), "{to}: {e}");
            // Keys never appear in errors.
            assert!(!e.to_string().contains("0405060708"), "{e}");
        }
        // Selectors are mandatory for inbound SAs; lifetimes must make sense.
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            ("eroute = \"nets\"", "", 29, "sa[1].eroute", "an inbound SA needs selectors"),
            ("eroute = \"nets\"", "eroute = []", 37, "sa[1].eroute", "empty eroute list"),
            ("eroute = \"nets\"", "eroute = [\"nets\", \"v6\"]", 37, "sa[1].eroute", "no eroute named \"v6\""),
            ("eroute = \"nets\"", "eroute = \"nets\"\nsrc = \"10.0.2.0/24\"", 38, "sa[1].src", "not both"),
            ("eroute = \"nets\"", "src = \"10.0.2.0/24\"", 37, "sa[1].dst", "need both src and dst"),
            (
                "remote = \"198.51.100.1\"\n\n[[sa]]",
                "remote = \"198.51.100.1\"\ndst = \"10.0.0.0/8\"\n\n[[sa]]",
                27,
                "sa[0].dst",
                "only inbound SAs carry selectors",
            ),
            ("eroute = \"nets\"", "eroute = \"nets\"\nhard_bytes = 0", 38, "sa[1].hard_bytes", "at least 1"),
            (
                "eroute = \"nets\"",
                "eroute = \"nets\"\nsoft_packets = 10\nhard_packets = 5",
                38,
                "sa[1].soft_packets",
                "above hard_packets = 5",
            ),
        ];
        for (from, to, line, field, reason) in cases {
            let src = IPSEC.replacen(from, to, 1);
            let e = parse(&src).expect_err(to);
            assert_eq!((e.line, e.field.as_str()), (Some(*line), *field), "{to}: {e}");
            assert!(e.reason.contains(reason), "{to}: {e}");
        }
        // Own selectors and eroute lists are accepted.
        let own =
            IPSEC.replacen("eroute = \"nets\"", "src = \"10.0.2.0/24\"\ndst = \"10.0.1.0/24\"\nproto = \"udp\"", 1);
        let c = parse(&own).unwrap();
        assert!(
            matches!(&c.sas[1].role, SaRoleSpec::Inbound { check: InboundCheck::Selectors(s), .. } if s[0].proto == Some(17))
        );
        let list = IPSEC.replacen("eroute = \"nets\"", "eroute = [\"nets\", \"nets\"]", 1);
        assert!(parse(&list).is_ok());

        // NAT-T: encap = "udp" with ports; ports and nat_follow need it.
        let udp = IPSEC.replacen(
            "eroute = \"nets\"",
            "eroute = \"nets\"\nencap = \"udp\"\nremote_port = 31000\nnat_follow = true",
            1,
        );
        let c = parse(&udp).unwrap();
        assert_eq!(c.sas[1].cfg.encap, Some(espgw_core::esp::UdpEncap { local_port: 4500, remote_port: 31000 }));
        assert!(c.sas[1].nat_follow);
        assert_eq!(c.sas[0].cfg.encap, None);
        let cases: &[(&str, usize, &str, &str)] = &[
            ("encap = \"tcp\"", 38, "sa[1].encap", "expected \"none\" or \"udp\""),
            ("local_port = 4500", 38, "sa[1].local_port", "needs encap = \"udp\""),
            ("nat_follow = true", 38, "sa[1].nat_follow", "needs encap = \"udp\""),
            ("encap = \"udp\"\nremote_port = 0", 39, "sa[1].remote_port", "outside 1..65535"),
            ("encap = \"udp\"\nlocal_port = 70000", 39, "sa[1].local_port", "outside 1..65535"),
        ];
        for (add, line, field, reason) in cases {
            let src = IPSEC.replacen("eroute = \"nets\"", &format!("eroute = \"nets\"\n{add}"), 1);
            let e = parse(&src).expect_err(add);
            assert_eq!((e.line, e.field.as_str()), (Some(*line), *field), "{add}: {e}");
            assert!(e.reason.contains(reason), "{add}: {e}");
        }

        // SPI reused in the same direction.
        let dup = IPSEC
            .replacen("spi = 0x2001", "spi = 0x1001\n", 1)
            .replacen("direction = \"in\"", "direction = \"out\"", 1)
            .replacen("eroute = \"nets\"", "", 1);
        let e = parse(&dup).unwrap_err();
        assert_eq!(e.field, "sa[1].spi");
        assert!(e.reason.contains("already used by sa[0]"), "{e}");
    }

    #[test]
    fn pci_addresses() {
        for ok in ["0000:01:00.0", "01:00.0", "0000:af:1f.7,txq_inline=128"] {
            assert!(matches!(Device::parse(ok), Ok(Device::Pci { .. })), "{ok}");
        }
        for bad in ["0000:01:00", "1:00.0", "zz:00.0", "eth0", ""] {
            assert!(Device::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Device::parse("0000:01:00.0,x=1").unwrap().port_name(), "0000:01:00.0");
    }
}
