//! The pipeline on plain buffers: two gateways back to back, MTU handling,
//! policy verdicts and drop accounting — no DPDK.

use super::*;
use crate::crypto::Algorithm;
use crate::esp::{tests::udp4, tests::udp6, SaConfig};
use crate::esp::{Mode, Sa};
use crate::mtu;
use crate::packet::ip::{self, proto};
use crate::packet::VecBuf;
use crate::policy::Action;
use crate::policy::{Defaults, Eroute, PolicyDb, ProtectOptions, SaRole, Selector};
use crate::route::Route;
use crate::stats::Event;

const CLEAR: usize = 0;
const PROT: usize = 1;
const MAC_A_CLEAR: [u8; 6] = [2, 0xa, 0, 0, 0, 0];
const MAC_A_PROT: [u8; 6] = [2, 0xa, 0, 0, 0, 1];
const MAC_B_PROT: [u8; 6] = [2, 0xb, 0, 0, 0, 1];
const MAC_B_CLEAR: [u8; 6] = [2, 0xb, 0, 0, 0, 0];
const MAC_HOST_A: [u8; 6] = [2, 0xaa, 0, 0, 0, 9];
const MAC_HOST_B: [u8; 6] = [2, 0xbb, 0, 0, 0, 9];

use crate::lab::Gw;

/// Gateway pair: A (192.0.2.1) protects 10.0.1.0/24 → 10.0.2.0/24 towards B (198.51.100.1),
/// both families (fd00:1::/64 → fd00:2::/64), with the given algorithm and options.
fn pair(alg: Algorithm, options: ProtectOptions, prot_mtu: u16, clear_mtu: u16) -> (Gw, Gw) {
    pair_with(alg, options, prot_mtu, clear_mtu, None)
}

/// [`pair`], the SAs encapsulating ESP in UDP when `encap` is given (the
/// protected ports then own the tunnel addresses: NAT-T arrives for them).
fn pair_with(
    alg: Algorithm,
    options: ProtectOptions,
    prot_mtu: u16,
    clear_mtu: u16,
    encap: Option<crate::esp::UdpEncap>,
) -> (Gw, Gw) {
    let ek: Vec<u8> = (0..alg.enc_key_len() as u8).collect();
    let ak: Vec<u8> = (0..alg.auth_key_len() as u8).map(|x| x ^ 0x5a).collect();
    let a_ip: IpAddr = "192.0.2.1".parse().unwrap();
    let b_ip: IpAddr = "198.51.100.1".parse().unwrap();
    let mk = |local: IpAddr, remote: IpAddr, spi| SaConfig {
        encap,
        ..SaConfig::new(spi, alg, &ek, &ak, Mode::Tunnel { local, remote })
    };
    let sel = |s: &str, d: &str| Selector::nets(s.parse().unwrap(), d.parse().unwrap());
    let build = |me: IpAddr,
                 peer: IpAddr,
                 out_spi,
                 in_spi,
                 my_net4: &str,
                 peer_net4: &str,
                 my_net6: &str,
                 peer_net6: &str,
                 macs: ([u8; 6], [u8; 6], [u8; 6], [u8; 6])| {
        let mut db = PolicyDb::new(Defaults::default());
        db.batch(|b| {
            b.add_sa(1, SaRole::Outbound, &mk(me, peer, out_spi)).unwrap();
            b.add_eroute(Eroute {
                id: 1,
                selector: sel(my_net4, peer_net4),
                priority: 1,
                action: Action::Protect { sa: 1, options },
            })
            .unwrap();
            b.add_eroute(Eroute {
                id: 2,
                selector: sel(my_net6, peer_net6),
                priority: 1,
                action: Action::Protect { sa: 1, options },
            })
            .unwrap();
            // Carries both families: checked against both eroutes.
            b.add_sa(2, SaRole::inbound_for(Some(me), &[1, 2]), &mk(me, peer, in_spi)).unwrap();
        })
        .unwrap();
        let (my_clear, my_prot, host, peer_mac) = macs;
        let routes = RouteTable::new(
            vec![
                Route { prefix: my_net4.parse().unwrap(), port: CLEAR, via: None },
                Route { prefix: my_net6.parse().unwrap(), port: CLEAR, via: None },
                Route { prefix: "0.0.0.0/0".parse().unwrap(), port: PROT, via: Some(peer) },
            ],
            [(peer, peer_mac)],
            vec![Some(host), None],
        );
        let ports = vec![
            PortInfo {
                role: PortRole::Cleartext,
                mtu: clear_mtu,
                mac: my_clear,
                // x.y.z.254 and <prefix>::fe of the gateway's own networks.
                addr_v4: Some(my_net4.replace(".0/24", ".254").parse().unwrap()),
                addr_v6: Some(my_net6.replace("::/64", "::fe").parse().unwrap()),
            },
            PortInfo {
                role: PortRole::Protected,
                mtu: prot_mtu,
                mac: my_prot,
                addr_v4: match me {
                    IpAddr::V4(a) if encap.is_some() => Some(a),
                    _ => None,
                },
                addr_v6: None,
            },
        ];
        Gw {
            db,
            routes,
            pipe: Pipeline::new(ports, ReasmConfig::default(), mtu::PMTU_AGEING_MS),
            stats: WorkerStats::new(2),
        }
    };
    let a = build(
        a_ip,
        b_ip,
        0xa0b0,
        0xb0a0,
        "10.0.1.0/24",
        "10.0.2.0/24",
        "fd00:1::/64",
        "fd00:2::/64",
        (MAC_A_CLEAR, MAC_A_PROT, MAC_HOST_A, MAC_B_PROT),
    );
    let b = build(
        b_ip,
        a_ip,
        0xb0a0,
        0xa0b0,
        "10.0.2.0/24",
        "10.0.1.0/24",
        "fd00:2::/64",
        "fd00:1::/64",
        (MAC_B_CLEAR, MAC_B_PROT, MAC_HOST_B, MAC_A_PROT),
    );
    (a, b)
}

fn eth(ip_pkt: &[u8], dst: [u8; 6], src: [u8; 6]) -> VecBuf {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(if ip_pkt[0] >> 4 == 6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(ip_pkt);
    let mut b = VecBuf::with_room(128, 128 + f.len() + 512);
    b.append(f.len()).unwrap();
    b.data_mut().copy_from_slice(&f);
    b
}

/// A's host sends a packet from 10.0.1.5 to 10.0.2.7 (or v6).
fn from_host_a(len: usize, df: bool, v6: bool, fill: u8) -> Vec<u8> {
    let mut p = if v6 { udp6(len, 0, fill) } else { udp4(len, 0, df, fill) };
    if v6 {
        p[8..24].copy_from_slice(&"fd00:1::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00:2::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    } else {
        p[12..16].copy_from_slice(&[10, 0, 1, 5]);
        p[16..20].copy_from_slice(&[10, 0, 2, 7]);
        ip::ipv4_set_checksum(&mut p[..20]);
    }
    p
}

/// What B's host should receive: the packet after two router hops (TTL -2).
fn after_two_hops(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    if q[0] >> 4 == 4 {
        q[8] -= 2;
        ip::ipv4_set_checksum(&mut q[..20]);
    } else {
        q[7] -= 2;
    }
    q
}

fn l3(b: &VecBuf) -> &[u8] {
    &b.data()[14..]
}

#[test]
fn two_gateways_round_trip_every_algorithm_both_families() {
    for alg in Algorithm::ALL {
        let (mut a, mut b) = pair(alg, ProtectOptions::default(), 1500, 1500);
        let inner: Vec<Vec<u8>> = (0..40).map(|i| from_host_a(60 + i * 31, i % 2 == 0, i % 3 == 0, i as u8)).collect();
        let out = a.run(CLEAR, inner.iter().map(|p| eth(p, MAC_A_CLEAR, MAC_HOST_A)).collect(), 0);
        assert_eq!(out.len(), 40, "{alg:?}");
        for (port, f) in &out {
            assert_eq!(*port, PROT);
            assert_eq!(&f.data()[..12], &[MAC_B_PROT, MAC_A_PROT].concat()[..], "L2 rewritten to the peer");
            let o = ip::parse_ipv4(l3(f)).unwrap();
            assert_eq!(o.protocol, proto::ESP);
            assert_eq!(&l3(f)[12..20], &[192, 0, 2, 1, 198, 51, 100, 1]);
        }
        assert_eq!(a.event(Event::Encrypted), 40);
        let delivered = b.run(PROT, out.into_iter().map(|(_, f)| f).collect(), 0);
        assert_eq!(
            delivered.len(),
            40,
            "{alg:?}: {:?}",
            DropReason::ALL.iter().filter(|r| b.drops(**r) > 0).map(|r| (r.label(), b.drops(*r))).collect::<Vec<_>>()
        );
        for ((port, f), p) in delivered.iter().zip(&inner) {
            assert_eq!(*port, CLEAR);
            assert_eq!(&f.data()[..12], &[MAC_HOST_B, MAC_B_CLEAR].concat()[..]);
            assert_eq!(l3(f), &after_two_hops(p)[..], "{alg:?}");
        }
        assert_eq!(b.event(Event::Decrypted), 40);
        assert_eq!(a.stats.total_drops() + b.stats.total_drops(), 0);
    }
}

/// DF packets that do not fit are refused with ICMP carrying the exact tunnel
/// MTU, out of the port they came in on; the sender's next packet of that
/// size goes through; without DF the ESP packet is fragmented and the peer
/// reassembles it.
#[test]
fn df_refused_with_exact_mtu_else_fragmented_after_encryption() {
    let (mut a, mut b) = pair(Algorithm::AesCbc128HmacSha1, ProtectOptions::default(), 1500, 9000);
    let big_df = from_host_a(1500, true, false, 1);
    let out = a.run(CLEAR, vec![eth(&big_df, MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert_eq!(out.len(), 1);
    let (port, icmp) = &out[0];
    assert_eq!(*port, CLEAR, "back to the sender's side");
    assert_eq!(&icmp.data()[..6], &MAC_HOST_A);
    let i = l3(icmp);
    assert_eq!(&i[12..16], &[10, 0, 1, 254], "from the gateway's cleartext address");
    assert_eq!(&i[16..20], &[10, 0, 1, 5]);
    assert_eq!((i[20], i[21]), (3, 4));
    let mtu = u16::from_be_bytes([i[26], i[27]]);
    // CBC: 1500 - 20 - 8 - 16 - 12 = 1444 → 1440 aligned to 16 → 1438 with the trailer.
    assert_eq!(mtu, 1438);
    assert_eq!(a.drops(DropReason::TooBigDf), 1);
    assert_eq!(a.event(Event::IcmpTooBigSent), 1);
    // The sender obeys: exactly `mtu` bytes fit, in one ESP packet of at most 1500.
    let fits = from_host_a(mtu.into(), true, false, 2);
    let out = a.run(CLEAR, vec![eth(&fits, MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert_eq!(out.len(), 1);
    assert!(l3(&out[0].1).len() <= 1500);
    assert_eq!(a.event(Event::FragmentsMade), 0);
    // IPv6 is never fragmented on path: PTB.
    let big6 = from_host_a(1500, false, true, 3);
    let out = a.run(CLEAR, vec![eth(&big6, MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert_eq!(l3(&out[0].1)[40], 2, "ICMPv6 Packet Too Big");
    // No DF, and a 9000-byte cleartext side: encrypt once, fragment the ESP packet.
    for size in [1500usize, 3000, 8900] {
        let p = from_host_a(size, false, false, 4);
        let out = a.run(CLEAR, vec![eth(&p, MAC_A_CLEAR, MAC_HOST_A)], 0);
        assert!(out.len() >= 2, "{size}: fragmented");
        for (port, f) in &out {
            assert_eq!(*port, PROT);
            assert!(l3(f).len() <= 1500);
            assert_eq!(ip::checksum(&l3(f)[..20]), 0);
        }
        let got = b.run(PROT, out.into_iter().map(|(_, f)| f).collect(), 0);
        assert_eq!(got.len(), 1, "{size}: reassembled and decrypted");
        assert_eq!(l3(&got[0].1), &after_two_hops(&p)[..]);
    }
    assert_eq!(b.event(Event::Reassembled), 3);
}

/// One SA group holding every fate at once, then one holding only packets
/// encrypted as they are (the group's fast path): the same packets come out
/// either way, each treated as alone — DF refused with ICMP, no-DF
/// fragmented after encryption, a SYN's MSS clamped, TTLs decremented once.
#[test]
fn a_group_with_mixed_fates_equals_its_packets_alone() {
    let opts = ProtectOptions { fragment_before_encryption: false, mss_clamp: true };
    let syn = {
        let mut syn = from_host_a(44, true, false, 0);
        syn[9] = proto::TCP;
        let t = &mut syn[20..];
        t.fill(0);
        t[12] = 6 << 4;
        t[13] = 0x02;
        t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        ip::ipv4_set_checksum(&mut syn[..20]);
        syn
    };
    let small = |i: u8| from_host_a(100 + usize::from(i), false, false, i);
    let mixed =
        vec![small(1), from_host_a(1500, true, false, 2), syn.clone(), from_host_a(3000, false, false, 3), small(4)];
    let only_as_is = vec![small(5), syn.clone(), small(6)];
    for burst in [mixed, only_as_is] {
        // Each packet alone through a fresh pair, then all in one burst.
        let mut alone = Vec::new();
        for p in &burst {
            let (mut a, mut b) = pair(Algorithm::AesGcm128, opts, 1500, 9000);
            let out = a.run(CLEAR, vec![eth(p, MAC_A_CLEAR, MAC_HOST_A)], 0);
            let (to_b, back): (Vec<_>, Vec<_>) = out.into_iter().partition(|(port, _)| *port == PROT);
            let got = b.run(PROT, to_b.into_iter().map(|(_, f)| f).collect(), 0);
            alone.push((
                back.iter().map(|(_, f)| l3(f).to_vec()).collect::<Vec<_>>(),
                got.iter().map(|(_, f)| l3(f).to_vec()).collect::<Vec<_>>(),
                a.event(Event::MssClamped),
            ));
        }
        let (mut a, mut b) = pair(Algorithm::AesGcm128, opts, 1500, 9000);
        let out = a.run(CLEAR, burst.iter().map(|p| eth(p, MAC_A_CLEAR, MAC_HOST_A)).collect(), 0);
        let (to_b, back): (Vec<_>, Vec<_>) = out.into_iter().partition(|(port, _)| *port == PROT);
        let got: Vec<Vec<u8>> =
            b.run(PROT, to_b.into_iter().map(|(_, f)| f).collect(), 0).iter().map(|(_, f)| l3(f).to_vec()).collect();
        let back: Vec<Vec<u8>> = back.iter().map(|(_, f)| l3(f).to_vec()).collect();
        assert_eq!(back, alone.iter().flat_map(|x| x.0.clone()).collect::<Vec<_>>(), "ICMP errors");
        assert_eq!(got, alone.iter().flat_map(|x| x.1.clone()).collect::<Vec<_>>(), "delivered");
        assert_eq!(a.event(Event::MssClamped), alone.iter().map(|x| x.2).sum::<u64>());
        assert_eq!(a.event(Event::MssClamped), 1, "the SYN's MSS");
        assert_eq!(got.len(), burst.len() - usize::from(burst.len() == 5), "all but the refused DF packet");
    }
}

#[test]
fn fragment_before_encryption_needs_no_reassembly_at_the_peer() {
    let opts = ProtectOptions { fragment_before_encryption: true, mss_clamp: false };
    let (mut a, mut b) = pair(Algorithm::AesGcm128, opts, 1500, 9000);
    let p = from_host_a(4000, false, false, 7);
    let out = a.run(CLEAR, vec![eth(&p, MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert!(out.len() >= 3);
    for (_, f) in &out {
        let o = ip::parse_ipv4(l3(f)).unwrap();
        assert!(!o.is_fragment(), "whole ESP packets");
        assert!(l3(f).len() <= 1500);
    }
    assert!(a.event(Event::InnerFragmentsMade) >= 3);
    let got = b.run(PROT, out.into_iter().map(|(_, f)| f).collect(), 0);
    assert_eq!(b.event(Event::Reassembled), 0);
    // B delivers the inner fragments; together they are the original payload.
    let mut payload = vec![0u8; 4000 - 20];
    for (_, f) in &got {
        let d = l3(f);
        let i = ip::parse_ipv4(d).unwrap();
        let off = usize::from(i.flags_frag & 0x1fff) * 8;
        payload[off..off + d.len() - 20].copy_from_slice(&d[20..]);
    }
    assert_eq!(payload, &p[20..]);
}

#[test]
fn mss_clamp_and_pmtu_learning_through_the_pipeline() {
    let opts = ProtectOptions { fragment_before_encryption: false, mss_clamp: true };
    let (mut a, _) = pair(Algorithm::AesGcm128, opts, 1500, 1500);
    // A TCP SYN with MSS 1460.
    let mut syn = from_host_a(44, true, false, 0);
    syn[9] = proto::TCP;
    ip::ipv4_set_checksum(&mut syn[..20]);
    let t = &mut syn[20..];
    t.fill(0);
    t[12] = 6 << 4;
    t[13] = 0x02;
    t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let out = a.run(CLEAR, vec![eth(&syn, MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert_eq!(out.len(), 1);
    assert_eq!(a.event(Event::MssClamped), 1);
    // An ICMP need-frag from a router on the outer path quoting our ESP packet.
    let esp = l3(&out[0].1).to_vec();
    let mut icmp = VecBuf::with_room(128, 2048);
    mtu::build_frag_needed(&esp, 1400, "203.0.113.1".parse().unwrap(), 1, &mut icmp).unwrap();
    // It is addressed to us (192.0.2.1) and arrives on the protected port.
    let report = eth(icmp.data(), MAC_A_PROT, MAC_B_PROT);
    let mut r = report.clone();
    r.data_mut()[14 + 16..14 + 20].copy_from_slice(&[192, 0, 2, 1]);
    let out = a.run(PROT, vec![r], 10);
    assert!(out.is_empty());
    assert_eq!(a.event(Event::PmtuLowered), 1);
    // Now a DF packet that fitted 1500 is refused with the smaller tunnel MTU.
    let p = from_host_a(1420, true, false, 1);
    let out = a.run(CLEAR, vec![eth(&p, MAC_A_CLEAR, MAC_HOST_A)], 20);
    let i = l3(&out[0].1);
    assert_eq!((i[20], i[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([i[26], i[27]]), 1346, "1400 - 54 bytes of GCM tunnel overhead");
    // A report quoting an unknown SPI is ignored and counted.
    let mut bogus = report.clone();
    bogus.data_mut()[14 + 28 + 20] ^= 0xff;
    a.run(PROT, vec![bogus], 30);
    assert_eq!(a.drops(DropReason::PmtuReportIgnored), 1);
}

#[test]
fn verdicts_and_drops_are_counted() {
    let (mut a, mut b) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    // Default outbound action is drop; add a pass and a trap eroute.
    let pass = Selector::nets("10.0.1.0/24".parse().unwrap(), "10.9.0.0/16".parse().unwrap());
    let trap = Selector::nets("10.0.1.0/24".parse().unwrap(), "10.8.0.0/16".parse().unwrap());
    a.db.add_eroute(Eroute { id: 10, selector: pass, priority: 1, action: Action::Pass }).unwrap();
    a.db.add_eroute(Eroute { id: 11, selector: trap, priority: 1, action: Action::Trap }).unwrap();
    let to = |d: [u8; 4], ttl: u8| {
        let mut p = from_host_a(100, false, false, 0);
        p[16..20].copy_from_slice(&d);
        p[8] = ttl;
        ip::ipv4_set_checksum(&mut p[..20]);
        eth(&p, MAC_A_CLEAR, MAC_HOST_A)
    };
    let mut arp = to([10, 0, 2, 7], 64);
    arp.data_mut()[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut lying = to([10, 0, 2, 7], 64);
    lying.data_mut()[14 + 3] = 200; // IP total length beyond the frame
    let frames =
        vec![to([10, 9, 1, 1], 64), to([10, 8, 1, 1], 64), to([10, 7, 1, 1], 64), to([10, 0, 2, 7], 1), arp, lying];
    let out = a.run(CLEAR, frames, 0);
    assert_eq!(out.len(), 1, "only the pass packet");
    assert_eq!(out[0].0, PROT, "pass traffic routed by the default route");
    assert_eq!(a.event(Event::Passed), 1);
    for (r, n) in [
        (DropReason::PolicyTrap, 1),
        (DropReason::PolicyDrop, 1),
        (DropReason::TtlExpired, 1),
        (DropReason::NotIp, 1),
        (DropReason::BadIp, 1),
    ] {
        assert_eq!(a.drops(r), n, "{}", r.label());
    }
    // Inbound: unknown SPI, tampered ESP, replay, clear text, wrong inner selector.
    let good = a.run(CLEAR, vec![eth(&from_host_a(200, false, false, 1), MAC_A_CLEAR, MAC_HOST_A)], 0).remove(0).1;
    let mut bad_spi = good.clone();
    bad_spi.data_mut()[14 + 20] ^= 1;
    let mut tampered = good.clone();
    let l = tampered.len();
    tampered.data_mut()[l - 1] ^= 1;
    let clear = eth(&from_host_a(100, false, false, 0), MAC_B_PROT, MAC_A_PROT);
    let out = b.run(PROT, vec![bad_spi, tampered, good.clone(), good, clear], 0);
    assert_eq!(out.len(), 1);
    for (r, n) in [
        (DropReason::NoSa, 1),
        (DropReason::EspAuthFailed, 1),
        (DropReason::ReplayDuplicate, 1),
        (DropReason::ClearOnProtected, 1),
    ] {
        assert_eq!(b.drops(r), n, "{}", r.label());
    }
    // Bind B's inbound SA to its eroute 1 (10.0.2.0/24 → 10.0.1.0/24, mirrored),
    // then send A's SA traffic outside it: 10.0.1.0/24 → 10.0.3.0/24.
    let cfg = SaConfig::new(
        0xa0b0,
        Algorithm::AesGcm128,
        &(0..20).collect::<Vec<u8>>(),
        &[],
        Mode::Tunnel { local: "192.0.2.1".parse().unwrap(), remote: "198.51.100.1".parse().unwrap() },
    );
    b.db.replace_sa(2, SaRole::inbound_for(Some("198.51.100.1".parse().unwrap()), &[1]), &cfg).unwrap();
    let wide = Selector::nets("10.0.1.0/24".parse().unwrap(), "10.0.3.0/24".parse().unwrap());
    a.db.add_eroute(Eroute {
        id: 12,
        selector: wide,
        priority: 1,
        action: Action::Protect { sa: 1, options: ProtectOptions::default() },
    })
    .unwrap();
    let esp = a.run(CLEAR, vec![to([10, 0, 3, 3], 64)], 0);
    assert_eq!(b.run(PROT, esp.into_iter().map(|(_, f)| f).collect(), 0).len(), 0);
    assert_eq!(b.drops(DropReason::InboundPolicy), 1);
}

#[test]
fn arp_and_ndp_answer_learn_and_solicit() {
    let (mut a, _) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    let q = Arc::new(LearnQueue::new(16));
    a.pipe = Pipeline::new(a.pipe.ports().to_vec(), ReasmConfig::default(), 1000).with_learning(q.clone());
    // A host asks who has 10.0.1.254 (the gateway's private address).
    let mut req = VecBuf::with_room(128, 256);
    crate::neigh::build_arp(
        &mut req,
        1,
        [0xff; 6],
        MAC_HOST_A,
        "10.0.1.5".parse().unwrap(),
        [0; 6],
        "10.0.1.254".parse().unwrap(),
    )
    .unwrap();
    let out = a.run(CLEAR, vec![req], 0);
    assert_eq!(out.len(), 1);
    let (port, reply) = &out[0];
    assert_eq!(*port, CLEAR);
    let d = reply.data();
    assert_eq!(&d[..12], &[MAC_HOST_A, MAC_A_CLEAR].concat()[..]);
    let r = crate::neigh::parse_arp(&d[14..]).unwrap();
    assert_eq!(
        (r.op, r.sender_mac, r.sender_ip, r.target_ip),
        (2, MAC_A_CLEAR, "10.0.1.254".parse().unwrap(), "10.0.1.5".parse().unwrap())
    );
    assert_eq!(q.pop(), Some(("10.0.1.5".parse().unwrap(), MAC_HOST_A)), "the asker is learned");
    // A request for someone else is neither answered nor learned from
    // (Linux's arp_accept = 0: anyone on the link could send it).
    let mut other = VecBuf::with_room(128, 256);
    crate::neigh::build_arp(
        &mut other,
        1,
        [0xff; 6],
        MAC_HOST_A,
        "10.0.1.6".parse().unwrap(),
        [0; 6],
        "10.0.1.7".parse().unwrap(),
    )
    .unwrap();
    assert!(a.run(CLEAR, vec![other], 0).is_empty());
    assert_eq!(q.pop(), None, "not learned");
    // Nor is a reply nobody asked for.
    let arp_reply = |ip: &str, mac: [u8; 6]| {
        let mut r = VecBuf::with_room(128, 256);
        crate::neigh::build_arp(
            &mut r,
            2,
            MAC_A_CLEAR,
            mac,
            ip.parse().unwrap(),
            MAC_A_CLEAR,
            "10.0.1.254".parse().unwrap(),
        )
        .unwrap();
        r
    };
    assert!(a.run(CLEAR, vec![arp_reply("10.0.1.1", [2, 0xee, 0, 0, 0, 1])], 0).is_empty());
    assert_eq!(q.pop(), None, "an unsolicited reply is not learned");
    // IPv6: a neighbour solicitation for fd00:1::fe gets an advertisement.
    let me: std::net::Ipv6Addr = "fd00:1::fe".parse().unwrap();
    let host: std::net::Ipv6Addr = "fd00:1::5".parse().unwrap();
    let (sn, sn_mac) = crate::neigh::solicited_node(me);
    let mut ns = VecBuf::with_room(128, 256);
    crate::neigh::build_nd(&mut ns, 135, sn_mac, MAC_HOST_A, host, sn, me, 0).unwrap();
    let out = a.run(CLEAR, vec![ns], 0);
    assert_eq!(out.len(), 1);
    let na = crate::neigh::parse_nd(&out[0].1.data()[14..]).unwrap();
    assert_eq!((na.kind, na.src, na.target, na.lladdr), (136, me, me, Some(MAC_A_CLEAR)));
    assert_eq!(&out[0].1.data()[..6], &MAC_HOST_A);
    assert_eq!(q.pop(), Some((std::net::IpAddr::V6(host), MAC_HOST_A)));
    assert_eq!(a.event(Event::NeighborReplies), 2);

    // Unknown next hop: the packet is dropped (counted) and an ARP request goes out, once.
    let mut ports = a.pipe.ports().to_vec();
    ports[PROT].addr_v4 = Some("192.0.2.1".parse().unwrap());
    a.pipe = Pipeline::new(ports, ReasmConfig::default(), 1000);
    a.routes = RouteTable::new(
        vec![Route { prefix: "0.0.0.0/0".parse().unwrap(), port: PROT, via: Some("198.51.100.1".parse().unwrap()) }],
        [],
        vec![None, None],
    );
    let pkts = (0..3).map(|i| eth(&from_host_a(100, false, false, i), MAC_A_CLEAR, MAC_HOST_A)).collect();
    let out = a.run(CLEAR, pkts, 0);
    assert_eq!(a.drops(DropReason::NoNeighbor), 3);
    assert_eq!(out.len(), 1, "one request, not one per packet");
    let (port, req) = &out[0];
    assert_eq!(*port, PROT);
    assert_eq!(&req.data()[..6], &[0xff; 6]);
    let r = crate::neigh::parse_arp(&req.data()[14..]).unwrap();
    assert_eq!(
        (r.op, r.sender_mac, r.sender_ip, r.target_ip),
        (1, MAC_A_PROT, "192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap())
    );
    // A second later it asks again.
    let out = a.run(CLEAR, vec![eth(&from_host_a(100, false, false, 9), MAC_A_CLEAR, MAC_HOST_A)], 1000);
    assert_eq!(out.len(), 1);
    // The answer to that question is learned.
    let q = Arc::new(LearnQueue::new(16));
    let ports = a.pipe.ports().to_vec();
    let mut p = Pipeline::new(ports, ReasmConfig::default(), 1000).with_learning(q.clone());
    std::mem::swap(&mut a.pipe, &mut p);
    a.run(CLEAR, vec![eth(&from_host_a(100, false, false, 9), MAC_A_CLEAR, MAC_HOST_A)], 5000);
    let mut ans = VecBuf::with_room(128, 256);
    crate::neigh::build_arp(
        &mut ans,
        2,
        MAC_A_PROT,
        MAC_B_PROT,
        "198.51.100.1".parse().unwrap(),
        MAC_A_PROT,
        "192.0.2.1".parse().unwrap(),
    )
    .unwrap();
    a.run(PROT, vec![ans], 5100);
    assert_eq!(q.pop(), Some(("198.51.100.1".parse().unwrap(), MAC_B_PROT)), "the answer we asked for is learned");
}

// ---- Issue 12: the promises a hostile peer and a careless operator tested ----

fn drops_summary(g: &Gw) -> Vec<(&'static str, u64)> {
    DropReason::ALL.iter().filter(|r| g.drops(**r) > 0).map(|r| (r.label(), g.drops(*r))).collect()
}

/// Bad IPv4 header checksums are dropped on every ingress: cleartext before
/// encryption, ESP before decryption, and the inner packet after it.
#[test]
fn bad_checksums_are_dropped_on_every_ingress() {
    let (mut a, mut b) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    let mut bad = from_host_a(200, false, false, 1);
    crate::packet::meta::corrupt_checksum(&mut bad);
    assert!(a.run(CLEAR, vec![eth(&bad, MAC_A_CLEAR, MAC_HOST_A)], 0).is_empty(), "not encrypted");
    assert_eq!(a.drops(DropReason::BadIpChecksum), 1);
    assert_eq!(a.event(Event::Encrypted), 0);
    // ESP with a wrong outer checksum is not decrypted.
    let good = a.run(CLEAR, vec![eth(&from_host_a(200, false, false, 2), MAC_A_CLEAR, MAC_HOST_A)], 0).remove(0).1;
    let mut esp_bad = good.clone();
    esp_bad.data_mut()[14 + 10] ^= 0x5a;
    assert!(b.run(PROT, vec![esp_bad], 0).is_empty());
    assert_eq!((b.drops(DropReason::BadIpChecksum), b.event(Event::Decrypted)), (1, 0));
    assert_eq!(b.run(PROT, vec![good], 0).len(), 1, "the same packet with a good checksum goes through");
    // An inner packet whose checksum was wrong before encryption (sealed by a
    // peer that does not check): dropped after decryption.
    let sa = &a.db.sa(1).unwrap().sa;
    let mut inner = VecBuf::from_slice(&from_host_a(120, false, false, 3));
    crate::packet::meta::corrupt_checksum(inner.data_mut());
    let m = crate::packet::Meta::parse(inner.data(), crate::packet::HwChecksum::Good).unwrap();
    let mut r = [Ok(())];
    sa.encap_burst_meta(std::slice::from_mut(&mut inner), &[m], &mut r);
    r[0].unwrap();
    let frame = eth(inner.data(), MAC_B_PROT, MAC_A_PROT);
    assert!(b.run(PROT, vec![frame], 0).is_empty());
    assert_eq!(b.drops(DropReason::EspBadInnerChecksum), 1);
}

/// A fragment that would reach past 65 535 bytes is neither encrypted nor forwarded.
#[test]
fn fragments_past_64k_are_dropped() {
    let (mut a, _) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    let mut p = from_host_a(120, false, false, 1);
    p[6..8].copy_from_slice(&((65512 / 8) as u16).to_be_bytes());
    ip::ipv4_set_checksum(&mut p[..20]);
    assert!(a.run(CLEAR, vec![eth(&p, MAC_A_CLEAR, MAC_HOST_A)], 0).is_empty());
    assert_eq!(a.drops(DropReason::BadFragment), 1);
}

/// Traffic addressed to the gateway itself is dropped under its own reason,
/// never forwarded: from the cleartext side, decrypted from a tunnel, and as
/// transport-mode ESP whose payload is for the gateway.
#[test]
fn traffic_for_the_gateway_is_never_forwarded() {
    let (mut a, mut b) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    let mut ping = from_host_a(84, false, false, 1);
    ping[16..20].copy_from_slice(&[10, 0, 1, 254]); // A's own cleartext address
    ip::ipv4_set_checksum(&mut ping[..20]);
    assert!(a.run(CLEAR, vec![eth(&ping, MAC_A_CLEAR, MAC_HOST_A)], 0).is_empty());
    assert_eq!(a.drops(DropReason::ForGateway), 1);
    // Through the tunnel to B's own cleartext address (inside the eroute).
    let mut to_b = from_host_a(84, false, false, 2);
    to_b[16..20].copy_from_slice(&[10, 0, 2, 254]);
    ip::ipv4_set_checksum(&mut to_b[..20]);
    let esp = a.run(CLEAR, vec![eth(&to_b, MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert_eq!(esp.len(), 1);
    assert!(b.run(PROT, esp.into_iter().map(|(_, f)| f).collect(), 0).is_empty(), "not reflected anywhere");
    assert_eq!(b.drops(DropReason::ForGateway), 1);
    // Transport-mode ESP to B's public address, carrying a packet for B.
    let mut ports = b.pipe.ports().to_vec();
    ports[PROT].addr_v4 = Some("198.51.100.1".parse().unwrap());
    b.pipe = Pipeline::new(ports, ReasmConfig::default(), 1000);
    let key = [0x77u8; 20];
    let cfg = SaConfig::new(0x7777, Algorithm::AesGcm128, &key, &[], Mode::Transport);
    let anything = Selector::nets("0.0.0.0/0".parse().unwrap(), "0.0.0.0/0".parse().unwrap());
    let own = SaRole::Inbound { local: None, policy: crate::policy::InboundPolicy::Selectors(vec![anything]) };
    b.db.add_sa(7, own, &cfg).unwrap();
    let sender = crate::esp::Sa::new(&cfg).unwrap();
    let mut p = from_host_a(120, false, false, 3);
    p[12..20].copy_from_slice(&[192, 0, 2, 1, 198, 51, 100, 1]);
    ip::ipv4_set_checksum(&mut p[..20]);
    let mut t = VecBuf::from_slice(&p);
    sender.encap(&mut t).unwrap();
    assert!(b.run(PROT, vec![eth(t.data(), MAC_B_PROT, MAC_A_PROT)], 0).is_empty());
    assert_eq!(b.drops(DropReason::ForGateway), 2, "{:?}", drops_summary(&b));
    // And clear traffic to the gateway's public address, with inbound clear allowed.
    b.db.set_defaults(Defaults { inbound_clear: Action::Pass, ..Defaults::default() });
    assert!(b.run(PROT, vec![eth(&p, MAC_B_PROT, MAC_A_PROT)], 0).is_empty());
    assert_eq!(b.drops(DropReason::ForGateway), 3);
}

/// Nothing leaves a protected port in clear unless a pass eroute allowed
/// exactly that packet: decrypted traffic routed back to the public side is
/// dropped by the outbound policy, passed only by a pass eroute, and
/// re-encrypted when a protect eroute covers it (a hub).
#[test]
fn decrypted_traffic_never_leaves_a_protected_port_in_clear() {
    let (mut a, mut b) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    // B's inbound SA accepts anything from A's network (a careless but
    // legal operator choice); A tunnels 10.0.1.0/24 → 8.8.8.8 and → 10.0.5.0/24.
    let wide = Selector::nets("10.0.1.0/24".parse().unwrap(), "0.0.0.0/0".parse().unwrap());
    let cfg = SaConfig::new(
        0xa0b0,
        Algorithm::AesGcm128,
        &(0..20).collect::<Vec<u8>>(),
        &[],
        Mode::Tunnel { local: "192.0.2.1".parse().unwrap(), remote: "198.51.100.1".parse().unwrap() },
    );
    let role = SaRole::Inbound {
        local: Some("198.51.100.1".parse().unwrap()),
        policy: crate::policy::InboundPolicy::Selectors(vec![wide]),
    };
    b.db.replace_sa(2, role, &cfg).unwrap();
    for (id, dst) in [(20, "8.8.8.8/32"), (21, "10.0.5.0/24")] {
        let sel = Selector::nets("10.0.1.0/24".parse().unwrap(), dst.parse().unwrap());
        let action = Action::Protect { sa: 1, options: ProtectOptions::default() };
        a.db.add_eroute(Eroute { id, selector: sel, priority: 1, action }).unwrap();
    }
    let to = |d: [u8; 4], fill: u8| {
        let mut p = from_host_a(100, false, false, fill);
        p[16..20].copy_from_slice(&d);
        ip::ipv4_set_checksum(&mut p[..20]);
        eth(&p, MAC_A_CLEAR, MAC_HOST_A)
    };
    let esp: Vec<VecBuf> = a.run(CLEAR, vec![to([8, 8, 8, 8], 1)], 0).into_iter().map(|(_, f)| f).collect();
    assert!(b.run(PROT, esp.clone(), 0).is_empty(), "10.0.1.5 → 8.8.8.8 must not go out of the public port in clear");
    assert_eq!(b.drops(DropReason::PolicyDrop), 1, "{:?}", drops_summary(&b));
    // A pass eroute for exactly that traffic lets it out in clear.
    let pass = Selector::nets("10.0.1.0/24".parse().unwrap(), "8.8.8.8/32".parse().unwrap());
    b.db.add_eroute(Eroute { id: 30, selector: pass, priority: 1, action: Action::Pass }).unwrap();
    let esp: Vec<VecBuf> = a.run(CLEAR, vec![to([8, 8, 8, 8], 2)], 0).into_iter().map(|(_, f)| f).collect();
    let out = b.run(PROT, esp, 0);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, &l3(&out[0].1)[16..20]), (PROT, &[8u8, 8, 8, 8][..]), "passed, in clear, by the eroute");
    // A protect eroute makes B a hub: decrypted, re-encrypted, sent on.
    let hub = Selector::nets("10.0.1.0/24".parse().unwrap(), "10.0.5.0/24".parse().unwrap());
    let action = Action::Protect { sa: 1, options: ProtectOptions::default() };
    b.db.add_eroute(Eroute { id: 31, selector: hub, priority: 1, action }).unwrap();
    let esp: Vec<VecBuf> = a.run(CLEAR, vec![to([10, 0, 5, 5], 3)], 0).into_iter().map(|(_, f)| f).collect();
    let out = b.run(PROT, esp, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(l3(&out[0].1)[9], proto::ESP, "re-encrypted, never in clear");
    assert_eq!(b.event(Event::Encrypted), 1);
}

/// Every egress applies its MTU: decrypted packets bigger than the
/// cleartext port are fragmented when DF is clear, and otherwise refused
/// with ICMP need-frag that goes back through the tunnel by policy, quoting
/// the header as received.
#[test]
fn decrypted_packets_meet_the_cleartext_mtu() {
    let (mut a, mut b) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    let mut ports = b.pipe.ports().to_vec();
    ports[CLEAR].mtu = 1280;
    b.pipe = Pipeline::new(ports, ReasmConfig::default(), 1000);
    // DF clear: fragmented onto the 1280-byte port.
    let p = from_host_a(1400, false, false, 1);
    let esp: Vec<VecBuf> =
        a.run(CLEAR, vec![eth(&p, MAC_A_CLEAR, MAC_HOST_A)], 0).into_iter().map(|(_, f)| f).collect();
    let out = b.run(PROT, esp, 0);
    assert_eq!(out.len(), 2);
    for (port, f) in &out {
        assert_eq!(*port, CLEAR);
        assert!(l3(f).len() <= 1280, "{}", l3(f).len());
    }
    assert_eq!(b.event(Event::ClearFragmentsMade), 2);
    // DF set: refused; the ICMP goes back to 10.0.1.5 encrypted.
    let p = from_host_a(1400, true, false, 2);
    let esp: Vec<VecBuf> =
        a.run(CLEAR, vec![eth(&p, MAC_A_CLEAR, MAC_HOST_A)], 0).into_iter().map(|(_, f)| f).collect();
    let arrived = {
        // What B decrypts: A decremented the TTL once.
        let mut q = p.clone();
        q[8] -= 1;
        ip::ipv4_set_checksum(&mut q[..20]);
        q
    };
    let out = b.run(PROT, esp, 0);
    assert_eq!(b.drops(DropReason::TooBigDf), 1);
    assert_eq!(out.len(), 1, "{:?}", drops_summary(&b));
    assert_eq!((out[0].0, l3(&out[0].1)[9]), (PROT, proto::ESP), "the ICMP goes through the tunnel");
    let back = a.run(PROT, out.into_iter().map(|(_, f)| f).collect(), 0);
    assert_eq!(back.len(), 1, "{:?}", drops_summary(&a));
    let icmp = l3(&back[0].1);
    assert_eq!(back[0].0, CLEAR);
    assert_eq!(&icmp[12..20], &[10, 0, 2, 254, 10, 0, 1, 5], "from B's cleartext address to the sender");
    assert_eq!((icmp[20], icmp[21], u16::from_be_bytes([icmp[26], icmp[27]])), (3, 4, 1280));
    assert_eq!(&icmp[28..48], &arrived[..20], "quotes the header as B received it");
}

/// ICMP errors quote the header as received (RFC 1812 §4.3.2.3): the TTL is
/// not yet decremented.
#[test]
fn icmp_quotes_the_original_ttl() {
    let (mut a, _) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500);
    let big = from_host_a(1500, true, false, 1);
    let out = a.run(CLEAR, vec![eth(&big, MAC_A_CLEAR, MAC_HOST_A)], 0);
    let i = l3(&out[0].1);
    assert_eq!(&i[28..48], &big[..20], "the quoted header is the one the sender sent");
}

/// Fragments still waiting for the rest of their datagram when the worker
/// stops are freed and counted, so every received packet is accounted for.
#[test]
fn fragments_held_at_exit_are_counted() {
    let (mut a, mut b) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 9000);
    let esp = a.run(CLEAR, vec![eth(&from_host_a(3000, false, false, 1), MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert!(esp.len() >= 2);
    // Only the first piece arrives.
    assert!(b.run(PROT, vec![esp.into_iter().next().unwrap().1], 0).is_empty());
    b.pipe.shutdown(&b.stats);
    assert_eq!(b.drops(DropReason::ReasmAtExit), 1);
}

/// An IPv4 UDP datagram from `src:sport` to `dst:dport` (checksum 0).
fn udp_to(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = udp4(28 + payload.len(), 0, false, 0);
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    ip::ipv4_set_checksum(&mut p[..20]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// RFC 3948 through two gateways: ESP in UDP 4500 → 4500 out, the 8 bytes in
/// the tunnel MTU (DF refused with exactly that, the largest fitting packet
/// fills the port), decrypted at the peer; keepalives consumed and counted,
/// IKE behind the non-ESP marker is for the gateway, plain ESP for a UDP SA
/// is refused.
#[test]
fn nat_traversal_through_two_gateways() {
    let encap = Some(crate::esp::UdpEncap::default());
    let (mut a, mut b) = pair_with(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 9000, encap);
    let (_, mut plain_b) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 9000);
    let inner: Vec<Vec<u8>> = (0..8).map(|i| from_host_a(100 + i * 97, true, i % 2 == 1, i as u8)).collect();
    let out = a.run(CLEAR, inner.iter().map(|p| eth(p, MAC_A_CLEAR, MAC_HOST_A)).collect(), 0);
    assert_eq!(out.len(), 8);
    for (_, f) in &out {
        let o = l3(f);
        assert_eq!(o[9], proto::UDP);
        assert_eq!(&o[20..24], &[0x11, 0x94, 0x11, 0x94], "4500 -> 4500");
        assert_eq!(&o[26..28], &[0, 0], "IPv4: no UDP checksum");
        assert_eq!(&o[28..32], &0xa0b0u32.to_be_bytes());
    }
    let plain_copy: Vec<VecBuf> = out.iter().map(|(_, f)| f.clone()).collect();
    let got = b.run(PROT, out.into_iter().map(|(_, f)| f).collect(), 0);
    assert_eq!(got.len(), 8, "{:?}", drops_summary(&b));
    for ((_, f), p) in got.iter().zip(&inner) {
        assert_eq!(l3(f), &after_two_hops(p)[..]);
    }
    // A plain-ESP gateway with the same SPI refuses them (it does not own the
    // address for UDP either: they are cleartext for someone else there).
    plain_b.run(PROT, plain_copy, 0);
    assert_eq!(b.event(Event::NatMappingChanged), 0);

    // The tunnel MTU counts the UDP header: GCM 1500 - 20 - 8 (UDP) - 8 - 8 - 16
    // = 1440 → 1438 with the trailer (plain ESP: 1446).
    let big = from_host_a(1500, true, false, 1);
    let out = a.run(CLEAR, vec![eth(&big, MAC_A_CLEAR, MAC_HOST_A)], 0);
    let i = l3(&out[0].1);
    assert_eq!((i[20], i[21]), (3, 4));
    let mtu = u16::from_be_bytes([i[26], i[27]]);
    assert_eq!(mtu, 1438, "8 bytes less than plain ESP");
    let fits = from_host_a(mtu.into(), true, false, 2);
    let out = a.run(CLEAR, vec![eth(&fits, MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert_eq!(out.len(), 1);
    assert!(l3(&out[0].1).len() <= 1500 && l3(&out[0].1).len() > 1500 - 4, "fills the port");
    assert_eq!(a.event(Event::FragmentsMade), 0);

    // Keepalive, IKE, junk, plain ESP, all to B's NAT-T port.
    let (a_ip, b_ip) = ([192, 0, 2, 1], [198, 51, 100, 1]);
    let ka = udp_to(a_ip, b_ip, 4500, 4500, &[0xff]);
    let ike = udp_to(a_ip, b_ip, 4500, 4500, &[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let junk = udp_to(a_ip, b_ip, 4500, 4500, &[1, 2]);
    let before = b.drops(DropReason::ForGateway);
    let got = b.run(PROT, [ka, ike, junk].iter().map(|p| eth(p, MAC_B_PROT, MAC_A_PROT)).collect(), 0);
    assert!(got.is_empty());
    assert_eq!(b.event(Event::NattKeepalives), 1);
    assert_eq!(b.drops(DropReason::ForGateway), before + 1, "IKE is for the gateway, never forwarded");
    assert_eq!(b.drops(DropReason::EspTruncated), 1);
    let (mut pa, _) = pair(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 9000);
    let plain = pa.run(CLEAR, vec![eth(&inner[0], MAC_A_CLEAR, MAC_HOST_A)], 0);
    let got = b.run(PROT, plain.into_iter().map(|(_, f)| f).collect(), 0);
    assert!(got.is_empty());
    assert_eq!(b.drops(DropReason::EspEncapMismatch), 1);
}

/// A NAT rebinding: authenticated packets from a new port (or address) are
/// reported once they are the newest; forged or replayed ones never are.
#[test]
fn nat_rebinding_is_reported_only_for_authentic_new_packets() {
    let encap = Some(crate::esp::UdpEncap::default());
    let (mut a, mut b) = pair_with(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500, encap);
    let q = Arc::new(NatQueue::new(8));
    b.pipe =
        std::mem::replace(&mut b.pipe, Pipeline::new(vec![], ReasmConfig::default(), 0)).with_nat_reports(q.clone());
    let sealed: Vec<VecBuf> = (0..3)
        .map(|i| a.run(CLEAR, vec![eth(&from_host_a(80, false, false, i), MAC_A_CLEAR, MAC_HOST_A)], 0).remove(0).1)
        .collect();
    // The NAT in front of A now maps it to 203.0.113.7:31000.
    let nat = |f: &VecBuf, addr: [u8; 4], port: u16| {
        let mut f = f.clone();
        let d = &mut f.data_mut()[14..];
        d[12..16].copy_from_slice(&addr);
        ip::ipv4_set_checksum(&mut d[..20]);
        d[20..22].copy_from_slice(&port.to_be_bytes());
        f
    };
    // A forged packet from the new mapping: not authentic, not reported.
    let mut forged = nat(&sealed[1], [203, 0, 113, 7], 31000);
    let n = forged.len();
    forged.data_mut()[n - 1] ^= 1;
    b.run(PROT, vec![forged], 0);
    assert_eq!(b.drops(DropReason::EspAuthFailed), 1);
    assert!(q.pop().is_none());
    // The genuine packet 2 from the new mapping: reported.
    assert_eq!(b.run(PROT, vec![nat(&sealed[1], [203, 0, 113, 7], 31000)], 0).len(), 1);
    let m = q.pop().expect("reported");
    assert_eq!((m.spi, m.addr, m.port), (0xa0b0, "203.0.113.7".parse().unwrap(), 31000));
    assert_eq!(b.event(Event::NatMappingChanged), 1);
    // Packet 1, older, still via the old mapping... then from another port:
    // decrypted (in the window) but not the newest, so not reported.
    assert_eq!(b.run(PROT, vec![nat(&sealed[0], [203, 0, 113, 7], 32000)], 0).len(), 1);
    assert!(q.pop().is_none());
    // Packet 3 from the SA's own address and port: nothing to report.
    assert_eq!(b.run(PROT, vec![sealed[2].clone()], 0).len(), 1);
    assert!(q.pop().is_none());
    // A replay of packet 2 from yet another port: dropped, not reported.
    b.run(PROT, vec![nat(&sealed[1], [203, 0, 113, 8], 33000)], 0);
    assert_eq!(b.drops(DropReason::ReplayDuplicate), 1);
    assert!(q.pop().is_none());

    // Within one burst each packet is judged by its own arrival: packets
    // 4-7 arrive as [4 own, 5 forged from :32000, 6 own, 7 from :31500];
    // only 7, the newest, is reported, with its own port.
    let more: Vec<VecBuf> = (3..7)
        .map(|i| a.run(CLEAR, vec![eth(&from_host_a(80, false, false, i), MAC_A_CLEAR, MAC_HOST_A)], 0).remove(0).1)
        .collect();
    let mut forged = nat(&more[1], [203, 0, 113, 7], 32000);
    let n = forged.len();
    forged.data_mut()[n - 1] ^= 1;
    let burst = vec![more[0].clone(), forged, more[2].clone(), nat(&more[3], [203, 0, 113, 7], 31500)];
    assert_eq!(b.run(PROT, burst, 0).len(), 3);
    let m = q.pop().expect("reported");
    assert_eq!((m.addr, m.port), ("203.0.113.7".parse().unwrap(), 31500));
    assert!(q.pop().is_none());
    // [8 from :30000, 9 own]: 8 is not the newest of its burst, not reported.
    let last: Vec<VecBuf> = (7..9)
        .map(|i| a.run(CLEAR, vec![eth(&from_host_a(80, false, false, i), MAC_A_CLEAR, MAC_HOST_A)], 0).remove(0).1)
        .collect();
    assert_eq!(b.run(PROT, vec![nat(&last[0], [203, 0, 113, 7], 30000), last[1].clone()], 0).len(), 2);
    assert!(q.pop().is_none());
}

const HOST: usize = 2;
const MAC_TAP: [u8; 6] = [2, 0x7a, 0, 0, 0, 1];
const MAC_ROUTER: [u8; 6] = [2, 0xfe, 0, 0, 0, 1];

/// A gateway (192.0.2.1 public, 10.0.1.254 private) with a host port: an
/// eroute protects 10.0.1.0/24 → 10.0.2.0/24, another the gateway's own
/// traffic to the peer (192.0.2.1 → 198.51.100.1), and an inbound transport
/// SA carries UDP from the peer to the gateway.
fn host_gw(rate: u32) -> (Gw, SaConfig) {
    let ek: Vec<u8> = (0..20).collect();
    let me: IpAddr = "192.0.2.1".parse().unwrap();
    let peer: IpAddr = "198.51.100.1".parse().unwrap();
    let out = SaConfig::new(0x5001, Algorithm::AesGcm128, &ek, &[], Mode::Tunnel { local: me, remote: peer });
    let transport = SaConfig::new(0x5002, Algorithm::AesGcm128, &[9; 20], &[], Mode::Transport);
    let sel = |s: &str, d: &str| Selector::nets(s.parse().unwrap(), d.parse().unwrap());
    let mut db = PolicyDb::new(Defaults::default());
    db.batch(|b| {
        b.add_sa(1, SaRole::Outbound, &out).unwrap();
        for (id, s) in [(1, sel("10.0.1.0/24", "10.0.2.0/24")), (2, sel("192.0.2.1/32", "198.51.100.1/32"))] {
            b.add_eroute(Eroute {
                id,
                selector: s,
                priority: 1,
                action: Action::Protect { sa: 1, options: ProtectOptions::default() },
            })
            .unwrap();
        }
        let role = SaRole::Inbound {
            local: Some(me),
            policy: crate::policy::InboundPolicy::Selectors(vec![Selector {
                proto: Some(proto::UDP),
                ..sel("198.51.100.1/32", "192.0.2.1/32")
            }]),
        };
        b.add_sa(2, role, &transport).unwrap();
    })
    .unwrap();
    let routes = RouteTable::new(
        vec![
            Route { prefix: "10.0.1.0/24".parse().unwrap(), port: CLEAR, via: None },
            Route { prefix: "0.0.0.0/0".parse().unwrap(), port: PROT, via: Some("192.0.2.254".parse().unwrap()) },
        ],
        [("192.0.2.254".parse().unwrap(), MAC_ROUTER)],
        vec![Some(MAC_HOST_A), None, None],
    );
    let ports = vec![
        PortInfo {
            role: PortRole::Cleartext,
            mtu: 1500,
            mac: MAC_A_CLEAR,
            addr_v4: Some("10.0.1.254".parse().unwrap()),
            addr_v6: None,
        },
        PortInfo {
            role: PortRole::Protected,
            mtu: 1500,
            mac: MAC_A_PROT,
            addr_v4: Some("192.0.2.1".parse().unwrap()),
            addr_v6: None,
        },
        PortInfo { role: PortRole::Host, mtu: 1500, mac: MAC_TAP, addr_v4: None, addr_v6: None },
    ];
    let gw = Gw {
        db,
        routes,
        pipe: Pipeline::new(ports, ReasmConfig::default(), mtu::PMTU_AGEING_MS).with_host_rate(rate),
        stats: WorkerStats::new(3),
    };
    (gw, transport)
}

/// An IPv4 ICMP echo request `src` → `dst`.
fn ping(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = udp4(36, 0, false, 0x61);
    p[9] = proto::ICMP;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    ip::ipv4_set_checksum(&mut p[..20]);
    p[20..24].copy_from_slice(&[8, 0, 0, 0]);
    let c = ip::checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Traffic for the gateway goes to the kernel through the host port (with
/// the host link's MACs), by kind; the kernel's answers go out; nothing for
/// the gateway is forwarded anywhere else.
#[test]
fn host_path_delivers_traffic_for_the_gateway_to_the_kernel() {
    let (mut g, transport) = host_gw(1000);
    // A ping to the public address, one to the private address, IKE, SSH.
    let mut ike = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 500, 500, &[0; 28]);
    ike[28..32].copy_from_slice(&[1, 2, 3, 4]);
    let ssh = {
        let mut p = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 40000, 22, &[0; 20]);
        p[9] = proto::TCP;
        ip::ipv4_set_checksum(&mut p[..20]);
        p
    };
    let natt_ike = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 4500, 4500, &[0, 0, 0, 0, 9, 9, 9, 9]);
    let frames = [ping([198, 51, 100, 1], [192, 0, 2, 1]), ike.clone(), ssh, natt_ike]
        .iter()
        .map(|p| eth(p, MAC_A_PROT, MAC_ROUTER))
        .collect();
    let out = g.run(PROT, frames, 0);
    assert_eq!(out.len(), 4, "{:?}", drops_summary(&g));
    for (port, f) in &out {
        assert_eq!(*port, HOST);
        assert_eq!(&f.data()[..12], &[MAC_TAP, HOST_PEER_MAC].concat()[..], "to the kernel's MAC, from espgw's");
    }
    assert_eq!(l3(&out[1].1), &ike[..], "delivered as received (no TTL change: it is not forwarded)");
    assert_eq!((g.event(Event::HostIcmp), g.event(Event::HostIke), g.event(Event::HostOther)), (1, 2, 1));
    let out = g.run(CLEAR, vec![eth(&ping([10, 0, 1, 5], [10, 0, 1, 254]), MAC_A_CLEAR, MAC_HOST_A)], 0);
    assert_eq!(out[0].0, HOST);
    // Transport-mode ESP from the peer to the gateway: decrypted, to the kernel.
    let inner = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 5000, 9000, b"hello gateway");
    let mut esp = VecBuf::from_slice(&inner);
    Sa::new(&transport).unwrap().encap(&mut esp).unwrap();
    let out = g.run(PROT, vec![eth(esp.data(), MAC_A_PROT, MAC_ROUTER)], 0);
    assert_eq!(out.len(), 1, "{:?}", drops_summary(&g));
    assert_eq!((out[0].0, l3(&out[0].1)), (HOST, &inner[..]));
    assert_eq!(g.event(Event::HostDecrypted), 1);
    assert_eq!(g.stats.total_drops(), 0);
}

/// What the kernel sends: neighbour questions are answered by espgw (the
/// kernel's only neighbour); its replies leave in clear where no eroute
/// covers them; IKE leaves in clear even where one does, other traffic to
/// the same peer is encrypted; a foreign source is refused.
#[test]
fn host_path_sends_the_kernels_traffic_out() {
    let (mut g, _) = host_gw(1000);
    // ARP: who has 192.0.2.254 (the kernel's idea of a next hop)?
    let mut arp = VecBuf::with_room(0, 128);
    crate::neigh::build_arp(
        &mut arp,
        1,
        [0xff; 6],
        MAC_TAP,
        "192.0.2.1".parse().unwrap(),
        [0; 6],
        "192.0.2.254".parse().unwrap(),
    )
    .unwrap();
    let out = g.run(HOST, vec![arp], 0);
    assert_eq!(out.len(), 1);
    let a = crate::wire::arp::parse_arp(&out[0].1.data()[14..]).unwrap();
    assert_eq!((out[0].0, a.op, a.sender_mac, a.sender_ip), (HOST, 2, HOST_PEER_MAC, "192.0.2.254".parse().unwrap()));
    // The kernel's echo reply to someone no eroute covers: in clear, TTL kept.
    let reply = ping([192, 0, 2, 1], [203, 0, 113, 5]);
    let out = g.run(HOST, vec![eth(&reply, HOST_PEER_MAC, MAC_TAP)], 0);
    assert_eq!(out.len(), 1, "{:?}", drops_summary(&g));
    assert_eq!((out[0].0, &out[0].1.data()[..6]), (PROT, &MAC_ROUTER[..]));
    assert_eq!(l3(&out[0].1), &reply[..]);
    // To the peer: IKE in clear, anything else through the SA.
    let ike = udp_to([192, 0, 2, 1], [198, 51, 100, 1], 500, 500, &[7; 40]);
    let other = udp_to([192, 0, 2, 1], [198, 51, 100, 1], 5000, 5000, &[7; 40]);
    let out = g.run(HOST, [ike.clone(), other].iter().map(|p| eth(p, HOST_PEER_MAC, MAC_TAP)).collect(), 0);
    assert_eq!(out.len(), 2, "{:?}", drops_summary(&g));
    let wire: Vec<&[u8]> = out.iter().map(|(_, f)| l3(f)).collect();
    assert!(wire.contains(&&ike[..]), "IKE bypasses the policy");
    assert!(wire.iter().any(|p| p[9] == proto::ESP), "other traffic to the peer is protected");
    assert_eq!(g.event(Event::Encrypted), 1);
    // A source that is not the gateway's: the kernel forwarding, refused.
    let spoof = udp_to([10, 9, 9, 9], [198, 51, 100, 1], 500, 500, &[1; 8]);
    assert!(g.run(HOST, vec![eth(&spoof, HOST_PEER_MAC, MAC_TAP)], 0).is_empty());
    assert_eq!(g.drops(DropReason::HostBadSource), 1);
    assert_eq!(g.event(Event::FromHost), 3);
}

/// A flood to the gateway is cut at the host path's rate per worker, and
/// IKE has its own bucket: key exchange still gets through.
#[test]
fn host_path_is_rate_limited_with_ike_apart() {
    let (mut g, _) = host_gw(100); // bursts of 32
    let flood: Vec<VecBuf> =
        (0..200).map(|_| eth(&ping([203, 0, 113, 9], [192, 0, 2, 1]), MAC_A_PROT, MAC_ROUTER)).collect();
    let out = g.run(PROT, flood, 0);
    assert_eq!(out.len(), 32);
    assert_eq!(g.drops(DropReason::HostRateLimited), 168);
    let ike = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 500, 500, &[0; 28]);
    assert_eq!(g.run(PROT, vec![eth(&ike, MAC_A_PROT, MAC_ROUTER)], 0).len(), 1, "IKE is not starved");
    // 100 ms later, 10 more pings fit.
    let more: Vec<VecBuf> =
        (0..20).map(|_| eth(&ping([203, 0, 113, 9], [192, 0, 2, 1]), MAC_A_PROT, MAC_ROUTER)).collect();
    assert_eq!(g.run(PROT, more, 100).len(), 10);
}

/// Without a host port, traffic for the gateway is dropped and counted.
#[test]
fn without_a_host_port_traffic_for_the_gateway_is_dropped() {
    let encap = Some(crate::esp::UdpEncap::default());
    let (_, mut b) = pair_with(Algorithm::AesGcm128, ProtectOptions::default(), 1500, 1500, encap);
    let p = ping([192, 0, 2, 1], [198, 51, 100, 1]);
    assert!(b.run(PROT, vec![eth(&p, MAC_B_PROT, MAC_A_PROT)], 0).is_empty());
    assert_eq!(b.drops(DropReason::ForGateway), 1);
}

/// A datagram for the gateway larger than the host link (reassembled from
/// fragments here) reaches the kernel as fragments that fit the link.
#[test]
fn host_path_fragments_what_the_kernel_link_cannot_carry() {
    let (mut g, _) = host_gw(1000);
    let big = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 500, 500, &[0x42; 2972]);
    let mut pieces = Vec::new();
    mtu::fragment_ipv4(&big, 1500, &mut mtu::VecAlloc, |f| pieces.push(eth(f.data(), MAC_A_PROT, MAC_ROUTER))).unwrap();
    let out = g.run(PROT, pieces, 0);
    assert_eq!(out.len(), 3, "{:?}", drops_summary(&g));
    let mut payload = Vec::new();
    for (port, f) in &out {
        assert_eq!(*port, HOST);
        assert!(l3(f).len() <= 1500);
        payload.extend_from_slice(&l3(f)[20..]);
    }
    assert_eq!(payload, &big[20..], "the kernel reassembles the datagram");
    assert_eq!(g.event(Event::HostIke), 1);
}

/// With an IKE daemon listening, IKE for the gateway (UDP 500, and 4500
/// with the marker) goes to the control thread's queue, not to the kernel,
/// with both addresses and ports; what the daemon queues leaves as UDP from
/// the gateway's address in clear although an eroute protects the gateway's
/// traffic to that peer, with valid IP and UDP checksums; a datagram from an
/// address that is not the gateway's is refused; a full queue drops, counted.
#[test]
fn ike_goes_to_the_control_thread_and_back() {
    let (mut g, _) = host_gw(1000);
    let q = IkeQueues::new();
    g.pipe = std::mem::replace(&mut g.pipe, Pipeline::new(vec![], ReasmConfig::default(), mtu::PMTU_AGEING_MS))
        .with_ike(q.clone(), 1000);
    let sa_init = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 500, 500, &[0x11; 40]);
    let auth = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 4500, 4500, &[0, 0, 0, 0, 0x22, 0x22]);
    let ping_gw = ping([198, 51, 100, 1], [192, 0, 2, 1]);
    let out = g.run(PROT, [sa_init, auth, ping_gw].iter().map(|p| eth(p, MAC_A_PROT, MAC_ROUTER)).collect(), 0);
    assert_eq!(out.len(), 1, "only the ping goes to the kernel: {out:?}");
    assert_eq!(out[0].0, HOST);
    let d1 = q.to_control.pop().unwrap();
    let d2 = q.to_control.pop().unwrap();
    assert!(q.to_control.pop().is_none());
    assert_eq!((d1.local, d1.remote), ("192.0.2.1:500".parse().unwrap(), "198.51.100.1:500".parse().unwrap()));
    assert_eq!(d1.payload(), &[0x11; 40][..]);
    assert_eq!((d2.local.port(), d2.payload()), (4500, &[0, 0, 0, 0, 0x22, 0x22][..]), "the marker stays");
    assert_eq!((g.event(Event::ToControlIke), g.event(Event::HostIke)), (2, 0));

    // The daemon answers: from the gateway to the peer (an eroute protects
    // 192.0.2.1 → 198.51.100.1, IKE bypasses it), and a forged source.
    let answer =
        IkeDatagram::new("192.0.2.1:4500".parse().unwrap(), "198.51.100.1:4500".parse().unwrap(), b"answer").unwrap();
    q.from_control.push(answer).unwrap();
    let forged =
        IkeDatagram::new("10.9.9.9:500".parse().unwrap(), "198.51.100.1:500".parse().unwrap(), b"forged").unwrap();
    q.from_control.push(forged).unwrap();
    let out = g.send_ike(0);
    assert_eq!(out.len(), 1, "{:?}", drops_summary(&g));
    let (port, f) = &out[0];
    assert_eq!((*port, &f.data()[..6]), (PROT, &MAC_ROUTER[..]));
    let p = l3(f);
    assert_eq!((p[9], &p[12..16], &p[16..20]), (proto::UDP, &[192, 0, 2, 1][..], &[198, 51, 100, 1][..]));
    assert_eq!(ip::checksum(&p[..20]), 0, "IPv4 header checksum");
    assert_eq!((&p[20..22], &p[22..24]), (&4500u16.to_be_bytes()[..], &4500u16.to_be_bytes()[..]));
    assert_eq!(&p[28..], b"answer");
    let udp_sum = crate::esp::natt::l4_checksum(false, &p[12..16], &p[16..20], proto::UDP, &{
        let mut seg = p[20..].to_vec();
        seg[6..8].copy_from_slice(&[0, 0]);
        seg
    });
    assert_eq!(u16::from_be_bytes([p[26], p[27]]), udp_sum, "UDP checksum");
    assert_eq!((g.event(Event::FromControlIke), g.event(Event::Encrypted)), (1, 0));
    assert_eq!(g.drops(DropReason::HostBadSource), 1, "the forged source is not sent");

    // A control thread that is behind: the queue fills, the rest is counted.
    for _ in 0..IKE_QUEUE_LEN {
        let _ = q.to_control.push(IkeDatagram::new(d1.local, d1.remote, b"x").unwrap());
    }
    let more = udp_to([198, 51, 100, 1], [192, 0, 2, 1], 500, 500, &[0x33; 40]);
    assert!(g.run(PROT, vec![eth(&more, MAC_A_PROT, MAC_ROUTER)], 10).is_empty());
    assert_eq!(g.drops(DropReason::IkeQueueFull), 1);
}
