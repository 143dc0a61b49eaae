//! Traffic selectors: prefixes, port ranges, and the flow key they match.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP prefix, stored masked. Addresses of both families live in a `u128`
/// (IPv4 in the low 32 bits) so that the lookup tables share one code path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    v6: bool,
    addr: u128,
    /// Precomputed network mask (the lookup checks it on every candidate).
    mask: u128,
    len: u8,
}

impl Prefix {
    /// `addr/len`, host bits cleared. Errors if `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, String> {
        let (v6, width) = match addr {
            IpAddr::V4(_) => (false, 32),
            IpAddr::V6(_) => (true, 128),
        };
        if len > width {
            return Err(format!("prefix length /{len} is longer than {width} bits"));
        }
        let m = mask(len, width);
        Ok(Prefix { v6, addr: to_u128(addr) & m, mask: m, len })
    }

    /// The whole address space of a family.
    pub fn any(v6: bool) -> Prefix {
        Prefix { v6, addr: 0, mask: 0, len: 0 }
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }
    pub fn len(&self) -> u8 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub(crate) fn bits(&self) -> u128 {
        self.addr
    }

    /// Does the prefix contain `a` (same family, bits as from `to_u128`)?
    #[inline]
    pub fn contains_bits(&self, v6: bool, a: u128) -> bool {
        if v6 {
            self.v6 && a & self.mask == self.addr
        } else {
            // An IPv4 prefix's mask and bits live in the low 32 bits, so the
            // 128-bit test is this 32-bit one (asked for every packet).
            !self.v6 && (a as u32) & (self.mask as u32) == self.addr as u32
        }
    }

    /// Does the prefix contain `ip`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_bits(ip.is_ipv6(), to_u128(ip))
    }
}

impl FromStr for Prefix {
    type Err = String;
    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("{a:?} is not an IP address"))?;
        let len = match l {
            Some(l) => l.trim().parse::<u8>().map_err(|_| format!("{l:?} is not a prefix length"))?,
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
        };
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", from_u128(self.v6, self.addr), self.len)
    }
}

/// Network-order mask of `len` leading ones within `width` bits.
#[inline]
pub(crate) fn mask(len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX << (128 - u32::from(len))) >> (128 - u32::from(width))
    }
}

/// An address as bits (IPv4 in the low 32).
#[inline]
pub fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(a.into())
    } else {
        IpAddr::V4((a as u32).into())
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange { lo: 0, hi: u16::MAX };

    pub fn new(lo: u16, hi: u16) -> Result<PortRange, String> {
        if lo > hi {
            return Err(format!("port range {lo}-{hi} is empty"));
        }
        Ok(PortRange { lo, hi })
    }
    pub fn single(p: u16) -> PortRange {
        PortRange { lo: p, hi: p }
    }
    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
    /// Number of ports covered (for "most specific").
    pub fn width(&self) -> u32 {
        u32::from(self.hi - self.lo) + 1
    }
}

impl FromStr for PortRange {
    type Err = String;
    /// `any`, `443`, or `1024-65535`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "any" {
            return Ok(PortRange::ANY);
        }
        let p = |x: &str| x.trim().parse::<u16>().map_err(|_| format!("{x:?} is not a port number"));
        match s.split_once('-') {
            Some((a, b)) => PortRange::new(p(a)?, p(b)?),
            None => Ok(PortRange::single(p(s)?)),
        }
    }
}

/// What an eroute matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selector {
    pub src: Prefix,
    pub dst: Prefix,
    /// IP protocol; `None` = any.
    pub proto: Option<u8>,
    pub sport: PortRange,
    pub dport: PortRange,
}

impl Selector {
    /// A selector from `src` to `dst`, any protocol and port.
    pub fn nets(src: Prefix, dst: Prefix) -> Selector {
        Selector { src, dst, proto: None, sport: PortRange::ANY, dport: PortRange::ANY }
    }

    /// Check the selector is coherent: one family, ports only with a protocol that has them.
    pub fn validate(&self) -> Result<(), String> {
        if self.src.is_v6() != self.dst.is_v6() {
            return Err("source and destination prefixes are of different families".into());
        }
        let ported = self.proto.is_some_and(crate::wire::l4::has_ports);
        if !ported && (self.sport != PortRange::ANY || self.dport != PortRange::ANY) {
            return Err("port ranges need protocol tcp, udp or sctp".into());
        }
        Ok(())
    }

    /// Does `k` match?
    #[inline]
    pub fn matches(&self, k: &FlowKey) -> bool {
        self.dst.contains_bits(k.v6, k.dst)
            && self.src.contains_bits(k.v6, k.src)
            && self.proto.is_none_or(|p| p == k.proto)
            && self.sport.contains(k.sport)
            && self.dport.contains(k.dport)
    }

    /// The selector for traffic in the other direction (inbound check).
    pub fn mirrored(&self) -> Selector {
        Selector { src: self.dst, dst: self.src, proto: self.proto, sport: self.dport, dport: self.sport }
    }
}

/// The fields of a packet that selectors look at. Ports are 0 for protocols
/// without ports and for non-first fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> FlowKey {
        FlowKey { v6: dst.is_ipv6(), src: to_u128(src), dst: to_u128(dst), proto, sport, dport }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-family test equals the plain 128-bit one for prefixes of
    /// both families at every length, against addresses of both families
    /// (IPv4 keys with stray high bits included).
    #[test]
    fn contains_bits_equals_the_128_bit_test() {
        let mut rnd = crate::test_rng::xorshift(0x0123_4567_89ab_cdef);
        for _ in 0..20_000 {
            let v6 = rnd().is_multiple_of(2);
            let bits = (u128::from(rnd()) << 64) | u128::from(rnd());
            let (addr, len): (IpAddr, u8) = if v6 {
                (IpAddr::V6(bits.into()), (rnd() % 129) as u8)
            } else {
                (IpAddr::V4((bits as u32).into()), (rnd() % 33) as u8)
            };
            let p = Prefix::new(addr, len).unwrap();
            for _ in 0..8 {
                let a_v6 = rnd().is_multiple_of(2);
                let near = to_u128(addr) ^ (u128::from(rnd() % 4) << (rnd() % 32));
                let a = match rnd() % 3 {
                    0 => near,
                    1 => (u128::from(rnd()) << 64) | u128::from(rnd()),
                    _ => near | (u128::from(rnd()) << 64),
                };
                let plain = p.v6 == a_v6 && a & p.mask == p.addr;
                assert_eq!(p.contains_bits(a_v6, a), plain, "{addr}/{len} {a:#x} v6={a_v6}");
            }
        }
    }
}
