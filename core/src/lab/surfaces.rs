//! Drivers for the data path's other input surfaces, each a fuzz target
//! (`fuzz/fuzz_targets/`): ESP that authenticates but carries fuzz-chosen
//! plaintext, fragment sequences, ICMP too-big reports quoting our own ESP,
//! and ARP/ND. Each runs the lab gateway, so every output is held to the
//! invariants in [`super`]; some add an oracle of their own (a complete set
//! of fragments must come out as the packet that was sealed).
//!
//! Inputs are operations like [`super::drive`]'s: a tag byte, a 2-byte
//! length and that many bytes.

use std::net::Ipv4Addr;

use aes_gcm::aead::{AeadInPlace, KeyInit};

use super::{checksum, eth, fix_v4, Lab, A_CLEAR_V4, A_CLEAR_V6, A_IP, B_IP, CLEAR, MAC_A, MAC_B, MAC_HOST_A, PROT};

/// The SPI of A's inbound SA (B's outbound).
const B_TO_A_SPI: u32 = 0xb0a0;
/// A router on the path between A and B (sends ICMP reports).
const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// Split fuzz bytes into operations: (tag, body).
fn ops(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 3 {
            return None;
        }
        let tag = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3).min(9000);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        Some((tag, body))
    })
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b.get(at).copied().unwrap_or(0), b.get(at + 1).copied().unwrap_or(0)])
}

/// An IPv4 header (checksum set) around `payload`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(payload);
    fix_v4(&mut ip);
    ip
}

/// An IPv4/UDP packet of `len` bytes (at least 28), port 12345 to 8080,
/// payload bytes counting up from `fill`; `frag` is the flags/offset word (DF: 0x4000).
pub(super) fn udp(src: Ipv4Addr, dst: Ipv4Addr, len: usize, id: u16, frag: u16, fill: u8) -> Vec<u8> {
    let len = len.max(28);
    let mut udp = vec![0x30, 0x39, 0x1f, 0x90, 0, 0, 0, 0];
    udp[4..6].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    udp.extend((0..len - 28).map(|i| fill.wrapping_add(i as u8)));
    ipv4(src, dst, 17, id, frag, &udp)
}

/// A UDP packet between the two protected networks (B's side to A's).
fn udp_b_to_a(len: usize, id: u16, fill: u8) -> Vec<u8> {
    udp(Ipv4Addr::new(10, 0, 2, 7), Ipv4Addr::new(10, 0, 1, 7), len, id, 0, fill)
}

/// ESP under A's inbound key with any plaintext: what a peer holding the
/// key (or a bug in it) could send. Ops, by `tag % 4`:
/// - 0: body = seq (2 bytes; 0 = the next one) + plaintext as is (payload,
///   padding, pad length and next header all chosen by the fuzzer);
/// - 1: body = seq (2) + an inner packet (lengths and IPv4 checksum fixed),
///   padded and trailed correctly;
/// - 2: body = seq (2) + a position (2) + an inner packet as for 1; the
///   finished frame's byte at that position is XORed with 0xa5 (outer
///   header, ESP header, IV, ciphertext or ICV);
/// - 3: time passes (tag and first body byte, in ms).
pub fn esp_sealed(data: &[u8]) -> Result<(), String> {
    esp_sealed_on(&mut Lab::new(), data)
}

fn esp_sealed_on(lab: &mut Lab, data: &[u8]) -> Result<(), String> {
    let ek: Vec<u8> = (0..20u8).collect();
    let aead = aes_gcm::Aes128Gcm::new_from_slice(&ek[..16]).map_err(|e| e.to_string())?;
    let mut next_seq = 1u32;
    let mut iv_ctr = 0u64;
    for (tag, body) in ops(data) {
        let seq = match be16(body, 0) {
            0 => next_seq,
            s => u32::from(s),
        };
        next_seq = next_seq.max(seq.wrapping_add(1));
        let rest = body.get(2..).unwrap_or_default();
        let (flip, rest) = match tag % 4 {
            2 => (Some(usize::from(be16(rest, 0))), rest.get(2..).unwrap_or_default()),
            3 => {
                lab.advance(u64::from(u16::from_be_bytes([tag, body.first().copied().unwrap_or(0)])));
                continue;
            }
            _ => (None, rest),
        };
        let mut plain = rest.to_vec();
        if tag % 4 != 0 {
            fix_v4(&mut plain);
            let nh = match plain.first().map(|b| b >> 4) {
                Some(4) => 4,
                Some(6) => 41,
                _ => 59,
            };
            let pad = (4 - (plain.len() + 2) % 4) % 4;
            plain.extend((1..=pad as u8).chain([pad as u8, nh]));
        }
        iv_ctr += 1;
        let iv = iv_ctr.to_be_bytes();
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&ek[16..20]);
        nonce[4..].copy_from_slice(&iv);
        let mut hdr = B_TO_A_SPI.to_be_bytes().to_vec();
        hdr.extend_from_slice(&seq.to_be_bytes());
        let tag_bytes =
            aead.encrypt_in_place_detached(&nonce.into(), &hdr, &mut plain).map_err(|e| format!("sealing: {e}"))?;
        let mut esp = hdr;
        esp.extend_from_slice(&iv);
        esp.extend_from_slice(&plain);
        esp.extend_from_slice(&tag_bytes);
        let mut f = eth(&ipv4(B_IP, A_IP, 50, seq as u16, 0, &esp), MAC_A[PROT], MAC_B[PROT]);
        if let Some(at) = flip {
            let i = at % f.len();
            f[i] ^= 0xa5;
        }
        lab.feed(PROT, &f)?;
    }
    Ok(())
}

/// Fragments of ESP that B sealed, cut and shuffled as the fuzzer says. Ops,
/// by `tag % 4`: 0..=2 a datagram: body = inner length (2 bytes), then
/// 3 bytes per fragment: start and length in 8-byte units, and flags (bit 0
/// flips MF, bit 1 another IP id, bit 2 another source, bit 3 sends it
/// twice); 3: time passes (body's first 2 bytes, in ms).
///
/// Oracle: when the fragments are clean (no flags) and tile the datagram
/// exactly, A must deliver the sealed packet on its cleartext port.
pub fn reassembly(data: &[u8]) -> Result<(), String> {
    reassembly_on(&mut Lab::new(), data)
}

fn reassembly_on(lab: &mut Lab, data: &[u8]) -> Result<(), String> {
    let budget = super::lab_reasm();
    let max_fragments = budget.max_fragments.min(budget.max_buffers_per_source).min(16);
    for (n, (tag, body)) in ops(data).enumerate() {
        if tag % 4 == 3 {
            lab.advance(u64::from(be16(body, 0)));
            continue;
        }
        let inner = udp_b_to_a(usize::from(be16(body, 0)).min(1300), n as u16, tag);
        let sealed = lab.seal_from_b(&inner);
        let [frame] = sealed.as_slice() else { return Err(format!("B sealed {} frames", sealed.len())) };
        let ip = &frame[14..];
        let payload = &ip[20..];
        let id = be16(ip, 4);
        let specs: Vec<&[u8]> = body.get(2..).unwrap_or_default().chunks_exact(3).take(64).collect();
        let mut spans = Vec::new();
        for s in &specs {
            let start = usize::from(s[0]) * 8;
            if start >= payload.len() {
                continue;
            }
            let end = (start + usize::from(s[1]) * 8).min(payload.len()).max(start + 1);
            // Non-final fragments must carry a multiple of 8 bytes.
            let end = if end < payload.len() { start + ((end - start) / 8).max(1) * 8 } else { end };
            let end = end.min(payload.len());
            let mf = (end < payload.len()) ^ (s[2] & 1 != 0);
            let fid = if s[2] & 2 != 0 { id ^ 0x5555 } else { id };
            let src = if s[2] & 4 != 0 { Ipv4Addr::new(198, 51, 100, 77) } else { B_IP };
            let frag = (if mf { 0x2000 } else { 0 }) | (start / 8) as u16;
            let f = eth(&ipv4(src, A_IP, 50, fid, frag, &payload[start..end]), MAC_A[PROT], MAC_B[PROT]);
            spans.push((start, end, s[2] & 0xf == 0));
            for _ in 0..1 + usize::from(s[2] & 8 != 0) {
                lab.feed(PROT, &f)?;
            }
        }
        // Did the clean pieces tile the payload exactly?
        let mut sorted = spans.clone();
        sorted.sort_unstable();
        let tiles = !sorted.is_empty()
            && sorted.len() <= max_fragments
            && sorted.iter().all(|s| s.2)
            && sorted[0].0 == 0
            && sorted.last().is_some_and(|s| s.1 == payload.len())
            && sorted.windows(2).all(|w| w[0].1 == w[1].0);
        if tiles {
            let delivered = lab.delivered.iter().any(|f| f.get(14 + 28..) == inner.get(28..));
            if !delivered {
                return Err(format!(
                    "fragments {:?} tile {} bytes but the packet was not delivered",
                    sorted.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
                    payload.len()
                ));
            }
        }
        lab.delivered.clear();
    }
    Ok(())
}

/// ICMP "fragmentation needed" reports about A's own ESP, from a router on
/// the path, with fuzz-chosen MTU, quote length and a flipped quote byte;
/// and A's host sending traffic that must then fit. Ops, by `tag % 4`:
/// - 0: A's host sends a UDP packet to B's side: length (2 bytes), DF if tag bit 2;
/// - 1: a report about the newest ESP A sent: MTU (2), quote length (2),
///   quote byte to flip (2; 0 = none), source (tag bit 2: B instead of the router);
/// - 2: ICMP to A with any body (type, code, rest), checksums fixed;
/// - 3: time passes (2 bytes, in ms).
pub fn icmp_too_big(data: &[u8]) -> Result<(), String> {
    icmp_too_big_on(&mut Lab::new(), data)
}

fn icmp_too_big_on(lab: &mut Lab, data: &[u8]) -> Result<(), String> {
    let mut last_esp: Option<Vec<u8>> = None;
    for (tag, body) in ops(data) {
        match tag % 4 {
            0 => {
                let len = usize::from(be16(body, 0)).clamp(28, 3000);
                let df = if tag & 4 != 0 { 0x4000 } else { 0 };
                let ip = udp(Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 2, 5), len, 1, df, 0x77);
                let out = lab.feed(CLEAR, &eth(&ip, MAC_A[CLEAR], MAC_HOST_A))?;
                if let Some((_, f)) = out.iter().rev().find(|(p, f)| *p == PROT && f.get(23) == Some(&50)) {
                    last_esp = Some(f[14..].to_vec());
                }
            }
            1 => {
                let Some(esp) = &last_esp else { continue };
                let quote_len = usize::from(be16(body, 2)).clamp(1, esp.len());
                let mut quote = esp[..quote_len].to_vec();
                let flip = usize::from(be16(body, 4));
                if flip != 0 {
                    let i = flip % quote.len();
                    quote[i] ^= 0x5a;
                }
                let mut icmp = vec![3, 4, 0, 0, 0, 0];
                icmp.extend_from_slice(&be16(body, 0).to_be_bytes());
                icmp.extend_from_slice(&quote);
                let c = checksum(&icmp);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                let src = if tag & 4 != 0 { B_IP } else { ROUTER };
                lab.feed(PROT, &eth(&ipv4(src, A_IP, 1, 7, 0, &icmp), MAC_A[PROT], MAC_B[PROT]))?;
            }
            2 => {
                let mut icmp = body.to_vec();
                icmp.resize(icmp.len().max(8), 0);
                icmp[2..4].copy_from_slice(&[0, 0]);
                let c = checksum(&icmp);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                let (port, dst, mac) =
                    if tag & 4 != 0 { (CLEAR, A_CLEAR_V4, MAC_HOST_A) } else { (PROT, A_IP, MAC_B[PROT]) };
                let src = if port == CLEAR { Ipv4Addr::new(10, 0, 1, 5) } else { ROUTER };
                lab.feed(port, &eth(&ipv4(src, dst, 1, 9, 0, &icmp), MAC_A[port], mac))?;
            }
            _ => lab.advance(u64::from(be16(body, 0)) * 100),
        }
    }
    Ok(())
}

/// ARP and IPv6 neighbour discovery on either port, and traffic that makes
/// A resolve a neighbour itself. Ops, by `tag % 4`:
/// - 0: an ARP packet: body = operation (1), sender MAC (6), then 1 byte
///   choosing the sender and target addresses (A's own, a neighbour's,
///   B's, or the next 8 body bytes), on the port of tag bit 2;
/// - 1: raw bytes after an ARP Ethernet header (tag bit 2: port);
/// - 2: ICMPv6 on the cleartext port (hop limit 255, checksum fixed):
///   body = source choice (1), destination choice (1), ICMPv6 message;
/// - 3: a packet from B for a host on A's side that A must resolve first
///   (host number: first body byte).
pub fn neighbor(data: &[u8]) -> Result<(), String> {
    neighbor_on(&mut Lab::new(), data)
}

fn neighbor_on(lab: &mut Lab, data: &[u8]) -> Result<(), String> {
    for (tag, body) in ops(data) {
        let port = usize::from(tag & 4 != 0);
        match tag % 4 {
            0 => {
                let own = [A_CLEAR_V4, A_IP][port];
                let pick = |c: u8, raw: &[u8]| -> [u8; 4] {
                    match c % 4 {
                        0 => own.octets(),
                        1 => [[10, 0, 1, 5], [198, 51, 100, 1]][port],
                        2 => B_IP.octets(),
                        _ => [raw.first(), raw.get(1), raw.get(2), raw.get(3)].map(|b| b.copied().unwrap_or(0)),
                    }
                };
                let choice = body.get(7).copied().unwrap_or(0);
                let raw = body.get(8..).unwrap_or_default();
                let mut arp = vec![0, 1, 8, 0, 6, 4, 0, body.first().copied().unwrap_or(1) % 3];
                let mut sha = [0u8; 6];
                for (i, b) in body.iter().skip(1).take(6).enumerate() {
                    sha[i] = *b;
                }
                arp.extend_from_slice(&sha);
                arp.extend_from_slice(&pick(choice, raw));
                arp.extend_from_slice(&[0; 6]);
                arp.extend_from_slice(&pick(choice >> 2, raw.get(4..).unwrap_or_default()));
                let mut f = MAC_A[port].to_vec();
                f.extend_from_slice(&sha);
                f.extend_from_slice(&[8, 6]);
                f.extend_from_slice(&arp);
                lab.feed(port, &f)?;
            }
            1 => {
                let mut f = [0xff; 6].to_vec();
                f.extend_from_slice(&[2, 0, 0, 0, 0, 0x33, 8, 6]);
                f.extend_from_slice(body);
                lab.feed(port, &f)?;
            }
            2 => {
                let link_local = [0xfe80, 0, 0, 0, 0, 0, 0, 0x33];
                let src = match body.first().copied().unwrap_or(0) % 3 {
                    0 => link_local,
                    1 => [0xfd00, 1, 0, 0, 0, 0, 0, 5],
                    _ => [0; 8],
                };
                let dst = match body.get(1).copied().unwrap_or(0) % 3 {
                    0 => A_CLEAR_V6.segments(),
                    1 => [0xff02, 0, 0, 0, 0, 1, 0xff00, 0xfe],
                    _ => [0xff02, 0, 0, 0, 0, 0, 0, 1],
                };
                let msg = body.get(2..).unwrap_or_default();
                lab.feed(CLEAR, &icmpv6_frame(src, dst, msg))?;
            }
            _ => {
                let mut inner = udp_b_to_a(60, 3, 0);
                inner[19] = body.first().copied().unwrap_or(7);
                fix_v4(&mut inner);
                for f in lab.seal_from_b(&inner) {
                    lab.feed(PROT, &f)?;
                }
            }
        }
    }
    Ok(())
}

/// An ICMPv6 packet (hop limit 255, checksum over the pseudo-header) from
/// `src` to `dst` in an Ethernet frame to A's cleartext port.
fn icmpv6_frame(src: [u16; 8], dst: [u16; 8], msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    m.resize(m.len().max(4), 0);
    m[2..4].copy_from_slice(&[0, 0]);
    let words = |a: [u16; 8]| a.into_iter().flat_map(u16::to_be_bytes).collect::<Vec<u8>>();
    let mut pseudo = words(src);
    pseudo.extend(words(dst));
    pseudo.extend_from_slice(&(m.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&m);
    let c = checksum(&pseudo);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(m.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[58, 255]);
    ip.extend(words(src));
    ip.extend(words(dst));
    ip.extend_from_slice(&m);
    eth(&ip, MAC_A[CLEAR], [2, 0, 0, 0, 0, 0x33])
}

/// NAT traversal and the host path (the lab of [`Lab::natt_host`]: A's SAs
/// in UDP 4500, a host port to its kernel). Ops, by `tag % 6`:
/// - 0: a raw frame on the protected port;
/// - 1: a UDP datagram from B to A's port 4500: body = source port (2 bytes;
///   0 = 4500) + payload (keepalive, IKE marker, ESP or junk);
/// - 2: an inner packet B seals in UDP: body = a position (2 bytes; the
///   frame's byte there is XORed, 0 = none) + a NAT port (2; when not 0 the
///   UDP source port becomes it and, when odd, the source address
///   203.0.113.7) + the inner packet (lengths and IPv4 checksum fixed);
/// - 3: a raw frame from the kernel (the host port);
/// - 4: an IP packet the kernel sends (IPv4: source A's address, lengths and
///   checksum fixed), on the host port;
/// - 5: time passes.
///
/// Beyond the lab's invariants: what goes to the kernel is for the
/// gateway's addresses only, the kernel's traffic leaves in clear only from
/// those addresses, and a NAT mapping change is reported only for a packet
/// that authenticated.
pub fn natt_host(data: &[u8]) -> Result<(), String> {
    natt_host_on(&mut Lab::natt_host(), data)
}

pub(super) fn natt_host_on(lab: &mut Lab, data: &[u8]) -> Result<(), String> {
    for (tag, body) in ops(data) {
        match tag % 6 {
            0 => drop(lab.feed(PROT, body)?),
            1 => {
                let sport = match be16(body, 0) {
                    0 => 4500,
                    p => p,
                };
                let payload = body.get(2..).unwrap_or_default();
                let mut dgram = sport.to_be_bytes().to_vec();
                dgram.extend_from_slice(&4500u16.to_be_bytes());
                dgram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                dgram.extend_from_slice(&[0, 0]);
                dgram.extend_from_slice(payload);
                lab.feed(PROT, &eth(&ipv4(B_IP, A_IP, 17, 1, 0, &dgram), MAC_A[PROT], MAC_B[PROT]))?;
            }
            2 => {
                let (flip, nat) = (usize::from(be16(body, 0)), be16(body, 2));
                let mut ip = body.get(4..).unwrap_or_default().to_vec();
                fix_v4(&mut ip);
                for mut f in lab.seal_from_b(&ip) {
                    if nat != 0 && f.len() >= 14 + 28 && f[14 + 9] == 17 {
                        f[14 + 20..14 + 22].copy_from_slice(&nat.to_be_bytes());
                        if nat % 2 == 1 {
                            f[14 + 12..14 + 16].copy_from_slice(&[203, 0, 113, 7]);
                        }
                        fix_v4_header(&mut f[14..]);
                    }
                    if flip != 0 {
                        let i = flip % f.len();
                        f[i] ^= 0x5a;
                    }
                    lab.feed(PROT, &f)?;
                }
            }
            3 => drop(lab.feed(super::HOST, body)?),
            4 => {
                let mut ip = body.to_vec();
                if ip.len() >= 20 && ip[0] >> 4 == 4 {
                    ip[12..16].copy_from_slice(&A_IP.octets());
                }
                fix_v4(&mut ip);
                let f = eth(&ip, crate::pipeline::HOST_PEER_MAC, MAC_A[super::HOST]);
                lab.feed(super::HOST, &f)?;
            }
            _ => lab.advance(u64::from(be16(body, 0))),
        }
    }
    Ok(())
}

/// Recompute an IPv4 header's checksum in place (the length stays).
fn fix_v4_header(ip: &mut [u8]) {
    if ip.len() >= 20 && ip[0] >> 4 == 4 {
        let hl = (usize::from(ip[0] & 0xf) * 4).clamp(20, ip.len().min(60));
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&ip[..hl]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::op;
    use crate::stats::{DropReason, Event};

    fn frag_op(len: u16, specs: &[[u8; 3]]) -> Vec<u8> {
        let mut b = len.to_be_bytes().to_vec();
        specs.iter().for_each(|s| b.extend_from_slice(s));
        op(0, &b)
    }

    /// The drivers reach what they claim to: decryption, each malformed
    /// trailer's drop, reassembly, path MTU reports, neighbour answers.
    #[test]
    fn each_driver_reaches_its_surface() {
        let inner = udp_b_to_a(100, 1, 0);
        let mut lab = Lab::new();
        let mut input = op(1, &[&[0, 0][..], &inner].concat());
        input.extend(op(0, &[&[0, 0][..], &inner, &[0xff, 4]].concat())); // pad length past the packet
        input.extend(op(0, &[&[0, 0][..], &inner, &[0, 6]].concat())); // next header TCP in tunnel mode
        input.extend(op(2, &[&[0, 0, 0, 60][..], &inner].concat())); // a ciphertext byte flipped
        input.extend(op(1, &[&[0, 1][..], &inner].concat())); // sequence number 1 again
        esp_sealed_on(&mut lab, &input).unwrap();
        assert_eq!(lab.a.event(Event::Decrypted), 1);
        assert_eq!(lab.delivered.len(), 1);
        assert_eq!(lab.a.drops(DropReason::EspAuthFailed), 1);
        assert_eq!(lab.a.drops(DropReason::ReplayDuplicate), 1);
        assert!(lab.a.stats.total_drops() >= 4, "both bad trailers dropped too");

        let mut lab = Lab::new();
        reassembly_on(&mut lab, &frag_op(1000, &[[64, 255, 0], [0, 64, 0]])).unwrap();
        assert_eq!(lab.a.event(Event::Reassembled), 1);
        let mut lab = Lab::new();
        reassembly_on(&mut lab, &frag_op(1000, &[[0, 64, 0], [60, 255, 0]])).unwrap();
        assert_eq!((lab.a.event(Event::Reassembled), lab.a.drops(DropReason::ReasmOverlap)), (0, 2), "overlap refused");

        let mut lab = Lab::new();
        let mut input = op(0, &1000u16.to_be_bytes());
        input.extend(op(1, &[1200u16.to_be_bytes(), 200u16.to_be_bytes(), [0, 0]].concat()));
        input.extend(op(4, &1400u16.to_be_bytes()));
        icmp_too_big_on(&mut lab, &input).unwrap();
        assert_eq!(lab.a.event(Event::PmtuLowered), 1);
        let need_frag = lab.delivered.last().expect("ICMP to the host");
        let mtu = u16::from_be_bytes([need_frag[14 + 26], need_frag[14 + 27]]);
        assert!(need_frag[14 + 20] == 3 && mtu < 1200 - 50, "need-frag announcing {mtu}");

        let mut lab = Lab::new();
        let mut input = op(0, &[&[1][..], &[2, 0, 0, 0, 0, 0x33], &[1]].concat()); // who-has 10.0.1.254, tell 10.0.1.5
        let ns = [&[135, 0, 0, 0, 0, 0, 0, 0][..], &A_CLEAR_V6.octets(), &[1, 1, 2, 0, 0, 0, 0, 0x33]].concat();
        input.extend(op(2, &[&[1, 0][..], &ns].concat()));
        neighbor_on(&mut lab, &input).unwrap();
        let drops: Vec<_> = DropReason::ALL.iter().filter(|r| lab.a.drops(**r) > 0).collect();
        assert_eq!(lab.a.event(Event::NeighborReplies), 2, "an ARP reply and a neighbour advertisement {drops:?}");
    }

    /// A small fuzz run of every driver in the normal suite (deterministic).
    #[test]
    fn random_inputs_hold_every_invariant() {
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        let inner = udp_b_to_a(200, 1, 0);
        for case in 0..200 {
            let mut input = Vec::new();
            for _ in 0..(next() % 6 + 1) {
                let tag = next() as u8;
                let len = (next() % 300) as usize;
                let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if next().is_multiple_of(2) {
                    body.splice(body.len().min(4).., inner.iter().copied());
                }
                input.extend(op(tag, &body));
            }
            for (name, run) in [
                ("esp", esp_sealed as super::super::Driver),
                ("reassembly", reassembly),
                ("icmp", icmp_too_big),
                ("neighbor", neighbor),
            ] {
                run(&input).unwrap_or_else(|e| panic!("{name} case {case}: {e}"));
            }
        }
    }
}
