//! The resident set and its clock (vmcache's `ResidentPageSet`): a lock-free open-addressing
//! hash set of resident page ids whose slots the clock hand sweeps in batches.
//!
//! Invariants:
//! 1. A page id is in the set at most once: it is inserted by its fault-in (or allocation)
//!    and removed by its eviction, both under its exclusive latch.
//! 2. The capacity is a power of two at least twice the frame budget, so a probe always finds
//!    an EMPTY or TOMBSTONE slot within `capacity` steps.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::PageId;

const EMPTY: u64 = u64::MAX;
const TOMBSTONE: u64 = u64::MAX - 1;

pub(crate) struct ResidentSet {
    slots: Box<[AtomicU64]>,
    mask: u64,
    clock_hand: AtomicU64,
}

impl ResidentSet {
    pub(crate) fn new(frame_count: u64) -> ResidentSet {
        let capacity = (frame_count * 2).next_power_of_two().max(64);
        let slots = (0..capacity).map(|_| AtomicU64::new(EMPTY)).collect();
        ResidentSet {
            slots,
            mask: capacity - 1,
            clock_hand: AtomicU64::new(0),
        }
    }

    fn home(&self, page: PageId) -> u64 {
        // Fibonacci hashing spreads consecutive page ids.
        page.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20 & self.mask
    }

    pub(crate) fn insert(&self, page: PageId) {
        assert!(page.0 < TOMBSTONE, "page id collides with a slot marker");
        let mut slot = self.home(page);
        for _ in 0..self.slots.len() {
            let entry = &self.slots[slot as usize];
            let seen = entry.load(Ordering::Relaxed);
            assert_ne!(seen, page.0, "page {} inserted twice", page.0);
            if (seen == EMPTY || seen == TOMBSTONE)
                && entry
                    .compare_exchange(seen, page.0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            slot = (slot + 1) & self.mask;
        }
        panic!("resident set full: more resident pages than twice the frame budget");
    }

    /// Removes `page`; false if it was not in the set.
    pub(crate) fn remove(&self, page: PageId) -> bool {
        let mut slot = self.home(page);
        for _ in 0..self.slots.len() {
            let entry = &self.slots[slot as usize];
            let seen = entry.load(Ordering::Relaxed);
            if seen == EMPTY {
                return false;
            }
            if seen == page.0 {
                let removed =
                    entry.compare_exchange(seen, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed);
                assert!(removed.is_ok(), "page {} removed concurrently", page.0);
                return true;
            }
            slot = (slot + 1) & self.mask;
        }
        false
    }

    /// Advances the clock hand by `slot_count` slots and calls `visit` for every page id in
    /// them. Concurrent sweepers get disjoint slot ranges.
    pub(crate) fn sweep(&self, slot_count: u64, mut visit: impl FnMut(PageId)) {
        let start = self.clock_hand.fetch_add(slot_count, Ordering::Relaxed);
        for offset in 0..slot_count {
            let seen = self.slots[((start + offset) & self.mask) as usize].load(Ordering::Relaxed);
            if seen != EMPTY && seen != TOMBSTONE {
                visit(PageId(seen));
            }
        }
    }

    /// Every resident page id at the time of the call (used by flush, off the hot path).
    pub(crate) fn for_each(&self, mut visit: impl FnMut(PageId)) {
        for entry in self.slots.iter() {
            let seen = entry.load(Ordering::Relaxed);
            if seen != EMPTY && seen != TOMBSTONE {
                visit(PageId(seen));
            }
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.mask + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_sweep() {
        let set = ResidentSet::new(64);
        for page in 0..100 {
            set.insert(PageId(page));
        }
        assert!(set.remove(PageId(7)));
        assert!(!set.remove(PageId(7)));
        assert!(!set.remove(PageId(1000)));
        let mut seen = Vec::new();
        set.sweep(set.capacity(), |page| seen.push(page.0));
        seen.sort_unstable();
        let expected: Vec<u64> = (0..100).filter(|&page| page != 7).collect();
        assert_eq!(seen, expected);
        set.insert(PageId(7));
        assert!(set.remove(PageId(7)));
    }
}
