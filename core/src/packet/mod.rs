//! Packet buffers and header helpers.
pub mod buf;
pub mod ip;
pub mod meta;

pub use buf::{BufError, HwChecksum, PacketBuf, VecBuf};
pub use meta::{Frag, Meta};
