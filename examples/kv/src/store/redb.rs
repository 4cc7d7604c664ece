//! redb, opened as its users would for this benchmark, within the same memory as the others:
//!
//! * Its cache (`Builder::set_cache_size`) is the memory budget (`--pool-mb`) less what redb
//!   spends per cached page outside the bytes it counts ([`CACHE_OVERHEAD_DIVISOR`]): the
//!   cache counts page bytes only, and each 4 KiB page also costs its `Arc` header and malloc
//!   chunk rounding (32 bytes), its hash-map slot (about 40 bytes at the map's load factor,
//!   twice that right after the map grows) and its LRU queue entries (16 bytes, up to two).
//!   Measured at 20M records, 32 threads, ycsb-a (redb's `cache_stats` with its
//!   `cache_metrics` feature, and glibc's `mallinfo2`, every second while the cache fills):
//!   malloc's bytes in use grew 1.024 to 1.038 bytes per cached byte, i.e. 1/42 to 1/26,
//!   over a 33-39 MiB base that is the bench's own; at a full 992 MiB cache, 1060 MiB in use,
//!   the same under writes (A, B, F) as read-only (C). redb reads the file through that
//!   cache and the kernel's page cache, which `--cgroup-mb` caps: clean and reclaimable,
//!   that page cache is what the cap squeezes (about 110 MiB of it next to the process
//!   below); it never caused a kill.
//! * Under a cap, run it with one malloc arena, `MALLOC_ARENA_MAX=1` (the tournament does).
//!   redb's cache is malloc'd 4 KiB pages, allocated by whichever bench thread missed (before
//!   it evicts one) and freed by whichever evicts; a page freed into one arena cannot serve an
//!   allocation in another, so with several arenas each grows while the others hold free
//!   space that the process keeps. Measured at 20M records, 32 threads, the 1024 MiB budget
//!   and the 1200 MiB cap, A to F in one process: with glibc's default of 8 arenas per core
//!   the same cache cost 1180 MiB of process memory instead of 1112 (ycsb-c); with 2 arenas,
//!   malloc's free space grew from 20 to 125 MiB through ycsb-b and into the read-only ycsb-c
//!   while its bytes in use stayed at 1060 MiB, the cgroup's anonymous memory reached 1190
//!   MiB, and the cap's out-of-memory killer ended the run (the tournament's redb kill; a run
//!   that had finished A-F with 2 arenas had started with 444 MiB of malloc free space from a
//!   repair charged outside the cap, and its free space reached 273 MiB: a 1300 MiB process
//!   in a 1200 MiB cap). With one arena the free space never exceeded 104 MiB, the
//!   anonymous memory peaked at 1090 MiB, and every workload finished. It costs nothing
//!   measurable: in capped runs of ycsb-c then ycsb-f (5 s warm-up, 10 s each), alternating
//!   2, 1, 2, 1 arenas, one arena took 12.1-13.0 µs of CPU per ycsb-c operation and 61-62 per
//!   ycsb-f one, two arenas 12.0-13.0 and 64-66, while their anonymous memory reached
//!   1162-1183 MiB in those 30 s against one arena's 1071. Neither a smaller cache nor more
//!   frequent durable commits would have done: the in-use bytes did not grow, the free
//!   space did.
//! * Loading commits 100 000 sorted records per write transaction with `Durability::None`, and
//!   then the data set description with `Durability::Immediate` (which makes all of it
//!   durable). Bench updates commit with `Durability::Immediate` under `--durability
//!   immediate` (the commit returns after the sync; the sync count is the commit count), else
//!   with `Durability::None` (not durable per operation, as bufpool's under `none`).
//! * Non-durable commits are followed by a durable one, as redb's documentation of
//!   `Durability::None` asks ("not persisted to disk unless followed by a commit with
//!   `Durability::Immediate`"): a background thread commits an empty durable transaction
//!   every `MS` under `--durability periodic[:MS]` and every [`DURABLE_COMMIT_INTERVAL`]
//!   under `none` (redb's checkpoint; bufpool's come from its log size). Until then redb keeps
//!   each non-durable commit's allocated and freed pages in memory (its `UnpersistedState`),
//!   and its freed pages cannot be reused: about 2 KiB per commit, measured, so ycsb-e's
//!   95 000 inserts grew the process by 200 MiB and a 1200 MiB cap killed it. With one
//!   durable commit a second (ycsb-a at 32 threads: 5000 to 8000 non-durable commits a
//!   second), that state is lost in the noise: malloc's bytes in use during A, B and F were
//!   within 3 MiB of read-only C's, the durable commits took 122 ms on average (452 ms at
//!   most), and the cgroup's dirty page cache stayed under 83 MiB. Each durable commit is
//!   one sync, counted.
//! * One read transaction per lookup (or per `multi_get` batch, or per scan), like every other
//!   engine here.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::ProgressBar;
use redb::{Database, Durability, ReadableDatabase, TableDefinition, TableError};

use super::{EngineKind, LOAD_BATCH_RECORDS, PoolCounters, Store, tick};
use crate::dataset::{DESCRIPTION_KEY, Dataset};
use crate::error::KvError;

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

/// The cache gets the budget less 1/32 of it: about 128 bytes of overhead per 4 KiB page
/// (see the module doc).
pub const CACHE_OVERHEAD_DIVISOR: u64 = 32;
/// Between background durable commits under `--durability none`.
pub const DURABLE_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

pub struct RedbStore {
    database: Arc<Database>,
    /// Bench updates commit with `Durability::Immediate`.
    synced: bool,
    /// Synced bench commits, or background durable commits.
    synced_commits: Arc<AtomicU64>,
    durable_commits: Option<DurableCommits>,
}

/// The background thread that follows non-durable commits with a durable one.
struct DurableCommits {
    stop: Mutex<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DurableCommits {
    fn start(database: Arc<Database>, interval: Duration, count: Arc<AtomicU64>) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Ends when the store is dropped (the sender goes) or asks it to.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                // An empty commit, durable by default, makes every earlier one durable.
                let committed = database
                    .begin_write()
                    .map_err(redb::Error::from)
                    .and_then(|txn| txn.commit().map_err(redb::Error::from));
                match committed {
                    Ok(()) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => eprintln!("kv: redb background durable commit failed: {error}"),
                }
            }
        });
        DurableCommits {
            stop: Mutex::new(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for DurableCommits {
    fn drop(&mut self) {
        if let Ok(stop) = self.stop.lock() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RedbStore {
    /// Opens or creates the database at `path` within a memory budget of `budget_bytes`;
    /// writes return as `durability` promises (see the module doc).
    pub fn open(
        path: &Path,
        budget_bytes: u64,
        durability: bufpool_engine::Durability,
    ) -> Result<RedbStore, KvError> {
        let cache_bytes = budget_bytes - budget_bytes / CACHE_OVERHEAD_DIVISOR;
        let cache_bytes = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        let database = Arc::new(
            Database::builder()
                .set_cache_size(cache_bytes)
                .create(path)?,
        );
        let synced_commits = Arc::new(AtomicU64::new(0));
        let interval = match durability {
            bufpool_engine::Durability::Immediate => None,
            bufpool_engine::Durability::Periodic(interval) => Some(interval),
            bufpool_engine::Durability::None => Some(DURABLE_COMMIT_INTERVAL),
        };
        let durable_commits = interval.map(|interval| {
            DurableCommits::start(Arc::clone(&database), interval, Arc::clone(&synced_commits))
        });
        Ok(RedbStore {
            database,
            synced: durable_commits.is_none(),
            synced_commits,
            durable_commits,
        })
    }

    fn commit_batch(
        &self,
        dataset: &Dataset,
        indexes: std::ops::Range<u64>,
        durability: Durability,
        progress: &ProgressBar,
    ) -> Result<(), KvError> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut txn = self.database.begin_write()?;
        txn.set_durability(durability)
            .map_err(|error| KvError::InvalidArgument(format!("redb durability: {error}")))?;
        {
            let mut table = txn.open_table(DATA)?;
            for index in indexes {
                dataset.key_into(index, &mut key);
                dataset.value_into(index, 0, &mut value);
                table.insert(key.as_slice(), value.as_slice())?;
                tick(progress, index);
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn engine(&self) -> EngineKind {
        EngineKind::Redb
    }

    fn description(&self) -> Result<Option<String>, KvError> {
        let txn = self.database.begin_read()?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let found = table.get(DESCRIPTION_KEY)?;
        Ok(found.map(|guard| String::from_utf8_lossy(guard.value()).into_owned()))
    }

    fn load(&self, dataset: &Dataset, progress: &ProgressBar) -> Result<(), KvError> {
        let mut start = 0;
        while start < dataset.records {
            let end = (start + LOAD_BATCH_RECORDS).min(dataset.records);
            self.commit_batch(dataset, start..end, Durability::None, progress)?;
            start = end;
        }
        progress.set_position(dataset.records);
        let txn = self.database.begin_write()?;
        {
            let mut table = txn.open_table(META)?;
            table.insert(DESCRIPTION_KEY, dataset.describe().as_bytes())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool, KvError> {
        value.clear();
        let txn = self.database.begin_read()?;
        let table = txn.open_table(DATA)?;
        match table.get(key)? {
            Some(found) => {
                value.extend_from_slice(found.value());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn multi_get(&self, keys: &[&[u8]], values: &mut Vec<Option<Vec<u8>>>) -> Result<(), KvError> {
        values.clear();
        let txn = self.database.begin_read()?;
        let table = txn.open_table(DATA)?;
        for key in keys {
            values.push(table.get(*key)?.map(|found| found.value().to_vec()));
        }
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let mut txn = self.database.begin_write()?;
        let durability = if self.synced {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(|error| KvError::InvalidArgument(format!("redb durability: {error}")))?;
        {
            let mut table = txn.open_table(DATA)?;
            table.insert(key, value)?;
        }
        txn.commit()?;
        if self.synced {
            self.synced_commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize, KvError> {
        let txn = self.database.begin_read()?;
        let table = txn.open_table(DATA)?;
        let mut visited = 0;
        for entry in table.range(start..)?.take(limit) {
            let (key, value) = entry?;
            visit(key.value(), value.value());
            visited += 1;
        }
        Ok(visited)
    }

    fn flush(&self) -> Result<(), KvError> {
        // An empty durable commit makes every earlier non-durable commit durable.
        let txn = self.database.begin_write()?;
        txn.commit()?;
        Ok(())
    }

    fn pool_counters(&self) -> Option<PoolCounters> {
        None
    }

    fn sync_count(&self) -> Option<u64> {
        Some(self.synced_commits.load(Ordering::Relaxed))
    }

    fn sync_source(&self) -> &'static str {
        match self.durable_commits {
            None => super::SYNCS_FROM_COMMITS,
            Some(_) => "background durable commits (one sync each)",
        }
    }
}
