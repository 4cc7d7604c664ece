//! Runs the built `kv` binary as a person (or a script) would, on data files under the target
//! directory: the shell commands' round trip, each kind of bad input (one line on stderr,
//! non-zero exit, database intact), and the bench's JSON line.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

const BENCH_FIELDS: [&str; 18] = [
    "engine",
    "workload",
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

#[cfg(not(feature = "peers"))]
#[test]
fn peers_without_the_feature_are_a_clear_error() {
    let dir = test_dir("no-peers");
    let line = one_line_error(kv(&dir, &["bench", "--engine", "lmdb", "--records", "10"]));
    assert!(line.contains("--features peers"), "{line}");
}
