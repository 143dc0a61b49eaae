//! Issue 12 on the real binary over DPDK virtual devices: what a hostile peer
//! sends and what a careless operator does must not break the gateway's
//! promises.
//! - malformed and hostile cleartext (bad checksums, fragments past 64 KiB,
//!   traffic for the gateway) is dropped under its own reasons; nothing of
//!   it is encrypted or reflected;
//! - a flood of never-completing fragments from hundreds of sources leaves
//!   the mbuf pool alone: all good traffic (whole and fragmented ESP) arrives
//!   during and after it, and the NIC never runs out of RX buffers;
//! - a restart with the same config never repeats a sequence number (the
//!   GCM IV) under the same key.

mod common;
use common::ipsec::*;
use common::*;

/// A frame with its IPv4 header changed by `f`, checksum fixed afterwards
/// unless `f` breaks it on purpose (it runs last then).
fn edit(frame: &[u8], f: impl FnOnce(&mut [u8]), fix: bool) -> Vec<u8> {
    let mut v = frame.to_vec();
    f(&mut v[14..]);
    if fix {
        v[24] = 0;
        v[25] = 0;
        let c = csum(&v[14..34]);
        v[24..26].copy_from_slice(&c.to_be_bytes());
    }
    v
}

fn esp_seqs(frames: &[Vec<u8>]) -> Vec<(u32, u32)> {
    frames
        .iter()
        .filter(|f| f.len() > 14 + 28 && f[12..14] == [0x08, 0x00] && f[14 + 9] == 50)
        .filter(|f| u16::from_be_bytes([f[20], f[21]]) & 0x1fff == 0) // first pieces carry the ESP header
        .map(|f| (u32::from_be_bytes(f[34..38].try_into().unwrap()), u32::from_be_bytes(f[38..42].try_into().unwrap())))
        .collect()
}

#[test]
fn hostile_cleartext_is_dropped_by_reason_never_encrypted_or_reflected() {
    let s = Scratch::new();
    let good = traffic(120, 11, true, 0);
    let mut frames = good.clone();
    let mut rng = Rng::new(3);
    let base = udp4_frame(200, [10, 0, 1, 10], [10, 0, 2, 20], 1, 2, 9, false, &mut rng);
    // 10 with a wrong header checksum.
    for i in 0..10u8 {
        frames.push(edit(&base, |ip| ip[10] ^= 1 + i, false));
    }
    // 5 fragments that would reach past 65 535 bytes (offset 65512, 166 bytes).
    for i in 0..5u16 {
        frames.push(edit(&base, |ip| ip[4..8].copy_from_slice(&[0, i as u8, 0x1f, 0xfd]), true));
    }
    // 5 packets for the gateway's own cleartext address.
    for _ in 0..5 {
        frames.push(edit(&base, |ip| ip[16..20].copy_from_slice(&[10, 0, 1, 254]), true));
    }
    write_frames(&s.path("in.pcap"), &frames);
    let empty = s.empty_pcap();
    let private =
        format!("net_pcap0,rx_pcap={},tx_pcap={}", s.path("in.pcap").display(), s.path("private-out.pcap").display());
    let public = format!("net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), s.path("public-out.pcap").display());
    let cfg = s.config(&gw_config("hostile", &GCM128, true, &private, &public, "[1]"));
    let run = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
    run.assert_ok();
    let r = run.report();
    assert_eq!(r["drops"]["bad_ip_checksum"], 10, "{}", run.stdout);
    assert_eq!(r["drops"]["bad_fragment"], 5, "{}", run.stdout);
    assert_eq!(r["drops"]["for_gateway"], 5, "{}", run.stdout);
    let refused = refused(&good, GCM128.tunnel_mtu) as u64;
    assert_eq!(r["events"]["encrypted"].as_u64().unwrap(), good.len() as u64 - refused, "only the good traffic");
    // Everything on the public side is ESP: nothing hostile left in clear.
    let public_out = read_frames(&s.path("public-out.pcap"));
    assert!(!public_out.is_empty());
    assert!(public_out.iter().all(|f| f[14 + 9] == 50), "only ESP leaves the protected port");
    // The private side got ICMP answers for the DF refusals, nothing else.
    let private_out = read_frames(&s.path("private-out.pcap"));
    assert_eq!(private_out.len() as u64, refused);
    assert!(private_out.iter().all(|f| f[14 + 9] == 1));
}

/// Issue 12's flood: 20 034 never-completing 8-byte fragments from 318
/// sources on the protected port, with good ESP (whole and fragmented)
/// before, among and after them, on the default pool of 16 383 mbufs.
#[test]
fn a_fragment_flood_never_drains_the_pool() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    // Good traffic, encrypted by gateway A (big packets fragmented after encryption).
    let inner = traffic(300, 21, true, 40);
    write_frames(&s.path("inner.pcap"), &inner);
    let empty = s.empty_pcap();
    let a_private =
        format!("net_pcap0,rx_pcap={},tx_pcap={}", s.path("inner.pcap").display(), s.path("a-icmp.pcap").display());
    let a_public = format!("net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), s.path("esp.pcap").display());
    let a_cfg = s.path("a.toml");
    std::fs::write(&a_cfg, gw_config("flood-a", &GCM128, true, &a_private, &a_public, "[1]")).unwrap();
    run_espgw(&s, &a_cfg, &["--stop-when-idle", "300"]).assert_ok();
    let esp = read_frames(&s.path("esp.pcap"));
    let fragmented = esp.iter().filter(|f| u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0).count();
    assert!(fragmented >= 80, "good traffic includes fragmented ESP ({fragmented})");
    // The flood: 318 sources, each sending 63 different 8-byte pieces of one
    // datagram that never completes (no last fragment) — 20 034 fragments
    // that an unbounded table would hold all at once, more than the pool has.
    let mut rng = Rng::new(5);
    let mut flood = Vec::with_capacity(20_034);
    for i in 0..20_034u32 {
        let (source, piece) = (i % 318, (i / 318) as u16);
        let src = [198, 18, (source / 256) as u8, (source % 256) as u8];
        let f = udp4_frame(14 + 28, src, [198, 51, 100, 1], 1, 2, 7, false, &mut rng);
        flood.push(edit(&f, |ip| ip[6..8].copy_from_slice(&(0x2000 | piece).to_be_bytes()), true));
    }
    // Good traffic before, among (one frame every ~60 flood fragments, in
    // order) and after the flood.
    let (before, rest) = esp.split_at(esp.len() / 4);
    let (among, after) = rest.split_at(rest.len() / 2);
    let mut wire: Vec<Vec<u8>> = before.to_vec();
    let every = (flood.len() / among.len().max(1)).max(1);
    let mut good = among.iter();
    for (i, f) in flood.into_iter().enumerate() {
        wire.push(f);
        if i % every == every - 1 {
            if let Some(g) = good.next() {
                wire.push(g.clone());
            }
        }
    }
    wire.extend(good.cloned());
    wire.extend(after.iter().cloned());
    write_frames(&s.path("wire.pcap"), &wire);
    // Gateway B, default pool (16 383 mbufs of 2 176 bytes): no [mempool] section.
    let b_private = format!("net_pcap0,rx_pcap={},tx_pcap={}", empty.display(), s.path("delivered.pcap").display());
    let b_public =
        format!("net_pcap1,rx_pcap={},tx_pcap={}", s.path("wire.pcap").display(), s.path("b-public.pcap").display());
    let b_text = gw_config("flood-b", &GCM128, false, &b_private, &b_public, "[1]")
        .replace("[mempool]\nmbufs = 4095\ndata_room = 10368\n", "");
    let b_cfg = s.path("b.toml");
    std::fs::write(&b_cfg, b_text).unwrap();
    let run = run_espgw(&s, &b_cfg, &["--stop-when-idle", "500"]);
    run.assert_ok();
    let r = run.report();
    let delivered = read_frames(&s.path("delivered.pcap"));
    let expected: Vec<Vec<u8>> = {
        let refused = inner.iter().filter(|f| f[20] & 0x40 != 0 && f.len() - 14 > GCM128.tunnel_mtu).count();
        assert!(refused > 0);
        inner.iter().filter(|f| !(f[20] & 0x40 != 0 && f.len() - 14 > GCM128.tunnel_mtu)).cloned().collect()
    };
    let c = compare(&expected, &delivered);
    assert_eq!((c.arrived, c.missing, c.unexpected), (expected.len(), 0, 0), "100 % of good traffic\n{}", run.stdout);
    let public = &r["ports"][1];
    assert_eq!(public["hw"]["rx_nombuf"], 0, "the NIC always found buffers\n{}", run.stdout);
    let flood_dropped: u64 = ["reasm_evicted", "reasm_source_limit", "reasm_at_exit", "reasm_timeout"]
        .iter()
        .map(|k| r["drops"][k].as_u64().unwrap())
        .sum();
    assert_eq!(flood_dropped, 20_034, "every flood fragment accounted for\n{}", run.stdout);
    assert_eq!(r["mbufs_in_use"], 0);
}

/// A restart with the same config and keys continues the sequence numbers
/// (the GCM IVs) past everything the first run may have used.
#[test]
fn a_restart_never_repeats_a_sequence_number() {
    let s = Scratch::new();
    let frames = traffic(200, 31, true, 0);
    write_frames(&s.path("in.pcap"), &frames);
    let empty = s.empty_pcap();
    let mut seen = Vec::new();
    for run_no in 0..2 {
        let out = s.path(&format!("public-{run_no}.pcap"));
        let private = format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            s.path("in.pcap").display(),
            s.path("private-out.pcap").display()
        );
        let public = format!("net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), out.display());
        let cfg = s.config(&gw_config("restart", &GCM128, true, &private, &public, "[1]"));
        run_espgw(&s, &cfg, &["--stop-when-idle", "300"]).assert_ok();
        let seqs = esp_seqs(&read_frames(&out));
        assert!(seqs.len() > 100);
        seen.push(seqs);
    }
    let first_max = seen[0].iter().map(|x| x.1).max().unwrap();
    let second_min = seen[1].iter().map(|x| x.1).min().unwrap();
    assert!(second_min > first_max, "the second run starts after the first run's lease ({second_min} <= {first_max})");
    let mut all: Vec<(u32, u32)> = seen.concat();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "no (SPI, sequence) pair twice across the restart");
    let state = std::fs::read_to_string(s.path("espgw.state")).unwrap();
    assert!(state.starts_with("espgw-state v1"), "{state}");
}
