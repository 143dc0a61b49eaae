//! One monotonic millisecond clock for the whole process, so that times the
//! workers store (path MTU expiry) mean the same to the control thread.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process.
#[inline]
pub fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
