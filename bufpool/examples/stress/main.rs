//! Stress run: `cargo run --release -p bufpool --example stress -- --seconds S --json`.
//!
//! Runs the harness on both backings (or one, `--backing`), with exported readers in other
//! processes on the memfd backing. The last line (with `--json`) is one JSON object with the
//! totals (`ops`, `stale_reads`, `torn_reads`, `refault_retries`, `evictions`, `shootdowns`,
//! ...) and the per-backing reports. Exits non-zero if any stale, torn or lost page was seen.

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
    /// In-process worker threads.
    #[arg(long, default_value_t = 16)]
    threads: usize,
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

fn spawn_reader(socket: &Path, seconds: f64) -> std::io::Result<std::process::Child> {
    Command::new(std::env::current_exe()?)
        .arg("--reader-socket")
        .arg(socket)
        .arg("--seconds")
        .arg(seconds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn main() -> std::process::ExitCode {
    let arguments = Arguments::parse();
    if let Some(socket) = &arguments.reader_socket {
        return match harness::reader_process(socket, arguments.seconds) {
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
        page_count: arguments.pages,
        frame_count: arguments.frames,
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

/// One row per backing, for a person; the JSON summary follows it.
fn print_table(reports: &[harness::BackingReport]) {
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>6} {:>6} {:>6} {:>10} {:>9} {:>10} {:>8}",
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
        "errors"
    );
    for report in reports {
        println!(
            "{:<10} {:>10} {:>9} {:>9} {:>6} {:>6} {:>6} {:>10} {:>9} {:>10} {:>8}",
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
            report.errors
        );
    }
}
