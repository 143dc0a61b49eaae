//! What IKE costs the control thread: an IKE_SA_INIT answered in full
//! (key pair, shared secret, key derivation) with each Diffie-Hellman group
//! against one answered with a stateless cookie (one HMAC), IKE_AUTH on the
//! responder with a pre-shared key and with certificates (ECDSA P-256,
//! RSA-2048: the peer's chain checked, its signature verified, ours made).
//! Why the cookie threshold matters under a flood.
//!
//! `cargo bench -p control --bench ike`; results go to perf/RESULTS.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use control::ike::cert::Credentials;
use control::ike::crypto::{GROUP_ECP256, GROUP_ECP384, GROUP_MODP2048, GROUP_X25519};
use control::ike::ike_auth::{self, AuthConfig, Credential, Identity};
use control::ike::message::TrafficSelector;
use control::ike::sa_init::{respond, CookieJar, Established, Initiator, Response, Suite, SUITES};
use criterion::{criterion_group, criterion_main, Criterion};
use zeroize::Zeroizing;

#[path = "../src/ike/test_pki.rs"]
#[allow(dead_code)]
mod test_pki;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Both ends of an IKE_SA_INIT with `suite`.
fn sa_pair(suite: Suite) -> (Established, Established) {
    let (me, peer) = (addr("198.51.100.1:500"), addr("192.0.2.1:500"));
    let (init, req) = Initiator::start(&[suite], peer, me).unwrap();
    let Response::Accept { message, sa } = respond(&req, me, peer, None, None, &SUITES).unwrap() else { panic!() };
    (init.complete(req, &message).unwrap(), *sa)
}

fn bench(c: &mut Criterion) {
    let (me, peer) = (addr("198.51.100.1:500"), addr("192.0.2.1:500"));
    let mut g = c.benchmark_group("ike");
    for (name, group) in [
        ("sa_init_answered_in_full", GROUP_X25519),
        ("sa_init_answered_in_full_ecp256", GROUP_ECP256),
        ("sa_init_answered_in_full_ecp384", GROUP_ECP384),
        ("sa_init_answered_in_full_modp2048", GROUP_MODP2048),
    ] {
        let suite = Suite { group, ..SUITES[0] };
        let (_, req) = Initiator::start(&[suite], peer, me).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                matches!(respond(black_box(&req), me, peer, None, None, &SUITES).unwrap(), Response::Accept { .. })
            })
        });
    }
    let (_, req) = Initiator::start(&SUITES[..1], peer, me).unwrap();
    let jar = CookieJar::new().unwrap();
    g.bench_function("sa_init_answered_with_a_cookie", |b| {
        b.iter(|| {
            matches!(respond(black_box(&req), me, peer, Some(&jar), None, &SUITES).unwrap(), Response::Cookie { .. })
        })
    });

    // IKE_AUTH on the responder: the peer's AUTH checked, ours made, child keys derived.
    let ts = |a: &str, b: &str| TrafficSelector::range(a.parse().unwrap(), b.parse().unwrap());
    let (tsi, tsr) = ([ts("10.0.1.0", "10.0.1.255")], [ts("10.0.2.0", "10.0.2.255")]);
    let cfg = |me: &str, peer: &str, credential: Credential| AuthConfig {
        me: Identity::fqdn(me),
        peer: Identity::fqdn(peer),
        credential,
        child: Default::default(),
    };
    let psk = || Credential::Psk(Zeroizing::new(b"a shared secret".to_vec()));
    let ca = test_pki::Ca::new("bench CA");
    let cert = |name: &str, kind| {
        let i = ca.issue(&[name], kind, |_| {});
        Credential::Cert(Arc::new(
            Credentials::from_pem(i.cert.as_bytes(), i.key.as_bytes(), ca.pem.as_bytes()).unwrap(),
        ))
    };
    for (name, west, east) in [
        ("ike_auth_psk_responder", psk(), psk()),
        (
            "ike_auth_ecdsa_p256_responder",
            cert("west.example", test_pki::KeyKind::P256),
            cert("east.example", test_pki::KeyKind::P256),
        ),
        (
            "ike_auth_rsa2048_responder",
            cert("west.example", test_pki::KeyKind::Rsa(2048)),
            cert("east.example", test_pki::KeyKind::Rsa(2048)),
        ),
    ] {
        let (l, r) = sa_pair(SUITES[0]);
        let (ci, cr) = (cfg("west.example", "east.example", west), cfg("east.example", "west.example", east));
        let auth = ike_auth::request(&l, &ci, 0xc000_0001, &tsi, &tsr, [1; 8]).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| ike_auth::respond(&r, &cr, black_box(&auth), 0xc000_0002, &tsi, &tsr, [2; 8]).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
