//! Outbound: cleartext packets against the eroutes. Protected packets are
//! grouped by SA; each group gets its egress (the port the *outer* route
//! picks, whose MTU counts) once in tunnel mode, an MTU decision per packet
//! from its record (refuse DF with the exact tunnel MTU, or fragment after
//! encryption, or — when the eroute asks — fragment the inner packet
//! before), MSS clamping, one sequence reservation and one crypto call.

use std::sync::Arc;

use arrayvec::ArrayVec;

use super::egress::PassPermit;
use super::{addr_of, decrement_ttl, BurstCtx, Origin, Pipeline, Pkt, TxSink, BURST, MAX_GROUPS};
use crate::esp::{Mode, Sa};
use crate::mtu::{self, BufAlloc, TooBig};
use crate::packet::{HwChecksum, Meta, PacketBuf};
use crate::policy::{ProtectOptions, SaEntry, Snapshot, Verdict};
use crate::route::{NextHop, NextHopError};
use crate::stats::{DropReason, Event};

/// One SA's packets of a burst.
struct Group<'s, B> {
    sa: &'s Arc<SaEntry>,
    options: ProtectOptions,
    pkts: ArrayVec<Pkt<B>, BURST>,
}

impl<B: PacketBuf> Pipeline<B> {
    /// Classify cleartext packets by the outbound policy and act on them
    /// (`pkts` is left empty). Bursts and groups are passed by reference and
    /// drained: moving an `ArrayVec` by value copies all of its storage.
    pub(super) fn outbound<'s, A, S>(
        &mut self,
        pkts: &mut ArrayVec<Pkt<B>, BURST>,
        snap: &'s Snapshot,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let mut groups: ArrayVec<Group<'s, B>, MAX_GROUPS> = ArrayVec::new();
        for pkt in pkts.drain(..) {
            let k = pkt.meta.key;
            if pkt.origin != Origin::Local && self.is_own(k.v6, k.dst) {
                // No host path yet: traffic for the gateway is never forwarded.
                cx.stats.drop_one(DropReason::ForGateway);
                continue;
            }
            let verdict = snap.outbound(&k);
            match verdict {
                Verdict::Protect { sa, options, .. } => {
                    if pkt.origin != Origin::Local && pkt.meta.ttl <= 1 {
                        cx.stats.drop_one(DropReason::TtlExpired);
                        continue;
                    }
                    let gi = match groups.iter().position(|g| Arc::ptr_eq(g.sa, sa)) {
                        Some(i) => i,
                        None => {
                            if groups.is_full() {
                                // More SAs in one burst than groups: encrypt one now.
                                let mut g = groups.swap_remove(0);
                                self.encrypt_group(&mut g, cx);
                            }
                            groups.push(Group { sa, options, pkts: ArrayVec::new() });
                            groups.len() - 1
                        }
                    };
                    groups[gi].pkts.push(pkt);
                }
                Verdict::Pass { .. } => {
                    cx.stats.event(Event::Passed, 1);
                    self.forward_clear(pkt, PassPermit::of(&verdict), cx);
                }
                Verdict::Drop { .. } => cx.stats.drop_one(DropReason::PolicyDrop),
                Verdict::Trap { eroute } => {
                    cx.stats.drop_one(DropReason::PolicyTrap);
                    if let Some(q) = &self.acquires {
                        let _ = q.push((eroute.id, k)); // full: lossy by design
                    }
                }
            }
        }
        for g in groups.iter_mut() {
            self.encrypt_group(g, cx);
        }
    }

    fn encrypt_group<A, S>(&mut self, g: &mut Group<'_, B>, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let entry: &Arc<SaEntry> = g.sa; // the snapshot's reference, not a borrow of `g`
        let sa = &entry.sa;
        let mut bufs: ArrayVec<B, BURST> = ArrayVec::new();
        let mut metas: ArrayVec<Meta, BURST> = ArrayVec::new();
        let mut hops: ArrayVec<(NextHop, u16, bool), BURST> = ArrayVec::new();
        // In tunnel mode every packet of the group has the same outer
        // destination: route it and find its limit once per group.
        let group_hop = match sa.mode() {
            Mode::Tunnel { remote, .. } => {
                Some(self.hop_and_limit(sa, remote, cx).map(|(nh, l)| (nh, l, remote.is_ipv6())))
            }
            Mode::Transport => None,
        };
        for mut pkt in g.pkts.drain(..) {
            let m = pkt.meta;
            let hop = group_hop.unwrap_or_else(|| {
                self.hop_and_limit(sa, addr_of(m.key.v6, m.key.dst), cx).map(|(nh, l)| (nh, l, m.key.v6))
            });
            let (nh, limit, outer_v6) = match hop {
                Ok(h) => h,
                Err(e) => {
                    self.solicit(e, cx);
                    continue;
                }
            };
            match mtu::decide(sa, limit, &m) {
                TooBig::Fits => {}
                TooBig::FragmentOuter if g.options.fragment_before_encryption && !m.is_v6() => {
                    // RFC 4459 §5.1: fragment the inner packet so that every
                    // encrypted piece fits; the peer reassembles nothing.
                    self.encrypt_inner_fragments(pkt, sa, nh, limit, outer_v6, cx);
                    continue;
                }
                TooBig::FragmentOuter => {}
                TooBig::Refuse { mtu } => {
                    self.refuse(&pkt, mtu, nh.port, cx);
                    continue;
                }
            }
            if g.options.mss_clamp {
                let inner_mtu = mtu::tunnel_mtu(sa, limit, &m);
                if mtu::clamp_mss(pkt.buf.data_mut(), &m, mtu::mss_for(inner_mtu.into(), m.key.v6)).is_some() {
                    cx.stats.event(Event::MssClamped, 1);
                }
            }
            if pkt.origin != Origin::Local {
                decrement_ttl(&mut pkt.buf, &mut pkt.meta);
            }
            bufs.push(pkt.buf);
            metas.push(pkt.meta);
            hops.push((nh, limit, outer_v6));
        }
        if bufs.is_empty() {
            return;
        }
        let mut results = [Ok(()); BURST];
        let n = bufs.len();
        sa.encap_burst_meta(&mut bufs, &metas, &mut results[..n]);
        let mut encrypted = 0;
        for ((buf, (nh, limit, outer_v6)), r) in bufs.drain(..).zip(hops.drain(..)).zip(results) {
            match r {
                Ok(()) => {
                    encrypted += 1;
                    self.send_esp(buf, outer_v6, nh, limit, cx)
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
        sa: &Sa,
        outer_dst: std::net::IpAddr,
        cx: &BurstCtx<'_, A, S>,
    ) -> Result<(NextHop, u16), NextHopError> {
        let nh = cx.routes.next_hop(outer_dst)?;
        Ok((nh, mtu::egress_limit(sa, self.ports[nh.port].mtu, cx.now_ms)))
    }

    /// Fragment an IPv4 inner packet (DF clear) to the tunnel MTU and encrypt
    /// each piece on its own.
    fn encrypt_inner_fragments<A, S>(
        &mut self,
        mut pkt: Pkt<B>,
        sa: &Sa,
        nh: NextHop,
        limit: u16,
        outer_v6: bool,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        if pkt.origin != Origin::Local {
            decrement_ttl(&mut pkt.buf, &mut pkt.meta);
        }
        let inner_mtu = usize::from(mtu::tunnel_mtu(sa, limit, &pkt.meta));
        let mut pieces: ArrayVec<B, 64> = ArrayVec::new();
        let mut overflow = false;
        let r = mtu::fragment_ipv4(pkt.buf.data(), inner_mtu, cx.alloc, |f| {
            if pieces.try_push(f).is_err() {
                overflow = true;
            }
        });
        if r.is_err() || overflow {
            cx.stats.drop_one(DropReason::NoBuffer);
            return;
        }
        cx.stats.event(Event::InnerFragmentsMade, pieces.len() as u64);
        for mut f in pieces {
            // A fragment we just made: its record from its fresh header.
            let Ok(m) = Meta::parse(f.data(), HwChecksum::Good) else {
                cx.stats.drop_one(DropReason::BadIp);
                continue;
            };
            let mut r = [Ok(())];
            sa.encap_burst_meta(std::slice::from_mut(&mut f), &[m], &mut r);
            match r[0] {
                Ok(()) => {
                    cx.stats.event(Event::Encrypted, 1);
                    self.send_esp(f, outer_v6, nh, limit, cx);
                }
                Err(e) => cx.stats.drop_one(DropReason::from(e)),
            }
        }
    }
}
