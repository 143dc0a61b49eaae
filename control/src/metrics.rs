//! Prometheus exposition of the live counters (`GET /metrics`).
//!
//! Each scrape builds a fresh registry from the lock-free counters, so the
//! workers never see the scrape: they only ever write their own atomics.
//! Names follow Prometheus conventions: `espgw_` prefix, base units (bytes,
//! seconds, ratios), `_total` on counters, low-cardinality labels.

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::live::Live;
use crate::store::SaStatus;
use espgw_core::stats::DropReason;

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn igauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// Render every metric in the Prometheus text format.
pub fn render(live: &Live<'_>, sas: &[SaStatus]) -> String {
    let reg = Registry::new();

    let info = igauge(&reg, "espgw_build_info", "espgw version (value is always 1).", &["version"]);
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    gauge(&reg, "espgw_start_time_seconds", "Start time of the gateway, seconds since the epoch.", &[])
        .with_label_values(&[] as &[&str])
        .set(live.started_unix);

    // Ports, per queue (= per worker) from the workers' counters.
    let rxp = counter(&reg, "espgw_port_rx_packets_total", "Packets received.", &["port", "queue"]);
    let rxb = counter(&reg, "espgw_port_rx_bytes_total", "Bytes received.", &["port", "queue"]);
    let txp = counter(&reg, "espgw_port_tx_packets_total", "Packets sent.", &["port", "queue"]);
    let txb = counter(&reg, "espgw_port_tx_bytes_total", "Bytes sent.", &["port", "queue"]);
    let missed = counter(&reg, "espgw_port_rx_missed_total", "Packets the device dropped: RX queue full.", &["port"]);
    let ierr = counter(&reg, "espgw_port_rx_errors_total", "Erroneous packets received (device count).", &["port"]);
    let oerr = counter(&reg, "espgw_port_tx_errors_total", "Failed transmissions (device count).", &["port"]);
    let nombuf = counter(&reg, "espgw_port_rx_nombuf_total", "RX mbuf allocation failures (device count).", &["port"]);
    let link = igauge(&reg, "espgw_port_link_up", "1 when the port's link is up.", &["port"]);
    let mtu = igauge(&reg, "espgw_port_mtu_bytes", "MTU of the port.", &["port"]);
    for (i, p) in live.ports.iter().enumerate() {
        let m = &live.port_meta[i];
        let port = m.name.as_str();
        for w in &live.workers {
            let c = &w.stats.ports[i];
            let q = w.index.to_string();
            rxp.with_label_values(&[port, &q]).inc_by(c.rx_packets.get());
            rxb.with_label_values(&[port, &q]).inc_by(c.rx_bytes.get());
            txp.with_label_values(&[port, &q]).inc_by(c.tx_packets.get());
            txb.with_label_values(&[port, &q]).inc_by(c.tx_bytes.get());
        }
        let hw = p.stats();
        missed.with_label_values(&[port]).inc_by(hw.imissed);
        ierr.with_label_values(&[port]).inc_by(hw.ierrors);
        oerr.with_label_values(&[port]).inc_by(hw.oerrors);
        nombuf.with_label_values(&[port]).inc_by(hw.rx_nombuf);
        link.with_label_values(&[port]).set(i64::from(p.link().up));
        mtu.with_label_values(&[port]).set(i64::from(m.mtu));
    }

    // Workers.
    let polls =
        counter(&reg, "espgw_worker_polls_total", "RX polls, by whether they found packets.", &["worker", "state"]);
    let busy =
        gauge(&reg, "espgw_worker_busy_ratio", "Share of polls that found packets, over the last second.", &["worker"]);
    for w in live.workers() {
        let id = w.index.to_string();
        polls.with_label_values(&[&id, "busy"]).inc_by(w.busy_polls);
        polls.with_label_values(&[&id, "idle"]).inc_by(w.idle_polls);
        busy.with_label_values(&[&id]).set(w.busy_ratio);
    }

    // Drops by reason (every reason, so dashboards see zeros), per worker.
    let drops = counter(&reg, "espgw_drops_total", "Packets dropped, by reason.", &["worker", "reason"]);
    for w in &live.workers {
        let id = w.index.to_string();
        for r in DropReason::ALL {
            drops.with_label_values(&[&id, r.label()]).inc_by(w.stats.drops[r.index()].get());
        }
    }
    let replay =
        counter(&reg, "espgw_replay_drops_total", "ESP packets dropped by the anti-replay window.", &["reason"]);
    for r in [DropReason::ReplayTooOld, DropReason::ReplayDuplicate] {
        let n: u64 = live.workers.iter().map(|w| w.stats.drops[r.index()].get()).sum();
        replay.with_label_values(&[r.label()]).inc_by(n);
    }

    // Events (fragments, reassembly, ICMP, ...), summed over workers.
    for (e, n) in live.events() {
        let (name, help) = (e.metric(), e.help());
        counter(&reg, name, help, &[]).with_label_values(&[] as &[&str]).inc_by(n);
    }

    // SAs.
    let sap = counter(&reg, "espgw_sa_packets_total", "Packets carried by the SA.", &["sa", "direction"]);
    let sab = counter(&reg, "espgw_sa_bytes_total", "Inner bytes carried by the SA.", &["sa", "direction"]);
    let life = gauge(
        &reg,
        "espgw_sa_lifetime_used_ratio",
        "Share of the SA's hard lifetime used (0 without a limit).",
        &["sa", "direction"],
    );
    let expired = igauge(
        &reg,
        "espgw_sa_expired",
        "1 once the SA's soft or hard lifetime has expired.",
        &["sa", "direction", "limit"],
    );
    let pmtu = igauge(
        &reg,
        "espgw_sa_path_mtu_bytes",
        "Path MTU an outbound SA uses: learned from ICMP, else the egress port's MTU.",
        &["sa"],
    );
    for s in sas {
        let l = [s.sa.name.as_str(), s.sa.direction];
        sap.with_label_values(&l).inc_by(s.state.packets);
        sab.with_label_values(&l).inc_by(s.state.bytes);
        life.with_label_values(&l).set(s.state.lifetime_used);
        expired.with_label_values(&[l[0], l[1], "soft"]).set(i64::from(s.state.soft_expired));
        expired.with_label_values(&[l[0], l[1], "hard"]).set(i64::from(s.state.hard_expired));
    }
    for p in live.pmtu(sas) {
        if let Some(m) = p.effective {
            pmtu.with_label_values(&[&p.sa]).set(i64::from(m));
        }
    }

    // Mempools.
    let inuse = igauge(&reg, "espgw_mempool_mbufs_in_use", "Mbufs taken from the pool.", &["pool"]);
    let size = igauge(&reg, "espgw_mempool_mbufs", "Mbufs in the pool.", &["pool"]);
    for p in live.pools() {
        inuse.with_label_values(&[p.name]).set(i64::from(p.in_use));
        size.with_label_values(&[p.name]).set(i64::from(p.size));
    }

    let mut out = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).unwrap_or_default()
}
