//! The poll loop: rx burst → pipeline (or plain forwarding) → tx buffer per
//! port → tx burst.
//!
//! One worker per configured core, pinned, registered with EAL. A worker owns
//! its RX queues (one per port it polls), one TX queue on every port, its
//! reassembly table and its counters; it shares nothing mutable with another
//! worker. The policy snapshot is loaded once per loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::dpdk::{DpdkError, Mbuf, MbufBatch, Mempool, PoolAlloc, Port, ThreadRegistration};
use crate::mtu::ReasmConfig;
use crate::pipeline::{BurstCtx, LearnQueue, Pipeline, PortInfo, TxSink};
use crate::policy::PolicyReader;
use crate::route::RouteTable;
use crate::stats::{DropReason, WorkerStats};

/// Packets per RX burst.
pub const BURST: usize = crate::pipeline::BURST;
/// Consecutive empty polls before an idle worker may sleep (when allowed).
const IDLE_POLLS_BEFORE_SLEEP: u32 = 256;

/// One RX queue a worker polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxQueue {
    /// Gateway port index.
    pub port: usize,
    /// Queue id on that port.
    pub queue: u16,
}

/// What one worker does.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// Worker index (0-based), also its TX queue id on every port.
    pub index: usize,
    /// CPU core to pin to.
    pub core: usize,
    /// RX queues to poll.
    pub rx: Vec<RxQueue>,
    /// Plain forwarding (bypass): egress port for an ingress port, when set.
    /// Ports without it go through the IPsec pipeline.
    pub forward: Vec<Option<usize>>,
    /// Sleep this long after a run of empty polls (0 = pure busy polling).
    pub idle_sleep: Duration,
}

/// Everything the workers share (read-only or lock-free).
#[derive(Clone)]
pub struct Shared {
    pub ports: Arc<Vec<Port>>,
    pub port_info: Vec<PortInfo>,
    pub policy: PolicyReader,
    /// Routes and neighbours, republished by the main thread as neighbours are learned.
    pub routes: Arc<arc_swap::ArcSwap<RouteTable>>,
    /// Neighbours learned by the workers, for the main thread.
    pub learned: Arc<LearnQueue>,
    pub pool: Arc<Mempool>,
    pub jumbo: Option<Arc<Mempool>>,
    pub reasm: ReasmConfig,
    pub pmtu_ageing_ms: u64,
    pub running: Arc<AtomicBool>,
}

/// A running worker thread.
pub struct WorkerHandle {
    pub plan: WorkerPlan,
    pub stats: Arc<WorkerStats>,
    join: JoinHandle<Result<(), DpdkError>>,
}

impl WorkerHandle {
    /// Wait for the worker to finish.
    pub fn join(self) -> Result<(WorkerPlan, Arc<WorkerStats>), DpdkError> {
        let r = self.join.join().unwrap_or_else(|_| Err(DpdkError::ThreadRegister("worker panicked".into())));
        r.map(|()| (self.plan, self.stats))
    }
}

/// Start a worker: pin to its core, register with EAL, poll until stopped.
pub fn spawn(plan: WorkerPlan, shared: Shared) -> std::io::Result<WorkerHandle> {
    let stats = Arc::new(WorkerStats::new(shared.ports.len()));
    let (p, s) = (plan.clone(), stats.clone());
    let join = std::thread::Builder::new().name(format!("espgw-worker{}", plan.index)).spawn(move || {
        // Pinning can fail in restricted cpusets; the worker still runs, unpinned.
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: p.core });
        let _reg = ThreadRegistration::register()?;
        poll_loop(&p, &shared, &s);
        Ok(())
    })?;
    Ok(WorkerHandle { plan, stats, join })
}

/// Packets a worker may hold per port while the driver pushes back.
pub const TX_BUFFER: usize = 256;

/// TX buffers of one worker, one per port, flushed once per loop (and when
/// full). What the driver refuses stays buffered and is retried on the next
/// loop, so a short stall (a peer not polling yet, a full ring) loses
/// nothing; only a packet that finds the buffer still full is dropped,
/// counted as `tx_refused`.
struct TxBuffers<'a> {
    ports: &'a [Port],
    bufs: Vec<MbufBatch<TX_BUFFER>>,
    txq: u16,
    stats: &'a WorkerStats,
}

impl TxBuffers<'_> {
    fn flush(&mut self, port: usize) {
        let batch = &mut self.bufs[port];
        if batch.is_empty() {
            return;
        }
        // Lengths are read before the driver owns the mbufs, so sent bytes are exact.
        let mut lens = [0u32; TX_BUFFER];
        for (l, m) in lens.iter_mut().zip(batch.as_slice()) {
            *l = m.pkt_len();
        }
        let sent = self.ports[port].tx_burst_keep(self.txq, batch);
        let pc = &self.stats.ports[port];
        pc.tx_packets.add(sent as u64);
        pc.tx_bytes.add(lens[..sent].iter().map(|&l| u64::from(l)).sum());
    }

    fn flush_all(&mut self) {
        for p in 0..self.bufs.len() {
            self.flush(p);
        }
    }

    /// At shutdown: a few more tries, then free (and count) what is left.
    fn drain(&mut self) {
        for _ in 0..100 {
            self.flush_all();
            if self.bufs.iter().all(MbufBatch::is_empty) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for b in &mut self.bufs {
            self.stats.drop_n(DropReason::TxRefused, b.len() as u64);
            b.free_all();
        }
    }
}

impl TxSink<Mbuf> for TxBuffers<'_> {
    #[inline]
    fn send(&mut self, port: usize, pkt: Mbuf) {
        if let Err(pkt) = self.bufs[port].push(pkt) {
            self.flush(port);
            if self.bufs[port].push(pkt).is_err() {
                // Still full: the driver is not taking packets. Drop this one.
                self.stats.drop_one(DropReason::TxRefused);
            }
        }
    }
}

/// The loop itself. No allocation, no lock, no panic per packet.
fn poll_loop(plan: &WorkerPlan, sh: &Shared, stats: &WorkerStats) {
    let ports = &sh.ports[..];
    let mut rx: MbufBatch<BURST> = MbufBatch::new();
    let mut tx =
        TxBuffers { ports, bufs: (0..ports.len()).map(|_| MbufBatch::new()).collect(), txq: plan.index as u16, stats };
    let mut pipeline: Pipeline<Mbuf> =
        Pipeline::new(sh.port_info.clone(), sh.reasm, sh.pmtu_ageing_ms).with_learning(sh.learned.clone());
    let mut alloc = PoolAlloc { regular: &sh.pool, jumbo: sh.jumbo.as_deref() };
    let mut last_tick = 0u64;
    let mut idle_run = 0u32;

    while sh.running.load(Ordering::Relaxed) {
        let snap = sh.policy.load();
        let routes = sh.routes.load();
        let now_ms = crate::clock::now_ms();
        let mut got_any = false;
        for q in &plan.rx {
            let n = ports[q.port].rx_burst(q.queue, &mut rx);
            if n == 0 {
                continue;
            }
            got_any = true;
            let pc = &stats.ports[q.port];
            pc.rx_packets.add(n as u64);
            let mut bytes = 0u64;
            for m in rx.as_mut_slice() {
                bytes += u64::from(m.pkt_len());
            }
            pc.rx_bytes.add(bytes);
            // Multi-segment packets are made contiguous; those that cannot be
            // (first segment too small) are dropped and counted, never passed on.
            let burst = rx.take_all().filter_map(|mut m| match m.linearize() {
                Ok(()) => Some(m),
                Err(_) => {
                    stats.drop_one(DropReason::MultiSegment);
                    None
                }
            });
            match plan.forward.get(q.port).copied().flatten() {
                Some(out) => {
                    for m in burst {
                        tx.send(out, m);
                    }
                }
                None => {
                    let mut cx = BurstCtx { routes: &routes, now_ms, alloc: &mut alloc, tx: &mut tx, stats };
                    pipeline.process(q.port, burst, &snap, &mut cx)
                }
            }
        }
        tx.flush_all();
        if now_ms >= last_tick + 10 {
            pipeline.tick(now_ms, stats);
            last_tick = now_ms;
        }
        drop(snap);
        drop(routes);
        if got_any {
            stats.busy_polls.inc();
            idle_run = 0;
        } else {
            stats.idle_polls.inc();
            idle_run = idle_run.saturating_add(1);
            if !plan.idle_sleep.is_zero() && idle_run >= IDLE_POLLS_BEFORE_SLEEP {
                std::thread::sleep(plan.idle_sleep);
            }
        }
    }
    tx.drain();
    // The reassembly table's fragments go back to the pool with `pipeline`.
}
