//! Our crypto in a tight loop: the `t_crypto` bound of the throughput
//! harness (`perf/harness.py`). Seals (or opens) ESP-shaped buffers of the
//! ciphertext length a frame of the given size produces, 32 buffers per round
//! like the pipeline's bursts, and prints `ns_per_op` as JSON.
//!
//! `cargo run --release -p espgw-dpdk --example crypto_loop -- ALGORITHM BACKEND FRAME_BYTES [seal|open] [SECONDS]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use espgw_core::crypto::{Algorithm, Backend, Transform};
use espgw_core::esp::pad_len;

fn main() {
    // intel-ipsec-mb as the gateway uses it (backend `ipsec-mb`, and `auto`).
    espgw_dpdk::ipsec_mb::register();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: crypto_loop ALGORITHM BACKEND FRAME_BYTES [seal|open] [SECONDS]";
    let a = Algorithm::from_name(args.get(1).expect(usage)).expect("algorithm");
    let backend = Backend::from_name(args.get(2).expect(usage)).expect("backend");
    let frame: usize = args.get(3).expect(usage).parse().expect("frame size");
    let op = args.get(4).map_or("seal", |s| s.as_str());
    let secs: f64 = args.get(5).map_or(1.0, |s| s.parse().expect("seconds"));
    // Tunnel mode: the inner IP packet is the frame without Ethernet (14) and FCS (4).
    let inner = frame.saturating_sub(18).max(20);
    let enc: Vec<u8> = (0..a.enc_key_len() as u8).collect();
    let auth: Vec<u8> = (0..a.auth_key_len() as u8).collect();
    let t = Transform::new(a, backend, &enc, &auth, [7; 16]).expect("transform");
    let ct = inner + pad_len(inner, a.pad_align()) + 2;
    let esp_len = 8 + a.iv_len() + ct + a.icv_len();
    let mut bufs = vec![vec![0u8; esp_len]; 32];
    let sealed = {
        let mut x = vec![0u8; esp_len];
        t.seal(&mut x, None).expect("seal");
        x
    };
    // Bursts of 32 through the burst API, as the pipeline calls it (the
    // multi-buffer backend needs whole bursts; the others loop inside).
    let mut results = [Ok(()); 32];
    let mut run = |bufs: &mut Vec<Vec<u8>>| {
        if op == "open" {
            bufs.iter_mut().for_each(|b| b.copy_from_slice(&sealed));
        }
        let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        if op == "open" {
            t.open_burst(black_box(&mut refs), None, &mut results);
        } else {
            t.seal_burst(black_box(&mut refs), None, &mut results);
        }
        assert!(results.iter().all(|r| r.is_ok()));
    };
    // Warm up, then measure.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        run(&mut bufs);
    }
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        run(&mut bufs);
        ops += 32;
    }
    let ns = start.elapsed().as_nanos() as f64 / ops as f64;
    println!(
        "{{\"algorithm\":\"{}\",\"backend\":\"{}\",\"frame\":{frame},\"op\":\"{op}\",\"ns_per_op\":{ns:.2},\"mops\":{:.3}}}",
        a.name(),
        backend.name(),
        1000.0 / ns
    );
}
