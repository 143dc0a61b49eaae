//! IKE_AUTH building blocks (RFC 7296 §2.15, §2.9, §2.17), pure:
//! - the pre-shared-key AUTH value each side sends and checks;
//! - traffic selector narrowing (the responder's answer is the
//!   intersection of what was asked and what its policy allows);
//! - a child SA's keys split from KEYMAT, initiator-to-responder first.

use std::net::IpAddr;

use zeroize::Zeroizing;

use super::crypto::{prf, IkeKeys, Prf};
use super::message::TrafficSelector;

/// AUTH method: shared key message integrity code (§3.8).
pub const AUTH_PSK: u8 = 2;
/// The pad string of §2.15.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// The octets an ID payload's MAC covers: its body (type, 3 reserved, data).
fn id_body(id_type: u8, id: &[u8]) -> Vec<u8> {
    let mut b = vec![id_type, 0, 0, 0];
    b.extend_from_slice(id);
    b
}

/// The octets an AUTH covers (§2.15), a PSK MAC as a signature: this
/// side's IKE_SA_INIT message | the peer's nonce | prf(SK_p of this side,
/// this side's ID body).
pub fn signed_octets(
    alg: Prf,
    own_init_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_type: u8,
    id: &[u8],
) -> Vec<u8> {
    let maced_id = prf(alg, sk_p, &id_body(id_type, id));
    let mut signed = own_init_message.to_vec();
    signed.extend_from_slice(peer_nonce);
    signed.extend_from_slice(&maced_id);
    signed
}

/// `AUTH = prf(prf(PSK, "Key Pad for IKEv2"), <SignedOctets>)`.
pub fn psk_auth(
    alg: Prf,
    psk: &[u8],
    own_init_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_type: u8,
    id: &[u8],
) -> Zeroizing<Vec<u8>> {
    psk_mac(alg, psk, &signed_octets(alg, own_init_message, peer_nonce, sk_p, id_type, id))
}

/// A PSK AUTH value over `signed` octets.
pub fn psk_mac(alg: Prf, psk: &[u8], signed: &[u8]) -> Zeroizing<Vec<u8>> {
    prf(alg, &prf(alg, psk, KEY_PAD), signed)
}

/// Check a peer's PSK AUTH value in constant time.
pub fn verify_psk_auth(got: &[u8], want: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    got.ct_eq(want).into()
}

/// The initiator's AUTH (signs its IKE_SA_INIT request, the responder's
/// nonce, its ID under SK_pi).
pub fn initiator_auth(
    keys: &IkeKeys,
    psk: &[u8],
    request: &[u8],
    nr: &[u8],
    id_type: u8,
    id: &[u8],
) -> Zeroizing<Vec<u8>> {
    psk_auth(keys.prf, psk, request, nr, &keys.sk_pi, id_type, id)
}

/// The responder's AUTH (signs its IKE_SA_INIT response, the initiator's
/// nonce, its ID under SK_pr).
pub fn responder_auth(
    keys: &IkeKeys,
    psk: &[u8],
    response: &[u8],
    ni: &[u8],
    id_type: u8,
    id: &[u8],
) -> Zeroizing<Vec<u8>> {
    psk_auth(keys.prf, psk, response, ni, &keys.sk_pr, id_type, id)
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(v4: bool, b: u128) -> IpAddr {
    if v4 {
        IpAddr::V4((b as u32).into())
    } else {
        IpAddr::V6(b.into())
    }
}

/// The intersection of two selectors, if they overlap: same family, the
/// protocols compatible (0 = any), address and port ranges intersected.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if a.start.is_ipv4() != b.start.is_ipv4() {
        return None;
    }
    let protocol = match (a.protocol, b.protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start = addr_bits(a.start).max(addr_bits(b.start));
    let end = addr_bits(a.end).min(addr_bits(b.end));
    let (start_port, end_port) = (a.start_port.max(b.start_port), a.end_port.min(b.end_port));
    if start > end || start_port > end_port {
        return None;
    }
    let v4 = a.start.is_ipv4();
    Some(TrafficSelector { protocol, start_port, end_port, start: from_bits(v4, start), end: from_bits(v4, end) })
}

/// Narrow what the initiator asked for (`asked`) to what our policy allows
/// (`allowed`), §2.9: every non-empty intersection, in the initiator's
/// order. Empty: answer TS_UNACCEPTABLE.
pub fn narrow(asked: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for a in asked {
        for p in allowed {
            if let Some(x) = intersect(a, p) {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
        }
    }
    out
}

/// One direction's key of a child SA.
pub type ChildKey = Zeroizing<Vec<u8>>;

/// A child SA's keys from its KEYMAT (§2.17): the initiator-to-responder
/// key first, then the responder-to-initiator one, `len` bytes each (for
/// AES-GCM: key and 4-byte salt, as the `enc_key` of an espgw SA).
pub fn split_child_keys(keymat: &[u8], len: usize) -> Option<(ChildKey, ChildKey)> {
    if keymat.len() < 2 * len {
        return None;
    }
    Some((Zeroizing::new(keymat[..len].to_vec()), Zeroizing::new(keymat[len..2 * len].to_vec())))
}
