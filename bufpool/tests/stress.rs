//! CI-sized stress run on both backings, with an exported reader in a second process (this
//! test binary re-executed: see `exported_reader_child`). The long run is the `stress` example.

#[path = "../examples/shared/channel.rs"]
mod channel;
#[path = "../examples/stress/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bufpool::Backing;

const SOCKET_VAR: &str = "BUFPOOL_STRESS_READER_SOCKET";
const SECONDS_VAR: &str = "BUFPOOL_STRESS_READER_SECONDS";
const LINGER_VAR: &str = "BUFPOOL_STRESS_READER_LINGER_MICROS";

fn spawn_reader(
    socket: &Path,
    seconds: f64,
    linger_micros: u64,
) -> std::io::Result<std::process::Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "--ignored",
            "--exact",
            "exported_reader_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SOCKET_VAR, socket)
        .env(SECONDS_VAR, seconds.to_string())
        .env(LINGER_VAR, linger_micros.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

#[test]
fn stress_smoke_both_backings() {
    let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/bufpool");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = harness::StressConfig {
        reader_processes: 1,
        write_percent: 25,
        ..harness::StressConfig::mixed(6, 1024, 256, data_dir)
    };
    for backing in [Backing::Anonymous, Backing::Memfd] {
        let report = harness::run(&config, backing, &spawn_reader).unwrap();
        assert!(harness::clean(std::slice::from_ref(&report)), "{report:#?}");
        assert!(
            report.stats.evictions > 0 && report.writes > 0,
            "{report:#?}"
        );
        if backing == Backing::Memfd {
            assert!(
                report.exported.reads > 0,
                "the exported reader read nothing: {report:#?}"
            );
        }
    }
}

/// Issue 8's configuration: memfd, 8,192 pages, a 128-frame budget, 8 reader threads (half
/// lingering 300 µs inside their read closure), 3 writer threads, 3 exported-reader processes
/// lingering as long. No access may fail with `NoEvictableFrame`, and the frames' memory as
/// the kernel counts it (memfd blocks, sampled every 100 ms) stays within the budget + 1%.
fn lingering_readers(seconds: f64) {
    let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/bufpool");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = harness::StressConfig {
        seconds,
        reader_threads: 8,
        lingering_readers: 4,
        writer_threads: 3,
        linger_micros: 300,
        reader_processes: 3,
        ..harness::StressConfig::mixed(0, 8192, 128, data_dir)
    };
    let report = harness::run(&config, Backing::Memfd, &spawn_reader).unwrap();
    let budget = report.frame_budget_bytes;
    eprintln!(
        "lingering readers: {} ops, {} exported reads, {} evictions, {} refault retries, max \
         frame memory {} of a {budget}-byte budget",
        report.ops,
        report.exported.reads,
        report.stats.evictions,
        report.stats.refault_retries,
        report.max_frame_bytes_observed
    );
    assert_eq!(report.no_frame_errors, 0, "{report:#?}");
    assert!(harness::clean(std::slice::from_ref(&report)), "{report:#?}");
    assert!(
        report.frame_memory_samples >= (seconds * 5.0) as u64,
        "{report:#?}"
    );
    assert!(
        report.max_frame_bytes_observed <= budget + budget / 100,
        "frame memory {} over the budget {budget} + 1%: {report:#?}",
        report.max_frame_bytes_observed
    );
}

#[test]
fn lingering_readers_never_run_out_of_frames_and_memory_stays_in_budget() {
    lingering_readers(5.0);
}

#[test]
#[ignore = "60 s: the full-length run of the test above"]
fn lingering_readers_one_minute() {
    lingering_readers(60.0);
}

/// Entry point of the exported-reader child process (run by `spawn_reader`, not by itself).
#[test]
#[ignore = "the child process of stress_smoke_both_backings"]
fn exported_reader_child() {
    let socket = std::env::var_os(SOCKET_VAR).expect("run by stress_smoke_both_backings");
    let seconds: f64 = std::env::var(SECONDS_VAR).unwrap().parse().unwrap();
    let linger_micros: u64 = std::env::var(LINGER_VAR).unwrap().parse().unwrap();
    let report = harness::reader_process(Path::new(&socket), seconds, linger_micros).unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
}
