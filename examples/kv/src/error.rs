//! The one error type of `kv`: every failure becomes a single line on stderr and a non-zero exit.

use std::path::PathBuf;

/// Everything that can go wrong in `kv`.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Engine(#[from] bufpool_engine::EngineError),
    #[cfg(feature = "peers")]
    #[error("lmdb: {0}")]
    Lmdb(#[from] heed::Error),
    #[cfg(feature = "peers")]
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[cfg(feature = "rocksdb")]
    #[error("rocksdb: {0}")]
    Rocksdb(#[from] rocksdb::Error),
    #[cfg(not(all(feature = "peers", feature = "rocksdb")))]
    #[error("engine `{engine}` is not built into this kv: rebuild with `--features {feature}`")]
    EngineNotBuilt {
        engine: &'static str,
        feature: &'static str,
    },
    #[error("{path}: no such database (pass --create to make one)")]
    DatabaseMissing { path: PathBuf },
    #[error("{path}: already exists; pass --reuse to bench on its records, or remove it to reload")]
    DatabaseExists { path: PathBuf },
    #[error("{path}: holds {found}, not the requested {requested}; remove it or drop --reuse")]
    DatasetMismatch {
        path: PathBuf,
        found: String,
        requested: String,
    },
    #[error("key `{key}` not found")]
    NotFound { key: String },
    #[error("key is {len} bytes; the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("record {index} read back wrong ({detail}): the engine returned bad data")]
    WrongValue { index: u64, detail: &'static str },
    #[error("the btreemap engine is sealed read-only for this workload")]
    ReadOnly,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a bench thread panicked")]
    ThreadPanicked,
}

impl KvError {
    /// An I/O error with what `kv` was doing when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> KvError {
        KvError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The error as one line: the message and its sources, joined by ": ", newlines removed.
pub fn one_line(error: &KvError) -> String {
    let mut line = error.to_string();
    let mut source = std::error::Error::source(error);
    // Bounded: error chains are a handful deep; stop at a generous limit regardless.
    const SOURCE_DEPTH_MAX: usize = 16;
    for _ in 0..SOURCE_DEPTH_MAX {
        let Some(next) = source else { break };
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = next.source();
    }
    line.replace(['\n', '\r'], " ")
}

#[cfg(feature = "peers")]
macro_rules! redb_from {
    ($($error:ty),*) => {$(
        impl From<$error> for KvError {
            fn from(error: $error) -> KvError {
                KvError::Redb(error.into())
            }
        }
    )*};
}
#[cfg(feature = "peers")]
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
