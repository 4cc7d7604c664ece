//! Fault-in (one read per page, however many threads want it), batched prefetch, the
//! streaming fault-in (`FaultStream`), allocation, and the frame budget that makes room
//! through the clock. Every one of them ends in `latch::finish_fault_in`, with the page
//! exclusively latched.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bufpool_io::{Completion, IoError, IoKind, IoQueue, IoRequest};

use super::{Pool, backoff};
use crate::eviction::Frames;
use crate::guard::ExclusiveGuard;
use crate::latch::{self, FaultInEnv};
use crate::state::{COOLING, LOCKED, MARKED, PageState, SHARED_MAX, UNLOCKED, state_of};
use crate::stats::Counter;
use crate::{BATCH_MAX, FrameCensus, PAGE_SIZE, PageId, PoolError};

/// Eviction rounds (each one charge attempt) before giving up on a frame: other threads keep
/// taking the frames this one frees.
const RESERVE_ATTEMPTS_MAX: u32 = 1 << 20;
/// Rounds in a row that free and mark nothing before `NoEvictableFrame` may be returned ...
const FRUITLESS_EVICTION_ROUNDS_MIN: u32 = 64;
/// ... and for how long: latch holders may be doing I/O or lingering readers (a shared
/// latch, a reader refaulting a victim), which all end on their own.
const NO_FRAME_WAIT: Duration = Duration::from_secs(1);

/// The pool as the latch loop and the fault-in see it.
pub(super) struct Faulter<'a>(pub(super) &'a Pool);

impl FaultInEnv for Faulter<'_> {
    fn state(&self, page: PageId) -> &PageState {
        self.0.state(page)
    }

    fn read_in(&self, page: PageId) -> Result<(), PoolError> {
        self.0.read_in(page)
    }

    fn enter_resident(&self, page: PageId) {
        self.0.resident.insert(page);
    }

    fn backoff(&self, round: u32) {
        backoff(round);
    }
}

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
        latch::finish_fault_in(&Faulter(self), page, self.prepare_new_page(page))?;
        // The zeroes are the page's first contents: they must reach the disk.
        self.mark_dirty(page);
        self.page_count.store(page.0 + 1, Ordering::Release);
        // SAFETY: finish_fault_in left the page LOCKED by this thread.
        Ok(unsafe { ExclusiveGuard::new(self, page) })
    }

    /// With `page` LOCKED_EVICTED: its blocks on disk, a charged frame of zeroes.
    fn prepare_new_page(&self, page: PageId) -> Result<(), PoolError> {
        // Allocates the page's blocks (and extends the file over it) now, so its write-back
        // cannot fail with ENOSPC later; one fallocate, no fstat.
        self.file
            .preallocate(page.0 * PAGE_SIZE as u64, PAGE_SIZE as u64)?;
        self.reserve_frame()?;
        // SAFETY: the page is LOCKED_EVICTED by this thread: nobody else writes it.
        unsafe { std::ptr::write_bytes(self.page_ptr(page), 0, PAGE_SIZE) };
        self.fill_ended();
        Ok(())
    }

    /// Batch fault-in: every evicted page of `pages` is read with one io submission per
    /// `BATCH_MAX` pages. Pages already resident or latched are skipped. The pages read start
    /// cold (MARKED), as after a lookup's fault-in: their first read warms them, or, through
    /// `optimistic_unwarmed`, leaves them cold.
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
            let read = std::mem::replace(outcome, Ok(())).map_err(PoolError::from);
            let filled = self.settle_read(page, read);
            match latch::finish_fault_in(&Faulter(self), page, filled) {
                Ok(()) => {
                    self.state(page).unlock_exclusive_cold();
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A stream of fault-ins on the calling thread with up to `depth` reads in flight, each
    /// handed back as soon as it is in (see [`FaultStream`]). It owns its own ring.
    pub fn fault_stream(&self, depth: u32) -> Result<FaultStream<'_>, PoolError> {
        let queue = self.io.queue(&self.file, depth)?;
        Ok(FaultStream {
            pool: self,
            queue,
            completions: Vec::with_capacity(depth as usize),
        })
    }

    /// `FaultInEnv::read_in`: with `page` LOCKED_EVICTED by this thread, charge a frame and
    /// read the page into its own address. On error nothing stays charged.
    fn read_in(&self, page: PageId) -> Result<(), PoolError> {
        self.reserve_frame()?;
        let ptr = self.page_ptr(page);
        // SAFETY: the page is LOCKED_EVICTED by this thread: nobody else writes its frame;
        // optimistic readers only load from it atomically and fail validation.
        let read = unsafe {
            self.io
                .read_at(&self.file, page.0 * PAGE_SIZE as u64, ptr, PAGE_SIZE)
        };
        self.settle_read(page, read.map_err(PoolError::from))
    }

    /// After the read of a fault-in into its charged frame: checks the bytes (`after_read`),
    /// counts the miss, and on any error frees and uncharges the frame.
    fn settle_read(&self, page: PageId, read: Result<(), PoolError>) -> Result<(), PoolError> {
        self.fill_ended();
        self.counters.add(Counter::Misses, 1);
        let checked = read.and_then(|()| self.run_after_read(page));
        match checked {
            Ok(()) => self.counters.add(Counter::Reads, 1),
            Err(_) => {
                // The frame holds a partial or rejected page: free it, stay evicted.
                if let Err(shootdown_error) = self.region.shoot_down(page) {
                    tracing::warn!(page = page.0, %shootdown_error, "could not free the frame of a failed fault-in");
                }
                self.resident_frames.fetch_sub(1, Ordering::AcqRel);
            }
        }
        checked
    }

    fn run_after_read(&self, page: PageId) -> Result<(), PoolError> {
        let Some(hooks) = &self.config.hooks else {
            return Ok(());
        };
        // SAFETY: LOCKED_EVICTED by this thread; the read has completed.
        let bytes = unsafe { std::slice::from_raw_parts(self.page_ptr(page), PAGE_SIZE) };
        hooks.after_read(page, bytes)
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

    /// Charges one frame if the budget allows it; false when it is spent. With the memfd
    /// backing the kernel's count of the memfd's pages must allow it too: readers in any
    /// process can re-instantiate the frame of a page evicted under them (the refault no
    /// protocol step can see), and such a frame occupies memory uncharged until a clock round
    /// finds it (`Pool::free_strays`). Counting the memfd makes the budget a bound on the
    /// memory the frames really occupy, not on the pool's own charges.
    fn try_charge_frame(&self) -> bool {
        let mut used = self.resident_frames.load(Ordering::Acquire);
        loop {
            if used >= self.frame_count {
                return false;
            }
            match self.resident_frames.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        self.after_charge(used + 1);
        // Counted before the kernel is asked, so that of two concurrent chargers the later
        // one sees the earlier one's frame.
        let filling = self.filling.fetch_add(1, Ordering::AcqRel) + 1;
        if self.region.memfd().is_some() {
            let kernel_frames = self
                .region
                .kernel_frame_bytes()
                .map_or(0, |bytes| bytes / PAGE_SIZE as u64);
            if kernel_frames + filling > self.frame_count {
                self.filling.fetch_sub(1, Ordering::AcqRel);
                self.resident_frames.fetch_sub(1, Ordering::AcqRel);
                self.strays_suspected.store(true, Ordering::Relaxed);
                return false;
            }
        }
        true
    }

    /// A charged frame's fill ended (filled or given back).
    fn fill_ended(&self) {
        self.filling.fetch_sub(1, Ordering::AcqRel);
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
                UNLOCKED | COOLING | MARKED => census.unlatched += 1,
                shared if (1..=SHARED_MAX).contains(&shared) => census.shared += 1,
                _ => census.in_transition += 1,
            }
        });
        census.in_eviction = census.exclusive.min(self.evicting.load(Ordering::Relaxed));
        census.exclusive -= census.in_eviction;
        census.awaiting_recheck = self.leaked_count.load(Ordering::Relaxed);
        let charged = self.resident_frames.load(Ordering::Acquire);
        census.in_transition += charged.saturating_sub(in_set + census.awaiting_recheck);
        census
    }
}

/// Fault-ins in flight on one thread, each finished as soon as its read completes: the
/// split-phase form of [`Pool::prefetch`], for a caller that wants every page the moment it is
/// in rather than when a batch's slowest read is (a server answering each request when its
/// own page arrives, and taking new requests meanwhile).
///
/// A started page stays LOCKED_EVICTED by this thread until [`FaultStream::complete`] hands
/// it back resident and unlatched (or evicted, on error); other threads wanting it wait for
/// that, as for any fault-in. So the owner must not block on a started page itself before
/// completing it. Dropping the stream completes every read first. Not `Send`: the ring
/// belongs to the thread.
pub struct FaultStream<'pool> {
    pool: &'pool Pool,
    queue: IoQueue<'pool>,
    completions: Vec<Completion>,
}

impl FaultStream<'_> {
    /// Reads started and not yet handed back by `complete`.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Whether `start` may be called (fewer than `depth` reads in flight).
    pub fn has_room(&self) -> bool {
        self.queue.in_flight() < self.queue.depth()
    }

    /// Starts reading `page` if it is evicted and unlatched: `Ok(true)`, and `complete` will
    /// hand it back. `Ok(false)` if it is resident or already being faulted in (by another
    /// thread or by this stream): nothing to do here. Errors (a page out of range, no frame)
    /// leave the page as it was.
    pub fn start(&mut self, page: PageId) -> Result<bool, PoolError> {
        assert!(self.has_room(), "FaultStream::start with the queue full");
        let pool = self.pool;
        pool.check_range(page)?;
        let state = pool.state(page);
        let seen = state.load();
        if !state.try_lock_evicted(seen) {
            return Ok(false);
        }
        if let Err(error) = pool.reserve_frame() {
            state.unlock_evicted();
            return Err(error);
        }
        let request = IoRequest::read(page.0 * PAGE_SIZE as u64, pool.page_ptr(page), PAGE_SIZE);
        // SAFETY: the page is LOCKED_EVICTED by this thread until `complete` (or `drop`) reaps
        // this read: nobody else writes its frame, optimistic readers only load from it and
        // fail validation, and the region stays mapped for the pool's lifetime, which the
        // stream's borrow outlives.
        let pushed = unsafe { self.queue.push(request, page.0) };
        match pushed {
            Ok(()) => Ok(true),
            Err(error) => {
                let filled = pool.settle_read(page, Err(PoolError::from(error)));
                latch::finish_fault_in(&Faulter(pool), page, filled).map(|()| false)
            }
        }
    }

    /// An eventfd signalled as started reads complete, for an owner that waits in an event
    /// loop: when it fires, `submit` and then `complete(0, ..)` finish what is in (see
    /// `IoQueue::completion_eventfd`).
    pub fn completion_eventfd(&mut self) -> Result<std::os::fd::OwnedFd, PoolError> {
        Ok(self.queue.completion_eventfd()?)
    }

    /// Hands the started reads to the kernel without waiting.
    pub fn submit(&mut self) -> Result<(), PoolError> {
        Ok(self.queue.submit()?)
    }

    /// Waits until at least `min_complete` started reads (capped at those in flight) are
    /// done, and finishes every read that is: the page becomes resident and unlatched, or on
    /// error stays evicted. Appends `(page, outcome)` for each to `done`.
    pub fn complete(
        &mut self,
        min_complete: usize,
        done: &mut Vec<(PageId, Result<(), PoolError>)>,
    ) {
        let pool = self.pool;
        self.queue.reap(min_complete, &mut self.completions);
        for completion in self.completions.drain(..) {
            let page = PageId(completion.tag);
            let filled = pool.settle_read(page, completion.result.map_err(PoolError::from));
            let outcome = latch::finish_fault_in(&Faulter(pool), page, filled)
                .map(|()| pool.state(page).unlock_exclusive());
            done.push((page, outcome));
        }
    }
}

impl Drop for FaultStream<'_> {
    fn drop(&mut self) {
        // Started pages are latched by this thread: finish them before the queue goes.
        let mut done = Vec::new();
        // Each pass completes at least one read.
        while self.in_flight() > 0 {
            self.complete(self.in_flight(), &mut done);
            done.clear();
        }
    }
}
