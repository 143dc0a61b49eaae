//! Inbound ESP: outer header and replay checks packet by packet, one
//! verify-and-decrypt call per batch, then trailers, the replay window and
//! the lifetime — charged only for packets that authenticated, so forged
//! packets can neither move the window nor use up an SA.
//!
//! ESN (RFC 4303 Appendix A): the high half of each packet's sequence number
//! is inferred from the window *as that packet would find it*, i.e. with the
//! earlier packets of its burst accepted. A batch therefore ends early when a
//! packet's inference would differ between the window before the batch and
//! the window after the earlier packets: the earlier ones are verified and
//! recorded first, and the packet starts the next batch against the updated
//! (authenticated) window. Forged packets cannot steer the inference of
//! genuine ones; at worst they split a batch.

use arrayvec::ArrayVec;

use super::replay::{infer_esn_high, ReplayError};
use super::{natt, EspError, Mode, Sa, BATCH};
use crate::crypto::ESP_HDR_LEN;
use crate::drops::DropReason;
use crate::packet::ip::{self, proto, IPV4_HDR_LEN, IPV6_HDR_LEN};
use crate::packet::{HwChecksum, Meta, PacketBuf};

impl Sa {
    /// Decapsulate one inbound ESP packet in place (a burst of one).
    pub fn decap<B: PacketBuf>(&self, pkt: &mut B) -> Result<Decapped, EspError> {
        let mut r = [Err(EspError::Truncated)];
        self.decap_burst(std::slice::from_mut(pkt), &mut r);
        r[0]
    }

    /// Decapsulate a burst of this SA's packets. On success `pkts[i]` holds
    /// the inner packet (tunnel) or the restored packet (transport). The
    /// outer headers are parsed here; the pipeline, which parsed them at
    /// ingress, calls [`Self::decap_burst_outer`] instead.
    pub fn decap_burst<B: PacketBuf>(&self, pkts: &mut [B], results: &mut [Result<Decapped, EspError>]) {
        let n = pkts.len().min(results.len());
        let mut start = 0;
        while start < n {
            let end = (start + BATCH).min(n);
            let mut outers = [Ok(OuterRecord::default()); BATCH];
            for (o, p) in outers.iter_mut().zip(&pkts[start..end]) {
                *o = outer_record(p.data());
            }
            start += self.decap_batch(&mut pkts[start..end], &outers[..end - start], &mut results[start..end]);
        }
    }

    /// [`Self::decap_burst`] for packets whose outer headers ingress parsed
    /// (`outers[i]` describes `pkts[i]`, trimmed to its IP length): the
    /// outer header is not parsed again. Every slot of `results[..n]` is
    /// written: an error, or a record written whole, so slots may be reused
    /// from an earlier burst whatever they hold.
    pub fn decap_burst_outer<B: PacketBuf>(
        &self,
        pkts: &mut [B],
        outers: &[OuterRecord],
        results: &mut [Result<Decapped, EspError>],
    ) {
        let n = pkts.len().min(results.len()).min(outers.len());
        let mut start = 0;
        while start < n {
            let end = (start + BATCH).min(n);
            start += self.decap_batch(&mut pkts[start..end], &outers[start..end], &mut results[start..end]);
        }
    }

    /// Up to [`BATCH`] packets: checks one by one, then one call that
    /// verifies and decrypts them all, then trailers, window and lifetime.
    /// Returns how many packets it took (fewer than given when an ESN
    /// inference must wait for the window to move; never 0).
    /// `outers[i]` is `pkts[i]`'s outer record (ingress's) or, for
    /// [`Self::decap_burst`], the reason it has none.
    fn decap_batch<B: PacketBuf, O: OuterOf>(
        &self,
        pkts: &mut [B],
        outers: &[O],
        results: &mut [Result<Decapped, EspError>],
    ) -> usize {
        // The packets that passed the checks: their index and record, and
        // their slices for the crypto call, collected in the same pass.
        let mut pres: ArrayVec<(u8, DecapPre), BATCH> = ArrayVec::new();
        let mut bufs: [&mut [u8]; BATCH] = std::array::from_fn(|_| &mut [][..]);
        let mut his = [0u32; BATCH];
        let top = self.replay.top();
        // The window's top with the batch's earlier packets counted as accepted.
        let mut provisional = top;
        let mut taken = 0;
        for (i, (p, o)) in pkts.iter_mut().zip(outers).enumerate().take(BATCH) {
            let outer = match o.outer().and_then(|o| self.parse_outer(p, o)) {
                Ok(o) => o,
                Err(e) => {
                    results[i] = Err(e);
                    taken = i + 1;
                    continue;
                }
            };
            let w = self.replay.size() as u32;
            if self.esn && i > 0 && infer_esn_high(top, w, outer.seq_lo) != infer_esn_high(provisional, w, outer.seq_lo)
            {
                break;
            }
            taken = i + 1;
            match self.decap_check(outer, top) {
                Ok(x) => {
                    provisional = provisional.max(x.seq);
                    let k = pres.len();
                    bufs[k] = p.data_mut().get_mut(usize::from(x.esp_off)..).unwrap_or_default();
                    his[k] = (x.seq >> 32) as u32;
                    pres.push((i as u8, x));
                }
                Err(e) => results[i] = Err(e),
            }
        }
        let k = pres.len();
        let mut res = [Ok(()); BATCH];
        self.transform.open_burst(&mut bufs[..k], self.esn.then_some(&his[..k]), &mut res[..k]);
        for ((i, x), c) in pres.iter().zip(&res[..k]) {
            let i = usize::from(*i);
            match c {
                Err(e) => results[i] = Err((*e).into()),
                Ok(()) => {
                    // The record is written into its slot. A slot that is
                    // already `Ok` (the pipeline passes such) is reused as
                    // it is: building a default record on the stack and
                    // copying it in stalled on store forwarding (12 % of
                    // the inbound group's cycles in perf).
                    if results[i].is_err() {
                        results[i] = Ok(Decapped::default());
                    }
                    if let Ok(slot) = &mut results[i] {
                        if let Err(e) = self.decap_post(&mut pkts[i], x, slot) {
                            results[i] = Err(e);
                        }
                    }
                }
            }
        }
        self.charge_inbound(&mut results[..taken]);
        taken
    }

    /// Charge the authenticated packets of a batch to the lifetime, in
    /// order; those past a hard limit are refused.
    fn charge_inbound(&self, results: &mut [Result<Decapped, EspError>]) {
        let lens = results.iter().filter_map(|r| r.as_ref().ok()).map(|d| d.payload_len as u64);
        let mut admitted = self.usage.admit(&self.lifetime, lens);
        for r in results.iter_mut() {
            if r.is_ok() {
                if admitted == 0 {
                    *r = Err(EspError::HardLifetime);
                } else {
                    admitted -= 1;
                }
            }
        }
    }

    /// The outer header, from its record: where ESP starts, SPI and the low
    /// sequence half.
    #[inline]
    fn parse_outer<B: PacketBuf>(&self, pkt: &mut B, o: &OuterRecord) -> Result<Outer, EspError> {
        let f = &self.framing;
        let (iv_len, icv_len) = (f.iv, f.icv);
        if o.fragment {
            return Err(EspError::Fragment);
        }
        self.check_proto(o.proto)?;
        let (esp_off, total_len, nh_field, v4, outer_tos) =
            (usize::from(o.l4_off), usize::from(o.total_len), usize::from(o.nh_field), !o.v6, o.tos);
        pkt.trim(pkt.len().checked_sub(total_len).ok_or(EspError::BadLength)?).map_err(|_| EspError::BadLength)?;
        // ESP in UDP: the UDP header must describe the rest of the packet and
        // arrive on the SA's port.
        let udp = f.udp;
        if let Some(e) = self.encap {
            let d = pkt.data();
            let h = d.get(esp_off..esp_off + natt::UDP_HDR_LEN).ok_or(EspError::Truncated)?;
            if usize::from(u16::from_be_bytes([h[4], h[5]])) != total_len - esp_off {
                return Err(EspError::BadLength);
            }
            if u16::from_be_bytes([h[2], h[3]]) != e.local_port {
                return Err(EspError::EncapMismatch);
            }
        }
        let esp_off = esp_off + udp;
        let esp_len = total_len.checked_sub(esp_off).ok_or(EspError::Truncated)?;
        // Header + IV + at least one alignment unit of ciphertext (which holds
        // the 2-byte trailer) + ICV.
        let min_ct = f.align.max(4);
        if esp_len < ESP_HDR_LEN + iv_len + min_ct + icv_len {
            return Err(EspError::Truncated);
        }
        // One bounds check for SPI and sequence number (the length was checked above).
        let e: &[u8; 8] = pkt.data().get(esp_off..).and_then(|e| e.first_chunk()).ok_or(EspError::Truncated)?;
        let spi = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
        if spi != self.spi {
            return Err(EspError::WrongSpi);
        }
        let seq_lo = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
        Ok(Outer { esp_off, total_len, nh_field, v4, outer_tos, seq_lo })
    }

    /// The outer protocol must be what the SA expects: ESP, or UDP for an
    /// SA that encapsulates (RFC 3948); the other of the two is a mismatch.
    #[inline]
    fn check_proto(&self, p: u8) -> Result<(), EspError> {
        let want = if self.encap.is_some() { proto::UDP } else { proto::ESP };
        match p {
            _ if p == want => Ok(()),
            proto::ESP | proto::UDP => Err(EspError::EncapMismatch),
            _ => Err(EspError::NotEsp),
        }
    }

    /// Before decryption: the full sequence number against the window as it
    /// stood at `top`, and the hard lifetime.
    #[inline]
    fn decap_check(&self, o: Outer, top: u64) -> Result<DecapPre, EspError> {
        let seq_hi = if self.esn { infer_esn_high(top, self.replay.size() as u32, o.seq_lo) } else { 0 };
        let seq = (u64::from(seq_hi) << 32) | u64::from(o.seq_lo);
        if self.anti_replay {
            self.replay.check(seq).map_err(replay_err)?;
        }
        if self.usage.hard_expired() {
            return Err(EspError::HardLifetime);
        }
        // Offsets within the packet, whose record holds its length in 16 bits.
        Ok(DecapPre {
            esp_off: o.esp_off as u16,
            total_len: o.total_len as u16,
            nh_field: o.nh_field as u16,
            v4: o.v4,
            outer_tos: o.outer_tos,
            seq,
        })
    }

    /// Everything after a verified decryption: replay update, trailer, inner packet.
    #[inline]
    fn decap_post<B: PacketBuf>(&self, pkt: &mut B, pre: &DecapPre, out: &mut Decapped) -> Result<(), EspError> {
        let (iv_len, icv_len) = (self.framing.iv, self.framing.icv);
        let DecapPre { v4, outer_tos, seq, .. } = *pre;
        let (esp_off, total_len, nh_field) =
            (usize::from(pre.esp_off), usize::from(pre.total_len), usize::from(pre.nh_field));
        if self.anti_replay {
            self.replay.update(seq).map_err(replay_err)?;
        }

        // Trailer.
        let ct_start = esp_off + ESP_HDR_LEN + iv_len;
        let ct_end = total_len - icv_len;
        let (pad, next_header) = {
            let d = pkt.data();
            (usize::from(d[ct_end - 2]), d[ct_end - 1])
        };
        if pad + 2 > ct_end - ct_start {
            return Err(EspError::BadPadLength);
        }
        let payload_end = ct_end - 2 - pad;
        if pkt.data()[payload_end..payload_end + pad].iter().enumerate().any(|(i, &b)| b != (i + 1) as u8) {
            return Err(EspError::BadPadding);
        }
        let payload_len = payload_end - ct_start;

        match self.mode {
            Mode::Tunnel { .. } => {
                let inner_v = match next_header {
                    proto::IPV4 => 4,
                    proto::IPV6 => 6,
                    proto::NONE => return Err(EspError::Dummy),
                    _ => return Err(EspError::BadNextHeader),
                };
                pkt.narrow(ct_start, payload_len).map_err(|_| EspError::BadLength)?;
                let d = pkt.data_mut();
                // The inner packet is an ingress of its own: checked once, here.
                let m = &mut out.inner;
                Meta::parse_into(d, HwChecksum::Unknown, m).map_err(|e| match e {
                    DropReason::BadIpChecksum => EspError::BadInnerChecksum,
                    _ => EspError::BadInner,
                })?;
                if (m.is_v6() != (inner_v == 6)) || usize::from(m.total_len) != payload_len {
                    return Err(EspError::BadInner);
                }
                m.tos = super::ecn::decap(d, inner_v, m.tos, outer_tos)?;
            }
            Mode::Transport => {
                if next_header == proto::NONE {
                    return Err(EspError::Dummy);
                }
                // The IP header (without the UDP header of NAT-T) moves up
                // to meet the payload.
                let udp = natt::encap_len(self.encap);
                let hl = esp_off - udp;
                let shift = udp + ESP_HDR_LEN + iv_len;
                pkt.trim(total_len - payload_end).map_err(|_| EspError::BadLength)?;
                let d = pkt.data_mut();
                d.copy_within(0..hl, shift);
                pkt.adj(shift).map_err(|_| EspError::BadLength)?;
                let d = pkt.data_mut();
                d[nh_field] = next_header;
                let new_total = hl + payload_len;
                if v4 {
                    d[2..4].copy_from_slice(&(new_total as u16).to_be_bytes());
                    ip::ipv4_set_checksum(&mut d[..hl]);
                } else {
                    d[4..6].copy_from_slice(&((new_total - IPV6_HDR_LEN) as u16).to_be_bytes());
                }
                // The restored header's checksum was just computed.
                Meta::parse_into(d, HwChecksum::Good, &mut out.inner).map_err(|_| EspError::BadInner)?;
                if udp != 0 {
                    // The peer's checksum covers addresses a NAT rewrote (RFC 3948 §3.1.2).
                    natt::fix_l4_checksum(d, &out.inner);
                }
            }
        }
        (out.seq, out.next_header, out.payload_len) = (seq, next_header, payload_len);
        Ok(())
    }
}

/// What decapsulation needs of an ESP packet's outer IP header, taken from
/// the record ingress made ([`OuterRecord::of`]): 10 bytes that an inbound
/// SA group collects per packet instead of the whole 64-byte record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OuterRecord {
    /// Where the header after IP starts (ESP, or UDP for NAT-T).
    l4_off: u16,
    total_len: u16,
    nh_field: u16,
    proto: u8,
    tos: u8,
    v6: bool,
    fragment: bool,
}

impl OuterRecord {
    #[inline]
    pub fn of(m: &Meta) -> OuterRecord {
        OuterRecord {
            l4_off: m.l4_off,
            total_len: m.total_len,
            nh_field: m.nh_field,
            proto: m.key.proto,
            tos: m.tos,
            v6: m.is_v6(),
            fragment: m.is_fragment(),
        }
    }
}

/// An outer record, or why a packet has none: what [`Sa::decap_batch`]
/// reads per packet (the pipeline's records are always there).
trait OuterOf {
    fn outer(&self) -> Result<&OuterRecord, EspError>;
}

impl OuterOf for OuterRecord {
    #[inline(always)]
    fn outer(&self) -> Result<&OuterRecord, EspError> {
        Ok(self)
    }
}

impl OuterOf for Result<OuterRecord, EspError> {
    fn outer(&self) -> Result<&OuterRecord, EspError> {
        self.as_ref().map_err(|e| *e)
    }
}

/// The outer header's record for [`Sa::decap_burst`] (no checksum check:
/// that is ingress's), with its failures as ESP errors.
fn outer_record(d: &[u8]) -> Result<OuterRecord, EspError> {
    Meta::parse(d, HwChecksum::Good).map(|m| OuterRecord::of(&m)).map_err(|r| match (r, ip::version(d)) {
        (DropReason::BadFragment, _) => EspError::Fragment,
        (_, Some(4)) if d.len() >= IPV4_HDR_LEN => EspError::BadLength,
        (_, Some(6)) if d.len() >= IPV6_HDR_LEN => EspError::BadLength,
        _ => EspError::Truncated,
    })
}

/// The outer header of an ESP packet.
#[derive(Debug, Clone, Copy)]
struct Outer {
    /// Where ESP starts (after the UDP header of NAT-T).
    esp_off: usize,
    total_len: usize,
    nh_field: usize,
    v4: bool,
    outer_tos: u8,
    seq_lo: u32,
}

/// What [`Sa::decap_check`] found, for the steps after decryption. Kept
/// per packet across the crypto call, so kept small (16 bytes).
#[derive(Debug, Clone, Copy)]
struct DecapPre {
    esp_off: u16,
    total_len: u16,
    nh_field: u16,
    v4: bool,
    outer_tos: u8,
    /// Full sequence number (its high half is the ESN the ICV covers).
    seq: u64,
}

/// What a successful decapsulation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decapped {
    /// Full (ESN-inferred) sequence number.
    pub seq: u64,
    /// The ESP next header (4/41 in tunnel mode, the upper protocol in transport).
    pub next_header: u8,
    /// Bytes of protected payload (what the lifetime counts).
    pub payload_len: usize,
    /// The record of the packet now in the buffer (checked like any ingress).
    pub inner: Meta,
}

fn replay_err(e: ReplayError) -> EspError {
    match e {
        ReplayError::TooOld => EspError::ReplayTooOld,
        ReplayError::Duplicate => EspError::ReplayDuplicate,
    }
}
