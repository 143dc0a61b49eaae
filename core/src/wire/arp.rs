//! ARP for Ethernet/IPv4 (RFC 826): a checked parse (every length looked at
//! before use; anything but Ethernet/IPv4 hardware/protocol types refused)
//! and a writer.

use std::net::Ipv4Addr;

use super::ETHERTYPE_ARP;
use crate::packet::PacketBuf;

/// The ARP body's length for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;
/// Opcodes.
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// What an ARP packet (after the Ethernet header) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Parse an Ethernet/IPv4 ARP body.
pub fn parse_arp(body: &[u8]) -> Option<Arp> {
    let b = body.get(..ARP_LEN)?;
    if b[0..2] != [0, 1] || b[2..4] != [8, 0] || b[4] != 6 || b[5] != 4 {
        return None;
    }
    Some(Arp {
        op: u16::from_be_bytes([b[6], b[7]]),
        sender_mac: b[8..14].try_into().ok()?,
        sender_ip: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
        target_ip: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
    })
}

/// Write a whole ARP frame (Ethernet header included) into `out`.
pub fn build_arp<B: PacketBuf>(
    out: &mut B,
    op: u16,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> Option<()> {
    out.set_len(14 + ARP_LEN).ok()?;
    let d = out.data_mut();
    d[..6].copy_from_slice(&dst_mac);
    d[6..12].copy_from_slice(&src_mac);
    d[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut d[14..];
    a[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&src_mac);
    a[14..18].copy_from_slice(&sender_ip.octets());
    a[18..24].copy_from_slice(&target_mac);
    a[24..28].copy_from_slice(&target_ip.octets());
    Some(())
}
