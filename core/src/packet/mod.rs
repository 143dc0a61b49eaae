//! Packet buffers and header helpers.
pub mod buf;
pub mod ip;

pub use buf::{BufError, HwChecksum, PacketBuf, VecBuf};
