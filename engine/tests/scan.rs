//! The allocation-free scan paths (`Tree::scan`, `Tree::scan_latched`, `Tree::cursor`)
//! against a `BTreeMap`:
//! bounds of every kind, both directions, early stops, overflow values, the empty tree; and
//! under writers that split and merge leaves while scans run, every key that stays in the
//! tree is seen exactly once, in order.

mod common;

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, Ordering};

use bufpool_engine::{Direction, Engine, Tree};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    bound.as_ref().map(|key| key.as_slice())
}

/// What the model says a scan of `(start, end)` in `direction` returns, at most `limit`.
fn expected(
    model: &Model,
    start: &Bound<Vec<u8>>,
    end: &Bound<Vec<u8>>,
    direction: Direction,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let empty = match (start, end) {
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s > e || (s == e && !matches!((start, end), (Bound::Included(_), Bound::Included(_))))
        }
        _ => false,
    };
    if empty {
        return Vec::new();
    }
    let range = model.range::<Vec<u8>, _>((start.clone(), end.clone()));
    let pairs = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
    match direction {
        Direction::Forward => range.take(limit).map(pairs).collect(),
        Direction::Reverse => range.rev().take(limit).map(pairs).collect(),
    }
}

/// The same scan four ways: visitor on copies, latched visitor, cursor, iterator.
fn scanned(
    tree: &Tree,
    start: &Bound<Vec<u8>>,
    end: &Bound<Vec<u8>>,
    direction: Direction,
    limit: usize,
) -> [Vec<(Vec<u8>, Vec<u8>)>; 4] {
    let bounds = (as_slice(start), as_slice(end));
    let mut visited = Vec::new();
    let mut latched = Vec::new();
    if limit > 0 {
        let collect = |into: &mut Vec<(Vec<u8>, Vec<u8>)>, key: &[u8], value: &[u8]| {
            into.push((key.to_vec(), value.to_vec()));
            if into.len() < limit {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        };
        tree.scan::<[u8], _, _>(bounds, direction, |key, value| {
            collect(&mut visited, key, value)
        })
        .unwrap();
        tree.scan_latched::<[u8], _, _>(bounds, direction, |key, value| {
            collect(&mut latched, key, value)
        })
        .unwrap();
    }
    let mut cursor = tree.cursor::<[u8], _>(bounds, direction);
    let mut lent = Vec::new();
    while lent.len() < limit {
        let Some((key, value)) = cursor.next_record().unwrap() else {
            break;
        };
        lent.push((key.to_vec(), value.to_vec()));
    }
    let iterated = tree
        .range::<[u8], _>(bounds, direction)
        .take(limit)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    [visited, latched, lent, iterated]
}

fn key_of(index: u32) -> Vec<u8> {
    format!("key{index:06}").into_bytes()
}

/// Values of every size class: inline small, inline large, and over several overflow pages.
fn value_of(index: u32, version: u32) -> Vec<u8> {
    let len = match index % 23 {
        0 => 9000 + (version as usize % 3000),
        1..=3 => 1100,
        _ => 20 + (index as usize + version as usize) % 150,
    };
    let mut value = index.to_be_bytes().to_vec();
    value.extend_from_slice(&version.to_le_bytes());
    value.extend((0..len).map(|i| (i as u32 ^ index ^ version) as u8));
    value
}

fn check_value(key: &[u8], value: &[u8]) {
    let index: u32 = std::str::from_utf8(&key[3..]).unwrap().parse().unwrap();
    assert!(value.len() >= 8, "value too short");
    assert_eq!(&value[..4], &index.to_be_bytes(), "value of another key");
    let version = u32::from_le_bytes(value[4..8].try_into().unwrap());
    assert!(value == value_of(index, version), "torn value");
}

fn random_bound(rng: &mut SmallRng, keys: u32) -> Bound<Vec<u8>> {
    // Keys between the stored ones too (a trailing byte), and past either end.
    let mut key = key_of(rng.random_range(0..keys + 2));
    if rng.random_range(0..3) == 0 {
        key.push(b'-');
    }
    match rng.random_range(0..5) {
        0 => Bound::Unbounded,
        1 | 2 => Bound::Included(key),
        _ => Bound::Excluded(key),
    }
}

#[test]
fn scan_matches_the_model_for_all_bounds_and_both_directions() {
    let path = common::test_path("scan-model");
    let engine = Engine::create(&path, common::options_with_frames(96)).unwrap();
    let tree = engine.tree("scan").unwrap();
    let mut model = Model::new();
    let mut rng = SmallRng::seed_from_u64(11);

    // The empty tree: nothing, whatever the bounds.
    for direction in [Direction::Forward, Direction::Reverse] {
        let unbounded = (Bound::Unbounded, Bound::Unbounded);
        for got in scanned(&tree, &unbounded.0, &unbounded.1, direction, 10) {
            assert!(got.is_empty());
        }
    }

    const KEYS: u32 = 3000;
    for step in 0..6000u32 {
        let index = rng.random_range(0..KEYS);
        if rng.random_range(0..5) == 0 {
            tree.delete(&key_of(index)).unwrap();
            model.remove(&key_of(index));
        } else {
            let value = value_of(index, step);
            tree.put(&key_of(index), &value).unwrap();
            model.insert(key_of(index), value);
        }
        if step % 20 == 0 {
            let (start, end) = (random_bound(&mut rng, KEYS), random_bound(&mut rng, KEYS));
            let direction = if rng.random() {
                Direction::Forward
            } else {
                Direction::Reverse
            };
            let limit = match rng.random_range(0..4) {
                0 => usize::MAX,
                1 => 1,
                _ => rng.random_range(0..300),
            };
            let want = expected(&model, &start, &end, direction, limit);
            for (way, got) in ["scan", "scan_latched", "cursor", "range"]
                .into_iter()
                .zip(scanned(&tree, &start, &end, direction, limit))
            {
                assert_eq!(got.len(), want.len(), "{way} at step {step}: length");
                assert!(got == want, "{way} at step {step}: contents differ");
            }
        }
    }
    assert!(
        tree.verify().unwrap().height >= 1,
        "the tree grew past one leaf"
    );
    assert!(
        engine.pool_stats().evictions > 0,
        "pages were evicted and refaulted"
    );
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// Stable keys (even indexes) stay in the tree throughout; writers insert and delete the
/// odd ones around them, with values of every size, so leaves split and merge under the
/// scans. Each scan must return every stable key of its range exactly once, in order.
fn scans_under_splits_and_merges(rounds: u32, name: &str) {
    const KEYS: u32 = 4000;
    let path = common::test_path(name);
    let engine = Engine::create(&path, common::options_with_frames(160)).unwrap();
    let tree = engine.tree("churn").unwrap();
    let stable: Vec<u32> = (0..KEYS).step_by(2).collect();
    for &index in &stable {
        tree.put(&key_of(index), &value_of(index, 0)).unwrap();
    }
    let done = AtomicBool::new(false);
    let scans = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2u32)
            .map(|writer| {
                let tree = tree.clone();
                scope.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(writer as u64);
                    for round in 0..rounds {
                        // Fill a stretch of odd keys (splits), then empty it (merges).
                        let first = rng.random_range(0..KEYS / 2) * 2 + 1;
                        let stretch: Vec<u32> = (first..KEYS).step_by(2).take(300).collect();
                        for &index in &stretch {
                            tree.put(&key_of(index), &value_of(index, round + 1))
                                .unwrap();
                        }
                        for &index in &stretch {
                            tree.delete(&key_of(index)).unwrap();
                        }
                    }
                })
            })
            .collect();
        let scanners: Vec<_> = (0..2u64)
            .map(|seed| {
                let (tree, done, stable) = (tree.clone(), &done, &stable);
                scope.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(100 + seed);
                    let mut scans = 0u64;
                    while !done.load(Ordering::Relaxed) && scans < 200_000 {
                        let a = rng.random_range(0..KEYS);
                        let b = (a + rng.random_range(0..800)).min(KEYS);
                        let direction = if scans % 2 == 0 {
                            Direction::Forward
                        } else {
                            Direction::Reverse
                        };
                        // Both visitors, each in both directions.
                        let latched = scans % 4 >= 2;
                        let mut seen = Vec::new();
                        let mut previous: Option<Vec<u8>> = None;
                        let mut visit = |key: &[u8], value: &[u8]| {
                            check_value(key, value);
                            if let Some(previous) = &previous {
                                let ordered = match direction {
                                    Direction::Forward => previous.as_slice() < key,
                                    Direction::Reverse => previous.as_slice() > key,
                                };
                                assert!(ordered, "scan out of order or repeated");
                            }
                            previous = Some(key.to_vec());
                            let index: u32 =
                                std::str::from_utf8(&key[3..]).unwrap().parse().unwrap();
                            if index % 2 == 0 {
                                seen.push(index);
                            }
                            ControlFlow::Continue(())
                        };
                        let range = key_of(a)..key_of(b);
                        if latched {
                            tree.scan_latched(range, direction, &mut visit).unwrap();
                        } else {
                            tree.scan(range, direction, &mut visit).unwrap();
                        }
                        let mut want: Vec<u32> = stable
                            .iter()
                            .copied()
                            .filter(|i| (a..b).contains(i))
                            .collect();
                        if direction == Direction::Reverse {
                            want.reverse();
                        }
                        assert_eq!(
                            seen, want,
                            "stable keys skipped or repeated in {a}..{b} (latched: {latched})"
                        );
                        scans += 1;
                    }
                    scans
                })
            })
            .collect();
        writers
            .into_iter()
            .for_each(|writer| writer.join().unwrap());
        done.store(true, Ordering::Relaxed);
        scanners
            .into_iter()
            .map(|scanner| scanner.join().unwrap())
            .sum::<u64>()
    });
    assert!(scans > 0);
    let left: Vec<u32> = tree
        .iter()
        .map(|record| {
            let (key, _) = record.unwrap();
            std::str::from_utf8(&key[3..]).unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(left, stable, "only the stable keys are left");
    tree.verify().unwrap();
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn scans_see_every_stable_key_once_under_splits_and_merges() {
    scans_under_splits_and_merges(12, "scan-churn");
}

#[test]
#[ignore = "long: ten times the rounds"]
fn scans_see_every_stable_key_once_under_splits_and_merges_long() {
    scans_under_splits_and_merges(120, "scan-churn-long");
}

/// A write from inside a latched visitor would wait for the latch its own scan holds: it
/// panics instead, and the unwinding scan lets its latch go (the tree stays writable).
#[test]
fn a_write_inside_a_latched_visitor_panics_and_releases_the_latch() {
    let path = common::test_path("scan-latched-write");
    let engine = Engine::create(&path, common::options_with_frames(96)).unwrap();
    let tree = engine.tree("latched").unwrap();
    for index in 0..500 {
        tree.put(&key_of(index), &value_of(index, 0)).unwrap();
    }
    let writes = [
        |tree: &Tree| drop(tree.put(&key_of(1), b"again")),
        |tree: &Tree| drop(tree.delete(&key_of(1))),
        |tree: &Tree| {
            drop(
                tree.scan_latched::<[u8], _, _>(.., Direction::Forward, |_, _| {
                    ControlFlow::Break(())
                }),
            )
        },
    ];
    for write in writes {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tree.scan_latched::<[u8], _, _>(.., Direction::Forward, |_, _| {
                write(&tree);
                ControlFlow::Continue(())
            })
        }));
        let message = panicked.expect_err("the engine call inside the visitor panics");
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("Tree::scan_latched visitor"), "{message}");
    }
    // The latches were let go on unwind: writers and both scans work on every leaf.
    for index in 0..500 {
        tree.put(&key_of(index), &value_of(index, 1)).unwrap();
    }
    let mut count = 0;
    tree.scan_latched::<[u8], _, _>(.., Direction::Reverse, |key, value| {
        check_value(key, value);
        count += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(count, 500);
    // The copying visitor may write while it scans.
    tree.scan::<[u8], _, _>(.., Direction::Forward, |key, _| {
        tree.delete(key).unwrap();
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(tree.iter().next().is_none());
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// A tree many times the pool: latched scans fault the leaves in as they go (moving on into
/// an evicted leaf reads it and the next ones in one submission) and return every record
/// once, in order, in both directions, from every start.
#[test]
fn latched_scans_of_an_evicted_tree_read_every_record_once() {
    const KEYS: u32 = 6000;
    let path = common::test_path("scan-latched-evicted");
    let engine = Engine::create(&path, common::options_with_frames(48)).unwrap();
    let tree = engine.tree("evicted").unwrap();
    tree.load_sorted((0..KEYS).map(|index| (key_of(index), value_of(index, 0))))
        .unwrap();
    engine.checkpoint().unwrap();
    let reads_before = engine.pool_stats().reads;
    let mut rng = SmallRng::seed_from_u64(5);
    for round in 0..40u32 {
        // Rounds 0 and 1: the whole tree; then from a random key to the end.
        let from = if round < 2 {
            None
        } else {
            Some(rng.random_range(0..KEYS))
        };
        let (direction, bounds, want): (_, _, Vec<u32>) = if round % 2 == 0 {
            let start = from.map_or(Bound::Unbounded, |from| Bound::Included(key_of(from)));
            (
                Direction::Forward,
                (start, Bound::Unbounded),
                (from.unwrap_or(0)..KEYS).collect(),
            )
        } else {
            let end = from.map_or(Bound::Unbounded, |from| Bound::Excluded(key_of(from)));
            (
                Direction::Reverse,
                (Bound::Unbounded, end),
                (0..from.unwrap_or(KEYS)).rev().collect(),
            )
        };
        let mut seen = Vec::new();
        tree.scan_latched::<[u8], _, _>(
            (as_slice(&bounds.0), as_slice(&bounds.1)),
            direction,
            |key, value| {
                check_value(key, value);
                seen.push(
                    std::str::from_utf8(&key[3..])
                        .unwrap()
                        .parse::<u32>()
                        .unwrap(),
                );
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert!(
            seen == want,
            "round {round} from {from:?}: {} records, not {}",
            seen.len(),
            want.len()
        );
    }
    assert!(
        engine.pool_stats().reads > reads_before + 100,
        "the scans faulted leaves in"
    );
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// A 100-byte value, inline in its leaf (no overflow pages to read).
fn inline_value(index: u32) -> Vec<u8> {
    index.to_be_bytes().repeat(25)
}

/// A short scan that moves on into an evicted leaf reads that leaf, not the next ones too:
/// the read-ahead window starts at one leaf and widens only as the scan keeps moving into
/// evicted leaves (a fixed window of four made short scans read about 60% more pages than
/// they visited, on a disk already at its limit). Each trial reopens the engine, so every
/// page starts evicted; a point lookup of the start key brings its path in first.
#[test]
fn a_short_scan_into_an_evicted_leaf_reads_only_that_leaf() {
    const KEYS: u32 = 6000;
    const SCAN_LEN: usize = 5;
    let path = common::test_path("scan-short-read-ahead");
    let engine = Engine::create(&path, common::options_with_frames(48)).unwrap();
    engine
        .tree("short")
        .unwrap()
        .load_sorted((0..KEYS).map(|index| (key_of(index), inline_value(index))))
        .unwrap();
    engine.close().unwrap();
    let (mut crossings, mut most_reads) = (0, 0);
    for start in (0..1600).step_by(13) {
        let engine = Engine::open(&path, common::options_with_frames(48)).unwrap();
        let tree = engine.tree("short").unwrap();
        assert!(tree.get(&key_of(start)).unwrap().is_some());
        let before = engine.pool_stats().reads;
        let mut seen = 0;
        tree.scan_latched::<[u8], _, _>(
            (Bound::Included(&key_of(start)[..]), Bound::Unbounded),
            Direction::Forward,
            |key, value| {
                let index: u32 = std::str::from_utf8(&key[3..]).unwrap().parse().unwrap();
                assert_eq!(value, inline_value(index));
                seen += 1;
                if seen == SCAN_LEN {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
        assert_eq!(seen, SCAN_LEN);
        // The start leaf is resident: any read is the next leaf (and, at a parent's last
        // child, the next level-1 node on the way to it).
        let reads = engine.pool_stats().reads - before;
        crossings += usize::from(reads > 0);
        most_reads = most_reads.max(reads);
        drop(tree);
        engine.close().unwrap();
    }
    assert!(
        crossings >= 3,
        "only {crossings} scans crossed a leaf boundary"
    );
    assert!(
        most_reads <= 2,
        "a {SCAN_LEN}-record scan read {most_reads} pages: more than the leaf it moved into"
    );
    std::fs::remove_file(&path).unwrap();
}

/// A scan told how many records it will take reads, moving on into evicted leaves, the
/// leaves those need in one submission each time: never more pages than the same scan
/// guessing (which starts at one leaf and widens to four), fewer over many scans, and the
/// same records.
#[test]
fn a_scan_that_says_how_many_records_it_takes_reads_no_more_than_it_needs() {
    const KEYS: u32 = 6000;
    let path = common::test_path("scan-expecting");
    let engine = Engine::create(&path, common::options_with_frames(48)).unwrap();
    engine
        .tree("expecting")
        .unwrap()
        .load_sorted((0..KEYS).map(|index| (key_of(index), inline_value(index))))
        .unwrap();
    engine.close().unwrap();
    let mut rng = SmallRng::seed_from_u64(17);
    let (mut guessed_total, mut told_total) = (0, 0);
    for _ in 0..12 {
        let start = rng.random_range(0..KEYS - 400);
        let take = rng.random_range(50..300usize);
        // Reads of one scan on a freshly opened (all evicted) engine, and what it saw.
        let scan = |told: bool| {
            let engine = Engine::open(&path, common::options_with_frames(48)).unwrap();
            let tree = engine.tree("expecting").unwrap();
            let before = engine.pool_stats().reads;
            let mut seen = Vec::new();
            let visit = |key: &[u8], _: &[u8]| {
                seen.push(key.to_vec());
                if seen.len() == take {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            let bounds = (Bound::Included(&key_of(start)[..]), Bound::Unbounded);
            if told {
                tree.scan_latched_expecting::<[u8], _, _>(bounds, Direction::Forward, take, visit)
            } else {
                tree.scan_latched::<[u8], _, _>(bounds, Direction::Forward, visit)
            }
            .unwrap();
            let reads = engine.pool_stats().reads - before;
            drop(tree);
            engine.close().unwrap();
            (reads, seen)
        };
        let (guessed, guessed_seen) = scan(false);
        let (told, told_seen) = scan(true);
        assert_eq!(told_seen, guessed_seen, "from {start}, {take} records");
        assert_eq!(told_seen.len(), take);
        assert!(
            told <= guessed,
            "from {start}, {take} records: {told} reads told, {guessed} guessing"
        );
        guessed_total += guessed;
        told_total += told;
    }
    assert!(
        told_total < guessed_total,
        "{told_total} reads told, {guessed_total} guessing"
    );
    std::fs::remove_file(&path).unwrap();
}
