//! Ethernet II frames.

use super::WireError;

/// Ethernet header length (no VLAN tag).
pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// A view of an Ethernet frame: at least the 14-byte header.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < ETH_HLEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame(buf))
    }
    pub fn dst(&self) -> [u8; 6] {
        mac_at(self.0.as_ref(), 0)
    }
    pub fn src(&self) -> [u8; 6] {
        mac_at(self.0.as_ref(), 6)
    }
    pub fn ethertype(&self) -> u16 {
        let b = self.0.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }
    pub fn payload(&self) -> &[u8] {
        &self.0.as_ref()[ETH_HLEN..]
    }
}

/// Six bytes at `at` as one copy (a checked frame holds them).
#[inline]
fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0; 6];
    if let Some(s) = b.get(at..at + 6) {
        m.copy_from_slice(s);
    }
    m
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Write the header (the rest of the frame is the caller's).
    pub fn emit(&mut self, dst: [u8; 6], src: [u8; 6], ethertype: u16) {
        let b = self.0.as_mut();
        b[..6].copy_from_slice(&dst);
        b[6..12].copy_from_slice(&src);
        b[12..14].copy_from_slice(&ethertype.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(EthernetFrame::new_checked(&[0u8; 13][..]).err(), Some(WireError::Truncated));
        let mut b = [0u8; 20];
        EthernetFrame::new_checked(&mut b[..]).unwrap().emit([1; 6], [2; 6], ETHERTYPE_IPV6);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!((f.dst(), f.src(), f.ethertype(), f.payload().len()), ([1; 6], [2; 6], 0x86dd, 6));
    }
}
