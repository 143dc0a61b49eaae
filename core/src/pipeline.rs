//! The packet pipeline over one received burst, generic over the buffer type:
//! the same code runs on `VecBuf`s in unit tests and on mbufs in the worker.
//!
//! Outbound (cleartext port): strip L2 → flow key → eroute lookup → group by
//! SA → MTU decision against the egress limit of the *outer* route (refuse DF
//! packets with ICMP, optionally fragment inner packets first, clamp MSS) →
//! encrypt the group with one sequence reservation → fragment what exceeds
//! the limit → L2 rewrite → TX.
//!
//! Inbound (protected port): strip L2 → reassemble outer fragments → SAD
//! lookup by SPI → group by SA → decrypt → inbound selector check → route the
//! inner packet → L2 rewrite → TX. ICMP too-big reports quoting our ESP
//! lower the SA's path MTU.
//!
//! Nothing here allocates on the heap per packet (fixed-capacity arrays,
//! buffers from the [`BufAlloc`]), takes a lock or panics; every packet ends
//! sent or counted under a [`DropReason`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;

use crate::esp::{Mode, PmtuUpdate};
use crate::mtu::{self, BufAlloc, IcmpRateLimiter, ReasmConfig, ReasmOutcome, Reassembler, TooBig};
use crate::neigh::{self, RequestLimiter};
use crate::packet::ip::{self, proto};
use crate::packet::PacketBuf;
use crate::policy::{Action, FlowKey, SaEntry, Snapshot, Verdict};
use crate::route::{NextHopError, RouteTable};
use crate::stats::{DropReason, Event, WorkerStats};

/// Packets per burst the pipeline handles at once.
pub const BURST: usize = 32;
const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// Which side of the gateway a port is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    Cleartext,
    Protected,
}

/// What the pipeline needs to know about a port.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub role: PortRole,
    pub mtu: u16,
    pub mac: [u8; 6],
    /// Source of ICMP errors sent out of this port.
    pub addr_v4: Option<Ipv4Addr>,
    pub addr_v6: Option<Ipv6Addr>,
}

/// Where finished packets go (a TX buffer per port on DPDK).
pub trait TxSink<B> {
    fn send(&mut self, port: usize, pkt: B);
}

/// Neighbours learned from ARP/NDP, on their way to the main thread.
pub type LearnQueue = ArrayQueue<(IpAddr, [u8; 6])>;

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

/// Per-worker pipeline state: reassembly table, ICMP and ARP/NS rate
/// limiters, settings.
pub struct Pipeline<B: PacketBuf> {
    ports: Vec<PortInfo>,
    reasm: Reassembler<B>,
    icmp_limit: IcmpRateLimiter,
    icmp_id: u16,
    pmtu_ageing_ms: u64,
    learned: Option<Arc<LearnQueue>>,
    solicit_limit: RequestLimiter,
}

/// SA groups kept per burst; a burst with more SAs encrypts the oldest group
/// early. Small so that the groups' storage stays small.
const MAX_GROUPS: usize = 8;

/// One SA group of a burst.
struct Group<'s, B> {
    sa: &'s Arc<SaEntry>,
    options: crate::policy::ProtectOptions,
    pkts: ArrayVec<(B, [u8; 6]), BURST>,
}

impl<B: PacketBuf> Pipeline<B> {
    pub fn new(ports: Vec<PortInfo>, reasm: ReasmConfig, pmtu_ageing_ms: u64) -> Self {
        Pipeline {
            ports,
            reasm: Reassembler::new(reasm),
            icmp_limit: IcmpRateLimiter::new(1024, 100, 20),
            icmp_id: 1,
            pmtu_ageing_ms,
            learned: None,
            solicit_limit: RequestLimiter::new(256, 1000),
        }
    }

    /// Send neighbours learned from ARP/NDP to this queue (the main thread
    /// republishes the route table with them).
    pub fn with_learning(mut self, q: Arc<LearnQueue>) -> Self {
        self.learned = Some(q);
        self
    }

    /// ARP and neighbour discovery: answer for our addresses, learn senders.
    /// Returns the packet when it is something else.
    fn neighbor_traffic<S: TxSink<B>>(
        &mut self,
        in_port: usize,
        mut pkt: B,
        tx: &mut S,
        stats: &WorkerStats,
    ) -> Option<B> {
        let d = pkt.data();
        if d.len() < ETH_HLEN {
            return Some(pkt);
        }
        let et = u16::from_be_bytes([d[12], d[13]]);
        if et == neigh::ETH_P_ARP {
            let Some(a) = neigh::parse_arp(&d[ETH_HLEN..]) else {
                stats.drop_one(DropReason::NotIp);
                return None;
            };
            if !a.sender_ip.is_unspecified() {
                self.learn(IpAddr::V4(a.sender_ip), a.sender_mac, stats);
            }
            let port = &self.ports[in_port];
            if a.op == 1 && port.addr_v4 == Some(a.target_ip) {
                let (mac, me) = (port.mac, a.target_ip);
                if neigh::build_arp(&mut pkt, 2, a.sender_mac, mac, me, a.sender_mac, a.sender_ip).is_some() {
                    tx.send(in_port, pkt);
                    stats.event(Event::NeighborReplies, 1);
                }
            } else {
                stats.event(Event::NeighborMessages, 1);
            }
            return None;
        }
        // IPv6 neighbour discovery: ICMPv6 135/136 with hop limit 255.
        if et == ETH_P_IPV6 && d.len() > ETH_HLEN + 41 && d[ETH_HLEN + 6] == proto::ICMPV6 && d[ETH_HLEN + 7] == 255 {
            if let Some(nd) = neigh::parse_nd(&d[ETH_HLEN..]) {
                let src_mac: [u8; 6] = d[6..12].try_into().expect("6");
                if let Some(ll) = nd.lladdr {
                    let who = if nd.kind == 135 { nd.src } else { nd.target };
                    if !who.is_unspecified() {
                        self.learn(IpAddr::V6(who), ll, stats);
                    }
                }
                let port = &self.ports[in_port];
                if nd.kind == 135 && port.addr_v6 == Some(nd.target) {
                    let (mac, me) = (port.mac, nd.target);
                    // Solicited + override; to the asker (all-nodes if it had no address yet).
                    let dst = if nd.src.is_unspecified() { "ff02::1".parse().expect("literal") } else { nd.src };
                    if neigh::build_nd(&mut pkt, 136, src_mac, mac, me, dst, me, 0x60).is_some() {
                        tx.send(in_port, pkt);
                        stats.event(Event::NeighborReplies, 1);
                    }
                } else {
                    stats.event(Event::NeighborMessages, 1);
                }
                return None;
            }
        }
        Some(pkt)
    }

    fn learn(&self, ip: IpAddr, mac: [u8; 6], stats: &WorkerStats) {
        if let Some(q) = &self.learned {
            // Best effort: a full queue drops the update; the next message retries.
            if q.push((ip, mac)).is_ok() {
                stats.event(Event::NeighborsLearned, 1);
            }
        }
    }

    /// No MAC for the next hop: ask for it (rate-limited); the packet is dropped, counted.
    fn solicit<A: BufAlloc<Buf = B>, S: TxSink<B>>(&mut self, e: NextHopError, cx: &mut BurstCtx<'_, A, S>) {
        cx.stats.drop_one(nh_drop(e));
        let NextHopError::NoNeighbor { port, ip } = e else { return };
        if !self.solicit_limit.allow(ip, cx.now_ms) {
            return;
        }
        let p = &self.ports[port];
        let Some(mut out) = cx.alloc.alloc(128) else { return };
        let built = match ip {
            IpAddr::V4(t) => p.addr_v4.and_then(|me| neigh::build_arp(&mut out, 1, [0xff; 6], p.mac, me, [0; 6], t)),
            IpAddr::V6(t) => p.addr_v6.and_then(|me| {
                let (sn, mac) = neigh::solicited_node(t);
                neigh::build_nd(&mut out, 135, mac, p.mac, me, sn, t, 0)
            }),
        };
        if built.is_some() {
            cx.tx.send(port, out);
            cx.stats.event(Event::NeighborRequests, 1);
        }
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
            PortRole::Cleartext => self.outbound(in_port, burst, snap, cx),
            PortRole::Protected => self.inbound(in_port, burst, snap, cx),
        }
    }

    fn outbound<'s, A, S, I>(&mut self, in_port: usize, burst: I, snap: &'s Snapshot, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
        I: IntoIterator<Item = B>,
    {
        let mut groups: ArrayVec<Group<'s, B>, MAX_GROUPS> = ArrayVec::new();
        for pkt in burst {
            let Some(mut pkt) = self.neighbor_traffic(in_port, pkt, cx.tx, cx.stats) else { continue };
            let Some(src_mac) = strip_l2(&mut pkt, cx.stats) else { continue };
            let Some(k) = flow_key(pkt.data()) else {
                cx.stats.drop_one(DropReason::BadIp);
                continue;
            };
            match snap.outbound(&k) {
                Verdict::Protect { sa, options, .. } => {
                    if !decrement_ttl(&mut pkt, cx.stats) {
                        continue;
                    }
                    let gi = match groups.iter().position(|g| Arc::ptr_eq(g.sa, sa)) {
                        Some(i) => i,
                        None => {
                            if groups.is_full() {
                                // More SAs in one burst than groups: encrypt one now.
                                let g = groups.swap_remove(0);
                                self.encrypt_group(in_port, g, cx);
                            }
                            groups.push(Group { sa, options, pkts: ArrayVec::new() });
                            groups.len() - 1
                        }
                    };
                    groups[gi].pkts.push((pkt, src_mac));
                }
                Verdict::Pass { .. } => {
                    if decrement_ttl(&mut pkt, cx.stats) {
                        self.forward_clear(pkt, addr_of(k.v6, k.dst), cx);
                        cx.stats.event(Event::Passed, 1);
                    }
                }
                Verdict::Drop { .. } => cx.stats.drop_one(DropReason::PolicyDrop),
                Verdict::Trap { .. } => cx.stats.drop_one(DropReason::PolicyTrap),
            }
        }
        // drain, not into_iter: moving the whole ArrayVec by value copies all
        // of its (mostly unused) storage on every burst.
        for g in groups.drain(..) {
            self.encrypt_group(in_port, g, cx);
        }
    }

    fn encrypt_group<A, S>(&mut self, in_port: usize, g: Group<'_, B>, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let sa = &g.sa.sa;
        // The egress port is decided by the OUTER destination: its MTU counts.
        let mut to_encrypt: ArrayVec<B, BURST> = ArrayVec::new();
        let mut hops: ArrayVec<(crate::route::NextHop, u16), BURST> = ArrayVec::new();
        // In tunnel mode every packet of the group has the same outer
        // destination: route it and find its limit once per group.
        let group_hop = match sa.mode() {
            Mode::Tunnel { remote, .. } => Some(self.hop_and_limit(sa, remote, cx)),
            Mode::Transport => None,
        };
        for (mut pkt, src_mac) in g.pkts {
            let hop = match group_hop {
                Some(h) => h,
                None => match flow_key(pkt.data()) {
                    Some(k) => self.hop_and_limit(sa, addr_of(k.v6, k.dst), cx),
                    None => {
                        cx.stats.drop_one(DropReason::BadIp);
                        continue;
                    }
                },
            };
            let (nh, limit) = match hop {
                Ok(h) => h,
                Err(e) => {
                    self.solicit(e, cx);
                    continue;
                }
            };
            if g.options.mss_clamp {
                let inner_mtu = mtu::tunnel_mtu(sa, limit, pkt.data());
                let v6 = ip::version(pkt.data()) == Some(6);
                if mtu::clamp_mss(pkt.data_mut(), mtu::mss_for(inner_mtu.into(), v6)).is_some() {
                    cx.stats.event(Event::MssClamped, 1);
                }
            }
            match mtu::decide(sa, limit, pkt.data()) {
                TooBig::Fits => {}
                TooBig::FragmentOuter if g.options.fragment_before_encryption && ip::version(pkt.data()) == Some(4) => {
                    // RFC 4459 §5.1: fragment the inner packet so that every
                    // encrypted piece fits; the peer reassembles nothing.
                    let inner_mtu = usize::from(mtu::tunnel_mtu(sa, limit, pkt.data()));
                    let mut n = 0u64;
                    let r = mtu::fragment_ipv4(pkt.data(), inner_mtu, cx.alloc, |f| {
                        n += 1;
                        self.encrypt_one(f, sa, nh, cx.tx, cx.stats);
                    });
                    if r.is_err() {
                        cx.stats.drop_one(DropReason::NoBuffer);
                    }
                    cx.stats.event(Event::InnerFragmentsMade, n);
                    continue;
                }
                TooBig::FragmentOuter => {}
                TooBig::Refuse { mtu } => {
                    self.refuse(in_port, &pkt, src_mac, mtu, cx);
                    continue;
                }
            }
            to_encrypt.push(pkt);
            hops.push((nh, limit));
        }
        if to_encrypt.is_empty() {
            return;
        }
        let mut results = [Ok(()); BURST];
        let n = to_encrypt.len();
        sa.encap_burst(&mut to_encrypt, &mut results[..n]);
        let mut encrypted = 0;
        for ((pkt, (nh, limit)), r) in to_encrypt.drain(..).zip(hops.drain(..)).zip(results) {
            match r {
                Ok(()) => {
                    encrypted += 1;
                    self.send_encrypted(pkt, nh, limit, cx)
                }
                Err(e) => cx.stats.drop_one(DropReason::from(e)),
            }
        }
        cx.stats.event(Event::Encrypted, encrypted);
    }

    /// Egress port, next-hop MAC and the limit an outer packet to `outer_dst`
    /// must fit: the port the OUTER route picks decides the MTU.
    fn hop_and_limit<A, S>(
        &self,
        sa: &crate::esp::Sa,
        outer_dst: IpAddr,
        cx: &BurstCtx<'_, A, S>,
    ) -> Result<(crate::route::NextHop, u16), NextHopError> {
        let nh = cx.routes.next_hop(outer_dst)?;
        Ok((nh, mtu::egress_limit(sa, self.ports[nh.port].mtu, cx.now_ms)))
    }

    /// Encrypt a single packet (inner fragments) and send it.
    fn encrypt_one<S: TxSink<B>>(
        &mut self,
        mut pkt: B,
        sa: &crate::esp::Sa,
        nh: crate::route::NextHop,
        tx: &mut S,
        stats: &WorkerStats,
    ) {
        match sa.encap(&mut pkt) {
            Ok(_) => {
                stats.event(Event::Encrypted, 1);
                if push_l2(&mut pkt, nh.mac, self.ports[nh.port].mac) {
                    tx.send(nh.port, pkt);
                } else {
                    stats.drop_one(DropReason::EspNoRoom);
                }
            }
            Err(e) => stats.drop_one(DropReason::from(e)),
        }
    }

    /// An encrypted packet: fragment it after encryption when it exceeds the
    /// egress limit, add L2, send.
    fn send_encrypted<A, S>(&mut self, mut pkt: B, nh: crate::route::NextHop, limit: u16, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let limit = usize::from(limit);
        let (src_mac, dst_mac) = (self.ports[nh.port].mac, nh.mac);
        if pkt.len() <= limit {
            if push_l2(&mut pkt, dst_mac, src_mac) {
                cx.tx.send(nh.port, pkt);
            } else {
                cx.stats.drop_one(DropReason::EspNoRoom);
            }
            return;
        }
        let d = pkt.data();
        let mut n = 0u64;
        let mut room_failed = false;
        let mut emit = |mut f: B| {
            n += 1;
            if push_l2(&mut f, dst_mac, src_mac) {
                cx.tx.send(nh.port, f);
            } else {
                room_failed = true;
            }
        };
        let r = match ip::version(d) {
            Some(4) => mtu::fragment_ipv4(d, limit, cx.alloc, &mut emit),
            _ => {
                // The ESP sequence number makes a unique fragment identification.
                let id = ip::parse_ipv6(d)
                    .and_then(|i| d.get(i.l4_offset + 4..i.l4_offset + 8))
                    .map_or(0, |s| u32::from_be_bytes(s.try_into().expect("4")));
                mtu::fragment_ipv6(d, limit, id, cx.alloc, &mut emit)
            }
        };
        if r.is_err() || room_failed {
            cx.stats.drop_one(DropReason::NoBuffer);
        }
        cx.stats.event(Event::FragmentsMade, n);
    }

    /// Drop a DF packet that does not fit and tell its sender the tunnel MTU.
    fn refuse<A, S>(&mut self, in_port: usize, pkt: &B, src_mac: [u8; 6], mtu: u16, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        cx.stats.drop_one(DropReason::TooBigDf);
        let d = pkt.data();
        if !mtu::may_answer(d) {
            return;
        }
        let Some(k) = flow_key(d) else { return };
        if !self.icmp_limit.allow(k.src, cx.now_ms) {
            cx.stats.drop_one(DropReason::IcmpRateLimited);
            return;
        }
        let port = &self.ports[in_port];
        let Some(mut out) = cx.alloc.alloc(mtu::icmp::ICMP6_MAX) else {
            cx.stats.drop_one(DropReason::NoBuffer);
            return;
        };
        let built = if k.v6 {
            port.addr_v6.and_then(|src| mtu::build_packet_too_big(d, u32::from(mtu), src, &mut out))
        } else {
            self.icmp_id = self.icmp_id.wrapping_add(1);
            port.addr_v4.and_then(|src| mtu::build_frag_needed(d, mtu, src, self.icmp_id, &mut out))
        };
        // Back to the sender on the link it came from.
        if built.is_some() && push_l2(&mut out, src_mac, port.mac) {
            cx.tx.send(in_port, out);
            cx.stats.event(Event::IcmpTooBigSent, 1);
        }
    }

    /// Send a cleartext packet to its route.
    fn forward_clear<A: BufAlloc<Buf = B>, S: TxSink<B>>(
        &mut self,
        mut pkt: B,
        dst: IpAddr,
        cx: &mut BurstCtx<'_, A, S>,
    ) {
        match cx.routes.next_hop(dst) {
            Ok(nh) => {
                if push_l2(&mut pkt, nh.mac, self.ports[nh.port].mac) {
                    cx.tx.send(nh.port, pkt);
                } else {
                    cx.stats.drop_one(DropReason::NoBuffer);
                }
            }
            Err(e) => self.solicit(e, cx),
        }
    }

    fn inbound<'s, A, S, I>(&mut self, in_port: usize, burst: I, snap: &'s Snapshot, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
        I: IntoIterator<Item = B>,
    {
        type InGroup<'s, B> = (&'s crate::policy::InboundSa, ArrayVec<B, BURST>);
        let mut groups: ArrayVec<InGroup<'s, B>, MAX_GROUPS> = ArrayVec::new();
        for pkt in burst {
            let Some(mut pkt) = self.neighbor_traffic(in_port, pkt, cx.tx, cx.stats) else { continue };
            if strip_l2(&mut pkt, cx.stats).is_none() {
                continue;
            }
            let d = pkt.data();
            if Reassembler::<B>::is_fragment(d) {
                let mut freed = mtu::Freed::default();
                let out = self.reasm.push(pkt, cx.now_ms, cx.alloc, &mut freed);
                cx.stats.drop_n(DropReason::ReasmEvicted, freed.evicted as u64);
                cx.stats.drop_n(DropReason::ReasmSourceLimit, freed.source_limit as u64);
                cx.stats.drop_n(DropReason::ReasmTimeout, freed.timeout as u64);
                match out {
                    ReasmOutcome::Complete(b) => {
                        cx.stats.event(Event::Reassembled, 1);
                        pkt = b;
                    }
                    ReasmOutcome::Held => continue,
                    ReasmOutcome::Dropped { reason, fragments } => {
                        cx.stats.drop_n(DropReason::from(reason), fragments as u64);
                        continue;
                    }
                }
            }
            let d = pkt.data();
            let Some(k) = flow_key(d) else {
                cx.stats.drop_one(DropReason::BadIp);
                continue;
            };
            if k.proto == proto::ESP {
                let l4 = l4_offset(d).unwrap_or(d.len());
                let Some(spi) = d.get(l4..l4 + 4).map(|s| u32::from_be_bytes(s.try_into().expect("4"))) else {
                    cx.stats.drop_one(DropReason::EspTruncated);
                    continue;
                };
                let Some(isa) = snap.inbound_sa(spi, addr_of(k.v6, k.dst)) else {
                    cx.stats.drop_one(DropReason::NoSa);
                    continue;
                };
                let gi = match groups.iter().position(|(g, _)| Arc::ptr_eq(&g.entry, &isa.entry)) {
                    Some(i) => i,
                    None => {
                        if groups.is_full() {
                            let (isa, mut pkts) = groups.swap_remove(0);
                            self.decrypt_group(isa, &mut pkts, cx);
                        }
                        groups.push((isa, ArrayVec::new()));
                        groups.len() - 1
                    }
                };
                groups[gi].1.push(pkt);
                continue;
            }
            if let Some(report) = mtu::parse_too_big(d) {
                // About one of our ESP packets? Then it tunes that SA's path MTU.
                let res = snap.outbound_sa(report.spi).and_then(|sa| {
                    let nh = cx.routes.next_hop(report.quoted_dst).ok()?;
                    Some(mtu::apply_too_big(&sa.sa, &report, self.ports[nh.port].mtu, cx.now_ms, self.pmtu_ageing_ms))
                });
                match res {
                    Some(PmtuUpdate::Lowered(_)) => cx.stats.event(Event::PmtuLowered, 1),
                    _ => cx.stats.drop_one(DropReason::PmtuReportIgnored),
                }
                continue;
            }
            match snap.defaults.inbound_clear {
                Action::Pass => {
                    if decrement_ttl(&mut pkt, cx.stats) {
                        self.forward_clear(pkt, addr_of(k.v6, k.dst), cx);
                        cx.stats.event(Event::Passed, 1);
                    }
                }
                _ => cx.stats.drop_one(DropReason::ClearOnProtected),
            }
        }
        for (isa, mut pkts) in groups.drain(..) {
            self.decrypt_group(isa, &mut pkts, cx);
        }
    }

    /// Decrypt one SA's packets of a burst and send them on.
    fn decrypt_group<A, S>(
        &mut self,
        isa: &crate::policy::InboundSa,
        pkts: &mut ArrayVec<B, BURST>,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        {
            let mut results: [Result<crate::esp::Decapped, crate::esp::EspError>; BURST] =
                [Err(crate::esp::EspError::Truncated); BURST];
            let n = pkts.len();
            isa.entry.sa.decap_burst(pkts, &mut results[..n]);
            for (mut pkt, r) in pkts.drain(..).zip(results) {
                if let Err(e) = r {
                    cx.stats.drop_one(DropReason::from(e));
                    continue;
                }
                let Some(k) = flow_key(pkt.data()) else {
                    cx.stats.drop_one(DropReason::EspBadInner);
                    continue;
                };
                if !isa.allows(&k) {
                    cx.stats.drop_one(DropReason::InboundPolicy);
                    continue;
                }
                cx.stats.event(Event::Decrypted, 1);
                if decrement_ttl(&mut pkt, cx.stats) {
                    self.forward_clear(pkt, addr_of(k.v6, k.dst), cx);
                }
            }
        }
    }
}

fn nh_drop(e: NextHopError) -> DropReason {
    match e {
        NextHopError::NoRoute => DropReason::NoRoute,
        NextHopError::NoNeighbor { .. } => DropReason::NoNeighbor,
    }
}

fn addr_of(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(a.into())
    } else {
        IpAddr::V4((a as u32).into())
    }
}

/// Remove the Ethernet header; returns the source MAC. Counts non-IP drops.
#[inline]
fn strip_l2<B: PacketBuf>(pkt: &mut B, stats: &WorkerStats) -> Option<[u8; 6]> {
    let d = pkt.data();
    if d.len() < ETH_HLEN {
        stats.drop_one(DropReason::BadIp);
        return None;
    }
    let et = u16::from_be_bytes([d[12], d[13]]);
    if et != ETH_P_IPV4 && et != ETH_P_IPV6 {
        stats.drop_one(DropReason::NotIp);
        return None;
    }
    let src: [u8; 6] = d[6..12].try_into().expect("6");
    let _ = pkt.adj(ETH_HLEN);
    // Link-layer padding beyond the IP length is cut here once.
    let d = pkt.data();
    let ip_len = match ip::version(d) {
        Some(4) if et == ETH_P_IPV4 => ip::parse_ipv4(d).map(|i| i.total_len),
        Some(6) if et == ETH_P_IPV6 => ip::parse_ipv6(d).map(|i| i.total_len),
        _ => None,
    };
    match ip_len {
        Some(l) => {
            let extra = pkt.len() - l;
            let _ = pkt.trim(extra);
            Some(src)
        }
        None => {
            stats.drop_one(DropReason::BadIp);
            None
        }
    }
}

/// Add an Ethernet header.
#[inline]
fn push_l2<B: PacketBuf>(pkt: &mut B, dst: [u8; 6], src: [u8; 6]) -> bool {
    let et = if ip::version(pkt.data()) == Some(6) { ETH_P_IPV6 } else { ETH_P_IPV4 };
    if pkt.prepend(ETH_HLEN).is_err() {
        return false;
    }
    let d = pkt.data_mut();
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&et.to_be_bytes());
    true
}

/// Routers decrement TTL / hop limit; a packet that runs out is dropped.
#[inline]
fn decrement_ttl<B: PacketBuf>(pkt: &mut B, stats: &WorkerStats) -> bool {
    let d = pkt.data_mut();
    match ip::version(d) {
        Some(4) => {
            if d[8] <= 1 {
                stats.drop_one(DropReason::TtlExpired);
                return false;
            }
            let old = u16::from_be_bytes([d[8], d[9]]);
            d[8] -= 1;
            let new = u16::from_be_bytes([d[8], d[9]]);
            let c = ip::checksum_adjust(u16::from_be_bytes([d[10], d[11]]), old, new);
            d[10..12].copy_from_slice(&c.to_be_bytes());
            true
        }
        _ => {
            if d[7] <= 1 {
                stats.drop_one(DropReason::TtlExpired);
                return false;
            }
            d[7] -= 1;
            true
        }
    }
}

fn l4_offset(d: &[u8]) -> Option<usize> {
    match ip::version(d)? {
        4 => ip::parse_ipv4(d).map(|i| i.header_len),
        _ => ip::parse_ipv6(d).map(|i| i.l4_offset),
    }
}

/// The selectors of an IP packet (ports only for the first fragment).
#[inline]
pub fn flow_key(d: &[u8]) -> Option<FlowKey> {
    let (v6, src, dst, p, l4, first) = match ip::version(d)? {
        4 => {
            let i = ip::parse_ipv4(d)?;
            let s = u128::from(u32::from_be_bytes(d[12..16].try_into().ok()?));
            let t = u128::from(u32::from_be_bytes(d[16..20].try_into().ok()?));
            (false, s, t, i.protocol, i.header_len, i.flags_frag & 0x1fff == 0)
        }
        6 => {
            let i = ip::parse_ipv6(d)?;
            let s = u128::from_be_bytes(d[8..24].try_into().ok()?);
            let t = u128::from_be_bytes(d[24..40].try_into().ok()?);
            (true, s, t, i.l4_proto, i.l4_offset, !i.fragment)
        }
        _ => return None,
    };
    let (sport, dport) = match p {
        proto::TCP | proto::UDP | 132 if first => match d.get(l4..l4 + 4) {
            Some(x) => (u16::from_be_bytes([x[0], x[1]]), u16::from_be_bytes([x[2], x[3]])),
            None => (0, 0),
        },
        _ => (0, 0),
    };
    Some(FlowKey { v6, src, dst, proto: p, sport, dport })
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
