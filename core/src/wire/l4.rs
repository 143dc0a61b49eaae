//! The transport ports selectors match on (TCP, UDP, SCTP: the first four
//! bytes of each), and the TCP flags MSS clamping looks at.

use super::WireError;
use crate::packet::ip::proto;

/// A view of the first bytes of a TCP, UDP or SCTP header.
#[derive(Debug, Clone, Copy)]
pub struct L4Ports<'a>(&'a [u8]);

impl<'a> L4Ports<'a> {
    pub fn new_checked(l4: &'a [u8]) -> Result<Self, WireError> {
        if l4.len() < 4 {
            return Err(WireError::Truncated);
        }
        Ok(L4Ports(l4))
    }
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.0[2], self.0[3]])
    }
}

/// Do packets of `protocol` carry ports selectors can match? (One table
/// load: asked twice per inbound packet, outer and inner.)
#[inline]
pub fn has_ports(protocol: u8) -> bool {
    PORTED[usize::from(protocol)]
}

/// The protocols with ports, by number.
const PORTED: [bool; 256] = {
    let mut t = [false; 256];
    t[proto::TCP as usize] = true;
    t[proto::UDP as usize] = true;
    t[proto::SCTP as usize] = true;
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_tcp_udp_and_sctp_have_ports() {
        let ported: Vec<u8> = (0..=255u8).filter(|&p| has_ports(p)).collect();
        assert_eq!(ported, [proto::TCP, proto::UDP, proto::SCTP]);
    }
}
