//! The io_uring engine: one ring per (thread, engine), batches submitted with one
//! `io_uring_enter`, completions reaped in bulk.
//!
//! Invariants:
//! 1. A ring is used only by the thread that created it (thread-local), so
//!    IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN hold and no lock is taken per I/O.
//! 2. At most `sq_entries` operations are in flight on a ring and the completion queue has
//!    twice as many entries, so the CQ cannot overflow; were it to (a kernel without
//!    FEAT_NODROP semantics we rely on), every wait is an `io_uring_enter` with GETEVENTS,
//!    which flushes overflowed completions, so it cannot hang either.
//! 3. `run_batch` returns only when every operation it submitted has completed: no buffer is
//!    referenced by the kernel after the call.

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Weak};

use io_uring::{IoUring, opcode, squeue, types};

use crate::engine::{EngineShared, IoKind, IoRequest};
use crate::error::{IoError, IoOp};
use crate::file::{DirectFile, os_error};
use crate::transfer::{Chunk, Hooks, Plan, Step, Transfer, check_request};

/// `user_data` of benchmark no-ops.
const NOP_USER_DATA: u64 = u64::MAX - 1;

/// Which optional setup flags the kernel accepted when the engine was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RingFlags {
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (6.1+): completions are run
    /// only when we wait for them, with no interrupting task-work signals.
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN (5.19+), the fallback when DEFER_TASKRUN is refused.
    pub coop_taskrun: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UringSetupError {
    /// EPERM/ENOSYS: io_uring is disabled or filtered (containers, io_uring_disabled).
    #[error("io_uring_setup refused: {0}")]
    NotPermitted(io::Error),
    #[error("io_uring_setup failed: {0}")]
    Other(io::Error),
}

/// Finds the best flags this kernel accepts by creating (and dropping) a small ring.
pub(crate) fn probe(entries: u32) -> Result<RingFlags, UringSetupError> {
    let candidates = [
        RingFlags {
            defer_taskrun: true,
            coop_taskrun: false,
        },
        RingFlags {
            defer_taskrun: false,
            coop_taskrun: true,
        },
        RingFlags::default(),
    ];
    let mut last_error = None;
    for flags in candidates {
        match build(entries.min(8), flags) {
            Ok(_ring) => return Ok(flags),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => last_error = Some(error),
            Err(error) if matches!(error.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) => {
                return Err(UringSetupError::NotPermitted(error));
            }
            Err(error) => return Err(UringSetupError::Other(error)),
        }
    }
    Err(UringSetupError::Other(last_error.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

pub(crate) fn build(entries: u32, flags: RingFlags) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(entries.saturating_mul(2));
    if flags.defer_taskrun {
        builder.setup_single_issuer().setup_defer_taskrun();
    } else if flags.coop_taskrun {
        builder.setup_coop_taskrun();
    }
    builder.build(entries)
}

/// The file an SQE targets: a plain descriptor, or index 0 of the ring's registered files.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Fd(i32),
    Fixed(u32),
}

/// Builds the read or write SQE for one chunk.
pub(crate) fn transfer_entry(
    target: Target,
    kind: IoKind,
    chunk: &Chunk,
    user_data: u64,
) -> squeue::Entry {
    // Chunks are at most 1 GiB (transfer.rs), so the length fits u32.
    let len = chunk.len as u32;
    let entry = match (kind, target) {
        (IoKind::Read, Target::Fd(fd)) => opcode::Read::new(types::Fd(fd), chunk.buf, len)
            .offset(chunk.offset)
            .build(),
        (IoKind::Read, Target::Fixed(index)) => {
            opcode::Read::new(types::Fixed(index), chunk.buf, len)
                .offset(chunk.offset)
                .build()
        }
        (IoKind::Write, Target::Fd(fd)) => {
            opcode::Write::new(types::Fd(fd), chunk.buf.cast_const(), len)
                .offset(chunk.offset)
                .build()
        }
        (IoKind::Write, Target::Fixed(index)) => {
            opcode::Write::new(types::Fixed(index), chunk.buf.cast_const(), len)
                .offset(chunk.offset)
                .build()
        }
    };
    entry.user_data(user_data)
}

/// `io_uring_enter`: submit what is queued and wait for `want` completions. EINTR is retried
/// (bounded); EBUSY means the CQ is full of unreaped completions, which the caller reaps next.
pub(crate) fn submit_and_wait(ring: &IoUring, want: usize) -> io::Result<()> {
    const ENTER_RETRY_MAX: u32 = 1024;
    let mut last = io::Error::from_raw_os_error(libc::EINTR);
    for _ in 0..ENTER_RETRY_MAX {
        match ring.submit_and_wait(want) {
            Ok(_) => return Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
            Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {
                last = error
            }
            Err(error) => return Err(error),
        }
    }
    Err(last)
}

/// Hands every queued SQE to the kernel without waiting. GETEVENTS is set so that, with
/// DEFER_TASKRUN, completions that arrived meanwhile are posted in the same syscall (what
/// fio's commit does too).
pub(crate) fn submit_now(ring: &mut IoUring) -> io::Result<()> {
    const ENTER_RETRY_MAX: u32 = 1024;
    let to_submit = ring.submission().len() as u32;
    let mut last = io::Error::from_raw_os_error(libc::EINTR);
    for _ in 0..ENTER_RETRY_MAX {
        // SAFETY: no argument struct is passed; flags and counts are plain integers.
        let entered = unsafe {
            ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
        match entered {
            Ok(_) => return Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
            Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {
                last = error
            }
            Err(error) => return Err(error),
        }
    }
    Err(last)
}

thread_local! {
    /// This thread's rings, one per live engine.
    static THREAD_RINGS: RefCell<Vec<ThreadRing>> = const { RefCell::new(Vec::new()) };
}

struct ThreadRing {
    owner: Weak<EngineShared>,
    ring: Ring,
}

/// Runs `work` on this thread's ring for `shared`, creating it on first use. Rings of engines
/// that are gone are dropped on the way.
pub(crate) fn with_thread_ring<R>(
    shared: &Arc<EngineShared>,
    work: impl FnOnce(&mut Ring) -> R,
) -> Result<R, IoError> {
    let unavailable = |reason: String| IoError::EngineUnavailable { reason };
    THREAD_RINGS
        .try_with(|rings| {
            let mut rings = rings
                .try_borrow_mut()
                .map_err(|_| unavailable("io_uring engine re-entered on one thread".into()))?;
            rings.retain(|entry| entry.owner.strong_count() > 0);
            // Compared by address, so the hot path touches no reference count. A live entry's
            // Weak keeps its engine's allocation, so no other engine can have that address.
            let key = Arc::as_ptr(shared);
            let position = match rings
                .iter()
                .position(|entry| std::ptr::eq(entry.owner.as_ptr(), key))
            {
                Some(position) => position,
                None => {
                    let ring = Ring::new(shared.ring_entries, shared.ring_flags)?;
                    let owner = Arc::downgrade(shared);
                    rings.push(ThreadRing { owner, ring });
                    rings.len() - 1
                }
            };
            Ok(work(&mut rings[position].ring))
        })
        .map_err(|_| unavailable("thread is exiting".into()))?
}

/// Where one request of a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    InFlight,
    Finished,
}

/// One thread's ring plus the scratch space of a batch (reused, so a warm batch allocates
/// nothing).
pub(crate) struct Ring {
    uring: IoUring,
    capacity: usize,
    transfers: Vec<(Transfer, Stage)>,
    resubmit: Vec<usize>,
}

/// The progress of one `run_batch`.
struct BatchState {
    next: usize,
    in_flight: usize,
}

impl Ring {
    fn new(entries: u32, flags: RingFlags) -> Result<Ring, IoError> {
        let uring = build(entries, flags)
            .map_err(|source| os_error(IoOp::Setup, "io_uring".as_ref(), 0, 0, source))?;
        let capacity = uring.params().sq_entries() as usize;
        Ok(Ring {
            uring,
            capacity,
            transfers: Vec::new(),
            resubmit: Vec::new(),
        })
    }

    /// See `IoEngine::submit_batch`.
    ///
    /// # Safety
    /// As `IoEngine::submit_batch`.
    pub unsafe fn run_batch(
        &mut self,
        file: &DirectFile,
        requests: &[IoRequest],
        outcomes: &mut [Result<(), IoError>],
        hooks: &Hooks,
    ) {
        self.transfers.clear();
        self.resubmit.clear();
        for (request, outcome) in requests.iter().zip(outcomes.iter_mut()) {
            *outcome = check_request(file, request);
            let stage = if outcome.is_ok() && request.len > 0 {
                Stage::Waiting
            } else {
                Stage::Finished
            };
            self.transfers.push((Transfer::new(*request), stage));
        }
        let mut state = BatchState {
            next: 0,
            in_flight: 0,
        };
        // Every round submits or completes at least one transfer step; each transfer has
        // finitely many steps (progress or bounded retries), so this ends.
        loop {
            self.fill(file, hooks, outcomes, &mut state);
            if state.in_flight == 0 {
                if self.resubmit.is_empty() && state.next == self.transfers.len() {
                    break;
                }
                continue;
            }
            submit_and_wait(&self.uring, 1).unwrap_or_else(|error| fatal_ring_error(&error));
            self.reap(file, hooks, outcomes, &mut state);
        }
    }

    /// Queues as many pending steps as the ring takes.
    fn fill(
        &mut self,
        file: &DirectFile,
        hooks: &Hooks,
        outcomes: &mut [Result<(), IoError>],
        state: &mut BatchState,
    ) {
        let target = Target::Fd(file.as_raw_fd());
        while state.in_flight < self.capacity {
            let index = match self.resubmit.pop() {
                Some(index) => index,
                None => match self.next_waiting(state) {
                    Some(index) => index,
                    None => break,
                },
            };
            // SAFETY: the caller of run_batch guarantees the buffers for the whole batch.
            let plan = unsafe { self.transfers[index].0.plan(hooks, file) };
            match plan {
                Plan::Submit(chunk) => {
                    let kind = self.transfers[index].0.request.kind;
                    let entry = transfer_entry(target, kind, &chunk, index as u64);
                    // SAFETY: the caller of run_batch guarantees the buffer for the whole
                    // batch, and run_batch waits for this entry's completion before returning.
                    unsafe { self.push(&entry) };
                    self.transfers[index].1 = Stage::InFlight;
                    state.in_flight += 1;
                }
                Plan::Pretend(result) => settle(
                    (&mut self.transfers, &mut self.resubmit),
                    index,
                    result,
                    (file, hooks),
                    outcomes,
                ),
            }
        }
    }

    fn next_waiting(&self, state: &mut BatchState) -> Option<usize> {
        while state.next < self.transfers.len() {
            let index = state.next;
            state.next += 1;
            if self.transfers[index].1 == Stage::Waiting {
                return Some(index);
            }
        }
        None
    }

    /// Pushes one SQE; the caller made room (in_flight < capacity and the SQ is flushed by
    /// every wait).
    ///
    /// # Safety
    /// Every buffer the entry references stays valid until its completion is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        let mut submission = self.uring.submission();
        if submission.is_full() {
            drop(submission);
            // Room is guaranteed by in_flight < capacity; the SQ only fills when entries have
            // not been handed to the kernel yet, which this submit does.
            if let Err(error) = self.uring.submit() {
                tracing::error!("io_uring submit failed while flushing a full SQ: {error}");
            }
            submission = self.uring.submission();
        }
        // SAFETY: forwarded from the caller.
        let pushed = unsafe { submission.push(entry) };
        assert!(
            pushed.is_ok(),
            "SQ full although in-flight count is below its capacity"
        );
    }

    /// Takes every available completion.
    fn reap(
        &mut self,
        file: &DirectFile,
        hooks: &Hooks,
        outcomes: &mut [Result<(), IoError>],
        state: &mut BatchState,
    ) {
        // Disjoint field borrows: the CQ borrows the ring, settling borrows the scratch space.
        let (transfers, resubmit) = (&mut self.transfers, &mut self.resubmit);
        for entry in self.uring.completion() {
            state.in_flight -= 1;
            let index = entry.user_data() as usize;
            let scratch = (transfers.as_mut_slice(), &mut *resubmit);
            settle(scratch, index, entry.result(), (file, hooks), outcomes);
        }
    }

    /// See `IoEngine::nop_batch`.
    pub fn nops(&mut self, count: usize) -> Result<(), IoError> {
        let mut remaining = count;
        let mut in_flight = 0usize;
        // Each round queues up to `capacity` no-ops and waits for what it queued.
        while remaining > 0 || in_flight > 0 {
            while remaining > 0 && in_flight < self.capacity {
                let entry = opcode::Nop::new().build().user_data(NOP_USER_DATA);
                // SAFETY: a no-op references no memory.
                unsafe { self.push(&entry) };
                remaining -= 1;
                in_flight += 1;
            }
            submit_and_wait(&self.uring, in_flight)
                .unwrap_or_else(|error| fatal_ring_error(&error));
            in_flight -= self.uring.completion().count();
        }
        Ok(())
    }
}

/// Applies one result to transfer `index`.
fn settle(
    (transfers, resubmit): (&mut [(Transfer, Stage)], &mut Vec<usize>),
    index: usize,
    result: i32,
    (file, hooks): (&DirectFile, &Hooks),
    outcomes: &mut [Result<(), IoError>],
) {
    let (transfer, stage) = &mut transfers[index];
    match transfer.on_result(result, file, hooks) {
        Step::Complete => {
            *stage = Stage::Finished;
            outcomes[index] = Ok(());
        }
        Step::Resubmit => {
            *stage = Stage::Waiting;
            resubmit.push(index);
        }
        Step::Failed(error) => {
            *stage = Stage::Finished;
            outcomes[index] = Err(error);
        }
    }
}

/// `io_uring_enter` failed with something other than EINTR/EAGAIN/EBUSY while operations are
/// in flight. Returning would let the caller free buffers the kernel may still write into,
/// and unwinding would do the same, so the process stops here.
pub(crate) fn fatal_ring_error(error: &io::Error) -> ! {
    eprintln!("bufpool-io: io_uring_enter failed with operations in flight ({error}); aborting");
    std::process::abort()
}
