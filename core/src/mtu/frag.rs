//! Fragmentation of IPv4 packets (RFC 791) and of IPv6 packets the gateway
//! originates (RFC 8200 §4.5: the source adds a Fragment header).
//!
//! Used after encryption on outer ESP packets that exceed the egress limit,
//! and before encryption on inner packets when an eroute asks for it.
//! Fragments go into fresh buffers from a [`BufAlloc`]; the original is left
//! untouched for the caller to free.

use thiserror::Error;

use crate::packet::ip::{self, proto, IPV4_MF, IPV6_HDR_LEN};
use crate::packet::PacketBuf;

/// Where fragment buffers come from (a mempool on DPDK, the heap in tests).
pub trait BufAlloc {
    type Buf: PacketBuf;
    /// A buffer able to hold `len` bytes after the usual headroom.
    fn alloc(&mut self, len: usize) -> Option<Self::Buf>;
}

/// Heap buffers, for tests and tools.
#[derive(Debug, Default, Clone, Copy)]
pub struct VecAlloc;

impl BufAlloc for VecAlloc {
    type Buf = crate::packet::VecBuf;
    fn alloc(&mut self, len: usize) -> Option<Self::Buf> {
        Some(crate::packet::VecBuf::with_room(
            crate::packet::VecBuf::DEFAULT_HEADROOM,
            crate::packet::VecBuf::DEFAULT_HEADROOM + len + 64,
        ))
    }
}

/// Why a packet could not be fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FragError {
    #[error("malformed IP header")]
    Malformed,
    #[error("limit too small to carry any payload")]
    LimitTooSmall,
    #[error("no buffer for a fragment")]
    NoBuffer,
    #[error("too many fragments")]
    TooMany,
}

/// Split an IPv4 packet into fragments of at most `limit` bytes each, in
/// order, handing each to `emit`. Options without the copy flag go only into
/// the first fragment. An input that is itself a fragment is split correctly
/// (offsets added, its MF kept on the last piece). Returns the count.
pub fn fragment_ipv4<A: BufAlloc>(
    pkt: &[u8],
    limit: usize,
    alloc: &mut A,
    mut emit: impl FnMut(A::Buf),
) -> Result<usize, FragError> {
    let info = ip::parse_ipv4(pkt).ok_or(FragError::Malformed)?;
    let hdr = &pkt[..info.header_len];
    let payload = &pkt[info.header_len..info.total_len];
    let base_off = usize::from(info.flags_frag & 0x1fff) * 8;
    let orig_mf = info.flags_frag & IPV4_MF != 0;
    let df = info.flags_frag & ip::IPV4_DF;

    // Header for fragments after the first: only options with the copy bit.
    let mut later = [0u8; 60];
    later[..20].copy_from_slice(&hdr[..20]);
    let mut later_len = 20;
    let mut i = 20;
    while i < hdr.len() {
        match hdr[i] {
            0 => break,  // end of options
            1 => i += 1, // no-op
            kind => {
                let Some(&l) = hdr.get(i + 1) else { return Err(FragError::Malformed) };
                let l = usize::from(l);
                if l < 2 || i + l > hdr.len() {
                    return Err(FragError::Malformed);
                }
                if kind & 0x80 != 0 {
                    later[later_len..later_len + l].copy_from_slice(&hdr[i..i + l]);
                    later_len += l;
                }
                i += l;
            }
        }
    }
    while later_len % 4 != 0 {
        later[later_len] = 0;
        later_len += 1;
    }
    later[0] = 0x40 | (later_len / 4) as u8;

    let mut off = 0;
    let mut n = 0;
    while off < payload.len() {
        let h: &[u8] = if off == 0 { hdr } else { &later[..later_len] };
        let max = limit.checked_sub(h.len()).ok_or(FragError::LimitTooSmall)? & !7;
        if max == 0 {
            return Err(FragError::LimitTooSmall);
        }
        let chunk = max.min(payload.len() - off);
        let last = off + chunk == payload.len();
        let mut b = alloc.alloc(h.len() + chunk).ok_or(FragError::NoBuffer)?;
        b.append(h.len() + chunk).map_err(|_| FragError::NoBuffer)?;
        let d = b.data_mut();
        d[..h.len()].copy_from_slice(h);
        d[h.len()..].copy_from_slice(&payload[off..off + chunk]);
        d[2..4].copy_from_slice(&((h.len() + chunk) as u16).to_be_bytes());
        let mf = if last { orig_mf } else { true };
        let frag = df | if mf { IPV4_MF } else { 0 } | (((base_off + off) / 8) as u16 & 0x1fff);
        d[6..8].copy_from_slice(&frag.to_be_bytes());
        ip::ipv4_set_checksum(&mut d[..h.len()]);
        emit(b);
        n += 1;
        off += chunk;
    }
    Ok(n)
}

/// Split an IPv6 packet that this node originates (the outer ESP packet) into
/// fragments of at most `limit` bytes: IPv6 header, Fragment header with
/// identification `id`, then 8-byte-aligned pieces of the rest. The packet
/// must have no extension headers of its own before the payload (espgw's
/// outer packets have none).
pub fn fragment_ipv6<A: BufAlloc>(
    pkt: &[u8],
    limit: usize,
    id: u32,
    alloc: &mut A,
    mut emit: impl FnMut(A::Buf),
) -> Result<usize, FragError> {
    let info = ip::parse_ipv6(pkt).ok_or(FragError::Malformed)?;
    if info.l4_offset != IPV6_HDR_LEN || info.fragment {
        return Err(FragError::Malformed);
    }
    let next = pkt[6];
    let payload = &pkt[IPV6_HDR_LEN..info.total_len];
    let max = limit.checked_sub(IPV6_HDR_LEN + 8).ok_or(FragError::LimitTooSmall)? & !7;
    if max == 0 {
        return Err(FragError::LimitTooSmall);
    }
    if payload.len().div_ceil(max) > 8191 {
        return Err(FragError::TooMany);
    }
    let mut off = 0;
    let mut n = 0;
    while off < payload.len() {
        let chunk = max.min(payload.len() - off);
        let last = off + chunk == payload.len();
        let len = IPV6_HDR_LEN + 8 + chunk;
        let mut b = alloc.alloc(len).ok_or(FragError::NoBuffer)?;
        b.append(len).map_err(|_| FragError::NoBuffer)?;
        let d = b.data_mut();
        d[..IPV6_HDR_LEN].copy_from_slice(&pkt[..IPV6_HDR_LEN]);
        d[4..6].copy_from_slice(&((8 + chunk) as u16).to_be_bytes());
        d[6] = proto::FRAGMENT;
        let fh = &mut d[IPV6_HDR_LEN..IPV6_HDR_LEN + 8];
        fh[0] = next;
        fh[1] = 0;
        fh[2..4].copy_from_slice(&((off as u16) | u16::from(!last)).to_be_bytes());
        fh[4..8].copy_from_slice(&id.to_be_bytes());
        d[IPV6_HDR_LEN + 8..].copy_from_slice(&payload[off..off + chunk]);
        emit(b);
        n += 1;
        off += chunk;
    }
    Ok(n)
}
