//! ICMP "fragmentation needed" reports quoting the gateway's own ESP (any
//! MTU, quote length, flipped quote bytes), and ICMP to the gateway.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = espgw_core::lab::icmp_too_big(data) {
        panic!("invariant violated: {violation}");
    }
});
