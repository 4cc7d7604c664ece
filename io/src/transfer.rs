//! One request's progress, shared by both engines: alignment check, chunking, the test hooks
//! (fault injection, power loss) asked before each chunk, and what to do with a completion
//! result (done, continue a short transfer, retry EAGAIN/EINTR, fail).

use std::io;

use crate::engine::{IoKind, IoRequest};
use crate::error::{IoError, IoOp};
use crate::faults::{FaultInjector, Injected};
use crate::file::{DirectFile, os_error};
use crate::power_loss::{PowerLoss, WriteTicket};

/// The test hooks an engine consults; both absent in production, which costs one `Option`
/// check each per transfer and per sync.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hooks {
    pub faults: Option<FaultInjector>,
    pub power_loss: Option<PowerLoss>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.faults.is_none() && self.power_loss.is_none()
    }
}

/// Consecutive EAGAIN/EINTR results one transfer tolerates before the error is surfaced.
pub(crate) const RETRY_MAX: u32 = 64;

/// Largest single kernel transfer (io_uring lengths are u32); a multiple of every alignment.
const CHUNK_BYTES_MAX: usize = 1 << 30;

/// The part of a request that goes to the kernel next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    pub offset: u64,
    pub buf: *mut u8,
    pub len: usize,
}

/// What happens after a result.
pub(crate) enum Step {
    Complete,
    Resubmit,
    Failed(IoError),
}

/// What to do with the next chunk after fault injection.
pub(crate) enum Plan {
    Submit(Chunk),
    /// Do not submit: pretend the kernel returned this (negative errno or 0 bytes).
    Pretend(i32),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub request: IoRequest,
    pub done: usize,
    pub retries: u32,
    /// The power-loss simulator's record of the chunk in flight, if it recorded one.
    pub recorded: Option<WriteTicket>,
}

impl Transfer {
    pub fn new(request: IoRequest) -> Self {
        Transfer {
            request,
            done: 0,
            retries: 0,
            recorded: None,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.done == self.request.len
    }

    /// The next chunk, after asking the hooks (if any) what to do with it: power off fails
    /// it, an injected fault fails or shortens it, the power-loss simulator records a write
    /// (with its pre-image) before it is submitted.
    ///
    /// # Safety
    /// The request's buffer is valid for its direction until the transfer completes.
    pub unsafe fn plan(&mut self, hooks: &Hooks, file: &DirectFile) -> Plan {
        let remaining = self.request.len - self.done;
        let mut chunk = Chunk {
            offset: self.request.offset + self.done as u64,
            buf: self.request.buf.wrapping_add(self.done),
            len: remaining.min(CHUNK_BYTES_MAX),
        };
        if hooks.power_loss.as_ref().is_some_and(PowerLoss::is_cut) {
            return Plan::Pretend(-libc::EIO);
        }
        match hooks
            .faults
            .as_ref()
            .and_then(|faults| faults.on_transfer(self.request.kind))
        {
            None => {}
            Some(Injected::Fail(errno)) => return Plan::Pretend(errno),
            Some(Injected::Limit(0)) => return Plan::Pretend(0),
            Some(Injected::Limit(bytes)) => chunk.len = chunk.len.min(bytes),
        }
        if let (IoKind::Write, Some(power_loss)) = (self.request.kind, &hooks.power_loss) {
            // SAFETY: the chunk lies inside the request, whose buffer the caller guarantees.
            match unsafe { power_loss.before_write(file, &chunk) } {
                Ok(ticket) => self.recorded = Some(ticket),
                Err(errno) => return Plan::Pretend(-errno),
            }
        }
        Plan::Submit(chunk)
    }

    /// Consumes one kernel result (bytes transferred, or a negative errno).
    pub fn on_result(&mut self, result: i32, file: &DirectFile, hooks: &Hooks) -> Step {
        if let (Some(ticket), Some(power_loss)) = (self.recorded.take(), &hooks.power_loss) {
            power_loss.write_completed(ticket);
        }
        if result > 0 {
            self.retries = 0;
            self.done += result as usize;
            assert!(
                self.done <= self.request.len,
                "kernel transferred more than asked"
            );
            if self.is_complete() {
                return Step::Complete;
            }
            let position = self.request.offset + self.done as u64;
            if self.request.kind == IoKind::Read && position % file.alignment() as u64 != 0 {
                // A direct read only stops off-alignment at the end of the file.
                return Step::Failed(self.eof_error(file));
            }
            return Step::Resubmit;
        }
        if result == 0 {
            return Step::Failed(match self.request.kind {
                IoKind::Read => self.eof_error(file),
                IoKind::Write => self.error(file, io::Error::from(io::ErrorKind::WriteZero)),
            });
        }
        let errno = -result;
        if (errno == libc::EAGAIN || errno == libc::EINTR) && self.retries < RETRY_MAX {
            self.retries += 1;
            return Step::Resubmit;
        }
        Step::Failed(self.error(file, io::Error::from_raw_os_error(errno)))
    }

    fn error(&self, file: &DirectFile, source: io::Error) -> IoError {
        let request = &self.request;
        os_error(
            op_of(request.kind),
            file.path(),
            request.offset,
            request.len,
            source,
        )
    }

    fn eof_error(&self, file: &DirectFile) -> IoError {
        let request = &self.request;
        IoError::UnexpectedEof {
            op: op_of(request.kind),
            path: file.path().to_path_buf(),
            offset: request.offset,
            len: request.len,
            transferred: self.done,
        }
    }
}

pub(crate) fn op_of(kind: IoKind) -> IoOp {
    match kind {
        IoKind::Read => IoOp::Read,
        IoKind::Write => IoOp::Write,
    }
}

/// Address, length and offset must be multiples of the file's alignment; the range must fit
/// an off_t. Checked before anything is submitted.
pub(crate) fn check_request(file: &DirectFile, request: &IoRequest) -> Result<(), IoError> {
    let align = file.alignment();
    let addr = request.buf as usize;
    if addr % align != 0 || request.len % align != 0 || request.offset % align as u64 != 0 {
        return Err(IoError::Misaligned {
            op: op_of(request.kind),
            path: file.path().to_path_buf(),
            offset: request.offset,
            len: request.len,
            addr,
            align,
        });
    }
    let end = request.offset.checked_add(request.len as u64);
    if end.is_none_or(|end| end > i64::MAX as u64) || request.buf.is_null() && request.len > 0 {
        return Err(IoError::InvalidArgument {
            reason: format!(
                "{}: request at offset {} of {} bytes from {addr:#x} is out of range",
                file.path().display(),
                request.offset,
                request.len
            ),
        });
    }
    Ok(())
}
