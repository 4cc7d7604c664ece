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

fn spawn_reader(socket: &Path, seconds: f64) -> std::io::Result<std::process::Child> {
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

#[test]
fn stress_smoke_both_backings() {
    let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/bufpool");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = harness::StressConfig {
        seconds: 1.0,
        threads: 6,
        page_count: 1024,
        frame_count: 256,
        reader_processes: 1,
        write_percent: 25,
        data_dir,
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

/// Entry point of the exported-reader child process (run by `spawn_reader`, not by itself).
#[test]
#[ignore = "the child process of stress_smoke_both_backings"]
fn exported_reader_child() {
    let socket = std::env::var_os(SOCKET_VAR).expect("run by stress_smoke_both_backings");
    let seconds: f64 = std::env::var(SECONDS_VAR).unwrap().parse().unwrap();
    let report = harness::reader_process(Path::new(&socket), seconds).unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
}
