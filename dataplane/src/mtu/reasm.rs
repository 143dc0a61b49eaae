//! Bounded reassembly of outer fragments before ESP processing, one table per
//! worker (no sharing, no lock).
//!
//! Bounds: datagrams in flight (fixed slot array, allocated once), fragments
//! per datagram, bytes held in all, and a timeout. When full, the oldest
//! datagram is evicted, so a fragment flood costs bounded memory and cannot
//! wedge the table for good traffic. Overlapping fragments drop the whole
//! datagram (RFC 5722 for IPv6; the same rule for IPv4, where overlaps are
//! only ever an attack); exact duplicates are tolerated and dropped alone.

use std::net::IpAddr;

use crate::mtu::frag::BufAlloc;
use crate::packet::ip::{self, proto, IPV4_MF, IPV6_HDR_LEN};
use crate::packet::PacketBuf;

/// Reassembly limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasmConfig {
    pub max_datagrams: usize,
    pub max_fragments: usize,
    pub max_bytes: usize,
    pub timeout_ms: u64,
}

impl Default for ReasmConfig {
    fn default() -> Self {
        ReasmConfig { max_datagrams: 1024, max_fragments: 64, max_bytes: 8 << 20, timeout_ms: 2000 }
    }
}

pub use crate::drops::ReasmDrop;

/// What happened to a pushed fragment.
#[derive(Debug)]
pub enum ReasmOutcome<B> {
    /// The datagram is complete: here it is, as one packet.
    Complete(B),
    /// Kept, waiting for the rest.
    Held,
    /// Dropped: `fragments` fragments (this one included) were freed.
    Dropped { reason: ReasmDrop, fragments: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct Piece<B> {
    off: usize,
    len: usize,
    /// Offset of the fragment's payload inside `buf`.
    at: usize,
    buf: B,
}

struct Datagram<B> {
    active: bool,
    key: Key,
    started_ms: u64,
    pieces: Vec<Piece<B>>,
    /// Known once the last fragment (MF clear) arrives.
    total: Option<usize>,
    have: usize,
    held_bytes: usize,
    /// Unfragmentable header from the first fragment (v4 header or v6 header
    /// without the Fragment header), set when offset 0 arrives.
    header_len: usize,
    has_first: bool,
}

/// The parsed identity and geometry of one fragment.
struct FragInfo {
    key: Key,
    off: usize,
    len: usize,
    more: bool,
    /// Payload start in the fragment.
    at: usize,
    /// Unfragmentable part length (for the reassembled header).
    header_len: usize,
}

/// A per-worker reassembly table. Every slot and its piece array are
/// allocated once, up front; nothing is allocated per fragment.
pub struct Reassembler<B> {
    cfg: ReasmConfig,
    slots: Vec<Datagram<B>>,
    bytes: usize,
}

impl<B: PacketBuf> Reassembler<B> {
    /// A table with every slot allocated up front.
    pub fn new(cfg: ReasmConfig) -> Self {
        let slots = (0..cfg.max_datagrams.max(1))
            .map(|_| Datagram {
                active: false,
                key: Key { src: IpAddr::from([0u8; 4]), dst: IpAddr::from([0u8; 4]), id: 0, proto: 0 },
                started_ms: 0,
                pieces: Vec::with_capacity(cfg.max_fragments),
                total: None,
                have: 0,
                held_bytes: 0,
                header_len: 0,
                has_first: false,
            })
            .collect();
        Reassembler { cfg, slots, bytes: 0 }
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.active).count()
    }

    /// Bytes of fragments held.
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }

    /// Is this packet a fragment (IPv4 MF/offset, or an IPv6 Fragment header)?
    pub fn is_fragment(pkt: &[u8]) -> bool {
        match ip::version(pkt) {
            Some(4) => ip::parse_ipv4(pkt).is_some_and(|i| i.is_fragment()),
            Some(6) => ip::parse_ipv6(pkt).is_some_and(|i| i.fragment),
            _ => false,
        }
    }

    fn parse(pkt: &[u8]) -> Option<FragInfo> {
        match ip::version(pkt)? {
            4 => {
                let i = ip::parse_ipv4(pkt)?;
                let off = usize::from(i.flags_frag & 0x1fff) * 8;
                Some(FragInfo {
                    key: Key {
                        src: IpAddr::from(<[u8; 4]>::try_from(&pkt[12..16]).ok()?),
                        dst: IpAddr::from(<[u8; 4]>::try_from(&pkt[16..20]).ok()?),
                        id: u32::from(u16::from_be_bytes([pkt[4], pkt[5]])),
                        proto: i.protocol,
                    },
                    off,
                    len: i.total_len - i.header_len,
                    more: i.flags_frag & IPV4_MF != 0,
                    at: i.header_len,
                    header_len: i.header_len,
                })
            }
            6 => {
                let i = ip::parse_ipv6(pkt)?;
                // Locate the Fragment header behind HBH/routing/dest-options.
                let mut nh = pkt[6];
                let mut o = IPV6_HDR_LEN;
                loop {
                    match nh {
                        proto::HOPOPT | proto::ROUTING | proto::DSTOPTS => {
                            let l = (usize::from(*pkt.get(o + 1)?) + 1) * 8;
                            nh = pkt[o];
                            o += l;
                        }
                        proto::FRAGMENT => break,
                        _ => return None,
                    }
                    if o > i.total_len {
                        return None;
                    }
                }
                let fh = pkt.get(o..o + 8)?;
                let word = u16::from_be_bytes([fh[2], fh[3]]);
                Some(FragInfo {
                    key: Key {
                        src: IpAddr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?),
                        dst: IpAddr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?),
                        id: u32::from_be_bytes(fh[4..8].try_into().ok()?),
                        proto: fh[0],
                    },
                    off: usize::from(word & !7),
                    len: i.total_len.checked_sub(o + 8)?,
                    more: word & 1 != 0,
                    at: o + 8,
                    header_len: o,
                })
            }
            _ => None,
        }
    }

    /// Free slot `i`'s fragments; returns how many.
    fn release(&mut self, i: usize) -> usize {
        let d = &mut self.slots[i];
        if !d.active {
            return 0;
        }
        d.active = false;
        self.bytes -= d.held_bytes;
        let n = d.pieces.len();
        d.pieces.clear(); // drops (frees) the fragment buffers
        n
    }

    /// Drop datagrams older than the timeout; returns fragments freed.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut freed = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].active && now_ms.saturating_sub(self.slots[i].started_ms) >= self.cfg.timeout_ms {
                freed += self.release(i);
            }
        }
        freed
    }

    fn evict_oldest(&mut self, keep: usize) -> usize {
        let oldest =
            self.slots.iter().enumerate().filter(|(i, d)| d.active && *i != keep).map(|(i, d)| (d.started_ms, i)).min();
        oldest.map_or(0, |(_, i)| self.release(i))
    }

    fn drop_datagram(&mut self, i: usize, reason: ReasmDrop) -> ReasmOutcome<B> {
        ReasmOutcome::Dropped { reason, fragments: self.release(i) + 1 }
    }

    /// Take one fragment. `evicted` is told how many fragments of other
    /// datagrams were freed to make room or timed out (counted as such).
    pub fn push<A: BufAlloc<Buf = B>>(
        &mut self,
        frag: B,
        now_ms: u64,
        alloc: &mut A,
        evicted: &mut usize,
    ) -> ReasmOutcome<B> {
        let Some(fi) = Self::parse(frag.data()) else {
            return ReasmOutcome::Dropped { reason: ReasmDrop::Malformed, fragments: 1 };
        };
        if fi.off + fi.len > 65535 || (fi.more && fi.len % 8 != 0) || (fi.len == 0 && fi.more) {
            return ReasmOutcome::Dropped { reason: ReasmDrop::Malformed, fragments: 1 };
        }
        let size = frag.len();
        // Find the datagram (a linear scan of a fixed table), or a slot for it.
        let idx = match self.slots.iter().position(|d| d.active && d.key == fi.key) {
            Some(i) if now_ms.saturating_sub(self.slots[i].started_ms) >= self.cfg.timeout_ms => {
                *evicted += self.release(i);
                self.claim(i, &fi, now_ms)
            }
            Some(i) => i,
            None => {
                let free = match self.slots.iter().position(|d| !d.active) {
                    Some(f) => f,
                    None => {
                        *evicted += self.evict_oldest(usize::MAX);
                        self.slots.iter().position(|d| !d.active).expect("one freed")
                    }
                };
                self.claim(free, &fi, now_ms)
            }
        };
        while self.bytes + size > self.cfg.max_bytes {
            let freed = self.evict_oldest(idx);
            if freed == 0 {
                // Only this datagram is left and it is already too big.
                return self.drop_datagram(idx, ReasmDrop::Evicted);
            }
            *evicted += freed;
        }

        let max_fragments = self.cfg.max_fragments;
        let d = &self.slots[idx];
        let (lo, hi) = (fi.off, fi.off + fi.len);
        if d.pieces.iter().any(|p| p.off == lo && p.len == fi.len) {
            return ReasmOutcome::Dropped { reason: ReasmDrop::Duplicate, fragments: 1 };
        }
        if d.pieces.iter().any(|p| lo < p.off + p.len && p.off < hi) {
            return self.drop_datagram(idx, ReasmDrop::Overlap);
        }
        let bad_end = if fi.more {
            d.total.is_some_and(|t| hi > t)
        } else {
            d.total.is_some_and(|t| t != hi) || d.pieces.iter().any(|p| p.off + p.len > hi)
        };
        if bad_end {
            return self.drop_datagram(idx, ReasmDrop::Malformed);
        }
        if d.pieces.len() >= max_fragments {
            return self.drop_datagram(idx, ReasmDrop::TooManyFragments);
        }
        let d = &mut self.slots[idx];
        if !fi.more {
            d.total = Some(hi);
        }
        if fi.off == 0 {
            d.has_first = true;
            d.header_len = fi.header_len;
        }
        d.have += fi.len;
        d.held_bytes += size;
        self.bytes += size;
        d.pieces.push(Piece { off: fi.off, len: fi.len, at: fi.at, buf: frag });

        if d.has_first && d.total == Some(d.have) {
            let out = assemble(d, alloc);
            let n = self.release(idx);
            return match out {
                Some(b) => ReasmOutcome::Complete(b),
                None => ReasmOutcome::Dropped { reason: ReasmDrop::NoBuffer, fragments: n },
            };
        }
        ReasmOutcome::Held
    }

    fn claim(&mut self, i: usize, fi: &FragInfo, now_ms: u64) -> usize {
        let d = &mut self.slots[i];
        d.active = true;
        d.key = fi.key;
        d.started_ms = now_ms;
        d.total = None;
        d.have = 0;
        d.held_bytes = 0;
        d.header_len = 0;
        d.has_first = false;
        i
    }
}

/// Build the whole datagram: the first fragment's unfragmentable header with
/// fixed lengths (and, for IPv6, the Fragment header removed), then every
/// piece's payload in order.
fn assemble<B: PacketBuf, A: BufAlloc<Buf = B>>(d: &mut Datagram<B>, alloc: &mut A) -> Option<B> {
    d.pieces.sort_unstable_by_key(|p| p.off);
    let first = &d.pieces[0];
    let hl = d.header_len;
    let total = d.total?;
    let mut out = alloc.alloc(hl + total)?;
    out.append(hl + total).ok()?;
    let o = out.data_mut();
    o[..hl].copy_from_slice(&first.buf.data()[..hl]);
    for p in &d.pieces {
        o[hl + p.off..hl + p.off + p.len].copy_from_slice(&p.buf.data()[p.at..p.at + p.len]);
    }
    if o[0] >> 4 == 4 {
        o[2..4].copy_from_slice(&((hl + total) as u16).to_be_bytes());
        let df = u16::from_be_bytes([o[6], o[7]]) & ip::IPV4_DF;
        o[6..8].copy_from_slice(&df.to_be_bytes());
        ip::ipv4_set_checksum(&mut o[..hl]);
    } else {
        // The Fragment header's next header replaces the field that named it.
        let frag_nh = first.buf.data()[hl];
        let mut nh_field = 6;
        let mut nh = o[6];
        let mut off = IPV6_HDR_LEN;
        while nh != proto::FRAGMENT && off < hl {
            nh_field = off;
            nh = o[off];
            off += (usize::from(o[off + 1]) + 1) * 8;
        }
        o[nh_field] = frag_nh;
        o[4..6].copy_from_slice(&((hl - IPV6_HDR_LEN + total) as u16).to_be_bytes());
    }
    Some(out)
}
