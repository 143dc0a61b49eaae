//! TCP MSS clamping: lower the MSS option of SYN and SYN-ACK segments so that
//! TCP never sends segments that would not fit the tunnel — the practical
//! cure for the whole PMTU problem. The checksum is updated incrementally.

use crate::packet::ip::{self, proto};
use crate::packet::{Frag, Meta};

/// Clamp the MSS of a TCP SYN in `pkt` (IPv4 or IPv6, starting at the IP
/// header, described by `m`) to `max_mss`. Returns the old MSS when it was
/// lowered.
pub fn clamp_mss(pkt: &mut [u8], m: &Meta, max_mss: u16) -> Option<u16> {
    if m.key.proto != proto::TCP || m.frag == Frag::Later {
        return None;
    }
    let l4 = m.header_len();
    let tcp = pkt.get_mut(l4..)?;
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return None; // not a SYN
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return None;
    }
    let mut i = 20;
    while i < doff {
        match tcp[i] {
            0 => return None,
            1 => i += 1,
            2 => {
                if tcp.get(i + 1) != Some(&4) || i + 4 > doff {
                    return None;
                }
                let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                if old <= max_mss {
                    return None;
                }
                tcp[i + 2..i + 4].copy_from_slice(&max_mss.to_be_bytes());
                // The MSS value sits at an even offset within the options when
                // aligned as usual; handle the odd case by adjusting both words.
                let c = u16::from_be_bytes([tcp[16], tcp[17]]);
                let c = if (i + 2) % 2 == 0 {
                    ip::checksum_adjust(c, old, max_mss)
                } else {
                    let c = ip::checksum_adjust(
                        c,
                        u16::from_be_bytes([tcp[i + 1], (old >> 8) as u8]),
                        u16::from_be_bytes([tcp[i + 1], (max_mss >> 8) as u8]),
                    );
                    ip::checksum_adjust(
                        c,
                        u16::from_be_bytes([old as u8, tcp[i + 4]]),
                        u16::from_be_bytes([max_mss as u8, tcp[i + 4]]),
                    )
                };
                tcp[16..18].copy_from_slice(&c.to_be_bytes());
                return Some(old);
            }
            _ => {
                let l = usize::from(*tcp.get(i + 1)?);
                if l < 2 {
                    return None;
                }
                i += l;
            }
        }
    }
    None
}

/// The MSS that makes a TCP segment fit `inner_mtu` (IP and TCP headers without options).
pub fn mss_for(inner_mtu: usize, v6: bool) -> u16 {
    let hdrs = if v6 { 40 + 20 } else { 20 + 20 };
    inner_mtu.saturating_sub(hdrs).min(usize::from(u16::MAX)) as u16
}
