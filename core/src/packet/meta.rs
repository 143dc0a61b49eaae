//! The per-packet record: everything ingress learns about an IP packet, once,
//! through the checked views of [`crate::wire`], so that policy, MTU, ESP and
//! egress read fields instead of parsing again.
//!
//! Ingress validation is what Linux's `ip_rcv` and VPP's `ip4-input` do: the
//! header is well formed and lies inside the frame, the IPv4 header checksum
//! verifies (the NIC's verdict where it gives one, software otherwise), and
//! a fragment can neither reach past 65 535 bytes nor be a misaligned
//! middle piece.

use crate::drops::DropReason;
use crate::packet::HwChecksum;
use crate::policy::FlowKey;
use crate::wire::{ipv4, ipv6, l4, Ipv4Packet, Ipv6Packet, L4Ports, WireError};

/// Whether a packet is a fragment, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frag {
    /// A whole datagram.
    #[default]
    No,
    /// The first fragment (offset 0): it carries the transport header.
    First,
    /// A later fragment: no transport header, no ports.
    Later,
}

impl Frag {
    pub fn is_fragment(self) -> bool {
        self != Frag::No
    }
}

/// What ingress learned about one IP packet whose buffer starts at the IP
/// header. Offsets are from the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Family, addresses, transport protocol (after IPv6 extension headers)
    /// and ports (0 for protocols without, and for later fragments).
    pub key: FlowKey,
    /// IP total length (IPv6: 40 + payload length).
    pub total_len: u16,
    /// Where the transport header starts (IPv4: the IHL; IPv6: after the
    /// extension headers).
    pub l4_off: u16,
    /// The byte that names the transport protocol (IPv4: 9).
    pub nh_field: u16,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 DF; IPv6 is never fragmented on path, so always true.
    pub df: bool,
    pub frag: Frag,
}

impl Meta {
    /// Validate and record the IP packet at the front of `ip` (the buffer
    /// may be longer: link-layer padding, which the caller trims to
    /// `total_len`). `hw` is the NIC's verdict on the IPv4 checksum.
    #[inline(always)]
    pub fn parse(ip: &[u8], hw: HwChecksum) -> Result<Meta, DropReason> {
        match ip.first().map(|b| b >> 4) {
            Some(4) => Self::parse_v4(ip, hw),
            Some(6) => Self::parse_v6(ip),
            _ => Err(DropReason::BadIp),
        }
    }

    fn parse_v4(ip: &[u8], hw: HwChecksum) -> Result<Meta, DropReason> {
        let mut m = Meta::default();
        Self::parse_v4_into(ip, hw, &mut m)?;
        Ok(m)
    }

    /// [`Self::parse`] writing the record in place (field by field: no
    /// temporary record to copy, which costs store-forwarding stalls when
    /// it is read back at once). On error `out` is left partly written.
    #[inline(always)]
    pub fn parse_into(ip: &[u8], hw: HwChecksum, out: &mut Meta) -> Result<(), DropReason> {
        match ip.first().map(|b| b >> 4) {
            Some(4) => Self::parse_v4_into(ip, hw, out),
            Some(6) => {
                *out = Self::parse_v6(ip)?;
                Ok(())
            }
            _ => Err(DropReason::BadIp),
        }
    }

    #[inline(always)]
    fn parse_v4_into(ip: &[u8], hw: HwChecksum, out: &mut Meta) -> Result<(), DropReason> {
        match Self::parse_v4_plain(ip, hw, out) {
            Some(r) => r,
            None => Self::parse_v4_general(ip, hw, out),
        }
    }

    /// Any IPv4 packet: options, fragments, short packets.
    #[inline]
    fn parse_v4_general(ip: &[u8], hw: HwChecksum, out: &mut Meta) -> Result<(), DropReason> {
        let p = Ipv4Packet::new_checked(ip).map_err(bad_ip)?;
        let ok = match hw {
            HwChecksum::Good => true,
            HwChecksum::Bad => false,
            HwChecksum::Unknown => p.verify_checksum(),
        };
        if !ok {
            return Err(DropReason::BadIpChecksum);
        }
        let (hl, total) = (p.header_len(), p.total_len());
        let frag = if !p.is_fragment() {
            Frag::No
        } else {
            let data = total - hl;
            // RFC 791: the reassembled datagram (header included) fits 65 535
            // bytes; every piece but the last is a multiple of 8.
            if hl + p.frag_offset() + data > 65535 || (p.mf() && (data == 0 || data % 8 != 0)) {
                return Err(DropReason::BadFragment);
            }
            if p.frag_offset() == 0 {
                Frag::First
            } else {
                Frag::Later
            }
        };
        let proto = p.protocol();
        let (sport, dport) = ports(proto, frag, &ip[hl..total]);
        out.key.v6 = false;
        out.key.src = u128::from(u32::from(p.src()));
        out.key.dst = u128::from(u32::from(p.dst()));
        out.key.proto = proto;
        out.key.sport = sport;
        out.key.dport = dport;
        out.total_len = total as u16;
        out.l4_off = hl as u16;
        out.nh_field = 9;
        out.tos = p.tos();
        out.ttl = p.ttl();
        out.df = p.df();
        out.frag = frag;
        Ok(())
    }

    /// The common IPv4 packet in one step: a 20-byte header, not a
    /// fragment, at least 24 bytes long (so that the ports, when its
    /// protocol has them, lie inside it). Reads one fixed 24-byte chunk: one
    /// bounds check instead of one per accessor, and the checksum summed
    /// in line. `None` for every other packet, which the general path
    /// takes; the two agree on every input (unit test and the `wire` fuzz
    /// test `the_plain_path_agrees_with_the_general_one`).
    #[inline(always)]
    fn parse_v4_plain(ip: &[u8], hw: HwChecksum, out: &mut Meta) -> Option<Result<(), DropReason>> {
        let h: &[u8; 24] = ip.first_chunk()?;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let flags_frag = u16::from_be_bytes([h[6], h[7]]);
        if h[0] != 0x45 || total < 24 || total > ip.len() || flags_frag & !ipv4::DF != 0 {
            return None;
        }
        let ok = match hw {
            HwChecksum::Good => true,
            HwChecksum::Bad => false,
            HwChecksum::Unknown => h.first_chunk().is_some_and(ipv4::header_sum_ok),
        };
        if !ok {
            return Some(Err(DropReason::BadIpChecksum));
        }
        let proto = h[9];
        let (sport, dport) = if l4::has_ports(proto) {
            (u16::from_be_bytes([h[20], h[21]]), u16::from_be_bytes([h[22], h[23]]))
        } else {
            (0, 0)
        };
        out.key.v6 = false;
        out.key.src = u128::from(u32::from_be_bytes([h[12], h[13], h[14], h[15]]));
        out.key.dst = u128::from(u32::from_be_bytes([h[16], h[17], h[18], h[19]]));
        out.key.proto = proto;
        out.key.sport = sport;
        out.key.dport = dport;
        out.total_len = total as u16;
        out.l4_off = ipv4::HEADER_LEN as u16;
        out.nh_field = 9;
        out.tos = h[1];
        out.ttl = h[8];
        out.df = flags_frag & ipv4::DF != 0;
        out.frag = Frag::No;
        Some(Ok(()))
    }

    fn parse_v6(ip: &[u8]) -> Result<Meta, DropReason> {
        let p = Ipv6Packet::new_checked(ip).map_err(bad_ip)?;
        let l = p.layout();
        let total = p.total_len();
        // 40 + a payload length reaches 65 575; the record (and every
        // buffer the gateway receives) holds 16 bits.
        if total > usize::from(u16::MAX) {
            return Err(DropReason::BadIp);
        }
        let frag = match l.fragment {
            None => Frag::No,
            Some((at, offset, more)) => {
                let data = total - l.l4_offset;
                // RFC 8200 §4.5: the reassembled payload fits 65 535 bytes;
                // pieces with M set are multiples of 8.
                if (at - ipv6::HEADER_LEN) + offset + data > 65535 || (more && (data == 0 || data % 8 != 0)) {
                    return Err(DropReason::BadFragment);
                }
                if offset == 0 {
                    Frag::First
                } else {
                    Frag::Later
                }
            }
        };
        let proto = l.l4_proto;
        let (sport, dport) = ports(proto, frag, &ip[l.l4_offset..total]);
        Ok(Meta {
            key: FlowKey { v6: true, src: u128::from(p.src()), dst: u128::from(p.dst()), proto, sport, dport },
            total_len: total as u16,
            l4_off: l.l4_offset as u16,
            nh_field: l.nh_field as u16,
            tos: p.traffic_class(),
            ttl: p.hop_limit(),
            df: true,
            frag,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.key.v6
    }

    /// Transport-mode ESP never applies to fragments (RFC 4303 §3.3).
    pub fn is_fragment(&self) -> bool {
        self.frag.is_fragment()
    }

    /// The IPv4 header length / IPv6 header with extension headers.
    pub fn header_len(&self) -> usize {
        usize::from(self.l4_off)
    }
}

fn bad_ip(_: WireError) -> DropReason {
    DropReason::BadIp
}

/// Ports of a first fragment or whole packet of a ported protocol.
fn ports(proto: u8, frag: Frag, l4: &[u8]) -> (u16, u16) {
    if frag == Frag::Later || !l4::has_ports(proto) {
        return (0, 0);
    }
    L4Ports::new_checked(l4).map_or((0, 0), |p| (p.src_port(), p.dst_port()))
}

/// Make an IPv4 header's checksum wrong on purpose (tests).
#[cfg(test)]
pub(crate) fn corrupt_checksum(ip: &mut [u8]) {
    ip[10] ^= 0x5a;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ip::{self, proto};
    use crate::wire::ipv4;

    fn v4(len: usize, flags: u16, tos: u8) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[..20].copy_from_slice(&[0x45, tos, 0, 0, 0, 1, 0, 0, 61, proto::UDP, 0, 0, 10, 0, 1, 5, 10, 0, 2, 6]);
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6..8].copy_from_slice(&flags.to_be_bytes());
        p[20..24].copy_from_slice(&[0x12, 0x34, 0x00, 0x35]);
        ip::ipv4_set_checksum(&mut p[..20]);
        p
    }

    /// An IPv6 packet longer than 65 535 bytes in all (40 + a payload length
    /// above 65 495) cannot be recorded in 16 bits: refused, not truncated.
    #[test]
    fn ipv6_longer_than_16_bits_is_refused() {
        for payload in [65_495usize, 65_496, 65_535] {
            let mut p = vec![0u8; 40 + payload];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
            p[6] = proto::UDP;
            p[7] = 64;
            p[40..48].copy_from_slice(&[0x12, 0x34, 0x00, 0x35, 0, 8, 0, 0]);
            let r = Meta::parse(&p, HwChecksum::Unknown);
            if 40 + payload <= 65_535 {
                assert_eq!(r.map(|m| usize::from(m.total_len)), Ok(40 + payload));
            } else {
                assert_eq!(r, Err(DropReason::BadIp), "payload {payload}");
            }
        }
    }

    #[test]
    fn records_what_policy_mtu_and_esp_need() {
        let p = v4(60, ipv4::DF, 0xb8);
        let m = Meta::parse(&p, HwChecksum::Unknown).unwrap();
        assert_eq!(
            (m.total_len, m.l4_off, m.nh_field, m.tos, m.ttl, m.df, m.frag),
            (60, 20, 9, 0xb8, 61, true, Frag::No)
        );
        assert_eq!((m.key.proto, m.key.sport, m.key.dport, m.key.v6), (proto::UDP, 0x1234, 53, false));
        assert_eq!(m.key.src, 0x0a00_0105);
    }

    #[test]
    fn checksums_are_verified_unless_the_nic_did() {
        let mut p = v4(60, 0, 0);
        corrupt_checksum(&mut p);
        assert_eq!(Meta::parse(&p, HwChecksum::Unknown), Err(DropReason::BadIpChecksum));
        assert_eq!(Meta::parse(&p, HwChecksum::Bad), Err(DropReason::BadIpChecksum));
        assert!(Meta::parse(&p, HwChecksum::Good).is_ok(), "the NIC said good: trusted");
        let good = v4(60, 0, 0);
        assert_eq!(Meta::parse(&good, HwChecksum::Bad), Err(DropReason::BadIpChecksum), "the NIC said bad");
    }

    #[test]
    fn fragments_past_64k_or_misaligned_are_refused() {
        // Offset 65512 with 100 bytes: would end at 65632.
        let far = v4(120, (65512 / 8) as u16, 0);
        assert_eq!(Meta::parse(&far, HwChecksum::Unknown), Err(DropReason::BadFragment));
        // A middle piece of 36 bytes (not a multiple of 8).
        let odd = v4(56, ipv4::MF | 4, 0);
        assert_eq!(Meta::parse(&odd, HwChecksum::Unknown), Err(DropReason::BadFragment));
        // A proper later fragment: no ports.
        let later = v4(60, 8, 0);
        let m = Meta::parse(&later, HwChecksum::Unknown).unwrap();
        assert_eq!((m.frag, m.key.sport, m.key.dport), (Frag::Later, 0, 0));
        let first = v4(60, ipv4::MF, 0);
        assert_eq!(Meta::parse(&first, HwChecksum::Unknown).unwrap().frag, Frag::First);
        // IPv6: offset 65528 + 16 bytes.
        let mut f6 = vec![0x60, 0, 0, 0, 0, 24, proto::FRAGMENT, 64];
        f6.extend_from_slice(&[0; 32]);
        f6.extend_from_slice(&[proto::UDP, 0, 0xff, 0xf8, 0, 0, 0, 1]);
        f6.extend_from_slice(&[0; 16]);
        assert_eq!(Meta::parse(&f6, HwChecksum::Unknown), Err(DropReason::BadFragment));
        f6[42..44].copy_from_slice(&0x0100u16.to_be_bytes());
        assert_eq!(Meta::parse(&f6, HwChecksum::Unknown).unwrap().frag, Frag::Later);
    }

    /// The one-step IPv4 path and the general one give the same record or
    /// the same refusal on every packet the one-step path takes, over
    /// headers mutated byte by byte around the shapes that matter (IHL,
    /// lengths, flags, offset, protocol, checksum).
    #[test]
    fn the_plain_path_agrees_with_the_general_one() {
        let mut rnd64 = crate::test_rng::xorshift(0x2545_f491);
        let mut rnd = move || rnd64() as u32;
        let mut taken = 0;
        for case in 0..200_000 {
            let len = [20, 23, 24, 25, 40, 60, 64][case % 7];
            let mut p = v4(len.max(28), [0, ipv4::DF, ipv4::MF, 8, 0x8000][case % 5], (case % 256) as u8);
            p[9] = [proto::UDP, proto::TCP, proto::ICMP, proto::ESP, 132, 0][case % 6];
            ip::ipv4_set_checksum(&mut p[..20]);
            p.truncate(len.max(20));
            for _ in 0..case % 3 {
                let at = rnd() as usize % p.len().min(24);
                p[at] ^= 1 << (rnd() % 8);
            }
            for hw in [HwChecksum::Unknown, HwChecksum::Good, HwChecksum::Bad] {
                let mut plain = Meta::default();
                let Some(r) = Meta::parse_v4_plain(&p, hw, &mut plain) else { continue };
                taken += 1;
                let mut general = Meta::default();
                let g = Meta::parse_v4_general(&p, hw, &mut general);
                assert_eq!(r, g, "{p:02x?} {hw:?}");
                if r.is_ok() {
                    assert_eq!(plain, general, "{p:02x?}");
                }
            }
        }
        assert!(taken > 50_000, "the one-step path took only {taken}");
    }

    #[test]
    fn malformed_headers_are_bad_ip() {
        assert_eq!(Meta::parse(&[], HwChecksum::Unknown), Err(DropReason::BadIp));
        assert_eq!(Meta::parse(&[0x45; 10], HwChecksum::Unknown), Err(DropReason::BadIp));
        let mut p = v4(60, 0, 0);
        p[3] = 200;
        assert_eq!(Meta::parse(&p, HwChecksum::Unknown), Err(DropReason::BadIp));
    }
}
