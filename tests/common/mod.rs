//! Helpers for end-to-end tests: run the real `espgw` binary over DPDK
//! virtual devices and look at what came out.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use serde_json::Value;

/// Path of the binary under test.
pub fn espgw_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_espgw"))
}

/// Tests that run several busy-polling DPDK processes at once take this lock,
/// so that on a 2-core machine they do not starve each other.
pub fn heavy_test_lock() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A unique DPDK `--file-prefix` so parallel tests never share EAL runtime files.
pub fn file_prefix(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("espgw-t-{test}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// EAL args for a test process: no PCI, no hugepages, own prefix, quiet logs.
pub fn eal_args_toml(test: &str) -> String {
    format!(
        r#"args = ["--no-pci", "--no-huge", "-m", "256", "--file-prefix", "{}", "--log-level", "*:error", "--no-telemetry"]"#,
        file_prefix(test)
    )
}

pub use espgw_testkit::traffic::*;

pub mod ipsec;
pub mod strongswan;

/// Read a pcap the test expects to exist.
pub fn read_frames(path: &Path) -> Vec<Vec<u8>> {
    read_pcap(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Write a pcap or fail the test.
pub fn write_frames(path: &Path, frames: &[Vec<u8>]) {
    write_pcap(path, frames).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A scratch directory for one test.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { dir: tempfile::Builder::new().prefix("espgw-e2e-").tempdir().unwrap() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Write a config file and return its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.path("espgw.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
    /// An empty pcap for ports that must not receive anything.
    pub fn empty_pcap(&self) -> PathBuf {
        let p = self.path("empty.pcap");
        write_frames(&p, &[]);
        p
    }
}

/// Result of a finished espgw run.
pub struct Run {
    pub output: Output,
    pub stdout: String,
    pub stderr: String,
    pub report: Option<Value>,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn report(&self) -> &Value {
        self.report.as_ref().unwrap_or_else(|| panic!("no report\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    /// A port's entry in the report, by configured name.
    pub fn port(&self, name: &str) -> &Value {
        self.report()["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }
    pub fn assert_ok(&self) {
        assert_eq!(self.code(), Some(0), "espgw failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(self.report()["mbufs_in_use"], 0, "mbuf leak\n{}", self.stdout);
    }
}

/// Run espgw to completion with `args` (plus a JSON report).
pub fn run_espgw(scratch: &Scratch, config: &Path, args: &[&str]) -> Run {
    let report = scratch.path("report.json");
    let _ = std::fs::remove_file(&report);
    let output = Command::new(espgw_bin())
        .arg("--config")
        .arg(config)
        .arg("--report-json")
        .arg(&report)
        .args(args)
        .current_dir(scratch.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("spawning espgw");
    finish(output, &report)
}

/// Start espgw in the background (signal tests, multi-process tests); the
/// report goes to `report.json` in the scratch directory.
pub fn spawn_espgw(scratch: &Scratch, config: &Path, args: &[&str]) -> (Child, PathBuf) {
    spawn_espgw_named(scratch, config, "report.json", args)
}

/// Like [`spawn_espgw`], with its own report file (several gateways in one test).
pub fn spawn_espgw_named(scratch: &Scratch, config: &Path, report: &str, args: &[&str]) -> (Child, PathBuf) {
    let report = scratch.path(report);
    let child = Command::new(espgw_bin())
        .arg("--config")
        .arg(config)
        .arg("--report-json")
        .arg(&report)
        .args(args)
        .current_dir(scratch.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning espgw");
    (child, report)
}

/// Run a set-up command (namespaces, links, sysctls) that must succeed; its
/// output is kept for the failure message only.
pub fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// Start espgw inside network namespace `ns` (its ports are the veths
/// there), reporting to `report`; it stops by itself after `seconds`.
pub fn spawn_espgw_in_netns(scratch: &Scratch, ns: &str, config: &Path, report: &Path, seconds: u32) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(espgw_bin())
        .arg("--config")
        .arg(config)
        .arg("--report-json")
        .arg(report)
        .args(["--wait-link", "5000", "--duration", &seconds.to_string()])
        .current_dir(scratch.path(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("espgw in its namespace")
}

/// Stop a running espgw as an operator would (SIGTERM) and collect its run.
pub fn stop_espgw(child: Child, report: &Path) -> Run {
    let rc = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
    assert!(rc.success(), "could not signal espgw");
    finish(child.wait_with_output().expect("espgw output"), report)
}

pub fn finish(output: Output, report: &Path) -> Run {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = std::fs::read_to_string(report).ok().and_then(|s| serde_json::from_str(&s).ok());
    Run { output, stdout, stderr, report }
}

/// Make sure 2 MiB hugepages are reserved and mounted (what `dpdk-dumpcap`
/// needs: a secondary process can only attach to a primary's shared
/// hugepage memory). As root this sets them up the way the README says;
/// otherwise the test fails saying what is missing.
pub fn ensure_hugepages(min_free: u64) {
    let free = || -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("HugePages_Free:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0)
    };
    let nr = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
    if free() < min_free {
        let total: u64 = std::fs::read_to_string(nr).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let _ = std::fs::write(nr, (total + min_free).to_string());
    }
    let mounted = std::fs::read_to_string("/proc/mounts").unwrap_or_default().lines().any(|l| l.contains("hugetlbfs"));
    if !mounted {
        let _ = std::fs::create_dir_all("/dev/hugepages");
        let _ = Command::new("mount").args(["-t", "hugetlbfs", "nodev", "/dev/hugepages"]).status();
    }
    assert!(
        free() >= min_free,
        "this test needs {min_free} free 2 MiB hugepages (as root: echo 512 > {}; mount -t hugetlbfs nodev /dev/hugepages)",
        nr.display()
    );
}
