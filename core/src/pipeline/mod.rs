//! The packet pipeline over one received burst, generic over the buffer type:
//! the same code runs on `VecBuf`s in unit tests and on mbufs in the worker.
//!
//! Every packet is parsed once, at [`ingress`]: L2, the checked IP header
//! (checksum, lengths, fragment bounds) and its selectors go into a
//! [`Meta`] record that every later stage reads.
//!
//! - From a cleartext port ([`outbound`]): eroute lookup → protect (grouped
//!   by SA, MTU decision against the egress the *outer* route picks, one
//!   sequence reservation and one crypto call per group) | pass | drop | trap.
//! - From a protected port ([`inbound`]): reassembly of outer fragments →
//!   SAD lookup → decryption per SA group → the inner packet must match its
//!   SA's selectors → forwarded. ICMP too-big reports about our ESP lower
//!   the SA's path MTU.
//! - One egress for every cleartext packet ([`egress`]): route, the
//!   protected-port rule (nothing leaves a protected port in clear unless a
//!   pass eroute allowed exactly that packet), the egress port's MTU
//!   (fragment, or ICMP need-frag / PTB to the source), TTL, L2, TX.
//!
//! Traffic addressed to the gateway itself is never forwarded: IKE goes to
//! the control thread's daemon when one listens ([`ike`]); the rest goes to
//! the kernel through the host port ([`host`]), rate-limited, or without
//! one is dropped and counted (`for_gateway`).
//!
//! Packets that need the outbound policy after the burst (decrypted
//! traffic routed to a protected port, ICMP errors for sources across a
//! tunnel) wait in a small deferred list and are classified at the end of
//! the burst, at most [`DEFERRED_ROUNDS`] times.
//!
//! Nothing here allocates on the heap per packet (fixed-capacity arrays,
//! buffers from the [`BufAlloc`]), takes a lock or panics; every packet ends
//! sent or counted under a [`DropReason`].

mod egress;
mod host;
mod ike;
mod inbound;
mod ingress;
mod neighbor;
mod outbound;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;

use crate::mtu::{BufAlloc, IcmpRateLimiter, ReasmConfig, Reassembler};
use crate::neigh::RequestLimiter;
use crate::packet::{Meta, PacketBuf};
use crate::policy::{FlowKey, Snapshot};
use crate::route::RouteTable;
use crate::stats::{DropReason, WorkerStats};

/// Packets per burst the pipeline handles at once.
pub const BURST: usize = 32;
/// Rounds of deferred packets per burst (decrypted → hub → ICMP about it).
pub const DEFERRED_ROUNDS: usize = 2;
/// SA groups kept per burst; a burst with more SAs encrypts the oldest group
/// early. Small so that the groups' storage stays small.
const MAX_GROUPS: usize = 8;

/// Which side of the gateway a port is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    Cleartext,
    Protected,
    /// The kernel's side of the host path (a `net_tap`): traffic for the
    /// gateway goes there, the kernel's own traffic comes from there.
    Host,
}

pub use host::{TokenBucket, DEFAULT_HOST_RATE, HOST_PEER_MAC};
pub use ike::{IkeDatagram, IkeQueue, IkeQueues, IKE_DATAGRAM_MAX, IKE_QUEUE_LEN};

/// What the pipeline needs to know about a port.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub role: PortRole,
    pub mtu: u16,
    pub mac: [u8; 6],
    /// The gateway's own addresses on this port (source of ICMP errors).
    pub addr_v4: Option<Ipv4Addr>,
    pub addr_v6: Option<Ipv6Addr>,
}

/// Where finished packets go (a TX buffer per port on DPDK).
pub trait TxSink<B> {
    fn send(&mut self, port: usize, pkt: B);
}

/// Neighbours learned from ARP/NDP, on their way to the main thread.
pub type LearnQueue = ArrayQueue<(IpAddr, [u8; 6])>;

/// `%trap` hits on their way to the control thread, which turns them into
/// ACQUIRE-style events (KLIPS's trap → pluto path): the eroute and the
/// packet's selectors. Bounded and lossy: a full queue drops the report (the
/// packet is counted as `policy_trap` either way); the control thread
/// rate-limits per eroute.
pub type AcquireQueue = ArrayQueue<(u32, FlowKey)>;

/// An authenticated ESP-in-UDP packet came from an address or port other
/// than its SA's (a NAT rebinding, RFC 3948 §2; Linux's XFRM_MSG_MAPPING):
/// the SA, and where the peer is now. Bounded and lossy like the acquires;
/// the control thread reports it and, when the SA asks, follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatMapping {
    /// The inbound SA's id and SPI.
    pub sa_id: u32,
    pub spi: u32,
    /// The peer's address and UDP source port as the packet arrived.
    pub addr: IpAddr,
    pub port: u16,
}

/// NAT mapping changes on their way to the control thread.
pub type NatQueue = ArrayQueue<NatMapping>;

/// What processing one burst needs besides the pipeline's own state: the
/// route table snapshot, the clock, where new buffers come from, where
/// finished packets go, and the worker's counters.
pub struct BurstCtx<'a, A, S> {
    pub routes: &'a RouteTable,
    pub now_ms: u64,
    pub alloc: &'a mut A,
    pub tx: &'a mut S,
    pub stats: &'a WorkerStats,
}

/// Where a packet came from: it decides where an ICMP error about it goes,
/// and whether forwarding it is a router hop (TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Received on a port from this neighbour: errors go back the same way.
    Link { port: usize, mac: [u8; 6] },
    /// Decrypted from a tunnel: errors are routed (back through the tunnel).
    Tunnel,
    /// Made by the gateway (an ICMP error): no TTL decrement.
    Local,
    /// Sent by the kernel through the host port (the gateway's own
    /// traffic): no TTL decrement; unmatched by eroutes, it leaves in clear.
    Host,
}

impl Origin {
    /// Is forwarding it a router hop (TTL decremented, expiry checked)?
    #[inline]
    pub(crate) fn is_hop(self) -> bool {
        matches!(self, Origin::Link { .. } | Origin::Tunnel)
    }
}

/// A packet on its way: the buffer (starting at the IP header), its record,
/// and where it came from.
pub(crate) struct Pkt<B> {
    pub buf: B,
    pub meta: Meta,
    pub origin: Origin,
}

/// A cleartext burst as parallel arrays: ingress parses each record straight
/// into its slot and the policy stage reads it there; only the buffer (a
/// pointer) is moved. Moving whole packets with their 64-byte records from
/// stage to stage cost store-forwarding stalls.
pub(crate) struct Burst<B> {
    pub bufs: ArrayVec<B, BURST>,
    pub metas: [Meta; BURST],
    pub origins: [Origin; BURST],
}

impl<B> Burst<B> {
    pub fn new() -> Self {
        Burst { bufs: ArrayVec::new(), metas: [Meta::default(); BURST], origins: [Origin::Local; BURST] }
    }

    pub fn is_full(&self) -> bool {
        self.bufs.is_full()
    }

    /// Add a whole packet (deferred ones); gives it back when full.
    pub fn push(&mut self, p: Pkt<B>) -> Result<(), Pkt<B>> {
        let i = self.bufs.len();
        if i == BURST {
            return Err(p);
        }
        self.metas[i] = p.meta;
        self.origins[i] = p.origin;
        self.bufs.push(p.buf);
        Ok(())
    }
}

/// Per-worker pipeline state: reassembly table, ICMP and ARP/NS rate
/// limiters, the gateway's own addresses, settings.
pub struct Pipeline<B: PacketBuf> {
    ports: Vec<PortInfo>,
    /// Every address of the gateway, per family (asked for every packet:
    /// 32-bit compares for IPv4).
    own_v4: ArrayVec<u32, 16>,
    own_v6: ArrayVec<u128, 16>,
    reasm: Reassembler<B>,
    icmp_limit: IcmpRateLimiter,
    icmp_id: u16,
    pmtu_ageing_ms: u64,
    learned: Option<Arc<LearnQueue>>,
    acquires: Option<Arc<AcquireQueue>>,
    nat_reports: Option<Arc<NatQueue>>,
    /// The host port, if there is one, and its rate limits.
    host: Option<host::HostPath>,
    /// The control thread's IKE daemon, if one listens.
    ike: Option<ike::IkeLink>,
    solicit_limit: RequestLimiter,
    /// Packets for the outbound policy after this burst.
    deferred: ArrayVec<Pkt<B>, { 2 * BURST }>,
    /// The cleartext burst's arrays, kept between bursts: making them anew
    /// wrote 2 KiB of default records per burst that ingress overwrites
    /// anyway (each slot is written whole before it is pushed).
    spare: Option<Box<Burst<B>>>,
    /// The inbound SA group's result slots, kept between groups: making
    /// them anew wrote 3 KiB of default records per group. A slot left `Ok`
    /// by an earlier packet is overwritten whole by the next success
    /// (see `Sa::decap_burst_outer`).
    decap_slots: Option<Box<DecapSlots>>,
}

/// One result slot per packet of an inbound SA group.
pub(crate) type DecapSlots = [Result<crate::esp::Decapped, crate::esp::EspError>; BURST];

/// Fresh result slots (`Ok`: decapsulation writes each record in place).
pub(crate) fn new_decap_slots() -> Box<DecapSlots> {
    Box::new([Ok(crate::esp::Decapped::default()); BURST])
}

impl<B: PacketBuf> Pipeline<B> {
    pub fn new(ports: Vec<PortInfo>, reasm: ReasmConfig, pmtu_ageing_ms: u64) -> Self {
        let (mut own_v4, mut own_v6) = (ArrayVec::new(), ArrayVec::new());
        for p in &ports {
            if let Some(a) = p.addr_v4 {
                let _ = own_v4.try_push(u32::from(a));
            }
            if let Some(a) = p.addr_v6 {
                let _ = own_v6.try_push(u128::from(a));
            }
        }
        Pipeline {
            own_v4,
            own_v6,
            reasm: Reassembler::new(reasm),
            icmp_limit: IcmpRateLimiter::new(1024, 100, 20),
            icmp_id: 1,
            pmtu_ageing_ms,
            learned: None,
            acquires: None,
            nat_reports: None,
            host: ports.iter().position(|p| p.role == PortRole::Host).map(|port| host::HostPath {
                port,
                ike: TokenBucket::new(DEFAULT_HOST_RATE),
                other: TokenBucket::new(DEFAULT_HOST_RATE),
            }),
            ike: None,
            solicit_limit: RequestLimiter::new(256, 1000),
            deferred: ArrayVec::new(),
            spare: Some(Box::new(Burst::new())),
            decap_slots: Some(new_decap_slots()),
            ports,
        }
    }

    /// Packets per second per worker the host path takes, per bucket (IKE
    /// and the rest); beyond that they are dropped as `host_rate_limited`.
    pub fn with_host_rate(mut self, rate_per_s: u32) -> Self {
        if let Some(h) = &mut self.host {
            h.ike = TokenBucket::new(rate_per_s);
            h.other = TokenBucket::new(rate_per_s);
        }
        self
    }

    /// Send neighbours learned from ARP/NDP to this queue (the main thread
    /// republishes the route table with them).
    pub fn with_learning(mut self, q: Arc<LearnQueue>) -> Self {
        self.learned = Some(q);
        self
    }

    /// Report `%trap` hits to this queue.
    pub fn with_acquires(mut self, q: Arc<AcquireQueue>) -> Self {
        self.acquires = Some(q);
        self
    }

    /// Report NAT mapping changes of UDP SAs to this queue.
    pub fn with_nat_reports(mut self, q: Arc<NatQueue>) -> Self {
        self.nat_reports = Some(q);
        self
    }

    /// The ports, as configured.
    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
    }

    /// Periodic work: time out reassembly. Call every few milliseconds.
    pub fn tick(&mut self, now_ms: u64, stats: &WorkerStats) {
        let n = self.reasm.expire(now_ms);
        stats.drop_n(DropReason::ReasmTimeout, n as u64);
    }

    /// The worker stops: fragments still waiting for the rest of their
    /// datagram are freed and counted, so that every received packet is
    /// accounted for at exit too.
    pub fn shutdown(&mut self, stats: &WorkerStats) {
        let n = self.reasm.clear();
        stats.drop_n(crate::mtu::ReasmDrop::AtExit.into(), n as u64);
    }

    /// Is this the gateway's own address?
    /// (`iter().any`, not `contains`: on these few-entry arrays the
    /// slice `contains` specialisation measured ~15 instructions dearer.)
    #[inline]
    #[allow(clippy::manual_contains)]
    fn is_own(&self, v6: bool, a: u128) -> bool {
        if v6 {
            self.own_v6.iter().any(|&x| x == a)
        } else {
            // IPv4 in the selector encoding: the low 32 bits (records
            // built from IPv4 headers have the rest zero).
            let a4 = a as u32;
            self.own_v4.iter().any(|&x| x == a4)
        }
    }

    /// Process one burst received on `in_port`.
    /// (Never inlined: one call per burst, and profiles see the pipeline apart.)
    #[inline(never)]
    pub fn process<A, S, I>(&mut self, in_port: usize, burst: I, snap: &Snapshot, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
        I: IntoIterator<Item = B>,
    {
        match self.ports[in_port].role {
            PortRole::Cleartext => {
                let mut pkts = self.spare.take().unwrap_or_else(|| Box::new(Burst::new()));
                for b in burst {
                    self.ingress_into(in_port, b, &mut pkts, cx);
                    if pkts.is_full() {
                        self.outbound(&mut pkts, snap, cx);
                    }
                }
                self.outbound(&mut pkts, snap, cx);
                self.spare = Some(pkts);
            }
            PortRole::Protected => self.inbound(in_port, burst, snap, cx),
            PortRole::Host => self.kernel_burst(in_port, burst, snap, cx),
        }
        for _ in 0..DEFERRED_ROUNDS {
            if self.deferred.is_empty() {
                break;
            }
            let mut round: ArrayVec<Pkt<B>, { 2 * BURST }> = ArrayVec::new();
            std::mem::swap(&mut round, &mut self.deferred);
            let mut it = round.into_iter();
            loop {
                let mut chunk: Burst<B> = Burst::new();
                for p in it.by_ref().take(BURST) {
                    let _ = chunk.push(p); // at most BURST: always room
                }
                if chunk.bufs.is_empty() {
                    break;
                }
                self.outbound(&mut chunk, snap, cx);
            }
        }
        // Whatever a last round deferred again has nowhere to go.
        let left = self.deferred.len();
        self.deferred.clear();
        cx.stats.drop_n(DropReason::ClearToProtected, left as u64);
    }

    /// Keep a packet for the outbound policy at the end of the burst.
    fn defer(&mut self, pkt: Pkt<B>, stats: &WorkerStats) {
        if self.deferred.try_push(pkt).is_err() {
            stats.drop_one(DropReason::NoBuffer);
        }
    }
}

/// Routers decrement TTL / hop limit (of a packet whose record says it is
/// above 1); the record follows.
#[inline]
pub(crate) fn decrement_ttl<B: PacketBuf>(buf: &mut B, m: &mut Meta) {
    let d = buf.data_mut();
    if m.key.v6 {
        d[7] = d[7].saturating_sub(1);
    } else if let Some(h) = d.first_chunk_mut() {
        // The record says: a checked IPv4 header with TTL above 1.
        crate::wire::ipv4::decrement_ttl_in(h);
    }
    m.ttl = m.ttl.saturating_sub(1);
}

/// An address from the selector encoding (family + bits), for tools.
pub fn addr_of_key(v6: bool, a: u128) -> IpAddr {
    addr_of(v6, a)
}

/// An address from the selector encoding.
#[inline]
pub(crate) fn addr_of(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(a.into())
    } else {
        IpAddr::V4((a as u32).into())
    }
}

/// The selectors of an IP packet (ports only for the first fragment), for
/// tools and tests; the pipeline reads them from the packet's [`Meta`].
pub fn flow_key(d: &[u8]) -> Option<FlowKey> {
    Meta::parse(d, crate::packet::HwChecksum::Good).ok().map(|m| m.key)
}

#[cfg(test)]
mod tests;
