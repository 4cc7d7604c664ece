//! State shared by an engine and all its tree handles, and the checksum hooks the pool
//! calls on write-back and fault-in.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bufpool::{PageHooks, PageId, Pool, PoolError};
use dashmap::DashMap;

use crate::allocator::Allocator;
use crate::page;
use crate::superblock::{FIRST_DATA_PAGE, Superblock};
use crate::tree::TreeState;

/// Invariants:
/// 1. `writers` is held shared by every operation that changes pages (put, delete, tree
///    creation, bulk load) and exclusively by a checkpoint, so a checkpoint sees a state
///    no write is half-way through.
/// 2. `trees` holds at most one `TreeState` per name, created under `tree_creation`.
/// 3. `last_superblock` is the superblock most recently made durable.
/// 4. While it exists, no other engine has the file open (`_file_lock`).
pub(crate) struct Shared {
    pub pool: Pool,
    pub path: PathBuf,
    pub allocator: Allocator,
    pub catalog_root: u64,
    pub trees: DashMap<String, Arc<TreeState>>,
    pub tree_creation: Mutex<()>,
    pub writers: RwLock<()>,
    pub last_superblock: Mutex<Superblock>,
    /// Held for the engine's life: an advisory exclusive lock on the file.
    pub _file_lock: std::fs::File,
}

impl Shared {
    pub fn corrupted(&self, page: u64, reason: impl Into<String>) -> crate::EngineError {
        crate::EngineError::Corrupted {
            page,
            file: self.path.clone(),
            reason: reason.into(),
        }
    }
}

/// Stamps the checksum on write-back and verifies it on fault-in. The superblock copies
/// are verified by the engine itself while opening (a bad copy there is not an error, the
/// other copy may be good); afterwards the hooks verify them like every page.
pub(crate) struct ChecksumHooks {
    path: PathBuf,
    verify_superblocks: AtomicBool,
}

impl ChecksumHooks {
    pub fn new(path: &Path) -> ChecksumHooks {
        ChecksumHooks {
            path: path.to_path_buf(),
            verify_superblocks: AtomicBool::new(false),
        }
    }

    pub fn verify_superblocks_from_now_on(&self) {
        self.verify_superblocks.store(true, Ordering::Release);
    }
}

impl PageHooks for ChecksumHooks {
    fn before_write_back(&self, page: PageId, bytes: &mut [u8]) -> Result<(), PoolError> {
        page::stamp_checksum(page.0, bytes);
        Ok(())
    }

    fn after_read(&self, page: PageId, bytes: &[u8]) -> Result<(), PoolError> {
        if page.0 < FIRST_DATA_PAGE && !self.verify_superblocks.load(Ordering::Acquire) {
            return Ok(());
        }
        page::verify_checksum(page.0, bytes).map_err(|mismatch| PoolError::Corrupted {
            page,
            file: self.path.clone(),
            reason: format!(
                "checksum mismatch: stored {:#010x}, computed {:#010x}",
                mismatch.stored, mismatch.computed
            ),
        })
    }
}
