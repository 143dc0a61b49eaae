//! Outbound ESP: admission against the lifetime, one sequence reservation
//! per burst, headers and trailers packet by packet, then one seal call per
//! batch (multi-buffer backends interleave the packets).

use std::net::IpAddr;

use super::{pad_len, seq::SeqError, DfPolicy, EspError, Mode, Sa, BATCH};
use crate::crypto::{CryptoError, ESP_HDR_LEN};
use crate::packet::ip::{self, proto, IPV4_DF, IPV4_HDR_LEN, IPV6_HDR_LEN};
use crate::packet::PacketBuf;

impl Sa {
    /// Encapsulate a burst of this SA's packets (IP packets from byte 0).
    /// The lifetime admits a prefix of the burst (a hard limit is never
    /// passed), then one atomic step reserves the sequence numbers of the
    /// admitted packets. `results[i]` tells what happened to `pkts[i]`.
    pub fn encap_burst<B: PacketBuf>(&self, pkts: &mut [B], results: &mut [Result<(), EspError>]) {
        self.encap_burst_numbered(pkts, results);
    }

    /// [`Self::encap_burst`], returning the first sequence number used (0 if none).
    fn encap_burst_numbered<B: PacketBuf>(&self, pkts: &mut [B], results: &mut [Result<(), EspError>]) -> u64 {
        let n = pkts.len().min(results.len());
        let admitted = self.usage.admit(&self.lifetime, pkts[..n].iter().map(|p| p.len() as u64));
        for r in &mut results[admitted..n] {
            *r = Err(self.expiry_reason());
        }
        if admitted == 0 {
            return 0;
        }
        let block = match self.seq.reserve(admitted, self.seq_limit) {
            Ok(b) => b,
            Err(e) => {
                let e = self.seq_error(e);
                results[..admitted].iter_mut().for_each(|r| *r = Err(e));
                return 0;
            }
        };
        if block.usable < admitted {
            // The block ran into the end of the space or of the lease.
            let e = self.seq_error(if block.first + block.usable as u64 > self.seq_limit {
                SeqError::Exhausted
            } else {
                SeqError::NotPersisted
            });
            results[block.usable..admitted].iter_mut().for_each(|r| *r = Err(e));
        }
        let mut start = 0;
        while start < block.usable {
            let end = (start + BATCH).min(block.usable);
            self.encap_batch(&mut pkts[start..end], block.first + start as u64, &mut results[start..end]);
            start = end;
        }
        block.first
    }

    /// Encapsulate one packet (a burst of one); returns its sequence number.
    pub fn encap<B: PacketBuf>(&self, pkt: &mut B) -> Result<u64, EspError> {
        let mut r = [Ok(())];
        let first = self.encap_burst_numbered(std::slice::from_mut(pkt), &mut r);
        r[0].map(|()| first)
    }

    /// A sequence reservation failure as a drop reason (exhaustion expires the SA).
    fn seq_error(&self, e: SeqError) -> EspError {
        match e {
            SeqError::Exhausted => {
                self.usage.expire();
                self.expiry_reason()
            }
            SeqError::NotPersisted => EspError::SeqNotPersisted,
        }
    }

    /// Up to [`BATCH`] packets with sequence numbers `first..`: headers and
    /// trailers one by one, then one call that seals them all.
    fn encap_batch<B: PacketBuf>(&self, pkts: &mut [B], first: u64, results: &mut [Result<(), EspError>]) {
        let mut prep: [Option<(usize, u32)>; BATCH] = [None; BATCH];
        for (i, p) in pkts.iter_mut().enumerate() {
            let seq = first + i as u64;
            match self.encap_prepare(p, seq) {
                Ok(off) => prep[i] = Some((off, (seq >> 32) as u32)),
                Err(e) => results[i] = Err(e),
            }
        }
        let crypt = self.crypt_batch(true, pkts, &prep);
        for (i, c) in crypt.iter().enumerate().take(pkts.len()) {
            if let Some(c) = c {
                results[i] = c.map_err(EspError::from);
            }
        }
    }

    /// Everything but the crypto: headers, IV, padding, trailer. Returns the
    /// offset of the ESP header (the buffer then runs to the end of the ICV).
    #[inline]
    fn encap_prepare<B: PacketBuf>(&self, pkt: &mut B, seq: u64) -> Result<usize, EspError> {
        match self.mode {
            Mode::Tunnel { local, remote } => self.encap_tunnel(pkt, seq, local, remote),
            Mode::Transport => self.encap_transport(pkt, seq),
        }
    }

    fn encap_tunnel<B: PacketBuf>(
        &self,
        pkt: &mut B,
        seq: u64,
        local: IpAddr,
        remote: IpAddr,
    ) -> Result<usize, EspError> {
        let a = self.algorithm;
        // Inner packet: validate and cut link-layer padding.
        let (inner_len, next_header, tos, df) = {
            let d = pkt.data();
            match ip::version(d) {
                Some(4) => {
                    let i = ip::parse_ipv4(d).ok_or(EspError::BadInner)?;
                    (i.total_len, proto::IPV4, i.tos, i.df())
                }
                Some(6) => {
                    let i = ip::parse_ipv6(d).ok_or(EspError::BadInner)?;
                    (i.total_len, proto::IPV6, i.traffic_class, true)
                }
                _ => return Err(EspError::BadInner),
            }
        };
        pkt.trim(pkt.len() - inner_len).map_err(|_| EspError::BadInner)?;
        let outer_len = if local.is_ipv4() { IPV4_HDR_LEN } else { IPV6_HDR_LEN };
        let pad = pad_len(inner_len, a.pad_align());
        let head = outer_len + ESP_HDR_LEN + a.iv_len();
        let tail = pad + 2 + a.icv_len();
        let total = head + inner_len + tail;
        grow(pkt, head, tail, total, local.is_ipv4())?;
        let buf = pkt.data_mut();
        // ESP header, IV, trailer.
        let esp = &mut buf[outer_len..];
        self.write_esp(esp, seq, inner_len, pad, next_header)?;
        // Outer header: DSCP copied, ECN copied (RFC 6040 normal mode).
        match (local, remote) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let df = match self.df {
                    DfPolicy::Copy => df,
                    DfPolicy::Set => true,
                    DfPolicy::Clear => false,
                };
                let h = &mut buf[..IPV4_HDR_LEN];
                h[0] = 0x45;
                h[1] = tos;
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                // Identification: the low bits of the sequence number are unique per SA.
                h[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
                h[6..8].copy_from_slice(&(if df { IPV4_DF } else { 0 }).to_be_bytes());
                h[8] = self.ttl;
                h[9] = proto::ESP;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                ip::ipv4_set_checksum(h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = &mut buf[..IPV6_HDR_LEN];
                h[..4].copy_from_slice(&[0x60, 0, 0, 0]);
                ip::ipv6_set_traffic_class(h, tos);
                h[4..6].copy_from_slice(&((total - IPV6_HDR_LEN) as u16).to_be_bytes());
                h[6] = proto::ESP;
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
            }
            _ => return Err(EspError::BadInner), // excluded at SA creation
        }
        Ok(outer_len)
    }

    fn encap_transport<B: PacketBuf>(&self, pkt: &mut B, seq: u64) -> Result<usize, EspError> {
        let a = self.algorithm;
        let (hdr_len, total_len, l4_proto, nh_field, v4) = {
            let d = pkt.data();
            match ip::version(d) {
                Some(4) => {
                    let i = ip::parse_ipv4(d).ok_or(EspError::BadInner)?;
                    if i.is_fragment() {
                        // RFC 4303 §3.3: transport mode never applies to fragments.
                        return Err(EspError::Fragment);
                    }
                    (i.header_len, i.total_len, i.protocol, 9, true)
                }
                Some(6) => {
                    let i = ip::parse_ipv6(d).ok_or(EspError::BadInner)?;
                    if i.fragment {
                        return Err(EspError::Fragment);
                    }
                    (i.l4_offset, i.total_len, i.l4_proto, i.nh_field, false)
                }
                _ => return Err(EspError::BadInner),
            }
        };
        pkt.trim(pkt.len() - total_len).map_err(|_| EspError::BadInner)?;
        let payload_len = total_len - hdr_len;
        let pad = pad_len(payload_len, a.pad_align());
        let head = ESP_HDR_LEN + a.iv_len();
        let tail = pad + 2 + a.icv_len();
        let total = total_len + head + tail;
        grow(pkt, head, tail, total, v4)?;
        let buf = pkt.data_mut();
        // Move the IP header (and IPv6 extension headers) to the new front.
        buf.copy_within(head..head + hdr_len, 0);
        buf[nh_field] = proto::ESP;
        self.write_esp(&mut buf[hdr_len..], seq, payload_len, pad, l4_proto)?;
        if v4 {
            buf[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip::ipv4_set_checksum(&mut buf[..hdr_len]);
        } else {
            buf[4..6].copy_from_slice(&((total - IPV6_HDR_LEN) as u16).to_be_bytes());
        }
        Ok(hdr_len)
    }

    /// Fill ESP header, IV and trailer around a payload already in place at
    /// `esp[ESP_HDR_LEN + iv_len..][..payload_len]` (sealing comes after).
    #[inline]
    fn write_esp(
        &self,
        esp: &mut [u8],
        seq: u64,
        payload_len: usize,
        pad: usize,
        next_header: u8,
    ) -> Result<(), EspError> {
        let iv_len = self.algorithm.iv_len();
        esp[..4].copy_from_slice(&self.spi.to_be_bytes());
        esp[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        self.transform.make_iv(seq, &mut esp[ESP_HDR_LEN..ESP_HDR_LEN + iv_len]);
        let t = ESP_HDR_LEN + iv_len + payload_len;
        for (i, b) in esp[t..t + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8; // RFC 4303 §2.4 default padding 1, 2, 3, ...
        }
        esp[t + pad] = pad as u8;
        esp[t + pad + 1] = next_header;
        Ok(())
    }

    /// One transform call over the packets of a batch that are ready for
    /// crypto: `prep[i]` is `(ESP header offset, ESN high half)` for those.
    /// Returns each prepared packet's result at its own index.
    pub(super) fn crypt_batch<B: PacketBuf>(
        &self,
        seal: bool,
        pkts: &mut [B],
        prep: &[Option<(usize, u32)>; BATCH],
    ) -> [Option<Result<(), CryptoError>>; BATCH] {
        let mut bufs: [&mut [u8]; BATCH] = std::array::from_fn(|_| &mut [][..]);
        let mut his = [0u32; BATCH];
        let mut idx = [0usize; BATCH];
        let mut k = 0;
        for (i, p) in pkts.iter_mut().enumerate() {
            if let Some((off, hi)) = prep[i] {
                bufs[k] = &mut p.data_mut()[off..];
                his[k] = hi;
                idx[k] = i;
                k += 1;
            }
        }
        let mut res = [Ok(()); BATCH];
        let seq_hi = self.esn.then_some(&his[..k]);
        if seal {
            self.transform.seal_burst(&mut bufs[..k], seq_hi, &mut res[..k]);
        } else {
            self.transform.open_burst(&mut bufs[..k], seq_hi, &mut res[..k]);
        }
        let mut out = [None; BATCH];
        for j in 0..k {
            out[idx[j]] = Some(res[j]);
        }
        out
    }
}

/// Make room for ESP: `head` bytes in front, `tail` behind, for a packet of
/// `total` bytes once encapsulated (which its IP length field must hold).
#[inline]
fn grow<B: PacketBuf>(pkt: &mut B, head: usize, tail: usize, total: usize, v4: bool) -> Result<(), EspError> {
    if total > usize::from(u16::MAX) + if v4 { 0 } else { IPV6_HDR_LEN } {
        return Err(EspError::TooBig);
    }
    if pkt.headroom() < head || pkt.tailroom() < tail {
        return Err(EspError::NoRoom);
    }
    pkt.prepend(head).map_err(|_| EspError::NoRoom)?;
    pkt.append(tail).map_err(|_| EspError::NoRoom)
}
