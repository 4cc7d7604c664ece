//! The virtual-memory region: one reservation holding every page at `base + pid * PAGE_SIZE`,
//! with its two backings, the shared page-state table, and the dirty bitmap.
//!
//! Invariants:
//! 1. The reservation is `page_count_max * PAGE_SIZE` bytes, MAP_NORESERVE, never remapped:
//!    a page's address is fixed for the pool's life.
//! 2. Only the eviction protocol and a failed fault-in free a page's frame (`Frames`), and
//!    only while holding the page's exclusive latch.
//! 3. The state table is a memfd mapped shared, so an export can map it read-only elsewhere.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};

use crate::eviction::Frames;
use crate::state::PageState;
use crate::{BATCH_MAX, Backing, PAGE_SIZE, PageId, PoolError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The page frames.
pub(crate) struct Region {
    map: MmapRaw,
    page_count_max: u64,
    /// The frame memfd (Memfd backing only).
    memfd: Option<File>,
    /// A pidfd of this process, for `process_madvise` (one call, one TLB flush per batch).
    pidfd: Option<OwnedFd>,
    /// Cleared the first time `process_madvise` is refused (kernels before 6.13).
    batch_zap_works: AtomicBool,
}

impl Region {
    pub(crate) fn new(backing: Backing, page_count_max: u64) -> Result<Region, PoolError> {
        let len = page_count_max * PAGE_SIZE as u64;
        let (map, memfd) = match backing {
            Backing::Anonymous => {
                let map = MmapOptions::new()
                    .len(len as usize)
                    .no_reserve_swap()
                    .map_anon()
                    .map_err(|source| PoolError::Os {
                        call: "mmap(anonymous region)",
                        source,
                    })?;
                // Transparent huge pages would make one touch cost 2 MiB and defeat per-page
                // MADV_DONTNEED accounting.
                map.advise(memmap2::Advice::NoHugePage)
                    .map_err(|source| PoolError::Os {
                        call: "madvise(NOHUGEPAGE)",
                        source,
                    })?;
                (MmapRaw::from(map), None)
            }
            Backing::Memfd => {
                let memfd = create_memfd(c"bufpool-frames", len)?;
                (map_shared(&memfd, len)?, Some(memfd))
            }
        };
        // A fork must not share the frames copy-on-write: O_DIRECT into COW-shared pages and
        // eviction's DONTNEED would act on the wrong copy.
        map.advise(memmap2::Advice::DontFork)
            .map_err(|source| PoolError::Os {
                call: "madvise(DONTFORK)",
                source,
            })?;
        Ok(Region {
            map,
            page_count_max,
            memfd,
            pidfd: open_own_pidfd(),
            batch_zap_works: AtomicBool::new(true),
        })
    }

    /// Drops this process's PTEs of `pages` with one `process_madvise(MADV_DONTNEED)`: one
    /// TLB flush (and one IPI round) for the batch instead of one per page. False if it did not
    /// cover every page (the caller then shoots down page by page).
    fn zap_batch(&self, pages: &[PageId]) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return false;
        };
        if pages.len() < 2
            || pages.len() > BATCH_MAX
            || !self.batch_zap_works.load(Ordering::Relaxed)
        {
            return false;
        }
        let mut ranges = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH_MAX];
        for (range, &page) in ranges.iter_mut().zip(pages) {
            *range = libc::iovec {
                iov_base: self.page_ptr(page).cast(),
                iov_len: PAGE_SIZE,
            };
        }
        // SAFETY: the ranges are pages of our own mapping whose holders have the exclusive
        // latch; DONTNEED only replaces their contents by zeroes / drops the PTEs.
        let advised = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd.as_raw_fd(),
                ranges.as_ptr(),
                pages.len(),
                libc::MADV_DONTNEED,
                0u32,
            )
        };
        if advised < 0 {
            self.batch_zap_works.store(false, Ordering::Relaxed);
            tracing::info!(error = %std::io::Error::last_os_error(), "process_madvise refused: shooting down page by page");
            return false;
        }
        advised as usize == pages.len() * PAGE_SIZE
    }

    fn punch(&self, memfd: &File, page: PageId) -> Result<(), PoolError> {
        // SAFETY: plain syscall on our own fd; the range is one page inside the file.
        let rc = unsafe {
            libc::fallocate(
                memfd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (page.0 * PAGE_SIZE as u64) as libc::off_t,
                PAGE_SIZE as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(PoolError::last_os("fallocate(PUNCH_HOLE)"));
        }
        Ok(())
    }

    /// The fixed address of page `page`.
    #[inline]
    pub(crate) fn page_ptr(&self, page: PageId) -> *mut u8 {
        assert!(
            page.0 < self.page_count_max,
            "page {} beyond the reservation",
            page.0
        );
        // SAFETY: the offset is inside the reservation (asserted above).
        unsafe { self.map.as_mut_ptr().add(page.0 as usize * PAGE_SIZE) }
    }

    pub(crate) fn memfd(&self) -> Option<&File> {
        self.memfd.as_ref()
    }

    /// Bytes of frame memory as the kernel counts them right now: the memfd's allocated
    /// blocks (whoever instantiated them, in any process), or, for private anonymous memory,
    /// the resident set size of the region's mappings.
    pub(crate) fn kernel_frame_bytes(&self) -> Result<u64, PoolError> {
        match &self.memfd {
            Some(memfd) => memfd_allocated_bytes(memfd),
            None => self.anonymous_rss_bytes(),
        }
    }

    /// Sums the `Rss:` lines of /proc/self/smaps over the mappings inside the region.
    fn anonymous_rss_bytes(&self) -> Result<u64, PoolError> {
        let smaps =
            std::fs::read_to_string("/proc/self/smaps").map_err(|source| PoolError::Os {
                call: "read(/proc/self/smaps)",
                source,
            })?;
        let base = self.map.as_ptr() as u64;
        let end = base + self.page_count_max * PAGE_SIZE as u64;
        let mut inside = false;
        let mut total_kib = 0;
        for line in smaps.lines() {
            let header = line
                .split_once('-')
                .and_then(|(start, _)| u64::from_str_radix(start, 16).ok());
            if let Some(start) = header.filter(|_| line.contains(' ')) {
                inside = (base..end).contains(&start);
            } else if let Some(rest) = line.strip_prefix("Rss:").filter(|_| inside) {
                let kib = rest.trim().trim_end_matches("kB").trim();
                total_kib += kib.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(total_kib * 1024)
    }

    /// The data ranges of the frame memfd (`lseek` SEEK_DATA / SEEK_HOLE), page-aligned,
    /// as half-open page ranges; empty for anonymous memory.
    pub(crate) fn instantiated_ranges(&self, mut visit: impl FnMut(u64, u64)) {
        let Some(memfd) = &self.memfd else {
            return;
        };
        let end = (self.page_count_max * PAGE_SIZE as u64) as libc::off_t;
        let mut offset: libc::off_t = 0;
        while offset < end {
            // SAFETY: plain lseek on our own fd; the results are checked.
            let data = unsafe { libc::lseek(memfd.as_raw_fd(), offset, libc::SEEK_DATA) };
            if data < 0 {
                return; // ENXIO: no data after `offset`
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(memfd.as_raw_fd(), data, libc::SEEK_HOLE) };
            let hole = if hole < 0 { end } else { hole.min(end) };
            visit(
                data as u64 / PAGE_SIZE as u64,
                (hole as u64).div_ceil(PAGE_SIZE as u64),
            );
            offset = hole;
        }
    }
}

/// The bytes a memfd occupies (`st_blocks` counts 512-byte units).
fn memfd_allocated_bytes(memfd: &File) -> Result<u64, PoolError> {
    use std::os::unix::fs::MetadataExt;
    let metadata = memfd.metadata().map_err(|source| PoolError::Os {
        call: "fstat(frame memfd)",
        source,
    })?;
    Ok(metadata.blocks() * 512)
}

impl Frames for Region {
    fn shoot_down(&self, page: PageId) -> Result<(), PoolError> {
        match &self.memfd {
            Some(memfd) => self.punch(memfd, page),
            None => {
                // SAFETY: the page lies inside our private mapping and its holder has the
                // exclusive latch; DONTNEED only replaces its bytes by zeroes.
                let rc = unsafe {
                    libc::madvise(self.page_ptr(page).cast(), PAGE_SIZE, libc::MADV_DONTNEED)
                };
                if rc != 0 {
                    return Err(PoolError::last_os("madvise(DONTNEED)"));
                }
                Ok(())
            }
        }
    }

    fn shoot_down_batch(&self, pages: &[PageId]) -> Result<(), PoolError> {
        let zapped = self.zap_batch(pages);
        match &self.memfd {
            // The punch frees the shmem page and zaps other processes' PTEs; ours are gone
            // already when the batch zap worked, so it costs no further TLB flush here.
            Some(memfd) => pages.iter().try_for_each(|&page| self.punch(memfd, page)),
            None if zapped => Ok(()),
            None => pages.iter().try_for_each(|&page| self.shoot_down(page)),
        }
    }

    fn is_resident(&self, page: PageId) -> Result<bool, PoolError> {
        let mut residency = 0u8;
        // SAFETY: the address is page aligned and inside our mapping; the vector is one byte
        // for one page. For a shared memfd mapping mincore reports the shmem page's presence
        // (every process's refault counts); for private memory, a present PTE.
        let rc = unsafe { libc::mincore(self.page_ptr(page).cast(), PAGE_SIZE, &mut residency) };
        if rc != 0 {
            return Err(PoolError::last_os("mincore"));
        }
        Ok(residency & 1 == 1)
    }
}

/// The page-state table, in a shared memfd so an export can map it read-only.
pub(crate) struct StateTable {
    map: MmapRaw,
    memfd: File,
    page_count_max: u64,
}

impl StateTable {
    pub(crate) fn new(page_count_max: u64) -> Result<StateTable, PoolError> {
        let len = page_count_max * size_of::<PageState>() as u64;
        let memfd = create_memfd(c"bufpool-page-states", len)?;
        let map = map_shared(&memfd, len)?;
        // A fresh memfd reads as zeroes: every page EVICTED, version 0.
        Ok(StateTable {
            map,
            memfd,
            page_count_max,
        })
    }

    #[inline]
    pub(crate) fn get(&self, page: PageId) -> &PageState {
        assert!(
            page.0 < self.page_count_max,
            "page {} beyond the state table",
            page.0
        );
        // SAFETY: in bounds (asserted); PageState is a repr(transparent) AtomicU64, the
        // mapping is 8-aligned, lives as long as self, and is only accessed atomically.
        unsafe { &*self.map.as_ptr().cast::<PageState>().add(page.0 as usize) }
    }

    pub(crate) fn memfd(&self) -> &File {
        &self.memfd
    }
}

/// One dirty bit per page, in a sparse anonymous mapping.
pub(crate) struct DirtyBits {
    map: MmapRaw,
    page_count_max: u64,
}

impl DirtyBits {
    pub(crate) fn new(page_count_max: u64) -> Result<DirtyBits, PoolError> {
        let len = page_count_max.div_ceil(64) * 8;
        let map = MmapOptions::new()
            .len(len as usize)
            .no_reserve_swap()
            .map_anon()
            .map_err(|source| PoolError::Os {
                call: "mmap(dirty bits)",
                source,
            })?;
        Ok(DirtyBits {
            map: MmapRaw::from(map),
            page_count_max,
        })
    }

    #[inline]
    fn word(&self, page: PageId) -> (&AtomicU64, u64) {
        assert!(
            page.0 < self.page_count_max,
            "page {} beyond the dirty bitmap",
            page.0
        );
        // SAFETY: in bounds (asserted); the mapping is 8-aligned, zero-initialised, lives as
        // long as self, and is only accessed atomically.
        let word = unsafe {
            &*self
                .map
                .as_ptr()
                .cast::<AtomicU64>()
                .add(page.0 as usize / 64)
        };
        (word, 1 << (page.0 % 64))
    }

    /// Sets the bit; true if it was clear.
    #[inline]
    pub(crate) fn set(&self, page: PageId) -> bool {
        let (word, bit) = self.word(page);
        word.load(Ordering::Relaxed) & bit == 0 && word.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Clears the bit; true if it was set.
    pub(crate) fn clear(&self, page: PageId) -> bool {
        let (word, bit) = self.word(page);
        word.fetch_and(!bit, Ordering::Relaxed) & bit != 0
    }

    pub(crate) fn get(&self, page: PageId) -> bool {
        let (word, bit) = self.word(page);
        word.load(Ordering::Relaxed) & bit != 0
    }
}

/// A sealed memfd of `len` bytes: it can neither grow nor shrink, so a read-only export can
/// trust its size.
fn create_memfd(name: &CStr, len: u64) -> Result<File, PoolError> {
    // SAFETY: `name` is a valid C string; the returned fd is checked and owned below.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(PoolError::last_os("memfd_create"));
    }
    // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).map_err(|source| PoolError::Os {
        call: "ftruncate(memfd)",
        source,
    })?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on our own fd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(PoolError::last_os("fcntl(F_ADD_SEALS)"));
    }
    Ok(file)
}

fn map_shared(file: &File, len: u64) -> Result<MmapRaw, PoolError> {
    MmapOptions::new()
        .len(len as usize)
        .no_reserve_swap()
        .map_raw(file)
        .map_err(|source| PoolError::Os {
            call: "mmap(memfd, MAP_SHARED)",
            source,
        })
}

/// A new, read-only open file description of `file` (through /proc/self/fd): whoever holds
/// it cannot write, map writable, punch or resize.
pub(crate) fn reopen_read_only(file: &File) -> Result<OwnedFd, PoolError> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let reopened = std::fs::OpenOptions::new()
        .read(true)
        .open(&path)
        .map_err(|source| PoolError::Os {
            call: "open(/proc/self/fd, O_RDONLY)",
            source,
        })?;
    Ok(OwnedFd::from(reopened))
}

/// A pidfd of this very process, or None where pidfds are missing.
fn open_own_pidfd() -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a fresh fd that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    // SAFETY: as above: the descriptor is valid and owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
