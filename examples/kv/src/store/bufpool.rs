//! bufpool-engine: the B+-tree on the buffer pool, the engine this example exists for.
//! The data set lives in the tree `data` (loaded with `Tree::load_sorted`, the engine's
//! bottom-up bulk path for sorted keys), its description in the tree `meta`.

use std::ops::{Bound, ControlFlow};
use std::path::Path;

use bufpool_engine::{
    Direction, Durability, Engine, EngineOptions, LogStats, RecoveryReport, Tree,
};
use indicatif::ProgressBar;

use super::{EngineKind, PoolCounters, Store, tick};
use crate::dataset::{DESCRIPTION_KEY, Dataset};
use crate::error::KvError;

pub const DATA_TREE: &str = "data";
pub const META_TREE: &str = "meta";

pub struct BufpoolStore {
    engine: Engine,
    data: Tree,
    meta: Tree,
}

impl BufpoolStore {
    /// Opens or creates the database at `path` with a frame budget of `pool_bytes`; each
    /// `put` returns as `durability` promises.
    pub fn open_or_create(
        path: &Path,
        pool_bytes: u64,
        durability: Durability,
    ) -> Result<BufpoolStore, KvError> {
        let options = EngineOptions {
            pool_bytes,
            durability,
            ..EngineOptions::default()
        };
        let engine = Engine::open_or_create(path, options)?;
        let data = engine.tree(DATA_TREE)?;
        let meta = engine.tree(META_TREE)?;
        Ok(BufpoolStore { engine, data, meta })
    }
}

impl Store for BufpoolStore {
    fn engine(&self) -> EngineKind {
        EngineKind::Bufpool
    }

    fn description(&self) -> Result<Option<String>, KvError> {
        let found = self.meta.get(DESCRIPTION_KEY)?;
        Ok(found.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn load(&self, dataset: &Dataset, progress: &ProgressBar) -> Result<(), KvError> {
        // Keys arrive sorted: the engine's bulk path builds packed leaves bottom up.
        let records = (0..dataset.records).map(|index| {
            let (mut key, mut value) = (Vec::new(), Vec::new());
            dataset.key_into(index, &mut key);
            dataset.value_into(index, 0, &mut value);
            tick(progress, index);
            (key, value)
        });
        let loaded = self.data.load_sorted(records)?;
        assert_eq!(
            loaded, dataset.records,
            "load_sorted loads every record or fails"
        );
        progress.set_position(dataset.records);
        // The data first, then the description: a load cut short is never taken as complete.
        self.engine.checkpoint()?;
        self.meta
            .put(DESCRIPTION_KEY, dataset.describe().as_bytes())?;
        self.engine.checkpoint()?;
        Ok(())
    }

    fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool, KvError> {
        Ok(self.data.get_into(key, value)?)
    }

    fn multi_get(&self, keys: &[&[u8]], values: &mut Vec<Option<Vec<u8>>>) -> Result<(), KvError> {
        *values = self.data.multi_get(keys)?;
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        Ok(self.data.put(key, value)?)
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize, KvError> {
        if limit == 0 {
            return Ok(0);
        }
        // The engine's latched visitor: keys and values lent straight from each leaf's frame
        // (`visit` only checks and counts records; it never calls the engine).
        let bounds = (Bound::Included(start), Bound::Unbounded);
        let mut visited = 0;
        self.data.scan_latched_expecting::<[u8], _, _>(
            bounds,
            Direction::Forward,
            limit,
            |key, value| {
                visit(key, value);
                visited += 1;
                if visited < limit {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
        )?;
        Ok(visited)
    }

    fn flush(&self) -> Result<(), KvError> {
        Ok(self.engine.checkpoint()?)
    }

    fn pool_counters(&self) -> Option<PoolCounters> {
        let stats = self.engine.pool_stats();
        Some(PoolCounters {
            hits: stats.hits,
            misses: stats.misses,
            evictions: stats.evictions,
            refault_retries: stats.refault_retries,
            page_reads: stats.reads,
            resident_bytes: stats.resident_bytes,
            page_writes: stats.writes,
            dirty_pages: stats.dirty_pages,
        })
    }

    fn close(self: Box<Self>) -> Result<(), KvError> {
        let BufpoolStore { engine, data, meta } = *self;
        drop((data, meta));
        Ok(engine.close()?)
    }

    fn sync_count(&self) -> Option<u64> {
        Some(self.engine.log_stats().syncs)
    }

    fn sync_source(&self) -> &'static str {
        super::SYNCS_FROM_LOG
    }

    fn log_stats(&self) -> Option<LogStats> {
        Some(self.engine.log_stats())
    }

    fn recovery_report(&self) -> Option<RecoveryReport> {
        Some(self.engine.recovery_report())
    }

    fn abandon(self: Box<Self>) {
        // Dropping does not checkpoint (`close` does); the trees hold the file open too.
        let BufpoolStore { engine, data, meta } = *self;
        drop((data, meta, engine));
    }
}
