//! ESP cost per packet next to the raw crypto, per algorithm and size.
//!
//! - `raw_seal` / `raw_open`: the transform alone on an ESP-shaped buffer of
//!   the same size (what the crypto library costs);
//! - `encap` / `decap`: the whole ESP stage (header parsing, padding, outer
//!   header, trailer checks, replay window, lifetime counters).
//!
//! `cargo bench -p dataplane --bench esp`; results go to perf/RESULTS.md.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use espgw_core::crypto::{Algorithm, Backend, Transform};
use espgw_core::esp::{pad_len, Decapped, EspError, Mode, Sa, SaConfig};

const BURST: usize = 32;
use espgw_core::packet::ip::{self, proto};
use espgw_core::packet::{PacketBuf, VecBuf};

/// An IPv4/UDP packet of `len` bytes (the inner packet; the frame would be 14 more).
fn inner(len: usize) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto::UDP, 0, 0, 10, 0, 1, 1, 10, 0, 2, 2];
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip::ipv4_set_checksum(&mut p);
    p.resize(len, 0xab);
    p
}

fn backend_for(a: Algorithm) -> Vec<(Backend, &'static str)> {
    if a.is_aead() {
        vec![(Backend::Ring, "ring"), (Backend::RustCrypto, "rustcrypto")]
    } else {
        vec![(Backend::RustCrypto, "rustcrypto")]
    }
}

fn bench(c: &mut Criterion) {
    let tunnel =
        Mode::Tunnel { local: Ipv4Addr::new(192, 0, 2, 1).into(), remote: Ipv4Addr::new(198, 51, 100, 1).into() };
    for a in [
        Algorithm::AesGcm128,
        Algorithm::AesGcm256,
        Algorithm::Chacha20Poly1305,
        Algorithm::AesCbc128HmacSha1,
        Algorithm::NullHmacSha1,
    ] {
        for (backend, bname) in backend_for(a) {
            let mut g = c.benchmark_group(format!("{}/{}", a.name(), bname));
            g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(1200)).sample_size(30);
            for size in [64usize, 512, 1420] {
                g.throughput(Throughput::Bytes(size as u64));
                let enc: Vec<u8> = (0..a.enc_key_len() as u8).collect();
                let auth: Vec<u8> = (0..a.auth_key_len() as u8).collect();
                let mut cfg = SaConfig::new(0x1234, a, &enc, &auth, tunnel);
                cfg.backend = backend;

                // Raw transform on the same amount of ciphertext, over 32
                // separate buffers like the ESP stage below (same cache load).
                let t = Transform::new(a, backend, &enc, &auth, [7; 16]).unwrap();
                let ct = size + pad_len(size, a.pad_align()) + 2;
                let esp_len = 8 + a.iv_len() + ct + a.icv_len();
                g.throughput(Throughput::Bytes((size * BURST) as u64));
                let blank = || -> Vec<Vec<u8>> { (0..BURST).map(|_| vec![0u8; esp_len]).collect() };
                g.bench_function(format!("raw_seal_x32/{size}"), |b| {
                    b.iter_batched_ref(
                        blank,
                        |bufs| bufs.iter_mut().for_each(|x| t.seal(black_box(x), None).unwrap()),
                        BatchSize::SmallInput,
                    )
                });
                let sealed = {
                    let mut x = vec![0u8; esp_len];
                    t.seal(&mut x, None).unwrap();
                    x
                };
                g.bench_function(format!("raw_open_x32/{size}"), |b| {
                    b.iter_batched_ref(
                        || vec![sealed.clone(); BURST],
                        |bufs| bufs.iter_mut().for_each(|x| t.open(black_box(x), None).unwrap()),
                        BatchSize::SmallInput,
                    )
                });

                // The whole ESP stage, through the burst API the pipeline
                // uses (32 packets of one SA); criterion reports time per
                // burst, RESULTS.md divides by 32.
                let pkt = inner(size);
                let out = Sa::new(&cfg).unwrap();
                let fresh = || -> Vec<VecBuf> { (0..BURST).map(|_| VecBuf::from_slice(&pkt)).collect() };
                g.throughput(Throughput::Bytes((size * BURST) as u64));
                let mut res = [Ok(()); BURST];
                g.bench_function(format!("encap_burst32/{size}"), |b| {
                    b.iter_batched_ref(fresh, |p| out.encap_burst(black_box(p), &mut res), BatchSize::SmallInput)
                });
                let tx = Sa::new(&cfg).unwrap();
                let rx = Sa::new(&cfg).unwrap();
                let mut dres: Vec<Result<Decapped, EspError>> = vec![Err(EspError::Truncated); BURST];
                // What is measured works (checked here: a filtered-out bench never runs).
                let mut p = fresh();
                tx.encap_burst(&mut p, &mut [Ok(()); BURST]);
                rx.decap_burst(&mut p, &mut dres);
                assert!(dres.iter().all(|r| r.is_ok()), "{}: {:?}", a.name(), dres[0]);
                g.bench_function(format!("decap_burst32/{size}"), |b| {
                    b.iter_batched_ref(
                        || {
                            let mut p = fresh();
                            let mut r = [Ok(()); BURST];
                            tx.encap_burst(&mut p, &mut r);
                            p
                        },
                        |p| rx.decap_burst(black_box(p), &mut dres),
                        BatchSize::SmallInput,
                    )
                });
                g.throughput(Throughput::Bytes(size as u64));
                assert!(VecBuf::from_slice(&pkt).len() == size);
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
