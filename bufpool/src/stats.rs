//! Per-thread event counters: each live thread owns a cache-line-padded slot that only it
//! writes (a plain Relaxed load + store, no locked instruction), so counting a hit costs about
//! a nanosecond and no shared cache line; `Pool::stats` sums the slots.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crossbeam_utils::CachePadded;

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Accesses that found the page resident.
    pub hits: u64,
    /// Accesses that had to fault the page in (each caused one read).
    pub misses: u64,
    /// Pages read from disk.
    pub reads: u64,
    /// Pages written to disk.
    pub writes: u64,
    /// Pages evicted.
    pub evictions: u64,
    /// Of `evictions`, those made ahead of demand by a background evictor
    /// ([`crate::Pool::make_room`]), not by a thread that needed a frame.
    pub background_evictions: u64,
    /// Frame shootdowns (MADV_DONTNEED / PUNCH_HOLE), retries included.
    pub shootdowns: u64,
    /// Extra shootdowns because a reader refaulted a frame during eviction.
    pub refault_retries: u64,
    /// Optimistic reads that failed validation and started over.
    pub optimistic_restarts: u64,
    /// Pages modified since their last write-back.
    pub dirty_pages: u64,
    /// Bytes of frames charged to the budget.
    pub resident_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Hits,
    Misses,
    Reads,
    Writes,
    Evictions,
    Shootdowns,
    RefaultRetries,
    OptimisticRestarts,
    DirtyPagesAdded,
    DirtyPagesCleaned,
    BackgroundEvictions,
}

const COUNTER_COUNT: usize = 11;
/// Single-writer slots: each live thread owns one and bumps it with a plain load + store.
const OWNED_SLOT_COUNT: usize = 128;
/// Shared slots for threads beyond `OWNED_SLOT_COUNT` (bumped with fetch_add).
const SHARED_SLOT_COUNT: usize = 8;

/// Slot ownership, process-wide (a thread uses the same slot index in every pool).
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
static FREE_SLOTS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// This thread's slot; returned to `FREE_SLOTS` when the thread exits.
struct SlotLease(usize);

impl SlotLease {
    fn take() -> SlotLease {
        let free = FREE_SLOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        SlotLease(free.unwrap_or_else(|| NEXT_SLOT.fetch_add(1, Ordering::Relaxed)))
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        if self.0 < OWNED_SLOT_COUNT {
            FREE_SLOTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.0);
        }
    }
}

thread_local! {
    /// This thread's slot index (`usize::MAX` until first use): const-initialised and
    /// without a destructor, so reading it is a single thread-pointer-relative load.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Holds the lease so the slot is returned when the thread exits.
    static LEASE: SlotLease = SlotLease::take();
}

/// This thread's slot, leased on first use.
#[inline]
fn slot() -> usize {
    let slot = SLOT.get();
    if slot != usize::MAX {
        return slot;
    }
    // During thread teardown the lease may be gone: count in a shared slot then.
    let leased = LEASE.try_with(|lease| lease.0).unwrap_or(OWNED_SLOT_COUNT);
    SLOT.set(leased);
    leased
}

pub(crate) struct Counters {
    slots: Box<[CachePadded<[AtomicU64; COUNTER_COUNT]>]>,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        let slots = (0..OWNED_SLOT_COUNT + SHARED_SLOT_COUNT)
            .map(|_| CachePadded::new(Default::default()))
            .collect();
        Counters { slots }
    }

    #[inline]
    pub(crate) fn add(&self, counter: Counter, amount: u64) {
        let slot = slot();
        if slot < OWNED_SLOT_COUNT {
            // Only this thread writes this slot: no read-modify-write needed.
            let cell = &self.slots[slot][counter as usize];
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(amount),
                Ordering::Relaxed,
            );
        } else {
            let shared = OWNED_SLOT_COUNT + slot % SHARED_SLOT_COUNT;
            self.slots[shared][counter as usize].fetch_add(amount, Ordering::Relaxed);
        }
    }

    pub(crate) fn sum(&self, counter: Counter) -> u64 {
        self.slots
            .iter()
            .map(|slot| slot[counter as usize].load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    pub(crate) fn snapshot(&self, resident_bytes: u64) -> Stats {
        let dirty = self
            .sum(Counter::DirtyPagesAdded)
            .saturating_sub(self.sum(Counter::DirtyPagesCleaned));
        Stats {
            hits: self.sum(Counter::Hits),
            misses: self.sum(Counter::Misses),
            reads: self.sum(Counter::Reads),
            writes: self.sum(Counter::Writes),
            evictions: self.sum(Counter::Evictions),
            background_evictions: self.sum(Counter::BackgroundEvictions),
            shootdowns: self.sum(Counter::Shootdowns),
            refault_retries: self.sum(Counter::RefaultRetries),
            optimistic_restarts: self.sum(Counter::OptimisticRestarts),
            dirty_pages: dirty,
            resident_bytes,
        }
    }
}
