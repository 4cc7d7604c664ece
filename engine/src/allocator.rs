//! Page allocation with reuse: a free list kept in memory, persisted at each checkpoint.
//!
//! A freed page id is not reusable at once: an optimistic reader may still be about to
//! read it (a lookup that validated a parent, then follows an overflow chain). Freeing
//! parks the id as *pending* and defers its release with `crossbeam-epoch` until every
//! thread pinned at that time has unpinned; every tree operation runs pinned.
//!
//! Persisted form: a chain of free-list pages, each: header, next page u64 at 16, id count
//! u32 at 24, ids (u64) from 32. The pages holding the chain are not on the list they
//! store; they are reserved until the next checkpoint writes a new chain.
//!
//! Invariants:
//! 1. A page id is in at most one of `ready`, `pending`, `storage`, or in use.
//! 2. Only `ready` ids are handed out.
//! 3. The mutex is never held while calling the pool or pinning the epoch (deferred
//!    releases run inside `pin` and take the mutex).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bufpool::{ExclusiveGuard, PageId, Pool};

use crate::EngineError;
use crate::page::{self, PAGE_HEADER_SIZE, PAGE_SIZE, PageKind};

const NEXT_OFFSET: usize = PAGE_HEADER_SIZE;
const COUNT_OFFSET: usize = 24;
const IDS_OFFSET: usize = 32;
/// Page ids one free-list page holds.
const IDS_PER_PAGE: usize = (PAGE_SIZE - IDS_OFFSET) / 8;
/// Free ids tried before growing the file when reused pages fail to fault in.
const REUSE_ATTEMPTS: usize = 8;

#[derive(Debug, Default)]
struct FreeState {
    ready: Vec<u64>,
    pending: HashSet<u64>,
    storage: Vec<u64>,
}

pub(crate) struct Allocator {
    state: Arc<Mutex<FreeState>>,
}

impl Allocator {
    fn with(ready: Vec<u64>, storage: Vec<u64>) -> Allocator {
        let state = FreeState {
            ready,
            pending: HashSet::new(),
            storage,
        };
        Allocator {
            state: Arc::new(Mutex::new(state)),
        }
    }

    pub fn empty() -> Allocator {
        Allocator::with(Vec::new(), Vec::new())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FreeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A zeroed page, exclusively latched: a released free page, or a new one at the end
    /// of the file.
    pub fn allocate<'p>(&self, pool: &'p Pool) -> Result<ExclusiveGuard<'p>, EngineError> {
        for _ in 0..REUSE_ATTEMPTS {
            let Some(id) = self.lock().ready.pop() else {
                break;
            };
            match pool.exclusive(PageId(id)) {
                Ok(mut guard) => {
                    guard.fill(0);
                    return Ok(guard);
                }
                // A free page that cannot be read back (e.g. torn by a crash) is left
                // out of circulation: it holds nothing.
                Err(bufpool::PoolError::Corrupted { .. }) => continue,
                Err(error) => {
                    self.lock().ready.push(id);
                    return Err(error.into());
                }
            }
        }
        Ok(pool.allocate()?)
    }

    /// Frees a page: its id becomes reusable once every reader pinned now is gone. The
    /// bytes stay as they are until then: a pinned reader following an overflow chain must
    /// still find it intact (node readers are turned away by the version bump of this
    /// latch's release, and re-validate the parent).
    pub fn retire(&self, page: ExclusiveGuard<'_>, epoch: &crossbeam_epoch::Guard) {
        let id = page.page_id().0;
        drop(page);
        self.lock().pending.insert(id);
        let state = Arc::clone(&self.state);
        epoch.defer(move || {
            let mut state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if state.pending.remove(&id) {
                state.ready.push(id);
            }
        });
        // Frees are rare (merges, replaced large values): hand the deferred release to the
        // global queue now rather than when this thread's local bag fills.
        epoch.flush();
    }

    /// Number of free ids (ready and pending).
    pub fn free_count(&self) -> usize {
        let state = self.lock();
        state.ready.len() + state.pending.len()
    }

    /// Writes the free list (ready and pending ids: after a reopen no reader remains) into
    /// a fresh chain of pages; returns its head (0 for none) and length.
    pub fn persist(&self, pool: &Pool) -> Result<(u64, u64), EngineError> {
        let (mut ids, mut chain) = {
            let mut state = self.lock();
            let old = std::mem::take(&mut state.storage);
            state.ready.extend(old);
            let total = state.ready.len() + state.pending.len();
            // Chain pages come from the list itself where it can: taking them only
            // shortens what they must hold.
            let take = total.div_ceil(IDS_PER_PAGE).min(state.ready.len());
            let at = state.ready.len() - take;
            let chain: Vec<u64> = state.ready.split_off(at);
            let ids: Vec<u64> = state
                .ready
                .iter()
                .chain(state.pending.iter())
                .copied()
                .collect();
            (ids, chain)
        };
        ids.sort_unstable();
        while chain.len() < ids.len().div_ceil(IDS_PER_PAGE) {
            chain.push(pool.allocate()?.page_id().0);
        }
        let result = write_chain(pool, &chain, &ids);
        self.lock().storage.clone_from(&chain);
        result.map(|()| (chain.first().copied().unwrap_or(0), ids.len() as u64))
    }

    /// Reads a persisted free list. Pages past `persisted_page_count` (allocated after the
    /// last checkpoint, then lost by a crash) are free too.
    pub fn load(
        pool: &Pool,
        head: u64,
        len: u64,
        persisted_page_count: u64,
        corrupted: impl Fn(u64, String) -> EngineError,
    ) -> Result<Allocator, EngineError> {
        let mut ready = Vec::with_capacity(len as usize);
        let mut storage = Vec::new();
        let mut page = head;
        while page != 0 {
            if storage.len() as u64 >= persisted_page_count {
                return Err(corrupted(page, "free list chain loops".into()));
            }
            storage.push(page);
            let (kind, next, count) = pool.read(PageId(page), |view| {
                let count = (view.u32_at(COUNT_OFFSET) as usize).min(IDS_PER_PAGE);
                (page::kind_of(view), view.u64_at(NEXT_OFFSET), count)
            })?;
            if kind != Some(PageKind::FreeList) {
                return Err(corrupted(page, "free list page of the wrong kind".into()));
            }
            let start = ready.len();
            ready.resize(start + count, 0);
            pool.read(PageId(page), |view| {
                for (index, id) in ready[start..].iter_mut().enumerate() {
                    *id = view.u64_at(IDS_OFFSET + index * 8);
                }
            })?;
            page = next;
        }
        let valid =
            |id: &u64| (crate::superblock::FIRST_DATA_PAGE..persisted_page_count).contains(id);
        if ready.len() as u64 != len || !ready.iter().all(valid) {
            return Err(corrupted(
                head,
                format!("free list of {} ids, superblock says {len}", ready.len()),
            ));
        }
        ready.extend(persisted_page_count..pool.page_count());
        Ok(Allocator::with(ready, storage))
    }
}

/// Writes `ids` into the `chain` pages (some may stay empty: every chain page is linked).
fn write_chain(pool: &Pool, chain: &[u64], ids: &[u64]) -> Result<(), EngineError> {
    let mut chunks = ids.chunks(IDS_PER_PAGE);
    for (index, &page) in chain.iter().enumerate() {
        let chunk = chunks.next().unwrap_or(&[]);
        let mut guard = pool.exclusive(PageId(page))?;
        guard.fill(0);
        page::init_header(&mut guard, PageKind::FreeList);
        let next = chain.get(index + 1).copied().unwrap_or(0);
        guard[NEXT_OFFSET..NEXT_OFFSET + 8].copy_from_slice(&next.to_le_bytes());
        guard[COUNT_OFFSET..COUNT_OFFSET + 4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        for (slot, id) in chunk.iter().enumerate() {
            let at = IDS_OFFSET + slot * 8;
            guard[at..at + 8].copy_from_slice(&id.to_le_bytes());
        }
    }
    assert!(chunks.next().is_none(), "free list chain too short");
    Ok(())
}
