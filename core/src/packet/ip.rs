//! IPv4/IPv6 header helpers over byte slices. Accessors never panic on short
//! input: callers check lengths first (`parse_*` do) and helpers take slices
//! that are long enough by construction.

/// IP protocol numbers espgw cares about.
pub mod proto {
    pub const HOPOPT: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const IPV4: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const SCTP: u8 = 132;
    pub const IPV6: u8 = 41;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const ICMPV6: u8 = 58;
    pub const NONE: u8 = 59;
    pub const DSTOPTS: u8 = 60;

    /// The protocols selectors may name, by config name (one list: parsing
    /// and display both use it).
    pub const NAMES: &[(&str, u8)] =
        &[("tcp", TCP), ("udp", UDP), ("icmp", ICMP), ("icmpv6", ICMPV6), ("sctp", SCTP), ("gre", GRE), ("esp", ESP)];

    /// A protocol by config name.
    pub fn by_name(name: &str) -> Option<u8> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// A protocol's config name, or its number.
    pub fn name(p: u8) -> String {
        NAMES.iter().find(|(_, x)| *x == p).map_or_else(|| p.to_string(), |(n, _)| n.to_string())
    }
}

pub const IPV4_HDR_LEN: usize = 20;
pub const IPV6_HDR_LEN: usize = 40;
/// IPv4 "don't fragment" flag in the flags/offset word.
pub const IPV4_DF: u16 = 0x4000;
/// IPv4 "more fragments" flag.
pub const IPV4_MF: u16 = 0x2000;

/// One's-complement sum of `data` (not yet folded or inverted), added to
/// `acc`. Reads 8 bytes at a time into a 64-bit accumulator (RFC 1071 §2(B):
/// the sum is byte-order independent, so big-endian words can be summed as
/// wider integers and folded at the end).
#[inline]
pub fn sum16(data: &[u8], acc: u32) -> u32 {
    // One's-complement addition: the carry out of bit 63 wraps around.
    #[inline(always)]
    fn add(a: u64, b: u64) -> u64 {
        let (s, c) = a.overflowing_add(b);
        s + u64::from(c)
    }
    let mut sum = u64::from(acc);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        sum = add(sum, u64::from_be_bytes(c.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        sum = add(sum, u64::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [b] = pairs.remainder() {
        sum = add(sum, u64::from(*b) << 8);
    }
    // Fold 64 → 32 bits, keeping the end-around carries.
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    let mut s32 = s as u32;
    s32 = (s32 & 0xffff) + (s32 >> 16);
    s32
}

/// Fold and invert a one's-complement sum into a checksum.
#[inline]
pub fn fold(acc: u32) -> u16 {
    // Two end-around carries reach 16 bits from any u32: the first leaves at
    // most 0xffff + 0xffff, the second at most 0xffff.
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Internet checksum of `data`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// Recompute the IPv4 header checksum in place (`hdr` = the whole header).
#[inline]
pub fn ipv4_set_checksum(hdr: &mut [u8]) {
    hdr[10] = 0;
    hdr[11] = 0;
    // The common option-less header: ten words summed without the generic loop.
    let c = match <&[u8; IPV4_HDR_LEN]>::try_from(&hdr[..]) {
        Ok(h) => {
            let w = |i: usize| u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
            fold(w(0) + w(2) + w(4) + w(6) + w(8) + w(12) + w(14) + w(16) + w(18))
        }
        Err(_) => checksum(hdr),
    };
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Incremental checksum update (RFC 1624 eqn. 3) when a 16-bit word changes.
#[inline]
pub fn checksum_adjust(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    fold(acc)
}

/// IP version of a packet (first nibble), if any byte is there.
#[inline]
pub fn version(pkt: &[u8]) -> Option<u8> {
    pkt.first().map(|b| b >> 4)
}

/// What an IPv4 header says about itself, validated against the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    pub header_len: usize,
    pub total_len: usize,
    pub protocol: u8,
    pub flags_frag: u16,
    pub tos: u8,
}

impl Ipv4Info {
    pub fn df(&self) -> bool {
        self.flags_frag & IPV4_DF != 0
    }
    /// A fragment (first or later) rather than a whole datagram.
    pub fn is_fragment(&self) -> bool {
        self.flags_frag & (IPV4_MF | 0x1fff) != 0
    }
}

/// Parse an IPv4 header through its checked view ([`crate::wire::Ipv4Packet`]):
/// version 4, IHL >= 5, header and total length inside the buffer (the buffer
/// may be longer: link-layer padding).
#[inline]
pub fn parse_ipv4(pkt: &[u8]) -> Option<Ipv4Info> {
    let p = crate::wire::Ipv4Packet::new_checked(pkt).ok()?;
    Some(Ipv4Info {
        header_len: p.header_len(),
        total_len: p.total_len(),
        protocol: p.protocol(),
        flags_frag: p.flags_frag(),
        tos: p.tos(),
    })
}

/// What an IPv6 header says, with the extension headers espgw walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Info {
    /// 40 + payload length.
    pub total_len: usize,
    /// Offset of the first header after the ones walked (HBH, routing, dest opts).
    pub l4_offset: usize,
    /// Protocol at `l4_offset`.
    pub l4_proto: u8,
    /// Offset of the "next header" byte that names `l4_proto` (6 for the base header).
    pub nh_field: usize,
    pub traffic_class: u8,
    /// A Fragment header was met.
    pub fragment: bool,
}

/// Parse an IPv6 header and walk its extension headers, through the checked
/// view ([`crate::wire::Ipv6Packet`]).
#[inline]
pub fn parse_ipv6(pkt: &[u8]) -> Option<Ipv6Info> {
    let p = crate::wire::Ipv6Packet::new_checked(pkt).ok()?;
    let l = p.layout();
    Some(Ipv6Info {
        total_len: p.total_len(),
        l4_offset: l.l4_offset,
        l4_proto: l.l4_proto,
        nh_field: l.nh_field,
        traffic_class: p.traffic_class(),
        fragment: l.fragment.is_some(),
    })
}

/// Set the traffic class of an IPv6 header.
#[inline]
pub fn ipv6_set_traffic_class(hdr: &mut [u8], tc: u8) {
    hdr[0] = 0x60 | (tc >> 4);
    hdr[1] = (tc << 4) | (hdr[1] & 0x0f);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_known_header() {
        // A textbook header (from RFC 1071 style examples, checksum b861).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00,
            0xc7,
        ];
        ipv4_set_checksum(&mut h);
        assert_eq!(&h[10..12], &[0xb8, 0x61]);
        assert_eq!(checksum(&h), 0);
        // Incremental update equals recomputation.
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = 0x3f;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let inc = checksum_adjust(u16::from_be_bytes([h[10], h[11]]), old, new);
        ipv4_set_checksum(&mut h);
        assert_eq!(inc.to_be_bytes(), [h[10], h[11]]);
    }

    /// The 20-byte fast path agrees with the generic sum, carries included.
    #[test]
    fn header_fast_path_matches_generic() {
        let mut rnd = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..5000 {
            let mut h = [0u8; IPV4_HDR_LEN];
            for b in h.iter_mut() {
                let x = rnd();
                *b = if round % 3 == 0 { 0xff } else { x as u8 };
            }
            let mut fast = h;
            ipv4_set_checksum(&mut fast);
            h[10] = 0;
            h[11] = 0;
            assert_eq!(u16::from_be_bytes([fast[10], fast[11]]), checksum(&h), "{h:?}");
            // Headers with options take the generic path.
            let mut long = [0u8; 24];
            long[..20].copy_from_slice(&h);
            ipv4_set_checksum(&mut long);
            assert_eq!(checksum(&long), 0);
        }
    }

    /// The wide sum agrees with a plain 16-bit reference on every length and
    /// on inputs that force carries.
    #[test]
    fn wide_sum_matches_reference() {
        fn reference(d: &[u8]) -> u16 {
            let mut a = 0u32;
            for c in d.chunks(2) {
                a += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
            }
            fold(a)
        }
        let mut x = 0x1234_5678u32;
        for len in 0..300 {
            let d: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if len % 3 == 0 {
                        0xff
                    } else {
                        (x >> 16) as u8
                    }
                })
                .collect();
            assert_eq!(checksum(&d), reference(&d), "len {len}");
            assert_eq!(fold(sum16(&d, 0xfffe)), fold(sum16(&d, 0) + 0xfffe), "len {len} with acc");
        }
    }

    /// Two fixed folds equal folding until no carry is left, on every
    /// 32-bit input shape that has carries to propagate.
    #[test]
    fn fold_matches_the_carry_loop() {
        fn looped(mut a: u32) -> u16 {
            while a >> 16 != 0 {
                a = (a & 0xffff) + (a >> 16);
            }
            !(a as u16)
        }
        let mut rnd = crate::test_rng::xorshift(0x9e37_79b9);
        let edges = [0, 1, 0xffff, 0x1_0000, 0x1_fffe, 0xffff_ffff, 0xffff_0000, 0x0001_ffff, 0xfffe_ffff];
        for a in edges.into_iter().chain((0..100_000).map(|_| rnd() as u32)) {
            assert_eq!(fold(a), looped(a), "{a:#x}");
        }
    }

    #[test]
    fn ipv4_parse_rejects_lies() {
        let mut h = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        h.extend_from_slice(&[0; 8]);
        let i = parse_ipv4(&h).unwrap();
        assert_eq!((i.header_len, i.total_len, i.protocol, i.df(), i.is_fragment()), (20, 28, 17, true, false));
        h[3] = 29; // total length beyond buffer
        assert_eq!(parse_ipv4(&h), None);
        h[3] = 28;
        h[0] = 0x44; // IHL 4
        assert_eq!(parse_ipv4(&h), None);
        h[0] = 0x4f; // IHL 60 > total
        assert_eq!(parse_ipv4(&h), None);
        assert_eq!(parse_ipv4(&h[..10]), None);
        h[0] = 0x45;
        h[6] = 0x20; // MF
        assert!(parse_ipv4(&h).unwrap().is_fragment());
    }

    #[test]
    fn ipv6_walks_extension_headers() {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, proto::HOPOPT, 64];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[proto::ROUTING, 0, 0, 0, 0, 0, 0, 0]); // HBH, 8 bytes
        p.extend_from_slice(&[proto::UDP, 0, 0, 0, 0, 0, 0, 0]); // routing, 8 bytes
        p.extend_from_slice(&[0; 8]); // UDP header
        let i = parse_ipv6(&p).unwrap();
        assert_eq!((i.l4_offset, i.l4_proto, i.nh_field, i.fragment), (56, proto::UDP, 48, false));
        p[5] = 200;
        assert_eq!(parse_ipv6(&p), None);
        p[5] = 24;
        p[41] = 9; // HBH claims 80 bytes
        assert_eq!(parse_ipv6(&p), None);
    }
}
