//! The pool: latching, fault-in, allocation, write-back and the clock that feeds eviction.
//!
//! Invariants:
//! 1. A page is resident (in the resident set, charged to the budget) iff its state is
//!    UNLOCKED, MARKED, shared or LOCKED; LOCKED_EVICTED pages are being faulted in or evicted
//!    by the latch holder; EVICTED pages have no frame charged.
//! 2. `resident_frames <= frame_count` always: a frame is reserved (CAS) before a fault-in.
//! 3. A dirty page is resident: eviction writes it back first and keeps it when that fails.
//! 4. Only the holder of the exclusive latch reads a page in, writes it back, or frees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bufpool_io::{DirectFile, IoEngine, IoError, IoKind, IoRequest};

use crate::eviction::{self, BATCH_MAX, EvictionEnv, Frames, Step};
use crate::guard::{ExclusiveGuard, OptimisticGuard, SharedGuard};
use crate::region::{DirtyBits, Region, StateTable, reopen_read_only};
use crate::replacer::ResidentSet;
use crate::state::{
    EVICTED, LOCKED, LOCKED_EVICTED, MARKED, PageState, SHARED_MAX, UNLOCKED, state_of, with_state,
};
use crate::stats::{Counter, Counters, Stats};
use crate::view::PageView;
use crate::{Backing, Config, Export, PAGE_SIZE, PageId, PoolError};

/// Rounds of waiting for a latch before `PoolError::LatchWaitLimit` (about 20 s).
const LATCH_WAIT_ROUNDS_MAX: u32 = 1 << 20;
/// Optimistic attempts in `Pool::read` before it falls back to a shared latch.
pub const OPTIMISTIC_RESTARTS_MAX: u32 = 16;
/// Eviction rounds in a row that free nothing before `PoolError::NoEvictableFrame`.
const FRUITLESS_EVICTION_ROUNDS_MAX: u32 = 64;
/// Clock slots examined per sweep step.
const SWEEP_STEP_SLOTS: u64 = 64;

/// Spin, then yield, then sleep: latch holders may be doing I/O.
fn backoff(round: u32) {
    if round < 16 {
        std::hint::spin_loop();
    } else if round < 256 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// The buffer pool. Send + Sync; share it with `Arc`.
pub struct Pool {
    file: DirectFile,
    io: IoEngine,
    region: Region,
    states: StateTable,
    dirty: DirtyBits,
    resident: ResidentSet,
    resident_frames: AtomicU64,
    frame_count: u64,
    page_count: AtomicU64,
    /// Serialises `allocate` (file growth); never taken on the access paths.
    allocation: Mutex<()>,
    /// Pages whose eviction hit `REFAULT_RETRIES_MAX`: still charged, re-checked later.
    leaked: Mutex<Vec<PageId>>,
    leaked_count: AtomicU64,
    counters: Counters,
    config: Config,
}

/// What `lock_for_write_back` found.
enum WriteBackLatch {
    Locked,
    Clean,
    Busy,
}

impl Pool {
    /// Opens a pool over `file`; its page count is the file length / PAGE_SIZE.
    pub fn open(file: DirectFile, config: Config) -> Result<Pool, PoolError> {
        config.check()?;
        let length = file.len()?;
        if length % PAGE_SIZE as u64 != 0 {
            return Err(PoolError::InvalidConfig(format!(
                "{} is {length} bytes, not a whole number of {PAGE_SIZE}-byte pages",
                file.path().display()
            )));
        }
        let page_count = length / PAGE_SIZE as u64;
        if page_count > config.page_count_max {
            return Err(PoolError::FileTooLarge {
                page_count,
                page_count_max: config.page_count_max,
            });
        }
        let frame_count = config.frame_count();
        Ok(Pool {
            io: IoEngine::new(config.io.clone())?,
            region: Region::new(config.backing, config.page_count_max)?,
            states: StateTable::new(config.page_count_max)?,
            dirty: DirtyBits::new(config.page_count_max)?,
            resident: ResidentSet::new(frame_count),
            resident_frames: AtomicU64::new(0),
            frame_count,
            page_count: AtomicU64::new(page_count),
            allocation: Mutex::new(()),
            leaked: Mutex::new(Vec::new()),
            leaked_count: AtomicU64::new(0),
            counters: Counters::new(),
            file,
            config,
        })
    }

    #[inline]
    pub fn page_count(&self) -> u64 {
        self.page_count.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The io engine the pool uses (to tell which one Auto chose).
    pub fn io_engine(&self) -> &IoEngine {
        &self.io
    }

    #[inline]
    pub(crate) fn state(&self, page: PageId) -> &PageState {
        self.states.get(page)
    }

    #[inline]
    pub(crate) fn page_ptr(&self, page: PageId) -> *mut u8 {
        self.region.page_ptr(page)
    }

    fn check_range(&self, page: PageId) -> Result<(), PoolError> {
        let page_count = self.page_count();
        if page.0 >= page_count {
            return Err(PoolError::PageOutOfRange { page, page_count });
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn mark_dirty(&self, page: PageId) {
        if self.dirty.set(page) {
            self.counters.add(Counter::DirtyPagesAdded, 1);
        }
    }

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
        self.page_count.store(page.0 + 1, Ordering::Release);
        // SAFETY: mark_uptodate left the page LOCKED by this thread.
        Ok(unsafe { ExclusiveGuard::new(self, page) })
    }

    fn prepare_new_page(&self, page: PageId) -> Result<(), PoolError> {
        self.file.grow_to((page.0 + 1) * PAGE_SIZE as u64)?;
        self.reserve_frame()?;
        // SAFETY: the page is LOCKED_EVICTED by this thread: nobody else writes it.
        unsafe { std::ptr::write_bytes(self.page_ptr(page), 0, PAGE_SIZE) };
        self.resident.insert(page);
        Ok(())
    }

    /// Exclusive latch; faults the page in if it is evicted.
    #[inline]
    pub fn exclusive(&self, page: PageId) -> Result<ExclusiveGuard<'_>, PoolError> {
        if page.0 < self.page_count() {
            let state = self.state(page);
            let seen = state.load();
            if state_of(seen) == UNLOCKED && state.try_lock_exclusive(seen) {
                self.counters.add(Counter::Hits, 1);
                // SAFETY: the CAS took the exclusive latch.
                return Ok(unsafe { ExclusiveGuard::new(self, page) });
            }
        }
        self.exclusive_slow(page)
    }

    #[inline(never)]
    fn exclusive_slow(&self, page: PageId) -> Result<ExclusiveGuard<'_>, PoolError> {
        self.check_range(page)?;
        let state = self.state(page);
        for round in 0..LATCH_WAIT_ROUNDS_MAX {
            let seen = state.load();
            match state_of(seen) {
                EVICTED if state.try_lock_evicted(seen) => {
                    self.fault_in(page)?;
                    state.mark_uptodate();
                    // SAFETY: mark_uptodate left the page LOCKED by this thread.
                    return Ok(unsafe { ExclusiveGuard::new(self, page) });
                }
                UNLOCKED | MARKED if state.try_lock_exclusive(seen) => {
                    self.counters.add(Counter::Hits, 1);
                    // SAFETY: the CAS took the exclusive latch.
                    return Ok(unsafe { ExclusiveGuard::new(self, page) });
                }
                _ => backoff(round),
            }
        }
        Err(PoolError::LatchWaitLimit { page })
    }

    /// Shared latch; faults the page in if it is evicted.
    #[inline]
    pub fn shared(&self, page: PageId) -> Result<SharedGuard<'_>, PoolError> {
        if page.0 < self.page_count() {
            let state = self.state(page);
            let seen = state.load();
            if state_of(seen) == UNLOCKED && state.try_lock_shared(seen) {
                self.counters.add(Counter::Hits, 1);
                // SAFETY: the CAS took a shared latch.
                return Ok(unsafe { SharedGuard::new(self, page) });
            }
        }
        self.shared_slow(page)
    }

    #[inline(never)]
    fn shared_slow(&self, page: PageId) -> Result<SharedGuard<'_>, PoolError> {
        self.check_range(page)?;
        let state = self.state(page);
        for round in 0..LATCH_WAIT_ROUNDS_MAX {
            let seen = state.load();
            if state_of(seen) == EVICTED {
                if state.try_lock_evicted(seen) {
                    self.fault_in(page)?;
                    state.downgrade_to_shared();
                    // SAFETY: downgrade_to_shared left one shared latch held by this thread.
                    return Ok(unsafe { SharedGuard::new(self, page) });
                }
            } else if state.try_lock_shared(seen) {
                self.counters.add(Counter::Hits, 1);
                // SAFETY: the CAS took a shared latch.
                return Ok(unsafe { SharedGuard::new(self, page) });
            }
            backoff(round);
        }
        Err(PoolError::LatchWaitLimit { page })
    }

    /// Optimistic access: no latch, a version. Faults the page in if evicted, waits if locked.
    pub fn optimistic(&self, page: PageId) -> Result<OptimisticGuard<'_>, PoolError> {
        self.check_range(page)?;
        let seen = self.optimistic_version(page)?;
        Ok(OptimisticGuard::new(self, page, seen))
    }

    fn optimistic_version(&self, page: PageId) -> Result<u64, PoolError> {
        let state = self.state(page);
        let mut faulted = false;
        for round in 0..LATCH_WAIT_ROUNDS_MAX {
            let seen = state.load();
            match state_of(seen) {
                EVICTED => {
                    if state.try_lock_evicted(seen) {
                        self.fault_in(page)?;
                        state.mark_uptodate();
                        state.unlock_exclusive();
                        faulted = true;
                    }
                    continue;
                }
                LOCKED | LOCKED_EVICTED => {}
                // An access gives the page its second chance.
                MARKED if state.clear_mark(seen) => {
                    return Ok(self.count_hit(with_state(seen, UNLOCKED), faulted));
                }
                MARKED => continue,
                _ => return Ok(self.count_hit(seen, faulted)),
            }
            backoff(round);
        }
        Err(PoolError::LatchWaitLimit { page })
    }

    fn count_hit(&self, seen: u64, faulted: bool) -> u64 {
        if !faulted {
            self.counters.add(Counter::Hits, 1);
        }
        seen
    }

    /// Validated optimistic read: runs `f` on a `PageView`, validates the version, restarts on
    /// conflict (at most `OPTIMISTIC_RESTARTS_MAX` times, then under a shared latch). The
    /// result is only returned when validated.
    #[inline]
    pub fn read<R>(
        &self,
        page: PageId,
        mut f: impl FnMut(&PageView<'_>) -> R,
    ) -> Result<R, PoolError> {
        // Fast path: a resident, unmarked page, one attempt, no call out of line.
        if page.0 < self.page_count() {
            let state = self.state(page);
            let seen = state.load();
            let current = state_of(seen);
            if current == UNLOCKED || (1..=SHARED_MAX).contains(&current) {
                // SAFETY: the address is page aligned and mapped for the pool's life.
                let view = unsafe { PageView::new(self.page_ptr(page)) };
                let result = f(&view);
                if state.validate(seen) && !view.out_of_range() {
                    self.counters.add(Counter::Hits, 1);
                    return Ok(result);
                }
            }
        }
        self.read_slow(page, f)
    }

    /// `read` after the fast path failed: restarts, fault-in, marks, then the shared latch.
    #[inline(never)]
    fn read_slow<R>(
        &self,
        page: PageId,
        mut f: impl FnMut(&PageView<'_>) -> R,
    ) -> Result<R, PoolError> {
        for _ in 0..OPTIMISTIC_RESTARTS_MAX {
            let guard = self.optimistic(page)?;
            let result = guard.peek(&mut f);
            if guard.validate().is_ok() {
                return Ok(result);
            }
            self.counters.add(Counter::OptimisticRestarts, 1);
        }
        let guard = self.shared(page)?;
        // SAFETY: the shared latch keeps the page resident and unchanged while the view lives.
        let view = unsafe { PageView::new(guard.as_ptr()) };
        let result = f(&view);
        if view.out_of_range() {
            return Err(PoolError::ViewOutOfRange { page });
        }
        Ok(result)
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
    fn fault_in(&self, page: PageId) -> Result<(), PoolError> {
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

    /// Charges one frame to the budget, evicting first if it is spent.
    fn reserve_frame(&self) -> Result<(), PoolError> {
        let mut fruitless_rounds = 0;
        loop {
            let used = self.resident_frames.load(Ordering::Acquire);
            if used < self.frame_count {
                if self
                    .resident_frames
                    .compare_exchange_weak(used, used + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            if self.evict_round()? == 0 {
                fruitless_rounds += 1;
                if fruitless_rounds >= FRUITLESS_EVICTION_ROUNDS_MAX {
                    return Err(PoolError::NoEvictableFrame {
                        frame_count: self.frame_count,
                        rounds: fruitless_rounds,
                    });
                }
                backoff(fruitless_rounds + 16);
            }
        }
    }

    /// One clock round: collect up to `eviction_batch` marked pages (marking unmarked ones on
    /// the way, at most two revolutions), then run the eviction protocol on them.
    fn evict_round(&self) -> Result<usize, PoolError> {
        let freed_leaks = self.recheck_leaked();
        let batch = self.config.eviction_batch;
        let mut candidates = [PageId(0); BATCH_MAX];
        let mut candidate_count = 0;
        let mut swept = 0;
        while candidate_count < batch && swept < 2 * self.resident.capacity() {
            self.resident.sweep(SWEEP_STEP_SLOTS, |page| {
                let state = self.state(page);
                let seen = state.load();
                match state_of(seen) {
                    MARKED if candidate_count < batch => {
                        candidates[candidate_count] = page;
                        candidate_count += 1;
                    }
                    UNLOCKED => {
                        state.try_mark(seen);
                    }
                    _ => {}
                }
            });
            swept += SWEEP_STEP_SLOTS;
        }
        Ok(freed_leaks + eviction::evict_batch(&Evictor(self), &candidates[..candidate_count])?)
    }

    /// Re-checks pages whose eviction hit the refault bound: frees their frame if it is
    /// still instantiated and releases their charge. Returns how many charges were released.
    fn recheck_leaked(&self) -> usize {
        if self.leaked_count.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut leaked = self.leaked.lock().unwrap_or_else(PoisonError::into_inner);
        let before = leaked.len();
        leaked.retain(|&page| !self.try_free_leaked(page));
        let released = before - leaked.len();
        self.leaked_count
            .store(leaked.len() as u64, Ordering::Relaxed);
        released
    }

    /// True when the charge was released.
    fn try_free_leaked(&self, page: PageId) -> bool {
        let state = self.state(page);
        let seen = state.load();
        match state_of(seen) {
            EVICTED if state.try_lock_evicted(seen) => {
                let freed = match self.region.is_resident(page) {
                    Ok(false) => true,
                    Ok(true) => {
                        self.counters.add(Counter::RefaultRetries, 1);
                        self.counters.add(Counter::Shootdowns, 1);
                        self.region.shoot_down(page).is_ok()
                    }
                    Err(_) => false,
                };
                state.unlock_evicted();
                if freed {
                    self.resident_frames.fetch_sub(1, Ordering::AcqRel);
                }
                freed
            }
            // Faulted in again: the fault-in charged the frame anew.
            EVICTED | LOCKED_EVICTED => false,
            _ => {
                self.resident_frames.fetch_sub(1, Ordering::AcqRel);
                true
            }
        }
    }

    /// Writes back the dirty pages among `pages`, all exclusively latched by the caller, with
    /// one submission; marks the written ones clean.
    fn write_back_locked(&self, pages: &[PageId], outcomes: &mut [Result<(), PoolError>]) {
        assert!(pages.len() <= BATCH_MAX && outcomes.len() == pages.len());
        let mut requests = [IoRequest {
            kind: IoKind::Write,
            offset: 0,
            buf: std::ptr::null_mut(),
            len: 0,
        }; BATCH_MAX];
        let mut request_index = [0usize; BATCH_MAX];
        let mut request_count = 0;
        for (index, &page) in pages.iter().enumerate() {
            outcomes[index] = Ok(());
            if !self.dirty.get(page) {
                continue;
            }
            if let Err(error) = self.run_before_write_back(page) {
                outcomes[index] = Err(error);
                continue;
            }
            requests[request_count] = IoRequest {
                kind: IoKind::Write,
                offset: page.0 * PAGE_SIZE as u64,
                buf: self.page_ptr(page),
                len: PAGE_SIZE,
            };
            request_index[request_count] = index;
            request_count += 1;
        }
        let mut io_outcomes: [Result<(), IoError>; BATCH_MAX] = std::array::from_fn(|_| Ok(()));
        // SAFETY: every page is exclusively latched by the caller: nobody writes its bytes
        // until the batch completes, and the frames stay mapped.
        unsafe {
            self.io.submit_batch(
                &self.file,
                &requests[..request_count],
                &mut io_outcomes[..request_count],
            )
        };
        for (&index, outcome) in request_index
            .iter()
            .zip(io_outcomes.iter_mut())
            .take(request_count)
        {
            match std::mem::replace(outcome, Ok(())) {
                Ok(()) => {
                    self.counters.add(Counter::Writes, 1);
                    if self.dirty.clear(pages[index]) {
                        self.counters.add(Counter::DirtyPagesCleaned, 1);
                    }
                }
                Err(error) => outcomes[index] = Err(error.into()),
            }
        }
    }

    fn run_before_write_back(&self, page: PageId) -> Result<(), PoolError> {
        let Some(hooks) = &self.config.hooks else {
            return Ok(());
        };
        // SAFETY: the caller holds the exclusive latch: this is the only reference.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.page_ptr(page), PAGE_SIZE) };
        hooks.before_write_back(page, bytes)
    }

    /// Writes every dirty page (batched, one submission per batch), then fdatasyncs. Pages
    /// latched by others are waited for one at a time, holding no other latch. Every page is
    /// tried; the first error is returned and failed pages stay dirty.
    pub fn flush(&self) -> Result<(), PoolError> {
        let mut dirty = Vec::new();
        self.resident.for_each(|page| {
            if self.dirty.get(page) {
                dirty.push(page);
            }
        });
        let mut first_error = None;
        let mut busy = Vec::new();
        for chunk in dirty.chunks(self.config.eviction_batch) {
            let mut locked = [PageId(0); BATCH_MAX];
            let mut locked_count = 0;
            for &page in chunk {
                match self.lock_for_write_back(page, false) {
                    Ok(WriteBackLatch::Locked) => {
                        locked[locked_count] = page;
                        locked_count += 1;
                    }
                    Ok(WriteBackLatch::Clean) => {}
                    Ok(WriteBackLatch::Busy) => busy.push(page),
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            self.write_back_and_unlock(&locked[..locked_count], &mut first_error);
        }
        for page in busy {
            match self.lock_for_write_back(page, true) {
                Ok(WriteBackLatch::Locked) => self.write_back_and_unlock(&[page], &mut first_error),
                Ok(_) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        self.io.sync_data(&self.file)?;
        Ok(())
    }

    fn lock_for_write_back(&self, page: PageId, wait: bool) -> Result<WriteBackLatch, PoolError> {
        let state = self.state(page);
        for round in 0..LATCH_WAIT_ROUNDS_MAX {
            if !self.dirty.get(page) {
                return Ok(WriteBackLatch::Clean);
            }
            let seen = state.load();
            if state.try_lock_exclusive(seen) {
                if self.dirty.get(page) {
                    return Ok(WriteBackLatch::Locked);
                }
                state.unlock_exclusive();
                return Ok(WriteBackLatch::Clean);
            }
            if !wait {
                return Ok(WriteBackLatch::Busy);
            }
            backoff(round);
        }
        Err(PoolError::LatchWaitLimit { page })
    }

    fn write_back_and_unlock(&self, pages: &[PageId], first_error: &mut Option<PoolError>) {
        let mut outcomes: [Result<(), PoolError>; BATCH_MAX] = std::array::from_fn(|_| Ok(()));
        let outcomes = &mut outcomes[..pages.len()];
        self.write_back_locked(pages, outcomes);
        for (&page, outcome) in pages.iter().zip(outcomes.iter_mut()) {
            self.state(page).unlock_exclusive();
            if let Err(error) = std::mem::replace(outcome, Ok(())) {
                first_error.get_or_insert(error);
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let resident_bytes = self.resident_frames.load(Ordering::Relaxed) * PAGE_SIZE as u64;
        self.counters.snapshot(resident_bytes)
    }

    /// What another thread or process needs to read pages zero-copy (memfd backing only).
    pub fn export(&self) -> Result<Export, PoolError> {
        let Some(frames) = self.region.memfd() else {
            return Err(PoolError::ExportNeedsMemfd);
        };
        Ok(Export {
            frames: reopen_read_only(frames)?,
            states: reopen_read_only(self.states.memfd())?,
        })
    }

    /// Whether a frame is instantiated at the page's address right now (mincore), for tests
    /// and the stress tool.
    pub fn frame_resident(&self, page: PageId) -> Result<bool, PoolError> {
        self.region.is_resident(page)
    }

    pub fn backing(&self) -> Backing {
        self.config.backing
    }
}

/// The pool as eviction sees it (a private type, so the trait impl exposes no internals).
struct Evictor<'a>(&'a Pool);

impl EvictionEnv for Evictor<'_> {
    type Frames = Region;

    fn state(&self, page: PageId) -> &PageState {
        self.0.states.get(page)
    }

    fn frames(&self) -> &Region {
        &self.0.region
    }

    fn write_back(&self, pages: &[PageId], outcomes: &mut [Result<(), PoolError>]) {
        self.0.write_back_locked(pages, outcomes);
    }

    fn release(&self, page: PageId) {
        assert!(
            self.0.resident.remove(page),
            "evicted page {} was not resident",
            page.0
        );
        self.0.resident_frames.fetch_sub(1, Ordering::AcqRel);
    }

    fn leak(&self, page: PageId) {
        assert!(
            self.0.resident.remove(page),
            "evicted page {} was not resident",
            page.0
        );
        let mut leaked = self.0.leaked.lock().unwrap_or_else(PoisonError::into_inner);
        leaked.push(page);
        self.0
            .leaked_count
            .store(leaked.len() as u64, Ordering::Relaxed);
    }

    fn count_shootdown(&self, retry: bool) {
        self.0.counters.add(Counter::Shootdowns, 1);
        if retry {
            self.0.counters.add(Counter::RefaultRetries, 1);
        }
    }

    fn count_eviction(&self) {
        self.0.counters.add(Counter::Evictions, 1);
    }

    fn probe(&self, page: PageId, step: Step) {
        if let Some(probe) = &self.0.config.eviction_probe {
            // SAFETY: the page's address is page aligned and mapped for the pool's life.
            let view = unsafe { PageView::new(self.0.page_ptr(page)) };
            probe.after_step(page, step, &view);
        }
    }
}
