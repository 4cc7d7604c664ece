//! `IoQueue`: one thread keeps up to `depth` requests in flight on its own ring and reaps
//! them as they complete, so the queue depth stays constant (what fio does). Used by
//! `iobench` and by anything that streams (scans, bulk loads).
//!
//! Invariants:
//! 1. `in_flight` = requests pushed and not yet handed back by `reap` (in the kernel, or
//!    completed early by fault injection and waiting in `ready`); never above `depth`.
//! 2. The ring has `depth` SQ entries and `2 × depth` CQ entries, so the CQ cannot overflow.
//! 3. Dropping the queue waits for every operation still in the kernel.

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::IoUring;

use crate::config::{EngineKind, RING_ENTRIES_MAX};
use crate::engine::{EngineShared, IoRequest};
use crate::error::{IoError, IoOp};
use crate::file::{DirectFile, os_error};
use crate::sync_engine;
use crate::transfer::{Hooks, Plan, Step, Transfer, check_request};
use crate::uring::{self, Target, fatal_ring_error, transfer_entry};

/// Default `submit_batch`: hand requests to the kernel in pairs as they are pushed. Measured
/// against fio on the virtio disk here (randread QD32): pairs kept the device busier than one
/// big submission per reap (which the kernel plugs and dispatches only at its end) and cost
/// fewer syscalls than one per request (fio's way). Two is also the largest batch io_uring
/// submits without a block plug.
pub const DEFAULT_SUBMIT_BATCH: usize = 2;

/// A finished request: the tag given to `push`, and its result.
#[derive(Debug)]
pub struct Completion {
    pub tag: u64,
    pub result: Result<(), IoError>,
}

/// A per-thread streaming queue on one file. Not `Send`: its ring belongs to the thread that
/// created it (IORING_SETUP_SINGLE_ISSUER).
pub struct IoQueue<'file> {
    file: &'file DirectFile,
    hooks: Hooks,
    ring: Option<IoUring>,
    target: Target,
    depth: usize,
    in_flight: usize,
    /// Slot per request in the kernel: (tag, progress). `user_data` is the slot index.
    slots: Vec<(u64, Transfer)>,
    free_slots: Vec<usize>,
    /// Completed but not yet handed back (sync engine, or decided without the kernel).
    ready: Vec<Completion>,
    /// SQEs pushed since the last `io_uring_enter`.
    unsubmitted: usize,
    /// Hand SQEs to the kernel as soon as this many are queued (0: only in `reap`/`submit`).
    submit_batch: usize,
    _one_thread: PhantomData<*const ()>,
}

impl<'file> IoQueue<'file> {
    pub(crate) fn new(
        shared: &Arc<EngineShared>,
        file: &'file DirectFile,
        depth: u32,
    ) -> Result<IoQueue<'file>, IoError> {
        if depth == 0 || depth > RING_ENTRIES_MAX {
            return Err(IoError::InvalidArgument {
                reason: format!("queue depth {depth} is outside 1..={RING_ENTRIES_MAX}"),
            });
        }
        let (ring, target) = match shared.kind {
            EngineKind::Sync => (None, Target::Fd(file.as_raw_fd())),
            EngineKind::Uring => {
                let ring = uring::build(depth, shared.ring_flags)
                    .map_err(|source| os_error(IoOp::Setup, file.path(), 0, 0, source))?;
                // A registered file saves the per-I/O descriptor lookup and reference count.
                let target = match ring.submitter().register_files(&[file.as_raw_fd()]) {
                    Ok(()) => Target::Fixed(0),
                    Err(_) => Target::Fd(file.as_raw_fd()),
                };
                (Some(ring), target)
            }
        };
        let depth = depth as usize;
        let placeholder = (
            0,
            Transfer::new(IoRequest::read(0, std::ptr::null_mut(), 0)),
        );
        Ok(IoQueue {
            file,
            hooks: shared.hooks.clone(),
            ring,
            target,
            depth,
            in_flight: 0,
            slots: vec![placeholder; depth],
            free_slots: (0..depth).rev().collect(),
            ready: Vec::with_capacity(depth),
            unsubmitted: 0,
            submit_batch: DEFAULT_SUBMIT_BATCH,
            _one_thread: PhantomData,
        })
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Hands queued requests to the kernel as soon as `batch` of them are queued, instead of
    /// only at the next `reap` (0). Small batches reach the device sooner (it starts on the
    /// first while we queue the rest) at the cost of more syscalls. Default
    /// [`DEFAULT_SUBMIT_BATCH`].
    pub fn set_submit_batch(&mut self, batch: usize) {
        self.submit_batch = batch;
    }

    /// An eventfd the kernel signals when this queue's requests complete, for a thread that
    /// waits in an event loop (epoll) rather than in `reap`. After it fires, `reap(0, ..)`
    /// collects what completed (it enters the kernel, which with DEFER_TASKRUN is what posts
    /// the completions; the kernel signals the eventfd when such work is first queued). Only
    /// counts and readiness matter: read it to reset it. With the synchronous engine nothing
    /// is ever in flight (a push completes at once), so it never fires.
    pub fn completion_eventfd(&mut self) -> Result<OwnedFd, IoError> {
        let setup_error = |source| os_error(IoOp::Setup, self.file.path(), 0, 0, source);
        // SAFETY: eventfd takes no pointers; a negative return is an error, else a new fd
        // this function owns from here on.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(setup_error(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a valid descriptor nobody else owns (checked above).
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        if let Some(ring) = &self.ring {
            ring.submitter()
                .register_eventfd(eventfd.as_raw_fd())
                .map_err(setup_error)?;
        }
        Ok(eventfd)
    }

    /// Requests pushed and not yet returned by `reap`.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues one request (io_uring: into the SQ, handed to the kernel by the next `reap`;
    /// sync: performed now). A misaligned request or a full queue is refused here and nothing
    /// is queued.
    ///
    /// # Safety
    /// `[buf, buf + len)` is valid for the transfer's direction and not accessed by anyone else
    /// until `reap` returns this request's completion (or the queue is dropped).
    pub unsafe fn push(&mut self, request: IoRequest, tag: u64) -> Result<(), IoError> {
        check_request(self.file, &request)?;
        if self.in_flight == self.depth {
            return Err(IoError::InvalidArgument {
                reason: format!("queue full ({} in flight)", self.depth),
            });
        }
        self.in_flight += 1;
        if self.ring.is_none() {
            // SAFETY: checked; buffer contract forwarded from the caller.
            let result = unsafe { sync_engine::run(self.file, request, &self.hooks) };
            self.ready.push(Completion { tag, result });
            return Ok(());
        }
        let slot = self
            .free_slots
            .pop()
            .expect("a free slot exists while in_flight < depth");
        self.slots[slot] = (tag, Transfer::new(request));
        // SAFETY: forwarded caller contract.
        unsafe { self.start(slot) };
        Ok(())
    }

    /// Hands queued requests to the kernel, waits until at least `min_complete` requests
    /// (capped at `in_flight`) have completed, and appends every available completion to
    /// `out`. One `io_uring_enter` per wait; `min_complete` 0 polls without blocking.
    /// Returns how many were appended.
    pub fn reap(&mut self, min_complete: usize, out: &mut Vec<Completion>) -> usize {
        let wanted = min_complete.min(self.in_flight);
        let mut delivered = self.ready.len();
        out.append(&mut self.ready);
        self.in_flight -= delivered;
        if self.ring.is_none() {
            return delivered;
        }
        // Completions posted by earlier submissions (GETEVENTS) need no syscall.
        delivered += self.drain_completions(out);
        if delivered >= wanted && delivered > 0 && self.unsubmitted == 0 {
            return delivered;
        }
        // Each pass enters the kernel once and waits for at least one completion (while
        // fewer than `wanted` arrived); continuations make progress, so this ends.
        loop {
            let waiting_for = wanted.saturating_sub(delivered).min(self.in_flight);
            let ring = self.ring.as_mut().expect("io_uring queue");
            let entered = if waiting_for == 0 {
                // Still enter with GETEVENTS: with DEFER_TASKRUN, completions are only
                // posted by such a call.
                uring::submit_now(ring)
            } else {
                uring::submit_and_wait(ring, waiting_for)
            };
            entered.unwrap_or_else(|error| fatal_ring_error(&error));
            self.unsubmitted = 0;
            delivered += self.drain_completions(out);
            if delivered >= wanted {
                return delivered;
            }
        }
    }

    /// Submits queued SQEs without waiting (completions that arrived meanwhile are posted for
    /// the next `reap`).
    pub fn submit(&mut self) -> Result<(), IoError> {
        let Some(ring) = self.ring.as_mut() else {
            return Ok(());
        };
        uring::submit_now(ring)
            .map_err(|source| os_error(IoOp::Setup, self.file.path(), 0, 0, source))?;
        self.unsubmitted = 0;
        Ok(())
    }

    /// Moves every CQE into `out` (finished requests) or back into the SQ (continuations).
    fn drain_completions(&mut self, out: &mut Vec<Completion>) -> usize {
        let ring = self.ring.as_mut().expect("io_uring queue");
        let mut delivered = 0;
        let mut completion = ring.completion();
        // Bounded by the CQ size; continuations are pushed after the CQ borrow ends.
        let mut resubmit = [0usize; 64];
        let mut resubmit_count = 0;
        for entry in completion.by_ref() {
            let slot = entry.user_data() as usize;
            let (tag, transfer) = &mut self.slots[slot];
            match transfer.on_result(entry.result(), self.file, &self.hooks) {
                Step::Complete => {
                    out.push(Completion {
                        tag: *tag,
                        result: Ok(()),
                    });
                    self.free_slots.push(slot);
                    delivered += 1;
                }
                Step::Failed(error) => {
                    out.push(Completion {
                        tag: *tag,
                        result: Err(error),
                    });
                    self.free_slots.push(slot);
                    delivered += 1;
                }
                Step::Resubmit => {
                    resubmit[resubmit_count] = slot;
                    resubmit_count += 1;
                    if resubmit_count == resubmit.len() {
                        break;
                    }
                }
            }
        }
        drop(completion);
        self.in_flight -= delivered;
        for &slot in &resubmit[..resubmit_count] {
            // SAFETY: the slot's buffer was guaranteed by `push`'s caller until completion.
            unsafe { self.start(slot) };
        }
        delivered += self.ready.len();
        self.in_flight -= self.ready.len();
        out.append(&mut self.ready);
        delivered
    }

    /// Puts the next step of slot `slot` into the SQ, or finishes it without the kernel.
    ///
    /// # Safety
    /// The slot's buffer is valid until its completion is reaped.
    unsafe fn start(&mut self, slot: usize) {
        // Ends: each pass without the kernel either finishes or uses a bounded retry.
        loop {
            let tag = self.slots[slot].0;
            // SAFETY: forwarded from the caller.
            let plan = unsafe { self.slots[slot].1.plan(&self.hooks, self.file) };
            match plan {
                Plan::Submit(chunk) => {
                    let kind = self.slots[slot].1.request.kind;
                    let entry = transfer_entry(self.target, kind, &chunk, slot as u64);
                    let ring = self.ring.as_mut().expect("io_uring queue");
                    // SAFETY: forwarded from the caller; in_flight <= depth = SQ size, and a
                    // full SQ is flushed first.
                    unsafe { push_entry(ring, &entry) };
                    self.unsubmitted += 1;
                    if self.submit_batch > 0 && self.unsubmitted >= self.submit_batch {
                        uring::submit_now(ring).unwrap_or_else(|error| fatal_ring_error(&error));
                        self.unsubmitted = 0;
                    }
                    return;
                }
                Plan::Pretend(result) => {
                    match self.slots[slot].1.on_result(result, self.file, &self.hooks) {
                        Step::Resubmit => continue,
                        Step::Complete => self.finish_early(slot, tag, Ok(())),
                        Step::Failed(error) => self.finish_early(slot, tag, Err(error)),
                    }
                }
            }
            return;
        }
    }

    fn finish_early(&mut self, slot: usize, tag: u64, result: Result<(), IoError>) {
        self.free_slots.push(slot);
        self.ready.push(Completion { tag, result });
    }
}

/// # Safety
/// The entry's buffer stays valid until its completion is reaped.
unsafe fn push_entry(ring: &mut IoUring, entry: &io_uring::squeue::Entry) {
    if ring.submission().is_full() {
        uring::submit_and_wait(ring, 0).unwrap_or_else(|error| fatal_ring_error(&error));
    }
    // SAFETY: forwarded from the caller.
    let pushed = unsafe { ring.submission().push(entry) };
    assert!(
        pushed.is_ok(),
        "SQ full although in-flight count is at most its size"
    );
}

impl Drop for IoQueue<'_> {
    fn drop(&mut self) {
        // Operations still in the kernel reference caller buffers: wait for all of them.
        let mut discard = Vec::new();
        while self.in_flight > 0 {
            self.reap(self.in_flight, &mut discard);
            discard.clear();
        }
    }
}
