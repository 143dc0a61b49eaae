//! The host path on the real binary: espgw runs in a network namespace with
//! a `net_tap` host port; a peer namespace reaches it over a veth
//! (`net_af_packet`). Kernel processes behind the tap answer ping, a UDP
//! echo and an IKE-like responder on UDP 500 from the peer; the IKE answer
//! leaves in clear although an eroute protects everything else between the
//! gateway and that peer; transport-mode ESP from the peer is decrypted and
//! delivered to a local UDP socket.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const KEY_IN: &str = "202122232425262728292a2b2c2d2e2f30313233";
const KEY_OUT: &str = "404142434445464748494a4b4c4d4e4f50515253";

struct Netns(Vec<String>);
impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn peer_script() -> String {
    format!("{}/../tests/py/host_peer.py", env!("CARGO_MANIFEST_DIR"))
}

/// Run host_peer.py in `ns`; its JSON output, or the failure.
fn in_ns(ns: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", &peer_script()])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(Value::Null))
}

#[test]
fn kernel_behind_the_tap_answers_ping_udp_and_ike_and_gets_transport_esp() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let tag = format!("{}", std::process::id() % 100_000);
    let (gw_ns, peer_ns) = (format!("eg-gw-{tag}"), format!("eg-peer-{tag}"));
    let (gw_if, peer_if, tap_if) = (format!("gp{tag}"), format!("pp{tag}"), format!("eg{tag}"));
    let _ns = Netns(vec![gw_ns.clone(), peer_ns.clone()]);
    sh(&["ip", "netns", "add", &gw_ns]);
    sh(&["ip", "netns", "add", &peer_ns]);
    sh(&["ip", "link", "add", &gw_if, "netns", &gw_ns, "type", "veth", "peer", "name", &peer_if, "netns", &peer_ns]);
    for (ns, dev) in [(&gw_ns, "lo"), (&gw_ns, gw_if.as_str()), (&peer_ns, "lo"), (&peer_ns, peer_if.as_str())] {
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
    // The gateway's kernel must not see the veth's traffic itself (a NIC
    // under DPDK is invisible to it): espgw answers ARP with a MAC of its
    // own (the kernel drops frames for other MACs) and the kernel never
    // answers ARP on that interface.
    sh(&["ip", "netns", "exec", &gw_ns, "sysctl", "-qw", &format!("net.ipv4.conf.{gw_if}.arp_ignore=8")]);
    // The peer's kernel leaves UDP checksums for the veth to fill in
    // (CHECKSUM_PARTIAL); af_packet hands them over unfilled, which no real
    // NIC does: the offload goes off.
    sh(&["ip", "netns", "exec", &peer_ns, "ethtool", "-K", &peer_if, "tx", "off"]);
    // The peer: .2 is the IPsec peer (an eroute protects the gateway's
    // traffic to it, IKE aside), .3 a plain host.
    sh(&["ip", "-n", &peer_ns, "addr", "add", "192.0.2.2/24", "dev", &peer_if]);
    sh(&["ip", "-n", &peer_ns, "addr", "add", "192.0.2.3/24", "dev", &peer_if]);

    let cfg = format!(
        r#"
[eal]
{eal}
[mempool]
mbufs = 4095
[workers]
cores = [1]
idle_sleep_us = 20
[policy]
default_outbound = "drop"
default_inbound_clear = "drop"
[[port]]
name = "private"
device = "net_null0,no-rx=1"
role = "cleartext"
addresses = ["10.0.1.254"]
[[port]]
name = "public"
device = "net_af_packet0,iface={gw_if},qpairs=1"
role = "protected"
mtu = 1500
mac = "02:00:00:00:0a:01"
addresses = ["192.0.2.1"]
[[port]]
name = "host"
device = "net_tap0,iface={tap_if}"
role = "host"
host_rate = 1000
[[sa]]
name = "to-peer"
direction = "out"
spi = 0x7002
algorithm = "aes128-gcm16"
enc_key = "{KEY_OUT}"
mode = "transport"
[[sa]]
name = "from-peer"
direction = "in"
spi = 0x7001
algorithm = "aes128-gcm16"
enc_key = "{KEY_IN}"
mode = "transport"
src = "192.0.2.2/32"
dst = "192.0.2.1/32"
proto = "udp"
[[eroute]]
name = "gw-peer"
src = "192.0.2.1/32"
dst = "192.0.2.2/32"
action = "protect"
sa = "to-peer"
[[route]]
prefix = "192.0.2.0/24"
port = "public"
"#,
        eal = eal_args_toml("host").replace("\"256\"", "\"512\""),
    );
    let cfg_path = s.config(&cfg);
    let report = s.path("report.json");
    let gw = spawn_espgw_in_netns(&s, &gw_ns, &cfg_path, &report, 60);
    // Wait for the kernel side: the tap has the gateway's address.
    let mut up = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let o = Command::new("ip").args(["-n", &gw_ns, "-4", "addr", "show", "dev", &tap_if]).output().unwrap();
        if String::from_utf8_lossy(&o.stdout).contains("192.0.2.1/32") {
            up = true;
            break;
        }
    }
    let rules = Command::new("ip").args(["-n", &gw_ns, "rule", "show"]).output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).to_string();
    // The kernel's sockets on the gateway's address.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &gw_ns, "python3", &peer_script(), "serve", "192.0.2.1", "8"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = lines.next().map(|l| l.unwrap_or_default()).unwrap_or_default();

    let ping = in_ns(&peer_ns, &["ping", "192.0.2.3", "192.0.2.1"]);
    let echo = in_ns(&peer_ns, &["udp", "192.0.2.3", "40000", "192.0.2.1", "7", "echo through the tap"]);
    let ike = in_ns(&peer_ns, &["udp", "192.0.2.2", "500", "192.0.2.1", "500", "SA_INIT"]);
    let esp = (1..=3)
        .map(|seq| {
            in_ns(
                &peer_ns,
                &["esp", "192.0.2.2", "192.0.2.1", "0x7001", KEY_IN, &seq.to_string(), "sealed for the gateway"],
            )
        })
        .collect::<Result<Vec<_>, _>>();
    let sink: Value = lines
        .map_while(Result::ok)
        .find_map(|l| serde_json::from_str::<Value>(&l).ok().filter(|v| v.get("sink").is_some()))
        .unwrap_or(Value::Null);
    let _ = server.wait();
    let run = stop_espgw(gw, &report);
    assert!(up, "the kernel interface never got 192.0.2.1\n{}\n{}", run.stdout, run.stderr);
    assert!(rules.contains("from 192.0.2.1 lookup 4500"), "policy rule: {rules}");
    assert!(ready.contains("ready"), "{ready}");
    run.assert_ok();
    let r = run.report();
    let ctx = format!("\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(ping.clone().map(|v| v["reply_from"].clone()), Ok(Value::from("192.0.2.1")), "ping {ping:?}{ctx}");
    let echo = echo.unwrap_or_else(|e| panic!("UDP echo: {e}{ctx}"));
    assert_eq!((echo["from"].as_str(), echo["payload"].as_str()), (Some("192.0.2.1"), Some("echo through the tap")));
    let ike = ike.unwrap_or_else(|e| panic!("IKE: {e}{ctx}"));
    assert_eq!(ike["payload"], "IKE-RESPSA_INIT", "the IKE answer left in clear despite the eroute");
    esp.unwrap_or_else(|e| panic!("ESP: {e}{ctx}"));
    let got = sink["sink"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), 3, "decrypted transport ESP reached the local socket: {sink}{ctx}");
    for g in &got {
        assert_eq!((g["from"].as_str(), g["payload"].as_str()), (Some("192.0.2.2"), Some("sealed for the gateway")));
    }
    let ev = &r["events"];
    assert!(ev["to_host_icmp"].as_u64().unwrap() >= 1, "{ctx}");
    assert!(ev["to_host_ike"].as_u64().unwrap() >= 1);
    assert_eq!(ev["to_host_decrypted"], 3);
    assert!(ev["from_host"].as_u64().unwrap() >= 3, "the kernel's answers came back through espgw");
    assert_eq!(ev["encrypted"], 0, "nothing the kernel sent the peer needed the SA: {ev}");
    assert_eq!(r["drops"]["host_bad_source"], 0, "{}", r["drops"]);
    assert!(ev["neighbor_replies"].as_u64().unwrap() >= 2, "espgw answered both the peer's and the kernel's ARP");
    // The rule is gone when espgw is.
    let rules = Command::new("ip").args(["-n", &gw_ns, "rule", "show"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("lookup 4500"), "policy rules removed at exit");
}
