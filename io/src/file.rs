//! `DirectFile`: a data file opened with O_DIRECT | O_CLOEXEC, its alignment rule, and the
//! metadata operations (length, fallocate, fdatasync) that are plain syscalls.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{IoError, IoOp};

/// The smallest alignment we accept for buffer address, length and offset, whatever the device
/// says: it is the page size, so a page-aligned frame is always a valid target.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// ramfs's statfs magic (linux/magic.h; libc does not export it).
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Filesystems that accept no O_DIRECT or only pretend to (the data still lives in page cache).
const NO_DIRECT_IO_FILESYSTEMS: [(i64, &str); 2] =
    [(libc::TMPFS_MAGIC, "tmpfs"), (RAMFS_MAGIC, "ramfs")];

#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Create the file if it does not exist.
    pub create: bool,
    /// Open for reading only (writes then fail with EBADF).
    pub read_only: bool,
    /// Truncate an existing file to length 0.
    pub truncate: bool,
}

/// An O_DIRECT | O_CLOEXEC file. Send + Sync: every operation is a positioned syscall.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    path: PathBuf,
    alignment: usize,
}

impl DirectFile {
    /// Opens `path` for direct I/O. A filesystem without O_DIRECT gets
    /// `IoError::DirectIoUnsupported` naming the path and the reason.
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<DirectFile, IoError> {
        let path = path.as_ref().to_path_buf();
        refuse_filesystem_without_direct_io(&path)?;
        let mut std_options = std::fs::OpenOptions::new();
        std_options
            .read(true)
            .write(!options.read_only)
            .create(options.create && !options.read_only)
            .truncate(options.truncate && !options.read_only)
            .mode(0o644)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
        let file = match std_options.open(&path) {
            Ok(file) => file,
            Err(source) if source.raw_os_error() == Some(libc::EINVAL) => {
                return Err(IoError::DirectIoUnsupported {
                    reason: format!(
                        "open with O_DIRECT failed with EINVAL ({source}): the filesystem does not support direct I/O"
                    ),
                    path,
                });
            }
            Err(source) => return Err(os_error(IoOp::Open, &path, 0, 0, source)),
        };
        let alignment = direct_io_alignment(&file, &path)?;
        Ok(DirectFile {
            file,
            path,
            alignment,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> Result<u64, IoError> {
        self.file
            .metadata()
            .map(|metadata| metadata.len())
            .map_err(|source| os_error(IoOp::Stat, &self.path, 0, 0, source))
    }

    pub fn is_empty(&self) -> Result<bool, IoError> {
        Ok(self.len()? == 0)
    }

    /// Extends the file to `new_len` with allocated blocks (fallocate), so later writes below
    /// `new_len` cannot fail with ENOSPC. Never shrinks.
    pub fn grow_to(&self, new_len: u64) -> Result<(), IoError> {
        let current = self.len()?;
        if new_len <= current {
            return Ok(());
        }
        self.preallocate(current, new_len - current)
    }

    /// Allocates blocks for `[offset, offset + len)` (fallocate mode 0: the file grows if the
    /// range ends past its end; the range reads as zeros).
    pub fn preallocate(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let to_off = |value: u64| {
            libc::off_t::try_from(value).map_err(|_| invalid_range(&self.path, offset, len))
        };
        let (start, length) = (to_off(offset)?, to_off(len)?);
        if length == 0 {
            return Ok(());
        }
        // SAFETY: fallocate on a descriptor we own, with plain integer arguments.
        let result = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, start, length) };
        if result != 0 {
            let source = io::Error::last_os_error();
            return Err(os_error(
                IoOp::Allocate,
                &self.path,
                offset,
                len as usize,
                source,
            ));
        }
        Ok(())
    }

    /// fdatasync: the data written so far (and the metadata needed to read it) is durable.
    /// EINTR is retried at most [`SYNC_EINTR_RETRIES_MAX`] times in a row; then the EINTR is
    /// returned as `IoError::Os { op: Sync, .. }`, like any other failed sync.
    ///
    /// Bypasses fault injection and power-loss simulation: engines call it through
    /// `IoEngine::sync_data`, which consults both first.
    pub fn sync_data(&self) -> Result<(), IoError> {
        let fd = self.file.as_raw_fd();
        retry_interrupted(SYNC_EINTR_RETRIES_MAX, || {
            // SAFETY: fdatasync on a descriptor we own.
            if unsafe { libc::fdatasync(fd) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .map_err(|source| os_error(IoOp::Sync, &self.path, 0, 0, source))
    }

    /// The alignment every request's buffer address, length and offset must have:
    /// max(4096, the device's STATX_DIOALIGN memory and offset alignment).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// (st_dev, st_ino): what makes two handles (or two paths) the same file.
    pub(crate) fn identity(&self) -> io::Result<(u64, u64)> {
        let metadata = self.file.metadata()?;
        Ok((metadata.dev(), metadata.ino()))
    }

    /// A second descriptor on the same open file description (so also O_DIRECT), close-on-exec.
    pub(crate) fn duplicate(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

/// Consecutive EINTR results `DirectFile::sync_data` retries before it reports the EINTR. A
/// signal storm long enough to exhaust it means the caller is being asked to stop; a bound
/// also keeps a misbehaving kernel from spinning us forever.
pub const SYNC_EINTR_RETRIES_MAX: u32 = 64;

/// Runs `call` until it succeeds, fails with something other than EINTR, or was interrupted
/// `retries_max + 1` times in a row (then that EINTR is returned).
fn retry_interrupted(retries_max: u32, mut call: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let mut retries = 0;
    loop {
        match call() {
            Err(error) if error.raw_os_error() == Some(libc::EINTR) && retries < retries_max => {
                retries += 1;
            }
            result => return result,
        }
    }
}

pub(crate) fn os_error(
    op: IoOp,
    path: &Path,
    offset: u64,
    len: usize,
    source: io::Error,
) -> IoError {
    IoError::Os {
        op,
        path: path.to_path_buf(),
        offset,
        len,
        source,
    }
}

fn invalid_range(path: &Path, offset: u64, len: u64) -> IoError {
    IoError::InvalidArgument {
        reason: format!(
            "{}: range {offset}+{len} does not fit off_t",
            path.display()
        ),
    }
}

/// Looks at the filesystem of `path` (or of its directory when it does not exist yet) and
/// refuses tmpfs-like ones by name, before open could fail with a bare EINVAL (or, on kernels
/// where tmpfs accepts O_DIRECT, silently keep the data in page cache).
fn refuse_filesystem_without_direct_io(path: &Path) -> Result<(), IoError> {
    let probe = if path.exists() {
        path.to_path_buf()
    } else {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let Ok(c_path) = CString::new(probe.as_os_str().as_bytes()) else {
        return Err(IoError::InvalidArgument {
            reason: format!("{}: path contains a NUL byte", path.display()),
        });
    };
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and `stats` is a valid, writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } != 0 {
        // A missing directory: let open report ENOENT with the path.
        return Ok(());
    }
    let fs_type = stats.f_type;
    for (magic, name) in NO_DIRECT_IO_FILESYSTEMS {
        if fs_type == magic {
            return Err(IoError::DirectIoUnsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "{} is on {name}, which keeps file data in the page cache and has no real O_DIRECT; \
                     put the data file on a disk filesystem such as ext4 or xfs",
                    probe.display()
                ),
            });
        }
    }
    Ok(())
}

/// max(DIRECT_IO_ALIGN, STATX_DIOALIGN's memory and offset alignment). Kernels or filesystems
/// without STATX_DIOALIGN leave the mask bit clear; then 4096 (the logical block size of every
/// device we target is at most that) is the rule.
fn direct_io_alignment(file: &File, path: &Path) -> Result<usize, IoError> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stats: libc::statx = unsafe { std::mem::zeroed() };
    let empty_path = c"";
    // SAFETY: the descriptor is open, the path is a valid empty C string used with
    // AT_EMPTY_PATH, and `stats` is writable.
    let result = unsafe {
        libc::statx(
            file.as_raw_fd(),
            empty_path.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stats,
        )
    };
    if result != 0 {
        let source = io::Error::last_os_error();
        return Err(os_error(IoOp::Stat, path, 0, 0, source));
    }
    if stats.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(DIRECT_IO_ALIGN);
    }
    let (memory, offset) = (
        stats.stx_dio_mem_align as usize,
        stats.stx_dio_offset_align as usize,
    );
    if memory == 0 || offset == 0 {
        // The file supports no direct I/O at all (the kernel reports 0 then).
        return Err(IoError::DirectIoUnsupported {
            path: path.to_path_buf(),
            reason: "statx reports no direct-I/O alignment (STATX_DIOALIGN is 0): the file does not support O_DIRECT".into(),
        });
    }
    Ok(DIRECT_IO_ALIGN.max(memory).max(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interrupted() -> io::Error {
        io::Error::from_raw_os_error(libc::EINTR)
    }

    #[test]
    fn eintr_is_retried_up_to_the_limit_then_returned() {
        let mut calls = 0u32;
        let result = retry_interrupted(SYNC_EINTR_RETRIES_MAX, || {
            calls += 1;
            Err(interrupted())
        });
        assert_eq!(result.map_err(|e| e.raw_os_error()), Err(Some(libc::EINTR)));
        assert_eq!(
            calls,
            SYNC_EINTR_RETRIES_MAX + 1,
            "first try plus the retries"
        );
    }

    #[test]
    fn eintr_then_success_succeeds_and_other_errors_are_not_retried() {
        let mut calls = 0u32;
        let result = retry_interrupted(SYNC_EINTR_RETRIES_MAX, || {
            calls += 1;
            if calls < 3 {
                Err(interrupted())
            } else {
                Ok(())
            }
        });
        assert!(result.is_ok());
        assert_eq!(calls, 3);

        let mut calls = 0u32;
        let result = retry_interrupted(SYNC_EINTR_RETRIES_MAX, || {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        assert_eq!(result.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
        assert_eq!(calls, 1, "EIO is final");
    }
}
