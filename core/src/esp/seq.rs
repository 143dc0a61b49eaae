//! Outbound sequence numbers and the rule that keeps them unique per key.
//!
//! With AES-GCM the IV is the sequence number (RFC 4106 §3), so sending two
//! packets under one key with one sequence number reuses a GCM nonce, which
//! reveals the authentication key (RFC 4106 §8). The rule, enforced by
//! construction:
//!
//! - a [`SeqSpace`] (the counter) belongs to a **key** ([`KeyId`]), not to an
//!   SA: every SA that sends with that key shares the one counter, so a
//!   replace, a delete + add or a config reload continues it;
//! - the counter only moves forward, and numbers are handed out by one atomic
//!   step per burst ([`SeqSpace::reserve`]);
//! - across restarts the counter is *leased*: the control plane persists a
//!   high-water mark before numbers up to it may be used
//!   ([`SeqSpace::set_lease`]); a restart resumes from the persisted mark, so
//!   numbers it never saw used are skipped, never repeated.

use crate::sync::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::crypto::Algorithm;

/// A one-way fingerprint of an SA's key material (algorithm, encryption key
/// with salt, authentication key): what the nonce rule is keyed on. SHA-256
/// of 128+ bits of secret reveals nothing about it, so the fingerprint may be
/// kept in the state file; it is still never shown by the API.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// The fingerprint of `algorithm` with these keys.
    pub fn of(algorithm: Algorithm, enc_key: &[u8], auth_key: &[u8]) -> KeyId {
        // SHA-256 in pure Rust (the same digest ring computed before, so
        // persisted key ids stay valid), which Miri can also run.
        use sha2::Digest;
        let mut ctx = sha2::Sha256::new();
        ctx.update(b"espgw key id v1\0");
        ctx.update(algorithm.name().as_bytes());
        // Lengths make the encoding unambiguous.
        ctx.update((enc_key.len() as u32).to_be_bytes());
        ctx.update(enc_key);
        ctx.update((auth_key.len() as u32).to_be_bytes());
        ctx.update(auth_key);
        KeyId(ctx.finalize().into())
    }

    /// Lower-case hex (state file).
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse [`Self::to_hex`] output.
    pub fn from_hex(s: &str) -> Option<KeyId> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(KeyId(out))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A short prefix is enough to tell keys apart in logs and tests.
        write!(f, "KeyId({}..)", &self.to_hex()[..8])
    }
}

/// The outbound counter of one key. Workers reserve from it; the control
/// plane leases it forward and persists the lease.
#[derive(Debug)]
pub struct SeqSpace {
    // One cache line: a reservation reads the lease and bumps the counter.
    c: CachePadded<Counter>,
}

#[derive(Debug)]
struct Counter {
    /// The next number to hand out (starts at 1: 0 is never sent).
    next: AtomicU64,
    /// Numbers above this may not be used yet (`u64::MAX`: no persistence).
    leased: AtomicU64,
}

/// A block of consecutive sequence numbers reserved at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqBlock {
    /// First number of the block.
    pub first: u64,
    /// How many of the requested numbers are usable (a prefix of the block).
    pub usable: usize,
}

/// Why no sequence number could be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqError {
    /// The SA's sequence space is used up (never wraps): rekey.
    Exhausted,
    /// The persisted lease is used up (the state file could not be written
    /// in time): numbers past it would repeat after a crash.
    NotPersisted,
}

impl Default for SeqSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqSpace {
    /// A fresh counter at 1, not leased (no persistence: unit tests, tools).
    pub fn new() -> Self {
        SeqSpace { c: CachePadded::new(Counter { next: AtomicU64::new(1), leased: AtomicU64::new(u64::MAX) }) }
    }

    /// A counter that may not hand out anything until [`Self::set_lease`].
    pub fn unleased(next: u64) -> Self {
        SeqSpace { c: CachePadded::new(Counter { next: AtomicU64::new(next.max(1)), leased: AtomicU64::new(0) }) }
    }

    /// The next number that would be handed out.
    pub fn next(&self) -> u64 {
        self.c.next.load(Ordering::Relaxed)
    }

    /// Highest number currently allowed by the lease.
    pub fn leased(&self) -> u64 {
        self.c.leased.load(Ordering::Acquire)
    }

    /// Move the counter forward to at least `next` (restoring persisted
    /// state). Never moves it back.
    pub fn advance_to(&self, next: u64) {
        self.c.next.fetch_max(next, Ordering::Relaxed);
    }

    /// Allow numbers up to `upto`, once that mark is persisted. Never lowers it.
    pub fn set_lease(&self, upto: u64) {
        self.c.leased.fetch_max(upto, Ordering::Release);
    }

    /// Reserve `n` numbers, none above `space_limit` (the SA's sequence
    /// space) or the lease. One atomic add: concurrent callers get disjoint
    /// blocks. Numbers of a block that are not usable are skipped for good.
    #[inline]
    pub fn reserve(&self, n: usize, space_limit: u64) -> Result<SeqBlock, SeqError> {
        let leased = self.c.leased.load(Ordering::Acquire);
        // The counter is 64-bit and an ESN space ends at 2^63, so adding
        // bursts forever after exhaustion never wraps it.
        let first = self.c.next.fetch_add(n as u64, Ordering::Relaxed);
        let limit = space_limit.min(leased);
        if first > limit {
            return Err(if first > space_limit { SeqError::Exhausted } else { SeqError::NotPersisted });
        }
        let usable = (limit - first).saturating_add(1).min(n as u64) as usize;
        Ok(SeqBlock { first, usable })
    }
}

/// The last sequence number of an SA's space: 2^32 - 1 without ESN, 2^63
/// with it (far beyond any lifetime, and far from wrapping the counter).
pub fn space_limit(esn: bool) -> u64 {
    if esn {
        1 << 63
    } else {
        u64::from(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_depend_on_every_key_byte_and_algorithm() {
        let a = KeyId::of(Algorithm::AesGcm128, &[1; 20], &[]);
        assert_eq!(a, KeyId::of(Algorithm::AesGcm128, &[1; 20], &[]));
        let mut k = [1u8; 20];
        k[19] = 2; // the salt alone
        assert_ne!(a, KeyId::of(Algorithm::AesGcm128, &k, &[]));
        assert_ne!(
            KeyId::of(Algorithm::AesCbc128HmacSha1, &[1; 16], &[2; 20]),
            KeyId::of(Algorithm::AesCbc128HmacSha1, &[1; 16], &[3; 20])
        );
        // Moving a byte between the keys changes the id (lengths are hashed).
        assert_ne!(
            KeyId::of(Algorithm::NullHmacSha1, &[], &[7; 20]),
            KeyId::of(Algorithm::NullHmacSha1, &[7], &[7; 19])
        );
        assert_eq!(KeyId::from_hex(&a.to_hex()), Some(a));
        assert_eq!(KeyId::from_hex("zz"), None);
        assert!(!format!("{a:?}").contains(&a.to_hex()), "debug shows a prefix only");
    }

    #[test]
    fn reservations_respect_space_and_lease() {
        let s = SeqSpace::new();
        assert_eq!(s.reserve(3, 10), Ok(SeqBlock { first: 1, usable: 3 }));
        assert_eq!(s.reserve(10, 10), Ok(SeqBlock { first: 4, usable: 7 }));
        assert_eq!(s.reserve(1, 10), Err(SeqError::Exhausted));
        assert_eq!(s.reserve(1, 10), Err(SeqError::Exhausted), "stays exhausted");

        let s = SeqSpace::unleased(100);
        assert_eq!(s.reserve(1, u64::MAX), Err(SeqError::NotPersisted));
        s.set_lease(105);
        // 101 was burnt by the refused attempt: skipped, never reused.
        assert_eq!(s.reserve(8, u64::MAX), Ok(SeqBlock { first: 101, usable: 5 }));
        s.set_lease(50);
        assert_eq!(s.leased(), 105, "a lease never goes back");
        s.advance_to(10);
        assert_eq!(s.next(), 109, "the counter never goes back");
    }
}
