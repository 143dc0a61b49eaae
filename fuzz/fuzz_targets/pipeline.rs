//! Operation sequences through the lab gateway (frames on either port, host
//! packets, ESP sealed by the peer and mutated, time passing); every output
//! is checked against the invariants in `espgw_core::lab`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = espgw_core::lab::drive(data) {
        panic!("invariant violated: {violation}");
    }
});
