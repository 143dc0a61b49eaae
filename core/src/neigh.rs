//! ARP (RFC 826) and IPv6 neighbour discovery (RFC 4861): answering for the
//! gateway's own addresses, learning neighbours, and asking for next hops.
//!
//! Workers do the packet work; learned (address, MAC) pairs go to the main
//! thread through a lock-free queue, and it republishes the route table with
//! them (the same snapshot discipline as the policy tables).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// The packet formats are checked views in `wire`; this module is the
// behaviour around them.
pub use crate::wire::arp::{build_arp, parse_arp, Arp};
pub use crate::wire::nd::{build_nd, parse_nd, Nd, NA, NS};

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
    use crate::packet::ip::{self, proto};
    use crate::packet::{PacketBuf, VecBuf};
    use crate::wire::ETHERTYPE_ARP;

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
        assert_eq!(u16::from_be_bytes([d[12], d[13]]), ETHERTYPE_ARP);
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
        // Hop limit other than 255 is refused, and so is a wrong checksum.
        let mut bad = pkt.to_vec();
        bad[7] = 64;
        assert_eq!(parse_nd(&bad), None);
        let mut bad = pkt.to_vec();
        bad[60] ^= 1;
        assert_eq!(parse_nd(&bad), None, "a target address the checksum does not cover");
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
