//! Packets that no longer fit once encrypted: the MTU logic of espgw.
//!
//! The rule (RFC 4301 §8, RFC 4459, and the KLIPS lesson): encrypt first,
//! then decide against the **egress** limit, `min(egress port MTU, SA path
//! MTU)`, where the egress port is the one the *outer* route picks:
//!
//! - fits → send;
//! - too big and the inner packet may be fragmented (IPv4 without DF) →
//!   fragment the **outer** packet after encryption ([`fragment_ipv4`],
//!   [`fragment_ipv6`]); or, when the eroute asks for it, fragment the
//!   **inner** packet before encryption so the peer needs no reassembly;
//! - too big and the inner packet has DF (or is IPv6) → drop it and answer
//!   the sender with ICMP need-frag / ICMPv6 PTB carrying the exact tunnel
//!   MTU ([`tunnel_mtu`]): the largest inner packet that fits after this SA's
//!   overhead, padding included.
//!
//! Inbound, outer fragments are reassembled first ([`Reassembler`]), and
//! ICMP reports that quote our ESP packets lower the SA's path MTU.

pub mod frag;
pub mod icmp;
pub mod mss;
pub mod reasm;

pub use frag::{fragment_ipv4, fragment_ipv6, BufAlloc, FragError, VecAlloc};
pub use icmp::{build_frag_needed, build_packet_too_big, may_answer, parse_too_big, IcmpRateLimiter, TooBigReport};
pub use mss::{clamp_mss, mss_for};
pub use reasm::{Freed, ReasmConfig, ReasmDrop, ReasmOutcome, Reassembler};

use crate::esp::{Mode, PmtuUpdate, Sa};
use crate::packet::Meta;

/// Smallest path MTU an IPv4 outer path may be lowered to (RFC 1191 uses 68;
/// a tunnel below 576 is useless, and lowering further only helps attackers).
pub const PMTU_FLOOR_V4: u16 = 576;
/// Smallest path MTU of an IPv6 outer path (RFC 8200 minimum link MTU).
pub const PMTU_FLOOR_V6: u16 = 1280;
/// Default time after which a learned path MTU is forgotten (RFC 1191 §6.3: 10 min).
pub const PMTU_AGEING_MS: u64 = 10 * 60 * 1000;

/// The limit an outer packet of `sa` must fit: the egress port's MTU, or the
/// SA's learned path MTU when lower.
#[inline]
pub fn egress_limit(sa: &Sa, port_mtu: u16, now_ms: u64) -> u16 {
    sa.path_mtu(now_ms).map_or(port_mtu, |p| p.min(port_mtu))
}

/// The tunnel MTU to announce for `inner` (the packet that did not fit): the
/// largest inner packet of the same kind that fits in `limit` after `sa`.
pub fn tunnel_mtu(sa: &Sa, limit: u16, inner: &Meta) -> u16 {
    let hdr = match sa.mode() {
        Mode::Transport => inner.header_len(),
        Mode::Tunnel { .. } => 0,
    };
    sa.max_inner_len(usize::from(limit), hdr).min(usize::from(u16::MAX)) as u16
}

/// Where a too-big outbound packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooBig {
    /// Fits: send as is.
    Fits,
    /// Fragment the encrypted packet to the limit.
    FragmentOuter,
    /// Drop and tell the sender this MTU.
    Refuse { mtu: u16 },
}

/// Decide for the inner packet `inner` (IPv6 always counts as DF) once
/// encrypted with `sa` under `limit`.
pub fn decide(sa: &Sa, limit: u16, inner: &Meta) -> TooBig {
    let len = usize::from(inner.total_len);
    let payload = match sa.mode() {
        Mode::Tunnel { .. } => len,
        Mode::Transport => len - inner.header_len(),
    };
    if len + sa.overhead(payload) <= usize::from(limit) {
        return TooBig::Fits;
    }
    if inner.df {
        TooBig::Refuse { mtu: tunnel_mtu(sa, limit, inner) }
    } else {
        TooBig::FragmentOuter
    }
}

/// Apply an ICMP "too big" report to the SA it names. `outer_v6` selects the
/// floor. Returns what happened (for counters).
pub fn apply_too_big(sa: &Sa, report: &TooBigReport, port_mtu: u16, now_ms: u64, ageing_ms: u64) -> PmtuUpdate {
    let floor = if report.quoted_dst.is_ipv6() { PMTU_FLOOR_V6 } else { PMTU_FLOOR_V4 };
    let mtu = report.mtu.min(u32::from(u16::MAX)) as u16;
    sa.lower_path_mtu(mtu, floor, port_mtu, now_ms, ageing_ms)
}

#[cfg(test)]
mod tests;
