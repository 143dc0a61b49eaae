//! Packet buffers and header views.
pub mod buf;

pub use buf::{BufError, PacketBuf, VecBuf};
