//! The wire with raw sockets: RESP3, inline commands, pipelining, malformed input, limits,
//! authentication, protected mode, many clients.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{Raw, Server};

#[test]
fn inline_pipelined_and_resp3() {
    let server = Server::start("resp3", &[]);
    let mut raw = server.raw();
    // Inline commands and a pipeline in one write.
    raw.send(b"PING\r\nSET k \"a b\"\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nECHO 'x y'\r\n");
    let expected = b"+PONG\r\n+OK\r\n$3\r\na b\r\n$3\r\nx y\r\n";
    assert_eq!(raw.read_exactly(expected.len()), expected);
    raw.command(&["HELLO", "3"]);
    assert_eq!(raw.line(), "%7\r\n");
    // Skip the rest of HELLO's map: 7 pairs, 13 scalar lines and the empty modules array.
    for _ in 0..(6 * 2 + 1 + 1) {
        let line = raw.line();
        if line.starts_with('$') {
            raw.line();
        }
    }
    raw.command(&["ZADD", "z", "1.5", "m"]);
    assert_eq!(raw.line(), ":1\r\n");
    raw.command(&["ZSCORE", "z", "m"]);
    assert_eq!(raw.line(), ",1.5\r\n");
    raw.command(&["GET", "missing"]);
    assert_eq!(raw.line(), "_\r\n");
    raw.command(&["HSET", "h", "f", "v"]);
    assert_eq!(raw.line(), ":1\r\n");
    raw.command(&["HGETALL", "h"]);
    let expected = b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n";
    assert_eq!(raw.read_exactly(expected.len()), expected);
    raw.command(&["HELLO", "4"]);
    assert_eq!(raw.line(), "-NOPROTO unsupported protocol version\r\n");
}

#[test]
fn malformed_input_closes_only_that_client() {
    let server = Server::start("malformed", &[]);
    let mut bystander = server.raw();
    let cases: [(&[u8], &str); 6] = [
        (
            b"*2\r\n$3\r\nGET\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-3\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$2000000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2000000\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$3\r\nGETxx\r\n",
            "-ERR Protocol error: missing CRLF after bulk string\r\n",
        ),
    ];
    for (input, expected) in cases {
        let mut raw = server.raw();
        raw.send(input);
        assert_eq!(raw.line(), expected, "{input:?}");
        assert!(raw.closed(), "the connection is closed after {input:?}");
    }
    // An inline request longer than 64 KiB without a newline.
    let mut raw = server.raw();
    raw.send(&vec![b'a'; 70 * 1024]);
    assert_eq!(
        raw.line(),
        "-ERR Protocol error: too big inline request\r\n"
    );
    // Binary garbage and a connection closed mid-command.
    let mut raw = server.raw();
    let _ = raw
        .stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nonly part");
    drop(raw);
    let mut raw = server.raw();
    let _ = raw
        .stream
        .write_all(&[0xff, 0x00, 0x13, b'\r', b'\n', 0x80]);
    drop(raw);
    bystander.command(&["PING"]);
    assert_eq!(bystander.line(), "+PONG\r\n");
}

#[test]
fn query_buffer_limit_disconnects_with_a_logged_reason() {
    let server = Server::start("querybuf", &[]);
    let mut raw = server.raw();
    raw.command(&["CONFIG", "SET", "client-query-buffer-limit", "1048576"]);
    assert_eq!(raw.line(), "+OK\r\n");
    // A multibulk that announces many large arguments and keeps sending.
    let mut sender = server.raw();
    sender.send(b"*1000\r\n");
    let chunk = format!("${}\r\n{}\r\n", 100_000, "x".repeat(100_000));
    let mut closed = false;
    for _ in 0..100 {
        if sender.stream.write_all(chunk.as_bytes()).is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed || sender.closed(), "the client was disconnected");
    std::thread::sleep(Duration::from_millis(100));
    let logged = server.log_lines();
    assert!(
        logged
            .iter()
            .any(|line| line.contains("max query buffer length")),
        "{logged:?}"
    );
    raw.command(&["PING"]);
    assert_eq!(raw.line(), "+PONG\r\n");
}

#[test]
fn oversized_keys_and_values_are_refused() {
    let server = Server::start("sizes", &[]);
    let mut raw = server.raw();
    let key = "k".repeat(bufpool_engine_key_limit() + 1);
    raw.command(&["SET", &key, "v"]);
    assert!(raw.line().starts_with("-ERR key is too large"));
    // A value just under the bulk limit but above what a string entry can hold.
    let value = "v".repeat(1 << 20);
    raw.command(&["SET", "k", &value]);
    assert_eq!(
        raw.line(),
        "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
    raw.command(&["PING"]);
    assert_eq!(raw.line(), "+PONG\r\n");
}

/// The engine's key limit as the server reports it in errors (KEY_SIZE_MAX − 16).
fn bufpool_engine_key_limit() -> usize {
    bufpool_engine::KEY_SIZE_MAX - 16
}

#[test]
fn password_gates_every_command_but_auth_hello_ping_quit() {
    let server = Server::start("auth", &["--requirepass", "s3cret"]);
    let mut raw = server.raw();
    raw.command(&["GET", "k"]);
    assert_eq!(raw.line(), "-NOAUTH Authentication required.\r\n");
    raw.command(&["PING"]);
    assert_eq!(raw.line(), "+PONG\r\n");
    raw.command(&["AUTH", "wrong"]);
    assert_eq!(
        raw.line(),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    raw.command(&["AUTH", "someone", "s3cret"]);
    assert!(raw.line().starts_with("-WRONGPASS"));
    raw.command(&["AUTH", "s3cret"]);
    assert_eq!(raw.line(), "+OK\r\n");
    raw.command(&["SET", "k", "v"]);
    assert_eq!(raw.line(), "+OK\r\n");
    // HELLO with AUTH authenticates and switches protocol in one step.
    let mut other = server.raw();
    other.command(&["HELLO", "3", "AUTH", "default", "s3cret"]);
    assert_eq!(other.line(), "%7\r\n");
    // The Rust client with the password in the URL.
    let url = format!("redis://:s3cret@127.0.0.1:{}/", server.port);
    let mut con = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connect");
    let value: String = redis::cmd("GET").arg("k").query(&mut con).expect("get");
    assert_eq!(value, "v");
}

#[test]
fn protected_mode_refuses_public_bind_without_password() {
    let output = Command::new(env!("CARGO_BIN_EXE_bufpool-server"))
        .args(["--bind", "0.0.0.0", "--port", "0", "--dir"])
        .arg(common::data_dir("protected"))
        .output()
        .expect("running bufpool-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("protected mode"), "{stderr}");
}

#[test]
fn maxclients_refuses_the_extra_client() {
    let server = Server::start("maxclients", &["--maxclients", "3"]);
    let mut held: Vec<Raw> = (0..3).map(|_| server.raw()).collect();
    for raw in &mut held {
        raw.command(&["PING"]);
        assert_eq!(raw.line(), "+PONG\r\n");
    }
    let mut extra = server.raw();
    assert_eq!(extra.line(), "-ERR max number of clients reached\r\n");
    assert!(extra.closed());
    drop(held.pop());
    // The slot frees once the server sees the close.
    std::thread::sleep(Duration::from_millis(200));
    let mut next = server.raw();
    next.command(&["PING"]);
    assert_eq!(next.line(), "+PONG\r\n");
}

#[test]
fn a_thousand_idle_connections_are_served() {
    let server = Server::start("many", &[]);
    let before_kib = server.rss_kib();
    let mut clients: Vec<Raw> = (0..1000).map(|_| server.raw()).collect();
    for raw in &mut clients {
        raw.command(&["PING"]);
    }
    for raw in &mut clients {
        assert_eq!(raw.line(), "+PONG\r\n");
    }
    let after_kib = server.rss_kib();
    eprintln!(
        "1000 idle connections: server RSS {before_kib} KiB -> {after_kib} KiB, about {} bytes per connection",
        after_kib.saturating_sub(before_kib) * 1024 / 1000
    );
    let mut con = server.client();
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut con)
        .expect("info");
    assert!(info.contains("connected_clients:1001"), "{info}");
}

/// Random and mutated frames at a running server: it never goes down and keeps serving.
fn fuzz_server(rounds: u32) {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};
    let server = Server::start("fuzz", &[]);
    let mut rng = SmallRng::seed_from_u64(0xf022);
    let seeds: [&[u8]; 5] = [
        b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        b"*4\r\n$5\r\nLPUSH\r\n$1\r\nl\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"*5\r\n$4\r\nZADD\r\n$1\r\nz\r\n$2\r\nNX\r\n$3\r\n1.5\r\n$1\r\nm\r\n",
        b"HSET h f \"v\\x41\"\r\nPING\r\n",
    ];
    let mut raw = server.raw();
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    for round in 0..rounds {
        let mut frame: Vec<u8> = if round % 5 == 0 {
            (0..rng.random_range(1..48)).map(|_| rng.random()).collect()
        } else {
            seeds[rng.random_range(0..seeds.len())].to_vec()
        };
        for _ in 0..rng.random_range(0..3) {
            let at = rng.random_range(0..frame.len());
            frame[at] = b"*$\r\n-9x\0"[rng.random_range(0..8)];
        }
        if raw.stream.write_all(&frame).is_err() || round % 64 == 63 {
            // Closed by the server (protocol error) or time for a fresh one.
            raw = server.raw();
            raw.stream
                .set_read_timeout(Some(Duration::from_millis(1)))
                .expect("timeout");
        }
        // Drain whatever replies came now and then, without waiting for them.
        if round % 16 == 15 {
            let _ = raw.read_exactly(1 << 16);
        }
    }
    let mut check = server.raw();
    check.command(&["PING"]);
    assert_eq!(check.line(), "+PONG\r\n");
}

/// 100,000 frames (about 20 s in release).
#[test]
fn random_frames_never_take_the_server_down() {
    fuzz_server(100_000);
}

#[test]
fn replies_above_the_output_limit_close_the_client() {
    let server = Server::start("outputlimit", &[]);
    let mut raw = server.raw();
    raw.command(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal 1048576 0 0",
    ]);
    assert_eq!(raw.line(), "+OK\r\n");
    let value = "v".repeat(300_000);
    raw.command(&["SET", "big", &value]);
    assert_eq!(raw.line(), "+OK\r\n");
    // Eight pipelined GETs: 2.4 MB of replies in one turn.
    let mut reader = server.raw();
    let mut pipeline = Vec::new();
    for _ in 0..8 {
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    reader.send(&pipeline);
    assert!(reader.closed(), "the client was disconnected");
    std::thread::sleep(Duration::from_millis(100));
    let logged = server.log_lines();
    assert!(
        logged.iter().any(|line| line.contains("exceeds the limit")),
        "{logged:?}"
    );
    raw.command(&["PING"]);
    assert_eq!(raw.line(), "+PONG\r\n");
}
