//! espgw's packet logic, on plain buffers: checked header views, ESP,
//! eroutes and SAs, MTU handling, the pipeline, counters. No DPDK and no
//! `unsafe` here (the DPDK crate moves mbufs in and out); everything is
//! tested on `Vec`-backed buffers with time passed in.
#![forbid(unsafe_code)]

pub mod clock;
pub mod crypto;
pub mod drops;
pub mod esp;
#[cfg(any(test, feature = "lab"))]
pub mod lab;
pub mod mtu;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod policy;
pub mod route;
pub mod stats;
mod sync;
#[cfg(test)]
mod test_rng;
pub mod wire;
