//! Test and demo traffic: deterministic frame builders, pcap read/write and a
//! one-line-per-packet summary. Used by `espgw-pcap`, the demo and the
//! end-to-end tests; nothing here runs on the data path.

use std::path::Path;

/// A deterministic xorshift generator (tests need no `rand`).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Internet checksum.
pub fn csum(data: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in data.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet + IPv4 + UDP frame of exactly `frame_len` bytes (>= 42).
#[allow(clippy::too_many_arguments)]
pub fn udp4_frame(
    frame_len: usize,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    id: u16,
    df: bool,
    rng: &mut Rng,
) -> Vec<u8> {
    let frame_len = frame_len.max(42);
    let mut f = Vec::with_capacity(frame_len);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let ip_len = (frame_len - 14) as u16;
    let flags: u16 = if df { 0x4000 } else { 0 };
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&ip_len.to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&flags.to_be_bytes());
    ip.extend_from_slice(&[64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let udp_len = ip_len - 20;
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]); // checksum optional for IPv4 UDP
    while f.len() < frame_len {
        f.push(rng.next_u64() as u8);
    }
    f
}

/// `count` frames of mixed sizes (60..=1514) over a few flows, some with DF.
pub fn mixed_frames(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let sizes = [60usize, 64, 128, 256, 512, 576, 1000, 1280, 1400, 1500, 1514];
    (0..count)
        .map(|i| {
            let len = sizes[rng.below(sizes.len() as u64) as usize];
            let flow = (i % 4) as u8;
            udp4_frame(
                len,
                [10, 0, 1, 10 + flow],
                [10, 0, 2, 20 + flow],
                4000 + flow as u16,
                5000,
                i as u16,
                i % 3 == 0,
                &mut rng,
            )
        })
        .collect()
}

/// Write frames to a pcap (Ethernet link type).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|f| f.len() + 16).sum::<usize>());
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out)
}

/// Read every frame of a pcap (microsecond or nanosecond, either endianness).
pub fn read_pcap(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {m}", path.display()));
    let b = std::fs::read(path)?;
    if b.len() < 24 {
        return Err(bad("not a pcap file (too short)"));
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let le = matches!(magic, 0xa1b2c3d4 | 0xa1b23c4d);
    if !le && !matches!(magic.swap_bytes(), 0xa1b2c3d4 | 0xa1b23c4d) {
        return Err(bad("not a pcap file (bad magic)"));
    }
    let rd = |o: usize| {
        let v: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let mut off = 24;
    let mut frames = Vec::new();
    while off + 16 <= b.len() {
        let caplen = rd(off + 8) as usize;
        off += 16;
        let Some(f) = b.get(off..off + caplen) else {
            return Err(bad("truncated record"));
        };
        frames.push(f.to_vec());
        off += caplen;
    }
    Ok(frames)
}

/// One readable line for a frame, tcpdump-style:
/// `IPv4 10.0.1.10 > 10.0.2.20 UDP 4000 > 5000, 60 bytes, DF`.
pub fn summarize(frame: &[u8]) -> String {
    let len = frame.len();
    if len < 14 {
        return format!("runt frame, {len} bytes");
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let l3 = &frame[14..];
    match ethertype {
        0x0800 if l3.len() >= 20 => {
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let proto = l3[9];
            let src = std::net::Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]);
            let dst = std::net::Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]);
            let frag = u16::from_be_bytes([l3[6], l3[7]]);
            let mut flags = String::new();
            if frag & 0x4000 != 0 {
                flags.push_str(", DF");
            }
            if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
                flags.push_str(&format!(
                    ", fragment offset {}{}",
                    (frag & 0x1fff) * 8,
                    if frag & 0x2000 != 0 { " MF" } else { "" }
                ));
            }
            let l4 = l3.get(ihl..).unwrap_or(&[]);
            format!("IPv4 {src} > {dst} {}, {len} bytes{flags}", l4_summary(proto, l4, frag & 0x1fff != 0))
        }
        0x86dd if l3.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&l3[8..24]);
            let src = std::net::Ipv6Addr::from(a);
            a.copy_from_slice(&l3[24..40]);
            let dst = std::net::Ipv6Addr::from(a);
            format!("IPv6 {src} > {dst} {}, {len} bytes", l4_summary(l3[6], &l3[40..], false))
        }
        0x0806 => format!("ARP, {len} bytes"),
        t => format!("ethertype 0x{t:04x}, {len} bytes"),
    }
}

fn l4_summary(proto: u8, l4: &[u8], later_fragment: bool) -> String {
    let ports = || (l4.len() >= 4).then(|| (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])));
    match proto {
        _ if later_fragment => format!("proto {proto}"),
        17 => ports().map_or("UDP (truncated)".into(), |(s, d)| format!("UDP {s} > {d}")),
        6 => ports().map_or("TCP (truncated)".into(), |(s, d)| format!("TCP {s} > {d}")),
        1 if l4.len() >= 2 => format!("ICMP type {} code {}", l4[0], l4[1]),
        58 if l4.len() >= 2 => format!("ICMPv6 type {} code {}", l4[0], l4[1]),
        50 if l4.len() >= 8 => format!(
            "ESP spi 0x{:08x} seq {}",
            u32::from_be_bytes([l4[0], l4[1], l4[2], l4[3]]),
            u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]])
        ),
        p => format!("proto {p}"),
    }
}

/// The IP packet of a frame with TTL / hop limit and the IPv4 header
/// checksum zeroed: what a router may change on the way.
fn routed_invariant(frame: &[u8]) -> Option<Vec<u8>> {
    let mut p = frame.get(14..)?.to_vec();
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            p[8] = 0;
            p[10] = 0;
            p[11] = 0;
        }
        6 if p.len() >= 40 => p[7] = 0,
        _ => return None,
    }
    Some(p)
}

/// How two captures relate (see [`compare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub arrived: usize,
    pub missing: usize,
    pub unexpected: usize,
}

/// Match received frames against sent ones, ignoring link layer, TTL and the
/// IPv4 header checksum (order-independent: reassembly may reorder).
pub fn compare(sent: &[Vec<u8>], received: &[Vec<u8>]) -> Comparison {
    let mut pool: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    for f in sent.iter().filter_map(|f| routed_invariant(f)) {
        *pool.entry(f).or_default() += 1;
    }
    let mut arrived = 0;
    let mut unexpected = 0;
    for f in received {
        match routed_invariant(f).and_then(|k| pool.get_mut(&k).filter(|n| **n > 0)) {
            Some(n) => {
                *n -= 1;
                arrived += 1;
            }
            None => unexpected += 1,
        }
    }
    Comparison { arrived, missing: sent.len() - arrived, unexpected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_requested_sizes_and_valid_ip_checksums() {
        for (i, f) in mixed_frames(50, 1).iter().enumerate() {
            assert!((60..=1514).contains(&f.len()));
            assert_eq!(csum(&f[14..34]), 0, "frame {i} header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([f[16], f[17]])), f.len() - 14);
        }
    }

    #[test]
    fn pcap_round_trip() {
        let dir = std::env::temp_dir().join(format!("espgw-traffic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pcap");
        let frames = mixed_frames(20, 2);
        write_pcap(&p, &frames).unwrap();
        assert_eq!(read_pcap(&p).unwrap(), frames);
        std::fs::write(&p, b"nonsense").unwrap();
        assert!(read_pcap(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summary_lines() {
        let mut r = Rng::new(1);
        let f = udp4_frame(100, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 7, true, &mut r);
        assert_eq!(summarize(&f), "IPv4 10.0.0.1 > 10.0.0.2 UDP 1 > 2, 100 bytes, DF");
        assert_eq!(summarize(&f[..10]), "runt frame, 10 bytes");
    }
}
