//! The engines `kv bench` drives, behind one small trait, so every engine runs the same
//! workload code on the same data set.
//!
//! `--durability` maps to each engine's own modes, one write transaction per operation:
//!
//! | `--durability` | bufpool                        | LMDB                           | redb                    | RocksDB (feature `rocksdb`) |
//! |----------------|--------------------------------|--------------------------------|-------------------------|-----------------------------|
//! | `immediate`    | `Durability::Immediate`: `put` returns after the log fdatasync covering it (group commit) | sync per commit (its default: no `MDB_NOSYNC`) | `Durability::Immediate` | WAL on, `WriteOptions::sync` per write (its own group commit) |
//! | `periodic[:MS]`| `Durability::Periodic`: log synced in the background every MS (1000) ms | `MDB_NOSYNC` (no periodic mode of its own) | `Durability::None`, an empty durable commit every MS ms from a thread | WAL on, no per-write sync; `FlushWAL(sync)` every MS ms from a thread |
//! | `none`         | `Durability::None`: synced at checkpoints | `MDB_NOSYNC`                  | `Durability::None`, an empty durable commit every second | WAL on, never synced by a write |
//!
//! Syncs per second: bufpool counts its log's fdatasyncs (`Engine::log_stats().syncs`), so
//! group commit shows as fewer syncs than commits. LMDB and redb do not expose a sync count:
//! when synced, every commit syncs before it returns (LMDB: the data pages, then the meta
//! page; redb: its commit's sync), so their count is the number of synced commits, a lower
//! bound on their device syncs; unsynced, LMDB's is 0 and redb's is its background durable
//! commits. RocksDB counts its synced writes (an upper
//! bound on its WAL syncs, since it groups writers) or, periodic, its background WAL syncs.
//! The BTreeMap has no persistence.

pub mod btreemap;
pub mod bufpool;
#[cfg(feature = "peers")]
pub mod lmdb;
#[cfg(feature = "peers")]
pub mod redb;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;

use std::path::{Path, PathBuf};

use bufpool_engine::{Durability, LogStats, RecoveryReport};
use indicatif::ProgressBar;

use crate::dataset::Dataset;
use crate::error::KvError;

/// Records per write transaction while the peers load.
#[cfg(feature = "peers")]
pub const LOAD_BATCH_RECORDS: u64 = 100_000;

/// Which engine a bench runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// bufpool-engine: the B+-tree on the bufpool buffer pool.
    Bufpool,
    /// LMDB through heed (feature `peers`).
    Lmdb,
    /// redb (feature `peers`).
    Redb,
    /// RocksDB through the `rocksdb` crate (feature `rocksdb`).
    Rocksdb,
    /// A std BTreeMap in memory: no persistence, no latches; the ceiling.
    Btreemap,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Bufpool => "bufpool",
            EngineKind::Lmdb => "lmdb",
            EngineKind::Redb => "redb",
            EngineKind::Rocksdb => "rocksdb",
            EngineKind::Btreemap => "btreemap",
        }
    }

    /// The file name of this engine's bench database under `./kv-data/`.
    pub fn default_file_name(self) -> &'static str {
        match self {
            EngineKind::Bufpool => "bench-bufpool.db",
            EngineKind::Lmdb => "bench-lmdb.mdb",
            EngineKind::Redb => "bench-redb.redb",
            // A directory.
            EngineKind::Rocksdb => "bench-rocksdb",
            EngineKind::Btreemap => "bench-btreemap.none",
        }
    }

    /// Whether the engine keeps its data in a file.
    pub fn is_persistent(self) -> bool {
        self != EngineKind::Btreemap
    }

    /// What `--durability` becomes in this engine (see the module doc).
    pub fn durability_mapping(self, durability: Durability) -> &'static str {
        let synced = durability == Durability::Immediate;
        match (self, durability) {
            (EngineKind::Bufpool, Durability::Immediate) => {
                "log fdatasync covering each put before it returns (group commit)"
            }
            (EngineKind::Bufpool, Durability::Periodic(_)) => "log synced in the background",
            (EngineKind::Bufpool, Durability::None) => "log synced at checkpoints only",
            (EngineKind::Lmdb, _) if synced => "sync per commit (LMDB default)",
            (EngineKind::Lmdb, _) => "MDB_NOSYNC: commits do not sync",
            (EngineKind::Redb, _) if synced => "Durability::Immediate per commit",
            (EngineKind::Redb, _) => {
                "Durability::None, followed by a durable commit from a thread (1 s under none)"
            }
            (EngineKind::Rocksdb, Durability::Immediate) => "WAL synced by each write",
            (EngineKind::Rocksdb, Durability::Periodic(_)) => "WAL synced in the background",
            (EngineKind::Rocksdb, Durability::None) => "WAL written, never synced by writes",
            (EngineKind::Btreemap, _) => "in memory, no persistence",
        }
    }
}

/// Where a sync count comes from (said in the report).
pub const SYNCS_FROM_LOG: &str = "log stats (fdatasyncs of the log)";
#[cfg(feature = "peers")]
pub const SYNCS_FROM_COMMITS: &str = "synced commits (one sync per commit)";
#[cfg(any(feature = "peers", feature = "rocksdb"))]
pub const SYNCS_NONE: &str = "commits do not sync";

/// Counters of a buffer pool (bufpool only; the peers' caches do not expose them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub refault_retries: u64,
    /// Pages read from the data file.
    pub page_reads: u64,
    /// Bytes of frames currently resident.
    pub resident_bytes: u64,
    /// Pages written back to the data file.
    pub page_writes: u64,
    /// Pages dirty now (each will cost one write-back).
    pub dirty_pages: u64,
}

/// What every engine offers the bench. Shared across bench threads.
pub trait Store: Send + Sync {
    fn engine(&self) -> EngineKind;

    /// The data set description stored by a completed `load`, if any.
    fn description(&self) -> Result<Option<String>, KvError>;

    /// Inserts records `0..dataset.records` in ascending key order, advancing `progress`,
    /// then stores the description and makes everything durable.
    fn load(&self, dataset: &Dataset, progress: &ProgressBar) -> Result<(), KvError>;

    /// Copies the value of `key` into `value` (cleared first); `Ok(true)` if found.
    fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool, KvError>;

    /// Looks up all `keys` at once; `values[i]` is the value of `keys[i]`.
    fn multi_get(&self, keys: &[&[u8]], values: &mut Vec<Option<Vec<u8>>>) -> Result<(), KvError>;

    /// Inserts or replaces.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError>;

    /// Visits up to `limit` records from `start` upwards; returns how many it visited.
    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize, KvError>;

    /// Makes written data durable (checkpoint, sync).
    fn flush(&self) -> Result<(), KvError>;

    /// Buffer-pool counters, where the engine has them.
    fn pool_counters(&self) -> Option<PoolCounters>;

    /// Called before a workload without writes: the engine may drop its write path.
    fn seal_read_only(&mut self) {}

    /// Makes everything durable and closes.
    fn close(self: Box<Self>) -> Result<(), KvError> {
        self.flush()
    }

    /// Syncs so far (None: the engine does not persist), counted as `sync_source` says.
    fn sync_count(&self) -> Option<u64> {
        None
    }

    fn sync_source(&self) -> &'static str {
        "no persistence"
    }

    /// The write-ahead log's counters (bufpool only).
    fn log_stats(&self) -> Option<LogStats> {
        None
    }

    /// What recovery did when the store was opened (bufpool only).
    fn recovery_report(&self) -> Option<RecoveryReport> {
        None
    }

    /// Closes without a checkpoint or flush, as a crash would leave the files (the recovery
    /// workload). The process keeps running, so only what the engine wrote counts.
    fn abandon(self: Box<Self>) {
        drop(self);
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub engine: EngineKind,
    pub path: PathBuf,
    /// The memory budget: bufpool's frame budget, redb's cache size.
    pub memory_bytes: u64,
    /// Bench threads (LMDB needs a reader slot each).
    #[cfg_attr(not(feature = "peers"), allow(dead_code))]
    pub threads: usize,
    /// What a write's return promises (see the module doc for each engine's mapping).
    pub durability: Durability,
    /// The run is out of memory under a cap (`--cgroup-mb`): RocksDB then uses direct I/O.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub capped: bool,
}

/// Opens (creating if missing) the store `options` describe.
pub fn open(options: &OpenOptions) -> Result<Box<dyn Store>, KvError> {
    match options.engine {
        EngineKind::Bufpool => Ok(Box::new(bufpool::BufpoolStore::open_or_create(
            &options.path,
            options.memory_bytes,
            options.durability,
        )?)),
        EngineKind::Btreemap => Ok(Box::new(btreemap::BTreeMapStore::new())),
        EngineKind::Lmdb | EngineKind::Redb => open_peer(options),
        EngineKind::Rocksdb => open_rocksdb(options),
    }
}

#[cfg(feature = "rocksdb")]
fn open_rocksdb(options: &OpenOptions) -> Result<Box<dyn Store>, KvError> {
    Ok(Box::new(rocksdb::RocksdbStore::open(
        &options.path,
        options.memory_bytes,
        options.capped,
        options.durability,
    )?))
}

#[cfg(not(feature = "rocksdb"))]
fn open_rocksdb(options: &OpenOptions) -> Result<Box<dyn Store>, KvError> {
    Err(KvError::EngineNotBuilt {
        engine: options.engine.name(),
        feature: "rocksdb",
    })
}

#[cfg(feature = "peers")]
fn open_peer(options: &OpenOptions) -> Result<Box<dyn Store>, KvError> {
    match options.engine {
        EngineKind::Lmdb => Ok(Box::new(lmdb::LmdbStore::open(
            &options.path,
            options.threads,
            options.durability == Durability::Immediate,
        )?)),
        EngineKind::Redb => Ok(Box::new(redb::RedbStore::open(
            &options.path,
            options.memory_bytes,
            options.durability,
        )?)),
        _ => unreachable!("not a peer of feature `peers`"),
    }
}

#[cfg(not(feature = "peers"))]
fn open_peer(options: &OpenOptions) -> Result<Box<dyn Store>, KvError> {
    Err(KvError::EngineNotBuilt {
        engine: options.engine.name(),
        feature: "peers",
    })
}

/// Removes a store's files (the bench's own default databases only).
pub fn remove_files(engine: EngineKind, path: &Path) -> Result<(), KvError> {
    if engine == EngineKind::Bufpool {
        return bufpool_engine::Engine::remove(path)
            .map_err(|error| KvError::io(format!("remove {}", path.display()), error));
    }
    if engine == EngineKind::Rocksdb {
        return match std::fs::remove_dir_all(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(KvError::io(format!("remove {}", path.display()), error))
            }
            _ => Ok(()),
        };
    }
    let mut paths = vec![path.to_path_buf()];
    if engine == EngineKind::Lmdb {
        paths.push(lmdb_lock_path(path));
    }
    for path in paths {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(KvError::io(format!("remove {}", path.display()), error)),
        }
    }
    Ok(())
}

/// LMDB's lock file next to a `MDB_NOSUBDIR` data file.
pub fn lmdb_lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

/// Advances `progress` by one record, redrawing only every few thousand records.
pub fn tick(progress: &ProgressBar, index: u64) {
    const PROGRESS_STEP_RECORDS: u64 = 4096;
    if (index + 1) % PROGRESS_STEP_RECORDS == 0 {
        progress.inc(PROGRESS_STEP_RECORDS);
    }
}
