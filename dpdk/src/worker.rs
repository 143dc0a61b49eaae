//! The poll loop: RX burst → pipeline (or plain forwarding) → TX buffer per
//! port → TX burst.
//!
//! One worker per configured core, on its own EAL lcore. A worker owns its
//! RX queue handles (one per port it polls), one TX queue handle on every
//! port, its reassembly table and its counters; it shares nothing mutable
//! with another worker. The policy snapshot is loaded once per loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use espgw_core::mtu::ReasmConfig;
use espgw_core::pipeline::{AcquireQueue, BurstCtx, IkeQueues, LearnQueue, NatQueue, Pipeline, PortInfo, TxSink};
use espgw_core::policy::PolicyReader;
use espgw_core::route::RouteTable;
use espgw_core::stats::{DropReason, WorkerStats};

use crate::mbuf::{Mbuf, MbufBatch};
use crate::mempool::{Mempool, PoolAlloc};
use crate::port::{RxQueue, TxQueue};

/// Packets per RX burst.
pub const BURST: usize = espgw_core::pipeline::BURST;
/// Consecutive empty polls before an idle worker may sleep (when allowed).
const IDLE_POLLS_BEFORE_SLEEP: u32 = 256;
/// How often the worker does its periodic work (reassembly timeouts).
const TICK_MS: u64 = 10;

/// What one worker does, besides the queues it is given.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// Worker index (0-based), also its TX queue id on every port.
    pub index: usize,
    /// Plain forwarding (bypass): egress port for an ingress port, when set.
    /// Ports without it go through the IPsec pipeline.
    pub forward: Vec<Option<usize>>,
    /// Sleep this long after a run of empty polls (0 = pure busy polling).
    pub idle_sleep: Duration,
}

/// What every worker reads (immutable or lock-free). `'p` is how long the
/// pools are borrowed (the mbufs' lifetime), `'e` the EAL's.
pub struct Shared<'p, 'e> {
    pub port_info: Vec<PortInfo>,
    pub policy: PolicyReader,
    /// Routes and neighbours, republished by the main thread as neighbours are learned.
    pub routes: Arc<arc_swap::ArcSwap<RouteTable>>,
    /// Neighbours learned by the workers, for the main thread.
    pub learned: Arc<LearnQueue>,
    /// `%trap` hits, for the control thread's ACQUIRE events.
    pub acquires: Arc<AcquireQueue>,
    /// NAT mapping changes of UDP SAs, for the control thread.
    pub nat_reports: Arc<NatQueue>,
    /// Host path: packets per second per worker to the kernel, per bucket.
    pub host_rate: u32,
    /// IKE to and from the control thread's daemon, when connections are configured.
    pub ike: Option<IkeQueues>,
    pub pool: &'p Mempool<'e>,
    pub jumbo: Option<&'p Mempool<'e>>,
    pub reasm: ReasmConfig,
    pub pmtu_ageing_ms: u64,
    pub running: &'p AtomicBool,
}

/// One RX queue a worker polls, with the gateway's index of its port.
pub struct Rx<'q, 'p> {
    pub port: usize,
    pub queue: RxQueue<'q, 'p>,
}

/// Packets a worker may hold per port while the driver pushes back.
pub const TX_BUFFER: usize = 256;

/// TX buffers of one worker, one per port, flushed once per loop (and when
/// full). What the driver refuses stays buffered and is retried on the next
/// loop, so a short stall (a peer not polling yet, a full ring) loses
/// nothing; only a packet that finds the buffer still full is dropped,
/// counted as `tx_refused`.
struct TxBuffers<'t, 'q, 'p> {
    queues: &'t mut [TxQueue<'q, 'p>],
    bufs: Vec<MbufBatch<'p, TX_BUFFER>>,
    stats: &'t WorkerStats,
}

impl TxBuffers<'_, '_, '_> {
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
        let sent = self.queues[port].tx_burst_keep(batch);
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

impl<'p> TxSink<Mbuf<'p>> for TxBuffers<'_, '_, 'p> {
    #[inline]
    fn send(&mut self, port: usize, pkt: Mbuf<'p>) {
        if let Err(pkt) = self.bufs[port].push(pkt) {
            self.flush(port);
            if self.bufs[port].push(pkt).is_err() {
                // Still full: the driver is not taking packets. Drop this one.
                self.stats.drop_one(DropReason::TxRefused);
            }
        }
    }
}

/// Run the poll loop until `shared.running` turns false. No allocation, no
/// lock, no panic per packet.
pub fn poll_loop<'q, 'p>(
    plan: &WorkerPlan,
    shared: &Shared<'p, '_>,
    mut rx: Vec<Rx<'q, 'p>>,
    mut tx: Vec<TxQueue<'q, 'p>>,
    stats: &WorkerStats,
) {
    let mut batch: MbufBatch<'p, BURST> = MbufBatch::new();
    let nports = tx.len();
    let mut txb = TxBuffers { queues: &mut tx, bufs: (0..nports).map(|_| MbufBatch::new()).collect(), stats };
    let mut pipeline: Pipeline<Mbuf<'p>> = Pipeline::new(shared.port_info.clone(), shared.reasm, shared.pmtu_ageing_ms)
        .with_learning(shared.learned.clone())
        .with_acquires(shared.acquires.clone())
        .with_nat_reports(shared.nat_reports.clone())
        .with_host_rate(shared.host_rate);
    if let Some(q) = &shared.ike {
        pipeline = pipeline.with_ike(q.clone(), shared.host_rate);
    }
    let mut alloc = PoolAlloc { regular: shared.pool, jumbo: shared.jumbo };
    let mut last_tick = 0u64;
    let mut idle_run = 0u32;

    while shared.running.load(Ordering::Relaxed) {
        let snap = shared.policy.load();
        let routes = shared.routes.load();
        let now_ms = espgw_core::clock::now_ms();
        let mut got_any = false;
        for q in &mut rx {
            let n = q.queue.rx_burst(&mut batch);
            if n == 0 {
                continue;
            }
            got_any = true;
            let pc = &stats.ports[q.port];
            pc.rx_packets.add(n as u64);
            // One pass over the mbuf headers: bytes counted, packet data prefetched.
            pc.rx_bytes.add(
                batch
                    .as_slice()
                    .iter()
                    .map(|m| {
                        m.prefetch_data();
                        u64::from(m.pkt_len())
                    })
                    .sum(),
            );
            // Multi-segment packets are made contiguous; those that cannot be
            // (first segment too small) are dropped and counted, never passed on.
            let mut drained = batch.take_all();
            let burst = drained.by_ref().filter_map(|mut m| match m.linearize() {
                Ok(()) => Some(m),
                Err(_) => {
                    stats.drop_one(DropReason::MultiSegment);
                    None
                }
            });
            match plan.forward.get(q.port).copied().flatten() {
                Some(out) => {
                    for m in burst {
                        txb.send(out, m);
                    }
                }
                None => {
                    let mut cx = BurstCtx { routes: &routes, now_ms, alloc: &mut alloc, tx: &mut txb, stats };
                    pipeline.process(q.port, burst, &snap, &mut cx)
                }
            }
            stats.drop_n(DropReason::SharedMbuf, drained.shared as u64);
        }
        txb.flush_all();
        if now_ms >= last_tick + TICK_MS {
            if shared.ike.is_some() {
                let mut cx = BurstCtx { routes: &routes, now_ms, alloc: &mut alloc, tx: &mut txb, stats };
                pipeline.send_ike(&mut cx);
                txb.flush_all();
            }
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
    txb.drain();
    // Fragments still waiting for the rest of their datagram are freed and counted.
    pipeline.shutdown(stats);
}
