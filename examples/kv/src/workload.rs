//! The bench workloads and the threads that run them.
//!
//! Each thread draws record indexes from the run's distribution (`--distribution`: uniform for
//! the classic workloads, YCSB's choosers for `ycsb-*`, see `ycsb.rs`) with its own `SmallRng`,
//! seeded from the run's seed and the thread number, so every engine gets the same operation
//! stream per thread; it runs operations until told to stop and tallies them locally. Nothing
//! is shared between threads on the hot path but the phase word and, for inserts, the insert
//! counter. Every read is checked: a lookup's value must be its record's, a scan must return
//! the consecutive records from its start key. Latency is
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
use crate::ycsb::{Core, Distribution, InsertCounter, KeyChooser};

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
    /// YCSB A: 50% reads, 50% updates (zipfian).
    #[value(name = "ycsb-a")]
    YcsbA,
    /// YCSB B: 95% reads, 5% updates (zipfian).
    #[value(name = "ycsb-b")]
    YcsbB,
    /// YCSB C: reads only (zipfian).
    #[value(name = "ycsb-c")]
    YcsbC,
    /// YCSB D: 95% reads of the latest records, 5% inserts (latest).
    #[value(name = "ycsb-d")]
    YcsbD,
    /// YCSB E: 95% scans of 1..=--scan-length records, 5% inserts (zipfian).
    #[value(name = "ycsb-e")]
    YcsbE,
    /// YCSB F: 50% reads, 50% read-modify-writes (zipfian).
    #[value(name = "ycsb-f")]
    YcsbF,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Update => "update",
            Workload::Scan => "scan",
            Workload::Mixed => "mixed",
            Workload::Recovery => "recovery",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
        }
    }

    /// The YCSB core workload this is, if any.
    pub fn ycsb(self) -> Option<Core> {
        match self {
            Workload::YcsbA => Some(Core::A),
            Workload::YcsbB => Some(Core::B),
            Workload::YcsbC => Some(Core::C),
            Workload::YcsbD => Some(Core::D),
            Workload::YcsbE => Some(Core::E),
            Workload::YcsbF => Some(Core::F),
            _ => None,
        }
    }

    pub fn writes(self) -> bool {
        match self.ycsb() {
            Some(core) => core != Core::C,
            None => matches!(
                self,
                Workload::Update | Workload::Mixed | Workload::Recovery
            ),
        }
    }

    /// Without `--distribution`: uniform for the classic workloads (the vmcache lookup
    /// shape), YCSB's own for `ycsb-*` (zipfian; latest for D).
    pub fn default_distribution(self) -> Distribution {
        self.ycsb()
            .map_or(Distribution::Uniform, Core::default_distribution)
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
            _ => {
                let mix = self.ycsb().expect("the other workloads are YCSB's").mix();
                let mut draw = rng.random_range(0..100);
                let shares = [
                    (mix.read, OpKind::Get),
                    (mix.update, OpKind::Put),
                    (mix.insert, OpKind::Insert),
                    (mix.scan, OpKind::Scan),
                ];
                for (share, kind) in shares {
                    if draw < share {
                        return kind;
                    }
                    draw -= share;
                }
                OpKind::ReadModifyWrite
            }
        }
    }
}

/// The kinds of operation a workload mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A point read (YCSB's read).
    Get = 0,
    /// Replacing an existing record's value (YCSB's update).
    Put = 1,
    Scan = 2,
    /// A new record beyond the loaded ones.
    Insert = 3,
    /// A read and then an update of the same record (YCSB's read-modify-write).
    ReadModifyWrite = 4,
}

const KIND_COUNT: usize = 5;

pub const OP_KINDS: [OpKind; KIND_COUNT] = [
    OpKind::Get,
    OpKind::Put,
    OpKind::Scan,
    OpKind::Insert,
    OpKind::ReadModifyWrite,
];

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Scan => "scan",
            OpKind::Insert => "insert",
            OpKind::ReadModifyWrite => "rmw",
        }
    }

    /// Whether the operation commits a write.
    pub fn writes(self) -> bool {
        matches!(self, OpKind::Put | OpKind::Insert | OpKind::ReadModifyWrite)
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
    /// Records per scan (`ycsb-e`: the longest, lengths uniform in 1..=this).
    pub scan_length: usize,
    pub distribution: Distribution,
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
    pub ops: [u64; KIND_COUNT],
    pub lookups: u64,
    pub scanned_records: u64,
    /// Sampled latency per operation kind, in nanoseconds.
    pub latency_ns: [Histogram<u64>; KIND_COUNT],
}

impl Tally {
    fn new() -> Tally {
        let histogram = || {
            Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("constant histogram bounds are valid")
        };
        Tally {
            ops: [0; KIND_COUNT],
            lookups: 0,
            scanned_records: 0,
            latency_ns: std::array::from_fn(|_| histogram()),
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
        for histogram in &self.latency_ns[1..] {
            let _ = all.add(histogram);
        }
        all
    }

    /// Operations that committed a write.
    pub fn writes(&self) -> u64 {
        OP_KINDS
            .iter()
            .filter(|kind| kind.writes())
            .map(|kind| self.ops[*kind as usize])
            .sum()
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
    let inserts = InsertCounter::new(dataset.records);
    // Built once (`latest` sums zeta over the records), cloned into each thread.
    let chooser = KeyChooser::new(config.distribution, dataset.records);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..config.threads)
            .map(|thread_index| {
                let (phase, failed, inserts) = (&phase, &failed, &inserts);
                let chooser = chooser.clone();
                scope.spawn(move || {
                    let mut worker =
                        Worker::new(store, dataset, config, thread_index, chooser, inserts);
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
    chooser: KeyChooser,
    inserts: &'run InsertCounter,
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
        chooser: KeyChooser,
        inserts: &'run InsertCounter,
    ) -> Worker<'run> {
        let thread_index = thread_index as u64;
        Worker {
            store,
            dataset,
            config,
            rng: SmallRng::seed_from_u64(config.seed ^ thread_index.wrapping_mul(0x9e37_79b9)),
            chooser,
            inserts,
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
                OpKind::Insert => self.insert()?,
                OpKind::ReadModifyWrite => self.read_modify_write()?,
            }
            if let Some(start) = start {
                let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.tally.latency_ns[kind as usize].saturating_record(nanos.max(1));
            }
            self.tally.ops[kind as usize] += 1;
            op_count += 1;
        }
    }

    /// A record known to be in the store: loaded, or inserted by an insert that returned.
    fn random_index(&mut self) -> u64 {
        let limit = self.inserts.limit();
        self.chooser.choose(&mut self.rng, limit)
    }

    fn get(&mut self) -> Result<(), KvError> {
        let index = self.random_index();
        self.get_checked(index)
    }

    fn get_checked(&mut self, index: u64) -> Result<(), KvError> {
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
        self.update(index)
    }

    fn update(&mut self, index: u64) -> Result<(), KvError> {
        self.version += 1;
        self.dataset.key_into(index, &mut self.key);
        self.dataset
            .value_into(index, self.version, &mut self.value);
        self.store.put(&self.key, &self.value)
    }

    /// A new record past the loaded ones (version 0, as loaded records start).
    fn insert(&mut self) -> Result<(), KvError> {
        let index = self.inserts.allocate();
        self.dataset.key_into(index, &mut self.key);
        self.dataset.value_into(index, 0, &mut self.value);
        self.store.put(&self.key, &self.value)?;
        self.inserts.acknowledge(index);
        Ok(())
    }

    fn read_modify_write(&mut self) -> Result<(), KvError> {
        let index = self.random_index();
        self.get_checked(index)?;
        self.update(index)
    }

    /// Checks the records a scan from `index` visits: the ones below the insert limit at its
    /// start are all there, consecutive; past it, inserts in flight may or may not show (and
    /// a reused database may hold an earlier run's inserts), but every value must still
    /// belong to its key.
    fn scan(&mut self) -> Result<(), KvError> {
        let limit = self.inserts.limit();
        let index = self.chooser.choose(&mut self.rng, limit);
        let length = match self.config.workload.ycsb() {
            Some(_) => self.rng.random_range(1..=self.config.scan_length),
            None => self.config.scan_length,
        };
        self.dataset.key_into(index, &mut self.key);
        let (mut mismatched, mut out_of_order) = (false, false);
        let mut expected_next = index;
        let visited = self.store.scan(&self.key, length, &mut |key, value| {
            // Each record's value starts with the index its key starts with.
            mismatched |= value.get(..8) != key.get(..8);
            let found = key
                .first_chunk::<8>()
                .map_or(u64::MAX, |head| u64::from_be_bytes(*head));
            if expected_next < limit {
                out_of_order |= found != expected_next;
                expected_next += 1;
            } else {
                out_of_order |= found < limit;
            }
        })?;
        if mismatched {
            return Err(KvError::WrongValue {
                index,
                detail: "a scanned value does not belong to its key",
            });
        }
        if out_of_order {
            return Err(KvError::WrongValue {
                index,
                detail: "scan skipped or repeated a record",
            });
        }
        let at_least = (limit - index).min(length as u64);
        if (visited as u64) < at_least || visited > length {
            return Err(KvError::WrongValue {
                index,
                detail: "scan returned the wrong number of records",
            });
        }
        self.tally.scanned_records += visited as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycsb_mixes_come_out_in_their_proportions() {
        const DRAWS: u32 = 100_000;
        let workloads = [
            Workload::YcsbA,
            Workload::YcsbB,
            Workload::YcsbC,
            Workload::YcsbD,
            Workload::YcsbE,
            Workload::YcsbF,
        ];
        for workload in workloads {
            let mut rng = SmallRng::seed_from_u64(9);
            let mut counts = [0u32; KIND_COUNT];
            for _ in 0..DRAWS {
                counts[workload.pick(&mut rng) as usize] += 1;
            }
            let mix = workload.ycsb().expect("a YCSB workload").mix();
            let expected = [
                (OpKind::Get, mix.read),
                (OpKind::Put, mix.update),
                (OpKind::Scan, mix.scan),
                (OpKind::Insert, mix.insert),
                (OpKind::ReadModifyWrite, mix.read_modify_write),
            ];
            for (kind, percent) in expected {
                let share = f64::from(counts[kind as usize]) * 100.0 / f64::from(DRAWS);
                assert!(
                    (share - f64::from(percent)).abs() < 0.5,
                    "{} {}: {share}% for {percent}%",
                    workload.name(),
                    kind.name()
                );
            }
        }
    }

    #[test]
    fn only_ycsb_c_of_the_ycsb_workloads_is_read_only() {
        assert!(!Workload::YcsbC.writes());
        assert!(Workload::YcsbD.writes() && Workload::YcsbE.writes());
        assert_eq!(Workload::YcsbD.default_distribution(), Distribution::Latest);
        assert_eq!(Workload::Read.default_distribution(), Distribution::Uniform);
    }
}
