//! `kv` / `kv demo`: the key-value store on bufpool in one command, on a default database
//! under ./kv-data/ (loaded on first run, reused afterwards). The data set is larger than the
//! frame budget, so the mixed workload exercises eviction and fault-in, and the report shows
//! the pool at work.

use std::path::{Path, PathBuf};

use bufpool_engine::Durability;

use crate::bench::{DEFAULT_DATA_DIR, ExistingPolicy, prepare};
use crate::dataset::Dataset;
use crate::error::KvError;
use crate::memory_cap::MemoryCap;
use crate::report::{Report, duration_from_seconds, group_digits};
use crate::store::{EngineKind, OpenOptions};
use crate::workload::{self, MIXED_GET_PERCENT, MIXED_PUT_PERCENT, RunConfig, Workload};

/// `kv demo` arguments; the defaults keep the whole demo well under 30 s on 2 cores.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The demo database.
    #[arg(long, default_value_os_t = Path::new(DEFAULT_DATA_DIR).join("demo.db"))]
    pub db: PathBuf,
    /// Records (8-byte keys, 120-byte values).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Frame budget in MiB (smaller than the data, on purpose).
    #[arg(long, default_value_t = 64)]
    pub pool_mb: u64,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Measured seconds of the mixed workload.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
}

impl Default for DemoArgs {
    fn default() -> DemoArgs {
        DemoArgs {
            db: Path::new(DEFAULT_DATA_DIR).join("demo.db"),
            records: 1_000_000,
            pool_mb: 64,
            threads: 2,
            seconds: 5.0,
        }
    }
}

const DEMO_SEED: u64 = 42;
/// The demo shows the pool at work, not the disk's sync latency: its updates are synced at
/// checkpoints (the close), as before the log existed. `kv shell` and `kv bench --durability`
/// show the synced modes.
const DEMO_DURABILITY: Durability = Durability::None;
const DEMO_SCAN_LENGTH: usize = 20;

pub fn run(args: &DemoArgs) -> Result<(), KvError> {
    let dataset = Dataset::new(args.records, 8, 120, DEMO_SEED)?;
    if args.threads == 0 || args.pool_mb == 0 {
        return Err(KvError::InvalidArgument(
            "--threads and --pool-mb must be at least 1".into(),
        ));
    }
    let config = RunConfig {
        workload: Workload::Mixed,
        threads: args.threads,
        warmup: duration_from_seconds(0.0),
        measure: duration_from_seconds(args.seconds),
        batch: 1,
        scan_length: DEMO_SCAN_LENGTH,
        distribution: Workload::Mixed.default_distribution(),
        seed: DEMO_SEED,
        latency_sample_every: workload::LATENCY_SAMPLE_EVERY,
    };
    println!(
        "kv demo: {} records ({} MiB of keys and values) in a {} MiB buffer pool, {}",
        group_digits(dataset.records),
        dataset.payload_bytes() >> 20,
        args.pool_mb,
        args.db.display()
    );
    let options = OpenOptions {
        engine: EngineKind::Bufpool,
        path: args.db.clone(),
        memory_bytes: args.pool_mb << 20,
        threads: args.threads,
        durability: DEMO_DURABILITY,
        capped: false,
    };
    // The demo's database is kv's own: reuse it if it holds the data set, else rebuild it.
    let policy = ExistingPolicy {
        reuse: true,
        owned: true,
    };
    let memory_cap = MemoryCap::uncapped();
    let prepared = prepare(&options, &dataset, policy, &memory_cap)?;
    println!(
        "running a mixed workload for {:.0} s on {} threads: {}% lookups, {}% updates, {}% scans of {} records\n",
        args.seconds,
        args.threads,
        MIXED_GET_PERCENT,
        MIXED_PUT_PERCENT,
        100 - MIXED_GET_PERCENT - MIXED_PUT_PERCENT,
        DEMO_SCAN_LENGTH
    );
    let sync_source = prepared.store.sync_source();
    let measurement = workload::run(prepared.store.as_ref(), &dataset, &config)?;
    let report = Report {
        engine: EngineKind::Bufpool,
        dataset: &dataset,
        config: &config,
        measurement: &measurement,
        memory_budget_mib: args.pool_mb,
        memory_cap: &memory_cap,
        load_seconds: prepared.load_seconds,
        loaded: prepared.loaded,
        database: args.db.display().to_string(),
        durability: DEMO_DURABILITY,
        sync_source,
        recovery: None,
    };
    print!("{}", report.to_table());
    prepared.store.close()?;
    println!(
        "\nmore: kv bench --help, kv get|put|delete|scan --db {}",
        args.db.display()
    );
    Ok(())
}
