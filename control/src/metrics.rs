//! Prometheus exposition of the live counters (`GET /metrics`).
//!
//! Each scrape builds a fresh registry from the lock-free counters, so the
//! workers never see the scrape: they only ever write their own atomics.
//! Names follow Prometheus conventions: `espgw_` prefix, base units (bytes,
//! seconds, ratios), `_total` on counters, low-cardinality labels.

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::config::{MetricsConfig, PerSa};
use crate::ike::daemon::IkeCounters;
use crate::live::Live;
use crate::store::SaStatus;
use espgw_core::esp::SaDrop;
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
/// `ike`: the IKE daemon's counters and how many IKE SAs it holds, when
/// connections are configured.
pub fn render(live: &Live<'_>, sas: &[SaStatus], cfg: &MetricsConfig, ike: Option<(IkeCounters, usize)>) -> String {
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
    // Events (fragments, reassembly, ICMP, ...), summed over workers.
    for (e, n) in live.events() {
        let (name, help) = (e.metric(), e.help());
        counter(&reg, name, help, &[]).with_label_values(&[] as &[&str]).inc_by(n);
    }

    sa_metrics(&reg, live.pmtu(sas).iter().filter_map(|p| Some((p.sa.as_str(), p.effective?))), sas, cfg);

    // Mempools.
    let inuse = igauge(&reg, "espgw_mempool_mbufs_in_use", "Mbufs taken from the pool.", &["pool"]);
    let size = igauge(&reg, "espgw_mempool_mbufs", "Mbufs in the pool.", &["pool"]);
    for p in live.pools() {
        inuse.with_label_values(&[p.name]).set(i64::from(p.in_use));
        size.with_label_values(&[p.name]).set(i64::from(p.size));
    }

    if let Some((c, n)) = ike {
        ike_metrics(&reg, &c, n);
    }
    encode(&reg)
}

/// The IKE daemon's counters (the workers' side of IKE is in the events:
/// espgw_ike_packets_received_total / _sent_total).
fn ike_metrics(reg: &Registry, c: &IkeCounters, sas: usize) {
    let one = |name: &str, help: &str, v: u64| {
        counter(reg, name, help, &[]).with_label_values(&[] as &[&str]).inc_by(v);
    };
    one("espgw_ike_messages_received_total", "IKE messages the daemon read.", c.received);
    one("espgw_ike_messages_sent_total", "IKE messages the daemon sent (retransmissions included).", c.sent);
    one("espgw_ike_retransmissions_total", "IKE requests retransmitted for want of an answer.", c.retransmitted);
    one("espgw_ike_sas_established_total", "IKE SAs established (either side initiating).", c.established);
    one("espgw_ike_child_sas_installed_total", "Child SAs negotiated and installed.", c.child_installed);
    one(
        "espgw_ike_sas_rekeyed_total",
        "IKE SAs rekeyed with their child SAs kept (by us or by the peer).",
        c.ike_rekeyed,
    );
    one("espgw_ike_child_sas_rekeyed_total", "Child SAs rekeyed (by us or by the peer).", c.child_rekeyed);
    one("espgw_ike_sas_deleted_total", "IKE and child SA deletes exchanged.", c.deleted);
    one("espgw_ike_peers_dead_total", "IKE SAs removed because the peer stopped answering.", c.timed_out);
    one(
        "espgw_ike_cookies_sent_total",
        "IKE_SA_INIT answered with a COOKIE request under load (RFC 7296 §2.6).",
        c.cookies_sent,
    );
    one(
        "espgw_ike_fragments_sent_total",
        "IKE fragments sent (RFC 7383: large messages such as IKE_AUTH with certificates).",
        c.fragments_sent,
    );
    one(
        "espgw_ike_messages_reassembled_total",
        "IKE messages put back together from the peer's fragments (RFC 7383).",
        c.reassembled,
    );
    let refused = counter(reg, "espgw_ike_refused_total", "IKE messages refused, by reason.", &["reason"]);
    for (reason, v) in [
        ("malformed", c.malformed),
        ("no_connection", c.no_connection),
        ("auth_failed", c.auth_failed),
        ("no_proposal", c.no_proposal),
        ("half_open_limit", c.dropped_half_open),
    ] {
        refused.with_label_values(&[reason]).inc_by(v);
    }
    igauge(reg, "espgw_ike_sas", "IKE SAs the daemon holds (connecting or established).", &[])
        .with_label_values(&[] as &[&str])
        .set(sas as i64);
}

fn encode(reg: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).unwrap_or_default()
}

/// The SAs that get series of their own: all, none, or the busiest
/// `top` by traffic plus the `top` with the most drops (an SA under a
/// replay or forgery attack may carry nothing else). Totals over every SA
/// are exported whatever this selects, so a fleet's dashboards and alerts
/// never depend on it.
pub fn per_sa_selection<'s>(sas: &'s [SaStatus], cfg: &MetricsConfig) -> Vec<&'s SaStatus> {
    let top = match cfg.per_sa {
        PerSa::All => return sas.iter().collect(),
        PerSa::Off | PerSa::Top(0) => return Vec::new(),
        PerSa::Top(n) => n,
    };
    if sas.len() <= top {
        return sas.iter().collect();
    }
    let drops = |s: &SaStatus| s.state.drops.values().sum::<u64>();
    let mut by_bytes: Vec<usize> = (0..sas.len()).collect();
    by_bytes.select_nth_unstable_by_key(top - 1, |&i| std::cmp::Reverse(sas[i].state.bytes));
    let mut chosen: Vec<usize> = by_bytes[..top].to_vec();
    let mut by_drops: Vec<usize> = (0..sas.len()).filter(|&i| drops(&sas[i]) > 0).collect();
    if by_drops.len() > top {
        by_drops.select_nth_unstable_by_key(top - 1, |&i| std::cmp::Reverse(drops(&sas[i])));
        by_drops.truncate(top);
    }
    chosen.extend(by_drops);
    chosen.sort_unstable();
    chosen.dedup();
    chosen.into_iter().map(|i| &sas[i]).collect()
}

/// SA metrics: totals over every SA (always) and series per selected SA.
fn sa_metrics<'p>(reg: &Registry, pmtu: impl Iterator<Item = (&'p str, u16)>, sas: &[SaStatus], cfg: &MetricsConfig) {
    // Totals, bounded whatever the number of SAs.
    let count = igauge(reg, "espgw_sas", "SAs installed, by direction and lifetime state.", &["direction", "state"]);
    let left_min = gauge(
        reg,
        "espgw_sa_lifetime_remaining_min_seconds",
        "Fewest seconds any SA has until its hard time limit (absent without time limits).",
        &["direction"],
    );
    let used_max = gauge(
        reg,
        "espgw_sa_lifetime_used_max_ratio",
        "Largest share of its hard lifetime any SA has used.",
        &["direction"],
    );
    let drops_all = igauge(
        reg,
        "espgw_sas_drops",
        "Drops caused by the SAs now installed, summed, by class (a gauge: it falls when an SA goes).",
        &["direction", "class"],
    );
    for dir in ["in", "out"] {
        let of_dir = || sas.iter().filter(move |s| s.sa.direction == dir);
        let n = |f: fn(&SaStatus) -> bool| of_dir().filter(|s| f(s)).count() as i64;
        count.with_label_values(&[dir, "active"]).set(n(|s| !s.state.soft_expired && !s.state.hard_expired));
        count.with_label_values(&[dir, "soft_expired"]).set(n(|s| s.state.soft_expired && !s.state.hard_expired));
        count.with_label_values(&[dir, "hard_expired"]).set(n(|s| s.state.hard_expired));
        if let Some(m) = of_dir().filter_map(|s| s.state.seconds_left).min() {
            left_min.with_label_values(&[dir]).set(m as f64);
        }
        used_max.with_label_values(&[dir]).set(of_dir().map(|s| s.state.lifetime_used).fold(0.0, f64::max));
        for d in SaDrop::ALL {
            let total: u64 = of_dir().map(|s| s.state.drops.get(d.label()).copied().unwrap_or(0)).sum();
            drops_all.with_label_values(&[dir, d.label()]).set(total as i64);
        }
    }

    let chosen = per_sa_selection(sas, cfg);
    igauge(reg, "espgw_sa_series_omitted", "SAs without per-SA series (metrics.per_sa caps them).", &[])
        .with_label_values(&[] as &[&str])
        .set((sas.len() - chosen.len()) as i64);
    if chosen.is_empty() {
        return;
    }
    let sap = counter(reg, "espgw_sa_packets_total", "Packets carried by the SA.", &["sa", "direction"]);
    let sab = counter(reg, "espgw_sa_bytes_total", "Inner bytes carried by the SA.", &["sa", "direction"]);
    let sad = counter(reg, "espgw_sa_drops_total", "Packets the SA dropped, by class.", &["sa", "direction", "class"]);
    let life = gauge(
        reg,
        "espgw_sa_lifetime_used_ratio",
        "Share of the SA's hard lifetime used (0 without a limit).",
        &["sa", "direction"],
    );
    let left = gauge(
        reg,
        "espgw_sa_lifetime_remaining_seconds",
        "Seconds until the SA's hard time limit (absent without one).",
        &["sa", "direction"],
    );
    let expired = igauge(
        reg,
        "espgw_sa_expired",
        "1 once the SA's soft or hard lifetime has expired.",
        &["sa", "direction", "limit"],
    );
    let pmtu_g = igauge(
        reg,
        "espgw_sa_path_mtu_bytes",
        "Path MTU an outbound SA uses: learned from ICMP, else the egress port's MTU.",
        &["sa"],
    );
    for s in &chosen {
        let l = [s.sa.name.as_str(), s.sa.direction];
        sap.with_label_values(&l).inc_by(s.state.packets);
        sab.with_label_values(&l).inc_by(s.state.bytes);
        for (class, n) in &s.state.drops {
            sad.with_label_values(&[l[0], l[1], class]).inc_by(*n);
        }
        life.with_label_values(&l).set(s.state.lifetime_used);
        if let Some(t) = s.state.seconds_left {
            left.with_label_values(&l).set(t as f64);
        }
        expired.with_label_values(&[l[0], l[1], "soft"]).set(i64::from(s.state.soft_expired));
        expired.with_label_values(&[l[0], l[1], "hard"]).set(i64::from(s.state.hard_expired));
    }
    let names: std::collections::HashSet<&str> =
        chosen.iter().filter(|s| s.sa.direction == "out").map(|s| s.sa.name.as_str()).collect();
    for (sa, m) in pmtu.filter(|(sa, _)| names.contains(sa)) {
        pmtu_g.with_label_values(&[sa]).set(i64::from(m));
    }
}

/// Only the SA metrics (what scales with the number of SAs), for tests and
/// for sizing.
pub fn render_sas(sas: &[SaStatus], cfg: &MetricsConfig) -> String {
    let reg = Registry::new();
    sa_metrics(&reg, std::iter::empty(), sas, cfg);
    encode(&reg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PolicyStore;

    /// `n` outbound SAs, SA i carrying i bytes; SA 7 dropping replays.
    fn sas(n: u32) -> Vec<SaStatus> {
        let cfg = crate::config::n_outbound_sas(n);
        let mut v = PolicyStore::from_config(&cfg).unwrap().sas();
        for (i, s) in v.iter_mut().enumerate() {
            s.state.bytes = i as u64;
        }
        *v[7].state.drops.get_mut("replay").unwrap() = 5;
        v
    }

    fn names(sel: &[&SaStatus]) -> Vec<String> {
        sel.iter().map(|s| s.sa.name.clone()).collect()
    }

    #[test]
    fn top_n_by_traffic_plus_the_droppers() {
        let all = sas(50);
        let sel = per_sa_selection(&all, &MetricsConfig { per_sa: PerSa::Top(3) });
        assert_eq!(names(&sel), ["sa00007", "sa00047", "sa00048", "sa00049"]);
        assert_eq!(per_sa_selection(&all, &MetricsConfig { per_sa: PerSa::All }).len(), 50);
        assert!(per_sa_selection(&all, &MetricsConfig { per_sa: PerSa::Off }).is_empty());
        assert!(per_sa_selection(&all, &MetricsConfig { per_sa: PerSa::Top(0) }).is_empty(), "no underflow");
        assert_eq!(per_sa_selection(&all, &MetricsConfig { per_sa: PerSa::Top(100) }).len(), 50);
    }

    #[test]
    fn totals_cover_every_sa_and_series_are_capped() {
        let all = sas(400);
        let text = render_sas(&all, &MetricsConfig { per_sa: PerSa::Top(10) });
        assert!(text.contains("espgw_sas{direction=\"out\",state=\"active\"} 400"), "{text}");
        assert!(text.contains("espgw_sas_drops{class=\"replay\",direction=\"out\"} 5"));
        assert!(text.contains("espgw_sa_series_omitted 389"));
        assert!(text.contains("espgw_sa_drops_total{class=\"replay\",direction=\"out\",sa=\"sa00007\"} 5"));
        let series: std::collections::HashSet<&str> =
            text.lines().filter_map(|l| l.split("sa=\"").nth(1)?.split('"').next()).collect();
        assert_eq!(series.len(), 11);
        let off = render_sas(&all, &MetricsConfig { per_sa: PerSa::Off });
        assert!(!off.contains("sa=\"") && off.contains("espgw_sa_series_omitted 400"));
    }
}
