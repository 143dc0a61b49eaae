//! IPv6 neighbour discovery (RFC 4861): neighbour solicitations and
//! advertisements, parsed through the checked IPv6 view (hop limit 255:
//! from the link itself), written with their link-layer option.

use std::net::Ipv6Addr;

use crate::mtu::icmp::icmp6_checksum;
use crate::packet::ip::{self, proto};
use crate::packet::PacketBuf;

/// ICMPv6 neighbour solicitation / advertisement.
pub const NS: u8 = 135;
pub const NA: u8 = 136;

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
    // RFC 4861 §7.1: a message whose ICMPv6 checksum is wrong is discarded
    // (it must not teach us a neighbour or draw an answer).
    let acc = ip::sum16(&pkt[8..40], m.len() as u32 + u32::from(proto::ICMPV6));
    if ip::fold(ip::sum16(m, acc)) != 0 {
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
