//! `kv bench`: load (or reuse) a data set in one engine, run a workload, report.
//!
//! `--durability` picks what each write's return promises, mapped to each engine's own modes
//! (table in `store/mod.rs`; `--durability immediate` is the synced comparison: bufpool's log
//! fdatasync with group commit, LMDB's sync per commit, redb's `Durability::Immediate`). The
//! default, `none`, keeps the unsynced comparison every engine ran before the log existed.
//!
//! `--workload recovery` (bufpool): the update workload, then the engine is dropped without a
//! checkpoint (as a crash leaves the files), reopened, and `Engine::recovery_report` gives the
//! log replayed and the time it took (`recovery_mb_per_s`, MiB of log per second of replay).

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::dataset::Dataset;
use crate::error::KvError;
use crate::memory_cap::{self, MemoryCap};
use crate::report::{Recovery, Report, duration_from_seconds};
use crate::store::{self, EngineKind, OpenOptions, Store};
use crate::workload::{self, RunConfig, Workload};
use crate::ycsb::Distribution;

/// Where `kv` keeps its own databases when no `--db` is given.
pub const DEFAULT_DATA_DIR: &str = "kv-data";

/// `kv bench` arguments. The defaults are the vmcache random-lookup shape.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Records in the data set.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Key size in bytes (at least 8: the big-endian record index, then filler).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes (at least 16).
    #[arg(long, default_value_t = 120)]
    pub value_size: usize,
    /// Memory budget in MiB: bufpool's frame budget, redb's cache size, RocksDB's block cache.
    #[arg(long, default_value_t = 1024)]
    pub pool_mb: u64,
    /// Bench threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Unmeasured seconds of the same workload first (e.g. to warm a reused database).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// The workload; several, comma-separated, run one after the other on the same open
    /// database (one report each), e.g. `ycsb-a,ycsb-b,ycsb-c`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "read")]
    pub workload: Vec<Workload>,
    /// How records are picked [default: uniform; ycsb-*: zipfian (θ 0.99, scrambled), ycsb-d:
    /// latest].
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Keys per lookup: more than 1 looks them up with one multi_get.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Records per scan (ycsb-e: the longest; lengths are uniform in 1..=this).
    #[arg(long, default_value_t = 100)]
    pub scan_length: usize,
    #[arg(long, value_enum, default_value_t = EngineKind::Bufpool)]
    pub engine: EngineKind,
    /// What a write's return promises: immediate (synced per commit), periodic[:MS] or none;
    /// see `store/mod.rs` for each engine's equivalent.
    #[arg(long, default_value = "none", value_parser = crate::repl::parse_durability)]
    pub durability: bufpool_engine::Durability,
    /// Database path (default ./kv-data/bench-ENGINE.*, replaced on each run unless --reuse).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Skip loading when the database already holds this exact data set.
    #[arg(long)]
    pub reuse: bool,
    /// Cap this process (page cache included) at this many MiB with a cgroup memory limit.
    #[arg(long)]
    pub cgroup_mb: Option<u64>,
    /// Seed of the values and of the lookup streams.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object as the last line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A store ready for a run, and how it got there.
pub struct Prepared {
    pub store: Box<dyn Store>,
    pub loaded: bool,
    pub load_seconds: f64,
}

/// What to do with a database that already exists at the path.
#[derive(Debug, Clone, Copy)]
pub struct ExistingPolicy {
    /// Keep it if it holds this data set.
    pub reuse: bool,
    /// The path is kv's own default: an unusable database there may be replaced.
    pub owned: bool,
}

pub fn run(args: &BenchArgs) -> Result<(), KvError> {
    let dataset = Dataset::new(args.records, args.key_size, args.value_size, args.seed)?;
    let configs = args
        .workload
        .iter()
        .map(|workload| run_config(args, *workload))
        .collect::<Result<Vec<_>, _>>()?;
    let recovery = args.workload.contains(&Workload::Recovery);
    if recovery && args.workload.len() > 1 {
        return Err(KvError::InvalidArgument(
            "--workload recovery runs alone".into(),
        ));
    }
    let (path, owned) = match &args.db {
        Some(path) => (path.clone(), false),
        None => (
            Path::new(DEFAULT_DATA_DIR).join(args.engine.default_file_name()),
            true,
        ),
    };
    let options = OpenOptions {
        engine: args.engine,
        path: path.clone(),
        memory_bytes: args.pool_mb << 20,
        threads: args.threads,
        durability: args.durability,
        capped: args.cgroup_mb.is_some(),
    };
    if recovery && args.engine != EngineKind::Bufpool {
        return Err(KvError::InvalidArgument(
            "--workload recovery replays bufpool's log: use --engine bufpool".into(),
        ));
    }
    let policy = ExistingPolicy {
        reuse: args.reuse,
        owned,
    };
    let (mut prepared, memory_cap) = match args.cgroup_mb {
        Some(limit_mib) => prepare_capped(&options, &dataset, policy, limit_mib)?,
        None => {
            let uncapped = MemoryCap::uncapped();
            (prepare(&options, &dataset, policy, &uncapped)?, uncapped)
        }
    };
    if !args.workload.iter().any(|workload| workload.writes()) {
        prepared.store.seal_read_only();
    }
    let sync_source = prepared.store.sync_source();
    let mut store = prepared.store;
    for config in &configs {
        let measurement = workload::run(store.as_ref(), &dataset, config)?;
        let recovery = if recovery {
            let (reopened, recovery) = crash_and_reopen(store, &options)?;
            store = reopened;
            Some(recovery)
        } else {
            None
        };
        let report = Report {
            engine: args.engine,
            dataset: &dataset,
            config,
            measurement: &measurement,
            memory_budget_mib: args.pool_mb,
            memory_cap: &memory_cap,
            load_seconds: prepared.load_seconds,
            loaded: prepared.loaded,
            database: database_label(args.engine, &path),
            durability: args.durability,
            sync_source,
            recovery,
        };
        if args.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_table());
        }
    }
    store.close()
}

/// The recovery workload's second half: drop the store without a checkpoint, reopen it (the
/// log is replayed in `open`), and return the reopened store with what recovery reported.
fn crash_and_reopen(
    store: Box<dyn Store>,
    options: &OpenOptions,
) -> Result<(Box<dyn Store>, Recovery), KvError> {
    store.abandon();
    let start = Instant::now();
    let reopened = store::open(options)?;
    let reopen_seconds = start.elapsed().as_secs_f64();
    let report = reopened
        .recovery_report()
        .expect("the recovery workload runs on bufpool, which reports recovery");
    Ok((
        reopened,
        Recovery {
            report,
            reopen_seconds,
        },
    ))
}

fn run_config(args: &BenchArgs, workload: Workload) -> Result<RunConfig, KvError> {
    if args.threads == 0 || args.batch == 0 || args.scan_length == 0 {
        return Err(KvError::InvalidArgument(
            "--threads, --batch and --scan-length must be at least 1".into(),
        ));
    }
    let seconds_valid = args.seconds.is_finite() && args.seconds > 0.0;
    let warmup_valid = args.warmup.is_finite() && args.warmup >= 0.0;
    if !seconds_valid || !warmup_valid {
        return Err(KvError::InvalidArgument(
            "--seconds must be positive and finite, --warmup not negative".into(),
        ));
    }
    if args.pool_mb == 0 {
        return Err(KvError::InvalidArgument(
            "--pool-mb must be at least 1".into(),
        ));
    }
    Ok(RunConfig {
        workload,
        threads: args.threads,
        warmup: duration_from_seconds(args.warmup),
        measure: duration_from_seconds(args.seconds),
        batch: args.batch,
        scan_length: args.scan_length,
        distribution: args
            .distribution
            .unwrap_or_else(|| workload.default_distribution()),
        seed: args.seed,
        // A synced write costs a device sync: two clock reads each are noise, and every
        // commit's latency counts.
        latency_sample_every: if args.durability == bufpool_engine::Durability::Immediate {
            1
        } else {
            workload::LATENCY_SAMPLE_EVERY
        },
    })
}

/// `--cgroup-mb`: the cap covers the measured run, not the load. A persistent database is
/// loaded (or found) uncapped and closed; then the process enters the cap and reopens it
/// cold (its page cache dropped), so every engine starts from the disk inside the same
/// memory. Loading under the cap would only slow it down, or get a peer whose write
/// buffers exceed the cap killed. The in-memory BTreeMap loads inside the cap.
fn prepare_capped(
    options: &OpenOptions,
    dataset: &Dataset,
    policy: ExistingPolicy,
    limit_mib: u64,
) -> Result<(Prepared, MemoryCap), KvError> {
    let mut loaded = false;
    let mut load_seconds = 0.0;
    if options.engine.is_persistent() {
        let first = prepare(options, dataset, policy, &MemoryCap::uncapped())?;
        (loaded, load_seconds) = (first.loaded, first.load_seconds);
        first.store.close()?;
    }
    let memory_cap = MemoryCap::apply(limit_mib);
    eprintln!("kv: {}", memory_cap.explain());
    let reuse = ExistingPolicy {
        reuse: true,
        ..policy
    };
    let mut prepared = prepare(options, dataset, reuse, &memory_cap)?;
    if loaded {
        prepared.loaded = true;
        prepared.load_seconds = load_seconds;
    }
    Ok((prepared, memory_cap))
}

/// Opens the database at `options.path`, reusing or (re)loading it per `policy`.
pub fn prepare(
    options: &OpenOptions,
    dataset: &Dataset,
    policy: ExistingPolicy,
    memory_cap: &MemoryCap,
) -> Result<Prepared, KvError> {
    let engine = options.engine;
    if engine.is_persistent() && options.path.exists() {
        if policy.reuse {
            match open_matching(options, dataset, memory_cap) {
                Ok(Some(store)) => {
                    return Ok(Prepared {
                        store,
                        loaded: false,
                        load_seconds: 0.0,
                    });
                }
                Ok(None) if !policy.owned => {
                    return Err(KvError::DatasetMismatch {
                        path: options.path.clone(),
                        found: "another data set (or an unfinished load)".into(),
                        requested: dataset.describe(),
                    });
                }
                Err(error) if !policy.owned => return Err(error),
                Ok(None) => eprintln!(
                    "kv: {} holds another data set (or an unfinished load); reloading",
                    options.path.display()
                ),
                Err(error) => eprintln!(
                    "kv: cannot reuse {} ({}); reloading",
                    options.path.display(),
                    crate::error::one_line(&error)
                ),
            }
        } else if !policy.owned {
            return Err(KvError::DatabaseExists {
                path: options.path.clone(),
            });
        }
        store::remove_files(engine, &options.path)?;
    }
    if let Some(parent) = options.path.parent() {
        if !parent.as_os_str().is_empty() && engine.is_persistent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| KvError::io(format!("mkdir {}", parent.display()), error))?;
        }
    }
    let store = store::open(options)?;
    let load_seconds = load(store.as_ref(), dataset)?;
    Ok(Prepared {
        store,
        loaded: true,
        load_seconds,
    })
}

/// Opens an existing database; `Some` if it holds exactly `dataset`.
fn open_matching(
    options: &OpenOptions,
    dataset: &Dataset,
    memory_cap: &MemoryCap,
) -> Result<Option<Box<dyn Store>>, KvError> {
    if memory_cap.is_capped() {
        // Start cold inside the cap, not on page cache charged to another group.
        let mut files = vec![options.path.clone()];
        if options.engine == EngineKind::Lmdb {
            files.push(store::lmdb_lock_path(&options.path));
        }
        if options.engine == EngineKind::Rocksdb {
            // A directory: its files (reads of the SSTs bypass the cache under a cap anyway).
            files = std::fs::read_dir(&options.path)
                .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
                .unwrap_or_default();
        }
        for failure in memory_cap::drop_page_cache(&files) {
            eprintln!("kv: could not drop the page cache of {failure}");
        }
    }
    let store = store::open(options)?;
    let found = store.description()?;
    if found.as_deref() == Some(dataset.describe().as_str()) {
        return Ok(Some(store));
    }
    store.close()?;
    Ok(None)
}

/// Loads `dataset` with a progress bar on stderr; returns the seconds it took.
pub fn load(store: &dyn Store, dataset: &Dataset) -> Result<f64, KvError> {
    let progress = ProgressBar::new(dataset.records);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:40}] {human_pos}/{human_len} records ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    progress.set_style(style.progress_chars("=> "));
    progress.set_message(format!("loading {}", store.engine().name()));
    let start = Instant::now();
    store.load(dataset, &progress)?;
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    Ok(seconds)
}

fn database_label(engine: EngineKind, path: &Path) -> String {
    if engine.is_persistent() {
        path.display().to_string()
    } else {
        "(memory)".into()
    }
}
