//! Guards, one per latch mode. Each releases its latch on drop.

use std::ops::{Deref, DerefMut};

use crate::state::{state_of, version_of};
use crate::view::PageView;
use crate::{PAGE_SIZE, PageId, Pool, Restart};

/// Exclusive latch: the page's bytes, writable. The first mutable access (`DerefMut`) marks
/// the page dirty; reading through `Deref` does not, so a latched page that is never written
/// costs no write-back. Dropping the guard bumps the version (optimistic readers restart).
pub struct ExclusiveGuard<'a> {
    pool: &'a Pool,
    page: PageId,
    bytes: *mut u8,
    /// The page was marked dirty through this guard (spares the bitmap on later writes).
    dirtied: bool,
}

impl<'a> ExclusiveGuard<'a> {
    /// # Safety
    /// The caller holds `page`'s exclusive latch (state LOCKED) and hands it to the guard.
    pub(crate) unsafe fn new(pool: &'a Pool, page: PageId) -> ExclusiveGuard<'a> {
        ExclusiveGuard {
            pool,
            page,
            bytes: pool.page_ptr(page),
            dirtied: false,
        }
    }

    pub fn page_id(&self) -> PageId {
        self.page
    }
}

impl Deref for ExclusiveGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the exclusive latch keeps every other writer, fault-in and eviction away;
        // the page is resident and mapped for the pool's life.
        unsafe { std::slice::from_raw_parts(self.bytes, PAGE_SIZE) }
    }
}

impl DerefMut for ExclusiveGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        if !self.dirtied {
            self.pool.mark_dirty(self.page);
            self.dirtied = true;
        }
        // SAFETY: as in deref; &mut self makes this the only reference through the guard.
        // Optimistic readers may read concurrently, but only through atomic loads and they
        // discard what they read (the version changes on unlock).
        unsafe { std::slice::from_raw_parts_mut(self.bytes, PAGE_SIZE) }
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.pool.state(self.page).unlock_exclusive();
    }
}

/// Shared latch: the page's bytes, read-only and stable while the guard lives.
pub struct SharedGuard<'a> {
    pool: &'a Pool,
    page: PageId,
    bytes: *const u8,
}

impl<'a> SharedGuard<'a> {
    /// # Safety
    /// The caller holds one shared latch on `page` and hands it to the guard.
    pub(crate) unsafe fn new(pool: &'a Pool, page: PageId) -> SharedGuard<'a> {
        SharedGuard {
            pool,
            page,
            bytes: pool.page_ptr(page),
        }
    }

    pub fn page_id(&self) -> PageId {
        self.page
    }

    /// Hints the CPU to start loading the cache lines of `range` (bytes of the page, clamped
    /// to it), so that a reader about to walk them waits for memory once, not once per line.
    #[inline]
    pub fn prefetch(&self, range: std::ops::Range<usize>) {
        prefetch_range(self.bytes, range);
    }
}

const CACHE_LINE: usize = 64;

/// Prefetches the lines of bytes `range` (clamped to the page) of the page at `base`.
#[inline]
pub(crate) fn prefetch_range(base: *const u8, range: std::ops::Range<usize>) {
    let end = range.end.min(PAGE_SIZE);
    let mut line = range.start & !(CACHE_LINE - 1);
    // Bounded: at most PAGE_SIZE / CACHE_LINE lines.
    while line < end {
        prefetch_line(base.wrapping_add(line));
        line += CACHE_LINE;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_line(address: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: a prefetch is a hint: it never faults and changes no memory, whatever the
    // address (the callers pass addresses inside a latched, mapped page anyway).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn prefetch_line(_address: *const u8) {}

impl Deref for SharedGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the shared latch excludes writers, fault-in and eviction while it lives.
        unsafe { std::slice::from_raw_parts(self.bytes, PAGE_SIZE) }
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.pool.state(self.page).unlock_shared();
    }
}

/// Optimistic: no latch held, only the state word seen when the guard was taken. Reads go
/// through `peek` (atomic loads) and count only once `validate` succeeds.
pub struct OptimisticGuard<'a> {
    pool: &'a Pool,
    page: PageId,
    seen: u64,
    out_of_range: std::cell::Cell<bool>,
}

impl<'a> OptimisticGuard<'a> {
    pub(crate) fn new(pool: &'a Pool, page: PageId, seen: u64) -> OptimisticGuard<'a> {
        OptimisticGuard {
            pool,
            page,
            seen,
            out_of_range: std::cell::Cell::new(false),
        }
    }

    pub fn page_id(&self) -> PageId {
        self.page
    }

    /// Runs `f` on the page's bytes through atomic loads. The result is NOT yet validated.
    pub fn peek<R>(&self, f: impl FnOnce(&PageView<'_>) -> R) -> R {
        // SAFETY: the page address is page aligned and mapped for the pool's life (the
        // reservation is never unmapped while `pool` is borrowed); eviction may zero or free
        // the frame, which only makes a later touch refault, never unmaps the address.
        let view = unsafe { PageView::new(self.pool.page_ptr(self.page)) };
        let result = f(&view);
        if view.out_of_range() {
            self.out_of_range.set(true);
        }
        result
    }

    /// Ok iff the page's version is unchanged since the guard was taken, no writer holds it,
    /// and no peek went outside the page.
    pub fn validate(&self) -> Result<(), Restart> {
        if !self.out_of_range.get() && self.pool.state(self.page).validate(self.seen) {
            Ok(())
        } else {
            Err(Restart)
        }
    }

    /// Takes the exclusive latch if the page is still at the version seen.
    pub fn upgrade(self) -> Result<ExclusiveGuard<'a>, Restart> {
        let state = self.pool.state(self.page);
        let now = state.load();
        if version_of(now) != version_of(self.seen) || !state.try_lock_exclusive(now) {
            return Err(Restart);
        }
        // SAFETY: the CAS above took the exclusive latch.
        Ok(unsafe { ExclusiveGuard::new(self.pool, self.page) })
    }

    /// Takes a shared latch if the page is still at the version seen.
    pub fn upgrade_shared(self) -> Result<SharedGuard<'a>, Restart> {
        let state = self.pool.state(self.page);
        let now = state.load();
        if version_of(now) != version_of(self.seen) || !state.try_lock_shared(now) {
            return Err(Restart);
        }
        debug_assert!(state_of(state.load()) >= 1);
        // SAFETY: the CAS above took a shared latch.
        Ok(unsafe { SharedGuard::new(self.pool, self.page) })
    }
}
