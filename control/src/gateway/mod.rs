//! The gateway process: bring-up, workers, supervision, shutdown.
//!
//! [`run`] reads as the life of the process, one step per function:
//!
//! 1. bring-up (no DPDK yet): signals, the state file, the policy store, the
//!    API listener — a config or state problem fails before EAL starts;
//! 2. data plane ([`bringup`]): EAL with workers on their own lcores, pools,
//!    ports;
//! 3. spawn: workers on their lcores and the control thread, both inside
//!    scopes, so they borrow the ports, pools and counters instead of owning
//!    shares of them;
//! 4. supervise: the main thread sleeps and does housekeeping (learned
//!    neighbours, sequence leases, replay tops) until a stop condition;
//! 5. shutdown: the scopes join everything; the report is read; RX is
//!    drained and ports closed; the pool count then proves no mbuf leaked.
//!    Teardown order (ports, pools, EAL) is the reverse of declaration,
//!    enforced by the borrows.

pub mod bringup;
mod kernel;
pub mod reload;
pub mod report;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use espgw_core::mtu::ReasmConfig;
use espgw_core::pipeline::{AcquireQueue, LearnQueue, NatQueue, PortInfo};
use espgw_core::policy::PolicyError;
use espgw_core::route::RouteTable;
use espgw_core::stats::{DropReason, WorkerStats};
use espgw_dpdk::worker::{self, Rx, Shared, WorkerPlan};
use espgw_dpdk::{DpdkError, Eal, LcoreHandle, LcoreScope};
use thiserror::Error;

use crate::api::ControlState;
use crate::config::{Config, ConfigError};
use crate::events::EventBus;
use crate::live::{Live, PortMeta, WorkerMeta};
use crate::server;
use crate::state::{SharedState, StateFile};
use crate::store::PolicyStore;
pub use bringup::{check_cores, eal_args};
use bringup::{Pools, Ports};
pub use report::{PortReport, RunReport, SaReport, WorkerReport};

/// Why the gateway could not run.
#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Dpdk(#[from] DpdkError),
    #[error("port {port} ({device}): {reason}")]
    PortSetup { port: String, device: String, reason: String },
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("control API: {0}")]
    Control(std::io::Error),
    #[error("state file {path}: {err}")]
    State { path: String, err: std::io::Error },
    #[error("{workers} worker core(s) configured but EAL gave {lcores} worker lcore(s)")]
    Lcores { workers: usize, lcores: usize },
    #[error("host port: {0}")]
    HostPath(String),
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
    /// The config file, re-read on SIGHUP (`None`: SIGHUP is ignored).
    pub config_path: Option<std::path::PathBuf>,
}

/// Run the gateway until stopped; returns the final report.
pub fn run(cfg: &Config, opts: &RunOptions) -> Result<RunReport, GatewayError> {
    // 1. Bring-up without DPDK.
    check_cores(cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(GatewayError::Signal)?;
    }
    // SIGHUP: reload the config (never the default action, which kills).
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()).map_err(GatewayError::Signal)?;
    // The state file first: without it sequence numbers could repeat.
    let state = StateFile::open(&cfg.state_file)
        .map(SharedState::new)
        .map_err(|err| GatewayError::State { path: cfg.state_file.display().to_string(), err })?;
    let store = PolicyStore::from_config_with(cfg, Some(Box::new(state.clone())))?;
    let listener = cfg.control.as_ref().map(server::bind).transpose().map_err(GatewayError::Control)?;

    // 2. The data plane.
    let eal = Eal::init(&eal_args(cfg, &opts.extra_eal_args))?;
    // DPDK tooling: our commands on the telemetry socket, and capture by
    // dpdk-dumpcap where the multi-process channel is on.
    if let Err(e) = crate::telemetry::register() {
        tracing::warn!(target: "espgw", error = %e, "telemetry commands unavailable");
    }
    if cfg.capture {
        match eal.enable_pdump() {
            Ok(()) => tracing::warn!(
                target: "espgw",
                "packet capture enabled (eal.capture): dpdk-dumpcap can attach; turn it off after troubleshooting"
            ),
            Err(e) => tracing::warn!(target: "espgw", error = %e, "eal.capture: dpdk-dumpcap cannot attach"),
        }
    }
    let pools = Pools::new(&eal, cfg)?;
    let mut ports = bringup::ports(&eal, cfg, &pools.regular)?;
    // The host path's kernel side (undone when this goes out of scope).
    let port_info = bringup::port_info(cfg, &ports);
    let _kernel = kernel_side(cfg, &port_info)?;
    wait_link(&ports, opts, &stop);
    bringup::print_startup(cfg, &ports);
    let neighbors = Neighbors::new(cfg);
    let learned = Arc::new(LearnQueue::new(1024));
    let acquires = Arc::new(AcquireQueue::new(1024));
    let nat_reports = Arc::new(NatQueue::new(1024));
    // IKE goes to the control thread's daemon when connections are configured.
    let ike_queues = (!cfg.connections.is_empty()).then(espgw_core::pipeline::IkeQueues::new);
    let daemon = ike_queues.clone().map(|q| crate::ike::daemon::Daemon::new(cfg.connections.clone(), q));
    let running = AtomicBool::new(true);
    let stats: Vec<Arc<WorkerStats>> =
        cfg.worker_cores.iter().map(|_| Arc::new(WorkerStats::new(ports.ports.len()))).collect();
    let shared = Shared {
        port_info,
        policy: store.db().reader(),
        routes: neighbors.routes.clone(),
        learned: learned.clone(),
        acquires: acquires.clone(),
        nat_reports: nat_reports.clone(),
        ike: ike_queues.clone(),
        host_rate: cfg
            .ports
            .iter()
            .find_map(|p| p.host.as_ref())
            .map_or(espgw_core::pipeline::DEFAULT_HOST_RATE, |h| h.rate),
        pool: &pools.regular,
        jumbo: Some(&pools.jumbo),
        reasm: ReasmConfig::for_pool(pools.regular.size(), usize::from(cfg.mempool.data_room), cfg.worker_cores.len()),
        pmtu_ageing_ms: cfg.policy.pmtu_ageing_ms,
        running: &running,
    };

    // 3 + 4. Workers on their lcores, the control thread, supervision.
    let start = Instant::now();
    let (stop_cause, store, worker_results, ike_counters) = eal.scope(|lcores| {
        // Whatever happens in here, workers are told to stop before the
        // scope waits for them.
        struct StopWorkers<'a>(&'a AtomicBool);
        impl Drop for StopWorkers<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _stop_workers = StopWorkers(&running);
        let handles = spawn_workers(lcores, &eal, cfg, &ports, &shared, &stats)?;
        let live = Live::new(
            &ports.ports,
            cfg.ports
                .iter()
                .zip(&ports.mtus)
                .map(|(pc, &mtu)| PortMeta { name: pc.name.clone(), role: pc.role.as_str(), mtu })
                .collect(),
            stats
                .iter()
                .zip(&cfg.worker_cores)
                .enumerate()
                .map(|(index, (s, &core))| WorkerMeta { index, core, stats: s.clone() })
                .collect(),
            vec![("mbufs", &pools.regular), ("jumbo", &pools.jumbo)],
            neighbors.routes.clone(),
        );
        let control = ControlState {
            store: Mutex::new(store),
            events: EventBus::new(),
            live: Some(live),
            token: cfg.control.as_ref().and_then(|c| c.token.clone()),
            metrics: cfg.metrics,
            ike: daemon.map(Mutex::new),
        };
        let cause = std::thread::scope(|threads| -> Result<_, GatewayError> {
            let server = match listener {
                Some(l) => {
                    if let Some(p) = l.socket_path() {
                        println!("espgw: control API on unix:{} (espgwctl --socket {})", p.display(), p.display());
                    }
                    if let Some(a) = l.tcp_addr() {
                        println!(
                            "espgw: control API on http://{a}/api/v1 (metrics on /metrics, bearer token required)"
                        );
                    }
                    Some(server::serve(threads, l, &control).map_err(GatewayError::Control)?)
                }
                None => None,
            };
            let cause = supervise(
                cfg,
                opts,
                Inputs {
                    stop: &stop,
                    hup: &hup,
                    learned: &learned,
                    acquires: &acquires,
                    nat_reports: &nat_reports,
                    start,
                },
                &control,
                &neighbors,
                &state,
                &stats,
            );
            running.store(false, Ordering::SeqCst);
            if let Some(s) = server {
                s.stop();
            }
            Ok(cause)
        })?;
        let ike = control.ike.map(|d| d.into_inner().unwrap_or_else(|p| p.into_inner()).counters);
        let store = control.store.into_inner().unwrap_or_else(|p| p.into_inner());
        let results: Vec<Result<(), DpdkError>> = handles.into_iter().map(LcoreHandle::join).collect();
        Ok::<_, GatewayError>((cause, store, results, ike))
    })?;
    let elapsed = start.elapsed();

    // 5. Shutdown: every worker has stopped; their queues are back.
    let mut report = report::build(cfg, &ports, &stats, stop_cause, elapsed);
    report.ike = ike_counters;
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
            backend: s.state.backend,
            remote: s.sa.remote,
            remote_port: s.sa.remote_port,
        })
        .collect();
    // Drain what still waits in RX queues (not processed, reported apart),
    // then close: only then is the pool count meaningful.
    for (i, p) in ports.ports.iter_mut().enumerate() {
        report.ports[i].drained_at_exit = p.drain_rx();
        p.close();
    }
    report.mbufs_in_use = pools.in_use();
    report.mbufs_total = pools.size();
    // Workers are stopped: the windows' tops are final.
    if let Err(e) = state.lock().save_replay_tops(store.db()) {
        eprintln!("espgw: cannot save replay windows to {}: {e}", cfg.state_file.display());
    }
    if let Some(e) = worker_results.into_iter().find_map(Result::err) {
        return Err(e.into());
    }
    Ok(report)
}

/// Wait (bounded) until every link is up, for virtual links that connect late.
fn wait_link(ports: &Ports<'_>, opts: &RunOptions, stop: &AtomicBool) {
    if let Some(w) = opts.wait_link {
        let t = Instant::now();
        while !ports.ports.iter().all(|p| p.link().up) && t.elapsed() < w && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Start one worker per configured core on its lcore, each with its own RX
/// queue on every port that has one for it and its own TX queue on every port.
fn spawn_workers<'scope, 'q, 'p>(
    lcores: &'scope LcoreScope<'scope, '_>,
    eal: &Eal,
    cfg: &Config,
    ports: &'q Ports<'p>,
    shared: &'scope Shared<'p, '_>,
    stats: &'scope [Arc<WorkerStats>],
) -> Result<Vec<LcoreHandle<'scope, ()>>, GatewayError>
where
    'q: 'scope,
{
    let lcore_ids = eal.worker_lcores();
    if lcore_ids.len() < cfg.worker_cores.len() {
        return Err(GatewayError::Lcores { workers: cfg.worker_cores.len(), lcores: lcore_ids.len() });
    }
    let mut handles = Vec::with_capacity(cfg.worker_cores.len());
    for (w, &lcore) in lcore_ids.iter().take(cfg.worker_cores.len()).enumerate() {
        let q = w as u16;
        let mut rx = Vec::new();
        for (p, port) in ports.ports.iter().enumerate() {
            if q < ports.rx_queues[p] {
                rx.push(Rx { port: p, queue: port.rx_queue(q)? });
            }
        }
        let tx = ports.ports.iter().map(|port| port.tx_queue(q)).collect::<Result<Vec<_>, _>>()?;
        let plan =
            WorkerPlan { index: w, forward: cfg.forward.clone(), idle_sleep: Duration::from_micros(cfg.idle_sleep_us) };
        let st = &stats[w];
        handles.push(lcores.spawn(lcore, move || worker::poll_loop(&plan, shared, rx, tx, st))?);
    }
    Ok(handles)
}

/// Neighbours: static ones from the config (they win) and those the workers
/// learn, published with the routes as one table.
struct Neighbors<'c> {
    cfg: &'c Config,
    learned: Mutex<HashMap<IpAddr, [u8; 6]>>,
    routes: Arc<arc_swap::ArcSwap<RouteTable>>,
}

impl<'c> Neighbors<'c> {
    fn new(cfg: &'c Config) -> Self {
        let learned = HashMap::new();
        let routes = Arc::new(arc_swap::ArcSwap::from_pointee(Self::table(cfg, &learned)));
        Neighbors { cfg, learned: Mutex::new(learned), routes }
    }

    fn table(cfg: &Config, learned: &HashMap<IpAddr, [u8; 6]>) -> RouteTable {
        let all = learned.iter().map(|(a, m)| (*a, *m)).chain(cfg.neighbors.iter().copied());
        RouteTable::new(cfg.routes.clone(), all, cfg.ports.iter().map(|p| p.peer_mac).collect())
    }

    /// Take what the workers learned; republish when a neighbour is new or moved.
    fn absorb(&self, q: &LearnQueue) {
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        while let Some((ip, mac)) = q.pop() {
            changed |= learned.insert(ip, mac) != Some(mac);
        }
        if changed {
            self.routes.store(Arc::new(Self::table(self.cfg, &learned)));
        }
    }
}

/// The main thread's loop: housekeeping every 20 ms until a signal, the run
/// time, or idleness. Returns why it stopped.
#[allow(clippy::too_many_arguments)]
/// Set up the kernel side of the host port, when there is one and
/// `kernel_setup` asks: the interface gets every other port's addresses.
fn kernel_side(cfg: &Config, ports: &[PortInfo]) -> Result<Option<kernel::KernelSide>, GatewayError> {
    let Some((i, h)) = cfg.ports.iter().enumerate().find_map(|(i, p)| p.host.as_ref().map(|h| (i, h))) else {
        return Ok(None);
    };
    if !h.kernel_setup {
        return Ok(None);
    }
    let iface = h.iface.as_deref().unwrap_or("dtap0");
    let addrs: Vec<std::net::IpAddr> = cfg.ports.iter().flat_map(|p| p.addresses.iter().copied()).collect();
    kernel::setup(iface, ports[i].mac, &addrs, h.kernel_table).map(Some).map_err(GatewayError::HostPath)
}

/// What the main thread watches: the flags the signal handlers set, the
/// workers' queues of learned neighbours and `%trap` hits, the start time.
struct Inputs<'a> {
    stop: &'a AtomicBool,
    hup: &'a AtomicBool,
    learned: &'a LearnQueue,
    acquires: &'a AcquireQueue,
    nat_reports: &'a NatQueue,
    start: Instant,
}

fn supervise(
    cfg: &Config,
    opts: &RunOptions,
    inputs: Inputs<'_>,
    control: &ControlState<'_>,
    neighbors: &Neighbors<'_>,
    state: &SharedState,
    stats: &[Arc<WorkerStats>],
) -> &'static str {
    let Inputs { stop, hup, learned, acquires, nat_reports, start } = inputs;
    if let Some(d) = control.ike() {
        d.install_traps(control);
    }
    let mut last_rx = 0u64;
    let mut last_change = Instant::now();
    let mut last_tops = Instant::now();
    let mut watch = Watch::default();
    let mut running_cfg = cfg.clone();
    loop {
        if hup.swap(false, Ordering::Relaxed) {
            match &opts.config_path {
                Some(p) => reload::reload_and_report(p, &mut running_cfg, control),
                None => tracing::warn!(target: "espgw::reload", "SIGHUP ignored: no config file to re-read"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        neighbors.absorb(learned);
        for eroute in watch.acquires(control, acquires) {
            if let Some(mut d) = control.ike() {
                d.acquire(&eroute, Instant::now());
            }
        }
        watch.nat_mappings(control, nat_reports);
        if let Some(mut d) = control.ike() {
            d.poll(control, Instant::now());
        }
        if watch.last.elapsed() >= Duration::from_secs(1) {
            watch.second(control);
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
        let cause = if stop.load(Ordering::Relaxed) {
            Some("signal")
        } else if opts.duration.is_some_and(|d| start.elapsed() >= d) {
            Some("duration")
        } else {
            None
        };
        if let Some(cause) = cause {
            if let Some(mut d) = control.ike() {
                // The peers hear that the IKE SAs go; the workers send it.
                d.shutdown(control);
                std::thread::sleep(Duration::from_millis(100));
            }
            return cause;
        }
        if let Some(idle) = opts.stop_when_idle {
            let rx: u64 = stats.iter().map(|s| s.rx_packets()).sum();
            if rx != last_rx {
                last_rx = rx;
                last_change = Instant::now();
            } else if last_change.elapsed() >= idle {
                return "idle";
            }
        }
    }
}

/// What the main thread watches to publish events: `%trap` hits (every
/// pass), SA expiry, failure counters and links (once a second).
struct Watch {
    last: Instant,
    expired: HashMap<String, (bool, bool)>,
    links: Vec<bool>,
    replay: u64,
    icv: u64,
    /// Last `nat_mapping` event per (SA, new address, port), for the rate limit.
    nat_seen: HashMap<(u32, std::net::IpAddr, u16), Instant>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            last: Instant::now(),
            expired: HashMap::new(),
            links: Vec::new(),
            replay: 0,
            icv: 0,
            nat_seen: HashMap::new(),
        }
    }
}

/// At most one `nat_mapping` event per SA and new mapping in this interval
/// (an SA that does not follow reports every packet from the new mapping).
const NAT_EVENT_INTERVAL: Duration = Duration::from_secs(10);

impl Watch {
    /// `%trap` hits → `acquire` events (rate-limited per eroute by the bus);
    /// the names of the eroutes hit, for the IKE daemon.
    fn acquires(&mut self, control: &ControlState<'_>, q: &AcquireQueue) -> Vec<String> {
        let mut hit = Vec::new();
        if q.is_empty() {
            return hit;
        }
        let store = control.store();
        while let Some((id, k)) = q.pop() {
            let addr = |a: u128| espgw_core::pipeline::addr_of_key(k.v6, a).to_string();
            if let Some(n) = store.eroute_name(id) {
                if !hit.iter().any(|h: &String| h == n) {
                    hit.push(n.to_string());
                }
            }
            control.events.acquire(
                id,
                serde_json::json!({
                    "eroute": store.eroute_name(id),
                    "src": addr(k.src), "dst": addr(k.dst),
                    "proto": k.proto, "sport": k.sport, "dport": k.dport,
                }),
            );
        }
        hit
    }

    /// NAT rebinding reports → SAs with `nat_follow` moved, `nat_mapping` events.
    fn nat_mappings(&mut self, control: &ControlState<'_>, q: &NatQueue) {
        if q.is_empty() {
            return;
        }
        let now = Instant::now();
        self.nat_seen.retain(|_, t| now.duration_since(*t) < NAT_EVENT_INTERVAL);
        while let Some(m) = q.pop() {
            if self.nat_seen.contains_key(&(m.sa_id, m.addr, m.port)) {
                continue;
            }
            let Some(f) = control.store().follow_nat(m.sa_id, (m.addr, m.port)) else { continue };
            self.nat_seen.insert((m.sa_id, m.addr, m.port), now);
            tracing::info!(
                target: "espgw::nat",
                sa = %f.sa, spi = %format_args!("0x{:08x}", m.spi),
                from_port = f.from.1, to = %f.to.0, to_port = f.to.1, followed = ?f.followed,
                "NAT mapping changed"
            );
            control.events.publish(
                "nat_mapping",
                serde_json::json!({
                    "sa": f.sa, "spi": m.spi,
                    "old_addr": f.from.0, "old_port": f.from.1,
                    "new_addr": f.to.0, "new_port": f.to.1,
                    "followed": f.followed,
                }),
            );
        }
    }

    fn second(&mut self, control: &ControlState<'_>) {
        self.last = Instant::now();
        let ev = &control.events;
        let states = {
            let mut store = control.store();
            store.apply_time_limits();
            store.expiry_states()
        };
        for (name, soft, hard, which) in states {
            let before = self.expired.insert(name.clone(), (soft, hard)).unwrap_or((false, false));
            if soft && !before.0 {
                ev.publish("sa_soft_expired", serde_json::json!({ "sa": name, "limit": which }));
            }
            if hard && !before.1 {
                ev.publish("sa_hard_expired", serde_json::json!({ "sa": name, "limit": which }));
            }
        }
        let Some(live) = &control.live else { return };
        let drops = live.drops();
        let sum = |of: &[DropReason]| drops.iter().filter(|(r, _)| of.contains(r)).map(|(_, n)| n).sum::<u64>();
        let replay = sum(&[DropReason::ReplayTooOld, DropReason::ReplayDuplicate]);
        let icv = sum(&[DropReason::EspAuthFailed]);
        if replay > self.replay {
            ev.publish("replay_failures", serde_json::json!({ "count": replay - self.replay, "total": replay }));
        }
        if icv > self.icv {
            ev.publish("icv_failures", serde_json::json!({ "count": icv - self.icv, "total": icv }));
        }
        (self.replay, self.icv) = (replay, icv);
        let ports = live.ports();
        for (i, p) in ports.iter().enumerate() {
            let was = self.links.get(i).copied();
            if was.is_some_and(|w| w != p.link_up) {
                ev.publish(if p.link_up { "link_up" } else { "link_down" }, serde_json::json!({ "port": p.name }));
            }
        }
        self.links = ports.iter().map(|p| p.link_up).collect();
    }
}
