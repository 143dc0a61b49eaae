//! The control plane's view of policy: SAs and eroutes by name, their
//! redacted descriptions, and the [`PolicyDb`] that publishes snapshots to the
//! workers. Only the control side ever locks a `PolicyStore`; workers read the
//! published snapshots without locks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use espgw_core::esp::{DfPolicy, Mode};
use espgw_core::policy::{
    Action, Direction, Eroute, InboundPolicy, PolicyDb, PolicyError, PortRange, SaRole, StateStore,
};
use serde::Serialize;
use thiserror::Error;

use crate::config::{Config, ErouteSpec, InboundCheck, SaRoleSpec, SaSpec};

/// Why a change was refused; each maps onto one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// Bad input (400); `field` names the offending field when known.
    #[error("{reason}")]
    Invalid { field: Option<String>, reason: String },
    /// No such object (404).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The change cannot be made safe right now (503): the sequence-number
    /// state could not be persisted.
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    fn invalid(reason: impl Into<String>) -> Self {
        StoreError::Invalid { field: None, reason: reason.into() }
    }
}

/// An SA as the API shows it: everything but the keys.
#[derive(Debug, Clone, Serialize)]
pub struct SaView {
    pub name: String,
    pub id: u32,
    pub direction: &'static str,
    pub spi: u32,
    /// The SPI as tcpdump, `ip xfrm` and strongSwan print it (`0x0000abcd`).
    pub spi_hex: String,
    pub algorithm: &'static str,
    pub backend: &'static str,
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
    pub esn: bool,
    pub replay_window: u32,
    pub df: &'static str,
    pub ttl: u8,
    /// NAT-T: "udp" with the ports, or "none".
    pub encap: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    pub nat_follow: bool,
    /// Inbound: the eroutes decrypted traffic must match (mirrored)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eroute: Option<Vec<String>>,
    /// ...or the SA's own selectors, as decrypted packets arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<String>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
    pub soft_seconds: Option<u64>,
    pub hard_seconds: Option<u64>,
    pub soft_use_seconds: Option<u64>,
    pub hard_use_seconds: Option<u64>,
    /// When it was added, and when its first packet was seen (time lifetimes).
    #[serde(skip)]
    pub added: std::time::Instant,
    #[serde(skip)]
    pub first_use: Option<std::time::Instant>,
    /// Which flags a time limit raised (soft, hard): the expiry events name "time".
    #[serde(skip)]
    pub by_time: (bool, bool),
    /// Always `"<redacted>"`: keys go in, never out.
    pub enc_key: &'static str,
    pub auth_key: &'static str,
}

/// Live state of an SA (read from its atomics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SaState {
    pub packets: u64,
    pub bytes: u64,
    pub soft_expired: bool,
    pub hard_expired: bool,
    /// Outbound: the next sequence number to send.
    pub next_seq: u64,
    /// Inbound: the highest sequence number accepted.
    pub replay_top: u64,
    /// Seconds until the hard time limit (`None` without one).
    pub seconds_left: Option<u64>,
    /// Bytes and packets until the hard limit (`None` without one).
    pub bytes_left: Option<u64>,
    pub packets_left: Option<u64>,
    /// Drops this SA caused, by class (replay, auth, policy, lifetime, malformed).
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Outbound: the path MTU learned from ICMP, while it has not aged out.
    pub path_mtu: Option<u16>,
    /// Share of the hard lifetime used (0..1; 0 without a hard limit).
    pub lifetime_used: f64,
    /// The crypto backend in use (what `auto` resolved to).
    pub backend: &'static str,
}

/// An SA with its live state.
#[derive(Debug, Clone, Serialize)]
pub struct SaStatus {
    #[serde(flatten)]
    pub sa: SaView,
    pub state: SaState,
}

/// An eroute as the API shows it (and takes it).
#[derive(Debug, Clone, Serialize)]
pub struct ErouteView {
    pub name: String,
    pub id: u32,
    pub src: String,
    pub dst: String,
    pub proto: String,
    pub sport: String,
    pub dport: String,
    pub priority: u32,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sa: Option<String>,
    pub mss_clamp: bool,
    pub fragment_before_encryption: bool,
}

/// SAs and eroutes by name over a [`PolicyDb`].
pub struct PolicyStore {
    db: PolicyDb,
    sas: BTreeMap<String, SaView>,
    eroutes: BTreeMap<String, Eroute>,
    next_sa_id: u32,
    next_eroute_id: u32,
    /// SAs with `nat_follow`, by id, as given (keys included, zeroized when
    /// dropped): following a NAT rebinding replaces them with the new peer
    /// address and port, keeping key, sequence counter and replay window.
    followers: BTreeMap<u32, SaSpec>,
}

/// What a NAT mapping report did (the `nat_mapping` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatFollow {
    /// The inbound SA that saw the new mapping.
    pub sa: String,
    /// Where the peer was and is now (address, UDP port).
    pub from: (Option<IpAddr>, u16),
    pub to: (IpAddr, u16),
    /// SAs moved to the new address/port (those with `nat_follow`).
    pub followed: Vec<String>,
}

fn range_str(r: PortRange) -> String {
    if r == PortRange::ANY {
        "any".into()
    } else if r.lo == r.hi {
        r.lo.to_string()
    } else {
        format!("{}-{}", r.lo, r.hi)
    }
}

fn proto_str(p: Option<u8>) -> String {
    p.map_or_else(|| "any".into(), espgw_core::packet::ip::proto::name)
}

fn sa_view(spec: &SaSpec) -> SaView {
    let c = &spec.cfg;
    let (mode, local, remote) = match c.mode {
        Mode::Tunnel { local, remote } => ("tunnel", Some(local), Some(remote)),
        Mode::Transport => ("transport", None, None),
    };
    let (eroute, own) = match &spec.role {
        SaRoleSpec::Inbound { check: InboundCheck::Eroutes(names), .. } => (Some(names.clone()), None),
        SaRoleSpec::Inbound { check: InboundCheck::Selectors(sels), .. } => (None, sels.first().copied()),
        SaRoleSpec::Outbound => (None, None),
    };
    SaView {
        name: spec.name.clone(),
        id: spec.id,
        direction: dir_str(spec.direction()),
        spi: c.spi,
        spi_hex: format!("0x{:08x}", c.spi),
        algorithm: c.algorithm.name(),
        backend: c.backend.name(),
        mode,
        local,
        remote,
        esn: c.esn,
        replay_window: c.replay_window,
        df: match c.df {
            DfPolicy::Copy => "copy",
            DfPolicy::Set => "set",
            DfPolicy::Clear => "clear",
        },
        ttl: c.ttl,
        encap: if c.encap.is_some() { "udp" } else { "none" },
        local_port: c.encap.map(|e| e.local_port),
        remote_port: c.encap.map(|e| e.remote_port),
        nat_follow: spec.nat_follow,
        eroute,
        src: own.map(|s| s.src.to_string()),
        dst: own.map(|s| s.dst.to_string()),
        proto: own.map(|s| proto_str(s.proto)),
        sport: own.map(|s| range_str(s.sport)),
        dport: own.map(|s| range_str(s.dport)),
        soft_bytes: c.lifetime.soft_bytes,
        hard_bytes: c.lifetime.hard_bytes,
        soft_packets: c.lifetime.soft_packets,
        hard_packets: c.lifetime.hard_packets,
        soft_seconds: c.lifetime.soft_add_secs,
        hard_seconds: c.lifetime.hard_add_secs,
        soft_use_seconds: c.lifetime.soft_use_secs,
        hard_use_seconds: c.lifetime.hard_use_secs,
        added: std::time::Instant::now(),
        first_use: None,
        by_time: (false, false),
        enc_key: "<redacted>",
        auth_key: "<redacted>",
    }
}

/// An SA spec's role in the database; `eroute_id` resolves eroute names.
fn role_of(role: &SaRoleSpec, eroute_id: &dyn Fn(&str) -> Option<u32>) -> Result<SaRole, String> {
    Ok(match role {
        SaRoleSpec::Outbound => SaRole::Outbound,
        SaRoleSpec::Inbound { bind, check } => SaRole::Inbound {
            local: *bind,
            policy: match check {
                InboundCheck::Eroutes(names) => InboundPolicy::Eroutes(
                    names
                        .iter()
                        .map(|n| eroute_id(n).ok_or_else(|| format!("no eroute named {n:?}")))
                        .collect::<Result<_, _>>()?,
                ),
                InboundCheck::Selectors(s) => InboundPolicy::Selectors(s.clone()),
            },
        },
    })
}

/// `"in"` / `"out"`.
pub fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    }
}

impl PolicyStore {
    /// Load a validated config (published once), without durable state
    /// (checks, tools and tests).
    pub fn from_config(cfg: &Config) -> Result<PolicyStore, PolicyError> {
        Self::from_config_with(cfg, None)
    }

    /// Load a validated config; with `state`, sequence counters and replay
    /// windows resume from it and leases are persisted there before use.
    pub fn from_config_with(cfg: &Config, state: Option<Box<dyn StateStore>>) -> Result<PolicyStore, PolicyError> {
        let mut db = PolicyDb::new(cfg.policy.defaults);
        if let Some(st) = state {
            db = db.with_state_store(st);
        }
        let eroute_id = |name: &str| cfg.eroutes.iter().find(|e| e.name == name).map(|e| e.eroute.id);
        db.batch(|b| {
            // Outbound SAs first (eroutes name them), inbound SAs last (they name eroutes).
            for s in cfg.sas.iter().filter(|s| s.direction() == Direction::Outbound) {
                b.add_sa(s.id, SaRole::Outbound, &s.cfg)?;
            }
            for e in &cfg.eroutes {
                b.add_eroute(e.eroute)?;
            }
            for s in cfg.sas.iter().filter(|s| s.direction() == Direction::Inbound) {
                b.add_sa(s.id, role_of(&s.role, &eroute_id).map_err(PolicyError::Selector)?, &s.cfg)?;
            }
            Ok::<(), PolicyError>(())
        })??;
        let sas = cfg.sas.iter().map(|s| (s.name.clone(), sa_view(s))).collect();
        let eroutes = cfg.eroutes.iter().map(|e| (e.name.clone(), e.eroute)).collect();
        let followers = cfg.sas.iter().filter(|s| s.nat_follow).map(|s| (s.id, s.clone())).collect();
        Ok(PolicyStore {
            db,
            sas,
            eroutes,
            next_sa_id: cfg.sas.len() as u32 + 1,
            next_eroute_id: cfg.eroutes.len() as u32 + 1,
            followers,
        })
    }

    /// The database (for the workers' reader and the final report).
    pub fn db(&self) -> &PolicyDb {
        &self.db
    }

    /// Persist and grant sequence leases that run low (the control thread
    /// calls this every few milliseconds).
    pub fn renew_leases(&mut self) -> Result<usize, StoreError> {
        self.db.renew_leases().map_err(|e| self.explain(e))
    }

    fn sa_name(&self, id: u32) -> Option<&str> {
        self.sas.values().find(|s| s.id == id).map(|s| s.name.as_str())
    }

    /// An eroute's name by id (ACQUIRE events name the eroute).
    pub fn eroute_name(&self, id: u32) -> Option<&str> {
        self.eroutes.iter().find(|(_, e)| e.id == id).map(|(n, _)| n.as_str())
    }

    /// An SA name's id and direction (for eroute input).
    pub fn find_sa(&self, name: &str) -> Option<(u32, Direction)> {
        self.sas.get(name).map(|s| (s.id, if s.direction == "in" { Direction::Inbound } else { Direction::Outbound }))
    }

    /// Turn a database error into names the operator used.
    fn explain(&self, e: PolicyError) -> StoreError {
        let sa = |id: u32| self.sa_name(id).map_or_else(|| format!("#{id}"), |n| format!("{n:?}"));
        let er = |id: u32| self.eroute_name(id).map_or_else(|| format!("#{id}"), |n| format!("{n:?}"));
        match e {
            PolicyError::NotFound { what: "SA", id } => StoreError::NotFound(format!("SA {} does not exist", sa(id))),
            PolicyError::NotFound { what, id } => StoreError::NotFound(format!("{what} {} does not exist", er(id))),
            PolicyError::Exists { what, id } => StoreError::Conflict(format!("{what} #{id} already exists")),
            PolicyError::InUse { sa: s, eroute } => {
                StoreError::Conflict(format!("SA {} is used by eroute {}", sa(s), er(eroute)))
            }
            PolicyError::SpiInUse { spi, other } => StoreError::Conflict(format!(
                "SPI 0x{spi:08x} is already used by inbound SA {} for the same destination",
                sa(other)
            )),
            PolicyError::NotOutbound { eroute, sa: s } => StoreError::Conflict(format!(
                "eroute {} protects with SA {}, which would not be outbound",
                er(eroute),
                sa(s)
            )),
            PolicyError::Selector(r) => StoreError::invalid(format!("bad selector: {r}")),
            PolicyError::Sa(r) => StoreError::invalid(format!("bad SA: {r}")),
            PolicyError::KeyInUse { other } => StoreError::Conflict(format!(
                "outbound SA {} already sends with these keys: one key, one outbound SA, or sequence \
                 numbers (GCM nonces) would repeat; give this SA its own keys",
                sa(other)
            )),
            PolicyError::NoSelectors => StoreError::Invalid {
                field: Some("eroute".into()),
                reason: "an inbound SA needs selectors (RFC 4301 §5.2): eroute names, or its own src and dst".into(),
            },
            PolicyError::Persist(r) => {
                StoreError::Unavailable(format!("the sequence-number state cannot be persisted: {r}"))
            }
        }
    }

    /// Every SA, by name.
    pub fn sas(&self) -> Vec<SaStatus> {
        self.sas.values().map(|v| self.status(v)).collect()
    }

    /// A page of SAs in name order: those after `after` that pass `keep`, at
    /// most `limit`; also whether more follow.
    pub fn sas_page(&self, after: Option<&str>, limit: usize, keep: impl Fn(&SaView) -> bool) -> (Vec<SaStatus>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = after.map_or(Unbounded, |a| Excluded(a.to_string()));
        let mut it = self.sas.range((start, Unbounded)).map(|(_, v)| v).filter(|v| keep(v));
        let page: Vec<SaStatus> = it.by_ref().take(limit).map(|v| self.status(v)).collect();
        let more = it.next().is_some();
        (page, more)
    }

    /// A page of eroutes in name order (see [`Self::sas_page`]).
    pub fn eroutes_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&ErouteView) -> bool,
    ) -> (Vec<ErouteView>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = after.map_or(Unbounded, |a| Excluded(a.to_string()));
        let mut it = self.eroutes.range((start, Unbounded)).map(|(n, e)| self.eroute_view(n, e)).filter(|v| keep(v));
        let page: Vec<ErouteView> = it.by_ref().take(limit).collect();
        let more = it.next().is_some();
        (page, more)
    }

    /// Each SA's name with its expiry state and which limit it reached
    /// ("bytes" or "packets"), for the expiry events.
    pub fn expiry_states(&self) -> Vec<(String, bool, bool, &'static str)> {
        self.sas
            .values()
            .filter_map(|v| {
                let e = self.db.sa(v.id)?;
                let u = e.sa.usage();
                let (soft, hard) = (u.soft_expired, u.hard_expired);
                let by_bytes = |limit: Option<u64>| limit.is_some_and(|l| u.bytes >= l);
                let which = if (hard && v.by_time.1) || (!hard && soft && v.by_time.0) {
                    "time"
                } else if (hard && by_bytes(v.hard_bytes)) || (!hard && soft && by_bytes(v.soft_bytes)) {
                    "bytes"
                } else {
                    "packets"
                };
                Some((v.name.clone(), soft, hard, which))
            })
            .collect()
    }

    /// Rekey `name` make-before-break: a new SA with the same settings and
    /// the new SPI and keys is installed first. Outbound, every eroute that
    /// used the old SA moves to the new one and the old one goes (nothing
    /// sends with it any more). Inbound, the old one stays as `NAME.prev`
    /// for packets still in flight under it, until deleted (a previous
    /// `NAME.prev` goes). The new SA takes the name. Returns the new SA and
    /// the name the old one kept, if any.
    pub fn rekey_sa(
        &mut self,
        name: &str,
        spi: u32,
        enc_key: &str,
        auth_key: Option<&str>,
    ) -> Result<(SaStatus, Option<String>), StoreError> {
        let old = self.sas.get(name).cloned().ok_or_else(|| StoreError::NotFound(format!("no SA named {name:?}")))?;
        let view =
            serde_json::to_value(&old).map_err(|e| StoreError::Invalid { field: None, reason: e.to_string() })?;
        let mut input = crate::config::sa_input_from_view(view);
        let tmp = format!("{name}.rekeying");
        input["name"] = serde_json::json!(tmp);
        input["spi"] = serde_json::json!(spi);
        input["enc_key"] = serde_json::json!(enc_key);
        if let Some(a) = auth_key {
            input["auth_key"] = serde_json::json!(a);
        }
        let spec = crate::config::parse_one_sa(&input).map_err(|e| StoreError::Invalid {
            field: (!e.field.is_empty()).then(|| e.field.trim_start_matches("sa.").to_string()),
            reason: e.reason,
        })?;
        let new = self.add_sa(spec)?;
        if old.direction == "out" {
            let users: Vec<(String, Eroute)> = self
                .eroutes
                .iter()
                .filter(|(_, e)| matches!(e.action, Action::Protect { sa, .. } if sa == old.id))
                .map(|(n, e)| (n.clone(), *e))
                .collect();
            for (n, mut e) in users {
                if let Action::Protect { options, .. } = e.action {
                    e.action = Action::Protect { sa: new.sa.id, options };
                }
                self.replace_eroute(&n, ErouteSpec { name: n.clone(), eroute: e })?;
            }
            self.delete_sa(name, false)?;
            self.rename_sa(&tmp, name);
            Ok((self.sa(name)?, None))
        } else {
            let prev = format!("{name}.prev");
            if self.sas.contains_key(&prev) {
                self.delete_sa(&prev, true)?;
            }
            self.rename_sa(name, &prev);
            self.rename_sa(&tmp, name);
            Ok((self.sa(name)?, Some(prev)))
        }
    }

    fn rename_sa(&mut self, from: &str, to: &str) {
        if let Some(mut v) = self.sas.remove(from) {
            v.name = to.to_string();
            self.sas.insert(to.to_string(), v);
        }
    }

    /// Apply the time lifetimes (the control thread calls this about once a
    /// second): note first use, and raise the soft / hard flags of SAs past
    /// their limits; the workers stop a hard-expired SA at its next burst.
    pub fn apply_time_limits(&mut self) {
        let now = std::time::Instant::now();
        for v in self.sas.values_mut() {
            let lt = Self::time_lifetime(v);
            if lt == Default::default() {
                continue;
            }
            let Some(e) = self.db.sa(v.id) else { continue };
            let u = e.sa.usage_counters();
            if v.first_use.is_none() && u.packets() > 0 {
                v.first_use = Some(now);
            }
            let t = lt.time_state(
                now.duration_since(v.added).as_secs(),
                v.first_use.map(|f| now.duration_since(f).as_secs()),
            );
            if t.soft && !u.soft_expired() {
                u.expire_soft();
                v.by_time.0 = true;
            }
            if t.hard && !u.hard_expired() {
                u.expire();
                v.by_time.1 = true;
            }
        }
    }

    fn time_lifetime(v: &SaView) -> espgw_core::esp::Lifetime {
        espgw_core::esp::Lifetime {
            soft_add_secs: v.soft_seconds,
            hard_add_secs: v.hard_seconds,
            soft_use_secs: v.soft_use_seconds,
            hard_use_secs: v.hard_use_seconds,
            ..Default::default()
        }
    }

    /// How many SAs and eroutes there are.
    pub fn counts(&self) -> (usize, usize) {
        (self.sas.len(), self.eroutes.len())
    }

    /// One SA by name.
    pub fn sa(&self, name: &str) -> Result<SaStatus, StoreError> {
        self.sas.get(name).map(|v| self.status(v)).ok_or_else(|| StoreError::NotFound(format!("no SA named {name:?}")))
    }

    fn status(&self, v: &SaView) -> SaStatus {
        let state = match self.db.sa(v.id) {
            Some(e) => {
                let u = e.sa.usage();
                let ratio = |used: u64, limit: Option<u64>| limit.map_or(0.0, |l| used as f64 / l.max(1) as f64);
                let now = std::time::Instant::now();
                let age = now.duration_since(v.added).as_secs();
                let used = v.first_use.map(|f| now.duration_since(f).as_secs());
                let time = Self::time_lifetime(v).time_state(age, used);
                let time_ratio = ratio(age, v.hard_seconds).max(ratio(used.unwrap_or(0), v.hard_use_seconds));
                let drops = e.sa.drops().get();
                SaState {
                    seconds_left: time.hard_left,
                    bytes_left: v.hard_bytes.map(|l| l.saturating_sub(u.bytes)),
                    packets_left: v.hard_packets.map(|l| l.saturating_sub(u.packets)),
                    drops: espgw_core::esp::SaDrop::ALL.iter().map(|d| (d.label(), drops[*d as usize])).collect(),
                    packets: u.packets,
                    bytes: u.bytes,
                    soft_expired: u.soft_expired,
                    hard_expired: u.hard_expired,
                    next_seq: u.next_seq,
                    replay_top: u.replay_top,
                    path_mtu: e.sa.path_mtu(espgw_core::clock::now_ms()),
                    lifetime_used: ratio(u.bytes, v.hard_bytes)
                        .max(ratio(u.packets, v.hard_packets))
                        .max(time_ratio)
                        .min(1.0),
                    backend: e.sa.backend().name(),
                }
            }
            None => SaState::default(),
        };
        SaStatus { sa: v.clone(), state }
    }

    /// The database role of an SA spec, with eroute names resolved.
    fn role(&self, spec: &SaSpec) -> Result<SaRole, StoreError> {
        role_of(&spec.role, &|n: &str| self.eroutes.get(n).map(|e| e.id))
            .map_err(|reason| StoreError::Invalid { field: Some("eroute".into()), reason })
    }

    /// Add an SA (live).
    pub fn add_sa(&mut self, mut spec: SaSpec) -> Result<SaStatus, StoreError> {
        if self.sas.contains_key(&spec.name) {
            return Err(StoreError::Conflict(format!("an SA named {:?} already exists", spec.name)));
        }
        if let Some(other) = self
            .sas
            .values()
            .find(|s| s.spi == spec.cfg.spi && s.direction == dir_str(spec.direction()) && s.direction == "out")
        {
            return Err(StoreError::Conflict(format!(
                "SPI 0x{:08x} is already used by outbound SA {:?}",
                spec.cfg.spi, other.name
            )));
        }
        let role = self.role(&spec)?;
        spec.id = self.next_sa_id;
        self.db.add_sa(spec.id, role, &spec.cfg).map_err(|e| self.explain(e))?;
        self.next_sa_id += 1;
        let v = sa_view(&spec);
        self.sas.insert(spec.name.clone(), v);
        let name = spec.name.clone();
        self.note_follower(spec);
        self.sa(&name)
    }

    /// Keep (or forget) the spec of an SA that follows NAT rebinding.
    fn note_follower(&mut self, spec: SaSpec) {
        if spec.nat_follow {
            self.followers.insert(spec.id, spec);
        } else {
            self.followers.remove(&spec.id);
        }
    }

    /// An inbound UDP SA saw an authenticated packet from a new address or
    /// port (a NAT rebinding, reported by a worker): move every following
    /// SA to the peer's old address and port to the new ones (the key stays:
    /// sequence counter and replay window continue, RFC 3948 §2 / Linux's
    /// XFRM_MSG_MAPPING handled as strongSwan does). `None` when the SA is
    /// gone or already moved.
    pub fn follow_nat(&mut self, sa_id: u32, to: (IpAddr, u16)) -> Option<NatFollow> {
        let v = self.sas.values().find(|v| v.id == sa_id && v.direction == "in")?;
        let from = (v.remote, v.remote_port?);
        if from.0.is_none_or(|a| a == to.0) && from.1 == to.1 {
            return None; // already there (an older report)
        }
        let sa = v.name.clone();
        let movers: Vec<SaSpec> = self
            .followers
            .values()
            .filter(|s| {
                let peer = match s.cfg.mode {
                    Mode::Tunnel { remote, .. } => Some(remote),
                    Mode::Transport => None,
                };
                peer == from.0 && s.cfg.encap.is_some_and(|e| e.remote_port == from.1)
            })
            .cloned()
            .collect();
        let mut followed = Vec::new();
        for mut spec in movers {
            if let Mode::Tunnel { local, .. } = spec.cfg.mode {
                if local.is_ipv4() != to.0.is_ipv4() {
                    continue; // a NAT does not change the family
                }
                spec.cfg.mode = Mode::Tunnel { local, remote: to.0 };
            }
            if let Some(e) = &mut spec.cfg.encap {
                e.remote_port = to.1;
            }
            let name = self.sas.values().find(|v| v.id == spec.id).map(|v| v.name.clone());
            let Some(name) = name else { continue };
            spec.name = name.clone();
            match self.replace_sa(&name, spec) {
                Ok(_) => followed.push(name),
                Err(e) => tracing::warn!(target: "espgw::nat", sa = %name, error = %e, "cannot follow the NAT mapping"),
            }
        }
        Some(NatFollow { sa, from, to, followed })
    }

    /// Replace an SA (rekey): same name and id, new keys and state.
    pub fn replace_sa(&mut self, name: &str, mut spec: SaSpec) -> Result<SaStatus, StoreError> {
        let Some(old) = self.sas.get(name) else {
            return Err(StoreError::NotFound(format!("no SA named {name:?}")));
        };
        if spec.name != name {
            return Err(StoreError::Invalid {
                field: Some("name".into()),
                reason: format!("the body names SA {:?} but the path names {name:?}", spec.name),
            });
        }
        spec.id = old.id;
        let role = self.role(&spec)?;
        self.db.replace_sa(spec.id, role, &spec.cfg).map_err(|e| self.explain(e))?;
        self.sas.insert(spec.name.clone(), sa_view(&spec));
        self.note_follower(spec);
        self.sa(name)
    }

    /// Delete an SA. While eroutes protect with it this is a conflict, unless
    /// `force`: then those eroutes become `trap` first (KLIPS turned an
    /// eroute whose SA went away into `%trap`), so their traffic is dropped
    /// and counted as `policy_trap` instead of leaking in clear.
    pub fn delete_sa(&mut self, name: &str, force: bool) -> Result<Vec<String>, StoreError> {
        let Some(v) = self.sas.get(name) else {
            return Err(StoreError::NotFound(format!("no SA named {name:?}")));
        };
        let id = v.id;
        let users: Vec<(String, Eroute)> = self
            .eroutes
            .iter()
            .filter(|(_, e)| matches!(e.action, Action::Protect { sa, .. } if sa == id))
            .map(|(n, e)| (n.clone(), *e))
            .collect();
        if !users.is_empty() && !force {
            let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
            return Err(StoreError::Conflict(format!(
                "SA {name:?} is used by eroute(s) {}; delete or change them first, or force (they become trap)",
                names.join(", ")
            )));
        }
        for (n, e) in &users {
            let trapped = Eroute { action: Action::Trap, ..*e };
            self.db.replace_eroute(trapped).map_err(|e| self.explain(e))?;
            self.eroutes.insert(n.clone(), trapped);
        }
        self.db.remove_sa(id).map_err(|e| self.explain(e))?;
        self.sas.remove(name);
        self.followers.remove(&id);
        Ok(users.into_iter().map(|(n, _)| n).collect())
    }

    /// Every eroute, by name.
    pub fn eroutes(&self) -> Vec<ErouteView> {
        self.eroutes.iter().map(|(n, e)| self.eroute_view(n, e)).collect()
    }

    /// One eroute by name.
    pub fn eroute(&self, name: &str) -> Result<ErouteView, StoreError> {
        self.eroutes
            .get(name)
            .map(|e| self.eroute_view(name, e))
            .ok_or_else(|| StoreError::NotFound(format!("no eroute named {name:?}")))
    }

    fn eroute_view(&self, name: &str, e: &Eroute) -> ErouteView {
        let (action, sa, o) = match e.action {
            Action::Protect { sa, options } => ("protect", self.sa_name(sa).map(str::to_string), options),
            Action::Pass => ("pass", None, Default::default()),
            Action::Drop => ("drop", None, Default::default()),
            Action::Trap => ("trap", None, Default::default()),
        };
        ErouteView {
            name: name.to_string(),
            id: e.id,
            src: e.selector.src.to_string(),
            dst: e.selector.dst.to_string(),
            proto: proto_str(e.selector.proto),
            sport: range_str(e.selector.sport),
            dport: range_str(e.selector.dport),
            priority: e.priority,
            action,
            sa,
            mss_clamp: o.mss_clamp,
            fragment_before_encryption: o.fragment_before_encryption,
        }
    }

    /// The id a new eroute will get.
    pub fn next_eroute_id(&self) -> u32 {
        self.next_eroute_id
    }

    /// The id of an existing eroute.
    pub fn eroute_id(&self, name: &str) -> Option<u32> {
        self.eroutes.get(name).map(|e| e.id)
    }

    /// Add an eroute (live). Its id must come from [`Self::next_eroute_id`].
    pub fn add_eroute(&mut self, spec: ErouteSpec) -> Result<ErouteView, StoreError> {
        if self.eroutes.contains_key(&spec.name) {
            return Err(StoreError::Conflict(format!("an eroute named {:?} already exists", spec.name)));
        }
        self.db.add_eroute(spec.eroute).map_err(|e| self.explain(e))?;
        self.next_eroute_id = self.next_eroute_id.max(spec.eroute.id + 1);
        self.eroutes.insert(spec.name.clone(), spec.eroute);
        self.eroute(&spec.name)
    }

    /// Replace an eroute in place. Its id must come from [`Self::eroute_id`].
    pub fn replace_eroute(&mut self, name: &str, spec: ErouteSpec) -> Result<ErouteView, StoreError> {
        if !self.eroutes.contains_key(name) {
            return Err(StoreError::NotFound(format!("no eroute named {name:?}")));
        }
        if spec.name != name {
            return Err(StoreError::Invalid {
                field: Some("name".into()),
                reason: format!("the body names eroute {:?} but the path names {name:?}", spec.name),
            });
        }
        self.db.replace_eroute(spec.eroute).map_err(|e| self.explain(e))?;
        self.eroutes.insert(spec.name.clone(), spec.eroute);
        self.eroute(name)
    }

    /// Delete an eroute. Inbound SAs bound to it then accept nothing (fail closed).
    pub fn delete_eroute(&mut self, name: &str) -> Result<(), StoreError> {
        let Some(e) = self.eroutes.get(name) else {
            return Err(StoreError::NotFound(format!("no eroute named {name:?}")));
        };
        self.db.remove_eroute(e.id).map_err(|e| self.explain(e))?;
        self.eroutes.remove(name);
        Ok(())
    }
}
