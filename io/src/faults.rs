//! Fault injection for tests of the layers above: make the n-th read or write fail or complete
//! short, or the n-th fdatasync fail. The engines check `Option<FaultInjector>` once per
//! transfer and once per sync; absent, it costs nothing more.
//!
//! Counting rule: every transfer handed to the kernel counts, including the continuation of a
//! short transfer. So `fail_nth_write(1, Short)` followed by `fail_nth_write(2, Enospc)` models a
//! disk that fills up in the middle of a write: the first part lands, the rest gets ENOSPC.
//! Syncs are counted once per `IoEngine::sync_data` or `IoEngine::write_batch_and_sync` call
//! (whatever the engine issues underneath). An injected sync fault skips the fdatasync itself:
//! the writes of a `write_batch_and_sync` still happen, but nothing is made durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::engine::IoKind;

/// What an injected fault does to one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The transfer fails with EIO; nothing is transferred.
    Eio,
    /// The transfer fails with ENOSPC; nothing is transferred.
    Enospc,
    /// The transfer moves at most `bytes` bytes and reports a short count; the engine continues
    /// with the rest, as it does for a real short transfer. Keep `bytes` a multiple of the
    /// alignment, or the O_DIRECT continuation is refused by the kernel (EINVAL).
    Short { bytes: usize },
}

/// What the engine must do for one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Do not submit; complete with this negative errno.
    Fail(i32),
    /// Submit at most this many bytes.
    Limit(usize),
}

/// Shared between a test and the engine (Arc inside; clones see the same state).
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    reads_seen: AtomicU64,
    writes_seen: AtomicU64,
    syncs_seen: AtomicU64,
    plan: Mutex<Plan>,
}

#[derive(Debug, Default)]
struct Plan {
    /// (transfer number, fault), transfer numbers 1-based over the injector's lifetime.
    reads: Vec<(u64, Fault)>,
    writes: Vec<(u64, Fault)>,
    all_writes: Option<Fault>,
    /// (sync number, fault), 1-based like transfers; faults are Eio or Enospc only.
    syncs: Vec<(u64, Fault)>,
    all_syncs: Option<Fault>,
    /// Faults of `IoEngine::allocate` (Eio or Enospc only).
    all_allocations: Option<Fault>,
}

impl FaultInjector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `n`-th read transfer from now (1-based) gets `fault`.
    pub fn fail_nth_read(&self, n: u64, fault: Fault) {
        assert!(n >= 1, "n is 1-based");
        let target = self.inner.reads_seen.load(Ordering::SeqCst) + n;
        self.plan().reads.push((target, fault));
    }

    /// The `n`-th write transfer from now (1-based) gets `fault`.
    pub fn fail_nth_write(&self, n: u64, fault: Fault) {
        assert!(n >= 1, "n is 1-based");
        let target = self.inner.writes_seen.load(Ordering::SeqCst) + n;
        self.plan().writes.push((target, fault));
    }

    /// Every write transfer gets `fault` until called again with `None` (or `clear`):
    /// "the disk is full until space is freed".
    pub fn fail_all_writes(&self, fault: Option<Fault>) {
        self.plan().all_writes = fault;
    }

    /// The `n`-th sync from now (1-based) fails with `fault`, and is not performed.
    ///
    /// # Panics
    /// `fault` is `Short`: a sync moves no bytes, so a short sync has no meaning; asking for one
    /// is a bug in the test.
    pub fn fail_nth_sync(&self, n: u64, fault: Fault) {
        assert!(n >= 1, "n is 1-based");
        assert_sync_fault(fault);
        let target = self.inner.syncs_seen.load(Ordering::SeqCst) + n;
        self.plan().syncs.push((target, fault));
    }

    /// Every sync fails with `fault` (and is not performed) until called again with `None`
    /// (or `clear`): "the device lost its write cache and says so on every flush".
    ///
    /// # Panics
    /// As `fail_nth_sync`, for `Some(Short { .. })`.
    pub fn fail_all_syncs(&self, fault: Option<Fault>) {
        if let Some(fault) = fault {
            assert_sync_fault(fault);
        }
        self.plan().all_syncs = fault;
    }

    /// Every block allocation through `IoEngine::allocate` (the log's segment preallocation)
    /// fails with `fault` until called again with `None` (or `clear`): "the filesystem is
    /// full". Transfers into blocks already allocated are not affected.
    ///
    /// # Panics
    /// As `fail_nth_sync`, for `Some(Short { .. })`.
    pub fn fail_all_allocations(&self, fault: Option<Fault>) {
        if let Some(fault) = fault {
            assert_sync_fault(fault);
        }
        self.plan().all_allocations = fault;
    }

    /// Forgets every planned fault.
    pub fn clear(&self) {
        let mut plan = self.plan();
        plan.reads.clear();
        plan.writes.clear();
        plan.all_writes = None;
        plan.syncs.clear();
        plan.all_syncs = None;
        plan.all_allocations = None;
    }

    /// Called by `IoEngine::allocate` before it allocates: the errno (positive) it must fail
    /// with instead, if any.
    pub(crate) fn on_allocate(&self) -> Option<i32> {
        self.plan().all_allocations.map(|fault| match fault {
            Fault::Eio => libc::EIO,
            Fault::Enospc => libc::ENOSPC,
            Fault::Short { .. } => unreachable!("refused when planned"),
        })
    }

    /// Called by the engines once per sync, before it is issued: the errno (positive) the sync
    /// must fail with instead of being performed, if any.
    pub(crate) fn on_sync(&self) -> Option<i32> {
        let number = self.inner.syncs_seen.fetch_add(1, Ordering::SeqCst) + 1;
        let mut plan = self.plan();
        let fault = match plan.all_syncs {
            Some(fault) => Some(fault),
            None => {
                let position = plan.syncs.iter().position(|(target, _)| *target == number);
                position.map(|index| plan.syncs.swap_remove(index).1)
            }
        };
        fault.map(|fault| match fault {
            Fault::Eio => libc::EIO,
            Fault::Enospc => libc::ENOSPC,
            Fault::Short { .. } => unreachable!("refused by assert_sync_fault when planned"),
        })
    }

    /// Called by the engines once per transfer, before it is submitted.
    pub(crate) fn on_transfer(&self, kind: IoKind) -> Option<Injected> {
        let (seen, is_write) = match kind {
            IoKind::Read => (&self.inner.reads_seen, false),
            IoKind::Write => (&self.inner.writes_seen, true),
        };
        let number = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let mut plan = self.plan();
        let fault = if is_write && plan.all_writes.is_some() {
            plan.all_writes
        } else {
            let list = if is_write {
                &mut plan.writes
            } else {
                &mut plan.reads
            };
            let position = list.iter().position(|(target, _)| *target == number);
            position.map(|index| list.swap_remove(index).1)
        };
        fault.map(|fault| match fault {
            Fault::Eio => Injected::Fail(-libc::EIO),
            Fault::Enospc => Injected::Fail(-libc::ENOSPC),
            Fault::Short { bytes } => Injected::Limit(bytes),
        })
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        // A test that panicked while holding the lock leaves a usable plan behind.
        self.inner
            .plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn assert_sync_fault(fault: Fault) {
    assert!(
        !matches!(fault, Fault::Short { .. }),
        "a sync transfers no bytes, so it cannot be short: use Fault::Eio or Fault::Enospc"
    );
}
