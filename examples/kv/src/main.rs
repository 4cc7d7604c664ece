//! `kv`: the example key-value store on bufpool.
//!
//! * `kv` or `kv demo`: load a data set larger than the buffer pool (once, under ./kv-data/),
//!   run a mixed workload for a few seconds, print throughput, latency and pool statistics.
//! * `kv get|put|delete|scan --db PATH`: the store at a shell.
//! * `kv shell --db PATH`: a session of commands on stdin, one result line each (scripts, people).
//! * `kv bench`: the vmcache random-lookup shape (and read/update/scan/mixed workloads) on
//!   bufpool, or side by side on LMDB, redb and a std BTreeMap (`--engine`), optionally under
//!   a cgroup memory cap (`--cgroup-mb`).
//!
//! Every failure is one line on stderr (`kv: error: ...`) and exit status 1.
#![forbid(unsafe_code)]

mod bench;
mod dataset;
mod demo;
mod error;
mod memory_cap;
mod plot;
mod proc_stats;
mod repl;
mod report;
mod shell;
mod store;
mod workload;
mod ycsb;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{KvError, one_line};

#[derive(Debug, Parser)]
#[command(
    name = "kv",
    version,
    about = "The example key-value store on the bufpool buffer pool",
    long_about = "The example key-value store on the bufpool buffer pool.\n\n\
                  With no command, runs the demo on ./kv-data/demo.db."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a data set larger than the pool (first run only), run a mixed workload, report.
    Demo(demo::DemoArgs),
    /// Print the value of a key.
    Get(shell::GetArgs),
    /// Insert or replace a key's value.
    Put(shell::PutArgs),
    /// Remove a key.
    Delete(shell::DeleteArgs),
    /// Print records in key order (tab-separated key and value).
    Scan(shell::ScanArgs),
    /// A line-oriented session: commands on stdin, one result line each on stdout.
    #[command(after_help = repl::PROTOCOL_HELP)]
    Shell(repl::ShellArgs),
    /// Measure a workload on bufpool or a peer engine.
    Bench(bench::BenchArgs),
    /// Draw tournament results (JSON lines) as an SVG chart and print them as a table.
    Plot(plot::PlotArgs),
}

fn main() -> ExitCode {
    // A panic is a bug in kv or an engine, but it still reports as one line, like every error.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|at| format!(" at {at}"))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!(
            "kv: error: internal error{location}: {}",
            message.replace('\n', " ")
        );
    }));
    let cli = Cli::parse();
    match run(cli
        .command
        .unwrap_or_else(|| Command::Demo(demo::DemoArgs::default())))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kv: error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), KvError> {
    match command {
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Get(args) => shell::get(&args),
        Command::Put(args) => shell::put(&args),
        Command::Delete(args) => shell::delete(&args),
        Command::Scan(args) => shell::scan(&args),
        Command::Shell(args) => repl::run(&args),
    }
}
