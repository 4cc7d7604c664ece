//! redb, opened as its users would for this benchmark:
//!
//! * Its cache (`Builder::set_cache_size`) gets the same memory budget as bufpool's pool
//!   (`--pool-mb`); redb reads the file through that cache (and the kernel's page cache,
//!   which `--cgroup-mb` caps).
//! * Loading commits 100 000 sorted records per write transaction with `Durability::None`, and
//!   then the data set description with `Durability::Immediate` (which makes all of it
//!   durable). Bench updates commit with `Durability::Immediate` under `--durability
//!   immediate` (the commit returns after the sync; the sync count is the commit count), else
//!   with `Durability::None` (not durable per operation, as bufpool's under `none`).
//! * One read transaction per lookup (or per `multi_get` batch), like every other engine here.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::ProgressBar;
use redb::{Database, Durability, ReadableDatabase, TableDefinition, TableError};

use super::{EngineKind, LOAD_BATCH_RECORDS, PoolCounters, Store, tick};
use crate::dataset::{DESCRIPTION_KEY, Dataset};
use crate::error::KvError;

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

pub struct RedbStore {
    database: Database,
    /// Bench updates commit with `Durability::Immediate`.
    synced: bool,
    synced_commits: AtomicU64,
}

impl RedbStore {
    /// Opens or creates the database at `path` with a cache of `cache_bytes`; `synced`:
    /// bench updates commit with `Durability::Immediate`.
    pub fn open(path: &Path, cache_bytes: u64, synced: bool) -> Result<RedbStore, KvError> {
        let cache_bytes = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        let database = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        Ok(RedbStore {
            database,
            synced,
            synced_commits: AtomicU64::new(0),
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
        if self.synced {
            super::SYNCS_FROM_COMMITS
        } else {
            super::SYNCS_NONE
        }
    }
}
