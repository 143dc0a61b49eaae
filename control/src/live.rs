//! What the control thread reads while the gateway runs: port and worker
//! counters (single-writer atomics, read without locks), mempools, and the
//! route table for each SA's egress MTU. Nothing here ever blocks a worker.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use espgw_core::route::RouteTable;
use espgw_core::stats::{DropReason, Event, WorkerStats};
use espgw_dpdk::{Mempool, Port, PortStats};
use serde::Serialize;

use crate::store::SaStatus;

/// One port as configured.
#[derive(Debug, Clone)]
pub struct PortMeta {
    pub name: String,
    pub role: &'static str,
    pub mtu: u16,
}

/// One worker: where it runs and its counters.
pub struct WorkerMeta {
    pub index: usize,
    pub core: usize,
    pub stats: Arc<WorkerStats>,
}

/// Busy/idle polls at the last load sample, and the ratio over the interval.
#[derive(Default)]
struct LoadSample {
    at: Option<Instant>,
    polls: Vec<(u64, u64)>,
    ratio: Vec<f64>,
}

/// Everything live the API and `/metrics` report. It borrows the ports and
/// pools (the control thread runs in a scope inside the gateway's run).
pub struct Live<'a> {
    pub started: Instant,
    pub started_unix: f64,
    pub ports: &'a [Port<'a>],
    pub port_meta: Vec<PortMeta>,
    pub workers: Vec<WorkerMeta>,
    pub pools: Vec<(&'static str, &'a Mempool<'a>)>,
    pub routes: Arc<ArcSwap<RouteTable>>,
    load: Mutex<LoadSample>,
}

/// Counters of one port (summed over workers) and its device's view.
#[derive(Debug, Clone, Serialize)]
pub struct PortStatus {
    pub name: String,
    pub role: &'static str,
    pub device: String,
    pub mtu: u16,
    pub link_up: bool,
    pub link_speed_mbps: u32,
    pub mac: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Per RX/TX queue (= per worker) packet counts.
    pub queues: Vec<QueueStatus>,
    pub hw: HwStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub queue: usize,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// The device's own counters (API, metrics and the final report).
#[derive(Debug, Clone, Serialize)]
pub struct HwStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

impl From<PortStats> for HwStats {
    fn from(h: PortStats) -> Self {
        HwStats {
            ipackets: h.ipackets,
            opackets: h.opackets,
            ibytes: h.ibytes,
            obytes: h.obytes,
            imissed: h.imissed,
            ierrors: h.ierrors,
            oerrors: h.oerrors,
            rx_nombuf: h.rx_nombuf,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub index: usize,
    pub core: usize,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub drops: u64,
    pub busy_polls: u64,
    pub idle_polls: u64,
    /// Share of polls that found packets over the last second.
    pub busy_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: &'static str,
    pub size: u32,
    pub in_use: u32,
}

/// Path MTU of one outbound SA.
#[derive(Debug, Clone, Serialize)]
pub struct PmtuStatus {
    pub sa: String,
    pub spi: u32,
    /// Learned from ICMP, while it has not aged out.
    pub learned: Option<u16>,
    /// MTU of the port the tunnel's packets leave by (tunnel SAs with a route).
    pub egress_mtu: Option<u16>,
    /// What the SA uses now: the learned one, else the egress port's.
    pub effective: Option<u16>,
}

impl<'a> Live<'a> {
    pub fn new(
        ports: &'a [Port<'a>],
        port_meta: Vec<PortMeta>,
        workers: Vec<WorkerMeta>,
        pools: Vec<(&'static str, &'a Mempool<'a>)>,
        routes: Arc<ArcSwap<RouteTable>>,
    ) -> Live<'a> {
        Live {
            started: Instant::now(),
            started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            ports,
            port_meta,
            workers,
            pools,
            routes,
            load: Mutex::new(LoadSample::default()),
        }
    }

    /// Refresh the per-worker busy ratio when a second has passed (called by
    /// the control thread between requests).
    pub fn sample_load(&self) {
        let mut l = self.load.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if l.at.is_some_and(|t| now.duration_since(t).as_millis() < 1000) {
            return;
        }
        let polls: Vec<(u64, u64)> =
            self.workers.iter().map(|w| (w.stats.busy_polls.get(), w.stats.idle_polls.get())).collect();
        let ratio = polls
            .iter()
            .enumerate()
            .map(|(i, &(b, idle))| {
                let (b0, i0) = l.polls.get(i).copied().unwrap_or((0, 0));
                let (db, di) = (b.saturating_sub(b0), idle.saturating_sub(i0));
                if db + di == 0 {
                    0.0
                } else {
                    db as f64 / (db + di) as f64
                }
            })
            .collect();
        *l = LoadSample { at: Some(now), polls, ratio };
    }

    fn busy_ratio(&self, w: usize) -> f64 {
        let l = self.load.lock().unwrap_or_else(|p| p.into_inner());
        l.ratio.get(w).copied().unwrap_or_else(|| self.workers[w].stats.busy_ratio())
    }

    pub fn ports(&self) -> Vec<PortStatus> {
        self.ports
            .iter()
            .zip(&self.port_meta)
            .enumerate()
            .map(|(i, (p, m))| {
                let sum = |f: fn(&espgw_core::stats::PortCounters) -> u64| -> u64 {
                    self.workers.iter().map(|w| f(&w.stats.ports[i])).sum()
                };
                let link = p.link();
                PortStatus {
                    name: m.name.clone(),
                    role: m.role,
                    device: p.name().to_string(),
                    mtu: m.mtu,
                    link_up: link.up,
                    link_speed_mbps: link.speed_mbps,
                    mac: crate::config::fmt_mac(&p.mac()),
                    rx_packets: sum(|c| c.rx_packets.get()),
                    rx_bytes: sum(|c| c.rx_bytes.get()),
                    tx_packets: sum(|c| c.tx_packets.get()),
                    tx_bytes: sum(|c| c.tx_bytes.get()),
                    queues: self
                        .workers
                        .iter()
                        .map(|w| QueueStatus {
                            queue: w.index,
                            rx_packets: w.stats.ports[i].rx_packets.get(),
                            tx_packets: w.stats.ports[i].tx_packets.get(),
                        })
                        .collect(),
                    hw: p.stats().into(),
                }
            })
            .collect()
    }

    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.workers
            .iter()
            .map(|w| WorkerStatus {
                index: w.index,
                core: w.core,
                rx_packets: w.stats.rx_packets(),
                tx_packets: w.stats.tx_packets(),
                drops: w.stats.total_drops(),
                busy_polls: w.stats.busy_polls.get(),
                idle_polls: w.stats.idle_polls.get(),
                busy_ratio: self.busy_ratio(w.index),
            })
            .collect()
    }

    /// Drops by reason, summed over workers (every reason, zeros included).
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        espgw_core::stats::sum_drops(&self.worker_stats())
    }

    /// Events, summed over workers.
    pub fn events(&self) -> Vec<(Event, u64)> {
        espgw_core::stats::sum_events(&self.worker_stats())
    }

    fn worker_stats(&self) -> Vec<&WorkerStats> {
        self.workers.iter().map(|w| &*w.stats).collect()
    }

    pub fn pools(&self) -> Vec<PoolStatus> {
        self.pools.iter().map(|(n, p)| PoolStatus { name: n, size: p.size(), in_use: p.in_use() }).collect()
    }

    /// Path MTU of every outbound SA.
    pub fn pmtu(&self, sas: &[SaStatus]) -> Vec<PmtuStatus> {
        let routes = self.routes.load();
        sas.iter()
            .filter(|s| s.sa.direction == "out")
            .map(|s| {
                let egress_mtu =
                    s.sa.remote.and_then(|r| routes.route(r)).and_then(|r| self.port_meta.get(r.port)).map(|m| m.mtu);
                PmtuStatus {
                    sa: s.sa.name.clone(),
                    spi: s.sa.spi,
                    learned: s.state.path_mtu,
                    egress_mtu,
                    effective: s.state.path_mtu.or(egress_mtu),
                }
            })
            .collect()
    }

    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
