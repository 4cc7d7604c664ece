//! The bench data set: the same keys and values for every engine, from a deterministic seed.
//!
//! Record `i` (0 ≤ i < records) has the key `i` as 8 big-endian bytes, followed (when
//! `key_size > 8`) by filler derived from `i`. Loading inserts `i = 0, 1, 2, …`, so keys arrive
//! in ascending order (the append path of every B-tree, and LMDB's `MDB_APPEND`); lookups draw
//! `i` uniformly at random, so they touch the key space uniformly (the vmcache lookup shape).
//!
//! The value of record `i` at version `v` starts with `i` and `v` (8 bytes each, big-endian),
//! followed by filler from `i`, `v` and the seed; a lookup checks the first 8 bytes, so an
//! engine that hands back the wrong record is caught, at the cost of one compare.

use crate::error::KvError;

/// The smallest key: the 8-byte record index.
pub const KEY_SIZE_MIN: usize = 8;
/// The smallest value: record index and version.
pub const VALUE_SIZE_MIN: usize = 16;

/// Shape and seed of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dataset {
    pub records: u64,
    pub key_size: usize,
    pub value_size: usize,
    pub seed: u64,
}

impl Dataset {
    pub fn new(
        records: u64,
        key_size: usize,
        value_size: usize,
        seed: u64,
    ) -> Result<Dataset, KvError> {
        if records == 0 {
            return Err(KvError::InvalidArgument(
                "--records must be at least 1".into(),
            ));
        }
        if key_size < KEY_SIZE_MIN {
            return Err(KvError::InvalidArgument(format!(
                "--key-size must be at least {KEY_SIZE_MIN} (the record index)"
            )));
        }
        if value_size < VALUE_SIZE_MIN {
            return Err(KvError::InvalidArgument(format!(
                "--value-size must be at least {VALUE_SIZE_MIN} (record index and version)"
            )));
        }
        Ok(Dataset {
            records,
            key_size,
            value_size,
            seed,
        })
    }

    /// Writes the key of record `index` into `key` (resized to `key_size`). Indexes from
    /// `records` on are the records the YCSB workloads insert.
    pub fn key_into(&self, index: u64, key: &mut Vec<u8>) {
        key.clear();
        key.extend_from_slice(&index.to_be_bytes());
        fill(key, self.key_size, mix(index ^ self.seed));
    }

    /// Writes the value of record `index` at `version` into `value` (resized to `value_size`).
    pub fn value_into(&self, index: u64, version: u64, value: &mut Vec<u8>) {
        value.clear();
        value.extend_from_slice(&index.to_be_bytes());
        value.extend_from_slice(&version.to_be_bytes());
        fill(
            value,
            self.value_size,
            mix(index ^ mix(version ^ self.seed)),
        );
    }

    /// Checks that `value` is a value of record `index` (any version).
    pub fn check_value(&self, index: u64, value: &[u8]) -> Result<(), KvError> {
        if value.len() != self.value_size {
            return Err(KvError::WrongValue {
                index,
                detail: "length",
            });
        }
        if value[..8] != index.to_be_bytes() {
            return Err(KvError::WrongValue {
                index,
                detail: "record index",
            });
        }
        Ok(())
    }

    /// The description stored next to the data, so `--reuse` can tell whether it matches.
    pub fn describe(&self) -> String {
        format!(
            "records={} key_size={} value_size={} seed={}",
            self.records, self.key_size, self.value_size, self.seed
        )
    }

    /// Bytes of keys and values, without any engine overhead.
    pub fn payload_bytes(&self) -> u64 {
        self.records * (self.key_size + self.value_size) as u64
    }
}

/// The key under which each engine stores `Dataset::describe` (in a separate table).
pub const DESCRIPTION_KEY: &[u8] = b"dataset";

/// splitmix64's finalizer: a cheap, well-spread hash of a 64-bit word.
fn mix(mut word: u64) -> u64 {
    word = word.wrapping_add(0x9e37_79b9_7f4a_7c15);
    word = (word ^ (word >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    word = (word ^ (word >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    word ^ (word >> 31)
}

/// Appends filler bytes from `state` until `bytes` is `size` long.
fn fill(bytes: &mut Vec<u8>, size: usize, mut state: u64) {
    while bytes.len() < size {
        state = mix(state);
        let take = (size - bytes.len()).min(8);
        bytes.extend_from_slice(&state.to_le_bytes()[..take]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ascend_with_the_index_and_have_the_requested_size() {
        let dataset = Dataset::new(1000, 24, 120, 7).unwrap();
        let (mut previous, mut key) = (Vec::new(), Vec::new());
        for index in 0..1000 {
            dataset.key_into(index, &mut key);
            assert_eq!(key.len(), 24);
            assert!(key > previous, "key {index} does not ascend");
            previous.clone_from(&key);
        }
    }

    #[test]
    fn values_are_deterministic_and_checkable() {
        let dataset = Dataset::new(10, 8, 120, 7).unwrap();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        dataset.value_into(3, 0, &mut first);
        dataset.value_into(3, 0, &mut second);
        assert_eq!(first, second);
        assert_eq!(first.len(), 120);
        dataset.check_value(3, &first).unwrap();
        assert!(dataset.check_value(4, &first).is_err());
        dataset.value_into(3, 1, &mut second);
        assert_ne!(first, second, "a new version must change the value");
    }

    #[test]
    fn rejects_shapes_it_cannot_generate() {
        assert!(Dataset::new(0, 8, 120, 0).is_err());
        assert!(Dataset::new(1, 7, 120, 0).is_err());
        assert!(Dataset::new(1, 8, 15, 0).is_err());
    }
}
