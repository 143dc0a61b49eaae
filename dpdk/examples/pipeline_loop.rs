//! The whole pipeline in a loop, without ports, for per-packet instruction
//! counts under `valgrind --tool=callgrind` (repeatable where timings are
//! not) and a quick speed probe.
//!
//! `pipeline_loop MODE ALGORITHM FRAME_BYTES PACKETS` with MODE `bypass` (a
//! pass eroute), `out` (encrypt) or `in` (decrypt), `-natt` for ESP in UDP.
//! Instructions per packet: run twice with different PACKETS under callgrind
//! and divide the difference (`perf/instructions.py`).
//!
//! It runs the gateway's own `Pipeline<Mbuf>` over mbufs of a DPDK mempool
//! (EAL without hugepages or devices; each packet's mbuf is taken from the
//! pool and filled before its burst and freed after TX, as a PMD would), and
//! nothing else: the gateway's binary holds only that instantiation of the
//! pipeline, and a second one (over heap buffers, as this loop once ran)
//! doubles the call sites of every shared helper, which changes what LLVM
//! inlines (measured: +50-70 instructions per packet on every path).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use espgw_core::crypto::{Algorithm, Backend};
use espgw_core::esp::{Mode, SaConfig};
use espgw_core::mtu::ReasmConfig;
use espgw_core::packet::PacketBuf;
use espgw_core::pipeline::{BurstCtx, Pipeline, PortInfo, PortRole, TxSink, BURST};
use espgw_core::policy::{Action, Defaults, Eroute, PolicyDb, ProtectOptions, SaRole, Selector, Snapshot};
use espgw_core::route::{Route, RouteTable};
use espgw_core::stats::WorkerStats;
use espgw_dpdk::{Eal, Mbuf, Mempool, PoolAlloc};

struct Sink<B>(Vec<B>);
impl<B> TxSink<B> for Sink<B> {
    fn send(&mut self, _port: usize, pkt: B) {
        self.0.push(pkt);
    }
}

/// A fresh mbuf holding `bytes` (an Ethernet frame) behind the usual headroom.
fn mbuf_of<'p>(pool: &'p Mempool<'_>, bytes: &[u8]) -> Mbuf<'p> {
    let mut m = pool.alloc().expect("mempool sized for the loop");
    m.append(bytes.len()).expect("frame fits an mbuf");
    m.data_mut().copy_from_slice(bytes);
    m
}

fn udp_frame(size: usize, i: usize) -> Vec<u8> {
    let ip_len = size - 18;
    let mut f = vec![0u8; 14 + ip_len];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 1, 1 + (i % 200) as u8]);
    ip[16..20].copy_from_slice(&[10, 0, 2, 1 + (i * 7 % 200) as u8]);
    let mut sum = 0u32;
    for c in ip[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    ip[20..22].copy_from_slice(&(1024 + (i % 64) as u16).to_be_bytes());
    ip[22..24].copy_from_slice(&5000u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((ip_len - 20) as u16).to_be_bytes());
    f
}

fn main() {
    // intel-ipsec-mb as the gateway uses it (backend `ipsec-mb`, and `auto`).
    espgw_dpdk::ipsec_mb::register();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pipeline_loop bypass|out|in|out-natt|in-natt ALGORITHM FRAME_BYTES PACKETS";
    // `-natt`: the SAs encapsulate in UDP 4500 (RFC 3948).
    let (mode, natt) = match args.get(1).expect(usage).as_str() {
        m @ ("out-natt" | "in-natt") => (&m[..m.len() - 5], true),
        m => (m, false),
    };
    let alg = Algorithm::from_name(args.get(2).expect(usage)).expect("algorithm");
    let frame: usize = args.get(3).expect(usage).parse().expect("frame size");
    let packets: usize = args.get(4).expect(usage).parse().expect("packets");

    let (a_ip, b_ip): (IpAddr, IpAddr) = (Ipv4Addr::new(192, 0, 2, 1).into(), Ipv4Addr::new(198, 51, 100, 1).into());
    let ek: Vec<u8> = (0..alg.enc_key_len() as u8).collect();
    let ak: Vec<u8> = (0..alg.auth_key_len() as u8).collect();
    let sel = Selector::nets("10.0.1.0/24".parse().unwrap(), "10.0.2.0/24".parse().unwrap());
    let mut cfg = SaConfig::new(0x1001, alg, &ek, &ak, Mode::Tunnel { local: a_ip, remote: b_ip });
    cfg.backend = Backend::Auto;
    if natt {
        cfg.encap = Some(espgw_core::esp::UdpEncap::default());
    }
    // NAT-T arrives for one of the gateway's own addresses (B's, inbound).
    let own_b = match b_ip {
        IpAddr::V4(b) if natt => Some(b),
        _ => None,
    };
    let ports = vec![
        PortInfo { role: PortRole::Cleartext, mtu: 1500, mac: [2, 0, 0, 0, 0, 0xa], addr_v4: None, addr_v6: None },
        PortInfo { role: PortRole::Protected, mtu: 9000, mac: [2, 0, 0, 0, 0, 0xb], addr_v4: own_b, addr_v6: None },
    ];
    let routes = RouteTable::new(
        vec![
            Route { prefix: "10.0.2.0/24".parse().unwrap(), port: if mode == "bypass" { 1 } else { 0 }, via: None },
            Route { prefix: "0.0.0.0/0".parse().unwrap(), port: 1, via: None },
        ],
        std::iter::empty(),
        vec![Some([2, 0, 0, 0, 0, 1]), Some([2, 0, 0, 0, 0, 2])],
    );
    // Gateway A encrypts; for `in`, gateway B (same SA inbound) decrypts what A made.
    let mut a = PolicyDb::new(Defaults::default());
    a.batch(|b| {
        b.add_sa(1, SaRole::Outbound, &cfg).unwrap();
        let action =
            if mode == "bypass" { Action::Pass } else { Action::Protect { sa: 1, options: ProtectOptions::default() } };
        b.add_eroute(Eroute { id: 1, selector: sel, priority: 100, action }).unwrap();
    })
    .unwrap();
    let mut b = PolicyDb::new(Defaults::default());
    cfg.replay_window = 0; // the same captured packets go round and round
    let mut cfg_b = cfg.clone();
    cfg_b.mode = Mode::Tunnel { local: b_ip, remote: a_ip };
    b.batch(|bt| {
        bt.add_sa(9, SaRole::Outbound, &cfg_b).unwrap();
        bt.add_eroute(Eroute {
            id: 1,
            selector: sel.mirrored(),
            priority: 100,
            action: Action::Protect { sa: 9, options: ProtectOptions::default() },
        })
        .unwrap();
        bt.add_sa(2, SaRole::inbound_for(Some(b_ip), &[1]), &cfg).unwrap();
    })
    .unwrap();
    let stats = WorkerStats::new(2);
    let snap_a = a.reader().load_full();
    let snap_b = b.reader().load_full();
    let setup = Setup { ports, routes, snap_a: &snap_a, snap_b: &snap_b, stats: &stats, inbound: mode == "in", frame };
    let prefix = format!("pipeline_loop{}", std::process::id());
    let file_prefix = format!("--file-prefix={prefix}");
    let eal_args = ["--no-huge", "-m", "128", "--no-pci", "-l", "0", "--log-level", "error", &file_prefix];
    let (done, ns) = {
        let eal = Eal::init(&eal_args).expect("EAL");
        let pool = Mempool::new(&eal, "loop", 8 * BURST as u32, BURST as u32, 2048 + 128).expect("mempool");
        run(&setup, &pool, packets)
    };
    // EAL leaves its runtime directory behind; the instruction table runs
    // this loop 28 times.
    let runtime = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into());
    for dir in ["/var/run".to_string(), runtime] {
        let _ = std::fs::remove_dir_all(format!("{dir}/dpdk/{prefix}"));
    }
    let mode = if natt { format!("{mode}-natt") } else { mode.to_string() };
    println!(
        "{{\"mode\":\"{mode}\",\"algorithm\":\"{}\",\"frame\":{frame},\"packets\":{done},\"ns_per_packet\":{ns:.1}}}",
        alg.name()
    );
}

/// The gateway's configuration, shared by the set-up and the loop.
struct Setup<'a> {
    ports: Vec<PortInfo>,
    routes: RouteTable,
    snap_a: &'a Snapshot,
    snap_b: &'a Snapshot,
    stats: &'a WorkerStats,
    inbound: bool,
    frame: usize,
}

/// Bursts of [`BURST`] through the pipeline until `packets` went through:
/// (packets, nanoseconds per packet).
fn run(s: &Setup<'_>, pool: &Mempool<'_>, packets: usize) -> (usize, f64) {
    let stats = s.stats;
    let mut pipe: Pipeline<Mbuf<'_>> = Pipeline::new(s.ports.clone(), ReasmConfig::default(), 600_000);
    let clear: Vec<Vec<u8>> = (0..BURST).map(|i| udp_frame(s.frame, i)).collect();
    // The input burst: cleartext, or A's ESP output for `in`.
    let (templates, in_port, snap) = if s.inbound {
        let mut sink = Sink(Vec::new());
        let mut alloc = PoolAlloc { regular: pool, jumbo: None };
        let mut cx = BurstCtx { routes: &s.routes, now_ms: 0, alloc: &mut alloc, tx: &mut sink, stats };
        pipe.process(0, clear.iter().map(|f| mbuf_of(pool, f)).collect::<Vec<_>>(), s.snap_a, &mut cx);
        assert_eq!(sink.0.len(), BURST, "encryption failed");
        (sink.0.iter().map(|b| b.data().to_vec()).collect::<Vec<_>>(), 1, s.snap_b)
    } else {
        (clear, 0, s.snap_a)
    };
    let mut bufs: Vec<Mbuf<'_>> = Vec::with_capacity(BURST * 2);
    let mut sink = Sink(Vec::with_capacity(BURST * 2));
    let mut alloc = PoolAlloc { regular: pool, jumbo: None };
    let start = Instant::now();
    let mut out = 0usize;
    let mut done = 0;
    while done < packets {
        // A burst as RX gives it: fresh mbufs holding the frames.
        bufs.extend(templates.iter().map(|t| mbuf_of(pool, t)));
        let mut cx = BurstCtx { routes: &s.routes, now_ms: 1, alloc: &mut alloc, tx: &mut sink, stats };
        pipe.process(in_port, bufs.drain(..), snap, &mut cx);
        out += sink.0.len();
        sink.0.clear(); // TX done: back to the pool
        done += BURST;
    }
    let ns = start.elapsed().as_nanos() as f64 / done as f64;
    assert_eq!(out, done, "every packet must come out (drops: {})", stats.total_drops());
    (done, ns)
}
