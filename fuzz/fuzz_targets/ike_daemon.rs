//! Two IKE daemons over a network the input scripts (deliver, corrupt,
//! lose, forge, let time pass, operator commands): no panic, and each
//! store always agrees with its daemon (`control::ike::fuzzing`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = control::ike::fuzzing::daemons(data) {
        panic!("invariant violated: {violation}");
    }
});
