//! The ESP header (RFC 4303 §2): SPI and sequence number.

use super::WireError;

pub const HEADER_LEN: usize = 8;

/// A view of the 8-byte ESP header at the front of `buf`.
#[derive(Debug, Clone, Copy)]
pub struct EspHeader<'a>(&'a [u8]);

impl<'a> EspHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EspHeader(buf))
    }
    pub fn spi(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
    /// The low 32 bits of the sequence number (the high half is never sent).
    pub fn seq_lo(&self) -> u32 {
        u32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }
}
