//! Keys and values of the crash tests' workloads: a fixed key space per tree (so puts
//! replace and deletes hit), some long keys (fewer records per leaf: more splits and
//! merges), values from a few bytes to several overflow pages, each value unique.

use rand::RngExt;
use rand::rngs::SmallRng;

/// Key indexes per tree.
pub const KEY_SPACE: u32 = 3000;

/// The key with index `index`: ascending with the index, one in 20 some hundreds of bytes.
pub fn key(index: u32) -> Vec<u8> {
    let filler = if index % 20 == 0 {
        300 + (index as usize * 7) % 300
    } else {
        index as usize % 40
    };
    let mut key = format!("k{index:06}").into_bytes();
    key.resize(key.len() + filler, b'.');
    key
}

/// A value of `len` bytes (at least 8) that no other `id` produces: the id, then a pattern.
pub fn value(id: u64, len: usize) -> Vec<u8> {
    let len = len.max(8);
    let mut value = id.to_le_bytes().to_vec();
    value.extend((8..len).map(|i| (id as u8).wrapping_add(i as u8)));
    value
}

/// A random value length: mostly small, some half a page, some on overflow pages (chains
/// of up to five pages).
pub fn value_len(rng: &mut SmallRng) -> usize {
    match rng.random_range(0..100) {
        0..80 => rng.random_range(8..200),
        80..92 => rng.random_range(200..1500),
        _ => rng.random_range(1500..20_000),
    }
}
