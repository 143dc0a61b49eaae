//! The Debian package: built by `scripts/build_deb.sh` (here from the test
//! build's binaries), unpacked into a scratch root with `dpkg-deb -x`, and
//! checked: files in place, conffiles declared, the systemd unit reloads
//! with SIGHUP, the man pages are man pages, and the shipped config passes
//! `espgw --check` with the packaged binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_package_installs_and_its_config_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_espgw")).parent().unwrap().to_path_buf();
    let out = tmp.path().join("out");
    let st = Command::new(repo().join("scripts/build_deb.sh"))
        .args(["--bin-dir", bin_dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--fast"])
        .status()
        .unwrap();
    assert!(st.success(), "build_deb.sh failed");
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap();
    let root = tmp.path().join("root");
    assert!(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status().unwrap().success());
    let ctrl = tmp.path().join("ctrl");
    assert!(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl).status().unwrap().success());

    for f in [
        "usr/bin/espgw",
        "usr/bin/espgwctl",
        "lib/systemd/system/espgw.service",
        "etc/espgw/espgw.toml",
        "etc/sysctl.d/espgw-hugepages.conf",
        "usr/share/man/man8/espgw.8.gz",
        "usr/share/man/man8/espgwctl.8.gz",
        "usr/share/man/man5/espgw.toml.5.gz",
        "usr/share/bash-completion/completions/espgwctl",
        "usr/share/zsh/vendor-completions/_espgwctl",
        "usr/share/fish/vendor_completions.d/espgwctl.fish",
        "usr/share/doc/espgw/openapi.json",
        "usr/share/doc/espgw/espgw-alerts.yml",
    ] {
        assert!(root.join(f).is_file(), "{f} missing from the package");
    }
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l == "/etc/espgw/espgw.toml"), "{conffiles}");
    let control = std::fs::read_to_string(ctrl.join("control")).unwrap();
    assert!(control.contains("Package: espgw") && control.contains("Depends: dpdk"), "{control}");
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/espgw.service")).unwrap();
    for line in
        ["ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM", "RuntimeDirectory=espgw", "StateDirectory=espgw"]
    {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    let man = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | head -5", root.join("usr/share/man/man8/espgw.8.gz").display()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH espgw 8"));

    // The unit is valid for systemd. This machine does not boot systemd as
    // PID 1 (a container), so it cannot start the service; `systemd-analyze
    // verify` checks every key, section and command the way systemctl
    // would load it, with the unpacked binaries standing in for /usr/bin.
    let unit_copy = tmp.path().join("espgw.service");
    std::fs::write(&unit_copy, unit.replace("/usr/bin/espgw", root.join("usr/bin/espgw").to_str().unwrap())).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .arg(&unit_copy)
        .output()
        .expect("systemd-analyze (package systemd)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The packaged binary accepts the packaged config (offline: it names
    // PCI NICs this machine does not have).
    let check = Command::new(root.join("usr/bin/espgw"))
        .args(["--check", "--offline", "--config"])
        .arg(root.join("etc/espgw/espgw.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("is valid"));
}
