//! Sharded event counters: each thread adds to its own cache-line-padded shard (Relaxed), so
//! counting costs no shared cache line on the hot path; `Pool::stats` sums the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
}

const COUNTER_COUNT: usize = 10;
const SHARD_COUNT: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARD_COUNT;
}

pub(crate) struct Counters {
    shards: Box<[CachePadded<[AtomicU64; COUNTER_COUNT]>]>,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        let shards = (0..SHARD_COUNT)
            .map(|_| CachePadded::new(Default::default()))
            .collect();
        Counters { shards }
    }

    pub(crate) fn add(&self, counter: Counter, amount: u64) {
        let shard = SHARD.with(|shard| *shard);
        self.shards[shard][counter as usize].fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self, counter: Counter) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard[counter as usize].load(Ordering::Relaxed))
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
            shootdowns: self.sum(Counter::Shootdowns),
            refault_retries: self.sum(Counter::RefaultRetries),
            optimistic_restarts: self.sum(Counter::OptimisticRestarts),
            dirty_pages: dirty,
            resident_bytes,
        }
    }
}
