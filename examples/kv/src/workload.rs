//! The bench workloads and the threads that run them.
//!
//! Each thread draws record indexes uniformly at random (its own `SmallRng`, seeded from the
//! run's seed and the thread number), runs operations until told to stop, and tallies them
//! locally; nothing is shared between threads on the hot path but the phase word. Latency is
//! timed on every `LATENCY_SAMPLE_EVERY`-th operation (chosen by count, not by outcome, so
//! the sample is unbiased) to keep two clock reads off the other operations; synced runs
//! (`--durability immediate`, where each write costs a device sync) time every operation.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bufpool_engine::LogStats;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::dataset::Dataset;
use crate::error::KvError;
use crate::proc_stats;
use crate::store::{PoolCounters, Store};

/// Operations between two timed ones.
pub const LATENCY_SAMPLE_EVERY: u64 = 8;
/// `mixed`: percent of point lookups and of updates; the rest are scans.
pub const MIXED_GET_PERCENT: u32 = 85;
pub const MIXED_PUT_PERCENT: u32 = 10;
/// Longest latency the histograms hold (longer ones are clamped to it).
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// How often the control thread checks for a failed worker while waiting.
const CONTROL_POLL: Duration = Duration::from_millis(20);

/// What the bench threads do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Uniform random point lookups (`--batch K` > 1: `multi_get` of K keys).
    Read,
    /// Uniform random updates (replace a record's value with a new version).
    Update,
    /// Forward range scans of `--scan-length` records from a uniform random key.
    Scan,
    /// 85% lookups, 10% updates, 5% scans.
    Mixed,
    /// bufpool only: `update` for the measured time (default `--durability none`), then drop
    /// the engine without a checkpoint, reopen it and report the log replay (MiB/s).
    Recovery,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Update => "update",
            Workload::Scan => "scan",
            Workload::Mixed => "mixed",
            Workload::Recovery => "recovery",
        }
    }

    pub fn writes(self) -> bool {
        matches!(
            self,
            Workload::Update | Workload::Mixed | Workload::Recovery
        )
    }

    fn pick(self, rng: &mut SmallRng) -> OpKind {
        match self {
            Workload::Read => OpKind::Get,
            Workload::Update | Workload::Recovery => OpKind::Put,
            Workload::Scan => OpKind::Scan,
            Workload::Mixed => {
                let draw = rng.random_range(0..100);
                if draw < MIXED_GET_PERCENT {
                    OpKind::Get
                } else if draw < MIXED_GET_PERCENT + MIXED_PUT_PERCENT {
                    OpKind::Put
                } else {
                    OpKind::Scan
                }
            }
        }
    }
}

/// The kinds of operation a workload mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Get = 0,
    Put = 1,
    Scan = 2,
}

pub const OP_KINDS: [OpKind; 3] = [OpKind::Get, OpKind::Put, OpKind::Scan];

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Scan => "scan",
        }
    }
}

/// How to run a workload.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    pub workload: Workload,
    pub threads: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Keys per lookup: 1 is `get_into`, more is one `multi_get`.
    pub batch: usize,
    pub scan_length: usize,
    pub seed: u64,
    /// Time every this-many-th operation (`LATENCY_SAMPLE_EVERY`, or 1 when writes sync).
    pub latency_sample_every: u64,
}

/// Counters the control thread samples at the start and the end of the measured phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub pool: Option<PoolCounters>,
    pub storage_read_bytes: Option<u64>,
    pub cpu_ns: u64,
    /// Syncs so far (`Store::sync_count`).
    pub syncs: Option<u64>,
    /// The write-ahead log's counters (bufpool).
    pub log: Option<LogStats>,
}

impl Snapshot {
    fn take(store: &dyn Store) -> Snapshot {
        Snapshot {
            pool: store.pool_counters(),
            storage_read_bytes: proc_stats::storage_read_bytes(),
            cpu_ns: proc_stats::process_cpu_ns(),
            syncs: store.sync_count(),
            log: store.log_stats(),
        }
    }
}

/// One thread's (or, merged, the run's) tallies.
#[derive(Debug, Clone)]
pub struct Tally {
    pub ops: [u64; 3],
    pub lookups: u64,
    pub scanned_records: u64,
    /// Sampled latency per operation kind, in nanoseconds.
    pub latency_ns: [Histogram<u64>; 3],
}

impl Tally {
    fn new() -> Tally {
        let histogram = || {
            Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("constant histogram bounds are valid")
        };
        Tally {
            ops: [0; 3],
            lookups: 0,
            scanned_records: 0,
            latency_ns: [histogram(), histogram(), histogram()],
        }
    }

    fn merge(&mut self, other: &Tally) {
        for kind in OP_KINDS {
            let slot = kind as usize;
            self.ops[slot] += other.ops[slot];
            // Same bounds on both sides: adding cannot fail.
            let _ = self.latency_ns[slot].add(&other.latency_ns[slot]);
        }
        self.lookups += other.lookups;
        self.scanned_records += other.scanned_records;
    }

    pub fn total_ops(&self) -> u64 {
        self.ops.iter().sum()
    }

    /// All kinds' sampled latencies together.
    pub fn all_latency_ns(&self) -> Histogram<u64> {
        let mut all = self.latency_ns[0].clone();
        let _ = all.add(&self.latency_ns[1]);
        let _ = all.add(&self.latency_ns[2]);
        all
    }
}

/// The measured phase of a run.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub elapsed: Duration,
    pub tally: Tally,
    pub before: Snapshot,
    pub after: Snapshot,
}

const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

/// Runs `config.workload` on `store` with `config.threads` threads: a warm-up, then the
/// measured phase.
pub fn run(
    store: &dyn Store,
    dataset: &Dataset,
    config: &RunConfig,
) -> Result<Measurement, KvError> {
    assert!(
        config.threads > 0 && config.batch > 0,
        "validated by the CLI"
    );
    let phase = AtomicU8::new(PHASE_WARMUP);
    let failed = AtomicBool::new(false);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..config.threads)
            .map(|thread_index| {
                let (phase, failed) = (&phase, &failed);
                scope.spawn(move || {
                    let mut worker = Worker::new(store, dataset, config, thread_index);
                    let result = worker.run(phase);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result.map(|()| worker.tally)
                })
            })
            .collect();
        let measured = control(store, config, &phase, &failed);
        let mut tally = Tally::new();
        let mut first_error = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(worker_tally)) => tally.merge(&worker_tally),
                Ok(Err(error)) => first_error = first_error.or(Some(error)),
                Err(_) => first_error = first_error.or(Some(KvError::ThreadPanicked)),
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => {
                let (elapsed, before, after) = measured;
                Ok(Measurement {
                    elapsed,
                    tally,
                    before,
                    after,
                })
            }
        }
    })
}

/// Drives the phases; returns the measured time and the snapshots around it.
fn control(
    store: &dyn Store,
    config: &RunConfig,
    phase: &AtomicU8,
    failed: &AtomicBool,
) -> (Duration, Snapshot, Snapshot) {
    wait_unless_failed(config.warmup, failed);
    let before = Snapshot::take(store);
    let start = Instant::now();
    phase.store(PHASE_MEASURE, Ordering::Relaxed);
    wait_unless_failed(config.measure, failed);
    phase.store(PHASE_STOP, Ordering::Relaxed);
    let elapsed = start.elapsed();
    (elapsed, before, Snapshot::take(store))
}

fn wait_unless_failed(duration: Duration, failed: &AtomicBool) {
    let deadline = Instant::now() + duration;
    loop {
        let now = Instant::now();
        if now >= deadline || failed.load(Ordering::Relaxed) {
            return;
        }
        thread::sleep(CONTROL_POLL.min(deadline - now));
    }
}

/// One bench thread: its random stream, its buffers (allocated once) and its tally.
struct Worker<'run> {
    store: &'run dyn Store,
    dataset: &'run Dataset,
    config: &'run RunConfig,
    rng: SmallRng,
    key: Vec<u8>,
    value: Vec<u8>,
    batch_keys: Vec<u8>,
    batch_indexes: Vec<u64>,
    batch_values: Vec<Option<Vec<u8>>>,
    /// Versions written by this thread: thread number in the top 16 bits, a count below.
    version: u64,
    tally: Tally,
}

impl<'run> Worker<'run> {
    fn new(
        store: &'run dyn Store,
        dataset: &'run Dataset,
        config: &'run RunConfig,
        thread_index: usize,
    ) -> Worker<'run> {
        let thread_index = thread_index as u64;
        Worker {
            store,
            dataset,
            config,
            rng: SmallRng::seed_from_u64(config.seed ^ thread_index.wrapping_mul(0x9e37_79b9)),
            key: Vec::with_capacity(dataset.key_size),
            value: Vec::with_capacity(dataset.value_size),
            batch_keys: Vec::with_capacity(dataset.key_size * config.batch),
            batch_indexes: Vec::with_capacity(config.batch),
            batch_values: Vec::with_capacity(config.batch),
            version: thread_index << 48,
            tally: Tally::new(),
        }
    }

    fn run(&mut self, phase: &AtomicU8) -> Result<(), KvError> {
        let mut seen = PHASE_WARMUP;
        let mut op_count: u64 = 0;
        loop {
            let now = phase.load(Ordering::Relaxed);
            if now == PHASE_STOP {
                return Ok(());
            }
            if now != seen {
                // The measured phase starts: forget the warm-up.
                self.tally = Tally::new();
                seen = now;
            }
            let kind = self.config.workload.pick(&mut self.rng);
            let timed = op_count % self.config.latency_sample_every.max(1) == 0;
            let start = timed.then(Instant::now);
            match kind {
                OpKind::Get if self.config.batch > 1 => self.multi_get()?,
                OpKind::Get => self.get()?,
                OpKind::Put => self.put()?,
                OpKind::Scan => self.scan()?,
            }
            if let Some(start) = start {
                let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.tally.latency_ns[kind as usize].saturating_record(nanos.max(1));
            }
            self.tally.ops[kind as usize] += 1;
            op_count += 1;
        }
    }

    fn random_index(&mut self) -> u64 {
        self.rng.random_range(0..self.dataset.records)
    }

    fn get(&mut self) -> Result<(), KvError> {
        let index = self.random_index();
        self.dataset.key_into(index, &mut self.key);
        if !self.store.get_into(&self.key, &mut self.value)? {
            return Err(KvError::WrongValue {
                index,
                detail: "missing",
            });
        }
        self.dataset.check_value(index, &self.value)?;
        self.tally.lookups += 1;
        Ok(())
    }

    fn multi_get(&mut self) -> Result<(), KvError> {
        self.batch_keys.clear();
        self.batch_indexes.clear();
        for _ in 0..self.config.batch {
            let index = self.random_index();
            self.dataset.key_into(index, &mut self.key);
            self.batch_keys.extend_from_slice(&self.key);
            self.batch_indexes.push(index);
        }
        let keys: Vec<&[u8]> = self
            .batch_keys
            .chunks_exact(self.dataset.key_size)
            .collect();
        self.store.multi_get(&keys, &mut self.batch_values)?;
        assert_eq!(self.batch_values.len(), keys.len(), "one value per key");
        for (index, value) in self.batch_indexes.iter().zip(&self.batch_values) {
            let Some(value) = value else {
                return Err(KvError::WrongValue {
                    index: *index,
                    detail: "missing",
                });
            };
            self.dataset.check_value(*index, value)?;
        }
        self.tally.lookups += keys.len() as u64;
        Ok(())
    }

    fn put(&mut self) -> Result<(), KvError> {
        let index = self.random_index();
        self.version += 1;
        self.dataset.key_into(index, &mut self.key);
        self.dataset
            .value_into(index, self.version, &mut self.value);
        self.store.put(&self.key, &self.value)
    }

    fn scan(&mut self) -> Result<(), KvError> {
        let index = self.random_index();
        self.dataset.key_into(index, &mut self.key);
        let mut mismatched = false;
        let visited = self
            .store
            .scan(&self.key, self.config.scan_length, &mut |key, value| {
                // Each record's value starts with the index its key starts with.
                mismatched |= value.get(..8) != key.get(..8);
            })?;
        if mismatched {
            return Err(KvError::WrongValue {
                index,
                detail: "a scanned value does not belong to its key",
            });
        }
        let expected = (self.dataset.records - index).min(self.config.scan_length as u64);
        if visited as u64 != expected {
            return Err(KvError::WrongValue {
                index,
                detail: "scan returned too few records",
            });
        }
        self.tally.scanned_records += visited as u64;
        Ok(())
    }
}
