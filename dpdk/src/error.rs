//! Errors from DPDK calls, with DPDK's own reason text.

use std::ffi::CStr;

use dpdk_sys as sys;
use thiserror::Error;

/// Errno values DPDK returns that espgw explains (Linux numbering).
pub mod errno {
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const ENODEV: i32 = 19;
    pub const ENOSPC: i32 = 28;
    pub const ENOTSUP: i32 = 95;
}

/// Errors from DPDK calls.
#[derive(Debug, Error)]
pub enum DpdkError {
    /// `rte_eal_init` failed (bad EAL argument, unknown vdev driver, ...).
    #[error("DPDK EAL initialisation failed: {0}")]
    EalInit(String),
    /// EAL can only be initialised once per process.
    #[error("DPDK EAL is already initialised in this process")]
    EalAlreadyInit,
    /// An argument contained a NUL byte.
    #[error("EAL argument contains a NUL byte: {0:?}")]
    BadArg(String),
    /// No ethdev port with that device name exists.
    #[error("no DPDK port named '{0}' (is the device given to EAL, e.g. --vdev or -a?)")]
    NoSuchPort(String),
    /// A mempool could not be created.
    #[error("cannot create mempool '{name}' with {count} mbufs: {reason}")]
    Mempool { name: String, count: u32, reason: String },
    /// A port operation failed.
    #[error("port {port} ({name}): {op} failed: {reason}")]
    Port { port: u16, name: String, op: &'static str, reason: String },
    /// A queue handle is already in use elsewhere (each queue has one owner).
    #[error("port {port} {kind} queue {queue} is already taken")]
    QueueTaken { port: u16, kind: &'static str, queue: u16 },
    /// Work could not be launched on an EAL lcore.
    #[error("cannot launch work on lcore {lcore}: {reason}")]
    Launch { lcore: u32, reason: String },
    /// A telemetry command could not be registered.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// Packet capture (rte_pdump) could not be set up.
    #[error("packet capture (rte_pdump_init) unavailable: {0}")]
    Pdump(String),
    /// A worker panicked: a bug, reported as one.
    #[error("worker on lcore {lcore} panicked: {message}")]
    WorkerPanicked { lcore: u32, message: String },
}

/// Text of a DPDK errno (positive or negative).
pub fn strerror(errnum: i32) -> String {
    let errnum = errnum.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    let s = unsafe { CStr::from_ptr(sys::rte_strerror(errnum)) };
    format!("{} (errno {errnum})", s.to_string_lossy())
}

/// The calling thread's `rte_errno`.
pub fn last_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    unsafe { sys::espgw_errno() }
}

/// Text of the current `rte_errno`.
pub fn last_error() -> String {
    strerror(last_errno())
}
