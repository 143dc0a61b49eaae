//! ESP that authenticates under the lab gateway's inbound key but carries
//! fuzz-chosen plaintext (payload, padding, pad length, next header) or
//! flipped outer bytes; every output checked (`espgw_core::lab`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = espgw_core::lab::esp_sealed(data) {
        panic!("invariant violated: {violation}");
    }
});
