//! The fuzz corpora the normal tests replay: every seed
//! (`fuzz/seeds/<target>/`) and every input a fuzzer ever found
//! (`fuzz/regressions/<target>/`), through the target's driver.

use std::path::Path;

/// Run `driver` on each seed and regression of `target`; panics naming the
/// file at the first invariant it breaks. Returns how many inputs ran.
pub fn replay(target: &str, driver: fn(&[u8]) -> Result<(), String>) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        for e in std::fs::read_dir(fuzz.join(dir).join(target)).into_iter().flatten() {
            let p = e.expect("a readable corpus folder").path();
            let input = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            driver(&input).unwrap_or_else(|v| panic!("{}: {v}", p.display()));
            n += 1;
        }
    }
    n
}
