//! Inbound anti-replay window (RFC 4303 §3.4.3), lock-free so several
//! workers may decrypt for the same SA.
//!
//! Layout (after RFC 6479): the window is a ring of slots, each covering a
//! block of 32 sequence numbers. A slot is one `AtomicU64` holding the block
//! number it currently describes (high 32 bits, a tag) and the block's 32
//! "seen" bits (low 32 bits). Setting a bit and recycling a slot for a newer
//! block are therefore one compare-and-swap on one word: no lock, no torn
//! state, and no bit can be lost to a concurrent recycle. The highest
//! authenticated number (`top`) only moves forward (`fetch_max`).
//!
//! Protocol: [`ReplayWindow::check`] before decryption (cheap, read-only) and
//! [`ReplayWindow::update`] only after the ICV verified. If two workers
//! verify the same number at once, exactly one update wins; the other is
//! told `Duplicate`.

use crate::sync::{AtomicU64, Ordering};

/// Smallest configurable window.
pub const MIN_WINDOW: u32 = 64;
/// Largest configurable window.
pub const MAX_WINDOW: u32 = 4096;
/// Default window.
pub const DEFAULT_WINDOW: u32 = 1024;

/// Why the window refused a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Left of the window.
    TooOld,
    /// Already received.
    Duplicate,
}

/// A sliding anti-replay window over 64-bit sequence numbers.
#[derive(Debug)]
pub struct ReplayWindow {
    size: u64,
    /// On its own cache line: written as the window moves, read per packet.
    top: crossbeam_utils::CachePadded<AtomicU64>,
    /// A power of two in length, so that a block finds its slot with a
    /// mask (a 64-bit division per check and per update before).
    slots: Box<[AtomicU64]>,
    mask: usize,
}

impl ReplayWindow {
    /// A window of `size` packets (clamped to 64..=4096).
    pub fn new(size: u32) -> Self {
        let size = size.clamp(MIN_WINDOW, MAX_WINDOW) as u64;
        // Enough slots that every block inside the window has its own slot,
        // plus one for the block being filled and one of slack, rounded up
        // to a power of two.
        let n = ((size as usize).div_ceil(32) + 2).next_power_of_two();
        ReplayWindow {
            size,
            top: crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
        }
    }

    /// Window size in packets.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Highest sequence number accepted so far (0 before the first).
    pub fn top(&self) -> u64 {
        self.top.load(Ordering::Acquire)
    }

    #[inline]
    fn slot(&self, seq: u64) -> (&AtomicU64, u32, u64) {
        let block = seq / 32;
        (self.slot_of(block), block as u32, 1u64 << (seq % 32))
    }

    #[inline]
    fn slot_of(&self, block: u64) -> &AtomicU64 {
        // `mask` is the ring's length - 1: always in bounds.
        &self.slots[(block as usize) & self.mask]
    }

    /// May `seq` be accepted? Read-only; call before decrypting.
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::TooOld);
        }
        let top = self.top.load(Ordering::Acquire);
        if seq > top {
            return Ok(());
        }
        if top - seq >= self.size {
            return Err(ReplayError::TooOld);
        }
        let (slot, tag, bit) = self.slot(seq);
        let w = slot.load(Ordering::Acquire);
        if (w >> 32) as u32 == tag && w & bit != 0 {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    /// Record `seq` as received; call only after its ICV verified.
    #[inline]
    pub fn update(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::TooOld);
        }
        let top = self.top.load(Ordering::Acquire);
        if seq < top && top - seq >= self.size {
            return Err(ReplayError::TooOld);
        }
        // Advance `top` first: once a slot holds block b, top already covers
        // b, so a slot that looks newer than us while `top` still has us inside
        // the window can only be stale (initial state or 32-bit tag wrap).
        self.top.fetch_max(seq, Ordering::AcqRel);
        let (slot, tag, bit) = self.slot(seq);
        let mut w = slot.load(Ordering::Acquire);
        loop {
            let cur = (w >> 32) as u32;
            // Wrapping distance between blocks: 0 same block, >0 the slot holds
            // an older block (recycle it), <0 the slot seems to have moved past us.
            let d = tag.wrapping_sub(cur) as i32;
            let new = if d == 0 {
                if w & bit != 0 {
                    return Err(ReplayError::Duplicate);
                }
                w | bit
            } else if d > 0 || self.top.load(Ordering::Acquire) - seq < self.size {
                (u64::from(tag) << 32) | bit
            } else {
                return Err(ReplayError::TooOld);
            };
            match slot.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(actual) => w = actual,
            }
        }
    }

    /// Infer the high 32 bits of an ESN from its low half (RFC 4303
    /// Appendix A), relative to the current window.
    #[inline]
    pub fn infer_esn_high(&self, seq_lo: u32) -> u32 {
        infer_esn_high(self.top(), self.size as u32, seq_lo)
    }

    /// A window that resumes where another left off (a replace that keeps
    /// the key, or a restart from persisted state): its top is `top` and
    /// every number inside the window counts as seen, so nothing received
    /// before can be accepted again. (A late genuine packet inside the window
    /// is dropped as a duplicate: the price of never accepting a replay.)
    pub fn resume(size: u32, top: u64) -> Self {
        let w = Self::new(size);
        if top == 0 {
            return w;
        }
        w.top.store(top, Ordering::Release);
        let lowest = top.saturating_sub(w.size - 1).max(1);
        for block in lowest / 32..=top / 32 {
            // Every bit of the block up to `top` (numbers above it are new).
            let bits = if block == top / 32 { u32::MAX >> (31 - top % 32) } else { u32::MAX };
            w.slot_of(block).store((u64::from(block as u32) << 32) | u64::from(bits), Ordering::Relaxed);
        }
        w
    }
}

/// RFC 4303 Appendix A2.2: the high half of the sequence number whose low
/// half is `seq_lo`, for a window of `w` packets whose top is `top`. While
/// the top is still in the first subspace, there is no subspace below it to
/// infer (the RFC's `Th - 1` would wrap): such numbers belong to subspace 0.
#[inline]
pub fn infer_esn_high(top: u64, w: u32, seq_lo: u32) -> u32 {
    let th = (top >> 32) as u32;
    let tl = top as u32;
    if tl >= w - 1 {
        // Window inside one 2^32 subspace.
        if seq_lo >= tl - (w - 1) {
            th
        } else {
            th.wrapping_add(1)
        }
    } else {
        // Window spans two subspaces.
        if seq_lo >= tl.wrapping_sub(w - 1) {
            th.saturating_sub(1)
        } else {
            th
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &ReplayWindow, s: u64) -> Result<(), ReplayError> {
        w.check(s)?;
        w.update(s)
    }

    #[test]
    fn in_order_reorder_duplicate_and_too_old() {
        let w = ReplayWindow::new(64);
        assert_eq!(accept(&w, 0), Err(ReplayError::TooOld));
        for s in 1..=100 {
            assert_eq!(accept(&w, s), Ok(()), "{s}");
        }
        assert_eq!(accept(&w, 100), Err(ReplayError::Duplicate));
        assert_eq!(accept(&w, 37), Err(ReplayError::Duplicate), "100-37 = 63 < 64: inside, already seen");
        assert_eq!(w.check(36), Err(ReplayError::TooOld));
        // Reordering within the window.
        assert_eq!(accept(&w, 110), Ok(()));
        for s in [105, 101, 109, 102] {
            assert_eq!(accept(&w, s), Ok(()), "{s}");
        }
        assert_eq!(accept(&w, 46), Err(ReplayError::TooOld), "110-46 = 64");
        assert_eq!(accept(&w, 105), Err(ReplayError::Duplicate));
        // A big jump forward, then the old range is gone but the bits of
        // recycled slots do not leak into new blocks.
        assert_eq!(accept(&w, 10_000), Ok(()));
        for s in 9_937..10_000 {
            assert_eq!(w.check(s), Ok(()), "{s} unseen after the jump");
        }
        assert_eq!(w.check(9_936), Err(ReplayError::TooOld));
    }

    #[test]
    fn window_edges_for_every_size() {
        for size in [64u32, 100, 1024, 4096] {
            let w = ReplayWindow::new(size);
            let top = 50_000u64;
            w.update(top).unwrap();
            let s = size as u64;
            assert_eq!(w.check(top - s + 1), Ok(()), "newest edge inside, size {size}");
            assert_eq!(w.check(top - s), Err(ReplayError::TooOld), "size {size}");
            // Every number inside is accepted once, then a duplicate.
            for q in (top - s + 1)..top {
                assert_eq!(accept(&w, q), Ok(()), "{q}");
            }
            for q in (top - s + 1)..=top {
                assert_eq!(w.check(q), Err(ReplayError::Duplicate), "{q}");
            }
        }
    }

    #[test]
    fn update_without_check_still_rejects() {
        let w = ReplayWindow::new(64);
        w.update(1000).unwrap();
        assert_eq!(w.update(1000), Err(ReplayError::Duplicate));
        assert_eq!(w.update(936), Err(ReplayError::TooOld));
    }

    /// A first packet far into the sequence space (ESN, restored state) must
    /// not be mistaken for an old one by the 32-bit block tags.
    #[test]
    fn first_packet_far_into_the_space() {
        for start in [u64::from(u32::MAX) * 40, 0x8765_4320_ffff_ffff, u64::MAX - 5] {
            let w = ReplayWindow::new(64);
            assert_eq!(accept(&w, start), Ok(()), "{start:#x}");
            assert_eq!(accept(&w, start), Err(ReplayError::Duplicate));
            assert_eq!(accept(&w, start - 3), Ok(()));
            assert_eq!(accept(&w, start - 64), Err(ReplayError::TooOld));
        }
    }

    #[test]
    fn esn_high_half_inference() {
        let w = ReplayWindow::new(64);
        // Window inside subspace 0.
        w.update(1000).unwrap();
        assert_eq!(w.infer_esn_high(999), 0);
        assert_eq!(w.infer_esn_high(5000), 0);
        assert_eq!(w.infer_esn_high(900), 1, "below the window: assume the next subspace");
        // Top near the end of subspace 0: low numbers belong to subspace 1.
        let w = ReplayWindow::new(64);
        w.update(u32::MAX as u64 - 5).unwrap();
        assert_eq!(w.infer_esn_high(u32::MAX - 10), 0);
        assert_eq!(w.infer_esn_high(3), 1);
        // Top just past the wrap: window spans both subspaces.
        let w = ReplayWindow::new(64);
        w.update((1u64 << 32) + 10).unwrap();
        assert_eq!(w.infer_esn_high(5), 1);
        assert_eq!(w.infer_esn_high(u32::MAX - 20), 0, "late packet from the previous subspace");
        assert_eq!(w.infer_esn_high(1000), 1);
        // A fresh window: a first packet high in subspace 0 is in subspace 0,
        // not in a subspace "-1".
        let w = ReplayWindow::new(64);
        assert_eq!(w.infer_esn_high(u32::MAX - 3), 0);
        assert_eq!(w.infer_esn_high(7), 0);
    }

    #[test]
    fn resumed_window_refuses_everything_up_to_its_top() {
        let w = ReplayWindow::resume(64, 1000);
        assert_eq!(w.top(), 1000);
        for s in 900..=1000 {
            assert!(w.check(s).is_err(), "{s} was possibly received before");
        }
        assert_eq!(accept(&w, 1001), Ok(()));
        let w = ReplayWindow::resume(1024, 3);
        assert!(w.check(1).is_err() && w.check(3).is_err());
        assert_eq!(accept(&w, 4), Ok(()));
    }

    /// Several threads race to accept the same numbers (with local
    /// reordering, like two workers sharing an SA): every number is accepted
    /// exactly once — never twice, never lost.
    #[test]
    fn concurrent_updates_accept_each_number_once() {
        use std::sync::atomic::AtomicU8;
        use std::sync::Arc;
        let w = Arc::new(ReplayWindow::new(1024));
        // Miri interprets every step and explores thread interleavings: fewer numbers there.
        let n = if cfg!(miri) { 300 } else { 200_000u64 };
        let hits: Arc<Vec<AtomicU8>> = Arc::new((0..=n).map(|_| AtomicU8::new(0)).collect());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (w, hits) = (w.clone(), hits.clone());
                std::thread::spawn(move || {
                    let try_one = |q: u64| {
                        if w.check(q).is_ok() && w.update(q).is_ok() {
                            hits[q as usize].fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    // Pairs swapped on some steps: s+1 before s.
                    let mut s = 1u64;
                    while s < n {
                        if (s + t).is_multiple_of(3) {
                            try_one(s + 1);
                            try_one(s);
                        } else {
                            try_one(s);
                            try_one(s + 1);
                        }
                        s += 2;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.top(), n);
        for q in 1..=n {
            assert_eq!(hits[q as usize].load(Ordering::Relaxed), 1, "seq {q} accepted a wrong number of times");
        }
    }
}
