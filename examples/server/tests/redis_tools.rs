//! The server driven by Redis's own tools. They need `redis-tools` (`apt-get install -y
//! redis-tools`), so they are `#[ignore]`d; run them with
//! `cargo test -p bufpool-server --release --test redis_tools -- --ignored`.

mod common;

use std::process::{Command, Stdio};

use common::Server;

fn tool(name: &str) -> Command {
    let found = Command::new("which")
        .arg(name)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(found, "{name} is missing: apt-get install -y redis-tools");
    Command::new(name)
}

/// A scripted redis-cli session prints exactly what redis-server 7.0 prints for it
/// (`tests/data/session.expected` was recorded against redis-server 7.0.15).
#[test]
#[ignore = "needs redis-tools"]
fn redis_cli_session_matches_redis() {
    let server = Server::start("cli", &[]);
    let script = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/session.redis"
    ))
    .expect("session script");
    let expected = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/session.expected"
    ))
    .expect("expected transcript");
    let mut child = tool("redis-cli")
        .args(["-p", &server.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &script).expect("script");
    let output = child.wait_with_output().expect("redis-cli output");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

/// redis-benchmark's whole default suite (all its tests, no `-t`) with no error reply.
#[test]
#[ignore = "needs redis-tools"]
fn redis_benchmark_default_suite_has_no_errors() {
    let server = Server::start("benchmark", &[]);
    let output = tool("redis-benchmark")
        .args(["-p", &server.port.to_string(), "-q", "-n", "20000"])
        .output()
        .expect("redis-benchmark");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains("ERR") && !text.contains("rror"), "{text}");
    }
    let tests = stdout.matches("requests per second").count();
    assert!(tests >= 20, "only {tests} tests ran:\n{stdout}");
}
