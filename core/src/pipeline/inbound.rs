//! Inbound: what arrives on a protected port. Outer fragments are
//! reassembled (within the buffer budget); ESP goes to its SA by SPI (and
//! outer destination) and is decrypted per SA group; the decrypted packet,
//! checked like any ingress by ESP, must match its SA's selectors (RFC 4301
//! §5.2) and is then forwarded. ICMP too-big reports quoting our ESP lower
//! that SA's path MTU. Clear traffic follows `default_inbound_clear`.

use std::sync::Arc;

use arrayvec::ArrayVec;

use super::{addr_of, BurstCtx, Origin, Pipeline, Pkt, TxSink, BURST, MAX_GROUPS};
use crate::esp::{Decapped, EspError, PmtuUpdate};
use crate::mtu::{self, BufAlloc, Freed, ReasmOutcome};
use crate::packet::ip::proto;
use crate::packet::{HwChecksum, Meta, PacketBuf};
use crate::policy::{Action, InboundSa, Snapshot};
use crate::stats::{DropReason, Event};
use crate::wire::EspHeader;

type InGroup<'s, B> = (&'s InboundSa, ArrayVec<B, BURST>);

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
        let mut meta = Meta::default();
        for buf in burst {
            let Some((mut buf, origin)) = self.ingress_meta(in_port, buf, &mut meta, cx) else { continue };
            if meta.is_fragment() {
                match self.reassemble(buf, cx) {
                    Some(whole) => (buf, meta) = (whole.buf, whole.meta),
                    None => continue,
                }
            }
            let k = meta.key;
            if k.proto == proto::ESP {
                let l4 = &buf.data()[meta.header_len()..];
                let Ok(esp) = EspHeader::new_checked(l4) else {
                    cx.stats.drop_one(DropReason::EspTruncated);
                    continue;
                };
                let Some(isa) = snap.inbound_sa(esp.spi(), addr_of(k.v6, k.dst)) else {
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
                groups[gi].1.push(buf);
                continue;
            }
            if matches!(k.proto, proto::ICMP | proto::ICMPV6) {
                if let Some(report) = mtu::parse_too_big(buf.data()) {
                    // About one of our ESP packets? Then it tunes that SA's path MTU.
                    let res = snap.outbound_sa(report.spi).and_then(|sa| {
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
                cx.stats.drop_one(DropReason::ForGateway);
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
        for (isa, mut pkts) in groups.drain(..) {
            self.decrypt_group(isa, &mut pkts, cx);
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
    fn decrypt_group<A, S>(&mut self, isa: &InboundSa, pkts: &mut ArrayVec<B, BURST>, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let mut results: [Result<Decapped, EspError>; BURST] = [Err(EspError::Truncated); BURST];
        let n = pkts.len();
        isa.entry.sa.decap_burst(pkts, &mut results[..n]);
        let mut decrypted = 0;
        // By reference: zipping the results array by value would copy all of it.
        for (buf, r) in pkts.drain(..).zip(results.iter_mut()) {
            let d = match r {
                Ok(d) => d,
                Err(e) => {
                    cx.stats.drop_one((*e).into());
                    isa.entry.sa.drops().count(*e);
                    continue;
                }
            };
            let k = d.inner.key;
            if !isa.allows(&k) {
                cx.stats.drop_one(DropReason::InboundPolicy);
                isa.entry.sa.drops().count(crate::esp::SaDrop::Policy);
                continue;
            }
            decrypted += 1;
            if self.is_own(k.v6, k.dst) {
                cx.stats.drop_one(DropReason::ForGateway);
                continue;
            }
            self.forward_clear(buf, &mut d.inner, Origin::Tunnel, None, cx);
        }
        cx.stats.event(Event::Decrypted, decrypted);
    }
}
