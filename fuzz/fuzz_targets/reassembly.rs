//! Fragments of sealed ESP cut, reordered, overlapped, duplicated and
//! mixed as the fuzzer says; a clean tiling must deliver the packet.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = espgw_core::lab::reassembly(data) {
        panic!("invariant violated: {violation}");
    }
});
