//! Bounded reassembly of outer fragments before ESP processing, one table per
//! worker (no sharing, no lock).
//!
//! The budget is counted in what fragments really hold: **buffers** (one
//! mbuf each, whatever its size) and **buffer bytes** (each buffer's whole
//! capacity, not the few frame bytes an 8-byte fragment carries). It is a
//! fixed share of the pool ([`ReasmConfig::for_pool`]), never the whole pool,
//! so RX rings always find buffers. Within it, one source may hold only its
//! share; a source over its share loses its own oldest datagram, and a full
//! table loses the oldest datagram of all. A flood therefore evicts itself,
//! while good traffic — whose datagrams complete within moments — gets
//! through. Fragments per datagram are capped, and every datagram times out.
//!
//! Overlapping fragments drop the whole datagram (RFC 5722 for IPv6; the
//! same rule for IPv4, where overlaps are only ever an attack); exact
//! duplicates are dropped alone. A datagram that would exceed 65 535 bytes
//! is refused (RFC 791, RFC 8200 §4.5).

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::mtu::frag::BufAlloc;
use crate::packet::ip::{self, proto, IPV4_MF, IPV6_HDR_LEN};
use crate::packet::PacketBuf;

/// Reassembly limits, per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasmConfig {
    /// Datagrams in flight (table slots).
    pub max_datagrams: usize,
    /// Fragments one datagram may have.
    pub max_fragments: usize,
    /// Buffers (mbufs) held in all.
    pub max_buffers: usize,
    /// Buffer bytes (capacity, headroom included) held in all.
    pub max_buffer_bytes: usize,
    /// Buffers one source address may hold.
    pub max_buffers_per_source: usize,
    pub timeout_ms: u64,
}

/// Share of the mbuf pool all workers' reassembly may hold together: the
/// rest is for RX rings, TX in flight and new packets.
pub const POOL_SHARE_DIVISOR: usize = 8;
/// Share of a worker's budget one source may hold.
pub const SOURCE_SHARE_DIVISOR: usize = 16;

impl ReasmConfig {
    /// The budget for one of `workers` workers on a pool of `pool_buffers`
    /// buffers of `buffer_bytes` each: 1/8 of the pool, split evenly.
    pub fn for_pool(pool_buffers: u32, buffer_bytes: usize, workers: usize) -> Self {
        let buffers = (pool_buffers as usize / POOL_SHARE_DIVISOR / workers.max(1)).max(16);
        ReasmConfig {
            max_datagrams: buffers.clamp(16, 1024),
            max_fragments: 64,
            max_buffers: buffers,
            max_buffer_bytes: buffers * buffer_bytes,
            max_buffers_per_source: (buffers / SOURCE_SHARE_DIVISOR).max(8),
            timeout_ms: 2000,
        }
    }
}

impl Default for ReasmConfig {
    /// The budget for the default pool (16 383 mbufs of 2 176 bytes), one worker.
    fn default() -> Self {
        Self::for_pool(16383, 2176, 1)
    }
}

pub use crate::drops::ReasmDrop;

/// Fragments freed for someone else's sake while one was pushed, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    /// Evicted to make room in the table or the budget.
    pub evicted: usize,
    /// Evicted because their source was over its share.
    pub source_limit: usize,
    /// Found timed out.
    pub timeout: usize,
}

impl Freed {
    pub fn total(&self) -> usize {
        self.evicted + self.source_limit + self.timeout
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Arrival order among all datagrams: "oldest" must not depend on how
    /// many arrive within one millisecond (a flood fills one easily).
    seq: u64,
    pieces: Vec<Piece<B>>,
    /// Known once the last fragment (MF clear) arrives.
    total: Option<usize>,
    have: usize,
    /// Buffer bytes held (capacities).
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

/// A per-worker reassembly table. Every slot, its piece array and the
/// indexes are allocated once, up front; nothing is allocated per fragment.
pub struct Reassembler<B> {
    cfg: ReasmConfig,
    slots: Vec<Datagram<B>>,
    /// Key → slot.
    index: FxHashMap<Key, usize>,
    /// Source → buffers it holds.
    by_source: FxHashMap<IpAddr, usize>,
    free: Vec<usize>,
    buffers: usize,
    bytes: usize,
    /// The next datagram's arrival number.
    next_seq: u64,
}

impl<B: PacketBuf> Reassembler<B> {
    /// A table with every slot allocated up front.
    pub fn new(cfg: ReasmConfig) -> Self {
        let n = cfg.max_datagrams.max(1);
        let slots = (0..n)
            .map(|_| Datagram {
                active: false,
                key: Key { src: IpAddr::from([0u8; 4]), dst: IpAddr::from([0u8; 4]), id: 0, proto: 0 },
                started_ms: 0,
                seq: 0,
                pieces: Vec::with_capacity(cfg.max_fragments),
                total: None,
                have: 0,
                held_bytes: 0,
                header_len: 0,
                has_first: false,
            })
            .collect();
        let mut index = FxHashMap::default();
        index.reserve(n);
        let mut by_source = FxHashMap::default();
        by_source.reserve(n);
        Reassembler { cfg, slots, index, by_source, free: (0..n).rev().collect(), buffers: 0, bytes: 0, next_seq: 0 }
    }

    /// The limits in force.
    pub fn config(&self) -> &ReasmConfig {
        &self.cfg
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.index.len()
    }

    /// Buffers held.
    pub fn buffers_held(&self) -> usize {
        self.buffers
    }

    /// Buffer bytes held.
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
        let n = d.pieces.len();
        self.buffers -= n;
        self.bytes -= d.held_bytes;
        if let Some(c) = self.by_source.get_mut(&d.key.src) {
            *c -= n;
            if *c == 0 {
                self.by_source.remove(&d.key.src);
            }
        }
        self.index.remove(&d.key);
        d.pieces.clear(); // drops (frees) the fragment buffers
        self.free.push(i);
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

    /// Free everything held (the worker stops); returns fragments freed.
    pub fn clear(&mut self) -> usize {
        (0..self.slots.len()).map(|i| self.release(i)).sum()
    }

    /// The oldest datagram (of `src` only, if given), other than `keep`.
    fn oldest(&self, src: Option<IpAddr>, keep: usize) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, d)| d.active && *i != keep && src.is_none_or(|s| d.key.src == s))
            .min_by_key(|(_, d)| d.seq)
            .map(|(i, _)| i)
    }

    fn drop_datagram(&mut self, i: usize, reason: ReasmDrop) -> ReasmOutcome<B> {
        ReasmOutcome::Dropped { reason, fragments: self.release(i) + 1 }
    }

    /// Take one fragment. `freed` is told how many fragments of other
    /// datagrams were freed meanwhile (evicted, over their source's share,
    /// timed out), each under its own reason.
    pub fn push<A: BufAlloc<Buf = B>>(
        &mut self,
        frag: B,
        now_ms: u64,
        alloc: &mut A,
        freed: &mut Freed,
    ) -> ReasmOutcome<B> {
        let Some(fi) = Self::parse(frag.data()) else {
            return ReasmOutcome::Dropped { reason: ReasmDrop::Malformed, fragments: 1 };
        };
        // The reassembled datagram must fit 65 535 bytes (IPv4: header
        // included; IPv6: the payload length field).
        let too_long = match fi.key.src {
            IpAddr::V4(_) => fi.header_len + fi.off + fi.len > 65535,
            IpAddr::V6(_) => fi.header_len - IPV6_HDR_LEN + fi.off + fi.len > 65535,
        };
        if too_long || (fi.more && fi.len % 8 != 0) || (fi.len == 0 && fi.more) {
            return ReasmOutcome::Dropped { reason: ReasmDrop::Malformed, fragments: 1 };
        }
        let cost = frag.headroom() + frag.len() + frag.tailroom();
        // Find the datagram, or a slot for it.
        let idx = match self.index.get(&fi.key).copied() {
            Some(i) if now_ms.saturating_sub(self.slots[i].started_ms) >= self.cfg.timeout_ms => {
                freed.timeout += self.release(i);
                self.claim(&fi, now_ms, freed)
            }
            Some(i) => i,
            None => self.claim(&fi, now_ms, freed),
        };
        // This source's share, then the whole budget: make room by evicting
        // the oldest datagrams (the source's own first).
        while self.by_source.get(&fi.key.src).copied().unwrap_or(0) + 1 > self.cfg.max_buffers_per_source {
            match self.oldest(Some(fi.key.src), idx) {
                Some(o) => freed.source_limit += self.release(o),
                None => return self.drop_datagram(idx, ReasmDrop::SourceLimit),
            }
        }
        while self.buffers + 1 > self.cfg.max_buffers || self.bytes + cost > self.cfg.max_buffer_bytes {
            match self.oldest(None, idx) {
                Some(o) => freed.evicted += self.release(o),
                // Only this datagram is left and it is already too big.
                None => return self.drop_datagram(idx, ReasmDrop::Evicted),
            }
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
        d.held_bytes += cost;
        d.pieces.push(Piece { off: fi.off, len: fi.len, at: fi.at, buf: frag });
        self.buffers += 1;
        self.bytes += cost;
        *self.by_source.entry(fi.key.src).or_insert(0) += 1;

        let d = &mut self.slots[idx];
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

    /// A slot for a new datagram: a free one, or the oldest one's.
    fn claim(&mut self, fi: &FragInfo, now_ms: u64, freed: &mut Freed) -> usize {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let o = self.oldest(None, usize::MAX).expect("a full table has an oldest datagram");
                freed.evicted += self.release(o);
                self.free.pop().expect("one freed")
            }
        };
        let d = &mut self.slots[i];
        d.active = true;
        d.key = fi.key;
        d.started_ms = now_ms;
        d.seq = self.next_seq;
        self.next_seq += 1;
        d.total = None;
        d.have = 0;
        d.held_bytes = 0;
        d.header_len = 0;
        d.has_first = false;
        self.index.insert(fi.key, i);
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
