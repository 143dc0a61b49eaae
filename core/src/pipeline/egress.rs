//! Egress: the one stage every packet leaves by.
//!
//! - Cleartext ([`Pipeline::forward_clear`]): routed by its destination.
//!   **Nothing leaves a protected port in clear unless a pass eroute allowed
//!   exactly that packet**: the proof is a [`PassPermit`], which only the
//!   outbound policy lookup can make. A packet routed to a protected port
//!   without one (decrypted traffic, inbound clear traffic, an ICMP error we
//!   made) goes to the outbound policy at the end of the burst: protected
//!   (a hub), passed, or dropped.
//! - Every egress applies its port's MTU: fragment when DF is clear,
//!   otherwise drop and answer with ICMP need-frag / PTB quoting the packet
//!   as it was received (TTL not yet decremented, RFC 1812 §4.3.2.3).
//! - ESP we built ([`Pipeline::send_esp`]): fragmented after encryption when
//!   it exceeds the egress limit (the KLIPS lesson).
//! - L2 is written last; the TTL is decremented only for packets that go.

use std::net::IpAddr;

use super::{decrement_ttl, BurstCtx, Origin, Pipeline, Pkt, PortRole, TxSink};
use crate::mtu::{self, BufAlloc};
use crate::packet::{HwChecksum, Meta, PacketBuf};
use crate::policy::Verdict;
use crate::route::NextHop;
use crate::stats::{DropReason, Event};
use crate::wire::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};

/// Proof that the outbound policy allowed exactly this packet to leave in
/// clear (a pass eroute, or a pass default). Only [`PassPermit::of`] makes
/// one, from a lookup's verdict.
pub(super) struct PassPermit(());

impl PassPermit {
    pub(super) fn of(v: &Verdict<'_>) -> Option<PassPermit> {
        matches!(v, Verdict::Pass { .. }).then_some(PassPermit(()))
    }

    /// The gateway's own traffic from the kernel that no eroute protects or
    /// drops (and IKE, which bypasses the policy): see [`super::host`].
    pub(super) fn bypass() -> PassPermit {
        PassPermit(())
    }
}

impl<B: PacketBuf> Pipeline<B> {
    /// Forward a cleartext packet to its destination (see the module doc).
    /// The record is taken where it lies (`meta`), not moved.
    #[inline]
    pub(super) fn forward_clear<A, S>(
        &mut self,
        mut buf: B,
        meta: &mut Meta,
        origin: Origin,
        permit: Option<PassPermit>,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let m = &*meta;
        let hop = origin.is_hop();
        if hop && m.ttl <= 1 {
            cx.stats.drop_one(DropReason::TtlExpired);
            return;
        }
        let nh = match cx.routes.next_hop_bits(m.key.v6, m.key.dst) {
            Ok(nh) => nh,
            Err(e) => return self.solicit(e, cx),
        };
        let port = &self.ports[nh.port];
        if port.role == PortRole::Protected && permit.is_none() {
            self.defer(Pkt { buf, meta: *meta, origin }, cx.stats);
            return;
        }
        if m.total_len > port.mtu {
            return self.forward_too_big(buf, meta, origin, nh, cx);
        }
        let et = if m.key.v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        let (dst_mac, src_mac) = (nh.mac, port.mac);
        if hop {
            decrement_ttl(&mut buf, meta);
        }
        if push_l2(&mut buf, et, dst_mac, src_mac) {
            cx.tx.send(nh.port, buf);
        } else {
            cx.stats.drop_one(DropReason::NoBuffer);
        }
    }

    /// [`Self::forward_clear`] for a packet over its egress MTU: refused with
    /// ICMP when DF is set, else fragmented (RFC 791).
    #[cold]
    #[inline(never)]
    fn forward_too_big<A, S>(
        &mut self,
        mut buf: B,
        meta: &mut Meta,
        origin: Origin,
        nh: NextHop,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let m = &*meta;
        let hop = origin.is_hop();
        let port = &self.ports[nh.port];
        let mtu = port.mtu;
        if m.df {
            return self.refuse(&Pkt { buf, meta: *meta, origin }, mtu, nh.port, cx);
        }
        // RFC 791: a router fragments what does not fit and may be fragmented.
        if hop {
            decrement_ttl(&mut buf, meta);
        }
        let (dst_mac, src_mac) = (nh.mac, port.mac);
        let mut n = 0u64;
        let mut room_failed = false;
        let r = mtu::fragment_ipv4(buf.data(), usize::from(mtu), cx.alloc, |mut f| {
            n += 1;
            if push_l2(&mut f, ETHERTYPE_IPV4, dst_mac, src_mac) {
                cx.tx.send(nh.port, f);
            } else {
                room_failed = true;
            }
        });
        if r.is_err() || room_failed {
            cx.stats.drop_one(DropReason::NoBuffer);
        }
        cx.stats.event(Event::ClearFragmentsMade, n);
    }

    /// Send an ESP packet we built (the buffer starts at the outer header):
    /// fragmented after encryption when it exceeds `limit`. The common case
    /// (it fits) is inlined into the encryption loop; fragmenting is not.
    #[inline(always)]
    pub(super) fn send_esp<A, S>(
        &mut self,
        mut buf: B,
        outer_v6: bool,
        nh: NextHop,
        limit: u16,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        if buf.len() > usize::from(limit) {
            return self.send_esp_fragments(buf, outer_v6, nh, limit, cx);
        }
        let et = if outer_v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        if push_l2(&mut buf, et, nh.mac, self.ports[nh.port].mac) {
            cx.tx.send(nh.port, buf);
        } else {
            cx.stats.drop_one(DropReason::EspNoRoom);
        }
    }

    /// [`Self::send_esp`] for a packet over its limit: the KLIPS lesson,
    /// fragments of the encrypted packet.
    #[inline(never)]
    fn send_esp_fragments<A, S>(&mut self, buf: B, outer_v6: bool, nh: NextHop, limit: u16, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let limit = usize::from(limit);
        let (src_mac, dst_mac) = (self.ports[nh.port].mac, nh.mac);
        let et = if outer_v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        let d = buf.data();
        let mut n = 0u64;
        let mut room_failed = false;
        let mut emit = |mut f: B| {
            n += 1;
            if push_l2(&mut f, et, dst_mac, src_mac) {
                cx.tx.send(nh.port, f);
            } else {
                room_failed = true;
            }
        };
        let r = if outer_v6 {
            // The ESP sequence number makes a unique fragment identification.
            let id = crate::wire::Ipv6Packet::new_checked(d)
                .ok()
                .and_then(|p| crate::wire::EspHeader::new_checked(p.l4()).ok().map(|e| e.seq_lo()))
                .unwrap_or(0);
            mtu::fragment_ipv6(d, limit, id, cx.alloc, &mut emit)
        } else {
            mtu::fragment_ipv4(d, limit, cx.alloc, &mut emit)
        };
        if r.is_err() || room_failed {
            cx.stats.drop_one(DropReason::NoBuffer);
        }
        cx.stats.event(Event::FragmentsMade, n);
    }

    /// Drop a DF packet that does not fit `mtu` at port `at_port` and tell
    /// its sender: back on the link it came from, or — for a sender across a
    /// tunnel — as a packet of ours that the outbound policy routes (through
    /// the tunnel, when an eroute covers it). The ICMP comes from the
    /// address of the port where the packet entered, or else of the port
    /// that was too small.
    pub(super) fn refuse<A, S>(&mut self, pkt: &Pkt<B>, mtu: u16, at_port: usize, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        cx.stats.drop_one(DropReason::TooBigDf);
        let d = pkt.buf.data();
        if !mtu::may_answer(d) {
            return;
        }
        if !self.icmp_limit.allow(pkt.meta.key.src, cx.now_ms) {
            cx.stats.drop_one(DropReason::IcmpRateLimited);
            return;
        }
        let from_port = match pkt.origin {
            Origin::Link { port, .. } => port,
            Origin::Tunnel | Origin::Local | Origin::Host => at_port,
        };
        let src = {
            let p = &self.ports[from_port];
            if pkt.meta.key.v6 {
                p.addr_v6.map(IpAddr::V6)
            } else {
                p.addr_v4.map(IpAddr::V4)
            }
        };
        let Some(src) = src else { return };
        let Some(mut out) = cx.alloc.alloc(mtu::icmp::ICMP6_MAX) else {
            cx.stats.drop_one(DropReason::NoBuffer);
            return;
        };
        let built = match src {
            IpAddr::V6(s) => mtu::build_packet_too_big(d, u32::from(mtu), s, &mut out),
            IpAddr::V4(s) => {
                self.icmp_id = self.icmp_id.wrapping_add(1);
                mtu::build_frag_needed(d, mtu, s, self.icmp_id, &mut out)
            }
        };
        if built.is_none() {
            return;
        }
        cx.stats.event(Event::IcmpTooBigSent, 1);
        match pkt.origin {
            Origin::Link { port, mac } => {
                let et = if pkt.meta.key.v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
                if push_l2(&mut out, et, mac, self.ports[port].mac) {
                    cx.tx.send(port, out);
                }
            }
            // About the kernel's own packet: the error is for the kernel.
            Origin::Host => match Meta::parse(out.data(), HwChecksum::Good) {
                Ok(meta) => self.send_to_kernel(out, &meta, super::host::HostKind::Icmp, cx),
                Err(r) => cx.stats.drop_one(r),
            },
            Origin::Tunnel | Origin::Local => match Meta::parse(out.data(), HwChecksum::Good) {
                Ok(mut meta) => self.forward_clear(out, &mut meta, Origin::Local, None, cx),
                Err(r) => cx.stats.drop_one(r),
            },
        }
    }
}

/// Add the Ethernet header in front of the IP packet.
#[inline]
pub(super) fn push_l2<B: PacketBuf>(pkt: &mut B, ethertype: u16, dst: [u8; 6], src: [u8; 6]) -> bool {
    if pkt.prepend(ETH_HLEN).is_err() {
        return false;
    }
    // One bounds check for the 14 bytes (the prepend made them).
    let Some(h) = pkt.data_mut().first_chunk_mut::<ETH_HLEN>() else { return false };
    h[..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    h[12..].copy_from_slice(&ethertype.to_be_bytes());
    true
}
