//! Sequences of control API requests (method, path, query, headers, body)
//! against one gateway: documented answers, JSON errors, no change without
//! the token, no key ever returned (`control::fuzzing`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = control::fuzzing::api(data) {
        panic!("invariant violated: {violation}");
    }
});
