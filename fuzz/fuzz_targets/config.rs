//! The configuration parser on any text: errors locate a real line and
//! never print a key (`control::fuzzing`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = control::fuzzing::config(data) {
        panic!("invariant violated: {violation}");
    }
});
