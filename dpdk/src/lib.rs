//! espgw's DPDK layer: it only moves mbufs. The packet logic is in
//! `espgw-core`; this crate wraps the EAL, pools, mbufs and port queues in
//! types that make misuse a compile error, runs the worker poll loop, and
//! brings the intel-ipsec-mb crypto backend.
//!
//! The walls, held by types (see `docs/DESIGN.md`):
//! - [`Eal`] is borrowed by every [`Mempool`]; a pool by every [`Mbuf`] and by
//!   the ports whose rings it fills: nothing outlives what it came from, and
//!   `rte_eal_cleanup` runs only when everything is gone.
//! - Each RX/TX queue has one handle ([`RxQueue`], [`TxQueue`]): `Send`,
//!   never `Sync`, borrowed mutably per burst.
//! - An [`Mbuf`] is exclusive (refcount 1), so writing its data is safe.
//! - Workers run on EAL lcores inside [`Eal::scope`], which joins them before
//!   anything they borrow can go away.
//!
//! Every `unsafe` block says why it is sound in a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod eal;
pub mod error;
pub mod ipsec_mb;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod telemetry;
pub mod worker;

pub use eal::{Eal, LcoreHandle, LcoreScope};
pub use error::DpdkError;
pub use mbuf::{Mbuf, MbufBatch};
pub use mempool::{Mempool, PoolAlloc};
pub use port::{LinkStatus, Port, PortCaps, PortSetup, PortStats, RxQueue, TxQueue};
