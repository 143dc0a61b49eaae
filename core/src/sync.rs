//! The atomics of the lock-free pieces shared by workers (the outbound
//! sequence counter and the replay window): std's, or loom's when built with
//! `--cfg espgw_loom` so that `make loom` can check every interleaving of
//! their models (`core/tests/loom.rs`).

#[cfg(espgw_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(espgw_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
