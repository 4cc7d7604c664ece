//! The ceiling: a `std::collections::BTreeMap` in memory, no persistence, and for read-only
//! workloads no lock either (sealed into a plain map shared by reference across threads).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use indicatif::ProgressBar;

use super::{EngineKind, PoolCounters, Store, tick};
use crate::dataset::Dataset;
use crate::error::KvError;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// A BTreeMap behind a RwLock while writable; a bare map once sealed read-only.
pub struct BTreeMapStore {
    writable: RwLock<Map>,
    sealed: Option<Map>,
    description: RwLock<Option<String>>,
}

impl BTreeMapStore {
    pub fn new() -> BTreeMapStore {
        BTreeMapStore {
            writable: RwLock::new(Map::new()),
            sealed: None,
            description: RwLock::new(None),
        }
    }

    fn with_map<T>(&self, read: impl FnOnce(&Map) -> T) -> T {
        match &self.sealed {
            Some(map) => read(map),
            None => read(&self.read_guard()),
        }
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, Map> {
        // A poisoned lock means a bench thread panicked mid-insert; the map is still a map.
        self.writable.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for BTreeMapStore {
    fn default() -> Self {
        BTreeMapStore::new()
    }
}

impl Store for BTreeMapStore {
    fn engine(&self) -> EngineKind {
        EngineKind::Btreemap
    }

    fn description(&self) -> Result<Option<String>, KvError> {
        let description = self.description.read();
        Ok(description.unwrap_or_else(PoisonError::into_inner).clone())
    }

    fn load(&self, dataset: &Dataset, progress: &ProgressBar) -> Result<(), KvError> {
        let mut map = self
            .writable
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for index in 0..dataset.records {
            let (mut key, mut value) = (Vec::new(), Vec::new());
            dataset.key_into(index, &mut key);
            dataset.value_into(index, 0, &mut value);
            map.insert(key, value);
            tick(progress, index);
        }
        progress.set_position(dataset.records);
        let mut description = self
            .description
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *description = Some(dataset.describe());
        Ok(())
    }

    fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool, KvError> {
        value.clear();
        Ok(self.with_map(|map| match map.get(key) {
            Some(found) => {
                value.extend_from_slice(found);
                true
            }
            None => false,
        }))
    }

    fn multi_get(&self, keys: &[&[u8]], values: &mut Vec<Option<Vec<u8>>>) -> Result<(), KvError> {
        values.clear();
        self.with_map(|map| values.extend(keys.iter().map(|key| map.get(*key).cloned())));
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        if self.sealed.is_some() {
            return Err(KvError::ReadOnly);
        }
        let mut map = self
            .writable
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize, KvError> {
        Ok(self.with_map(|map| {
            let range = map.range::<[u8], _>((Bound::Included(start), Bound::Unbounded));
            let mut visited = 0;
            for (key, value) in range.take(limit) {
                visit(key, value);
                visited += 1;
            }
            visited
        }))
    }

    fn flush(&self) -> Result<(), KvError> {
        Ok(())
    }

    fn pool_counters(&self) -> Option<PoolCounters> {
        None
    }

    fn seal_read_only(&mut self) {
        if self.sealed.is_none() {
            let map = std::mem::take(
                self.writable
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            self.sealed = Some(map);
        }
    }
}
