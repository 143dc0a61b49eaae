//! The IKEv2 codec against scapy's independent IKEv2 layer, error cases,
//! and the round-trip property over mutated messages.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::message::*;

fn oracle(args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/py/ike_oracle.py");
    let out = Command::new("python3").arg(script).args(args).output().expect("python3 with scapy (make test-deps)");
    assert!(out.status.success(), "ike_oracle.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scapy_messages() -> Vec<Vec<u8>> {
    oracle(&["build"]).as_array().unwrap().iter().map(|h| hex::decode(h.as_str().unwrap()).unwrap()).collect()
}

/// What scapy builds, we read — and write back byte for byte.
#[test]
fn scapy_messages_decode_and_reencode_byte_exact() {
    let msgs = scapy_messages();
    assert_eq!(msgs.len(), 3);
    for b in &msgs {
        let m = Message::decode(b).unwrap_or_else(|e| panic!("{e}: {}", hex::encode(b)));
        assert_eq!(m.encode(), *b, "re-encoded differently: {m:?}");
    }
    let init = Message::decode(&msgs[0]).unwrap();
    assert_eq!((init.header.spi_i, init.header.spi_r), (0x1111_1111_1111_1111, 0));
    assert_eq!(
        (init.header.exchange, init.header.is_initiator(), init.header.is_response()),
        (exchange::IKE_SA_INIT, true, false)
    );
    let Payload::Sa(props) = &init.payloads[0] else { panic!("{:?}", init.payloads[0]) };
    let t = &props[0].transforms;
    assert_eq!((props[0].number, props[0].protocol, t.len()), (1, 1, 3));
    assert_eq!((t[0].kind, t[0].id, t[0].key_length()), (1, 20, Some(128)), "ENCR AES-GCM-16, 128-bit key");
    assert_eq!((t[1].kind, t[1].id, t[2].kind, t[2].id), (2, 5, 4, 31), "PRF HMAC-SHA256, DH x25519");
    assert_eq!(init.payloads[1], Payload::Ke { group: 31, data: (0..32).collect() });
    assert_eq!(init.payloads[2], Payload::Nonce((100..132).collect()));
    assert!(matches!(&init.payloads[3], Payload::Notify { kind: 16388, data, .. } if data == &[0xaa; 20]));
    let auth = Message::decode(&msgs[1]).unwrap();
    assert_eq!(auth.payloads[0], Payload::Id { initiator: true, id_type: 2, data: b"gw.example".to_vec() });
    let Payload::Ts { initiator: true, selectors } = &auth.payloads[2] else { panic!() };
    assert_eq!(
        selectors[0],
        TrafficSelector {
            protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: "10.0.1.0".parse().unwrap(),
            end: "10.0.1.255".parse().unwrap()
        }
    );
    let enc = Message::decode(&msgs[2]).unwrap();
    assert_eq!(enc.payloads, vec![Payload::Encrypted { first: kind::NOTIFY, body: vec![1; 48] }]);
}

/// What we write, scapy reads as we meant it.
#[test]
fn our_messages_are_read_by_scapy() {
    // ENCR AES-GCM-16 with a 256-bit key, PRF HMAC-SHA2-256, group 31.
    let sa = Payload::Sa(vec![super::sa_init::SUITES[1].proposal(vec![])]);
    let init = Message {
        header: Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: 0,
            minor: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
        },
        payloads: vec![
            sa,
            Payload::Ke { group: 31, data: vec![7; 32] },
            Payload::Nonce(vec![9; 32]),
            Payload::Notify { protocol: 0, spi: vec![], kind: 16388, data: vec![0xcc; 20] },
        ],
    };
    let auth = Message {
        header: Header { spi_r: 0x1111, exchange: exchange::IKE_AUTH, message_id: 1, ..init.header },
        payloads: vec![
            Payload::Id { initiator: true, id_type: 2, data: b"espgw.example".to_vec() },
            Payload::Auth { method: 2, data: vec![3; 32] },
            Payload::VendorId(b"espgw".to_vec()),
        ],
    };
    let hexes: Vec<String> = [&init, &auth].iter().map(|m| hex::encode(m.encode())).collect();
    let got = oracle(&["parse", &hexes[0], &hexes[1]]);
    let (a, b) = (&got[0], &got[1]);
    assert_eq!(
        (a["init_spi"].as_str(), a["exch"].as_u64(), a["flags"].as_u64()),
        (Some("0102030405060708"), Some(34), Some(8))
    );
    assert_eq!(a["length"].as_u64(), Some(init.encode().len() as u64));
    let names: Vec<&str> = a["payloads"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["IKEv2 SA", "IKEv2 Key Exchange", "IKEv2 Nonce", "IKEv2 Notify"]);
    assert_eq!(a["payloads"][1]["ke"], hex::encode([7u8; 32]));
    assert_eq!(
        (a["payloads"][3]["type"].as_u64(), a["payloads"][3]["data"].as_str()),
        (Some(16388), Some(&*hex::encode([0xcc; 20])))
    );
    assert_eq!(b["payloads"][0]["id"], hex::encode(b"espgw.example"));
    assert_eq!(b["payloads"][1]["method"], 2);
    assert_eq!(b["payloads"][2]["vendor"], hex::encode(b"espgw"));
}

/// Every way a message can lie is refused with its own reason.
#[test]
fn malformed_messages_are_refused_by_reason() {
    let good = scapy_messages().remove(0);
    assert_eq!(Message::decode(&good[..27]), Err(IkeError::Truncated));
    assert_eq!(Message::decode(&good[..good.len() - 1]), Err(IkeError::Truncated), "length says more");
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(Message::decode(&longer), Err(IkeError::BadLength));
    let mut v1 = good.clone();
    v1[17] = 0x10;
    assert_eq!(Message::decode(&v1), Err(IkeError::Version(1)));
    // A payload length below its header, or past the end.
    let mut short = good.clone();
    short[28 + 2..28 + 4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(Message::decode(&short), Err(IkeError::BadPayloadLength));
    // An unknown payload: kept when not critical, refused when critical (§2.5).
    let unknown = |critical: bool| {
        let mut m = good[..28].to_vec();
        m[16] = 200;
        m.extend_from_slice(&[0, if critical { 0x80 } else { 0 }, 0, 6, 0xde, 0xad]);
        let l = (m.len() as u32).to_be_bytes();
        m[24..28].copy_from_slice(&l);
        m
    };
    assert_eq!(
        Message::decode(&unknown(false)).unwrap().payloads,
        vec![Payload::Unknown { kind: 200, data: vec![0xde, 0xad] }]
    );
    assert_eq!(Message::decode(&unknown(true)), Err(IkeError::UnsupportedCritical(200)));
    // Bytes after the Encrypted payload, or after the chain's end.
    let mut enc = scapy_messages().remove(2);
    let sk_len = u16::from_be_bytes([enc[30], enc[31]]) - 4;
    enc[30..32].copy_from_slice(&sk_len.to_be_bytes());
    assert_eq!(Message::decode(&enc), Err(IkeError::AfterEncrypted(kind::SK)));
    let mut trailing = unknown(false);
    trailing[28 + 3] = 5;
    assert_eq!(Message::decode(&trailing), Err(IkeError::BadPayloadLength));
    // A proposal whose transform count lies.
    let mut lie = good.clone();
    lie[28 + 4 + 7] = 4;
    assert_eq!(Message::decode(&lie), Err(IkeError::Malformed(kind::SA)));
}

/// The codec's property, over many mutations of real messages: whatever
/// decodes, encodes to bytes that decode to the same message.
#[test]
fn mutated_messages_round_trip_or_are_refused() {
    let mut x: u32 = 0x1234_5678;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut accepted = 0;
    for base in scapy_messages() {
        for _ in 0..3000 {
            let mut m = base.clone();
            for _ in 0..1 + rnd() % 3 {
                let i = rnd() as usize % m.len();
                m[i] ^= 1 << (rnd() % 8);
            }
            check_roundtrip(&m).unwrap();
            accepted += usize::from(Message::decode(&m).is_ok());
        }
    }
    assert!(accepted > 1000, "the mutations must reach decodable messages ({accepted})");
}

mod crypto {
    use super::super::crypto::*;
    use super::super::message::*;
    use std::path::PathBuf;
    use std::process::Command;

    fn oracle(args: &[&str]) -> serde_json::Value {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/py/ike_crypto_oracle.py");
        let out = Command::new("python3").arg(script).args(args).output().expect("python3 with cryptography");
        assert!(out.status.success(), "ike_crypto_oracle.py: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// prf+ against RFC 4868's HMAC-SHA-256 test case 1 (one block) and the
    /// IKE SA's seven keys and a child's KEYMAT against an independent
    /// implementation (pyca/cryptography's HMAC).
    #[test]
    fn key_derivation_matches_an_independent_implementation() {
        // RFC 4231 §4.2 (HMAC-SHA-256 test case 1): the PRF itself.
        let k = [0x0b; 20];
        assert_eq!(
            hex::encode(&*prf(Prf::HmacSha256, &k, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let (ni, nr, gir) = ((0..32).collect::<Vec<u8>>(), (32..64).collect::<Vec<u8>>(), vec![0x5a; 32]);
        let (spi_i, spi_r) = (0x1122_3344_5566_7788u64, 0x99aa_bbcc_ddee_ff00u64);
        for (alg, name, encr, integ) in [
            (Prf::HmacSha256, "sha256", 20usize, 0usize),
            (Prf::HmacSha256, "sha256", 36, 0),
            (Prf::HmacSha256, "sha256", 16, 32),
            (Prf::HmacSha384, "sha384", 36, 0),
            (Prf::HmacSha512, "sha512", 32, 20),
        ] {
            let ours = IkeKeys::derive(alg, &ni, &nr, &gir, spi_i, spi_r, encr, integ);
            assert_eq!(ours.sk_d.len(), alg.output_len());
            let theirs = oracle(&[
                "keys",
                &hex::encode(&ni),
                &hex::encode(&nr),
                &hex::encode(&gir),
                &format!("{spi_i:016x}"),
                &format!("{spi_r:016x}"),
                &encr.to_string(),
                &integ.to_string(),
                name,
            ]);
            for (name, key) in [
                ("sk_d", &ours.sk_d),
                ("sk_ai", &ours.sk_ai),
                ("sk_ar", &ours.sk_ar),
                ("sk_ei", &ours.sk_ei),
                ("sk_er", &ours.sk_er),
                ("sk_pi", &ours.sk_pi),
                ("sk_pr", &ours.sk_pr),
            ] {
                assert_eq!(hex::encode(&***key), theirs[name].as_str().unwrap(), "{name} ({encr}/{integ})");
            }
            assert!(!format!("{ours:?}").contains(&hex::encode(&*ours.sk_d)), "keys are never printed");
        }
        let km = child_keymat(Prf::HmacSha256, &[7; 32], None, &ni, &nr, 72);
        let theirs = oracle(&["keymat", &hex::encode([7u8; 32]), &hex::encode(&ni), &hex::encode(&nr), "72"]);
        assert_eq!(hex::encode(&*km), theirs["keymat"].as_str().unwrap());
    }

    /// X25519 with pyca/cryptography on the other side: both compute the same g^ir.
    #[test]
    fn x25519_agrees_with_an_independent_peer() {
        let ours = Dh::generate(GROUP_X25519).unwrap();
        let theirs = oracle(&["x25519", &hex::encode(ours.public())]);
        let peer = hex::decode(theirs["public"].as_str().unwrap()).unwrap();
        let shared = ours.agree(&peer).unwrap();
        assert_eq!(hex::encode(&*shared), theirs["shared"].as_str().unwrap());
        assert_eq!(Dh::generate(GROUP_X25519).unwrap().agree(&[0; 31]).err(), Some(IkeCryptoError::BadKe));
    }

    /// The Encrypted payload with AES-CBC and HMAC-SHA256-128 / HMAC-SHA1-96
    /// (RFC 7296 §3.14) both ways with pyca/cryptography: the IV random and
    /// padding to the block on our side; any flipped byte is refused.
    #[test]
    fn cbc_encrypted_payload_interoperates_and_is_authenticated() {
        for (integ, name, alen, ekey_len) in
            [(Integ::HmacSha256_128, "sha256", 32, 16), (Integ::HmacSha1_96, "sha1", 20, 32)]
        {
            let (ek, ak): (Vec<u8>, Vec<u8>) = ((0..ekey_len).map(|i| i as u8 * 5).collect(), vec![0x33; alen]);
            let key = SkKey { alg: SkAlg::AesCbc(integ), encr: &ek, integ: &ak };
            let header = Header {
                spi_i: 1,
                spi_r: 2,
                minor: 0,
                exchange: exchange::IKE_AUTH,
                flags: flags::INITIATOR,
                message_id: 1,
            };
            let inner = vec![
                Payload::Id { initiator: true, id_type: 2, data: b"espgw.example".to_vec() },
                Payload::Auth { method: 2, data: vec![0x42; 32] },
            ];
            let ours = encrypt_message(header, &inner, key, [9; 8]).unwrap();
            let again = encrypt_message(header, &inner, key, [9; 8]).unwrap();
            assert_ne!(ours, again, "a fresh random IV each time");
            let opened = oracle(&["open_cbc", name, &hex::encode(&ek), &hex::encode(&ak), &hex::encode(&ours)]);
            let mut chain = Vec::new();
            encode_chain(&inner, &mut chain);
            assert_eq!(opened["chain"].as_str().unwrap(), hex::encode(&chain), "{name}");
            let theirs = oracle(&[
                "seal_cbc",
                name,
                &hex::encode(&ek),
                &hex::encode(&ak),
                "1",
                "2",
                "35",
                "32",
                "1",
                &kind::IDI.to_string(),
                &hex::encode(&chain),
            ]);
            let theirs = hex::decode(theirs["message"].as_str().unwrap()).unwrap();
            let (m, back) = decrypt_message(&theirs, key).unwrap();
            assert_eq!((m.header.flags, back), (flags::RESPONSE, inner));
            for i in 0..ours.len() {
                let mut bad = ours.clone();
                bad[i] ^= 0x01;
                assert!(decrypt_message(&bad, key).is_err(), "{name}: byte {i} flipped and accepted");
            }
        }
    }

    /// ECP-256/384 (RFC 5903: KE data x | y, g^ir the x coordinate) and
    /// MODP-2048 (RFC 3526, values of the prime's length) against
    /// pyca/cryptography; values off the curve or outside 1 < y < p - 1
    /// are refused.
    #[test]
    fn ecp_and_modp_agree_with_an_independent_peer() {
        use super::super::crypto::{GROUP_ECP256, GROUP_ECP384, GROUP_MODP2048};
        for (group, len) in [(GROUP_ECP256, 64), (GROUP_ECP384, 96), (GROUP_MODP2048, 256)] {
            let ours = Dh::generate(group).unwrap();
            assert_eq!(ours.public().len(), len, "group {group}");
            let theirs = match group {
                GROUP_MODP2048 => oracle(&["modp2048", &hex::encode(ours.public())]),
                g => oracle(&["ecp", &g.to_string(), &hex::encode(ours.public())]),
            };
            let peer = hex::decode(theirs["public"].as_str().unwrap()).unwrap();
            let shared = ours.agree(&peer).unwrap();
            assert_eq!(hex::encode(&*shared), theirs["shared"].as_str().unwrap(), "group {group}");
            // Forged values.
            let bad = |v: Vec<u8>| Dh::generate(group).unwrap().agree(&v).err();
            assert_eq!(bad(vec![0; len - 1]), Some(IkeCryptoError::BadKe), "short, group {group}");
            if group != GROUP_MODP2048 {
                assert_eq!(bad(vec![0x11; len]), Some(IkeCryptoError::BadKe), "not on the curve, group {group}");
            }
        }
        let one = [&[0u8; 255][..], &[1]].concat();
        assert_eq!(Dh::generate(GROUP_MODP2048).unwrap().agree(&one).err(), Some(IkeCryptoError::BadKe), "y = 1");
        assert_eq!(
            Dh::generate(GROUP_MODP2048).unwrap().agree(&[0xff; 256]).err(),
            Some(IkeCryptoError::BadKe),
            "y > p"
        );
        assert!(Dh::generate(5).is_err(), "MODP-1536 is not run");
    }

    /// Our IKE fragments (RFC 7383) opened by pyca/cryptography give back
    /// the message's inner payloads; ours put back together give the same.
    #[test]
    fn fragments_are_the_rfcs() {
        use super::super::crypto::{fragment, Reassembly};
        let key_bytes = [0x42u8; 20];
        let key = SkKey::gcm(&key_bytes);
        let inner = vec![Payload::VendorId(vec![0x61; 1500]), Payload::Nonce(vec![0x62; 64])];
        let h = Header { spi_i: 1, spi_r: 2, minor: 0, exchange: 35, flags: 0x08, message_id: 1 };
        let whole = encrypt_message(h, &inner, key, [1; 8]).unwrap();
        let mut n = 10u64;
        let frags = fragment(&whole, key, 600, || {
            n += 1;
            n.to_be_bytes()
        })
        .unwrap();
        assert_eq!(frags.len(), 3);
        assert!(frags.iter().all(|f| f.len() <= 600));
        let mut args = vec!["frag".to_string(), hex::encode(key_bytes)];
        args.extend(frags.iter().map(hex::encode));
        let theirs = oracle(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut chain = Vec::new();
        super::super::message::encode_chain(&inner, &mut chain);
        assert_eq!((theirs["first"].as_u64(), theirs["total"].as_u64()), (Some(43), Some(3)));
        assert_eq!(theirs["chain"].as_str().unwrap(), hex::encode(&chain));
        // Ours, out of order, with a duplicate and a forged fragment.
        let mut slot = None;
        let mut forged = frags[1].clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(Reassembly::add(&mut slot, &forged, key).is_err(), "integrity checked per fragment");
        assert!(Reassembly::add(&mut slot, &frags[2], key).unwrap().is_none());
        assert!(Reassembly::add(&mut slot, &frags[2], key).unwrap().is_none());
        assert!(Reassembly::add(&mut slot, &frags[0], key).unwrap().is_none());
        let done = Reassembly::add(&mut slot, &frags[1], key).unwrap().expect("complete");
        let (hdr, got) = super::super::crypto::Inbound::Reassembled(&done).open(key).unwrap();
        assert_eq!((hdr.message_id, got), (1, inner.clone()));
        assert!(slot.is_none());
        // A small message goes whole.
        assert_eq!(fragment(&whole, key, 4000, || [0; 8]).unwrap(), vec![whole]);
        // AES-CBC + HMAC: fragments each sealed and checked on their own as well.
        let (ek, ak) = ([7u8; 32], [9u8; 32]);
        let cbc = SkKey { alg: SkAlg::AesCbc(Integ::HmacSha256_128), encr: &ek, integ: &ak };
        let whole = encrypt_message(h, &inner, cbc, [0; 8]).unwrap();
        let frags = fragment(&whole, cbc, 500, || [0; 8]).unwrap();
        assert!(frags.len() >= 4 && frags.iter().all(|f| f.len() <= 500));
        let mut slot = None;
        let mut done = None;
        for f in frags.iter().rev() {
            done = Reassembly::add(&mut slot, f, cbc).unwrap();
        }
        let done = done.expect("complete");
        assert_eq!(super::super::crypto::Inbound::Reassembled(&done).open(cbc).unwrap().1, inner);
    }

    /// The Encrypted payload (RFC 5282 AES-GCM) both ways with
    /// pyca/cryptography, and a flipped byte anywhere is an integrity failure.
    #[test]
    fn encrypted_payload_interoperates_and_is_authenticated() {
        let ks: Vec<u8> = (0..20).map(|i| i * 3 + 1).collect();
        let header = Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: 0x1112_1314_1516_1718,
            minor: 0,
            exchange: exchange::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: 1,
        };
        let inner = vec![
            Payload::Id { initiator: true, id_type: 2, data: b"espgw.example".to_vec() },
            Payload::Auth { method: 2, data: vec![0x42; 32] },
            Payload::Notify { protocol: 0, spi: vec![], kind: 16384, data: vec![] },
        ];
        let ours = encrypt_message(header, &inner, SkKey::gcm(&ks), [9; 8]).unwrap();
        let opened = oracle(&["open", &hex::encode(&ks), &hex::encode(&ours)]);
        let mut chain = Vec::new();
        encode_chain(&inner, &mut chain);
        assert_eq!(opened["chain"].as_str().unwrap(), hex::encode(&chain));
        assert_eq!(opened["first"].as_u64(), Some(u64::from(kind::IDI)));
        let (m, back) = decrypt_message(&ours, SkKey::gcm(&ks)).unwrap();
        assert_eq!((m.header, back), (header, inner.clone()));
        // Theirs, opened here.
        let theirs = oracle(&[
            "seal",
            &hex::encode(&ks),
            "a1a2a3a4a5a6a7a8",
            "0102030405060708",
            "1112131415161718",
            "35",
            "32",
            "1",
            &kind::IDI.to_string(),
            &hex::encode(&chain),
        ]);
        let theirs = hex::decode(theirs["message"].as_str().unwrap()).unwrap();
        let (m, back) = decrypt_message(&theirs, SkKey::gcm(&ks)).unwrap();
        assert_eq!((m.header.exchange, m.header.flags, back), (exchange::IKE_AUTH, flags::RESPONSE, inner));
        for i in 0..ours.len() {
            let mut bad = ours.clone();
            bad[i] ^= 0x01;
            assert!(decrypt_message(&bad, SkKey::gcm(&ks)).is_err(), "byte {i} flipped and accepted");
        }
        let mut wrong = ks.clone();
        wrong[0] ^= 1;
        assert_eq!(decrypt_message(&ours, SkKey::gcm(&wrong)).err(), Some(IkeCryptoError::Integrity));
    }
}

mod sa_init {
    use super::super::message::*;
    use super::super::sa_init::*;
    use std::net::SocketAddr;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn accept(r: Response) -> (Vec<u8>, Established) {
        match r {
            Response::Accept { message, sa } => (message, *sa),
            Response::Refuse { notify, .. } => panic!("refused with {notify}"),
            Response::Cookie { .. } => panic!("asked for a cookie"),
        }
    }

    /// §2.6: under load the responder asks for a cookie without doing any
    /// Diffie-Hellman or keeping state; the initiator's retry with the
    /// cookie first is accepted, and the keys still agree (the signed
    /// request is the retry). A cookie for another initiator (SPI, address
    /// or nonce), a forged one, or one older than two secrets is refused.
    #[test]
    fn cookies_under_load() {
        let (me, peer) = (addr("198.51.100.1:500"), addr("192.0.2.1:500"));
        let mut jar = CookieJar::new().unwrap();
        let (i, req) = Initiator::start(&SUITES[..1], peer, me).unwrap();
        let Response::Cookie { message } = respond(&req, me, peer, Some(&jar), None, &SUITES).unwrap() else {
            panic!("no cookie")
        };
        let cookie = cookie_asked(&message).expect("a COOKIE notify");
        assert!((5..=64).contains(&cookie.len()));
        assert_eq!(Message::decode(&message).unwrap().header.spi_r, 0, "no responder SPI: no state");
        let retry = with_cookie(&req, &cookie).unwrap();
        assert!(matches!(Message::decode(&retry).unwrap().payloads[0], Payload::Notify { kind: notify::COOKIE, .. }));
        // The same cookie from another address, or on a request with another SPI, is asked for again.
        assert!(matches!(
            respond(&retry, me, addr("192.0.2.9:500"), Some(&jar), None, &SUITES).unwrap(),
            Response::Cookie { .. }
        ));
        let (_, other) = Initiator::start(&SUITES[..1], peer, me).unwrap();
        let stolen = with_cookie(&other, &cookie).unwrap();
        assert!(matches!(respond(&stolen, me, peer, Some(&jar), None, &SUITES).unwrap(), Response::Cookie { .. }));
        let mut forged = cookie.clone();
        *forged.last_mut().unwrap() ^= 1;
        let forged = with_cookie(&req, &forged).unwrap();
        assert!(matches!(respond(&forged, me, peer, Some(&jar), None, &SUITES).unwrap(), Response::Cookie { .. }));
        // One rotation later the cookie is still good; the retry completes the exchange.
        jar.rotate().unwrap();
        let (resp, r) = accept(respond(&retry, me, peer, Some(&jar), None, &SUITES).unwrap());
        assert_eq!(r.request, retry, "IKE_AUTH signs the request that was answered");
        let l = i.complete(retry.clone(), &resp).unwrap();
        assert_eq!(l.keys.sk_d, r.keys.sk_d);
        // Two rotations: gone.
        jar.rotate().unwrap();
        assert!(matches!(respond(&retry, me, peer, Some(&jar), None, &SUITES).unwrap(), Response::Cookie { .. }));
        // Not under load: a cookie is simply ignored.
        assert!(matches!(respond(&retry, me, peer, None, None, &SUITES).unwrap(), Response::Accept { .. }));
        assert_eq!(cookie_asked(&resp), None);
    }

    /// Initiator and responder agree on every key; without a NAT neither
    /// side sees one, through a NAT both do (RFC 7296 §2.23).
    #[test]
    fn both_roles_derive_the_same_keys_and_detect_nat() {
        for suite in SUITES {
            let (i, req) = Initiator::start(&[suite], addr("192.0.2.1:500"), addr("198.51.100.1:500")).unwrap();
            let (resp, r) =
                accept(respond(&req, addr("198.51.100.1:500"), addr("192.0.2.1:500"), None, None, &SUITES).unwrap());
            let l = i.complete(req, &resp).unwrap();
            assert_eq!((l.spi_i, l.spi_r, l.suite), (r.spi_i, r.spi_r, suite));
            for (a, b) in [(&l.keys.sk_d, &r.keys.sk_d), (&l.keys.sk_ei, &r.keys.sk_ei), (&l.keys.sk_er, &r.keys.sk_er)]
            {
                assert_eq!(a, b);
            }
            assert_eq!((l.keys.sk_ei.len(), l.keys.sk_pi.len()), (suite.encr_len(), 32));
            assert_ne!(l.keys.sk_ei, l.keys.sk_er, "one key per direction");
            assert_eq!((l.nat, r.nat), (NatStatus::default(), NatStatus::default()));
            assert!(!format!("{l:?}").contains(&hex::encode(&*l.keys.sk_d)));
        }
        // The initiator at 10.0.0.5:500 behind a NAT that shows it as 203.0.113.9:31000.
        let suite = SUITES[0];
        let (i, req) = Initiator::start(&[suite], addr("10.0.0.5:500"), addr("198.51.100.1:500")).unwrap();
        let (resp, r) =
            accept(respond(&req, addr("198.51.100.1:500"), addr("203.0.113.9:31000"), None, None, &SUITES).unwrap());
        assert_eq!(r.nat, NatStatus { local: false, remote: true }, "the responder sees the initiator behind a NAT");
        let l = i.complete(req, &resp).unwrap();
        assert_eq!(l.nat, NatStatus { local: true, remote: false }, "the initiator learns it is behind one");
        assert!(l.nat.any() && r.nat.any());
    }

    /// A responder that wants another of the offered groups says
    /// INVALID_KE_PAYLOAD naming it; the initiator's second request (same
    /// SPI and nonce, the new KE) gets it; a group not offered is not tried.
    #[test]
    fn the_initiator_retries_with_the_group_the_responder_wants() {
        use super::super::crypto::{GROUP_ECP384, GROUP_MODP2048};
        let (me, peer) = (addr("198.51.100.1:500"), addr("192.0.2.1:500"));
        let offer = Suite::parse("aes128gcm16-prfsha256-x25519-ecp384").unwrap();
        assert_eq!(
            offer.iter().map(|s| s.name()).collect::<Vec<_>>(),
            ["aes128gcm16-prfsha256-x25519", "aes128gcm16-prfsha256-ecp384"]
        );
        let only_ecp384 = Suite::parse("aes128gcm16-ecp384").unwrap();
        let (i, req) = Initiator::start(&offer, peer, me).unwrap();
        let Response::Refuse { message, notify } = respond(&req, me, peer, None, None, &only_ecp384).unwrap() else {
            panic!("accepted a KE of the wrong group")
        };
        assert_eq!(
            (notify, group_asked(&message)),
            (super::super::sa_init::notify::INVALID_KE_PAYLOAD, Some(GROUP_ECP384))
        );
        let spi_i = i.spi_i;
        let (i, retry) = i.with_group(&req, GROUP_ECP384).expect("offered");
        let (a, b) = (Message::decode(&req).unwrap(), Message::decode(&retry).unwrap());
        assert_eq!((b.header.spi_i, b.payloads.len()), (spi_i, a.payloads.len()), "same SPI, same payloads");
        assert!(b.payloads.iter().any(|p| matches!(p, Payload::Ke { group: GROUP_ECP384, data } if data.len() == 96)));
        let (resp, r) = accept(respond(&retry, me, peer, None, None, &only_ecp384).unwrap());
        let l = i.complete(retry, &resp).unwrap();
        assert_eq!((l.suite.group, r.suite.group), (GROUP_ECP384, GROUP_ECP384));
        assert_eq!(l.keys.sk_d, r.keys.sk_d);
        // A group we did not offer is not tried.
        let (i, req) = Initiator::start(&offer, peer, me).unwrap();
        assert!(i.with_group(&req, GROUP_MODP2048).is_none());
        // The responder takes the initiator's KE group when the proposal allows it.
        let (_, req) = Initiator::start(&Suite::parse("aes256gcm16-modp2048-x25519").unwrap(), peer, me).unwrap();
        let (_, r) = accept(respond(&req, me, peer, None, None, &SUITES).unwrap());
        assert_eq!((r.suite.group, r.suite.encr_key), (GROUP_MODP2048, 32), "no round trip: the KE's group");
        assert!(Suite::parse("aes128gcm16-prfmd5-x25519").unwrap_err().contains("prfmd5"));
        assert!(Suite::parse("aes128gcm16").unwrap_err().contains("group"));
    }

    /// The hash of §2.23, against Python's hashlib.
    #[test]
    fn nat_detection_hash_matches_sha1() {
        let h = nat_hash(0x0102030405060708, 0x1112131415161718, addr("192.0.2.1:4500"));
        let py = std::process::Command::new("python3")
            .args([
                "-c",
                "import hashlib,struct,socket;print(hashlib.sha1(struct.pack('>QQ',0x0102030405060708,0x1112131415161718)+socket.inet_aton('192.0.2.1')+struct.pack('>H',4500)).hexdigest())",
            ])
            .output()
            .unwrap();
        assert_eq!(hex::encode(h), String::from_utf8_lossy(&py.stdout).trim());
    }

    /// What the RFC says to answer: no acceptable proposal, or a KE for
    /// another group than the one chosen (INVALID_KE_PAYLOAD naming ours).
    #[test]
    fn refusals_are_the_rfcs() {
        let suite = SUITES[0];
        let (_, req) = Initiator::start(&[suite], addr("192.0.2.1:500"), addr("198.51.100.1:500")).unwrap();
        let mut m = Message::decode(&req).unwrap();
        // 3DES + HMAC-SHA1 only: no proposal chosen.
        m.payloads[0] = Payload::Sa(vec![Proposal {
            number: 1,
            protocol: 1,
            spi: vec![],
            transforms: vec![
                Transform { kind: 1, id: 3, attributes: vec![] },
                Transform { kind: 3, id: 2, attributes: vec![] },
                Transform { kind: 2, id: 5, attributes: vec![] },
                Transform { kind: 4, id: 31, attributes: vec![] },
            ],
        }]);
        let Response::Refuse { message, notify } =
            respond(&m.encode(), addr("198.51.100.1:500"), addr("192.0.2.1:500"), None, None, &SUITES).unwrap()
        else {
            panic!("accepted")
        };
        assert_eq!(notify, super::super::sa_init::notify::NO_PROPOSAL_CHOSEN);
        let r = Message::decode(&message).unwrap();
        assert!(r.header.is_response() && r.header.spi_r == 0);
        // Group 31 proposed, but the KE is group 14's.
        let mut m = Message::decode(&req).unwrap();
        m.payloads[1] = Payload::Ke { group: 14, data: vec![1; 256] };
        let Response::Refuse { message, notify } =
            respond(&m.encode(), addr("198.51.100.1:500"), addr("192.0.2.1:500"), None, None, &SUITES).unwrap()
        else {
            panic!("accepted")
        };
        assert_eq!(notify, super::super::sa_init::notify::INVALID_KE_PAYLOAD);
        assert!(
            matches!(&Message::decode(&message).unwrap().payloads[0], Payload::Notify { data, .. } if data == &[0, 31])
        );
        // The initiator reports the refusal; a response for another SPI is refused.
        let (i, req) = Initiator::start(&[suite], addr("192.0.2.1:500"), addr("198.51.100.1:500")).unwrap();
        let (resp, _) =
            accept(respond(&req, addr("198.51.100.1:500"), addr("192.0.2.1:500"), None, None, &SUITES).unwrap());
        let mut other = Message::decode(&resp).unwrap();
        other.header.spi_i ^= 1;
        assert!(matches!(i.complete(req.clone(), &other.encode()), Err(InitError::Invalid(_))));
        let (i, req) = Initiator::start(&[suite], addr("192.0.2.1:500"), addr("198.51.100.1:500")).unwrap();
        let mut refusal = Message::decode(&req).unwrap();
        refusal.header.flags = flags::RESPONSE;
        refusal.payloads = vec![Payload::Notify { protocol: 0, spi: vec![], kind: 14, data: vec![] }];
        assert_eq!(i.complete(req, &refusal.encode()).err(), Some(InitError::Refused { notify: 14, data: vec![] }));
    }
}

mod auth {
    use super::super::auth::*;
    use super::super::message::TrafficSelector;
    use super::super::sa_init::*;

    fn ts(start: &str, end: &str, proto: u8, ports: (u16, u16)) -> TrafficSelector {
        TrafficSelector {
            protocol: proto,
            start_port: ports.0,
            end_port: ports.1,
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    /// The PSK AUTH of §2.15 against pyca/cryptography, and both sides'
    /// values check out on the other side after a real IKE_SA_INIT.
    #[test]
    fn psk_auth_is_the_rfcs_and_both_sides_verify() {
        let (psk, msg, nonce, skp, id) =
            (b"secret psk".to_vec(), vec![0x11; 60], vec![0x22; 32], vec![0x33; 32], b"gw.example");
        let ours = psk_auth(super::super::crypto::Prf::HmacSha256, &psk, &msg, &nonce, &skp, 2, id);
        let py = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys\nfrom cryptography.hazmat.primitives import hashes, hmac\n\
                 def prf(k,d):\n    h=hmac.HMAC(k,hashes.SHA256()); h.update(d); return h.finalize()\n\
                 maced=prf(b'\\x33'*32, bytes([2,0,0,0])+b'gw.example')\n\
                 print(prf(prf(b'secret psk', b'Key Pad for IKEv2'), b'\\x11'*60+b'\\x22'*32+maced).hex())",
            ])
            .output()
            .unwrap();
        assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
        assert_eq!(hex::encode(&*ours), String::from_utf8_lossy(&py.stdout).trim());

        let a = |s: &str| s.parse().unwrap();
        let (i, req) = Initiator::start(&SUITES[..1], a("192.0.2.1:500"), a("198.51.100.1:500")).unwrap();
        let Response::Accept { message, sa: r } =
            respond(&req, a("198.51.100.1:500"), a("192.0.2.1:500"), None, None, &SUITES).unwrap()
        else {
            panic!()
        };
        let l = i.complete(req, &message).unwrap();
        let psk = b"correct horse";
        let from_i = initiator_auth(&l.keys, psk, &l.request, &l.nr, 2, b"west");
        assert!(verify_psk_auth(&from_i, &initiator_auth(&r.keys, psk, &r.request, &r.nr, 2, b"west")));
        assert!(
            !verify_psk_auth(&from_i, &initiator_auth(&r.keys, b"wrong", &r.request, &r.nr, 2, b"west")),
            "wrong PSK"
        );
        assert!(
            !verify_psk_auth(&from_i, &initiator_auth(&r.keys, psk, &r.request, &r.nr, 2, b"east")),
            "wrong identity"
        );
        let from_r = responder_auth(&r.keys, psk, &r.response, &r.ni, 2, b"east");
        assert!(verify_psk_auth(&from_r, &responder_auth(&l.keys, psk, &l.response, &l.ni, 2, b"east")));
        assert_ne!(from_i, from_r, "each side signs its own message");
        // The child SA's keys: the same KEYMAT on both sides, split in order.
        let (ki, kr) = (l.keys.child_keymat(None, &l.ni, &l.nr, 40), r.keys.child_keymat(None, &r.ni, &r.nr, 40));
        assert_eq!(ki, kr);
        let (i2r, r2i) = split_child_keys(&ki, 20).unwrap();
        assert_eq!((&i2r[..], &r2i[..]), (&ki[..20], &ki[20..]));
        assert!(split_child_keys(&ki, 21).is_none());
    }

    /// §2.9: the responder answers the intersection of what was asked and
    /// what its policy allows.
    #[test]
    fn traffic_selectors_are_narrowed() {
        let asked = [ts("10.0.0.0", "10.0.255.255", 0, (0, 65535)), ts("fd00::", "fd00::ffff", 0, (0, 65535))];
        let allowed = [ts("10.0.1.0", "10.0.1.255", 17, (500, 600)), ts("10.0.9.0", "10.0.9.255", 6, (0, 65535))];
        assert_eq!(
            narrow(&asked, &allowed),
            vec![ts("10.0.1.0", "10.0.1.255", 17, (500, 600)), ts("10.0.9.0", "10.0.9.255", 6, (0, 65535))]
        );
        // Partial overlap of ranges, ports and a protocol clash.
        assert_eq!(
            intersect(&ts("10.0.0.100", "10.0.1.50", 6, (1000, 2000)), &ts("10.0.1.0", "10.0.2.0", 0, (1500, 3000))),
            Some(ts("10.0.1.0", "10.0.1.50", 6, (1500, 2000)))
        );
        assert_eq!(
            intersect(&ts("10.0.0.0", "10.0.0.255", 6, (0, 65535)), &ts("10.0.0.0", "10.0.0.255", 17, (0, 65535))),
            None
        );
        assert_eq!(
            intersect(&ts("10.0.0.0", "10.0.0.255", 0, (0, 65535)), &ts("fd00::", "fd00::1", 0, (0, 65535))),
            None
        );
        assert!(narrow(&[ts("192.168.0.0", "192.168.0.255", 0, (0, 65535))], &allowed).is_empty(), "TS_UNACCEPTABLE");
    }
}

mod ike_auth {
    use super::super::ike_auth::*;
    use super::super::message::TrafficSelector;
    use super::super::sa_init::{self, Established, Initiator, Response, SUITES};
    use espgw_core::crypto::Algorithm;
    use espgw_core::esp::{Mode, Sa, SaConfig};
    use espgw_core::packet::{PacketBuf, VecBuf};
    use zeroize::Zeroizing;

    fn ts(start: &str, end: &str) -> TrafficSelector {
        TrafficSelector {
            protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    fn sa_pair() -> (Established, Established) {
        let a = |s: &str| s.parse().unwrap();
        let (i, req) = Initiator::start(&SUITES[..1], a("192.0.2.1:500"), a("198.51.100.1:500")).unwrap();
        let Response::Accept { message, sa } =
            sa_init::respond(&req, a("198.51.100.1:500"), a("192.0.2.1:500"), None, None, &SUITES).unwrap()
        else {
            panic!("refused")
        };
        (i.complete(req, &message).unwrap(), *sa)
    }

    fn cfgs(psk_i: &[u8], psk_r: &[u8]) -> (AuthConfig, AuthConfig) {
        let (west, east) = (Identity::fqdn("west.example"), Identity::fqdn("east.example"));
        (
            AuthConfig {
                me: west.clone(),
                peer: east.clone(),
                credential: Credential::Psk(Zeroizing::new(psk_i.to_vec())),
                child: Default::default(),
            },
            AuthConfig {
                me: east,
                peer: west,
                credential: Credential::Psk(Zeroizing::new(psk_r.to_vec())),
                child: Default::default(),
            },
        )
    }

    /// A whole IKE_AUTH with PSK: both sides authenticate each other, the
    /// selectors are narrowed, and the child SA's keys and SPIs, installed
    /// as espgw SAs, carry a packet from the initiator's side to the
    /// responder's.
    #[test]
    fn ike_auth_with_psk_yields_working_child_sas() {
        let (l, r) = sa_pair();
        let (ci, cr) = cfgs(b"shared secret", b"shared secret");
        let req =
            request(&l, &ci, 0xc000_0001, &[ts("10.0.1.0", "10.0.1.255")], &[ts("10.0.0.0", "10.0.255.255")], [1; 8])
                .unwrap();
        let (resp, child_r) = respond(
            &r,
            &cr,
            &req,
            0xd000_0002,
            &[ts("10.0.1.0", "10.0.1.255")],
            &[ts("10.0.2.0", "10.0.2.255")],
            [2; 8],
        )
        .unwrap();
        assert_eq!(child_r.tsr, vec![ts("10.0.2.0", "10.0.2.255")], "narrowed to the responder's policy");
        let child_i = complete(&l, &ci, 0xc000_0001, &resp).unwrap();
        assert_eq!((child_i.spi_out, child_r.spi_out), (0xd000_0002, 0xc000_0001), "SPIs crosswise");
        assert_eq!((&child_i.key_out[..], &child_i.key_in[..]), (&child_r.key_in[..], &child_r.key_out[..]));
        assert_ne!(child_i.key_in, child_i.key_out);
        assert_eq!(child_i.tsr, child_r.tsr);
        assert!(!format!("{child_i:?}").contains(&hex::encode(&child_i.key_out[..])), "keys are never printed");
        // Installed as espgw SAs: the initiator's outbound, the responder's inbound.
        let tunnel = Mode::Tunnel { local: "192.0.2.1".parse().unwrap(), remote: "198.51.100.1".parse().unwrap() };
        let out =
            Sa::new(&SaConfig::new(child_i.spi_out, Algorithm::AesGcm128, &child_i.key_out, &[], tunnel)).unwrap();
        let inn = Sa::new(&SaConfig::new(child_r.spi_in, Algorithm::AesGcm128, &child_r.key_in, &[], tunnel)).unwrap();
        let mut p = vec![0x45, 0, 0, 48, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 1, 5, 10, 0, 2, 7];
        espgw_core::packet::ip::ipv4_set_checksum(&mut p);
        p.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 28, 0, 0]);
        p.resize(48, 0x61);
        let mut b = VecBuf::from_slice(&p);
        out.encap(&mut b).unwrap();
        inn.decap(&mut b).unwrap();
        assert_eq!(b.data(), &p[..]);
    }

    /// A wrong PSK or identity is AUTHENTICATION_FAILED; selectors outside
    /// the policy are TS_UNACCEPTABLE; the initiator sees the refusal.
    #[test]
    fn ike_auth_refusals() {
        let tsi = [ts("10.0.1.0", "10.0.1.255")];
        let (l, r) = sa_pair();
        let (ci, cr) = cfgs(b"one secret", b"another secret");
        let req = request(&l, &ci, 1000, &tsi, &tsi, [1; 8]).unwrap();
        let Err(AuthError::Refuse { notify: n, response }) = respond(&r, &cr, &req, 2000, &tsi, &tsi, [2; 8]) else {
            panic!()
        };
        assert_eq!(n, notify::AUTHENTICATION_FAILED);
        assert_eq!(complete(&l, &ci, 1000, &response).err(), Some(AuthError::Refused(notify::AUTHENTICATION_FAILED)));
        let (l, r) = sa_pair();
        let (mut ci, cr) = cfgs(b"s", b"s");
        ci.me = Identity::fqdn("mallory.example");
        let req = request(&l, &ci, 1000, &tsi, &tsi, [1; 8]).unwrap();
        assert!(matches!(
            respond(&r, &cr, &req, 2000, &tsi, &tsi, [2; 8]),
            Err(AuthError::Refuse { notify: notify::AUTHENTICATION_FAILED, .. })
        ));
        let (l, r) = sa_pair();
        let (ci, cr) = cfgs(b"s", b"s");
        let req = request(&l, &ci, 1000, &[ts("172.16.0.0", "172.16.0.255")], &tsi, [1; 8]).unwrap();
        let Err(AuthError::Refuse { notify: notify::TS_UNACCEPTABLE, response }) =
            respond(&r, &cr, &req, 2000, &tsi, &tsi, [2; 8])
        else {
            panic!()
        };
        // Authenticated, so the refusal of the child comes with IDr and AUTH
        // and the initiator knows its IKE SA stands (§2.21.3).
        assert_eq!(complete(&l, &ci, 1000, &response).err(), Some(AuthError::ChildRefused(notify::TS_UNACCEPTABLE)));
        let (l, r) = sa_pair();
        let (ci, mut chacha_only) = cfgs(b"s", b"s");
        chacha_only.child.suites = vec![super::super::esp_suite::EspSuite::Chacha20Poly1305];
        let req = request(&l, &ci, 1000, &tsi, &tsi, [1; 8]).unwrap();
        let Err(AuthError::Refuse { notify: notify::NO_PROPOSAL_CHOSEN, response }) =
            respond(&r, &chacha_only, &req, 2000, &tsi, &tsi, [2; 8])
        else {
            panic!()
        };
        assert_eq!(complete(&l, &ci, 1000, &response).err(), Some(AuthError::ChildRefused(notify::NO_PROPOSAL_CHOSEN)));
        let (_, inner) = super::super::crypto::decrypt_message(&response, l.sk(false)).unwrap();
        assert!(inner.iter().any(|p| matches!(p, super::super::message::Payload::Id { initiator: false, .. })));
        assert!(inner.iter().any(|p| matches!(p, super::super::message::Payload::Auth { .. })));
        // A response from another IKE SA does not decrypt.
        let (l2, _) = sa_pair();
        let (l, r) = sa_pair();
        let req = request(&l, &ci, 1000, &tsi, &tsi, [1; 8]).unwrap();
        let (resp, _) = respond(&r, &cr, &req, 2000, &tsi, &tsi, [2; 8]).unwrap();
        assert!(complete(&l2, &ci, 1000, &resp).is_err());
    }
}

mod informational {
    use super::super::informational::*;
    use super::super::message::Payload;
    use super::super::sa_init::{self, Established, Initiator, Response, SUITES};

    fn pair() -> (Established, Established) {
        let a = |s: &str| s.parse().unwrap();
        let (i, req) = Initiator::start(&SUITES[..1], a("192.0.2.1:500"), a("198.51.100.1:500")).unwrap();
        let Response::Accept { message, sa } =
            sa_init::respond(&req, a("198.51.100.1:500"), a("192.0.2.1:500"), None, None, &SUITES).unwrap()
        else {
            panic!()
        };
        (i.complete(req, &message).unwrap(), *sa)
    }

    /// DPD both ways, a child SA deleted with its partner's SPI in the
    /// answer (§1.4.1), and responses that do not match refused.
    #[test]
    fn liveness_and_delete_both_ways() {
        let (i, r) = pair();
        // The initiator checks the responder is alive.
        let dpd = request(&i, true, 2, &[], [1; 8]).unwrap();
        let (id, got, ans) = answer(&r, false, &dpd, |_| None, [2; 8]).unwrap();
        assert_eq!((id, got), (2, vec![]));
        assert_eq!(response(&i, true, 2, &ans).unwrap(), vec![]);
        assert!(matches!(response(&i, true, 3, &ans), Err(InfoError::Unexpected(_))), "another message ID");
        // The responder deletes a child SA: the initiator answers with its own SPI of the pair.
        let del =
            Payload::Delete { protocol: PROTO_ESP, spi_size: 4, spis: vec![0xd000_0002u32.to_be_bytes().to_vec()] };
        let req = request(&r, false, 0, std::slice::from_ref(&del), [3; 8]).unwrap();
        let (id, got, ans) = answer(&i, true, &req, |s| (s == 0xd000_0002).then_some(0xc000_0001), [4; 8]).unwrap();
        assert_eq!((id, got), (0, vec![del]));
        let back = response(&r, false, 0, &ans).unwrap();
        assert_eq!(
            back,
            vec![Payload::Delete {
                protocol: PROTO_ESP,
                spi_size: 4,
                spis: vec![0xc000_0001u32.to_be_bytes().to_vec()]
            }]
        );
        // Our own request is not an answer to us.
        assert!(response(&i, true, 2, &dpd).is_err());
    }
}

mod create_child {
    use super::super::create_child::*;
    use super::super::esp_suite::ChildPolicy;
    use super::super::message::TrafficSelector;
    use super::super::sa_init::{self, Initiator, Response, SUITES};

    /// A rekey of a child SA we are deleting is TEMPORARY_FAILURE (try
    /// later, §2.25), of one we do not have CHILD_SA_NOT_FOUND; the
    /// initiator sees which.
    #[test]
    fn rekeys_of_closing_or_unknown_child_sas_are_refused_as_the_rfc_says() {
        let a = |s: &str| s.parse().unwrap();
        let (i, req) = Initiator::start(&SUITES[..1], a("192.0.2.1:500"), a("198.51.100.1:500")).unwrap();
        let Response::Accept { message, sa } =
            sa_init::respond(&req, a("198.51.100.1:500"), a("192.0.2.1:500"), None, None, &SUITES).unwrap()
        else {
            panic!("refused")
        };
        let (l, r) = (i.complete(req, &message).unwrap(), *sa);
        let ts = [TrafficSelector::range("10.0.1.0".parse().unwrap(), "10.0.1.255".parse().unwrap())];
        let policy = ChildPolicy::default();
        for (target, notify) in [(RekeyTarget::Closing, TEMPORARY_FAILURE), (RekeyTarget::Unknown, CHILD_SA_NOT_FOUND)]
        {
            let (rekey, bytes) = request(&l, true, 2, Some(0x1111), 0x2222, &policy, &ts, &ts, [1; 8]).unwrap();
            let (id, answer) =
                respond(&r, false, &bytes, |_| target, true, 0x3333, &policy, &SUITES, &ts, &ts, [2; 8]).unwrap();
            let Answer::Refused { notify: n, response } = answer else { panic!("{target:?} accepted") };
            assert_eq!((id, n), (2, notify));
            assert!(matches!(rekey.complete(&l, true, &response), Err(RekeyError::Refused(k)) if k == notify));
        }
    }
}
