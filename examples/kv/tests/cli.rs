//! Runs the built `kv` binary as a person (or a script) would, on data files under the target
//! directory: the shell commands' round trip, `kv shell` driven through a pipe, each kind of
//! bad input (one line on stderr, non-zero exit, database intact), and the bench's JSON line.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// The engine's page size (bufpool-engine pages are 4 KiB; pages 0 and 1 are the superblocks).
const PAGE_SIZE: u64 = 4096;
const FIRST_DATA_PAGE: u64 = 2;

/// A fresh directory for one test, on the real filesystem of the target dir (O_DIRECT works).
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kv-tests")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

fn kv(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run kv")
}

fn kv_with_stdin(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kv"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kv");
    // kv may reject the input before reading all of it: a broken pipe here is fine.
    let _ = child.stdin.take().expect("piped stdin").write_all(stdin);
    child.wait_with_output().expect("wait for kv")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "kv failed: {:?}\nstderr: {}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts the bad-input contract: non-zero exit, exactly one `kv: error:` line on stderr.
fn one_line_error(output: Output) -> String {
    assert!(!output.status.success(), "kv should have failed");
    assert_ne!(
        output.status.code(),
        Some(101),
        "kv panicked: {}",
        stderr(&output)
    );
    let text = stderr(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {text}");
    assert!(
        lines[0].starts_with("kv: error: "),
        "unexpected stderr: {text}"
    );
    lines[0].to_string()
}

fn put(dir: &Path, db: &str, key: &str, value: &str) {
    ok(kv(dir, &["put", "--db", db, "--create", key, value]));
}

#[test]
fn put_get_delete_scan_round_trip() {
    let dir = test_dir("round-trip");
    for (key, value) in [("cherry", "red"), ("apple", "green"), ("banana", "yellow")] {
        put(&dir, "fruit.db", key, value);
    }
    assert_eq!(
        ok(kv(&dir, &["get", "--db", "fruit.db", "apple"])),
        "green\n"
    );
    put(&dir, "fruit.db", "apple", "red too");
    assert_eq!(
        ok(kv(&dir, &["get", "--db", "fruit.db", "apple"])),
        "red too\n"
    );

    let all = ok(kv(&dir, &["scan", "--db", "fruit.db"]));
    assert_eq!(all, "apple\tred too\nbanana\tyellow\ncherry\tred\n");
    let reverse = ok(kv(
        &dir,
        &["scan", "--db", "fruit.db", "--reverse", "--limit", "2"],
    ));
    assert_eq!(reverse, "cherry\tred\nbanana\tyellow\n");
    let bounded = ok(kv(
        &dir,
        &["scan", "--db", "fruit.db", "--start", "b", "--end", "c"],
    ));
    assert_eq!(bounded, "banana\tyellow\n");

    ok(kv(&dir, &["delete", "--db", "fruit.db", "banana"]));
    let missing = one_line_error(kv(&dir, &["get", "--db", "fruit.db", "banana"]));
    assert!(missing.contains("not found"), "{missing}");
    assert_eq!(
        ok(kv(&dir, &["scan", "--db", "fruit.db"])),
        "apple\tred too\ncherry\tred\n"
    );
}

#[test]
fn binary_keys_and_values_in_hex_and_from_stdin() {
    let dir = test_dir("hex");
    ok(kv(
        &dir,
        &["put", "--db", "bin.db", "--create", "--hex", "00ff", "0a0b"],
    ));
    assert_eq!(
        ok(kv(&dir, &["get", "--db", "bin.db", "--hex", "00ff"])),
        "0a0b\n"
    );
    // Without --hex, non-printable bytes are escaped.
    assert_eq!(
        ok(kv(&dir, &["scan", "--db", "bin.db"])),
        "\\x00\\xff\t\\n\\x0b\n"
    );
    ok(kv_with_stdin(
        &dir,
        &["put", "--db", "bin.db", "piped", "-"],
        b"from stdin",
    ));
    assert_eq!(
        ok(kv(&dir, &["get", "--db", "bin.db", "piped"])),
        "from stdin\n"
    );
}

#[test]
fn missing_database_is_a_one_line_error() {
    let dir = test_dir("missing");
    for command in [
        vec!["get", "--db", "nowhere.db", "key"],
        vec!["put", "--db", "nowhere.db", "key", "value"],
        vec!["delete", "--db", "nowhere.db", "key"],
        vec!["scan", "--db", "nowhere.db"],
    ] {
        let line = one_line_error(kv(&dir, &command));
        assert!(line.contains("nowhere.db"), "{line}");
    }
    assert!(
        !dir.join("nowhere.db").exists(),
        "a failed command created the database"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_a_one_line_error_and_left_alone() {
    let dir = test_dir("not-ours");
    let text = "shopping list: apples, pears\n".repeat(500);
    fs::write(dir.join("notes.txt"), &text).unwrap();
    for command in [
        vec!["get", "--db", "notes.txt", "apples"],
        vec!["put", "--db", "notes.txt", "apples", "3"],
        vec!["put", "--db", "notes.txt", "--create", "apples", "3"],
    ] {
        one_line_error(kv(&dir, &command));
    }
    assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), text);
}

#[test]
fn oversized_key_or_value_is_a_one_line_error_and_the_database_stays_intact() {
    let dir = test_dir("oversized");
    put(&dir, "limits.db", "kept", "value");
    let before = fs::read(dir.join("limits.db")).unwrap();
    let huge_key = "k".repeat(64 * 1024);
    let line = one_line_error(kv(&dir, &["put", "--db", "limits.db", &huge_key, "v"]));
    assert!(line.contains("key is 65536 bytes"), "{line}");
    let line = one_line_error(kv(&dir, &["get", "--db", "limits.db", &huge_key]));
    assert!(line.contains("key is 65536 bytes"), "{line}");

    let huge_value = vec![b'v'; 16 << 20];
    let line = one_line_error(kv_with_stdin(
        &dir,
        &["put", "--db", "limits.db", "k", "-"],
        &huge_value,
    ));
    assert!(line.contains("value is"), "{line}");

    assert_eq!(
        ok(kv(&dir, &["get", "--db", "limits.db", "kept"])),
        "value\n"
    );
    assert_eq!(
        ok(kv(&dir, &["scan", "--db", "limits.db"])),
        "kept\tvalue\n"
    );
    let after = fs::read(dir.join("limits.db")).unwrap();
    assert!(after == before, "refused writes or reads changed the file");
}

#[test]
fn corrupted_page_is_a_one_line_corrupted_error() {
    let dir = test_dir("corrupted");
    for index in 0..200 {
        put(
            &dir,
            "damaged.db",
            &format!("key-{index:04}"),
            &"x".repeat(100),
        );
    }
    assert_eq!(
        ok(kv(&dir, &["get", "--db", "damaged.db", "key-0007"])).len(),
        101
    );
    // Flip bytes in the middle of every page after the superblocks: whichever page the lookup
    // faults in first (catalog, inner node or leaf) fails its checksum.
    let path = dir.join("damaged.db");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let pages = file.metadata().unwrap().len() / PAGE_SIZE;
    assert!(pages > FIRST_DATA_PAGE, "the database has no data pages");
    for page in FIRST_DATA_PAGE..pages {
        let middle = page * PAGE_SIZE + PAGE_SIZE / 2;
        let mut bytes = [0u8; 8];
        file.seek(SeekFrom::Start(middle)).unwrap();
        file.read_exact(&mut bytes).unwrap();
        bytes.iter_mut().for_each(|byte| *byte ^= 0x5a);
        file.seek(SeekFrom::Start(middle)).unwrap();
        file.write_all(&bytes).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let damaged = fs::read(&path).unwrap();
    let line = one_line_error(kv(&dir, &["get", "--db", "damaged.db", "key-0007"]));
    assert!(line.to_lowercase().contains("corrupt"), "{line}");
    let line = one_line_error(kv(&dir, &["scan", "--db", "damaged.db"]));
    assert!(line.to_lowercase().contains("corrupt"), "{line}");
    assert!(
        fs::read(&path).unwrap() == damaged,
        "reading changed the file"
    );
}

const BENCH_FIELDS: [&str; 22] = [
    "engine",
    "workload",
    "durability",
    "syncs_per_s",
    "commit_p50_us",
    "commit_p99_us",
    "records",
    "threads",
    "seconds",
    "lookups_per_s",
    "ops_per_s",
    "reads_per_s",
    "p50_us",
    "p99_us",
    "hits",
    "misses",
    "evictions",
    "refault_retries",
    "resident_mb",
    "load_seconds",
    "memory_cap",
    "reads_source",
];

/// Runs `kv bench ... --json` and returns the last stdout line parsed.
fn bench_json(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["bench", "--records", "20000", "--seconds", "1", "--json"];
    args.extend_from_slice(extra);
    let text = ok(kv(dir, &args));
    let last = text.lines().last().expect("bench printed nothing");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    for field in BENCH_FIELDS {
        assert!(json.get(field).is_some(), "missing {field} in {last}");
    }
    assert_eq!(json["records"], 20000);
    assert!(json["ops_per_s"].as_f64().unwrap() > 0.0, "{last}");
    json
}

#[test]
fn bench_json_last_line_has_the_fields() {
    let dir = test_dir("bench-bufpool");
    let json = bench_json(&dir, &["--db", "bench.db", "--pool-mb", "16"]);
    assert_eq!(json["engine"], "bufpool");
    assert_eq!(json["workload"], "read");
    assert!(json["hits"].as_u64().unwrap() > 0, "{json}");
    assert!(json["resident_mb"].as_f64().unwrap() > 0.0, "{json}");
    // --reuse skips the load; without it an existing --db is refused, not overwritten.
    let reused = bench_json(&dir, &["--db", "bench.db", "--pool-mb", "16", "--reuse"]);
    assert_eq!(reused["loaded"], false);
    let args = [
        "bench",
        "--records",
        "20000",
        "--seconds",
        "1",
        "--db",
        "bench.db",
    ];
    let line = one_line_error(kv(&dir, &args));
    assert!(line.contains("already exists"), "{line}");
}

#[test]
fn bench_runs_every_workload_on_bufpool_and_the_btreemap_ceiling() {
    let dir = test_dir("bench-workloads");
    let engines = ["bufpool", "btreemap"];
    let workloads = ["read", "update", "scan", "mixed"];
    for (engine, workload) in engines.iter().flat_map(|e| workloads.map(|w| (*e, w))) {
        let args = [
            "--engine",
            engine,
            "--workload",
            workload,
            "--pool-mb",
            "16",
        ];
        let json = bench_json(&dir, &args);
        assert_eq!(json["workload"], workload);
        let looks_up = workload == "read" || workload == "mixed";
        assert_eq!(
            json["lookups_per_s"].as_f64().unwrap() > 0.0,
            looks_up,
            "{json}"
        );
    }
}

/// Each YCSB workload end to end on bufpool and the ceiling: the operation kinds of its mix
/// (and only those) ran, every read checked, with YCSB's distribution unless one is given.
#[test]
fn bench_runs_each_ycsb_workload() {
    let dir = test_dir("bench-ycsb");
    let mixes: [(&str, &[&str], &str); 6] = [
        ("ycsb-a", &["get", "put"], "zipfian"),
        ("ycsb-b", &["get", "put"], "zipfian"),
        ("ycsb-c", &["get"], "zipfian"),
        ("ycsb-d", &["get", "insert"], "latest"),
        ("ycsb-e", &["scan", "insert"], "zipfian"),
        ("ycsb-f", &["get", "rmw"], "zipfian"),
    ];
    for engine in ["bufpool", "btreemap"] {
        for (workload, kinds, distribution) in mixes {
            let args = [
                "--engine",
                engine,
                "--workload",
                workload,
                "--pool-mb",
                "16",
            ];
            let json = bench_json(&dir, &args);
            assert_eq!(json["workload"], workload);
            assert_eq!(json["distribution"], distribution, "{json}");
            let counts = json["op_counts"].as_object().expect("op_counts");
            for (kind, count) in counts {
                let count = count.as_u64().unwrap();
                let expected = kinds.contains(&kind.as_str());
                assert_eq!(count > 0, expected, "{workload} {kind}: {json}");
            }
            for kind in kinds {
                let latency = &json["latency_us"][kind];
                let (p50, p99, p999) = (
                    latency["p50"].as_f64().unwrap(),
                    latency["p99"].as_f64().unwrap(),
                    latency["p999"].as_f64().unwrap(),
                );
                assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{kind}: {json}");
            }
            if workload == "ycsb-e" {
                assert!(json["scanned_records"].as_u64().unwrap() > 0, "{json}");
            }
        }
    }
    // Any workload takes any distribution.
    let args = [
        "--workload",
        "ycsb-d",
        "--distribution",
        "uniform",
        "--pool-mb",
        "16",
    ];
    assert_eq!(bench_json(&dir, &args)["distribution"], "uniform");
    let args = [
        "--workload",
        "scan",
        "--distribution",
        "latest",
        "--pool-mb",
        "16",
    ];
    assert_eq!(bench_json(&dir, &args)["distribution"], "latest");
}

/// Several workloads in one run: one load, one JSON line each, in the order given.
#[test]
fn bench_runs_several_workloads_on_one_load() {
    let dir = test_dir("bench-several");
    let args = [
        "bench",
        "--records",
        "20000",
        "--seconds",
        "0.5",
        "--json",
        "--pool-mb",
        "16",
        "--workload",
        "ycsb-d,ycsb-e,ycsb-c",
    ];
    let text = ok(kv(&dir, &args));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let workloads: Vec<&str> = lines
        .iter()
        .map(|json| json["workload"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["ycsb-d", "ycsb-e", "ycsb-c"]);
    let line = one_line_error(kv(
        &dir,
        &["bench", "--records", "10", "--workload", "recovery,read"],
    ));
    assert!(line.contains("runs alone"), "{line}");
}

#[cfg(feature = "peers")]
#[test]
fn bench_runs_the_peers_on_the_same_data_set() {
    let dir = test_dir("bench-peers");
    for engine in ["lmdb", "redb"] {
        let json = bench_json(
            &dir,
            &["--engine", engine, "--workload", "mixed", "--batch", "4"],
        );
        assert_eq!(json["engine"], engine);
        assert_eq!(
            json["hits"],
            serde_json::Value::Null,
            "peers have no pool counters"
        );
        let reused = bench_json(&dir, &["--engine", engine, "--reuse"]);
        assert_eq!(reused["loaded"], false);
        // Inserts, then scans across an earlier run's inserts, all checked.
        for workload in ["ycsb-d", "ycsb-e", "ycsb-e"] {
            let json = bench_json(
                &dir,
                &["--engine", engine, "--workload", workload, "--reuse"],
            );
            assert!(json["op_counts"]["insert"].as_u64().unwrap() > 0, "{json}");
        }
    }
}

/// Capped or not (no cgroup controller, not root), the run completes and says which.
#[cfg(feature = "peers")]
#[test]
fn bench_under_a_memory_cap_reports_the_cap() {
    let dir = test_dir("bench-capped");
    for engine in ["lmdb", "redb", "bufpool"] {
        let json = bench_json(
            &dir,
            &["--engine", engine, "--pool-mb", "16", "--cgroup-mb", "512"],
        );
        let cap = json["memory_cap"].as_str().unwrap().to_string();
        assert!(cap == "none" || cap.ends_with(" 512 MiB"), "{cap}");
        assert_eq!(
            json["loaded"], true,
            "the load happened before the cap: {json}"
        );
    }
}

/// RocksDB on every YCSB workload, reused, and under each durability mode.
#[cfg(feature = "rocksdb")]
#[test]
fn bench_runs_rocksdb_on_the_ycsb_workloads() {
    let dir = test_dir("bench-rocksdb");
    let first = bench_json(&dir, &["--engine", "rocksdb", "--pool-mb", "16"]);
    assert_eq!(first["engine"], "rocksdb");
    assert_eq!(first["loaded"], true);
    for workload in ["ycsb-a", "ycsb-b", "ycsb-c", "ycsb-d", "ycsb-e", "ycsb-f"] {
        let args = [
            "--engine",
            "rocksdb",
            "--workload",
            workload,
            "--reuse",
            "--batch",
            "4",
        ];
        let json = bench_json(&dir, &args);
        assert_eq!(json["loaded"], false, "{json}");
        assert!(json["ops"].as_u64().unwrap() > 0, "{json}");
    }
    for (durability, source) in [
        ("immediate", "synced writes"),
        ("periodic:50", "background WAL syncs"),
    ] {
        let args = [
            "--engine",
            "rocksdb",
            "--workload",
            "update",
            "--reuse",
            "--durability",
            durability,
        ];
        let json = bench_json(&dir, &args);
        assert!(json["syncs"].as_u64().unwrap() > 0, "{json}");
        assert!(
            json["syncs_source"].as_str().unwrap().starts_with(source),
            "{json}"
        );
    }
}

#[cfg(not(feature = "rocksdb"))]
#[test]
fn rocksdb_without_the_feature_is_a_clear_error() {
    let dir = test_dir("no-rocksdb");
    let line = one_line_error(kv(
        &dir,
        &["bench", "--engine", "rocksdb", "--records", "10"],
    ));
    assert!(line.contains("--features rocksdb"), "{line}");
}

#[cfg(not(feature = "peers"))]
#[test]
fn peers_without_the_feature_are_a_clear_error() {
    let dir = test_dir("no-peers");
    let line = one_line_error(kv(&dir, &["bench", "--engine", "lmdb", "--records", "10"]));
    assert!(line.contains("--features peers"), "{line}");
}

/// A `kv shell` child driven one command at a time: each answer must arrive before the next
/// command is sent, which only works if the shell flushes every result line.
struct ShellSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

/// How long one answer may take (a synced write on a slow shared disk, a checkpoint).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

impl ShellSession {
    fn start(dir: &Path, args: &[&str]) -> ShellSession {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kv"))
            .current_dir(dir)
            .arg("shell")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run kv shell");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        ShellSession {
            child,
            stdin,
            lines,
        }
    }

    fn next_line(&self, after: &str) -> String {
        match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no answer to `{after}` (not flushed?)"),
            Err(RecvTimeoutError::Disconnected) => panic!("kv shell ended after `{after}`"),
        }
    }

    /// Sends one line and returns the one result line.
    fn ask(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to kv shell");
        stdin.flush().expect("flush to kv shell");
        self.next_line(line)
    }

    /// Sends a scan and returns its record lines; checks the closing END.
    fn scan(&mut self, line: &str) -> Vec<String> {
        let mut records = vec![self.ask(line)];
        // Bounded: a scan in this test returns a handful of records.
        for _ in 0..1000 {
            if records.last().map(String::as_str) == Some("END") {
                records.pop();
                return records;
            }
            assert!(
                records.last().unwrap().starts_with('"'),
                "not a record line: {records:?}"
            );
            records.push(self.next_line(line));
        }
        panic!("scan did not end: {records:?}");
    }

    /// Closes stdin (or sends `quit` first) and returns the exit status.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for kv shell");
        assert!(
            self.lines.recv_timeout(ANSWER_TIMEOUT).is_err(),
            "output after the last answer"
        );
        status
    }
}

#[test]
fn shell_round_trip_through_a_pipe() {
    let dir = test_dir("shell");
    let mut shell = ShellSession::start(
        &dir,
        &["--db", "shell.db", "--create", "--durability", "immediate"],
    );
    assert_eq!(shell.ask("put apple green"), "OK");
    assert_eq!(
        shell.ask(r#"put "key with spaces" "v a\x00\xff\n\"q\"\\""#),
        "OK"
    );
    assert_eq!(shell.ask(r"put bin\x01\x02 plain\tvalue"), "OK");
    assert_eq!(shell.ask("get apple"), r#""green""#);
    // Output uses the input's escapes: the answer decodes to the bytes that were put.
    assert_eq!(
        shell.ask(r#"GET "key with spaces""#),
        r#""v a\x00\xff\n\"q\"\\""#
    );
    assert_eq!(shell.ask(r"get bin\x01\x02"), r#""plain\tvalue""#);
    assert_eq!(shell.ask("get nothing"), "(nil)");

    // Bad lines get one ERR each and the session goes on.
    for bad in [
        "bogus command",
        "put onlykey",
        r#"put "unterminated value"#,
        r"get bad\q",
        "scan a many",
        "checkpoint now",
    ] {
        let answer = shell.ask(bad);
        assert!(answer.starts_with("ERR "), "`{bad}` answered {answer}");
    }
    let huge_key = "k".repeat(2000);
    assert!(
        shell
            .ask(&format!("put {huge_key} v"))
            .starts_with("ERR key is 2000 bytes")
    );
    // Blank lines and comments get no answer: the next answer is the next command's.
    assert_eq!(
        shell.ask("\n  \t\n  # a \"comment\nget apple"),
        r#""green""#
    );

    assert_eq!(
        shell.scan(r#"scan """#),
        [
            r#""apple" "green""#,
            r#""bin\x01\x02" "plain\tvalue""#,
            r#""key with spaces" "v a\x00\xff\n\"q\"\\""#,
        ]
    );
    assert_eq!(shell.scan("scan b 1"), [r#""bin\x01\x02" "plain\tvalue""#]);
    assert_eq!(shell.scan("scan zzz"), Vec::<String>::new());
    assert_eq!(shell.ask("delete apple"), "OK");
    assert_eq!(shell.ask("delete apple"), "(nil)");
    assert_eq!(shell.ask("get apple"), "(nil)");
    assert_eq!(shell.ask("checkpoint"), "OK");
    assert!(shell.ask("help").starts_with("commands: "));
    assert_eq!(shell.ask("quit"), "OK");
    assert!(shell.finish().success());

    // A new session sees the data; end of input closes it cleanly, with no extra output.
    let input = "get \"key with spaces\"\nscan \"\" 10\nput after eof\n";
    let output = ok(kv_with_stdin(
        &dir,
        &["shell", "--db", "shell.db"],
        input.as_bytes(),
    ));
    assert_eq!(
        output,
        "\"v a\\x00\\xff\\n\\\"q\\\"\\\\\"\n\
         \"bin\\x01\\x02\" \"plain\\tvalue\"\n\
         \"key with spaces\" \"v a\\x00\\xff\\n\\\"q\\\"\\\\\"\nEND\nOK\n"
    );
    assert_eq!(ok(kv(&dir, &["get", "--db", "shell.db", "after"])), "eof\n");
}

#[test]
fn shell_on_a_missing_database_is_a_one_line_error() {
    let dir = test_dir("shell-missing");
    let output = kv_with_stdin(&dir, &["shell", "--db", "nowhere.db"], b"get a\n");
    let line = one_line_error(output);
    assert!(line.contains("nowhere.db"), "{line}");
    assert!(!dir.join("nowhere.db").exists());
    let output = kv_with_stdin(
        &dir,
        &[
            "shell",
            "--db",
            "x.db",
            "--create",
            "--durability",
            "sometimes",
        ],
        b"",
    );
    assert!(!output.status.success());
    assert!(!dir.join("x.db").exists());
}

#[test]
fn bench_update_reports_durability_and_commits() {
    let dir = test_dir("bench-durability");
    for durability in ["none", "immediate"] {
        let json = bench_json(
            &dir,
            &[
                "--db",
                "bench.db",
                "--reuse",
                "--pool-mb",
                "16",
                "--workload",
                "update",
                "--durability",
                durability,
            ],
        );
        assert_eq!(json["durability"], durability);
        assert!(json["commits"].as_u64().unwrap() > 0, "{json}");
        assert!(json["commit_p50_us"].as_f64().unwrap() > 0.0, "{json}");
        assert!(
            json["commit_p99_us"].as_f64().unwrap() >= json["commit_p50_us"].as_f64().unwrap(),
            "{json}"
        );
        assert!(json["syncs_per_s"].as_f64().unwrap() >= 0.0, "{json}");
        assert_eq!(json["syncs_source"], "log stats (fdatasyncs of the log)");
        let every = if durability == "immediate" { 1 } else { 8 };
        assert_eq!(json["latency_sample_every"], every, "{json}");
    }
}

#[test]
fn bench_recovery_reopens_and_reports_the_replay() {
    let dir = test_dir("bench-recovery");
    let json = bench_json(
        &dir,
        &[
            "--db",
            "bench.db",
            "--pool-mb",
            "16",
            "--workload",
            "recovery",
        ],
    );
    assert_eq!(json["workload"], "recovery");
    assert_eq!(json["durability"], "none");
    assert!(json["commits"].as_u64().unwrap() > 0, "{json}");
    for field in [
        "recovery_log_bytes",
        "recovery_records",
        "recovery_seconds",
        "reopen_seconds",
    ] {
        assert!(json[field].as_f64().is_some(), "missing {field}: {json}");
    }
    assert!(json.get("recovery_mb_per_s").is_some(), "{json}");
    // The reopened database still holds the data set: reused, and every lookup checks.
    let reused = bench_json(&dir, &["--db", "bench.db", "--pool-mb", "16", "--reuse"]);
    assert_eq!(reused["loaded"], false);
    assert!(reused["lookups_per_s"].as_f64().unwrap() > 0.0);
    let line = one_line_error(kv(
        &dir,
        &[
            "bench",
            "--engine",
            "btreemap",
            "--workload",
            "recovery",
            "--records",
            "10",
        ],
    ));
    assert!(line.contains("--engine bufpool"), "{line}");
}

#[cfg(feature = "peers")]
#[test]
fn bench_synced_updates_on_the_peers_count_one_sync_per_commit() {
    let dir = test_dir("bench-peers-synced");
    for engine in ["lmdb", "redb"] {
        let json = bench_json(
            &dir,
            &[
                "--engine",
                engine,
                "--workload",
                "update",
                "--durability",
                "immediate",
            ],
        );
        assert_eq!(json["durability"], "immediate");
        let (syncs, commits) = (
            json["syncs"].as_u64().unwrap(),
            json["commits"].as_u64().unwrap(),
        );
        assert!(commits > 0, "{json}");
        // Counted around the measured phase vs by the threads inside it: within a few.
        assert!(syncs.abs_diff(commits) <= 64, "{json}");
        let unsynced = bench_json(
            &dir,
            &["--engine", engine, "--workload", "update", "--reuse"],
        );
        assert_eq!(unsynced["durability"], "none");
        if engine == "lmdb" {
            assert_eq!(unsynced["syncs"], 0, "{unsynced}");
        }
    }
}

/// redb's non-durable commits are followed by durable ones from a background thread (redb
/// keeps every non-durable commit's page lists in memory until one), counted as syncs.
#[cfg(feature = "peers")]
#[test]
fn bench_redb_unsynced_updates_are_followed_by_background_durable_commits() {
    let dir = test_dir("bench-redb-durable-commits");
    let args = [
        "--engine",
        "redb",
        "--workload",
        "update",
        "--durability",
        "periodic:20",
    ];
    let json = bench_json(&dir, &args);
    assert!(json["commits"].as_u64().unwrap() > 0, "{json}");
    assert!(json["syncs"].as_u64().unwrap() > 0, "{json}");
    assert!(
        json["syncs_source"]
            .as_str()
            .unwrap()
            .starts_with("background durable commits"),
        "{json}"
    );
}
