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
//! priority number, then the lower id. A rule carries its eroute and the
//! resolved SA pointer inline, so a hit costs one hash probe.
//!
//! # Changes
//!
//! Every table is split into 64 shards behind `Arc`s. A change copies only
//! the shard it touches (copy-on-write with `Arc::make_mut`) and publishes a
//! snapshot that shares every other shard with its predecessor: publishing
//! costs the same at 10 or 100 000 entries.

mod selector;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;
use thiserror::Error;

use crate::esp::{window_size, KeyId, ReplayWindow, Sa, SaConfig, SaContinuity, SaError, SeqSpace, Usage};
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

/// What decrypted traffic an inbound SA may carry (RFC 4301 §5.2 makes the
/// check mandatory). Never empty: an inbound SA without selectors would
/// accept anything its peer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPolicy {
    /// The mirrored selectors of these eroutes (two for a dual-stack tunnel).
    Eroutes(Vec<u32>),
    /// Selectors of its own, written as the decrypted packets appear (source
    /// on the peer's side, destination on ours).
    Selectors(Vec<Selector>),
}

/// An SA's direction and, for an inbound SA, where it is bound and what it
/// may carry. Outbound SAs are chosen by eroutes and carry what they send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaRole {
    Outbound,
    Inbound {
        /// The outer destination it is bound to (`None` = any; SPI alone).
        local: Option<IpAddr>,
        policy: InboundPolicy,
    },
}

impl SaRole {
    /// An inbound SA bound to `local` that checks against these eroutes.
    pub fn inbound_for(local: Option<IpAddr>, eroutes: &[u32]) -> SaRole {
        SaRole::Inbound { local, policy: InboundPolicy::Eroutes(eroutes.to_vec()) }
    }

    pub fn direction(&self) -> Direction {
        match self {
            SaRole::Outbound => Direction::Outbound,
            SaRole::Inbound { .. } => Direction::Inbound,
        }
    }
    fn local(&self) -> Option<IpAddr> {
        match self {
            SaRole::Outbound => None,
            SaRole::Inbound { local, .. } => *local,
        }
    }
    fn eroutes(&self) -> &[u32] {
        match self {
            SaRole::Inbound { policy: InboundPolicy::Eroutes(e), .. } => e,
            _ => &[],
        }
    }
}

/// An SA as the database holds it.
#[derive(Debug)]
pub struct SaEntry {
    pub id: u32,
    pub role: SaRole,
    pub sa: Sa,
}

impl SaEntry {
    pub fn direction(&self) -> Direction {
        self.role.direction()
    }
    /// Inbound: the outer destination it is bound to.
    pub fn local(&self) -> Option<IpAddr> {
        self.role.local()
    }
}

/// Where the nonce rule's state is made durable (the control plane's state
/// file). The database asks it where a key's counter and an SA's replay
/// window resume, and persists a lease before any number under it is used.
pub trait StateStore: Send {
    /// Where `key`'s outbound counter resumes (1 when never used).
    fn seq_floor(&self, key: &KeyId) -> u64;
    /// Where the replay window of inbound SPI `spi` under `key` resumes (0: nothing received).
    fn replay_floor(&self, key: &KeyId, spi: u32) -> u64;
    /// Make these leases durable: numbers up to the second field may be used
    /// under the key. Only after `Ok` does the database allow them.
    fn persist_leases(&mut self, leases: &[(KeyId, u64)]) -> std::io::Result<()>;
}

/// Numbers leased per key at once, and renewed when less than half is left.
/// A restart skips at most this many numbers of a key (2^24 of the 2^32 a
/// non-ESN SA has: 256 crashes before one SA's space is gone).
pub const SEQ_LEASE: u64 = 1 << 24;

/// The state that outlives an SA: every outbound key's counter, and every
/// inbound (key, SPI)'s replay window, so that a replace, a delete + add or a
/// reload never starts them over.
#[derive(Default)]
struct Ledger {
    seq: FxHashMap<KeyId, Arc<SeqSpace>>,
    replay: FxHashMap<(KeyId, u32), Arc<ReplayWindow>>,
    store: Option<Box<dyn StateStore>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("keys", &self.seq.len())
            .field("windows", &self.replay.len())
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

impl Ledger {
    /// The counter of `key` (made on first use, resuming from the store).
    fn seq(&mut self, key: KeyId) -> Arc<SeqSpace> {
        let store = &self.store;
        self.seq
            .entry(key)
            .or_insert_with(|| match store {
                // Nothing may be sent until the first lease is persisted.
                Some(st) => Arc::new(SeqSpace::unleased(st.seq_floor(&key))),
                None => Arc::new(SeqSpace::new()),
            })
            .clone()
    }

    /// The replay window of inbound `spi` under `key`, of `size` packets.
    fn replay(&mut self, key: KeyId, spi: u32, size: u32) -> Arc<ReplayWindow> {
        let floor = self.store.as_ref().map_or(0, |st| st.replay_floor(&key, spi));
        let w = self.replay.entry((key, spi)).or_insert_with(|| Arc::new(ReplayWindow::resume(size, floor)));
        if w.size() != u64::from(size) {
            // A new window size: a new window that refuses all the old one saw.
            *w = Arc::new(ReplayWindow::resume(size, w.top()));
        }
        w.clone()
    }

    /// Persist and grant leases for every key whose lease runs low.
    fn renew(&mut self) -> std::io::Result<usize> {
        let Some(store) = &mut self.store else { return Ok(0) };
        let due: Vec<(KeyId, u64)> = self
            .seq
            .iter()
            .filter(|(_, s)| s.next().saturating_add(SEQ_LEASE / 2) > s.leased())
            .map(|(k, s)| (*k, s.next().saturating_add(SEQ_LEASE)))
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        store.persist_leases(&due)?;
        for (k, upto) in &due {
            self.seq[k].set_lease(*upto);
        }
        Ok(due.len())
    }
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
/// `Exists`/`InUse`/`SpiInUse`/`KeyInUse` 409, `Persist` 500, the rest 400.
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
    #[error("outbound SA {other} already sends with this key: two SAs under one key would repeat sequence numbers (GCM nonces)")]
    KeyInUse { other: u32 },
    #[error("an inbound SA needs selectors (RFC 4301 §5.2): name its eroutes or give its own")]
    NoSelectors,
    #[error("cannot persist sequence numbers: {0}")]
    Persist(String),
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

const SHARDS: usize = 64;

#[inline]
fn shard_of(key: u128) -> usize {
    let x = (key as u64) ^ ((key >> 64) as u64);
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
}

/// An eroute with its SA resolved, as the lookup returns it.
#[derive(Debug, Clone)]
struct Rule {
    eroute: Eroute,
    sa: Option<Arc<SaEntry>>,
}

/// The rules of one (prefix length, masked destination), most specific first.
/// Nearly always one rule, kept inline.
#[derive(Debug, Clone)]
enum Bucket {
    One(Rule),
    Many(Box<[Rule]>),
}

impl Bucket {
    #[inline]
    fn rules(&self) -> &[Rule] {
        match self {
            Bucket::One(r) => std::slice::from_ref(r),
            Bucket::Many(v) => v,
        }
    }
}

type Shard = FxHashMap<u128, Bucket>;

/// All eroutes of one destination prefix length.
#[derive(Debug, Clone)]
struct LenTable {
    len: u8,
    /// Destination mask of this length, for the family.
    mask: u128,
    count: usize,
    shards: Box<[Arc<Shard>]>,
}

/// Up to this many eroutes per family, lookups scan one flat sorted array:
/// cheaper than hashing when the table is small.
const SMALL: usize = 16;

/// Eroutes of one family, longest destination prefix first.
#[derive(Debug, Clone, Default)]
struct FamilyTable {
    tables: Vec<LenTable>,
    /// All rules, most specific first, while there are at most [`SMALL`].
    small: Option<Arc<[Rule]>>,
}

impl FamilyTable {
    #[inline]
    fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        if let Some(rules) = &self.small {
            return rules.iter().find(|r| r.eroute.selector.matches(k));
        }
        for t in &self.tables {
            let masked = k.dst & t.mask;
            let shard = &t.shards[shard_of(masked)];
            // Small tables leave most shards empty: skip the hash then.
            if shard.is_empty() {
                continue;
            }
            if let Some(b) = shard.get(&masked) {
                if let Some(r) = b.rules().iter().find(|r| r.eroute.selector.matches(k)) {
                    return Some(r);
                }
            }
        }
        None
    }

    /// Insert or replace the rule of eroute `rule.eroute.id` (copy-on-write).
    fn upsert(&mut self, rule: Rule) {
        let (len, key) = (rule.eroute.selector.dst.len(), rule.eroute.selector.dst.bits());
        let ti = match self.tables.iter().position(|t| t.len == len) {
            Some(i) => i,
            None => {
                let width = if rule.eroute.selector.dst.is_v6() { 128 } else { 32 };
                let at = self.tables.iter().position(|t| t.len < len).unwrap_or(self.tables.len());
                let empty = Arc::new(Shard::default());
                self.tables.insert(
                    at,
                    LenTable {
                        len,
                        mask: selector::mask(len, width),
                        count: 0,
                        shards: (0..SHARDS).map(|_| empty.clone()).collect(),
                    },
                );
                at
            }
        };
        let t = &mut self.tables[ti];
        let shard = Arc::make_mut(&mut t.shards[shard_of(key)]);
        let mut rules: Vec<Rule> = shard.remove(&key).map(|b| b.rules().to_vec()).unwrap_or_default();
        let before = rules.len();
        rules.retain(|r| r.eroute.id != rule.eroute.id);
        let added = rules.len() == before;
        rules.push(rule);
        rules.sort_by_key(|r| specificity_key(&r.eroute));
        shard.insert(
            key,
            if rules.len() == 1 {
                Bucket::One(rules.pop().expect("one"))
            } else {
                Bucket::Many(rules.into_boxed_slice())
            },
        );
        if added {
            t.count += 1;
        }
        self.refresh_small();
    }

    /// Rebuild the flat array when the family is small (in lookup order:
    /// longest destination first, then specificity).
    fn refresh_small(&mut self) {
        let total: usize = self.tables.iter().map(|t| t.count).sum();
        self.small = (total <= SMALL).then(|| {
            let mut all: Vec<Rule> = Vec::with_capacity(total);
            for t in &self.tables {
                let mut these: Vec<Rule> =
                    t.shards.iter().flat_map(|s| s.values().flat_map(|b| b.rules().iter().cloned())).collect();
                these.sort_by_key(|r| specificity_key(&r.eroute));
                all.extend(these);
            }
            all.into()
        });
    }

    /// Remove the rule of eroute `e` (copy-on-write).
    fn remove(&mut self, e: &Eroute) {
        let (len, key) = (e.selector.dst.len(), e.selector.dst.bits());
        let Some(ti) = self.tables.iter().position(|t| t.len == len) else { return };
        let t = &mut self.tables[ti];
        let shard = Arc::make_mut(&mut t.shards[shard_of(key)]);
        let Some(b) = shard.remove(&key) else { return };
        let mut rules = b.rules().to_vec();
        let before = rules.len();
        rules.retain(|r| r.eroute.id != e.id);
        t.count -= before - rules.len();
        match rules.len() {
            0 => {}
            1 => {
                shard.insert(key, Bucket::One(rules.pop().expect("one")));
            }
            _ => {
                shard.insert(key, Bucket::Many(rules.into_boxed_slice()));
            }
        }
        if t.count == 0 {
            self.tables.remove(ti);
        }
        self.refresh_small();
    }
}

/// Sort key: most specific first (see the module doc).
fn specificity_key(e: &Eroute) -> (std::cmp::Reverse<u8>, bool, u32, u32, u32, u32) {
    let s = &e.selector;
    (std::cmp::Reverse(s.src.len()), s.proto.is_none(), s.dport.width(), s.sport.width(), e.priority, e.id)
}

/// An inbound SA as the data path finds it: the SA and the selectors that
/// its decrypted traffic must match.
#[derive(Debug, Clone)]
pub struct InboundSa {
    pub entry: Arc<SaEntry>,
    /// Copy of `entry.local()`, so the lookup never touches the SA's cache line.
    local: Option<IpAddr>,
    selectors: Arc<[Selector]>,
}

impl InboundSa {
    /// RFC 4301 §5.2: does decrypted traffic match the policy of the SA that
    /// carried it? Every inbound SA has selectors; one whose eroutes were all
    /// deleted has none left and accepts nothing (fail closed).
    #[inline]
    pub fn allows(&self, inner: &FlowKey) -> bool {
        self.selectors.iter().any(|s| s.matches(inner))
    }
}

/// Inbound SAs under one SPI. Nearly always exactly one.
#[derive(Debug, Clone)]
enum SpiSlot {
    One(InboundSa),
    Many(Box<[InboundSa]>),
}

impl SpiSlot {
    fn all(&self) -> &[InboundSa] {
        match self {
            SpiSlot::One(x) => std::slice::from_ref(x),
            SpiSlot::Many(v) => v,
        }
    }
}

/// The inbound SAD, sharded by SPI like the eroute tables.
#[derive(Debug, Clone)]
struct Sad {
    shards: Box<[Arc<FxHashMap<u32, SpiSlot>>]>,
}

impl Default for Sad {
    fn default() -> Self {
        let empty = Arc::new(FxHashMap::default());
        Sad { shards: (0..SHARDS).map(|_| empty.clone()).collect() }
    }
}

impl Sad {
    #[inline]
    fn shard(spi: u32) -> usize {
        (u64::from(spi).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }

    fn upsert(&mut self, x: InboundSa) {
        let spi = x.entry.sa.spi();
        let shard = Arc::make_mut(&mut self.shards[Self::shard(spi)]);
        let mut v: Vec<InboundSa> = shard.remove(&spi).map(|s| s.all().to_vec()).unwrap_or_default();
        v.retain(|o| o.entry.id != x.entry.id);
        v.push(x);
        shard.insert(
            spi,
            if v.len() == 1 { SpiSlot::One(v.pop().expect("one")) } else { SpiSlot::Many(v.into_boxed_slice()) },
        );
    }

    fn remove(&mut self, spi: u32, id: u32) {
        let shard = Arc::make_mut(&mut self.shards[Self::shard(spi)]);
        let Some(slot) = shard.remove(&spi) else { return };
        let mut v = slot.all().to_vec();
        v.retain(|o| o.entry.id != id);
        match v.len() {
            0 => {}
            1 => {
                shard.insert(spi, SpiSlot::One(v.pop().expect("one")));
            }
            _ => {
                shard.insert(spi, SpiSlot::Many(v.into_boxed_slice()));
            }
        }
    }

    #[inline]
    fn get(&self, spi: u32, outer_dst: IpAddr) -> Option<&InboundSa> {
        match self.shards[Self::shard(spi)].get(&spi)? {
            SpiSlot::One(x) => match x.local {
                None => Some(x),
                Some(a) if a == outer_dst => Some(x),
                Some(_) => None,
            },
            SpiSlot::Many(v) => {
                v.iter().find(|x| x.local == Some(outer_dst)).or_else(|| v.iter().find(|x| x.local.is_none()))
            }
        }
    }
}

/// An immutable view of the whole policy, shared by the workers.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Bumped on every publish.
    pub generation: u64,
    v4: Arc<FamilyTable>,
    v6: Arc<FamilyTable>,
    sad: Arc<Sad>,
    /// Outbound SAs by SPI (for ICMP too-big reports that quote our ESP).
    out_by_spi: Arc<Sad>,
    /// UDP ports of the gateway that carry ESP in UDP (RFC 3948): 4500 and
    /// every inbound UDP SA's own port.
    natt_ports: Arc<[u16]>,
    pub defaults: Defaults,
}

impl Snapshot {
    /// The outbound SA that sends with `spi`.
    #[inline]
    pub fn outbound_sa(&self, spi: u32) -> Option<&Arc<SaEntry>> {
        self.out_by_spi.shards[Sad::shard(spi)].get(&spi).and_then(|s| s.all().first()).map(|x| &x.entry)
    }

    /// The outbound verdict for a cleartext packet.
    #[inline]
    pub fn outbound(&self, k: &FlowKey) -> Verdict<'_> {
        let t = if k.v6 { &self.v6 } else { &self.v4 };
        match t.lookup(k) {
            None => match self.defaults.outbound {
                Action::Pass => Verdict::Pass { eroute: None },
                _ => Verdict::Drop { eroute: None },
            },
            Some(r) => {
                let e = &r.eroute;
                match e.action {
                    Action::Protect { options, .. } => match &r.sa {
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
    pub fn inbound_sa(&self, spi: u32, outer_dst: IpAddr) -> Option<&InboundSa> {
        self.sad.get(spi, outer_dst)
    }

    /// Is UDP to this port of the gateway NAT-T (keepalives, IKE behind the
    /// non-ESP marker, ESP)? 4500 always is (RFC 3948 §2).
    #[inline]
    pub fn is_natt_port(&self, port: u16) -> bool {
        port == crate::esp::natt::NAT_T_PORT || self.natt_ports.contains(&port)
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
    /// Key → the live outbound SA sending with it (one at most).
    key_users: FxHashMap<KeyId, u32>,
    /// SA id → eroutes that protect with it.
    sa_users: FxHashMap<u32, BTreeSet<u32>>,
    /// Eroute id → inbound SAs whose traffic it checks.
    inbound_users: FxHashMap<u32, BTreeSet<u32>>,
    ledger: Ledger,
    v4: Arc<FamilyTable>,
    v6: Arc<FamilyTable>,
    sad: Arc<Sad>,
    out_by_spi: Arc<Sad>,
    /// NAT-T ports of inbound UDP SAs → how many SAs use each.
    natt_ports: BTreeMap<u16, u32>,
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
            key_users: FxHashMap::default(),
            sa_users: FxHashMap::default(),
            inbound_users: FxHashMap::default(),
            ledger: Ledger::default(),
            v4: Arc::default(),
            v6: Arc::default(),
            sad: Arc::default(),
            out_by_spi: Arc::default(),
            natt_ports: BTreeMap::new(),
            defaults,
            generation: 0,
            published,
        }
    }

    /// Make sequence counters and replay windows durable through `store`:
    /// counters resume from it and may only use leased (persisted) numbers.
    /// Set before the first SA is added.
    pub fn with_state_store(mut self, store: Box<dyn StateStore>) -> Self {
        self.ledger.store = Some(store);
        self
    }

    /// Persist and grant leases for every key whose lease runs low. The
    /// control plane calls this often (every few ms); adding an SA calls it
    /// before publishing, so no published SA waits for its first lease.
    pub fn renew_leases(&mut self) -> Result<usize, PolicyError> {
        self.ledger.renew().map_err(|e| PolicyError::Persist(e.to_string()))
    }

    /// Every key's counter (next number, lease), for the state file and tests.
    pub fn seq_spaces(&self) -> impl Iterator<Item = (&KeyId, &Arc<SeqSpace>)> {
        self.ledger.seq.iter()
    }

    /// Every inbound replay window by (key, SPI), for the state file.
    pub fn replay_windows(&self) -> impl Iterator<Item = (&(KeyId, u32), &Arc<ReplayWindow>)> {
        self.ledger.replay.iter()
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
    pub fn add_sa(&mut self, id: u32, role: SaRole, cfg: &SaConfig) -> Result<(), PolicyError> {
        self.add_sa_unpublished(id, role, cfg)?;
        if let Err(e) = self.renew_leases() {
            // Never publish an SA whose numbers are not durable.
            self.take_sa(id);
            return Err(e);
        }
        self.publish();
        Ok(())
    }

    fn add_sa_unpublished(&mut self, id: u32, role: SaRole, cfg: &SaConfig) -> Result<(), PolicyError> {
        if self.sas.contains_key(&id) {
            return Err(PolicyError::Exists { what: "SA", id });
        }
        let entry = self.make_sa(id, role, cfg, None)?;
        self.insert_sa(entry);
        Ok(())
    }

    /// Replace an SA: same id, new parameters; eroutes follow. With the same
    /// keys the SA continues where it was (sequence counter, replay window,
    /// usage); with new keys it starts the new key's own counter.
    pub fn replace_sa(&mut self, id: u32, role: SaRole, cfg: &SaConfig) -> Result<(), PolicyError> {
        let Some(old) = self.sas.get(&id).cloned() else {
            return Err(PolicyError::NotFound { what: "SA", id });
        };
        if role.direction() == Direction::Inbound {
            // A replaced outbound SA must stay outbound if eroutes use it.
            if let Some(e) = self.first_user(id) {
                return Err(PolicyError::NotOutbound { eroute: e, sa: id });
            }
        }
        let taken = self.take_sa(id).expect("checked");
        match self.make_sa(id, role, cfg, Some(&old)) {
            Ok(entry) => {
                self.insert_sa(entry);
                // Eroutes that protect with it point at the new SA.
                let users: Vec<u32> = self.sa_users.get(&id).map(|s| s.iter().copied().collect()).unwrap_or_default();
                if let Err(e) = self.renew_leases() {
                    // Keep the old SA: the new key's numbers are not durable.
                    self.take_sa(id);
                    self.insert_sa(taken);
                    return Err(e);
                }
                for e in users {
                    let er = self.eroutes[&e];
                    self.upsert_rule(&er);
                }
                self.publish();
                Ok(())
            }
            Err(e) => {
                self.insert_sa(taken);
                Err(e)
            }
        }
    }

    fn make_sa(
        &mut self,
        id: u32,
        role: SaRole,
        cfg: &SaConfig,
        replacing: Option<&SaEntry>,
    ) -> Result<Arc<SaEntry>, PolicyError> {
        let key = cfg.key_id();
        match &role {
            SaRole::Inbound { local, policy } => {
                if let Some(&other) = self.spi_index.get(&(cfg.spi, *local)) {
                    return Err(PolicyError::SpiInUse { spi: cfg.spi, other });
                }
                match policy {
                    InboundPolicy::Eroutes(ids) => {
                        if ids.is_empty() {
                            return Err(PolicyError::NoSelectors);
                        }
                        if let Some(&e) = ids.iter().find(|e| !self.eroutes.contains_key(e)) {
                            return Err(PolicyError::NotFound { what: "eroute", id: e });
                        }
                    }
                    InboundPolicy::Selectors(sels) => {
                        if sels.is_empty() {
                            return Err(PolicyError::NoSelectors);
                        }
                        for sel in sels {
                            sel.validate().map_err(PolicyError::Selector)?;
                        }
                    }
                }
            }
            SaRole::Outbound => {
                if let Some(&other) = self.key_users.get(&key) {
                    return Err(PolicyError::KeyInUse { other });
                }
            }
        }
        // Usage carries over only when the SA keeps its keys and SPI.
        let usage = match replacing {
            Some(old) if old.sa.key_id() == key && old.sa.spi() == cfg.spi => {
                let u = old.sa.usage_counters();
                Usage::resume(u.packets(), u.bytes())
            }
            _ => Usage::default(),
        };
        let from = SaContinuity {
            seq: self.ledger.seq(key),
            replay: self.ledger.replay(key, cfg.spi, window_size(cfg)),
            usage,
        };
        let sa = Sa::with_continuity(cfg, from)?;
        Ok(Arc::new(SaEntry { id, role, sa }))
    }

    /// The selectors an inbound SA checks, resolved from its policy.
    fn inbound_selectors(&self, role: &SaRole) -> Arc<[Selector]> {
        match role {
            SaRole::Outbound => Arc::from([]),
            SaRole::Inbound { policy: InboundPolicy::Selectors(s), .. } => s.as_slice().into(),
            SaRole::Inbound { policy: InboundPolicy::Eroutes(ids), .. } => {
                ids.iter().filter_map(|e| self.eroutes.get(e)).map(|e| e.selector.mirrored()).collect()
            }
        }
    }

    fn insert_sa(&mut self, entry: Arc<SaEntry>) {
        match entry.direction() {
            Direction::Inbound => {
                self.spi_index.insert((entry.sa.spi(), entry.local()), entry.id);
                for &e in entry.role.eroutes() {
                    self.inbound_users.entry(e).or_default().insert(entry.id);
                }
                let selectors = self.inbound_selectors(&entry.role);
                if let Some(e) = entry.sa.udp_encap() {
                    *self.natt_ports.entry(e.local_port).or_default() += 1;
                }
                Arc::make_mut(&mut self.sad).upsert(InboundSa {
                    local: entry.local(),
                    entry: entry.clone(),
                    selectors,
                });
            }
            Direction::Outbound => {
                self.key_users.insert(entry.sa.key_id(), entry.id);
                Arc::make_mut(&mut self.out_by_spi).upsert(InboundSa {
                    local: None,
                    entry: entry.clone(),
                    selectors: Arc::from([]),
                });
            }
        }
        self.sas.insert(entry.id, entry);
    }

    fn take_sa(&mut self, id: u32) -> Option<Arc<SaEntry>> {
        let e = self.sas.remove(&id)?;
        match e.direction() {
            Direction::Inbound => {
                self.spi_index.remove(&(e.sa.spi(), e.local()));
                for er in e.role.eroutes() {
                    if let Some(set) = self.inbound_users.get_mut(er) {
                        set.remove(&id);
                    }
                }
                Arc::make_mut(&mut self.sad).remove(e.sa.spi(), id);
                if let Some(u) = e.sa.udp_encap() {
                    if let Some(n) = self.natt_ports.get_mut(&u.local_port) {
                        *n -= 1;
                        if *n == 0 {
                            self.natt_ports.remove(&u.local_port);
                        }
                    }
                }
            }
            Direction::Outbound => {
                self.key_users.remove(&e.sa.key_id());
                Arc::make_mut(&mut self.out_by_spi).remove(e.sa.spi(), id);
            }
        }
        Some(e)
    }

    fn first_user(&self, sa: u32) -> Option<u32> {
        self.sa_users.get(&sa).and_then(|s| s.iter().next().copied())
    }

    /// Delete an SA (refused while an eroute protects with it). Its key's
    /// counter stays in the ledger: adding the key again continues it.
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
                Some(s) if s.direction() != Direction::Outbound => {
                    return Err(PolicyError::NotOutbound { eroute: e.id, sa })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn table(&mut self, v6: bool) -> &mut FamilyTable {
        Arc::make_mut(if v6 { &mut self.v6 } else { &mut self.v4 })
    }

    /// Put eroute `e` (already in `self.eroutes`) into the lookup tables, and
    /// refresh the selectors of inbound SAs bound to it.
    fn upsert_rule(&mut self, e: &Eroute) {
        let sa = match e.action {
            Action::Protect { sa, .. } => self.sas.get(&sa).cloned(),
            _ => None,
        };
        self.table(e.selector.dst.is_v6()).upsert(Rule { eroute: *e, sa });
        self.refresh_inbound(e.id);
    }

    fn refresh_inbound(&mut self, eroute: u32) {
        let users: Vec<u32> = self.inbound_users.get(&eroute).map(|s| s.iter().copied().collect()).unwrap_or_default();
        for id in users {
            if let Some(entry) = self.sas.get(&id).cloned() {
                let selectors = self.inbound_selectors(&entry.role);
                if let Some(e) = entry.sa.udp_encap() {
                    *self.natt_ports.entry(e.local_port).or_default() += 1;
                }
                Arc::make_mut(&mut self.sad).upsert(InboundSa { local: entry.local(), entry, selectors });
            }
        }
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

    /// Add an eroute (and publish).
    pub fn add_eroute(&mut self, e: Eroute) -> Result<(), PolicyError> {
        self.add_eroute_unpublished(e)?;
        self.publish();
        Ok(())
    }

    fn add_eroute_unpublished(&mut self, e: Eroute) -> Result<(), PolicyError> {
        if self.eroutes.contains_key(&e.id) {
            return Err(PolicyError::Exists { what: "eroute", id: e.id });
        }
        self.check_eroute(&e)?;
        self.link(&e);
        self.eroutes.insert(e.id, e);
        self.upsert_rule(&e);
        Ok(())
    }

    /// Replace an eroute in place (and publish).
    pub fn replace_eroute(&mut self, e: Eroute) -> Result<(), PolicyError> {
        let Some(&old) = self.eroutes.get(&e.id) else {
            return Err(PolicyError::NotFound { what: "eroute", id: e.id });
        };
        self.check_eroute(&e)?;
        self.unlink(&old);
        self.table(old.selector.dst.is_v6()).remove(&old);
        self.link(&e);
        self.eroutes.insert(e.id, e);
        self.upsert_rule(&e);
        self.publish();
        Ok(())
    }

    /// Delete an eroute (and publish). Inbound SAs that checked their traffic
    /// against it lose those selectors (with none left they accept nothing).
    pub fn remove_eroute(&mut self, id: u32) -> Result<(), PolicyError> {
        let old = self.eroutes.remove(&id).ok_or(PolicyError::NotFound { what: "eroute", id })?;
        self.unlink(&old);
        self.table(old.selector.dst.is_v6()).remove(&old);
        self.refresh_inbound(id);
        self.publish();
        Ok(())
    }

    /// Apply several changes and publish once (bulk loads). Leases for new
    /// keys are persisted before the snapshot is published.
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Batch<'_>) -> R) -> Result<R, PolicyError> {
        let r = f(&mut Batch { db: self });
        let renewed = self.renew_leases();
        self.publish();
        renewed.map(|_| r)
    }

    /// An eroute by id.
    pub fn eroute(&self, id: u32) -> Option<&Eroute> {
        self.eroutes.get(&id)
    }

    /// Every eroute, by id.
    pub fn eroutes(&self) -> impl Iterator<Item = &Eroute> {
        self.eroutes.values()
    }

    /// An SA by id.
    pub fn sa(&self, id: u32) -> Option<&Arc<SaEntry>> {
        self.sas.get(&id)
    }

    /// Every SA, by id.
    pub fn sas(&self) -> impl Iterator<Item = &Arc<SaEntry>> {
        self.sas.values()
    }

    /// Publish a snapshot of the current state: a handful of `Arc` clones,
    /// whatever the table size.
    pub fn publish(&mut self) {
        self.generation += 1;
        let snap = Snapshot {
            generation: self.generation,
            v4: self.v4.clone(),
            v6: self.v6.clone(),
            sad: self.sad.clone(),
            out_by_spi: self.out_by_spi.clone(),
            natt_ports: self.natt_ports.keys().copied().collect(),
            defaults: self.defaults,
        };
        self.published.store(Arc::new(snap));
    }
}

/// Changes applied together, published once at the end of [`PolicyDb::batch`].
pub struct Batch<'a> {
    db: &'a mut PolicyDb,
}

impl Batch<'_> {
    pub fn add_sa(&mut self, id: u32, role: SaRole, cfg: &SaConfig) -> Result<(), PolicyError> {
        self.db.add_sa_unpublished(id, role, cfg)
    }
    pub fn add_eroute(&mut self, e: Eroute) -> Result<(), PolicyError> {
        self.db.add_eroute_unpublished(e)
    }
}

#[cfg(test)]
mod tests;
