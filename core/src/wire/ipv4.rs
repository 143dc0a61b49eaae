//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::WireError;
use crate::packet::ip::{checksum, fold, sum16};

pub const HEADER_LEN: usize = 20;
/// "Don't fragment" in the flags/offset word.
pub const DF: u16 = 0x4000;
/// "More fragments".
pub const MF: u16 = 0x2000;
/// The fragment offset, in 8-byte units.
pub const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet whose header and total length have been checked
/// against the buffer (which may be longer: link-layer padding).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Version 4, IHL at least 5, header and total length inside the buffer.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if hl < HEADER_LEN || total < hl {
            return Err(WireError::Malformed);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet(buf))
    }

    fn b(&self) -> &[u8] {
        self.0.as_ref()
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[2], self.b()[3]]))
    }
    pub fn tos(&self) -> u8 {
        self.b()[1]
    }
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }
    /// The flags/offset word.
    pub fn flags_frag(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }
    pub fn df(&self) -> bool {
        self.flags_frag() & DF != 0
    }
    pub fn mf(&self) -> bool {
        self.flags_frag() & MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag() & OFFSET_MASK) * 8
    }
    /// A fragment (first or later) rather than a whole datagram.
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (MF | OFFSET_MASK) != 0
    }
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }
    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }
    /// What follows the header, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
    /// Does the header checksum verify?
    pub fn verify_checksum(&self) -> bool {
        let h = self.header();
        match <&[u8; HEADER_LEN]>::try_from(h) {
            // The common option-less header: five 32-bit words.
            Ok(h) => header_sum_ok(h),
            Err(_) => checksum(h) == 0,
        }
    }
}

/// Does an option-less header's checksum verify? The one's-complement sum
/// is independent of byte order (RFC 1071 §2(B)), so the header is summed as
/// five native 32-bit words: a valid header sums to all ones.
#[inline]
pub fn header_sum_ok(h: &[u8; HEADER_LEN]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let s = w(0) + w(4) + w(8) + w(12) + w(16);
    // 2^16 = 1 (mod 0xffff): the folded one's-complement sum is 0xffff
    // exactly when the plain sum is a non-zero multiple of 0xffff. A
    // remainder by a constant is a multiply and shifts, shorter than four
    // dependent folds.
    s != 0 && s % 0xffff == 0
}

/// Decrement the TTL of a checked header (its first 20 bytes) and fix the
/// checksum incrementally. RFC 1624 eqn. 3 with the TTL's word going down
/// by 0x0100 reduces to adding 0x0100 to the checksum with an end-around
/// carry (what Linux's `ip_decrease_ttl` does): two adds instead of the
/// general update's complements and folds. The result equals eqn. 3's for
/// every checksum (tested exhaustively).
#[inline]
pub fn decrement_ttl_in(h: &mut [u8; HEADER_LEN]) {
    h[8] = h[8].wrapping_sub(1);
    let c = u32::from(u16::from_be_bytes([h[10], h[11]])) + 0x0100;
    let c = c + u32::from(c >= 0xffff);
    h[10..12].copy_from_slice(&(c as u16).to_be_bytes());
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Decrement the TTL and fix the checksum incrementally (RFC 1624).
    pub fn decrement_ttl(&mut self) {
        // A checked view holds at least the fixed header.
        if let Some(h) = self.0.as_mut().first_chunk_mut() {
            decrement_ttl_in(h);
        }
    }

    /// Recompute the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.0.as_mut();
        b[10] = 0;
        b[11] = 0;
        let c = checksum(&b[..hl]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// The meaning of an option-less IPv4 header, for writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub tos: u8,
    pub ttl: u8,
    pub ident: u16,
    pub df: bool,
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Write the 20-byte header (checksum included) at the front of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..HEADER_LEN];
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&((HEADER_LEN + self.payload_len) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        h[6..8].copy_from_slice(&(if self.df { DF } else { 0 }).to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10] = 0;
        h[11] = 0;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// An outer IPv4 header whose fixed fields (version, TTL, protocol,
/// addresses) are written and summed once per SA; per packet only TOS,
/// length, identification and DF change, and the checksum comes from the
/// precomputed partial sum — no pass over a header just written (which
/// stalls on store-to-load forwarding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Template {
    header: [u8; HEADER_LEN],
    /// One's-complement sum of the fixed words.
    partial: u32,
}

impl Ipv4Template {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ttl: u8) -> Self {
        let mut header = [0u8; HEADER_LEN];
        header[0] = 0x45;
        header[8] = ttl;
        header[9] = protocol;
        header[12..16].copy_from_slice(&src.octets());
        header[16..20].copy_from_slice(&dst.octets());
        // Words 0 (version/IHL; TOS added per packet), 4 (TTL/protocol), 6..10 (addresses).
        let partial = sum16(&[0x45, 0], sum16(&header[8..10], sum16(&header[12..20], 0)));
        Ipv4Template { header, partial }
    }

    /// Write the header for one packet into `h` (20 bytes).
    #[inline]
    pub fn emit(&self, h: &mut [u8], tos: u8, total_len: u16, ident: u16, df: bool) {
        let flags = if df { DF } else { 0 };
        let sum = self.partial + u32::from(tos) + u32::from(total_len) + u32::from(ident) + u32::from(flags);
        let mut out = self.header;
        out[1] = tos;
        out[2..4].copy_from_slice(&total_len.to_be_bytes());
        out[4..6].copy_from_slice(&ident.to_be_bytes());
        out[6..8].copy_from_slice(&flags.to_be_bytes());
        out[10..12].copy_from_slice(&fold(sum).to_be_bytes());
        h[..HEADER_LEN].copy_from_slice(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ip::checksum_adjust;

    #[test]
    fn ttl_decrement_matches_rfc1624_for_every_checksum() {
        for csum in 0..=u16::MAX {
            for ttl in [2u8, 3, 64, 128, 255] {
                for proto in [1u8, 6, 17, 50] {
                    let mut h = [0u8; HEADER_LEN];
                    h[8] = ttl;
                    h[9] = proto;
                    h[10..12].copy_from_slice(&csum.to_be_bytes());
                    decrement_ttl_in(&mut h);
                    let old = u16::from_be_bytes([ttl, proto]);
                    let want = checksum_adjust(csum, old, old - 0x0100);
                    assert_eq!(h[8], ttl - 1);
                    assert_eq!(u16::from_be_bytes([h[10], h[11]]), want, "checksum {csum:#06x}, ttl {ttl}");
                }
            }
        }
    }

    /// The remainder test agrees with the plain RFC 1071 checksum on valid
    /// headers, on headers one bit off, and on the all-zero and all-ones
    /// extremes.
    #[test]
    fn header_sum_ok_agrees_with_the_checksum() {
        let mut rnd = crate::test_rng::xorshift(0x1234_5678_9abc_def1);
        let mut cases: Vec<[u8; HEADER_LEN]> = vec![[0; HEADER_LEN], [0xff; HEADER_LEN]];
        for k in 0..50_000 {
            let mut h = [0u8; HEADER_LEN];
            let mut x = 0;
            for b in h.iter_mut() {
                x = rnd();
                *b = x as u8;
            }
            if k % 2 == 0 {
                crate::packet::ip::ipv4_set_checksum(&mut h);
                if k % 4 == 0 {
                    h[(x as usize >> 8) % HEADER_LEN] ^= 1 << (x % 8);
                }
            }
            cases.push(h);
        }
        for h in cases {
            assert_eq!(header_sum_ok(&h), crate::packet::ip::checksum(&h) == 0, "{h:02x?}");
        }
    }

    #[test]
    fn checked_view_rejects_lies_and_reads_fields() {
        let mut h = vec![0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        h.extend_from_slice(&[0; 8]);
        let c = checksum(&h[..20]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!((p.header_len(), p.total_len(), p.protocol(), p.df(), p.is_fragment()), (20, 28, 17, true, false));
        assert_eq!(
            (p.ident(), p.ttl(), p.src(), p.dst()),
            (0x1234, 64, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
        let mut bad = h.clone();
        bad[3] = 29;
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).err(), Some(WireError::Truncated));
        bad[3] = 28;
        bad[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).err(), Some(WireError::Malformed));
        bad[0] = 0x4f;
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).err(), Some(WireError::Malformed), "IHL 60 > total");
        assert!(Ipv4Packet::new_checked(&h[..10]).is_err());
        let mut wrong = h.clone();
        wrong[15] ^= 1;
        assert!(!Ipv4Packet::new_checked(&wrong[..]).unwrap().verify_checksum());
        // TTL decrement keeps the checksum right.
        let mut m = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        m.decrement_ttl();
        assert_eq!(m.ttl(), 63);
        assert!(m.verify_checksum());
    }

    #[test]
    fn template_equals_a_full_emit() {
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let src = Ipv4Addr::from(x);
            let dst = Ipv4Addr::from(x.rotate_left(7) ^ 0xffff_0000);
            let (tos, len, id, df) = ((x >> 3) as u8, (x >> 8) as u16 | 20, (x >> 16) as u16, x & 1 == 0);
            let t = Ipv4Template::new(src, dst, 50, (x >> 24) as u8);
            let mut a = [0u8; 20];
            t.emit(&mut a, tos, len, id, df);
            let mut b = [0u8; 20];
            Ipv4Repr {
                src,
                dst,
                protocol: 50,
                tos,
                ttl: (x >> 24) as u8,
                ident: id,
                df,
                payload_len: usize::from(len) - 20,
            }
            .emit(&mut b);
            assert_eq!(a, b);
        }
    }
}
