//! The crate's one error enum.

use std::path::PathBuf;

use crate::PageId;

/// Everything the pool can fail with. I/O errors keep the io crate's operation, file and
/// offset; OS calls of the pool itself (mmap, memfd, madvise) say which call failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Io(#[from] bufpool_io::IoError),
    #[error("page {} of {} is corrupted: {reason}", page.0, file.display())]
    Corrupted {
        page: PageId,
        file: PathBuf,
        reason: String,
    },
    #[error("page {} is out of range (the file has {page_count} pages)", page.0)]
    PageOutOfRange { page: PageId, page_count: u64 },
    #[error("the region is full: it holds at most {page_count_max} pages")]
    RegionFull { page_count_max: u64 },
    #[error("the file has {page_count} pages but the region holds at most {page_count_max}")]
    FileTooLarge {
        page_count: u64,
        page_count_max: u64,
    },
    #[error(
        "no evictable frame after {rounds} eviction rounds: all {frame_count} frames are latched \
         (the frame budget is too small for the concurrency)"
    )]
    NoEvictableFrame { frame_count: u64, rounds: u32 },
    #[error("gave up waiting for the latch of page {} (held too long, or by this very thread)", page.0)]
    LatchWaitLimit { page: PageId },
    #[error("a read of page {} accessed bytes outside the page", page.0)]
    ViewOutOfRange { page: PageId },
    #[error("page hook failed: {0}")]
    Hook(String),
    #[error("export needs the memfd backing; this pool uses anonymous memory")]
    ExportNeedsMemfd,
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("{call} failed: {source}")]
    Os {
        call: &'static str,
        source: std::io::Error,
    },
}

impl PoolError {
    /// The last OS error, attributed to `call`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn last_os(call: &'static str) -> PoolError {
        PoolError::Os {
            call,
            source: std::io::Error::last_os_error(),
        }
    }
}

/// An optimistic read or upgrade saw a concurrent change: start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("optimistic read conflicted with a writer or an eviction: restart")]
pub struct Restart;
