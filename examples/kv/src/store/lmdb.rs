//! LMDB through heed, opened as its expert users open it for a random-lookup benchmark:
//!
//! * `MDB_NORDAHEAD`: out of memory, the default readahead turns each 4 KiB miss into a
//!   128 KiB read and the lookup rate collapses (to about 300/s on this machine class).
//! * `MDB_NOTLS` (heed's `read_txn_without_tls`): read transactions are not bound to a thread's
//!   slot, so any number of bench threads can each hold one; `max_readers` covers them all.
//! * `MDB_NOSYNC` unless `--durability immediate`: commits do not fsync; loading syncs once at
//!   the end (`force_sync`), and bench updates are not durable per operation (bufpool's are
//!   not either under `--durability none`). With `--durability immediate`, LMDB's default:
//!   every commit syncs the data file before it returns (the sync count is the commit count).
//! * `MDB_WRITEMAP` off (the default): pages are only written through `write(2)`, readers see a
//!   read-only map.
//! * A 1 TiB map: virtual only; the file grows as pages are used.
//! * Loading uses `MDB_APPEND` (keys arrive sorted), 100 000 records per write transaction.
//! * One read transaction per lookup (or per `multi_get` batch), like every other engine here.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, PutFlags, WithTls};
use indicatif::ProgressBar;
use kv_lmdb_open::{LmdbSettings, open_env};

use super::{EngineKind, LOAD_BATCH_RECORDS, PoolCounters, Store, tick};
use crate::dataset::{DESCRIPTION_KEY, Dataset};
use crate::error::KvError;

const MAP_SIZE_BYTES: usize = 1 << 40;
/// Reader slots beyond the bench threads (LMDB's own default is 126).
const SPARE_READERS: u32 = 126;

pub struct LmdbStore {
    env: Env<WithTls>,
    data: Database<'static, Bytes, Bytes>,
    meta: Database<'static, Bytes, Bytes>,
    /// Commits sync (no `MDB_NOSYNC`).
    synced: bool,
    /// Bench commits made with a sync.
    synced_commits: AtomicU64,
}

impl LmdbStore {
    /// Opens or creates the single-file environment at `path`; `synced`: every commit syncs.
    pub fn open(path: &Path, threads: usize, synced: bool) -> Result<LmdbStore, KvError> {
        let settings = LmdbSettings {
            map_size_bytes: MAP_SIZE_BYTES,
            max_readers: u32::try_from(threads).unwrap_or(u32::MAX / 2) + SPARE_READERS,
            max_dbs: 2,
            no_read_ahead: true,
            no_sync: !synced,
        };
        let env = open_env(path, settings)?;
        let txn = env.write_txn()?;
        let created = env.create_databases_and_commit(txn, |opener, txn| {
            let data = opener.create_database::<Bytes, Bytes>(txn, Some("data"))?;
            let meta = opener.create_database::<Bytes, Bytes>(txn, Some("meta"))?;
            heed::Result::Ok(CommitOrAbort::<_, ()>::Commit((data, meta)))
        })?;
        let (data, meta) = created.commit().expect("the closure never aborts");
        Ok(LmdbStore {
            env,
            data,
            meta,
            synced,
            synced_commits: AtomicU64::new(0),
        })
    }
}

impl Store for LmdbStore {
    fn engine(&self) -> EngineKind {
        EngineKind::Lmdb
    }

    fn description(&self) -> Result<Option<String>, KvError> {
        let txn = self.env.read_txn()?;
        let found = self.meta.get(&txn, DESCRIPTION_KEY)?;
        Ok(found.map(|bytes| String::from_utf8_lossy(bytes).into_owned()))
    }

    fn load(&self, dataset: &Dataset, progress: &ProgressBar) -> Result<(), KvError> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < dataset.records {
            let end = (start + LOAD_BATCH_RECORDS).min(dataset.records);
            let mut txn = self.env.write_txn()?;
            for index in start..end {
                dataset.key_into(index, &mut key);
                dataset.value_into(index, 0, &mut value);
                self.data
                    .put_with_flags(&mut txn, PutFlags::APPEND, &key, &value)?;
                tick(progress, index);
            }
            txn.commit()?;
            start = end;
        }
        progress.set_position(dataset.records);
        let mut txn = self.env.write_txn()?;
        self.meta
            .put(&mut txn, DESCRIPTION_KEY, dataset.describe().as_bytes())?;
        txn.commit()?;
        self.flush()
    }

    fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool, KvError> {
        value.clear();
        let txn = self.env.read_txn()?;
        match self.data.get(&txn, key)? {
            Some(found) => {
                value.extend_from_slice(found);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn multi_get(&self, keys: &[&[u8]], values: &mut Vec<Option<Vec<u8>>>) -> Result<(), KvError> {
        values.clear();
        let txn = self.env.read_txn()?;
        for key in keys {
            values.push(self.data.get(&txn, key)?.map(<[u8]>::to_vec));
        }
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let mut txn = self.env.write_txn()?;
        self.data.put(&mut txn, key, value)?;
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
        let txn = self.env.read_txn()?;
        let range = (std::ops::Bound::Included(start), std::ops::Bound::Unbounded);
        let mut visited = 0;
        for entry in self.data.range(&txn, &range)?.take(limit) {
            let (key, value) = entry?;
            visit(key, value);
            visited += 1;
        }
        Ok(visited)
    }

    fn flush(&self) -> Result<(), KvError> {
        self.env.force_sync()?;
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
