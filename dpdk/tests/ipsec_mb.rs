//! intel-ipsec-mb as the core's external backend: registered, chosen by
//! `auto`, and byte-identical to the built-in RustCrypto backend (whose known
//! answers the core tests) on bursts with and without ESN, across 2^32, with
//! a broken ICV failing alone whichever of its bytes is wrong (the tag
//! comparison is word-wise).

use espgw_core::crypto::{Algorithm, Backend, Transform};
use espgw_core::esp::{EspError, Mode, Sa, SaConfig};
use espgw_core::packet::VecBuf;

fn udp4(len: usize, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; len];
    p[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 1, 10, 0, 2, 2]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    let c = espgw_core::packet::ip::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn registered_auto_and_identical_to_rustcrypto() {
    espgw_dpdk::ipsec_mb::register();
    assert!(espgw_dpdk::ipsec_mb::arch().is_some(), "intel-ipsec-mb runs on this CPU");
    let t = Transform::new(Algorithm::AesGcm128, Backend::Auto, &[7; 20], &[], [0; 16]).unwrap();
    assert_eq!(t.backend(), Backend::IpsecMb, "auto picks the fastest measured backend");
    assert!(Transform::new(Algorithm::NullHmacSha1, Backend::IpsecMb, &[], &[1; 20], [0; 16]).is_err());

    let mode = Mode::Tunnel { local: "192.0.2.1".parse().unwrap(), remote: "198.51.100.1".parse().unwrap() };
    for a in [
        Algorithm::AesGcm128,
        Algorithm::AesGcm256,
        Algorithm::Chacha20Poly1305,
        Algorithm::AesCbc128HmacSha1,
        Algorithm::AesCbc256HmacSha1,
    ] {
        for esn in [false, true] {
            let ek: Vec<u8> = (0..a.enc_key_len() as u8).map(|i| i.wrapping_mul(7) ^ 0x31).collect();
            let ak: Vec<u8> = (0..a.auth_key_len() as u8).map(|i| i ^ 0xa5).collect();
            let sealed_by = |backend: Backend| {
                let mut cfg = SaConfig::new(0x1000, a, &ek, &ak, mode);
                cfg.esn = esn;
                cfg.backend = backend;
                let out = Sa::with_iv_seed(&cfg, [9; 16]).unwrap();
                let inn = Sa::with_iv_seed(&cfg, [9; 16]).unwrap();
                assert_eq!(out.backend(), backend);
                if esn {
                    out.advance_seq((1u64 << 32) - 20);
                }
                let plain: Vec<Vec<u8>> = (0..40).map(|i| udp4(28 + (i * 37) % 1400, i as u8)).collect();
                let mut bufs: Vec<VecBuf> = plain.iter().map(|p| VecBuf::from_slice(p)).collect();
                let mut res = vec![Ok(()); 40];
                out.encap_burst(&mut bufs, &mut res);
                assert!(res.iter().all(Result::is_ok), "{a:?} {backend:?}: {res:?}");
                (bufs.iter().map(VecBuf::to_vec).collect::<Vec<_>>(), inn, plain)
            };
            let (reference, _, _) = sealed_by(Backend::RustCrypto);
            let (mb, inn, plain) = sealed_by(Backend::IpsecMb);
            assert!(reference == mb, "{a:?} esn={esn}: ipsec-mb differs from RustCrypto");
            // Open with ipsec-mb: packet k < ICV length has byte k of its ICV
            // broken (every position of the word-wise comparison).
            let icv = a.icv_len();
            let mut rx: Vec<VecBuf> = mb.iter().map(|p| VecBuf::from_slice(p)).collect();
            for (k, b) in rx.iter_mut().enumerate().take(icv) {
                let mut broken = mb[k].clone();
                let n = broken.len();
                broken[n - icv + k] ^= 0x40;
                *b = VecBuf::from_slice(&broken);
            }
            let mut dres = vec![Err(EspError::Truncated); 40];
            inn.decap_burst(&mut rx, &mut dres);
            for (i, r) in dres.iter().enumerate() {
                if i < icv {
                    assert_eq!(r, &Err(EspError::AuthFailed), "{a:?} esn={esn}: ICV byte {i} broken");
                } else {
                    assert!(r.is_ok(), "{a:?} esn={esn} packet {i}: {r:?}");
                    assert_eq!(rx[i].to_vec(), plain[i]);
                }
            }
        }
    }
}
