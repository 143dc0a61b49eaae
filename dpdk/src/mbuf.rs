//! Owned mbufs and fixed-size batches of them.
//!
//! Type invariants:
//! - an [`Mbuf`] owns one mbuf chain exclusively (reference count 1) and
//!   frees it on drop; it borrows the pool it came from, so it cannot
//!   outlive it. Fresh mbufs are exclusive by construction; received ones
//!   are checked once, when they leave the RX batch ([`MbufBatch::take_all`]);
//! - an [`MbufBatch`] owns the mbufs in its first `len` slots and frees them
//!   on drop.
//!
//! Packet data is reached by pointers computed in Rust from the `rte_mbuf`
//! fields: the per-packet path makes no FFI call but the bursts and frees.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use dpdk_sys as sys;
use espgw_core::packet::{BufError, HwChecksum, PacketBuf};

/// One owned, exclusive packet mbuf (a chain if multi-segment).
#[repr(transparent)]
pub struct Mbuf<'p> {
    ptr: NonNull<sys::rte_mbuf>,
    _pool: PhantomData<&'p ()>,
}

// SAFETY: an Mbuf is exclusively owned; mbufs may move between lcores.
unsafe impl Send for Mbuf<'_> {}

impl Mbuf<'_> {
    /// Take ownership of a freshly allocated mbuf (refcount 1).
    pub(crate) fn from_fresh(ptr: NonNull<sys::rte_mbuf>) -> Self {
        Mbuf { ptr, _pool: PhantomData }
    }

    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for our whole life.
        unsafe { self.ptr.as_ref() }
    }

    fn raw_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for our whole life, exclusively.
        unsafe { self.ptr.as_mut() }
    }

    /// Number of segments in the chain.
    pub fn nb_segs(&self) -> u16 {
        self.raw().nb_segs
    }

    /// Total length of all segments.
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Ask the CPU to fetch the packet's first cache line (the headers that
    /// ingress reads) while the burst's earlier packets are processed, as
    /// DPDK's l3fwd does. A hint: it changes nothing but timing.
    #[inline]
    pub fn prefetch_data(&self) {
        let m = self.raw();
        let p = (m.buf_addr as *const u8).wrapping_add(usize::from(m.data_off));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults and reads nothing the program sees;
        // the address is the start of this mbuf's data anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// The port the packet arrived on.
    pub fn in_port(&self) -> u16 {
        self.raw().port
    }

    /// The RSS hash the NIC computed (0 when RSS is off).
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: plain integer union field; any bit pattern is valid.
        unsafe { self.raw().__bindgen_anon_2.hash.rss }
    }

    /// Make the packet one contiguous segment (needed before [`PacketBuf`]
    /// access to a multi-segment chain). Fails when the first segment lacks room.
    pub fn linearize(&mut self) -> Result<(), BufError> {
        if self.nb_segs() == 1 {
            return Ok(());
        }
        // SAFETY: we own the chain; linearize only moves data inside it.
        if unsafe { sys::espgw_pktmbuf_linearize(self.ptr.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(BufError::NoTailroom)
        }
    }

    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl PacketBuf for Mbuf<'_> {
    // The data slice covers the first segment only; the worker linearizes
    // multi-segment packets before the pipeline sees them.
    fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's buffer.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw_mut();
        // SAFETY: as in `data`; the mbuf is exclusive (refcount 1, a type
        // invariant), so no other owner sees these bytes change.
        unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize) }
    }
    fn headroom(&self) -> usize {
        self.raw().data_off as usize
    }
    fn tailroom(&self) -> usize {
        let m = self.raw();
        if m.nb_segs != 1 {
            return 0;
        }
        m.buf_len as usize - m.data_off as usize - m.data_len as usize
    }
    fn hw_ip_checksum(&self) -> HwChecksum {
        match self.raw().ol_flags & u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_MASK) {
            f if f == u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD) => HwChecksum::Good,
            f if f == u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_BAD) => HwChecksum::Bad,
            _ => HwChecksum::Unknown,
        }
    }
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.headroom() {
            return Err(BufError::NoHeadroom);
        }
        let m = self.raw_mut();
        m.data_off -= n as u16;
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        Ok(())
    }
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.tailroom() {
            return Err(BufError::NoTailroom);
        }
        let m = self.raw_mut();
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        Ok(())
    }
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        let m = self.raw_mut();
        if n > m.data_len as usize {
            return Err(BufError::TooShort);
        }
        m.data_off += n as u16;
        m.data_len -= n as u16;
        m.pkt_len -= n as u32;
        Ok(())
    }
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        let m = self.raw_mut();
        if m.nb_segs != 1 || n > m.data_len as usize {
            return Err(BufError::TooShort);
        }
        m.data_len -= n as u16;
        m.pkt_len -= n as u32;
        Ok(())
    }
    // The one-step reshapes: the offsets written once, as the trait's
    // composed defaults would leave them. Single-segment mbufs only (the
    // worker linearizes chains before the pipeline sees them): on a chain
    // both refuse, where the defaults would act on the first segment.
    fn narrow(&mut self, off: usize, len: usize) -> Result<(), BufError> {
        let m = self.raw_mut();
        if m.nb_segs != 1 || off.saturating_add(len) > m.data_len as usize {
            return Err(BufError::TooShort);
        }
        m.data_off += off as u16;
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        Ok(())
    }
    fn reframe(&mut self, head: usize, len: usize) -> Result<(), BufError> {
        let m = self.raw_mut();
        if head > m.data_off as usize {
            return Err(BufError::NoHeadroom);
        }
        let off = m.data_off as usize - head;
        if m.nb_segs != 1 || len > m.buf_len as usize - off {
            return Err(BufError::NoTailroom);
        }
        m.data_off = off as u16;
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        Ok(())
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the chain; it goes back to its pool.
        unsafe { sys::espgw_pktmbuf_free(self.ptr.as_ptr()) };
    }
}

impl fmt::Debug for Mbuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mbuf(len={}, segs={}, port={})", self.pkt_len(), self.nb_segs(), self.in_port())
    }
}

/// A fixed-capacity batch of owned mbufs — the unit of RX and TX bursts. No
/// allocation after creation; whatever is still in it on drop is freed.
pub struct MbufBatch<'p, const N: usize> {
    slots: [*mut sys::rte_mbuf; N],
    len: usize,
    _pool: PhantomData<&'p ()>,
}

// SAFETY: the batch exclusively owns the mbufs in its slots.
unsafe impl<const N: usize> Send for MbufBatch<'_, N> {}

impl<const N: usize> Default for MbufBatch<'_, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'p, const N: usize> MbufBatch<'p, N> {
    /// An empty batch.
    pub const fn new() -> Self {
        MbufBatch { slots: [std::ptr::null_mut(); N], len: 0, _pool: PhantomData }
    }
    /// Mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// True when no more fits.
    pub fn is_full(&self) -> bool {
        self.len == N
    }
    /// Free slots.
    pub fn room(&self) -> usize {
        N - self.len
    }
    /// Add an mbuf; gives it back when full.
    pub fn push(&mut self, m: Mbuf<'p>) -> Result<(), Mbuf<'p>> {
        if self.len == N {
            return Err(m);
        }
        self.slots[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }
    /// Take the last exclusive mbuf out (a shared one is freed instead, as
    /// in [`Self::take_all`]).
    pub fn pop(&mut self) -> Option<Mbuf<'p>> {
        while self.len > 0 {
            self.len -= 1;
            let p = NonNull::new(self.slots[self.len])?;
            // SAFETY: the slot held an owned mbuf.
            if unsafe { p.as_ref() }.refcnt == 1 {
                return Some(Mbuf::from_fresh(p));
            }
            // SAFETY: we own this reference; freeing drops it.
            unsafe { sys::espgw_pktmbuf_free(p.as_ptr()) };
        }
        None
    }
    /// The mbufs.
    pub fn as_slice(&self) -> &[Mbuf<'p>] {
        // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf> (+ a ZST),
        // the layout of *mut rte_mbuf; slots[..len] are non-null owned mbufs.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr() as *const Mbuf<'p>, self.len) }
    }
    /// Pointer to the first free slot (for bursts that fill the batch).
    pub(crate) fn free_slots_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        // SAFETY: len <= N, so this is at most one past the end.
        unsafe { self.slots.as_mut_ptr().add(self.len) }
    }
    /// Count `n` more slots as filled.
    ///
    /// # Safety
    /// The `n` slots after `len` must hold owned mbufs.
    pub(crate) unsafe fn grow(&mut self, n: usize) {
        debug_assert!(self.len + n <= N);
        self.len += n;
    }
    /// Pointer to the slots (for bursts that send from the batch).
    pub(crate) fn slots_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        self.slots.as_mut_ptr()
    }
    /// Drop the first `n` slots from the batch (the driver took them) and
    /// move the rest to the front.
    pub(crate) fn consumed_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.slots.copy_within(n..self.len, 0);
        self.len -= n;
    }
    /// Move every mbuf out, in order, as exclusive [`Mbuf`]s; the batch is
    /// empty afterwards. A received mbuf that someone else also references
    /// (refcount above 1, which no common driver produces) is not handed out
    /// but freed and counted in [`MbufDrain::shared`]: handing it out would
    /// let the pipeline write bytes another owner sees.
    pub fn take_all(&mut self) -> MbufDrain<'p, N> {
        let d = MbufDrain { slots: self.slots, pos: 0, len: self.len, shared: 0, _pool: PhantomData };
        self.len = 0;
        d
    }
    /// Free every mbuf in the batch (one bulk call).
    pub fn free_all(&mut self) {
        if self.len > 0 {
            // SAFETY: slots[..len] are owned mbufs; each is freed exactly once.
            unsafe { sys::rte_pktmbuf_free_bulk(self.slots.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }
}

impl<const N: usize> Drop for MbufBatch<'_, N> {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// The mbufs taken out of a batch, in order (see [`MbufBatch::take_all`]).
pub struct MbufDrain<'p, const N: usize> {
    slots: [*mut sys::rte_mbuf; N],
    pos: usize,
    len: usize,
    /// Shared mbufs freed instead of handed out.
    pub shared: usize,
    _pool: PhantomData<&'p ()>,
}

impl<'p, const N: usize> Iterator for MbufDrain<'p, N> {
    type Item = Mbuf<'p>;
    fn next(&mut self) -> Option<Mbuf<'p>> {
        while self.pos < self.len {
            let p = self.slots[self.pos];
            self.pos += 1;
            let Some(p) = NonNull::new(p) else { continue };
            // SAFETY: the slot held an owned mbuf.
            if unsafe { p.as_ref() }.refcnt != 1 {
                // SAFETY: we own this reference; freeing drops it.
                unsafe { sys::espgw_pktmbuf_free(p.as_ptr()) };
                self.shared += 1;
                continue;
            }
            return Some(Mbuf::from_fresh(p));
        }
        None
    }
}

impl<const N: usize> Drop for MbufDrain<'_, N> {
    fn drop(&mut self) {
        while self.pos < self.len {
            if let Some(p) = NonNull::new(self.slots[self.pos]) {
                // SAFETY: not handed out, so still ours.
                unsafe { sys::espgw_pktmbuf_free(p.as_ptr()) };
            }
            self.pos += 1;
        }
    }
}
