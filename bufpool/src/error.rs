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
        "no frame could be freed after {rounds} eviction rounds over {waited_ms} ms; of the \
         {frame_count} frames: {held}"
    )]
    NoEvictableFrame {
        frame_count: u64,
        rounds: u32,
        waited_ms: u64,
        /// What held the frames when the pool gave up (counted then, not guessed).
        held: FrameCensus,
    },
    #[error("gave up waiting for the latch of page {} (held too long, or by this very thread)", page.0)]
    LatchWaitLimit { page: PageId },
    #[error("a read of page {} accessed bytes outside the page", page.0)]
    ViewOutOfRange { page: PageId },
    #[error("page hook failed: {0}")]
    Hook(String),
    #[cfg(not(loom))]
    #[error("export refused: {0}")]
    ExportRefused(#[from] crate::export::ExportRefused),
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

/// Who held the frame budget when `PoolError::NoEvictableFrame` was returned: a census of
/// the charged frames taken at that moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameCensus {
    /// Resident pages exclusively latched by their users.
    pub exclusive: u64,
    /// Resident pages locked as victims of evictions under way (their frames are freed once
    /// those evictions' write-backs complete).
    pub in_eviction: u64,
    /// Resident pages with shared latches.
    pub shared: u64,
    /// Frames charged to fault-ins or evictions under way.
    pub in_transition: u64,
    /// Evicted pages whose frame a reader kept re-instantiating: charged until a re-check
    /// finds the frame gone.
    pub awaiting_recheck: u64,
    /// Resident pages with no latch (their eviction failed, or readers kept touching them).
    pub unlatched: u64,
    /// The last eviction error seen while waiting (it belongs to the victim's owner).
    pub last_eviction_error: Option<String>,
}

impl std::fmt::Display for FrameCensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exclusively latched, {} locked by evictions under way, {} shared-latched, {} \
             being faulted in or evicted, {} evicted but awaiting a re-check (readers kept \
             touching them), {} unlatched",
            self.exclusive,
            self.in_eviction,
            self.shared,
            self.in_transition,
            self.awaiting_recheck,
            self.unlatched
        )?;
        if let Some(error) = &self.last_eviction_error {
            write!(f, "; the last eviction error: {error}")?;
        }
        Ok(())
    }
}

/// An optimistic read or upgrade saw a concurrent change: start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("optimistic read conflicted with a writer or an eviction: restart")]
pub struct Restart;
