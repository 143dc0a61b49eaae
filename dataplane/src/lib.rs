//! espgw's data plane: packet logic over plain buffers, plus the one module
//! (`dpdk`) that talks to DPDK through FFI.
//!
//! `unsafe` is denied everywhere but `dpdk`, which documents every use.
#![deny(unsafe_code)]

pub mod clock;
pub mod crypto;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod drops;
pub mod esp;
pub mod mtu;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod policy;
pub mod route;
pub mod stats;
pub mod worker;
