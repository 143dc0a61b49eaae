//! Inbound: what arrives on a protected port. Outer fragments are
//! reassembled (within the buffer budget); ESP goes to its SA by SPI (and
//! outer destination) and is decrypted per SA group; the decrypted packet,
//! checked like any ingress by ESP, must match its SA's selectors (RFC 4301
//! §5.2) and is then forwarded. ICMP too-big reports quoting our ESP lower
//! that SA's path MTU. Clear traffic follows `default_inbound_clear`.

use std::sync::Arc;

use arrayvec::ArrayVec;

use super::host::HostKind;
use super::{addr_of, BurstCtx, NatMapping, Origin, Pipeline, Pkt, TxSink, BURST, MAX_GROUPS};
use crate::esp::natt::{self, NattKind};
use crate::esp::{Mode, OuterRecord, PmtuUpdate};
use crate::mtu::{self, BufAlloc, Freed, ReasmOutcome};
use crate::packet::ip::proto;
use crate::packet::{HwChecksum, Meta, PacketBuf};
use crate::policy::{Action, InboundSa, SaEntry, Snapshot};
use crate::stats::{DropReason, Event};
use crate::wire::EspHeader;

/// One inbound SA's packets of a burst, with what ESP needs of their outer
/// headers (from the ingress record: the outer header is not parsed again).
struct InGroup<'s, B> {
    isa: &'s InboundSa,
    bufs: ArrayVec<B, BURST>,
    outers: ArrayVec<OuterRecord, BURST>,
}

/// Where an ESP-in-UDP packet of the burst came from (the outer source and
/// UDP port), for the NAT rebinding check after it authenticated: its SA
/// (by identity) and its position in that SA's group. Plain ESP records
/// nothing, so its path pays for an empty list only.
#[derive(Clone, Copy)]
struct Arrival {
    sa: usize,
    pos: u8,
    v6: bool,
    src: u128,
    sport: u16,
}

/// An SA entry's identity within a burst.
fn sa_key(isa: &InboundSa) -> usize {
    Arc::as_ptr(&isa.entry) as usize
}

impl<B: PacketBuf> Pipeline<B> {
    pub(super) fn inbound<'s, A, S, I>(
        &mut self,
        in_port: usize,
        burst: I,
        snap: &'s Snapshot,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
        I: IntoIterator<Item = B>,
    {
        let mut groups: ArrayVec<InGroup<'s, B>, MAX_GROUPS> = ArrayVec::new();
        let mut udp_arrivals: ArrayVec<Arrival, BURST> = ArrayVec::new();
        let mut meta = Meta::default();
        // The last SPI looked up in this burst and what it found: a burst is
        // mostly one SA's packets, and the snapshot does not change within it.
        let mut last_sa: Option<((u32, bool, u128), &'s InboundSa)> = None;
        for buf in burst {
            let Some((mut buf, origin)) = self.ingress_meta(in_port, buf, &mut meta, cx) else { continue };
            if meta.is_fragment() {
                match self.reassemble(buf, cx) {
                    Some(whole) => (buf, meta) = (whole.buf, whole.meta),
                    None => continue,
                }
            }
            let k = meta.key;
            // ESP, plain or in UDP on a NAT-T port of ours (RFC 3948).
            let mut udp_from = None;
            let spi = if k.proto == proto::ESP {
                match EspHeader::new_checked(&buf.data()[meta.header_len()..]) {
                    Ok(esp) => Some(esp.spi()),
                    Err(_) => {
                        cx.stats.drop_one(DropReason::EspTruncated);
                        continue;
                    }
                }
            } else if k.proto == proto::UDP && snap.is_natt_port(k.dport) && self.is_own(k.v6, k.dst) {
                match natt::udp_payload(buf.data(), &meta).map(natt::classify) {
                    Some(NattKind::Esp { spi }) => {
                        udp_from = Some((k.v6, k.src, k.sport));
                        Some(spi)
                    }
                    Some(NattKind::Keepalive) => {
                        cx.stats.event(Event::NattKeepalives, 1);
                        continue;
                    }
                    // IKE behind the non-ESP marker: for the gateway itself.
                    Some(NattKind::Ike) => {
                        self.send_to_kernel(buf, &meta, HostKind::Ike, cx);
                        continue;
                    }
                    Some(NattKind::Malformed) | None => {
                        cx.stats.drop_one(DropReason::EspTruncated);
                        continue;
                    }
                }
            } else {
                None
            };
            if let Some(spi) = spi {
                let found = match last_sa {
                    Some((key, isa)) if key == (spi, k.v6, k.dst) => Some(isa),
                    _ => snap.inbound_sa(spi, addr_of(k.v6, k.dst)),
                };
                let Some(isa) = found else {
                    cx.stats.drop_one(DropReason::NoSa);
                    continue;
                };
                last_sa = Some(((spi, k.v6, k.dst), isa));
                let gi = match groups.iter().position(|g| Arc::ptr_eq(&g.isa.entry, &isa.entry)) {
                    Some(i) => i,
                    None => {
                        if groups.is_full() {
                            let mut g = groups.swap_remove(0);
                            self.decrypt_group(&mut g, &mut udp_arrivals, cx);
                        }
                        groups.push(InGroup { isa, bufs: ArrayVec::new(), outers: ArrayVec::new() });
                        groups.len() - 1
                    }
                };
                let g = &mut groups[gi];
                if let Some((v6, src, sport)) = udp_from {
                    let pos = g.bufs.len() as u8;
                    udp_arrivals.push(Arrival { sa: sa_key(isa), pos, v6, src, sport });
                }
                g.bufs.push(buf);
                g.outers.push(OuterRecord::of(&meta));
                continue;
            }
            if matches!(k.proto, proto::ICMP | proto::ICMPV6) {
                if let Some(report) = mtu::parse_too_big(buf.data()) {
                    // About one of our ESP packets? Then it tunes that SA's path MTU.
                    // (The quote must be encapsulated the way the SA sends.)
                    let sa = snap.outbound_sa(report.spi).filter(|e| e.sa.udp_encap().is_some() == report.udp);
                    let res = sa.and_then(|sa| {
                        let nh = cx.routes.next_hop(report.quoted_dst).ok()?;
                        Some(mtu::apply_too_big(
                            &sa.sa,
                            &report,
                            self.ports[nh.port].mtu,
                            cx.now_ms,
                            self.pmtu_ageing_ms,
                        ))
                    });
                    match res {
                        Some(PmtuUpdate::Lowered(_)) => cx.stats.event(Event::PmtuLowered, 1),
                        _ => cx.stats.drop_one(DropReason::PmtuReportIgnored),
                    }
                    continue;
                }
            }
            if self.is_own(k.v6, k.dst) {
                let kind = Self::clear_kind(&meta);
                self.send_to_kernel(buf, &meta, kind, cx);
                continue;
            }
            match snap.defaults.inbound_clear {
                Action::Pass => {
                    cx.stats.event(Event::Passed, 1);
                    self.forward_clear(buf, &mut meta, origin, None, cx);
                }
                _ => cx.stats.drop_one(DropReason::ClearOnProtected),
            }
        }
        for mut g in groups.drain(..) {
            self.decrypt_group(&mut g, &mut udp_arrivals, cx);
        }
    }

    /// Give a fragment to the reassembly table; a completed datagram comes
    /// back as a packet with its record.
    fn reassemble<A, S>(&mut self, frag: B, cx: &mut BurstCtx<'_, A, S>) -> Option<Pkt<B>>
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let mut freed = Freed::default();
        let out = self.reasm.push(frag, cx.now_ms, cx.alloc, &mut freed);
        cx.stats.drop_n(DropReason::ReasmEvicted, freed.evicted as u64);
        cx.stats.drop_n(DropReason::ReasmSourceLimit, freed.source_limit as u64);
        cx.stats.drop_n(DropReason::ReasmTimeout, freed.timeout as u64);
        match out {
            ReasmOutcome::Complete(buf) => {
                cx.stats.event(Event::Reassembled, 1);
                // We wrote this header (and its checksum) ourselves.
                match Meta::parse(buf.data(), HwChecksum::Good) {
                    Ok(meta) => Some(Pkt { buf, meta, origin: Origin::Tunnel }),
                    Err(r) => {
                        cx.stats.drop_one(r);
                        None
                    }
                }
            }
            ReasmOutcome::Held => None,
            ReasmOutcome::Dropped { reason, fragments } => {
                cx.stats.drop_n(reason.into(), fragments as u64);
                None
            }
        }
    }

    /// Decrypt one SA's packets of a burst and send them on.
    fn decrypt_group<A, S>(
        &mut self,
        g: &mut InGroup<'_, B>,
        udp_arrivals: &mut ArrayVec<Arrival, BURST>,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let isa = g.isa;
        let sa = &isa.entry.sa;
        // Decapsulation writes each record into its slot in place; the slots
        // are the pipeline's, kept from group to group.
        // (Never empty here: every group puts them back.)
        let mut results = self.decap_slots.take().unwrap_or_else(super::new_decap_slots);
        let n = g.bufs.len();
        sa.decap_burst_outer(&mut g.bufs, &g.outers, &mut results[..n]);
        g.outers.clear();
        let mut decrypted = 0;
        let (me, mut cursor) = (sa_key(isa), 0);
        // Indexed, not zipped: the zipped iterators' state spilled to the
        // stack around forwarding (as outbound's did). There is a slot for
        // every packet; without one the packet would be dropped all the same.
        for (i, buf) in g.bufs.drain(..).enumerate() {
            let Some(r) = results.get_mut(i) else {
                cx.stats.drop_one(DropReason::EspNoRoom);
                continue;
            };
            let d = match r {
                Ok(d) => d,
                Err(e) => {
                    cx.stats.drop_one((*e).into());
                    sa.drops().count(*e);
                    continue;
                }
            };
            let k = d.inner.key;
            if !isa.allows(&k) {
                cx.stats.drop_one(DropReason::InboundPolicy);
                sa.drops().count(crate::esp::SaDrop::Policy);
                continue;
            }
            decrypted += 1;
            if !udp_arrivals.is_empty() {
                // This SA's arrivals were recorded in position order: one
                // forward scan per group finds each (a search per packet was
                // quadratic in the burst: 150 instructions per packet).
                while let Some(a) = udp_arrivals.get(cursor) {
                    if a.sa == me && usize::from(a.pos) >= i {
                        break;
                    }
                    cursor += 1;
                }
                if let Some(from) = udp_arrivals.get(cursor).filter(|a| a.sa == me && usize::from(a.pos) == i) {
                    self.check_nat_mapping(&isa.entry, *from, d.seq, cx.stats);
                }
            }
            if self.is_own(k.v6, k.dst) {
                // Transport mode to the gateway, or a tunnel's packet for one
                // of its addresses: decrypted, for the kernel.
                self.send_to_kernel(buf, &d.inner, HostKind::Decrypted, cx);
                continue;
            }
            self.forward_clear(buf, &mut d.inner, Origin::Tunnel, None, cx);
        }
        self.decap_slots = Some(results);
        if !udp_arrivals.is_empty() {
            udp_arrivals.retain(|a| a.sa != me);
        }
        cx.stats.event(Event::Decrypted, decrypted);
    }

    /// An authenticated ESP-in-UDP packet from another address or port than
    /// its SA's: report the new mapping (only for the newest packet, so that
    /// a late packet from the old mapping cannot flip it back).
    fn check_nat_mapping(&self, entry: &SaEntry, from: Arrival, seq: u64, stats: &crate::stats::WorkerStats) {
        let sa = &entry.sa;
        let Some(e) = sa.udp_encap() else { return };
        // Transport SAs have no peer address of their own: only the port counts.
        let addr_moved = match sa.mode() {
            Mode::Tunnel { remote, .. } => crate::policy::to_u128(remote) != from.src,
            Mode::Transport => false,
        };
        if !addr_moved && from.sport == e.remote_port {
            return;
        }
        if sa.replay_window().top() > seq {
            return;
        }
        stats.event(Event::NatMappingChanged, 1);
        if let Some(q) = &self.nat_reports {
            let addr = addr_of(from.v6, from.src);
            let _ = q.push(NatMapping { sa_id: entry.id, spi: sa.spi(), addr, port: from.sport });
            // lossy
        }
    }
}
