//! Regression tests for the data-loss findings of issue 7 (each failed on the pre-log code,
//! commit 5484c2f), and for bad input around the log: a clear typed error and files left
//! untouched, a torn tail discarded and reported, a full disk survived.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bufpool_engine::{Engine, EngineError, EngineOptions, Tree};
use bufpool_io::{Fault, FaultInjector, IoConfig};
use common::files::{self, key, value};

/// What a test expects a tree to hold.
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Options with a frame budget of `frames` pages and the given fault injector.
fn options(faults: &FaultInjector, frames: u64) -> EngineOptions {
    EngineOptions {
        io: IoConfig {
            faults: Some(faults.clone()),
            ..IoConfig::default()
        },
        ..common::options_with_frames(frames)
    }
}

/// Puts `records` records of `len`-byte values into `tree` (and `model`), waiting once for
/// the log at the end: all are acknowledged when this returns.
fn fill(
    engine: &Engine,
    tree: &Tree,
    records: std::ops::Range<u32>,
    salt: u8,
    len: usize,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let mut last = None;
    for i in records {
        let (key, value) = (key(i), value(i, salt, len));
        last = Some(tree.put_nowait(&key, &value).unwrap());
        model.insert(key, value);
    }
    if let Some(lsn) = last {
        engine.wait_durable(lsn).unwrap();
    }
}

/// Reopens `path` and checks every tree of `models` against its model, `verify` and `len`.
fn reopen_and_check(path: &Path, frames: u64, models: &[(&str, &Model)]) {
    let engine = Engine::open(path, options(&FaultInjector::new(), frames))
        .unwrap_or_else(|error| panic!("reopening {}: {error}", path.display()));
    for (name, model) in models {
        let tree = engine.tree(name).unwrap();
        files::assert_contents(&tree, model, "after reopening");
        tree.verify().unwrap();
        assert_eq!(tree.len().unwrap(), model.len() as u64, "len of {name}");
    }
    engine.close().unwrap();
}

// ---- Finding 1 ----------------------------------------------------------------------------

/// Fills another tree until the small pool has evicted everything of `tree` (its overflow
/// chains included), then reads `probe` so the path to it (not the chain) is back in memory.
fn evict_chains(engine: &Engine, tree: &Tree, probe: &[u8], round: u8) {
    let churn = engine.tree("churn").unwrap();
    let mut ignored = BTreeMap::new();
    let start = u32::from(round) * 4000;
    fill(
        engine,
        &churn,
        start..start + 4000,
        round,
        200,
        &mut ignored,
    );
    assert!(tree.get(probe).unwrap().is_some());
}

#[test]
fn finding1_a_put_or_delete_whose_old_chain_cannot_be_read_keeps_the_new_value_live() {
    let path = common::test_path("durability-finding1");
    let faults = FaultInjector::new();
    let engine = Engine::create(&path, options(&faults, 128)).unwrap();
    let tree = engine.tree("t").unwrap();
    let mut model = BTreeMap::new();
    fill(&engine, &tree, 0..20, 0, 40, &mut model);
    let (big, old_value, new_value) = (b"big".to_vec(), vec![0xA1; 10_000], vec![0xB2; 10_000]);
    tree.put(&big, &old_value).unwrap();
    model.insert(big.clone(), old_value.clone());
    evict_chains(&engine, &tree, &key(0), 1);

    // The first read of the put is the old chain's first page: it fails.
    faults.fail_nth_read(1, Fault::Eio);
    let result = tree.put(&big, &new_value);
    let expected = match &result {
        Ok(()) => &new_value,
        Err(_) => &old_value,
    };
    assert!(
        tree.get(&big).unwrap().as_ref() == Some(expected),
        "put returned {result:?}, but the key does not hold the value that result implies"
    );
    model.insert(big.clone(), expected.clone());
    tree.verify().unwrap();
    // The injected failure hit the old chain (not the path to the leaf): it was leaked.
    let leaked = engine.log_stats().leaked_pages;
    assert_eq!(leaked, 3, "pages leaked by the put");

    // Once the epoch passes, freed pages are reused: other large values must not land in
    // the chain the leaf points at.
    for i in 100..130 {
        let (key, value) = (key(i), value(i, 7, 9_000));
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    files::assert_contents(&tree, &model, "after more large values");
    tree.verify().unwrap();

    // The same for a delete: the call's result, the key and `len` must agree.
    let gone = b"gone".to_vec();
    let gone_value = vec![0xC3; 10_000];
    tree.put(&gone, &gone_value).unwrap();
    model.insert(gone.clone(), gone_value.clone());
    evict_chains(&engine, &tree, &key(0), 2);
    let len_before = tree.len().unwrap();
    faults.fail_nth_read(1, Fault::Eio);
    let result = tree.delete(&gone);
    let (found, len) = (tree.get(&gone).unwrap(), tree.len().unwrap());
    assert_eq!(
        engine.log_stats().leaked_pages,
        leaked + 3,
        "pages leaked by the delete"
    );
    match &result {
        Ok(true) => {
            assert_eq!(found, None, "delete returned Ok(true) but the key is there");
            assert_eq!(len, len_before - 1, "delete returned Ok(true): len");
            model.remove(&gone);
        }
        Ok(false) => panic!("delete of a present key returned Ok(false)"),
        Err(error) => {
            assert!(
                found.as_ref() == Some(&gone_value),
                "delete failed ({error}) but the key is gone"
            );
            assert_eq!(len, len_before, "delete failed ({error}): len changed");
        }
    }
    for i in 200..230 {
        let (key, value) = (key(i), value(i, 8, 9_000));
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    files::assert_contents(&tree, &model, "after the delete and more large values");
    tree.verify().unwrap();
    assert_eq!(tree.len().unwrap(), model.len() as u64);
    drop(tree);
    engine.close().unwrap();
    reopen_and_check(&path, 128, &[("t", &model)]);
}

// ---- Finding 2 ----------------------------------------------------------------------------

#[test]
fn finding2_falling_back_to_the_older_superblock_hands_out_no_live_page() {
    let path = common::test_path("durability-finding2");
    let engine = Engine::create(&path, options(&FaultInjector::new(), 256)).unwrap();
    let tree = engine.tree("old").unwrap();
    let mut model = BTreeMap::new();
    fill(&engine, &tree, 0..2000, 1, 100, &mut model);
    drop(tree);
    engine.close().unwrap();

    let newest = files::newest_superblock_page(&path);
    files::tear_page(&path, newest);

    let engine = Engine::open(&path, options(&FaultInjector::new(), 256))
        .unwrap_or_else(|error| panic!("open with the newest superblock copy torn: {error}"));
    let old = engine.tree("old").unwrap();
    files::assert_contents(&old, &model, "after falling back to the older superblock");
    let new = engine.tree("new").unwrap();
    let mut new_model = BTreeMap::new();
    for i in 0..50 {
        let (key, value) = (key(i), value(i, 2, 5_000));
        new.put(&key, &value).unwrap();
        new_model.insert(key, value);
    }
    files::assert_contents(&old, &model, "after 50 puts into a new tree");
    files::assert_contents(&new, &new_model, "the new tree");
    old.verify().unwrap();
    new.verify().unwrap();
    drop((old, new));
    engine.close().unwrap();
    reopen_and_check(&path, 256, &[("old", &model), ("new", &new_model)]);
}

// ---- Finding 3 ----------------------------------------------------------------------------

/// Deletes keys `first, first + 3, ...` below 300, waiting once for the log.
fn delete_every_third(
    engine: &Engine,
    tree: &Tree,
    first: u32,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let mut last = None;
    for i in (first..300).step_by(3) {
        let (removed, lsn) = tree.delete_nowait(&key(i)).unwrap();
        assert!(removed);
        last = Some(lsn);
        model.remove(&key(i));
    }
    engine.wait_durable(last.unwrap()).unwrap();
}

#[test]
fn finding3_a_checkpoint_failing_at_any_data_write_leaves_a_file_that_opens_with_all_data() {
    // The k-th write of the second checkpoint fails, for k growing by half each time until
    // the checkpoint needs fewer writes than k (bounded: it writes at most the file's pages).
    let mut failed_checkpoints = 0;
    let mut wrong_content = Vec::new();
    let mut k = 1u64;
    while k <= 5_000 {
        let path = common::test_path("durability-finding3");
        let faults = FaultInjector::new();
        let engine = Engine::create(&path, options(&faults, 512)).unwrap();
        let tree = engine.tree("t").unwrap();
        let mut model = BTreeMap::new();
        // Overflow values, then deletes: the free list is long when checkpoint N is taken.
        fill(&engine, &tree, 0..300, 1, 6_000, &mut model);
        delete_every_third(&engine, &tree, 0, &mut model);
        engine.checkpoint().unwrap();
        delete_every_third(&engine, &tree, 1, &mut model);
        fill(&engine, &tree, 300..400, 2, 6_000, &mut model);

        faults.fail_nth_write(k, Fault::Eio);
        let result = engine.checkpoint();
        faults.clear();
        drop(tree);
        drop(engine);
        if result.is_ok() {
            break;
        }
        failed_checkpoints += 1;
        let engine =
            Engine::open(&path, options(&FaultInjector::new(), 512)).unwrap_or_else(|error| {
                panic!("write {k} of a checkpoint failed, then the file does not open: {error}")
            });
        let tree = engine.tree("t").unwrap();
        tree.verify()
            .unwrap_or_else(|error| panic!("write {k} failed: verify: {error}"));
        if files::contents(&tree) != model || tree.len().unwrap() != model.len() as u64 {
            wrong_content.push(k);
        }
        drop(tree);
        engine.close().unwrap();
        k += k.div_ceil(2);
    }
    assert!(
        failed_checkpoints >= 5,
        "{failed_checkpoints} checkpoints failed"
    );
    assert!(
        wrong_content.is_empty(),
        "acknowledged records lost or changed when write k failed, k in {wrong_content:?}"
    );
}

// ---- Finding 4 ----------------------------------------------------------------------------

#[test]
fn finding4_a_torn_superblock_copy_does_not_stop_later_checkpoints() {
    for torn in ["newest", "older"] {
        let path = common::test_path("durability-finding4");
        let engine = Engine::create(&path, options(&FaultInjector::new(), 64)).unwrap();
        let tree = engine.tree("t").unwrap();
        let mut model = BTreeMap::new();
        fill(&engine, &tree, 0..20_000, 1, 100, &mut model);
        drop(tree);
        engine.close().unwrap();

        let newest = files::newest_superblock_page(&path);
        let page = if torn == "newest" { newest } else { 1 - newest };
        files::tear_page(&path, page);
        let context = format!("{torn} superblock copy (page {page}) torn");
        for round in 0..3u32 {
            let engine = Engine::open(&path, options(&FaultInjector::new(), 64))
                .unwrap_or_else(|error| panic!("{context}, round {round}: open: {error}"));
            let tree = engine.tree("t").unwrap();
            // A scan of a tree many times the pool: whatever was cached at open is evicted
            // and read back when a checkpoint writes it.
            files::assert_contents(&tree, &model, &context);
            for step in 0..3u32 {
                engine.checkpoint().unwrap_or_else(|error| {
                    panic!("{context}, round {round}: checkpoint {step}: {error}")
                });
                let from = 100_000 + (round * 3 + step) * 200;
                fill(&engine, &tree, from..from + 200, 2, 100, &mut model);
            }
            drop(tree);
            engine
                .close()
                .unwrap_or_else(|error| panic!("{context}, round {round}: close: {error}"));
        }
        reopen_and_check(&path, 256, &[("t", &model)]);
    }
}

// ---- Finding 5 ----------------------------------------------------------------------------

/// Set in the child process of finding 5: the database path it writes, and how many
/// records it puts into the churning tree before it dies.
const CHILD_ENV: &str = "BUFPOOL_DURABILITY_FINDING5_DB";
const CHURN_ENV: &str = "BUFPOOL_DURABILITY_FINDING5_CHURN";
const FINDING5_TEST: &str =
    "finding5_a_crash_after_a_checkpoint_keeps_every_checkpointed_and_acknowledged_record";

/// The child's work: 2,000 records checkpointed, 300 more that split leaves, another tree
/// churning the small pool (so evicted parents reach the file before their new siblings),
/// then the process ends without a checkpoint or any destructor.
fn finding5_child(path: &Path, churn_records: u32) -> ! {
    let engine = Engine::create(path, options(&FaultInjector::new(), 128)).unwrap();
    let tree = engine.tree("t").unwrap();
    for i in 0..2000u32 {
        tree.put(&key(i * 10), &value(i * 10, 1, 60)).unwrap();
    }
    engine.checkpoint().unwrap();
    // Between existing keys, and larger: most leaves split.
    for i in 0..300u32 {
        let at = i * 66 + 5;
        tree.put(&key(at), &value(at, 2, 300)).unwrap();
    }
    let churn = engine.tree("churn").unwrap();
    for i in 0..churn_records {
        churn.put(&key(i), &value(i, 3, 200)).unwrap();
    }
    println!("finding5 child: all writes acknowledged");
    std::process::exit(0);
}

#[test]
fn finding5_a_crash_after_a_checkpoint_keeps_every_checkpointed_and_acknowledged_record() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        let churn = std::env::var(CHURN_ENV).unwrap().parse().unwrap();
        finding5_child(Path::new(&path), churn);
    }
    // The crash comes at several points of the churn: evictions of the split pages (and
    // of their parents) are spread over it.
    let mut lost_acknowledged = Vec::new();
    for churn_records in [100, 200, 400, 800, 1600, 3000] {
        let path = common::test_path("durability-finding5");
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([FINDING5_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(CHURN_ENV, churn_records.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains("all writes acknowledged"),
            "child failed: {:?}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if let Err(problem) = check_finding5(&path, churn_records) {
            lost_acknowledged.push(problem);
        }
    }
    assert!(
        lost_acknowledged.is_empty(),
        "acknowledged records after the checkpoint lost: {lost_acknowledged:#?}"
    );
}

/// Panics if a checkpointed record is lost or the tree is damaged; `Err` if records written
/// after the checkpoint (acknowledged, synced) are missing.
fn check_finding5(path: &Path, churn_records: u32) -> Result<(), String> {
    let context = format!("crash after {churn_records} churn puts");
    let engine = Engine::open(path, options(&FaultInjector::new(), 128))
        .unwrap_or_else(|error| panic!("{context}: open: {error}"));
    let tree = engine.tree("t").unwrap();
    let unreadable: Vec<(u32, String)> = (0..2000u32)
        .filter_map(|i| match tree.get(&key(i * 10)) {
            Ok(Some(found)) if found == value(i * 10, 1, 60) => None,
            Ok(found) => Some((i * 10, format!("{:?} bytes", found.map(|v| v.len())))),
            Err(error) => Some((i * 10, error.to_string())),
        })
        .collect();
    assert!(
        unreadable.is_empty(),
        "{context}: {} of 2000 checkpointed records unreadable (first: {:?})",
        unreadable.len(),
        &unreadable[..unreadable.len().min(3)]
    );
    tree.verify()
        .unwrap_or_else(|error| panic!("{context}: verify: {error}"));
    let mut model = BTreeMap::new();
    for i in 0..2000u32 {
        model.insert(key(i * 10), value(i * 10, 1, 60));
    }
    for i in 0..300u32 {
        model.insert(key(i * 66 + 5), value(i * 66 + 5, 2, 300));
    }
    let stored = files::contents(&tree);
    let churn = engine.tree("churn").unwrap();
    churn.verify().unwrap();
    let lens = (tree.len().unwrap(), churn.len().unwrap());
    drop((tree, churn));
    engine.close().unwrap();
    if stored != model || lens != (2300, u64::from(churn_records)) {
        let missing = model
            .keys()
            .filter(|key| !stored.contains_key(*key))
            .count();
        return Err(format!(
            "{context}: {missing} of 2300 missing, len {lens:?}, expected (2300, {churn_records})"
        ));
    }
    Ok(())
}

// ---- Finding 6 ----------------------------------------------------------------------------

#[test]
fn finding6_a_failed_data_sync_refuses_writes_until_reopened_and_loses_nothing() {
    let path = common::test_path("durability-finding6");
    let faults = FaultInjector::new();
    let engine = Engine::create(&path, options(&faults, 256)).unwrap();
    let tree = engine.tree("t").unwrap();
    let mut model = BTreeMap::new();
    fill(&engine, &tree, 0..1000, 1, 100, &mut model);
    engine.checkpoint().unwrap();
    for i in (0..1000).step_by(2) {
        let (key, value) = (key(i), value(i, 2, 120));
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }

    // Every change is already in the synced log: the checkpoint's first sync is the data
    // file's.
    faults.fail_nth_sync(1, Fault::Eio);
    let error = engine.checkpoint().unwrap_err();
    assert!(error.is_sync_failure(), "checkpoint: {error}");
    let refused = |result: Result<(), EngineError>, what: &str| match result {
        Err(EngineError::WritesRefused { .. }) => {}
        other => panic!("{what} after a failed data sync: {other:?}, expected WritesRefused"),
    };
    refused(tree.put(b"after", b"sync failure"), "put");
    refused(tree.delete(&key(1)).map(drop), "delete");
    refused(engine.checkpoint(), "checkpoint");
    // Reads go on.
    assert_eq!(tree.get(&key(2)).unwrap(), Some(value(2, 2, 120)));
    assert_eq!(tree.get(b"after").unwrap(), None);
    drop(tree);
    drop(engine);
    reopen_and_check(&path, 256, &[("t", &model)]);
}

// ---- Bad input: a typed error naming the file, nothing written ------------------------------

/// Creates a database at `path` holding `t` = records `0..n`, closed.
fn closed_database(path: &Path, n: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let engine = Engine::create(path, options(&FaultInjector::new(), 256)).unwrap();
    let tree = engine.tree("t").unwrap();
    let mut model = BTreeMap::new();
    fill(&engine, &tree, 0..n, 1, 100, &mut model);
    drop(tree);
    engine.close().unwrap();
    model
}

/// Opens `path`, expecting an error; checks that the database file and its log are byte for
/// byte as before, and that the message names `names`.
fn open_fails_untouched(path: &Path, frames: u64, names: &Path, what: &str) -> EngineError {
    let before = files::snapshot(path);
    let error = match Engine::open(path, options(&FaultInjector::new(), frames)) {
        Ok(_) => panic!("{what}: the file opened"),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(
        message.contains(&*names.to_string_lossy()),
        "{what}: the error does not name {}: {message}",
        names.display()
    );
    files::assert_untouched(&before, path, what);
    error
}

#[test]
fn a_log_of_another_database_is_refused_by_name_and_nothing_is_written() {
    let path = common::test_path("durability-other-log");
    let other = common::test_path("durability-other-log-donor");
    closed_database(&path, 200);
    closed_database(&other, 300);
    std::fs::remove_dir_all(common::log_dir(&path)).unwrap();
    files::copy_dir(&common::log_dir(&other), &common::log_dir(&path));

    let error = open_fails_untouched(&path, 256, &common::log_dir(&path), "another's log");
    match &error {
        EngineError::LogMismatch {
            path: log,
            database,
            reason,
        } => {
            assert_eq!(log, &common::log_dir(&path));
            assert_eq!(database, &path);
            assert!(reason.contains("belongs to database"), "{reason}");
        }
        other => panic!("another database's log: {other:?}, expected LogMismatch"),
    }
}

#[test]
fn a_missing_log_is_refused_by_name_and_nothing_is_written() {
    let path = common::test_path("durability-missing-log");
    closed_database(&path, 200);
    std::fs::remove_dir_all(common::log_dir(&path)).unwrap();
    let error = open_fails_untouched(&path, 256, &common::log_dir(&path), "missing log");
    assert!(
        matches!(&error, EngineError::LogMissing { path: log } if *log == common::log_dir(&path)),
        "missing log: {error:?}, expected LogMissing"
    );
    assert!(
        !common::log_dir(&path).exists(),
        "the log directory was recreated"
    );
}

#[test]
fn a_database_newer_than_its_log_is_refused_by_name_and_nothing_is_written() {
    let path = common::test_path("durability-newer-than-log");
    let saved = common::log_dir(&common::test_path("durability-newer-than-log-saved"));
    let mut model = closed_database(&path, 200);
    files::copy_dir(&common::log_dir(&path), &saved);
    let engine = Engine::open(&path, options(&FaultInjector::new(), 256)).unwrap();
    let tree = engine.tree("t").unwrap();
    for round in 0..3 {
        fill(
            &engine,
            &tree,
            1000 + round * 100..1100 + round * 100,
            2,
            100,
            &mut model,
        );
        engine.checkpoint().unwrap();
    }
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_dir_all(common::log_dir(&path)).unwrap();
    files::copy_dir(&saved, &common::log_dir(&path));

    let error = open_fails_untouched(&path, 256, &common::log_dir(&path), "an older log");
    match &error {
        EngineError::LogMismatch {
            path: log,
            database,
            reason,
        } => {
            assert_eq!(log, &common::log_dir(&path));
            assert_eq!(database, &path);
            assert!(reason.contains("newer than its log"), "{reason}");
        }
        other => panic!("an older copy of the log: {other:?}, expected LogMismatch"),
    }
}

/// Writes 600 synced puts of 900-byte values with no checkpoint after them, then flips
/// bytes inside the record of put 400 (199 synced records follow it). Returns its LSN.
fn log_damaged_in_the_middle(path: &Path) -> u64 {
    let engine = Engine::create(path, options(&FaultInjector::new(), 256)).unwrap();
    let tree = engine.tree("t").unwrap();
    let segment_bytes = EngineOptions::default().log_segment_bytes;
    let mut damaged = None;
    // Each put is synced on its own (Immediate): the next record starts at the durable end.
    for i in 0..600u32 {
        if i == 400 {
            damaged = Some(engine.durable_lsn().0);
        }
        tree.put(&key(i), &value(i, 1, 900)).unwrap();
    }
    drop(tree);
    // No checkpoint: recovery must replay all of it.
    drop(engine);
    let lsn = damaged.unwrap();
    let (len, named) = files::record_header(path, lsn, segment_bytes);
    assert_eq!(
        named, lsn,
        "the record of put 400 starts at the durable end before it"
    );
    assert!(len > 64);
    let (segment, offset) = files::log_position(path, lsn, segment_bytes);
    let mut bytes = std::fs::read(&segment).unwrap()[offset as usize + 48..][..16].to_vec();
    bytes.iter_mut().for_each(|byte| *byte ^= 0x5A);
    files::overwrite(&segment, offset + 48, &bytes);
    lsn
}

fn expect_middle_damage(path: &Path, frames: u64, lsn: u64) {
    let error = open_fails_untouched(path, frames, &common::log_dir(path), "middle damage");
    match &error {
        EngineError::LogCorrupted {
            path: log, lsn: at, ..
        } => {
            assert_eq!(log, &common::log_dir(path));
            assert_eq!(*at, lsn, "the damaged record's position");
        }
        other => panic!("a log damaged in the middle: {other:?}, expected LogCorrupted"),
    }
}

#[test]
fn a_log_damaged_in_the_middle_is_refused_by_name_and_nothing_is_written() {
    let path = common::test_path("durability-middle-damage");
    let lsn = log_damaged_in_the_middle(&path);
    // A pool that holds every page recovery touches.
    expect_middle_damage(&path, 4096, lsn);
}

#[test]
fn a_log_damaged_in_the_middle_leaves_the_file_untouched_even_when_redo_must_evict() {
    let path = common::test_path("durability-middle-damage-evicting");
    let lsn = log_damaged_in_the_middle(&path);
    // 64 frames: redo of the 400 records before the damage evicts dirty pages.
    expect_middle_damage(&path, 64, lsn);
}

#[test]
fn a_torn_record_at_the_tail_is_discarded_reported_and_the_rest_recovered() {
    for variant in ["last record cut in half", "garbage after the last record"] {
        let path = common::test_path("durability-torn-tail");
        let engine = Engine::create(&path, options(&FaultInjector::new(), 256)).unwrap();
        let tree = engine.tree("t").unwrap();
        let segment_bytes = EngineOptions::default().log_segment_bytes;
        let mut model = BTreeMap::new();
        for i in 0..50u32 {
            let (key, value) = (key(i), value(i, 1, 300));
            tree.put(&key, &value).unwrap();
            model.insert(key, value);
        }
        let last = engine.durable_lsn().0;
        let (key, value) = (key(50), value(50, 1, 300));
        tree.put(&key, &value).unwrap();
        drop(tree);
        drop(engine);
        let (len, named) = files::record_header(&path, last, segment_bytes);
        assert_eq!(named, last);
        if variant == "last record cut in half" {
            // As if power failed while its write was in flight: it was never acknowledged.
            let (segment, offset) = files::log_position(&path, last, segment_bytes);
            let half = u64::from(len) / 2;
            files::overwrite(
                &segment,
                offset + half,
                &vec![0; (u64::from(len) - half) as usize],
            );
        } else {
            model.insert(key, value);
            let end = log_end(last, len);
            let (segment, offset) = files::log_position(&path, end, segment_bytes);
            let garbage: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
            files::overwrite(&segment, offset, &garbage);
        }

        let engine = Engine::open(&path, options(&FaultInjector::new(), 256))
            .unwrap_or_else(|error| panic!("{variant}: open: {error}"));
        let report = engine.recovery_report();
        assert!(
            report.discarded_tail_bytes > 0,
            "{variant}: nothing discarded: {report:?}"
        );
        let tree = engine.tree("t").unwrap();
        files::assert_contents(&tree, &model, variant);
        tree.verify().unwrap();
        assert_eq!(tree.len().unwrap(), model.len() as u64);
        drop(tree);
        engine.close().unwrap();
        reopen_and_check(&path, 256, &[("t", &model)]);
    }
}

/// The end of the log whose last record starts at `last` and is `len` bytes long: the next
/// block boundary (each synced write is padded to a 4 KiB block).
fn log_end(last: u64, len: u32) -> u64 {
    (last + u64::from(len)).next_multiple_of(4096)
}

// ---- A full disk ----------------------------------------------------------------------------

fn is_enospc(error: &EngineError) -> bool {
    matches!(error, EngineError::Io(bufpool_io::IoError::Os { source, .. })
        if source.raw_os_error() == Some(libc_enospc()))
}

/// ENOSPC on Linux (no libc dependency for one constant).
fn libc_enospc() -> i32 {
    std::io::Error::from(std::io::ErrorKind::StorageFull)
        .raw_os_error()
        .unwrap_or(28)
}

/// Puts records `from..` until one fails; it must fail with ENOSPC and change nothing (the
/// key absent, `len` as before). A replacement and a delete are then tried: each either
/// works (it needed no new space) or fails the same way, changing nothing. Returns the first
/// key that failed.
fn put_until_full(tree: &Tree, from: u32, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> u32 {
    for i in from..from + 20_000 {
        let (key, value) = (key(i), value(i, 5, 300));
        match tree.put(&key, &value) {
            Ok(()) => {
                model.insert(key, value);
            }
            Err(error) => {
                eprintln!("put {i} on a full disk: {error}");
                assert!(is_enospc(&error), "put {i} on a full disk: {error:?}");
                assert_eq!(tree.get(&key).unwrap(), None, "the failed put was applied");
                assert_eq!(tree.len().unwrap(), model.len() as u64);
                let first = model.keys().next().unwrap().clone();
                match tree.put(&first, b"replacement") {
                    Ok(()) => {
                        model.insert(first.clone(), b"replacement".to_vec());
                    }
                    Err(error) => assert!(is_enospc(&error), "a replacement: {error:?}"),
                }
                let last = model.keys().next_back().unwrap().clone();
                match tree.delete(&last) {
                    Ok(true) => {
                        model.remove(&last);
                    }
                    Ok(false) => panic!("a delete of a present key returned Ok(false)"),
                    Err(error) => assert!(is_enospc(&error), "a delete: {error:?}"),
                }
                // Reads go on, and see nothing of the failed writes.
                files::assert_contents(tree, model, "on a full disk");
                tree.verify().unwrap();
                assert_eq!(tree.len().unwrap(), model.len() as u64);
                return i;
            }
        }
    }
    panic!("the disk never filled up");
}

/// Replaces existing values by ones of the same length (no new page needed, only log) until
/// one fails: the log needs a new segment and the disk has no room for it. It must fail
/// with ENOSPC naming a log segment, and leave the old value.
fn replace_until_log_full(tree: &Tree, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for round in 0..4000usize {
        let key = &keys[round % keys.len()];
        let value = value(round as u32, 9, model[key].len());
        match tree.put(key, &value) {
            Ok(()) => {
                model.insert(key.clone(), value);
            }
            Err(error) => {
                eprintln!("replacement {round} on a full disk: {error}");
                assert!(is_enospc(&error), "replacement on a full disk: {error:?}");
                assert!(error.to_string().contains(".wal"), "not the log: {error}");
                assert!(tree.get(key).unwrap().as_ref() == model.get(key));
                files::assert_contents(tree, model, "the log full");
                return;
            }
        }
    }
    panic!("the log never needed a new segment");
}

/// After the disk had room again: more writes than a segment holds, a checkpoint, a reopen.
fn writes_go_on(
    engine: Engine,
    tree: Tree,
    path: &Path,
    from: u32,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    for i in from..from + 600 {
        let (key, value) = (key(i), value(i, 6, 300));
        tree.put(&key, &value)
            .unwrap_or_else(|error| panic!("put {i} once space returned: {error}"));
        model.insert(key, value);
    }
    engine.checkpoint().unwrap();
    files::assert_contents(&tree, model, "once space returned");
    drop(tree);
    engine.close().unwrap();
    let engine = Engine::open(path, common::options_with_frames(256)).unwrap();
    let tree = engine.tree("t").unwrap();
    files::assert_contents(&tree, model, "reopened");
    tree.verify().unwrap();
    assert_eq!(tree.len().unwrap(), model.len() as u64);
    drop(tree);
    engine.close().unwrap();
}

#[test]
fn a_write_that_cannot_be_logged_on_a_full_disk_fails_with_enospc_and_writes_go_on_later() {
    let path = common::test_path("durability-full-disk");
    let faults = FaultInjector::new();
    let options = EngineOptions {
        log_segment_bytes: 1 << 20,
        ..options(&faults, 256)
    };
    let engine = Engine::create(&path, options).unwrap();
    let tree = engine.tree("t").unwrap();
    let mut model = BTreeMap::new();
    // The disk is full from now on: the current segment still takes records, the next one
    // cannot be allocated.
    faults.fail_all_allocations(Some(Fault::Enospc));
    let failed = put_until_full(&tree, 0, &mut model);
    assert!(
        failed > 100,
        "only {failed} puts fit in the first 1 MiB segment"
    );
    replace_until_log_full(&tree, &mut model);
    faults.fail_all_allocations(None);
    writes_go_on(engine, tree, &path, failed, &mut model);
}

#[test]
fn on_a_real_full_filesystem_a_write_fails_with_enospc_and_writes_go_on_once_space_returns() {
    let Some(mount) = common::LoopMount::new("durability-full-disk", 48 << 20) else {
        return;
    };
    let path = mount.dir.join("full.db");
    let options = EngineOptions {
        log_segment_bytes: 1 << 20,
        ..common::options_with_frames(256)
    };
    let engine = Engine::create(&path, options).unwrap();
    let tree = engine.tree("t").unwrap();
    let mut model = BTreeMap::new();
    for i in 0..100 {
        let (key, value) = (key(i), value(i, 5, 300));
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    // Fill the filesystem (bounded by its size).
    let filler = mount.dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x77u8; 64 << 10];
    for _ in 0..(48 << 20) / chunk.len() + 1 {
        use std::io::Write;
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = file.sync_all();
    drop(file);
    // The first write to need space: a page for the data file, or a log segment.
    let failed = put_until_full(&tree, 100, &mut model);
    // Then a log segment for certain.
    replace_until_log_full(&tree, &mut model);
    std::fs::remove_file(&filler).unwrap();
    writes_go_on(engine, tree, &path, failed, &mut model);
    drop(mount);
}

/// Log segments are zero-filled before records go into them (so a log sync overwrites
/// written blocks and is a cache flush, not a journal commit): the first at creation, the
/// next by the flusher once the current one is half used. Appends that cross into the next
/// segment find it ready, a zero-fill a crash interrupted is cleaned up at open, and every
/// acknowledged record is there after reopening.
#[test]
fn log_segments_are_zero_filled_before_appends_reach_them() {
    let path = common::test_path("durability-zero-filled-segments");
    let segment_bytes = 1u64 << 20;
    let options = || EngineOptions {
        log_segment_bytes: segment_bytes,
        ..options(&FaultInjector::new(), 256)
    };
    let engine = Engine::create(&path, options()).unwrap();
    let stats = engine.log_stats();
    assert_eq!(
        (stats.segments_prepared, stats.segments_unprepared),
        (1, 0),
        "the first segment is zero-filled at creation"
    );
    let tree = engine.tree("t").unwrap();
    let mut model = BTreeMap::new();
    let mut next = 0u32;
    // Past half of segment 0, in acknowledged steps.
    while engine.log_stats().durable_lsn < segment_bytes * 6 / 10 {
        fill(&engine, &tree, next..next + 50, 1, 300, &mut model);
        next += 50;
    }
    // The flusher wakes at least every 100 ms; give it up to 10 s on a loaded machine.
    let mut rounds = 0;
    while engine.log_stats().segments_prepared < 2 {
        rounds += 1;
        assert!(rounds < 400, "segment 1 was not zero-filled ahead");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let segment_1 = common::log_dir(&path).join(format!("{:016x}.wal", 1));
    let bytes = std::fs::read(&segment_1).unwrap();
    assert_eq!(bytes.len() as u64, segment_bytes);
    assert!(
        bytes.iter().all(|&b| b == 0),
        "a prepared segment holds zeros"
    );
    // Into segment 1: it was ready, so no append created a segment.
    while engine.log_stats().durable_lsn < segment_bytes * 13 / 10 {
        fill(&engine, &tree, next..next + 50, 2, 300, &mut model);
        next += 50;
    }
    assert_eq!(engine.log_stats().segments_unprepared, 0);
    drop(tree);
    engine.close().unwrap();

    // A zero-fill cut short by a crash leaves its temporary file: removed at open, never read.
    let leftover = common::log_dir(&path).join(format!("{:016x}.wal.zeroing", 7));
    std::fs::write(&leftover, b"interrupted zero-fill").unwrap();
    reopen_and_check(&path, 256, &[("t", &model)]);
    assert!(
        !leftover.exists(),
        "the unfinished zero-fill is removed at open"
    );
}

/// A torn last record is discarded at open and appends resume at the next block. The
/// damaged bytes in the tail of its block must be zeroed: left there, a recovery that
/// starts before them (an open that crashed before its checkpoint landed; seen in the long
/// power-loss run, "damaged record in the middle of the log") stops at them, before the
/// records appended since. After more acknowledged writes and a crash, all are there.
#[test]
fn writes_after_a_discarded_torn_tail_survive_the_next_crash() {
    let path = common::test_path("durability-torn-tail-then-more");
    let engine = Engine::create(&path, options(&FaultInjector::new(), 256)).unwrap();
    let tree = engine.tree("t").unwrap();
    let segment_bytes = EngineOptions::default().log_segment_bytes;
    let mut model = BTreeMap::new();
    for i in 0..50u32 {
        let (key, value) = (key(i), value(i, 1, 300));
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    // Three records written and synced together, in one block; the third is torn below,
    // so the log ends inside that block.
    let first = engine.durable_lsn().0;
    let mut lsn = None;
    for i in 50..53u32 {
        let (key, value) = (key(i), value(i, 1, 300));
        lsn = Some(tree.put_nowait(&key, &value).unwrap());
        if i < 52 {
            model.insert(key, value);
        }
    }
    engine.wait_durable(lsn.unwrap()).unwrap();
    drop(tree);
    drop(engine);
    let (len_1, _) = files::record_header(&path, first, segment_bytes);
    let second = first + u64::from(len_1).next_multiple_of(8);
    let (len_2, _) = files::record_header(&path, second, segment_bytes);
    let last = second + u64::from(len_2).next_multiple_of(8);
    let (len, named) = files::record_header(&path, last, segment_bytes);
    assert_eq!(named, last);
    assert!(last % 4096 != 0 && last / 4096 == first / 4096, "one block");
    let (segment, offset) = files::log_position(&path, last, segment_bytes);
    let half = u64::from(len) / 2;
    files::overwrite(
        &segment,
        offset + half,
        &vec![0xa5; (u64::from(len) - half) as usize],
    );

    let engine = Engine::open(&path, options(&FaultInjector::new(), 256)).unwrap();
    assert!(engine.recovery_report().discarded_tail_bytes > 0);
    let bytes = std::fs::read(&segment).unwrap();
    let garbage_end = (offset + u64::from(len)).min((offset + half).next_multiple_of(4096));
    assert!(
        bytes[(offset + half) as usize..garbage_end as usize]
            .iter()
            .all(|&b| b == 0),
        "the discarded bytes in the last block were left in place"
    );
    let tree = engine.tree("t").unwrap();
    for i in 100..150u32 {
        let (key, value) = (key(i), value(i, 2, 300));
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    drop(tree);
    drop(engine);
    reopen_and_check(&path, 256, &[("t", &model)]);
}
