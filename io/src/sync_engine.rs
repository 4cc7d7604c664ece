//! The pread/pwrite engine: used when io_uring is unavailable or forced off. Same rules as the
//! ring engine (short transfers continued, EAGAIN/EINTR retried, test hooks asked per transfer).

use std::io;

use crate::engine::{IoKind, IoRequest};
use crate::error::IoError;
use crate::file::DirectFile;
use crate::transfer::{Hooks, Plan, Step, Transfer};

/// Runs one request to completion on the calling thread.
///
/// # Safety
/// As `IoEngine::submit_batch`: `[buf, buf + len)` is valid for the transfer's direction and
/// not accessed by anyone else until this returns. The request has passed `check_request`.
pub(crate) unsafe fn run(
    file: &DirectFile,
    request: IoRequest,
    hooks: &Hooks,
) -> Result<(), IoError> {
    let mut transfer = Transfer::new(request);
    if transfer.is_complete() {
        return Ok(());
    }
    // Every pass either makes progress, or uses one of RETRY_MAX retries, or ends.
    loop {
        // SAFETY: the caller guarantees the request's buffer until this returns.
        let result = match unsafe { transfer.plan(hooks, file) } {
            Plan::Pretend(result) => result,
            // SAFETY: the caller guarantees the buffer; the chunk lies inside the request.
            Plan::Submit(chunk) => unsafe {
                positioned(file, request.kind, chunk.offset, chunk.buf, chunk.len)
            },
        };
        match transfer.on_result(result, file, hooks) {
            Step::Complete => return Ok(()),
            Step::Resubmit => continue,
            Step::Failed(error) => return Err(error),
        }
    }
}

/// pread or pwrite, returning bytes or a negative errno like an io_uring completion.
///
/// # Safety
/// `[buf, buf + len)` is valid for writes (reads from the file) or reads (writes to the file).
unsafe fn positioned(
    file: &DirectFile,
    kind: IoKind,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> i32 {
    let fd = file.as_raw_fd();
    let offset = offset as libc::off_t;
    let result = match kind {
        // SAFETY: the caller guarantees the buffer is valid for `len` bytes of writes.
        IoKind::Read => unsafe { libc::pread(fd, buf.cast(), len, offset) },
        // SAFETY: the caller guarantees the buffer is valid for `len` bytes of reads.
        IoKind::Write => unsafe { libc::pwrite(fd, buf.cast_const().cast(), len, offset) },
    };
    if result < 0 {
        -io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        // Chunks are at most 1 GiB, so the count fits.
        result as i32
    }
}
