//! `cargo bench -p bufpool`: the hit path (optimistic read, shared and exclusive fix/unfix of a
//! resident page) against a plain read of the same bytes from a `Vec`, the miss path, and
//! eviction throughput with the frame budget at 25% of the data.

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bufpool::{Backing, Config, PAGE_SIZE, PageId, Pool};
use bufpool_io::{DirectFile, OpenOptions};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Data pages for the miss and eviction benches (64 MiB); the budget is a quarter of them.
const DATA_PAGES: u64 = 16384;
const BUDGET_PAGES: u64 = DATA_PAGES / 4;
/// Where the hit benches read: an unaligned u64 in the middle of the page.
const OFFSET: usize = 1003;

fn data_file(name: &str, page_count: u64) -> DirectFile {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&dir).expect("create bench-data");
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create data file"));
    let mut page_bytes = vec![0u8; PAGE_SIZE];
    for page in 0..page_count {
        page_bytes[..8].copy_from_slice(&page.to_le_bytes());
        file.write_all(&page_bytes).expect("write data file");
    }
    file.into_inner().expect("flush").sync_all().expect("sync");
    DirectFile::open(&path, &OpenOptions::default()).expect("open O_DIRECT")
}

fn pool(name: &str, backing: Backing, page_count: u64, budget_pages: u64) -> Pool {
    let config = Config {
        page_count_max: page_count.next_power_of_two(),
        frame_budget_bytes: budget_pages * PAGE_SIZE as u64,
        backing,
        eviction_batch: 32,
        ..Config::default()
    };
    Pool::open(data_file(name, page_count), config).expect("open pool")
}

fn hit_path(criterion: &mut Criterion) {
    let pool = pool("hit.db", Backing::Anonymous, 64, 64);
    let page = PageId(7);
    pool.read(page, |_| ()).expect("fault in");
    let plain = vec![0u8; PAGE_SIZE];
    let mut group = criterion.benchmark_group("hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("vec_read_u64", |bench| {
        bench.iter(|| {
            let bytes = black_box(&plain);
            u64::from_le_bytes(bytes[OFFSET..OFFSET + 8].try_into().expect("8 bytes"))
        })
    });
    group.bench_function("optimistic_read_u64", |bench| {
        bench.iter(|| {
            pool.read(black_box(page), |view| view.u64_at(OFFSET))
                .expect("read")
        })
    });
    group.bench_function("shared_fix_unfix_u64", |bench| {
        bench.iter(|| {
            let guard = pool.shared(black_box(page)).expect("shared");
            u64::from_le_bytes(guard[OFFSET..OFFSET + 8].try_into().expect("8 bytes"))
        })
    });
    group.bench_function("exclusive_fix_unfix_u64", |bench| {
        bench.iter(|| {
            let mut guard = pool.exclusive(black_box(page)).expect("exclusive");
            guard[OFFSET] ^= 1;
        })
    });
    // A 120-byte value, the record size of the vmcache and kv workloads.
    let mut record = [0u8; 120];
    group.bench_function("vec_copy_record_120", |bench| {
        bench.iter(|| record.copy_from_slice(&black_box(&plain)[OFFSET..OFFSET + 120]))
    });
    group.bench_function("optimistic_copy_record_120", |bench| {
        bench.iter(|| {
            pool.read(black_box(page), |view| view.copy_to(OFFSET, &mut record))
                .expect("read")
        })
    });
    let mut out = vec![0u8; PAGE_SIZE];
    group.bench_function("vec_copy_page", |bench| {
        bench.iter(|| out.copy_from_slice(black_box(&plain)))
    });
    group.bench_function("optimistic_copy_page", |bench| {
        bench.iter(|| {
            pool.read(black_box(page), |view| view.copy_to(0, &mut out))
                .expect("read")
        })
    });
    group.finish();
}

/// A cheap, fixed sequence of pseudo-random page ids.
struct Pages(u64);

impl Pages {
    fn next(&mut self) -> PageId {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        PageId((self.0 >> 33) % DATA_PAGES)
    }
}

/// Threads of the multi-threaded miss bench (fio's anchor is queue depth 32).
const THREADS: u64 = 32;

/// `iterations` random reads spread over `THREADS` threads; returns the wall time.
fn read_in_threads(pool: &Pool, iterations: u64) -> Duration {
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                let mut pages = Pages(thread + 1);
                for _ in 0..iterations.div_ceil(THREADS) {
                    black_box(
                        pool.read(pages.next(), |view| view.u64_at(0))
                            .expect("read"),
                    );
                }
            });
        }
    });
    start.elapsed()
}

fn miss_path(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("miss");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for backing in [Backing::Anonymous, Backing::Memfd] {
        let pool = pool(
            &format!("miss-{backing:?}.db"),
            backing,
            DATA_PAGES,
            BUDGET_PAGES,
        );
        let mut pages = Pages(1);
        group.bench_function(
            BenchmarkId::new("random_read_budget_25pct", format!("{backing:?}")),
            |bench| {
                bench.iter(|| {
                    pool.read(pages.next(), |view| view.u64_at(0))
                        .expect("read")
                })
            },
        );
        // Many threads, each blocked on its own miss: queue depth THREADS at the disk.
        group.bench_function(
            BenchmarkId::new(
                format!("random_read_budget_25pct_{THREADS}_threads"),
                format!("{backing:?}"),
            ),
            |bench| bench.iter_custom(|iterations| read_in_threads(&pool, iterations)),
        );
        // One thread, 32 misses overlapped: found first, read with one submission.
        let mut batch = [PageId(0); 32];
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function(
            BenchmarkId::new("prefetch_32_then_read", format!("{backing:?}")),
            |bench| {
                bench.iter(|| {
                    batch.iter_mut().for_each(|page| *page = pages.next());
                    pool.prefetch(&batch).expect("prefetch");
                    for &page in &batch {
                        black_box(pool.read(page, |view| view.u64_at(0)).expect("read"));
                    }
                })
            },
        );
        group.throughput(Throughput::Elements(1));
        report("miss", backing, &pool);
    }
    group.finish();
}

/// Sequential scans with a quarter-size budget: every access misses and evicts one page
/// (clean), or writes it back first (dirty).
fn eviction_throughput(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("eviction");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for backing in [Backing::Anonymous, Backing::Memfd] {
        let pool = pool(
            &format!("evict-{backing:?}.db"),
            backing,
            DATA_PAGES,
            BUDGET_PAGES,
        );
        let mut next = 0u64;
        group.bench_function(
            BenchmarkId::new("clean_scan", format!("{backing:?}")),
            |bench| {
                bench.iter(|| {
                    next = (next + 1) % DATA_PAGES;
                    pool.read(PageId(next), |view| view.u64_at(0))
                        .expect("read")
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("dirty_scan", format!("{backing:?}")),
            |bench| {
                bench.iter(|| {
                    next = (next + 1) % DATA_PAGES;
                    pool.exclusive(PageId(next)).expect("exclusive")[8] ^= 1;
                })
            },
        );
        // Batches of 32 sequential misses, one submission each: every page read evicts one,
        // so this is eviction throughput with the disk at queue depth 32.
        let mut batch = [PageId(0); 32];
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function(
            BenchmarkId::new("prefetch_scan_32", format!("{backing:?}")),
            |bench| {
                bench.iter(|| {
                    for page in batch.iter_mut() {
                        next = (next + 1) % DATA_PAGES;
                        *page = PageId(next);
                    }
                    pool.prefetch(&batch).expect("prefetch");
                })
            },
        );
        group.throughput(Throughput::Elements(1));
        report("eviction", backing, &pool);
    }
    group.finish();
}

/// The pool's counters after a group ran (skipped when a filter left the pool idle).
fn report(group: &str, backing: Backing, pool: &Pool) {
    let stats = pool.stats();
    if stats.misses > 0 {
        eprintln!("{group}/{backing:?}: {stats:?}");
    }
}

criterion_group!(benches, hit_path, miss_path, eviction_throughput);
criterion_main!(benches);
