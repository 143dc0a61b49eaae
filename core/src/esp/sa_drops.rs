//! Drops per SA, in a few classes: what an operator asks of one tunnel
//! ("is the peer replaying, is its key wrong, is it sending outside the
//! selectors?") without a label per drop reason per SA, which would not
//! scale to 100 000 SAs.
//!
//! Counted only on the drop path, with one relaxed `fetch_add` on the SA
//! (shared by the workers): packets that pass never touch these.

use std::sync::atomic::{AtomicU64, Ordering};

use super::EspError;

macro_rules! sa_drops {
    ($( $(#[doc = $doc:literal])+ $v:ident => $label:literal, )*) => {
        /// A class of per-SA drop.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum SaDrop {
            $( $(#[doc = $doc])+ $v, )*
        }

        impl SaDrop {
            /// Every class, in counter order.
            pub const ALL: &'static [SaDrop] = &[ $( SaDrop::$v, )* ];
            /// Number of classes.
            pub const COUNT: usize = Self::ALL.len();
            /// Stable snake_case label (metric label, API field).
            pub const fn label(self) -> &'static str {
                match self { $( SaDrop::$v => $label, )* }
            }
        }
    };
}

sa_drops! {
    /// Left of the replay window or already received.
    Replay => "replay",
    /// Integrity check failed (wrong key, corruption, forgery).
    Auth => "auth",
    /// Decrypted traffic outside the SA's selectors.
    Policy => "policy",
    /// Hard lifetime reached or sequence space exhausted.
    Lifetime => "lifetime",
    /// Anything else: malformed ESP, padding, inner packet, no room.
    Malformed => "malformed",
}

impl From<EspError> for SaDrop {
    fn from(e: EspError) -> SaDrop {
        match e {
            EspError::ReplayTooOld | EspError::ReplayDuplicate => SaDrop::Replay,
            EspError::AuthFailed => SaDrop::Auth,
            EspError::HardLifetime | EspError::SeqExhausted | EspError::SeqNotPersisted => SaDrop::Lifetime,
            _ => SaDrop::Malformed,
        }
    }
}

/// The per-SA drop counters.
#[derive(Debug, Default)]
pub struct SaDrops([AtomicU64; SaDrop::COUNT]);

impl SaDrops {
    /// Count one drop of class `d`.
    #[inline]
    pub fn count(&self, d: impl Into<SaDrop>) {
        self.0[d.into() as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts, indexed like [`SaDrop::ALL`].
    pub fn get(&self) -> [u64; SaDrop::COUNT] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }

    /// Total over every class.
    pub fn total(&self) -> u64 {
        self.get().iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_errors_map_to_their_class() {
        let d = SaDrops::default();
        d.count(EspError::ReplayDuplicate);
        d.count(EspError::ReplayTooOld);
        d.count(EspError::AuthFailed);
        d.count(SaDrop::Policy);
        d.count(EspError::HardLifetime);
        d.count(EspError::BadPadding);
        assert_eq!(d.get(), [2, 1, 1, 1, 1]);
        assert_eq!(d.total(), 6);
        let labels: Vec<_> = SaDrop::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(labels, ["replay", "auth", "policy", "lifetime", "malformed"]);
    }
}
