//! IKE fragments (RFC 7383) delivered in any order, repeated or corrupted
//! into the reassembly (`control::ike::fuzzing::fragments`): no panic, and
//! a message comes out only whole, authentic and exactly as sent.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = control::ike::fuzzing::fragments(data) {
        panic!("invariant violated: {violation}");
    }
});
