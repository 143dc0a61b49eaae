//! The host path: traffic for the gateway itself goes to the Linux kernel
//! through a `host` port (DPDK's `net_tap`: a kernel interface such as
//! `espgw0`), and what the kernel sends comes back through the outbound path.
//!
//! Towards the kernel ([`Pipeline::send_to_kernel`]): every packet addressed to one
//! of the gateway's own addresses that espgw does not consume itself (ARP/ND,
//! ESP for its SAs and NAT-keepalives stay here) — IKE on UDP 500/4500, ping,
//! SSH, BGP, decrypted transport-mode payload — rate-limited per worker with
//! two token buckets (IKE apart, so that a ping flood cannot starve key
//! exchange) and counted by kind. Without a host port it is dropped and
//! counted (`for_gateway`), as before.
//!
//! From the kernel ([`Pipeline::kernel_burst`]): the kernel's link has one
//! neighbour, espgw, which answers every ARP request and neighbour
//! solicitation with [`HOST_PEER_MAC`] (a proxy for the whole world). IP
//! packets must come from one of the gateway's addresses (anything else
//! would be the kernel forwarding: dropped, `host_bad_source`); IKE (UDP
//! 500/4500 either port) bypasses the IPsec policy as Linux's per-socket
//! bypass does; everything else meets the eroutes like any cleartext, except
//! that where no eroute matches it leaves in clear (the gateway's own
//! traffic, as on Linux without a policy) rather than by the cleartext default.

use super::egress::{push_l2, PassPermit};
use super::{Burst, BurstCtx, Origin, Pipeline, TxSink};
use crate::esp::natt::NAT_T_PORT;
use crate::mtu::BufAlloc;
use crate::neigh;
use crate::packet::ip::proto;
use crate::packet::{Meta, PacketBuf};
use crate::policy::Snapshot;
use crate::stats::{DropReason, Event};
use crate::wire::arp::{ARP_REPLY, ARP_REQUEST};
use crate::wire::nd::{NA, NS};
use crate::wire::{EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};

/// The MAC espgw uses on the host link (the kernel's only neighbour):
/// locally administered, "ESPGW" in ASCII after the first byte.
pub const HOST_PEER_MAC: [u8; 6] = [0x02, 0x45, 0x53, 0x50, 0x47, 0x57];

/// IKE's port (RFC 7296 §2); NAT-T's is [`NAT_T_PORT`].
pub const IKE_PORT: u16 = 500;

/// Packets per second per worker to the kernel, per bucket, by default.
pub const DEFAULT_HOST_RATE: u32 = 10_000;

/// A token bucket (one worker's: no sharing, no atomics).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate_per_s: u32,
    burst: u32,
    /// Tokens in thousandths, and when they were last topped up.
    milli_tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// `rate_per_s` packets per second, bursts of a tenth of a second (at least 32).
    pub fn new(rate_per_s: u32) -> Self {
        let burst = (rate_per_s / 10).max(32);
        TokenBucket { rate_per_s, burst, milli_tokens: u64::from(burst) * 1000, last_ms: 0 }
    }

    /// Take one token at `now_ms`, if there is one.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let dt = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let cap = u64::from(self.burst) * 1000;
        self.milli_tokens = (self.milli_tokens + dt * u64::from(self.rate_per_s)).min(cap);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// What goes to the kernel, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostKind {
    /// IKE (UDP 500/4500, in clear or behind the non-ESP marker).
    Ike,
    /// ICMP / ICMPv6 for the gateway (ping, errors).
    Icmp,
    /// Decrypted from ESP (transport mode to the gateway, or a tunnel's
    /// inner packet for one of its addresses).
    Decrypted,
    /// Anything else (SSH, BGP, ...).
    Other,
}

/// Is this IKE (either port 500 or 4500)?
#[inline]
pub(super) fn is_ike(m: &Meta) -> bool {
    let k = &m.key;
    k.proto == proto::UDP && !m.is_fragment() && [IKE_PORT, NAT_T_PORT].iter().any(|&p| k.sport == p || k.dport == p)
}

/// Traffic that stays on the host link: to a multicast or broadcast
/// address, or from an unspecified or IPv6 link-local source.
fn is_link_local(v6: bool, src: u128, dst: u128) -> bool {
    if v6 {
        src == 0 || src >> 118 == 0x3fa || dst >> 120 == 0xff
    } else {
        src == 0 || (dst as u32) >> 28 == 0xe || dst as u32 == u32::MAX
    }
}

/// The host port's state in a worker: which port, and its buckets.
#[derive(Debug, Clone)]
pub(super) struct HostPath {
    pub port: usize,
    pub ike: TokenBucket,
    pub other: TokenBucket,
}

impl<B: PacketBuf> Pipeline<B> {
    /// Hand a packet for the gateway (IP header at 0, record `meta`) to the
    /// kernel, or drop it (no host port, or over the rate) — counted. IKE
    /// goes to the control thread instead when its daemon listens ([`super::ike`]).
    pub(super) fn send_to_kernel<A, S>(&mut self, buf: B, meta: &Meta, kind: HostKind, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let Some(mut buf) = self.hand_to_daemon(buf, meta, cx) else { return };
        let Some(h) = &mut self.host else {
            cx.stats.drop_one(DropReason::ForGateway);
            return;
        };
        let bucket = if kind == HostKind::Ike || is_ike(meta) { &mut h.ike } else { &mut h.other };
        if !bucket.take(cx.now_ms) {
            cx.stats.drop_one(DropReason::HostRateLimited);
            return;
        }
        let port = h.port;
        let et = if meta.is_v6() { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        let (kernel_mac, mtu) = (self.ports[port].mac, usize::from(self.ports[port].mtu));
        if buf.len() > mtu {
            // Larger than the kernel link (a reassembled datagram, a jumbo
            // port): fragments the kernel reassembles. The sender's packet
            // arrived; this internal hop's MTU is not its concern (no ICMP).
            let mut room_failed = false;
            let mut n = 0u64;
            let emit = |mut f: B| {
                n += 1;
                if push_l2(&mut f, et, kernel_mac, HOST_PEER_MAC) {
                    cx.tx.send(port, f);
                } else {
                    room_failed = true;
                }
            };
            let r = if meta.is_v6() {
                self.icmp_id = self.icmp_id.wrapping_add(1);
                crate::mtu::fragment_ipv6(buf.data(), mtu, u32::from(self.icmp_id) | 0x8000_0000, cx.alloc, emit)
            } else {
                crate::mtu::fragment_ipv4(buf.data(), mtu, cx.alloc, emit)
            };
            match r {
                Err(crate::mtu::FragError::NoBuffer) => cx.stats.drop_one(DropReason::NoBuffer),
                Err(_) => cx.stats.drop_one(DropReason::HostTooBig),
                Ok(_) if room_failed => cx.stats.drop_one(DropReason::NoBuffer),
                Ok(_) => {}
            }
            cx.stats.event(Event::ClearFragmentsMade, n);
            if r.is_err() || room_failed {
                return;
            }
        } else if push_l2(&mut buf, et, kernel_mac, HOST_PEER_MAC) {
            cx.tx.send(port, buf);
        } else {
            cx.stats.drop_one(DropReason::NoBuffer);
            return;
        }
        let kind = if is_ike(meta) { HostKind::Ike } else { kind };
        cx.stats.event(
            match kind {
                HostKind::Ike => Event::HostIke,
                HostKind::Icmp => Event::HostIcmp,
                HostKind::Decrypted => Event::HostDecrypted,
                HostKind::Other => Event::HostOther,
            },
            1,
        );
    }

    /// The kind of a packet for the gateway that arrived in clear.
    pub(super) fn clear_kind(meta: &Meta) -> HostKind {
        match meta.key.proto {
            proto::ICMP | proto::ICMPV6 => HostKind::Icmp,
            _ if is_ike(meta) => HostKind::Ike,
            _ => HostKind::Other,
        }
    }

    /// A burst from the kernel: neighbour questions answered as the proxy,
    /// IP packets through the outbound path as the gateway's own traffic.
    pub(super) fn kernel_burst<A, S, I>(
        &mut self,
        in_port: usize,
        burst: I,
        snap: &Snapshot,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
        I: IntoIterator<Item = B>,
    {
        let mut pkts: Burst<B> = Burst::new();
        for buf in burst {
            let Some(mut buf) = self.host_neighbor(in_port, buf, cx) else { continue };
            let slot = pkts.bufs.len();
            let meta = &mut pkts.metas[slot];
            let v6 = {
                let Ok(eth) = EthernetFrame::new_checked(buf.data()) else {
                    cx.stats.drop_one(DropReason::BadIp);
                    continue;
                };
                let v6 = match eth.ethertype() {
                    ETHERTYPE_IPV4 => false,
                    ETHERTYPE_IPV6 => true,
                    _ => {
                        cx.stats.drop_one(DropReason::NotIp);
                        continue;
                    }
                };
                if let Err(r) = Meta::parse_into(eth.payload(), crate::packet::HwChecksum::Unknown, meta) {
                    cx.stats.drop_one(r);
                    continue;
                }
                v6
            };
            if meta.is_v6() != v6 {
                cx.stats.drop_one(DropReason::BadIp);
                continue;
            }
            if buf.narrow(ETH_HLEN, usize::from(meta.total_len)).is_err() {
                cx.stats.drop_one(DropReason::BadIp);
                continue;
            }
            let k = meta.key;
            if is_link_local(k.v6, k.src, k.dst) {
                // MLD, IGMP, the kernel's link-local chatter: the host link's own.
                cx.stats.drop_one(DropReason::HostLinkLocal);
                continue;
            }
            if !self.is_own(k.v6, k.src) {
                // The kernel forwarding someone else's packet, or a spoof.
                cx.stats.drop_one(DropReason::HostBadSource);
                continue;
            }
            cx.stats.event(Event::FromHost, 1);
            if self.is_own(k.v6, k.dst) {
                // To itself: the kernel has a loopback for that (found by the fuzzer:
                // IKE's bypass once sent such a packet out of the cleartext port).
                cx.stats.drop_one(DropReason::ForGateway);
                continue;
            }
            if is_ike(meta) {
                // IKE bypasses the IPsec policy (Linux: the IKE daemon's socket policy).
                let mut m = *meta;
                self.forward_clear(buf, &mut m, Origin::Host, Some(PassPermit::bypass()), cx);
                continue;
            }
            pkts.origins[slot] = Origin::Host;
            pkts.bufs.push(buf);
            if pkts.is_full() {
                self.outbound(&mut pkts, snap, cx);
            }
        }
        self.outbound(&mut pkts, snap, cx);
    }

    /// ARP requests and neighbour solicitations from the kernel: answered
    /// with [`HOST_PEER_MAC`] whatever they ask for (espgw is the kernel's
    /// next hop to everything); other ARP/ND consumed. Anything else is
    /// given back.
    fn host_neighbor<A, S>(&mut self, in_port: usize, mut pkt: B, cx: &mut BurstCtx<'_, A, S>) -> Option<B>
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let d = pkt.data();
        let Ok(eth) = EthernetFrame::new_checked(d) else { return Some(pkt) };
        let kernel_mac = eth.src();
        match eth.ethertype() {
            ETHERTYPE_ARP => {
                let a = crate::wire::arp::parse_arp(eth.payload());
                match a {
                    Some(a) if a.op == ARP_REQUEST && a.target_ip != a.sender_ip => {
                        if neigh::build_arp(
                            &mut pkt,
                            ARP_REPLY,
                            kernel_mac,
                            HOST_PEER_MAC,
                            a.target_ip,
                            a.sender_mac,
                            a.sender_ip,
                        )
                        .is_some()
                        {
                            cx.tx.send(in_port, pkt);
                            cx.stats.event(Event::NeighborReplies, 1);
                        }
                    }
                    // Gratuitous ARP, replies: nothing to learn here.
                    Some(_) => cx.stats.event(Event::NeighborMessages, 1),
                    None => cx.stats.drop_one(DropReason::NotIp),
                }
                None
            }
            ETHERTYPE_IPV6 if d.len() > ETH_HLEN + 41 && d[ETH_HLEN + 6] == proto::ICMPV6 => {
                let icmp_type = d.get(ETH_HLEN + 40).copied().unwrap_or(0);
                if !(133..=137).contains(&icmp_type) && icmp_type != 143 {
                    return Some(pkt); // ping, errors: IP traffic
                }
                // RS, RA, NS, NA, redirect, MLDv2 reports: the link's business.
                match crate::wire::nd::parse_nd(&d[ETH_HLEN..]) {
                    Some(nd) if nd.kind == NS && !nd.src.is_unspecified() => {
                        let (src, target) = (nd.src, nd.target);
                        if neigh::build_nd(&mut pkt, NA, kernel_mac, HOST_PEER_MAC, target, src, target, 0x60).is_some()
                        {
                            cx.tx.send(in_port, pkt);
                            cx.stats.event(Event::NeighborReplies, 1);
                        }
                    }
                    _ => cx.stats.event(Event::NeighborMessages, 1),
                }
                None
            }
            _ => Some(pkt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_chatter_is_recognised() {
        let v4 = |s: &str| u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()));
        let v6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert!(is_link_local(false, v4("192.0.2.1"), v4("224.0.0.22")), "IGMP report");
        assert!(is_link_local(false, v4("0.0.0.0"), v4("255.255.255.255")));
        assert!(is_link_local(false, v4("192.0.2.1"), v4("255.255.255.255")));
        assert!(!is_link_local(false, v4("192.0.2.1"), v4("198.51.100.1")));
        assert!(is_link_local(true, v6("fe80::1"), v6("2001:db8::1")), "link-local source");
        assert!(is_link_local(true, v6("2001:db8::1"), v6("ff02::16")), "MLDv2 report");
        assert!(is_link_local(true, v6("::"), v6("ff02::1:ff00:1")), "DAD");
        assert!(!is_link_local(true, v6("2001:db8::1"), v6("2001:db8::2")));
        assert!(is_link_local(true, v6("febf::1"), v6("2001:db8::2")), "fe80::/10 reaches febf");
        assert!(!is_link_local(true, v6("fec0::1"), v6("2001:db8::2")), "fe80::/10 only");
    }

    #[test]
    fn token_bucket_refills_at_its_rate_and_caps_bursts() {
        let mut b = TokenBucket::new(1000);
        // A burst of 100 (a tenth of a second), then empty.
        assert_eq!((0..200).filter(|_| b.take(0)).count(), 100);
        assert!(!b.take(0));
        // 10 ms later: 10 more.
        assert_eq!((0..50).filter(|_| b.take(10)).count(), 10);
        // A long pause refills to the burst, not beyond.
        assert_eq!((0..500).filter(|_| b.take(60_000)).count(), 100);
        // Time going backwards (another clock) takes nothing extra.
        assert!(!b.take(1));
        assert_eq!(TokenBucket::new(10).burst, 32, "small rates still allow a burst");
    }
}
