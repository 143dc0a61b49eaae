//! Bringing the data plane up: EAL arguments (workers on their own lcores),
//! mbuf pools sized from the config, ports configured and started.

use std::net::IpAddr;

use espgw_core::pipeline::{PortInfo, PortRole};
use espgw_dpdk::{Eal, Mempool, Port, PortSetup};

use super::GatewayError;
use crate::config::{fmt_mac, Config, ConfigError, Role};

/// The jumbo pool: reassembled datagrams and big fragments / ICMP errors.
pub const JUMBO_MBUFS: u32 = 1023;
/// Data room of a jumbo mbuf: a 10 KiB datagram plus DPDK's headroom.
pub const JUMBO_DATA_ROOM: u16 = 10240 + 128;
/// Per-lcore cache of the jumbo pool.
const JUMBO_CACHE: u32 = 32;

/// The EAL argument list for a config: its `[eal] args`, extra command-line
/// args, the port devices, and the lcores: lcore 0 is the main lcore (on a
/// CPU no worker uses, when there is one), worker `i` runs on lcore `i + 1`
/// pinned to `workers.cores[i]`.
pub fn eal_args(cfg: &Config, extra: &[String]) -> Vec<String> {
    let mut args = cfg.eal_args.clone();
    args.extend(extra.iter().cloned());
    for p in &cfg.ports {
        args.extend(p.device.eal_args());
    }
    let avail: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    let main = avail.iter().copied().find(|c| !cfg.worker_cores.contains(c)).or(avail.first().copied()).unwrap_or(0);
    let mut lcores = vec![format!("0@{main}")];
    lcores.extend(cfg.worker_cores.iter().enumerate().map(|(i, c)| format!("{}@{c}", i + 1)));
    args.push("--lcores".into());
    args.push(lcores.join(","));
    args.push("--main-lcore".into());
    args.push("0".into());
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

/// The regular and the jumbo pool.
pub struct Pools<'e> {
    pub regular: Mempool<'e>,
    pub jumbo: Mempool<'e>,
}

impl<'e> Pools<'e> {
    pub fn new(eal: &'e Eal, cfg: &Config) -> Result<Self, GatewayError> {
        let m = &cfg.mempool;
        Ok(Pools {
            regular: Mempool::new(eal, "espgw_mbufs", m.mbufs, m.cache, m.data_room)?,
            jumbo: Mempool::new(eal, "espgw_jumbo", JUMBO_MBUFS, JUMBO_CACHE, JUMBO_DATA_ROOM)?,
        })
    }

    /// Mbufs taken from both pools.
    pub fn in_use(&self) -> u32 {
        self.regular.in_use() + self.jumbo.in_use()
    }

    pub fn size(&self) -> u32 {
        self.regular.size() + self.jumbo.size()
    }
}

/// Ports as started, with what the pipeline needs to know of them.
pub struct Ports<'p> {
    pub ports: Vec<Port<'p>>,
    pub mtus: Vec<u16>,
    pub rx_queues: Vec<u16>,
}

/// Configure and start every port: one RX queue per worker (RSS spreads by
/// IP) where the device has that many, one TX queue per worker so that no two
/// workers share a queue.
pub fn ports<'p>(eal: &'p Eal, cfg: &Config, pool: &'p Mempool<'_>) -> Result<Ports<'p>, GatewayError> {
    let nworkers = cfg.worker_cores.len();
    let mut out = Ports { ports: Vec::new(), mtus: Vec::new(), rx_queues: Vec::new() };
    for (i, pc) in cfg.ports.iter().enumerate() {
        let setup_err = |reason: String| GatewayError::PortSetup {
            port: pc.name.clone(),
            device: pc.device.port_name().to_string(),
            reason,
        };
        let mut port = Port::by_name(eal, pc.device.port_name()).map_err(|e| match e {
            espgw_dpdk::DpdkError::NoSuchPort(name) => GatewayError::Config(cfg.port_device_error(
                i,
                format!(
                    "DPDK has no port {name:?}: a PCI NIC must be bound to vfio-pci (dpdk-devbind.py --status;                      dpdk-devbind.py -b vfio-pci ADDR), a vdev's driver must exist (see the EAL lines above)"
                ),
            )),
            e => e.into(),
        })?;
        let caps = port.caps()?;
        if usize::from(caps.max_tx_queues) < nworkers {
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
        port.configure(&setup, pool)?;
        port.start()?;
        out.mtus.push(pc.mtu.or(port.mtu()).unwrap_or(1500));
        out.rx_queues.push(nrx);
        out.ports.push(port);
    }
    Ok(out)
}

/// What the pipeline knows of each port.
pub fn port_info(cfg: &Config, ports: &Ports<'_>) -> Vec<PortInfo> {
    cfg.ports
        .iter()
        .zip(&ports.ports)
        .zip(&ports.mtus)
        .map(|((pc, p), &mtu)| PortInfo {
            role: match pc.role {
                Role::Cleartext => PortRole::Cleartext,
                Role::Protected => PortRole::Protected,
                Role::Host => PortRole::Host,
            },
            mtu,
            mac: pc.mac.unwrap_or_else(|| p.mac()),
            addr_v4: pc.addresses.iter().find_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                _ => None,
            }),
            addr_v6: pc.addresses.iter().find_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                _ => None,
            }),
        })
        .collect()
}

/// One line per port, at start.
pub fn print_startup(cfg: &Config, ports: &Ports<'_>) {
    println!(
        "espgw: {} port(s), {} worker(s) on core(s) {:?}",
        ports.ports.len(),
        cfg.worker_cores.len(),
        cfg.worker_cores
    );
    for (i, (p, pc)) in ports.ports.iter().zip(&cfg.ports).enumerate() {
        let fwd = match cfg.forward[i] {
            Some(o) => format!("forwards to {}", cfg.ports[o].name),
            None => "no forwarding".to_string(),
        };
        println!(
            "  port {:<10} {:<10} device {:<12} mtu {:<5} mac {} rxq {} link {} ({fwd})",
            pc.name,
            pc.role.as_str(),
            p.name(),
            ports.mtus[i],
            fmt_mac(&p.mac()),
            ports.rx_queues[i],
            if p.link().up { "up" } else { "down" },
        );
    }
}
