//! Outbound: cleartext packets against the eroutes. Protected packets are
//! grouped by SA; each group gets its egress (the port the *outer* route
//! picks, whose MTU counts) once in tunnel mode, an MTU decision per packet
//! from its record (refuse DF with the exact tunnel MTU, or fragment after
//! encryption, or — when the eroute asks — fragment the inner packet
//! before), MSS clamping, one sequence reservation and one crypto call.

use std::sync::Arc;

use arrayvec::ArrayVec;

use super::egress::PassPermit;
use super::{addr_of, decrement_ttl, Burst, BurstCtx, Origin, Pipeline, Pkt, TxSink, BURST, MAX_GROUPS};
use crate::esp::{EspError, Mode, Sa};
use crate::mtu::{self, BufAlloc, TooBig};
use crate::packet::{HwChecksum, Meta, PacketBuf};
use crate::policy::{ProtectOptions, SaEntry, Snapshot, Verdict};
use crate::route::{NextHop, NextHopError};
use crate::stats::{DropReason, Event};

/// One SA's packets of a burst, as parallel arrays: the records are written
/// here once and read in place by the MTU decision and ESP (moving 64-byte
/// records again between stages cost store-forwarding stalls).
struct Group<'s, B> {
    sa: &'s Arc<SaEntry>,
    options: ProtectOptions,
    bufs: ArrayVec<B, BURST>,
    metas: ArrayVec<Meta, BURST>,
    origins: ArrayVec<Origin, BURST>,
}

/// What the MTU decision made of one packet of a group.
#[derive(Clone, Copy)]
enum Fate {
    /// Encrypt, then out by this hop under this limit.
    Encrypt(NextHop, u16, bool),
    /// Fragment the inner packet first (RFC 4459 §5.1), then encrypt.
    InnerFragments(NextHop, u16, bool),
    /// Too big with DF: ICMP back, dropped.
    Refuse { mtu: u16, port: usize },
    /// No next hop (yet): asked for, dropped.
    NoHop(NextHopError),
}

impl<B: PacketBuf> Pipeline<B> {
    /// Classify cleartext packets by the outbound policy and act on them
    /// (`pkts` is left empty). Bursts and groups are passed by reference and
    /// drained: moving an `ArrayVec` by value copies all of its storage.
    pub(super) fn outbound<'s, A, S>(&mut self, pkts: &mut Burst<B>, snap: &'s Snapshot, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let mut groups: ArrayVec<Group<'s, B>, MAX_GROUPS> = ArrayVec::new();
        // Counted for the burst, added once (each add is a load and a store
        // to the worker's counters).
        let mut passed = 0;
        let Burst { bufs, metas, origins } = pkts;
        for (i, buf) in bufs.drain(..).enumerate() {
            let (meta, origin) = (&mut metas[i], origins[i]);
            if self.is_own(meta.key.v6, meta.key.dst) {
                // For the gateway: the kernel's (never forwarded); our own
                // packets to ourselves have nowhere to go.
                if origin.is_hop() {
                    let kind = Self::clear_kind(meta);
                    self.send_to_kernel(buf, meta, kind, cx);
                } else {
                    cx.stats.drop_one(DropReason::ForGateway);
                }
                continue;
            }
            let verdict = snap.outbound(&meta.key);
            if origin == Origin::Host && matches!(verdict, Verdict::Drop { eroute: None }) {
                // The gateway's own traffic that no eroute covers leaves in clear.
                passed += 1;
                self.forward_clear(buf, meta, origin, Some(PassPermit::bypass()), cx);
                continue;
            }
            match verdict {
                Verdict::Protect { sa, options, .. } => {
                    if origin.is_hop() && meta.ttl <= 1 {
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
                            groups.push(Group {
                                sa,
                                options,
                                bufs: ArrayVec::new(),
                                metas: ArrayVec::new(),
                                origins: ArrayVec::new(),
                            });
                            groups.len() - 1
                        }
                    };
                    let g = &mut groups[gi];
                    g.bufs.push(buf);
                    g.metas.push(*meta);
                    g.origins.push(origin);
                }
                Verdict::Pass { .. } => {
                    passed += 1;
                    self.forward_clear(buf, meta, origin, PassPermit::of(&verdict), cx);
                }
                Verdict::Drop { .. } => cx.stats.drop_one(DropReason::PolicyDrop),
                Verdict::Trap { eroute } => {
                    cx.stats.drop_one(DropReason::PolicyTrap);
                    if let Some(q) = &self.acquires {
                        let _ = q.push((eroute.id, meta.key)); // full: lossy by design
                    }
                }
            }
        }
        cx.stats.event(Event::Passed, passed);
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
        let n = g.bufs.len();
        // In tunnel mode every packet of the group has the same outer
        // destination: route it and find its limit once per group.
        let group_hop = match sa.mode() {
            Mode::Tunnel { remote, .. } => {
                Some(self.hop_and_limit(sa, remote, cx).map(|(nh, l)| (nh, l, remote.is_ipv6())))
            }
            Mode::Transport => None,
        };
        // The common case: a tunnel whose egress is known and every packet
        // of the group encrypted as it is. Checked without side effects
        // first, so that the general path below starts from scratch if not.
        if let Some(Ok((nh, limit, outer_v6))) = group_hop {
            if g.metas.iter().all(|m| Self::encrypts_as_is(sa, limit, m, g.options)) {
                return self.encrypt_group_as_is(g, nh, limit, outer_v6, cx);
            }
        }
        // 1. Decide each packet's fate in place (records read where they are).
        let mut fates: ArrayVec<Fate, BURST> = ArrayVec::new();
        let mut all_encrypt = true;
        for i in 0..n {
            let m = &mut g.metas[i];
            let hop = group_hop.unwrap_or_else(|| {
                self.hop_and_limit(sa, addr_of(m.key.v6, m.key.dst), cx).map(|(nh, l)| (nh, l, m.key.v6))
            });
            let fate = match hop {
                Err(e) => Fate::NoHop(e),
                Ok((nh, limit, outer_v6)) => match mtu::decide(sa, limit, m) {
                    TooBig::FragmentOuter if g.options.fragment_before_encryption && !m.is_v6() => {
                        Fate::InnerFragments(nh, limit, outer_v6)
                    }
                    TooBig::Fits | TooBig::FragmentOuter => Fate::Encrypt(nh, limit, outer_v6),
                    TooBig::Refuse { mtu } => Fate::Refuse { mtu, port: nh.port },
                },
            };
            if let Fate::Encrypt(_, limit, _) = fate {
                Self::ready_for_encryption(sa, limit, g.options, &mut g.bufs[i], m, g.origins[i], cx.stats);
            } else {
                all_encrypt = false;
            }
            fates.push(fate);
        }
        // 2. The rare packets that are not encrypted as they are leave the
        //    group first (the common case moves nothing).
        if !all_encrypt {
            let (bufs, metas, origins) =
                (std::mem::take(&mut g.bufs), std::mem::take(&mut g.metas), std::mem::take(&mut g.origins));
            let mut kept: ArrayVec<Fate, BURST> = ArrayVec::new();
            for (((buf, meta), origin), fate) in bufs.into_iter().zip(metas).zip(origins).zip(fates.drain(..)) {
                let pkt = Pkt { buf, meta, origin };
                match fate {
                    Fate::Encrypt(..) => {
                        g.bufs.push(pkt.buf);
                        g.metas.push(pkt.meta);
                        g.origins.push(pkt.origin);
                        kept.push(fate);
                    }
                    Fate::InnerFragments(nh, limit, outer_v6) => {
                        self.encrypt_inner_fragments(pkt, sa, nh, limit, outer_v6, cx)
                    }
                    Fate::Refuse { mtu, port } => self.refuse(&pkt, mtu, port, cx),
                    Fate::NoHop(e) => self.solicit(e, cx),
                }
            }
            fates = kept;
        }
        // 3. One sequence reservation and one crypto call for the group.
        // (Fates by reference: copying the array whole cost more than reading it.)
        self.seal_and_send(g, cx, |i| match fates.get(i) {
            Some(&Fate::Encrypt(nh, limit, outer_v6)) => Some((nh, limit, outer_v6)),
            _ => None,
        });
    }

    /// MSS clamping and the TTL of a packet about to be encrypted under `limit`.
    #[inline(always)]
    fn ready_for_encryption(
        sa: &Sa,
        limit: u16,
        options: ProtectOptions,
        buf: &mut B,
        m: &mut Meta,
        origin: Origin,
        stats: &crate::stats::WorkerStats,
    ) {
        if options.mss_clamp {
            let inner_mtu = mtu::tunnel_mtu(sa, limit, m);
            if mtu::clamp_mss(buf.data_mut(), m, mtu::mss_for(inner_mtu.into(), m.key.v6)).is_some() {
                stats.event(Event::MssClamped, 1);
            }
        }
        if origin.is_hop() {
            decrement_ttl(buf, m);
        }
    }

    /// Encrypt the group's packets (one sequence reservation, one crypto
    /// call) and send each by the hop `hop_of(i)` gives (`None`: it is not
    /// one to send; the caller has already dealt with it).
    #[inline(always)]
    fn seal_and_send<A, S>(
        &mut self,
        g: &mut Group<'_, B>,
        cx: &mut BurstCtx<'_, A, S>,
        hop_of: impl Fn(usize) -> Option<(NextHop, u16, bool)>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let n = g.bufs.len();
        if n == 0 {
            return;
        }
        let entry: &Arc<SaEntry> = g.sa;
        let sa = &entry.sa;
        let mut results = [Ok(()); BURST];
        sa.encap_burst_meta(&mut g.bufs, &g.metas, &mut results[..n]);
        g.metas.clear();
        g.origins.clear();
        let mut encrypted = 0;
        for (i, buf) in g.bufs.drain(..).enumerate() {
            let Some((nh, limit, outer_v6)) = hop_of(i) else { continue };
            // (Indexed, not zipped: the zipped iterators' state spilled to
            // the stack around `send_esp`, ~10 instructions a packet. There
            // is a result for every packet; fail closed all the same.)
            match results.get(i).copied().unwrap_or(Err(EspError::NoRoom)) {
                Ok(()) => {
                    encrypted += 1;
                    self.send_esp(buf, outer_v6, nh, limit, cx)
                }
                Err(e) => {
                    cx.stats.drop_one(DropReason::from(e));
                    sa.drops().count(e);
                }
            }
        }
        cx.stats.event(Event::Encrypted, encrypted);
    }

    /// Is this packet encrypted as it is under `limit` (it fits, or its ESP
    /// packet is fragmented afterwards)? Exactly the `Fate::Encrypt` case of
    /// the general path.
    #[inline]
    fn encrypts_as_is(sa: &Sa, limit: u16, m: &Meta, options: ProtectOptions) -> bool {
        match mtu::decide(sa, limit, m) {
            TooBig::Fits => true,
            TooBig::FragmentOuter => !options.fragment_before_encryption || m.is_v6(),
            TooBig::Refuse { .. } => false,
        }
    }

    /// [`Self::encrypt_group`] when every packet goes to the group's one
    /// egress as it is: no per-packet fate, one hop for all.
    #[inline]
    fn encrypt_group_as_is<A, S>(
        &mut self,
        g: &mut Group<'_, B>,
        nh: NextHop,
        limit: u16,
        outer_v6: bool,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let entry: &Arc<SaEntry> = g.sa;
        let sa = &entry.sa;
        for ((buf, m), origin) in g.bufs.iter_mut().zip(g.metas.iter_mut()).zip(&g.origins) {
            Self::ready_for_encryption(sa, limit, g.options, buf, m, *origin, cx.stats);
        }
        self.seal_and_send(g, cx, |_| Some((nh, limit, outer_v6)));
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
        if pkt.origin.is_hop() {
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
                Err(e) => {
                    cx.stats.drop_one(DropReason::from(e));
                    sa.drops().count(e);
                }
            }
        }
    }
}
