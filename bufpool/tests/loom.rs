//! Loom model of the page-state word and the eviction protocol:
//! `RUSTFLAGS="--cfg loom" cargo test -p bufpool --release --test loom`.
//!
//! One page, four threads: an evictor running the real `eviction::evict_batch`, an exported
//! (latch-free, single-attempt) optimistic reader, a reader (one optimistic read, then a
//! shared latch) and a writer, the last two taking their latches through the pool's own loop
//! (`latch::acquire`), which faults the page in again (`latch::fault_in`) when they find it
//! evicted (an optimistic fault-in leaves it MARKED, cold). The OS sits behind `Frames`; the
//! model records the frame's residency and contents (a generation number; 0 = a zero page
//! instantiated by a refault). Checked in every interleaving:
//! 1. a reader never accepts bytes from a version other than the one it validated;
//! 2. a latch holder sees the page's latest bytes (write-back before shoot-down: no lost write);
//! 3. after eviction, no frame is left resident unless the page is uptodate, except one that a
//!    reader instantiated after the evictor's final residency check (which no protocol can
//!    prevent; the pool's own readers re-fault it right away);
//! 4. the latest generation survives (in the frame if uptodate, else on disk).
//!
//! Two deliberately broken orders must fail: no retry loop (check 3), and shoot-down after
//! unlock (checks 2 and 4).

#![cfg(loom)]

use std::sync::Mutex as GhostMutex;

use bufpool::eviction::{self, EvictionEnv, Frames, RefaultOutcome};
use bufpool::latch::{self, FaultInEnv, Mode};
use bufpool::state::{EVICTED, PageState, is_readable, state_of, version_of};
use bufpool::{PageId, PoolError};
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

const PAGE: PageId = PageId(0);
const FIRST_GENERATION: u64 = 1;
const WRITTEN_GENERATION: u64 = 2;

struct Frame {
    resident: bool,
    generation: u64,
}

/// Bookkeeping outside the modelled memory (loom runs one thread at a time).
#[derive(Default)]
struct Ghost {
    /// (version, generation): the page's bytes at each uptodate version.
    generations: Vec<(u64, u64)>,
    /// The evictor has concluded the frame is gone.
    declared_free: bool,
    /// A refault instantiated a frame after that conclusion.
    late_touch: bool,
    leaked: bool,
}

struct Model {
    state: PageState,
    frame: Mutex<Frame>,
    disk: AtomicU64,
    dirty: AtomicBool,
    ghost: GhostMutex<Ghost>,
}

impl Model {
    fn new() -> Model {
        let model = Model {
            state: PageState::new_unlocked(),
            frame: Mutex::new(Frame {
                resident: true,
                generation: FIRST_GENERATION,
            }),
            disk: AtomicU64::new(FIRST_GENERATION),
            dirty: AtomicBool::new(false),
            ghost: GhostMutex::new(Ghost::default()),
        };
        model.record(version_of(model.state.load()), FIRST_GENERATION);
        model
    }

    fn ghost(&self) -> std::sync::MutexGuard<'_, Ghost> {
        self.ghost.lock().unwrap()
    }

    fn record(&self, version: u64, generation: u64) {
        self.ghost().generations.push((version, generation));
    }

    /// The bytes at `version`: those recorded at the latest version not after it (shared
    /// latches, marks and the downgrade after a fault-in move no bytes).
    fn generation_at(&self, version: u64) -> u64 {
        let ghost = self.ghost();
        let found = ghost
            .generations
            .iter()
            .filter(|(recorded, _)| *recorded <= version)
            .max_by_key(|(recorded, _)| *recorded);
        found.expect("no bytes recorded for a readable version").1
    }

    /// A load from the page's address: a refault instantiates a zero frame.
    fn touch(&self) -> u64 {
        let mut frame = self.frame.lock().unwrap();
        if !frame.resident {
            frame.resident = true;
            frame.generation = 0;
            let mut ghost = self.ghost();
            if ghost.declared_free {
                ghost.late_touch = true;
            }
        }
        frame.generation
    }

    /// The pool's own latch loop (`latch::acquire`), fault-in included.
    fn lock(&self, mode: Mode) {
        latch::acquire(self, PAGE, mode).expect("the model's latch waits are long enough");
    }
}

/// The fault-in's environment: the model's disk and frame.
impl FaultInEnv for Model {
    fn state(&self, _page: PageId) -> &PageState {
        &self.state
    }

    /// With the page LOCKED_EVICTED: read it from disk into the frame; `finish_fault_in`
    /// then makes it LOCKED at the next version, whose bytes are recorded here.
    fn read_in(&self, _page: PageId) -> Result<(), PoolError> {
        let generation = self.disk.load(Ordering::Acquire);
        {
            let mut frame = self.frame.lock().unwrap();
            frame.resident = true;
            frame.generation = generation;
        }
        self.record(version_of(self.state.load()) + 1, generation);
        Ok(())
    }

    fn enter_resident(&self, _page: PageId) {}

    fn backoff(&self, _round: u32) {
        thread::yield_now();
    }
}

impl Frames for Model {
    fn shoot_down(&self, _page: PageId) -> Result<(), PoolError> {
        let mut frame = self.frame.lock().unwrap();
        frame.resident = false;
        frame.generation = 0;
        Ok(())
    }

    fn is_resident(&self, _page: PageId) -> Result<bool, PoolError> {
        let resident = self.frame.lock().unwrap().resident;
        if !resident {
            self.ghost().declared_free = true;
        }
        Ok(resident)
    }
}

impl EvictionEnv for Model {
    type Frames = Model;

    fn state(&self, _page: PageId) -> &PageState {
        &self.state
    }

    fn frames(&self) -> &Model {
        self
    }

    fn write_back(&self, _pages: &[PageId], outcomes: &mut [Result<(), PoolError>]) {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let generation = self.frame.lock().unwrap().generation;
            self.disk.store(generation, Ordering::Release);
        }
        outcomes.iter_mut().for_each(|outcome| *outcome = Ok(()));
    }

    fn release(&self, _page: PageId) {}

    fn leak(&self, _page: PageId) {
        self.ghost().leaked = true;
    }

    fn count_shootdown(&self, _retry: bool) {}

    fn count_eviction(&self) {}
}

fn exported_reader(model: &Model) {
    // As `ExportedView::read` loads it from its read-only mapping.
    let seen = model.state.load_read_only();
    if !is_readable(seen) {
        return; // evicted or locked: an exported view reports it and reads nothing
    }
    let generation = model.touch();
    if model.state.validate(seen) {
        assert_eq!(
            generation,
            model.generation_at(version_of(seen)),
            "accepted bytes of another version"
        );
    }
}

fn shared_reader(model: &Model) {
    // First an optimistic read through the pool's loop: it faults the page in if it finds it
    // evicted (then it starts cold, MARKED) or clears a mark, and must validate correctly.
    let acquired = latch::acquire(model, PAGE, Mode::Optimistic)
        .expect("the model's latch waits are long enough");
    let generation = model.touch();
    if model.state.validate(acquired.seen) {
        assert_eq!(
            generation,
            model.generation_at(version_of(acquired.seen)),
            "an optimistic reader accepted bytes of another version"
        );
    }
    model.lock(Mode::Shared);
    let generation = model.touch();
    let version = version_of(model.state.load());
    assert_eq!(
        generation,
        model.generation_at(version),
        "a shared latch saw stale bytes"
    );
    model.state.unlock_shared();
}

fn writer(model: &Model) {
    model.lock(Mode::Exclusive);
    let version = version_of(model.state.load());
    assert_eq!(
        model.touch(),
        model.generation_at(version),
        "a writer saw stale bytes"
    );
    model.frame.lock().unwrap().generation = WRITTEN_GENERATION;
    model.dirty.store(true, Ordering::Release);
    model.record(version + 1, WRITTEN_GENERATION);
    model.state.unlock_exclusive();
}

fn final_checks(model: &Model) {
    let word = model.state.load();
    let frame = model.frame.lock().unwrap();
    let ghost = model.ghost();
    if state_of(word) == EVICTED {
        assert!(
            !frame.resident || ghost.late_touch || ghost.leaked,
            "frame left resident after eviction although the page is not uptodate"
        );
        assert_eq!(
            model.disk.load(Ordering::Acquire),
            WRITTEN_GENERATION,
            "lost write: not on disk"
        );
    } else {
        assert_eq!(
            frame.generation, WRITTEN_GENERATION,
            "lost write: not in the frame"
        );
    }
}

/// Runs the four threads with `evict` as the evictor's protocol.
fn check(evict: fn(&Model)) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(move || {
        let model = Arc::new(Model::new());
        let handles = [
            thread::spawn({
                let model = model.clone();
                move || {
                    let seen = model.state.load();
                    model.state.try_mark(seen);
                    evict(&model);
                }
            }),
            thread::spawn({
                let model = model.clone();
                move || exported_reader(&model)
            }),
            thread::spawn({
                let model = model.clone();
                move || shared_reader(&model)
            }),
        ];
        writer(&model);
        for handle in handles {
            handle.join().unwrap();
        }
        final_checks(&model);
    });
}

fn seed_protocol(model: &Model) {
    let outcome = eviction::evict_batch(model, &[PAGE]);
    assert!(outcome.first_error.is_none(), "model I/O never fails");
}

#[test]
fn seed_protocol_is_correct() {
    check(seed_protocol);
}

/// Broken: the retry loop is missing; the evictor declares the frame free after clearing.
fn without_retry_loop(model: &Model) {
    if !eviction::step_1_lock(&model.state) {
        return;
    }
    let mut outcomes = [Ok(())];
    eviction::step_2_write_back(model, &[PAGE], &mut outcomes);
    eviction::step_3_shoot_down(model, &[PAGE], &mut outcomes);
    assert!(outcomes[0].is_ok());
    eviction::step_4_clear_uptodate(&model.state);
    model.ghost().declared_free = true;
    eviction::step_6_evict(model, PAGE, &RefaultOutcome::Freed { retries: 0 });
    eviction::step_7_unlock(&model.state);
}

#[test]
#[should_panic(expected = "frame left resident after eviction")]
fn broken_order_without_retry_loop_fails() {
    check(without_retry_loop);
}

/// Broken: the page is unlocked before its frame is shot down.
fn shoot_down_after_unlock(model: &Model) {
    if !eviction::step_1_lock(&model.state) {
        return;
    }
    let mut outcomes = [Ok(())];
    eviction::step_2_write_back(model, &[PAGE], &mut outcomes);
    eviction::step_4_clear_uptodate(&model.state);
    eviction::step_6_evict(model, PAGE, &RefaultOutcome::Freed { retries: 0 });
    eviction::step_7_unlock(&model.state);
    model.shoot_down(PAGE).unwrap();
    model.ghost().declared_free = true;
}

#[test]
#[should_panic(expected = "lost write")]
fn broken_order_shoot_down_after_unlock_fails() {
    check(shoot_down_after_unlock);
}
