//! `scripts/deps.sh` on simulated machines: for every package it names, a
//! machine that lacks exactly that package gets exactly that package installed.
//!
//! `dpkg-query` and `apt-get` are stubs on `PATH`: the stub dpkg-query reports
//! every package installed except the ones listed in `$MISSING`, and the stub
//! apt-get records its arguments and "installs" them (removes them from the
//! missing file). Nothing on the real machine is touched. This is the check
//! that would have caught the libclang-dev bug (a file glob matched the
//! preinstalled libclang-cpp, so libclang-dev was never installed).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/deps.sh")
}

fn list(group: &str) -> Vec<String> {
    let out = Command::new("bash").arg(script()).args(["--list", group]).output().unwrap();
    assert!(out.status.success(), "deps.sh --list {group}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

struct FakeMachine {
    dir: tempfile::TempDir,
}

impl FakeMachine {
    /// A machine where every Debian package is installed except `missing`.
    fn lacking(missing: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(dir.path().join("missing"), missing.iter().map(|p| format!("{p}\n")).collect::<String>())
            .unwrap();
        let state = dir.path().display();
        // dpkg-query -W -f='${Status}' PKG
        stub(
            &bin,
            "dpkg-query",
            &format!(
                r#"pkg="${{@: -1}}"
if grep -qx -- "$pkg" {state}/missing; then echo "dpkg-query: no packages found matching $pkg" >&2; exit 1; fi
printf 'install ok installed'"#
            ),
        );
        // apt-get update | apt-get install -y -qq --no-install-recommends PKGS...
        stub(
            &bin,
            "apt-get",
            &format!(
                r#"echo "$@" >> {state}/apt.log
if [ "$1" = install ]; then for a in "$@"; do case "$a" in -*|install) ;; *) grep -vx -- "$a" {state}/missing > {state}/m.new; mv {state}/m.new {state}/missing;; esac; done; fi"#
            ),
        );
        // The machine's Python has the oracles; pip must not be called.
        stub(&bin, "pkg-config", "echo 22.11.11");
        FakeMachine { dir }
    }

    fn run(&self, group: &str) -> (bool, String, Vec<String>) {
        let path = format!("{}:{}", self.dir.path().join("bin").display(), std::env::var("PATH").unwrap());
        let out = Command::new("bash")
            .arg(script())
            .arg(group)
            .env("PATH", path)
            .env_remove("ESPGW_DEPS_DRY_RUN")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let log = std::fs::read_to_string(self.dir.path().join("apt.log")).unwrap_or_default();
        let installs = log
            .lines()
            .filter(|l| l.starts_with("install"))
            .flat_map(|l| l.split_whitespace().filter(|a| !a.starts_with('-') && *a != "install"))
            .map(str::to_string)
            .collect();
        (out.status.success(), text, installs)
    }
}

fn stub(bin: &Path, name: &str, body: &str) {
    let p = bin.join(name);
    std::fs::write(&p, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn lists_name_the_packages_bindgen_and_dpdk_need() {
    let build = list("build");
    for p in ["libclang-dev", "libdpdk-dev", "dpdk", "libipsec-mb-dev", "pkg-config"] {
        assert!(build.contains(&p.to_string()), "build list lacks {p}: {build:?}");
    }
    let test = list("test");
    for p in ["prometheus", "tcpdump", "iproute2", "python3"] {
        assert!(test.contains(&p.to_string()), "test list lacks {p}: {test:?}");
    }
}

#[test]
fn each_missing_package_is_installed_and_nothing_else() {
    assert!(running_as_root(), "the deps script installs as root; tests run as root on CI");
    let mut all = list("build");
    all.extend(list("test"));
    assert!(all.len() >= 10);
    for pkg in &all {
        let m = FakeMachine::lacking(&[pkg]);
        let (ok, text, installs) = m.run("test");
        assert!(ok, "deps.sh failed on a machine without {pkg}:\n{text}");
        assert_eq!(installs, vec![pkg.clone()], "machine without {pkg}: apt-get install got {installs:?}\n{text}");
    }
}

#[test]
fn a_complete_machine_installs_nothing() {
    let m = FakeMachine::lacking(&[]);
    let (ok, text, installs) = m.run("test");
    assert!(ok, "{text}");
    assert!(installs.is_empty(), "{installs:?}");
}

#[test]
fn the_preinstalled_libclang_cpp_does_not_count_as_libclang_dev() {
    // The fresh image has libclang-cpp14 (with a libclang-cpp.so file) but not
    // libclang-dev: only the package status decides.
    let m = FakeMachine::lacking(&["libclang-dev"]);
    let (ok, text, installs) = m.run("build");
    assert!(ok, "{text}");
    assert_eq!(installs, vec!["libclang-dev".to_string()]);
}

#[test]
fn a_package_apt_could_not_deliver_is_an_error() {
    let m = FakeMachine::lacking(&["libdpdk-dev"]);
    // apt-get "succeeds" but installs nothing.
    stub(&m.dir.path().join("bin"), "apt-get", "exit 0");
    let (ok, text, _) = m.run("build");
    assert!(!ok, "a silently failed install must fail the script:\n{text}");
    assert!(text.contains("libdpdk-dev is still not installed"), "{text}");
}

#[test]
fn a_half_removed_package_counts_as_missing() {
    let m = FakeMachine::lacking(&[]);
    // dpkg knows the package but only its config files are left.
    stub(
        &m.dir.path().join("bin"),
        "dpkg-query",
        &format!(
            r#"pkg="${{@: -1}}"
if [ "$pkg" = prometheus ] && ! grep -q prometheus {0}/apt.log 2>/dev/null; then printf 'deinstall ok config-files'; exit 0; fi
printf 'install ok installed'"#,
            m.dir.path().display()
        ),
    );
    let (ok, text, installs) = m.run("test");
    assert!(ok, "{text}");
    assert_eq!(installs, vec!["prometheus".to_string()]);
}

/// `scripts/rust_tools.sh` on a simulated machine: `rustup` and `cargo` are
/// stubs that report the components and crates in `have` and log what they
/// are asked to install.
fn rust_tools(group: &str, have: &[&str]) -> (bool, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("log");
    let listed =
        |kind: &str| have.iter().filter_map(|h| h.strip_prefix(kind)).map(|h| format!("{h}\n")).collect::<String>();
    std::fs::write(dir.path().join("components"), listed("component:")).unwrap();
    std::fs::write(dir.path().join("crates"), listed("crate:")).unwrap();
    let d = dir.path().display();
    stub(
        &bin,
        "rustup",
        &format!(
            r#"case "$1" in
  toolchain) echo "nightly-x86_64-unknown-linux-gnu" ;;
  component) if [ "$2" = list ]; then cat {d}/components; else echo "rustup $*" >> {log}; fi ;;
esac"#,
            log = log.display()
        ),
    );
    stub(
        &bin,
        "cargo",
        &format!(
            r#"if [ "$2" = install ] && [ "$3" = --list ]; then cat {d}/crates; exit 0; fi
echo "cargo $*" >> {log}"#,
            log = log.display()
        ),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rust_tools.sh"))
        .arg(group)
        .env("PATH", path)
        .env_remove("ESPGW_DEPS_DRY_RUN")
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
    (out.status.success(), calls)
}

#[test]
fn each_missing_rust_tool_is_installed_and_nothing_else() {
    let all = [
        "component:miri-x86_64-unknown-linux-gnu",
        "component:rust-src",
        "component:llvm-tools-x86_64-unknown-linux-gnu",
        "crate:cargo-fuzz v0.13.2:",
    ];
    // Everything there: nothing installed (miri also sets up its sysroot).
    for group in ["fuzz", "coverage", "miri"] {
        let (ok, calls) = rust_tools(group, &all);
        assert!(ok, "{group}");
        assert!(calls.iter().all(|c| c.contains("miri setup")), "{group}: {calls:?}");
    }
    // Each one missing: exactly that one installed.
    for (group, missing, install) in [
        ("fuzz", 3, "cargo +nightly install cargo-fuzz --locked"),
        ("coverage", 2, "rustup component add --toolchain nightly llvm-tools"),
        ("coverage", 3, "cargo +nightly install cargo-fuzz --locked"),
        ("miri", 0, "rustup component add --toolchain nightly miri"),
        ("miri", 1, "rustup component add --toolchain nightly rust-src"),
    ] {
        let have: Vec<&str> = all.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, h)| *h).collect();
        let (ok, calls) = rust_tools(group, &have);
        assert!(ok, "{group} without {}", all[missing]);
        let installs: Vec<&String> = calls.iter().filter(|c| !c.contains("miri setup")).collect();
        assert_eq!(installs, [install], "{group} without {}", all[missing]);
    }
}
