//! MTU logic: exact tunnel-MTU boundaries, fragmentation, ICMP errors, path
//! MTU learning/ageing, MSS clamping and bounded reassembly.

use super::*;
use crate::crypto::Algorithm;
use crate::esp::tests::{udp4, udp6};
use crate::esp::{Mode, Sa, SaConfig};
use crate::packet::ip::{self, proto};
use crate::packet::{HwChecksum, Meta, PacketBuf, VecBuf};

fn meta(p: &[u8]) -> Meta {
    Meta::parse(p, HwChecksum::Good).unwrap()
}
use std::net::{Ipv4Addr, Ipv6Addr};

fn modes() -> Vec<(&'static str, Mode)> {
    vec![
        (
            "tunnel4",
            Mode::Tunnel { local: Ipv4Addr::new(192, 0, 2, 1).into(), remote: Ipv4Addr::new(198, 51, 100, 1).into() },
        ),
        (
            "tunnel6",
            Mode::Tunnel {
                local: "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
                remote: "2001:db8::2".parse::<Ipv6Addr>().unwrap().into(),
            },
        ),
        ("transport", Mode::Transport),
    ]
}

fn sa(a: Algorithm, mode: Mode) -> Sa {
    let ek: Vec<u8> = (0..a.enc_key_len() as u8).collect();
    let ak: Vec<u8> = (0..a.auth_key_len() as u8).collect();
    Sa::new(&SaConfig::new(0x4242, a, &ek, &ak, mode)).unwrap()
}

/// For every algorithm, mode, inner family and three limits: an inner packet
/// of exactly the announced tunnel MTU encrypts to at most the limit, and one
/// byte more does not — checked at every size around the boundary.
#[test]
fn tunnel_mtu_is_exact_at_every_byte_around_the_boundary() {
    for a in Algorithm::ALL {
        for (mname, mode) in modes() {
            let s = sa(a, mode);
            for v6 in [false, true] {
                for limit in [1280u16, 1400, 1500] {
                    let probe = if v6 { udp6(200, 0, 0) } else { udp4(200, 0, true, 0) };
                    let mtu = tunnel_mtu(&s, limit, &meta(&probe));
                    for size in (usize::from(mtu) - 20)..=(usize::from(mtu) + 20) {
                        let inner = if v6 { udp6(size, 0, 1) } else { udp4(size, 0, true, 1) };
                        let mut b = VecBuf::from_slice(&inner);
                        s.encap(&mut b).unwrap();
                        let fits = b.len() <= usize::from(limit);
                        assert_eq!(
                            fits,
                            size <= usize::from(mtu),
                            "{a:?} {mname} v6={v6} limit {limit}: size {size} → {} (mtu {mtu})",
                            b.len()
                        );
                        let d = decide(&s, limit, &meta(&inner));
                        if fits {
                            assert_eq!(d, TooBig::Fits);
                        } else {
                            assert_eq!(d, TooBig::Refuse { mtu }, "DF/IPv6 packets are refused with the tunnel MTU");
                        }
                    }
                    // The announced size itself fits exactly up to the alignment slack.
                    let inner = if v6 { udp6(mtu.into(), 0, 1) } else { udp4(mtu.into(), 0, true, 1) };
                    let grown = inner.len()
                        + s.overhead(
                            inner.len()
                                - if matches!(mode, Mode::Transport) {
                                    if v6 {
                                        40
                                    } else {
                                        20
                                    }
                                } else {
                                    0
                                },
                        );
                    assert!(
                        usize::from(limit) - grown < a.pad_align(),
                        "{a:?} {mname}: wasted {} bytes",
                        usize::from(limit) - grown
                    );
                }
            }
        }
    }
}

#[test]
fn without_df_the_outer_packet_is_fragmented() {
    let s = sa(Algorithm::AesGcm128, modes()[0].1);
    let inner = udp4(1500, 0, false, 3);
    assert_eq!(decide(&s, 1500, &meta(&inner)), TooBig::FragmentOuter);
    let inner = udp4(1500, 0, true, 3);
    assert_eq!(
        decide(&s, 1500, &meta(&inner)),
        TooBig::Refuse { mtu: 1446 },
        "1500 - 20 outer - 8 ESP - 8 IV - 16 ICV = 1448 (aligned), - 2 trailer"
    );
}

fn frags4(pkt: &[u8], limit: usize) -> Vec<VecBuf> {
    let mut out = Vec::new();
    fragment_ipv4(pkt, limit, &mut VecAlloc, |b| out.push(b)).unwrap();
    out
}

#[test]
fn ipv4_fragments_have_right_offsets_flags_lengths_checksums() {
    let mut pkt = udp4(3000, 0, false, 0);
    for (i, b) in pkt[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let fr = frags4(&pkt, 1500);
    assert_eq!(fr.len(), 3);
    let mut reassembled = pkt[..20].to_vec();
    for (i, f) in fr.iter().enumerate() {
        let d = f.data();
        let info = ip::parse_ipv4(d).unwrap();
        assert!(d.len() <= 1500);
        assert_eq!(info.total_len, d.len());
        assert_eq!(ip::checksum(&d[..20]), 0, "fragment {i} checksum");
        let off = usize::from(info.flags_frag & 0x1fff) * 8;
        assert_eq!(off, reassembled.len() - 20, "fragment {i} offset");
        assert_eq!(info.flags_frag & ip::IPV4_MF != 0, i < 2, "MF on all but the last");
        if i < 2 {
            assert_eq!((d.len() - 20) % 8, 0);
        }
        assert_eq!(&d[4..6], &pkt[4..6], "same identification");
        reassembled.extend_from_slice(&d[20..]);
    }
    assert_eq!(&reassembled[20..], &pkt[20..]);
    // DF packets keep DF on their fragments (the sender fragments its own).
    let df = udp4(2000, 0, true, 0);
    assert!(frags4(&df, 1500).iter().all(|f| ip::parse_ipv4(f.data()).unwrap().df()));
    // Fragmenting a fragment adds offsets and keeps its MF on the last piece.
    let second = &fr[0];
    let sub = frags4(second.data(), 600);
    let last = ip::parse_ipv4(sub.last().unwrap().data()).unwrap();
    assert!(last.flags_frag & ip::IPV4_MF != 0);
    assert_eq!(fragment_ipv4(&pkt, 27, &mut VecAlloc, |_| {}), Err(FragError::LimitTooSmall));
    assert_eq!(fragment_ipv4(&pkt[..10], 1500, &mut VecAlloc, |_| {}), Err(FragError::Malformed));
}

#[test]
fn ipv4_options_copy_flag_decides_what_later_fragments_carry() {
    // Header with a copied option (0x94 router alert, 4 bytes) and a
    // non-copied one (0x07 record route, 7 bytes) + end-of-list padding.
    let mut pkt = udp4(1000, 0, false, 9);
    let opts = [0x94, 4, 0, 0, 0x07, 7, 4, 0, 0, 0, 0, 0];
    let mut p = pkt[..20].to_vec();
    p[0] = 0x48; // IHL 8 = 32 bytes
    p.extend_from_slice(&opts);
    p.extend_from_slice(&pkt[20..]);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    ip::ipv4_set_checksum(&mut p[..32]);
    pkt = p;
    let fr = frags4(&pkt, 400);
    assert_eq!(ip::parse_ipv4(fr[0].data()).unwrap().header_len, 32);
    for f in &fr[1..] {
        let d = f.data();
        assert_eq!(ip::parse_ipv4(d).unwrap().header_len, 24, "only the copied option, padded");
        assert_eq!(&d[20..24], &[0x94, 4, 0, 0]);
        assert_eq!(ip::checksum(&d[..24]), 0);
    }
    // And they reassemble to the original payload.
    let mut r = Reassembler::<VecBuf>::new(ReasmConfig::default());
    let mut ev = Freed::default();
    let mut done = None;
    for f in fr {
        if let ReasmOutcome::Complete(b) = r.push(f, 0, &mut VecAlloc, &mut ev) {
            done = Some(b);
        }
    }
    let done = done.expect("complete");
    assert_eq!(&done.data()[32..], &pkt[32..]);
    assert_eq!(ip::checksum(&done.data()[..32]), 0);
}

#[test]
fn ipv6_fragments_carry_a_fragment_header() {
    let pkt = udp6(3000, 0, 5);
    let mut fr = Vec::new();
    fragment_ipv6(&pkt, 1280, 0xabcd_0001, &mut VecAlloc, |b| fr.push(b)).unwrap();
    assert_eq!(fr.len(), 3);
    let mut payload = Vec::new();
    for (i, f) in fr.iter().enumerate() {
        let d = f.data();
        assert!(d.len() <= 1280);
        assert_eq!(d[6], proto::FRAGMENT);
        assert_eq!(usize::from(u16::from_be_bytes([d[4], d[5]])) + 40, d.len());
        let fh = &d[40..48];
        assert_eq!(fh[0], proto::UDP);
        let word = u16::from_be_bytes([fh[2], fh[3]]);
        assert_eq!(usize::from(word & !7), payload.len(), "offset");
        assert_eq!(word & 1 == 1, i < 2, "M flag");
        assert_eq!(u32::from_be_bytes(fh[4..8].try_into().unwrap()), 0xabcd_0001);
        payload.extend_from_slice(&d[48..]);
    }
    assert_eq!(payload, &pkt[40..]);
    let mut r = Reassembler::<VecBuf>::new(ReasmConfig::default());
    let mut ev = Freed::default();
    let mut out = None;
    for f in fr.into_iter().rev() {
        if let ReasmOutcome::Complete(b) = r.push(f, 0, &mut VecAlloc, &mut ev) {
            out = Some(b);
        }
    }
    assert_eq!(out.expect("complete").data(), &pkt[..]);
}

#[test]
fn icmp_frag_needed_contents() {
    let orig = udp4(1500, 0, true, 7);
    let mut out = VecBuf::with_room(128, 2048);
    build_frag_needed(&orig, 1438, Ipv4Addr::new(10, 0, 1, 254), 99, &mut out).unwrap();
    let d = out.data();
    assert_eq!(d.len(), 576, "RFC 1812: as much as fits in 576 bytes");
    let i = ip::parse_ipv4(d).unwrap();
    assert_eq!(i.protocol, proto::ICMP);
    assert_eq!(ip::checksum(&d[..20]), 0);
    assert_eq!(&d[12..16], &[10, 0, 1, 254]);
    assert_eq!(&d[16..20], &orig[12..16], "to the sender");
    let icmp = &d[20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1438);
    assert_eq!(ip::checksum(icmp), 0, "ICMP checksum");
    assert_eq!(&icmp[8..], &orig[..548], "quote starts with the original header");
    // A small original is quoted whole.
    let small = udp4(100, 0, true, 1);
    build_frag_needed(&small, 1000, Ipv4Addr::new(10, 0, 1, 254), 1, &mut out).unwrap();
    assert_eq!(out.len(), 20 + 8 + 100);
}

#[test]
fn icmpv6_packet_too_big_contents() {
    let orig = udp6(1500, 0, 7);
    let mut out = VecBuf::with_room(128, 2048);
    build_packet_too_big(&orig, 1418, "fd00:1::fe".parse().unwrap(), &mut out).unwrap();
    let d = out.data();
    assert_eq!(d.len(), 1280, "RFC 4443: no more than the minimum MTU");
    assert_eq!(d[6], proto::ICMPV6);
    assert_eq!(&d[24..40], &orig[8..24]);
    assert_eq!((d[40], d[41]), (2, 0));
    assert_eq!(u32::from_be_bytes(d[44..48].try_into().unwrap()), 1418);
    // Verify the checksum by recomputing over pseudo-header + message.
    let mut acc = ip::sum16(&d[8..40], 0) + (d.len() - 40) as u32 + u32::from(proto::ICMPV6);
    acc = ip::sum16(&d[40..], acc);
    assert_eq!(ip::fold(acc), 0);
    assert_eq!(&d[48..], &orig[..1232]);
}

#[test]
fn no_icmp_errors_about_errors_fragments_or_multicast() {
    assert!(may_answer(&udp4(100, 0, true, 0)));
    let mut p = udp4(100, 0, true, 0);
    p[6] = 0x00;
    p[7] = 0x10; // offset != 0
    assert!(!may_answer(&p));
    let mut p = udp4(100, 0, true, 0);
    p[9] = proto::ICMP;
    p[20] = 3; // an ICMP error
    assert!(!may_answer(&p));
    p[20] = 8; // echo request: fine
    assert!(may_answer(&p));
    let mut p = udp4(100, 0, true, 0);
    p[12] = 224; // multicast source
    assert!(!may_answer(&p));
    let mut p = udp6(100, 0, 0);
    assert!(may_answer(&p));
    p[6] = proto::ICMPV6;
    p[40] = 2; // an ICMPv6 error
    assert!(!may_answer(&p));
}

#[test]
fn rate_limit_per_source() {
    let mut rl = IcmpRateLimiter::new(64, 10, 3);
    let a = 0x0a00_0001u128;
    let b = 0x0a00_0002u128;
    assert!((0..3).all(|_| rl.allow(a, 0)));
    assert!(!rl.allow(a, 0), "burst spent");
    assert!(rl.allow(b, 0), "other sources unaffected");
    assert!(!rl.allow(a, 50), "half a token");
    assert!(rl.allow(a, 100), "10/s: one token per 100 ms");
    assert!(!rl.allow(a, 100));
    assert!((0..3).all(|_| rl.allow(a, 10_000)), "refills to the burst");
}

/// An ICMP need-frag quoting one of our ESP packets lowers that SA's path
/// MTU, with a floor, never raises it, and ages out on an injected clock.
#[test]
fn path_mtu_learning_and_ageing() {
    let s = sa(Algorithm::AesGcm128, modes()[0].1);
    // Our ESP packet, as a router on the path quotes it.
    let mut esp = VecBuf::from_slice(&udp4(1400, 0, true, 1));
    s.encap(&mut esp).unwrap();
    let mut icmp = VecBuf::with_room(128, 2048);
    build_frag_needed(esp.data(), 1300, Ipv4Addr::new(203, 0, 113, 9), 5, &mut icmp).unwrap();
    // The router sends it to our outer source address.
    let r = parse_too_big(icmp.data()).expect("a report about ESP");
    assert_eq!(r.spi, 0x4242);
    assert_eq!(r.mtu, 1300);
    assert_eq!(r.quoted_src, std::net::IpAddr::from([192, 0, 2, 1]));
    let t0 = 1_000_000;
    assert_eq!(egress_limit(&s, 1500, t0), 1500);
    assert_eq!(apply_too_big(&s, &r, 1500, t0, PMTU_AGEING_MS), PmtuUpdate::Lowered(1300));
    assert_eq!(egress_limit(&s, 1500, t0 + 1), 1300);
    assert_eq!(egress_limit(&s, 1200, t0 + 1), 1200, "a lower port MTU still wins");
    // Higher or equal reports are ignored; lower ones apply; floor holds.
    assert_eq!(apply_too_big(&s, &TooBigReport { mtu: 1400, ..r }, 1500, t0 + 2, PMTU_AGEING_MS), PmtuUpdate::NotLower);
    assert_eq!(apply_too_big(&s, &TooBigReport { mtu: 1300, ..r }, 1500, t0 + 2, PMTU_AGEING_MS), PmtuUpdate::NotLower);
    assert_eq!(
        apply_too_big(&s, &TooBigReport { mtu: 100, ..r }, 1500, t0 + 3, PMTU_AGEING_MS),
        PmtuUpdate::Lowered(PMTU_FLOOR_V4)
    );
    // Ageing back to the port MTU.
    assert_eq!(egress_limit(&s, 1500, t0 + 3 + PMTU_AGEING_MS - 1), 576);
    assert_eq!(egress_limit(&s, 1500, t0 + 3 + PMTU_AGEING_MS), 1500);
    // The announced tunnel MTU follows the learned path MTU.
    let inner = udp4(1400, 0, true, 1);
    assert_eq!(decide(&s, egress_limit(&s, 1500, t0 + 4 + PMTU_AGEING_MS), &meta(&inner)), TooBig::Fits);
    // Things that are not reports about ESP are not parsed as such.
    assert_eq!(parse_too_big(&udp4(100, 0, false, 0)), None);
    let mut tcp = udp4(1400, 0, true, 1);
    tcp[9] = 6;
    crate::packet::ip::ipv4_set_checksum(&mut tcp[..20]);
    let mut not_esp = VecBuf::with_room(128, 2048);
    build_frag_needed(&tcp, 1300, Ipv4Addr::new(203, 0, 113, 9), 5, &mut not_esp).unwrap();
    assert_eq!(parse_too_big(not_esp.data()), None, "quotes TCP, not ESP");
    // ESP in UDP (NAT-T): the SPI after the UDP header; IKE's marker is not one.
    let mut cfg = SaConfig::new(0x4343, Algorithm::AesGcm128, &[7; 20], &[], modes()[0].1);
    cfg.encap = Some(crate::esp::UdpEncap::default());
    let su = Sa::new(&cfg).unwrap();
    let mut esp_udp = VecBuf::from_slice(&udp4(1400, 0, true, 1));
    su.encap(&mut esp_udp).unwrap();
    let mut rep = VecBuf::with_room(128, 2048);
    build_frag_needed(esp_udp.data(), 1300, Ipv4Addr::new(203, 0, 113, 9), 5, &mut rep).unwrap();
    let ru = parse_too_big(rep.data()).expect("a report about ESP in UDP");
    assert_eq!((ru.spi, ru.udp, ru.mtu), (0x4343, true, 1300));
    assert!(!r.udp);
    let mut ike = esp_udp.data().to_vec();
    ike[28..32].fill(0);
    let mut rep = VecBuf::with_room(128, 2048);
    build_frag_needed(&ike, 1300, Ipv4Addr::new(203, 0, 113, 9), 5, &mut rep).unwrap();
    assert_eq!(parse_too_big(rep.data()), None, "SPI 0 in UDP is IKE");
    // IPv6: a PTB quoting our ESPv6 packet.
    let s6 = sa(Algorithm::AesGcm128, modes()[1].1);
    let mut esp6 = VecBuf::from_slice(&udp6(1400, 0, 1));
    s6.encap(&mut esp6).unwrap();
    let mut ptb = VecBuf::with_room(128, 2048);
    build_packet_too_big(esp6.data(), 1350, "2001:db8::99".parse().unwrap(), &mut ptb).unwrap();
    let r6 = parse_too_big(ptb.data()).unwrap();
    assert_eq!((r6.spi, r6.mtu), (0x4242, 1350));
    assert_eq!(
        apply_too_big(&s6, &TooBigReport { mtu: 1000, ..r6 }, 1500, 0, 1000),
        PmtuUpdate::Lowered(PMTU_FLOOR_V6)
    );
}

/// A TCP SYN with options (v4 and v6): MSS lowered, checksum still valid.
#[test]
fn mss_clamp_on_syns() {
    fn tcp_csum_ok(p: &[u8]) -> bool {
        let (l4, mut acc) = if p[0] >> 4 == 4 {
            let h = usize::from(p[0] & 15) * 4;
            (h, ip::sum16(&p[12..20], 0) + u32::from(proto::TCP) + (p.len() - h) as u32)
        } else {
            (40, ip::sum16(&p[8..40], 0) + u32::from(proto::TCP) + (p.len() - 40) as u32)
        };
        acc = ip::sum16(&p[l4..], acc);
        ip::fold(acc) == 0
    }
    fn syn(v6: bool, opts: &[u8], flags: u8) -> Vec<u8> {
        let tcp_len = 20 + opts.len();
        let mut p = if v6 { udp6(40 + tcp_len, 0, 0) } else { udp4(20 + tcp_len, 0, true, 0) };
        let l4 = if v6 { 40 } else { 20 };
        if v6 {
            p[6] = proto::TCP;
        } else {
            p[9] = proto::TCP;
            ip::ipv4_set_checksum(&mut p[..20]);
        }
        let t = &mut p[l4..];
        t.fill(0);
        t[..4].copy_from_slice(&[0xc0, 0x01, 0x01, 0xbb]);
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = flags;
        t[20..].copy_from_slice(opts);
        // Compute the checksum from scratch.
        let mut acc = if v6 { ip::sum16(&p[8..40], 0) } else { ip::sum16(&p[12..20], 0) }
            + u32::from(proto::TCP)
            + tcp_len as u32;
        acc = ip::sum16(&p[l4..], acc);
        let c = ip::fold(acc);
        p[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        p
    }
    // MSS 1460, SACK-permitted, timestamps, window scale: a Linux SYN.
    let linux = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
    for v6 in [false, true] {
        let mut p = syn(v6, &linux, 0x02);
        assert!(tcp_csum_ok(&p));
        let max = mss_for(1438, v6);
        assert_eq!(
            {
                let m = meta(&p);
                clamp_mss(&mut p, &m, max)
            },
            Some(1460)
        );
        let l4 = if v6 { 40 } else { 20 };
        assert_eq!(u16::from_be_bytes([p[l4 + 22], p[l4 + 23]]), max);
        assert!(tcp_csum_ok(&p), "checksum updated incrementally (v6={v6})");
        // SYN-ACK too.
        let mut p = syn(v6, &linux, 0x12);
        assert_eq!(
            {
                let m = meta(&p);
                clamp_mss(&mut p, &m, max)
            },
            Some(1460)
        );
        assert!(tcp_csum_ok(&p));
        // Smaller MSS untouched; non-SYN untouched; no MSS option untouched.
        let mut p = syn(v6, &[2, 4, 0x02, 0x00], 0x02);
        assert_eq!(
            {
                let m = meta(&p);
                clamp_mss(&mut p, &m, max)
            },
            None
        );
        let mut p = syn(v6, &linux, 0x10);
        assert_eq!(
            {
                let m = meta(&p);
                clamp_mss(&mut p, &m, max)
            },
            None
        );
        let mut p = syn(v6, &[1, 1, 1, 1], 0x02);
        assert_eq!(
            {
                let m = meta(&p);
                clamp_mss(&mut p, &m, max)
            },
            None
        );
        // MSS at an odd offset (after one NOP).
        let mut p = syn(v6, &[1, 2, 4, 0x05, 0xb4, 1, 1, 1], 0x02);
        assert_eq!(
            {
                let m = meta(&p);
                clamp_mss(&mut p, &m, 1000)
            },
            Some(1460)
        );
        assert!(tcp_csum_ok(&p), "odd offset (v6={v6})");
        // Lying option lengths never panic.
        let mut p = syn(v6, &[2, 40, 5, 180], 0x02);
        assert_eq!(
            {
                let m = meta(&p);
                clamp_mss(&mut p, &m, 1000)
            },
            None
        );
    }
    assert_eq!(mss_for(1438, false), 1398);
    assert_eq!(mss_for(1438, true), 1378);
}

fn frag_set(id: u16, size: usize, limit: usize) -> (Vec<u8>, Vec<VecBuf>) {
    let mut pkt = udp4(size, 0, false, id as u8);
    pkt[4..6].copy_from_slice(&id.to_be_bytes());
    ip::ipv4_set_checksum(&mut pkt[..20]);
    let f = frags4(&pkt, limit);
    (pkt, f)
}

fn push_all(r: &mut Reassembler<VecBuf>, frags: Vec<VecBuf>, now: u64, ev: &mut Freed) -> Vec<ReasmOutcome<VecBuf>> {
    frags.into_iter().map(|f| r.push(f, now, &mut VecAlloc, ev)).collect()
}

#[test]
fn reassembly_out_of_order_duplicates_overlaps_timeouts() {
    let mut r = Reassembler::<VecBuf>::new(ReasmConfig::default());
    // Out of order, with a duplicate in the middle.
    let (pkt, mut f) = frag_set(1, 4000, 1000);
    f.reverse();
    let dup = VecBuf::from_slice(f[1].data());
    f.insert(2, dup);
    let out = push_all(&mut r, f, 0, &mut Freed::default());
    assert!(out.iter().any(|o| matches!(o, ReasmOutcome::Dropped { reason: ReasmDrop::Duplicate, fragments: 1 })));
    match out.last().unwrap() {
        ReasmOutcome::Complete(b) => assert_eq!(b.data(), &pkt[..]),
        o => panic!("{o:?}"),
    }
    assert_eq!((r.in_flight(), r.bytes_held()), (0, 0));

    // Overlap: a piece covering part of another drops the whole datagram.
    let (_, f) = frag_set(2, 3000, 1000);
    let mut evil = VecBuf::from_slice(f[1].data());
    let d = evil.data_mut();
    let fo = u16::from_be_bytes([d[6], d[7]]);
    d[6..8].copy_from_slice(&(fo - 1).to_be_bytes()); // 8 bytes earlier
    ip::ipv4_set_checksum(&mut d[..20]);
    let mut it = f.into_iter();
    let mut ev = Freed::default();
    assert!(matches!(r.push(it.next().unwrap(), 0, &mut VecAlloc, &mut ev), ReasmOutcome::Held));
    assert!(matches!(
        r.push(evil, 0, &mut VecAlloc, &mut ev),
        ReasmOutcome::Dropped { reason: ReasmDrop::Overlap, fragments: 2 }
    ));
    assert_eq!(r.in_flight(), 0);

    // Timeout: an incomplete datagram is freed by expire().
    let (_, f) = frag_set(3, 3000, 1000);
    let mut it = f.into_iter();
    assert!(matches!(r.push(it.next().unwrap(), 100, &mut VecAlloc, &mut ev), ReasmOutcome::Held));
    assert_eq!(r.expire(100 + 1999), 0);
    assert_eq!(r.expire(100 + 2000), 1);
    assert_eq!((r.in_flight(), r.bytes_held()), (0, 0));

    // Malformed: unaligned middle piece, beyond 64 KiB.
    let (_, f) = frag_set(4, 3000, 1000);
    let mut bad = VecBuf::from_slice(f[0].data());
    bad.trim(3).unwrap();
    let d = bad.data_mut();
    let l = d.len() as u16;
    d[2..4].copy_from_slice(&l.to_be_bytes());
    ip::ipv4_set_checksum(&mut d[..20]);
    assert!(matches!(
        r.push(bad, 0, &mut VecAlloc, &mut ev),
        ReasmOutcome::Dropped { reason: ReasmDrop::Malformed, .. }
    ));
    let mut far = VecBuf::from_slice(f[1].data());
    far.data_mut()[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
    ip::ipv4_set_checksum(&mut far.data_mut()[..20]);
    assert!(matches!(
        r.push(far, 0, &mut VecAlloc, &mut ev),
        ReasmOutcome::Dropped { reason: ReasmDrop::Malformed, .. }
    ));
}

/// A flood of incomplete datagrams stays within the bounds and does not stop
/// a good datagram from completing.
#[test]
fn reassembly_flood_is_bounded() {
    let cfg = ReasmConfig {
        max_datagrams: 64,
        max_fragments: 8,
        max_buffers: 100,
        max_buffer_bytes: 100 * 2400,
        max_buffers_per_source: 100,
        timeout_ms: 1000,
    };
    let mut r = Reassembler::<VecBuf>::new(cfg);
    let mut ev = Freed::default();
    let mut dropped = 0;
    for id in 0..5000u16 {
        // First fragments only: never complete.
        let (_, f) = frag_set(id, 1500, 600);
        let first = f.into_iter().next().unwrap();
        match r.push(first, u64::from(id), &mut VecAlloc, &mut ev) {
            ReasmOutcome::Held => {}
            ReasmOutcome::Dropped { fragments, .. } => dropped += fragments,
            ReasmOutcome::Complete(_) => panic!("cannot complete"),
        }
        assert!(r.in_flight() <= 64);
        assert!(r.buffers_held() <= 100 && r.bytes_held() <= 100 * 2400);
        if id % 500 == 250 {
            // Good traffic still gets through in the middle of the flood.
            let (pkt, f) = frag_set(60_000 + id, 2000, 600);
            let out = push_all(&mut r, f, u64::from(id), &mut ev);
            assert!(matches!(out.last(), Some(ReasmOutcome::Complete(b)) if b.data() == &pkt[..]));
        }
    }
    assert_eq!(r.in_flight(), 64);
    assert_eq!(ev.total() + dropped, 5000 - 64, "every flood fragment not held was freed and counted");
    // Too many fragments for one datagram.
    let (_, f) = frag_set(7, 6000, 200);
    assert!(f.len() > 8);
    let out = push_all(&mut r, f, 10_000, &mut ev);
    assert!(out.iter().any(|o| matches!(o, ReasmOutcome::Dropped { reason: ReasmDrop::TooManyFragments, .. })));
}

/// Issue 12's flood, at the table: 20 034 never-completing 8-byte fragments
/// from 318 sources. The budget is counted in buffers (not the 28 frame
/// bytes each carries), so the flood holds at most its share of the pool;
/// one source holds at most its share; good fragmented traffic keeps
/// completing throughout; every fragment is accounted for.
#[test]
fn fragment_flood_holds_buffers_not_the_pool() {
    let cfg = ReasmConfig::for_pool(16383, 2176, 1);
    assert_eq!(cfg.max_buffers, 16383 / 8);
    let mut r = Reassembler::<VecBuf>::new(cfg);
    let mut freed = Freed::default();
    let (mut held, mut dropped, mut good) = (0usize, 0usize, 0usize);
    for i in 0..20_034u32 {
        let src = 318 + i % 318;
        let mut f = udp4(28, 0, false, 0);
        f[4..6].copy_from_slice(&((i / 318) as u16).to_be_bytes());
        f[6..8].copy_from_slice(&(ip::IPV4_MF | (i % 7) as u16).to_be_bytes());
        f[12..16].copy_from_slice(&[198, 18, (src >> 8) as u8, src as u8]);
        ip::ipv4_set_checksum(&mut f[..20]);
        // Each held fragment costs a whole buffer, as an mbuf would.
        let mut b = VecBuf::with_room(128, 2176);
        b.append(f.len()).unwrap();
        b.data_mut().copy_from_slice(&f);
        match r.push(b, u64::from(i / 100), &mut VecAlloc, &mut freed) {
            ReasmOutcome::Held => held += 1,
            ReasmOutcome::Dropped { fragments, .. } => dropped += fragments,
            ReasmOutcome::Complete(_) => panic!("cannot complete"),
        }
        assert!(r.buffers_held() <= cfg.max_buffers, "{} buffers held", r.buffers_held());
        assert!(r.bytes_held() <= cfg.max_buffer_bytes);
        if i % 97 == 0 {
            let (pkt, frags) = frag_set((i % 60_000) as u16 ^ 0xbeef, 3000, 1000);
            let out = push_all(&mut r, frags, u64::from(i / 100), &mut freed);
            assert!(
                matches!(out.last(), Some(ReasmOutcome::Complete(b)) if b.data() == &pkt[..]),
                "good traffic at {i}"
            );
            good += 1;
        }
    }
    assert!(good > 200);
    assert!(freed.evicted + freed.source_limit > 0, "the flood evicted itself");
    assert_eq!(held, r.buffers_held() + freed.total(), "every held fragment is still held or was freed and counted");
    let _ = dropped;
    // Per source: at most its share.
    let mut r = Reassembler::<VecBuf>::new(cfg);
    let mut freed = Freed::default();
    for id in 0..1000u16 {
        let (_, f) = frag_set(id, 1500, 600);
        r.push(f.into_iter().next().unwrap(), 0, &mut VecAlloc, &mut freed);
        assert!(r.buffers_held() <= cfg.max_buffers_per_source);
    }
    assert!(freed.source_limit > 0);
}

/// A fragment that would take the datagram past 65 535 bytes is refused.
#[test]
fn datagrams_past_64k_are_refused() {
    let mut r = Reassembler::<VecBuf>::new(ReasmConfig::default());
    let mut f = udp4(120, 0, false, 0);
    f[6..8].copy_from_slice(&((65512 / 8) as u16).to_be_bytes()); // offset 65512, 100 bytes
    ip::ipv4_set_checksum(&mut f[..20]);
    assert!(matches!(
        r.push(VecBuf::from_slice(&f), 0, &mut VecAlloc, &mut Freed::default()),
        ReasmOutcome::Dropped { reason: ReasmDrop::Malformed, fragments: 1 }
    ));
}

/// A full table evicts the datagram that arrived first even when all of
/// them arrived in the same millisecond (a flood at line rate fills one):
/// the good datagram that came after the flood's is not the one to go.
#[test]
fn eviction_is_by_arrival_within_one_millisecond() {
    let cfg = ReasmConfig {
        max_datagrams: 4,
        max_fragments: 8,
        max_buffers: 1000,
        max_buffer_bytes: 1000 * 2400,
        max_buffers_per_source: 1000,
        timeout_ms: 1000,
    };
    let mut r = Reassembler::<VecBuf>::new(cfg);
    let mut ev = Freed::default();
    let first = |id: u16| frag_set(id, 1500, 600).1.into_iter().next().unwrap();
    for id in 0..4 {
        assert!(matches!(r.push(first(id), 0, &mut VecAlloc, &mut ev), ReasmOutcome::Held));
    }
    let (pkt, mut good) = frag_set(100, 1500, 600);
    let rest = good.split_off(1);
    assert!(matches!(r.push(good.remove(0), 0, &mut VecAlloc, &mut ev), ReasmOutcome::Held));
    // Two more flood datagrams, same millisecond: flood ones 1 and 2 go.
    for id in 4..6 {
        assert!(matches!(r.push(first(id), 0, &mut VecAlloc, &mut ev), ReasmOutcome::Held));
    }
    assert_eq!(ev.evicted, 3);
    let out = push_all(&mut r, rest, 0, &mut ev);
    assert!(
        matches!(out.last(), Some(ReasmOutcome::Complete(b)) if b.data() == &pkt[..]),
        "the good datagram survived"
    );
}
