//! Bring-up, run and shutdown of the gateway process.
//!
//! main: config → EAL → mempool → ports → pinned workers → wait for a signal
//! (or idleness, for replay runs) → stop workers → final report → close ports →
//! check that every mbuf went back to its pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{DpdkError, Eal, Mempool, Port, PortSetup};
use dataplane::mtu::ReasmConfig;
use dataplane::pipeline::{PortInfo, PortRole};
use dataplane::policy::PolicyError;
use dataplane::route::RouteTable;
use dataplane::stats::{DropReason, Event, WorkerStats};
use dataplane::worker::{self, RxQueue, Shared, WorkerPlan};
use serde::Serialize;
use thiserror::Error;

use crate::api::{self, ControlState};
use crate::config::{Config, ConfigError, Role};
use crate::live::{HwStats, Live, PortMeta, WorkerMeta};
use crate::state::{SharedState, StateFile};
use crate::store::PolicyStore;

/// Why the gateway could not run.
#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Dpdk(#[from] DpdkError),
    #[error("port {port} ({device}): {reason}")]
    PortSetup { port: String, device: String, reason: String },
    #[error("cannot start worker thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("control API: {0}")]
    Control(std::io::Error),
    #[error("state file {path}: {err}")]
    State { path: String, err: std::io::Error },
}

/// Options from the command line that are not in the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Extra EAL arguments (after `--`).
    pub extra_eal_args: Vec<String>,
    /// Stop once no packet has arrived for this long (replay and test runs).
    pub stop_when_idle: Option<Duration>,
    /// Stop after this long regardless.
    pub duration: Option<Duration>,
    /// Wait up to this long for all links to be up before forwarding.
    pub wait_link: Option<Duration>,
}

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

/// The EAL argument list for a config: its `[eal] args`, the port devices,
/// extra command-line args, and a main lcore when none was chosen.
pub fn eal_args(cfg: &Config, extra: &[String]) -> Vec<String> {
    let mut args = cfg.eal_args.clone();
    args.extend(extra.iter().cloned());
    for p in &cfg.ports {
        args.extend(p.device.eal_args());
    }
    let has_lcores = args.iter().any(|a| a == "-l" || a == "-c" || a.starts_with("--lcores") || a.starts_with("-l"));
    if !has_lcores {
        // The main (and later control) thread goes on a core no worker uses
        // when there is one; otherwise it shares (and sleeps, never spins).
        let avail: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
        let main =
            avail.iter().copied().find(|c| !cfg.worker_cores.contains(c)).or(avail.first().copied()).unwrap_or(0);
        args.push("-l".into());
        args.push(main.to_string());
    }
    args
}

/// Check that every worker core exists on this machine.
pub fn check_cores(cfg: &Config) -> Result<(), ConfigError> {
    let avail: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    for (i, &c) in cfg.worker_cores.iter().enumerate() {
        if !avail.contains(&c) {
            return Err(
                cfg.core_error(i, format!("core {c} does not exist or is not allowed here (available: {avail:?})"))
            );
        }
    }
    Ok(())
}

/// Run the gateway until stopped; returns the final report.
pub fn run(cfg: &Config, opts: &RunOptions) -> Result<RunReport, GatewayError> {
    check_cores(cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(GatewayError::Signal)?;
    }

    // The state file first: without it sequence numbers could repeat.
    let state = StateFile::open(&cfg.state_file)
        .map(SharedState::new)
        .map_err(|err| GatewayError::State { path: cfg.state_file.display().to_string(), err })?;
    let store = PolicyStore::from_config_with(cfg, Some(Box::new(state.clone())))?;
    // Bind the API before DPDK starts: a taken address fails fast.
    let control_server = match &cfg.control {
        Some(c) => Some(api::bind(c.listen).map_err(GatewayError::Control)?),
        None => None,
    };
    let eal = Eal::init(&eal_args(cfg, &opts.extra_eal_args))?;
    let nworkers = cfg.worker_cores.len();
    let pool = Arc::new(Mempool::new(
        "espgw_mbufs",
        cfg.mempool.mbufs,
        cfg.mempool.cache,
        cfg.mempool.data_room,
        eal.socket_id(),
    )?);
    // Jumbo mbufs for reassembled datagrams and big fragments/ICMP errors.
    let jumbo = Arc::new(Mempool::new("espgw_jumbo", 1023, 32, 10240 + 128, eal.socket_id())?);

    // Ports: one RX queue per worker (RSS spreads by IP) where the device has
    // that many, and one TX queue per worker so no two workers share a queue.
    let mut ports = Vec::with_capacity(cfg.ports.len());
    let mut rx_queues = Vec::with_capacity(cfg.ports.len());
    let mut mtus = Vec::with_capacity(cfg.ports.len());
    for pc in &cfg.ports {
        let setup_err = |reason: String| GatewayError::PortSetup {
            port: pc.name.clone(),
            device: pc.device.port_name().to_string(),
            reason,
        };
        let mut port = Port::by_name(&eal, pc.device.port_name())?;
        let caps = port.caps()?;
        if (caps.max_tx_queues as usize) < nworkers {
            return Err(setup_err(format!(
                "driver {} offers {} TX queue(s) but {} workers each need their own; \
                 give the device more queues (e.g. one tx_pcap= per worker) or use fewer workers",
                caps.driver, caps.max_tx_queues, nworkers
            )));
        }
        let nrx = (nworkers as u16).min(caps.max_rx_queues.max(1));
        if let Some(m) = pc.mtu {
            if caps.max_mtu != 0 && m > caps.max_mtu {
                return Err(setup_err(format!("MTU {m} is above the device maximum {}", caps.max_mtu)));
            }
        }
        let setup = PortSetup {
            rx_queues: nrx,
            tx_queues: nworkers as u16,
            rx_desc: pc.rx_desc,
            tx_desc: pc.tx_desc,
            mtu: pc.mtu,
            rss: true,
            promiscuous: true,
        };
        port.configure(&setup, &pool)?;
        port.start()?;
        mtus.push(pc.mtu.or(port.mtu()).unwrap_or(1500));
        rx_queues.push(nrx);
        ports.push(port);
    }

    if let Some(w) = opts.wait_link {
        let t = Instant::now();
        while !ports.iter().all(|p| p.link().up) && t.elapsed() < w && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    print_startup(cfg, &ports, &mtus, &rx_queues);

    let port_info: Vec<PortInfo> = cfg
        .ports
        .iter()
        .zip(&ports)
        .zip(&mtus)
        .map(|((pc, p), &mtu)| PortInfo {
            role: match pc.role {
                Role::Cleartext => PortRole::Cleartext,
                Role::Protected => PortRole::Protected,
            },
            mtu,
            mac: pc.mac.unwrap_or_else(|| p.mac()),
            addr_v4: pc.addresses.iter().find_map(|a| match a {
                std::net::IpAddr::V4(v) => Some(*v),
                _ => None,
            }),
            addr_v6: pc.addresses.iter().find_map(|a| match a {
                std::net::IpAddr::V6(v) => Some(*v),
                _ => None,
            }),
        })
        .collect();
    // Static neighbours win over learned ones (the operator said so).
    let build_routes = |learned: &HashMap<std::net::IpAddr, [u8; 6]>| {
        let all = learned.iter().map(|(a, m)| (*a, *m)).chain(cfg.neighbors.iter().copied());
        RouteTable::new(cfg.routes.clone(), all, cfg.ports.iter().map(|p| p.peer_mac).collect())
    };
    let mut learned_neighbors: HashMap<std::net::IpAddr, [u8; 6]> = HashMap::new();
    let routes = Arc::new(arc_swap::ArcSwap::from_pointee(build_routes(&learned_neighbors)));
    let learned = Arc::new(dataplane::pipeline::LearnQueue::new(1024));
    let ports = Arc::new(ports);
    let running = Arc::new(AtomicBool::new(true));
    let shared = Shared {
        ports: ports.clone(),
        port_info,
        policy: store.db().reader(),
        routes: routes.clone(),
        learned: learned.clone(),
        pool: pool.clone(),
        jumbo: Some(jumbo.clone()),
        reasm: ReasmConfig::default(),
        pmtu_ageing_ms: cfg.policy.pmtu_ageing_ms,
        running: running.clone(),
    };
    let idle_sleep = Duration::from_micros(cfg.idle_sleep_us);
    let mut handles = Vec::with_capacity(nworkers);
    for (w, &core) in cfg.worker_cores.iter().enumerate() {
        let rx = (0..ports.len())
            .filter(|&p| (w as u16) < rx_queues[p])
            .map(|p| RxQueue { port: p, queue: w as u16 })
            .collect();
        let plan = WorkerPlan { index: w, core, rx, forward: cfg.forward.clone(), idle_sleep };
        handles.push(worker::spawn(plan, shared.clone())?);
    }
    drop(shared);

    // The control thread: API and /metrics over lock-free counters.
    let live = Live::new(
        ports.clone(),
        cfg.ports
            .iter()
            .zip(&mtus)
            .map(|(pc, &mtu)| PortMeta { name: pc.name.clone(), role: pc.role.as_str(), mtu })
            .collect(),
        handles
            .iter()
            .zip(&cfg.worker_cores)
            .enumerate()
            .map(|(index, (h, &core))| WorkerMeta { index, core, stats: h.stats.clone() })
            .collect(),
        vec![("mbufs", pool.clone()), ("jumbo", jumbo.clone())],
        routes.clone(),
    );
    let control = Arc::new(ControlState {
        store: std::sync::Mutex::new(store),
        live: Some(live),
        token: cfg.control.as_ref().and_then(|c| c.token.clone()),
    });
    let control_server = match control_server {
        Some(server) => {
            let s = api::serve(server, control.clone()).map_err(GatewayError::Control)?;
            println!(
                "espgw: control API on http://{}/api/v1 (metrics on /metrics{})",
                s.addr,
                if control.token.is_some() { ", bearer token required" } else { "" }
            );
            Some(s)
        }
        None => None,
    };

    // Wait for a signal, the run time, or idleness. The main thread sleeps.
    let start = Instant::now();
    let mut last_rx = 0u64;
    let mut last_change = Instant::now();
    let mut last_tops = Instant::now();
    let stop_cause = loop {
        std::thread::sleep(Duration::from_millis(20));
        // Neighbours the workers learned: republish the route table when one is new or moved.
        let mut changed = false;
        while let Some((ip, mac)) = learned.pop() {
            changed |= learned_neighbors.insert(ip, mac) != Some(mac);
        }
        if changed {
            routes.store(Arc::new(build_routes(&learned_neighbors)));
        }
        // Sequence leases: persisted ahead of use; replay tops every second.
        {
            let mut store = control.store();
            if let Err(e) = store.renew_leases() {
                eprintln!("espgw: {e}");
            }
            if last_tops.elapsed() >= Duration::from_secs(1) {
                last_tops = Instant::now();
                if let Err(e) = state.lock().save_replay_tops(store.db()) {
                    eprintln!("espgw: cannot save replay windows to {}: {e}", cfg.state_file.display());
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if let Some(d) = opts.duration {
            if start.elapsed() >= d {
                break "duration";
            }
        }
        if let Some(idle) = opts.stop_when_idle {
            let rx: u64 = handles.iter().map(|h| h.stats.rx_packets()).sum();
            if rx != last_rx {
                last_rx = rx;
                last_change = Instant::now();
            } else if last_change.elapsed() >= idle {
                break "idle";
            }
        }
    };
    let elapsed = start.elapsed();
    running.store(false, Ordering::SeqCst);
    if let Some(s) = control_server {
        s.stop();
    }
    let control = Arc::try_unwrap(control).unwrap_or_else(|_| unreachable!("control thread joined, no other owner"));
    let store = control.store.into_inner().unwrap_or_else(|p| p.into_inner());
    drop(control.live);

    let mut finished: Vec<(WorkerPlan, Arc<WorkerStats>)> = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(x) => finished.push(x),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }

    let mut ports = Arc::try_unwrap(ports).unwrap_or_else(|_| unreachable!("workers joined, no other owner"));
    let mut report = build_report(cfg, &ports, &mtus, &finished, &pool, stop_cause, elapsed);
    report.sas = store
        .sas()
        .into_iter()
        .map(|s| SaReport {
            name: s.sa.name,
            direction: s.sa.direction,
            spi: s.sa.spi,
            packets: s.state.packets,
            bytes: s.state.bytes,
            path_mtu: s.state.path_mtu,
        })
        .collect();
    // Drain what still waits in RX queues (not processed, reported apart),
    // then close: only then is the pool count meaningful.
    for (i, p) in ports.iter_mut().enumerate() {
        report.ports[i].drained_at_exit = p.drain_rx(rx_queues[i]);
        p.close();
    }
    report.mbufs_in_use = pool.in_use() + jumbo.in_use();
    report.mbufs_total = pool.size() + jumbo.size();
    // Workers are stopped: the windows' tops are final.
    if let Err(e) = state.lock().save_replay_tops(store.db()) {
        eprintln!("espgw: cannot save replay windows to {}: {e}", cfg.state_file.display());
    }
    drop(ports);
    drop(store);
    drop(pool);
    drop(jumbo);
    drop(eal);
    if let Some(e) = first_err {
        return Err(e.into());
    }
    Ok(report)
}

fn print_startup(cfg: &Config, ports: &[Port], mtus: &[u16], rxq: &[u16]) {
    println!("espgw: {} port(s), {} worker(s) on core(s) {:?}", ports.len(), cfg.worker_cores.len(), cfg.worker_cores);
    for (i, (p, pc)) in ports.iter().zip(&cfg.ports).enumerate() {
        let fwd = match cfg.forward[i] {
            Some(o) => format!("forwards to {}", cfg.ports[o].name),
            None => "no forwarding".to_string(),
        };
        println!(
            "  port {:<10} {:<10} device {:<12} mtu {:<5} mac {} rxq {} link {} ({fwd})",
            pc.name,
            pc.role.as_str(),
            p.name(),
            mtus[i],
            fmt_mac(&p.mac()),
            rxq[i],
            if p.link().up { "up" } else { "down" },
        );
    }
}

fn build_report(
    cfg: &Config,
    ports: &[Port],
    mtus: &[u16],
    workers: &[(WorkerPlan, Arc<WorkerStats>)],
    pool: &Mempool,
    stop_cause: &'static str,
    elapsed: Duration,
) -> RunReport {
    let ports = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sum = |f: fn(&dataplane::stats::PortCounters) -> u64| -> u64 {
                workers.iter().map(|(_, s)| f(&s.ports[i])).sum()
            };
            PortReport {
                name: cfg.ports[i].name.clone(),
                device: p.name().to_string(),
                role: cfg.ports[i].role.as_str(),
                mtu: mtus[i],
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
    let workers_r = workers
        .iter()
        .map(|(plan, s)| WorkerReport {
            index: plan.index,
            core: plan.core,
            queues: plan.rx.len(),
            rx_packets: s.rx_packets(),
            tx_packets: s.tx_packets(),
            drops: s.total_drops(),
            busy_ratio: s.busy_ratio(),
        })
        .collect();
    let drops =
        DropReason::ALL.iter().map(|&r| (r, workers.iter().map(|(_, s)| s.drops[r.index()].get()).sum())).collect();
    let events =
        Event::ALL.iter().map(|&e| (e, workers.iter().map(|(_, s)| s.events[e as usize].get()).sum())).collect();
    RunReport {
        ports,
        workers: workers_r,
        drops,
        events,
        sas: Vec::new(),
        mbufs_total: pool.size(),
        mbufs_in_use: pool.in_use(),
        stop_cause,
        elapsed,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
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
