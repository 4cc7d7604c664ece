//! State shared by an engine and all its tree handles, and the checksum hooks the pool
//! calls on write-back and fault-in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bufpool::{PageHooks, PageId, Pool, PoolError};
use bufpool_io::DirectFile;
use dashmap::DashMap;

use crate::allocator::Allocator;
use crate::page;
use crate::superblock::{FIRST_DATA_PAGE, Superblock};
use crate::tree::TreeState;
use crate::wal::{Durability, Log, RecoveryReport};

/// Invariants:
/// 1. Every page change goes through `wal::commit` (a logged record) before its latch is
///    released; no page is written back before the log is durable up to its LSN.
/// 2. `trees` holds at most one `TreeState` per name, created under `tree_creation`.
/// 3. `last_superblock` is the superblock most recently made durable; the log is kept
///    from the older copy's redo LSN on.
/// 4. While it exists, no other engine has the file open (`_file_lock`).
pub(crate) struct Shared {
    pub pool: Pool,
    pub path: PathBuf,
    pub allocator: Allocator,
    pub catalog_root: PageId,
    pub trees: DashMap<String, Arc<TreeState>>,
    pub tree_creation: Mutex<()>,
    pub log: Arc<Log>,
    pub durability: Durability,
    pub checkpoint_log_bytes: u64,
    /// A second descriptor of the data file, for the superblock copies.
    pub data_file: DirectFile,
    pub last_superblock: Mutex<Superblock>,
    /// The log's end just after the last checkpoint: equal to it, nothing changed since.
    pub checkpoint_end: AtomicU64,
    pub checkpoint_lock: Mutex<()>,
    pub closing: AtomicBool,
    pub recovery: RecoveryReport,
    /// Held for the engine's life: an advisory exclusive lock on the file.
    pub _file_lock: std::fs::File,
}

impl Shared {
    pub fn corrupted(&self, page: PageId, reason: impl Into<String>) -> crate::EngineError {
        crate::EngineError::Corrupted {
            page: page.0,
            file: self.path.clone(),
            reason: reason.into(),
        }
    }
}

/// The pool's hooks: the write-ahead rule and the checksum on write-back, verification on
/// fault-in. The superblock copies are never read or written through the pool.
///
/// During recovery a page that fails verification is accepted and remembered as torn:
/// redo must overwrite it with a full image from the log before using it.
pub(crate) struct ChecksumHooks {
    path: PathBuf,
    log: OnceLock<Arc<Log>>,
    recovering: AtomicBool,
    torn: Mutex<BTreeSet<PageId>>,
}

impl ChecksumHooks {
    pub fn new(path: &Path) -> ChecksumHooks {
        ChecksumHooks {
            path: path.to_path_buf(),
            log: OnceLock::new(),
            recovering: AtomicBool::new(false),
            torn: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on a page is written back only once the log is durable up to its LSN.
    pub fn attach_log(&self, log: Arc<Log>) {
        assert!(self.log.set(log).is_ok(), "one log per pool");
    }

    pub fn set_recovering(&self, recovering: bool) {
        self.recovering.store(recovering, Ordering::Release);
    }

    fn torn(&self) -> std::sync::MutexGuard<'_, BTreeSet<PageId>> {
        self.torn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `page` was read torn during recovery (and forgets it: the caller repairs it).
    pub fn take_torn(&self, page: PageId) -> bool {
        self.torn().remove(&page)
    }

    pub fn torn_pages(&self) -> Vec<PageId> {
        self.torn().iter().copied().collect()
    }
}

impl PageHooks for ChecksumHooks {
    fn before_write_back(&self, page: PageId, bytes: &mut [u8]) -> Result<(), PoolError> {
        assert!(page.0 >= FIRST_DATA_PAGE, "superblocks bypass the pool");
        if let Some(log) = self.log.get() {
            // The write-ahead rule: the log first, up to the last change of this page.
            log.flush_to(page::lsn_of(bytes), false).map_err(|error| {
                PoolError::Hook(format!("page {} not written back: {error}", page.0))
            })?;
        }
        page::stamp_checksum(page.0, bytes);
        Ok(())
    }

    fn after_read(&self, page: PageId, bytes: &[u8]) -> Result<(), PoolError> {
        match page::verify_checksum(page.0, bytes) {
            Ok(()) => Ok(()),
            Err(_) if self.recovering.load(Ordering::Acquire) => {
                self.torn().insert(page);
                Ok(())
            }
            Err(mismatch) => Err(PoolError::Corrupted {
                page,
                file: self.path.clone(),
                reason: format!(
                    "checksum mismatch: stored {:#010x}, computed {:#010x}",
                    mismatch.stored, mismatch.computed
                ),
            }),
        }
    }
}

impl Shared {
    /// Waits for the log as this engine's durability mode promises for a write ending at
    /// `lsn`.
    pub fn acknowledge(&self, lsn: u64) -> Result<(), crate::EngineError> {
        match self.durability {
            Durability::Immediate => self.log.flush_to(lsn, true),
            Durability::Periodic(_) | Durability::None => Ok(()),
        }
    }

    /// The log position a new page's LSN starts at (see `Allocator::allocate`).
    pub fn allocate(&self) -> Result<crate::wal::PageMut<'_>, crate::EngineError> {
        self.allocator.allocate(&self.pool, self.log.end())
    }
}
