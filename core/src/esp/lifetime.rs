//! SA lifetimes in packets and bytes (RFC 4301 §4.4.2.1): a soft limit
//! raises a flag (time to rekey), a hard limit stops the SA **exactly**: no
//! packet is processed that would take the SA past it.
//!
//! Time limits (seconds since the SA was added, and since its first packet,
//! as XFRM's `add_time` / `use_time`) are checked by whoever owns the clock
//! (the control thread, [`Lifetime::time_state`]) and applied with
//! [`Usage::expire_soft`] / [`Usage::expire`]; the data path only reads the
//! flags, so a time-expired SA stops at the next burst.
//!
//! Admission is per burst and lock-free: one `fetch_add` per counter for the
//! whole burst, then a prefix of the burst is admitted locally and the rest
//! is given back. Several workers may admit on one SA at once; none ever
//! admits past the limit (a concurrent overshoot only makes admission more
//! conservative for a moment).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Soft and hard limits; `None` = unlimited. Validated so that a soft limit
/// never exceeds its hard limit and no limit is 0 ([`Lifetime::validate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
    /// Seconds since the SA was added.
    pub soft_add_secs: Option<u64>,
    pub hard_add_secs: Option<u64>,
    /// Seconds since the SA's first packet.
    pub soft_use_secs: Option<u64>,
    pub hard_use_secs: Option<u64>,
}

/// Where an SA stands against its time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeState {
    pub soft: bool,
    pub hard: bool,
    /// Seconds until the hard time limit, if there is one.
    pub hard_left: Option<u64>,
}

impl Lifetime {
    /// The time limits against the SA's age and time since its first packet
    /// (`None`: not used yet).
    pub fn time_state(&self, age_secs: u64, used_secs: Option<u64>) -> TimeState {
        let past = |limit: Option<u64>, t: Option<u64>| matches!((limit, t), (Some(l), Some(t)) if t >= l);
        // A clock that has not started (no packet yet) leaves nothing running out.
        let left = |limit: Option<u64>, t: Option<u64>| Some(limit?.saturating_sub(t?));
        let hard_left = match (left(self.hard_add_secs, Some(age_secs)), left(self.hard_use_secs, used_secs)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        TimeState {
            soft: past(self.soft_add_secs, Some(age_secs)) || past(self.soft_use_secs, used_secs),
            hard: past(self.hard_add_secs, Some(age_secs)) || past(self.hard_use_secs, used_secs),
            hard_left,
        }
    }

    /// Why these limits make no sense, if they do not: a limit of 0, or a
    /// soft limit above its hard limit.
    pub fn validate(&self) -> Result<(), &'static str> {
        let all = [
            self.soft_bytes,
            self.hard_bytes,
            self.soft_packets,
            self.hard_packets,
            self.soft_add_secs,
            self.hard_add_secs,
            self.soft_use_secs,
            self.hard_use_secs,
        ];
        if all.contains(&Some(0)) {
            return Err("a lifetime limit of 0 would expire the SA before its first packet");
        }
        let over = |s: Option<u64>, h: Option<u64>| matches!((s, h), (Some(s), Some(h)) if s > h);
        if over(self.soft_bytes, self.hard_bytes) {
            return Err("soft_bytes is above hard_bytes");
        }
        if over(self.soft_packets, self.hard_packets) {
            return Err("soft_packets is above hard_packets");
        }
        if over(self.soft_add_secs, self.hard_add_secs) {
            return Err("soft_seconds is above hard_seconds");
        }
        if over(self.soft_use_secs, self.hard_use_secs) {
            return Err("soft_use_seconds is above hard_use_seconds");
        }
        Ok(())
    }

    fn has_hard(&self) -> bool {
        self.hard_bytes.is_some()
            || self.hard_packets.is_some()
            || self.hard_add_secs.is_some()
            || self.hard_use_secs.is_some()
    }
}

/// What an SA has carried, and whether it expired. Counters on cache lines
/// of their own: every worker using the SA writes them.
#[derive(Debug, Default)]
pub struct Usage {
    packets: CachePadded<AtomicU64>,
    bytes: CachePadded<AtomicU64>,
    soft_expired: AtomicBool,
    hard_expired: AtomicBool,
}

impl Usage {
    /// Counters starting where another SA's left off (a replace that keeps
    /// the key keeps its usage).
    pub fn resume(packets: u64, bytes: u64) -> Usage {
        let u = Usage::default();
        u.packets.store(packets, Ordering::Relaxed);
        u.bytes.store(bytes, Ordering::Relaxed);
        u
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn soft_expired(&self) -> bool {
        self.soft_expired.load(Ordering::Relaxed)
    }
    pub fn hard_expired(&self) -> bool {
        self.hard_expired.load(Ordering::Relaxed)
    }

    /// Mark the SA hard-expired (sequence space used up, a time limit, ...).
    pub fn expire(&self) {
        self.soft_expired.store(true, Ordering::Relaxed);
        self.hard_expired.store(true, Ordering::Relaxed);
    }

    /// Raise the soft flag (a soft time limit): time to rekey.
    pub fn expire_soft(&self) {
        self.soft_expired.store(true, Ordering::Relaxed);
    }

    /// Admit a burst of packets of `lens[i]` bytes, in order: returns how
    /// many of the first ones may be processed without passing a hard limit.
    /// Admitted packets are counted; the rest are not.
    #[inline]
    pub fn admit(&self, lt: &Lifetime, lens: impl Iterator<Item = u64> + Clone) -> usize {
        let n = lens.clone().count() as u64;
        if n == 0 {
            return 0;
        }
        let total: u64 = lens.clone().sum();
        if !lt.has_hard() {
            let p = self.packets.fetch_add(n, Ordering::Relaxed) + n;
            let b = self.bytes.fetch_add(total, Ordering::Relaxed) + total;
            self.raise_soft(lt, p, b);
            return n as usize;
        }
        if self.hard_expired() {
            return 0;
        }
        let p0 = self.packets.fetch_add(n, Ordering::Relaxed);
        let b0 = self.bytes.fetch_add(total, Ordering::Relaxed);
        // The longest prefix within both hard limits.
        let max_p = lt.hard_packets.map_or(n, |h| h.saturating_sub(p0).min(n));
        let (mut k, mut bytes) = (0u64, 0u64);
        for len in lens.take(max_p as usize) {
            if lt.hard_bytes.is_some_and(|h| b0 + bytes + len > h) {
                break;
            }
            bytes += len;
            k += 1;
        }
        if k < n {
            // Give back what was not admitted, so the counters say exactly
            // what was processed; the SA is done.
            self.packets.fetch_sub(n - k, Ordering::Relaxed);
            self.bytes.fetch_sub(total - bytes, Ordering::Relaxed);
            self.expire();
        }
        let (p, b) = (p0 + k, b0 + bytes);
        if lt.hard_packets.is_some_and(|h| p >= h) || lt.hard_bytes.is_some_and(|h| b >= h) {
            self.expire();
        }
        self.raise_soft(lt, p, b);
        k as usize
    }

    #[inline]
    fn raise_soft(&self, lt: &Lifetime, p: u64, b: u64) {
        if (lt.soft_packets.is_some_and(|s| p >= s) || lt.soft_bytes.is_some_and(|s| b >= s)) && !self.soft_expired() {
            self.soft_expired.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let lt = |sb, hb, sp, hp| Lifetime {
            soft_bytes: sb,
            hard_bytes: hb,
            soft_packets: sp,
            hard_packets: hp,
            ..Default::default()
        };
        assert!(lt(Some(10), Some(20), Some(1), Some(2)).validate().is_ok());
        assert!(lt(Some(10), Some(10), None, None).validate().is_ok(), "equal is fine");
        assert!(lt(Some(30), Some(20), None, None).validate().unwrap_err().contains("soft_bytes"));
        assert!(lt(None, None, Some(3), Some(2)).validate().unwrap_err().contains("soft_packets"));
        assert!(lt(None, Some(0), None, None).validate().unwrap_err().contains("0"));
        assert!(lt(None, None, Some(0), None).validate().is_err());
    }

    #[test]
    fn packets_stop_exactly_at_the_hard_limit() {
        let lt = Lifetime { hard_packets: Some(60), soft_packets: Some(50), ..Default::default() };
        let u = Usage::default();
        assert_eq!(u.admit(&lt, [100u64; 32].into_iter()), 32);
        assert!(!u.soft_expired());
        assert_eq!(u.admit(&lt, [100u64; 32].into_iter()), 28, "60 in all, not 64");
        assert!(u.soft_expired() && u.hard_expired());
        assert_eq!(u.admit(&lt, [100u64; 1].into_iter()), 0);
        assert_eq!(u.packets(), 60);
        assert_eq!(u.bytes(), 6000);
    }

    #[test]
    fn bytes_never_pass_the_hard_limit() {
        let lt = Lifetime { hard_bytes: Some(5000), ..Default::default() };
        let u = Usage::default();
        let lens = [436u64; 16]; // 6976 bytes offered
        let k = u.admit(&lt, lens.into_iter());
        assert_eq!(k, 11, "11 x 436 = 4796 <= 5000 < 12 x 436");
        assert_eq!(u.bytes(), 4796);
        assert!(u.hard_expired());
        assert_eq!(u.admit(&lt, [1u64].into_iter()), 0, "expired for good");
    }

    #[test]
    fn concurrent_admission_never_passes_the_limit() {
        let lt = Lifetime { hard_packets: Some(10_000), hard_bytes: Some(1_000_000), ..Default::default() };
        let u = std::sync::Arc::new(Usage::default());
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let u = u.clone();
                std::thread::spawn(move || {
                    let mut got = 0;
                    for i in 0..2000u64 {
                        got += u.admit(&lt, (0..((i + t) % 32 + 1)).map(|j| 50 + (j * 7 + t) % 90));
                    }
                    got
                })
            })
            .collect();
        let admitted: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(u.packets() <= 10_000 && u.bytes() <= 1_000_000);
        assert_eq!(u.packets(), admitted as u64, "the counters say exactly what was admitted");
        assert!(u.hard_expired());
    }

    #[test]
    fn time_limits_since_add_and_since_first_use() {
        let lt =
            Lifetime { soft_add_secs: Some(10), hard_add_secs: Some(20), hard_use_secs: Some(5), ..Default::default() };
        assert!(lt.validate().is_ok());
        assert_eq!(lt.time_state(3, None), TimeState { soft: false, hard: false, hard_left: Some(17) });
        assert_eq!(lt.time_state(12, None), TimeState { soft: true, hard: false, hard_left: Some(8) });
        assert_eq!(lt.time_state(12, Some(5)), TimeState { soft: true, hard: true, hard_left: Some(0) });
        assert!(lt.time_state(20, None).hard);
        let bad = Lifetime { soft_add_secs: Some(30), hard_add_secs: Some(20), ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("soft_seconds"));
        // A time-only hard limit makes admission honour the flag.
        let only_time = Lifetime { hard_add_secs: Some(1), ..Default::default() };
        let u = Usage::default();
        assert_eq!(u.admit(&only_time, [100u64, 100].into_iter()), 2);
        u.expire();
        assert_eq!(u.admit(&only_time, [100u64].into_iter()), 0, "expired by time: nothing more");
        assert!(u.soft_expired(), "hard implies soft");
    }
}
