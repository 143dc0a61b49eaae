//! The poll loop: rx burst → decide → tx buffer per port → tx burst.
//!
//! One worker per configured core, pinned, registered with EAL. A worker owns
//! its RX queues (one per port it polls), one TX queue on every port, and its
//! counters; it shares nothing mutable with another worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::dpdk::{DpdkError, MbufBatch, Port, ThreadRegistration};
use crate::stats::{DropReason, WorkerStats};

/// Packets per RX burst.
pub const BURST: usize = 32;
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
    /// Forwarding: egress port index for each ingress port index (`None` = drop, counted).
    pub forward: Vec<Option<usize>>,
    /// Sleep this long after a run of empty polls (0 = pure busy polling).
    pub idle_sleep: Duration,
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

/// Start a worker: pin to its core, register with EAL, poll until `running` is false.
pub fn spawn(plan: WorkerPlan, ports: Arc<Vec<Port>>, running: Arc<AtomicBool>) -> std::io::Result<WorkerHandle> {
    let stats = Arc::new(WorkerStats::new(ports.len()));
    let (p, s) = (plan.clone(), stats.clone());
    let join = std::thread::Builder::new().name(format!("espgw-worker{}", plan.index)).spawn(move || {
        // Pinning can fail in restricted cpusets; the worker still runs, unpinned.
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: p.core });
        let _reg = ThreadRegistration::register()?;
        poll_loop(&p, &ports, &s, &running);
        Ok(())
    })?;
    Ok(WorkerHandle { plan, stats, join })
}

/// The loop itself. No allocation, no lock, no panic per packet.
fn poll_loop(plan: &WorkerPlan, ports: &[Port], stats: &WorkerStats, running: &AtomicBool) {
    let txq = plan.index as u16;
    let mut rx: MbufBatch<BURST> = MbufBatch::new();
    // One TX buffer per port, flushed once per loop (or when full).
    let mut tx: Vec<MbufBatch<BURST>> = (0..ports.len()).map(|_| MbufBatch::new()).collect();
    let mut idle_run = 0u32;

    while running.load(Ordering::Relaxed) {
        let mut got_any = false;
        for q in &plan.rx {
            let n = ports[q.port].rx_burst(q.queue, &mut rx);
            if n == 0 {
                continue;
            }
            got_any = true;
            let pc = &stats.ports[q.port];
            pc.rx_packets.add(n as u64);
            let egress = plan.forward.get(q.port).copied().flatten();
            rx.drain(|mut m| {
                pc.rx_bytes.add(m.pkt_len() as u64);
                let Some(out) = egress else {
                    stats.drop_one(DropReason::NoRoute);
                    return; // dropped: `m` is freed here
                };
                if m.linearize().is_err() {
                    stats.drop_one(DropReason::MultiSegment);
                    return;
                }
                if let Err(m) = tx[out].push(m) {
                    // Buffer full: flush, then queue.
                    flush(&ports[out], txq, &mut tx[out], out, stats);
                    let _ = tx[out].push(m);
                }
            });
        }
        for (i, b) in tx.iter_mut().enumerate() {
            flush(&ports[i], txq, b, i, stats);
        }
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
    for (i, b) in tx.iter_mut().enumerate() {
        flush(&ports[i], txq, b, i, stats);
    }
}

#[inline]
fn flush(port: &Port, txq: u16, batch: &mut MbufBatch<BURST>, port_idx: usize, stats: &WorkerStats) {
    if batch.is_empty() {
        return;
    }
    // Lengths are read before the driver owns the mbufs, so sent bytes are exact.
    let mut lens = [0u32; BURST];
    for (l, m) in lens.iter_mut().zip(batch.as_slice()) {
        *l = m.pkt_len();
    }
    let (sent, refused) = port.tx_burst(txq, batch);
    let pc = &stats.ports[port_idx];
    pc.tx_packets.add(sent as u64);
    pc.tx_bytes.add(lens[..sent].iter().map(|&l| l as u64).sum());
    stats.drop_n(DropReason::TxRefused, refused as u64);
}
