//! ICMP "fragmentation needed" (RFC 792/1191) and ICMPv6 "Packet Too Big"
//! (RFC 4443/8201): building them for senders whose packets do not fit the
//! tunnel, and reading them when the outer path reports our ESP packets too big.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::ip::{self, proto, IPV4_HDR_LEN, IPV6_HDR_LEN};
use crate::packet::PacketBuf;

/// Largest ICMPv4 error we send (RFC 1812 §4.3.2.3: as much of the original
/// as fits in 576 bytes).
pub const ICMP4_MAX: usize = 576;
/// Largest ICMPv6 error (RFC 4443 §2.4(c): the minimum IPv6 MTU).
pub const ICMP6_MAX: usize = 1280;

/// May we answer this packet with an ICMP error at all? Never for ICMP
/// errors themselves, non-first fragments, or multicast/broadcast/unspecified
/// sources (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
pub fn may_answer(pkt: &[u8]) -> bool {
    match ip::version(pkt) {
        Some(4) => {
            let Some(i) = ip::parse_ipv4(pkt) else { return false };
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            if i.flags_frag & 0x1fff != 0
                || src.is_unspecified()
                || src.is_broadcast()
                || src.is_multicast()
                || dst.is_multicast()
                || dst.is_broadcast()
            {
                return false;
            }
            if i.protocol == proto::ICMP {
                // Only queries (echo etc.) may be answered, never errors.
                let t = pkt.get(i.header_len).copied().unwrap_or(3);
                return matches!(t, 0 | 8 | 13 | 14 | 17 | 18);
            }
            true
        }
        Some(6) => {
            let Some(i) = ip::parse_ipv6(pkt) else { return false };
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).expect("16"));
            if src.is_unspecified() || src.is_multicast() {
                return false;
            }
            if i.l4_proto == proto::ICMPV6 {
                // Errors are types 0..127.
                return pkt.get(i.l4_offset).is_some_and(|&t| t >= 128);
            }
            true
        }
        _ => false,
    }
}

/// Write an ICMPv4 type 3 code 4 into `out` (which must be empty with
/// headroom/tailroom for up to 576 bytes): from `src` to the sender of
/// `orig`, announcing `mtu`, quoting `orig` as far as 576 bytes allow.
pub fn build_frag_needed<B: PacketBuf>(orig: &[u8], mtu: u16, src: Ipv4Addr, id: u16, out: &mut B) -> Option<()> {
    let info = ip::parse_ipv4(orig)?;
    let quote = info.total_len.min(ICMP4_MAX - IPV4_HDR_LEN - 8);
    let len = IPV4_HDR_LEN + 8 + quote;
    out.set_len(len).ok()?;
    let d = out.data_mut();
    d[..IPV4_HDR_LEN].copy_from_slice(&[0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, proto::ICMP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    d[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    d[4..6].copy_from_slice(&id.to_be_bytes());
    d[12..16].copy_from_slice(&src.octets());
    d[16..20].copy_from_slice(&orig[12..16]);
    ip::ipv4_set_checksum(&mut d[..IPV4_HDR_LEN]);
    let icmp = &mut d[IPV4_HDR_LEN..];
    icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&orig[..quote]);
    let c = ip::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// Write an ICMPv6 Packet Too Big (type 2) into `out`: from `src` to the
/// sender of `orig`, announcing `mtu`, quoting as much as fits in 1280 bytes.
pub fn build_packet_too_big<B: PacketBuf>(orig: &[u8], mtu: u32, src: Ipv6Addr, out: &mut B) -> Option<()> {
    let info = ip::parse_ipv6(orig)?;
    let quote = info.total_len.min(ICMP6_MAX - IPV6_HDR_LEN - 8);
    let len = IPV6_HDR_LEN + 8 + quote;
    out.set_len(len).ok()?;
    let d = out.data_mut();
    d[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, proto::ICMPV6, 64]);
    d[4..6].copy_from_slice(&((8 + quote) as u16).to_be_bytes());
    d[8..24].copy_from_slice(&src.octets());
    d[24..40].copy_from_slice(&orig[8..24]);
    let (hdr, icmp) = d.split_at_mut(IPV6_HDR_LEN);
    icmp[..8].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&orig[..quote]);
    let c = icmp6_checksum(hdr, icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// ICMPv6 checksum over the pseudo-header (RFC 8200 §8.1) and the message.
pub fn icmp6_checksum(ip6: &[u8], icmp: &[u8]) -> u16 {
    let mut acc = ip::sum16(&ip6[8..40], 0);
    acc += icmp.len() as u32;
    acc += u32::from(proto::ICMPV6);
    let mut acc = ip::sum16(&icmp[..2], acc);
    acc = ip::sum16(&icmp[4..], acc);
    ip::fold(acc)
}

/// A "too big" report about one of our ESP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBigReport {
    /// SPI of the quoted ESP packet.
    pub spi: u32,
    /// The quoted packet was ESP in UDP (NAT-T).
    pub udp: bool,
    /// The MTU the reporter announced.
    pub mtu: u32,
    /// Outer source and destination of the quoted packet (ours and the peer's).
    pub quoted_src: IpAddr,
    pub quoted_dst: IpAddr,
}

/// Is `pkt` an ICMP need-frag / ICMPv6 PTB that quotes an ESP packet? Then
/// what does it say. Anything else (or a malformed report) gives `None`.
pub fn parse_too_big(pkt: &[u8]) -> Option<TooBigReport> {
    match ip::version(pkt)? {
        4 => {
            let i = ip::parse_ipv4(pkt)?;
            if i.protocol != proto::ICMP || i.is_fragment() {
                return None;
            }
            let icmp = &pkt[i.header_len..i.total_len];
            if icmp.len() < 8 || icmp[0] != 3 || icmp[1] != 4 {
                return None;
            }
            let mtu = u32::from(u16::from_be_bytes([icmp[6], icmp[7]]));
            let q = &icmp[8..];
            // The quote is truncated by design: parse without the length check.
            if q.len() < IPV4_HDR_LEN || q[0] >> 4 != 4 {
                return None;
            }
            let qh = usize::from(q[0] & 0x0f) * 4;
            if qh < IPV4_HDR_LEN {
                return None;
            }
            Some(TooBigReport {
                spi: quoted_spi(q[9], q.get(qh..)?)?,
                udp: q[9] == proto::UDP,
                mtu,
                quoted_src: IpAddr::from(<[u8; 4]>::try_from(&q[12..16]).ok()?),
                quoted_dst: IpAddr::from(<[u8; 4]>::try_from(&q[16..20]).ok()?),
            })
        }
        6 => {
            let i = ip::parse_ipv6(pkt)?;
            if i.l4_proto != proto::ICMPV6 {
                return None;
            }
            let icmp = &pkt[i.l4_offset..i.total_len];
            if icmp.len() < 8 || icmp[0] != 2 {
                return None;
            }
            let mtu = u32::from_be_bytes(icmp[4..8].try_into().ok()?);
            let q = &icmp[8..];
            if q.len() < IPV6_HDR_LEN || q[0] >> 4 != 6 {
                return None;
            }
            Some(TooBigReport {
                spi: quoted_spi(q[6], &q[IPV6_HDR_LEN..])?,
                udp: q[6] == proto::UDP,
                mtu,
                quoted_src: IpAddr::from(<[u8; 16]>::try_from(&q[8..24]).ok()?),
                quoted_dst: IpAddr::from(<[u8; 16]>::try_from(&q[24..40]).ok()?),
            })
        }
        _ => None,
    }
}

/// The SPI of a quoted ESP packet: right after the IP header, or after the
/// UDP header of ESP in UDP (RFC 3948; the quote must reach it — RFC 1812
/// routers quote as much as fits, an 8-byte RFC 792 quote does not).
fn quoted_spi(protocol: u8, l4: &[u8]) -> Option<u32> {
    let at = match protocol {
        proto::ESP => 0,
        proto::UDP => crate::esp::natt::UDP_HDR_LEN,
        _ => return None,
    };
    let spi = u32::from_be_bytes(l4.get(at..at + 4)?.try_into().ok()?);
    // SPI 0 in UDP is the non-ESP marker (IKE), not ours.
    (spi != 0).then_some(spi)
}

/// Per-source token bucket for ICMP errors, fixed size (no allocation after
/// creation): a hash of the source picks a slot; a colliding source takes the
/// slot over. `rate` errors per second per source, bursts of `burst`.
#[derive(Debug)]
pub struct IcmpRateLimiter {
    slots: Box<[(u128, u32, u64)]>,
    rate_per_s: u32,
    burst: u32,
}

impl IcmpRateLimiter {
    pub fn new(slots: usize, rate_per_s: u32, burst: u32) -> Self {
        IcmpRateLimiter {
            slots: vec![(u128::MAX, 0, 0); slots.max(1)].into_boxed_slice(),
            rate_per_s,
            burst: burst.max(1),
        }
    }

    /// May we send one more error to `src` at `now_ms`?
    pub fn allow(&mut self, src: u128, now_ms: u64) -> bool {
        let h = (src ^ (src >> 64)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 64;
        let i = (h as usize) % self.slots.len();
        let (key, tokens, last) = &mut self.slots[i];
        if *key != src {
            *key = src;
            *tokens = self.burst;
            *last = now_ms;
        } else {
            let refill = now_ms.saturating_sub(*last) * u64::from(self.rate_per_s) / 1000;
            if refill > 0 {
                *tokens = (u64::from(*tokens) + refill).min(u64::from(self.burst)) as u32;
                *last = now_ms;
            }
        }
        if *tokens > 0 {
            *tokens -= 1;
            true
        } else {
            false
        }
    }
}
