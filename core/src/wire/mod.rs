//! Checked header views, in the shape of smoltcp's `wire`: a view is made
//! with `new_checked`, which validates every length the accessors rely on,
//! so no accessor can panic or read past the packet; a `Repr` is the parsed
//! meaning of a header and `emit`s it back for writers.
//!
//! Ingress builds one [`crate::packet::Meta`] record per packet from these
//! views; later stages read the record instead of parsing again.

pub mod arp;
pub mod esp;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod nd;

pub use esp::EspHeader;
pub use ethernet::{EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};
pub use icmp::IcmpHeader;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use l4::L4Ports;

use thiserror::Error;

/// Why a header view could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// Shorter than the header (or than a length field says).
    #[error("truncated")]
    Truncated,
    /// A field holds a value the protocol does not allow (version, IHL, lengths).
    #[error("malformed")]
    Malformed,
}
