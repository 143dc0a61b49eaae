//! Two daemons back to back over their queues, each with its own policy
//! store (no sockets, no DPDK): what one negotiates, both install; keys
//! match crosswise; a wrong PSK is refused and counted; liveness checks,
//! rekeys (make-before-break) and deletes do what they say.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use espgw_core::pipeline::{IkeDatagram, IkeQueues};

use super::daemon::*;
use crate::api::ControlState;
use crate::config::Config;
use crate::store::PolicyStore;

fn config(me: &str, peer: &str, my_net: &str, peer_net: &str, psk: &str, extra: &str) -> Config {
    config_at(Path::new("t.toml"), me, peer, my_net, peer_net, &format!("psk = \"{psk}\""), extra)
}

/// A config at `path` (files it names are relative to it), `auth` the
/// connection's psk or cert lines.
fn config_at(path: &Path, me: &str, peer: &str, my_net: &str, peer_net: &str, auth: &str, extra: &str) -> Config {
    let src = format!(
        r#"
[workers]
cores = [0]
[[port]]
name = "clear"
device = "net_null0"
role = "cleartext"
[[port]]
name = "public"
device = "net_null1"
role = "protected"
addresses = ["{me}"]
[[connection]]
name = "peer"
local = "{me}"
remote = "{peer}"
local_id = "{me}"
{auth}
local_ts = ["{my_net}"]
remote_ts = ["{peer_net}"]
{extra}
"#
    );
    Config::parse(path, &src).unwrap_or_else(|e| panic!("{e}"))
}

fn state(cfg: &Config) -> ControlState<'static> {
    ControlState {
        events: Default::default(),
        store: Mutex::new(PolicyStore::from_config(cfg).unwrap()),
        live: None,
        token: None,
        metrics: Default::default(),
        ike: None,
    }
}

struct Side {
    daemon: Daemon,
    queues: IkeQueues,
    control: ControlState<'static>,
}

fn side(cfg: Config) -> Side {
    let queues = IkeQueues::new();
    let control = state(&cfg);
    Side { daemon: Daemon::new(cfg.connections.clone(), queues.clone()), queues, control }
}

/// What `from` sent reaches `to` (as a worker would deliver it: the
/// addresses seen from the receiver); `drop` loses them instead.
fn carry(from: &Side, to: &Side, drop: bool) -> usize {
    let mut n = 0;
    while let Some(d) = from.queues.from_control.pop() {
        n += 1;
        if !drop {
            let got = IkeDatagram::new(d.remote, d.local, d.payload()).unwrap();
            to.queues.to_control.push(got).unwrap();
        }
    }
    n
}

/// Run both for a few rounds at `now`.
fn rounds(a: &mut Side, b: &mut Side, now: Instant) {
    for _ in 0..6 {
        a.daemon.poll(&a.control, now);
        carry(a, b, false);
        b.daemon.poll(&b.control, now);
        carry(b, a, false);
    }
}

fn sa_names(s: &Side) -> Vec<String> {
    let mut v: Vec<String> = s.control.store().sas().into_iter().map(|x| x.sa.name).collect();
    v.sort();
    v
}

/// A (192.0.2.1, 10.0.1.0/24) and B (198.51.100.1, 10.0.2.0/24), each
/// connection with its `extra` lines.
fn sides(extra_a: &str, extra_b: &str) -> (Side, Side) {
    let a = side(config("192.0.2.1", "198.51.100.1", "10.0.1.0/24", "10.0.2.0/24", "secret", extra_a));
    let b = side(config("198.51.100.1", "192.0.2.1", "10.0.2.0/24", "10.0.1.0/24", "secret", extra_b));
    (a, b)
}

fn pair(psk_b: &str, extra_a: &str) -> (Side, Side) {
    let a = side(config("192.0.2.1", "198.51.100.1", "10.0.1.0/24", "10.0.2.0/24", "secret", extra_a));
    let b = side(config("198.51.100.1", "192.0.2.1", "10.0.2.0/24", "10.0.1.0/24", psk_b, ""));
    (a, b)
}

#[test]
fn prefixes_and_selectors_convert_both_ways() {
    for p in ["10.0.1.0/24", "0.0.0.0/0", "192.0.2.7/32", "fd00:1::/64", "::/0"] {
        let prefix: espgw_core::policy::Prefix = p.parse().unwrap();
        assert_eq!(prefix_of(&ts_of(&prefix)).map(|x| x.to_string()), Some(p.to_string()));
    }
    let odd = super::message::TrafficSelector::range("10.0.0.1".parse().unwrap(), "10.0.0.6".parse().unwrap());
    assert_eq!(prefix_of(&odd), None, "not an aligned block");
}

#[test]
fn two_daemons_negotiate_install_rekey_and_delete() {
    // A rekeys with PFS (B, without pfs set, goes along as the peer asks).
    let (mut a, mut b) = pair("secret", "start = \"start\"\nrekey_seconds = 60\ndpd_seconds = 10\npfs = true");
    let t0 = Instant::now();
    rounds(&mut a, &mut b, t0);
    let (la, lb) = (a.daemon.list(t0), b.daemon.list(t0));
    assert_eq!((la.len(), lb.len()), (1, 1), "{la:?} {lb:?}");
    assert_eq!((la[0].state, lb[0].state), ("established", "established"));
    assert!(la[0].initiator && !lb[0].initiator);
    assert_eq!((a.daemon.counters.established, b.daemon.counters.established), (1, 1));
    // Each side: an inbound and an outbound SA, and the eroute pointing out.
    let (na, nb) = (sa_names(&a), sa_names(&b));
    assert_eq!(na.iter().filter(|n| n.starts_with("ike-peer-")).count(), 2, "{na:?}");
    assert_eq!(nb.iter().filter(|n| n.starts_with("ike-peer-")).count(), 2, "{nb:?}");
    let ea = a.control.store().eroute("ike-peer").unwrap();
    let eb = b.control.store().eroute("ike-peer").unwrap();
    let (ja, jb) = (serde_json::to_value(&ea).unwrap(), serde_json::to_value(&eb).unwrap());
    assert_eq!((ja["src"].as_str(), ja["dst"].as_str()), (Some("10.0.1.0/24"), Some("10.0.2.0/24")), "{ja}");
    assert_eq!((jb["src"].as_str(), jb["dst"].as_str()), (Some("10.0.2.0/24"), Some("10.0.1.0/24")), "{jb}");
    // A's outbound SPI is B's inbound one and the other way round.
    assert_eq!(spis(&a, "out"), spis(&b, "in"));
    assert_eq!(spis(&a, "in"), spis(&b, "out"));
    // Same keys crosswise: the data planes' SAs are built from the store's
    // configs, so seal with A's outbound and open with B's inbound.
    crosswise(&a, &b);

    // Quiet for dpd_seconds: A checks liveness, B answers.
    let t1 = t0 + Duration::from_secs(11);
    rounds(&mut a, &mut b, t1);
    assert_eq!(a.daemon.list(t1)[0].state, "established");
    // rekey_seconds: a new pair, the eroute moved, the old pair gone on both sides.
    let old_out = spis(&a, "out");
    let t2 = t0 + Duration::from_secs(61);
    let b_route = |b: &Side| serde_json::to_value(b.control.store().eroute("ike-peer").unwrap()).unwrap()["sa"].clone();
    let b_old = b_route(&b);
    a.daemon.poll(&a.control, t2);
    assert_eq!(carry(&a, &b, false), 1, "CREATE_CHILD_SA");
    b.daemon.poll(&b.control, t2);
    assert_eq!(spis(&b, "out").len(), 2, "B installed the new pair while answering");
    assert_eq!(b_route(&b), b_old, "B keeps sending on the old SA: A cannot open the new one before our answer");
    assert_eq!(carry(&b, &a, false), 1);
    a.daemon.poll(&a.control, t2);
    assert_eq!(carry(&a, &b, false), 1, "A's delete of the old SA");
    b.daemon.poll(&b.control, t2);
    assert_ne!(b_route(&b), b_old, "the delete moved B's traffic to the new SA");
    rounds(&mut a, &mut b, t2);
    assert_eq!(a.daemon.counters.child_rekeyed, 1);
    let (new_out, new_in) = (spis(&a, "out"), spis(&a, "in"));
    assert_eq!(new_out.len(), 1, "the old outbound SA is gone: {:?}", sa_names(&a));
    assert_ne!(new_out, old_out);
    assert_eq!((spis(&b, "in"), spis(&b, "out")), (new_out.clone(), new_in), "B has exactly the new pair");
    let ja = serde_json::to_value(a.control.store().eroute("ike-peer").unwrap()).unwrap();
    assert!(ja["sa"].as_str().unwrap().contains(&format!("{:08x}", spis(&a, "in")[0])), "{ja}");
    crosswise(&a, &b);

    // Terminate: both sides forget the IKE SA and its children.
    assert_eq!(a.daemon.terminate_named(&a.control, "peer"), 1);
    carry(&a, &b, false);
    b.daemon.poll(&b.control, t2);
    assert!(b.daemon.list(t2).is_empty());
    assert!(sa_names(&b).iter().all(|n| !n.starts_with("ike-")), "{:?}", sa_names(&b));
    assert!(sa_names(&a).iter().all(|n| !n.starts_with("ike-")));
    assert!(b.control.store().eroute("ike-peer").is_err(), "start=none: the eroute goes too");
}

#[test]
fn a_wrong_psk_is_refused_and_nothing_is_installed() {
    let (mut a, mut b) = pair("not the secret", "start = \"start\"");
    let t0 = Instant::now();
    rounds(&mut a, &mut b, t0);
    assert_eq!(b.daemon.counters.auth_failed, 1, "{:?}", b.daemon.counters);
    assert_eq!(a.daemon.counters.auth_failed, 1, "A hears AUTHENTICATION_FAILED");
    assert!(a.daemon.list(t0).is_empty());
    assert!(sa_names(&a).iter().chain(sa_names(&b).iter()).all(|n| !n.starts_with("ike-")));
    // B forgets the half-open SA.
    b.daemon.poll(&b.control, t0 + Duration::from_secs(31));
    assert!(b.daemon.list(t0).is_empty());
}

#[test]
fn lost_packets_are_retransmitted_and_a_dead_peer_is_given_up() {
    let (mut a, mut b) = pair("secret", "start = \"start\"");
    let t0 = Instant::now();
    a.daemon.poll(&a.control, t0);
    assert_eq!(carry(&a, &b, true), 1, "IKE_SA_INIT lost");
    // 1 s later it goes again; now it arrives and everything completes.
    a.daemon.poll(&a.control, t0 + Duration::from_secs(1));
    assert_eq!(a.daemon.counters.retransmitted, 1);
    rounds(&mut a, &mut b, t0 + Duration::from_secs(1));
    assert_eq!(a.daemon.list(t0)[0].state, "established");
    assert_eq!(b.daemon.counters.established, 1);

    // A dead peer: 1 + 2 + 4 + 8 + 16 s of retransmissions, then the IKE SA goes.
    let (mut a, _b) = pair("secret", "start = \"start\"");
    let mut now = t0;
    a.daemon.poll(&a.control, now);
    for _ in 0..35 {
        now += Duration::from_secs(1);
        a.daemon.poll(&a.control, now);
        while a.queues.from_control.pop().is_some() {}
    }
    let k = a.daemon.counters;
    assert_eq!(k.timed_out, 1, "{k:?}");
    assert!(k.retransmitted >= 4, "{k:?}");
    // start = "start": a fresh attempt (30 s after the last one), not a storm.
    let l = a.daemon.list(now);
    assert_eq!((l.len(), l[0].state, l[0].age_s < 5), (1, "connecting", true), "{l:?}");
}

/// The IKE SA rekeys itself (§1.3.2, §2.18) without touching the child
/// SAs or the traffic: both sides move to one new IKE SA (new SPIs, the
/// rekey's initiator its initiator), the old one is deleted, the store
/// keeps exactly the same SAs, and the new IKE SA still carries a child
/// rekey. B, the responder of the first IKE SA, rekeys first; then again
/// as the initiator of the second.
#[test]
fn the_ike_sa_rekeys_and_keeps_its_children() {
    let (mut a, mut b) = sides("start = \"start\"", "ike_rekey_seconds = 100");
    let t0 = Instant::now();
    rounds(&mut a, &mut b, t0);
    let before = (sa_names(&a), sa_names(&b));
    let old = a.daemon.list(t0)[0].clone();
    assert!(old.initiator);
    // At most a tenth early: nothing at 89 s, rekeyed by 101 s.
    rounds(&mut b, &mut a, t0 + Duration::from_secs(89));
    assert_eq!(b.daemon.counters.ike_rekeyed, 0);
    let t1 = t0 + Duration::from_secs(101);
    rounds(&mut b, &mut a, t1);
    assert_eq!((a.daemon.counters.ike_rekeyed, b.daemon.counters.ike_rekeyed), (1, 1));
    let (la, lb) = (a.daemon.list(t1), b.daemon.list(t1));
    assert_eq!((la.len(), lb.len()), (1, 1), "the old IKE SA is gone on both sides: {la:?} {lb:?}");
    assert_eq!((&la[0].spi_i, &la[0].spi_r), (&lb[0].spi_i, &lb[0].spi_r));
    assert_ne!(la[0].spi_i, old.spi_i);
    assert!(lb[0].initiator && !la[0].initiator, "the rekey's initiator initiates the new SA");
    assert_eq!(la[0].children, old.children, "the child SAs moved over");
    assert_eq!((sa_names(&a), sa_names(&b)), before, "the data plane saw nothing");
    assert_eq!(a.daemon.counters.timed_out + b.daemon.counters.timed_out, 0);
    // The new IKE SA works: a child rekey over it.
    a.daemon.rekey_named("peer", t1).unwrap();
    rounds(&mut a, &mut b, t1);
    assert_eq!((a.daemon.counters.child_rekeyed, b.daemon.counters.child_rekeyed), (1, 1));
    assert_ne!(sa_names(&a), before.0);
    // B again, now as the IKE SA's initiator.
    let t2 = t1 + Duration::from_secs(101);
    rounds(&mut b, &mut a, t2);
    let (la, lb) = (a.daemon.list(t2), b.daemon.list(t2));
    assert_eq!((la.len(), lb.len()), (1, 1), "{la:?} {lb:?}");
    assert_eq!((a.daemon.counters.ike_rekeyed, b.daemon.counters.ike_rekeyed), (2, 2));
    assert!(lb[0].initiator && !la[0].initiator);
    assert_eq!(la[0].spi_i, lb[0].spi_i);
    assert_eq!(la[0].children.len(), 1);
    assert_eq!(la[0].state, "established");
}

/// A flood of IKE_SA_INIT: from addresses no connection names it costs
/// nothing (no answer, no state, no Diffie-Hellman); from the peer's
/// address (spoofed, many ports) it fills the half-open table up to the
/// cookie threshold, after which every new request gets a stateless COOKIE
/// answer. The real peer's daemon then retries with its cookie and gets
/// its tunnel while the flood is still on.
#[test]
fn an_ike_sa_init_flood_is_answered_with_cookies() {
    let (mut a, mut b) = pair("secret", "start = \"none\"");
    let t0 = Instant::now();
    let flood = |b: &Side, src: &str, n: u16| {
        for port in 0..n {
            let from: std::net::SocketAddr = format!("{src}:{}", 10_000 + port).parse().unwrap();
            let me: std::net::SocketAddr = "198.51.100.1:500".parse().unwrap();
            let (_, req) = super::sa_init::Initiator::start(&super::sa_init::SUITES[..1], from, me).unwrap();
            b.queues.to_control.push(IkeDatagram::new(me, from, &req).unwrap()).unwrap();
        }
    };
    flood(&b, "203.0.113.77", 200);
    b.daemon.poll(&b.control, t0);
    assert_eq!(b.daemon.counters.no_connection, 200);
    assert!(b.queues.from_control.pop().is_none(), "strangers get no answer");
    assert!(b.daemon.list(t0).is_empty());

    flood(&b, "192.0.2.1", 200);
    b.daemon.poll(&b.control, t0);
    let k = b.daemon.counters;
    assert_eq!(b.daemon.list(t0).len(), COOKIE_THRESHOLD, "state only up to the threshold");
    assert_eq!(k.cookies_sent, 200 - COOKIE_THRESHOLD as u64, "{k:?}");
    let mut answers = 0;
    while let Some(d) = b.queues.from_control.pop() {
        answers += 1;
        if answers > COOKIE_THRESHOLD {
            let m = super::message::Message::decode(d.payload()).unwrap();
            assert_eq!(m.header.spi_r, 0);
            assert!(super::sa_init::cookie_asked(d.payload()).is_some());
        }
    }
    assert_eq!(answers, 200);

    // The real peer initiates during the flood: asked for a cookie, retries, gets in.
    a.daemon.initiate_named("peer", t0).unwrap();
    rounds(&mut a, &mut b, t0);
    assert_eq!(a.daemon.counters.established, 1, "{:?} {:?}", a.daemon.counters, b.daemon.counters);
    assert_eq!(b.daemon.counters.cookies_sent, k.cookies_sent + 1, "the peer was asked once");
    // The flood's half-open SAs expire; below the threshold no cookie is asked.
    b.daemon.poll(&b.control, t0 + Duration::from_secs(31));
    assert_eq!(b.daemon.list(t0).len(), 1, "only the real IKE SA is left");
}

/// SPIs of one direction in a side's store.
fn spis(s: &Side, dir: &str) -> Vec<u32> {
    s.control.store().sas().into_iter().filter(|x| x.sa.direction == dir).map(|x| x.sa.spi).collect()
}

/// B opens what A's outbound SA sealed (A at 192.0.2.1 -> B at 198.51.100.1).
fn crosswise(a: &Side, b: &Side) {
    let a_out = a.control.store().db().reader().load_full();
    let b_in = b.control.store().db().reader().load_full();
    let spi = spis(a, "out")[0];
    let out_sa = a_out.outbound_sa(spi).unwrap();
    let in_sa = b_in
        .inbound_sa(spi, "192.0.2.1".parse().unwrap())
        .or_else(|| b_in.inbound_sa(spi, "198.51.100.1".parse().unwrap()))
        .unwrap();
    let inner = ipv4_udp([10, 0, 1, 5], [10, 0, 2, 7], b"through the tunnel");
    let mut buf = espgw_core::packet::VecBuf::from_slice(&inner);
    out_sa.sa.encap(&mut buf).unwrap();
    let opened = in_sa.entry.sa.decap(&mut buf);
    assert!(opened.is_ok(), "B opens what A sealed: {opened:?}");
    assert_eq!(espgw_core::packet::PacketBuf::data(&buf), &inner[..]);
}

/// Every child suite, chosen by the responder from the initiator's list,
/// installs SAs with the right algorithm and keys split right (encryption
/// key, then integrity key): each side opens what the other sealed.
#[test]
fn every_child_suite_negotiates_and_interoperates() {
    use super::esp_suite::EspSuite;
    for (name, suite) in EspSuite::ALL {
        let a = format!("start = \"start\"\nesp = [\"{name}\", \"aes128gcm16\"]\nesn = true");
        let b = format!("esp = [\"{name}\"]\nesn = true");
        let (mut a, mut b) = sides(&a, &b);
        rounds(&mut a, &mut b, Instant::now());
        let sas = a.control.store().sas();
        assert_eq!(sas.len(), 2, "{name}: {:?}", a.daemon.counters);
        let v = serde_json::to_value(&sas[0].sa).unwrap();
        assert_eq!(v["algorithm"], suite.algorithm(), "{name}: {v}");
        assert_eq!(v["esn"], true, "{name}: both asked for ESN: {v}");
        crosswise(&a, &b);
        crosswise(&b, &a);
    }
    // Nothing in common: NO_PROPOSAL_CHOSEN, nothing installed.
    let (mut a, mut b) = sides("start = \"start\"\nesp = \"aes256-sha1\"", "esp = \"chacha20poly1305\"");
    rounds(&mut a, &mut b, Instant::now());
    assert_eq!(b.daemon.counters.no_proposal, 1, "{:?}", b.daemon.counters);
    assert!(sa_names(&a).is_empty() && sa_names(&b).is_empty());
}

/// An IPv4 UDP packet (checksums right).
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[24..26].copy_from_slice(&(len - 20).to_be_bytes());
    let c = espgw_core::packet::ip::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// Certificates big enough (RSA-4096) that IKE_AUTH is fragmented (RFC
/// 7383) both ways, with a fragment lost on the way: the exchange still
/// completes, the keys match, and the counters show it.
#[test]
fn two_daemons_with_certificates_fragment_ike_auth() {
    use super::test_pki::{Ca, KeyKind};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();
    let mut sides = Vec::new();
    for (name, me, peer, my_net, peer_net, extra) in [
        ("a", "192.0.2.1", "198.51.100.1", "10.0.1.0/24", "10.0.2.0/24", "start = \"start\""),
        ("b", "198.51.100.1", "192.0.2.1", "10.0.2.0/24", "10.0.1.0/24", ""),
    ] {
        let issued = ca.issue(&[me], KeyKind::Rsa(4096), |_| {});
        std::fs::write(dir.path().join(format!("{name}.crt")), &issued.cert).unwrap();
        std::fs::write(dir.path().join(format!("{name}.key")), &issued.key).unwrap();
        let auth = format!("cert = \"{name}.crt\"\nkey = \"{name}.key\"\nca = \"ca.crt\"");
        let path = dir.path().join(format!("{name}.toml"));
        sides.push(side(config_at(&path, me, peer, my_net, peer_net, &auth, extra)));
    }
    let (mut b, mut a) = (sides.pop().unwrap(), sides.pop().unwrap());
    let t0 = Instant::now();
    a.daemon.poll(&a.control, t0);
    carry(&a, &b, false); // IKE_SA_INIT
    b.daemon.poll(&b.control, t0);
    carry(&b, &a, false);
    a.daemon.poll(&a.control, t0);
    // IKE_AUTH in fragments; the second one is lost.
    let mut frags = Vec::new();
    while let Some(d) = a.queues.from_control.pop() {
        frags.push(d);
    }
    assert!(frags.len() >= 2, "IKE_AUTH fragmented: {} datagram(s)", frags.len());
    assert!(frags.iter().all(|d| d.payload().len() <= 1280 - 48), "each fits a 1280-byte packet");
    for (k, d) in frags.iter().enumerate() {
        if k != 1 {
            b.queues.to_control.push(IkeDatagram::new(d.remote, d.local, d.payload()).unwrap()).unwrap();
        }
    }
    b.daemon.poll(&b.control, t0);
    assert_eq!(carry(&b, &a, false), 0, "no answer to an incomplete message");
    assert_eq!(b.daemon.counters.reassembled, 0);
    // A retransmits (all fragments again); B puts the message together.
    rounds(&mut a, &mut b, t0 + Duration::from_secs(2));
    let t1 = t0 + Duration::from_secs(2);
    let (la, lb) = (a.daemon.list(t1), b.daemon.list(t1));
    assert_eq!((la.len(), lb.len()), (1, 1), "{la:?} {lb:?}");
    assert_eq!((la[0].state, lb[0].state), ("established", "established"));
    assert!(a.daemon.counters.fragments_sent >= 4 && b.daemon.counters.fragments_sent >= 2);
    assert_eq!((a.daemon.counters.reassembled, b.daemon.counters.reassembled), (1, 1));
    assert_eq!(a.daemon.counters.auth_failed + b.daemon.counters.auth_failed, 0);
    assert_eq!(spis(&a, "out"), spis(&b, "in"));
    crosswise(&a, &b);
}

/// B runs only MODP-2048: A's first KE (Curve25519) is answered
/// INVALID_KE_PAYLOAD, A tries again with group 14, both end with it; a
/// peer that runs nothing A offers gets NO_PROPOSAL_CHOSEN.
#[test]
fn the_responders_group_wins_after_one_round_trip() {
    let (mut a, mut b) = sides("start = \"start\"", "ike = \"aes128gcm16-prfsha256-modp2048\"");
    let t0 = Instant::now();
    rounds(&mut a, &mut b, t0);
    let (la, lb) = (a.daemon.list(t0), b.daemon.list(t0));
    assert_eq!((la.len(), lb.len()), (1, 1), "{la:?} {lb:?}");
    assert_eq!((la[0].state, lb[0].state), ("established", "established"));
    assert_eq!(la[0].proposal, "aes128gcm16-prfsha256-modp2048");
    assert_eq!(lb[0].proposal, la[0].proposal);
    assert_eq!(b.daemon.counters.no_proposal, 1, "the INVALID_KE_PAYLOAD answer");
    crosswise(&a, &b);

    let (mut a, mut b) = sides(
        "start = \"start\"\nike = [\"aes256gcm16-prfsha256-ecp384\"]",
        "ike = \"aes128gcm16-prfsha256-x25519-ecp256\"",
    );
    rounds(&mut a, &mut b, t0);
    assert!(a.daemon.list(t0).is_empty() && b.daemon.list(t0).is_empty());
    assert_eq!((a.daemon.counters.no_proposal, b.daemon.counters.no_proposal), (1, 1));
}

/// `wireshark_keys`: each side appends its IKE SA and both directions of
/// its child SA in Wireshark's formats, private files, keys that are the
/// same on both sides (A's outbound row is B's inbound one, byte for byte).
#[test]
fn the_debug_key_export_writes_wiresharks_tables() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut sides = Vec::new();
    for (name, me, peer, my_net, peer_net, extra) in [
        ("a", "192.0.2.1", "198.51.100.1", "10.0.1.0/24", "10.0.2.0/24", "start = \"start\"\nwireshark_keys = \"ka\""),
        ("b", "198.51.100.1", "192.0.2.1", "10.0.2.0/24", "10.0.1.0/24", "wireshark_keys = \"kb\""),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        let extra = format!("{extra}\nesp = \"aes128-sha1\"");
        sides.push(side(config_at(&path, me, peer, my_net, peer_net, "psk = \"secret\"", &extra)));
    }
    let (mut b, mut a) = (sides.pop().unwrap(), sides.pop().unwrap());
    let (ka, kb) = (dir.path().join("ka"), dir.path().join("kb"));
    assert!(!ka.exists(), "nothing before there are keys");
    let t0 = Instant::now();
    rounds(&mut a, &mut b, t0);
    assert_eq!(a.daemon.list(t0)[0].state, "established");
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let (esp_a, esp_b) = (read(&ka, "esp_sa"), read(&kb, "esp_sa"));
    assert_eq!((esp_a.lines().count(), esp_b.lines().count()), (2, 2), "{esp_a}");
    // A's outbound row (A -> B) is B's inbound row.
    let a_out = esp_a.lines().find(|l| l.starts_with("\"IPv4\",\"192.0.2.1\"")).unwrap();
    let b_in = esp_b.lines().find(|l| l.starts_with("\"IPv4\",\"192.0.2.1\"")).unwrap();
    assert_eq!(a_out, b_in);
    assert!(a_out.contains("\"AES-CBC [RFC3602]\"") && a_out.contains("\"HMAC-SHA-1-96 [RFC2404]\""), "{a_out}");
    let fields: Vec<&str> = a_out.split(',').collect();
    assert_eq!(fields.len(), 8);
    assert_eq!(fields[3], format!("\"0x{:08x}\"", spis(&a, "out")[0]));
    assert_eq!((fields[5].len(), fields[7].len()), (2 + 2 + 32, 2 + 2 + 40), "AES-128 key, HMAC-SHA1 key: {a_out}");
    crosswise(&a, &b);
    let (ike_a, ike_b) = (read(&ka, "ikev2_decryption_table"), read(&kb, "ikev2_decryption_table"));
    assert_eq!(ike_a, ike_b, "both sides export the same IKE SA");
    assert!(ike_a.contains("\"AES-GCM-128 with 16 octet ICV [RFC5282]\",,,\"NONE [RFC4306]\""), "{ike_a}");
    for p in [ka.join("esp_sa"), kb.join("ikev2_decryption_table")] {
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
    }
    assert_eq!(std::fs::metadata(&ka).unwrap().permissions().mode() & 0o777, 0o700);
}

/// Both sides rekey the same child SA at the same moment (RFC 7296
/// §2.8.1): each answers the other's request as usual, then the pair
/// made with the lowest of the four nonces is deleted by its initiator and
/// the old pair by the survivor's: one new pair is left, the same on both
/// sides, and traffic is never without an SA. A rekey of an SA being
/// deleted is TEMPORARY_FAILURE; of one that does not exist,
/// CHILD_SA_NOT_FOUND.
#[test]
fn simultaneous_rekeys_leave_exactly_one_pair() {
    for round in 0..6 {
        let rekey = "rekey_seconds = 60\ndpd_seconds = 0";
        let (mut a, mut b) = sides(&format!("start = \"start\"\n{rekey}"), rekey);
        let t0 = Instant::now();
        rounds(&mut a, &mut b, t0);
        let (old_a, old_b) = (spis(&a, "out"), spis(&b, "out"));
        let t1 = t0 + Duration::from_secs(61);
        // Both send their CREATE_CHILD_SA before either sees the other's.
        a.daemon.poll(&a.control, t1);
        b.daemon.poll(&b.control, t1);
        let (from_a, from_b) = (drain(&a), drain(&b));
        assert_eq!((from_a.len(), from_b.len()), (1, 1), "round {round}: both rekey");
        deliver(&b, &from_a);
        deliver(&a, &from_b);
        // Each answers the other's request while its own is pending; every
        // moment, each eroute points at an installed outbound SA.
        for _ in 0..8 {
            a.daemon.poll(&a.control, t1);
            b.daemon.poll(&b.control, t1);
            for s in [&a, &b] {
                let er = serde_json::to_value(s.control.store().eroute("ike-peer").unwrap()).unwrap();
                let sa = er["sa"].as_str().unwrap().to_string();
                assert!(sa_names(s).contains(&sa), "round {round}: the eroute points at {sa}, not installed");
            }
            carry(&a, &b, false);
            carry(&b, &a, false);
        }
        rounds(&mut a, &mut b, t1 + Duration::from_secs(6));
        let (out_a, in_a, out_b, in_b) = (spis(&a, "out"), spis(&a, "in"), spis(&b, "out"), spis(&b, "in"));
        assert_eq!(
            (out_a.len(), in_a.len(), out_b.len(), in_b.len()),
            (1, 1, 1, 1),
            "round {round}: {:?} / {:?}",
            sa_names(&a),
            sa_names(&b)
        );
        assert_ne!((out_a.clone(), out_b.clone()), (old_a.clone(), old_b.clone()), "round {round}: rekeyed");
        assert_eq!((out_a, in_a), (in_b, out_b), "round {round}: the same pair on both sides");
        crosswise(&a, &b);
        crosswise(&b, &a);
        assert_eq!(a.daemon.list(t1)[0].children.len(), 1, "round {round}");
        let c = (a.daemon.counters, b.daemon.counters);
        assert_eq!((c.0.rekey_collisions, c.1.rekey_collisions), (1, 1), "round {round}: both saw the collision");
        assert_eq!((c.0.malformed, c.1.malformed), (0, 0));
    }
}

fn drain(s: &Side) -> Vec<IkeDatagram> {
    std::iter::from_fn(|| s.queues.from_control.pop()).collect()
}

fn deliver(to: &Side, ds: &[IkeDatagram]) {
    for d in ds {
        to.queues.to_control.push(IkeDatagram::new(d.remote, d.local, d.payload()).unwrap()).unwrap();
    }
}

/// A connection with two children: the initiator makes the first in
/// IKE_AUTH and the second with CREATE_CHILD_SA; each has its own SAs,
/// eroute and keys, each rekeys on its own (`espgwctl ike rekey` rekeys
/// both, one exchange after the other), and terminate takes all down.
#[test]
fn a_connection_with_two_children() {
    let voice = |mine: &str, theirs: &str| {
        format!("\n[[connection.child]]\nname = \"voice\"\nlocal_ts = [\"{mine}\"]\nremote_ts = [\"{theirs}\"]\n")
    };
    let a_extra = format!("start = \"start\"\nrekey_seconds = 60{}", voice("10.0.3.0/24", "10.0.4.0/24"));
    let (mut a, mut b) = sides(&a_extra, &voice("10.0.4.0/24", "10.0.3.0/24"));
    assert_eq!(a.daemon.connections()[0].eroutes, ["ike-peer", "ike-peer-voice"]);
    let t0 = Instant::now();
    rounds(&mut a, &mut b, t0);
    rounds(&mut a, &mut b, t0);
    let route = |s: &Side, er: &str| {
        let v = serde_json::to_value(s.control.store().eroute(er).unwrap()).unwrap();
        (
            v["src"].as_str().unwrap().to_string(),
            v["dst"].as_str().unwrap().to_string(),
            v["sa"].as_str().unwrap().to_string(),
        )
    };
    for (s, first, second) in [
        (&a, ("10.0.1.0/24", "10.0.2.0/24"), ("10.0.3.0/24", "10.0.4.0/24")),
        (&b, ("10.0.2.0/24", "10.0.1.0/24"), ("10.0.4.0/24", "10.0.3.0/24")),
    ] {
        let (r1, r2) = (route(s, "ike-peer"), route(s, "ike-peer-voice"));
        assert_eq!((r1.0.as_str(), r1.1.as_str()), first);
        assert_eq!((r2.0.as_str(), r2.1.as_str()), second);
        assert_ne!(r1.2, r2.2, "each child its own SA");
        assert_eq!((spis(s, "in").len(), spis(s, "out").len()), (2, 2));
    }
    assert_eq!(a.daemon.list(t0)[0].children.len(), 2);
    assert_eq!(spis(&a, "out").iter().collect::<std::collections::BTreeSet<_>>(), spis(&b, "in").iter().collect());
    // Both children due at 61 s: rekeyed one after the other, each keeping its selectors.
    let before = (route(&a, "ike-peer").2, route(&a, "ike-peer-voice").2);
    let t1 = t0 + Duration::from_secs(61);
    for _ in 0..3 {
        rounds(&mut a, &mut b, t1);
    }
    let after = (route(&a, "ike-peer").2, route(&a, "ike-peer-voice").2);
    assert!(after.0 != before.0 && after.1 != before.1, "{before:?} -> {after:?}");
    assert_eq!(route(&b, "ike-peer-voice").0, "10.0.4.0/24");
    assert_eq!((spis(&a, "out").len(), spis(&b, "out").len()), (2, 2), "the old pairs went");
    assert_eq!(a.daemon.counters.child_rekeyed, 2);
    // The operator rekeys both now.
    assert_eq!(a.daemon.rekey_named("peer", t1), Ok(2));
    for _ in 0..3 {
        rounds(&mut a, &mut b, t1);
    }
    assert_eq!(a.daemon.counters.child_rekeyed, 4);
    assert_eq!(spis(&a, "out").iter().collect::<std::collections::BTreeSet<_>>(), spis(&b, "in").iter().collect());
    // Down: every SA and eroute of both children.
    a.daemon.terminate_named(&a.control, "peer");
    carry(&a, &b, false);
    b.daemon.poll(&b.control, t1);
    for s in [&a, &b] {
        assert!(sa_names(s).iter().all(|n| !n.starts_with("ike-")), "{:?}", sa_names(s));
        assert!(s.control.store().eroute("ike-peer-voice").is_err());
    }
}

/// An IKE SA with AES-CBC, HMAC-SHA256-128 and PRF-HMAC-SHA384:
/// negotiated, used for the child SA, rekeyed (the new SA's keys with
/// integrity keys and 48-byte SK_d/SK_p too), its children rekeyed on it.
#[test]
fn an_aes_cbc_ike_sa_negotiates_and_rekeys() {
    let ike = "ike = \"aes256-sha256-prfsha384-ecp384\"";
    let (mut a, mut b) = sides(&format!("start = \"start\"\n{ike}\nike_rekey_seconds = 100\nrekey_seconds = 60"), ike);
    let t0 = Instant::now();
    rounds(&mut a, &mut b, t0);
    let l = a.daemon.list(t0);
    assert_eq!((l[0].state, l[0].proposal.as_str()), ("established", "aes256-sha256-prfsha384-ecp384"));
    crosswise(&a, &b);
    let t1 = t0 + Duration::from_secs(61);
    rounds(&mut a, &mut b, t1);
    assert_eq!(a.daemon.counters.child_rekeyed, 1);
    let t2 = t0 + Duration::from_secs(101);
    rounds(&mut a, &mut b, t2);
    rounds(&mut a, &mut b, t2 + Duration::from_secs(31));
    assert_eq!(a.daemon.counters.ike_rekeyed, 1, "{:?}", a.daemon.list(t2));
    let l = a.daemon.list(t2);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].proposal, "aes256-sha256-prfsha384-ecp384");
    // The rekeyed IKE SA works: a child rekey on it.
    let before = a.daemon.counters.child_rekeyed;
    rounds(&mut a, &mut b, t2 + Duration::from_secs(125));
    assert_eq!(a.daemon.counters.child_rekeyed, before + 1);
    assert_eq!((a.daemon.counters.malformed, b.daemon.counters.malformed), (0, 0));
    crosswise(&a, &b);
}

/// A responder (or someone on the path) that keeps answering
/// INVALID_KE_PAYLOAD, naming the other offered group each time, gets our
/// IKE_SA_INIT again at most three times; then we give up.
#[test]
fn invalid_ke_ping_pong_is_bounded() {
    use super::message::{Message, Payload};
    let (mut a, _) = sides("start = \"start\"\nike = \"aes128gcm16-prfsha256-x25519-ecp256\"", "");
    let t0 = Instant::now();
    a.daemon.poll(&a.control, t0);
    let mut sent = 0;
    let mut group: u16 = 19;
    for _ in 0..8 {
        let Some(d) = a.queues.from_control.pop() else { break };
        sent += 1;
        let req = Message::decode(d.payload()).unwrap();
        let header = super::message::Header { spi_r: 0, flags: super::message::flags::RESPONSE, ..req.header };
        let n = Payload::Notify { protocol: 0, spi: vec![], kind: 17, data: group.to_be_bytes().to_vec() };
        let answer = Message { header, payloads: vec![n] }.encode();
        a.queues.to_control.push(IkeDatagram::new(d.remote, d.local, &answer).unwrap()).unwrap();
        a.daemon.poll(&a.control, t0);
        group = if group == 19 { 31 } else { 19 };
    }
    assert_eq!(sent, 4, "the first request and three more");
    assert!(a.daemon.list(t0).is_empty(), "given up");
    assert_eq!(a.daemon.counters.no_proposal, 1);
}
