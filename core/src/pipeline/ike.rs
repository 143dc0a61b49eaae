//! IKE between the workers and the control thread's IKE daemon (issue 19):
//! with [`Pipeline::with_ike`], IKE addressed to the gateway (UDP 500, and
//! UDP 4500 — the non-ESP marker still in front, the daemon reads it) goes
//! to the control thread over a bounded lock-free queue instead of to the
//! kernel, and what the daemon sends comes back over another queue, which
//! any worker drains ([`Pipeline::send_ike`]) into the normal egress: routed,
//! fragmented to the port's MTU, and bypassing the IPsec policy as IKE
//! always does.
//!
//! The queues hold fixed-size slots ([`IkeDatagram`]): no allocation per
//! packet. A full queue drops (`ike_queue_full`), a datagram larger than a
//! slot too (`ike_too_big`); the peer retransmits. IKE shares the host
//! path's IKE rate limit per worker, so a flood cannot keep a worker busy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::egress::PassPermit;
use super::host::{TokenBucket, IKE_PORT};
use super::{BurstCtx, Origin, Pipeline, TxSink};
use crate::esp::natt::{self, NAT_T_PORT};
use crate::mtu::BufAlloc;
use crate::packet::ip::proto;
use crate::packet::{HwChecksum, Meta, PacketBuf};
use crate::stats::{DropReason, Event};
use crate::wire::ipv4::Ipv4Repr;
use crate::wire::ipv6::Ipv6Repr;

/// The largest UDP payload a slot holds. RFC 7296 §2 asks every
/// implementation to take 1 280 bytes and suggests 3 000; larger messages
/// are fragmented by IKE itself (RFC 7383).
pub const IKE_DATAGRAM_MAX: usize = 4000;

/// Datagrams each direction's queue holds.
pub const IKE_QUEUE_LEN: usize = 256;

/// One IKE datagram: the gateway's address and port, the peer's, and the
/// UDP payload (with the non-ESP marker on port 4500).
#[derive(Clone)]
pub struct IkeDatagram {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    len: u16,
    data: [u8; IKE_DATAGRAM_MAX],
}

impl IkeDatagram {
    /// A datagram, or `None` when the payload does not fit a slot.
    pub fn new(local: SocketAddr, remote: SocketAddr, payload: &[u8]) -> Option<Self> {
        if payload.len() > IKE_DATAGRAM_MAX || local.is_ipv4() != remote.is_ipv4() {
            return None;
        }
        let mut d = IkeDatagram { local, remote, len: payload.len() as u16, data: [0; IKE_DATAGRAM_MAX] };
        d.data[..payload.len()].copy_from_slice(payload);
        Some(d)
    }

    /// The UDP payload.
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for IkeDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeDatagram")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A queue of IKE datagrams (one per direction).
pub type IkeQueue = ArrayQueue<IkeDatagram>;

/// Both directions, as the gateway hands them to every worker.
#[derive(Debug, Clone)]
pub struct IkeQueues {
    /// Workers → control thread.
    pub to_control: Arc<IkeQueue>,
    /// Control thread → any worker.
    pub from_control: Arc<IkeQueue>,
}

impl IkeQueues {
    pub fn new() -> Self {
        IkeQueues {
            to_control: Arc::new(IkeQueue::new(IKE_QUEUE_LEN)),
            from_control: Arc::new(IkeQueue::new(IKE_QUEUE_LEN)),
        }
    }
}

impl Default for IkeQueues {
    fn default() -> Self {
        Self::new()
    }
}

/// A worker's end: the queues and its own rate limit.
pub(super) struct IkeLink {
    queues: IkeQueues,
    bucket: TokenBucket,
}

impl IkeLink {
    pub(super) fn new(queues: IkeQueues, rate_per_s: u32) -> Self {
        IkeLink { queues, bucket: TokenBucket::new(rate_per_s) }
    }
}

/// Is this IKE for the daemon: whole UDP to port 500 or 4500?
#[inline]
fn for_daemon(m: &Meta) -> bool {
    m.key.proto == proto::UDP && !m.is_fragment() && (m.key.dport == IKE_PORT || m.key.dport == NAT_T_PORT)
}

impl<B: PacketBuf> Pipeline<B> {
    /// Hand IKE to the control thread's daemon (queues shared by every worker).
    pub fn with_ike(mut self, queues: IkeQueues, rate_per_s: u32) -> Self {
        self.ike = Some(IkeLink::new(queues, rate_per_s));
        self
    }

    /// A packet for the gateway: if it is IKE and a daemon listens, it is
    /// queued for it (or dropped, counted) and consumed; otherwise given back.
    pub(super) fn hand_to_daemon<A, S>(&mut self, buf: B, meta: &Meta, cx: &mut BurstCtx<'_, A, S>) -> Option<B>
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        let Some(ike) = &mut self.ike else { return Some(buf) };
        if !for_daemon(meta) {
            return Some(buf);
        }
        if !ike.bucket.take(cx.now_ms) {
            cx.stats.drop_one(DropReason::HostRateLimited);
            return None;
        }
        let k = meta.key;
        let (src, dst) = (super::addr_of(k.v6, k.src), super::addr_of(k.v6, k.dst));
        let Some(payload) = natt::udp_payload(buf.data(), meta) else {
            cx.stats.drop_one(DropReason::BadIp);
            return None;
        };
        let Some(d) = IkeDatagram::new(SocketAddr::new(dst, k.dport), SocketAddr::new(src, k.sport), payload) else {
            cx.stats.drop_one(DropReason::IkeTooBig);
            return None;
        };
        match ike.queues.to_control.push(d) {
            Ok(()) => cx.stats.event(Event::ToControlIke, 1),
            Err(_) => cx.stats.drop_one(DropReason::IkeQueueFull),
        }
        None
    }

    /// Send what the daemon queued (at most a burst per call): each datagram
    /// becomes an IP/UDP packet from the gateway's address, which leaves by
    /// the normal egress, bypassing the IPsec policy.
    pub fn send_ike<A, S>(&mut self, cx: &mut BurstCtx<'_, A, S>)
    where
        A: BufAlloc<Buf = B>,
        S: TxSink<B>,
    {
        for _ in 0..super::BURST {
            let Some(ike) = &self.ike else { return };
            let Some(d) = ike.queues.from_control.pop() else { return };
            // Only from the gateway's own addresses (the daemon's own check, again).
            let own = match d.local.ip() {
                IpAddr::V4(a) => self.is_own(false, u128::from(u32::from(a))),
                IpAddr::V6(a) => self.is_own(true, u128::from(a)),
            };
            self.icmp_id = self.icmp_id.wrapping_add(1);
            if !own {
                cx.stats.drop_one(DropReason::HostBadSource);
                continue;
            }
            let Some(buf) = build_udp(&d, self.icmp_id, cx.alloc) else {
                cx.stats.drop_one(DropReason::NoBuffer);
                continue;
            };
            let mut meta = match Meta::parse(buf.data(), HwChecksum::Good) {
                Ok(m) => m,
                Err(r) => {
                    cx.stats.drop_one(r);
                    continue;
                }
            };
            cx.stats.event(Event::FromControlIke, 1);
            self.forward_clear(buf, &mut meta, Origin::Local, Some(PassPermit::bypass()), cx);
        }
    }
}

/// The IP and UDP headers around a datagram's payload (IPv4 checksum, and
/// the UDP checksum, which IPv6 requires and IPv4 gets too).
fn build_udp<A: BufAlloc>(d: &IkeDatagram, ident: u16, alloc: &mut A) -> Option<A::Buf> {
    let payload = d.payload();
    let udp_len = 8 + payload.len();
    let v6 = d.local.is_ipv6();
    let hl = if v6 { 40 } else { 20 };
    let mut buf = alloc.alloc(hl + udp_len)?;
    buf.set_len(hl + udp_len).ok()?;
    let p = buf.data_mut();
    match (d.local.ip(), d.remote.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            Ipv4Repr { src, dst, protocol: proto::UDP, tos: 0, ttl: 64, ident, df: false, payload_len: udp_len }.emit(p)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            Ipv6Repr { src, dst, next_header: proto::UDP, traffic_class: 0, hop_limit: 64, payload_len: udp_len }
                .emit(p)
        }
        _ => return None,
    }
    let udp = &mut p[hl..];
    udp[0..2].copy_from_slice(&d.local.port().to_be_bytes());
    udp[2..4].copy_from_slice(&d.remote.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    udp[8..].copy_from_slice(payload);
    let (h, seg) = p.split_at_mut(hl);
    let (src, dst) = if v6 { (&h[8..24], &h[24..40]) } else { (&h[12..16], &h[16..20]) };
    let c = natt::l4_checksum(v6, src, dst, proto::UDP, seg);
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    Some(buf)
}
