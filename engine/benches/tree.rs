//! Criterion benches of the B+-tree in memory (frame budget larger than the data):
//! point lookups (one thread and two), overwrites, fresh inserts, and 100-record scans.
//!
//! `ENGINE_BENCH_RECORDS` sets the data set size (default 1,000,000 records of 8-byte
//! keys and 120-byte values, the vmcache lookup shape). Files live under
//! `target/engine-bench` (a real filesystem: O_DIRECT).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bufpool_engine::{Direction, Engine, EngineOptions, Tree};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const VALUE_SIZE: usize = 120;

fn record_count() -> u64 {
    std::env::var("ENGINE_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

fn bench_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/engine-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn value(index: u64) -> [u8; VALUE_SIZE] {
    let mut value = [0u8; VALUE_SIZE];
    value[..8].copy_from_slice(&index.to_le_bytes());
    value
}

/// An engine with `records` records (keys 0..records, big endian), loaded with the bulk path.
fn loaded(name: &str, records: u64) -> (Engine, Tree) {
    let options = EngineOptions {
        pool_bytes: 8 << 30,
        ..EngineOptions::default()
    };
    let engine = Engine::create(bench_path(name), options).unwrap();
    let tree = engine.tree("bench").unwrap();
    tree.load_sorted((0..records).map(|i| (i.to_be_bytes(), value(i))))
        .unwrap();
    (engine, tree)
}

/// `iterations` uniform random lookups split over `threads` threads; the wall time.
fn lookups(tree: &Tree, records: u64, threads: u64, iterations: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let tree = tree.clone();
            scope.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(thread);
                let mut out = Vec::with_capacity(VALUE_SIZE);
                for _ in 0..iterations / threads {
                    let key = rng.random_range(0..records).to_be_bytes();
                    assert!(tree.get_into(&key, &mut out).unwrap());
                    black_box(&out);
                }
            });
        }
    });
    start.elapsed()
}

fn reads(c: &mut Criterion) {
    let records = record_count();
    let (engine, tree) = loaded("reads.db", records);
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    group.bench_function("random, 1 thread", |b| {
        b.iter_custom(|n| lookups(&tree, records, 1, n))
    });
    group.bench_function("random, 2 threads", |b| {
        b.iter_custom(|n| lookups(&tree, records, 2, n.max(2)))
    });
    group.finish();
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(100));
    let mut rng = SmallRng::seed_from_u64(9);
    for direction in [Direction::Forward, Direction::Reverse] {
        group.bench_function(format!("100 records, {direction:?}"), |b| {
            b.iter(|| {
                let start = rng.random_range(0..records).to_be_bytes();
                let scan = match direction {
                    Direction::Forward => tree.range(start.as_slice().., direction),
                    Direction::Reverse => tree.range(..start.as_slice(), direction),
                };
                scan.take(100)
                    .for_each(|record| drop(black_box(record.unwrap())));
            })
        });
    }
    group.finish();
    drop(tree);
    engine.close().unwrap();
}

fn writes(c: &mut Criterion) {
    let records = record_count();
    let (engine, tree) = loaded("writes.db", records);
    let mut group = c.benchmark_group("put");
    group.throughput(Throughput::Elements(1));
    let mut rng = SmallRng::seed_from_u64(5);
    group.bench_function("overwrite random", |b| {
        b.iter(|| {
            let index = rng.random_range(0..records);
            tree.put(&index.to_be_bytes(), &value(index + 1)).unwrap();
        })
    });
    let mut next = records;
    group.bench_function("insert random new keys", |b| {
        b.iter(|| {
            // Keys past the loaded ones, scattered: inserts that split leaves.
            next += 1;
            let key = (next.wrapping_mul(0x9E37_79B9_7F4A_7C15) | (1 << 63)).to_be_bytes();
            tree.put(&key, &value(next)).unwrap();
        })
    });
    group.finish();
    drop(tree);
    engine.close().unwrap();
}

fn bulk(c: &mut Criterion) {
    let mut group = c.benchmark_group("load_sorted");
    group.sample_size(10);
    let records = 1_000_000u64;
    group.throughput(Throughput::Elements(records));
    group.bench_function("1M records", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let options = EngineOptions {
                    pool_bytes: 1 << 30,
                    ..EngineOptions::default()
                };
                let engine = Engine::create(bench_path("bulk.db"), options).unwrap();
                let tree = engine.tree("bench").unwrap();
                let start = Instant::now();
                tree.load_sorted((0..records).map(|i| (i.to_be_bytes(), value(i))))
                    .unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = reads, writes, bulk
}
criterion_main!(benches);
