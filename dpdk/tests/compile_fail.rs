//! The DPDK walls are types: these programs must not compile.
//! (Expected errors in `tests/ui/*.stderr`; `TRYBUILD=overwrite` regenerates them.)

#[test]
fn misuse_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
