//! The real `espgw` binary doing IPsec over DPDK virtual devices, checked by
//! scapy's independent ESP implementation:
//! - outbound: cleartext in, ESP out; scapy reassembles and decrypts it;
//!   DF packets that do not fit are answered with ICMP carrying the tunnel MTU;
//! - inbound: ESP made by scapy in, the original cleartext out;
//! - two gateways back to back over net_memif, two workers each, both
//!   directions, with fragmentation and no false replay drops.

mod common;
use common::ipsec::*;
use common::*;

use std::process::Command;
use std::time::Duration;

#[test]
fn outbound_esp_is_decrypted_by_scapy_and_df_packets_get_icmp() {
    for alg in [&GCM128, &GCM256, &CBC128, &CHACHA] {
        let s = Scratch::new();
        let frames = traffic(240, 5, true, 2);
        write_frames(&s.path("in.pcap"), &frames);
        let empty = s.empty_pcap();
        let private = format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            s.path("in.pcap").display(),
            s.path("private-out.pcap").display()
        );
        let public = format!("net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), s.path("public-out.pcap").display());
        let cfg = s.config(&gw_config("out", alg, true, &private, &public, "[1]"));
        let run = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
        run.assert_ok();

        let n_refused = refused(&frames, alg.tunnel_mtu);
        assert!(n_refused > 10, "the traffic must exercise the DF path");
        let ev = &run.report()["events"];
        assert_eq!(ev["encrypted"], (frames.len() - n_refused) as u64, "{}", alg.name);
        assert!(ev["fragments_made"].as_u64().unwrap() > 0, "non-DF packets above the tunnel MTU are fragmented");
        assert_eq!(ev["icmp_too_big_sent"], n_refused as u64);
        assert_eq!(run.report()["drops"]["too_big_df"], n_refused as u64);

        // Every fragment fits the 1500-byte wire.
        let wire = read_frames(&s.path("public-out.pcap"));
        assert!(wire.iter().all(|f| f.len() - 14 <= 1500), "{}: a frame exceeds the MTU", alg.name);
        // scapy reassembles and decrypts everything A sent.
        let log = scapy("decrypt", &s.path("public-out.pcap"), &s.path("decrypted.pcap"), alg, 0x1001, A_IP, B_IP);
        let dec = read_frames(&s.path("decrypted.pcap"));
        let c = compare(&frames, &dec);
        assert_eq!((c.arrived, c.unexpected), (frames.len() - n_refused, 0), "{}: {log}", alg.name);

        // The ICMP errors: to the senders, with the exact tunnel MTU.
        let icmp = read_frames(&s.path("private-out.pcap"));
        assert_eq!(icmp.len(), n_refused);
        for f in &icmp {
            let ip = &f[14..];
            assert_eq!(ip[9], 1, "ICMP");
            assert_eq!(&ip[12..16], &[10, 0, 1, 254], "from the gateway's private address");
            assert_eq!((ip[20], ip[21]), (3, 4), "fragmentation needed");
            assert_eq!(u16::from_be_bytes([ip[26], ip[27]]) as usize, alg.tunnel_mtu, "{}", alg.name);
            assert_eq!(csum(&ip[20..]), 0, "ICMP checksum");
        }
    }
}

#[test]
fn inbound_esp_from_scapy_comes_out_as_the_original_cleartext() {
    for alg in [&GCM128, &CBC128, &CHACHA] {
        let s = Scratch::new();
        // What B's hosts sent, encrypted by scapy as if it were gateway B.
        let inner = traffic(150, 9, false, 0);
        write_frames(&s.path("inner.pcap"), &inner);
        scapy("encrypt", &s.path("inner.pcap"), &s.path("esp.pcap"), alg, 0x2001, B_IP, A_IP);
        let empty = s.empty_pcap();
        let private = format!("net_pcap0,rx_pcap={},tx_pcap={}", empty.display(), s.path("private-out.pcap").display());
        let public = format!(
            "net_pcap1,rx_pcap={},tx_pcap={}",
            s.path("esp.pcap").display(),
            s.path("public-out.pcap").display()
        );
        let cfg = s.config(&gw_config("in", alg, true, &private, &public, "[1]"));
        let run = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
        run.assert_ok();
        let out = read_frames(&s.path("private-out.pcap"));
        let c = compare(&inner, &out);
        assert_eq!((c.arrived, c.missing, c.unexpected), (inner.len(), 0, 0), "{}", alg.name);
        assert_eq!(run.report()["events"]["decrypted"], inner.len() as u64);
        // `auto` resolves to intel-ipsec-mb in the real binary (the fastest
        // measured), and to ring for ChaCha20-Poly1305 (not wired through the shim).
        let sa = run.report()["sas"].as_array().unwrap().iter().find(|s| s["name"] == "in").unwrap().clone();
        let want = if alg.name == CHACHA.name { "ring" } else { "ipsec-mb" };
        assert_eq!(sa["backend"], want, "{sa}");
        assert!(run.report()["drops"].as_object().unwrap().values().all(|v| v == 0), "{}", run.stdout);
        // Replayed into a restarted gateway: the replay window resumed from
        // the state file, so every packet is refused and counted.
        let run2 = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
        run2.assert_ok();
        let r2 = run2.report();
        assert_eq!(r2["events"]["decrypted"], 0, "a restart must not reopen the replay window");
        let replays =
            r2["drops"]["replay_duplicate"].as_u64().unwrap() + r2["drops"]["replay_too_old"].as_u64().unwrap();
        assert_eq!(replays, inner.len() as u64, "{}", run2.stdout);
    }
}

/// NAT traversal on the real binary (RFC 3948): A's SAs encapsulate in UDP.
/// Outbound ESP leaves in UDP 4500 → 4500 and scapy decrypts it; the tunnel
/// MTU announced to DF senders is 8 bytes smaller. Inbound, scapy's ESP in
/// UDP from a NAT'd port (31000) is decrypted, a NAT-keepalive is consumed
/// and counted, IKE behind the non-ESP marker is never forwarded, plain ESP
/// for the UDP SA is refused, and the SAs follow the peer to its new port.
#[test]
fn nat_traversal_udp_encapsulated_esp_both_ways() {
    let alg = &GCM128;
    let udp = |cfg: String| {
        cfg.replace(
            &format!("remote = \"{B_IP}\"\n"),
            &format!("remote = \"{B_IP}\"\nencap = \"udp\"\nnat_follow = true\n"),
        )
    };
    // Outbound.
    let s = Scratch::new();
    let frames = traffic(120, 21, true, 2);
    write_frames(&s.path("in.pcap"), &frames);
    let empty = s.empty_pcap();
    let private =
        format!("net_pcap0,rx_pcap={},tx_pcap={}", s.path("in.pcap").display(), s.path("private-out.pcap").display());
    let public = format!("net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), s.path("public-out.pcap").display());
    let cfg = s.config(&udp(gw_config("natt-out", alg, true, &private, &public, "[1]")));
    let run = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
    run.assert_ok();
    let tunnel_mtu = alg.tunnel_mtu - 8;
    let n_refused = refused(&frames, tunnel_mtu);
    assert_eq!(run.report()["events"]["encrypted"], (frames.len() - n_refused) as u64);
    let wire = read_frames(&s.path("public-out.pcap"));
    for f in &wire {
        let ip = &f[14..];
        assert!(ip.len() <= 1500);
        assert_eq!(ip[9], 17, "UDP");
        let first = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
        if first {
            assert_eq!(&ip[20..24], &[0x11, 0x94, 0x11, 0x94], "4500 -> 4500");
            assert_eq!(&ip[26..28], &[0, 0], "IPv4: UDP checksum 0");
        }
    }
    let log = scapy_with(
        "decrypt",
        &s.path("public-out.pcap"),
        &s.path("decrypted.pcap"),
        alg,
        0x1001,
        A_IP,
        B_IP,
        &["--nat-t", "4500:4500"],
    );
    let c = compare(&frames, &read_frames(&s.path("decrypted.pcap")));
    assert_eq!((c.arrived, c.unexpected), (frames.len() - n_refused, 0), "{log}");
    for f in &read_frames(&s.path("private-out.pcap")) {
        assert_eq!(u16::from_be_bytes([f[14 + 26], f[14 + 27]]) as usize, tunnel_mtu, "ICMP: the UDP tunnel MTU");
    }

    // Inbound, from behind a NAT that maps B's 4500 to 31000.
    let s = Scratch::new();
    let inner = traffic(60, 22, false, 0);
    write_frames(&s.path("inner.pcap"), &inner);
    scapy_with(
        "encrypt",
        &s.path("inner.pcap"),
        &s.path("esp.pcap"),
        alg,
        0x2001,
        B_IP,
        A_IP,
        &["--nat-t", "31000:4500"],
    );
    scapy("encrypt", &s.path("inner.pcap"), &s.path("plain.pcap"), alg, 0x2001, B_IP, A_IP);
    let udp_frame = |payload: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xcc, 8, 0];
        let total = 28 + payload.len();
        let mut ip =
            vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0, 0, 64, 17, 0, 0, 198, 51, 100, 1, 192, 0, 2, 1];
        let c = csum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x79, 0x18, 0x11, 0x94, 0, (8 + payload.len()) as u8, 0, 0]);
        f.extend_from_slice(payload);
        f
    };
    let mut wire = vec![udp_frame(&[0xff]), udp_frame(&[0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0])];
    wire.extend(read_frames(&s.path("esp.pcap")));
    wire.push(read_frames(&s.path("plain.pcap"))[0].clone());
    write_frames(&s.path("wire.pcap"), &wire);
    let empty = s.empty_pcap();
    let private = format!("net_pcap0,rx_pcap={},tx_pcap={}", empty.display(), s.path("private-out.pcap").display());
    let public =
        format!("net_pcap1,rx_pcap={},tx_pcap={}", s.path("wire.pcap").display(), s.path("public-out.pcap").display());
    let cfg = s.config(&udp(gw_config("natt-in", alg, true, &private, &public, "[1]")));
    let run = run_espgw(&s, &cfg, &["--stop-when-idle", "500"]);
    run.assert_ok();
    let r = run.report();
    let c = compare(&inner, &read_frames(&s.path("private-out.pcap")));
    assert_eq!((c.arrived, c.missing, c.unexpected), (inner.len(), 0, 0), "{}", run.stdout);
    assert_eq!(r["events"]["decrypted"], inner.len() as u64);
    assert_eq!(r["events"]["natt_keepalives"], 1);
    assert_eq!(r["drops"]["for_gateway"], 1, "IKE on 4500 is for the gateway, never forwarded");
    assert_eq!(r["drops"]["esp_encap_mismatch"], 1, "plain ESP for a UDP SA");
    assert!(r["events"]["nat_mapping_changed"].as_u64().unwrap() >= 1);
    assert!(read_frames(&s.path("public-out.pcap")).is_empty(), "nothing answered in clear");
    // Both SAs (nat_follow) now point at the peer's NAT'd port.
    for sa in r["sas"].as_array().unwrap() {
        assert_eq!((sa["remote"].as_str(), sa["remote_port"].as_u64()), (Some(B_IP), Some(31000)), "{sa}");
    }
}

/// Two espgw processes, A and B, connected by net_memif (A's public port is
/// the server, B's the client), two workers each with their own queues, one
/// SA per direction shared by both workers. Traffic both ways, including
/// packets that need fragmentation after encryption.
#[test]
fn two_gateways_back_to_back_over_memif_with_two_workers() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let sock = s.path("wire.sock");
    let a_in = [traffic(120, 1, true, 2), traffic(120, 2, true, 1)];
    let b_in = [traffic(120, 3, false, 1), traffic(120, 4, false, 0)];
    let pcaps = |who: &str, ins: &[Vec<Vec<u8>>; 2]| {
        for (i, f) in ins.iter().enumerate() {
            write_frames(&s.path(&format!("{who}-in{i}.pcap")), f);
        }
        format!(
            "net_pcap0,rx_pcap={},rx_pcap={},tx_pcap={},tx_pcap={}",
            s.path(&format!("{who}-in0.pcap")).display(),
            s.path(&format!("{who}-in1.pcap")).display(),
            s.path(&format!("{who}-out0.pcap")).display(),
            s.path(&format!("{who}-out1.pcap")).display()
        )
    };
    let a_cfg = gw_config(
        "memifA",
        &GCM128,
        true,
        &pcaps("a", &a_in),
        &format!("net_memif0,role=server,socket={}", sock.display()),
        "[0, 1]",
    );
    let b_cfg = gw_config(
        "memifB",
        &GCM128,
        false,
        &pcaps("b", &b_in),
        &format!("net_memif0,role=client,socket={}", sock.display()),
        "[0, 1]",
    );
    let a_path = s.path("a.toml");
    let b_path = s.path("b.toml");
    std::fs::write(&a_path, a_cfg).unwrap();
    std::fs::write(&b_path, b_cfg).unwrap();
    let args = ["--wait-link", "10000", "--stop-when-idle", "2000"];
    let (a, a_report) = spawn_espgw_named(&s, &a_path, "a.json", &args);
    std::thread::sleep(Duration::from_millis(200));
    let (b, b_report) = spawn_espgw_named(&s, &b_path, "b.json", &args);
    let ra = finish(a.wait_with_output().unwrap(), &a_report);
    let rb = finish(b.wait_with_output().unwrap(), &b_report);
    ra.assert_ok();
    rb.assert_ok();
    assert_eq!(ra.report()["workers"].as_array().unwrap().len(), 2);

    let all = |who: &str| -> Vec<Vec<u8>> {
        (0..2).flat_map(|i| read_frames(&s.path(&format!("{who}-out{i}.pcap")))).collect()
    };
    let sent_a: Vec<Vec<u8>> = a_in.concat();
    let sent_b: Vec<Vec<u8>> = b_in.concat();
    let (ref_a, ref_b) = (refused(&sent_a, GCM128.tunnel_mtu), refused(&sent_b, GCM128.tunnel_mtu));
    // A → B: everything but the refused DF packets arrives, byte-exact (TTL aside).
    let at_b = all("b");
    let c = compare(&sent_a, &at_b);
    assert_eq!(c.arrived, sent_a.len() - ref_a, "A→B\nA: {}\nB: {}", ra.stdout, rb.stdout);
    // B → A, likewise; A's private side also carries its own ICMP errors.
    let at_a = all("a");
    let c = compare(&sent_b, &at_a);
    assert_eq!(c.arrived, sent_b.len() - ref_b, "B→A\nA: {}\nB: {}", ra.stdout, rb.stdout);
    assert_eq!(c.unexpected, ref_a, "the rest of A's private output is A's ICMP errors");
    for r in [&ra, &rb] {
        let d = &r.report()["drops"];
        assert_eq!(d["replay_duplicate"], 0, "no false replay drops with two workers");
        assert_eq!(d["replay_too_old"], 0);
        assert_eq!(d["tx_refused"], 0);
        assert!(r.report()["events"]["fragments_made"].as_u64().unwrap() > 0);
        assert!(r.report()["events"]["reassembled"].as_u64().unwrap() > 0);
    }
    // Both workers of both gateways carried traffic.
    for r in [&ra, &rb] {
        for w in r.report()["workers"].as_array().unwrap() {
            assert!(w["rx_packets"].as_u64().unwrap() > 0, "{}", r.stdout);
        }
    }
}

/// dpdk-testpmd (txonly, over net_memif) drives gateway A for a few seconds
/// at full speed; A encrypts into a net_null sink. Nothing is dropped that is
/// not counted: packets in = packets encrypted + counted drops, and what was
/// encrypted left on the protected port.
#[test]
fn testpmd_drives_the_gateway_and_counters_add_up() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let sock = s.path("gen.sock");
    let alg = &GCM128;
    let cfg = format!(
        r#"
[eal]
{eal}
[mempool]
mbufs = 8191
[workers]
cores = [1]
[[port]]
name = "private"
device = "net_memif0,role=server,socket={sock}"
role = "cleartext"
addresses = ["198.18.0.254"]
[[port]]
name = "public"
device = "net_null1,no-rx=1"
role = "protected"
peer_mac = "02:00:00:00:00:98"
[[sa]]
name = "out"
direction = "out"
spi = 0x1001
algorithm = "{alg}"
enc_key = "{ek}"
mode = "tunnel"
local = "{a}"
remote = "{b}"
[[eroute]]
name = "gen"
src = "198.18.0.0/16"
dst = "198.18.0.0/16"
proto = "udp"
action = "protect"
sa = "out"
[[route]]
prefix = "0.0.0.0/0"
port = "public"
via = "{b}"
"#,
        eal = eal_args_toml("testpmd").replace("\"256\"", "\"512\""),
        sock = sock.display(),
        alg = alg.name,
        ek = alg.enc_key,
        a = A_IP,
        b = B_IP,
    );
    let cfg = s.config(&cfg);
    let (gw, report) = spawn_espgw(&s, &cfg, &["--duration", "60"]);
    std::thread::sleep(Duration::from_millis(500));
    let gen = Command::new("timeout")
        .args(["-s", "INT", "4", "dpdk-testpmd", "--no-pci", "--no-huge", "-m", "512", "-l", "0,1"])
        .arg(format!("--file-prefix={}", file_prefix("testpmd-gen")))
        .arg(format!("--vdev=net_memif0,role=client,socket={}", sock.display()))
        .args([
            "--log-level",
            "*:error",
            "--",
            "--total-num-mbufs=8192",
            "--forward-mode=txonly",
            "--txpkts=64",
            "--stats-period",
            "1",
            "-a",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("dpdk-testpmd (Debian package dpdk)");
    let gen_out = String::from_utf8_lossy(&gen.stdout);
    // The generator is done: stop the gateway the way an operator would.
    std::thread::sleep(Duration::from_millis(300));
    let run = stop_espgw(gw, &report);
    assert_eq!(run.report()["stop_cause"], "signal");
    run.assert_ok();
    let r = run.report();
    let rx = r["ports"][0]["rx_packets"].as_u64().unwrap();
    let encrypted = r["events"]["encrypted"].as_u64().unwrap();
    let drops: u64 = r["drops"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert!(rx > 10_000, "testpmd must have driven real load (rx {rx})\n{gen_out}\n{}", run.stdout);
    assert_eq!(rx, encrypted + drops, "in = encrypted + counted drops\n{}", run.stdout);
    assert_eq!(
        r["ports"][1]["tx_packets"].as_u64().unwrap(),
        encrypted,
        "everything encrypted left the protected port"
    );
    assert_eq!(drops, 0, "no drops expected with a sink that takes everything\n{}", run.stdout);
    // The SA saw exactly those packets, with unique sequence numbers 1..=n.
    let sa = r["sas"].as_array().unwrap().iter().find(|s| s["name"] == "out").unwrap();
    assert_eq!(sa["packets"].as_u64().unwrap(), encrypted);
}

/// A Linux host in its own network namespace, behind a veth pair whose other
/// end is the gateway's cleartext port (net_af_packet). The host's kernel
/// must resolve the gateway's address by ARP (answered by espgw, which learns
/// the host in turn), then its UDP datagrams come out of the protected port
/// as ESP that scapy decrypts back to exactly what the host sent.
#[test]
fn linux_host_on_a_veth_talks_through_af_packet() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let tag = format!("{}", std::process::id() % 100_000);
    let (ns, gw_if, host_if) = (format!("espgw-{tag}"), format!("eg{tag}"), format!("eh{tag}"));
    let sh = |args: &[&str]| {
        let st = Command::new(args[0]).args(&args[1..]).status().unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(st.success(), "{args:?} failed");
    };
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.1]).status();
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone(), gw_if.clone());
    sh(&["ip", "netns", "add", &ns]);
    sh(&["ip", "link", "add", &gw_if, "type", "veth", "peer", "name", &host_if]);
    sh(&["ip", "link", "set", &host_if, "netns", &ns]);
    sh(&["ip", "link", "set", &gw_if, "up"]);
    sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &host_if, "up"]);
    sh(&["ip", "netns", "exec", &ns, "ip", "addr", "add", "10.0.1.5/24", "dev", &host_if]);
    sh(&["ip", "netns", "exec", &ns, "ip", "route", "add", "10.0.2.0/24", "via", "10.0.1.254"]);

    let empty = s.empty_pcap();
    let private = format!("net_af_packet0,iface={gw_if},qpairs=1");
    let public = format!("net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), s.path("public-out.pcap").display());
    let mut cfg = gw_config("afpacket", &GCM128, true, &private, &public, "[1]");
    cfg = cfg.replace("peer_mac = \"02:00:00:00:00:99\"\n", ""); // learn the host instead
    cfg = cfg.replace("mtu = 9000", "mtu = 1500");
    let cfg_path = s.config(&cfg);
    let (gw, report) = spawn_espgw(&s, &cfg_path, &["--wait-link", "5000", "--duration", "60"]);
    std::thread::sleep(Duration::from_millis(1500));
    // The host sends 20 datagrams of growing size to 10.0.2.7.
    let sent = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c"])
        .arg(
            "import socket,time\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for i in range(20):\n\
             \x20   s.sendto(bytes([i])*(50+i*60),('10.0.2.7',5000+i)); time.sleep(0.02)\n",
        )
        .status()
        .unwrap();
    assert!(sent.success());
    std::thread::sleep(Duration::from_millis(500));
    let run = stop_espgw(gw, &report);
    run.assert_ok();
    let ev = &run.report()["events"];
    assert!(ev["neighbor_replies"].as_u64().unwrap() >= 1, "espgw answered the host's ARP\n{}", run.stdout);
    assert!(ev["neighbors_learned"].as_u64().unwrap() >= 1);
    assert_eq!(ev["encrypted"], 20, "{}", run.stdout);
    // What went out is ESP that scapy decrypts to the host's datagrams.
    scapy("decrypt", &s.path("public-out.pcap"), &s.path("dec.pcap"), &GCM128, 0x1001, A_IP, B_IP);
    let dec = read_frames(&s.path("dec.pcap"));
    assert_eq!(dec.len(), 20);
    for (i, f) in dec.iter().enumerate() {
        let ip = &f[14..];
        assert_eq!(&ip[12..20], &[10, 0, 1, 5, 10, 0, 2, 7]);
        assert_eq!(ip[8], 63, "TTL 64 from the host, minus our hop");
        assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), 5000 + i as u16);
        assert_eq!(&ip[28..], &vec![i as u8; 50 + i * 60][..], "datagram {i} intact");
    }
}
