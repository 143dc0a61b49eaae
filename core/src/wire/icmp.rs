//! ICMP and ICMPv6 message headers (RFC 792, RFC 4443): type, code and the
//! 4-byte "rest of header" (the MTU of a too-big report).

use super::WireError;

/// ICMP destination unreachable; code 4: fragmentation needed (RFC 1191).
pub const ICMP_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 Packet Too Big.
pub const ICMP6_PACKET_TOO_BIG: u8 = 2;
/// ICMP echo request / ICMPv6 echo request.
pub const ICMP_ECHO: u8 = 8;
pub const ICMP6_ECHO: u8 = 128;

/// A view of an ICMP or ICMPv6 message: at least its 8-byte header.
#[derive(Debug, Clone, Copy)]
pub struct IcmpHeader<'a>(&'a [u8]);

impl<'a> IcmpHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < 8 {
            return Err(WireError::Truncated);
        }
        Ok(IcmpHeader(buf))
    }
    pub fn msg_type(&self) -> u8 {
        self.0[0]
    }
    pub fn code(&self) -> u8 {
        self.0[1]
    }
    /// Next-hop MTU of an ICMPv4 need-frag (bytes 6..8).
    pub fn mtu_v4(&self) -> u16 {
        u16::from_be_bytes([self.0[6], self.0[7]])
    }
    /// MTU of an ICMPv6 Packet Too Big (bytes 4..8).
    pub fn mtu_v6(&self) -> u32 {
        u32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }
    /// What follows the header (the quoted packet of an error).
    pub fn body(&self) -> &'a [u8] {
        &self.0[8..]
    }
}
