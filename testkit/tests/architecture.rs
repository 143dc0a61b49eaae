//! The walls between espgw's parts, checked from the sources:
//! - no import circle between the files (modules) of a crate: a module may
//!   use its ancestors (`super::`, the parent's types) but siblings must
//!   form a hierarchy, not a ring;
//! - `unsafe` only in `dpdk-sys` and the DPDK crate, and every block there
//!   says why it is sound (`// SAFETY:`);
//! - the core crate depends on nothing DPDK.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `esp/decap.rs` → `esp::decap`; `esp/mod.rs` → `esp`; `lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// Test-only files are children of what they test and may use anything.
fn is_test_file(m: &str) -> bool {
    m.ends_with("tests") || m.ends_with("_tests") || m.contains("::tests")
}

/// The module a `crate::a::b::c` path lands in: the longest known prefix.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|m| modules.contains(m))
}

fn is_ancestor(a: &str, m: &str) -> bool {
    a.is_empty() || m.starts_with(&format!("{a}::"))
}

/// Module → modules it uses (ancestors excluded), from `crate::` paths and
/// `super::` paths anywhere in its file (use lines and inline paths).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "bin"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut g = BTreeMap::new();
    for f in &files {
        let m = module_of(src, f);
        if is_test_file(&m) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Code only: cut test modules at the bottom of a file.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut uses = BTreeSet::new();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                let p: String =
                    rest[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                if let Some(t) = resolve(p.trim_end_matches(':'), &modules) {
                    uses.insert(t);
                }
                rest = &rest[i + 7..];
            }
        }
        uses.retain(|t| t != &m && !is_ancestor(t, &m) && !is_test_file(t));
        g.insert(m, uses);
    }
    g
}

/// A cycle in the graph, if any (as the modules on it).
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for t in g.get(n).into_iter().flatten() {
            match state.get(t.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == t).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(t.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(t, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_import_circle_between_files() {
    for krate in ["core", "dpdk", "control"] {
        let g = graph(&repo().join(krate).join("src"));
        assert!(g.len() > 3, "{krate}: modules found");
        if let Some(c) = find_cycle(&g) {
            panic!("{krate}: import circle {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let mods: BTreeSet<String> = ["esp".to_string(), "esp::seq".to_string()].into();
    assert_eq!(resolve("esp::seq::SeqSpace", &mods).as_deref(), Some("esp::seq"));
    assert_eq!(resolve("esp::Sa", &mods).as_deref(), Some("esp"));
}

#[test]
fn unsafe_only_in_the_dpdk_crates_and_always_justified() {
    let count = |dir: &str| {
        let mut files = Vec::new();
        rust_files(&repo().join(dir), &mut files);
        files
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(f).unwrap();
                t.lines().filter(|l| !l.trim_start().starts_with("//") && l.contains("unsafe ")).count()
            })
            .sum::<usize>()
    };
    for dir in ["core/src", "control/src", "testkit/src", "tests"] {
        assert_eq!(count(dir), 0, "{dir} must have no unsafe code");
    }
    for (f, text) in
        ["core/src/lib.rs", "testkit/src/lib.rs"].iter().map(|f| (f, std::fs::read_to_string(repo().join(f)).unwrap()))
    {
        assert!(text.contains("#![forbid(unsafe_code)]"), "{f} forbids unsafe");
    }
    // In the DPDK crate every unsafe block has its SAFETY comment just above.
    let mut files = Vec::new();
    rust_files(&repo().join("dpdk/src"), &mut files);
    for f in files {
        let t = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let code = l.split("//").next().unwrap();
            if code.contains("unsafe {") || code.contains("unsafe impl") {
                let above = lines[i.saturating_sub(4)..i].iter().any(|a| a.contains("SAFETY:"));
                let inline = l.contains("SAFETY:");
                assert!(above || inline, "{}:{}: unsafe without a SAFETY comment", f.display(), i + 1);
            }
        }
    }
}

#[test]
fn the_core_crate_depends_on_nothing_dpdk() {
    let toml = std::fs::read_to_string(repo().join("core/Cargo.toml")).unwrap();
    let deps = toml.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    for banned in ["dpdk", "core_affinity", "espgw-dpdk", "libc"] {
        assert!(
            !deps.lines().any(|l| l.split('=').next().unwrap().trim().starts_with(banned)),
            "core depends on {banned}"
        );
    }
    // And the lock file agrees: nothing espgw-core pulls in links DPDK.
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "espgw-core", "-e", "normal,build", "--prefix", "none", "--offline"])
        .current_dir(repo())
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.contains("espgw-core"), "{tree}");
    assert!(!tree.contains("dpdk-sys") && !tree.contains("bindgen"), "core pulls DPDK in:\n{tree}");
}
