//! Outbound ESP: admission against the lifetime, one sequence reservation
//! per burst, headers and trailers packet by packet, then one seal call per
//! batch (multi-buffer backends interleave the packets).

use super::{natt, pad_len, seq::SeqError, DfPolicy, EspError, Mode, Outer, Sa, BATCH};
use crate::crypto::ESP_HDR_LEN;
use crate::packet::ip::{self, proto, IPV6_HDR_LEN};
use crate::packet::{Meta, PacketBuf};
use crate::wire::Ipv6Repr;

impl Sa {
    /// Encapsulate a burst of this SA's packets (IP packets from byte 0).
    /// The lifetime admits a prefix of the burst (a hard limit is never
    /// passed), then one atomic step reserves the sequence numbers of the
    /// admitted packets. `results[i]` tells what happened to `pkts[i]`.
    pub fn encap_burst<B: PacketBuf>(&self, pkts: &mut [B], results: &mut [Result<(), EspError>]) {
        let mut metas = [Meta::default(); BATCH];
        let mut start = 0;
        while start < pkts.len().min(results.len()) {
            let end = (start + BATCH).min(pkts.len()).min(results.len());
            let mut ok = [true; BATCH];
            for (i, p) in pkts[start..end].iter().enumerate() {
                match Meta::parse(p.data(), crate::packet::HwChecksum::Good) {
                    Ok(m) => metas[i] = m,
                    Err(_) => ok[i] = false,
                }
            }
            self.encap_burst_numbered(&mut pkts[start..end], &metas[..end - start], &mut results[start..end]);
            for (r, ok) in results[start..end].iter_mut().zip(ok) {
                if !ok {
                    *r = Err(EspError::BadInner);
                }
            }
            start = end;
        }
    }

    /// Encapsulate a burst whose records ingress already made
    /// (`metas[i]` describes `pkts[i]`): no packet is parsed again.
    pub fn encap_burst_meta<B: PacketBuf>(&self, pkts: &mut [B], metas: &[Meta], results: &mut [Result<(), EspError>]) {
        self.encap_burst_numbered(pkts, metas, results);
    }

    /// [`Self::encap_burst_meta`], returning the first sequence number used (0 if none).
    fn encap_burst_numbered<B: PacketBuf>(
        &self,
        pkts: &mut [B],
        metas: &[Meta],
        results: &mut [Result<(), EspError>],
    ) -> u64 {
        let n = pkts.len().min(results.len()).min(metas.len());
        let admitted = self.usage.admit(&self.lifetime, metas[..n].iter().map(|m| u64::from(m.total_len)));
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
            self.encap_batch(
                &mut pkts[start..end],
                &metas[start..end],
                block.first + start as u64,
                &mut results[start..end],
            );
            start = end;
        }
        block.first
    }

    /// Encapsulate one packet (a burst of one); returns its sequence number.
    pub fn encap<B: PacketBuf>(&self, pkt: &mut B) -> Result<u64, EspError> {
        let meta = Meta::parse(pkt.data(), crate::packet::HwChecksum::Good).map_err(|_| EspError::BadInner)?;
        let mut r = [Ok(())];
        let first = self.encap_burst_numbered(std::slice::from_mut(pkt), &[meta], &mut r);
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
    /// trailers one by one, each packet's sealing slice collected in the
    /// same pass, then one call that seals them all. When every packet was
    /// prepared (the common case) the transform's results are the packets'
    /// in order; otherwise `idx` maps them back.
    fn encap_batch<B: PacketBuf>(
        &self,
        pkts: &mut [B],
        metas: &[Meta],
        first: u64,
        results: &mut [Result<(), EspError>],
    ) {
        let mut bufs: [&mut [u8]; BATCH] = std::array::from_fn(|_| &mut [][..]);
        let mut his = [0u32; BATCH];
        let mut idx = [0u8; BATCH];
        let mut offs = [0u16; BATCH];
        let mut k = 0;
        for (i, (p, m)) in pkts.iter_mut().zip(metas).enumerate().take(BATCH) {
            let seq = first + i as u64;
            match self.encap_prepare(p, seq, m) {
                Ok((off, esp)) => {
                    bufs[k] = esp;
                    his[k] = (seq >> 32) as u32;
                    idx[k] = i as u8;
                    offs[k] = off as u16;
                    k += 1;
                }
                Err(e) => results[i] = Err(e),
            }
        }
        let mut res = [Ok(()); BATCH];
        self.transform.seal_burst(&mut bufs[..k], self.esn.then_some(&his[..k]), &mut res[..k]);
        if k == pkts.len().min(BATCH) {
            for (r, c) in results.iter_mut().zip(&res[..k]) {
                *r = c.map_err(EspError::from);
            }
        } else {
            for (&i, c) in idx[..k].iter().zip(&res[..k]) {
                results[usize::from(i)] = c.map_err(EspError::from);
            }
        }
        // ESP in UDP over IPv6: the checksum covers the sealed payload.
        if self.encap.is_some() {
            for j in 0..k {
                let (i, esp_off) = (usize::from(idx[j]), usize::from(offs[j]));
                if results[i].is_ok() && ip::version(pkts[i].data()) == Some(6) {
                    natt::set_udp_checksum_v6(pkts[i].data_mut(), esp_off - natt::UDP_HDR_LEN);
                }
            }
        }
    }

    /// Everything but the crypto: headers, IV, padding, trailer, from the
    /// inner packet's record (no parse). Returns the offset of the ESP
    /// header and the packet from there to the end of the ICV (what the
    /// crypto call seals; handed back so that it is not looked up again).
    #[inline]
    fn encap_prepare<'p, B: PacketBuf>(
        &self,
        pkt: &'p mut B,
        seq: u64,
        inner: &Meta,
    ) -> Result<(usize, &'p mut [u8]), EspError> {
        // The buffer holds at least the IP packet (link-layer padding beyond
        // its length goes when ESP reshapes the buffer).
        if pkt.len() < usize::from(inner.total_len) {
            return Err(EspError::BadInner);
        }
        match self.mode {
            Mode::Tunnel { local, .. } => self.encap_tunnel(pkt, seq, local.is_ipv4(), inner),
            Mode::Transport => self.encap_transport(pkt, seq, inner),
        }
    }

    fn encap_tunnel<'p, B: PacketBuf>(
        &self,
        pkt: &'p mut B,
        seq: u64,
        outer_v4: bool,
        inner: &Meta,
    ) -> Result<(usize, &'p mut [u8]), EspError> {
        let f = &self.framing;
        let inner_len = usize::from(inner.total_len);
        let next_header = if inner.is_v6() { proto::IPV6 } else { proto::IPV4 };
        let ip_len = f.outer_ip;
        // ESP starts after the outer IP header and, for NAT-T, a UDP header.
        let outer_len = ip_len + f.udp;
        let pad = pad_len(inner_len, f.align);
        let head = f.head();
        let tail = pad + 2 + f.icv;
        let total = head + inner_len + tail;
        grow(pkt, head, total, outer_v4)?;
        let buf = pkt.data_mut();
        // ESP header, IV, trailer.
        self.write_esp(&mut buf[outer_len..], seq, inner_len, pad, next_header)?;
        if let Some(e) = self.encap {
            natt::write_udp_header(&mut buf[ip_len..], e, total - ip_len);
        }
        // Outer header: DSCP copied, ECN copied (RFC 6040 normal mode).
        match &self.outer {
            Outer::V4(t) => {
                let df = match self.df {
                    DfPolicy::Copy => inner.df,
                    DfPolicy::Set => true,
                    DfPolicy::Clear => false,
                };
                // Identification: the low bits of the sequence number are unique per SA.
                t.emit(buf, inner.tos, total as u16, seq as u16, df);
            }
            Outer::V6(r) => Ipv6Repr { traffic_class: inner.tos, payload_len: total - IPV6_HDR_LEN, ..*r }.emit(buf),
            Outer::None => return Err(EspError::BadInner), // tunnel SAs always have one
        }
        Ok((outer_len, &mut buf[outer_len..]))
    }

    fn encap_transport<'p, B: PacketBuf>(
        &self,
        pkt: &'p mut B,
        seq: u64,
        inner: &Meta,
    ) -> Result<(usize, &'p mut [u8]), EspError> {
        if inner.is_fragment() {
            // RFC 4303 §3.3: transport mode never applies to fragments.
            return Err(EspError::Fragment);
        }
        let f = &self.framing;
        let (hdr_len, total_len, nh_field, v4) =
            (inner.header_len(), usize::from(inner.total_len), usize::from(inner.nh_field), !inner.is_v6());
        let payload_len = total_len - hdr_len;
        let pad = pad_len(payload_len, f.align);
        let udp = f.udp;
        let head = f.head();
        let tail = pad + 2 + f.icv;
        let total = total_len + head + tail;
        grow(pkt, head, total, v4)?;
        let buf = pkt.data_mut();
        // Move the IP header (and IPv6 extension headers) to the new front.
        buf.copy_within(head..head + hdr_len, 0);
        self.write_esp(&mut buf[hdr_len + udp..], seq, payload_len, pad, inner.key.proto)?;
        if let Some(e) = self.encap {
            buf[nh_field] = proto::UDP;
            natt::write_udp_header(&mut buf[hdr_len..], e, total - hdr_len);
        } else {
            buf[nh_field] = proto::ESP;
        }
        if v4 {
            buf[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip::ipv4_set_checksum(&mut buf[..hdr_len]);
        } else {
            buf[4..6].copy_from_slice(&((total - IPV6_HDR_LEN) as u16).to_be_bytes());
        }
        Ok((hdr_len + udp, &mut buf[hdr_len + udp..]))
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
        let iv_len = self.framing.iv;
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
}

/// Make room for ESP: `head` bytes in front and the packet `total` bytes
/// long from there (trailer behind, link padding gone), `total` being what
/// its IP length field must hold. One reshape of the buffer, checked once.
#[inline]
fn grow<B: PacketBuf>(pkt: &mut B, head: usize, total: usize, v4: bool) -> Result<(), EspError> {
    if total > usize::from(u16::MAX) + if v4 { 0 } else { IPV6_HDR_LEN } {
        return Err(EspError::TooBig);
    }
    pkt.reframe(head, total).map_err(|_| EspError::NoRoom)
}
