//! Eroute semantics (table-driven), SAD lookups, live changes and a
//! concurrency stress test of publish/reclaim.

use super::*;
use crate::crypto::Algorithm;
use crate::esp::Mode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn sa_cfg(spi: u32) -> SaConfig {
    let mode = Mode::Tunnel { local: "192.0.2.1".parse().unwrap(), remote: "198.51.100.1".parse().unwrap() };
    // A key of its own per SPI: one key drives one outbound SA only.
    let key: Vec<u8> = spi.to_be_bytes().iter().cycle().take(20).copied().collect();
    SaConfig::new(spi, Algorithm::AesGcm128, &key, &[], mode)
}

#[allow(clippy::too_many_arguments)]
fn er(
    id: u32,
    src: &str,
    dst: &str,
    proto: Option<u8>,
    sport: &str,
    dport: &str,
    priority: u32,
    action: Action,
) -> Eroute {
    Eroute {
        id,
        selector: Selector {
            src: p(src),
            dst: p(dst),
            proto,
            sport: sport.parse().unwrap(),
            dport: dport.parse().unwrap(),
        },
        priority,
        action,
    }
}

fn protect(sa: u32) -> Action {
    Action::Protect { sa, options: ProtectOptions::default() }
}

fn key(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> FlowKey {
    FlowKey::new(src.parse().unwrap(), dst.parse().unwrap(), proto, sport, dport)
}

/// What the lookup says, as (eroute id or 0 for default, short action name).
fn verdict(s: &Snapshot, k: &FlowKey) -> (u32, &'static str) {
    match s.outbound(k) {
        Verdict::Protect { eroute, sa, .. } => {
            assert_eq!(Some(&Action::Protect { sa: sa.id, options: ProtectOptions::default() }), Some(&eroute.action));
            (eroute.id, "protect")
        }
        Verdict::Pass { eroute } => (eroute.map_or(0, |e| e.id), "pass"),
        Verdict::Drop { eroute } => (eroute.map_or(0, |e| e.id), "drop"),
        Verdict::Trap { eroute } => (eroute.id, "trap"),
    }
}

fn table() -> PolicyDb {
    let mut db = PolicyDb::new(Defaults { outbound: Action::Pass, inbound_clear: Action::Drop });
    db.batch(|b| {
        for id in [1, 2, 3] {
            b.add_sa(id, SaRole::Outbound, &sa_cfg(0x100 + id)).unwrap();
        }
        for e in [
            er(10, "10.1.0.0/16", "10.2.0.0/16", None, "any", "any", 100, protect(1)),
            er(11, "10.1.0.0/16", "10.2.3.0/24", None, "any", "any", 100, protect(2)),
            er(12, "10.1.5.0/24", "10.2.0.0/16", None, "any", "any", 100, Action::Drop),
            er(13, "10.1.0.0/16", "10.2.0.0/16", Some(6), "any", "443", 100, Action::Pass),
            er(14, "10.1.0.0/16", "10.2.0.0/16", Some(6), "any", "400-500", 100, Action::Trap),
            er(15, "0.0.0.0/0", "10.9.0.0/16", None, "any", "any", 50, Action::Drop),
            er(16, "0.0.0.0/0", "10.9.0.0/16", None, "any", "any", 40, protect(3)),
            er(17, "0.0.0.0/0", "10.8.0.0/16", None, "any", "any", 40, protect(3)),
            er(18, "0.0.0.0/0", "10.8.0.0/16", None, "any", "any", 40, Action::Drop),
            er(20, "fd00:1::/48", "fd00:2::/48", None, "any", "any", 100, protect(1)),
            er(21, "fd00:1::/48", "fd00:2:0:5::/64", Some(17), "any", "53", 100, Action::Pass),
            er(22, "::/0", "::/0", Some(58), "any", "any", 100, Action::Pass),
        ] {
            b.add_eroute(e).unwrap();
        }
    })
    .unwrap();
    db
}

#[test]
fn most_specific_wins_then_priority_then_id() {
    // Twice: as is (small tables: one flat sorted array) and with filler
    // eroutes that push both families onto the hashed, sharded path.
    for filler in [false, true] {
        let mut db = table();
        if filler {
            db.batch(|b| {
                for i in 0..40u32 {
                    let v4 =
                        er(1000 + i, "10.100.0.0/16", &format!("10.200.{i}.0/24"), None, "any", "any", 1, Action::Drop);
                    let v6 = er(2000 + i, "fd99::/16", &format!("fd98:{i}::/32"), None, "any", "any", 1, Action::Drop);
                    b.add_eroute(v4).unwrap();
                    b.add_eroute(v6).unwrap();
                }
            })
            .unwrap();
        }
        check_semantics(&db);
    }
}

fn check_semantics(db: &PolicyDb) {
    let s = db.reader().load_full();
    let cases: &[(FlowKey, (u32, &str), &str)] = &[
        (key("10.1.1.1", "10.2.1.1", 17, 1, 2), (10, "protect"), "the /16 pair"),
        (key("10.1.1.1", "10.2.3.7", 17, 1, 2), (11, "protect"), "longer destination wins"),
        (key("10.1.5.9", "10.2.1.1", 17, 1, 2), (12, "drop"), "longer source wins at equal destination"),
        (key("10.1.5.9", "10.2.3.7", 17, 1, 2), (11, "protect"), "destination length ranks before source length"),
        (key("10.1.1.1", "10.2.1.1", 6, 5555, 443), (13, "pass"), "protocol + single port"),
        (key("10.1.1.1", "10.2.1.1", 6, 5555, 444), (14, "trap"), "port range"),
        (key("10.1.1.1", "10.2.1.1", 6, 5555, 501), (10, "protect"), "outside the range: back to the /16 pair"),
        (key("10.1.1.1", "10.2.1.1", 17, 5555, 443), (10, "protect"), "port rule is TCP only"),
        (key("10.7.7.7", "10.9.1.1", 1, 0, 0), (16, "protect"), "equal specificity: lower priority number"),
        (key("10.7.7.7", "10.8.1.1", 1, 0, 0), (17, "protect"), "equal everything: lower id"),
        (key("10.1.1.1", "10.3.1.1", 17, 1, 2), (0, "pass"), "no match: default"),
        (key("fd00:1::1", "fd00:2::1", 6, 1, 2), (20, "protect"), "v6"),
        (key("fd00:1::1", "fd00:2:0:5::1", 17, 9, 53), (21, "pass"), "v6 longer prefix with port"),
        (key("fd00:1::1", "fd00:2:0:5::1", 17, 9, 54), (20, "protect"), "v6 falls back to /48"),
        (key("fd00:9::1", "2001:db8::1", 58, 0, 0), (22, "pass"), "v6 ::/0 with protocol"),
        (key("fd00:9::1", "2001:db8::1", 17, 0, 0), (0, "pass"), "v6 default"),
    ];
    for (k, want, why) in cases {
        assert_eq!(verdict(&s, k), (want.0, want.1), "{why}");
    }
}

#[test]
fn default_actions_and_live_changes() {
    let mut db = table();
    let r = db.reader();
    let k = key("10.1.1.1", "10.3.1.1", 17, 1, 2);
    assert_eq!(verdict(&r.load(), &k), (0, "pass"));
    db.set_defaults(Defaults { outbound: Action::Drop, inbound_clear: Action::Drop });
    assert_eq!(verdict(&r.load(), &k), (0, "drop"));
    // Add, replace, delete an eroute: each visible at the next load.
    db.add_eroute(er(30, "10.1.0.0/16", "10.3.0.0/16", None, "any", "any", 1, protect(2))).unwrap();
    assert_eq!(verdict(&r.load(), &k), (30, "protect"));
    db.replace_eroute(er(30, "10.1.0.0/16", "10.3.0.0/16", None, "any", "any", 1, Action::Trap)).unwrap();
    assert_eq!(verdict(&r.load(), &k), (30, "trap"));
    db.remove_eroute(30).unwrap();
    assert_eq!(verdict(&r.load(), &k), (0, "drop"));
    // A snapshot taken before a change stays as it was.
    let old = r.load_full();
    db.remove_eroute(10).unwrap();
    assert_eq!(verdict(&old, &key("10.1.1.1", "10.2.1.1", 17, 1, 2)), (10, "protect"));
    assert_eq!(verdict(&r.load(), &key("10.1.1.1", "10.2.1.1", 17, 1, 2)), (0, "drop"));
    assert!(r.load().generation > old.generation);
}

#[test]
fn refused_changes_say_why() {
    let mut db = table();
    assert_eq!(db.add_sa(1, SaRole::Outbound, &sa_cfg(0x999)), Err(PolicyError::Exists { what: "SA", id: 1 }));
    assert_eq!(db.remove_sa(1), Err(PolicyError::InUse { sa: 1, eroute: 10 }));
    assert_eq!(db.remove_sa(77), Err(PolicyError::NotFound { what: "SA", id: 77 }));
    assert_eq!(
        db.add_eroute(er(40, "10.0.0.0/8", "10.0.0.0/8", None, "any", "any", 1, protect(77))),
        Err(PolicyError::NotFound { what: "SA", id: 77 })
    );
    assert_eq!(
        db.add_eroute(er(10, "10.0.0.0/8", "10.0.0.0/8", None, "any", "any", 1, Action::Pass)),
        Err(PolicyError::Exists { what: "eroute", id: 10 })
    );
    assert!(matches!(
        db.add_eroute(er(41, "10.0.0.0/8", "fd00::/8", None, "any", "any", 1, Action::Pass)),
        Err(PolicyError::Selector(_))
    ));
    assert!(matches!(
        db.add_eroute(er(41, "10.0.0.0/8", "10.0.0.0/8", None, "any", "80", 1, Action::Pass)),
        Err(PolicyError::Selector(_))
    ));
    db.add_sa(50, SaRole::inbound_for(None, &[10]), &sa_cfg(0x5000)).unwrap();
    assert_eq!(
        db.add_eroute(er(42, "10.0.0.0/8", "10.0.0.0/8", None, "any", "any", 1, protect(50))),
        Err(PolicyError::NotOutbound { eroute: 42, sa: 50 })
    );
    assert_eq!(
        db.add_sa(51, SaRole::inbound_for(None, &[11]), &sa_cfg(0x5000)),
        Err(PolicyError::SpiInUse { spi: 0x5000, other: 50 })
    );
    assert!(matches!(db.add_sa(52, SaRole::Outbound, &sa_cfg(7)), Err(PolicyError::Sa(_))));
    assert_eq!(PolicyError::InUse { sa: 1, eroute: 10 }.to_string(), "SA 1 is used by eroute 10");
    // Inbound SAs without selectors are refused (RFC 4301 §5.2).
    for policy in [InboundPolicy::Eroutes(vec![]), InboundPolicy::Selectors(vec![])] {
        assert_eq!(
            db.add_sa(53, SaRole::Inbound { local: None, policy }, &sa_cfg(0x5300)),
            Err(PolicyError::NoSelectors)
        );
    }
    assert_eq!(
        db.add_sa(53, SaRole::inbound_for(None, &[99]), &sa_cfg(0x5300)),
        Err(PolicyError::NotFound { what: "eroute", id: 99 })
    );
    // One key, one outbound SA: a second would run its own counter from 1.
    assert_eq!(
        db.add_sa(54, SaRole::Outbound, &SaConfig { spi: 0x5400, ..sa_cfg(0x101) }),
        Err(PolicyError::KeyInUse { other: 1 })
    );
}

#[test]
fn inbound_sa_lookup_and_selector_check() {
    let mut db = table();
    let here: IpAddr = "192.0.2.1".parse().unwrap();
    let there: IpAddr = "192.0.2.99".parse().unwrap();
    db.add_sa(60, SaRole::inbound_for(None, &[10]), &sa_cfg(0x6000)).unwrap();
    db.add_sa(61, SaRole::inbound_for(Some(here), &[11]), &sa_cfg(0x6001)).unwrap();
    let anything = Selector::nets(p("0.0.0.0/0"), p("0.0.0.0/0"));
    let own = SaRole::Inbound { local: Some(there), policy: InboundPolicy::Selectors(vec![anything]) };
    db.add_sa(62, own, &sa_cfg(0x6001)).unwrap();
    let s = db.reader().load_full();
    assert_eq!(s.inbound_sa(0x6000, there).map(|e| e.entry.id), Some(60), "SPI alone");
    assert_eq!(s.inbound_sa(0x6001, here).map(|e| e.entry.id), Some(61), "SPI + destination");
    assert_eq!(s.inbound_sa(0x6001, there).map(|e| e.entry.id), Some(62));
    assert_eq!(s.inbound_sa(0x6001, "10.0.0.1".parse().unwrap()).map(|e| e.entry.id), None);
    assert!(s.inbound_sa(0x7777, here).is_none());
    // SA 60 carries eroute 10 (10.1/16 → 10.2/16) in reverse.
    let sa60 = s.inbound_sa(0x6000, here).unwrap();
    assert!(sa60.allows(&key("10.2.1.1", "10.1.1.1", 17, 1, 2)));
    assert!(!sa60.allows(&key("10.1.1.1", "10.2.1.1", 17, 1, 2)), "wrong direction");
    assert!(!sa60.allows(&key("10.5.1.1", "10.1.1.1", 17, 1, 2)), "source outside the eroute");
    let sa62 = s.inbound_sa(0x6001, there).unwrap();
    assert!(sa62.allows(&key("1.2.3.4", "5.6.7.8", 17, 1, 2)), "its own selectors: IPv4 anything");
    assert!(!sa62.allows(&key("fd00::1", "fd00::2", 17, 1, 2)), "but not IPv6");
    // The inbound check follows eroute changes, and fails closed when the eroute goes.
    db.replace_eroute(er(10, "10.1.0.0/16", "10.4.0.0/16", None, "any", "any", 100, protect(1))).unwrap();
    let s = db.reader().load_full();
    let sa60 = s.inbound_sa(0x6000, here).unwrap();
    assert!(sa60.allows(&key("10.4.1.1", "10.1.1.1", 17, 1, 2)));
    assert!(!sa60.allows(&key("10.2.1.1", "10.1.1.1", 17, 1, 2)));
    db.remove_eroute(10).unwrap();
    let s = db.reader().load_full();
    assert!(!s.inbound_sa(0x6000, here).unwrap().allows(&key("10.4.1.1", "10.1.1.1", 17, 1, 2)), "fail closed");
}

#[test]
fn deleted_sa_is_freed_once_no_reader_holds_it() {
    let mut db = table();
    db.add_sa(70, SaRole::Outbound, &sa_cfg(0x7000)).unwrap();
    db.add_eroute(er(70, "10.70.0.0/16", "10.71.0.0/16", None, "any", "any", 1, protect(70))).unwrap();
    let r = db.reader();
    let held = r.load_full(); // a worker in the middle of a burst
    let weak: Weak<SaEntry> = Arc::downgrade(db.sa(70).unwrap());
    db.remove_eroute(70).unwrap();
    db.remove_sa(70).unwrap();
    // Still reachable through the held snapshot, and still usable.
    let k = key("10.70.0.1", "10.71.0.1", 17, 1, 2);
    match held.outbound(&k) {
        Verdict::Protect { sa, .. } => {
            let mut b = crate::packet::VecBuf::from_slice(&crate::esp::tests::udp4(100, 0, false, 1));
            sa.sa.encap(&mut b).unwrap();
        }
        v => panic!("{v:?}"),
    }
    assert!(weak.upgrade().is_some());
    drop(held);
    assert!(weak.upgrade().is_none(), "freed (and its keys zeroized) once unreachable");
}

/// Readers look up continuously while a writer adds, replaces and deletes
/// eroutes and SAs thousands of times. Every answer must be a state that
/// existed: eroute k at version v protects with SA (k, v) whose SPI encodes
/// (k, v) — a torn read would pair an eroute with another version's SA.
#[test]
fn concurrent_readers_never_see_torn_state() {
    // Smaller under Miri, which checks every access of every interleaving it runs.
    const K: u32 = if cfg!(miri) { 4 } else { 50 };
    const ROUNDS: u32 = if cfg!(miri) { 12 } else { 3000 };
    let mut db = PolicyDb::new(Defaults { outbound: Action::Drop, inbound_clear: Action::Drop });
    let r = db.reader();
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let (r, stop, checked) = (r.clone(), stop.clone(), checked.clone());
            std::thread::spawn(move || {
                let mut i = t as u32;
                let mut last_gen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let snap = r.load();
                    assert!(snap.generation >= last_gen, "generations only move forward");
                    last_gen = snap.generation;
                    for _ in 0..K {
                        i = i.wrapping_add(7) % K;
                        let k = key(&format!("10.{i}.0.1"), &format!("10.{}.0.1", 100 + i), 17, 1, 2);
                        match snap.outbound(&k) {
                            Verdict::Protect { eroute, sa, .. } => {
                                let version = eroute.priority;
                                assert_eq!(
                                    sa.sa.spi(),
                                    0x10_0000 + i * 0x1_0000 + version,
                                    "eroute {i} v{version} with a foreign SA"
                                );
                                assert_eq!(sa.id, i * 100_000 + version);
                                // The SA is alive and usable while we hold the snapshot.
                                assert!(sa.sa.reserve(1).is_ok());
                            }
                            Verdict::Drop { eroute: None } => {} // not yet added, or deleted
                            Verdict::Trap { eroute } => assert_eq!(eroute.id, i),
                            v => panic!("unexpected verdict {v:?}"),
                        }
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut weak = Vec::new();
    for round in 0..ROUNDS {
        let i = round % K;
        let v = round / K + 1;
        let sa_id = i * 100_000 + v;
        let sel = Selector::nets(p(&format!("10.{i}.0.0/16")), p(&format!("10.{}.0.0/16", 100 + i)));
        db.add_sa(sa_id, SaRole::Outbound, &sa_cfg(0x10_0000 + i * 0x1_0000 + v)).unwrap();
        let e = Eroute { id: i, selector: sel, priority: v, action: protect(sa_id) };
        match round % 7 {
            0 => {
                let _ = db.remove_eroute(i);
                db.add_eroute(e).unwrap();
            }
            3 => {
                // Briefly trap, then protect again.
                if db.eroute(i).is_some() {
                    db.replace_eroute(Eroute { action: Action::Trap, ..e }).unwrap();
                } else {
                    db.add_eroute(Eroute { action: Action::Trap, ..e }).unwrap();
                }
                db.replace_eroute(e).unwrap();
            }
            _ => {
                if db.eroute(i).is_some() {
                    db.replace_eroute(e).unwrap();
                } else {
                    db.add_eroute(e).unwrap();
                }
            }
        }
        // The previous version's SA is no longer referenced: delete it.
        if v > 1 {
            let old = i * 100_000 + v - 1;
            weak.push(Arc::downgrade(db.sa(old).unwrap()));
            db.remove_sa(old).unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    for t in readers {
        t.join().unwrap();
    }
    assert!(checked.load(Ordering::Relaxed) > if cfg!(miri) { 0 } else { 10_000 }, "readers did real work");
    // Every deleted SA has been reclaimed now that no reader holds a snapshot.
    drop(r);
    assert!(weak.iter().all(|w| w.upgrade().is_none()));
}

#[test]
fn replace_sa_rekeys_and_keeps_indexes_right() {
    let mut db = table();
    let r = db.reader();
    let k = key("10.1.1.1", "10.2.1.1", 17, 1, 2);
    let spi_of = |r: &PolicyReader| match r.load().outbound(&k) {
        Verdict::Protect { sa, .. } => sa.sa.spi(),
        v => panic!("{v:?}"),
    };
    assert_eq!(spi_of(&r), 0x101);
    db.replace_sa(1, SaRole::Outbound, &sa_cfg(0x9001)).unwrap();
    assert_eq!(spi_of(&r), 0x9001, "eroute follows the rekeyed SA");
    assert_eq!(
        db.replace_sa(1, SaRole::inbound_for(None, &[10]), &sa_cfg(0x9002)),
        Err(PolicyError::NotOutbound { eroute: 10, sa: 1 }),
        "cannot turn a used outbound SA inbound"
    );
    // Inbound SPI index follows replace and delete.
    let inb = || SaRole::inbound_for(None, &[10]);
    db.add_sa(80, inb(), &sa_cfg(0x8000)).unwrap();
    db.replace_sa(80, inb(), &sa_cfg(0x8001)).unwrap();
    db.add_sa(81, inb(), &sa_cfg(0x8000)).unwrap(); // old SPI is free again
    assert_eq!(db.add_sa(82, inb(), &sa_cfg(0x8001)), Err(PolicyError::SpiInUse { spi: 0x8001, other: 80 }));
    db.remove_sa(80).unwrap();
    db.add_sa(82, inb(), &sa_cfg(0x8001)).unwrap();
    // Usage index follows eroute replace and delete.
    db.replace_eroute(er(10, "10.1.0.0/16", "10.2.0.0/16", None, "any", "any", 100, Action::Pass)).unwrap();
    db.remove_eroute(11).unwrap();
    db.remove_sa(2).unwrap();
    assert_eq!(db.remove_sa(3), Err(PolicyError::InUse { sa: 3, eroute: 16 }));
    db.remove_eroute(16).unwrap();
    assert_eq!(db.remove_sa(3), Err(PolicyError::InUse { sa: 3, eroute: 17 }));
}

/// The nonce rule at the database: a key's counter survives replace (same
/// key), delete + add and a second SPI, and never goes back.
#[test]
fn a_keys_counter_never_restarts() {
    let mut db = table();
    let sa1 = |db: &PolicyDb| db.sa(1).unwrap().sa.usage().next_seq;
    db.sa(1).unwrap().sa.advance_seq(1_805_814);
    // Replace with the same key (another TTL): the counter continues.
    let same = SaConfig { ttl: 9, ..sa_cfg(0x101) };
    db.replace_sa(1, SaRole::Outbound, &same).unwrap();
    assert_eq!(sa1(&db), 1_805_814);
    // Replace with a new key: a new counter; back to the old key: continues.
    db.replace_sa(1, SaRole::Outbound, &sa_cfg(0x9101)).unwrap();
    assert_eq!(sa1(&db), 1);
    db.replace_sa(1, SaRole::Outbound, &same).unwrap();
    assert_eq!(sa1(&db), 1_805_814);
    // Delete + add under another id and SPI with the same key: continues.
    let users: Vec<u32> =
        db.eroutes().filter(|e| matches!(e.action, Action::Protect { sa: 1, .. })).map(|e| e.id).collect();
    for e in users {
        db.remove_eroute(e).unwrap();
    }
    db.remove_sa(1).unwrap();
    db.add_sa(90, SaRole::Outbound, &SaConfig { spi: 0x9090, ..same.clone() }).unwrap();
    assert_eq!(db.sa(90).unwrap().sa.usage().next_seq, 1_805_814);
    // The inbound window survives a replace that keeps key and SPI.
    db.add_sa(91, SaRole::inbound_for(None, &[11]), &sa_cfg(0x9191)).unwrap();
    db.sa(91).unwrap().sa.replay_window().update(5000).unwrap();
    db.replace_sa(91, SaRole::inbound_for(None, &[11, 12]), &sa_cfg(0x9191)).unwrap();
    assert_eq!(db.sa(91).unwrap().sa.usage().replay_top, 5000);
    assert!(db.sa(91).unwrap().sa.replay_window().check(5000).is_err());
}

/// Leases: with a state store, no number is usable before it is persisted,
/// and a restart resumes from the persisted lease.
#[test]
fn leases_are_persisted_before_use() {
    #[derive(Default, Clone)]
    struct Mem(Arc<std::sync::Mutex<std::collections::HashMap<KeyId, u64>>>);
    impl StateStore for Mem {
        fn seq_floor(&self, key: &KeyId) -> u64 {
            self.0.lock().unwrap().get(key).copied().unwrap_or(1)
        }
        fn replay_floor(&self, _: &KeyId, _: u32) -> u64 {
            0
        }
        fn persist_leases(&mut self, leases: &[(KeyId, u64)]) -> std::io::Result<()> {
            let mut m = self.0.lock().unwrap();
            for (k, v) in leases {
                m.insert(*k, *v);
            }
            Ok(())
        }
    }
    let disk = Mem::default();
    let mut db = PolicyDb::new(Defaults::default()).with_state_store(Box::new(disk.clone()));
    db.add_sa(1, SaRole::Outbound, &sa_cfg(0x101)).unwrap();
    let sa = db.sa(1).unwrap().clone();
    let key = sa.sa.key_id();
    assert_eq!(disk.0.lock().unwrap()[&key], 1 + SEQ_LEASE, "persisted before publish");
    assert_eq!(sa.sa.seq_space().leased(), 1 + SEQ_LEASE);
    // Use most of the lease: renewal pushes it forward, persisted first.
    sa.sa.advance_seq(SEQ_LEASE - 10);
    assert_eq!(db.renew_leases().unwrap(), 1);
    let persisted = disk.0.lock().unwrap()[&key];
    assert_eq!(persisted, SEQ_LEASE - 10 + SEQ_LEASE);
    assert_eq!(db.renew_leases().unwrap(), 0, "nothing due");
    // "Restart": a new database on the same store resumes at the lease.
    let mut db2 = PolicyDb::new(Defaults::default()).with_state_store(Box::new(disk.clone()));
    db2.add_sa(1, SaRole::Outbound, &sa_cfg(0x101)).unwrap();
    assert_eq!(db2.sa(1).unwrap().sa.usage().next_seq, persisted);
    // A store that cannot write refuses the SA instead of risking reuse.
    struct Broken;
    impl StateStore for Broken {
        fn seq_floor(&self, _: &KeyId) -> u64 {
            1
        }
        fn replay_floor(&self, _: &KeyId, _: u32) -> u64 {
            0
        }
        fn persist_leases(&mut self, _: &[(KeyId, u64)]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }
    let mut db3 = PolicyDb::new(Defaults::default()).with_state_store(Box::new(Broken));
    assert!(matches!(db3.add_sa(1, SaRole::Outbound, &sa_cfg(0x101)), Err(PolicyError::Persist(_))));
    assert!(db3.sa(1).is_none(), "not added");
    let (_, space) = db3.seq_spaces().next().unwrap();
    assert_eq!(space.reserve(1, u64::MAX), Err(crate::esp::seq::SeqError::NotPersisted));
}
