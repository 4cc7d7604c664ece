//! The clock: picks marked victims from the resident set and runs the eviction protocol on
//! them; the pool as the protocol's environment; re-checks of frames left by step 5's bound.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::Pool;
use crate::BATCH_MAX;
use crate::eviction::{self, EvictionEnv, Frames, Step};
use crate::region::Region;
use crate::state::{COOLING, EVICTED, LOCKED_EVICTED, MARKED, PageState, UNLOCKED, state_of};
use crate::stats::Counter;
use crate::view::PageView;
use crate::{PageId, PoolError};

/// What one clock round did.
pub(super) struct Round {
    /// Frames whose charge was released (evicted pages and re-checked leaks).
    pub(super) freed: usize,
    /// Pages the hand marked (they become candidates on its next visit).
    pub(super) marked: usize,
    /// The first error of the eviction batch; it belongs to the victim's owner.
    pub(super) first_error: Option<PoolError>,
}

/// Pools below this many frames get no background eviction: a reserve would be a large part
/// of them, and their faults are cheap to serve inline.
const RESERVE_FRAMES_MIN_POOL: u64 = 4096;

impl Pool {
    /// Frames the background evictor keeps free (its high water mark; it is woken below half
    /// of it): four eviction batches, at most 1/64 of the budget; 0 for small pools.
    pub fn reserve_target(&self) -> u64 {
        if self.frame_count < RESERVE_FRAMES_MIN_POOL {
            return 0;
        }
        (4 * self.config.eviction_batch as u64).min(self.frame_count / 64)
    }

    /// Frames of the budget not charged now.
    fn free_frames(&self) -> u64 {
        self.frame_count
            .saturating_sub(self.resident_frames.load(Ordering::Acquire))
    }

    /// Registers the thread that runs `make_room`: the pool unparks it whenever a fault-in
    /// leaves fewer than half of `reserve_target` frames free. At most one; later calls are
    /// ignored (false).
    pub fn set_evictor(&self, thread: std::thread::Thread) -> bool {
        self.evictor.set(thread).is_ok()
    }

    /// Called after a frame was charged: wakes the evictor when the reserve runs low.
    pub(super) fn after_charge(&self, used: u64) {
        if let Some(evictor) = self.evictor.get() {
            if self.frame_count.saturating_sub(used) < self.reserve_target() / 2 {
                evictor.unpark();
            }
        }
    }

    /// Evicts ahead of demand, for a background thread (`set_evictor`): clock rounds until
    /// `reserve_target` frames are free, a round frees and marks nothing, or `rounds_max`
    /// rounds ran. Faulting threads then find a charged-free frame instead of running a round
    /// themselves while their caller waits; they still do when the reserve is gone. Returns
    /// the frames freed. Eviction errors stay with the victims' owners, as in
    /// `reserve_frame`.
    pub fn make_room(&self, rounds_max: u32) -> u64 {
        let target = self.reserve_target();
        let mut freed = 0;
        for _ in 0..rounds_max {
            if self.free_frames() >= target {
                break;
            }
            let round = self.evict_round();
            if let Some(error) = round.first_error {
                tracing::debug!(%error, "background eviction error (the victim stays resident and dirty)");
            }
            freed += round.freed as u64;
            self.counters
                .add(Counter::BackgroundEvictions, round.freed as u64);
            if round.freed == 0 && round.marked == 0 {
                break;
            }
        }
        freed
    }

    /// One clock round: the hand visits slots until it holds `eviction_batch` marked pages
    /// (cooling the others it passes one step: UNLOCKED → COOLING → MARKED), at most one
    /// revolution, then the eviction protocol runs on them. The hand claims one slot per
    /// missing candidate, so it never passes a marked page without taking it, and no slot is
    /// visited twice in one round: a page gets marked on one visit and taken on a later one,
    /// with the accesses in between as its second chance.
    pub(super) fn evict_round(&self) -> Round {
        let freed_leaks = self.recheck_leaked() + self.free_strays();
        let batch = self.config.eviction_batch;
        let capacity = self.resident.capacity();
        let mut candidates = [PageId(0); BATCH_MAX];
        let mut candidate_count = 0;
        let mut marked = 0;
        let mut swept = 0;
        while candidate_count < batch && swept < capacity {
            let step = ((batch - candidate_count) as u64).min(capacity - swept);
            self.resident.sweep(step, |page| {
                let state = self.state(page);
                let seen = state.load();
                match state_of(seen) {
                    MARKED => {
                        candidates[candidate_count] = page;
                        candidate_count += 1;
                    }
                    // One step colder per pass; an access warms it back (`clear_mark`).
                    COOLING if state.try_mark(seen) => marked += 1,
                    UNLOCKED if state.try_cool(seen) => marked += 1,
                    _ => {}
                }
            });
            swept += step;
        }
        self.evicting
            .fetch_add(candidate_count as u64, Ordering::Relaxed);
        let outcome = eviction::evict_batch(&Evictor(self), &candidates[..candidate_count]);
        self.evicting
            .fetch_sub(candidate_count as u64, Ordering::Relaxed);
        Round {
            freed: freed_leaks + outcome.evicted,
            marked,
            first_error: outcome.first_error,
        }
    }

    /// Frees the frames that readers re-instantiated under evicted pages after their
    /// eviction's last check (memfd only: such a frame is a shmem page in the memfd, which a
    /// hole-aware `lseek` finds; private anonymous memory maps the shared zero page for a
    /// read, which occupies nothing). Runs when a kernel count exceeded the charges. Returns
    /// how many frames were freed.
    fn free_strays(&self) -> usize {
        if !self.strays_suspected.swap(false, Ordering::Relaxed) {
            return 0;
        }
        let mut freed = 0;
        let page_count = self.page_count();
        self.region.instantiated_ranges(|first, end| {
            for page in (first..end.min(page_count)).map(PageId) {
                let state = self.state(page);
                let seen = state.load();
                // Leaked pages (charged) are punched too; their re-check then releases them.
                if state_of(seen) != EVICTED || !state.try_lock_evicted(seen) {
                    continue;
                }
                if self.region.shoot_down(page).is_ok() {
                    self.counters.add(Counter::Shootdowns, 1);
                    freed += 1;
                }
                state.unlock_evicted();
            }
        });
        freed
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
                // Released only once a check finds no frame: a reader still touching the
                // page would re-instantiate one right after a shootdown.
                let freed = match self.region.is_resident(page) {
                    Ok(false) => true,
                    Ok(true) => {
                        self.counters.add(Counter::RefaultRetries, 1);
                        self.counters.add(Counter::Shootdowns, 1);
                        self.region.shoot_down(page).is_ok()
                            && self
                                .region
                                .is_resident(page)
                                .is_ok_and(|resident| !resident)
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
