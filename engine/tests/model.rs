//! Model-based test: random operations on a tree and on a `BTreeMap`, compared after each
//! step, with a frame budget small enough that pages are evicted and faulted back; the
//! file is closed and reopened along the way and must hold exactly the model's data.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use bufpool_engine::{Direction, Engine, EngineError, Tree};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn random_key(rng: &mut SmallRng) -> Vec<u8> {
    match rng.random_range(0..100) {
        // Mostly a small key space, so puts replace and deletes hit.
        0..65 => format!("k{:05}", rng.random_range(0..3000u32)).into_bytes(),
        // Text keys sharing 20-odd bytes: node prefixes past the header's 8.
        65..85 => format!(
            "user:profile:region-{}:{:06}",
            rng.random_range(0..3u8),
            rng.random_range(0..3000u32)
        )
        .into_bytes(),
        85..95 => (0..rng.random_range(0..12))
            .map(|_| rng.random_range(0..4u8))
            .collect(),
        _ => {
            let mut key = vec![b'L'; rng.random_range(100..bufpool_engine::KEY_SIZE_MAX)];
            key.push(rng.random_range(0..8u8));
            key
        }
    }
}

fn random_value(rng: &mut SmallRng) -> Vec<u8> {
    let len = match rng.random_range(0..100) {
        0..80 => rng.random_range(0..150),
        80..96 => rng.random_range(150..1400),
        // Overflow pages, up to several of them.
        _ => rng.random_range(1400..20_000),
    };
    let seed: u8 = rng.random();
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn random_bound(rng: &mut SmallRng) -> Bound<Vec<u8>> {
    match rng.random_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(random_key(rng)),
        _ => Bound::Excluded(random_key(rng)),
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    bound.as_ref().map(|key| key.as_slice())
}

fn check_range(tree: &Tree, model: &Model, rng: &mut SmallRng) {
    let (start, end) = (random_bound(rng), random_bound(rng));
    let inverted = match (&start, &end) {
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => s > e,
        _ => false,
    };
    let equal_excluded =
        matches!((&start, &end), (Bound::Excluded(s), Bound::Excluded(e)) if s == e);
    let direction = if rng.random() {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    let limit = rng.random_range(1..400);
    let got: Vec<_> = tree
        .range::<[u8], _>((as_slice(&start), as_slice(&end)), direction)
        .take(limit)
        .collect::<Result<_, _>>()
        .unwrap();
    if inverted || equal_excluded {
        // BTreeMap panics on such ranges; the tree yields nothing.
        assert!(got.is_empty());
        return;
    }
    let range = model.range::<Vec<u8>, _>((start, end));
    let expected: Vec<_> = match direction {
        Direction::Forward => range
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Direction::Reverse => range
            .rev()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    assert_eq!(got.len(), expected.len(), "range length");
    assert!(got == expected, "range contents differ");
}

fn check_all(tree: &Tree, model: &Model) {
    let summary = tree.verify().unwrap();
    assert_eq!(summary.records, model.len() as u64, "{summary:?}");
    let got: Vec<_> = tree.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), model.len());
    assert!(
        got.iter()
            .zip(model)
            .all(|(a, (k, v))| &a.0 == k && &a.1 == v),
        "contents differ"
    );
    assert_eq!(tree.len().unwrap(), model.len() as u64);
}

fn run(seed: u64, operations: usize, frames: u64) {
    let path = common::test_path(&format!("model-{seed}"));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut engine = Engine::create(&path, common::options_with_frames(frames)).unwrap();
    let mut tree = engine.tree("model").unwrap();
    let mut buffer = Vec::new();
    for step in 0..operations {
        match rng.random_range(0..100) {
            0..45 => {
                let (key, value) = (random_key(&mut rng), random_value(&mut rng));
                tree.put(&key, &value).unwrap();
                model.insert(key, value);
            }
            45..65 => {
                let key = random_key(&mut rng);
                assert_eq!(tree.delete(&key).unwrap(), model.remove(&key).is_some());
            }
            65..90 => {
                let key = random_key(&mut rng);
                let found = tree.get_into(&key, &mut buffer).unwrap();
                assert_eq!(
                    found.then_some(&buffer),
                    model.get(&key),
                    "get at step {step}"
                );
            }
            90..97 => check_range(&tree, &model, &mut rng),
            97..99 => {
                let keys: Vec<Vec<u8>> = (0..rng.random_range(1..20))
                    .map(|_| random_key(&mut rng))
                    .collect();
                let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
                let got = tree.multi_get(&refs).unwrap();
                for (key, value) in keys.iter().zip(got) {
                    assert_eq!(value.as_ref(), model.get(key));
                }
            }
            _ => {
                // Close and reopen: exactly the same data.
                // The file stays open (and locked) while a tree handle lives.
                drop(tree);
                engine.close().unwrap();
                engine = Engine::open(&path, common::options_with_frames(frames)).unwrap();
                tree = engine.tree("model").unwrap();
                check_all(&tree, &model);
            }
        }
    }
    check_all(&tree, &model);
    let stats = engine.pool_stats();
    assert!(
        stats.evictions > 0 && stats.misses > 0,
        "the budget must force eviction: {stats:?}"
    );
    drop(tree);
    engine.close().unwrap();
    let engine = Engine::open(&path, common::options_with_frames(frames)).unwrap();
    check_all(&engine.tree("model").unwrap(), &model);
    // Deleting everything merges the tree back down; freed pages are reused afterwards.
    let tree = engine.tree("model").unwrap();
    for key in model.keys() {
        assert!(tree.delete(key).unwrap());
    }
    assert_eq!(tree.iter().count(), 0);
    // Merges shrank the emptied tree back to a few nodes.
    let emptied = tree.verify().unwrap();
    assert!(
        emptied.leaves + emptied.inner_nodes <= 4,
        "seed {seed}: {emptied:?}"
    );
    let (pages_before, _) = engine.page_counts();
    for (key, value) in &model {
        tree.put(key, value).unwrap();
    }
    check_all(&tree, &model);
    let (pages_after, _) = engine.page_counts();
    assert!(
        pages_after <= pages_before + pages_before / 4,
        "freed pages not reused: {pages_before} -> {pages_after}"
    );
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn random_operations_match_a_btreemap() {
    for seed in 0..4 {
        run(seed, 2000, 64);
    }
}

#[test]
#[ignore = "long: many seeds, more operations"]
fn random_operations_match_a_btreemap_long() {
    for seed in 100..130 {
        run(seed, 10_000, 64);
    }
}

#[test]
fn oversized_keys_and_values_are_refused() {
    let path = common::test_path("limits");
    let engine = Engine::create(&path, common::options_with_frames(256)).unwrap();
    let tree = engine.tree("t").unwrap();
    let big_key = vec![1u8; bufpool_engine::KEY_SIZE_MAX + 1];
    let big_value = vec![2u8; bufpool_engine::VALUE_SIZE_MAX + 1];
    assert!(
        matches!(tree.put(&big_key, b"v"), Err(EngineError::KeyTooLarge { len, .. }) if len == big_key.len())
    );
    assert!(matches!(
        tree.put(b"k", &big_value),
        Err(EngineError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        tree.get(&big_key),
        Err(EngineError::KeyTooLarge { .. })
    ));
    // The largest key with a 16 KiB value, and the largest value, work.
    let max_key = vec![3u8; bufpool_engine::KEY_SIZE_MAX];
    let value_16k = vec![4u8; 16 * 1024];
    tree.put(&max_key, &value_16k).unwrap();
    let max_value: Vec<u8> = (0..bufpool_engine::VALUE_SIZE_MAX)
        .map(|i| (i % 251) as u8)
        .collect();
    tree.put(b"max", &max_value).unwrap();
    assert_eq!(tree.get(&max_key).unwrap(), Some(value_16k));
    assert_eq!(tree.get(b"max").unwrap(), Some(max_value));
    assert_eq!(tree.len().unwrap(), 2);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// `prefetch_keys` reads the evicted leaves of a batch of keys in one go: the lookups that
/// follow are hits, and keys of resident leaves cost no read.
#[test]
fn prefetch_keys_faults_in_exactly_the_missing_leaves() {
    let path = common::test_path("prefetch-keys");
    let engine = Engine::create(&path, common::options_with_frames(64)).unwrap();
    let tree = engine.tree("prefetch").unwrap();
    let n = 20_000u32;
    for i in 0..n {
        tree.put_nowait(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    // Far more leaves than frames: most of the keys below are on evicted leaves.
    let keys: Vec<[u8; 4]> = (0..n).step_by(997).map(u32::to_be_bytes).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let before = engine.pool_stats();
    let read = tree.prefetch_keys(&refs).unwrap();
    let after_prefetch = engine.pool_stats();
    assert!(read > 0, "nothing was evicted");
    assert!(
        after_prefetch.misses - before.misses >= read as u64,
        "the leaves were read by the prefetch"
    );
    for (key, i) in keys.iter().zip((0..n).step_by(997)) {
        assert_eq!(tree.get(key).unwrap(), Some(vec![i as u8; 100]));
    }
    assert_eq!(
        engine.pool_stats().misses,
        after_prefetch.misses,
        "every prefetched leaf was still resident"
    );
    // All resident now: a second prefetch reads nothing.
    assert_eq!(tree.prefetch_keys(&refs).unwrap(), 0);
    // Bad keys are refused like everywhere else.
    let too_long = vec![0u8; bufpool_engine::KEY_SIZE_MAX + 1];
    assert!(matches!(
        tree.prefetch_keys(&[&too_long]),
        Err(EngineError::KeyTooLarge { .. })
    ));
    drop(tree);
    engine.close().unwrap();
    Engine::remove(&path).unwrap();
}

/// `try_get_into` never waits: a key on an evicted leaf names that leaf, which the caller
/// reads on its own stream (`start_leaf`, the stream's eventfd firing as it completes) and
/// then finds the key without waiting. An evicted inner node on the way makes it `Busy`.
#[test]
fn try_get_names_evicted_leaves_and_finds_keys_once_they_are_read() {
    use bufpool_engine::NoWait;
    let path = common::test_path("try-get");
    let engine = Engine::create(&path, common::options_with_frames(64)).unwrap();
    let tree = engine.tree("try-get").unwrap();
    let n = 20_000u32;
    for i in 0..n {
        tree.put_nowait(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    let mut reads = tree.leaf_reads(8).unwrap();
    let eventfd = std::fs::File::from(reads.completion_eventfd().unwrap());
    let (mut evicted, mut ready, mut busy) = (0, 0, 0);
    let mut value = Vec::new();
    let mut tokens = Vec::new();
    for i in (0..n).step_by(97) {
        let key = i.to_be_bytes();
        match tree.try_get_into(&key, &mut value).unwrap() {
            NoWait::Ready(found) => {
                assert!(found && value == [i as u8; 100], "{i}");
                ready += 1;
            }
            NoWait::LeafEvicted(leaf) => {
                evicted += 1;
                assert!(reads.start_leaf(leaf).unwrap(), "an evicted leaf starts");
                assert!(
                    reads.start_leaf(leaf).unwrap(),
                    "a second start shares the read"
                );
                assert_eq!(reads.in_flight(), 1);
                reads.submit().unwrap();
                // The eventfd fires as the ring has work to run (the read's completion, or
                // a retry of its issue): each time, enter the ring and collect what is in.
                let mut counter = [0u8; 8];
                let waited = std::time::Instant::now();
                while tokens.is_empty() {
                    match std::io::Read::read(&mut &eventfd, &mut counter) {
                        Ok(8) => {
                            reads.submit().unwrap();
                            reads.complete(0, &mut tokens);
                        }
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                            assert!(waited.elapsed().as_secs() < 10, "the eventfd never fired");
                            std::thread::yield_now();
                        }
                        other => panic!("reading the eventfd: {other:?}"),
                    }
                }
                assert_eq!(std::mem::take(&mut tokens), vec![leaf]);
                assert_eq!(
                    tree.try_get_into(&key, &mut value).unwrap(),
                    NoWait::Ready(true),
                    "{i} once its leaf is in"
                );
                assert_eq!(value, [i as u8; 100]);
            }
            // An inner node on the way is evicted (64 frames): a lookup that may wait.
            NoWait::Busy => {
                busy += 1;
                assert_eq!(tree.get(&key).unwrap(), Some(vec![i as u8; 100]));
            }
        }
    }
    assert!(
        evicted > 0,
        "{evicted} evicted, {ready} resident, {busy} busy"
    );
    drop(reads);
    drop(tree);
    engine.close().unwrap();
    Engine::remove(&path).unwrap();
}

/// `leaf_reads` starts the evicted leaves of keys and hands each back as it is in: keys on one
/// leaf share its token, and a resident leaf needs no read. Meanwhile another thread writing
/// to the tree (splits, evictions) waits for the reads it needs, and nothing is lost.
#[test]
fn leaf_reads_hand_back_each_leaf_once_it_is_in() {
    let path = common::test_path("leaf-reads");
    let engine = Engine::create(&path, common::options_with_frames(64)).unwrap();
    let tree = engine.tree("leaf-reads").unwrap();
    let n = 20_000u32;
    for i in 0..n {
        tree.put_nowait(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    let keys: Vec<u32> = (0..n).step_by(331).collect();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in (1..n).step_by(1_013) {
                tree.put_nowait(&i.to_be_bytes(), &[!(i as u8); 100])
                    .unwrap();
            }
        });
        let mut reads = tree.leaf_reads(8).unwrap();
        let mut tokens = Vec::new();
        let mut started = 0;
        for chunk in keys.chunks(6) {
            let mut waiting = std::collections::HashMap::<u64, Vec<u32>>::new();
            let mut at_once = Vec::new();
            for &i in chunk {
                match reads.start(&i.to_be_bytes()).unwrap() {
                    Some(token) => waiting.entry(token).or_default().push(i),
                    None => at_once.push(i),
                }
            }
            started += waiting.len();
            reads.submit().unwrap();
            // Keys needing no read are looked up while the others are in flight.
            for i in at_once {
                assert_eq!(tree.get(&i.to_be_bytes()).unwrap().unwrap().len(), 100);
            }
            while !waiting.is_empty() {
                reads.complete(1, &mut tokens);
                for token in tokens.drain(..) {
                    for i in waiting.remove(&token).expect("a token this chunk started") {
                        let value = tree.get(&i.to_be_bytes()).unwrap().unwrap();
                        assert!(value == [i as u8; 100] || value == [!(i as u8); 100]);
                    }
                }
            }
            assert_eq!(reads.in_flight(), 0);
        }
        assert!(started > 0, "nothing was evicted");
        writer.join().unwrap();
    });
    let too_long = vec![0u8; bufpool_engine::KEY_SIZE_MAX + 1];
    let mut reads = tree.leaf_reads(4).unwrap();
    assert!(matches!(
        reads.start(&too_long),
        Err(EngineError::KeyTooLarge { .. })
    ));
    drop(reads);
    for i in 0..n {
        let expected = if i % 1_013 == 1 { !(i as u8) } else { i as u8 };
        assert_eq!(
            tree.get(&i.to_be_bytes()).unwrap(),
            Some(vec![expected; 100]),
            "{i}"
        );
    }
    drop(tree);
    engine.close().unwrap();
    Engine::remove(&path).unwrap();
}

/// A pool of 4,096 frames or more gets the evictor thread: while a data set four times the
/// pool is written and read back, it evicts ahead of the faults (the pool counts its
/// evictions apart), every record reads back right, the engine closes, and a small pool gets
/// no reserve at all.
#[test]
fn the_evictor_keeps_a_reserve_and_loses_nothing() {
    let path = common::test_path("evictor");
    let frames = 4096;
    let engine = Engine::create(&path, common::options_with_frames(frames)).unwrap();
    let tree = engine.tree("evictor").unwrap();
    let value = |i: u32| vec![(i % 251) as u8; 1000];
    let n = 64_000u32;
    for i in 0..n {
        tree.put_nowait(&i.to_be_bytes(), &value(i)).unwrap();
    }
    for round in 0..2u32 {
        for i in (round..n).step_by(7) {
            let key = (i.wrapping_mul(2_654_435_761) % n).to_be_bytes();
            let i = u32::from_be_bytes(key);
            assert_eq!(tree.get(&key).unwrap(), Some(value(i)), "{i}");
        }
    }
    let stats = engine.pool_stats();
    assert!(
        stats.background_evictions > 0,
        "the evictor evicted nothing: {stats:?}"
    );
    assert!(stats.background_evictions <= stats.evictions, "{stats:?}");
    assert!(stats.resident_bytes <= frames * 4096, "{stats:?}");
    drop(tree);
    engine.close().unwrap();
    let engine = Engine::open(&path, common::options_with_frames(frames)).unwrap();
    let tree = engine.tree("evictor").unwrap();
    for i in (0..n).step_by(97) {
        assert_eq!(tree.get(&i.to_be_bytes()).unwrap(), Some(value(i)), "{i}");
    }
    drop(tree);
    engine.close().unwrap();
    Engine::remove(&path).unwrap();
    let small = common::test_path("evictor-small");
    let engine = Engine::create(&small, common::options_with_frames(64)).unwrap();
    let tree = engine.tree("evictor").unwrap();
    for i in 0..2_000u32 {
        tree.put_nowait(&i.to_be_bytes(), &value(i)).unwrap();
    }
    let stats = engine.pool_stats();
    assert!(stats.evictions > 0, "{stats:?}");
    assert_eq!(stats.background_evictions, 0, "{stats:?}");
    drop(tree);
    engine.close().unwrap();
    Engine::remove(&small).unwrap();
}
