//! ARP and IPv6 neighbour discovery on both ports, and traffic that makes
//! the gateway resolve neighbours itself.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = espgw_core::lab::neighbor(data) {
        panic!("invariant violated: {violation}");
    }
});
