//! The pool's one configuration, passed explicitly to `Pool::open`.

use std::sync::Arc;

use crate::eviction::EvictionProbe;
use crate::{PAGE_SIZE, PageId, PoolError};

/// Where the frames live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Backing {
    /// Private anonymous memory: eviction is `madvise(MADV_DONTNEED)`; cannot be exported.
    Anonymous,
    /// A shared memfd: eviction is `fallocate(PUNCH_HOLE)`, which removes the frame from every
    /// mapping in every process; can be exported.
    Memfd,
}

/// The engine's per-page hooks. The pool calls them; it never interprets page bytes itself.
pub trait PageHooks: Send + Sync {
    /// With the page exclusively latched, just before its write-back is submitted. An error
    /// aborts that page's write-back: it stays dirty.
    fn before_write_back(&self, page: PageId, bytes: &mut [u8]) -> Result<(), PoolError>;
    /// After a page was read from disk, before anyone can see it. An error leaves the page
    /// evicted and is returned to the caller who faulted it in.
    fn after_read(&self, page: PageId, bytes: &[u8]) -> Result<(), PoolError>;
}

/// Pages per I/O batch, at most: eviction victims per round, prefetch and flush chunks. Each
/// batch's scratch arrays live on the stack and are sized by it.
pub const BATCH_MAX: usize = 64;

/// Upper bound on `eviction_batch`: an eviction round is one batch.
pub const EVICTION_BATCH_MAX: usize = BATCH_MAX;

#[derive(Clone)]
pub struct Config {
    /// Size of the virtual reservation in pages (MAP_NORESERVE); the file may never exceed it.
    pub page_count_max: u64,
    /// Bytes of resident pages allowed.
    pub frame_budget_bytes: u64,
    pub backing: Backing,
    /// Victims per eviction round (their write-backs share one io submission).
    pub eviction_batch: usize,
    pub io: bufpool_io::IoConfig,
    pub hooks: Option<Arc<dyn PageHooks>>,
    /// Test hook called between eviction steps (see `eviction::EvictionProbe`).
    pub eviction_probe: Option<Arc<dyn EvictionProbe>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            page_count_max: 1 << 24,
            frame_budget_bytes: 256 << 20,
            backing: Backing::Anonymous,
            eviction_batch: 32,
            io: bufpool_io::IoConfig::default(),
            hooks: None,
            eviction_probe: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("page_count_max", &self.page_count_max)
            .field("frame_budget_bytes", &self.frame_budget_bytes)
            .field("backing", &self.backing)
            .field("eviction_batch", &self.eviction_batch)
            .field("io", &self.io)
            .field("hooks", &self.hooks.is_some())
            .finish()
    }
}

impl Config {
    /// The frame budget in pages.
    pub fn frame_count(&self) -> u64 {
        self.frame_budget_bytes / PAGE_SIZE as u64
    }

    // The loom build compiles the configuration for `BATCH_MAX` only; the pool calls this.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn check(&self) -> Result<(), PoolError> {
        let invalid = |reason: &str| Err(PoolError::InvalidConfig(reason.to_string()));
        if self.page_count_max == 0 || self.page_count_max > (1 << 36) {
            return invalid("page_count_max must be in 1..=2^36 (256 TiB)");
        }
        if self.frame_count() < 2 * self.eviction_batch as u64 {
            return invalid("frame_budget_bytes must hold at least two eviction batches");
        }
        if self.eviction_batch == 0 || self.eviction_batch > EVICTION_BATCH_MAX {
            return invalid("eviction_batch must be in 1..=64");
        }
        Ok(())
    }
}
