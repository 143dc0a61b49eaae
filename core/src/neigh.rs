//! ARP (RFC 826) and IPv6 neighbour discovery (RFC 4861): answering for the
//! gateway's own addresses, learning neighbours, and asking for next hops.
//!
//! Workers do the packet work; learned (address, MAC) pairs go to the main
//! thread through a lock-free queue, and it republishes the route table with
//! them (the same snapshot discipline as the policy tables).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::mtu::icmp::icmp6_checksum;
use crate::packet::ip::{self, proto};
use crate::packet::PacketBuf;

pub const ETH_P_ARP: u16 = 0x0806;
const ARP_LEN: usize = 28;
const NS: u8 = 135;
const NA: u8 = 136;

/// What an ARP packet (after the Ethernet header) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Parse an Ethernet/IPv4 ARP body.
pub fn parse_arp(body: &[u8]) -> Option<Arp> {
    let b = body.get(..ARP_LEN)?;
    if b[0..2] != [0, 1] || b[2..4] != [8, 0] || b[4] != 6 || b[5] != 4 {
        return None;
    }
    Some(Arp {
        op: u16::from_be_bytes([b[6], b[7]]),
        sender_mac: b[8..14].try_into().ok()?,
        sender_ip: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
        target_ip: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
    })
}

/// Write a whole ARP frame (Ethernet header included) into `out`.
pub fn build_arp<B: PacketBuf>(
    out: &mut B,
    op: u16,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> Option<()> {
    out.set_len(14 + ARP_LEN).ok()?;
    let d = out.data_mut();
    d[..6].copy_from_slice(&dst_mac);
    d[6..12].copy_from_slice(&src_mac);
    d[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    let a = &mut d[14..];
    a[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&src_mac);
    a[14..18].copy_from_slice(&sender_ip.octets());
    a[18..24].copy_from_slice(&target_mac);
    a[24..28].copy_from_slice(&target_ip.octets());
    Some(())
}

/// A neighbour solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nd {
    pub kind: u8,
    pub src: Ipv6Addr,
    pub target: Ipv6Addr,
    /// Source (NS) or target (NA) link-layer address option.
    pub lladdr: Option<[u8; 6]>,
}

/// Parse an IPv6 packet (from its IPv6 header) as NS/NA; hop limit must be
/// 255 (RFC 4861 §7.1: it came from the link itself).
pub fn parse_nd(pkt: &[u8]) -> Option<Nd> {
    let i = ip::parse_ipv6(pkt)?;
    if i.l4_proto != proto::ICMPV6 || pkt[7] != 255 {
        return None;
    }
    let m = &pkt[i.l4_offset..i.total_len];
    if m.len() < 24 || !(m[0] == NS || m[0] == NA) || m[1] != 0 {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&m[8..24]).ok()?);
    let want = if m[0] == NS { 1 } else { 2 };
    let mut lladdr = None;
    let mut o = 24;
    while o + 2 <= m.len() {
        let (t, l) = (m[o], usize::from(m[o + 1]) * 8);
        if l == 0 || o + l > m.len() {
            return None;
        }
        if t == want && l == 8 {
            lladdr = m[o + 2..o + 8].try_into().ok();
        }
        o += l;
    }
    Some(Nd { kind: m[0], src: Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?), target, lladdr })
}

/// Write a whole NS/NA frame (Ethernet + IPv6 + ICMPv6 + link-layer option).
#[allow(clippy::too_many_arguments)]
pub fn build_nd<B: PacketBuf>(
    out: &mut B,
    kind: u8,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    flags: u8,
) -> Option<()> {
    let icmp_len = 24 + 8;
    out.set_len(14 + 40 + icmp_len).ok()?;
    let d = out.data_mut();
    d[..6].copy_from_slice(&dst_mac);
    d[6..12].copy_from_slice(&src_mac);
    d[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let (h, m) = d[14..].split_at_mut(40);
    h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, icmp_len as u8, proto::ICMPV6, 255]);
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    m.fill(0);
    m[0] = kind;
    m[4] = flags;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = if kind == NS { 1 } else { 2 };
    m[25] = 1;
    m[26..32].copy_from_slice(&src_mac);
    let c = icmp6_checksum(h, m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// The solicited-node multicast address and MAC for `target` (RFC 4291 §2.7.1).
pub fn solicited_node(target: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let t = target.octets();
    let a = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    (a, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
}

/// Per-worker memory of recent requests, so a busy flow towards an unknown
/// next hop asks once per interval, not once per packet. Fixed size.
#[derive(Debug)]
pub struct RequestLimiter {
    slots: Box<[(IpAddr, u64)]>,
    interval_ms: u64,
}

impl RequestLimiter {
    pub fn new(slots: usize, interval_ms: u64) -> Self {
        RequestLimiter {
            slots: vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0); slots.max(1)].into_boxed_slice(),
            interval_ms,
        }
    }

    /// Did we ask for `ip` within the last `window_ms`? (An answer we did
    /// not ask for is not learned: Linux's `arp_accept = 0`.)
    pub fn asked(&self, ip: IpAddr, now_ms: u64, window_ms: u64) -> bool {
        let (k, t) = self.slots[self.slot(ip)];
        k == ip && now_ms.saturating_sub(t) < window_ms
    }

    fn slot(&self, ip: IpAddr) -> usize {
        let h = crate::policy::to_u128(ip);
        ((h ^ (h >> 64)) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize % self.slots.len()
    }

    /// Should we ask for `ip` now?
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        let i = self.slot(ip);
        let (k, t) = &mut self.slots[i];
        if *k == ip && now_ms.saturating_sub(*t) < self.interval_ms {
            return false;
        }
        *k = ip;
        *t = now_ms;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VecBuf;

    #[test]
    fn arp_round_trip() {
        let mut b = VecBuf::with_room(64, 256);
        build_arp(
            &mut b,
            1,
            [0xff; 6],
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 0, 0, 1),
            [0; 6],
            Ipv4Addr::new(10, 0, 0, 2),
        )
        .unwrap();
        let d = b.data();
        assert_eq!(u16::from_be_bytes([d[12], d[13]]), ETH_P_ARP);
        let a = parse_arp(&d[14..]).unwrap();
        assert_eq!(
            (a.op, a.sender_mac, a.sender_ip, a.target_ip),
            (1, [2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(parse_arp(&d[14..30]), None);
    }

    #[test]
    fn nd_round_trip_and_checksum() {
        let mut b = VecBuf::with_room(64, 256);
        let me: Ipv6Addr = "fd00::1".parse().unwrap();
        let them: Ipv6Addr = "fd00::2".parse().unwrap();
        let (sn, mac) = solicited_node(them);
        assert_eq!(sn, "ff02::1:ff00:2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(mac, [0x33, 0x33, 0xff, 0, 0, 2]);
        build_nd(&mut b, NS, mac, [2, 0, 0, 0, 0, 1], me, sn, them, 0).unwrap();
        let pkt = &b.data()[14..];
        let nd = parse_nd(pkt).unwrap();
        assert_eq!((nd.kind, nd.src, nd.target, nd.lladdr), (NS, me, them, Some([2, 0, 0, 0, 0, 1])));
        // Checksum verifies over pseudo-header + message.
        let mut acc = ip::sum16(&pkt[8..40], 0) + 32 + u32::from(proto::ICMPV6);
        acc = ip::sum16(&pkt[40..], acc);
        assert_eq!(ip::fold(acc), 0);
        // Hop limit other than 255 is refused.
        let mut bad = pkt.to_vec();
        bad[7] = 64;
        assert_eq!(parse_nd(&bad), None);
    }

    #[test]
    fn request_limiter() {
        let mut l = RequestLimiter::new(16, 1000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.allow(a, 0));
        assert!(!l.allow(a, 500));
        assert!(l.allow(a, 1000));
    }
}
