//! ECN at tunnel decapsulation (RFC 6040 §4.2): fold the outer ECN field into
//! the inner header, dropping the combinations the RFC forbids.

use super::EspError;
use crate::packet::ip;

/// Fold the outer ECN (`outer_tos & 3`) into `inner` (an IPv4 or IPv6
/// header, `version` 4 or 6, whose TOS / traffic class is `tos`, as its
/// record holds it); the IPv4 checksum is updated incrementally. Returns
/// the inner TOS / traffic class as it now is. The header is only written
/// when the ECN field changes (rare): the common case reads nothing.
pub(super) fn decap(inner: &mut [u8], version: u8, tos: u8, outer_tos: u8) -> Result<u8, EspError> {
    const CE: u8 = 3;
    const ECT1: u8 = 1;
    let outer = outer_tos & 3;
    let inner_ecn = tos & 3;
    let new_ecn = match (inner_ecn, outer) {
        (0, CE) => return Err(EspError::EcnDrop),
        (0, _) => 0,
        (_, CE) => CE,
        (2, ECT1) => ECT1,
        (e, _) => e,
    };
    if new_ecn != inner_ecn {
        let tos = (tos & !3) | new_ecn;
        if version == 4 {
            let old = u16::from_be_bytes([inner[0], inner[1]]);
            inner[1] = tos;
            let new = u16::from_be_bytes([inner[0], inner[1]]);
            let c = ip::checksum_adjust(u16::from_be_bytes([inner[10], inner[11]]), old, new);
            inner[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            ip::ipv6_set_traffic_class(inner, tos);
        }
        return Ok(tos);
    }
    Ok(tos)
}
