//! Eroutes (the SPD, in KLIPS's words) and the SA database, published to the
//! workers as immutable snapshots.
//!
//! # Concurrency design
//!
//! - The control thread owns a [`PolicyDb`]: the master copy of eroutes and
//!   SAs. Every change builds a new immutable [`Snapshot`] and publishes it
//!   with one atomic pointer swap ([`arc_swap::ArcSwap`]).
//! - Workers call [`PolicyReader::load`] once per burst and use that snapshot
//!   for the whole burst: no lock, and a burst never sees half a change. A
//!   lookup answers from either the old or the new state, never a mix.
//! - SAs are `Arc<SaEntry>` shared by consecutive snapshots, so an SA that a
//!   change does not touch keeps its live state (sequence counter, replay
//!   window, lifetime counters — all atomics inside [`crate::esp::Sa`]) and
//!   any number of workers may use it at once.
//! - A deleted SA is freed — and its key schedules zeroized (RustCrypto
//!   types zeroize on drop; ring's GCM keys are dropped by ring) — when the
//!   last snapshot holding it goes, i.e. once no worker can still reach it.
//!
//! # Lookup
//!
//! Eroutes are kept per family in hash tables, one per destination prefix
//! length, probed from the longest length down. Each bucket holds its rules
//! sorted by specificity, so the first match is the most specific: longest
//! destination prefix, then longest source prefix, then a named protocol,
//! then narrower destination and source port ranges; ties go to the lower
//! priority number, then the lower id.

mod selector;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;
use thiserror::Error;

use crate::esp::{Sa, SaConfig, SaError};
pub use selector::{to_u128, FlowKey, PortRange, Prefix, Selector};

/// What an eroute does with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Encrypt with outbound SA `sa`.
    Protect { sa: u32, options: ProtectOptions },
    /// Send in clear.
    Pass,
    /// Discard (counted).
    Drop,
    /// Discard, counted and reported so a key daemon could negotiate (KLIPS `%trap`).
    Trap,
}

/// Per-eroute options for protected traffic (used by the MTU stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProtectOptions {
    /// Fragment inner packets without DF before encryption (RFC 4459 §5.1).
    pub fragment_before_encryption: bool,
    /// Clamp the MSS of TCP SYNs so that segments fit the tunnel.
    pub mss_clamp: bool,
}

/// A policy entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Eroute {
    pub id: u32,
    pub selector: Selector,
    /// Lower wins among equally specific eroutes.
    pub priority: u32,
    pub action: Action,
}

/// Which way an SA carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// An SA as the database holds it.
#[derive(Debug)]
pub struct SaEntry {
    pub id: u32,
    pub direction: Direction,
    /// Inbound: the outer destination it is bound to (`None` = any; SPI alone).
    pub local: Option<IpAddr>,
    /// Inbound: the eroute whose (mirrored) selector decrypted traffic must match.
    pub eroute: Option<u32>,
    pub sa: Sa,
}

/// Default actions when no eroute matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Cleartext side → protected side.
    pub outbound: Action,
    /// Non-ESP traffic arriving on the protected side.
    pub inbound_clear: Action,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { outbound: Action::Drop, inbound_clear: Action::Drop }
    }
}

/// Why a change was refused. Maps onto API status codes: `NotFound` 404,
/// `Exists`/`InUse`/`SpiInUse` 409, the rest 400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: u32 },
    #[error("{what} {id} already exists")]
    Exists { what: &'static str, id: u32 },
    #[error("SA {sa} is used by eroute {eroute}")]
    InUse { sa: u32, eroute: u32 },
    #[error("SPI 0x{spi:08x} is already used by inbound SA {other} for the same destination")]
    SpiInUse { spi: u32, other: u32 },
    #[error("eroute {eroute} protects with SA {sa}, which is not an outbound SA")]
    NotOutbound { eroute: u32, sa: u32 },
    #[error("bad selector: {0}")]
    Selector(String),
    #[error("bad SA: {0}")]
    Sa(#[from] SaError),
}

/// The result of an outbound lookup.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'a> {
    /// Protect with this SA.
    Protect {
        eroute: &'a Eroute,
        sa: &'a Arc<SaEntry>,
        options: ProtectOptions,
    },
    Pass {
        eroute: Option<&'a Eroute>,
    },
    Drop {
        eroute: Option<&'a Eroute>,
    },
    Trap {
        eroute: &'a Eroute,
    },
}

/// One rule in a bucket, flattened for the lookup loop.
#[derive(Debug)]
struct Rule {
    sel: Selector,
    /// Index into `Snapshot::eroutes`.
    idx: u32,
}

/// Eroutes of one family.
#[derive(Debug, Default)]
struct FamilyTable {
    /// Distinct destination prefix lengths, longest first.
    lens: Vec<u8>,
    /// For each entry of `lens`: masked destination → rules, most specific first.
    buckets: Vec<FxHashMap<u128, Box<[Rule]>>>,
}

impl FamilyTable {
    fn build(eroutes: &[Eroute], v6: bool) -> FamilyTable {
        let width = if v6 { 128 } else { 32 };
        let mut by_len: BTreeMap<u8, FxHashMap<u128, Vec<Rule>>> = BTreeMap::new();
        for (i, e) in eroutes.iter().enumerate() {
            if e.selector.dst.is_v6() != v6 {
                continue;
            }
            by_len
                .entry(e.selector.dst.len())
                .or_default()
                .entry(e.selector.dst.bits())
                .or_default()
                .push(Rule { sel: e.selector, idx: i as u32 });
        }
        let _ = width;
        let mut t = FamilyTable::default();
        for (len, map) in by_len.into_iter().rev() {
            t.lens.push(len);
            t.buckets.push(
                map.into_iter()
                    .map(|(k, mut rules)| {
                        rules.sort_by_key(|r| specificity_key(&eroutes[r.idx as usize]));
                        (k, rules.into_boxed_slice())
                    })
                    .collect(),
            );
        }
        t
    }

    #[inline]
    fn lookup(&self, k: &FlowKey) -> Option<u32> {
        let width = if k.v6 { 128 } else { 32 };
        for (i, &len) in self.lens.iter().enumerate() {
            let masked = k.dst & selector::mask(len, width);
            if let Some(rules) = self.buckets[i].get(&masked) {
                for r in rules.iter() {
                    if r.sel.matches(k) {
                        return Some(r.idx);
                    }
                }
            }
        }
        None
    }
}

/// Sort key: most specific first (see the module doc).
fn specificity_key(e: &Eroute) -> (std::cmp::Reverse<u8>, bool, u32, u32, u32, u32) {
    let s = &e.selector;
    (std::cmp::Reverse(s.src.len()), s.proto.is_none(), s.dport.width(), s.sport.width(), e.priority, e.id)
}

/// Inbound SAs under one SPI. Nearly always exactly one.
#[derive(Debug)]
enum SpiSlot {
    One(Arc<SaEntry>),
    Many(Box<[Arc<SaEntry>]>),
}

/// An immutable view of the whole policy, shared by the workers.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Bumped on every publish.
    pub generation: u64,
    eroutes: Vec<Eroute>,
    v4: FamilyTable,
    v6: FamilyTable,
    /// Outbound SA per eroute index (same order as `eroutes`).
    protect_sa: Vec<Option<Arc<SaEntry>>>,
    inbound: FxHashMap<u32, SpiSlot>,
    /// Mirrored selectors per inbound SA id.
    inbound_selectors: FxHashMap<u32, Selector>,
    sas: Vec<Arc<SaEntry>>,
    pub defaults: Defaults,
}

impl Snapshot {
    /// The outbound verdict for a cleartext packet.
    #[inline]
    pub fn outbound(&self, k: &FlowKey) -> Verdict<'_> {
        let t = if k.v6 { &self.v6 } else { &self.v4 };
        match t.lookup(k) {
            None => match self.defaults.outbound {
                Action::Pass => Verdict::Pass { eroute: None },
                _ => Verdict::Drop { eroute: None },
            },
            Some(i) => {
                let e = &self.eroutes[i as usize];
                match e.action {
                    Action::Protect { options, .. } => match &self.protect_sa[i as usize] {
                        Some(sa) => Verdict::Protect { eroute: e, sa, options },
                        None => Verdict::Drop { eroute: Some(e) },
                    },
                    Action::Pass => Verdict::Pass { eroute: Some(e) },
                    Action::Drop => Verdict::Drop { eroute: Some(e) },
                    Action::Trap => Verdict::Trap { eroute: e },
                }
            }
        }
    }

    /// The inbound SA for an ESP packet: by SPI (fast path), then by the
    /// outer destination when several SAs share the SPI or one is bound to an
    /// address.
    #[inline]
    pub fn inbound_sa(&self, spi: u32, outer_dst: IpAddr) -> Option<&Arc<SaEntry>> {
        match self.inbound.get(&spi)? {
            SpiSlot::One(e) => match e.local {
                None => Some(e),
                Some(a) if a == outer_dst => Some(e),
                Some(_) => None,
            },
            SpiSlot::Many(v) => {
                v.iter().find(|e| e.local == Some(outer_dst)).or_else(|| v.iter().find(|e| e.local.is_none()))
            }
        }
    }

    /// RFC 4301 §5.2: does decrypted traffic match the policy of the SA that
    /// carried it? SAs without an eroute accept anything.
    #[inline]
    pub fn inbound_allowed(&self, sa: &SaEntry, inner: &FlowKey) -> bool {
        match self.inbound_selectors.get(&sa.id) {
            None => sa.eroute.is_none(),
            Some(sel) => sel.matches(inner),
        }
    }

    /// Number of eroutes.
    pub fn eroute_count(&self) -> usize {
        self.eroutes.len()
    }

    /// Every SA, in id order.
    pub fn sas(&self) -> &[Arc<SaEntry>] {
        &self.sas
    }

    /// Every eroute, in id order.
    pub fn eroutes(&self) -> &[Eroute] {
        &self.eroutes
    }
}

/// The workers' handle on the published policy.
#[derive(Debug, Clone)]
pub struct PolicyReader(Arc<ArcSwap<Snapshot>>);

impl PolicyReader {
    /// The current snapshot. Call once per burst; cheap and lock-free.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.0.load()
    }
    /// An owned reference to the current snapshot (control-thread use).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }
}

/// The control thread's master copy; every change is published at once.
#[derive(Debug)]
pub struct PolicyDb {
    eroutes: BTreeMap<u32, Eroute>,
    sas: BTreeMap<u32, Arc<SaEntry>>,
    /// (SPI, bound local address) → inbound SA id: uniqueness in O(1).
    spi_index: FxHashMap<(u32, Option<IpAddr>), u32>,
    /// SA id → eroutes that protect with it: delete checks in O(1).
    sa_users: FxHashMap<u32, std::collections::BTreeSet<u32>>,
    defaults: Defaults,
    generation: u64,
    published: Arc<ArcSwap<Snapshot>>,
}

impl Default for PolicyDb {
    fn default() -> Self {
        Self::new(Defaults::default())
    }
}

impl PolicyDb {
    /// An empty database (publishes an empty snapshot).
    pub fn new(defaults: Defaults) -> Self {
        let published = Arc::new(ArcSwap::from_pointee(Snapshot { defaults, ..Default::default() }));
        PolicyDb {
            eroutes: BTreeMap::new(),
            sas: BTreeMap::new(),
            spi_index: FxHashMap::default(),
            sa_users: FxHashMap::default(),
            defaults,
            generation: 0,
            published,
        }
    }

    /// A reader for the workers.
    pub fn reader(&self) -> PolicyReader {
        PolicyReader(self.published.clone())
    }

    /// Change the default actions.
    pub fn set_defaults(&mut self, d: Defaults) {
        self.defaults = d;
        self.publish();
    }

    /// Add an SA (and publish).
    pub fn add_sa(
        &mut self,
        id: u32,
        direction: Direction,
        local: Option<IpAddr>,
        eroute: Option<u32>,
        cfg: &SaConfig,
    ) -> Result<(), PolicyError> {
        if self.sas.contains_key(&id) {
            return Err(PolicyError::Exists { what: "SA", id });
        }
        let entry = self.make_sa(id, direction, local, eroute, cfg)?;
        self.insert_sa(entry);
        self.publish();
        Ok(())
    }

    fn insert_sa(&mut self, entry: Arc<SaEntry>) {
        if entry.direction == Direction::Inbound {
            self.spi_index.insert((entry.sa.spi(), entry.local), entry.id);
        }
        self.sas.insert(entry.id, entry);
    }

    fn take_sa(&mut self, id: u32) -> Option<Arc<SaEntry>> {
        let e = self.sas.remove(&id)?;
        if e.direction == Direction::Inbound {
            self.spi_index.remove(&(e.sa.spi(), e.local));
        }
        Some(e)
    }

    fn first_user(&self, sa: u32) -> Option<u32> {
        self.sa_users.get(&sa).and_then(|s| s.iter().next().copied())
    }

    fn link(&mut self, e: &Eroute) {
        if let Action::Protect { sa, .. } = e.action {
            self.sa_users.entry(sa).or_default().insert(e.id);
        }
    }

    fn unlink(&mut self, e: &Eroute) {
        if let Action::Protect { sa, .. } = e.action {
            if let Some(set) = self.sa_users.get_mut(&sa) {
                set.remove(&e.id);
                if set.is_empty() {
                    self.sa_users.remove(&sa);
                }
            }
        }
    }

    /// Replace an SA (rekey): new keys and state, same id; eroutes follow.
    pub fn replace_sa(
        &mut self,
        id: u32,
        direction: Direction,
        local: Option<IpAddr>,
        eroute: Option<u32>,
        cfg: &SaConfig,
    ) -> Result<(), PolicyError> {
        if !self.sas.contains_key(&id) {
            return Err(PolicyError::NotFound { what: "SA", id });
        }
        if direction == Direction::Inbound {
            // A replaced outbound SA must stay outbound if eroutes use it.
            if let Some(e) = self.first_user(id) {
                return Err(PolicyError::NotOutbound { eroute: e, sa: id });
            }
        }
        let old = self.take_sa(id).expect("checked");
        match self.make_sa(id, direction, local, eroute, cfg) {
            Ok(entry) => {
                self.insert_sa(entry);
                self.publish();
                Ok(())
            }
            Err(e) => {
                self.insert_sa(old);
                Err(e)
            }
        }
    }

    fn make_sa(
        &self,
        id: u32,
        direction: Direction,
        local: Option<IpAddr>,
        eroute: Option<u32>,
        cfg: &SaConfig,
    ) -> Result<Arc<SaEntry>, PolicyError> {
        if direction == Direction::Inbound {
            if let Some(other) = self
                .sas
                .values()
                .find(|s| s.direction == Direction::Inbound && s.sa.spi() == cfg.spi && s.local == local)
            {
                return Err(PolicyError::SpiInUse { spi: cfg.spi, other: other.id });
            }
        }
        if let Some(e) = eroute {
            if !self.eroutes.contains_key(&e) {
                return Err(PolicyError::NotFound { what: "eroute", id: e });
            }
        }
        let sa = Sa::new(cfg)?;
        Ok(Arc::new(SaEntry { id, direction, local, eroute, sa }))
    }

    /// Delete an SA (refused while an eroute protects with it).
    pub fn remove_sa(&mut self, id: u32) -> Result<(), PolicyError> {
        if !self.sas.contains_key(&id) {
            return Err(PolicyError::NotFound { what: "SA", id });
        }
        if let Some(e) = self.first_user(id) {
            return Err(PolicyError::InUse { sa: id, eroute: e });
        }
        self.take_sa(id);
        self.publish();
        Ok(())
    }

    fn check_eroute(&self, e: &Eroute) -> Result<(), PolicyError> {
        e.selector.validate().map_err(PolicyError::Selector)?;
        if let Action::Protect { sa, .. } = e.action {
            match self.sas.get(&sa) {
                None => return Err(PolicyError::NotFound { what: "SA", id: sa }),
                Some(s) if s.direction != Direction::Outbound => {
                    return Err(PolicyError::NotOutbound { eroute: e.id, sa })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Add an eroute (and publish).
    pub fn add_eroute(&mut self, e: Eroute) -> Result<(), PolicyError> {
        if self.eroutes.contains_key(&e.id) {
            return Err(PolicyError::Exists { what: "eroute", id: e.id });
        }
        self.check_eroute(&e)?;
        self.link(&e);
        self.eroutes.insert(e.id, e);
        self.publish();
        Ok(())
    }

    /// Replace an eroute in place (and publish).
    pub fn replace_eroute(&mut self, e: Eroute) -> Result<(), PolicyError> {
        if !self.eroutes.contains_key(&e.id) {
            return Err(PolicyError::NotFound { what: "eroute", id: e.id });
        }
        self.check_eroute(&e)?;
        if let Some(old) = self.eroutes.insert(e.id, e) {
            self.unlink(&old);
        }
        self.link(&e);
        self.publish();
        Ok(())
    }

    /// Delete an eroute (and publish).
    pub fn remove_eroute(&mut self, id: u32) -> Result<(), PolicyError> {
        let old = self.eroutes.remove(&id).ok_or(PolicyError::NotFound { what: "eroute", id })?;
        self.unlink(&old);
        self.publish();
        Ok(())
    }

    /// Apply several changes and publish once (bulk loads).
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Batch<'_>) -> R) -> R {
        let r = f(&mut Batch { db: self });
        self.publish();
        r
    }

    /// An eroute by id.
    pub fn eroute(&self, id: u32) -> Option<&Eroute> {
        self.eroutes.get(&id)
    }

    /// An SA by id.
    pub fn sa(&self, id: u32) -> Option<&Arc<SaEntry>> {
        self.sas.get(&id)
    }

    /// Build and publish a snapshot of the current state.
    pub fn publish(&mut self) {
        self.generation += 1;
        let snap = self.build();
        self.published.store(Arc::new(snap));
    }

    fn build(&self) -> Snapshot {
        let eroutes: Vec<Eroute> = self.eroutes.values().copied().collect();
        let protect_sa = eroutes
            .iter()
            .map(|e| match e.action {
                Action::Protect { sa, .. } => self.sas.get(&sa).cloned(),
                _ => None,
            })
            .collect();
        let mut inbound: FxHashMap<u32, SpiSlot> = FxHashMap::default();
        let mut inbound_selectors = FxHashMap::default();
        for s in self.sas.values().filter(|s| s.direction == Direction::Inbound) {
            let spi = s.sa.spi();
            let slot = match inbound.remove(&spi) {
                None => SpiSlot::One(s.clone()),
                Some(SpiSlot::One(a)) => SpiSlot::Many(vec![a, s.clone()].into_boxed_slice()),
                Some(SpiSlot::Many(v)) => {
                    let mut v = v.into_vec();
                    v.push(s.clone());
                    SpiSlot::Many(v.into_boxed_slice())
                }
            };
            inbound.insert(spi, slot);
            if let Some(e) = s.eroute.and_then(|id| self.eroutes.get(&id)) {
                inbound_selectors.insert(s.id, e.selector.mirrored());
            }
        }
        Snapshot {
            generation: self.generation,
            v4: FamilyTable::build(&eroutes, false),
            v6: FamilyTable::build(&eroutes, true),
            eroutes,
            protect_sa,
            inbound,
            inbound_selectors,
            sas: self.sas.values().cloned().collect(),
            defaults: self.defaults,
        }
    }
}

/// Changes applied together, published once at the end of [`PolicyDb::batch`].
pub struct Batch<'a> {
    db: &'a mut PolicyDb,
}

impl Batch<'_> {
    pub fn add_sa(
        &mut self,
        id: u32,
        direction: Direction,
        local: Option<IpAddr>,
        eroute: Option<u32>,
        cfg: &SaConfig,
    ) -> Result<(), PolicyError> {
        if self.db.sas.contains_key(&id) {
            return Err(PolicyError::Exists { what: "SA", id });
        }
        let entry = self.db.make_sa(id, direction, local, eroute, cfg)?;
        self.db.insert_sa(entry);
        Ok(())
    }
    pub fn add_eroute(&mut self, e: Eroute) -> Result<(), PolicyError> {
        if self.db.eroutes.contains_key(&e.id) {
            return Err(PolicyError::Exists { what: "eroute", id: e.id });
        }
        self.db.check_eroute(&e)?;
        self.db.link(&e);
        self.db.eroutes.insert(e.id, e);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
