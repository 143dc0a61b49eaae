//! NAT traversal: UDP-encapsulated ESP (RFC 3948).
//!
//! Outbound, an SA with [`UdpEncap`] puts a UDP header between the outer IP
//! header and ESP (IPv4 checksum 0 as §2.1 allows; IPv6 computed, RFC 8200
//! §8.1 forbids 0). Inbound, what arrives on a NAT-T port of the gateway is
//! told apart by its first bytes ([`classify`]): the one-byte NAT-keepalive
//! (§2.3), IKE behind the four-byte non-ESP marker (SPI 0, RFC 3948 §2.2),
//! or ESP, which goes to its SA like plain ESP; the SA must be a UDP one (and
//! plain ESP must not reach a UDP SA), its decapsulation skips the UDP header,
//! and the address and port an authenticated packet came from are checked
//! against the SA's (a NAT rebinding).
//!
//! Transport mode over a NAT: the inner TCP/UDP checksum was computed by the
//! peer over its own (private) address, which the NAT rewrote in the outer
//! header; after decryption it is recomputed over the addresses the packet
//! now carries ([`fix_l4_checksum`]; RFC 3948 §3.1.2 lets the receiver
//! recompute, and ESP's integrity check has already vouched for the data).

use crate::packet::ip::{self, proto};
use crate::packet::Meta;

/// The IANA port for IKE and ESP-in-UDP (RFC 3948 §2).
pub const NAT_T_PORT: u16 = 4500;
/// UDP header length.
pub const UDP_HDR_LEN: usize = 8;
/// The NAT-keepalive payload (RFC 3948 §2.3).
pub const KEEPALIVE: u8 = 0xff;

/// UDP encapsulation of an SA: the ports on our side and the peer's.
/// Outbound: source = `local_port`, destination = `remote_port`; inbound the
/// other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpEncap {
    pub local_port: u16,
    pub remote_port: u16,
}

impl Default for UdpEncap {
    fn default() -> Self {
        UdpEncap { local_port: NAT_T_PORT, remote_port: NAT_T_PORT }
    }
}

/// What a datagram to a NAT-T port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NattKind {
    /// The one-byte 0xFF NAT-keepalive: consumed.
    Keepalive,
    /// IKE: the non-ESP marker (four zero bytes where an SPI would be).
    Ike,
    /// An ESP packet with this SPI.
    Esp { spi: u32 },
    /// Too short for either (or a one-byte payload that is not 0xFF).
    Malformed,
}

/// Tell a NAT-T datagram's payload apart (RFC 3948 §2.2: the SPI field
/// never holds 0 for ESP; an ESP header needs SPI and sequence number).
pub fn classify(udp_payload: &[u8]) -> NattKind {
    match udp_payload {
        [KEEPALIVE] => NattKind::Keepalive,
        [0, 0, 0, 0, ..] => NattKind::Ike,
        [a, b, c, d, _, _, _, _, ..] => NattKind::Esp { spi: u32::from_be_bytes([*a, *b, *c, *d]) },
        _ => NattKind::Malformed,
    }
}

/// The UDP payload of a whole (unfragmented) UDP packet described by `m`, if
/// the UDP length agrees with the IP length.
pub fn udp_payload<'a>(pkt: &'a [u8], m: &Meta) -> Option<&'a [u8]> {
    let l4 = pkt.get(m.header_len()..usize::from(m.total_len))?;
    let len = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
    if len != l4.len() || len < UDP_HDR_LEN {
        return None;
    }
    l4.get(UDP_HDR_LEN..)
}

/// Bytes the UDP encapsulation adds (0 without it).
#[inline]
pub fn encap_len(encap: Option<UdpEncap>) -> usize {
    if encap.is_some() {
        UDP_HDR_LEN
    } else {
        0
    }
}

/// Write the UDP header at `udp` for a datagram of `udp_len` bytes; the
/// checksum is left 0 (IPv4; IPv6 fills it after sealing, [`set_udp_checksum_v6`]).
#[inline]
pub fn write_udp_header(udp: &mut [u8], e: UdpEncap, udp_len: usize) {
    udp[0..2].copy_from_slice(&e.local_port.to_be_bytes());
    udp[2..4].copy_from_slice(&e.remote_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
}

/// The checksum of a UDP/TCP segment over the IPv4/IPv6 pseudo-header
/// (`seg`'s own checksum field must be 0).
pub fn l4_checksum(v6: bool, src: &[u8], dst: &[u8], protocol: u8, seg: &[u8]) -> u16 {
    let mut acc = ip::sum16(src, 0);
    acc = ip::sum16(dst, acc);
    acc = if v6 {
        ip::sum16(&(seg.len() as u32).to_be_bytes(), ip::sum16(&[0, 0, 0, protocol], acc))
    } else {
        ip::sum16(&[0, protocol], ip::sum16(&(seg.len() as u16).to_be_bytes(), acc))
    };
    let c = ip::fold(ip::sum16(seg, acc));
    // UDP sends a computed 0 as 0xFFFF (0 means "none").
    if c == 0 && protocol == proto::UDP {
        0xffff
    } else {
        c
    }
}

/// Fill the UDP checksum of the IPv6 packet `pkt` whose UDP header is at `udp_off`.
pub fn set_udp_checksum_v6(pkt: &mut [u8], udp_off: usize) {
    pkt[udp_off + 6] = 0;
    pkt[udp_off + 7] = 0;
    let (h, seg) = pkt.split_at_mut(udp_off);
    let c = l4_checksum(true, &h[8..24], &h[24..40], proto::UDP, seg);
    seg[6..8].copy_from_slice(&c.to_be_bytes());
}

/// Recompute the TCP/UDP checksum of a whole packet described by `m` over
/// the addresses it carries now (transport mode behind a NAT, see the
/// module documentation). An IPv4 UDP checksum of 0 ("none") stays 0; other
/// protocols and fragments are left alone.
pub fn fix_l4_checksum(pkt: &mut [u8], m: &Meta) {
    let off = match m.key.proto {
        proto::TCP => 16,
        proto::UDP => 6,
        _ => return,
    };
    if m.is_fragment() {
        return;
    }
    let (hl, total) = (m.header_len(), usize::from(m.total_len));
    let Some(seg_len) = total.checked_sub(hl) else { return };
    if seg_len < off + 2 || pkt.len() < total {
        return;
    }
    if m.key.proto == proto::UDP && !m.is_v6() && pkt[hl + 6..hl + 8] == [0, 0] {
        return;
    }
    pkt[hl + off] = 0;
    pkt[hl + off + 1] = 0;
    let (h, rest) = pkt.split_at_mut(hl);
    let seg = &mut rest[..seg_len];
    let c = if m.is_v6() {
        l4_checksum(true, &h[8..24], &h[24..40], m.key.proto, seg)
    } else {
        l4_checksum(false, &h[12..16], &h[16..20], m.key.proto, seg)
    };
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HwChecksum;

    fn udp_v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        ip::ipv4_set_checksum(&mut p[..20]);
        p
    }

    #[test]
    fn classify_tells_keepalive_ike_and_esp_apart() {
        assert_eq!(classify(&[0xff]), NattKind::Keepalive);
        assert_eq!(classify(&[0x00]), NattKind::Malformed);
        assert_eq!(classify(&[]), NattKind::Malformed);
        assert_eq!(classify(&[0, 0, 0, 0]), NattKind::Ike);
        assert_eq!(classify(&[0, 0, 0, 0, 1, 2, 3]), NattKind::Ike);
        assert_eq!(classify(&[0, 0, 1, 0, 0, 0, 0]), NattKind::Malformed, "SPI without a sequence number");
        assert_eq!(classify(&[0, 0, 1, 0, 0, 0, 0, 1]), NattKind::Esp { spi: 0x100 });
        assert_eq!(classify(&[0xff, 0xff]), NattKind::Malformed);
    }

    #[test]
    fn udp_payload_refuses_length_lies() {
        let mut p = udp_v4([1, 1, 1, 1], [2, 2, 2, 2], 4500, 4500, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let m = Meta::parse(&p, HwChecksum::Unknown).unwrap();
        p[24..26].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(udp_payload(&p, &m), None);
        p[24..26].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(udp_payload(&p, &m), None);
    }

    #[test]
    fn l4_checksum_matches_an_independent_sum() {
        // RFC 768 by hand: pseudo header + header + data, 16-bit words.
        let p = udp_v4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"hello");
        let mut words: u32 = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 13;
        for c in p[20..].chunks(2) {
            words += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while words >> 16 != 0 {
            words = (words & 0xffff) + (words >> 16);
        }
        let want = !(words as u16);
        assert_eq!(l4_checksum(false, &p[12..16], &p[16..20], 17, &p[20..]), want);
        // With the checksum in place, a receiver's sum verifies to 0.
        let mut q = p.clone();
        q[26..28].copy_from_slice(&want.to_be_bytes());
        let mut r = q.clone();
        r[12] = 172; // a NAT rewrote the source
        ip::ipv4_set_checksum(&mut r[..20]);
        let rm = Meta::parse(&r, HwChecksum::Unknown).unwrap();
        fix_l4_checksum(&mut r, &rm);
        let c = u16::from_be_bytes([r[26], r[27]]);
        r[26] = 0;
        r[27] = 0;
        assert_eq!(l4_checksum(false, &r[12..16], &r[16..20], 17, &r[20..]), c);
        assert_ne!(c, want);
    }

    #[test]
    fn fix_leaves_a_zero_ipv4_udp_checksum_alone() {
        let mut p = udp_v4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, b"x");
        let m = Meta::parse(&p, HwChecksum::Unknown).unwrap();
        fix_l4_checksum(&mut p, &m);
        assert_eq!(&p[26..28], &[0, 0]);
    }
}
