//! The ceiling: a `std::collections::BTreeMap` in memory, no persistence, and for read-only
//! workloads no lock either (sealed into a plain map shared by reference across threads).
//!
//! The map is keyed by the key's first 8 bytes as a big-endian `u64` (the record index, unique
//! in the bench data set, and ordered like the bytes), so a search compares integers in the
//! node instead of chasing a pointer per compared key, as an integer-keyed map would. Each
//! entry is one allocation holding the full key and the value; a hit checks the full key.
//! Keys shorter than 8 bytes, or two keys with the same first 8 bytes, are refused: this is a
//! bench ceiling for the data set's keys, not a general store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use indicatif::ProgressBar;

use super::{EngineKind, PoolCounters, Store, tick};
use crate::dataset::Dataset;
use crate::error::KvError;

/// Record layout: key length (u16, little endian), key, value.
const KEY_LEN_BYTES: usize = 2;
const PREFIX_BYTES: usize = 8;

type Map = BTreeMap<u64, Box<[u8]>>;

/// A BTreeMap behind a RwLock while writable; a bare map once sealed read-only.
pub struct BTreeMapStore {
    writable: RwLock<Map>,
    sealed: Option<Map>,
    description: RwLock<Option<String>>,
}

fn prefix(key: &[u8]) -> Result<u64, KvError> {
    let Some(head) = key.first_chunk::<PREFIX_BYTES>() else {
        return Err(KvError::InvalidArgument(format!(
            "the btreemap ceiling needs keys of at least {PREFIX_BYTES} bytes"
        )));
    };
    Ok(u64::from_be_bytes(*head))
}

fn record(key: &[u8], value: &[u8]) -> Box<[u8]> {
    let key_len = u16::try_from(key.len()).expect("bench keys are far below 64 KiB");
    let mut bytes = Vec::with_capacity(KEY_LEN_BYTES + key.len() + value.len());
    bytes.extend_from_slice(&key_len.to_le_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(value);
    bytes.into_boxed_slice()
}

/// Splits a record into key and value.
fn split(record: &[u8]) -> (&[u8], &[u8]) {
    let key_len = u16::from_le_bytes([record[0], record[1]]) as usize;
    record[KEY_LEN_BYTES..].split_at(key_len)
}

/// The value of `key` in `map`, if the entry under its prefix is this very key.
fn lookup<'map>(map: &'map Map, key: &[u8]) -> Result<Option<&'map [u8]>, KvError> {
    let Some(found) = map.get(&prefix(key)?) else {
        return Ok(None);
    };
    let (stored_key, value) = split(found);
    Ok((stored_key == key).then_some(value))
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
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for index in 0..dataset.records {
            dataset.key_into(index, &mut key);
            dataset.value_into(index, 0, &mut value);
            self.put(&key, &value)?;
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
        self.with_map(|map| {
            let found = lookup(map, key)?;
            value.extend_from_slice(found.unwrap_or_default());
            Ok(found.is_some())
        })
    }

    fn multi_get(&self, keys: &[&[u8]], values: &mut Vec<Option<Vec<u8>>>) -> Result<(), KvError> {
        values.clear();
        self.with_map(|map| {
            for key in keys {
                values.push(lookup(map, key)?.map(<[u8]>::to_vec));
            }
            Ok(())
        })
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        if self.sealed.is_some() {
            return Err(KvError::ReadOnly);
        }
        let slot = prefix(key)?;
        let mut map = self
            .writable
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = map.get(&slot) {
            if split(existing).0 != key {
                return Err(KvError::InvalidArgument(
                    "the btreemap ceiling needs keys with distinct first 8 bytes".into(),
                ));
            }
        }
        map.insert(slot, record(key, value));
        Ok(())
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize, KvError> {
        let from = prefix(start)?;
        self.with_map(|map| {
            let mut visited = 0;
            let range = map.range((Bound::Included(from), Bound::Unbounded));
            // The entry under `start`'s own prefix sorts before `start` if its tail is smaller.
            let records = range.map(|(_, record)| split(record));
            for (key, value) in records.filter(|(key, _)| *key >= start).take(limit) {
                visit(key, value);
                visited += 1;
            }
            Ok(visited)
        })
    }

    fn flush(&self) -> Result<(), KvError> {
        Ok(())
    }

    fn pool_counters(&self) -> Option<PoolCounters> {
        None
    }

    fn seal_read_only(&mut self) {
        if self.sealed.is_none() {
            let writable = self.writable.get_mut();
            let map = std::mem::take(writable.unwrap_or_else(PoisonError::into_inner));
            self.sealed = Some(map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_full_keys_and_refuses_prefix_collisions() {
        let store = BTreeMapStore::new();
        store.put(b"00000001-a", b"one").unwrap();
        store.put(b"00000002-b", b"two").unwrap();
        let mut value = Vec::new();
        assert!(store.get_into(b"00000001-a", &mut value).unwrap());
        assert_eq!(value, b"one");
        assert!(!store.get_into(b"00000001-z", &mut value).unwrap());
        assert!(store.put(b"00000001-z", b"clash").is_err());
        assert!(store.put(b"short", b"x").is_err());
        let mut seen = Vec::new();
        store
            .scan(b"00000001-b", 10, &mut |key, _| seen.push(key.to_vec()))
            .unwrap();
        assert_eq!(seen, [b"00000002-b".to_vec()]);
    }
}
