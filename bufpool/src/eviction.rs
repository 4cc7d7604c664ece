//! Eviction: the seed's protocol (lkml 2004-10-21, `invalidate_inode_pages2`), in user space.
//!
//! ```text
//! kernel                          here
//! lock_page()                     step_1_lock            CAS MARKED → LOCKED
//! wait_on_page_writeback()        step_2_write_back      dirty victims, one io submission
//! unmap_mapping_range()           step_3_shoot_down      MADV_DONTNEED / PUNCH_HOLE
//! ClearPageUptodate()             step_4_clear_uptodate  LOCKED → LOCKED_EVICTED, version + 1
//! while (page_mapped(page)) ...   step_5_retry_for_refaults  mincore, shoot down again, bounded
//! invalidate_complete_page()      step_6_evict           release the frame budget, leave the set
//! unlock_page()                   step_7_unlock          LOCKED_EVICTED → EVICTED
//! ```
//!
//! Every function is generic over `EvictionEnv`, so the loom model runs this very code with
//! a model of the OS that records residency per frame. Why the order is correct and why the
//! loop terminates: DESIGN.md, "Eviction: the seed's protocol, step by step".

use crate::config::BATCH_MAX;
use crate::state::{LOCKED, MARKED, PageState, state_of};
use crate::sync::yield_now;
use crate::view::PageView;
use crate::{PageId, PoolError};

/// Step 5's bound: shootdowns repeated for one victim before giving up on freeing its frame
/// now (the outcome is then `RefaultOutcome::LimitHit`).
pub const REFAULT_RETRIES_MAX: u32 = 16;

/// The OS calls under eviction: the real ones in `region.rs`, recorded ones in the loom model.
pub trait Frames {
    /// Removes the page's frame from every mapping (MADV_DONTNEED or PUNCH_HOLE).
    fn shoot_down(&self, page: PageId) -> Result<(), PoolError>;
    /// Whether a frame is instantiated for the page (mincore).
    fn is_resident(&self, page: PageId) -> Result<bool, PoolError>;
    /// `shoot_down` for every page, batched where the OS allows (one TLB flush for all).
    /// On error some pages may not be shot down; the caller retries page by page.
    fn shoot_down_batch(&self, pages: &[PageId]) -> Result<(), PoolError> {
        pages.iter().try_for_each(|&page| self.shoot_down(page))
    }
}

/// The steps, for `EvictionProbe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Lock,
    WriteBack,
    ShootDown,
    ClearUptodate,
    RetryForRefaults,
    Evict,
    Unlock,
}

/// A test hook called after each step of each victim, with a view of the victim's address
/// (reading it after `Step::ShootDown` touches the address: the refault race, forced). Step 5
/// reports each of its repeated shootdowns as `Step::ShootDown` too.
pub trait EvictionProbe: Send + Sync {
    fn after_step(&self, page: PageId, step: Step, bytes: &PageView<'_>);
}

/// What step 5 concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefaultOutcome {
    /// No frame is left; `retries` extra shootdowns were needed.
    Freed { retries: u32 },
    /// Readers kept refaulting for `REFAULT_RETRIES_MAX` rounds: the page is evicted (its
    /// state says so, readers fail validation) but a frame may still be instantiated. It stays
    /// charged to the budget and the environment re-checks it later (`EvictionEnv::leak`).
    LimitHit,
}

/// What eviction needs from the pool (or from the model).
pub trait EvictionEnv {
    type Frames: Frames;
    fn state(&self, page: PageId) -> &PageState;
    fn frames(&self) -> &Self::Frames;
    /// Writes every dirty page of `pages` (all exclusively latched) with one submission and
    /// marks them clean; `outcomes[i]` gets page i's result. Clean pages get `Ok`.
    fn write_back(&self, pages: &[PageId], outcomes: &mut [Result<(), PoolError>]);
    /// Releases the page's frame budget and removes it from the resident set.
    fn release(&self, page: PageId);
    /// Removes the page from the resident set but keeps its frame charged and remembers it for
    /// a later re-check (after `RefaultOutcome::LimitHit`).
    fn leak(&self, page: PageId);
    /// Counts a shootdown; `retry` when it repeats one because of a refault.
    fn count_shootdown(&self, retry: bool);
    fn count_eviction(&self);
    fn probe(&self, _page: PageId, _step: Step) {}
}

/// What one `evict_batch` call did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Pages evicted (their frames freed, or left charged for a re-check).
    pub evicted: usize,
    /// The first error of the batch (a victim's write-back, or an OS call). It belongs to the
    /// victim's owner, not to whoever ran the eviction: a victim whose write-back failed stays
    /// resident and dirty, so the next `flush` reports it again.
    pub first_error: Option<PoolError>,
}

/// Evicts what it can of `candidates` (pages the clock marked), finishing the whole batch
/// whatever fails; a page whose eviction failed stays resident, uptodate, and dirty if it was.
pub fn evict_batch<E: EvictionEnv>(env: &E, candidates: &[PageId]) -> BatchOutcome {
    let mut victims = [PageId(0); BATCH_MAX];
    let mut victim_count = 0;
    for &page in candidates.iter().take(BATCH_MAX) {
        if step_1_lock(env.state(page)) {
            env.probe(page, Step::Lock);
            victims[victim_count] = page;
            victim_count += 1;
        }
    }
    let mut first_error = None;
    let mut outcomes: [Result<(), PoolError>; BATCH_MAX] = std::array::from_fn(|_| Ok(()));
    step_2_write_back(env, &victims[..victim_count], &mut outcomes[..victim_count]);
    victim_count = keep_successes(
        &mut victims[..victim_count],
        &mut outcomes,
        &mut first_error,
    );
    step_3_shoot_down(env, &victims[..victim_count], &mut outcomes[..victim_count]);
    for (&page, outcome) in victims[..victim_count].iter().zip(outcomes.iter_mut()) {
        let shot_down = std::mem::replace(outcome, Ok(()));
        if let Err(error) = evict_shot_down(env, page, shot_down) {
            first_error.get_or_insert(error);
        }
    }
    BatchOutcome {
        evicted: victim_count,
        first_error,
    }
}

/// Moves the victims whose outcome is Ok to the front (the failed ones were unlocked by
/// step 2), records the first error, returns how many remain.
fn keep_successes(
    victims: &mut [PageId],
    outcomes: &mut [Result<(), PoolError>],
    first_error: &mut Option<PoolError>,
) -> usize {
    let mut kept = 0;
    for index in 0..victims.len() {
        match std::mem::replace(&mut outcomes[index], Ok(())) {
            Ok(()) => {
                victims[kept] = victims[index];
                kept += 1;
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    kept
}

/// Steps 4 to 7 for one victim that step 2 wrote back. If its shootdown failed (`shot_down`
/// is Err), its bytes may be partly gone (a batch zap can succeed in part), so it is evicted
/// all the same (the disk has its bytes) and its frame is left charged for a later re-check.
fn evict_shot_down<E: EvictionEnv>(
    env: &E,
    page: PageId,
    shot_down: Result<(), PoolError>,
) -> Result<(), PoolError> {
    let state = env.state(page);
    step_4_clear_uptodate(state);
    env.probe(page, Step::ClearUptodate);
    let outcome = shot_down.and_then(|()| step_5_retry_for_refaults(env, page));
    env.probe(page, Step::RetryForRefaults);
    step_6_evict(
        env,
        page,
        outcome.as_ref().unwrap_or(&RefaultOutcome::LimitHit),
    );
    env.probe(page, Step::Evict);
    step_7_unlock(state);
    env.probe(page, Step::Unlock);
    outcome.map(|_| ())
}

/// Step 1, lock: MARKED → LOCKED. Fails (the page is skipped) if it is latched, or was
/// touched since the clock marked it (an access clears the mark: its second chance).
pub fn step_1_lock(state: &PageState) -> bool {
    let seen = state.load();
    state_of(seen) == MARKED && state.try_lock_exclusive(seen)
}

/// Step 2, write back: the dirty victims, one submission, waited for. A victim whose write
/// fails is unlocked here, still resident and dirty; its outcome carries the error.
pub fn step_2_write_back<E: EvictionEnv>(
    env: &E,
    victims: &[PageId],
    outcomes: &mut [Result<(), PoolError>],
) {
    env.write_back(victims, outcomes);
    for (&page, outcome) in victims.iter().zip(outcomes.iter()) {
        if outcome.is_err() {
            env.state(page).unlock_exclusive();
        } else {
            env.probe(page, Step::WriteBack);
        }
    }
}

/// Step 3, shoot down: free the victims' frames and zap them from every mapping, while the
/// pages are still locked and uptodate (readers that touch them now refault, then fail
/// validation: LOCKED). One batched call; if it fails, page by page. A victim whose shootdown
/// fails keeps its latch and its outcome carries the error (see `evict_shot_down`).
pub fn step_3_shoot_down<E: EvictionEnv>(
    env: &E,
    victims: &[PageId],
    outcomes: &mut [Result<(), PoolError>],
) {
    for &page in victims {
        assert_eq!(
            state_of(env.state(page).load()),
            LOCKED,
            "shoot down of an unlocked page"
        );
    }
    if env.frames().shoot_down_batch(victims).is_err() {
        for (&page, outcome) in victims.iter().zip(outcomes.iter_mut()) {
            *outcome = env.frames().shoot_down(page);
        }
    }
    for (&page, outcome) in victims.iter().zip(outcomes.iter()) {
        if outcome.is_ok() {
            env.count_shootdown(false);
            env.probe(page, Step::ShootDown);
        }
    }
}

/// Step 4, clear uptodate: LOCKED → LOCKED_EVICTED, version + 1. From here on no reader that
/// loads the state word touches the page's address.
pub fn step_4_clear_uptodate(state: &PageState) {
    state.clear_uptodate();
}

/// Step 5, retry for refaults: a reader that read the state word before step 1 may have
/// touched the address after step 3 and re-instantiated a frame. Shoot down again until the
/// page is not resident, at most `REFAULT_RETRIES_MAX` times.
pub fn step_5_retry_for_refaults<E: EvictionEnv>(
    env: &E,
    page: PageId,
) -> Result<RefaultOutcome, PoolError> {
    for retries in 0..=REFAULT_RETRIES_MAX {
        if !env.frames().is_resident(page)? {
            return Ok(RefaultOutcome::Freed { retries });
        }
        if retries == REFAULT_RETRIES_MAX {
            break;
        }
        env.frames().shoot_down(page)?;
        env.count_shootdown(true);
        env.probe(page, Step::ShootDown);
        // Let the refaulting reader finish: it fails validation and stops touching the page.
        yield_now();
    }
    Ok(RefaultOutcome::LimitHit)
}

/// Step 6, evict: release the frame budget and leave the resident set (or, if step 5 hit its
/// bound, leave the set but stay charged until a later re-check frees the frame).
pub fn step_6_evict<E: EvictionEnv>(env: &E, page: PageId, outcome: &RefaultOutcome) {
    match outcome {
        RefaultOutcome::Freed { .. } => env.release(page),
        RefaultOutcome::LimitHit => env.leak(page),
    }
    env.count_eviction();
}

/// Step 7, unlock: LOCKED_EVICTED → EVICTED, same version. The next access faults it in.
pub fn step_7_unlock(state: &PageState) {
    state.unlock_evicted();
}
