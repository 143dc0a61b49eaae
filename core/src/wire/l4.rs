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

/// Do packets of `protocol` carry ports selectors can match?
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, proto::TCP | proto::UDP | proto::SCTP)
}
