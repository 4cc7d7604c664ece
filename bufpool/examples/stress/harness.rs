//! The stress harness (shared by `examples/stress` and the CI-sized run in `tests/stress.rs`).
//!
//! Many threads read and write random pages of a file several times larger than the frame
//! budget while reader processes read the same pages through an export (memfd backing).
//! Every page carries its id, a write counter and a CRC32C of the rest, so a torn page (bytes of
//! two versions, or of another page) and a stale page (a counter older than one already
//! committed or seen) are detected. At the end the pool is flushed and the file re-read from
//! disk: every page must hold its last committed counter.

#![allow(dead_code)]

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bufpool::{Backing, Config, ExportedView, PAGE_SIZE, PageId, Pool, Stats, ViewError};
use bufpool_io::{DirectFile, OpenOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::channel;

const COUNTER_AT: usize = 8;
const CHECKSUM_AT: usize = 16;
const BODY_AT: usize = 20;
/// Reads an exported reader repeats on a page that read well before picking another.
const REREADS_PER_PAGE: u32 = 64;

/// Writes page `page` at write counter `counter`: id, counter, checksum, a body that differs
/// for every (page, counter).
pub fn stamp(page: u64, counter: u64, bytes: &mut [u8]) {
    bytes[..COUNTER_AT].copy_from_slice(&page.to_le_bytes());
    bytes[COUNTER_AT..CHECKSUM_AT].copy_from_slice(&counter.to_le_bytes());
    let seed =
        page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ counter.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    for (index, chunk) in bytes[BODY_AT..].chunks_mut(8).enumerate() {
        let word = seed.rotate_left(index as u32 % 64) ^ index as u64;
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    let checksum = checksum(bytes);
    bytes[CHECKSUM_AT..BODY_AT].copy_from_slice(&checksum.to_le_bytes());
}

fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&bytes[..CHECKSUM_AT]), &bytes[BODY_AT..])
}

/// The write counter of a well-formed page `page`, or None if it is torn or foreign.
pub fn check(page: u64, bytes: &[u8]) -> Option<u64> {
    let id = u64::from_le_bytes(bytes[..COUNTER_AT].try_into().ok()?);
    let stored = u32::from_le_bytes(bytes[CHECKSUM_AT..BODY_AT].try_into().ok()?);
    (id == page && stored == checksum(bytes))
        .then(|| u64::from_le_bytes(bytes[COUNTER_AT..CHECKSUM_AT].try_into().expect("8 bytes")))
}

#[derive(Debug, Clone)]
pub struct StressConfig {
    pub seconds: f64,
    /// Threads that mix reads and writes (`write_percent`).
    pub threads: usize,
    /// Threads that only read; the first `lingering_readers` of them linger.
    pub reader_threads: usize,
    pub lingering_readers: usize,
    /// Threads that only write.
    pub writer_threads: usize,
    /// How long a lingering reader (thread or exported process) stays inside its read
    /// closure: it copies the page, waits this long, and copies it again (the late touch that
    /// re-instantiates a frame evicted under it).
    pub linger_micros: u64,
    pub page_count: u64,
    pub frame_count: u64,
    pub eviction_batch: usize,
    pub reader_processes: usize,
    pub write_percent: u32,
    pub data_dir: PathBuf,
}

impl StressConfig {
    /// Mixed threads only, no lingering, eviction batch 32.
    pub fn mixed(threads: usize, page_count: u64, frame_count: u64, data_dir: PathBuf) -> Self {
        StressConfig {
            seconds: 1.0,
            threads,
            reader_threads: 0,
            lingering_readers: 0,
            writer_threads: 0,
            linger_micros: 0,
            page_count,
            frame_count,
            eviction_batch: 32,
            reader_processes: 0,
            write_percent: 20,
            data_dir,
        }
    }
}

/// What a worker thread does.
#[derive(Debug, Clone, Copy)]
enum Role {
    Mixed { write_percent: u32 },
    Reader { linger: Duration },
    Writer,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReaderReport {
    pub reads: u64,
    pub evicted: u64,
    pub busy: u64,
    pub stale_reads: u64,
    pub torn_reads: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackingReport {
    pub backing: Backing,
    pub ops: u64,
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    /// Of `errors`, `PoolError::NoEvictableFrame`.
    pub no_frame_errors: u64,
    pub first_error: Option<String>,
    pub frame_budget_bytes: u64,
    /// The largest kernel count of the frames' memory (`Pool::frame_memory_bytes`: memfd
    /// blocks, or the anonymous region's RSS) among samples taken every 100 ms.
    pub max_frame_bytes_observed: u64,
    pub frame_memory_samples: u64,
    pub stale_reads: u64,
    pub torn_reads: u64,
    pub lost_writes: u64,
    pub exported: ReaderReport,
    pub fault_in_requests_served: u64,
    pub stats: Stats,
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    no_frame_errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    stale: AtomicU64,
    torn: AtomicU64,
}

/// How the pool process starts one exported-reader process given the socket path.
/// Arguments: the socket, the seconds to run, the linger in microseconds.
pub type SpawnReader<'a> = &'a dyn Fn(&Path, f64, u64) -> std::io::Result<Child>;

pub fn run(
    config: &StressConfig,
    backing: Backing,
    spawn_reader: SpawnReader<'_>,
) -> Result<BackingReport, String> {
    let run = next_run();
    let path = config.data_dir.join(format!(
        "stress-{backing:?}-{}-{run}.db",
        std::process::id()
    ));
    write_initial_file(&path, config.page_count)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let pool_config = Config {
        page_count_max: config.page_count.next_power_of_two(),
        frame_budget_bytes: config.frame_count * PAGE_SIZE as u64,
        backing,
        eviction_batch: config.eviction_batch,
        ..Config::default()
    };
    let file =
        DirectFile::open(&path, &OpenOptions::default()).map_err(|error| error.to_string())?;
    let pool = Arc::new(Pool::open(file, pool_config).map_err(|error| error.to_string())?);
    let committed: Arc<Vec<AtomicU64>> =
        Arc::new((0..config.page_count).map(|_| AtomicU64::new(0)).collect());
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));

    let (readers, servers) = if backing == Backing::Memfd && config.reader_processes > 0 {
        start_exported_readers(config, &pool, spawn_reader)?
    } else {
        (Vec::new(), Vec::new())
    };
    let linger = Duration::from_micros(config.linger_micros);
    let roles = (0..config.threads)
        .map(|_| Role::Mixed {
            write_percent: config.write_percent,
        })
        .chain((0..config.reader_threads).map(|reader| Role::Reader {
            linger: if reader < config.lingering_readers {
                linger
            } else {
                Duration::ZERO
            },
        }))
        .chain((0..config.writer_threads).map(|_| Role::Writer));
    let workers: Vec<_> = roles
        .enumerate()
        .map(|(thread, role)| {
            let (pool, committed, tally, stop) =
                (pool.clone(), committed.clone(), tally.clone(), stop.clone());
            std::thread::spawn(move || {
                worker(thread as u64, &pool, &committed, &tally, &stop, role)
            })
        })
        .collect();
    let sampler = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || sample_frame_memory(&pool, &stop))
    };
    std::thread::sleep(Duration::from_secs_f64(config.seconds));
    stop.store(true, Ordering::Relaxed);
    workers
        .into_iter()
        .for_each(|worker| worker.join().expect("worker panicked"));
    let (max_frame_bytes_observed, frame_memory_samples) =
        sampler.join().expect("sampler panicked")?;
    let exported = collect_readers(readers)?;
    let fault_in_requests_served = servers
        .into_iter()
        .map(|server| server.join().expect("server panicked"))
        .sum();

    pool.flush()
        .map_err(|error| format!("final flush: {error}"))?;
    let stats = pool.stats();
    drop(pool);
    let lost_writes = verify_on_disk(&path, &committed)?;
    let _ = std::fs::remove_file(&path);
    Ok(BackingReport {
        backing,
        ops: tally.ops.load(Ordering::Relaxed) + exported.reads,
        reads: tally.reads.load(Ordering::Relaxed),
        writes: tally.writes.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        no_frame_errors: tally.no_frame_errors.load(Ordering::Relaxed),
        first_error: tally.first_error.lock().expect("tally lock").clone(),
        frame_budget_bytes: config.frame_count * PAGE_SIZE as u64,
        max_frame_bytes_observed,
        frame_memory_samples,
        stale_reads: tally.stale.load(Ordering::Relaxed) + exported.stale_reads,
        torn_reads: tally.torn.load(Ordering::Relaxed) + exported.torn_reads,
        lost_writes,
        exported,
        fault_in_requests_served,
        stats,
    })
}

/// A number unique in this process, so that runs in parallel (tests) use distinct files.
fn next_run() -> u64 {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    RUNS.fetch_add(1, Ordering::Relaxed)
}

fn write_initial_file(path: &Path, page_count: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = vec![0u8; PAGE_SIZE];
    for page in 0..page_count {
        stamp(page, 0, &mut bytes);
        file.write_all(&bytes)?;
    }
    file.into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()
}

/// Samples `Pool::frame_memory_bytes` every 100 ms until `stop`; returns the largest value
/// and the number of samples.
fn sample_frame_memory(pool: &Pool, stop: &AtomicBool) -> Result<(u64, u64), String> {
    let mut max = 0;
    let mut samples = 0;
    while !stop.load(Ordering::Relaxed) {
        let bytes = pool
            .frame_memory_bytes()
            .map_err(|error| error.to_string())?;
        max = max.max(bytes);
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((max, samples))
}

fn worker(
    thread: u64,
    pool: &Pool,
    committed: &[AtomicU64],
    tally: &Tally,
    stop: &AtomicBool,
    role: Role,
) {
    let mut rng = SmallRng::seed_from_u64(thread.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ 0xB0F);
    let mut bytes = vec![0u8; PAGE_SIZE];
    while !stop.load(Ordering::Relaxed) {
        let page = rng.gen_range(0..committed.len() as u64);
        let outcome = match role {
            Role::Mixed { write_percent } if rng.gen_range(0..100) < write_percent => {
                write_page(pool, page, committed, tally)
            }
            Role::Mixed { .. } => {
                read_page(pool, page, committed, tally, &mut bytes, Duration::ZERO)
            }
            Role::Reader { linger } => read_page(pool, page, committed, tally, &mut bytes, linger),
            Role::Writer => write_page(pool, page, committed, tally),
        };
        if let Err(error) = outcome {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            if matches!(error, bufpool::PoolError::NoEvictableFrame { .. }) {
                tally.no_frame_errors.fetch_add(1, Ordering::Relaxed);
            }
            let mut first = tally.first_error.lock().expect("tally lock");
            first.get_or_insert_with(|| error.to_string());
        }
        tally.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies the page, and when lingering waits and copies it again (the second copy is what
/// is checked and validated: a late touch of a page evicted meanwhile).
fn copy_lingering(view: &bufpool::PageView<'_>, bytes: &mut [u8], linger: Duration) {
    view.copy_to(0, bytes);
    if !linger.is_zero() {
        std::thread::sleep(linger);
        view.copy_to(0, bytes);
    }
}

fn write_page(
    pool: &Pool,
    page: u64,
    committed: &[AtomicU64],
    tally: &Tally,
) -> Result<(), bufpool::PoolError> {
    let floor = committed[page as usize].load(Ordering::Acquire);
    let mut guard = pool.exclusive(PageId(page))?;
    let counter = match check(page, &guard) {
        Some(counter) => counter,
        None => {
            tally.torn.fetch_add(1, Ordering::Relaxed);
            floor
        }
    };
    if counter < floor {
        tally.stale.fetch_add(1, Ordering::Relaxed);
    }
    let next = counter.max(floor) + 1;
    stamp(page, next, &mut guard);
    drop(guard);
    committed[page as usize].fetch_max(next, Ordering::AcqRel);
    tally.writes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn read_page(
    pool: &Pool,
    page: u64,
    committed: &[AtomicU64],
    tally: &Tally,
    bytes: &mut [u8],
    linger: Duration,
) -> Result<(), bufpool::PoolError> {
    let floor = committed[page as usize].load(Ordering::Acquire);
    pool.read(PageId(page), |view| copy_lingering(view, bytes, linger))?;
    match check(page, bytes) {
        None => tally.torn.fetch_add(1, Ordering::Relaxed),
        Some(counter) if counter < floor => tally.stale.fetch_add(1, Ordering::Relaxed),
        Some(_) => tally.reads.fetch_add(1, Ordering::Relaxed),
    };
    Ok(())
}

type Readers = (Vec<Child>, Vec<std::thread::JoinHandle<u64>>);

fn start_exported_readers(
    config: &StressConfig,
    pool: &Arc<Pool>,
    spawn_reader: SpawnReader<'_>,
) -> Result<Readers, String> {
    let socket = config
        .data_dir
        .join(format!("stress-{}-{}.sock", std::process::id(), next_run()));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|error| format!("bind {}: {error}", socket.display()))?;
    let mut children = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..config.reader_processes {
        let child = spawn_reader(&socket, config.seconds, config.linger_micros)
            .map_err(|error| format!("spawn reader: {error}"))?;
        children.push(child);
        let export = pool.export().map_err(|error| error.to_string())?;
        let stream = channel::send_export(&listener, &export, pool.page_count())
            .map_err(|error| format!("send export: {error}"))?;
        let pool = pool.clone();
        servers.push(std::thread::spawn(move || {
            channel::serve_fault_ins(stream, &pool)
        }));
    }
    let _ = std::fs::remove_file(&socket);
    Ok((children, servers))
}

fn collect_readers(children: Vec<Child>) -> Result<ReaderReport, String> {
    let mut total = ReaderReport::default();
    for child in children {
        let output = child
            .wait_with_output()
            .map_err(|error| error.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The report is the last JSON object printed (a test harness may prefix the line).
        let line = stdout
            .lines()
            .rev()
            .find_map(|line| line.find('{').map(|start| &line[start..]))
            .ok_or_else(|| {
                format!(
                    "reader process printed no report ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
        let report: ReaderReport = serde_json::from_str(line).map_err(|error| error.to_string())?;
        total.reads += report.reads;
        total.evicted += report.evicted;
        total.busy += report.busy;
        total.stale_reads += report.stale_reads;
        total.torn_reads += report.torn_reads;
    }
    Ok(total)
}

/// Re-reads the flushed file through a fresh pool; returns pages whose counter is not the
/// last committed one (or that are torn).
fn verify_on_disk(path: &Path, committed: &[AtomicU64]) -> Result<u64, String> {
    let file =
        DirectFile::open(path, &OpenOptions::default()).map_err(|error| error.to_string())?;
    let config = Config {
        page_count_max: (committed.len() as u64).next_power_of_two(),
        frame_budget_bytes: 1 << 20,
        ..Config::default()
    };
    let pool = Pool::open(file, config).map_err(|error| error.to_string())?;
    let mut bytes = vec![0u8; PAGE_SIZE];
    let mut lost = 0;
    for (page, counter) in committed.iter().enumerate() {
        pool.read(PageId(page as u64), |view| view.copy_to(0, &mut bytes))
            .map_err(|error| error.to_string())?;
        if check(page as u64, &bytes) != Some(counter.load(Ordering::Relaxed)) {
            lost += 1;
        }
    }
    Ok(lost)
}

/// The exported-reader process: receives the export over `socket`, reads random pages for
/// `seconds`, asks the pool to fault in the evicted ones, and prints its report as JSON.
pub fn reader_process(
    socket: &Path,
    seconds: f64,
    linger_micros: u64,
) -> Result<ReaderReport, String> {
    let linger = Duration::from_micros(linger_micros);
    let (mut stream, export, page_count) =
        channel::receive_export(socket).map_err(|error| format!("receive export: {error}"))?;
    let view = ExportedView::open(export).map_err(|error| error.to_string())?;
    let mut last_seen = vec![0u64; page_count as usize];
    let mut rng = SmallRng::seed_from_u64(std::process::id().into());
    let mut bytes = vec![0u8; PAGE_SIZE];
    let mut report = ReaderReport::default();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut page = 0;
    let mut rereads_left = 0;
    while Instant::now() < deadline {
        // Stay on a page that read well for a while: readers that linger on resident pages
        // are the ones an eviction catches mid-read (the refaults step 5 exists for).
        if rereads_left == 0 {
            page = rng.gen_range(0..page_count);
        }
        rereads_left = match view.read(PageId(page), |view| {
            copy_lingering(view, &mut bytes, linger)
        }) {
            Ok(()) => {
                match check(page, &bytes) {
                    None => report.torn_reads += 1,
                    Some(counter) if counter < last_seen[page as usize] => report.stale_reads += 1,
                    Some(counter) => {
                        last_seen[page as usize] = counter;
                        report.reads += 1;
                    }
                }
                if rereads_left == 0 {
                    REREADS_PER_PAGE
                } else {
                    rereads_left - 1
                }
            }
            Err(ViewError::Evicted(page)) => {
                report.evicted += 1;
                channel::request_fault_in(&mut stream, page).map_err(|error| error.to_string())?;
                0
            }
            Err(ViewError::Busy(_)) => {
                report.busy += 1;
                0
            }
            Err(error) => return Err(error.to_string()),
        };
    }
    Ok(report)
}

/// The totals over every backing, plus the per-backing reports.
pub fn summarise(reports: &[BackingReport]) -> serde_json::Value {
    let sum = |field: fn(&BackingReport) -> u64| reports.iter().map(field).sum::<u64>();
    serde_json::json!({
        "ops": sum(|report| report.ops),
        "stale_reads": sum(|report| report.stale_reads),
        "torn_reads": sum(|report| report.torn_reads),
        "lost_writes": sum(|report| report.lost_writes),
        "errors": sum(|report| report.errors),
        "refault_retries": sum(|report| report.stats.refault_retries),
        "evictions": sum(|report| report.stats.evictions),
        "shootdowns": sum(|report| report.stats.shootdowns),
        "exported_reads": sum(|report| report.exported.reads),
        "no_frame_errors": sum(|report| report.no_frame_errors),
        "frame_budget_bytes": reports.iter().map(|report| report.frame_budget_bytes).max(),
        "max_frame_bytes_observed": reports.iter().map(|report| report.max_frame_bytes_observed).max(),
        "backings": reports,
    })
}

/// True when no stale, torn or lost page and no error was seen.
pub fn clean(reports: &[BackingReport]) -> bool {
    reports.iter().all(|report| {
        report.stale_reads == 0
            && report.torn_reads == 0
            && report.lost_writes == 0
            && report.errors == 0
    })
}
