//! Per-worker counters, cache-line padded, lock-free.
//!
//! Each counter has exactly one writer (the worker that owns it), so an
//! increment is a relaxed load + store rather than an atomic read-modify-write:
//! no bus lock on the data path. Readers (control thread, shutdown report)
//! load with `Relaxed` and sum across workers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a packet was dropped. Every drop in espgw has one of these; the label
/// is the Prometheus `reason` label and the name in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The driver refused the packet on transmit (TX ring full).
    TxRefused,
    /// The packet arrived on a port with no forwarding/route for it.
    NoRoute,
    /// A multi-segment packet could not be made contiguous.
    MultiSegment,
}

impl DropReason {
    /// All reasons, in counter-array order.
    pub const ALL: [DropReason; 3] = [DropReason::TxRefused, DropReason::NoRoute, DropReason::MultiSegment];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Stable snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::TxRefused => "tx_refused",
            DropReason::NoRoute => "no_route",
            DropReason::MultiSegment => "multi_segment",
        }
    }
}

/// Packet and byte counters of one port as seen by one worker.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
}

/// Everything one worker counts. Padded so two workers never share a line.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Polls that received at least one packet.
    pub busy_polls: Counter,
    /// Polls that received nothing.
    pub idle_polls: Counter,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [Counter; DropReason::COUNT],
    /// Per port, indexed by the gateway's port index.
    pub ports: Box<[PortCounters]>,
}

impl WorkerStats {
    /// Counters for a gateway with `nports` ports.
    pub fn new(nports: usize) -> Self {
        WorkerStats {
            busy_polls: Counter::default(),
            idle_polls: Counter::default(),
            drops: Default::default(),
            ports: (0..nports).map(|_| PortCounters::default()).collect(),
        }
    }

    /// Count one drop.
    #[inline]
    pub fn drop_one(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }

    /// Count `n` drops.
    #[inline]
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason as usize].add(n);
        }
    }

    /// Total drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Packets received over all ports.
    pub fn rx_packets(&self) -> u64 {
        self.ports.iter().map(|p| p.rx_packets.get()).sum()
    }

    /// Packets sent over all ports.
    pub fn tx_packets(&self) -> u64 {
        self.ports.iter().map(|p| p.tx_packets.get()).sum()
    }

    /// Share of polls that found work, 0..=1.
    pub fn busy_ratio(&self) -> f64 {
        let b = self.busy_polls.get() as f64;
        let i = self.idle_polls.get() as f64;
        if b + i == 0.0 {
            0.0
        } else {
            b / (b + i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_and_label() {
        let s = WorkerStats::new(2);
        s.ports[0].rx_packets.add(3);
        s.ports[1].rx_packets.inc();
        s.ports[1].tx_packets.add(2);
        s.drop_one(DropReason::NoRoute);
        s.drop_n(DropReason::TxRefused, 4);
        s.drop_n(DropReason::MultiSegment, 0);
        assert_eq!(s.rx_packets(), 4);
        assert_eq!(s.tx_packets(), 2);
        assert_eq!(s.total_drops(), 5);
        assert_eq!(s.drops[DropReason::TxRefused as usize].get(), 4);
        let labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["tx_refused", "no_route", "multi_segment"]);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn worker_stats_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<WorkerStats>(), 64);
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
    }
}
