//! The pool: its memory and tables, and the latching access paths (exclusive, shared,
//! optimistic, read): inline fast paths, then the one latch loop of `latch.rs`. The pool's
//! side of fault-in (`FaultInEnv`), prefetch, allocation and the frame budget are in
//! `fault_in.rs`, write-back and flush in `write_back.rs`, the clock that feeds eviction in
//! `clock.rs`.
//!
//! Invariants:
//! 1. A page is resident (in the resident set, charged to the budget) iff its state is
//!    UNLOCKED, MARKED, shared or LOCKED; LOCKED_EVICTED pages are being faulted in or evicted
//!    by the latch holder; EVICTED pages have no frame charged.
//! 2. `resident_frames <= frame_count` always: a frame is reserved (CAS) before a fault-in.
//!    With the memfd backing a reservation also needs the kernel's count of the memfd's pages
//!    (plus fills in flight) within the budget, so frames that late readers re-instantiate
//!    count too (`fault_in.rs`, `try_charge_frame`; freed by `clock.rs`, `free_strays`).
//! 3. A dirty page is resident: eviction writes it back first and keeps it when that fails.
//! 4. Only the holder of the exclusive latch reads a page in, writes it back, or frees it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bufpool_io::{DirectFile, IoEngine};

use crate::eviction::Frames;
use crate::guard::{ExclusiveGuard, OptimisticGuard, SharedGuard};
use crate::latch::{self, Mode};
use crate::region::{DirtyBits, Region, StateTable, reopen_read_only};
use crate::replacer::ResidentSet;
use crate::state::{EVICTED, LOCKED_EVICTED, PageState, SHARED_MAX, UNLOCKED, state_of};
use crate::stats::{Counter, Counters, Stats};
use crate::view::PageView;
use crate::{Backing, Config, Export, PAGE_SIZE, PageId, PoolError};

mod clock;
mod fault_in;
mod write_back;

pub use fault_in::FaultStream;
use fault_in::Faulter;

/// Optimistic attempts in `Pool::read` before it falls back to a shared latch.
pub const OPTIMISTIC_RESTARTS_MAX: u32 = 16;

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
    /// Charged frames whose fault-in has not filled them yet (the kernel does not count them
    /// yet, or counts them already: `try_charge_frame` assumes the latter).
    filling: AtomicU64,
    /// A kernel count exceeded the charges: frames a late reader re-instantiated under an
    /// evicted page may exist; the next clock round looks for them.
    strays_suspected: AtomicBool,
    /// Candidates of the clock rounds under way (an upper bound on victims locked by them).
    evicting: AtomicU64,
    frame_count: u64,
    page_count: AtomicU64,
    /// Serialises `allocate` (file growth); never taken on the access paths.
    allocation: Mutex<()>,
    /// Pages whose eviction hit `REFAULT_RETRIES_MAX`: still charged, re-checked later.
    leaked: Mutex<Vec<PageId>>,
    leaked_count: AtomicU64,
    counters: Counters,
    /// The thread `make_room` runs on, if any: woken when the free frames run low.
    evictor: OnceLock<std::thread::Thread>,
    config: Config,
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
            filling: AtomicU64::new(0),
            strays_suspected: AtomicBool::new(false),
            evicting: AtomicU64::new(0),
            frame_count,
            page_count: AtomicU64::new(page_count),
            allocation: Mutex::new(()),
            leaked: Mutex::new(Vec::new()),
            leaked_count: AtomicU64::new(0),
            counters: Counters::new(),
            evictor: OnceLock::new(),
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

    /// Hints the CPU to start loading `page`'s state word and bytes `range` of its frame, for
    /// a reader that will latch it soon (e.g. a scan's next leaf). A hint only: no latch, no
    /// fault-in; an evicted page or an id out of range is ignored.
    #[inline]
    pub fn prefetch_page(&self, page: PageId, range: std::ops::Range<usize>) {
        if page.0 >= self.page_count() {
            return;
        }
        crate::guard::prefetch_line(std::ptr::from_ref(self.state(page)).cast::<u8>());
        crate::guard::prefetch_range(self.page_ptr(page), range);
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

    /// Exclusive latch; faults the page in if it is evicted.
    #[inline(always)]
    pub fn exclusive(&self, page: PageId) -> Result<ExclusiveGuard<'_>, PoolError> {
        // One place builds the guard, so the hit path keeps it in registers instead of
        // joining the slow path's returned value in memory.
        if !self.try_exclusive_hit(page) {
            self.exclusive_slow(page)?;
        }
        // SAFETY: the hit's CAS or `exclusive_slow` left the page LOCKED by this thread.
        Ok(unsafe { ExclusiveGuard::new(self, page) })
    }

    #[inline(always)]
    fn try_exclusive_hit(&self, page: PageId) -> bool {
        if page.0 >= self.page_count() {
            return false;
        }
        let state = self.state(page);
        let seen = state.load();
        let taken = state_of(seen) == UNLOCKED && state.try_lock_exclusive(seen);
        if taken {
            self.counters.add(Counter::Hits, 1);
        }
        taken
    }

    /// Leaves the page LOCKED by this thread, or returns the error.
    #[inline(never)]
    fn exclusive_slow(&self, page: PageId) -> Result<(), PoolError> {
        self.check_range(page)?;
        let acquired = latch::acquire(&Faulter(self), page, Mode::Exclusive)?;
        self.count_access(acquired.faulted);
        Ok(())
    }

    /// Shared latch; faults the page in if it is evicted.
    #[inline(always)]
    pub fn shared(&self, page: PageId) -> Result<SharedGuard<'_>, PoolError> {
        if !self.try_shared_hit(page) {
            self.shared_slow(page)?;
        }
        // SAFETY: the hit's CAS or `shared_slow` left one shared latch held by this thread.
        Ok(unsafe { SharedGuard::new(self, page) })
    }

    #[inline(always)]
    fn try_shared_hit(&self, page: PageId) -> bool {
        if page.0 >= self.page_count() {
            return false;
        }
        let state = self.state(page);
        let seen = state.load();
        let taken = state_of(seen) == UNLOCKED && state.try_lock_shared(seen);
        if taken {
            self.counters.add(Counter::Hits, 1);
        }
        taken
    }

    /// Leaves one shared latch held by this thread, or returns the error.
    #[inline(never)]
    fn shared_slow(&self, page: PageId) -> Result<(), PoolError> {
        self.check_range(page)?;
        let acquired = latch::acquire(&Faulter(self), page, Mode::Shared)?;
        self.count_access(acquired.faulted);
        Ok(())
    }

    /// Optimistic access: no latch, a version. Faults the page in if evicted, waits if locked.
    pub fn optimistic(&self, page: PageId) -> Result<OptimisticGuard<'_>, PoolError> {
        self.optimistic_as(page, Mode::Optimistic)
    }

    /// `optimistic` for a page that is resident now; `None` (no fault-in, no I/O) if it is
    /// evicted or being faulted in, so a caller can batch its misses into one `prefetch`.
    /// A page evicted between the check and the access is faulted in as by `optimistic`.
    pub fn optimistic_if_resident(
        &self,
        page: PageId,
    ) -> Result<Option<OptimisticGuard<'_>>, PoolError> {
        self.check_range(page)?;
        match state_of(self.state(page).load()) {
            EVICTED | LOCKED_EVICTED => Ok(None),
            _ => self.optimistic(page).map(Some),
        }
    }

    /// `optimistic` that never waits and never reads: `None` unless the page is readable
    /// right now (not evicted, not being faulted in, not exclusively latched). For a thread
    /// that must not block on another's latch, such as one holding fault-ins of its own in
    /// a [`FaultStream`] that other threads may be waiting for.
    pub fn try_optimistic(&self, page: PageId) -> Result<Option<OptimisticGuard<'_>>, PoolError> {
        self.check_range(page)?;
        let state = self.state(page);
        let Some(seen) = latch::optimistic_version(state, state.load()) else {
            return Ok(None);
        };
        self.count_access(false);
        Ok(Some(OptimisticGuard::new(self, page, seen)))
    }

    /// Whether `page` is evicted and unlatched at this instant (so a fault-in of it could
    /// start): after `try_optimistic` gave up, tells a page to read from one to leave to
    /// whoever holds it. False for a page out of range.
    pub fn is_evicted(&self, page: PageId) -> bool {
        self.check_range(page).is_ok() && state_of(self.state(page).load()) == EVICTED
    }

    /// `optimistic` that does not warm the page for the clock (see `Mode::OptimisticUnwarmed`):
    /// for the read that follows a `prefetch` of the page, so that the prefetch and that read
    /// count as the page's one access, as a lookup's own fault-in does.
    pub fn optimistic_unwarmed(&self, page: PageId) -> Result<OptimisticGuard<'_>, PoolError> {
        self.optimistic_as(page, Mode::OptimisticUnwarmed)
    }

    /// An optimistic guard taken through the latch loop in `mode` (one of the optimistic ones).
    fn optimistic_as(&self, page: PageId, mode: Mode) -> Result<OptimisticGuard<'_>, PoolError> {
        self.check_range(page)?;
        let acquired = latch::acquire(&Faulter(self), page, mode)?;
        self.count_access(acquired.faulted);
        Ok(OptimisticGuard::new(self, page, acquired.seen))
    }

    /// Counts a hit unless the access faulted the page in (the fault-in counted a miss).
    fn count_access(&self, faulted: bool) {
        if !faulted {
            self.counters.add(Counter::Hits, 1);
        }
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
        self.check_range(page)?;
        self.region.is_resident(page)
    }

    /// Bytes the pool's frames occupy as the kernel counts them now: the frame memfd's
    /// allocated blocks (frames instantiated by any process included), or the resident set
    /// size of the anonymous region. `frame_budget_bytes` bounds it (see DESIGN.md, "Frame
    /// budget").
    pub fn frame_memory_bytes(&self) -> Result<u64, PoolError> {
        self.region.kernel_frame_bytes()
    }

    pub fn backing(&self) -> Backing {
        self.config.backing
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use bufpool_io::{DirectFile, OpenOptions};

    use super::Pool;
    use crate::{Backing, Config, PAGE_SIZE, PageId};

    fn pool_of_zero_pages(name: &str, page_count: u64) -> Pool {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/bufpool");
        std::fs::create_dir_all(&dir).expect("create test-data dir");
        let path = dir.join(format!("{name}-{}.db", std::process::id()));
        let file = std::fs::File::create(&path).expect("create data file");
        file.set_len(page_count * PAGE_SIZE as u64)
            .expect("size data file");
        drop(file);
        let file = DirectFile::open(&path, &OpenOptions::default()).expect("open O_DIRECT");
        let config = Config {
            page_count_max: 1 << 12,
            frame_budget_bytes: 32 * PAGE_SIZE as u64,
            backing: Backing::Anonymous,
            eviction_batch: 8,
            ..Config::default()
        };
        Pool::open(file, config).expect("open pool")
    }

    #[test]
    fn optimistic_if_resident_never_faults() {
        let pool = pool_of_zero_pages("if-resident", 64);
        assert!(pool.optimistic_if_resident(PageId(3)).unwrap().is_none());
        assert_eq!(pool.stats().reads, 0, "an evicted page is not read");
        pool.prefetch(&[PageId(3)]).unwrap();
        let guard = pool.optimistic_if_resident(PageId(3)).unwrap().unwrap();
        assert_eq!(guard.page_id(), PageId(3));
        assert!(guard.validate().is_ok());
        assert_eq!(pool.stats().reads, 1);
        assert!(pool.optimistic_if_resident(PageId(1000)).is_err());
    }
}
