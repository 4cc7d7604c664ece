//! Page allocation with reuse: the free list lives in memory and in the log.
//!
//! A freed page id is not reusable at once: an optimistic reader may still be about to
//! read it (a lookup that validated a leaf, then follows an overflow chain). Freeing
//! parks the id as *pending* and defers its release with `crossbeam-epoch` until every
//! thread pinned at that time has unpinned. Every read that follows a page id after its
//! last validation runs pinned: overflow chains (a lookup that finds one repeats itself
//! pinned), `multi_get`, scans, `verify`. The rest need no pin: an optimistic descent
//! validates each page after reading it and its parent after taking the child's version,
//! so a page freed and reused underneath fails validation; latched pages cannot be freed.
//!
//! Persisted form: none of its own. Every log record lists the pages its change allocated
//! and freed, and every checkpoint record holds the whole free list (ready, pending and
//! in-flight ids); recovery replays the lists after the checkpoint. No free-list page is
//! ever overwritten, so an older checkpoint stays usable.
//!
//! Invariants:
//! 1. A page id is in at most one of `ready`, `pending`, `in_flight`, or in use.
//! 2. Only `ready` ids are handed out; a handed-out id is `in_flight` until the record
//!    that uses it is appended (`committed`) or its change is abandoned (`release`).
//! 3. The state mutex is never held while calling the pool or pinning the epoch (deferred
//!    releases run inside `pin` and take the mutex). Lock order: growth → log → state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bufpool::{PageId, Pool};

use crate::EngineError;
use crate::page;
use crate::wal::PageMut;

/// Free ids tried before growing the file when reused pages fail to fault in.
const REUSE_ATTEMPTS_MAX: usize = 8;

#[derive(Debug, Default)]
struct FreeState {
    ready: Vec<PageId>,
    pending: HashSet<PageId>,
    in_flight: HashSet<PageId>,
}

pub(crate) struct Allocator {
    state: Arc<Mutex<FreeState>>,
    /// Serialises file growth, so a grown page is `in_flight` before the file covers it.
    growth: Mutex<()>,
}

impl Allocator {
    /// An allocator whose free pages are `ready`.
    pub fn with_free(ready: Vec<u64>) -> Allocator {
        let state = FreeState {
            ready: ready.into_iter().map(PageId).collect(),
            ..FreeState::default()
        };
        Allocator {
            state: Arc::new(Mutex::new(state)),
            growth: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FreeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A zeroed page, exclusively latched: a released free page, or a new one at the end
    /// of the file. Its LSN is `log_end`: should it be written back before the record that
    /// uses it, that write waits for the log up to here, which covers the record that
    /// freed the page.
    pub fn allocate<'p>(
        &'p self,
        pool: &'p Pool,
        log_end: u64,
    ) -> Result<PageMut<'p>, EngineError> {
        for _ in 0..REUSE_ATTEMPTS_MAX {
            let id = {
                let mut state = self.lock();
                let Some(id) = state.ready.pop() else {
                    break;
                };
                state.in_flight.insert(id);
                id
            };
            match pool.exclusive(id) {
                Ok(mut guard) => {
                    guard.fill(0);
                    page::set_lsn(&mut guard, log_end);
                    return Ok(PageMut::allocated(guard, self));
                }
                // A free page that cannot be read back (torn by a crash) is left out of
                // circulation until the next reopen: it holds nothing.
                Err(bufpool::PoolError::Corrupted { .. }) => {
                    self.lock().in_flight.remove(&id);
                }
                Err(error) => {
                    self.release(&[id]);
                    return Err(error.into());
                }
            }
        }
        let _growth = self
            .growth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let predicted = PageId(pool.page_count());
        self.lock().in_flight.insert(predicted);
        match pool.allocate() {
            Ok(mut guard) => {
                assert_eq!(guard.page_id(), predicted, "file growth is serialised");
                page::set_lsn(&mut guard, log_end);
                Ok(PageMut::allocated(guard, self))
            }
            Err(error) => {
                self.lock().in_flight.remove(&predicted);
                Err(error.into())
            }
        }
    }

    /// The records using these handed-out ids are in the log.
    pub fn committed(&self, ids: &[PageId]) {
        if ids.is_empty() {
            return;
        }
        let mut state = self.lock();
        for id in ids {
            let was = state.in_flight.remove(id);
            assert!(was, "page {} committed but not handed out", id.0);
        }
    }

    /// Handed-out ids whose change was abandoned: free again at once (nobody saw them).
    pub fn release(&self, ids: &[PageId]) {
        let mut state = self.lock();
        for &id in ids {
            if state.in_flight.remove(&id) {
                state.ready.push(id);
            }
        }
    }

    /// Frees pages: their ids become reusable once every reader pinned now is gone. The
    /// bytes stay as they are until then: a pinned reader following an overflow chain must
    /// still find it intact.
    pub fn retire(&self, ids: &[PageId], epoch: &crossbeam_epoch::Guard) {
        self.lock().pending.extend(ids.iter().copied());
        let state = Arc::clone(&self.state);
        let ids = ids.to_vec();
        epoch.defer(move || {
            let mut state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for id in ids {
                if state.pending.remove(&id) {
                    state.ready.push(id);
                }
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

    /// Every id that is free after a crash now (ready, pending and in flight), sorted, and
    /// the page count: what a checkpoint record holds.
    pub fn snapshot(&self, pool: &Pool) -> (Vec<u64>, u64) {
        let state = self.lock();
        let page_count = pool.page_count();
        let mut free: Vec<u64> = state
            .ready
            .iter()
            .chain(state.pending.iter())
            .chain(state.in_flight.iter())
            .map(|id| id.0)
            .collect();
        drop(state);
        free.sort_unstable();
        (free, page_count)
    }
}
