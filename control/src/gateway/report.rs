//! The final report of a run: what every port, worker and SA did, drops by
//! reason, and whether every mbuf went back to its pool.

use std::time::Duration;

use espgw_core::stats::{DropReason, Event};
use serde::Serialize;

use crate::config::fmt_mac;
use crate::live::HwStats;

/// Final numbers of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub ports: Vec<PortReport>,
    pub workers: Vec<WorkerReport>,
    #[serde(serialize_with = "ser_drops")]
    pub drops: Vec<(DropReason, u64)>,
    #[serde(serialize_with = "ser_events")]
    pub events: Vec<(Event, u64)>,
    pub sas: Vec<SaReport>,
    /// The IKE daemon's counters (`None` without `[[connection]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ike: Option<crate::ike::daemon::IkeCounters>,
    pub mbufs_total: u32,
    pub mbufs_in_use: u32,
    pub stop_cause: &'static str,
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    pub name: String,
    pub device: String,
    pub role: &'static str,
    pub mtu: u16,
    #[serde(serialize_with = "ser_mac")]
    pub mac: [u8; 6],
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets still queued on RX at shutdown, freed without processing.
    pub drained_at_exit: u64,
    pub hw: HwStats,
}

/// Final usage of one SA.
#[derive(Debug, Clone, Serialize)]
pub struct SaReport {
    pub name: String,
    pub direction: &'static str,
    pub spi: u32,
    pub packets: u64,
    pub bytes: u64,
    pub path_mtu: Option<u16>,
    /// The crypto backend that ran it.
    pub backend: &'static str,
    /// Tunnel SAs: the peer's address; ESP in UDP: its port (as followed
    /// through NAT rebinding, if it was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    pub index: usize,
    pub core: usize,
    pub queues: usize,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub drops: u64,
    pub busy_ratio: f64,
}

impl RunReport {
    /// The human-readable final report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "espgw: stopped ({}) after {:.2}s", self.stop_cause, self.elapsed.as_secs_f64());
        let _ = writeln!(s, "ports:");
        let _ = writeln!(
            s,
            "  {:<10} {:<10} {:<12} {:>10} {:>12} {:>10} {:>12} {:>8} {:>8}",
            "port", "role", "device", "rx pkts", "rx bytes", "tx pkts", "tx bytes", "imissed", "oerrors"
        );
        for p in &self.ports {
            let _ = writeln!(
                s,
                "  {:<10} {:<10} {:<12} {:>10} {:>12} {:>10} {:>12} {:>8} {:>8}",
                p.name,
                p.role,
                p.device,
                p.rx_packets,
                p.rx_bytes,
                p.tx_packets,
                p.tx_bytes,
                p.hw.imissed,
                p.hw.oerrors
            );
        }
        let _ = writeln!(s, "workers:");
        for w in &self.workers {
            let _ = writeln!(
                s,
                "  worker {} core {} rx queues {}: rx {} tx {} dropped {} busy {:.1}%",
                w.index,
                w.core,
                w.queues,
                w.rx_packets,
                w.tx_packets,
                w.drops,
                w.busy_ratio * 100.0
            );
        }
        let busy: Vec<String> =
            self.events.iter().filter(|(_, n)| *n > 0).map(|(e, n)| format!("{} {n}", e.label())).collect();
        if !busy.is_empty() {
            let _ = writeln!(s, "ipsec: {}", busy.join(", "));
        }
        for sa in &self.sas {
            let pmtu = sa.path_mtu.map_or(String::new(), |m| format!(", path MTU {m}"));
            let _ = writeln!(
                s,
                "  sa {:<14} {:<3} spi 0x{:08x}: {} packets, {} bytes{pmtu}",
                sa.name, sa.direction, sa.spi, sa.packets, sa.bytes
            );
        }
        let total_drops: u64 = self.drops.iter().map(|(_, n)| n).sum();
        if total_drops == 0 {
            let _ = writeln!(s, "drops: none");
        } else {
            let _ = writeln!(s, "drops by reason:");
            for (r, n) in &self.drops {
                if *n > 0 {
                    let _ = writeln!(s, "  {:<16} {n}", r.label());
                }
            }
        }
        let _ = writeln!(
            s,
            "mbufs: {} of {} still in use at exit{}",
            self.mbufs_in_use,
            self.mbufs_total,
            if self.mbufs_in_use == 0 { " (no leak)" } else { " (LEAK)" }
        );
        s
    }
}

fn ser_drops<S: serde::Serializer>(d: &[(DropReason, u64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(d.len()))?;
    for (r, n) in d {
        m.serialize_entry(r.label(), n)?;
    }
    m.end()
}

fn ser_events<S: serde::Serializer>(d: &[(Event, u64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(d.len()))?;
    for (e, n) in d {
        m.serialize_entry(e.label(), n)?;
    }
    m.end()
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_mac<S: serde::Serializer>(m: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_mac(m))
}

/// The report of a finished run from the ports and the workers' counters
/// (SAs, drained packets and the pool count are filled in by the caller).
pub(super) fn build(
    cfg: &crate::config::Config,
    ports: &super::Ports<'_>,
    stats: &[std::sync::Arc<espgw_core::stats::WorkerStats>],
    stop_cause: &'static str,
    elapsed: Duration,
) -> RunReport {
    let port_reports = ports
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sum =
                |f: fn(&espgw_core::stats::PortCounters) -> u64| -> u64 { stats.iter().map(|s| f(&s.ports[i])).sum() };
            PortReport {
                name: cfg.ports[i].name.clone(),
                device: p.name().to_string(),
                role: cfg.ports[i].role.as_str(),
                mtu: ports.mtus[i],
                mac: p.mac(),
                rx_packets: sum(|c| c.rx_packets.get()),
                rx_bytes: sum(|c| c.rx_bytes.get()),
                tx_packets: sum(|c| c.tx_packets.get()),
                tx_bytes: sum(|c| c.tx_bytes.get()),
                drained_at_exit: 0,
                hw: p.stats().into(),
            }
        })
        .collect();
    let workers = stats
        .iter()
        .enumerate()
        .map(|(index, s)| WorkerReport {
            index,
            core: cfg.worker_cores[index],
            queues: ports.rx_queues.iter().filter(|&&n| (index as u16) < n).count(),
            rx_packets: s.rx_packets(),
            tx_packets: s.tx_packets(),
            drops: s.total_drops(),
            busy_ratio: s.busy_ratio(),
        })
        .collect();
    let (drops, events) = (espgw_core::stats::sum_drops(stats), espgw_core::stats::sum_events(stats));
    RunReport {
        ports: port_reports,
        workers,
        drops,
        events,
        sas: Vec::new(),
        ike: None,
        mbufs_total: 0,
        mbufs_in_use: 0,
        stop_cause,
        elapsed,
    }
}
