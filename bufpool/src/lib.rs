//! bufpool: a vmcache-style buffer pool.
//!
//! Every page id has a fixed address in one virtual reservation (`base + pid * PAGE_SIZE`);
//! a hit is a state-word check and a pointer. All file I/O is O_DIRECT through the `io` crate,
//! straight between disk and the page's own address. Eviction follows the locked
//! shootdown → clear-uptodate → evict protocol of the 2004 `invalidate_inode_pages2` thread,
//! with a bounded retry loop for concurrent refaults (`eviction.rs`). With the memfd backing
//! the frames and the page-state table can be exported to other processes (`export.rs`).
//!
//! Reading order (building blocks first; the modules below are declared in this order):
//! `sync` (std or loom atomics), `state` (the page-state word), `view` (reading bytes that
//! may change), `error`, `config` (the configuration and the pool's limits, `BATCH_MAX`
//! among them; its test-hook field names `eviction::EvictionProbe`), `eviction` (the
//! protocol, and the `Frames` it needs from the OS), `latch` (the latch loop and the one
//! fault-in), `region` (memory: implements `Frames`), `replacer` (the resident set the clock
//! sweeps), `stats`, `pool` (the access paths, the frame budget, the clock, write-back), its
//! `guard`s, `export`.

// One module per group: rustfmt sorts a group alphabetically, which would undo the order.
mod sync;

pub mod state;

mod view;

mod error;

mod config;

pub mod eviction;

pub mod latch;

#[cfg(not(loom))]
mod region;

#[cfg(not(loom))]
mod replacer;

#[cfg(not(loom))]
mod stats;

#[cfg(not(loom))]
mod pool;

#[cfg(not(loom))]
mod guard;

#[cfg(not(loom))]
mod export;

pub use config::{BATCH_MAX, Backing, Config, EVICTION_BATCH_MAX, PageHooks};
pub use error::{FrameCensus, PoolError, Restart};
#[cfg(not(loom))]
pub use export::{
    EXPORT_READ_ATTEMPTS_MAX, Export, ExportRefused, ExportedFd, ExportedView, ViewError,
};
#[cfg(not(loom))]
pub use guard::{ExclusiveGuard, OptimisticGuard, SharedGuard};
#[cfg(not(loom))]
pub use pool::{FaultStream, OPTIMISTIC_RESTARTS_MAX, Pool};
#[cfg(not(loom))]
pub use stats::Stats;
pub use view::PageView;

/// Page size in bytes: the unit of I/O, residency and latching.
pub const PAGE_SIZE: usize = 4096;

/// A page's number in the data file; its bytes live at `base + id * PAGE_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PageId(pub u64);
