//! The only FFI in espgw: EAL, mempools, ports and mbufs.
//!
//! Everything here is a thin owner around a DPDK object. Packet data is reached
//! by computing pointers in Rust from the `rte_mbuf` fields, so the per-packet
//! path makes no FFI call except the burst and bulk-free calls themselves.
//!
//! Ownership rules:
//! - an [`Mbuf`] owns one mbuf chain and frees it on drop;
//! - an [`MbufBatch`] owns the mbufs in its first `len` slots and frees them on drop;
//! - [`Port::tx_burst`] hands the sent mbufs to the driver and frees the rest,
//!   so no path can leak.

use std::ffi::{CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;
use thiserror::Error;

use crate::packet::{BufError, PacketBuf};

#[path = "dpdk_ipsec_mb.rs"]
pub mod ipsec_mb;

/// Errors from DPDK calls, with the DPDK reason text.
#[derive(Debug, Error)]
pub enum DpdkError {
    /// `rte_eal_init` failed (bad EAL argument, unknown vdev driver, ...).
    #[error("DPDK EAL initialisation failed: {0}")]
    EalInit(String),
    /// EAL can only be initialised once per process.
    #[error("DPDK EAL is already initialised in this process")]
    EalAlreadyInit,
    /// An argument contained a NUL byte.
    #[error("EAL argument contains a NUL byte: {0:?}")]
    BadArg(String),
    /// No ethdev port with that device name exists.
    #[error("no DPDK port named '{0}' (is the device given to EAL, e.g. --vdev or -a?)")]
    NoSuchPort(String),
    /// A mempool could not be created.
    #[error("cannot create mempool '{name}' with {count} mbufs: {reason}")]
    Mempool { name: String, count: u32, reason: String },
    /// A port operation failed.
    #[error("port {port} ({name}): {op} failed: {reason}")]
    Port { port: u16, name: String, op: &'static str, reason: String },
    /// A thread could not be registered with EAL.
    #[error("cannot register thread with DPDK: {0}")]
    ThreadRegister(String),
}

/// Text of a DPDK errno.
fn strerror(errnum: i32) -> String {
    let errnum = errnum.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    let s = unsafe { CStr::from_ptr(sys::rte_strerror(errnum)) };
    format!("{} (errno {errnum})", s.to_string_lossy())
}

/// Text of the current `rte_errno`.
fn last_error() -> String {
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    strerror(unsafe { sys::espgw_errno() })
}

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// The initialised DPDK environment. Only one per process; cleaned up on drop.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise EAL with `args` (without the program name).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInit);
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("espgw").expect("static"));
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| DpdkError::BadArg(a.to_string()))?);
        }
        // EAL may keep pointers into argv (it saves them for telemetry) and may
        // permute the array, so both live for the rest of the process.
        let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
        let argv: &'static mut [*mut std::os::raw::c_char] =
            Box::leak(owned.iter().map(|c| c.as_ptr() as *mut _).collect::<Vec<_>>().into_boxed_slice());
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the process.
        let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            // SAFETY: reads the thread-local rte_errno.
            let errno = unsafe { sys::espgw_errno() };
            let hint = match errno {
                19 => " — a device in [[port]].device or the EAL args is unknown or failed to probe (see the EAL lines above)",
                12 | 28 => " — not enough memory: without hugepages use --no-huge -m 512",
                17 | 16 | 11 => " — another DPDK process uses the same --file-prefix",
                _ => "",
            };
            return Err(DpdkError::EalInit(format!("{}{hint}", strerror(errno))));
        }
        Ok(Eal { _private: () })
    }

    /// Number of ethdev ports EAL probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised (we hold an Eal).
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// The NUMA socket of the calling thread.
    pub fn socket_id(&self) -> i32 {
        // SAFETY: EAL is initialised.
        unsafe { sys::rte_socket_id() as i32 }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: all ports, pools and registered threads are gone by now (they
        // borrow nothing from Eal, but the binary drops them first).
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// Register the calling (already pinned) thread with EAL so that it gets an
/// lcore id and mempool caches work. Unregisters on drop.
pub struct ThreadRegistration {
    lcore: u32,
}

impl ThreadRegistration {
    /// Register the current thread.
    pub fn register() -> Result<Self, DpdkError> {
        // SAFETY: EAL is initialised before worker threads start; registering a non-EAL thread is allowed.
        let rc = unsafe { sys::rte_thread_register() };
        if rc != 0 {
            return Err(DpdkError::ThreadRegister(last_error()));
        }
        // SAFETY: reads the thread-local lcore id.
        let lcore = unsafe { sys::espgw_lcore_id() };
        Ok(ThreadRegistration { lcore })
    }

    /// The lcore id EAL gave this thread.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        // SAFETY: this thread registered itself in `register`.
        unsafe { sys::rte_thread_unregister() };
    }
}

/// A packet mbuf pool.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
    size: u32,
    data_room: u16,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores
// (per-lcore caches + lock-free ring).
unsafe impl Send for Mempool {}
// SAFETY: see Send; all operations used are multi-thread safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pktmbuf pool of `count` mbufs with `data_room` bytes each
    /// (including the DPDK headroom) and a per-lcore cache of `cache`.
    pub fn new(name: &str, count: u32, cache: u32, data_room: u16, socket: i32) -> Result<Self, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        // SAFETY: EAL is initialised; name is a valid C string.
        let ptr = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket) };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Mempool { ptr, size: count, data_room }),
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

    /// Take one mbuf.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is alive; returns NULL or an initialised mbuf we now own.
        NonNull::new(unsafe { sys::espgw_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }

    /// Fill the batch's free room with fresh mbufs in one bulk call; all or nothing.
    pub fn alloc_bulk<const N: usize>(&self, batch: &mut MbufBatch<N>, n: usize) -> bool {
        let n = n.min(batch.room());
        if n == 0 {
            return true;
        }
        // SAFETY: the slots after `len` are free; on success DPDK writes n owned mbufs there.
        let rc = unsafe {
            sys::espgw_pktmbuf_alloc_bulk(self.ptr.as_ptr(), batch.slots.as_mut_ptr().add(batch.len), n as u32)
        };
        if rc == 0 {
            batch.len += n;
            true
        } else {
            false
        }
    }

    /// Raw pointer, for port setup.
    fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: ports using this pool are closed before the pool is dropped
        // (the binary owns both and drops ports first).
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}

/// One owned packet mbuf (a chain if multi-segment). Freed on drop.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is uniquely owned; mbufs may be passed between lcores.
unsafe impl Send for Mbuf {}

impl Mbuf {
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for our whole life.
        unsafe { self.0.as_ref() }
    }
    fn raw_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for our whole life, uniquely.
        unsafe { self.0.as_mut() }
    }

    /// Number of segments in the chain.
    pub fn nb_segs(&self) -> u16 {
        self.raw().nb_segs
    }

    /// Total length of all segments.
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
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
        if unsafe { sys::espgw_pktmbuf_linearize(self.0.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(BufError::NoTailroom)
        }
    }

    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl PacketBuf for Mbuf {
    // The data slice covers the first segment only; the worker linearizes
    // multi-segment packets before the pipeline sees them.
    fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's buffer.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw_mut();
        // SAFETY: as in `data`, and we own the mbuf uniquely (refcnt 1 for received packets).
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
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the chain; it goes back to its pool.
        unsafe { sys::espgw_pktmbuf_free(self.0.as_ptr()) };
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mbuf(len={}, segs={}, port={})", self.pkt_len(), self.nb_segs(), self.in_port())
    }
}

/// A fixed-capacity batch of owned mbufs — the unit of rx and tx bursts. No
/// allocation after creation; whatever is still in it on drop is freed in bulk.
pub struct MbufBatch<const N: usize> {
    slots: [*mut sys::rte_mbuf; N],
    len: usize,
}

// SAFETY: the batch uniquely owns the mbufs in its slots.
unsafe impl<const N: usize> Send for MbufBatch<N> {}

impl<const N: usize> Default for MbufBatch<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MbufBatch<N> {
    /// An empty batch.
    pub const fn new() -> Self {
        MbufBatch { slots: [std::ptr::null_mut(); N], len: 0 }
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
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(m);
        }
        self.slots[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }
    /// Take the last mbuf out.
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // Non-null: slots[..len] only ever hold owned mbufs.
        NonNull::new(self.slots[self.len]).map(Mbuf)
    }
    /// The mbufs, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf>, which has the
        // layout of *mut rte_mbuf; slots[..len] are all non-null owned mbufs.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr() as *mut Mbuf, self.len) }
    }
    /// The mbufs.
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: as in as_mut_slice.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr() as *const Mbuf, self.len) }
    }
    /// Move every mbuf out, in order, into `f`; the batch is empty afterwards.
    pub fn drain(&mut self, mut f: impl FnMut(Mbuf)) {
        let n = self.len;
        self.len = 0;
        for &p in &self.slots[..n] {
            if let Some(p) = NonNull::new(p) {
                f(Mbuf(p));
            }
        }
    }
    /// Move every mbuf out as an iterator; the batch is empty afterwards.
    /// Whatever the iterator does not yield is freed when it is dropped.
    pub fn take_all(&mut self) -> MbufDrain<N> {
        let d = MbufDrain { slots: self.slots, pos: 0, len: self.len };
        self.len = 0;
        d
    }

    /// Free every mbuf in the batch (one bulk call).
    pub fn free_all(&mut self) {
        if self.len > 0 {
            // SAFETY: slots[..len] are owned mbufs; after the call we own none.
            unsafe { sys::rte_pktmbuf_free_bulk(self.slots.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }
}

impl<const N: usize> Drop for MbufBatch<N> {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// The mbufs taken out of a batch, in order (see [`MbufBatch::take_all`]).
pub struct MbufDrain<const N: usize> {
    slots: [*mut sys::rte_mbuf; N],
    pos: usize,
    len: usize,
}

impl<const N: usize> Iterator for MbufDrain<N> {
    type Item = Mbuf;
    fn next(&mut self) -> Option<Mbuf> {
        while self.pos < self.len {
            let p = self.slots[self.pos];
            self.pos += 1;
            if let Some(p) = NonNull::new(p) {
                return Some(Mbuf(p));
            }
        }
        None
    }
}

impl<const N: usize> Drop for MbufDrain<N> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}

/// Mbufs for new packets (fragments, ICMP errors, reassembled datagrams):
/// the regular pool, or the jumbo pool when the packet needs more room.
pub struct PoolAlloc<'a> {
    pub regular: &'a Mempool,
    pub jumbo: Option<&'a Mempool>,
}

impl crate::mtu::BufAlloc for PoolAlloc<'_> {
    type Buf = Mbuf;
    fn alloc(&mut self, len: usize) -> Option<Mbuf> {
        // Room for the packet, an Ethernet header and ESP growth behind the headroom.
        let need = len + 14 + 128;
        if need + usize::from(sys::RTE_PKTMBUF_HEADROOM as u16) <= usize::from(self.regular.data_room()) {
            self.regular.alloc()
        } else {
            self.jumbo.filter(|j| need + 128 <= usize::from(j.data_room())).and_then(Mempool::alloc)
        }
    }
}

/// Link state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic hardware counters of a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Packets the NIC dropped because no RX descriptor was free.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// How to bring a port up.
#[derive(Debug, Clone)]
pub struct PortSetup {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// MTU to set; `None` keeps the device's.
    pub mtu: Option<u16>,
    /// Spread received packets over RX queues by IP addresses (RSS).
    pub rss: bool,
    pub promiscuous: bool,
}

/// What the device says it can do.
#[derive(Debug, Clone)]
pub struct PortCaps {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub min_mtu: u16,
    pub max_mtu: u16,
    pub rss_offloads: u64,
}

/// An ethdev port. Stopped and closed on drop.
pub struct Port {
    id: u16,
    name: String,
    started: bool,
    closed: bool,
}

impl Port {
    /// Find a probed port by its device name (`net_pcap0`, `0000:01:00.0`, ...).
    pub fn by_name(_eal: &Eal, name: &str) -> Result<Port, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(DpdkError::NoSuchPort(name.to_string()));
        }
        Ok(Port { id, name: name.to_string(), started: false, closed: false })
    }

    /// The DPDK port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, op: &'static str, rc: i32) -> DpdkError {
        DpdkError::Port { port: self.id, name: self.name.clone(), op, reason: strerror(rc) }
    }

    /// Device capabilities.
    pub fn caps(&self) -> Result<PortCaps, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_info_get(self.id, &mut info) };
        if rc != 0 {
            return Err(self.err("dev_info_get", rc));
        }
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name is a static C string owned by the driver.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        Ok(PortCaps {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            min_mtu: info.min_mtu,
            max_mtu: info.max_mtu,
            rss_offloads: info.flow_type_rss_offloads,
        })
    }

    /// Configure queues and MTU (port must be stopped).
    pub fn configure(&mut self, setup: &PortSetup, pool: &Mempool) -> Result<(), DpdkError> {
        let caps = self.caps()?;
        let mut conf = sys::rte_eth_conf::default();
        if setup.rss && setup.rx_queues > 1 {
            // SAFETY: pure functions returning constants.
            let want = unsafe { sys::espgw_rss_ip_mask() };
            let hf = want & caps.rss_offloads;
            if hf != 0 {
                conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
            }
        }
        if let Some(mtu) = setup.mtu {
            conf.rxmode.mtu = mtu as u32;
        }
        // SAFETY: valid port id; conf is a fully initialised struct.
        let rc = unsafe { sys::rte_eth_dev_configure(self.id, setup.rx_queues, setup.tx_queues, &conf) };
        if rc != 0 {
            return Err(self.err("configure", rc));
        }
        // SAFETY: valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { sys::SOCKET_ID_ANY } else { socket } as u32;
        for q in 0..setup.rx_queues {
            // SAFETY: port configured with rx_queues queues; NULL conf = driver defaults; pool alive
            // for as long as the port (closed before the pool is freed).
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(self.id, q, setup.rx_desc, socket, std::ptr::null(), pool.as_ptr())
            };
            if rc != 0 {
                return Err(self.err("rx_queue_setup", rc));
            }
        }
        for q in 0..setup.tx_queues {
            // SAFETY: port configured with tx_queues queues; NULL conf = driver defaults.
            let rc = unsafe { sys::rte_eth_tx_queue_setup(self.id, q, setup.tx_desc, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(self.err("tx_queue_setup", rc));
            }
        }
        if let Some(mtu) = setup.mtu {
            // Some virtual drivers do not implement MTU changes; the configured
            // value still rules espgw's own MTU handling, so -ENOTSUP is fine.
            // SAFETY: valid port id.
            let rc = unsafe { sys::rte_eth_dev_set_mtu(self.id, mtu) };
            if rc != 0 && rc != -(libc_enotsup()) {
                return Err(self.err("set_mtu", rc));
            }
        }
        if setup.promiscuous {
            // SAFETY: valid port id. Failure (driver without the mode) is harmless.
            unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        }
        Ok(())
    }

    /// Start the port.
    pub fn start(&mut self) -> Result<(), DpdkError> {
        // SAFETY: configured port.
        let rc = unsafe { sys::rte_eth_dev_start(self.id) };
        if rc != 0 {
            return Err(self.err("start", rc));
        }
        self.started = true;
        Ok(())
    }

    /// Stop the port (idempotent).
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: started port; no worker polls it any more (caller's duty).
            unsafe { sys::rte_eth_dev_stop(self.id) };
            self.started = false;
        }
    }

    /// Stop and close the port, releasing every mbuf its queues hold (idempotent).
    pub fn close(&mut self) {
        self.stop();
        if !self.closed {
            // SAFETY: stopped port; no other thread uses it.
            unsafe { sys::rte_eth_dev_close(self.id) };
            self.closed = true;
        }
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { sys::rte_eth_macaddr_get(self.id, &mut a) };
        a.addr_bytes
    }

    /// The device's current MTU.
    pub fn mtu(&self) -> Option<u16> {
        let mut mtu = 0u16;
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_mtu(self.id, &mut mtu) };
        (rc == 0).then_some(mtu)
    }

    /// Link state, without waiting.
    pub fn link(&self) -> LinkStatus {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { sys::rte_eth_link_get_nowait(self.id, &mut l) };
        LinkStatus { up: l.link_status() != 0, speed_mbps: l.link_speed, full_duplex: l.link_duplex() != 0 }
    }

    /// Hardware counters.
    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Extended counters by name.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        // SAFETY: NULL/0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let mut names = vec![sys::rte_eth_xstat_name::default(); n as usize];
        let mut vals = vec![sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: buffers sized for n entries.
        let got_names = unsafe { sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        // SAFETY: buffers sized for n entries.
        let got_vals = unsafe { sys::rte_eth_xstats_get(self.id, vals.as_mut_ptr(), n as u32) };
        if got_names != n || got_vals != n {
            return Vec::new();
        }
        vals.iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK NUL-terminates xstat names within RTE_ETH_XSTATS_NAME_SIZE.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) }.to_string_lossy().into_owned();
                Some((s, v.value))
            })
            .collect()
    }

    /// Receive up to the batch's free room from `queue`. Returns how many arrived.
    #[inline]
    pub fn rx_burst<const N: usize>(&self, queue: u16, batch: &mut MbufBatch<N>) -> usize {
        let room = batch.room().min(u16::MAX as usize) as u16;
        if room == 0 {
            return 0;
        }
        // SAFETY: the slots after `len` are free; the driver writes at most `room` owned mbufs there.
        let n = unsafe { sys::espgw_rx_burst(self.id, queue, batch.slots.as_mut_ptr().add(batch.len), room) };
        batch.len += n as usize;
        n as usize
    }

    /// Send from the front of the batch on `queue`; what the driver refuses
    /// stays in the batch, moved to the front, to be retried later (TX
    /// backpressure). Returns how many were sent.
    #[inline]
    pub fn tx_burst_keep<const N: usize>(&self, queue: u16, batch: &mut MbufBatch<N>) -> usize {
        let n = batch.len;
        if n == 0 {
            return 0;
        }
        let mut sent = 0usize;
        while sent < n {
            let chunk = (n - sent).min(u16::MAX as usize) as u16;
            // SAFETY: slots[sent..n] are owned mbufs; the driver takes ownership of the ones it sends.
            let k = unsafe { sys::espgw_tx_burst(self.id, queue, batch.slots.as_mut_ptr().add(sent), chunk) } as usize;
            sent += k;
            if k < chunk as usize {
                break;
            }
        }
        batch.slots.copy_within(sent..n, 0);
        batch.len = n - sent;
        sent
    }

    /// Receive and free whatever is waiting on RX queues `0..queues` (used at
    /// shutdown, after the workers stopped: some drivers, e.g. net_ring, keep
    /// queued mbufs across close). Returns how many were freed.
    pub fn drain_rx(&self, queues: u16) -> u64 {
        let mut freed = 0u64;
        let mut b: MbufBatch<64> = MbufBatch::new();
        for q in 0..queues {
            // Bounded: a generator device (net_null) never runs dry.
            for _ in 0..1024 {
                let n = self.rx_burst(q, &mut b);
                b.free_all();
                freed += n as u64;
                if n == 0 {
                    break;
                }
            }
        }
        freed
    }

    /// Send the whole batch on `queue`. What the driver takes is its to free;
    /// what it refuses is freed here. Returns `(sent, refused)`; the batch is
    /// empty afterwards.
    #[inline]
    pub fn tx_burst<const N: usize>(&self, queue: u16, batch: &mut MbufBatch<N>) -> (usize, usize) {
        let n = batch.len;
        if n == 0 {
            return (0, 0);
        }
        // SAFETY: slots[..n] are owned mbufs; the driver takes ownership of the first `sent`.
        let sent = unsafe { sys::espgw_tx_burst(self.id, queue, batch.slots.as_mut_ptr(), n as u16) } as usize;
        let refused = n - sent;
        if refused > 0 {
            // SAFETY: slots[sent..n] are still ours; free them in one call.
            unsafe { sys::rte_pktmbuf_free_bulk(batch.slots.as_mut_ptr().add(sent), refused as u32) };
        }
        batch.len = 0;
        (sent, refused)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.close();
    }
}

/// ENOTSUP on Linux (DPDK returns negative errno values).
const fn libc_enotsup() -> i32 {
    95
}
