//! kill -9: a child process (this test binary run again, see `CHILD_DB`) runs writers under
//! `Durability::Immediate` and reports each acknowledged operation on its stdout, a pipe,
//! after the call returned `Ok`; the parent kills it with SIGKILL at random moments (some
//! while it is still opening, that is recovering), reopens the database itself and checks
//! it against the reported operations.
//!
//! Writers own disjoint keys and draw their operations from a seeded generator, so the
//! parent knows each writer's sequence: the reported operations must all be there, and each
//! writer's next one (in flight, maybe done, maybe not reported yet) wholly or not at all.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bufpool_engine::{Durability, Engine, EngineOptions};
use common::oracle::{self, Db, Op};
use common::workload;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Set in the child's environment: the database it writes to. Without it, the child entry
/// point returns at once.
const CHILD_DB: &str = "BUFPOOL_KILL9_CHILD_DB";
/// Set in the child's environment: the seed of its writers' operations.
const CHILD_SEED: &str = "BUFPOOL_KILL9_CHILD_SEED";
const WRITERS: u32 = 3;
/// Key indexes each writer owns (in each tree).
const KEYS_PER_WRITER: u32 = 1000;
const TREES: [&str; 2] = ["a", "b"];
/// A child writes at most this many operations per writer (the parent kills it long before).
const CHILD_OPS_MAX: u64 = 200_000;
/// How long the parent waits for the child's next line before failing.
const CHILD_SILENCE_MAX: Duration = Duration::from_secs(60);

fn options() -> EngineOptions {
    EngineOptions {
        durability: Durability::Immediate,
        checkpoint_log_bytes: 1 << 20,
        log_segment_bytes: 1 << 20,
        ..common::options_with_frames(128)
    }
}

fn writer_key(writer: u32, index: u32) -> Vec<u8> {
    let mut key = format!("w{writer}/").into_bytes();
    key.extend(workload::key(index));
    key
}

/// The operations of writer `writer` in a child run with `seed`, in order: puts (small and
/// overflow values), deletes, runs of consecutive inserts or deletes (splits, merges), now
/// and then a checkpoint. The same for child and parent.
struct WriterOps {
    rng: SmallRng,
    writer: u32,
    seq: u64,
    id_base: u64,
    burst: Option<(u32, u32, bool)>,
}

impl WriterOps {
    fn new(seed: u64, writer: u32) -> WriterOps {
        WriterOps {
            rng: SmallRng::seed_from_u64(seed ^ (u64::from(writer) << 48)),
            writer,
            seq: 0,
            id_base: (seed & 0xffff_ffff) << 32 | u64::from(writer) << 28,
            burst: None,
        }
    }
}

impl Iterator for WriterOps {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        self.seq += 1;
        let rng = &mut self.rng;
        let tree = TREES[rng.random_range(0..TREES.len())].to_string();
        let (index, delete) = match self.burst.take() {
            Some((index, left, delete)) => {
                if left > 1 && index + 1 < KEYS_PER_WRITER {
                    self.burst = Some((index + 1, left - 1, delete));
                }
                (index, delete)
            }
            None => {
                let index = rng.random_range(0..KEYS_PER_WRITER);
                match rng.random_range(0..100) {
                    0..2 => return Some(Op::Checkpoint),
                    2..5 => {
                        let delete = rng.random_bool(0.5);
                        self.burst = Some((index + 1, rng.random_range(10..50), delete));
                        (index, delete)
                    }
                    5..60 => (index, false),
                    _ => (index, true),
                }
            }
        };
        let tree = match &self.burst {
            // A run stays in one tree.
            Some(_) => TREES[0].to_string(),
            None => tree,
        };
        let key = writer_key(self.writer, index);
        Some(if delete {
            Op::Delete { tree, key }
        } else {
            let len = workload::value_len(rng);
            Op::Put {
                tree,
                key,
                value: workload::value(self.id_base + self.seq, len),
            }
        })
    }
}

/// The child: when `CHILD_DB` is set, opens the database, prints `READY`, runs the writers
/// and prints `ACK writer seq` after each acknowledged operation (0-based per writer).
/// Run by the parent as `<this binary> --exact child_process --nocapture`.
#[test]
fn child_process() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED)
        .expect("the seed is set with the database")
        .parse()
        .expect("a numeric seed");
    let engine = Engine::open(&path, options()).expect("the child opens the database");
    let trees: Vec<_> = TREES
        .iter()
        .map(|name| engine.tree(name).unwrap())
        .collect();
    // On a line of its own: the harness has printed "test child_process ... " unterminated.
    writeln!(std::io::stdout(), "\nREADY").unwrap();
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (engine, trees) = (&engine, &trees);
            scope.spawn(move || {
                let ops = WriterOps::new(seed, writer).take(CHILD_OPS_MAX as usize);
                for (seq, op) in ops.enumerate() {
                    let tree = |name: &str| &trees[TREES.iter().position(|t| *t == name).unwrap()];
                    let result = match &op {
                        Op::Put {
                            tree: name,
                            key,
                            value,
                        } => tree(name).put(key, value),
                        Op::Delete { tree: name, key } => tree(name).delete(key).map(drop),
                        Op::Checkpoint => engine.checkpoint(),
                        Op::CreateTree { .. } => unreachable!("writers create no trees"),
                    };
                    if let Err(error) = result {
                        panic!("writer {writer} op {seq} ({}): {error}", op.kind());
                    }
                    // Reported only now that it is acknowledged; one line, one write.
                    let line = format!("ACK {writer} {seq}\n");
                    std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
                }
            });
        }
    });
}

/// Creates the database with every other key of each writer in each tree.
fn create(path: &Path) -> Db {
    let engine = Engine::create(path, options()).unwrap();
    let mut db = Db::new();
    for (number, name) in TREES.iter().enumerate() {
        let mut rng = SmallRng::seed_from_u64(number as u64);
        let records: oracle::Records = (0..WRITERS)
            .flat_map(|writer| (0..KEYS_PER_WRITER).step_by(2).map(move |i| (writer, i)))
            .map(|(writer, index)| {
                let len = workload::value_len(&mut rng);
                let id = u64::from(writer) << 20 | u64::from(index);
                (writer_key(writer, index), workload::value(id, len))
            })
            .collect();
        engine.tree(name).unwrap().load_sorted(&records).unwrap();
        db.insert(name.to_string(), records);
    }
    engine.close().unwrap();
    db
}

#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    /// Kills before the child said it had opened the database (during start or recovery).
    kills_while_opening: u64,
    acknowledged_ops: u64,
    records_checked: u64,
    in_flight_present: u64,
    in_flight_absent: u64,
}

/// What one child run reported before it was killed.
struct ChildRun {
    ready: bool,
    /// Per writer, how many operations were acknowledged (reported in order from 0).
    acked: Vec<u64>,
}

/// Starts a child on `path` with `seed`, kills it with SIGKILL at a moment drawn from `rng`,
/// and returns what it reported.
fn run_child(path: &Path, seed: u64, rng: &mut SmallRng) -> ChildRun {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, path)
        .env(CHILD_SEED, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the test binary starts again as the child");
    let stdout = child.stdout.take().unwrap();
    let (lines, receive) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = ChildRun {
        ready: false,
        acked: vec![0; WRITERS as usize],
    };
    let take = |line: String, run: &mut ChildRun| {
        if line == "READY" {
            run.ready = true;
        } else if let Some(ack) = line.strip_prefix("ACK ") {
            let mut fields = ack.split(' ').map(|field| field.parse::<u64>().unwrap());
            let (writer, seq) = (fields.next().unwrap(), fields.next().unwrap());
            let next = &mut run.acked[writer as usize];
            assert_eq!(seq, *next, "writer {writer} reported out of order");
            *next += 1;
        }
    };
    // Either soon after the start (often while the child recovers), or after a random
    // number of acknowledgements and a random pause.
    if rng.random_range(0..5) == 0 {
        std::thread::sleep(Duration::from_micros(rng.random_range(0..60_000)));
    } else {
        let wanted: u64 = rng.random_range(1..400);
        let mut seen = 0;
        let deadline = Instant::now() + CHILD_SILENCE_MAX;
        while seen < wanted {
            let Ok(line) = receive.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let status = child.try_wait().unwrap();
                panic!(
                    "child {seed} went silent or ended by itself ({status:?}) after {seen} acks"
                );
            };
            seen += u64::from(line.starts_with("ACK "));
            take(line, &mut run);
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3000)));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    for line in receive.try_iter() {
        take(line, &mut run);
    }
    // A child that ended by itself (a panic in a writer) failed: its stderr says why.
    assert_eq!(
        status.signal(),
        Some(9),
        "child {seed} ended with {status:?}"
    );
    run
}

fn kill_and_check(kills: u64, first_seed: u64) -> Tally {
    let path = common::test_path(&format!("kill9-{first_seed}"));
    let mut acked = create(&path);
    let mut rng = SmallRng::seed_from_u64(first_seed);
    let mut tally = Tally::default();
    for kill in 0..kills {
        let seed: u64 = rng.random();
        let run = run_child(&path, seed, &mut rng);
        tally.kills += 1;
        tally.kills_while_opening += u64::from(!run.ready);
        let mut in_flight = Vec::new();
        for writer in 0..WRITERS {
            let done = run.acked[writer as usize];
            let mut ops = WriterOps::new(seed, writer);
            for op in ops.by_ref().take(done as usize) {
                oracle::apply(&mut acked, &op);
            }
            tally.acknowledged_ops += done;
            if run.ready {
                in_flight.extend(ops.next().filter(|op| *op != Op::Checkpoint));
            }
        }
        let context = format!("kill {kill} (child seed {seed}, acks {:?})", run.acked);
        let engine = Engine::open(&path, options())
            .unwrap_or_else(|error| panic!("{context}: reopen: {error}"));
        let back = oracle::read_all(&engine).unwrap_or_else(|error| panic!("{context}: {error}"));
        match oracle::check(&back.db, &acked, &in_flight) {
            Ok(outcome) => {
                tally.in_flight_present += outcome.present;
                tally.in_flight_absent += outcome.absent;
            }
            Err(problems) => panic!(
                "{context}: {} differences (lost or half-applied):\n{}",
                problems.len(),
                problems[..problems.len().min(20)].join("\n")
            ),
        }
        tally.records_checked += back.records;
        acked = back.db;
        drop(engine);
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(common::log_dir(&path));
    tally
}

fn report(label: &str, tally: &Tally, started: Instant) {
    println!(
        "{label}: {} kills ({} before the child had opened the database: while starting or \
         recovering), {} acknowledged operations \
         checked, {} records read back, in-flight present {} / absent {}, lost: 0, {:.1} s",
        tally.kills,
        tally.kills_while_opening,
        tally.acknowledged_ops,
        tally.records_checked,
        tally.in_flight_present,
        tally.in_flight_absent,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn acknowledged_writes_survive_kill9() {
    let started = Instant::now();
    let tally = kill_and_check(24, 1);
    report("kill -9", &tally, started);
    assert!(tally.acknowledged_ops > 0, "{tally:?}");
}

#[test]
#[ignore = "long: 120 kills"]
fn acknowledged_writes_survive_kill9_long() {
    let started = Instant::now();
    let tally = kill_and_check(120, 1000);
    report("kill -9, long", &tally, started);
    assert!(tally.acknowledged_ops > 0, "{tally:?}");
}
