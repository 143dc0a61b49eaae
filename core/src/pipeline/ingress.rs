//! Ingress: the one place a received frame is parsed. Neighbour traffic is
//! answered; an IP packet is checked once (lengths, IPv4 checksum, fragment
//! bounds) into its [`Meta`] record and its Ethernet header and link-layer
//! padding cut; anything else is dropped and counted.

use super::{BurstCtx, Origin, Pipeline, Pkt, TxSink};
use crate::mtu::BufAlloc;
use crate::packet::{Meta, PacketBuf};
use crate::stats::DropReason;
use crate::wire::{EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};

impl<B: PacketBuf> Pipeline<B> {
    /// One received frame on `in_port`, as a packet with its record, or
    /// `None` when it was consumed or dropped (counted).
    // Always inlined: the record is then written straight into the burst
    // array instead of being returned and copied (a store-forwarding stall).
    #[inline(always)]
    pub(super) fn ingress<A, S>(&mut self, in_port: usize, buf: B, cx: &mut BurstCtx<'_, A, S>) -> Option<Pkt<B>>
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let mut buf = self.neighbor_traffic(in_port, buf, cx.now_ms, cx.tx, cx.stats)?;
        let (meta, mac) = {
            let d = buf.data();
            let Ok(eth) = EthernetFrame::new_checked(d) else {
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
            match Meta::parse(eth.payload(), buf.hw_ip_checksum()) {
                Ok(m) if m.is_v6() == v6 => (m, eth.src()),
                Ok(_) => {
                    cx.stats.drop_one(DropReason::BadIp);
                    return None;
                }
                Err(reason) => {
                    cx.stats.drop_one(reason);
                    return None;
                }
            }
        };
        // The IP packet is the buffer from here on; padding beyond its length goes.
        let padding = buf.len() - ETH_HLEN - usize::from(meta.total_len);
        if buf.adj(ETH_HLEN).is_err() || buf.trim(padding).is_err() {
            cx.stats.drop_one(DropReason::BadIp);
            return None;
        }
        Some(Pkt { buf, meta, origin: Origin::Link { port: in_port, mac } })
    }
}
