//! The crate's one error type: every failure names the operation, the file and the offset.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Open,
    Read,
    Write,
    Sync,
    Allocate,
    Stat,
    /// Creating an io_uring instance or registering with it.
    Setup,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Sync => "fdatasync",
            IoOp::Allocate => "fallocate",
            IoOp::Stat => "stat",
            IoOp::Setup => "io_uring setup",
        };
        f.write_str(name)
    }
}

/// Every error of `bufpool-io`.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The kernel returned an errno (EIO, ENOSPC, ...), or an injected fault pretended it did.
    #[error("{op} of {len} bytes at offset {offset} in {}: {source}", path.display())]
    Os {
        op: IoOp,
        path: PathBuf,
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    /// Buffer address, length or offset is not a multiple of the file's direct-I/O alignment.
    /// Checked before anything reaches the kernel.
    #[error(
        "{op} of {len} bytes at offset {offset} from buffer {addr:#x} in {}: \
         O_DIRECT needs address, length and offset aligned to {align} bytes",
        path.display()
    )]
    Misaligned {
        op: IoOp,
        path: PathBuf,
        offset: u64,
        len: usize,
        addr: usize,
        align: usize,
    },
    /// The file's filesystem cannot do O_DIRECT (tmpfs, ramfs, ...).
    #[error("{}: direct I/O (O_DIRECT) is not possible here: {reason}", path.display())]
    DirectIoUnsupported { path: PathBuf, reason: String },
    /// A read reached the end of the file before `len` bytes were transferred.
    /// Rule: reading past EOF is an error, never silently zero-filled (the pool grows the file
    /// before it writes a page, so a page beyond EOF means a bug or a truncated file).
    #[error(
        "{op} of {len} bytes at offset {offset} in {}: end of file after {transferred} bytes",
        path.display()
    )]
    UnexpectedEof {
        op: IoOp,
        path: PathBuf,
        offset: u64,
        len: usize,
        transferred: usize,
    },
    /// io_uring was forced (configuration or BUFPOOL_IO_ENGINE=uring) but cannot be used.
    #[error("I/O engine unavailable: {reason}")]
    EngineUnavailable { reason: String },
    /// An argument that is not about alignment is out of range (queue depth, request size...).
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
}

impl IoError {
    /// The errno behind this error, if it came from the kernel (or an injected fault), so callers
    /// can tell ENOSPC from EIO.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            IoError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
