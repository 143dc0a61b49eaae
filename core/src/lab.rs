//! A lab: gateway A with a fixed policy, and the invariants every one of its
//! outputs must hold, checked after every input. The fuzz targets
//! (`fuzz/`) and the randomised tests drive it through [`drive`]; a
//! violation is a bug even when nothing panicked.
//!
//! A protects 10.0.1.0/24 → 10.0.2.0/24 (and fd00:1::/64 → fd00:2::/64)
//! towards peer B (198.51.100.1) with AES-128-GCM and passes 10.0.1.0/24 →
//! 10.0.9.0/24 in clear; B's own gateway seals the ESP that A receives, so
//! inputs can be valid ESP with mutated bytes.
//!
//! Invariants (issue 17): every output frame is well formed (lengths, IPv4
//! header checksum); none exceeds its port's MTU; nothing leaves the
//! protected port in clear but ESP, the pass eroute's flow and the
//! gateway's own ICMP; what leaves the cleartext port decrypted matches the
//! inbound SA's selectors; nothing addressed to the gateway is forwarded;
//! every input is accounted for (an output, a drop, or an event that
//! consumed it — ARP/ND, a held fragment, a path MTU report); no two ESP
//! packets under one key share an IV.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::crypto::Algorithm;
use crate::esp::{Mode, SaConfig};
use crate::mtu::{ReasmConfig, VecAlloc, PMTU_AGEING_MS};
use crate::packet::{HwChecksum, Meta, PacketBuf, VecBuf};
use crate::pipeline::{BurstCtx, Pipeline, PortInfo, PortRole, TxSink};
use crate::policy::{Action, Defaults, Eroute, PolicyDb, ProtectOptions, SaRole, Selector};
use crate::route::{Route, RouteTable};
use crate::stats::{DropReason, Event, WorkerStats};

mod surfaces;
pub use surfaces::{esp_sealed, icmp_too_big, natt_host, neighbor, reassembly};

/// A fuzz driver: the input, and the first invariant it broke.
pub type Driver = fn(&[u8]) -> Result<(), String>;

/// The data path's fuzz targets: the name of each (its `fuzz/fuzz_targets/`
/// file and its `fuzz/seeds/` and `fuzz/regressions/` folders) and its driver.
pub const TARGETS: [(&str, Driver); 7] = [
    ("pipeline", drive),
    ("wire", check_parse),
    ("esp", esp_sealed),
    ("reassembly", reassembly),
    ("icmp", icmp_too_big),
    ("neighbor", neighbor),
    ("natt_host", natt_host),
];

/// Port indexes.
pub const CLEAR: usize = 0;
pub const PROT: usize = 1;
/// The host port (only in [`Lab::natt_host`]).
pub const HOST: usize = 2;
const MTU: [u16; 3] = [1500, 1400, 1500];
const A_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const A_CLEAR_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 254);
const A_CLEAR_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0xfe);
/// The pass eroute's selector: A's hosts to 10.0.9.0/24, in clear.
const PASS_SRC: &str = "10.0.1.0/24";
const PASS_DST: &str = "10.0.9.0/24";
const MAC_A: [[u8; 6]; 3] = [[2, 0xa, 0, 0, 0, 0], [2, 0xa, 0, 0, 0, 1], [2, 0xa, 0, 0, 0, 2]];
const MAC_B: [[u8; 6]; 3] = [[2, 0xb, 0, 0, 0, 0], [2, 0xb, 0, 0, 0, 1], [2, 0xb, 0, 0, 0, 2]];
const MAC_HOST_A: [u8; 6] = [2, 0xaa, 0, 0, 0, 9];
const MAC_HOST_B: [u8; 6] = [2, 0xbb, 0, 0, 0, 9];

/// Collects what a pipeline sends, with its port.
#[derive(Default)]
pub struct Sink(pub Vec<(usize, VecBuf)>);
impl TxSink<VecBuf> for Sink {
    fn send(&mut self, port: usize, pkt: VecBuf) {
        self.0.push((port, pkt));
    }
}

/// One gateway on plain buffers: its policy, routes, pipeline and counters
/// (the lab's, and the pipeline tests' gateway pairs).
pub(crate) struct Gw {
    pub(crate) db: PolicyDb,
    pub(crate) routes: RouteTable,
    pub(crate) pipe: Pipeline<VecBuf>,
    pub(crate) stats: WorkerStats,
}

impl Gw {
    /// Process `frames` received on `port`, a burst at a time; what was sent.
    pub(crate) fn run(&mut self, port: usize, frames: Vec<VecBuf>, now_ms: u64) -> Vec<(usize, VecBuf)> {
        let snap = self.db.reader().load_full();
        let mut sink = Sink::default();
        for chunk in frames.chunks(crate::pipeline::BURST) {
            let mut cx =
                BurstCtx { routes: &self.routes, now_ms, alloc: &mut VecAlloc, tx: &mut sink, stats: &self.stats };
            self.pipe.process(port, chunk.to_vec(), &snap, &mut cx);
        }
        sink.0
    }

    /// What the control thread's IKE daemon queued, sent; what went out.
    #[cfg(test)]
    pub(crate) fn send_ike(&mut self, now_ms: u64) -> Vec<(usize, VecBuf)> {
        let mut sink = Sink::default();
        let mut cx = BurstCtx { routes: &self.routes, now_ms, alloc: &mut VecAlloc, tx: &mut sink, stats: &self.stats };
        self.pipe.send_ike(&mut cx);
        sink.0
    }

    pub(crate) fn drops(&self, r: DropReason) -> u64 {
        self.stats.drops[r.index()].get()
    }

    pub(crate) fn event(&self, e: Event) -> u64 {
        self.stats.events[e as usize].get()
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        me: Ipv4Addr,
        peer: Ipv4Addr,
        nets: [&str; 4],
        spis: (u32, u32),
        macs: [[u8; 6]; 3],
        host: [u8; 6],
        peer_mac: [u8; 6],
        own: (Ipv4Addr, Ipv6Addr),
        natt_host: bool,
    ) -> Gw {
        let alg = Algorithm::AesGcm128;
        let ek: Vec<u8> = (0..alg.enc_key_len() as u8).collect();
        let encap = natt_host.then(crate::esp::UdpEncap::default);
        let mk = |l: Ipv4Addr, r: Ipv4Addr, spi| SaConfig {
            encap,
            ..SaConfig::new(spi, alg, &ek, &[], Mode::Tunnel { local: IpAddr::V4(l), remote: IpAddr::V4(r) })
        };
        let sel = |s: &str, d: &str| Selector::nets(s.parse().expect("prefix"), d.parse().expect("prefix"));
        let mut db = PolicyDb::new(Defaults::default());
        db.batch(|b| {
            let protect = Action::Protect { sa: 1, options: ProtectOptions::default() };
            b.add_sa(1, SaRole::Outbound, &mk(me, peer, spis.0))?;
            b.add_eroute(Eroute { id: 1, selector: sel(nets[0], nets[1]), priority: 1, action: protect })?;
            b.add_eroute(Eroute { id: 2, selector: sel(nets[2], nets[3]), priority: 1, action: protect })?;
            b.add_sa(2, SaRole::inbound_for(Some(IpAddr::V4(me)), &[1, 2]), &mk(me, peer, spis.1))
        })
        .and_then(|r| r)
        .expect("the lab policy is valid");
        let routes = RouteTable::new(
            vec![
                Route { prefix: nets[0].parse().expect("prefix"), port: CLEAR, via: None },
                Route { prefix: nets[2].parse().expect("prefix"), port: CLEAR, via: None },
                Route { prefix: "0.0.0.0/0".parse().expect("prefix"), port: PROT, via: Some(IpAddr::V4(peer)) },
                Route { prefix: "::/0".parse().expect("prefix"), port: PROT, via: Some(IpAddr::V4(peer)) },
            ],
            [(IpAddr::V4(peer), peer_mac)],
            vec![Some(host), None, None],
        );
        let mut ports = vec![
            PortInfo {
                role: PortRole::Cleartext,
                mtu: MTU[CLEAR],
                mac: macs[CLEAR],
                addr_v4: Some(own.0),
                addr_v6: Some(own.1),
            },
            PortInfo { role: PortRole::Protected, mtu: MTU[PROT], mac: macs[PROT], addr_v4: Some(me), addr_v6: None },
        ];
        if natt_host {
            ports.push(PortInfo {
                role: PortRole::Host,
                mtu: MTU[HOST],
                mac: macs[HOST],
                addr_v4: None,
                addr_v6: None,
            });
        }
        let n = ports.len();
        let pipe = Pipeline::new(ports, lab_reasm(), PMTU_AGEING_MS).with_host_rate(1000);
        Gw { db, routes, pipe, stats: WorkerStats::new(n) }
    }

    /// Drops plus the events that mean "this input was consumed here".
    fn accounted(&self) -> u64 {
        let drops: u64 = DropReason::ALL.iter().map(|r| self.drops(*r)).sum();
        let consumed: u64 = [
            Event::NeighborMessages,
            Event::NeighborsLearned,
            Event::NeighborReplies,
            Event::PmtuLowered,
            Event::NattKeepalives,
        ]
        .iter()
        .map(|e| self.event(*e))
        .sum();
        drops + consumed
    }
}

/// The lab's reassembly budget: a small pool's (255 buffers, 15 per
/// source), so that inputs reach eviction and the source limit, and a lab
/// is quick to build (the default table preallocates 1 024 datagrams).
pub(crate) fn lab_reasm() -> ReasmConfig {
    ReasmConfig::for_pool(2047, 2176, 1)
}

/// A frame with room to grow (ESP adds headers and trailers in place).
fn frame(bytes: &[u8]) -> VecBuf {
    let mut b = VecBuf::with_room(128, 128 + bytes.len() + 512);
    if b.append(bytes.len()).is_ok() {
        b.data_mut().copy_from_slice(bytes);
    }
    b
}

/// Ethernet around an IP packet.
pub fn eth(ip: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(if ip.first().is_some_and(|b| b >> 4 == 6) { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(ip);
    f
}

/// The lab: A under test, B to seal ESP for it, and what has been seen.
pub struct Lab {
    a: Gw,
    b: Gw,
    now_ms: u64,
    ivs: HashSet<(u32, [u8; 8])>,
    /// Frames A sent on its cleartext port since this was last cleared.
    delivered: Vec<Vec<u8>>,
    /// [`Lab::natt_host`]: A's NAT mapping reports.
    nat_reports: Option<std::sync::Arc<crate::pipeline::NatQueue>>,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    pub fn new() -> Lab {
        Self::build(false)
    }

    /// The lab with its SAs in UDP (NAT-T, RFC 3948) and a host port (port
    /// [`HOST`], the kernel's side) on A.
    pub fn natt_host() -> Lab {
        Self::build(true)
    }

    fn build(natt_host: bool) -> Lab {
        let nets_a = ["10.0.1.0/24", "10.0.2.0/24", "fd00:1::/64", "fd00:2::/64"];
        let nets_b = ["10.0.2.0/24", "10.0.1.0/24", "fd00:2::/64", "fd00:1::/64"];
        let own_a = (A_CLEAR_V4, A_CLEAR_V6);
        let mut a = Gw::new(A_IP, B_IP, nets_a, (0xa0b0, 0xb0a0), MAC_A, MAC_HOST_A, MAC_B[PROT], own_a, natt_host);
        let nat_reports = natt_host.then(|| std::sync::Arc::new(crate::pipeline::NatQueue::new(64)));
        if let Some(q) = &nat_reports {
            a.pipe =
                std::mem::replace(&mut a.pipe, Pipeline::new(Vec::new(), lab_reasm(), 0)).with_nat_reports(q.clone());
        }
        // One flow A passes in clear (to the Internet through the protected
        // port): the only cleartext the protected port may carry.
        let pass = Selector::nets(PASS_SRC.parse().expect("prefix"), PASS_DST.parse().expect("prefix"));
        a.db.add_eroute(Eroute { id: 3, selector: pass, priority: 1, action: Action::Pass })
            .expect("the pass eroute is valid");
        // Options the data path must honour too (the coverage report showed
        // the fuzzers never reached them): MSS clamping on the IPv4 eroute,
        // fragmentation before encryption on the IPv6 one.
        for (id, nets, options) in [
            (1, (nets_a[0], nets_a[1]), ProtectOptions { mss_clamp: true, fragment_before_encryption: false }),
            (2, (nets_a[2], nets_a[3]), ProtectOptions { mss_clamp: false, fragment_before_encryption: true }),
        ] {
            let selector = Selector::nets(nets.0.parse().expect("prefix"), nets.1.parse().expect("prefix"));
            let action = Action::Protect { sa: 1, options };
            a.db.replace_eroute(Eroute { id, selector, priority: 1, action }).expect("the lab eroutes are valid");
        }
        Lab {
            a,
            b: Gw::new(
                B_IP,
                A_IP,
                nets_b,
                (0xb0a0, 0xa0b0),
                MAC_B,
                MAC_HOST_B,
                MAC_A[PROT],
                (Ipv4Addr::new(10, 0, 2, 254), Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0xfe)),
                natt_host,
            ),
            now_ms: 1,
            ivs: HashSet::new(),
            delivered: Vec::new(),
            nat_reports,
        }
    }

    /// Let time pass.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    /// ESP frames B sends A for an inner IP packet from B's side.
    pub fn seal_from_b(&mut self, inner_ip: &[u8]) -> Vec<Vec<u8>> {
        let out = self.b.run(CLEAR, vec![frame(&eth(inner_ip, MAC_B[CLEAR], MAC_HOST_B))], self.now_ms);
        out.into_iter().filter(|(p, _)| *p == PROT).map(|(_, f)| f.data().to_vec()).collect()
    }

    /// Give A one frame on `port` and check every invariant on what comes out.
    pub fn feed(&mut self, port: usize, bytes: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, String> {
        let before = self.a.accounted();
        let decrypted_before = self.a.event(Event::Decrypted);
        let out: Vec<(usize, Vec<u8>)> = self
            .a
            .run(port, vec![frame(bytes)], self.now_ms)
            .into_iter()
            .map(|(p, f)| (p, f.data().to_vec()))
            .collect();
        let consumed = self.a.accounted() > before;
        if out.is_empty() && !consumed && !is_fragment(bytes) {
            return Err(format!("input on port {port} vanished: no output, no drop, no event: {}", hex(bytes)));
        }
        if let Some(q) = &self.nat_reports {
            let reported = std::iter::from_fn(|| q.pop()).count();
            if reported > 0 && self.a.event(Event::Decrypted) == decrypted_before {
                return Err(format!(
                    "a NAT mapping change reported for a packet that did not authenticate: {}",
                    hex(bytes)
                ));
            }
        }
        for (p, f) in &out {
            self.check_output(port, *p, f).map_err(|e| {
                format!("{e}\n  output on port {p}: {}\n  input on port {port}: {}", hex(f), hex(bytes))
            })?;
            if *p == CLEAR {
                self.delivered.push(f.clone());
            }
        }
        Ok(out)
    }

    fn check_output(&mut self, from: usize, port: usize, f: &[u8]) -> Result<(), String> {
        if f.len() < 14 {
            return Err("runt frame".into());
        }
        if port == HOST {
            return check_host_output(f);
        }
        let ip = &f[14..];
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 => check_arp(port, f),
            0x0800 => self.check_v4(from, port, ip),
            0x86dd => check_v6(from, port, ip),
            t => Err(format!("ethertype {t:#06x} sent")),
        }
    }

    fn check_v4(&mut self, from: usize, port: usize, ip: &[u8]) -> Result<(), String> {
        if ip.len() < 20 || ip[0] >> 4 != 4 || usize::from(ip[0] & 0xf) * 4 < 20 {
            return Err("malformed IPv4 header".into());
        }
        let hl = usize::from(ip[0] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if total != ip.len() || hl > total {
            return Err(format!("IPv4 total length {total} but {} bytes", ip.len()));
        }
        if total > usize::from(MTU[port]) {
            return Err(format!("{total} bytes over the MTU {}", MTU[port]));
        }
        if checksum(&ip[..hl]) != 0 {
            return Err("IPv4 header checksum wrong".into());
        }
        let (src, dst) = (Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]), Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
        if [A_IP, A_CLEAR_V4].contains(&dst) {
            return Err(format!("sent to the gateway's own address {dst}"));
        }
        let own_icmp = ip[9] == 1 && [A_IP, A_CLEAR_V4].contains(&src);
        // (What the kernel writes in its own ICMP is the kernel's business.)
        if own_icmp && from != HOST && ip.len() >= hl + 8 && ip[hl] == 3 && ip[hl + 1] == 4 {
            let mtu = u16::from_be_bytes([ip[hl + 6], ip[hl + 7]]);
            if !(68..=MTU[PROT]).contains(&mtu) {
                return Err(format!("fragmentation needed announces {mtu} (68..={})", MTU[PROT]));
            }
        }
        // ESP, or ESP in UDP from A's NAT-T port (the SPI behind the UDP header).
        let esp_at = match ip[9] {
            50 => Some(hl),
            17 if self.nat_reports.is_some() && src == A_IP && ip.len() >= hl + 2 && ip[hl..hl + 2] == [0x11, 0x94] => {
                Some(hl + 8)
            }
            _ => None,
        };
        match port {
            // ESP the kernel writes itself (a raw socket) is the kernel's
            // business, like its ICMP: only what A seals must have fresh IVs.
            PROT if esp_at.is_some() && from == HOST && [A_IP, A_CLEAR_V4].contains(&src) => Ok(()),
            PROT if esp_at.is_some() => {
                let at = esp_at.unwrap_or(hl);
                let first = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
                if first && ip.len() >= at + 16 {
                    let spi = u32::from_be_bytes([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]);
                    let mut iv = [0u8; 8];
                    iv.copy_from_slice(&ip[at + 8..at + 16]);
                    if !self.ivs.insert((spi, iv)) {
                        return Err(format!("IV {} used twice under SPI {spi:#x}", hex(&iv)));
                    }
                }
                Ok(())
            }
            PROT if own_icmp => Ok(()),
            // The kernel's own traffic (the host path): from the gateway's addresses only.
            PROT if from == HOST && [A_IP, A_CLEAR_V4].contains(&src) => Ok(()),
            PROT if src.octets()[..3] == [10, 0, 1] && dst.octets()[..3] == [10, 0, 9] => Ok(()), // the pass eroute
            PROT => Err(format!("cleartext left the protected port: {src} -> {dst} proto {}", ip[9])),
            _ if own_icmp => Ok(()),
            _ if from == HOST && [A_IP, A_CLEAR_V4].contains(&src) => Ok(()), // the kernel's, to the LAN
            _ => {
                let inside = |a: Ipv4Addr, net: [u8; 3]| a.octets()[..3] == net;
                if inside(src, [10, 0, 2]) && inside(dst, [10, 0, 1]) {
                    Ok(())
                } else {
                    Err(format!("{src} -> {dst} left the cleartext port outside the inbound selectors"))
                }
            }
        }
    }
}

fn check_v6(from: usize, port: usize, ip: &[u8]) -> Result<(), String> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err("malformed IPv6 header".into());
    }
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if plen + 40 != ip.len() {
        return Err(format!("IPv6 payload length {plen} but {} bytes", ip.len() - 40));
    }
    if ip.len() > usize::from(MTU[port]) {
        return Err(format!("{} bytes over the MTU {}", ip.len(), MTU[port]));
    }
    let addr = |o: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[o..o + 16]);
        Ipv6Addr::from(a)
    };
    let (src, dst) = (addr(8), addr(24));
    if dst == A_CLEAR_V6 {
        return Err(format!("sent to the gateway's own address {dst}"));
    }
    let own_icmp = ip[6] == 58 && (src == A_CLEAR_V6 || src.segments()[0] & 0xffc0 == 0xfe80);
    if own_icmp && ip.len() >= 64 && ip[40] == 136 && addr(48) != A_CLEAR_V6 {
        return Err(format!("neighbour advertisement for {}, not A's own address", addr(48)));
    }
    if own_icmp && ip.len() >= 48 && ip[40] == 2 {
        let mtu = u32::from_be_bytes([ip[44], ip[45], ip[46], ip[47]]);
        if !(1280..=u32::from(MTU[PROT])).contains(&mtu) {
            return Err(format!("Packet Too Big announces {mtu} (IPv6 needs 1280..={})", MTU[PROT]));
        }
    }
    match port {
        PROT if from == HOST && src == A_CLEAR_V6 => Ok(()), // the kernel's own traffic
        PROT => Err(format!("IPv6 in clear left the protected port: {src} -> {dst} (A's tunnel is IPv4)")),
        _ if own_icmp => Ok(()),
        _ if from == HOST && src == A_CLEAR_V6 => Ok(()),
        _ if src.segments()[..4] == [0xfd00, 2, 0, 0] && dst.segments()[..4] == [0xfd00, 1, 0, 0] => Ok(()),
        _ => Err(format!("{src} -> {dst} left the cleartext port outside the inbound selectors")),
    }
}

/// ARP from A: long enough, and only ever about A's own address on that
/// port, from that port's MAC (no proxy ARP in the lab).
fn check_arp(port: usize, f: &[u8]) -> Result<(), String> {
    if f.len() < 42 {
        return Err("short ARP".into());
    }
    let (sha, spa) = (&f[22..28], Ipv4Addr::new(f[28], f[29], f[30], f[31]));
    let own = [A_CLEAR_V4, A_IP][port];
    if sha != MAC_A[port] || spa != own {
        return Err(format!("ARP on port {port} as {spa} ({}), not as the port's own {own}", hex(sha)));
    }
    Ok(())
}

/// What A hands its kernel: frames from espgw's host-link MAC to the
/// kernel's, ARP answers as that MAC, IP only for the gateway's own
/// addresses (well formed, within the MTU).
fn check_host_output(f: &[u8]) -> Result<(), String> {
    use crate::pipeline::HOST_PEER_MAC;
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0806 => {
            if f.len() < 42 || f[22..28] != HOST_PEER_MAC || f[6..12] != HOST_PEER_MAC {
                return Err("ARP to the kernel not as espgw's host-link MAC".into());
            }
            Ok(())
        }
        0x86dd if f.len() >= 14 + 48 && f[14 + 6] == 58 && matches!(f[14 + 40], 135 | 136) => {
            if f[6..12] != HOST_PEER_MAC {
                return Err("neighbour advertisement to the kernel not from espgw's host-link MAC".into());
            }
            Ok(())
        }
        t @ (0x0800 | 0x86dd) => {
            if f[..6] != MAC_A[HOST] || f[6..12] != HOST_PEER_MAC {
                return Err(format!("to the kernel from {} to {}", hex(&f[6..12]), hex(&f[..6])));
            }
            let ip = &f[14..];
            let (ok, dst) = if t == 0x0800 {
                let m =
                    Meta::parse(ip, HwChecksum::Unknown).map_err(|r| format!("malformed IPv4 to the kernel: {r:?}"))?;
                let d = Ipv4Addr::from(m.key.dst as u32);
                ([A_IP, A_CLEAR_V4].contains(&d), IpAddr::V4(d))
            } else {
                let m =
                    Meta::parse(ip, HwChecksum::Unknown).map_err(|r| format!("malformed IPv6 to the kernel: {r:?}"))?;
                let d = Ipv6Addr::from(m.key.dst);
                (d == A_CLEAR_V6, IpAddr::V6(d))
            };
            if !ok {
                return Err(format!("{dst} is not the gateway's, yet it went to the kernel"));
            }
            if ip.len() > usize::from(MTU[HOST]) {
                return Err(format!("{} bytes to the kernel over the MTU", ip.len()));
            }
            Ok(())
        }
        t => Err(format!("ethertype {t:#06x} to the kernel")),
    }
}

/// Is this frame an IP fragment (reassembly may hold it without a count)?
fn is_fragment(f: &[u8]) -> bool {
    match f.get(12..14) {
        Some([8, 0]) => f.get(20..22).is_some_and(|b| u16::from_be_bytes([b[0], b[1]]) & 0x3fff != 0),
        Some([0x86, 0xdd]) => {
            // Walk the extension headers (the gateway may hold a fragment
            // whose Fragment header follows Hop-by-Hop or Destination Options).
            let (mut nh, mut off) = (f.get(20).copied(), 54);
            for _ in 0..8 {
                match nh {
                    Some(44) => return true,
                    Some(0 | 43 | 60) => {
                        nh = f.get(off).copied();
                        off += (usize::from(f.get(off + 1).copied().unwrap_or(0)) + 1) * 8;
                    }
                    _ => return false,
                }
            }
            false
        }
        _ => false,
    }
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn hex(b: &[u8]) -> String {
    b.iter().take(96).map(|x| format!("{x:02x}")).collect()
}

/// Fix an IPv4 header's checksum (and total length) so that inputs built
/// from fuzz bytes get past the first checks and reach the deeper code.
fn fix_v4(ip: &mut [u8]) {
    if ip.len() >= 20 && ip[0] >> 4 == 4 {
        let hl = (usize::from(ip[0] & 0xf) * 4).clamp(20, ip.len().min(60));
        let len = (ip.len() as u16).to_be_bytes();
        ip[2..4].copy_from_slice(&len);
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&ip[..hl]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Run the lab on fuzz bytes: a sequence of operations, each a tag byte, a
/// 2-byte length and that many bytes. Tags: raw frame on the cleartext
/// port; raw frame on the protected port; an IP packet from A's host
/// (lengths and checksum fixed); an inner packet B seals, then optionally
/// mutated, onto A's protected port; time passing.
pub fn drive(data: &[u8]) -> Result<(), String> {
    let mut lab = Lab::new();
    let mut rest = data;
    while rest.len() >= 3 {
        let tag = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3).min(9000);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match tag % 5 {
            0 => drop(lab.feed(CLEAR, body)?),
            1 => drop(lab.feed(PROT, body)?),
            2 => {
                let mut ip = body.to_vec();
                fix_v4(&mut ip);
                lab.feed(CLEAR, &eth(&ip, MAC_A[CLEAR], MAC_HOST_A))?;
            }
            3 => {
                // Inner packet from B's side: the first 2 bytes say where to flip a byte (0 = nowhere).
                let (at, inner) = body.split_at(body.len().min(2));
                let at = if at.len() == 2 { usize::from(u16::from_be_bytes([at[0], at[1]])) } else { 0 };
                let mut ip = inner.to_vec();
                fix_v4(&mut ip);
                for mut f in lab.seal_from_b(&ip) {
                    if at != 0 && !f.is_empty() {
                        let i = at % f.len();
                        f[i] ^= 0x5a;
                    }
                    lab.feed(PROT, &f)?;
                }
            }
            _ => lab.advance(u64::from(u16::from_be_bytes([tag, body.first().copied().unwrap_or(0)]))),
        }
    }
    Ok(())
}

/// The ingress parser on any bytes: no panic, and an accepted record
/// describes bytes that are there (lengths within the buffer, the
/// transport header inside the packet, a verified IPv4 checksum).
pub fn check_parse(ip: &[u8]) -> Result<(), String> {
    let Ok(m) = Meta::parse(ip, HwChecksum::Unknown) else { return Ok(()) };
    let total = usize::from(m.total_len);
    if total > ip.len() {
        return Err(format!("total length {total} past the {} bytes there", ip.len()));
    }
    if usize::from(m.l4_off) > total || usize::from(m.nh_field) >= total {
        return Err(format!("offsets l4 {} / next header {} outside {total} bytes", m.l4_off, m.nh_field));
    }
    if ip[0] >> 4 == 4 && checksum(&ip[..usize::from(ip[0] & 0xf) * 4]) != 0 {
        return Err("accepted an IPv4 header with a wrong checksum".into());
    }
    Ok(())
}

/// One operation of [`drive`]'s input format (seeds and tests build inputs with it).
pub fn op(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src: [u8; 4], dst: [u8; 4], len: usize, df: bool) -> Vec<u8> {
        super::surfaces::udp(src.into(), dst.into(), len, 0, if df { 0x4000 } else { 0 }, 0)
    }

    #[test]
    fn good_traffic_passes_every_invariant() {
        let mut input = Vec::new();
        for len in [60, 576, 1400, 1480, 1500] {
            input.extend(op(2, &udp4([10, 0, 1, 5], [10, 0, 2, 7], len, len == 1500)));
            let mut inner = vec![0, 0];
            inner.extend(udp4([10, 0, 2, 7], [10, 0, 1, 5], len, false));
            input.extend(op(3, &inner));
        }
        drive(&input).unwrap();
        // Not vacuous: the lab really encrypts and decrypts.
        let mut lab = Lab::new();
        let out =
            lab.feed(CLEAR, &eth(&udp4([10, 0, 1, 5], [10, 0, 2, 7], 100, false), MAC_A[CLEAR], MAC_HOST_A)).unwrap();
        assert!(matches!(&out[..], [(PROT, f)] if f[14 + 9] == 50), "ESP out of the protected port");
        let sealed = lab.seal_from_b(&udp4([10, 0, 2, 7], [10, 0, 1, 5], 100, false));
        assert_eq!(sealed.len(), 1);
        let out = lab.feed(PROT, &sealed[0]).unwrap();
        assert!(matches!(&out[..], [(CLEAR, f)] if f[14 + 9] == 17), "decrypted UDP out of the cleartext port");
        // Big DF packets get need-frag; big others leave as ESP fragments within the MTU.
        let out =
            lab.feed(CLEAR, &eth(&udp4([10, 0, 1, 5], [10, 0, 2, 7], 1500, true), MAC_A[CLEAR], MAC_HOST_A)).unwrap();
        assert!(matches!(&out[..], [(CLEAR, f)] if f[14 + 9] == 1), "ICMP need-frag to the host: {out:?}");
        let out =
            lab.feed(CLEAR, &eth(&udp4([10, 0, 1, 5], [10, 0, 2, 7], 1500, false), MAC_A[CLEAR], MAC_HOST_A)).unwrap();
        assert_eq!(out.len(), 2, "two ESP fragments");
        // The pass eroute's flow leaves in clear; the reverse is not let in.
        let out =
            lab.feed(CLEAR, &eth(&udp4([10, 0, 1, 5], [10, 0, 9, 7], 100, false), MAC_A[CLEAR], MAC_HOST_A)).unwrap();
        assert!(matches!(&out[..], [(PROT, f)] if f[14 + 9] == 17), "passed in clear: {out:?}");
        let out =
            lab.feed(PROT, &eth(&udp4([10, 0, 9, 7], [10, 0, 1, 5], 100, false), MAC_A[PROT], MAC_B[PROT])).unwrap();
        assert!(out.is_empty(), "inbound clear is dropped by default");
    }

    /// The NAT-T + host lab is not vacuous: ESP in UDP both ways, a NAT
    /// rewrite reported, keepalives consumed, traffic for the gateway to the
    /// kernel, the kernel's answers out in clear, and the invariants bite.
    #[test]
    fn natt_host_lab_reaches_what_it_checks() {
        let mut lab = Lab::natt_host();
        let out =
            lab.feed(CLEAR, &eth(&udp4([10, 0, 1, 5], [10, 0, 2, 7], 100, false), MAC_A[CLEAR], MAC_HOST_A)).unwrap();
        assert!(matches!(&out[..], [(PROT, f)] if f[14 + 9] == 17 && f[14 + 20..14 + 24] == [0x11, 0x94, 0x11, 0x94]));
        let sealed = lab.seal_from_b(&udp4([10, 0, 2, 7], [10, 0, 1, 5], 100, false));
        assert!(matches!(&lab.feed(PROT, &sealed[0]).unwrap()[..], [(CLEAR, _)]));
        let mut natted = lab.seal_from_b(&udp4([10, 0, 2, 7], [10, 0, 1, 5], 100, false)).remove(0);
        natted[14 + 20..14 + 22].copy_from_slice(&31000u16.to_be_bytes());
        assert_eq!(lab.feed(PROT, &natted).unwrap().len(), 1);
        assert_eq!(lab.a.event(Event::NatMappingChanged), 1);
        let mut input = Vec::new();
        for f in ["demux", "kernel", "to_gateway", "sealed_and_nat"] {
            input.extend(
                std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/natt_host").join(f))
                    .unwrap(),
            );
        }
        let mut lab = Lab::natt_host();
        super::surfaces::natt_host_on(&mut lab, &input).unwrap();
        for e in [
            Event::NattKeepalives,
            Event::HostIke,
            Event::HostIcmp,
            Event::FromHost,
            Event::Decrypted,
            Event::HostDecrypted,
        ] {
            assert!(lab.a.event(e) > 0, "{e:?} never happened");
        }
        // The host-output invariant bites: a packet for someone else to the kernel.
        let f = eth(&udp4([198, 51, 100, 1], [10, 0, 1, 5], 60, false), MAC_A[HOST], crate::pipeline::HOST_PEER_MAC);
        assert!(lab.check_output(PROT, HOST, &f).unwrap_err().contains("not the gateway's"));
        // Clear traffic from the gateway's address is fine from the kernel, not from a port.
        let f = eth(&udp4([192, 0, 2, 1], [203, 0, 113, 5], 60, false), MAC_B[PROT], MAC_A[PROT]);
        lab.check_output(HOST, PROT, &f).unwrap();
        assert!(lab.check_output(CLEAR, PROT, &f).unwrap_err().contains("cleartext left"));
    }

    /// The lab's eroute options are reached: a SYN's MSS is clamped to the tunnel.
    #[test]
    fn the_mss_of_a_syn_is_clamped() {
        let seed =
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/pipeline/tcp_syn_mss"))
                .unwrap();
        let mut lab = Lab::new();
        let mut rest = &seed[..];
        while rest.len() >= 3 {
            let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
            lab.feed(CLEAR, &eth(&rest[3..3 + len], MAC_A[CLEAR], MAC_HOST_A)).unwrap();
            rest = &rest[3 + len..];
        }
        assert_eq!(lab.a.event(Event::MssClamped), 1, "1460 clamped, 536 already fits");
    }

    #[test]
    fn the_checks_catch_what_they_claim() {
        let mut lab = Lab::new();
        // Clear traffic out of the protected port is a violation.
        let ip = udp4([10, 0, 1, 5], [10, 0, 2, 7], 100, false);
        let e = lab.check_output(CLEAR, PROT, &eth(&ip, MAC_B[PROT], MAC_A[PROT])).unwrap_err();
        assert!(e.contains("cleartext left the protected port"), "{e}");
        // Outside the inbound selectors on the clear side.
        let ip = udp4([10, 9, 9, 9], [10, 0, 1, 5], 100, false);
        assert!(lab.check_output(PROT, CLEAR, &eth(&ip, MAC_HOST_A, MAC_A[CLEAR])).unwrap_err().contains("selectors"));
        // A bad checksum, an oversized frame.
        let mut ip = udp4([10, 0, 2, 7], [10, 0, 1, 5], 100, false);
        ip[10] ^= 1;
        assert!(lab.check_output(PROT, CLEAR, &eth(&ip, MAC_HOST_A, MAC_A[CLEAR])).unwrap_err().contains("checksum"));
        let ip = udp4([192, 0, 2, 1], [198, 51, 100, 1], 1420, false);
        let mut esp = ip.clone();
        esp[9] = 50;
        fix_v4(&mut esp);
        assert!(lab.check_output(CLEAR, PROT, &eth(&esp, MAC_B[PROT], MAC_A[PROT])).unwrap_err().contains("MTU"));
        // The same IV twice under one SPI.
        let esp = {
            let mut p = udp4([192, 0, 2, 1], [198, 51, 100, 1], 100, false);
            p[9] = 50;
            fix_v4(&mut p);
            p
        };
        lab.check_output(CLEAR, PROT, &eth(&esp, MAC_B[PROT], MAC_A[PROT])).unwrap();
        assert!(lab.check_output(CLEAR, PROT, &eth(&esp, MAC_B[PROT], MAC_A[PROT])).unwrap_err().contains("IV"));
    }

    /// A small fuzz run in the normal suite: random operation sequences
    /// (deterministic seed) through every invariant.
    #[test]
    fn random_operation_sequences_hold_every_invariant() {
        let mut next = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        // ESPGW_LAB_CASES=N runs longer (make fuzz-lab).
        let cases: u64 = std::env::var("ESPGW_LAB_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
        for case in 0..cases {
            let mut input = Vec::new();
            for _ in 0..(next() % 8 + 1) {
                let tag = (next() % 5) as u8;
                let len = (next() % 1600) as usize;
                let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Mostly well-formed headers, so the deeper paths are reached.
                if tag == 2 && len >= 28 {
                    let net = if next().is_multiple_of(4) { 9 } else { 2 }; // sometimes the pass eroute's flow
                    body[..28].copy_from_slice(&udp4([10, 0, 1, 5], [10, 0, net, (next() % 255) as u8], 28, false));
                }
                if tag == 3 && len >= 30 {
                    body[2..30].copy_from_slice(&udp4([10, 0, 2, 7], [10, 0, 1, (next() % 255) as u8], 28, false));
                    if next().is_multiple_of(2) {
                        body[..2].copy_from_slice(&[0, 0]);
                    }
                }
                input.extend(op(tag, &body));
            }
            drive(&input).unwrap_or_else(|e| panic!("case {case}: {e}"));
        }
    }

    /// The fuzz seeds and every input a fuzzer ever found (fuzz/regressions)
    /// run in the normal suite, for every target.
    #[test]
    fn seeds_and_regressions_hold_every_invariant() {
        for (target, run) in TARGETS {
            let n = espgw_testkit::fuzz_corpus::replay(target, run);
            assert!(n >= 2, "{n} {target} seeds");
        }
    }

    /// Every target has its fuzz_targets file, and every file is a target.
    #[test]
    fn the_fuzz_targets_are_the_listed_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS
            .iter()
            .map(|t| t.0.to_string())
            .chain(["api", "config", "ike", "ike_daemon", "ike_fragments"].map(String::from))
            .collect();
        names.sort();
        assert_eq!(files, names);
    }
}
