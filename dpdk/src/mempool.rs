//! Packet mbuf pools. A [`Mempool`] borrows the [`Eal`] (it cannot outlive
//! it), and every [`Mbuf`] borrows its pool (it cannot outlive it either).

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::{last_error, DpdkError};
use crate::mbuf::{Mbuf, MbufBatch};

/// A packet mbuf pool.
pub struct Mempool<'eal> {
    ptr: NonNull<sys::rte_mempool>,
    size: u32,
    data_room: u16,
    _eal: PhantomData<&'eal Eal>,
}

// SAFETY: rte_mempool is made for concurrent use from many lcores (per-lcore
// caches + a lock-free ring); every operation used here is thread-safe.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for Mempool<'_> {}

impl<'eal> Mempool<'eal> {
    /// A pktmbuf pool of `count` mbufs with `data_room` bytes each (DPDK
    /// headroom included) and a per-lcore cache of `cache`.
    pub fn new(eal: &'eal Eal, name: &str, count: u32, cache: u32, data_room: u16) -> Result<Self, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        // SAFETY: EAL is initialised (we borrow it); name is a valid C string.
        let ptr = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, eal.socket_id()) };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Mempool { ptr, size: count, data_room, _eal: PhantomData }),
            None => Err(DpdkError::Mempool { name: name.to_string(), count, reason: last_error() }),
        }
    }

    /// Mbufs in the pool in all.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Bytes per mbuf data buffer, headroom included.
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    /// Mbufs currently taken from the pool (per-lcore caches count as free).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is alive.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Mbufs available in the pool, caches included.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Take one mbuf (refcount 1: exclusively ours).
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        // SAFETY: the pool is alive; returns NULL or a fresh mbuf we now own.
        NonNull::new(unsafe { sys::espgw_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf::from_fresh)
    }

    /// Fill `n` of the batch's free slots with fresh mbufs in one bulk call;
    /// all or nothing.
    pub fn alloc_bulk<'p, const N: usize>(&'p self, batch: &mut MbufBatch<'p, N>, n: usize) -> bool {
        let n = n.min(batch.room());
        if n == 0 {
            return true;
        }
        // SAFETY: the free slots are writable; on success DPDK writes n fresh
        // mbufs there and the batch owns them.
        let rc = unsafe { sys::espgw_pktmbuf_alloc_bulk(self.ptr.as_ptr(), batch.free_slots_ptr(), n as u32) };
        if rc == 0 {
            // SAFETY: n owned, fresh (exclusive) mbufs were just written.
            unsafe { batch.grow(n) };
            true
        } else {
            false
        }
    }

    /// Raw pointer, for queue setup.
    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: every Mbuf and every port queue that uses this pool borrows
        // it, so none is left.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}

/// Mbufs for new packets (fragments, ICMP errors, reassembled datagrams):
/// the regular pool, or the jumbo pool when the packet needs more room.
/// `'p` is how long the pools are borrowed: the mbufs' lifetime.
pub struct PoolAlloc<'p, 'e> {
    pub regular: &'p Mempool<'e>,
    pub jumbo: Option<&'p Mempool<'e>>,
}

impl<'p> espgw_core::mtu::BufAlloc for PoolAlloc<'p, '_> {
    type Buf = Mbuf<'p>;
    fn alloc(&mut self, len: usize) -> Option<Mbuf<'p>> {
        // Room for the packet, an Ethernet header and ESP growth behind the headroom.
        let need = len + 14 + 128;
        if need + usize::from(sys::RTE_PKTMBUF_HEADROOM as u16) <= usize::from(self.regular.data_room()) {
            self.regular.alloc()
        } else {
            self.jumbo.filter(|j| need + 128 <= usize::from(j.data_room())).and_then(|j| j.alloc())
        }
    }
}
