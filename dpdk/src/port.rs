//! Ethdev ports and their queues.
//!
//! A [`Port`] is configured with the pool its RX rings fill from and cannot
//! outlive it. Once started it hands out queue handles: each RX and TX queue
//! at most once at a time ([`Port::rx_queue`], [`Port::tx_queue`]). A handle
//! is `Send` (a worker takes it to its lcore) but not `Sync`, and bursts take
//! it by `&mut`, so two threads can never poll one queue. Handles borrow the
//! port, so it cannot be closed while a worker still has one.

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::{errno, strerror, DpdkError};
use crate::mbuf::MbufBatch;
use crate::mempool::Mempool;

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
    /// RX descriptors that found no mbuf in the pool.
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
    pub rx_offloads: u64,
}

/// An ethdev port. Stopped and closed on drop (or by [`Port::close`]).
pub struct Port<'p> {
    id: u16,
    name: String,
    started: bool,
    closed: bool,
    /// The NIC verifies IPv4 header checksums (flags in each mbuf).
    rx_ip_checksum: bool,
    rx_taken: Box<[AtomicBool]>,
    tx_taken: Box<[AtomicBool]>,
    _pool: PhantomData<&'p ()>,
}

impl<'p> Port<'p> {
    /// Find a probed port by its device name (`net_pcap0`, `0000:01:00.0`, ...).
    pub fn by_name(_eal: &'p Eal, name: &str) -> Result<Port<'p>, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(DpdkError::NoSuchPort(name.to_string()));
        }
        Ok(Port {
            id,
            name: name.to_string(),
            started: false,
            closed: false,
            rx_ip_checksum: false,
            rx_taken: Box::new([]),
            tx_taken: Box::new([]),
            _pool: PhantomData,
        })
    }

    /// The DPDK port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether received mbufs carry the NIC's IPv4 checksum verdict.
    pub fn rx_ip_checksum_offload(&self) -> bool {
        self.rx_ip_checksum
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
            rx_offloads: info.rx_offload_capa,
        })
    }

    /// Configure queues and MTU (port must be stopped). RX rings fill from
    /// `pool`, which therefore outlives the port.
    pub fn configure(&mut self, setup: &PortSetup, pool: &'p Mempool<'_>) -> Result<(), DpdkError> {
        let caps = self.caps()?;
        let mut conf = sys::rte_eth_conf::default();
        if setup.rss && setup.rx_queues > 1 {
            // SAFETY: pure function returning a constant.
            let want = unsafe { sys::espgw_rss_ip_mask() };
            let hf = want & caps.rss_offloads;
            if hf != 0 {
                conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
            }
        }
        // The NIC checks IPv4 header checksums where it can; software does it otherwise.
        // SAFETY: pure function returning a constant.
        let cksum = unsafe { sys::espgw_rx_offload_ipv4_cksum() };
        self.rx_ip_checksum = caps.rx_offloads & cksum != 0;
        if self.rx_ip_checksum {
            conf.rxmode.offloads |= cksum;
        }
        if let Some(mtu) = setup.mtu {
            conf.rxmode.mtu = u32::from(mtu);
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
            // SAFETY: port configured with rx_queues queues; NULL conf = driver
            // defaults; the pool outlives the port ('p).
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
            // value still rules espgw's own MTU handling, so ENOTSUP is fine.
            // SAFETY: valid port id.
            let rc = unsafe { sys::rte_eth_dev_set_mtu(self.id, mtu) };
            if rc != 0 && rc != -errno::ENOTSUP {
                return Err(self.err("set_mtu", rc));
            }
        }
        if setup.promiscuous {
            // SAFETY: valid port id. Failure (a driver without the mode) is harmless.
            unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        }
        self.rx_taken = (0..setup.rx_queues).map(|_| AtomicBool::new(false)).collect();
        self.tx_taken = (0..setup.tx_queues).map(|_| AtomicBool::new(false)).collect();
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

    /// The handle of RX queue `queue`; one at a time.
    pub fn rx_queue(&self, queue: u16) -> Result<RxQueue<'_, 'p>, DpdkError> {
        take(&self.rx_taken, queue).ok_or(DpdkError::QueueTaken { port: self.id, kind: "RX", queue })?;
        Ok(RxQueue { port: self, queue, _not_sync: PhantomData })
    }

    /// The handle of TX queue `queue`; one at a time.
    pub fn tx_queue(&self, queue: u16) -> Result<TxQueue<'_, 'p>, DpdkError> {
        take(&self.tx_taken, queue).ok_or(DpdkError::QueueTaken { port: self.id, kind: "TX", queue })?;
        Ok(TxQueue { port: self, queue, _not_sync: PhantomData })
    }

    /// Number of RX queues configured.
    pub fn rx_queues(&self) -> u16 {
        self.rx_taken.len() as u16
    }

    /// Stop the port (idempotent). No queue handle exists (they borrow the port).
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: started port; `&mut self` proves no queue handle polls it.
            unsafe { sys::rte_eth_dev_stop(self.id) };
            self.started = false;
        }
    }

    /// Stop and close the port, releasing every mbuf its rings hold (idempotent).
    pub fn close(&mut self) {
        self.stop();
        if !self.closed {
            // SAFETY: stopped port; no handle or other thread uses it (`&mut self`).
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

    /// Receive and free whatever waits on every RX queue (at shutdown, after
    /// the workers gave their queues back: some drivers, e.g. net_ring, keep
    /// queued mbufs across close). Returns how many were freed.
    pub fn drain_rx(&mut self) -> u64 {
        let mut freed = 0u64;
        let mut b: MbufBatch<'p, 64> = MbufBatch::new();
        for q in 0..self.rx_queues() {
            let Ok(mut rxq) = self.rx_queue(q) else { continue };
            // Bounded: a generator device (net_null) never runs dry.
            for _ in 0..1024 {
                let n = rxq.rx_burst(&mut b);
                b.free_all();
                freed += n as u64;
                if n == 0 {
                    break;
                }
            }
        }
        freed
    }
}

fn take(flags: &[AtomicBool], q: u16) -> Option<()> {
    let f = flags.get(usize::from(q))?;
    (!f.swap(true, Ordering::AcqRel)).then_some(())
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The only handle on one RX queue: `Send`, not `Sync`.
pub struct RxQueue<'a, 'p> {
    port: &'a Port<'p>,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl<'p> RxQueue<'_, 'p> {
    /// The port it belongs to.
    pub fn port(&self) -> &Port<'p> {
        self.port
    }

    /// The queue id.
    pub fn id(&self) -> u16 {
        self.queue
    }

    /// Receive up to the batch's free room. Returns how many arrived.
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, batch: &mut MbufBatch<'p, N>) -> usize {
        let room = batch.room().min(usize::from(u16::MAX)) as u16;
        if room == 0 {
            return 0;
        }
        // SAFETY: this handle is the queue's only user (`&mut`, not Sync); the
        // batch's free slots take at most `room` mbufs, which it then owns.
        let n = unsafe { sys::espgw_rx_burst(self.port.id, self.queue, batch.free_slots_ptr(), room) } as usize;
        // SAFETY: the driver wrote n owned mbufs into the free slots.
        unsafe { batch.grow(n) };
        n
    }
}

impl Drop for RxQueue<'_, '_> {
    fn drop(&mut self) {
        self.port.rx_taken[usize::from(self.queue)].store(false, Ordering::Release);
    }
}

/// The only handle on one TX queue: `Send`, not `Sync`.
pub struct TxQueue<'a, 'p> {
    port: &'a Port<'p>,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl<'p> TxQueue<'_, 'p> {
    /// The port it belongs to.
    pub fn port(&self) -> &Port<'p> {
        self.port
    }

    /// Send from the front of the batch, in chunks the driver API can take;
    /// what the driver refuses stays in the batch, moved to the front, to be
    /// retried later (TX backpressure). Returns how many were sent.
    #[inline]
    pub fn tx_burst_keep<const N: usize>(&mut self, batch: &mut MbufBatch<'p, N>) -> usize {
        let n = batch.len();
        let mut sent = 0usize;
        while sent < n {
            let chunk = (n - sent).min(usize::from(u16::MAX)) as u16;
            // SAFETY: slots[sent..n] are owned mbufs; this handle is the
            // queue's only user; the driver takes ownership of those it sends.
            let k =
                unsafe { sys::espgw_tx_burst(self.port.id, self.queue, batch.slots_ptr().add(sent), chunk) } as usize;
            sent += k;
            if k < usize::from(chunk) {
                break;
            }
        }
        batch.consumed_front(sent);
        sent
    }
}

impl Drop for TxQueue<'_, '_> {
    fn drop(&mut self) {
        self.port.tx_taken[usize::from(self.queue)].store(false, Ordering::Release);
    }
}
