//! Loom models of the lock-free pieces workers share: the outbound sequence
//! reservation and the replay window update. Loom runs each model under every
//! interleaving (and every weak-memory outcome it models) of its threads.
//!
//! Built only with `--cfg espgw_loom` (`make loom`), which swaps the atomics
//! of `esp::seq` and `esp::replay` for loom's.
#![cfg(espgw_loom)]

use espgw_core::esp::replay::{ReplayError, ReplayWindow};
use espgw_core::esp::seq::{SeqError, SeqSpace};
use loom::sync::Arc;
use loom::thread;

/// Two workers reserve bursts while the control plane extends the lease:
/// the blocks are disjoint and no usable number lies above the lease.
#[test]
fn reservations_are_disjoint_and_within_the_lease() {
    loom::model(|| {
        let s = Arc::new(SeqSpace::unleased(1));
        s.set_lease(3);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || s.reserve(2, u64::MAX >> 1))
            })
            .collect();
        let control = {
            let s = s.clone();
            thread::spawn(move || s.set_lease(4))
        };
        let got: Vec<_> = workers.into_iter().map(|t| t.join().unwrap()).collect();
        control.join().unwrap();
        let mut used = Vec::new();
        for r in got {
            match r {
                Ok(b) => {
                    assert!(b.usable >= 1 && b.usable <= 2);
                    used.extend(b.first..b.first + b.usable as u64);
                }
                Err(e) => assert_eq!(e, SeqError::NotPersisted),
            }
        }
        let n = used.len();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), n, "a sequence number handed out twice");
        assert!(used.iter().all(|&q| (1..=4).contains(&q)), "{used:?} outside the lease");
        assert_eq!(s.next(), 5, "every reservation moved the counter");
    });
}

/// The space's end is never crossed, whoever reserves last.
#[test]
fn reservations_stop_at_the_end_of_the_space() {
    loom::model(|| {
        let s = Arc::new(SeqSpace::new());
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || s.reserve(2, 3))
            })
            .collect();
        let mut used = Vec::new();
        for t in ts {
            match t.join().unwrap() {
                Ok(b) => used.extend(b.first..b.first + b.usable as u64),
                Err(e) => assert_eq!(e, SeqError::Exhausted),
            }
        }
        used.sort_unstable();
        assert_eq!(used, vec![1, 2, 3], "each number of the space exactly once");
    });
}

/// Two workers verified the same sequence number: exactly one accepts it.
#[test]
fn the_same_number_is_accepted_once() {
    loom::model(|| {
        let w = Arc::new(ReplayWindow::new(64));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || w.update(5))
            })
            .collect();
        let r: Vec<_> = ts.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 1, "{r:?}");
        assert!(r.contains(&Err(ReplayError::Duplicate)));
        assert_eq!(w.check(5), Err(ReplayError::Duplicate));
    });
}

/// Two numbers of one block (bits of one word) set at once: neither is lost.
#[test]
fn bits_of_one_block_are_not_lost() {
    loom::model(|| {
        let w = Arc::new(ReplayWindow::new(64));
        let ts: Vec<_> = [3u64, 4]
            .into_iter()
            .map(|q| {
                let w = w.clone();
                thread::spawn(move || w.update(q))
            })
            .collect();
        for t in ts {
            assert_eq!(t.join().unwrap(), Ok(()));
        }
        assert_eq!(w.check(3), Err(ReplayError::Duplicate));
        assert_eq!(w.check(4), Err(ReplayError::Duplicate));
        assert_eq!(w.top(), 4);
    });
}

/// One worker records an old number while another moves the window so far
/// that the old number's slot is recycled for a new block: the new number is
/// always remembered, and the old one, if it was accepted, is never accepted
/// again.
#[test]
fn recycling_a_slot_keeps_the_new_block() {
    loom::model(|| {
        let w = Arc::new(ReplayWindow::new(64));
        assert_eq!(w.update(40), Ok(())); // block 1 in slot 1, top 40
                                          // Block 5 maps to the same slot as block 1 (4 slots for 64 packets).
        let (old, new) = (41u64, 5 * 32 + 1);
        let a = {
            let w = w.clone();
            thread::spawn(move || w.update(old))
        };
        let b = {
            let w = w.clone();
            thread::spawn(move || w.update(new))
        };
        let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(rb, Ok(()));
        assert_eq!(w.check(new), Err(ReplayError::Duplicate), "the newer block was lost");
        assert_eq!(w.top(), new);
        // The old number is now outside the window whatever happened.
        assert_eq!(w.check(old), Err(ReplayError::TooOld));
        assert!(matches!(ra, Ok(()) | Err(ReplayError::TooOld)), "{ra:?}");
    });
}
