//! Stress run: `cargo run --release -p bufpool --example stress -- --seconds S --json`.
//!
//! Runs the harness on both backings (or one, `--backing`), with exported readers in other
//! processes on the memfd backing. The last line (with `--json`) is one JSON object with the
//! totals (`ops`, `stale_reads`, `torn_reads`, `refault_retries`, `evictions`, `shootdowns`,
//! `no_frame_errors`, `frame_budget_bytes`, `max_frame_bytes_observed` (the kernel's count of
//! the frames' memory, sampled every 100 ms), ...) and the per-backing reports. Exits non-zero if any stale, torn or lost page was seen.

#[path = "../shared/channel.rs"]
mod channel;
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bufpool::Backing;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "Stress the buffer pool: concurrent reads and writes, eviction, exported readers"
)]
struct Arguments {
    /// Seconds per backing.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// In-process worker threads mixing reads and writes.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// In-process threads that only read.
    #[arg(long, default_value_t = 0)]
    reader_threads: usize,
    /// How many of the reader threads linger inside their read closure.
    #[arg(long, default_value_t = 0)]
    lingering_readers: usize,
    /// In-process threads that only write.
    #[arg(long, default_value_t = 0)]
    writer_threads: usize,
    /// Microseconds a lingering reader (thread, or exported-reader process) stays inside its
    /// read closure: copy, wait, copy again.
    #[arg(long, default_value_t = 0)]
    linger_micros: u64,
    /// Victims per eviction round.
    #[arg(long, default_value_t = 32)]
    eviction_batch: usize,
    /// Pages in the data file.
    #[arg(long, default_value_t = 16384)]
    pages: u64,
    /// Frame budget in pages (the default is a quarter of the data).
    #[arg(long, default_value_t = 4096)]
    frames: u64,
    /// Exported-reader processes (memfd backing only).
    #[arg(long, default_value_t = 2)]
    reader_processes: usize,
    /// Percent of operations that write.
    #[arg(long, default_value_t = 20)]
    write_percent: u32,
    /// anonymous, memfd or both.
    #[arg(long, default_value = "both")]
    backing: String,
    /// Directory of the data file (must support O_DIRECT: not tmpfs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/stress-data"))]
    data_dir: PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Internal: run as an exported-reader process connected to this socket.
    #[arg(long, hide = true)]
    reader_socket: Option<PathBuf>,
}

fn spawn_reader(
    socket: &Path,
    seconds: f64,
    linger_micros: u64,
) -> std::io::Result<std::process::Child> {
    Command::new(std::env::current_exe()?)
        .arg("--reader-socket")
        .arg(socket)
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--linger-micros")
        .arg(linger_micros.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn main() -> std::process::ExitCode {
    let arguments = Arguments::parse();
    if let Some(socket) = &arguments.reader_socket {
        return match harness::reader_process(socket, arguments.seconds, arguments.linger_micros) {
            Ok(report) => {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("serialise report")
                );
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("reader process: {error}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let backings = match arguments.backing.as_str() {
        "anonymous" => vec![Backing::Anonymous],
        "memfd" => vec![Backing::Memfd],
        "both" => vec![Backing::Anonymous, Backing::Memfd],
        other => {
            eprintln!("unknown backing {other:?}: anonymous, memfd or both");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(error) = std::fs::create_dir_all(&arguments.data_dir) {
        eprintln!("{}: {error}", arguments.data_dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let config = harness::StressConfig {
        seconds: arguments.seconds,
        threads: arguments.threads,
        reader_threads: arguments.reader_threads,
        lingering_readers: arguments.lingering_readers,
        writer_threads: arguments.writer_threads,
        linger_micros: arguments.linger_micros,
        page_count: arguments.pages,
        frame_count: arguments.frames,
        eviction_batch: arguments.eviction_batch,
        reader_processes: arguments.reader_processes,
        write_percent: arguments.write_percent,
        data_dir: arguments.data_dir.clone(),
    };
    let mut reports = Vec::new();
    for backing in backings {
        match harness::run(&config, backing, &spawn_reader) {
            Ok(report) => reports.push(report),
            Err(error) => {
                eprintln!("{backing:?}: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    print_table(&reports);
    let summary = harness::summarise(&reports);
    if arguments.json {
        println!("{summary}");
    }
    if harness::clean(&reports) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

const MIB: f64 = (1 << 20) as f64;

/// One row per backing, for a person; the JSON summary follows it.
fn print_table(reports: &[harness::BackingReport]) {
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>6} {:>6} {:>6} {:>10} {:>9} {:>10} {:>8} {:>13}",
        "backing",
        "ops",
        "writes",
        "exported",
        "stale",
        "torn",
        "lost",
        "evictions",
        "refaults",
        "shootdowns",
        "errors",
        "max frame MiB"
    );
    for report in reports {
        println!(
            "{:<10} {:>10} {:>9} {:>9} {:>6} {:>6} {:>6} {:>10} {:>9} {:>10} {:>8} {:>13}",
            format!("{:?}", report.backing),
            report.ops,
            report.writes,
            report.exported.reads,
            report.stale_reads + report.exported.stale_reads,
            report.torn_reads + report.exported.torn_reads,
            report.lost_writes,
            report.stats.evictions,
            report.stats.refault_retries,
            report.stats.shootdowns,
            report.errors,
            format!(
                "{:.2} / {:.2}",
                report.max_frame_bytes_observed as f64 / MIB,
                report.frame_budget_bytes as f64 / MIB
            )
        );
    }
}
