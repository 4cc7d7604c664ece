//! Export: the fds are read-only (no writable mapping, no resize, no punch) and an
//! `ExportedView` reads validated bytes, reporting evicted pages.

mod common;

use std::os::fd::AsRawFd;

use bufpool::{
    Backing, ExportRefused, ExportedFd, ExportedView, PAGE_SIZE, PageId, PoolError, ViewError,
};
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
    let pool = open_pool("export-view", Backing::Memfd, 256, 16);
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
    // Evict page 3 by reading everything else (a written page is warm: the hand passes it
    // three times before it goes).
    for page in 4..256 {
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
        view.read(PageId(255), |page| page.u64_at(PAGE_SIZE)),
        Err(ViewError::ViewOutOfRange(PageId(255)))
    );
}

/// A memfd of `len` bytes with `seals` added (none if 0).
fn memfd(len: u64, seals: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: a valid C string; the fd is checked and owned below.
    let fd = unsafe { libc::memfd_create(c"export-test".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(len).unwrap();
    // SAFETY: plain fcntl on our own fd.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }, 0);
    file.into()
}

/// Issue 8, finding 4: `ExportedView::open` trusts nothing it is handed.
#[test]
fn open_refuses_fds_it_cannot_trust() {
    let pages = 16u64;
    let sealed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    let frames_len = pages * PAGE_SIZE as u64;
    let states_len = pages * 8;
    let regular = {
        let path = common::data_path("export-regular");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(frames_len).unwrap();
        std::os::fd::OwnedFd::from(file)
    };
    let not_sealed = |fd, missing| ExportRefused::NotSealed { fd, missing };
    let cases = [
        (
            memfd(frames_len, 0),
            memfd(states_len, sealed),
            not_sealed(ExportedFd::Frames, "shrinking and growing"),
        ),
        (
            memfd(frames_len, libc::F_SEAL_SHRINK),
            memfd(states_len, sealed),
            not_sealed(ExportedFd::Frames, "growing"),
        ),
        (
            memfd(frames_len, sealed),
            memfd(states_len, libc::F_SEAL_GROW),
            not_sealed(ExportedFd::States, "shrinking"),
        ),
        (
            regular,
            memfd(states_len, sealed),
            ExportRefused::NotAMemfd {
                fd: ExportedFd::Frames,
                errno: libc::EINVAL,
            },
        ),
        (
            memfd(frames_len + PAGE_SIZE as u64, sealed),
            memfd(states_len, sealed),
            ExportRefused::SizeMismatch {
                frames_len: frames_len + PAGE_SIZE as u64,
                states_len,
            },
        ),
    ];
    for (frames, states, expected) in cases {
        match ExportedView::open(bufpool::Export { frames, states }) {
            Err(PoolError::ExportRefused(refused)) => assert_eq!(refused, expected),
            Err(error) => panic!("{expected}: refused with another error: {error}"),
            Ok(_) => panic!("{expected}: accepted"),
        }
    }
    let directory = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
    let refused = ExportedView::open(bufpool::Export {
        frames: directory.into(),
        states: memfd(states_len, sealed),
    });
    assert!(matches!(
        refused,
        Err(PoolError::ExportRefused(ExportRefused::NotARegularFile {
            fd: ExportedFd::Frames
        }))
    ));
    let good = ExportedView::open(bufpool::Export {
        frames: memfd(frames_len, sealed),
        states: memfd(states_len, sealed),
    });
    assert!(good.is_ok(), "{:?}", good.err());
}
