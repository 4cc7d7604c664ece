//! `IoEngine`: the handle the buffer pool drives. It picks io_uring or pread/pwrite once, at
//! construction, and dispatches every call to that engine.

use std::io;
use std::sync::{Arc, Once};

use crate::config::{EngineChoice, EngineKind, IoConfig};
use crate::error::{IoError, IoOp};
use crate::file::{DirectFile, os_error};
use crate::power_loss::PowerLoss;
use crate::queue::IoQueue;
use crate::sync_engine;
use crate::transfer::{Hooks, check_request};
use crate::uring::{self, RingFlags, UringSetupError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
}

/// One request on caller memory. `buf` is a raw pointer: the pool passes addresses inside its
/// mmapped region, and the bytes go straight between the disk and that address.
#[derive(Debug, Clone, Copy)]
pub struct IoRequest {
    pub kind: IoKind,
    pub offset: u64,
    pub buf: *mut u8,
    pub len: usize,
}

impl IoRequest {
    pub fn read(offset: u64, buf: *mut u8, len: usize) -> Self {
        IoRequest {
            kind: IoKind::Read,
            offset,
            buf,
            len,
        }
    }

    pub fn write(offset: u64, buf: *const u8, len: usize) -> Self {
        IoRequest {
            kind: IoKind::Write,
            offset,
            buf: buf.cast_mut(),
            len,
        }
    }
}

/// The engine handle. Clone + Send + Sync. With io_uring, every thread that submits gets its
/// own ring (created on first use, dropped with the thread or on the next use after the last
/// engine clone is gone), so a thread waiting on its completions never blocks another's.
#[derive(Clone)]
pub struct IoEngine {
    shared: Arc<EngineShared>,
}

/// What every clone of an engine shares. Send + Sync by its fields: the rings themselves live in
/// thread-locals, never here.
pub(crate) struct EngineShared {
    pub kind: EngineKind,
    pub ring_entries: u32,
    pub ring_flags: RingFlags,
    pub hooks: Hooks,
}

static FALLBACK_WARNING: Once = Once::new();

impl IoEngine {
    pub fn new(config: IoConfig) -> Result<IoEngine, IoError> {
        config.validate()?;
        let choice = config.effective_choice()?;
        let (kind, ring_flags) = match choice {
            EngineChoice::Sync => (EngineKind::Sync, RingFlags::default()),
            EngineChoice::Uring => match uring::probe(config.ring_entries) {
                Ok(flags) => (EngineKind::Uring, flags),
                Err(error) => {
                    return Err(IoError::EngineUnavailable {
                        reason: error.to_string(),
                    });
                }
            },
            EngineChoice::Auto => match uring::probe(config.ring_entries) {
                Ok(flags) => (EngineKind::Uring, flags),
                Err(UringSetupError::NotPermitted(source)) => {
                    FALLBACK_WARNING.call_once(|| {
                        tracing::warn!(
                            "io_uring is unavailable ({source}); falling back to pread/pwrite"
                        );
                    });
                    (EngineKind::Sync, RingFlags::default())
                }
                Err(error) => {
                    return Err(IoError::EngineUnavailable {
                        reason: error.to_string(),
                    });
                }
            },
        };
        let shared = EngineShared {
            kind,
            ring_entries: config.ring_entries,
            ring_flags,
            hooks: Hooks {
                faults: config.faults,
                power_loss: config.power_loss,
            },
        };
        Ok(IoEngine {
            shared: Arc::new(shared),
        })
    }

    pub fn kind(&self) -> EngineKind {
        self.shared.kind
    }

    /// Reads `len` bytes at `offset` into `buf`.
    ///
    /// # Safety
    /// `[buf, buf + len)` is valid for writes and not accessed by anyone else until this returns.
    pub unsafe fn read_at(
        &self,
        file: &DirectFile,
        offset: u64,
        buf: *mut u8,
        len: usize,
    ) -> Result<(), IoError> {
        let request = IoRequest::read(offset, buf, len);
        // SAFETY: forwarded caller contract.
        unsafe { self.one(file, request) }
    }

    /// Writes `len` bytes from `buf` at `offset`.
    ///
    /// # Safety
    /// `[buf, buf + len)` is valid for reads and not written by anyone until this returns.
    pub unsafe fn write_at(
        &self,
        file: &DirectFile,
        offset: u64,
        buf: *const u8,
        len: usize,
    ) -> Result<(), IoError> {
        let request = IoRequest::write(offset, buf, len);
        // SAFETY: forwarded caller contract.
        unsafe { self.one(file, request) }
    }

    /// Submits every request with one syscall (as far as the ring size allows), waits for all
    /// of them, continues short transfers, retries EAGAIN/EINTR. `outcomes[i]` receives request
    /// i's result. Alignment is checked for every request before anything is submitted
    /// (misaligned ones get `IoError::Misaligned` and are not submitted).
    ///
    /// # Safety
    /// As `read_at`/`write_at`, for every request; no two requests overlap in memory if either
    /// is a read.
    pub unsafe fn submit_batch(
        &self,
        file: &DirectFile,
        requests: &[IoRequest],
        outcomes: &mut [Result<(), IoError>],
    ) {
        // SAFETY: forwarded caller contract.
        let sync_not_requested = unsafe { self.batch(file, requests, outcomes, false) };
        // Without a sync the result only repeats what `outcomes` already says.
        drop(sync_not_requested);
    }

    /// `submit_batch`, then, once every write completed, fdatasync (the syscall on this
    /// thread: io_uring would only hand an fsync op to a worker thread). Returns the sync's
    /// result; each write's result is in `outcomes`. Counts as one sync for fault injection
    /// and power loss; a power-loss cut at this sync finds the writes unsynced.
    ///
    /// # Safety
    /// As `submit_batch`.
    pub unsafe fn write_batch_and_sync(
        &self,
        file: &DirectFile,
        requests: &[IoRequest],
        outcomes: &mut [Result<(), IoError>],
    ) -> Result<(), IoError> {
        // SAFETY: forwarded caller contract.
        unsafe { self.batch(file, requests, outcomes, true) }
    }

    /// fdatasync through the engine (the syscall; see `write_batch_and_sync`), after asking the fault injector and the power-loss simulator, if configured.
    pub fn sync_data(&self, file: &DirectFile) -> Result<(), IoError> {
        // SAFETY: no requests, so no buffers.
        unsafe { self.batch(file, &[], &mut [], true) }
    }

    /// Grows `file` to `len` bytes with its blocks allocated (fallocate), unless the fault
    /// injector says the disk is full (`FaultInjector::fail_all_allocations`). Not seen by the
    /// power-loss simulator (it does not roll file sizes back).
    pub fn allocate(&self, file: &DirectFile, len: u64) -> Result<(), IoError> {
        let faults = self.shared.hooks.faults.as_ref();
        if let Some(errno) = faults.and_then(|faults| faults.on_allocate()) {
            let current = file.len()?;
            return Err(os_error(
                IoOp::Allocate,
                file.path(),
                current,
                len.saturating_sub(current) as usize,
                io::Error::from_raw_os_error(errno),
            ));
        }
        file.grow_to(len)
    }

    /// Submits `count` no-op requests in batches of the ring size and waits for them: the cost
    /// of the submission path without a device (criterion benches). Sync has nothing to do.
    pub fn nop_batch(&self, count: usize) -> Result<(), IoError> {
        match self.shared.kind {
            EngineKind::Sync => Ok(()),
            EngineKind::Uring => uring::with_thread_ring(&self.shared, |ring| ring.nops(count))?,
        }
    }

    /// A streaming queue on the calling thread: keep up to `depth` requests in flight and reap
    /// them as they complete (benchmarks, scans). It owns its own ring.
    pub fn queue<'file>(
        &self,
        file: &'file DirectFile,
        depth: u32,
    ) -> Result<IoQueue<'file>, IoError> {
        IoQueue::new(&self.shared, file, depth)
    }

    /// # Safety
    /// As `read_at`/`write_at`.
    unsafe fn one(&self, file: &DirectFile, request: IoRequest) -> Result<(), IoError> {
        match self.shared.kind {
            EngineKind::Sync => {
                check_request(file, &request)?;
                // SAFETY: checked; buffer contract forwarded from the caller.
                unsafe { sync_engine::run(file, request, &self.shared.hooks) }
            }
            EngineKind::Uring => {
                let mut outcome = [Ok(())];
                // SAFETY: forwarded caller contract.
                unsafe { self.batch(file, std::slice::from_ref(&request), &mut outcome, false)? };
                let [outcome] = outcome;
                outcome
            }
        }
    }

    /// # Safety
    /// As `submit_batch`.
    unsafe fn batch(
        &self,
        file: &DirectFile,
        requests: &[IoRequest],
        outcomes: &mut [Result<(), IoError>],
        sync_after: bool,
    ) -> Result<(), IoError> {
        assert_eq!(
            requests.len(),
            outcomes.len(),
            "one outcome slot per request"
        );
        if sync_after && !self.shared.hooks.is_empty() {
            // SAFETY: forwarded caller contract.
            return unsafe { self.batch_with_sync_hooks(file, requests, outcomes) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { self.dispatch(file, requests, outcomes, sync_after) }
    }

    /// A batch ending in a sync, with test hooks. Order: power off fails the sync; else the
    /// fault injector may fail it; else the power-loss simulator counts it (and may cut
    /// there), after the batch's writes completed; a sync that succeeds makes the simulator
    /// forget the writes it covers. A failed sync is never performed.
    ///
    /// # Safety
    /// As `submit_batch`.
    unsafe fn batch_with_sync_hooks(
        &self,
        file: &DirectFile,
        requests: &[IoRequest],
        outcomes: &mut [Result<(), IoError>],
    ) -> Result<(), IoError> {
        let hooks = &self.shared.hooks;
        let power_loss = hooks.power_loss.as_ref();
        let injected = if power_loss.is_some_and(PowerLoss::is_cut) {
            Some(libc::EIO)
        } else {
            hooks.faults.as_ref().and_then(|faults| faults.on_sync())
        };
        let Some(power_loss) = power_loss.filter(|_| injected.is_none()) else {
            if let Some(errno) = injected {
                // SAFETY: forwarded caller contract.
                unsafe { self.dispatch(file, requests, outcomes, false) }?;
                return Err(sync_error(file, errno));
            }
            // Only a fault injector, and it let this sync pass: the sync as usual.
            // SAFETY: forwarded caller contract.
            return unsafe { self.dispatch(file, requests, outcomes, true) };
        };
        // SAFETY: forwarded caller contract.
        unsafe { self.dispatch(file, requests, outcomes, false) }?;
        let ticket = power_loss
            .before_sync(file)
            .map_err(|errno| sync_error(file, errno))?;
        // SAFETY: no requests, so no buffers.
        unsafe { self.dispatch(file, &[], &mut [], true) }?;
        power_loss
            .after_sync(ticket)
            .map_err(|errno| sync_error(file, errno))
    }

    /// Runs a batch on this engine's kind. The `Err` is the sync's result when `sync_after`,
    /// or "no ring on this thread" for io_uring; per-request results are in `outcomes`.
    ///
    /// # Safety
    /// As `submit_batch`.
    unsafe fn dispatch(
        &self,
        file: &DirectFile,
        requests: &[IoRequest],
        outcomes: &mut [Result<(), IoError>],
        sync_after: bool,
    ) -> Result<(), IoError> {
        let hooks = &self.shared.hooks;
        match self.shared.kind {
            EngineKind::Sync => {
                for (request, outcome) in requests.iter().zip(outcomes.iter_mut()) {
                    *outcome = check_request(file, request);
                }
                for (request, outcome) in requests.iter().zip(outcomes.iter_mut()) {
                    if outcome.is_ok() {
                        // SAFETY: checked; buffer contract forwarded from the caller.
                        *outcome = unsafe { sync_engine::run(file, *request, hooks) };
                    }
                }
            }
            EngineKind::Uring => {
                // SAFETY: forwarded caller contract.
                let ran = uring::with_thread_ring(&self.shared, |ring| unsafe {
                    ring.run_batch(file, requests, outcomes, hooks);
                });
                if let Err(error) = ran {
                    // No ring on this thread: nothing was submitted.
                    for outcome in outcomes.iter_mut() {
                        *outcome = Err(IoError::EngineUnavailable {
                            reason: error.to_string(),
                        });
                    }
                    return Err(error);
                }
            }
        }
        // On both kinds the fdatasync is the syscall, on this thread, after the writes
        // completed: io_uring never runs IORING_OP_FSYNC inline (it always hands it to an
        // io-wq worker), so as an SQE it would only add a thread wake-up and two context
        // switches to a call whose caller blocks for it anyway (about 9% more SETs/s under
        // `always`, DESIGN.md).
        if sync_after { file.sync_data() } else { Ok(()) }
    }
}

/// A sync that failed without reaching the kernel (injected, or power is off).
fn sync_error(file: &DirectFile, errno: i32) -> IoError {
    os_error(
        IoOp::Sync,
        file.path(),
        0,
        0,
        io::Error::from_raw_os_error(errno),
    )
}

impl std::fmt::Debug for IoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoEngine")
            .field("kind", &self.shared.kind)
            .field("ring_entries", &self.shared.ring_entries)
            .finish()
    }
}
