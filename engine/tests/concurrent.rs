//! Concurrent readers, scanners and writers on one tree, with eviction going on: every
//! value read belongs to its key, scans are strictly ordered, and at the end the tree
//! holds exactly what each writer's own model says.

mod common;

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, Ordering};

use bufpool_engine::{Direction, Engine, Tree};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const KEYS_PER_WRITER: u32 = 1500;

fn key(writer: u8, index: u32) -> Vec<u8> {
    let mut key = vec![writer];
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// A value that says which key and which version it is, of a length set by the version
/// (some long enough for overflow pages).
fn value(key: &[u8], version: u32) -> Vec<u8> {
    let len = match version % 10 {
        0 => 3000 + (version as usize % 5000),
        _ => version as usize % 300,
    };
    let mut value = key.to_vec();
    value.extend_from_slice(&version.to_le_bytes());
    value.extend((0..len).map(|i| (i as u32).wrapping_add(version) as u8));
    value
}

fn check_value(key: &[u8], stored: &[u8]) {
    assert!(
        stored.len() >= key.len() + 4 && &stored[..key.len()] == key,
        "value of another key"
    );
    let version = u32::from_le_bytes(stored[key.len()..key.len() + 4].try_into().unwrap());
    assert!(
        stored == value(key, version).as_slice(),
        "torn value for version {version}"
    );
}

fn writer(tree: &Tree, writer: u8, operations: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(writer as u64);
    let mut model = BTreeMap::new();
    for version in 0..operations {
        let key = key(writer, rng.random_range(0..KEYS_PER_WRITER));
        if rng.random_range(0..4) == 0 {
            assert_eq!(tree.delete(&key).unwrap(), model.remove(&key).is_some());
        } else {
            let value = value(&key, version);
            tree.put(&key, &value).unwrap();
            model.insert(key, value);
        }
    }
    model
}

fn reader(tree: &Tree, seed: u64, done: &AtomicBool) -> u64 {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buffer = Vec::new();
    let mut reads = 0;
    while !done.load(Ordering::Relaxed) && reads < 1_000_000 {
        let key = key(rng.random_range(0..2), rng.random_range(0..KEYS_PER_WRITER));
        if tree.get_into(&key, &mut buffer).unwrap() {
            check_value(&key, &buffer);
        }
        reads += 1;
    }
    reads
}

fn scanner(tree: &Tree, seed: u64, done: &AtomicBool) -> u64 {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut scans = 0;
    while !done.load(Ordering::Relaxed) && scans < 100_000 {
        let start = key(rng.random_range(0..2), rng.random_range(0..KEYS_PER_WRITER));
        let direction = if rng.random() {
            Direction::Forward
        } else {
            Direction::Reverse
        };
        let mut previous: Option<Vec<u8>> = None;
        let mut check = |key: &[u8], value: &[u8]| {
            check_value(key, value);
            if let Some(previous) = &previous {
                let ordered = match direction {
                    Direction::Forward => previous.as_slice() < key,
                    Direction::Reverse => previous.as_slice() > key,
                };
                assert!(ordered, "scan out of order");
            }
            previous = Some(key.to_vec());
        };
        let bounds = match direction {
            Direction::Forward => (Bound::Included(start.as_slice()), Bound::Unbounded),
            Direction::Reverse => (Bound::Unbounded, Bound::Excluded(start.as_slice())),
        };
        // Every other scan lends records from the latched leaves (eviction going on).
        if scans % 2 == 0 {
            for record in tree.range::<[u8], _>(bounds, direction).take(200) {
                let (key, value) = record.unwrap();
                check(&key, &value);
            }
        } else {
            let mut left = 200;
            tree.scan_latched::<[u8], _, _>(bounds, direction, |key, value| {
                check(key, value);
                left -= 1;
                if left > 0 {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })
            .unwrap();
        }
        scans += 1;
    }
    scans
}

#[test]
fn readers_and_writers_see_consistent_data() {
    readers_and_writers(4000, "concurrent");
}

#[test]
#[ignore = "long: ten times the operations"]
fn readers_and_writers_see_consistent_data_long() {
    readers_and_writers(40_000, "concurrent-long");
}

fn readers_and_writers(operations: u32, name: &str) {
    let path = common::test_path(name);
    let engine = Engine::create(&path, common::options_with_frames(128)).unwrap();
    let tree = engine.tree("shared").unwrap();
    let done = AtomicBool::new(false);
    let (models, reads, scans) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2u8)
            .map(|w| {
                scope.spawn({
                    let tree = tree.clone();
                    move || writer(&tree, w, operations)
                })
            })
            .collect();
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                scope.spawn({
                    let (tree, done) = (tree.clone(), &done);
                    move || reader(&tree, 100 + r, done)
                })
            })
            .collect();
        let scanner = scope.spawn(|| scanner(&tree, 7, &done));
        let models: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        (models, reads, scanner.join().unwrap())
    });
    assert!(reads > 0 && scans > 0);
    let expected: BTreeMap<_, _> = models.into_iter().flatten().collect();
    let got: BTreeMap<_, _> = tree.iter().map(Result::unwrap).collect();
    assert!(
        got == expected,
        "final contents differ ({} vs {} records)",
        got.len(),
        expected.len()
    );
    assert_eq!(tree.len().unwrap(), expected.len() as u64);
    assert_eq!(tree.verify().unwrap().records, expected.len() as u64);
    assert!(engine.pool_stats().evictions > 0);
    drop(tree);
    engine.close().unwrap();
    let engine = Engine::open(&path, common::options_with_frames(128)).unwrap();
    let reopened: BTreeMap<_, _> = engine
        .tree("shared")
        .unwrap()
        .iter()
        .map(Result::unwrap)
        .collect();
    assert!(reopened == expected);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn merges_under_concurrent_readers_and_scans() {
    let path = common::test_path("concurrent-merges");
    let engine = Engine::create(&path, common::options_with_frames(128)).unwrap();
    let tree = engine.tree("shrinking").unwrap();
    for writer in 0..2u8 {
        for index in 0..KEYS_PER_WRITER {
            let key = key(writer, index);
            tree.put(&key, &value(&key, index)).unwrap();
        }
    }
    let grown = tree.verify().unwrap();
    assert!(grown.height >= 1, "{grown:?}");
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let deleters: Vec<_> = (0..2u8)
            .map(|writer| {
                let tree = tree.clone();
                scope.spawn(move || {
                    // Interleaved order: leaves empty out everywhere at once.
                    for index in (0..KEYS_PER_WRITER).map(|i| (i * 7) % KEYS_PER_WRITER) {
                        assert!(tree.delete(&key(writer, index)).unwrap());
                    }
                })
            })
            .collect();
        let reader = scope.spawn(|| reader(&tree, 5, &done));
        let scanner = scope.spawn(|| scanner(&tree, 6, &done));
        deleters
            .into_iter()
            .for_each(|deleter| deleter.join().unwrap());
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        scanner.join().unwrap();
    });
    assert_eq!(tree.iter().count(), 0);
    assert_eq!(tree.len().unwrap(), 0);
    let emptied = tree.verify().unwrap();
    assert!(
        emptied.leaves + emptied.inner_nodes <= 4,
        "merges left {emptied:?} (grown: {grown:?})"
    );
    let (pages, free) = engine.page_counts();
    assert!(
        free * 2 >= pages,
        "merged pages not freed: {free} free of {pages}"
    );
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}
