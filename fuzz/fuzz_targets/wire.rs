//! The ingress parser on any bytes: it must never panic, and a record it
//! accepts must describe bytes that are really there.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = espgw_core::lab::check_parse(data) {
        panic!("invariant violated: {violation}");
    }
});
