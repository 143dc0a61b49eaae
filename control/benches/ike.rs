//! What IKE costs the control thread: an IKE_SA_INIT answered in full
//! (Curve25519 key pair, shared secret, key derivation) against one answered
//! with a stateless cookie (one HMAC), IKE_AUTH with a pre-shared key on the
//! responder. Why the cookie threshold matters under a flood.
//!
//! `cargo bench -p control --bench ike`; results go to perf/RESULTS.md.

use std::hint::black_box;
use std::net::SocketAddr;

use control::ike::ike_auth::{self, AuthConfig, Credential, Identity};
use control::ike::message::TrafficSelector;
use control::ike::sa_init::{respond, CookieJar, Initiator, Response, SUITES};
use criterion::{criterion_group, criterion_main, Criterion};
use zeroize::Zeroizing;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn bench(c: &mut Criterion) {
    let (me, peer) = (addr("198.51.100.1:500"), addr("192.0.2.1:500"));
    let (init, req) = Initiator::start(&SUITES[..1], peer, me).unwrap();
    let mut g = c.benchmark_group("ike");
    g.bench_function("sa_init_answered_in_full", |b| {
        b.iter(|| matches!(respond(black_box(&req), me, peer, None, None, &SUITES).unwrap(), Response::Accept { .. }))
    });
    let jar = CookieJar::new().unwrap();
    g.bench_function("sa_init_answered_with_a_cookie", |b| {
        b.iter(|| {
            matches!(respond(black_box(&req), me, peer, Some(&jar), None, &SUITES).unwrap(), Response::Cookie { .. })
        })
    });

    // IKE_AUTH on the responder: PSK AUTH checked and made, child keys derived.
    let Response::Accept { message, sa: r } = respond(&req, me, peer, None, None, &SUITES).unwrap() else { panic!() };
    let l = init.complete(req.clone(), &message).unwrap();
    let cfg = |me: &str, peer: &str| AuthConfig {
        me: Identity::fqdn(me),
        peer: Identity::fqdn(peer),
        credential: Credential::Psk(Zeroizing::new(b"a shared secret".to_vec())),
        child: Default::default(),
    };
    let (ci, cr) = (cfg("west.example", "east.example"), cfg("east.example", "west.example"));
    let ts = |a: &str, b: &str| TrafficSelector::range(a.parse().unwrap(), b.parse().unwrap());
    let (tsi, tsr) = ([ts("10.0.1.0", "10.0.1.255")], [ts("10.0.2.0", "10.0.2.255")]);
    let auth = ike_auth::request(&l, &ci, 0xc000_0001, &tsi, &tsr, [1; 8]).unwrap();
    g.bench_function("ike_auth_psk_responder", |b| {
        b.iter(|| ike_auth::respond(&r, &cr, black_box(&auth), 0xc000_0002, &tsi, &tsr, [2; 8]).unwrap())
    });

    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
