//! The IKE daemon in the control thread: the exchanges of [`super::sa_init`],
//! [`super::ike_auth`], [`super::create_child`] and [`super::informational`]
//! driven as a state machine over the workers' IKE queues, installing what
//! it negotiates through the policy store the API uses.
//!
//! - Responder: IKE_SA_INIT (the connection found by local and remote
//!   address), IKE_AUTH (the child SA installed *before* the answer leaves,
//!   so the peer's first packet finds it), INFORMATIONAL (liveness checks
//!   answered; deletes of child or IKE SAs carried out), CREATE_CHILD_SA
//!   (the peer's rekeys of child and IKE SAs, held make-before-break; a
//!   new child SA for the connection's selectors, e.g. one the peer
//!   recreates after it expired on its side; a rekey of an SA we are
//!   deleting is TEMPORARY_FAILURE, of one we do not have
//!   CHILD_SA_NOT_FOUND; both sides rekeying one child at once is
//!   resolved by the nonces, §2.8.1). A retransmitted request gets the
//!   same answer again (§2.1).
//! - Initiator: on `start`, on a `%trap` hit, or on demand; moves to port
//!   4500 when NAT detection says so (§2.23); retransmits with back-off
//!   (1, 2, 4, 8, 16 s) and gives up after that.
//! - Child SAs: tunnel mode, AES-GCM, ESP in UDP when NAT was detected
//!   (following the peer's NAT mapping); rekeyed by us make-before-break
//!   after `rekey_seconds` (new SAs installed, the eroute switched to the
//!   new outbound SA, then the old pair deleted with the peer).
//! - Liveness: after `dpd_seconds` of silence an empty INFORMATIONAL; no
//!   answer after the retransmissions takes the IKE SA and its children down.
//!
//! Names in the store: `ike-<connection>` for the eroute, and
//! `ike-<connection>-<inbound SPI>-in|out` for a child's SAs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espgw_core::pipeline::{IkeDatagram, IkeQueues};
use espgw_core::policy::Prefix;
use serde::Serialize;
use serde_json::json;

use super::create_child::{self, Rekey, RekeyTarget};
use super::crypto::{self, Inbound, Opened, Reassembled, Reassembly};
use super::ike_auth::{self, AuthConfig, AuthError, ChildSa};
use super::ike_rekey;
use super::informational::{self, PROTO_ESP, PROTO_IKE};
use super::key_log::{self, hex};
use super::message::{exchange, selectors, Header, Message, Payload, TrafficSelector};
use super::sa_init::{self, Established, Initiator, Response};
use crate::config::{ConnectionSpec, Start};
use crate::events::EventBus;
use crate::store::PolicyStore;

/// IKE's ports (RFC 7296 §2, RFC 3948).
const IKE_PORT: u16 = 500;
const NAT_T_PORT: u16 = 4500;
/// The largest IKE message we send whole once the peer takes fragments
/// (RFC 7383 §2.5.1): a 1 280-byte IPv6 packet less its IP and UDP
/// headers and the non-ESP marker, the same for IPv4.
const FRAGMENT_MAX: usize = 1280 - 40 - 8 - 4;
/// Retransmissions of one request before the peer is declared dead.
const MAX_TRIES: u32 = 5;
/// Half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet) we keep at most.
const MAX_HALF_OPEN: usize = 1024;
/// From this many half-open IKE SAs on, IKE_SA_INIT needs a cookie (§2.6).
pub const COOKIE_THRESHOLD: usize = 32;
/// The cookie secret changes this often.
const COOKIE_ROTATION: Duration = Duration::from_secs(120);
/// A half-open SA is forgotten after this.
const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of the daemon (exported on `/metrics`, shown by `espgwctl ike list`).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct IkeCounters {
    pub received: u64,
    pub sent: u64,
    pub retransmitted: u64,
    pub malformed: u64,
    pub no_connection: u64,
    pub auth_failed: u64,
    pub no_proposal: u64,
    pub established: u64,
    pub child_installed: u64,
    pub child_rekeyed: u64,
    pub deleted: u64,
    pub timed_out: u64,
    pub dropped_half_open: u64,
    /// IKE_SA_INIT answered with a COOKIE request (§2.6) instead of state.
    pub cookies_sent: u64,
    /// IKE SAs rekeyed (by us or by the peer), their child SAs kept.
    pub ike_rekeyed: u64,
    /// IKE fragments (RFC 7383) sent, and messages reassembled from them.
    pub fragments_sent: u64,
    pub reassembled: u64,
    /// Child SAs both sides rekeyed at once (§2.8.1), resolved.
    pub rekey_collisions: u64,
}

/// A configured connection as `espgwctl ike list` shows it (no PSK).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub name: String,
    pub local: String,
    pub remote: String,
    pub start: &'static str,
    /// Per child SA, in order: our selectors, the peer's, its eroute.
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub eroutes: Vec<String>,
}

/// One IKE SA as `espgwctl ike list` shows it (no keys).
#[derive(Debug, Clone, Serialize)]
pub struct IkeSaView {
    pub connection: String,
    pub initiator: bool,
    pub spi_i: String,
    pub spi_r: String,
    pub state: &'static str,
    pub local: String,
    pub remote: String,
    pub nat: bool,
    pub children: Vec<String>,
    pub age_s: u64,
    /// The IKE SA's algorithms (empty before IKE_SA_INIT is done).
    pub proposal: String,
}

/// A child SA installed in the store.
#[derive(Debug, Clone)]
struct Child {
    spi_in: u32,
    spi_out: u32,
    installed: Instant,
    /// Rekeyed by the peer: kept until the peer deletes it.
    retiring: bool,
    /// The eroute's selectors when it routes into this child (ours, theirs).
    selectors: (Prefix, Prefix),
    /// Installed while answering the peer's rekey: not routed into until
    /// the peer deletes the old SA (or [`HELD_MAX`] has passed).
    held: bool,
    /// The loser of a rekey collision (§2.8.1) that the peer deletes:
    /// never routed into, never rekeyed.
    redundant: bool,
    /// Which of the connection's children (`ConnectionSpec::children`).
    spec: usize,
    /// Rekey at the next chance (`espgwctl ike rekey`).
    force_rekey: bool,
}

impl Child {
    /// Ours to rekey `after` its install: not replaced by the peer's rekey
    /// already, and carrying our traffic (a held child is the peer's
    /// fresh replacement: rekeying it before the old one goes would leave
    /// the eroute on an SA that is about to be deleted).
    fn due_for_rekey(&self, now: Instant, after: Duration) -> bool {
        !self.retiring
            && !self.held
            && !self.redundant
            && (self.force_rekey || (!after.is_zero() && now.duration_since(self.installed) >= after))
    }
}

/// How long the outbound SA of a peer's rekey waits for the peer's delete
/// of the old SA before traffic moves to it anyway.
const HELD_MAX: Duration = Duration::from_secs(5);

/// What we wait for from the peer.
enum Waiting {
    /// `retries`: how often the responder had us send it again (a cookie,
    /// §2.6, or another group, §1.2) so far; at most [`INIT_RETRIES`].
    Init {
        init: Initiator,
        request: Vec<u8>,
        retries: u8,
    },
    Auth {
        spi_in: u32,
    },
    Dpd,
    IkeRekey {
        rekey: ike_rekey::IkeRekey,
    },
    Rekey {
        rekey: Rekey,
        old: Child,
    },
    DeleteChild {
        old: Child,
    },
    /// Another child of the connection (`spec`), made after IKE_AUTH.
    NewChild {
        rekey: Rekey,
        spec: usize,
    },
}

/// How often a responder may have our IKE_SA_INIT sent again (cookie,
/// another group) before we give up: a peer or an attacker on the path
/// cannot keep us going round.
const INIT_RETRIES: u8 = 3;

/// After a failed CREATE_CHILD_SA for a connection's further child, when we try again.
const NEW_CHILD_RETRY: Duration = Duration::from_secs(30);

/// Our outstanding request.
struct Pending {
    message_id: u32,
    bytes: Vec<u8>,
    sent: Instant,
    tries: u32,
    waiting: Waiting,
}

struct IkeSa {
    conn: usize,
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    est: Option<Box<Established>>,
    up: bool,
    /// The last request we answered, for its retransmissions (§2.1).
    answered: Option<(u32, Vec<u8>)>,
    pending: Option<Pending>,
    next_id: u32,
    children: Vec<Child>,
    /// IVs of our Encrypted payloads: a counter, never repeated under a key.
    iv: u64,
    created: Instant,
    last_heard: Instant,
    /// When we rekey this IKE SA (ike_rekey_seconds after it was made).
    rekey_at: Option<Instant>,
    /// Rekeyed (§1.3.2): its children moved to the new IKE SA; kept only
    /// for the peer's delete, and forgotten after [`HALF_OPEN_TIMEOUT`].
    superseded: Option<Instant>,
    /// The peer's fragmented message being put back together (RFC 7383).
    reassembly: Option<Reassembly>,
    /// The peer rekeyed the child SA we are rekeying (§2.8.1).
    collision: Option<Collision>,
    /// We made this IKE SA: from then on we create the connection's
    /// children it does not have yet (one CREATE_CHILD_SA at a time).
    missing_after: Option<Instant>,
}

/// A peer's rekey answered while ours of the same child SA was under way.
#[derive(Debug)]
struct Collision {
    /// The old child (our outbound SPI).
    old_spi_out: u32,
    /// The peer's new child (our inbound SPI).
    theirs_spi_in: u32,
    /// The lower nonce of the peer's exchange.
    lowest_nonce: Vec<u8>,
}

impl IkeSa {
    /// The child SA an outstanding request is about (being rekeyed, or
    /// replaced and being deleted): still in the store, so still ours.
    fn pending_child(&self) -> Option<&Child> {
        match self.pending.as_ref().map(|p| &p.waiting) {
            Some(Waiting::Rekey { old, .. } | Waiting::DeleteChild { old }) => Some(old),
            _ => None,
        }
    }

    /// A fresh IKE SA record (no keys yet, nothing pending).
    fn new(conn: usize, initiator: bool, local: SocketAddr, remote: SocketAddr, now: Instant) -> Self {
        IkeSa {
            conn,
            initiator,
            spi_i: 0,
            spi_r: 0,
            local,
            remote,
            est: None,
            up: false,
            answered: None,
            pending: None,
            next_id: 0,
            children: Vec::new(),
            iv: 0,
            created: now,
            last_heard: now,
            rekey_at: None,
            superseded: None,
            reassembly: None,
            collision: None,
            missing_after: None,
        }
    }

    fn next_iv(&mut self) -> [u8; 8] {
        self.iv += 1;
        self.iv.to_be_bytes()
    }
    fn natt(&self) -> bool {
        self.local.port() != IKE_PORT
    }
}

/// The daemon: connections, IKE SAs, the queues to the workers.
pub struct Daemon {
    conns: Vec<ConnectionSpec>,
    sas: Vec<IkeSa>,
    queues: IkeQueues,
    next_spi: u32,
    /// When each connection last tried to initiate (back-off for `start`).
    last_try: Vec<Option<Instant>>,
    pub counters: IkeCounters,
    /// Stateless cookies for when half-open SAs pile up (`None`: no
    /// randomness for a secret; then requests beyond the threshold are dropped).
    cookies: Option<sa_init::CookieJar>,
    cookies_rotated: Option<Instant>,
}

/// Point (add or replace) the connection's eroute `er` at the outbound SA `out`.
fn point_eroute(store: &mut PolicyStore, er: &str, out: &str, lp: Prefix, rp: Prefix) -> Result<(), String> {
    let e = json!({ "name": er, "src": lp.to_string(), "dst": rp.to_string(), "action": "protect", "sa": out });
    let id = store.eroute_id(er).unwrap_or_else(|| store.next_eroute_id());
    let spec = crate::config::parse_one_eroute(&e, id, &|n| store.find_sa(n)).map_err(|e| e.to_string())?;
    if store.eroute_id(er).is_some() {
        store.replace_eroute(er, spec).map(drop).map_err(|e| e.to_string())
    } else {
        store.add_eroute(spec).map(drop).map_err(|e| e.to_string())
    }
}

/// What the daemon needs of the control thread: the policy store it
/// installs negotiated SAs into, the event stream it reports on.
/// (`api::ControlState` is one; the daemon does not depend on the API.)
pub trait Control {
    fn store(&self) -> std::sync::MutexGuard<'_, PolicyStore>;
    fn events(&self) -> &EventBus;
}

/// The store name of a connection's eroute.
pub fn eroute_name(conn: &str) -> String {
    format!("ike-{conn}")
}

/// The eroute of a connection's child: `ike-NAME` for the first,
/// `ike-NAME-CHILD` for a `[[connection.child]]`.
fn child_eroute(c: &ConnectionSpec, spec: usize) -> String {
    match c.children.get(spec).and_then(|ch| ch.name.as_deref()) {
        Some(child) => format!("ike-{}-{child}", c.name),
        None => eroute_name(&c.name),
    }
}

/// A child spec's selectors as TSi/TSr of a request we send (ours first).
fn spec_ts(c: &ConnectionSpec, spec: usize) -> (Vec<TrafficSelector>, Vec<TrafficSelector>) {
    let ch = &c.children[spec.min(c.children.len().saturating_sub(1))];
    (vec![ts_of(&ch.local_ts)], vec![ts_of(&ch.remote_ts)])
}

/// Which of the connection's children a peer's request is for: the first
/// whose selectors its TSi/TSr (`peer_ts`: the initiator's, the
/// responder's) narrow into, with those allowed lists (TSi, TSr).
fn pick_child(
    c: &ConnectionSpec,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> (usize, Vec<TrafficSelector>, Vec<TrafficSelector>) {
    let allowed = |k: usize| (vec![ts_of(&c.children[k].remote_ts)], vec![ts_of(&c.children[k].local_ts)]);
    let k = (0..c.children.len())
        .find(|k| {
            let (ai, ar) = allowed(*k);
            !super::auth::narrow(tsi, &ai).is_empty() && !super::auth::narrow(tsr, &ar).is_empty()
        })
        .unwrap_or(0);
    let (ai, ar) = allowed(k);
    (k, ai, ar)
}

/// A prefix as a traffic selector (every protocol and port).
pub fn ts_of(p: &Prefix) -> TrafficSelector {
    let host_bits = if p.is_v6() { 128 } else { 32 } - u32::from(p.len());
    let start = p.to_string().split('/').next().and_then(|a| a.parse::<IpAddr>().ok()).unwrap_or(IpAddr::from([0; 4]));
    let end = match start {
        IpAddr::V4(a) => {
            let m = if host_bits >= 32 { u32::MAX } else { (1u32 << host_bits) - 1 };
            IpAddr::V4((u32::from(a) | m).into())
        }
        IpAddr::V6(a) => {
            let m = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
            IpAddr::V6((u128::from(a) | m).into())
        }
    };
    TrafficSelector::range(start, end)
}

/// A traffic selector as a prefix, when it is one (an aligned block, any
/// protocol and port); the narrowed selectors of two prefixes always are.
pub fn prefix_of(ts: &TrafficSelector) -> Option<Prefix> {
    let (s, e, width) = match (ts.start, ts.end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (u128::from(u32::from(s)), u128::from(u32::from(e)), 32u32),
        (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e), 128),
        _ => return None,
    };
    let span = e.checked_sub(s)?;
    let host_bits = 128 - span.leading_zeros();
    let aligned = span.checked_add(1).is_none_or(|n| n.is_power_of_two()) && s & span == 0;
    if !aligned || ts.protocol != 0 || (ts.start_port, ts.end_port) != (0, 65535) {
        return None;
    }
    Prefix::new(ts.start, (width - host_bits) as u8).ok()
}

impl Daemon {
    pub fn new(conns: Vec<ConnectionSpec>, queues: IkeQueues) -> Self {
        let mut seed = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        let n = conns.len();
        for c in conns.iter().filter(|c| c.wireshark_keys.is_some()) {
            let dir = c.wireshark_keys.as_deref().map(|d| d.display().to_string()).unwrap_or_default();
            tracing::warn!(target: "espgw::ike", conn = %c.name, %dir, "DEBUG: negotiated keys are written to disk (wireshark_keys)");
        }
        Daemon {
            conns,
            sas: Vec::new(),
            queues,
            next_spi: u32::from_be_bytes(seed) | 0xc000_0000,
            last_try: vec![None; n],
            counters: IkeCounters::default(),
            cookies: sa_init::CookieJar::new().ok(),
            cookies_rotated: None,
        }
    }

    /// Install the `%trap` eroutes of `start = "trap"` connections (one per child).
    pub fn install_traps(&self, control: &dyn Control) {
        for (i, c) in self.conns.iter().enumerate().filter(|(_, c)| c.start == Start::Trap) {
            for k in 0..c.children.len() {
                self.install_trap(control, i, k);
            }
        }
    }

    /// The `%trap` eroute of connection `conn`'s child `k`.
    fn install_trap(&self, control: &dyn Control, conn: usize, k: usize) {
        {
            let c = &self.conns[conn];
            let ch = &c.children[k];
            let spec = json!({
                "name": child_eroute(c, k), "src": ch.local_ts.to_string(),
                "dst": ch.remote_ts.to_string(), "action": "trap",
            });
            let mut store = control.store();
            let id = store.next_eroute_id();
            match crate::config::parse_one_eroute(&spec, id, &|n| store.find_sa(n)) {
                Ok(e) => {
                    if let Err(e) = store.add_eroute(e) {
                        tracing::warn!(target: "espgw::ike", conn = %c.name, error = %e, "trap eroute not installed");
                    }
                }
                Err(e) => tracing::warn!(target: "espgw::ike", conn = %c.name, error = %e, "trap eroute invalid"),
            }
        }
    }

    /// The IKE SAs, for `espgwctl ike list`.
    pub fn list(&self, now: Instant) -> Vec<IkeSaView> {
        self.sas
            .iter()
            .map(|s| IkeSaView {
                connection: self.conns[s.conn].name.clone(),
                initiator: s.initiator,
                spi_i: format!("{:016x}", s.spi_i),
                spi_r: format!("{:016x}", s.spi_r),
                state: if s.superseded.is_some() {
                    "rekeyed"
                } else if s.up {
                    "established"
                } else if s.est.is_some() {
                    "authenticating"
                } else {
                    "connecting"
                },
                local: s.local.to_string(),
                remote: s.remote.to_string(),
                nat: s.natt(),
                proposal: s.est.as_ref().map(|e| e.suite.name()).unwrap_or_default(),
                children: s
                    .children
                    .iter()
                    .chain(s.pending_child())
                    .map(|c| format!("{:08x}/{:08x}", c.spi_in, c.spi_out))
                    .collect(),
                age_s: now.duration_since(s.created).as_secs(),
            })
            .collect()
    }

    /// Work: datagrams from the workers, timers, connections to start.
    pub fn poll(&mut self, control: &dyn Control, now: Instant) {
        if self.cookies_rotated.is_none_or(|t| now.duration_since(t) >= COOKIE_ROTATION) {
            self.cookies_rotated = Some(now);
            if let Some(j) = self.cookies.as_mut() {
                let _ = j.rotate();
            }
        }
        while let Some(d) = self.queues.to_control.pop() {
            self.counters.received += 1;
            self.receive(control, &d, now);
        }
        self.timers(control, now);
        for i in 0..self.conns.len() {
            let due = self.last_try[i].is_none_or(|t| now.duration_since(t) >= Duration::from_secs(30));
            if self.conns[i].start == Start::Start && due && !self.sas.iter().any(|s| s.conn == i) {
                self.initiate(i, now);
            }
        }
    }

    /// `%trap` hits: initiate the connection whose eroute was hit (once).
    pub fn acquire(&mut self, eroute: &str, now: Instant) {
        let hit = |c: &ConnectionSpec| (0..c.children.len()).any(|k| child_eroute(c, k) == eroute);
        if let Some(i) = self.conns.iter().position(hit) {
            if !self.sas.iter().any(|s| s.conn == i) {
                self.initiate(i, now);
            }
        }
    }

    /// Start an IKE SA for the connection named `name` (`espgwctl ike initiate`).
    /// Err when there is no such connection, or it has an IKE SA already
    /// (connecting or up: a second one would only race the first).
    pub fn initiate_named(&mut self, name: &str, now: Instant) -> Result<(), String> {
        let i = self.conns.iter().position(|c| c.name == name).ok_or(format!("no connection named {name:?}"))?;
        if self.sas.iter().any(|s| s.conn == i && s.superseded.is_none()) {
            return Err(format!("connection {name:?} has an IKE SA already"));
        }
        self.initiate(i, now);
        Ok(())
    }

    fn initiate(&mut self, conn: usize, now: Instant) {
        self.last_try[conn] = Some(now);
        let c = &self.conns[conn];
        let (local, remote) = (SocketAddr::new(c.local, IKE_PORT), SocketAddr::new(c.remote, IKE_PORT));
        let Ok((init, request)) = Initiator::start(&c.ike, local, remote) else { return };
        tracing::info!(target: "espgw::ike", conn = %c.name, peer = %remote, "initiating");
        let mut sa = IkeSa { spi_i: init.spi_i, next_id: 1, ..IkeSa::new(conn, true, local, remote, now) };
        let bytes = request.clone();
        sa.pending = Some(Pending {
            message_id: 0,
            bytes,
            sent: now,
            tries: 0,
            waiting: Waiting::Init { init, request, retries: 0 },
        });
        self.sas.push(sa);
        let i = self.sas.len() - 1;
        if let Some(b) = self.sas[i].pending.as_ref().map(|p| p.bytes.clone()) {
            self.send(i, &b);
        }
    }

    fn alloc_spi(&mut self) -> u32 {
        self.next_spi = self.next_spi.wrapping_add(1) | 0xc000_0000;
        self.next_spi
    }

    /// Send `msg` to the SA's peer (the non-ESP marker on 4500).
    fn send_raw(&self, sa: &IkeSa, msg: &[u8]) {
        self.push(sa.local, sa.remote, msg);
    }

    /// A message no IKE SA keeps (a refusal, a cookie request): counted as sent.
    fn send_to(&mut self, local: SocketAddr, remote: SocketAddr, msg: &[u8]) {
        self.counters.sent += 1;
        self.push(local, remote, msg);
    }

    /// To a worker, with the non-ESP marker on port 4500.
    fn push(&self, local: SocketAddr, remote: SocketAddr, msg: &[u8]) {
        let mut buf = Vec::with_capacity(msg.len() + 4);
        if local.port() != IKE_PORT {
            buf.extend_from_slice(&[0; 4]);
        }
        buf.extend_from_slice(msg);
        if let Some(d) = IkeDatagram::new(local, remote, &buf) {
            let _ = self.queues.from_control.push(d);
        }
    }

    /// Send a message of an IKE SA, in fragments (RFC 7383) when it is
    /// larger than [`FRAGMENT_MAX`] and the peer takes them.
    fn send(&mut self, i: usize, msg: &[u8]) {
        self.counters.sent += 1;
        let s = &mut self.sas[i];
        let Some(est) = s.est.as_ref().filter(|e| e.peer_fragments && msg.len() > FRAGMENT_MAX) else {
            return self.send_raw(&self.sas[i], msg);
        };
        let key = est.sk(s.initiator);
        let mut iv = s.iv;
        let pieces = crypto::fragment(msg, key, FRAGMENT_MAX, || {
            iv += 1;
            iv.to_be_bytes()
        });
        s.iv = iv;
        match pieces {
            Ok(pieces) => {
                self.counters.fragments_sent += pieces.len() as u64;
                for p in pieces {
                    self.send_raw(&self.sas[i], &p);
                }
            }
            Err(_) => self.send_raw(&self.sas[i], msg),
        }
    }

    /// Send a request we wait an answer for.
    fn request(&mut self, i: usize, bytes: Vec<u8>, waiting: Waiting, now: Instant) {
        let message_id = self.sas[i].next_id;
        self.sas[i].next_id += 1;
        self.send(i, &bytes);
        self.sas[i].pending = Some(Pending { message_id, bytes, sent: now, tries: 0, waiting });
    }

    fn receive(&mut self, control: &dyn Control, d: &IkeDatagram, now: Instant) {
        let mut msg = d.payload();
        if d.local.port() != IKE_PORT {
            // Port 4500: IKE behind the non-ESP marker (RFC 3948 §2.2).
            match msg {
                [0, 0, 0, 0, rest @ ..] => msg = rest,
                _ => {
                    self.counters.malformed += 1;
                    return;
                }
            }
        }
        let Ok(m) = Message::decode(msg) else {
            self.counters.malformed += 1;
            return;
        };
        let h = m.header;
        if h.exchange == exchange::IKE_SA_INIT && !h.is_response() && h.spi_r == 0 {
            return self.init_request(msg, d, now);
        }
        let Some(i) = self.sas.iter().position(|s| {
            s.spi_i == h.spi_i && (s.spi_r == h.spi_r || (h.exchange == exchange::IKE_SA_INIT && s.spi_r == 0))
        }) else {
            self.counters.no_connection += 1;
            return;
        };
        self.sas[i].last_heard = now;
        let whole;
        let msg = if matches!(m.payloads.last(), Some(Payload::EncryptedFragment { .. })) {
            match self.reassemble(i, h, msg) {
                Some(r) => {
                    whole = r;
                    Inbound::Reassembled(&whole)
                }
                None => return,
            }
        } else {
            Inbound::Datagram(msg)
        };
        if h.is_response() {
            self.response(control, i, h, msg, d, now);
        } else {
            self.peer_request(control, i, h, msg, d, now);
        }
    }

    /// One fragment of a message (RFC 7383): the whole message once all
    /// are in. A fragment of a request we answered already gets the
    /// answer again (once, on its first fragment).
    fn reassemble(&mut self, i: usize, h: Header, msg: &[u8]) -> Option<Reassembled> {
        let s = &mut self.sas[i];
        if let (false, Some((id, a))) = (h.is_response(), &s.answered) {
            if h.message_id == *id {
                let (a, first) = (a.clone(), fragment_number(msg) == Some(1));
                if first {
                    self.counters.retransmitted += 1;
                    self.send(i, &a);
                }
                return None;
            }
        }
        let est = s.est.as_ref()?;
        let key = est.sk(!s.initiator);
        match Reassembly::add(&mut s.reassembly, msg, key) {
            Ok(Some(whole)) => {
                self.counters.reassembled += 1;
                Some(whole)
            }
            Ok(None) => None,
            Err(_) => {
                self.counters.malformed += 1;
                None
            }
        }
    }

    /// IKE_SA_INIT from a peer: answered statelessly when refused.
    fn init_request(&mut self, msg: &[u8], d: &IkeDatagram, now: Instant) {
        // A retransmission: the same answer.
        let spi_i = peek_spi_i(msg);
        if let Some(i) = self.sas.iter().position(|s| !s.initiator && s.remote == d.remote && s.spi_i == spi_i) {
            if let Some((0, a)) = self.sas[i].answered.clone() {
                self.counters.retransmitted += 1;
                self.send(i, &a);
            }
            return;
        }
        let Some(conn) = self.conns.iter().position(|c| c.local == d.local.ip() && c.remote == d.remote.ip()) else {
            self.counters.no_connection += 1;
            return;
        };
        let half_open = self.sas.iter().filter(|s| !s.initiator && !s.up).count();
        let under_load = half_open >= COOKIE_THRESHOLD;
        if half_open >= MAX_HALF_OPEN || (under_load && self.cookies.is_none()) {
            self.counters.dropped_half_open += 1;
            return;
        }
        let cookies = self.cookies.as_ref().filter(|_| under_load);
        let c = &self.conns[conn];
        match sa_init::respond(msg, d.local, d.remote, cookies, c.credential.certreq(), &c.ike) {
            Ok(Response::Cookie { message }) => {
                self.counters.cookies_sent += 1;
                self.send_to(d.local, d.remote, &message);
            }
            Ok(Response::Accept { message, sa }) => {
                self.log_keys(conn, "ikev2_decryption_table", &key_log::ike_row(&sa));
                let s = IkeSa {
                    spi_i: sa.spi_i,
                    spi_r: sa.spi_r,
                    est: Some(sa),
                    answered: Some((0, message.clone())),
                    ..IkeSa::new(conn, false, d.local, d.remote, now)
                };
                self.sas.push(s);
                let i = self.sas.len() - 1;
                self.send(i, &message);
            }
            Ok(Response::Refuse { message, notify }) => {
                self.counters.no_proposal += 1;
                tracing::info!(target: "espgw::ike", peer = %d.remote, notify, "IKE_SA_INIT refused");
                self.send_to(d.local, d.remote, &message);
            }
            Err(_) => self.counters.malformed += 1,
        }
    }

    /// A request of the peer on an IKE SA.
    fn peer_request(
        &mut self,
        control: &dyn Control,
        i: usize,
        h: Header,
        msg: Inbound<'_>,
        d: &IkeDatagram,
        now: Instant,
    ) {
        // §2.1: a retransmitted request gets the same answer; older ones nothing.
        if let Some((id, a)) = &self.sas[i].answered {
            if h.message_id == *id {
                let a = a.clone();
                self.counters.retransmitted += 1;
                return self.send(i, &a);
            }
            if h.message_id != id + 1 {
                return;
            }
        }
        let Some(est) = self.sas[i].est.take() else { return };
        let out = match h.exchange {
            exchange::IKE_AUTH if !self.sas[i].up => {
                // The peer may have moved to 4500 (NAT detected).
                (self.sas[i].local, self.sas[i].remote) = (d.local, d.remote);
                self.auth_request(control, i, &est, msg, now)
            }
            exchange::INFORMATIONAL if self.sas[i].up => self.info_request(control, i, &est, msg),
            exchange::CREATE_CHILD_SA if self.sas[i].up => self.child_request(control, i, &est, msg, now),
            _ => None,
        };
        if self.sas.get(i).is_some_and(|s| s.spi_i == h.spi_i) {
            self.sas[i].est = Some(est);
            if let Some(out) = out {
                self.sas[i].answered = Some((h.message_id, out.clone()));
                self.send(i, &out);
            }
        } else if let Some(out) = out {
            // The SA went (a Delete): the answer still goes.
            self.send_to(d.local, d.remote, &out);
        }
    }

    fn auth_request(
        &mut self,
        control: &dyn Control,
        i: usize,
        est: &Established,
        msg: Inbound<'_>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let c = self.conns[self.sas[i].conn].clone();
        let cfg = auth_config(&c);
        let spi_in = self.alloc_spi();
        let iv = self.sas[i].next_iv();
        // Opened once: which child the peer asks for (the first whose
        // selectors its own narrow into), then the exchange.
        let Ok((header, inner)) = msg.open(est.sk(true)) else {
            self.counters.malformed += 1;
            return None;
        };
        let (spec, allowed_i, allowed_r) = pick_child(&c, &selectors(&inner, true), &selectors(&inner, false));
        let opened = Opened { header, inner };
        match ike_auth::respond(est, &cfg, Inbound::Opened(&opened), spi_in, &allowed_i, &allowed_r, iv) {
            Ok((resp, child)) => {
                // Installed before the answer leaves: the peer sends at once.
                let (remote_ts, local_ts) = (child.tsi.clone(), child.tsr.clone());
                match self.install(control, i, &child, &local_ts, &remote_ts, est.nat.any(), true, spec, now) {
                    Ok(()) => {
                        self.established(control, i, now);
                        Some(resp)
                    }
                    Err(e) => {
                        tracing::warn!(target: "espgw::ike", conn = %c.name, error = %e, "child SA not installed");
                        None
                    }
                }
            }
            Err(AuthError::Refuse { notify, response }) if notify != ike_auth::notify::AUTHENTICATION_FAILED => {
                // Authenticated; the child refused: the IKE SA stands without one (§2.21.3).
                self.counters.no_proposal += 1;
                tracing::warn!(target: "espgw::ike", conn = %c.name, peer = %self.sas[i].remote, notify, "child SA refused");
                self.established(control, i, now);
                Some(response)
            }
            Err(AuthError::Refuse { notify, response }) => {
                self.counters.auth_failed += 1;
                tracing::warn!(target: "espgw::ike", conn = %c.name, peer = %self.sas[i].remote, notify, "IKE_AUTH refused");
                control.events().publish(
                    "ike_auth_failed",
                    json!({ "connection": c.name, "peer": self.sas[i].remote.ip(), "notify": notify }),
                );
                // The half-open SA goes after the answer (kept until then for it).
                self.sas[i].pending = None;
                self.sas[i].created = now.checked_sub(HALF_OPEN_TIMEOUT).unwrap_or(now);
                Some(response)
            }
            Err(_) => {
                self.counters.malformed += 1;
                None
            }
        }
    }

    /// The peer rekeys one of our child SAs (or the IKE SA): the new pair
    /// is installed before the answer, held (our traffic stays on the old
    /// SA, which retires) until the peer deletes the old one.
    fn child_request(
        &mut self,
        control: &dyn Control,
        i: usize,
        est: &Established,
        msg: Inbound<'_>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let c = self.conns[self.sas[i].conn].clone();
        let spi_in = self.alloc_spi();
        let iv = self.sas[i].next_iv();
        let s = &self.sas[i];
        let live: Vec<u32> = s.children.iter().filter(|c| !c.retiring && !c.redundant).map(|c| c.spi_out).collect();
        // The child we are rekeying ourselves: a collision (§2.8.1), answered as usual.
        let rekeying = match s.pending.as_ref().map(|p| &p.waiting) {
            Some(Waiting::Rekey { old, .. }) => Some(old.spi_out),
            _ => None,
        };
        let closing: Vec<u32> = s
            .children
            .iter()
            .filter(|c| c.retiring || c.redundant)
            .map(|c| c.spi_out)
            .chain(match s.pending.as_ref().map(|p| &p.waiting) {
                Some(Waiting::DeleteChild { old }) => Some(old.spi_out),
                _ => None,
            })
            .collect();
        let target = |spi: u32| {
            if live.contains(&spi) || rekeying == Some(spi) {
                RekeyTarget::Ours
            } else if closing.contains(&spi) {
                RekeyTarget::Closing
            } else {
                RekeyTarget::Unknown
            }
        };
        let initiator = self.sas[i].initiator;
        // A rekey keeps its child's selectors; a new child is one of the connection's.
        let Ok((header, inner)) = msg.open(est.sk(!initiator)) else {
            self.counters.malformed += 1;
            return None;
        };
        let rekeyed_spec = inner.iter().find_map(|p| match p {
            Payload::Notify { kind: create_child::REKEY_SA, protocol: 3, spi, .. } => {
                let spi = u32::from_be_bytes(<[u8; 4]>::try_from(spi.as_slice()).ok()?);
                let s = &self.sas[i];
                s.children.iter().chain(s.pending_child()).find(|c| c.spi_out == spi).map(|c| c.spec)
            }
            _ => None,
        });
        let (spec, allowed_i, allowed_r) = match rekeyed_spec {
            Some(k) => (k, vec![ts_of(&c.children[k].remote_ts)], vec![ts_of(&c.children[k].local_ts)]),
            None => pick_child(&c, &selectors(&inner, true), &selectors(&inner, false)),
        };
        let opened = Opened { header, inner };
        let msg = Inbound::Opened(&opened);
        let r = create_child::respond(
            est, initiator, msg, target, true, spi_in, &c.child, &c.ike, &allowed_i, &allowed_r, iv,
        );
        match r {
            Ok((_, create_child::Answer::Created { child, response })) => {
                // The peer (re)creates a child SA of this connection: it sends at
                // once, and so do we, as after IKE_AUTH.
                let (remote_ts, local_ts) = (child.tsi.clone(), child.tsr.clone());
                self.install(control, i, &child, &local_ts, &remote_ts, est.nat.any(), true, spec, now).ok()?;
                tracing::info!(target: "espgw::ike", conn = %c.name, "the peer created a child SA");
                Some(response)
            }
            Ok((_, create_child::Answer::Rekeyed { old_spi_out, child, response })) => {
                let (remote_ts, local_ts) = (child.tsi.clone(), child.tsr.clone());
                self.install(control, i, &child, &local_ts, &remote_ts, est.nat.any(), false, spec, now).ok()?;
                self.counters.child_rekeyed += 1;
                if rekeying == Some(old_spi_out) {
                    tracing::info!(target: "espgw::ike", conn = %c.name, "both sides rekey the same child SA (§2.8.1)");
                    self.sas[i].collision =
                        Some(Collision { old_spi_out, theirs_spi_in: child.spi_in, lowest_nonce: child.lowest_nonce });
                }
                for ch in self.sas[i].children.iter_mut().filter(|ch| ch.spi_out == old_spi_out) {
                    ch.retiring = true;
                }
                Some(response)
            }
            Ok((_, create_child::Answer::IkeRekeyed { new, response })) => {
                // The peer rekeyed the IKE SA: it is the new one's initiator.
                self.supersede(control, i, *new, false, now);
                Some(response)
            }
            Ok((_, create_child::Answer::Refused { notify, response })) => {
                tracing::info!(target: "espgw::ike", conn = %c.name, notify, "CREATE_CHILD_SA refused");
                Some(response)
            }
            Err(_) => {
                self.counters.malformed += 1;
                None
            }
        }
    }

    fn info_request(
        &mut self,
        control: &dyn Control,
        i: usize,
        est: &Established,
        msg: Inbound<'_>,
    ) -> Option<Vec<u8>> {
        let iv = self.sas[i].next_iv();
        let children = self.sas[i].children.clone();
        let ours = |peer_spi: u32| children.iter().find(|c| c.spi_out == peer_spi).map(|c| c.spi_in);
        let (_, payloads, out) = informational::answer(est, self.sas[i].initiator, msg, ours, iv).ok()?;
        for p in &payloads {
            match p {
                Payload::Delete { protocol: PROTO_IKE, .. } => {
                    self.counters.deleted += 1;
                    self.remove_sa(control, i, "deleted by peer");
                    return Some(out);
                }
                Payload::Delete { protocol: PROTO_ESP, spis, .. } => {
                    for s in spis.iter().filter_map(|s| <[u8; 4]>::try_from(s.as_slice()).ok()) {
                        let spi = u32::from_be_bytes(s);
                        if let Some(k) = self.sas[i].children.iter().position(|c| c.spi_out == spi) {
                            // Its successor takes the traffic first: no packet meets a missing SA.
                            if self.sas[i].children[k].retiring {
                                for h in 0..self.sas[i].children.len() {
                                    self.release(control, i, h);
                                }
                            }
                            let c = self.sas[i].children.remove(k);
                            self.uninstall(control, self.sas[i].conn, &c);
                        }
                    }
                }
                _ => {}
            }
        }
        Some(out)
    }

    /// A response to our request.
    fn response(
        &mut self,
        control: &dyn Control,
        i: usize,
        h: Header,
        msg: Inbound<'_>,
        d: &IkeDatagram,
        now: Instant,
    ) {
        if self.sas[i].pending.as_ref().is_none_or(|p| p.message_id != h.message_id) {
            return;
        }
        let Some(p) = self.sas[i].pending.take() else { return };
        let c = self.conns[self.sas[i].conn].clone();
        match p.waiting {
            Waiting::Init { init, request, retries }
                if retries < INIT_RETRIES && msg.datagram().and_then(sa_init::cookie_asked).is_some() =>
            {
                // §2.6: the same request again with the responder's cookie first.
                let retry =
                    msg.datagram().and_then(sa_init::cookie_asked).and_then(|c| sa_init::with_cookie(&request, &c));
                match retry {
                    Some(r) => self.init_again(i, init, r, retries + 1, now),
                    None => self.remove_sa(control, i, "IKE_SA_INIT cookie unusable"),
                }
            }
            Waiting::Init { init, request, retries }
                if retries < INIT_RETRIES && msg.datagram().and_then(sa_init::group_asked).is_some() =>
            {
                // §1.2: the responder wants another of the groups we offered.
                let group = msg.datagram().and_then(sa_init::group_asked).unwrap_or_default();
                match init.with_group(&request, group) {
                    Some((init, r)) => {
                        tracing::info!(target: "espgw::ike", conn = %c.name, group, "the peer asked for another group");
                        self.init_again(i, init, r, retries + 1, now);
                    }
                    None => {
                        self.counters.no_proposal += 1;
                        tracing::warn!(target: "espgw::ike", conn = %c.name, group, "the peer wants a group we did not offer");
                        self.remove_sa(control, i, "IKE_SA_INIT refused");
                    }
                }
            }
            Waiting::Init { init, request, .. } => match init.complete(request, msg.datagram().unwrap_or_default()) {
                Ok(est) => {
                    self.log_keys(self.sas[i].conn, "ikev2_decryption_table", &key_log::ike_row(&est));
                    let s = &mut self.sas[i];
                    s.spi_r = est.spi_r;
                    if est.nat.any() {
                        // §2.23: on to 4500.
                        s.local.set_port(NAT_T_PORT);
                        s.remote.set_port(NAT_T_PORT);
                    }
                    let spi_in = self.alloc_spi();
                    let iv = self.sas[i].next_iv();
                    let cfg = auth_config(&c);
                    let (tsi, tsr) = spec_ts(&c, 0);
                    match ike_auth::request(&est, &cfg, spi_in, &tsi, &tsr, iv) {
                        Ok(bytes) => {
                            self.sas[i].est = Some(Box::new(est));
                            self.request(i, bytes, Waiting::Auth { spi_in }, now);
                        }
                        Err(_) => self.remove_sa(control, i, "IKE_AUTH request failed"),
                    }
                }
                Err(e) => {
                    self.counters.no_proposal += 1;
                    tracing::warn!(target: "espgw::ike", conn = %c.name, error = ?e, "IKE_SA_INIT failed");
                    self.remove_sa(control, i, "IKE_SA_INIT refused");
                }
            },
            Waiting::Auth { spi_in } => {
                let Some(est) = self.sas[i].est.take() else { return };
                let cfg = auth_config(&c);
                let r = ike_auth::complete(&est, &cfg, spi_in, msg);
                let nat = est.nat.any();
                self.sas[i].est = Some(est);
                match r {
                    Ok(child) => {
                        let (local_ts, remote_ts) = (child.tsi.clone(), child.tsr.clone());
                        match self.install(control, i, &child, &local_ts, &remote_ts, nat, true, 0, now) {
                            Ok(()) => self.established(control, i, now),
                            Err(e) => {
                                tracing::warn!(target: "espgw::ike", conn = %c.name, error = %e, "child SA not installed");
                                self.remove_sa(control, i, "child SA not installed");
                            }
                        }
                    }
                    Err(AuthError::ChildRefused(notify)) => {
                        // The IKE SA is up but useless without its child: deleted, and
                        // start = "start" tries again later.
                        self.counters.no_proposal += 1;
                        tracing::warn!(target: "espgw::ike", conn = %c.name, notify, "the peer refused the child SA");
                        self.sas[i].up = true;
                        self.terminate_one(control, i);
                    }
                    Err(e) => {
                        self.counters.auth_failed += 1;
                        tracing::warn!(target: "espgw::ike", conn = %c.name, error = ?e, "IKE_AUTH failed");
                        control.events().publish(
                            "ike_auth_failed",
                            json!({ "connection": c.name, "peer": d.remote.ip(), "error": format!("{e:?}") }),
                        );
                        self.remove_sa(control, i, "IKE_AUTH failed");
                    }
                }
            }
            Waiting::Dpd => {}
            Waiting::Rekey { rekey, old } => {
                let Some(est) = self.sas[i].est.take() else { return };
                let r = rekey.complete(&est, self.sas[i].initiator, msg);
                let nat = est.nat.any();
                self.sas[i].est = Some(est);
                let collision = self.sas[i].collision.take().filter(|col| col.old_spi_out == old.spi_out);
                match (r, collision) {
                    (Ok(child), None) => {
                        let (local_ts, remote_ts) = (child.tsi.clone(), child.tsr.clone());
                        if self.install(control, i, &child, &local_ts, &remote_ts, nat, true, old.spec, now).is_ok() {
                            self.counters.child_rekeyed += 1;
                            // The old pair: deleted with the peer (its inbound kept until the answer).
                            self.delete_child(i, old, now);
                        }
                    }
                    (Ok(child), Some(col)) => self.resolve_collision(control, i, child, old, col, nat, now),
                    (Err(_), Some(_)) => {
                        // Ours failed, the peer's stands: the old SA is the peer's to delete.
                        tracing::info!(target: "espgw::ike", conn = %c.name, "our colliding rekey failed; the peer's stands");
                        self.sas[i].children.push(Child { retiring: true, ..old });
                    }
                    (Err(e), None) => {
                        // Tried again after another rekey_seconds, not at every poll; after
                        // a TEMPORARY_FAILURE (the peer is busy with that SA, §2.25) in a
                        // few seconds.
                        tracing::warn!(target: "espgw::ike", conn = %c.name, error = ?e, "rekey failed");
                        let installed = match e {
                            create_child::RekeyError::Refused(create_child::TEMPORARY_FAILURE) => {
                                let after = Duration::from_secs(c.rekey_seconds);
                                now.checked_sub(after)
                                    .map_or(now, |t| t + Duration::from_millis(2000 + jitter_ms(3000)))
                            }
                            _ => now,
                        };
                        self.sas[i].children.push(Child { installed, ..old });
                    }
                }
            }
            Waiting::IkeRekey { rekey } => {
                let Some(est) = self.sas[i].est.take() else { return };
                let r = rekey.complete(&est, self.sas[i].initiator, msg);
                self.sas[i].est = Some(est);
                match r {
                    Ok(new) => {
                        // We are the new IKE SA's initiator; the old one is deleted with the peer.
                        self.supersede(control, i, new, true, now);
                        self.sas[i].up = false;
                        if let Some(est) = self.sas[i].est.take() {
                            let iv = self.sas[i].next_iv();
                            let del = Payload::Delete { protocol: PROTO_IKE, spi_size: 0, spis: vec![] };
                            let id = self.sas[i].next_id;
                            if let Ok(b) = informational::request(&est, self.sas[i].initiator, id, &[del], iv) {
                                self.send(i, &b);
                            }
                        }
                        self.remove_sa(control, i, "rekeyed");
                    }
                    Err(e) => {
                        tracing::warn!(target: "espgw::ike", conn = %c.name, error = ?e, "IKE SA rekey failed");
                        self.sas[i].rekey_at = Some(now + Duration::from_secs(60));
                    }
                }
            }
            Waiting::DeleteChild { old } => self.uninstall(control, self.sas[i].conn, &old),
            Waiting::NewChild { rekey, spec } => {
                let Some(est) = self.sas[i].est.take() else { return };
                let r = rekey.complete(&est, self.sas[i].initiator, msg);
                let nat = est.nat.any();
                self.sas[i].est = Some(est);
                let installed = r.map_err(|e| format!("{e:?}")).and_then(|child| {
                    let (local_ts, remote_ts) = (child.tsi.clone(), child.tsr.clone());
                    self.install(control, i, &child, &local_ts, &remote_ts, nat, true, spec, now)
                });
                if let Err(e) = installed {
                    tracing::warn!(target: "espgw::ike", conn = %c.name, error = %e, "child SA not created");
                    self.sas[i].missing_after = Some(now + NEW_CHILD_RETRY);
                }
            }
        }
    }

    /// Both sides rekeyed the same child SA (§2.8.1): ours (`child`) is
    /// done now, the peer's (`col`) was answered before. Of the two new
    /// SAs, the one made by the exchange with the lowest of the four
    /// nonces is redundant and is deleted by whoever initiated that
    /// exchange; whoever initiated the surviving one deletes the old SA.
    /// Both sides decide alike, so exactly one new pair stays.
    #[allow(clippy::too_many_arguments)]
    fn resolve_collision(
        &mut self,
        control: &dyn Control,
        i: usize,
        child: ChildSa,
        old: Child,
        col: Collision,
        nat: bool,
        now: Instant,
    ) {
        self.counters.rekey_collisions += 1;
        let ours_redundant = child.lowest_nonce < col.lowest_nonce;
        let spec = old.spec;
        let (local_ts, remote_ts) = (child.tsi.clone(), child.tsr.clone());
        // Installed either way: the peer may send on it until it has our delete.
        if self.install(control, i, &child, &local_ts, &remote_ts, nat, !ours_redundant, old.spec, now).is_err() {
            self.sas[i].children.push(Child { retiring: true, ..old });
            return;
        }
        self.counters.child_rekeyed += 1;
        if ours_redundant {
            // We delete our new pair; the old one is the peer's to delete,
            // which moves our traffic to the peer's new pair (held till then).
            let k = self.sas[i].children.iter().position(|c| c.spi_in == child.spi_in);
            if let Some(ours) = k.map(|k| self.sas[i].children.remove(k)) {
                self.sas[i].children.push(Child { retiring: true, ..old });
                self.delete_child(i, ours, now);
            }
        } else {
            // The peer deletes its new pair: never routed into, not rekeyed.
            for c in self.sas[i].children.iter_mut().filter(|c| c.spi_in == col.theirs_spi_in) {
                (c.redundant, c.held) = (true, false);
            }
            self.delete_child(i, old, now);
        }
        let conn = self.sas[i].conn;
        self.reroute(control, conn, spec);
    }

    /// Our IKE_SA_INIT once more, as the responder asked (`request` the new
    /// bytes, `retries` how often now).
    fn init_again(&mut self, i: usize, init: Initiator, request: Vec<u8>, retries: u8, now: Instant) {
        let bytes = request.clone();
        let waiting = Waiting::Init { init, request, retries };
        self.sas[i].pending = Some(Pending { message_id: 0, bytes: bytes.clone(), sent: now, tries: 0, waiting });
        self.send(i, &bytes);
    }

    fn delete_child(&mut self, i: usize, old: Child, now: Instant) {
        let Some(est) = self.sas[i].est.take() else { return };
        let del = Payload::Delete { protocol: PROTO_ESP, spi_size: 4, spis: vec![old.spi_in.to_be_bytes().to_vec()] };
        let iv = self.sas[i].next_iv();
        let id = self.sas[i].next_id;
        let r = informational::request(&est, self.sas[i].initiator, id, &[del], iv);
        self.sas[i].est = Some(est);
        if let Ok(bytes) = r {
            self.request(i, bytes, Waiting::DeleteChild { old }, now);
        }
    }

    fn established(&mut self, control: &dyn Control, i: usize, now: Instant) {
        let rekey_at = self.ike_rekey_time(self.sas[i].conn, now);
        let s = &mut self.sas[i];
        s.up = true;
        s.rekey_at = rekey_at;
        if s.initiator {
            s.missing_after = Some(now);
        }
        self.counters.established += 1;
        let c = &self.conns[s.conn];
        tracing::info!(target: "espgw::ike", conn = %c.name, peer = %s.remote, nat = s.natt(), "IKE SA established");
        control.events().publish(
            "ike_sa_up",
            json!({
                "connection": c.name, "peer": s.remote.ip(), "port": s.remote.port(),
                "spi_i": format!("{:016x}", s.spi_i), "spi_r": format!("{:016x}", s.spi_r),
                "initiator": s.initiator, "nat": s.natt(),
            }),
        );
    }

    /// Put a negotiated child SA into the store: inbound SA, outbound SA,
    /// and (`route`) the connection's eroute pointing at the outbound one.
    /// Without `route` the outbound SA is held back until [`Self::release`]:
    /// when the peer rekeys, it can only decrypt the new SA once it has our
    /// answer, so we keep sending on the old SA until the peer deletes it
    /// (as strongSwan does as the responder of a rekey).
    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        control: &dyn Control,
        i: usize,
        child: &ChildSa,
        local_ts: &[TrafficSelector],
        remote_ts: &[TrafficSelector],
        nat: bool,
        route: bool,
        spec: usize,
        now: Instant,
    ) -> Result<(), String> {
        let s = &self.sas[i];
        let c = &self.conns[s.conn];
        let (Some(lp), Some(rp)) = (local_ts.first().and_then(prefix_of), remote_ts.first().and_then(prefix_of)) else {
            return Err("the narrowed selectors are not prefixes".into());
        };
        self.log_keys(s.conn, "esp_sa", &key_log::esp_rows(s.local.ip(), s.remote.ip(), child));
        let (alg, enc_len) = (child.suite.algorithm(), child.suite.enc_len());
        let base = format!("ike-{}-{:08x}", c.name, child.spi_in);
        let er = child_eroute(c, spec);
        let sa = |name: String, dir: &str, spi: u32, key: &[u8]| {
            let mut v = json!({
                "name": name, "direction": dir, "spi": spi, "algorithm": alg,
                "enc_key": hex(&key[..enc_len.min(key.len())]), "mode": "tunnel", "esn": child.esn,
                "local": s.local.ip().to_string(), "remote": s.remote.ip().to_string(),
            });
            if key.len() > enc_len {
                // KEYMAT order (§2.17): the encryption key, then the integrity key.
                v["auth_key"] = json!(hex(&key[enc_len..]));
            }
            if nat {
                v["encap"] = json!("udp");
                v["local_port"] = json!(s.local.port());
                v["remote_port"] = json!(s.remote.port());
                v["nat_follow"] = json!(true);
            }
            if dir == "in" {
                v["src"] = json!(rp.to_string());
                v["dst"] = json!(lp.to_string());
            }
            v
        };
        let inbound = sa(format!("{base}-in"), "in", child.spi_in, &child.key_in);
        let outbound = sa(format!("{base}-out"), "out", child.spi_out, &child.key_out);
        let mut store = control.store();
        for v in [inbound, outbound] {
            let spec = crate::config::parse_one_sa(&v).map_err(|e| e.to_string())?;
            store.add_sa(spec).map_err(|e| e.to_string())?;
        }
        if route {
            point_eroute(&mut store, &er, &format!("{base}-out"), lp, rp)?;
        }
        drop(store);
        self.counters.child_installed += 1;
        control.events().publish(
            "child_sa_up",
            json!({
                "connection": c.name, "spi_in": format!("{:08x}", child.spi_in),
                "spi_out": format!("{:08x}", child.spi_out), "local_ts": lp.to_string(),
                "remote_ts": rp.to_string(), "encap": if nat { "udp" } else { "none" },
            }),
        );
        tracing::info!(
            target: "espgw::ike", conn = %c.name,
            spi_in = %format_args!("{:08x}", child.spi_in), spi_out = %format_args!("{:08x}", child.spi_out),
            "child SA installed"
        );
        self.sas[i].children.push(Child {
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            installed: now,
            retiring: false,
            selectors: (lp, rp),
            held: !route,
            redundant: false,
            spec,
            force_rekey: false,
        });
        Ok(())
    }

    /// Route the connection's traffic into child `k`'s outbound SA, which
    /// was installed held back (we answered the peer's rekey).
    fn release(&mut self, control: &dyn Control, i: usize, k: usize) {
        let conn = self.sas[i].conn;
        let c = &mut self.sas[i].children[k];
        if c.held {
            c.held = false;
            let spec = c.spec;
            self.reroute(control, conn, spec);
        }
    }

    /// Point the connection's eroute at its newest child SA that carries
    /// traffic, across all its IKE SAs (two can exist when both sides
    /// initiated at once); with none left, back to `%trap` (start = "trap")
    /// or gone (traffic meets the defaults again).
    fn reroute(&mut self, control: &dyn Control, conn: usize, spec: usize) {
        let name = self.conns[conn].name.clone();
        let best = self
            .sas
            .iter()
            .filter(|s| s.conn == conn)
            .flat_map(|s| {
                let rekeying = match s.pending.as_ref().map(|p| &p.waiting) {
                    Some(Waiting::Rekey { old, .. }) => Some(old),
                    _ => None,
                };
                s.children.iter().chain(rekeying)
            })
            .filter(|c| c.spec == spec && !c.held && !c.redundant)
            .max_by_key(|c| c.installed)
            .map(|c| (format!("ike-{name}-{:08x}-out", c.spi_in), c.selectors));
        let er = child_eroute(&self.conns[conn], spec);
        let mut store = control.store();
        let current = store.eroute(&er).ok().and_then(|e| serde_json::to_value(&e).ok());
        let result = match best {
            Some((out, _)) if current.as_ref().is_some_and(|v| v["sa"] == out.as_str()) => Ok(()),
            Some((out, (lp, rp))) => point_eroute(&mut store, &er, &out, lp, rp),
            None if self.conns[conn].start == Start::Trap => {
                if current.is_none_or(|v| v["action"] != "trap") {
                    let _ = store.delete_eroute(&er);
                    drop(store);
                    self.install_trap(control, conn, spec);
                }
                Ok(())
            }
            None => {
                let _ = store.delete_eroute(&er);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(target: "espgw::ike", conn = %name, error = %e, "cannot point the eroute at the child SA");
        }
    }

    /// Take a child's SAs out of the store; the eroute moves to another
    /// child of the connection if there is one.
    fn uninstall(&mut self, control: &dyn Control, conn: usize, c: &Child) {
        let name = self.conns[conn].name.clone();
        let base = format!("ike-{name}-{:08x}", c.spi_in);
        {
            let mut store = control.store();
            let _ = store.delete_sa(&format!("{base}-out"), true);
            let _ = store.delete_sa(&format!("{base}-in"), true);
        }
        control.events().publish("child_sa_down", json!({ "connection": name, "spi_in": format!("{:08x}", c.spi_in) }));
        self.reroute(control, conn, c.spec);
    }

    /// The IKE SA and its children go.
    fn remove_sa(&mut self, control: &dyn Control, i: usize, why: &str) {
        let mut children = std::mem::take(&mut self.sas[i].children);
        children.extend(self.sas[i].pending_child().cloned());
        let s = self.sas.swap_remove(i);
        for c in &children {
            self.uninstall(control, s.conn, c);
        }
        let c = &self.conns[s.conn];
        if s.up && s.superseded.is_none() {
            tracing::info!(target: "espgw::ike", conn = %c.name, peer = %s.remote, why, "IKE SA down");
            control
                .events()
                .publish("ike_sa_down", json!({ "connection": c.name, "peer": s.remote.ip(), "reason": why }));
        }
    }

    /// Retransmissions, half-open expiry, liveness checks, rekeys.
    fn timers(&mut self, control: &dyn Control, now: Instant) {
        let mut i = 0;
        while i < self.sas.len() {
            let s = &self.sas[i];
            if !s.up && !s.initiator && now.duration_since(s.created) >= HALF_OPEN_TIMEOUT {
                self.sas.swap_remove(i);
                continue;
            }
            if let Some(p) = &s.pending {
                let wait = Duration::from_secs(1 << p.tries.min(4));
                if now.duration_since(p.sent) >= wait {
                    if p.tries + 1 >= MAX_TRIES {
                        self.counters.timed_out += 1;
                        self.remove_sa(control, i, "peer not answering");
                        continue;
                    }
                    let bytes = p.bytes.clone();
                    if let Some(p) = &mut self.sas[i].pending {
                        p.tries += 1;
                        p.sent = now;
                    }
                    self.counters.retransmitted += 1;
                    self.send(i, &bytes);
                }
                i += 1;
                continue;
            }
            if let Some(t) = s.superseded {
                // A rekeyed IKE SA whose delete never came goes quietly.
                if now.duration_since(t) >= HALF_OPEN_TIMEOUT {
                    self.sas.swap_remove(i);
                    continue;
                }
                i += 1;
                continue;
            }
            if let Some(k) = s.children.iter().position(|c| c.held && now.duration_since(c.installed) >= HELD_MAX) {
                self.release(control, i, k);
            }
            let s = &self.sas[i];
            if s.up {
                let c = &self.conns[s.conn];
                let (dpd, rekey) = (Duration::from_secs(c.dpd_seconds), Duration::from_secs(c.rekey_seconds));
                let missing = s
                    .missing_after
                    .filter(|t| now >= *t)
                    .and_then(|_| (0..c.children.len()).find(|k| !s.children.iter().any(|ch| ch.spec == *k)));
                if s.rekey_at.is_some_and(|t| now >= t) {
                    self.rekey_ike(i, now);
                } else if s.children.iter().any(|ch| ch.due_for_rekey(now, rekey)) {
                    self.rekey(i, rekey, now);
                } else if let Some(k) = missing {
                    self.new_child(i, k, now);
                } else if s.missing_after.is_some_and(|t| now >= t) {
                    // Every child is there: nothing more to make.
                    self.sas[i].missing_after = None;
                } else if c.dpd_seconds > 0 && now.duration_since(s.last_heard) >= dpd {
                    self.dpd(i, now);
                }
            }
            i += 1;
        }
    }

    /// IKE SA `i` was rekeyed into `new`: its children move there, and it
    /// stays only to hear (or, `initiator`, to send) the delete.
    fn supersede(&mut self, control: &dyn Control, i: usize, new: Established, initiator: bool, now: Instant) {
        let rekey_at = self.ike_rekey_time(self.sas[i].conn, now);
        // Our own exchange on the old IKE SA is abandoned: a child we were
        // rekeying moves on as it is, one we were deleting goes now.
        match self.sas[i].pending.take().map(|p| p.waiting) {
            Some(Waiting::Rekey { old, .. }) => self.sas[i].children.push(old),
            Some(Waiting::DeleteChild { old }) => self.uninstall(control, self.sas[i].conn, &old),
            _ => {}
        }
        let old = &mut self.sas[i];
        old.superseded = Some(now);
        let conn = &self.conns[old.conn];
        tracing::info!(
            target: "espgw::ike", conn = %conn.name,
            spi_i = %format_args!("{:016x}", new.spi_i), spi_r = %format_args!("{:016x}", new.spi_r),
            "IKE SA rekeyed"
        );
        self.log_keys(self.sas[i].conn, "ikev2_decryption_table", &key_log::ike_row(&new));
        let old = &mut self.sas[i];
        let fresh = IkeSa {
            spi_i: new.spi_i,
            spi_r: new.spi_r,
            est: Some(Box::new(new)),
            up: true,
            children: std::mem::take(&mut old.children),
            rekey_at,
            ..IkeSa::new(old.conn, initiator, old.local, old.remote, now)
        };
        self.counters.ike_rekeyed += 1;
        self.sas.push(fresh);
    }

    /// The debug key export of a connection with `wireshark_keys` (see
    /// [`key_log`]); a failure to write is logged, never fatal.
    fn log_keys(&self, conn: usize, file: &str, rows: &str) {
        let c = &self.conns[conn];
        if let Some(dir) = &c.wireshark_keys {
            if let Err(e) = key_log::append(dir, file, rows) {
                tracing::warn!(target: "espgw::ike", conn = %c.name, error = %e, dir = %dir.display(), "cannot write the key export");
            }
        }
    }

    /// When an IKE SA made now is rekeyed: ike_rekey_seconds less up to a
    /// tenth at random, so that two peers with the same setting rarely
    /// start at the same moment (strongSwan's rand_time).
    fn ike_rekey_time(&self, conn: usize, now: Instant) -> Option<Instant> {
        let secs = self.conns[conn].ike_rekey_seconds;
        (secs > 0).then(|| now + Duration::from_millis(secs * 1000 - jitter_ms(secs * 100)))
    }

    /// Start rekeying IKE SA `i` (ike_rekey_seconds ran out).
    fn rekey_ike(&mut self, i: usize, now: Instant) {
        let Some(est) = self.sas[i].est.take() else { return };
        let iv = self.sas[i].next_iv();
        let r = ike_rekey::request(&est, self.sas[i].initiator, self.sas[i].next_id, iv);
        self.sas[i].est = Some(est);
        match r {
            Ok((rekey, bytes)) => self.request(i, bytes, Waiting::IkeRekey { rekey }, now),
            Err(_) => self.sas[i].rekey_at = Some(now + Duration::from_secs(60)),
        }
    }

    fn dpd(&mut self, i: usize, now: Instant) {
        let Some(est) = self.sas[i].est.take() else { return };
        let iv = self.sas[i].next_iv();
        let r = informational::request(&est, self.sas[i].initiator, self.sas[i].next_id, &[], iv);
        self.sas[i].est = Some(est);
        if let Ok(bytes) = r {
            self.request(i, bytes, Waiting::Dpd, now);
        }
    }

    fn rekey(&mut self, i: usize, after: Duration, now: Instant) {
        let Some(k) = self.sas[i].children.iter().position(|c| c.due_for_rekey(now, after)) else {
            return;
        };
        let old = Child { force_rekey: false, ..self.sas[i].children.remove(k) };
        // The child's own (narrowed) selectors.
        let ts = (vec![ts_of(&old.selectors.0)], vec![ts_of(&old.selectors.1)]);
        let new_spi = self.alloc_spi();
        let Some(est) = self.sas[i].est.take() else { return };
        let iv = self.sas[i].next_iv();
        let id = self.sas[i].next_id;
        let policy = self.conns[self.sas[i].conn].child.clone();
        let initiator = self.sas[i].initiator;
        let r = create_child::request(&est, initiator, id, Some(old.spi_in), new_spi, &policy, &ts.0, &ts.1, iv);
        self.sas[i].est = Some(est);
        match r {
            Ok((rekey, bytes)) => self.request(i, bytes, Waiting::Rekey { rekey, old }, now),
            Err(_) => self.sas[i].children.push(old),
        }
    }

    /// Create the connection's child `spec` on IKE SA `i` with
    /// CREATE_CHILD_SA (§1.3.1): its other children, after IKE_AUTH made
    /// the first.
    fn new_child(&mut self, i: usize, spec: usize, now: Instant) {
        let c = &self.conns[self.sas[i].conn];
        let (tsi, tsr) = spec_ts(c, spec);
        let policy = c.child.clone();
        let spi_in = self.alloc_spi();
        let Some(est) = self.sas[i].est.take() else { return };
        let iv = self.sas[i].next_iv();
        let (id, initiator) = (self.sas[i].next_id, self.sas[i].initiator);
        let r = create_child::request(&est, initiator, id, None, spi_in, &policy, &tsi, &tsr, iv);
        self.sas[i].est = Some(est);
        match r {
            Ok((rekey, bytes)) => self.request(i, bytes, Waiting::NewChild { rekey, spec }, now),
            Err(_) => self.sas[i].missing_after = Some(now + NEW_CHILD_RETRY),
        }
    }

    /// Rekey every child SA of the connection now (`espgwctl ike rekey`),
    /// make-before-break as when rekey_seconds runs out: how many rekeys
    /// were started. Err when it has no established IKE SA to do it on.
    pub fn rekey_named(&mut self, name: &str, now: Instant) -> Result<usize, String> {
        let conn = self.conns.iter().position(|c| c.name == name).ok_or(format!("no connection named {name:?}"))?;
        let mut started = 0;
        for i in 0..self.sas.len() {
            let s = &mut self.sas[i];
            if s.conn == conn && s.up && s.superseded.is_none() {
                // Each of its children, one exchange after the other.
                for c in s.children.iter_mut().filter(|c| !c.retiring && !c.held && !c.redundant) {
                    c.force_rekey = true;
                    started += 1;
                }
                if s.pending.is_none() {
                    self.rekey(i, Duration::ZERO, now);
                }
            }
        }
        if started == 0 {
            return Err(format!("connection {name:?} has no established IKE SA that is not busy"));
        }
        Ok(started)
    }

    /// The configured connections (`espgwctl ike list`): name, addresses, start.
    pub fn connections(&self) -> Vec<ConnectionView> {
        self.conns
            .iter()
            .map(|c| ConnectionView {
                name: c.name.clone(),
                local: c.local.to_string(),
                remote: c.remote.to_string(),
                start: match c.start {
                    Start::None => "none",
                    Start::Start => "start",
                    Start::Trap => "trap",
                },
                local_ts: c.children.iter().map(|ch| ch.local_ts.to_string()).collect(),
                remote_ts: c.children.iter().map(|ch| ch.remote_ts.to_string()).collect(),
                eroutes: (0..c.children.len()).map(|k| child_eroute(c, k)).collect(),
            })
            .collect()
    }

    /// Delete every IKE SA of the connection (at exit, `espgwctl ike
    /// terminate`): the peer is told where no other exchange is in flight
    /// (one request at a time, §2.3); every one goes from our side at once.
    pub fn terminate_named(&mut self, control: &dyn Control, name: &str) -> usize {
        let mut n = 0;
        while let Some(i) = self.sas.iter().position(|s| self.conns[s.conn].name == name) {
            if self.sas[i].up && self.sas[i].superseded.is_none() {
                n += 1;
            }
            self.terminate_one(control, i);
        }
        n
    }

    /// Delete IKE SA `i`: the peer is told when no other exchange is in flight.
    fn terminate_one(&mut self, control: &dyn Control, i: usize) {
        if self.sas[i].up && self.sas[i].pending.is_none() {
            if let Some(est) = self.sas[i].est.take() {
                let iv = self.sas[i].next_iv();
                let del = Payload::Delete { protocol: PROTO_IKE, spi_size: 0, spis: vec![] };
                if let Ok(b) = informational::request(&est, self.sas[i].initiator, self.sas[i].next_id, &[del], iv) {
                    self.send(i, &b);
                }
                self.sas[i].est = Some(est);
            }
        }
        self.remove_sa(control, i, "terminated");
    }
}

impl Daemon {
    /// At exit: every established IKE SA is deleted with its peer (one
    /// try; the workers still send for a moment after this).
    pub fn shutdown(&mut self, control: &dyn Control) {
        let names: Vec<String> = self.conns.iter().map(|c| c.name.clone()).collect();
        for n in names {
            self.terminate_named(control, &n);
        }
    }
}

/// A random number of milliseconds below `max` (timers that two peers
/// should not run in step).
fn jitter_ms(max: u64) -> u64 {
    let mut r = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    u64::from(u32::from_be_bytes(r)) % max.max(1)
}

/// An SKF message's fragment number.
fn fragment_number(msg: &[u8]) -> Option<u16> {
    match Message::decode(msg).ok()?.payloads.last()? {
        Payload::EncryptedFragment { number, .. } => Some(*number),
        _ => None,
    }
}

fn peek_spi_i(msg: &[u8]) -> u64 {
    msg.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes)
}

fn auth_config(c: &ConnectionSpec) -> AuthConfig {
    AuthConfig {
        me: c.local_id.clone(),
        peer: c.remote_id.clone(),
        credential: c.credential.clone(),
        child: c.child.clone(),
    }
}

/// The daemon, shared between the main thread (which polls it) and the API.
pub type SharedDaemon = Arc<std::sync::Mutex<Daemon>>;
