//! The path MTU an outbound SA learned from ICMP reports (RFC 4301 §8.2),
//! with ageing (RFC 1191 §6.3). Two atomics: any worker may read or lower it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What an ICMP "too big" report did to an SA's path MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmtuUpdate {
    /// The path MTU went down to this value.
    Lowered(u16),
    /// Not lower than what we already use: ignored.
    NotLower,
}

/// A learned path MTU and when it ages out.
#[derive(Debug, Default)]
pub struct PathMtu {
    /// 0 = none learned.
    mtu: AtomicU32,
    /// When the learned value is forgotten (ms, the caller's clock).
    expires_ms: AtomicU64,
}

impl PathMtu {
    /// The learned path MTU, if one is in force at `now_ms`.
    #[inline]
    pub fn get(&self, now_ms: u64) -> Option<u16> {
        let m = self.mtu.load(Ordering::Relaxed);
        if m == 0 || now_ms >= self.expires_ms.load(Ordering::Relaxed) {
            None
        } else {
            Some(m as u16)
        }
    }

    /// A report said `mtu`: lower the path MTU (never below `floor`), to age
    /// out after `ageing_ms`. A report that would raise it is ignored
    /// (RFC 1191 §6, RFC 8201 §5.4).
    pub fn lower(&self, mtu: u16, floor: u16, current_limit: u16, now_ms: u64, ageing_ms: u64) -> PmtuUpdate {
        let mtu = mtu.max(floor);
        let current = self.get(now_ms).unwrap_or(current_limit).min(current_limit);
        if mtu >= current {
            return PmtuUpdate::NotLower;
        }
        self.mtu.store(u32::from(mtu), Ordering::Relaxed);
        self.expires_ms.store(now_ms.saturating_add(ageing_ms), Ordering::Relaxed);
        PmtuUpdate::Lowered(mtu)
    }
}
