//! Fault-in (one read per page, however many threads want it), batched prefetch,
//! allocation, and the frame budget that makes room through the clock.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use bufpool_io::{IoError, IoKind, IoRequest};

use std::time::{Duration, Instant};

use super::{Pool, backoff};
use crate::FrameCensus;
use crate::state::{LOCKED, MARKED, SHARED_MAX, UNLOCKED, state_of};

/// Eviction rounds (each one charge attempt) before giving up on a frame: other threads keep
/// taking the frames this one frees.
const RESERVE_ATTEMPTS_MAX: u32 = 1 << 20;
/// Rounds in a row that free and mark nothing before `NoEvictableFrame` may be returned ...
const FRUITLESS_EVICTION_ROUNDS_MIN: u32 = 64;
/// ... and for how long: latch holders may be doing I/O or lingering readers (a shared
/// latch, a reader refaulting a victim), which all end on their own.
const NO_FRAME_WAIT: Duration = Duration::from_secs(1);
use crate::eviction::{BATCH_MAX, Frames};
use crate::guard::ExclusiveGuard;
use crate::stats::Counter;
use crate::{PAGE_SIZE, PageId, PoolError};

impl Pool {
    /// A fresh page id at the end of the file (the file grows), zeroed, resident, dirty,
    /// exclusively latched.
    pub fn allocate(&self) -> Result<ExclusiveGuard<'_>, PoolError> {
        let _serial = self
            .allocation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let page = PageId(self.page_count());
        if page.0 >= self.config.page_count_max {
            return Err(PoolError::RegionFull {
                page_count_max: self.config.page_count_max,
            });
        }
        let state = self.state(page);
        let seen = state.load();
        assert!(
            state.try_lock_evicted(seen),
            "page {} past the end is not evicted",
            page.0
        );
        if let Err(error) = self.prepare_new_page(page) {
            state.unlock_evicted();
            return Err(error);
        }
        state.mark_uptodate();
        // The zeroes are the page's first contents: they must reach the disk.
        self.mark_dirty(page);
        self.page_count.store(page.0 + 1, Ordering::Release);
        // SAFETY: mark_uptodate left the page LOCKED by this thread.
        Ok(unsafe { ExclusiveGuard::new(self, page) })
    }

    fn prepare_new_page(&self, page: PageId) -> Result<(), PoolError> {
        // Allocates the page's blocks (and extends the file over it) now, so its write-back
        // cannot fail with ENOSPC later; one fallocate, no fstat.
        self.file
            .preallocate(page.0 * PAGE_SIZE as u64, PAGE_SIZE as u64)?;
        self.reserve_frame()?;
        // SAFETY: the page is LOCKED_EVICTED by this thread: nobody else writes it.
        unsafe { std::ptr::write_bytes(self.page_ptr(page), 0, PAGE_SIZE) };
        self.resident.insert(page);
        Ok(())
    }

    /// Batch fault-in: every evicted page of `pages` is read with one io submission per
    /// `BATCH_MAX` pages. Pages already resident or latched are skipped.
    pub fn prefetch(&self, pages: &[PageId]) -> Result<(), PoolError> {
        let mut first_error = None;
        for chunk in pages.chunks(BATCH_MAX) {
            if let Err(error) = self.prefetch_batch(chunk) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn prefetch_batch(&self, pages: &[PageId]) -> Result<(), PoolError> {
        let mut locked = [PageId(0); BATCH_MAX];
        let mut locked_count = 0;
        let mut first_error = None;
        for &page in pages {
            if let Err(error) = self.check_range(page) {
                first_error.get_or_insert(error);
                continue;
            }
            let state = self.state(page);
            let seen = state.load();
            if !state.try_lock_evicted(seen) {
                continue;
            }
            if let Err(error) = self.reserve_frame() {
                state.unlock_evicted();
                first_error.get_or_insert(error);
                break;
            }
            locked[locked_count] = page;
            locked_count += 1;
        }
        let locked = &locked[..locked_count];
        let mut requests = [IoRequest {
            kind: IoKind::Read,
            offset: 0,
            buf: std::ptr::null_mut(),
            len: 0,
        }; BATCH_MAX];
        for (request, &page) in requests.iter_mut().zip(locked) {
            *request = IoRequest {
                kind: IoKind::Read,
                offset: page.0 * PAGE_SIZE as u64,
                buf: self.page_ptr(page),
                len: PAGE_SIZE,
            };
        }
        let mut outcomes: [Result<(), IoError>; BATCH_MAX] = std::array::from_fn(|_| Ok(()));
        // SAFETY: every page is LOCKED_EVICTED by this thread: nobody else writes its frame,
        // and the frames stay mapped until the batch is complete.
        unsafe {
            self.io.submit_batch(
                &self.file,
                &requests[..locked.len()],
                &mut outcomes[..locked.len()],
            )
        };
        for (&page, outcome) in locked.iter().zip(outcomes.iter_mut()) {
            let result = std::mem::replace(outcome, Ok(())).map_err(PoolError::from);
            let result = result.and_then(|()| self.run_after_read(page));
            if let Err(error) = self.finish_fault_in(page, result) {
                first_error.get_or_insert(error);
                continue;
            }
            self.state(page).mark_uptodate();
            self.state(page).unlock_exclusive();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// With `page` LOCKED_EVICTED by this thread: reserve a frame, read the page into its own
    /// address, check it, enter the resident set. On error the page is EVICTED (unlocked).
    pub(super) fn fault_in(&self, page: PageId) -> Result<(), PoolError> {
        if let Err(error) = self.reserve_frame() {
            self.state(page).unlock_evicted();
            return Err(error);
        }
        let ptr = self.page_ptr(page);
        // SAFETY: the page is LOCKED_EVICTED by this thread: nobody else writes its frame;
        // optimistic readers only load from it atomically and fail validation.
        let result = unsafe {
            self.io
                .read_at(&self.file, page.0 * PAGE_SIZE as u64, ptr, PAGE_SIZE)
        };
        let result = result
            .map_err(PoolError::from)
            .and_then(|()| self.run_after_read(page));
        self.finish_fault_in(page, result)
    }

    fn run_after_read(&self, page: PageId) -> Result<(), PoolError> {
        let Some(hooks) = &self.config.hooks else {
            return Ok(());
        };
        // SAFETY: LOCKED_EVICTED by this thread; the read has completed.
        let bytes = unsafe { std::slice::from_raw_parts(self.page_ptr(page), PAGE_SIZE) };
        hooks.after_read(page, bytes)
    }

    /// Completes a fault-in whose reserved frame holds the read's `result`.
    fn finish_fault_in(
        &self,
        page: PageId,
        result: Result<(), PoolError>,
    ) -> Result<(), PoolError> {
        self.counters.add(Counter::Misses, 1);
        match result {
            Ok(()) => {
                self.counters.add(Counter::Reads, 1);
                self.resident.insert(page);
                Ok(())
            }
            Err(error) => {
                // The frame holds a partial or rejected page: free it, stay evicted.
                if let Err(shootdown_error) = self.region.shoot_down(page) {
                    tracing::warn!(page = page.0, %shootdown_error, "could not free the frame of a failed fault-in");
                }
                self.resident_frames.fetch_sub(1, Ordering::AcqRel);
                self.state(page).unlock_evicted();
                Err(error)
            }
        }
    }

    /// Charges one frame to the budget, evicting first if it is spent. Eviction errors belong
    /// to the victims' owners (their pages stay dirty; `flush` reports them), so they are not
    /// returned here; only when no frame could be freed for `NO_FRAME_WAIT` (and at least
    /// `FRUITLESS_EVICTION_ROUNDS_MIN` rounds) does this fail, with a census of what held them.
    fn reserve_frame(&self) -> Result<(), PoolError> {
        let mut fruitless_rounds = 0;
        let mut rounds = 0;
        let mut waiting_since = None;
        let mut last_eviction_error = None;
        for _ in 0..RESERVE_ATTEMPTS_MAX {
            if self.try_charge_frame() {
                return Ok(());
            }
            let round = self.evict_round();
            rounds += 1;
            if let Some(error) = round.first_error {
                tracing::debug!(%error, "eviction error (the victim stays resident and dirty)");
                last_eviction_error = Some(error.to_string());
            }
            if round.freed > 0 || round.marked > 0 {
                fruitless_rounds = 0;
                continue;
            }
            fruitless_rounds += 1;
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if fruitless_rounds >= FRUITLESS_EVICTION_ROUNDS_MIN && since.elapsed() >= NO_FRAME_WAIT
            {
                break;
            }
            backoff(fruitless_rounds + 16);
        }
        let waited = waiting_since.map_or(Duration::ZERO, |since| since.elapsed());
        Err(PoolError::NoEvictableFrame {
            frame_count: self.frame_count,
            rounds,
            waited_ms: waited.as_millis() as u64,
            held: self.frame_census(last_eviction_error),
        })
    }

    /// One CAS attempt loop on the budget counter; false when the budget is spent.
    fn try_charge_frame(&self) -> bool {
        let mut used = self.resident_frames.load(Ordering::Acquire);
        while used < self.frame_count {
            match self.resident_frames.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
        false
    }

    /// Who holds the charged frames right now (for `NoEvictableFrame`).
    fn frame_census(&self, last_eviction_error: Option<String>) -> FrameCensus {
        let mut census = FrameCensus {
            last_eviction_error,
            ..FrameCensus::default()
        };
        let mut in_set = 0;
        self.resident.for_each(|page| {
            in_set += 1;
            match state_of(self.state(page).load()) {
                LOCKED => census.exclusive += 1,
                UNLOCKED | MARKED => census.unlatched += 1,
                shared if (1..=SHARED_MAX).contains(&shared) => census.shared += 1,
                _ => census.in_transition += 1,
            }
        });
        census.awaiting_recheck = self.leaked_count.load(Ordering::Relaxed);
        let charged = self.resident_frames.load(Ordering::Acquire);
        census.in_transition += charged.saturating_sub(in_set + census.awaiting_recheck);
        census
    }
}
