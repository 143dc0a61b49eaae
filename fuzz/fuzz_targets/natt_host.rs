//! NAT traversal and the host path: UDP to the gateway's NAT-T port
//! (keepalives, IKE markers, ESP, junk), ESP that B seals in UDP and a NAT
//! rewrites, frames and packets from the kernel behind the host port; every
//! output is checked against the invariants in `espgw_core::lab`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = espgw_core::lab::natt_host(data) {
        panic!("invariant violated: {violation}");
    }
});
