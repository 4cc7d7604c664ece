//! RocksDB through the `rocksdb` crate (feature `rocksdb`), configured as its expert users
//! configure it for a point-lookup and short-scan benchmark on one machine:
//!
//! * Memory: the budget (`--pool-mb`) covers the block cache and the memtables together, as
//!   RocksDB's memory-usage guide counts them (block cache + memtables + index and filter
//!   blocks, which are in the cache here, + blocks pinned by iterators, a few per open
//!   iterator): the block cache gets the budget less the memtable budget. (Charging the
//!   memtables to the cache with a `WriteBufferManager` would do the same, but the `rocksdb`
//!   crate 0.20 does not expose it.)
//! * Under a cap, run it on jemalloc, the allocator RocksDB recommends against fragmentation
//!   (Debian's library is built without it; the tournament preloads Debian's `libjemalloc2`
//!   with `LD_PRELOAD`). On glibc's malloc RocksDB's process outgrows what RocksDB itself
//!   counts: at 20M records and 32 threads, with its block cache (959 MiB) and memtables
//!   (19-31 MiB) flat by its own properties, the process went from 1100 to 1270 MiB through
//!   ycsb-c to ycsb-f even with two malloc arenas (`MALLOC_ARENA_MAX=2`), and to 1360 MiB in
//!   ycsb-c alone with a fixed mmap threshold. With the whole budget as its block cache and
//!   glibc's default arenas, the 1200 MiB cap killed it during ycsb-e (in the tournament)
//!   or ycsb-c. On jemalloc the same run stayed between 1040 and 1090 MiB from ycsb-a to
//!   ycsb-f, at equal or better ops/s.
//! * Block cache: an LRU cache, with the index and filter blocks in it
//!   (`cache_index_and_filter_blocks`, L0's pinned), so the budget covers them as bufpool's
//!   covers its inner pages. 4 KiB blocks (the default, bufpool's page size).
//! * Bloom filters: 10 bits per key, full (not block-based) filters, whole-key filtering.
//! * Memtables: `optimize_level_style_compaction` with a 64 MiB memtable budget (16 MiB
//!   write buffers, L0 → L1 compaction after two files), and `db_write_buffer_size` 64 MiB
//!   caps all memtables together.
//! * Level compaction with its defaults otherwise (dynamic level sizes); no compression (the
//!   bench values are incompressible filler, and none is compiled in).
//! * Background threads: `increase_parallelism(cores)`, RocksDB's advice (the number of
//!   cores, not of bench threads).
//! * Direct I/O (`use_direct_reads`, `use_direct_io_for_flush_and_compaction`) only out of
//!   memory, when `--cgroup-mb` caps the run: then the block cache is RocksDB's only cache,
//!   and the cap and the budget mean the same for it as for bufpool. In memory it reads
//!   through the kernel's page cache, as it does by default.
//! * WAL on; `--durability immediate`: every write syncs the WAL before it returns (RocksDB
//!   groups concurrent writers into one sync); `periodic[:MS]`: writes do not sync, a
//!   background thread syncs the WAL every MS ms (`FlushWAL(true)`); `none`: no sync.
//! * Loading: the bulk path. Sorted records go into SST files of 64 MiB (`SstFileWriter`,
//!   with the table options above, so they carry their filters) that are then ingested in one
//!   call (moved, not copied) to the bottom level: no WAL, no memtable, no compaction. The
//!   data set description goes to a column family `meta`, written with a synced WAL. In
//!   memory, one full scan then fills the block cache (the other engines' loads leave their
//!   pages resident; ingestion and `SstFileWriter` leave neither cache warm).
//! * Reads use default read options; a scan is one iterator (`Seek`, then `Next`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bufpool_engine::Durability;
use indicatif::ProgressBar;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType,
    IngestExternalFileOptions, Options, SstFileWriter, WriteOptions,
};

use super::{EngineKind, PoolCounters, Store, tick};
use crate::dataset::{DESCRIPTION_KEY, Dataset};
use crate::error::KvError;

const META_FAMILY: &str = "meta";
/// Memtables of all column families together.
const MEMTABLE_BUDGET_BYTES: usize = 64 << 20;
/// A budget below the memtables' still gets this much block cache.
const MIN_BLOCK_CACHE_BYTES: usize = 8 << 20;
/// Size of each SST file the load writes (RocksDB's default target file size).
const LOAD_FILE_BYTES: u64 = 64 << 20;
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Levels RocksDB uses by default (one compression type each).
const LEVELS: usize = 7;

pub struct RocksdbStore {
    db: Arc<DB>,
    options: Options,
    path: PathBuf,
    write: WriteOptions,
    /// `--durability immediate`: every write syncs the WAL.
    synced: bool,
    /// Out of memory: reads bypass the page cache.
    direct_io: bool,
    /// Writes that synced (immediate) or background WAL syncs (periodic).
    syncs: Arc<AtomicU64>,
    periodic: Option<PeriodicSync>,
}

/// The background thread of `--durability periodic`: syncs the WAL every interval.
struct PeriodicSync {
    stop: Mutex<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PeriodicSync {
    fn start(db: Arc<DB>, interval: Duration, syncs: Arc<AtomicU64>) -> PeriodicSync {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Ends when the store is dropped (the sender goes) or asks it to.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                match db.flush_wal(true) {
                    Ok(()) => {
                        syncs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => eprintln!("kv: rocksdb periodic WAL sync failed: {error}"),
                }
            }
        });
        PeriodicSync {
            stop: Mutex::new(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for PeriodicSync {
    fn drop(&mut self) {
        if let Ok(stop) = self.stop.lock() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The block cache for a memory budget of `budget_bytes`: the budget less the memtables',
/// at least [`MIN_BLOCK_CACHE_BYTES`].
fn block_cache_bytes(budget_bytes: u64) -> usize {
    let budget = usize::try_from(budget_bytes).unwrap_or(usize::MAX);
    budget
        .saturating_sub(MEMTABLE_BUDGET_BYTES)
        .max(MIN_BLOCK_CACHE_BYTES)
}

/// The options above for a memory budget of `budget_bytes`; `direct_io` out of memory.
fn options(budget_bytes: u64, direct_io: bool) -> Result<Options, KvError> {
    let cache = Cache::new_lru_cache(block_cache_bytes(budget_bytes))?;
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    table.set_whole_key_filtering(true);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    options.increase_parallelism(i32::try_from(cores).unwrap_or(i32::MAX));
    options.optimize_level_style_compaction(MEMTABLE_BUDGET_BYTES);
    options.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
    // After optimize_level_style_compaction, which asks for compression on levels 2 and up.
    options.set_compression_type(DBCompressionType::None);
    options.set_compression_per_level(&[DBCompressionType::None; LEVELS]);
    options.set_block_based_table_factory(&table);
    options.set_use_direct_reads(direct_io);
    options.set_use_direct_io_for_flush_and_compaction(direct_io);
    Ok(options)
}

impl RocksdbStore {
    /// Opens or creates the database directory `path` within a memory budget of
    /// `budget_bytes`; `direct_io` out of memory; writes return as `durability` promises.
    pub fn open(
        path: &Path,
        budget_bytes: u64,
        direct_io: bool,
        durability: Durability,
    ) -> Result<RocksdbStore, KvError> {
        let options = options(budget_bytes, direct_io)?;
        // Both column families named: the crate would open an unnamed default family with
        // default options (a 32 MiB cache, no filters).
        let families = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone()),
            ColumnFamilyDescriptor::new(META_FAMILY, options.clone()),
        ];
        let db = Arc::new(DB::open_cf_descriptors(&options, path, families)?);
        let synced = durability == Durability::Immediate;
        let mut write = WriteOptions::default();
        write.set_sync(synced);
        let syncs = Arc::new(AtomicU64::new(0));
        let periodic = match durability {
            Durability::Periodic(interval) => Some(PeriodicSync::start(
                Arc::clone(&db),
                interval,
                Arc::clone(&syncs),
            )),
            Durability::Immediate | Durability::None => None,
        };
        Ok(RocksdbStore {
            db,
            options,
            path: path.to_path_buf(),
            write,
            synced,
            direct_io,
            syncs,
            periodic,
        })
    }

    fn meta(&self) -> Result<&rocksdb::ColumnFamily, KvError> {
        self.db
            .cf_handle(META_FAMILY)
            .ok_or_else(|| KvError::InvalidArgument("rocksdb: no meta column family".into()))
    }

    /// In memory, one sequential pass over the data fills the block cache, as the other
    /// engines' loads leave their pages resident: ingested files bypass the cache, and
    /// `SstFileWriter` drops them from the page cache as it writes.
    fn warm_block_cache(&self) -> Result<(), KvError> {
        let mut iterator = self.db.raw_iterator();
        iterator.seek_to_first();
        while iterator.valid() {
            iterator.next();
        }
        iterator.status()?;
        Ok(())
    }

    /// Writes records from `first` on, sorted, into the SST file `file` until it holds
    /// `LOAD_FILE_BYTES`; returns the first record it did not write.
    fn write_sst(
        &self,
        dataset: &Dataset,
        file: &Path,
        first: u64,
        progress: &ProgressBar,
    ) -> Result<u64, KvError> {
        let mut writer = SstFileWriter::create(&self.options);
        writer.open(file)?;
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut index = first;
        while index < dataset.records && writer.file_size() < LOAD_FILE_BYTES {
            dataset.key_into(index, &mut key);
            dataset.value_into(index, 0, &mut value);
            writer.put(&key, &value)?;
            tick(progress, index);
            index += 1;
        }
        writer.finish()?;
        Ok(index)
    }
}

impl Store for RocksdbStore {
    fn engine(&self) -> EngineKind {
        EngineKind::Rocksdb
    }

    fn description(&self) -> Result<Option<String>, KvError> {
        let found = self.db.get_pinned_cf(self.meta()?, DESCRIPTION_KEY)?;
        Ok(found.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn load(&self, dataset: &Dataset, progress: &ProgressBar) -> Result<(), KvError> {
        let staging = self.path.join("load");
        std::fs::create_dir_all(&staging)
            .map_err(|error| KvError::io(format!("mkdir {}", staging.display()), error))?;
        let mut files = Vec::new();
        let mut next = 0;
        while next < dataset.records {
            let file = staging.join(format!("{:06}.sst", files.len()));
            next = self.write_sst(dataset, &file, next, progress)?;
            files.push(file);
        }
        progress.set_position(dataset.records);
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        self.db.ingest_external_file_opts(&ingest, files)?;
        std::fs::remove_dir_all(&staging)
            .map_err(|error| KvError::io(format!("remove {}", staging.display()), error))?;
        // The data first, then the description: a load cut short is never taken as complete.
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.db.put_cf_opt(
            self.meta()?,
            DESCRIPTION_KEY,
            dataset.describe().as_bytes(),
            &synced,
        )?;
        self.flush()?;
        if !self.direct_io {
            self.warm_block_cache()?;
        }
        Ok(())
    }

    fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool, KvError> {
        value.clear();
        match self.db.get_pinned(key)? {
            Some(found) => {
                value.extend_from_slice(&found);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn multi_get(&self, keys: &[&[u8]], values: &mut Vec<Option<Vec<u8>>>) -> Result<(), KvError> {
        values.clear();
        let data = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .ok_or_else(|| KvError::InvalidArgument("rocksdb: no default column family".into()))?;
        // RocksDB's batched MultiGet: one pass over the levels for all keys.
        for found in self.db.batched_multi_get_cf(data, keys, false) {
            values.push(found?.map(|slice| slice.to_vec()));
        }
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.db.put_opt(key, value, &self.write)?;
        if self.synced {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize, KvError> {
        let mut iterator = self.db.raw_iterator();
        iterator.seek(start);
        let mut visited = 0;
        while visited < limit {
            let (Some(key), Some(value)) = (iterator.key(), iterator.value()) else {
                break;
            };
            visit(key, value);
            visited += 1;
            iterator.next();
        }
        iterator.status()?;
        Ok(visited)
    }

    fn flush(&self) -> Result<(), KvError> {
        self.db.flush_wal(true)?;
        self.db.flush()?;
        Ok(())
    }

    fn pool_counters(&self) -> Option<PoolCounters> {
        None
    }

    fn close(self: Box<Self>) -> Result<(), KvError> {
        self.flush()?;
        let RocksdbStore { db, periodic, .. } = *self;
        // The periodic thread holds the other reference: stop it before the database closes.
        drop(periodic);
        drop(db);
        Ok(())
    }

    fn sync_count(&self) -> Option<u64> {
        Some(self.syncs.load(Ordering::Relaxed))
    }

    fn sync_source(&self) -> &'static str {
        if self.synced {
            "synced writes (RocksDB may group several into one WAL sync)"
        } else if self.periodic.is_some() {
            "background WAL syncs"
        } else {
            super::SYNCS_NONE
        }
    }
}
