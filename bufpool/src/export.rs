//! Mmap export: other threads and processes map the pool's frames and page-state table
//! read-only and read pages zero-copy with the same validated optimistic read as the pool.
//!
//! Invariants:
//! 1. The exported fds are read-only open file descriptions of sealed memfds: whoever holds
//!    them cannot write, map writable, punch holes or resize.
//! 2. An `ExportedView` never stores to the state table; it never blocks the pool (no latch).
//! 3. A read returns bytes only when validated against the page's version; a page that is not
//!    uptodate yields `ViewError::Evicted` (the reader's process asks the pool to fault it in
//!    through its own channel: the stress example uses its Unix socket).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use memmap2::{Mmap, MmapOptions};

use crate::state::{EVICTED, LOCKED, LOCKED_EVICTED, PageState, state_of};
use crate::view::PageView;
use crate::{PAGE_SIZE, PageId, PoolError};

/// Attempts of `ExportedView::read` before it reports `ViewError::Busy`.
pub const EXPORT_READ_ATTEMPTS_MAX: u32 = 1 << 12;

/// The fds that make an export. Send both to another process (SCM_RIGHTS) and open an
/// `ExportedView` there.
#[derive(Debug)]
pub struct Export {
    /// Read-only fd of the frame memfd (`page_count_max * PAGE_SIZE` bytes).
    pub frames: OwnedFd,
    /// Read-only fd of the page-state memfd (`page_count_max * 8` bytes).
    pub states: OwnedFd,
}

/// Why an exported read returned no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("page {} is not resident (evicted, or being faulted in or evicted)", .0.0)]
    Evicted(PageId),
    #[error("page {} is beyond the exported region", .0.0)]
    OutOfRange(PageId),
    #[error("page {} kept changing: gave up after {EXPORT_READ_ATTEMPTS_MAX} attempts", .0.0)]
    Busy(PageId),
    #[error("a read of page {} accessed bytes outside the page", .0.0)]
    ViewOutOfRange(PageId),
}

/// Which of the two exported fds a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportedFd {
    Frames,
    States,
}

impl std::fmt::Display for ExportedFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExportedFd::Frames => "frame",
            ExportedFd::States => "page-state",
        })
    }
}

/// Why `ExportedView::open` refused an export: the view's safety rests on both fds being
/// memfds sealed against shrinking and growing (a mapping of a file that shrinks under it
/// raises SIGBUS on the next read), and on their sizes agreeing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportRefused {
    #[error("the exported {fd} fd is not a regular file")]
    NotARegularFile { fd: ExportedFd },
    #[error("the exported {fd} fd is not a memfd with sealing (F_GET_SEALS failed: errno {errno})")]
    NotAMemfd { fd: ExportedFd, errno: i32 },
    #[error("the exported {fd} memfd is not sealed against {missing}")]
    NotSealed {
        fd: ExportedFd,
        missing: &'static str,
    },
    #[error(
        "the exported frame memfd ({frames_len} bytes) and page-state memfd ({states_len} bytes) \
         disagree on the page count"
    )]
    SizeMismatch { frames_len: u64, states_len: u64 },
}

/// Checks that `file` is a memfd sealed against shrinking and growing; returns its length,
/// which the seals make final.
fn sealed_length(file: &File, fd: ExportedFd) -> Result<u64, PoolError> {
    let metadata = file.metadata().map_err(|source| PoolError::Os {
        call: "fstat(exported fd)",
        source,
    })?;
    if !metadata.is_file() {
        return Err(ExportRefused::NotARegularFile { fd }.into());
    }
    // SAFETY: plain fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(ExportRefused::NotAMemfd { fd, errno }.into());
    }
    let missing = match (
        seals & libc::F_SEAL_SHRINK != 0,
        seals & libc::F_SEAL_GROW != 0,
    ) {
        (true, true) => None,
        (false, true) => Some("shrinking"),
        (true, false) => Some("growing"),
        (false, false) => Some("shrinking and growing"),
    };
    if let Some(missing) = missing {
        return Err(ExportRefused::NotSealed { fd, missing }.into());
    }
    // Read after the seals were seen: the size can no longer change.
    let metadata = file.metadata().map_err(|source| PoolError::Os {
        call: "fstat(exported memfd)",
        source,
    })?;
    Ok(metadata.len())
}

/// A read-only, zero-copy view of an exported pool.
pub struct ExportedView {
    frames: Mmap,
    states: Mmap,
    page_count_max: u64,
}

impl ExportedView {
    /// Maps an export (in this or another process).
    pub fn open(export: Export) -> Result<ExportedView, PoolError> {
        let frames = File::from(export.frames);
        let states = File::from(export.states);
        let frames_len = sealed_length(&frames, ExportedFd::Frames)?;
        let states_len = sealed_length(&states, ExportedFd::States)?;
        let page_count_max = states_len / size_of::<PageState>() as u64;
        if states_len % size_of::<PageState>() as u64 != 0
            || page_count_max.checked_mul(PAGE_SIZE as u64) != Some(frames_len)
            || page_count_max == 0
        {
            return Err(ExportRefused::SizeMismatch {
                frames_len,
                states_len,
            }
            .into());
        }
        let map = |file: &File, len: u64| {
            // SAFETY: `sealed_length` checked that both are memfds sealed against shrinking and
            // growing, so the mapping never loses its backing; we only read it, through Relaxed
            // atomic loads.
            unsafe {
                MmapOptions::new()
                    .len(len as usize)
                    .no_reserve_swap()
                    .map(file)
            }
            .map_err(|source| PoolError::Os {
                call: "mmap(exported memfd, read-only)",
                source,
            })
        };
        Ok(ExportedView {
            frames: map(&frames, page_count_max * PAGE_SIZE as u64)?,
            states: map(&states, page_count_max * size_of::<PageState>() as u64)?,
            page_count_max,
        })
    }

    pub fn page_count_max(&self) -> u64 {
        self.page_count_max
    }

    fn state(&self, page: PageId) -> &PageState {
        assert!(page.0 < self.page_count_max);
        // SAFETY: in bounds; the mapping is 8-aligned and lives as long as self; PageState is
        // a repr(transparent) AtomicU64 and we only load it (the mapping is read-only).
        unsafe {
            &*self
                .states
                .as_ptr()
                .cast::<PageState>()
                .add(page.0 as usize)
        }
    }

    /// The validated optimistic read of the pool, without latches: waits out writers, reports
    /// evicted pages.
    pub fn read<R>(
        &self,
        page: PageId,
        mut f: impl FnMut(&PageView<'_>) -> R,
    ) -> Result<R, ViewError> {
        if page.0 >= self.page_count_max {
            return Err(ViewError::OutOfRange(page));
        }
        let state = self.state(page);
        for attempt in 0..EXPORT_READ_ATTEMPTS_MAX {
            let seen = state.load_read_only();
            match state_of(seen) {
                EVICTED | LOCKED_EVICTED => return Err(ViewError::Evicted(page)),
                LOCKED => {
                    if attempt > 16 {
                        std::thread::yield_now();
                    }
                    continue;
                }
                _ => {}
            }
            // SAFETY: the address lies in the read-only mapping of the frames, page aligned,
            // mapped while self lives; eviction frees frames but never unmaps the range.
            let view =
                unsafe { PageView::new(self.frames.as_ptr().add(page.0 as usize * PAGE_SIZE)) };
            let result = f(&view);
            if state.validate(seen) {
                if view.out_of_range() {
                    return Err(ViewError::ViewOutOfRange(page));
                }
                return Ok(result);
            }
        }
        Err(ViewError::Busy(page))
    }
}
