//! Latch acquisition and fault-in: the one loop every access path of the pool runs once its
//! fast path missed, and the one fault-in, which ends with the page exclusively latched.
//!
//! ```text
//! acquire(page, mode)                     fault_in(page)          (page LOCKED_EVICTED)
//!   EVICTED   → CAS LOCKED_EVICTED ──────→  read_in: charge a frame, read, check
//!                                           Ok  → enter the resident set, LOCKED (version + 1)
//!                                           Err → nothing charged, EVICTED, error returned
//!             then leave as `mode` asks: Exclusive keeps LOCKED, Shared downgrades to
//!             shared(1) (version + 1), Optimistic unlocks to MARKED (version + 1: cold,
//!             the fault-in is the page's one access so far) and returns that word
//!   readable  → Exclusive: CAS LOCKED; Shared: CAS shared(n + 1);
//!               Optimistic: the word (a MARKED or COOLING page is warmed first)
//!   otherwise → wait (spin, yield, sleep), at most `LATCH_WAIT_ROUNDS_MAX` rounds
//! ```
//!
//! Generic over `FaultInEnv` (the pool, or the loom model's page), as eviction is over
//! `EvictionEnv`, so the loom model runs these very loops against the eviction protocol.

use crate::state::{
    COOLING, EVICTED, MARKED, PageState, UNLOCKED, is_readable, state_of, with_state,
};
use crate::{PageId, PoolError};

/// Rounds of waiting for a latch before `PoolError::LatchWaitLimit` (about 20 s in the pool;
/// the loom model explores every interleaving within far fewer).
pub const LATCH_WAIT_ROUNDS_MAX: u32 = if cfg!(loom) { 64 } else { 1 << 20 };

/// What the latch loop and the fault-in need from the pool (or from the model).
pub trait FaultInEnv {
    fn state(&self, page: PageId) -> &PageState;
    /// With `page` LOCKED_EVICTED by this thread: charge a frame to the budget and read the
    /// page into it (and check it). On error nothing stays charged or instantiated.
    fn read_in(&self, page: PageId) -> Result<(), PoolError>;
    /// The page's frame holds its bytes: it joins the resident set (the page is still
    /// LOCKED_EVICTED by this thread).
    fn enter_resident(&self, page: PageId);
    /// Waits a little before the next attempt; `round` counts the attempts so far.
    fn backoff(&self, round: u32);
}

/// How the caller wants to hold the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// LOCKED.
    Exclusive,
    /// shared(n).
    Shared,
    /// No latch: the page's word, readable (unlatched at any temperature, or shared) when it
    /// was returned. The access warms the page (a MARKED or COOLING page becomes UNLOCKED).
    Optimistic,
    /// `Optimistic` that leaves the page's temperature alone: the first read of a page just
    /// faulted in by a prefetch, which is the page's one access so far.
    OptimisticUnwarmed,
}

/// What `acquire` obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The word as this thread left or saw it (for `Mode::Optimistic`, the version to validate
    /// against).
    pub seen: u64,
    /// This thread faulted the page in on the way (the access was a miss, not a hit).
    pub faulted: bool,
}

/// Ends every fault-in: with `page` LOCKED_EVICTED by this thread and its frame `filled`
/// (or not, on error, with nothing charged), either the page joins the resident set and is
/// LOCKED by this thread, uptodate at a new version, or it is EVICTED and unlatched and the
/// error returned.
pub fn finish_fault_in<E: FaultInEnv>(
    env: &E,
    page: PageId,
    filled: Result<(), PoolError>,
) -> Result<(), PoolError> {
    let state = env.state(page);
    match filled {
        Ok(()) => {
            env.enter_resident(page);
            state.mark_uptodate();
            Ok(())
        }
        Err(error) => {
            state.unlock_evicted();
            Err(error)
        }
    }
}

/// The fault-in: with `page` LOCKED_EVICTED by this thread, read it; it ends LOCKED by this
/// thread (Ok) or EVICTED and unlatched (Err).
pub fn fault_in<E: FaultInEnv>(env: &E, page: PageId) -> Result<(), PoolError> {
    let filled = env.read_in(page);
    finish_fault_in(env, page, filled)
}

/// The version an optimistic reader of a page whose word was `seen` reads against, if the
/// page is readable now: an access clears a mark (the page's second chance). `None` if it is
/// not readable, or the mark changed under the caller.
pub(crate) fn optimistic_version(state: &PageState, seen: u64) -> Option<u64> {
    if matches!(state_of(seen), MARKED | COOLING) {
        return state.clear_mark(seen).then(|| with_state(seen, UNLOCKED));
    }
    is_readable(seen).then_some(seen)
}

/// Takes `page` in `mode`, faulting it in if it is evicted (concurrent faulters do one read:
/// the first takes LOCKED_EVICTED, the others wait for it).
pub fn acquire<E: FaultInEnv>(env: &E, page: PageId, mode: Mode) -> Result<Acquired, PoolError> {
    let state = env.state(page);
    let mut faulted = false;
    for round in 0..LATCH_WAIT_ROUNDS_MAX {
        let seen = state.load();
        let current = state_of(seen);
        if current == EVICTED {
            if !state.try_lock_evicted(seen) {
                continue;
            }
            fault_in(env, page)?;
            faulted = true;
            match mode {
                Mode::Exclusive => {
                    let seen = state.load();
                    return Ok(Acquired { seen, faulted });
                }
                Mode::Shared => {
                    state.downgrade_to_shared();
                    let seen = state.load();
                    return Ok(Acquired { seen, faulted });
                }
                // Readable at once, and cold: this read is the page's one access so far (an
                // evictor may take it before the caller validates; the caller then restarts).
                Mode::Optimistic | Mode::OptimisticUnwarmed => {
                    let seen = state.unlock_exclusive_cold();
                    return Ok(Acquired { seen, faulted });
                }
            }
        }
        let taken = match mode {
            Mode::Exclusive => state.try_lock_exclusive(seen).then_some(seen),
            Mode::Shared => state.try_lock_shared(seen).then_some(seen),
            Mode::Optimistic => optimistic_version(state, seen),
            Mode::OptimisticUnwarmed => is_readable(seen).then_some(seen),
        };
        if let Some(seen) = taken {
            return Ok(Acquired { seen, faulted });
        }
        env.backoff(round);
    }
    Err(PoolError::LatchWaitLimit { page })
}
