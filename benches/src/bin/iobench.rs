//! iobench: one fio-like job through bufpool-io, for comparison with fio on the same file.
//!
//! Each thread owns an `IoQueue` and keeps `--iodepth` requests in flight, replacing each one
//! as it completes (one `io_uring_enter` both submits the replacements and waits for the next
//! completion). Reports IOPS, MiB/s, mean and p99 latency, and CPU time (user + system, from
//! getrusage over the measured phase) per I/O.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bufpool_benches::{AlignedBuffer, CpuTime, FastRandom, parse_size};
use bufpool_io::{
    Completion, DirectFile, EngineChoice, IoConfig, IoEngine, IoRequest, OpenOptions,
};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pattern {
    Randread,
    Randwrite,
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    Uring,
    Sync,
}

/// Run one fio-like job through bufpool-io's engine.
#[derive(Debug, Parser)]
#[command(name = "iobench")]
struct Args {
    /// The data file (created and filled when missing or too small). Not on tmpfs.
    #[arg(long, default_value = "target/iobench.data")]
    file: PathBuf,
    /// File size (k, m, g units, binary like fio).
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    size: u64,
    /// Block size of every request.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    bs: u64,
    #[arg(long, value_enum, default_value = "randread")]
    rw: Pattern,
    /// Requests each thread keeps in flight.
    #[arg(long, default_value_t = 1)]
    iodepth: u32,
    #[arg(long, default_value_t = 1)]
    threads: u32,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, value_enum, default_value = "uring")]
    engine: Engine,
    /// Hand requests to the kernel as soon as this many are queued (0: once per reap).
    #[arg(long, default_value_t = bufpool_io::DEFAULT_SUBMIT_BATCH)]
    submit_batch: usize,
    /// Seed of the random offsets (default: a fresh one per run, like fio's randrepeat=0, so
    /// repeated runs never re-read the blocks a host-side cache kept from the last run).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

/// What one thread measured.
struct ThreadResult {
    ios: u64,
    latency_ns: Histogram<u64>,
}

/// Upper bound of recorded latencies (60 s); larger values are clamped.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

fn main() -> ExitCode {
    let mut args = Args::parse();
    // Resolved once, so every thread derives its stream from the same run seed.
    args.seed.get_or_insert_with(fresh_seed);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("iobench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    validate(args)?;
    let choice = match args.engine {
        Engine::Uring => EngineChoice::Uring,
        Engine::Sync => EngineChoice::Sync,
    };
    let ring_entries = args.iodepth.max(8);
    let engine = IoEngine::new(IoConfig {
        engine: choice,
        ring_entries,
        ..IoConfig::default()
    })
    .map_err(|error| error.to_string())?;
    let file = prepare_file(&engine, &args.file, args.size)?;
    if args.engine == Engine::Sync && args.iodepth > 1 {
        eprintln!(
            "iobench: note: the sync engine runs each thread at queue depth 1 (like fio's psync)"
        );
    }
    let cpu_start = CpuTime::now();
    let wall_start = Instant::now();
    let results: Vec<Result<ThreadResult, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.threads)
            .map(|thread| {
                let (engine, file) = (engine.clone(), &file);
                scope.spawn(move || run_thread(args, &engine, file, thread))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err("a thread panicked".into()))
            })
            .collect()
    });
    let wall = wall_start.elapsed();
    let cpu = CpuTime::now().since(cpu_start);
    let mut latency_ns = new_histogram();
    let mut ios = 0;
    for result in results {
        let result = result?;
        ios += result.ios;
        latency_ns
            .add(&result.latency_ns)
            .map_err(|error| error.to_string())?;
    }
    report(args, ios, wall, cpu, &latency_ns);
    Ok(())
}

fn validate(args: &Args) -> Result<(), String> {
    if args.bs == 0 || args.bs % 4096 != 0 {
        return Err(format!(
            "--bs {} must be a positive multiple of 4096 (O_DIRECT)",
            args.bs
        ));
    }
    if args.size < args.bs * u64::from(args.threads) {
        return Err(format!(
            "--size {} is smaller than one block per thread",
            args.size
        ));
    }
    if args.iodepth == 0 || args.threads == 0 || args.seconds <= 0.0 {
        return Err("--iodepth, --threads and --seconds must be positive".into());
    }
    Ok(())
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Opens the file, creating and filling it (sequential 1 MiB writes, QD 8) when it is missing
/// or shorter than `size`. Filled with non-zero bytes so no layer can short-cut zeros.
fn prepare_file(engine: &IoEngine, path: &PathBuf, size: u64) -> Result<DirectFile, String> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("{}: {error}", parent.display()))?;
    }
    let options = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    let file = DirectFile::open(path, &options).map_err(|error| error.to_string())?;
    let existing = file.len().map_err(|error| error.to_string())?;
    if existing >= size {
        return Ok(file);
    }
    eprintln!("iobench: filling {} to {} MiB", path.display(), size >> 20);
    const FILL_BLOCK: u64 = 1 << 20;
    const FILL_DEPTH: u64 = 8;
    let mut buffer = AlignedBuffer::new((FILL_BLOCK * FILL_DEPTH) as usize);
    let mut random = FastRandom::new(0xF11E);
    for chunk in buffer.as_mut_slice().chunks_mut(8) {
        chunk.copy_from_slice(&random.next_u64().to_le_bytes());
    }
    let start = existing / FILL_BLOCK * FILL_BLOCK;
    let mut queue = engine
        .queue(&file, FILL_DEPTH as u32)
        .map_err(|error| error.to_string())?;
    let mut completions = Vec::new();
    let mut offset = start;
    while offset < size || queue.in_flight() > 0 {
        while offset < size && queue.in_flight() < queue.depth() {
            let slot = (offset / FILL_BLOCK) % FILL_DEPTH;
            let len = FILL_BLOCK.min(size - offset).next_multiple_of(4096);
            let request = IoRequest::write(
                offset,
                buffer
                    .as_mut_ptr()
                    .wrapping_add((slot * FILL_BLOCK) as usize),
                len as usize,
            );
            // SAFETY: `buffer` outlives the queue and writes only read it.
            unsafe { queue.push(request, offset) }.map_err(|error| error.to_string())?;
            offset += len;
        }
        queue.reap(1, &mut completions);
        for completion in completions.drain(..) {
            completion.result.map_err(|error| error.to_string())?;
        }
    }
    drop(queue);
    file.sync_data().map_err(|error| error.to_string())?;
    Ok(file)
}

/// A seed for a run without `--seed`: the clock and the process id.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Where the next request of one thread goes.
struct OffsetStream {
    random: Option<FastRandom>,
    blocks: u64,
    block_bytes: u64,
    next_block: u64,
    first_block: u64,
}

impl OffsetStream {
    fn new(args: &Args, thread: u32) -> OffsetStream {
        let blocks = args.size / args.bs;
        let random = matches!(args.rw, Pattern::Randread | Pattern::Randwrite)
            .then(|| FastRandom::new(args.seed.unwrap_or_default() ^ (u64::from(thread) + 1)));
        // Sequential threads start spread over the file so they do not read the same blocks.
        let first_block = blocks / u64::from(args.threads) * u64::from(thread);
        OffsetStream {
            random,
            blocks,
            block_bytes: args.bs,
            next_block: first_block,
            first_block,
        }
    }

    fn next(&mut self) -> u64 {
        let block = match &mut self.random {
            Some(random) => random.below(self.blocks),
            None => {
                let block = self.next_block;
                self.next_block = if block + 1 >= self.blocks {
                    0
                } else {
                    block + 1
                };
                block
            }
        };
        debug_assert!(self.first_block < self.blocks);
        block * self.block_bytes
    }
}

/// One thread: keep `iodepth` requests in flight until the deadline, then drain.
fn run_thread(
    args: &Args,
    engine: &IoEngine,
    file: &DirectFile,
    thread: u32,
) -> Result<ThreadResult, String> {
    // The sync engine completes each request inside `push`: more than one slot would only
    // add the time a finished request waits for its reap to its latency.
    let depth_requested = match args.engine {
        Engine::Uring => args.iodepth,
        Engine::Sync => 1,
    };
    let depth = depth_requested as usize;
    let block = args.bs as usize;
    let buffer = AlignedBuffer::new(depth * block);
    let write = matches!(args.rw, Pattern::Randwrite | Pattern::Write);
    let mut offsets = OffsetStream::new(args, thread);
    let mut queue = engine
        .queue(file, depth_requested)
        .map_err(|error| error.to_string())?;
    queue.set_submit_batch(args.submit_batch);
    let mut started_at = vec![Instant::now(); depth];
    let mut completions: Vec<Completion> = Vec::with_capacity(depth);
    let mut latency_ns = new_histogram();
    let mut ios = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut push = |queue: &mut bufpool_io::IoQueue<'_>, slot: usize| -> Result<(), String> {
        let buf = buffer.as_mut_ptr().wrapping_add(slot * block);
        let offset = offsets.next();
        let request = if write {
            IoRequest::write(offset, buf, block)
        } else {
            IoRequest::read(offset, buf, block)
        };
        // SAFETY: slot `slot` of `buffer` belongs to this one request until it completes, and
        // `buffer` outlives the queue (declared before it).
        unsafe { queue.push(request, slot as u64) }.map_err(|error| error.to_string())
    };
    let now = Instant::now();
    started_at.fill(now);
    for slot in 0..depth {
        push(&mut queue, slot)?;
    }
    // Each pass reaps at least one completion; after the deadline nothing is pushed, so the
    // queue drains and the loop ends.
    while queue.in_flight() > 0 {
        queue.reap(1, &mut completions);
        let now = Instant::now();
        let running = now < deadline;
        for completion in completions.drain(..) {
            completion.result.map_err(|error| error.to_string())?;
            let slot = completion.tag as usize;
            let elapsed_ns = now.duration_since(started_at[slot]).as_nanos() as u64;
            latency_ns.saturating_record(elapsed_ns.clamp(1, LATENCY_NS_MAX));
            ios += 1;
            if running {
                started_at[slot] = now;
                push(&mut queue, slot)?;
            }
        }
    }
    Ok(ThreadResult { ios, latency_ns })
}

fn report(args: &Args, ios: u64, wall: Duration, cpu: CpuTime, latency_ns: &Histogram<u64>) {
    let seconds = wall.as_secs_f64();
    let iops = ios as f64 / seconds;
    let mib_per_s = iops * args.bs as f64 / f64::from(1 << 20);
    let lat_mean_us = latency_ns.mean() / 1000.0;
    let lat_p99_us = latency_ns.value_at_quantile(0.99) as f64 / 1000.0;
    let cpu_us_per_io = if ios == 0 {
        0.0
    } else {
        cpu.total().as_secs_f64() * 1e6 / ios as f64
    };
    let rw = format!("{:?}", args.rw).to_lowercase();
    let engine = format!("{:?}", args.engine).to_lowercase();
    if args.json {
        let object = serde_json::json!({
            "engine": engine, "rw": rw, "bs": args.bs, "iodepth": args.iodepth, "threads": args.threads,
            "runtime_s": seconds, "ios": ios, "iops": iops, "mib_per_s": mib_per_s,
            "lat_mean_us": lat_mean_us, "lat_p99_us": lat_p99_us,
            "usr_s": cpu.user.as_secs_f64(), "sys_s": cpu.system.as_secs_f64(), "cpu_us_per_io": cpu_us_per_io,
        });
        println!("{object}");
        return;
    }
    println!(
        "iobench {rw} bs={} iodepth={} threads={} engine={engine} file={}",
        args.bs,
        args.iodepth,
        args.threads,
        args.file.display()
    );
    println!("  {ios} I/Os in {seconds:.2} s: {iops:.0} IOPS, {mib_per_s:.1} MiB/s");
    println!("  latency: mean {lat_mean_us:.1} us, p99 {lat_p99_us:.1} us");
    println!(
        "  CPU: user {:.2} s + sys {:.2} s = {cpu_us_per_io:.2} us per I/O",
        cpu.user.as_secs_f64(),
        cpu.system.as_secs_f64()
    );
}
