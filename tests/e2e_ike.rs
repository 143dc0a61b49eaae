//! IKEv2 on the real binary against strongSwan 5.9 (issue 19).
//!
//! Three namespaces joined by two veths:
//!
//! ```text
//!  host ns 10.0.1.2 ── veth ── [private | espgw | public] ── veth ── charon ns 203.0.113.2
//!                      net_af_packet  10.0.1.254  203.0.113.1          (10.0.2.1 behind it)
//! ```
//!
//! espgw negotiates with charon (kernel-libipsec: ESP in UDP 4500 in user
//! space) through its control thread; IKE reaches it from the workers over
//! the IKE queues, never through a kernel. Pings and a TCP transfer from
//! the host namespace to 10.0.2.1 then cross the tunnel both ways.

mod common;
#[path = "../control/src/ike/test_pki.rs"]
#[allow(dead_code)]
mod test_pki;
use common::strongswan::Charon;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn traffic_script() -> String {
    format!("{}/../tests/py/tunnel_traffic.py", env!("CARGO_MANIFEST_DIR"))
}

/// espgw, killed if a test fails before stopping it.
struct Gw(Option<Child>);

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Stop espgw as an operator would and collect its run.
fn stop(mut gw: Gw, report: &std::path::Path) -> Run {
    stop_espgw(gw.0.take().expect("running"), report)
}

/// The three namespaces (removed, with their veths, on drop).
struct Lab {
    tag: String,
    gw: String,
    host: String,
    peer: String,
    public_if: String,
    private_if: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.gw, &self.host, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new(test: &str) -> Lab {
        let tag = format!("{}{test}", std::process::id() % 100_000);
        let lab = Lab {
            gw: format!("ig-gw-{tag}"),
            host: format!("ig-h-{tag}"),
            peer: format!("ig-ss-{tag}"),
            public_if: format!("ip{tag}"),
            private_if: format!("ic{tag}"),
            tag,
        };
        let (peer_if, host_if) = (format!("sp{}", lab.tag), format!("hc{}", lab.tag));
        for ns in [&lab.gw, &lab.host, &lab.peer] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let veth = |a: &str, ans: &str, b: &str, bns: &str| {
            sh(&["ip", "link", "add", a, "netns", ans, "type", "veth", "peer", "name", b, "netns", bns]);
            sh(&["ip", "-n", ans, "link", "set", a, "up"]);
            sh(&["ip", "-n", bns, "link", "set", b, "up"]);
        };
        veth(&lab.public_if, &lab.gw, &peer_if, &lab.peer);
        veth(&lab.private_if, &lab.gw, &host_if, &lab.host);
        // The gateway's kernel stays out of the veths espgw drives (as with
        // a NIC under DPDK): espgw answers ARP with MACs of its own.
        for i in [&lab.public_if, &lab.private_if] {
            sh(&["ip", "netns", "exec", &lab.gw, "sysctl", "-qw", &format!("net.ipv4.conf.{i}.arp_ignore=8")]);
        }
        // af_packet hands over CHECKSUM_PARTIAL packets unfilled, which no
        // real NIC does: the peers' checksum offload goes off.
        sh(&["ip", "netns", "exec", &lab.peer, "ethtool", "-K", &peer_if, "tx", "off"]);
        sh(&["ip", "netns", "exec", &lab.host, "ethtool", "-K", &host_if, "tx", "off"]);
        sh(&["ip", "-n", &lab.peer, "addr", "add", "203.0.113.2/24", "dev", &peer_if]);
        sh(&["ip", "-n", &lab.peer, "addr", "add", "10.0.2.1/24", "dev", "lo"]);
        sh(&["ip", "-n", &lab.host, "addr", "add", "10.0.1.2/24", "dev", &host_if]);
        sh(&["ip", "-n", &lab.host, "route", "add", "default", "via", "10.0.1.254"]);
        lab
    }

    /// charon as east.example, PSK `psk`, child `net` 10.0.2.0/24 <-> 10.0.1.0/24;
    /// `conn_extra` goes into the connection, `child_extra` into the child
    /// section (e.g. a rekey_time).
    fn charon(&self, psk: &str, conn_extra: &str, child_extra: &str) -> Charon {
        self.charon_edited(psk, conn_extra, child_extra, &[])
    }

    /// [`Self::charon`] with text replacements in its swanctl.conf (another
    /// identity, other proposals).
    fn charon_edited(&self, psk: &str, conn_extra: &str, child_extra: &str, edits: &[(&str, &str)]) -> Charon {
        self.charon_with_creds(psk, conn_extra, child_extra, edits, &[])
    }

    /// [`Self::charon_edited`] with credential files for its swanctl directory.
    fn charon_with_creds(
        &self,
        psk: &str,
        conn_extra: &str,
        child_extra: &str,
        edits: &[(&str, &str)],
        creds: &[(&str, &str, &str)],
    ) -> Charon {
        let mut conf = format!(
            "connections {{ espgw {{\n local_addrs = 203.0.113.2\n remote_addrs = 203.0.113.1\n\
                 proposals = aes128gcm16-prfsha256-x25519\n dpd_delay = 2s\n {conn_extra}\n\
                 local {{ auth = psk\n id = east.example }}\n remote {{ auth = psk\n id = west.example }}\n\
                 children {{ net {{ local_ts = 10.0.2.0/24\n remote_ts = 10.0.1.0/24\n esp_proposals = aes128gcm16\n\
                 {child_extra}\n }} }} }} }}\n\
                 secrets {{ ike-1 {{ id-1 = west.example\n id-2 = east.example\n secret = \"{psk}\" }} }}\n"
        );
        for (from, to) in edits {
            conf = conf.replace(from, to);
        }
        Charon::start_with_creds(&self.peer, &conf, creds)
    }

    /// espgw in the gateway namespace with one `[[connection]]` (`extra` appended to it).
    fn espgw(&self, s: &Scratch, psk: &str, extra: &str) -> (Gw, std::path::PathBuf) {
        let auth = format!("local_id = \"west.example\"\nremote_id = \"east.example\"\npsk = \"{psk}\"");
        self.espgw_auth(s, &auth, extra)
    }

    /// [`Self::espgw`] with `auth` (identities, psk or cert lines) for the connection.
    fn espgw_auth(&self, s: &Scratch, auth: &str, extra: &str) -> (Gw, std::path::PathBuf) {
        let cfg = format!(
            r#"
[eal]
{eal}
[mempool]
mbufs = 4095
[workers]
cores = [1]
idle_sleep_us = 20
[control]
socket = "api.sock"
[policy]
default_outbound = "drop"
default_inbound_clear = "drop"
[[port]]
name = "private"
device = "net_af_packet0,iface={private},qpairs=1"
role = "cleartext"
mtu = 1500
mac = "02:00:00:00:0b:01"
addresses = ["10.0.1.254"]
[[port]]
name = "public"
device = "net_af_packet1,iface={public},qpairs=1"
role = "protected"
mtu = 1500
mac = "02:00:00:00:0a:01"
addresses = ["203.0.113.1"]
[[route]]
prefix = "10.0.1.0/24"
port = "private"
[[route]]
prefix = "203.0.113.0/24"
port = "public"
[[connection]]
name = "east"
local = "203.0.113.1"
remote = "203.0.113.2"
{auth}
local_ts = ["10.0.1.0/24"]
remote_ts = ["10.0.2.0/24"]
dpd_seconds = 2
{extra}
"#,
            eal = eal_args_toml(&format!("ike{}", self.tag)),
            private = self.private_if,
            public = self.public_if,
        );
        let cfg_path = s.config(&cfg);
        let report = s.path("report.json");
        (Gw(Some(spawn_espgw_in_netns(s, &self.gw, &cfg_path, &report, 120))), report)
    }

    /// Run tunnel_traffic.py in `ns`: its JSON line, or what went wrong.
    fn traffic(&self, ns: &str, args: &[&str]) -> Result<Value, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "python3", &traffic_script()])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(format!("{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr)));
        }
        serde_json::from_str(text.lines().last().unwrap_or("null")).map_err(|e| format!("{e}: {text}"))
    }

    /// Pings from the host namespace to 10.0.2.1 until one is answered.
    fn wait_for_tunnel(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(v) = self.traffic(&self.host, &["ping", "10.0.1.2", "10.0.2.1", "1", "10"]) {
                if v["received"] == 1 {
                    return true;
                }
            }
        }
        false
    }

    /// A TCP transfer of `bytes` from the host namespace to a sink behind charon.
    fn tcp(&self, bytes: usize) -> Result<(Value, Value), String> {
        let mut sink = Command::new("ip")
            .args(["netns", "exec", &self.peer, "python3", &traffic_script(), "tcp-sink", "10.0.2.1", "5001", "30"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut lines = BufReader::new(sink.stdout.take().unwrap()).lines();
        let ready = lines.next().map(|l| l.unwrap_or_default()).unwrap_or_default();
        if !ready.contains("ready") {
            return Err(format!("sink: {ready}"));
        }
        let sent = self.traffic(&self.host, &["tcp-send", "10.0.1.2", "10.0.2.1", "5001", &bytes.to_string()]);
        let got = lines.map_while(Result::ok).last().unwrap_or_default();
        let _ = sink.wait();
        Ok((sent?, serde_json::from_str(&got).unwrap_or(Value::Null)))
    }
}

/// `espgwctl --socket SCRATCH/api.sock ARGS`: success and stdout.
fn espgwctl(s: &Scratch, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_espgwctl"))
        .arg("--socket")
        .arg(s.path("api.sock"))
        .args(args)
        .output()
        .expect("espgwctl");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// Wait until espgw answers on its control socket (its workers run by then).
fn wait_ready(s: &Scratch) {
    for _ in 0..100 {
        if espgwctl(s, &["health"]).0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("espgw did not come up");
}

/// Number of `what` log lines charon wrote.
fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// The tunnel carries a ping flood without losing one packet while child
/// SAs are rekeyed underneath it, and a TCP transfer arrives intact.
fn assert_flood_and_transfer(lab: &Lab, ctx: &dyn Fn() -> String) {
    let flood = lab.traffic(&lab.host, &["ping", "10.0.1.2", "10.0.2.1", "1200", "10"]);
    let flood = flood.unwrap_or_else(|e| panic!("ping flood: {e}{}", ctx()));
    assert_eq!(flood["sent"], 1200, "{flood}");
    let lost = flood["lost"].as_array().cloned().unwrap_or_default();
    assert!(lost.is_empty(), "{} pings lost across rekeys, from {:?}{}", lost.len(), lost.first(), ctx());
    let (sent, got) = lab.tcp(2_000_000).unwrap_or_else(|e| panic!("TCP: {e}{}", ctx()));
    assert_eq!(got["received"], 2_000_000, "{sent} {got}{}", ctx());
    assert_eq!(got["sha256"], sent["sha256"], "the transfer arrived intact");
}

#[test]
fn strongswan_initiates_and_rekeys_while_traffic_flows() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("r");
    let s = Scratch::new();
    let (gw, report) = lab.espgw(&s, "shared secret", "rekey_seconds = 0");
    wait_ready(&s);
    // charon rekeys its child every 4 s (with up to 1 s of jitter) with PFS,
    // and the IKE SA every ~5 s.
    let charon = lab.charon_edited(
        "shared secret",
        "rekey_time = 5s\n over_time = 60s\n rand_time = 1s",
        "rekey_time = 4s\n rand_time = 1s",
        &[("esp_proposals = aes128gcm16", "esp_proposals = aes128gcm16-x25519")],
    );
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());
    assert!(ok, "charon could not bring the tunnel up with espgw: {out}{}", ctx());
    assert!(lab.wait_for_tunnel(Duration::from_secs(10)), "no ping through the tunnel{}", ctx());
    assert_flood_and_transfer(&lab, &ctx);
    let log = charon.log_text();
    assert!(count(&log, "CHILD_SA net{") >= 1);
    assert!(log.contains("ESP:AES_GCM_16_128/CURVE_25519"), "the rekeys used PFS{}", ctx());
    // The peer deletes the IKE SA: espgw removes the child SAs and the eroute.
    let (ok, out) = charon.swanctl(&["--terminate", "--ike", "espgw", "--timeout", "10"]);
    assert!(ok, "terminate: {out}");
    std::thread::sleep(Duration::from_millis(500));
    let after = lab.traffic(&lab.host, &["ping", "10.0.1.2", "10.0.2.1", "3", "100"]).unwrap();
    let run = stop(gw, &report);
    run.assert_ok();
    let r = run.report();
    let ike = &r["ike"];
    let ctx = format!("{}\n{}\n{}", r["ike"], run.stdout, run.stderr);
    assert_eq!(after["received"], 0, "the tunnel is gone after the delete: {after}");
    assert_eq!(ike["established"], 1, "{ctx}");
    assert!(ike["child_rekeyed"].as_u64().unwrap() >= 3, "charon rekeyed at least 3 times in ~15 s: {ctx}");
    assert!(ike["ike_rekeyed"].as_u64().unwrap() >= 2, "and the IKE SA every ~5 s: {ctx}");
    assert!(ike["deleted"].as_u64().unwrap() >= 1, "{ctx}");
    assert_eq!(ike["malformed"], 0, "{ctx}");
    assert!(r["events"]["to_control_ike"].as_u64().unwrap() >= 5, "IKE came through the workers' queue");
    assert!(r["events"]["decrypted"].as_u64().unwrap() >= 1200 && r["events"]["encrypted"].as_u64().unwrap() >= 1200);
}

#[test]
fn espgw_initiates_at_start_rekeys_and_sees_the_peer_die() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("i");
    let s = Scratch::new();
    let pfs = [("esp_proposals = aes128gcm16", "esp_proposals = aes128gcm16-x25519")];
    let mut charon = Some(lab.charon_edited("shared secret", "", "", &pfs));
    let (gw, report) =
        lab.espgw(&s, "shared secret", "start = \"start\"\nrekey_seconds = 4\nike_rekey_seconds = 6\npfs = true");
    wait_ready(&s);
    let log = || charon.as_ref().map(|c| c.log_text()).unwrap_or_default();
    let ctx = || format!("\n--- charon ---\n{}", log());
    assert!(lab.wait_for_tunnel(Duration::from_secs(20)), "espgw did not bring the tunnel up{}", ctx());
    // The operator's view: one IKE SA we initiated, moved to 4500 (libipsec forces NAT-T), one child.
    let (ok, out) = espgwctl(&s, &["--json", "ike", "list"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let sa = &v["ike_sas"][0];
    assert_eq!(
        (sa["state"].as_str(), sa["initiator"].as_bool(), sa["nat"].as_bool()),
        (Some("established"), Some(true), Some(true)),
        "{v}"
    );
    assert_eq!(sa["children"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(!out.contains("shared secret"));
    let (ok, out) = espgwctl(&s, &["ike", "rekey", "east"]);
    assert!(ok && out.contains("rekeying 1"), "{out}");
    let (ok, out) = espgwctl(&s, &["ike", "rekey", "west"]);
    assert!(!ok && out.contains("no connection named"), "{out}");
    assert_flood_and_transfer(&lab, &ctx);
    let (ok, out) = espgwctl(&s, &["ike", "list"]);
    assert!(ok && out.contains("established") && out.contains("east"), "{out}");
    assert!(log().contains("ESP:AES_GCM_16_128/CURVE_25519"), "our rekeys used PFS{}", ctx());
    // charon dies without a word: DPD (2 s, then retransmissions) takes the tunnel down.
    drop(charon.take());
    std::thread::sleep(Duration::from_secs(40));
    let run = stop(gw, &report);
    run.assert_ok();
    let r = run.report();
    let ike = &r["ike"];
    let ctx = format!("{}\n{}\n{}", r["ike"], run.stdout, run.stderr);
    assert!(ike["established"].as_u64().unwrap() >= 1, "{ctx}");
    assert!(ike["child_rekeyed"].as_u64().unwrap() >= 3, "espgw rekeyed every 4 s: {ctx}");
    assert!(ike["ike_rekeyed"].as_u64().unwrap() >= 2, "and the IKE SA every ~6 s: {ctx}");
    assert!(ike["timed_out"].as_u64().unwrap() >= 1, "the dead peer was noticed: {ctx}");
}

#[test]
fn a_trap_hit_starts_the_negotiation() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("t");
    let s = Scratch::new();
    let charon = lab.charon("shared secret", "", "");
    let (gw, report) = lab.espgw(&s, "shared secret", "start = \"trap\"");
    wait_ready(&s);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());
    std::thread::sleep(Duration::from_secs(2));
    assert!(count(&charon.log_text(), "IKE_SA_INIT") == 0, "nothing is negotiated before traffic{}", ctx());
    assert!(lab.wait_for_tunnel(Duration::from_secs(20)), "the trap did not bring the tunnel up{}", ctx());
    let (sent, got) = lab.tcp(200_000).unwrap_or_else(|e| panic!("TCP: {e}{}", ctx()));
    assert_eq!(got["sha256"], sent["sha256"]);
    let run = stop(gw, &report);
    run.assert_ok();
    let r = run.report();
    assert!(r["drops"]["policy_trap"].as_u64().unwrap() >= 1, "the first packet hit the trap: {}", r["drops"]);
    assert_eq!(r["ike"]["established"], 1, "{}", r["ike"]);
}

#[test]
fn a_wrong_psk_is_refused_and_counted() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("p");
    let s = Scratch::new();
    let (gw, report) = lab.espgw(&s, "shared secret", "");
    wait_ready(&s);
    let charon = lab.charon("not the secret", "", "");
    let (ok, _) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "10"]);
    let log = charon.log_text();
    let run = stop(gw, &report);
    run.assert_ok();
    let r = run.report();
    assert!(!ok, "charon got a tunnel with the wrong key");
    assert!(log.contains("AUTHENTICATION_FAILED"), "espgw answered as RFC 7296 §2.21.2 says:\n{log}");
    assert!(r["ike"]["auth_failed"].as_u64().unwrap() >= 1, "{}", r["ike"]);
    assert_eq!(r["ike"]["established"], 0);
    assert_eq!(r["ike"]["child_installed"], 0);
}

/// A flood of IKE_SA_INIT (RFC 7296 §2.6): 200 requests from addresses no
/// connection names get no answer and leave no state; 300 from the peer's
/// address (each from its own port) fill the half-open table to the
/// cookie threshold, every one after that is answered with a stateless
/// COOKIE. strongSwan, initiating in the middle of it, answers the cookie
/// and gets its tunnel.
#[test]
fn an_ike_sa_init_flood_gets_cookies_and_the_peer_still_gets_in() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("f");
    let s = Scratch::new();
    let charon = lab.charon("shared secret", "", "");
    let (gw, report) = lab.espgw(&s, "shared secret", "");
    wait_ready(&s);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());
    let flood = |src: &str, n: usize, port: u16| {
        let script = format!("{}/../tests/py/ike_flood.py", env!("CARGO_MANIFEST_DIR"));
        let o = Command::new("ip")
            .args(["netns", "exec", &lab.peer, "python3", &script, src, "203.0.113.1"])
            .args([n.to_string(), port.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        serde_json::from_str::<Value>(text.lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&o.stderr)))
    };
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    sh(&["ip", "-n", &lab.peer, "addr", "add", "203.0.113.200/24", "dev", &format!("sp{}", lab.tag)]);
    // The peer first: its kernel's ARP request (from 203.0.113.2) teaches
    // espgw its MAC (from a stranger's address it would ask, and drop the
    // first answers meanwhile).
    let from_peer = flood("203.0.113.2", 300, 20000);
    let strangers = flood("203.0.113.200", 200, 30000);
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
    assert!(ok, "strongSwan did not get in during the flood: {out}{}", ctx());
    assert!(lab.wait_for_tunnel(Duration::from_secs(10)), "no ping through the tunnel{}", ctx());
    let run = stop(gw, &report);
    run.assert_ok();
    let r = run.report();
    let ike = &r["ike"];
    let drops: Vec<String> = r["drops"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v != &&Value::from(0))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let c = format!("strangers {strangers} peer {from_peer} ike {ike} drops {drops:?} events {}", r["events"]);
    assert_eq!(n(&strangers, "answers"), 0, "{c}");
    assert_eq!(n(ike, "no_connection"), 200, "{c}");
    assert_eq!(n(&from_peer, "answers"), 300, "{c}");
    assert_eq!(n(&from_peer, "accepted"), 32, "state only up to the cookie threshold: {c}");
    assert_eq!(n(&from_peer, "cookies"), 268, "{c}");
    assert_eq!(n(ike, "cookies_sent"), 269, "and strongSwan was asked once: {c}");
    assert_eq!(n(ike, "established"), 1, "{c}");
}

/// The other refusals of RFC 7296, each answered and counted while the
/// real tunnel stays possible: a peer proving another identity than
/// remote_id (AUTHENTICATION_FAILED, §2.21.2), an IKE proposal espgw does
/// not run (NO_PROPOSAL_CHOSEN in IKE_SA_INIT, §2.21.1), and a child SA
/// proposal it does not run (NO_PROPOSAL_CHOSEN in IKE_AUTH, §1.2: the IKE
/// SA may stand, the child does not).
#[test]
fn wrong_identity_and_proposals_are_refused_and_counted() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("n");
    let s = Scratch::new();
    let (gw, report) = lab.espgw(&s, "shared secret", "");
    wait_ready(&s);
    let attempt = |edits: &[(&str, &str)]| {
        let charon = lab.charon_edited("shared secret", "", "", edits);
        let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "10"]);
        (ok, format!("{out}\n{}", charon.log_text()))
    };
    let (id_ok, id_log) = attempt(&[
        ("id = east.example }", "id = mallory.example }"),
        ("id-2 = east.example", "id-2 = mallory.example"),
    ]);
    let (ike_ok, ike_log) =
        attempt(&[("proposals = aes128gcm16-prfsha256-x25519", "proposals = aes256gcm16-prfsha512-ecp521")]);
    let (esp_ok, esp_log) = attempt(&[("esp_proposals = aes128gcm16", "esp_proposals = aes256-sha256")]);
    let (good, good_log) = attempt(&[]);
    let run = stop(gw, &report);
    run.assert_ok();
    let ike = &run.report()["ike"];
    assert!(!id_ok && id_log.contains("AUTHENTICATION_FAILED"), "{id_log}");
    assert!(!ike_ok && ike_log.contains("NO_PROPOSAL_CHOSEN"), "{ike_log}");
    assert!(!esp_ok && esp_log.contains("NO_PROPOSAL_CHOSEN"), "{esp_log}");
    assert!(good, "the right settings still work: {good_log}");
    assert!(ike["auth_failed"].as_u64().unwrap() >= 1, "{ike}");
    assert!(ike["no_proposal"].as_u64().unwrap() >= 2, "IKE and ESP proposals: {ike}");
    assert_eq!(ike["child_installed"], 1, "only the good attempt installed SAs: {ike}");
}

/// Each child SA suite against strongSwan: charon proposes one, espgw
/// (offering them all, and ESN) takes it, and pings cross the tunnel.
/// (ESN itself is negotiated in the daemon tests: strongSwan's user-space
/// ESP, libipsec, refuses ESN SAs.)
#[test]
fn child_suites_interoperate_with_strongswan() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("c");
    let s = Scratch::new();
    let all =
        "esp = [\"aes128gcm16\", \"aes256gcm16\", \"chacha20poly1305\", \"aes128-sha1\", \"aes256-sha1\"]\nesn = true";
    let (gw, report) = lab.espgw(&s, "shared secret", all);
    wait_ready(&s);
    let mut results = Vec::new();
    for (proposal, algorithm) in [
        ("aes256gcm16", "aes256-gcm16"),
        ("aes128-sha1", "aes128-cbc-hmac-sha1-96"),
        ("aes256-sha1", "aes256-cbc-hmac-sha1-96"),
        ("chacha20poly1305", "chacha20-poly1305"),
    ] {
        let charon = lab.charon_edited(
            "shared secret",
            "",
            "",
            &[("esp_proposals = aes128gcm16", &format!("esp_proposals = {proposal}"))],
        );
        let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "10"]);
        let ping = lab.traffic(&lab.host, &["ping", "10.0.1.2", "10.0.2.1", "5", "50"]);
        let (_, list) = espgwctl(&s, &["--json", "sa", "list"]);
        let _ = charon.swanctl(&["--terminate", "--ike", "espgw", "--timeout", "5"]);
        results.push((proposal, algorithm, ok, ping, list, format!("{out}\n{}", charon.log_text())));
    }
    let run = stop(gw, &report);
    run.assert_ok();
    for (proposal, algorithm, ok, ping, list, log) in results {
        assert!(ok, "{proposal}: no tunnel\n{log}");
        let ping = ping.unwrap_or_else(|e| panic!("{proposal}: {e}"));
        assert!(ping["received"].as_u64().unwrap() >= 4, "{proposal}: {ping}\n{log}");
        assert!(list.contains(algorithm), "{proposal}: espgw installed {algorithm}: {list}");
        // espgw would take ESN; charon did not offer it (libipsec has none).
        assert!(!list.contains("\"esn\": true"), "{proposal}: {list}");
    }
}

/// X.509 certificates both ways (RSA-4096, so IKE_AUTH does not fit 1 280
/// bytes and travels in RFC 7383 fragments in both directions): charon
/// initiates, then espgw does; each time the tunnel carries traffic and
/// charon reports the signature it checked.
#[test]
fn certificates_authenticate_both_ways_in_fragments() {
    use test_pki::{Ca, KeyKind};
    let _heavy = heavy_test_lock();
    let lab = Lab::new("x");
    let s = Scratch::new();
    let ca = Ca::new("espgw test CA");
    let (west, east) = (
        ca.issue(&["west.example"], KeyKind::Rsa(4096), |_| {}),
        ca.issue(&["east.example"], KeyKind::Rsa(4096), |_| {}),
    );
    let (charon, gw, report) = with_certificates(
        &lab,
        &s,
        (&ca, &west, &east),
        ("\n id = east.example", "id = west.example"),
        "local_id = \"west.example\"\nremote_id = \"east.example\"",
        "wireshark_keys = \"keys\"",
    );
    wait_ready(&s);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());

    // charon initiates.
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
    assert!(ok, "charon could not initiate: {out}{}", ctx());
    assert!(lab.wait_for_tunnel(Duration::from_secs(10)), "no tunnel after charon's initiate{}", ctx());
    let log = charon.log_text();
    assert!(log.contains("authentication of 'west.example' with RSA_EMSA_PKCS1_SHA2_256 successful"), "{}", ctx());
    assert!(count(&log, "received fragment") >= 2, "our IKE_AUTH answer came in fragments{}", ctx());
    let (ok, out) = charon.swanctl(&["--terminate", "--ike", "espgw", "--timeout", "10"]);
    assert!(ok, "{out}{}", ctx());

    // espgw initiates.
    let (ok, out) = espgwctl(&s, &["ike", "initiate", "east"]);
    assert!(ok, "{out}");
    assert!(lab.wait_for_tunnel(Duration::from_secs(20)), "no tunnel after espgw's initiate{}", ctx());
    let (sent, got) = lab.tcp(300_000).unwrap_or_else(|e| panic!("TCP: {e}{}", ctx()));
    assert_eq!(got["sha256"], sent["sha256"], "{}", ctx());
    let run = stop(gw, &report);
    run.assert_ok();
    let r = run.report();
    let ike = &r["ike"];
    let ctx = format!("{ike}\n{}\n{}{}", run.stdout, run.stderr, ctx());
    assert_eq!(ike["established"], 2, "{ctx}");
    assert_eq!(ike["auth_failed"], 0, "{ctx}");
    assert!(ike["fragments_sent"].as_u64().unwrap() >= 4, "our IKE_AUTH both times in fragments: {ctx}");
    assert!(ike["reassembled"].as_u64().unwrap() >= 2, "and charon's: {ctx}");
    assert!(!run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"));
    // The debug export holds the keys charon logged (two child SAs, both directions).
    let esp_sa = std::fs::read_to_string(s.path("keys/esp_sa")).unwrap_or_default();
    let log = charon.log_text();
    let theirs: Vec<Vec<u8>> = ["encryption initiator key", "encryption responder key"]
        .iter()
        .flat_map(|w| common::strongswan::logged_keys(&log, w))
        .collect();
    assert_eq!(theirs.len(), 4, "{log}");
    for k in theirs {
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert!(esp_sa.contains(&format!("\"0x{hex}\"")), "{hex} not in esp_sa:\n{esp_sa}");
    }
    assert!(run.stderr.contains("wireshark_keys") || run.stdout.contains("wireshark_keys"), "the warning");
}

/// The IKE SA's algorithms with strongSwan: charon initiates with
/// ECP-256, ECP-384, MODP-2048 and Curve25519 in turn, and with AES-CBC +
/// HMAC-SHA256 instead of AES-GCM (espgw takes whichever the
/// peer's KE carries); then espgw initiates with Curve25519 first to a
/// charon that runs only ECP-384, is told INVALID_KE_PAYLOAD, and tries
/// again with ECP-384. Each time pings cross the tunnel.
#[test]
fn ike_groups_interoperate_with_strongswan() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("g");
    let s = Scratch::new();
    // espgw's default offer: AES-GCM and AES-CBC/HMAC-SHA256, every group.
    let (gw, report) = lab.espgw(&s, "shared secret", "");
    wait_ready(&s);
    let mut results = Vec::new();
    let aes256 = "aes256gcm16-prfsha256";
    for (proposal, strongswan, ours) in [
        ("aes256gcm16-prfsha256-ecp256", "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256", "aes256gcm16-prfsha256-ecp256"),
        ("aes256gcm16-prfsha256-ecp384", "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_384", "aes256gcm16-prfsha256-ecp384"),
        (
            "aes256gcm16-prfsha256-modp2048",
            "AES_GCM_16_256/PRF_HMAC_SHA2_256/MODP_2048",
            "aes256gcm16-prfsha256-modp2048",
        ),
        (
            "aes256gcm16-prfsha256-x25519",
            "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519",
            "aes256gcm16-prfsha256-x25519",
        ),
        // PRF-HMAC-SHA384 / -SHA512 (SK_d, SK_p of their length; AUTH and KEYMAT with them).
        ("aes256gcm16-prfsha384-ecp384", "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384", "aes256gcm16-prfsha384-ecp384"),
        (
            "aes128gcm16-prfsha512-x25519",
            "AES_GCM_16_128/PRF_HMAC_SHA2_512/CURVE_25519",
            "aes128gcm16-prfsha512-x25519",
        ),
        // AES-CBC with HMAC-SHA256-128 (strongSwan derives PRF-SHA256 from it).
        (
            "aes128-sha256-x25519",
            "AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519",
            "aes128-sha256-prfsha256-x25519",
        ),
        (
            "aes256-sha256-modp2048",
            "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
            "aes256-sha256-prfsha256-modp2048",
        ),
    ] {
        let proposals = format!("proposals = {proposal}");
        let charon =
            lab.charon_edited("shared secret", "", "", &[("proposals = aes128gcm16-prfsha256-x25519", &proposals)]);
        let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "10"]);
        let ping = lab.traffic(&lab.host, &["ping", "10.0.1.2", "10.0.2.1", "3", "50"]);
        let (_, list) = espgwctl(&s, &["--json", "ike", "list"]);
        let _ = charon.swanctl(&["--terminate", "--ike", "espgw", "--timeout", "5"]);
        results.push((ours, strongswan, ok, ping, list, format!("{out}\n{}", charon.log_text())));
    }
    // espgw initiates: Curve25519 first, charon wants ECP-384.
    let charon = lab.charon_edited(
        "shared secret",
        "",
        "",
        &[("proposals = aes128gcm16-prfsha256-x25519", &format!("proposals = {aes256}-ecp384"))],
    );
    let (ok, out) = espgwctl(&s, &["ike", "initiate", "east"]);
    assert!(ok, "{out}");
    let up = lab.wait_for_tunnel(Duration::from_secs(20));
    let (_, list) = espgwctl(&s, &["--json", "ike", "list"]);
    let log = charon.log_text();
    drop(charon);
    let run = stop(gw, &report);
    run.assert_ok();
    for (ours, strongswan, ok, ping, list, log) in results {
        assert!(ok, "{ours}: no tunnel\n{log}");
        assert!(log.contains(&format!("selected proposal: IKE:{strongswan}")), "{ours}\n{log}");
        let ping = ping.unwrap_or_else(|e| panic!("{ours}: {e}"));
        assert!(ping["received"].as_u64().unwrap() >= 2, "{ours}: {ping}\n{log}");
        assert!(list.contains(&format!("\"{ours}\"")), "{ours}: {list}");
    }
    assert!(up, "espgw's initiate with a group retry\n{log}");
    assert!(log.contains("INVALID_KE_PAYLOAD") || log.contains("N(INVAL_KE)"), "charon asked for its group\n{log}");
    assert!(
        list.contains("\"aes128gcm16-prfsha256-ecp384\"") || list.contains("\"aes256gcm16-prfsha256-ecp384\""),
        "{list}"
    );
    let ike = &run.report()["ike"];
    assert!(ike["established"].as_u64().unwrap() >= 9, "{ike}");
}

/// Both sides rekey the child SA on the same schedule (espgw every 4 s,
/// charon every 4 s without randomness): whoever is first rekeys, the
/// other's request may cross it (a collision, resolved as RFC 7296 §2.8.1
/// says; how often depends on sub-millisecond timing, so the daemon tests
/// force it) — and a ping flood and a TCP transfer cross the tunnel
/// without a lost packet.
#[test]
fn rekeys_on_both_sides_with_strongswan_lose_nothing() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("k");
    let s = Scratch::new();
    let charon = lab.charon("shared secret", "", "rekey_time = 4s\n life_time = 30s\n rand_time = 0s");
    let (gw, report) = lab.espgw(&s, "shared secret", "start = \"start\"\nrekey_seconds = 4");
    wait_ready(&s);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());
    assert!(lab.wait_for_tunnel(Duration::from_secs(20)), "no tunnel{}", ctx());
    assert_flood_and_transfer(&lab, &ctx);
    let log = charon.log_text();
    let run = stop(gw, &report);
    run.assert_ok();
    let ike = &run.report()["ike"];
    let ctx = format!("{ike}\n{}\n--- charon ---\n{log}", run.stderr);
    assert!(ike["child_rekeyed"].as_u64().unwrap() >= 3, "{ctx}");
    assert_eq!(ike["malformed"], 0, "{ctx}");
    assert_eq!(ike["established"], 1, "one IKE SA throughout: {ctx}");
}

/// charon lets its child SA expire (no rekey, a 5 s life) and creates a
/// new one with CREATE_CHILD_SA (no REKEY_SA): espgw takes it as a new
/// child SA of the connection and the tunnel carries traffic again.
#[test]
fn a_child_sa_the_peer_recreates_is_accepted() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("n");
    let s = Scratch::new();
    let charon = lab.charon("shared secret", "", "rekey_time = 0\n life_time = 5s\n rand_time = 0s");
    let (gw, report) = lab.espgw(&s, "shared secret", "rekey_seconds = 0");
    wait_ready(&s);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "10"]);
    assert!(ok, "{out}{}", ctx());
    assert!(lab.wait_for_tunnel(Duration::from_secs(5)), "no tunnel{}", ctx());
    std::thread::sleep(Duration::from_secs(8));
    assert!(count(&charon.log_text(), "closing expired CHILD_SA") >= 1, "the child expired{}", ctx());
    assert!(lab.wait_for_tunnel(Duration::from_secs(10)), "no tunnel after charon recreated the child{}", ctx());
    let run = stop(gw, &report);
    run.assert_ok();
    let ike = &run.report()["ike"];
    assert!(ike["child_installed"].as_u64().unwrap() >= 2, "{ike}{}", ctx());
    assert_eq!(ike["established"], 1, "{ike}");
}

/// Two children on one IKE SA with strongSwan: espgw makes the first in
/// IKE_AUTH and the second with CREATE_CHILD_SA; then charon does it the
/// other way round (its second child first); each time both subnets behind
/// charon answer pings through their own child SA.
#[test]
fn two_children_with_strongswan_both_ways() {
    let _heavy = heavy_test_lock();
    let lab = Lab::new("2");
    sh(&["ip", "-n", &lab.peer, "addr", "add", "10.0.3.1/24", "dev", "lo"]);
    let s = Scratch::new();
    let voice = " voice { local_ts = 10.0.3.0/24\n remote_ts = 10.0.1.0/24\n esp_proposals = aes128gcm16 }\n";
    let charon = lab.charon_edited("shared secret", "", "", &[("children { ", &format!("children {{ {voice}"))]);
    let child =
        "\n[[connection.child]]\nname = \"voice\"\nlocal_ts = [\"10.0.1.0/24\"]\nremote_ts = [\"10.0.3.0/24\"]\n";
    let (gw, report) = lab.espgw(&s, "shared secret", child);
    wait_ready(&s);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());
    let ping = |dst: &str| {
        let r = lab.traffic(&lab.host, &["ping", "10.0.1.2", dst, "3", "50"]);
        r.map(|v| v["received"].as_u64().unwrap_or(0)).unwrap_or(0)
    };
    let children = || {
        let (_, out) = espgwctl(&s, &["--json", "ike", "list"]);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["ike_sas"][0]["children"].as_array().map_or(0, Vec::len)
    };
    // espgw initiates: IKE_AUTH for net, CREATE_CHILD_SA for voice.
    let (ok, out) = espgwctl(&s, &["ike", "initiate", "east"]);
    assert!(ok, "{out}");
    assert!(lab.wait_for_tunnel(Duration::from_secs(20)), "net{}", ctx());
    let end = Instant::now() + Duration::from_secs(10);
    while children() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(children(), 2, "{}", ctx());
    assert!(ping("10.0.2.1") >= 2 && ping("10.0.3.1") >= 2, "both subnets{}", ctx());
    let log = charon.log_text();
    assert!(log.contains("CHILD_SA voice{") && log.contains("CHILD_SA net{"), "{}", ctx());
    let (ok, out) = charon.swanctl(&["--terminate", "--ike", "espgw", "--timeout", "10"]);
    assert!(ok, "{out}");
    // charon initiates its second child first, then the first on the same IKE SA.
    for child in ["voice", "net"] {
        let (ok, out) = charon.swanctl(&["--initiate", "--child", child, "--timeout", "10"]);
        assert!(ok, "{child}: {out}{}", ctx());
    }
    assert!(ping("10.0.3.1") >= 2 && ping("10.0.2.1") >= 2, "both subnets again{}", ctx());
    assert_eq!(children(), 2);
    let run = stop(gw, &report);
    run.assert_ok();
    let ike = &run.report()["ike"];
    assert_eq!(ike["established"], 2, "{ike}");
    assert!(ike["child_installed"].as_u64().unwrap() >= 4, "{ike}");
}

/// Distinguished names as identities, strongSwan's default with
/// certificates: charon names itself by its certificate's subject (no
/// `id`), espgw by its own (`local_id` omitted, the certificate has no
/// subjectAltName), each expects the other's DN — written differently from
/// how the certificate encodes it (case, spacing).
#[test]
fn distinguished_names_with_strongswan() {
    use test_pki::{Ca, KeyKind};
    let _heavy = heavy_test_lock();
    let lab = Lab::new("d");
    let s = Scratch::new();
    let ca = Ca::new("espgw test CA");
    let subject = |cn: &str| {
        let cn = cn.to_string();
        ca.issue(&[&cn], KeyKind::P256, |p| {
            p.subject_alt_names.clear();
            p.distinguished_name.push(rcgen::DnType::OrganizationName, "espgw test");
        })
    };
    let (west, east) = (subject("west.example"), subject("east.example"));
    // charon names itself by its subject (no id), expects ours.
    let (charon, gw, report) = with_certificates(
        &lab,
        &s,
        (&ca, &west, &east),
        ("", "id = \"CN=west.example, O=espgw test\""),
        "remote_id = \"cn=east.example,o=ESPGW TEST\"",
        "",
    );
    wait_ready(&s);
    let ctx = || format!("\n--- charon ---\n{}", charon.log_text());
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
    assert!(ok, "charon could not initiate: {out}{}", ctx());
    assert!(lab.wait_for_tunnel(Duration::from_secs(10)), "no tunnel{}", ctx());
    let log = charon.log_text();
    assert!(log.contains("authentication of 'CN=west.example, O=espgw test' with"), "{}", ctx());
    let _ = charon.swanctl(&["--terminate", "--ike", "espgw", "--timeout", "10"]);
    let (ok, out) = espgwctl(&s, &["ike", "initiate", "east"]);
    assert!(ok, "{out}");
    assert!(lab.wait_for_tunnel(Duration::from_secs(20)), "no tunnel after espgw's initiate{}", ctx());
    let run = stop(gw, &report);
    run.assert_ok();
    assert_eq!(run.report()["ike"]["established"], 2, "{}", run.report()["ike"]);
}

/// charon (east.example) and espgw (west.example) with certificates of
/// `ca`: `east_ids` go into charon's local section (after its `certs`) and
/// remote one (after `cacerts`), `west_ids` into espgw's connection.
fn with_certificates(
    lab: &Lab,
    s: &Scratch,
    (ca, west, east): (&test_pki::Ca, &test_pki::Issued, &test_pki::Issued),
    east_ids: (&str, &str),
    west_ids: &str,
    extra: &str,
) -> (Charon, Gw, std::path::PathBuf) {
    for (name, text) in [("ca.crt", &ca.pem), ("west.crt", &west.cert), ("west.key", &west.key)] {
        std::fs::write(s.path(name), text).unwrap();
    }
    let (local, remote) = (
        format!("local {{ auth = pubkey\n certs = east.crt{} }}", east_ids.0),
        format!("remote {{ auth = pubkey\n cacerts = ca.crt\n {} }}", east_ids.1),
    );
    let edits = [
        ("local { auth = psk\n id = east.example }", local.as_str()),
        ("remote { auth = psk\n id = west.example }", &remote),
    ];
    let creds =
        [("x509", "east.crt", east.cert.as_str()), ("x509ca", "ca.crt", &ca.pem), ("pkcs8", "east.key", &east.key)];
    let charon = lab.charon_with_creds("unused", "", "", &edits, &creds);
    let auth = format!("{west_ids}\ncert = \"west.crt\"\nkey = \"west.key\"\nca = \"ca.crt\"");
    let (gw, report) = lab.espgw_auth(s, &auth, extra);
    (charon, gw, report)
}
