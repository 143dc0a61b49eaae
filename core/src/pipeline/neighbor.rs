//! ARP and IPv6 neighbour discovery at the pipeline's edge: answer for the
//! gateway's addresses, learn neighbours, ask for next hops.
//!
//! Learning follows Linux's `arp_accept = 0`: a neighbour is learned from a
//! request (or solicitation) aimed at one of our addresses, and from a reply
//! (or advertisement) to a question we asked recently — never from a request
//! between other hosts or an unsolicited reply, which anyone on the link
//! could send to steer our traffic.

use std::net::IpAddr;

use super::{BurstCtx, Pipeline, TxSink};
use crate::mtu::BufAlloc;
use crate::neigh;
use crate::packet::ip::proto;
use crate::packet::PacketBuf;
use crate::route::NextHopError;
use crate::stats::{DropReason, Event, WorkerStats};
use crate::wire::arp::{ARP_REPLY, ARP_REQUEST};
use crate::wire::nd::{NA, NS};
use crate::wire::{EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV6, ETH_HLEN};

/// How long after asking an answer is accepted.
const ANSWER_WINDOW_MS: u64 = 3000;

/// Could this frame be ARP or neighbour discovery? A test of two header
/// bytes, so that data packets skip [`Pipeline::neighbor_traffic`] (an
/// out-of-line call with its own Ethernet parse) and are parsed once, at
/// ingress. ND is ICMPv6 with hop limit 255 (RFC 4861 §7.1) right after the
/// IPv6 header (a router's ND carries no extension headers).
#[inline(always)]
pub(super) fn may_be_neighbor(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some(et) if et == ETHERTYPE_ARP.to_be_bytes() => true,
        Some(et) if et == ETHERTYPE_IPV6.to_be_bytes() => {
            frame.get(ETH_HLEN + 6..ETH_HLEN + 8) == Some(&[proto::ICMPV6, 255])
        }
        _ => false,
    }
}

impl<B: PacketBuf> Pipeline<B> {
    /// ARP and neighbour discovery frames: answered or learned from, and
    /// consumed (`None`); anything else is given back. Only frames that
    /// [`may_be_neighbor`] come here.
    #[cold]
    #[inline(never)]
    pub(super) fn neighbor_traffic<S: TxSink<B>>(
        &mut self,
        in_port: usize,
        mut pkt: B,
        now_ms: u64,
        tx: &mut S,
        stats: &WorkerStats,
    ) -> Option<B> {
        let d = pkt.data();
        let Ok(eth) = EthernetFrame::new_checked(d) else { return Some(pkt) };
        let src_mac = eth.src();
        match eth.ethertype() {
            ETHERTYPE_ARP => {
                let Some(a) = neigh::parse_arp(eth.payload()) else {
                    stats.drop_one(DropReason::NotIp);
                    return None;
                };
                let port = &self.ports[in_port];
                let for_us = port.addr_v4 == Some(a.target_ip);
                let sender = IpAddr::V4(a.sender_ip);
                let learn = !a.sender_ip.is_unspecified()
                    && match a.op {
                        ARP_REQUEST => for_us,
                        ARP_REPLY => self.solicit_limit.asked(sender, now_ms, ANSWER_WINDOW_MS),
                        _ => false,
                    };
                if learn {
                    self.learn(sender, a.sender_mac, stats);
                }
                if a.op == ARP_REQUEST && for_us {
                    let (mac, me) = (port.mac, a.target_ip);
                    if neigh::build_arp(&mut pkt, ARP_REPLY, a.sender_mac, mac, me, a.sender_mac, a.sender_ip).is_some()
                    {
                        tx.send(in_port, pkt);
                        stats.event(Event::NeighborReplies, 1);
                    }
                } else {
                    stats.event(Event::NeighborMessages, 1);
                }
                None
            }
            // ICMPv6 135/136 with hop limit 255 (RFC 4861 §7.1).
            ETHERTYPE_IPV6 if d.len() > ETH_HLEN + 41 && d[ETH_HLEN + 6] == proto::ICMPV6 && d[ETH_HLEN + 7] == 255 => {
                let Some(nd) = neigh::parse_nd(&d[ETH_HLEN..]) else { return Some(pkt) };
                let port = &self.ports[in_port];
                let for_us = port.addr_v6 == Some(nd.target);
                if let Some(ll) = nd.lladdr {
                    let (who, learn) = match nd.kind {
                        NS => (nd.src, for_us),
                        _ => (nd.target, self.solicit_limit.asked(IpAddr::V6(nd.target), now_ms, ANSWER_WINDOW_MS)),
                    };
                    if learn && !who.is_unspecified() {
                        self.learn(IpAddr::V6(who), ll, stats);
                    }
                }
                if nd.kind == NS && for_us {
                    let (mac, me) = (port.mac, nd.target);
                    // Solicited + override; to the asker (all-nodes if it had no address yet).
                    let dst = if nd.src.is_unspecified() {
                        std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
                    } else {
                        nd.src
                    };
                    if neigh::build_nd(&mut pkt, NA, src_mac, mac, me, dst, me, 0x60).is_some() {
                        tx.send(in_port, pkt);
                        stats.event(Event::NeighborReplies, 1);
                    }
                } else {
                    stats.event(Event::NeighborMessages, 1);
                }
                None
            }
            _ => Some(pkt),
        }
    }

    fn learn(&self, ip: IpAddr, mac: [u8; 6], stats: &WorkerStats) {
        if let Some(q) = &self.learned {
            // Best effort: a full queue drops the update; the next message retries.
            if q.push((ip, mac)).is_ok() {
                stats.event(Event::NeighborsLearned, 1);
            }
        }
    }

    /// No route, or no MAC for the next hop: the packet is dropped, counted,
    /// and the next hop asked for (rate-limited).
    pub(super) fn solicit<A: BufAlloc<Buf = B>, S: TxSink<B>>(&mut self, e: NextHopError, cx: &mut BurstCtx<'_, A, S>) {
        cx.stats.drop_one(match e {
            NextHopError::NoRoute => DropReason::NoRoute,
            NextHopError::NoNeighbor { .. } => DropReason::NoNeighbor,
        });
        let NextHopError::NoNeighbor { port, ip } = e else { return };
        if !self.solicit_limit.allow(ip, cx.now_ms) {
            return;
        }
        let p = &self.ports[port];
        let Some(mut out) = cx.alloc.alloc(128) else { return };
        let built = match ip {
            IpAddr::V4(t) => {
                p.addr_v4.and_then(|me| neigh::build_arp(&mut out, ARP_REQUEST, [0xff; 6], p.mac, me, [0; 6], t))
            }
            IpAddr::V6(t) => p.addr_v6.and_then(|me| {
                let (sn, mac) = neigh::solicited_node(t);
                neigh::build_nd(&mut out, NS, mac, p.mac, me, sn, t, 0)
            }),
        };
        if built.is_some() {
            cx.tx.send(port, out);
            cx.stats.event(Event::NeighborRequests, 1);
        }
    }
}
