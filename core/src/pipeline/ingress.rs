//! Ingress: the one place a received frame is parsed. Neighbour traffic is
//! answered; an IP packet is checked once (lengths, IPv4 checksum, fragment
//! bounds) into its [`Meta`] record and its Ethernet header and link-layer
//! padding cut; anything else is dropped and counted.

use super::{Burst, BurstCtx, Origin, Pipeline, TxSink};
use crate::mtu::BufAlloc;
use crate::packet::{Meta, PacketBuf};
use crate::stats::DropReason;
use crate::wire::{EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};

impl<B: PacketBuf> Pipeline<B> {
    /// One received frame on `in_port`: its record is written into `meta`
    /// (the caller's slot: parsed in place, never copied) and the buffer,
    /// now starting at the IP header, comes back with where it came from;
    /// `None` when it was consumed or dropped (counted).
    #[inline(always)]
    pub(super) fn ingress_meta<A, S>(
        &mut self,
        in_port: usize,
        buf: B,
        meta: &mut Meta,
        cx: &mut BurstCtx<'_, A, S>,
    ) -> Option<(B, Origin)>
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let mut buf = if super::neighbor::may_be_neighbor(buf.data()) {
            self.neighbor_traffic(in_port, buf, cx.now_ms, cx.tx, cx.stats)?
        } else {
            buf
        };
        let (v6, mac) = {
            let Ok(eth) = EthernetFrame::new_checked(buf.data()) else {
                cx.stats.drop_one(DropReason::BadIp);
                return None;
            };
            let v6 = match eth.ethertype() {
                ETHERTYPE_IPV4 => false,
                ETHERTYPE_IPV6 => true,
                _ => {
                    cx.stats.drop_one(DropReason::NotIp);
                    return None;
                }
            };
            if let Err(reason) = Meta::parse_into(eth.payload(), buf.hw_ip_checksum(), meta) {
                cx.stats.drop_one(reason);
                return None;
            }
            (v6, eth.src())
        };
        if meta.is_v6() != v6 {
            cx.stats.drop_one(DropReason::BadIp);
            return None;
        }
        // The IP packet is the buffer from here on; padding beyond its length goes.
        if buf.narrow(ETH_HLEN, usize::from(meta.total_len)).is_err() {
            cx.stats.drop_one(DropReason::BadIp);
            return None;
        }
        Some((buf, Origin::Link { port: in_port, mac }))
    }

    /// [`Self::ingress_meta`] into the next slot of `burst` (which has room).
    #[inline(always)]
    pub(super) fn ingress_into<A, S>(
        &mut self,
        in_port: usize,
        buf: B,
        burst: &mut Burst<B>,
        cx: &mut BurstCtx<'_, A, S>,
    ) where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let slot = burst.bufs.len();
        let Some(meta) = burst.metas.get_mut(slot) else {
            cx.stats.drop_one(DropReason::NoBuffer); // the caller keeps room: never
            return;
        };
        if let Some((buf, origin)) = self.ingress_meta(in_port, buf, meta, cx) {
            burst.origins[slot] = origin;
            burst.bufs.push(buf);
        }
    }
}
