//! The one deterministic generator the unit tests draw inputs from
//! (xorshift64: repeatable, no dependency, good enough to spread inputs).

/// A generator of pseudo-random `u64`s from `seed` (which must not be 0).
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
