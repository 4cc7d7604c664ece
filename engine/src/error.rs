//! The engine's one error enum. Pool and I/O errors convert with `From`; a checksum
//! failure reported by the pool becomes [`EngineError::Corrupted`].

use std::path::PathBuf;

/// Everything the engine can fail with. Each variant names its cause and, where there is
/// one, the file.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{}: no such database file", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: already exists (create refuses to overwrite a file)", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("{}: already open by another engine (its file lock is held)", path.display())]
    Locked { path: PathBuf },
    #[error("{}: cannot take the file lock: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a bufpool engine file (no magic in either superblock copy)", path.display())]
    NotOurs { path: PathBuf },
    #[error("{}: format version {found}, this build reads version {expected}", path.display())]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{}: page size {found}, this build uses {expected}", path.display())]
    PageSizeMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{}: truncated: {len} bytes, the superblock says {expected}", path.display())]
    Truncated {
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    #[error("{}: page {page} is corrupted ({reason})", file.display())]
    Corrupted {
        page: u64,
        file: PathBuf,
        reason: String,
    },
    #[error("key of {len} bytes is larger than the maximum of {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes is larger than the maximum of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("tree name {name:?} is invalid: {reason}")]
    InvalidTreeName { name: String, reason: &'static str },
    #[error("keys given to load_sorted must be strictly ascending (key #{index} is not)")]
    UnsortedLoad { index: u64 },
    #[error("load_sorted needs an empty tree (this one holds {len} records)")]
    LoadIntoNonEmpty { len: u64 },
    #[error("{operation} gave up after its retry limit (sustained contention)")]
    RetryLimit { operation: &'static str },
    #[error("{}: the log directory is missing, and the database needs it to recover", path.display())]
    LogMissing { path: PathBuf },
    #[error("{}: not the log of {}: {reason}", path.display(), database.display())]
    LogMismatch {
        path: PathBuf,
        database: PathBuf,
        reason: String,
    },
    #[error("{}: the log is damaged at position {lsn} ({reason}); files left untouched", path.display())]
    LogCorrupted {
        path: PathBuf,
        lsn: u64,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    LogIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: writes refused until the engine is reopened ({reason})", path.display())]
    WritesRefused { path: PathBuf, reason: String },
    #[error(transparent)]
    Io(#[from] bufpool_io::IoError),
    #[error(transparent)]
    Pool(bufpool::PoolError),
}

impl From<bufpool::PoolError> for EngineError {
    fn from(error: bufpool::PoolError) -> EngineError {
        match error {
            bufpool::PoolError::Io(error) => EngineError::Io(error),
            bufpool::PoolError::Corrupted { page, file, reason } => EngineError::Corrupted {
                page: page.0,
                file,
                reason,
            },
            other => EngineError::Pool(other),
        }
    }
}

impl EngineError {
    /// Whether this is a failed fdatasync (after which what was written may be lost).
    pub fn is_sync_failure(&self) -> bool {
        matches!(
            self,
            EngineError::Io(bufpool_io::IoError::Os {
                op: bufpool_io::IoOp::Sync,
                ..
            })
        )
    }
}
