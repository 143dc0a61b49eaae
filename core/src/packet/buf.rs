//! The packet buffer abstraction the whole pipeline is written against.
//!
//! Implemented by [`VecBuf`] (plain memory, for unit tests and tools) and by
//! `espgw_dpdk::Mbuf` (a single-segment DPDK mbuf). Everything above this trait is
//! pure Rust that never needs EAL to be tested.

use thiserror::Error;

/// Why a buffer could not be resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BufError {
    /// Not enough headroom in front of the data.
    #[error("not enough headroom")]
    NoHeadroom,
    /// Not enough tailroom behind the data.
    #[error("not enough tailroom")]
    NoTailroom,
    /// Asked to remove more bytes than the packet has.
    #[error("packet shorter than requested cut")]
    TooShort,
}

/// What the NIC found when it checked a received IPv4 header checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HwChecksum {
    /// Not checked (no offload, not IPv4, or not a received packet):
    /// software verifies.
    #[default]
    Unknown,
    Good,
    Bad,
}

/// A contiguous packet with room to grow at both ends. Implementations give
/// exclusive access: `data_mut` never writes bytes another owner can see.
pub trait PacketBuf {
    /// The packet bytes.
    fn data(&self) -> &[u8];
    /// The packet bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Bytes free in front of the data.
    fn headroom(&self) -> usize;
    /// Bytes free behind the data.
    fn tailroom(&self) -> usize;
    /// Grow the packet by `n` bytes at the front. The new bytes hold whatever
    /// was there; the caller writes them.
    fn prepend(&mut self, n: usize) -> Result<(), BufError>;
    /// Grow the packet by `n` bytes at the back (contents unspecified).
    fn append(&mut self, n: usize) -> Result<(), BufError>;
    /// Remove `n` bytes from the front.
    fn adj(&mut self, n: usize) -> Result<(), BufError>;
    /// Remove `n` bytes from the back.
    fn trim(&mut self, n: usize) -> Result<(), BufError>;

    /// Keep only the `len` bytes that start `off` bytes into the packet (a
    /// header stripped and link padding dropped in one step). Equivalent to
    /// `trim(self.len() - off - len)` then `adj(off)`, checked once.
    fn narrow(&mut self, off: usize, len: usize) -> Result<(), BufError> {
        let cut = self.len().checked_sub(off).and_then(|r| r.checked_sub(len)).ok_or(BufError::TooShort)?;
        self.trim(cut)?;
        self.adj(off)
    }

    /// Open `head` bytes in front of the packet and make it `len` bytes long
    /// from its new start (ESP: headers in front, trailer behind, link
    /// padding gone). Equivalent to `prepend(head)` then growing or trimming
    /// the back, checked once; on error nothing changed.
    fn reframe(&mut self, head: usize, len: usize) -> Result<(), BufError> {
        if head > self.headroom() {
            return Err(BufError::NoHeadroom);
        }
        let now = self.len() + head;
        if len > now && len - now > self.tailroom() {
            return Err(BufError::NoTailroom);
        }
        self.prepend(head)?;
        if len >= now {
            self.append(len - now)
        } else {
            self.trim(now - len)
        }
    }

    /// The NIC's verdict on the IPv4 header checksum, where it offers one.
    fn hw_ip_checksum(&self) -> HwChecksum {
        HwChecksum::Unknown
    }

    /// Packet length in bytes.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// True when the packet holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Set the packet length to `len`, growing or shrinking at the back.
    fn set_len(&mut self, len: usize) -> Result<(), BufError> {
        let cur = self.len();
        if len >= cur {
            self.append(len - cur)
        } else {
            self.trim(cur - len)
        }
    }
}

/// A heap-backed packet buffer with fixed capacity, laid out like an mbuf:
/// `[headroom | data | tailroom]`. Used by tests, offline tools and the
/// instruction-count loop (`perf/instructions.py`).
///
/// Like an mbuf, the buffer is a pointer-sized handle to a header holding
/// the offsets: the pipeline moves buffers through bursts, groups and the
/// TX sink by value, and a handle the size of an mbuf pointer makes those
/// moves cost what they cost in the gateway (the three-word-plus-offsets
/// struct this used to be cost ~10 instructions per packet per move).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecBuf(Box<Room>);

/// What a [`VecBuf`] points at: its bytes and where the packet lies in them
/// (`start <= end <= mem.len()`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Room {
    mem: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecBuf {
    /// Default headroom, the same as DPDK's `RTE_PKTMBUF_HEADROOM`.
    pub const DEFAULT_HEADROOM: usize = 128;
    /// Default total size, like a default mbuf data room.
    pub const DEFAULT_CAPACITY: usize = 2048 + Self::DEFAULT_HEADROOM;

    /// An empty buffer with `headroom` bytes in front and `capacity` in all.
    pub fn with_room(headroom: usize, capacity: usize) -> Self {
        let headroom = headroom.min(capacity);
        VecBuf(Box::new(Room { mem: vec![0; capacity], start: headroom, end: headroom }))
    }

    /// A buffer holding `bytes`, with default headroom and at least default capacity.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let cap = (Self::DEFAULT_HEADROOM + bytes.len() + 256).max(Self::DEFAULT_CAPACITY);
        let mut b = Self::with_room(Self::DEFAULT_HEADROOM, cap);
        let r = &mut *b.0;
        r.end = r.start + bytes.len();
        r.mem[r.start..r.end].copy_from_slice(bytes);
        b
    }

    /// Make this buffer hold `bytes` again, with default headroom, without
    /// allocating (benchmarks recycle buffers). `bytes` must fit.
    pub fn refill(&mut self, bytes: &[u8]) {
        let r = &mut *self.0;
        r.start = Self::DEFAULT_HEADROOM.min(r.mem.len());
        r.end = (r.start + bytes.len()).min(r.mem.len());
        let n = r.end - r.start;
        r.mem[r.start..r.end].copy_from_slice(&bytes[..n]);
    }

    /// The packet as an owned vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data().to_vec()
    }
}

impl PacketBuf for VecBuf {
    fn data(&self) -> &[u8] {
        &self.0.mem[self.0.start..self.0.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.0.mem[self.0.start..self.0.end]
    }
    fn headroom(&self) -> usize {
        self.0.start
    }
    fn tailroom(&self) -> usize {
        self.0.mem.len() - self.0.end
    }
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.0.start {
            return Err(BufError::NoHeadroom);
        }
        self.0.start -= n;
        Ok(())
    }
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.tailroom() {
            return Err(BufError::NoTailroom);
        }
        self.0.end += n;
        Ok(())
    }
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.0.end - self.0.start {
            return Err(BufError::TooShort);
        }
        self.0.start += n;
        Ok(())
    }
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.0.end - self.0.start {
            return Err(BufError::TooShort);
        }
        self.0.end -= n;
        Ok(())
    }
    fn narrow(&mut self, off: usize, len: usize) -> Result<(), BufError> {
        let r = &mut *self.0;
        if off.checked_add(len).is_none_or(|n| n > r.end - r.start) {
            return Err(BufError::TooShort);
        }
        r.start += off;
        r.end = r.start + len;
        Ok(())
    }
    fn reframe(&mut self, head: usize, len: usize) -> Result<(), BufError> {
        let r = &mut *self.0;
        if head > r.start {
            return Err(BufError::NoHeadroom);
        }
        let start = r.start - head;
        if len > r.mem.len() - start {
            return Err(BufError::NoTailroom);
        }
        r.start = start;
        r.end = start + len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_and_shrink_both_ends() {
        let mut b = VecBuf::from_slice(&[1, 2, 3]);
        assert_eq!(b.headroom(), 128);
        b.prepend(2).unwrap();
        b.data_mut()[..2].copy_from_slice(&[9, 8]);
        assert_eq!(b.data(), &[9, 8, 1, 2, 3]);
        b.append(1).unwrap();
        b.data_mut()[5] = 7;
        assert_eq!(b.data(), &[9, 8, 1, 2, 3, 7]);
        b.adj(3).unwrap();
        b.trim(1).unwrap();
        assert_eq!(b.data(), &[2, 3]);
        assert_eq!(b.set_len(4), Ok(()));
        assert_eq!(b.len(), 4);
    }

    /// The one-step `narrow` and `reframe` of `VecBuf` against the trait's
    /// composed defaults (run on a wrapper that keeps them), on every small
    /// case: same bytes, same room, same error (and nothing changed on one).
    #[test]
    fn one_step_reshapes_equal_the_composed_ones() {
        struct Composed(VecBuf);
        impl PacketBuf for Composed {
            fn data(&self) -> &[u8] {
                self.0.data()
            }
            fn data_mut(&mut self) -> &mut [u8] {
                self.0.data_mut()
            }
            fn headroom(&self) -> usize {
                self.0.headroom()
            }
            fn tailroom(&self) -> usize {
                self.0.tailroom()
            }
            fn prepend(&mut self, n: usize) -> Result<(), BufError> {
                self.0.prepend(n)
            }
            fn append(&mut self, n: usize) -> Result<(), BufError> {
                self.0.append(n)
            }
            fn adj(&mut self, n: usize) -> Result<(), BufError> {
                self.0.adj(n)
            }
            fn trim(&mut self, n: usize) -> Result<(), BufError> {
                self.0.trim(n)
            }
        }
        let fresh = |headroom: usize, len: usize| {
            let mut b = VecBuf::with_room(headroom, 12);
            b.append(len).unwrap();
            for (i, x) in b.data_mut().iter_mut().enumerate() {
                *x = i as u8 + 1;
            }
            b
        };
        let state = |b: &VecBuf| (b.data().to_vec(), b.headroom(), b.tailroom());
        for headroom in 0..=6 {
            for len in 0..=12 - headroom {
                for a in 0..=13 {
                    for n in 0..=13 {
                        let (mut one, mut two) = (fresh(headroom, len), Composed(fresh(headroom, len)));
                        assert_eq!(one.narrow(a, n), two.narrow(a, n), "narrow({a}, {n}) of {headroom}+{len}");
                        assert_eq!(state(&one), state(&two.0));
                        let (mut one, mut two) = (fresh(headroom, len), Composed(fresh(headroom, len)));
                        assert_eq!(one.reframe(a, n), two.reframe(a, n), "reframe({a}, {n}) of {headroom}+{len}");
                        assert_eq!(state(&one), state(&two.0));
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_out_of_room() {
        let mut b = VecBuf::with_room(4, 8);
        assert_eq!(b.prepend(5), Err(BufError::NoHeadroom));
        assert_eq!(b.append(5), Err(BufError::NoTailroom));
        assert_eq!(b.adj(1), Err(BufError::TooShort));
        assert_eq!(b.trim(1), Err(BufError::TooShort));
        b.append(4).unwrap();
        b.prepend(4).unwrap();
        assert_eq!(b.len(), 8);
    }
}
