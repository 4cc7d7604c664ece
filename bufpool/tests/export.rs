//! Export: the fds are read-only (no writable mapping, no resize, no punch) and an
//! `ExportedView` reads validated bytes, reporting evicted pages.

mod common;

use std::os::fd::AsRawFd;

use bufpool::{Backing, ExportedView, PAGE_SIZE, PageId, ViewError};
use common::{open_pool, page_bytes, read_stamp};

#[test]
fn exported_fds_are_read_only() {
    let pool = open_pool("export-ro", Backing::Memfd, 8, 16);
    let export = pool.export().unwrap();
    for fd in [export.frames.as_raw_fd(), export.states.as_raw_fd()] {
        // SAFETY: mmap with a null hint only creates a new mapping (or fails); we unmap it.
        let writable = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_eq!(
            writable,
            libc::MAP_FAILED,
            "a writable shared mapping was allowed"
        );
        // SAFETY: plain syscalls on an fd we own; they must fail.
        unsafe {
            assert_ne!(libc::ftruncate(fd, 0), 0, "resize was allowed");
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            assert_ne!(
                libc::fallocate(fd, punch, 0, PAGE_SIZE as i64),
                0,
                "punch was allowed"
            );
            assert_ne!(
                libc::write(fd, [0u8].as_ptr().cast(), 1),
                1,
                "write was allowed"
            );
        }
    }
}

#[test]
fn exported_view_reads_validated_bytes_and_reports_evicted_pages() {
    let pool = open_pool("export-view", Backing::Memfd, 64, 16);
    let view = ExportedView::open(pool.export().unwrap()).unwrap();
    assert_eq!(
        view.read(PageId(3), |page| page.u64_at(0)),
        Err(ViewError::Evicted(PageId(3)))
    );
    read_stamp(&pool, 3);
    let body = view
        .read(PageId(3), |page| {
            let mut body = vec![0u8; PAGE_SIZE];
            page.copy_to(0, &mut body);
            body
        })
        .unwrap();
    assert_eq!(body, page_bytes(3, 0));
    pool.exclusive(PageId(3)).unwrap()[8] = 9;
    assert_eq!(view.read(PageId(3), |page| page.u8_at(8)), Ok(9));
    // Evict page 3 by reading everything else.
    for page in 4..64 {
        read_stamp(&pool, page);
    }
    assert_eq!(
        view.read(PageId(3), |page| page.u64_at(0)),
        Err(ViewError::Evicted(PageId(3)))
    );
    assert_eq!(
        view.read(PageId(1 << 40), |_| ()),
        Err(ViewError::OutOfRange(PageId(1 << 40)))
    );
    assert_eq!(
        view.read(PageId(63), |page| page.u64_at(PAGE_SIZE)),
        Err(ViewError::ViewOutOfRange(PageId(63)))
    );
}
