//! IKEv2 messages into the codec (`control::ike::message`): no panic, and
//! whatever decodes re-encodes to bytes that decode to the same message.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = control::ike::message::check_roundtrip(data) {
        panic!("invariant violated: {violation}");
    }
});
