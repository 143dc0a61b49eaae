//! The real `espgw` binary over DPDK virtual devices: forwarding is
//! byte-exact and counted, signals stop it cleanly, every mbuf goes home,
//! and bad input gets a clear error.

mod common;
use common::*;

use std::time::{Duration, Instant};

fn pcap_pair_config(test: &str, s: &Scratch, input: &std::path::Path, output: &std::path::Path) -> String {
    let empty = s.empty_pcap();
    format!(
        r#"
[eal]
{eal}

[workers]
cores = [1]
idle_sleep_us = 20

[[port]]
name = "clear0"
device = "net_pcap0,rx_pcap={input},tx_pcap={sink}"
role = "cleartext"

[[port]]
name = "prot0"
device = "net_pcap1,rx_pcap={empty},tx_pcap={output}"
role = "protected"

[[forward]]
from = "clear0"
to = "prot0"
"#,
        eal = eal_args_toml(test),
        input = input.display(),
        output = output.display(),
        empty = empty.display(),
        sink = s.path("clear0-tx.pcap").display(),
    )
}

#[test]
fn pcap_forwarding_is_byte_exact_and_counted() {
    let s = Scratch::new();
    let frames = mixed_frames(400, 7);
    let input = s.path("in.pcap");
    let output = s.path("out.pcap");
    write_frames(&input, &frames);
    let cfg = s.config(&pcap_pair_config("fwd", &s, &input, &output));

    let run = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
    run.assert_ok();

    let got = read_frames(&output);
    assert_eq!(got.len(), frames.len(), "frame count");
    for (i, (a, b)) in frames.iter().zip(&got).enumerate() {
        assert_eq!(a, b, "frame {i} differs");
    }
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let clear = run.port("clear0");
    let prot = run.port("prot0");
    assert_eq!(clear["rx_packets"], 400);
    assert_eq!(clear["rx_bytes"], bytes);
    assert_eq!(prot["tx_packets"], 400);
    assert_eq!(prot["tx_bytes"], bytes);
    assert_eq!(prot["hw"]["opackets"], 400, "driver agrees with our counters");
    assert_eq!(run.report()["workers"][0]["rx_packets"], 400);
    assert!(run.report()["drops"].as_object().unwrap().values().all(|v| v == 0));
    assert!(run.stdout.contains("no leak"), "{}", run.stdout);
    assert!(run.stdout.contains("clear0") && run.stdout.contains("drops: none"), "{}", run.stdout);
}

/// Without a `[[forward]]` the pipeline decides; with no eroute the default
/// outbound action (drop) applies, and every packet is counted.
#[test]
fn packets_without_forward_or_eroute_are_dropped_by_default_policy() {
    let s = Scratch::new();
    let frames = mixed_frames(50, 3);
    let input = s.path("in.pcap");
    let output = s.path("out.pcap");
    write_frames(&input, &frames);
    let text = pcap_pair_config("noroute", &s, &input, &output);
    let text = text.split("[[forward]]").next().unwrap().to_string();
    let cfg = s.config(&text);
    let run = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
    run.assert_ok();
    assert_eq!(run.report()["drops"]["policy_drop"], 50);
    assert_eq!(read_frames(&output).len(), 0);
    assert!(run.stdout.contains("policy_drop"), "{}", run.stdout);
}

/// pcap → net_ring (loops back into itself) → pcap: two hops through a ring port.
#[test]
fn two_ports_over_net_ring() {
    let s = Scratch::new();
    let frames = mixed_frames(300, 11);
    let input = s.path("in.pcap");
    let output = s.path("out.pcap");
    write_frames(&input, &frames);
    let cfg = s.config(&format!(
        r#"
[eal]
{eal}
[workers]
cores = [1]
idle_sleep_us = 20
[[port]]
name = "in"
device = "net_pcap0,rx_pcap={input},tx_pcap={sink}"
role = "cleartext"
[[port]]
name = "ring"
device = "net_ring0"
role = "protected"
[[port]]
name = "out"
device = "net_pcap1,rx_pcap={empty},tx_pcap={output}"
role = "cleartext"
[[forward]]
from = "in"
to = "ring"
[[forward]]
from = "ring"
to = "out"
"#,
        eal = eal_args_toml("ring"),
        input = input.display(),
        output = output.display(),
        empty = s.empty_pcap().display(),
        sink = s.path("in-tx.pcap").display(),
    ));
    let run = run_espgw(&s, &cfg, &["--stop-when-idle", "300"]);
    run.assert_ok();
    assert_eq!(read_frames(&output), frames);
    assert_eq!(run.port("ring")["rx_packets"], 300);
    assert_eq!(run.port("ring")["tx_packets"], 300);
}

/// Line-rate traffic from net_null, stopped by SIGTERM (and SIGINT): the
/// process exits 0, prints its totals, and every mbuf is back in the pool.
#[test]
fn signals_stop_cleanly_under_load_without_leaking() {
    for sig in ["TERM", "INT"] {
        let s = Scratch::new();
        let cfg = s.config(&format!(
            r#"
[eal]
{eal}
[workers]
cores = [1]
[[port]]
name = "gen"
device = "net_null0,size=128"
role = "cleartext"
[[port]]
name = "sink"
device = "net_null1,no-rx=1"
role = "protected"
[[forward]]
from = "gen"
to = "sink"
"#,
            eal = eal_args_toml(&format!("sig{sig}")),
        ));
        let (child, report) = spawn_espgw(&s, &cfg, &[]);
        // Wait until it is forwarding, then signal it.
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(1200));
        let rc =
            std::process::Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap();
        assert!(rc.success());
        let out = child.wait_with_output().unwrap();
        let run = finish(out, &report);
        run.assert_ok();
        assert!(start.elapsed() < Duration::from_secs(30));
        assert_eq!(run.report()["stop_cause"], "signal");
        let rx = run.port("gen")["rx_packets"].as_u64().unwrap();
        let tx = run.port("sink")["tx_packets"].as_u64().unwrap();
        let drops: u64 = run.report()["drops"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert!(rx > 10_000, "net_null should have produced plenty, got {rx}");
        assert_eq!(rx, tx + drops, "in = out + counted drops");
        assert!(run.stdout.contains("stopped (signal)"), "{}", run.stdout);
    }
}

#[test]
fn unknown_vdev_is_a_clear_error() {
    let s = Scratch::new();
    let cfg = s.config(&format!(
        "[eal]\n{}\n[workers]\ncores=[1]\n[[port]]\nname=\"x\"\ndevice=\"net_nosuchdriver0\"\nrole=\"cleartext\"\n",
        eal_args_toml("badvdev")
    ));
    let run = run_espgw(&s, &cfg, &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("espgw: error: DPDK EAL initialisation failed"), "{}", run.stderr);
    assert!(run.stderr.contains("[[port]].device"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"), "{}", run.stderr);
}

#[test]
fn config_errors_exit_2_with_file_and_line_before_dpdk() {
    let s = Scratch::new();
    let cases = [
        ("[workers]\ncores = [4096]\n", ":2: workers.cores[0]: core 4096 is out of range"),
        (
            "[workers]\ncores = [1000]\n[[port]]\nname=\"a\"\ndevice=\"net_null0\"\nrole=\"cleartext\"\n",
            ":2: workers.cores[0]: core 1000 does not exist",
        ),
        (
            "[workers]\ncores = [0]\n[[port]]\nname=\"a\"\ndevice=\"net_null0\"\nrole=\"clear\"\n",
            ":6: port[0].role: unknown role",
        ),
        ("[workers\n", ":1: "),
    ];
    for (text, want) in cases {
        let cfg = s.config(text);
        let run = run_espgw(&s, &cfg, &[]);
        assert_eq!(run.code(), Some(2), "{text}: {}", run.stderr);
        assert!(run.stderr.contains("espgw: config error: "), "{}", run.stderr);
        assert!(run.stderr.contains(want), "{text}: want {want:?} in {}", run.stderr);
        assert!(!run.stderr.contains("EAL"), "DPDK must not start on a bad config: {}", run.stderr);
    }
    let run = run_espgw(&s, &s.path("missing.toml"), &[]);
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.contains("missing.toml: cannot read config"), "{}", run.stderr);
}

#[test]
fn check_flag_validates_without_dpdk() {
    let s = Scratch::new();
    let input = s.path("in.pcap");
    write_frames(&input, &[]);
    let cfg = s.config(&pcap_pair_config("check", &s, &input, &s.path("o.pcap")));
    let run = run_espgw(&s, &cfg, &["--check"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("is valid (2 ports, 1 workers)"), "{}", run.stdout);
}

/// Every example config in configs/ validates (with `--check --offline`, no
/// DPDK: several are written for a box with PCI NICs this machine lacks, and
/// plain `--check` says exactly that).
#[test]
fn shipped_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = std::process::Command::new(espgw_bin())
                .arg("--config")
                .arg(&p)
                .args(["--check", "--offline"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
            n += 1;
        }
    }
    assert!(n >= 1, "no configs found in {}", dir.display());
    let nic = dir.join("tunnel-gcm.toml");
    let out = std::process::Command::new(espgw_bin()).arg("--config").arg(&nic).arg("--check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line =
        std::fs::read_to_string(&nic).unwrap().lines().position(|l| l == "device = \"0000:01:00.0\"").unwrap() + 1;
    let want = format!("tunnel-gcm.toml:{line}: port[0].device: no PCI device 0000:01:00.0 on this machine");
    assert!(err.contains(&want), "{err}");
}

/// `--check` looks at the machine: misspelled EAL options (with the nearest
/// real one), next hops that are not on-link.
#[test]
fn check_catches_eal_typos_and_off_link_next_hops() {
    let s = Scratch::new();
    let input = s.path("in.pcap");
    write_frames(&input, &[]);
    let good = pcap_pair_config("check-typo", &s, &input, &s.path("o.pcap"));
    let typo = good.replacen("\"--no-huge\"", "\"--nohuge\"", 1);
    assert_ne!(typo, good);
    let run = run_espgw(&s, &s.config(&typo), &["--check"]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("eal.args[1]: \"--nohuge\" is not an EAL option (did you mean \"--no-huge\"?)"),
        "{}",
        run.stderr
    );
    let off_link = format!("{good}\n[[route]]\nprefix = \"0.0.0.0/0\"\nport = \"prot0\"\nvia = \"203.0.113.1\"\n");
    let run = run_espgw(&s, &s.config(&off_link), &["--check"]);
    assert_eq!(run.code(), Some(0), "a warning, not an error: {}", run.stderr);
    assert!(run.stderr.contains("route[0].via: next hop 203.0.113.1 is not on-link on port prot0"), "{}", run.stderr);
}
