//! Why the engine never registers (fixed) buffers over pool memory: measured on this kernel.
//!
//! A frame lives in a memfd mapped MAP_SHARED. Registering it pins its current page. When the
//! pool evicts the frame by punching a hole in the memfd, the mapping's next touch gets a new
//! page, but a `ReadFixed` still targets the old pinned page: the bytes land where nobody
//! looks. A plain `Read` resolves the address at submission time and lands in the live page.

mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{IoUring, opcode, types};
use support::{AlignedBuf, PAGE, engine, fresh_file};

const FILE_BYTE: u8 = 0x55;

/// One page of a memfd, mapped shared, filled with `0xAA`.
struct MemfdPage {
    fd: OwnedFd,
    ptr: *mut u8,
}

impl MemfdPage {
    fn new() -> MemfdPage {
        // SAFETY: a static NUL-terminated name; the returned descriptor is checked.
        let raw = unsafe { libc::memfd_create(c"bufpool-fixed-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(
            raw >= 0,
            "memfd_create: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our descriptor.
        let truncated = unsafe { libc::ftruncate(fd.as_raw_fd(), PAGE as libc::off_t) };
        assert_eq!(
            truncated,
            0,
            "ftruncate: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: mapping one page of our memfd; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let ptr = ptr.cast::<u8>();
        // SAFETY: the mapping is one writable page.
        unsafe { std::ptr::write_bytes(ptr, 0xAA, PAGE) };
        MemfdPage { fd, ptr }
    }

    /// Evicts the page the way the pool does: the page is freed and unmapped everywhere.
    fn punch(&self) {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: plain syscall on our descriptor.
        let result = unsafe { libc::fallocate(self.fd.as_raw_fd(), mode, 0, PAGE as libc::off_t) };
        assert_eq!(result, 0, "punch hole: {}", std::io::Error::last_os_error());
    }

    fn first_byte(&self) -> u8 {
        // SAFETY: the mapping is live; a volatile read because the kernel wrote it.
        unsafe { self.ptr.read_volatile() }
    }
}

impl Drop for MemfdPage {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in `new`.
        unsafe { libc::munmap(self.ptr.cast(), PAGE) };
    }
}

#[test]
fn a_fixed_read_after_a_punch_lands_in_the_old_page_and_a_plain_read_does_not() {
    let file = fresh_file("fixed-buffers", bufpool_io::EngineChoice::Sync);
    let data = AlignedBuf::new(PAGE);
    // SAFETY: `data` is a live PAGE-sized buffer.
    unsafe { std::ptr::write_bytes(data.as_ptr(), FILE_BYTE, PAGE) };
    let sync = engine(bufpool_io::EngineChoice::Sync);
    // SAFETY: as above.
    unsafe { sync.write_at(&file, 0, data.as_ptr(), PAGE) }.expect("write");

    let mut ring = IoUring::new(4).expect("io_uring must work here");
    let frame = MemfdPage::new();
    let iovec = libc::iovec {
        iov_base: frame.ptr.cast(),
        iov_len: PAGE,
    };
    // SAFETY: the frame stays mapped until the buffers are unregistered with the ring's drop.
    unsafe { ring.submitter().register_buffers(&[iovec]) }.expect("register buffer");
    frame.punch();

    let fixed = opcode::ReadFixed::new(types::Fd(file.as_raw_fd()), frame.ptr, PAGE as u32, 0)
        .offset(0)
        .build();
    // SAFETY: buffer index 0 is registered and outlives the operation (we wait for it).
    unsafe { ring.submission().push(&fixed) }.expect("push");
    ring.submit_and_wait(1).expect("submit");
    let result = ring.completion().next().expect("completion").result();
    assert_eq!(result, PAGE as i32, "ReadFixed failed: {result}");
    assert_eq!(
        frame.first_byte(),
        0,
        "the live page must NOT see the fixed read: it went to the pinned old page"
    );

    let plain = opcode::Read::new(types::Fd(file.as_raw_fd()), frame.ptr, PAGE as u32)
        .offset(0)
        .build();
    // SAFETY: the frame's mapping is live until the operation completes (we wait for it).
    unsafe { ring.submission().push(&plain) }.expect("push");
    ring.submit_and_wait(1).expect("submit");
    let result = ring.completion().next().expect("completion").result();
    assert_eq!(result, PAGE as i32, "Read failed: {result}");
    assert_eq!(
        frame.first_byte(),
        FILE_BYTE,
        "a plain read lands in the live page"
    );
}
