//! IPv6 headers (RFC 8200) and the extension headers espgw walks.

use std::net::Ipv6Addr;

use super::WireError;
use crate::packet::ip::proto;

pub const HEADER_LEN: usize = 40;
/// Extension headers walked at most (a longer chain is refused).
const MAX_EXT: usize = 8;

/// Where the upper layer starts, as the extension headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Layout {
    /// Offset of the first header after the ones walked (HBH, routing, dest opts, fragment).
    pub l4_offset: usize,
    /// Protocol at `l4_offset`.
    pub l4_proto: u8,
    /// Offset of the "next header" byte that names `l4_proto` (6 for the base header).
    pub nh_field: usize,
    /// The Fragment header, if one was met: (offset of it, offset in bytes, more fragments).
    pub fragment: Option<(usize, usize, bool)>,
}

/// A view of an IPv6 packet whose payload length lies inside the buffer and
/// whose extension header chain has been walked and checked.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
    layout: Ipv6Layout,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        let total = HEADER_LEN + usize::from(u16::from_be_bytes([b[4], b[5]]));
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        let mut nh = b[6];
        let mut nh_field = 6;
        let mut off = HEADER_LEN;
        let mut fragment = None;
        let mut routing = false;
        for _ in 0..MAX_EXT {
            match nh {
                // RFC 8200 §4.1: Hop-by-Hop Options only right after the IPv6
                // header, Routing and Fragment at most once. A chain that
                // breaks this is refused, as Linux refuses it, not guessed at
                // (a second Fragment header would hide one datagram in another).
                proto::HOPOPT if nh_field != 6 => return Err(WireError::Malformed),
                proto::ROUTING if std::mem::replace(&mut routing, true) => return Err(WireError::Malformed),
                proto::FRAGMENT if fragment.is_some() => return Err(WireError::Malformed),
                proto::HOPOPT | proto::ROUTING | proto::DSTOPTS => {
                    let h = b.get(off..off + 2).filter(|_| off + 2 <= total).ok_or(WireError::Truncated)?;
                    let len = (usize::from(h[1]) + 1) * 8;
                    if off + len > total {
                        return Err(WireError::Truncated);
                    }
                    nh_field = off;
                    nh = h[0];
                    off += len;
                }
                proto::FRAGMENT => {
                    if off + 8 > total {
                        return Err(WireError::Truncated);
                    }
                    let h = &b[off..off + 8];
                    let word = u16::from_be_bytes([h[2], h[3]]);
                    fragment = Some((off, usize::from(word & !7), word & 1 != 0));
                    nh_field = off;
                    nh = h[0];
                    off += 8;
                }
                _ => break,
            }
        }
        if matches!(nh, proto::HOPOPT | proto::ROUTING | proto::DSTOPTS | proto::FRAGMENT) {
            return Err(WireError::Malformed);
        }
        Ok(Ipv6Packet { buf, layout: Ipv6Layout { l4_offset: off, l4_proto: nh, nh_field, fragment } })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn layout(&self) -> Ipv6Layout {
        self.layout
    }
    /// 40 + payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }
    pub fn traffic_class(&self) -> u8 {
        (self.b()[0] << 4) | (self.b()[1] >> 4)
    }
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.b()[8..24]).expect("16 bytes, checked"))
    }
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.b()[24..40]).expect("16 bytes, checked"))
    }
    /// The upper-layer bytes, up to the payload length.
    pub fn l4(&self) -> &[u8] {
        &self.b()[self.layout.l4_offset..self.total_len()]
    }
}

/// The meaning of an extension-less IPv6 header, for writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub traffic_class: u8,
    pub hop_limit: u8,
    pub payload_len: usize,
}

impl Ipv6Repr {
    /// Write the 40-byte header at the front of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..HEADER_LEN];
        h[0] = 0x60 | (self.traffic_class >> 4);
        h[1] = self.traffic_class << 4;
        h[2] = 0;
        h[3] = 0;
        h[4..6].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
        h[6] = self.next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_extension_headers_and_refuses_lies() {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, proto::HOPOPT, 64];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[proto::ROUTING, 0, 0, 0, 0, 0, 0, 0]); // HBH, 8 bytes
        p.extend_from_slice(&[proto::UDP, 0, 0, 0, 0, 0, 0, 0]); // routing, 8 bytes
        p.extend_from_slice(&[0; 8]); // UDP header
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.layout(), Ipv6Layout { l4_offset: 56, l4_proto: proto::UDP, nh_field: 48, fragment: None });
        assert_eq!((v.total_len(), v.l4().len(), v.hop_limit()), (64, 8, 64));
        p[5] = 200;
        assert_eq!(Ipv6Packet::new_checked(&p[..]).err(), Some(WireError::Truncated));
        p[5] = 24;
        p[41] = 9; // HBH claims 80 bytes
        assert!(Ipv6Packet::new_checked(&p[..]).is_err());
        // Nine extension headers: refused rather than walked forever.
        let mut long = vec![0x60, 0, 0, 0, 0, 72, proto::DSTOPTS, 64];
        long.extend_from_slice(&[0; 32]);
        for _ in 0..9 {
            long.extend_from_slice(&[proto::DSTOPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(Ipv6Packet::new_checked(&long[..]).err(), Some(WireError::Malformed));
    }

    #[test]
    fn refuses_chains_rfc_8200_forbids() {
        let chain = |hdrs: &[u8]| {
            let mut p = vec![0x60, 0, 0, 0, 0, (hdrs.len() * 8 + 8) as u8, hdrs[0], 64];
            p.extend_from_slice(&[0; 32]);
            for (i, _) in hdrs.iter().enumerate() {
                p.extend_from_slice(&[*hdrs.get(i + 1).unwrap_or(&proto::UDP), 0, 0, 0, 0, 0, 0, 0]);
            }
            p.extend_from_slice(&[0; 8]);
            Ipv6Packet::new_checked(p).map(|v| v.layout().l4_proto)
        };
        let (hbh, rt, frag, dst) = (proto::HOPOPT, proto::ROUTING, proto::FRAGMENT, proto::DSTOPTS);
        assert_eq!(chain(&[hbh, dst, rt, frag, dst]), Ok(proto::UDP));
        // Hop-by-Hop anywhere but first (the fuzzer's input: HBH, HBH, Fragment
        // was held for reassembly by a walker that took it).
        assert_eq!(chain(&[hbh, hbh, frag]), Err(WireError::Malformed));
        assert_eq!(chain(&[dst, hbh]), Err(WireError::Malformed));
        assert_eq!(chain(&[frag, frag]), Err(WireError::Malformed));
        assert_eq!(chain(&[rt, dst, rt]), Err(WireError::Malformed));
    }

    #[test]
    fn fragment_header_and_emit() {
        let mut b = [0u8; 60];
        Ipv6Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: proto::FRAGMENT,
            traffic_class: 0xb8,
            hop_limit: 9,
            payload_len: 20,
        }
        .emit(&mut b);
        b[40..48].copy_from_slice(&[proto::ESP, 0, 0x05, 0x01, 0, 0, 0, 7]); // offset 1280, MF
        let v = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(v.layout().fragment, Some((40, 1280, true)));
        assert_eq!((v.layout().l4_proto, v.traffic_class(), v.hop_limit()), (proto::ESP, 0xb8, 9));
    }
}
