//! Simulated power loss: synced writes survive a cut, unsynced ones come back old, new or torn
//! at 512-byte sectors, all I/O fails afterwards, and the automatic cut points fire at the
//! right count, on both engines.

mod support;

use bufpool_io::{
    CutReport, DirectFile, EngineChoice, IoConfig, IoEngine, IoError, IoOp, IoRequest, OpenOptions,
    PowerLoss, SECTOR_BYTES,
};
use support::{AlignedBuf, ENGINES, PAGE, engine, engine_with, fresh_file, pattern};

fn simulated(choice: EngineChoice, power_loss: &PowerLoss) -> IoEngine {
    engine_with(IoConfig {
        engine: choice,
        power_loss: Some(power_loss.clone()),
        ..IoConfig::default()
    })
}

/// Writes `data` as one request per page, page i at `(first_page + i) * PAGE`, in one batch;
/// returns the outcomes.
fn write_pages(
    engine: &IoEngine,
    file: &DirectFile,
    first_page: usize,
    data: &AlignedBuf,
) -> Vec<Result<(), IoError>> {
    let pages = data.as_slice().len() / PAGE;
    let requests: Vec<IoRequest> = (0..pages)
        .map(|i| {
            let offset = ((first_page + i) * PAGE) as u64;
            IoRequest::write(offset, data.as_ptr().wrapping_add(i * PAGE), PAGE)
        })
        .collect();
    let mut outcomes: Vec<Result<(), IoError>> = (0..pages).map(|_| Ok(())).collect();
    // SAFETY: `data` outlives the call and nobody else touches it.
    unsafe { engine.submit_batch(file, &requests, &mut outcomes) };
    outcomes
}

fn write_pages_ok(engine: &IoEngine, file: &DirectFile, first_page: usize, data: &AlignedBuf) {
    for (i, outcome) in write_pages(engine, file, first_page, data)
        .iter()
        .enumerate()
    {
        assert!(outcome.is_ok(), "page {}: {outcome:?}", first_page + i);
    }
}

/// The first `pages` pages of the file, read without any simulator; zeros past its end.
fn read_back(file: &DirectFile, pages: usize) -> Vec<u8> {
    let buf = AlignedBuf::new(pages * PAGE);
    let len = (file.len().expect("len") as usize).min(pages * PAGE);
    assert_eq!(len % PAGE, 0, "only whole pages are ever written");
    if len > 0 {
        // SAFETY: `buf` is live and exclusive for the call, and `len` fits in it.
        unsafe { engine(EngineChoice::Sync).read_at(file, 0, buf.as_ptr(), len) }
            .expect("read back after the cut, without the simulator");
    }
    buf.as_slice().to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Old,
    New,
    Torn,
}

/// Checks that every sector of `actual` is the same sector of `old` or of `new` (never a
/// mixture inside a sector, never anything else) and says which of the three the page is.
fn classify(actual: &[u8], old: &[u8], new: &[u8], what: &str) -> Seen {
    let (mut old_sectors, mut new_sectors) = (0, 0);
    for (index, sector) in actual.chunks(SECTOR_BYTES).enumerate() {
        let range = index * SECTOR_BYTES..(index + 1) * SECTOR_BYTES;
        assert_ne!(old[range.clone()], new[range.clone()], "{what}: test data");
        if sector == &old[range.clone()] {
            old_sectors += 1;
        } else if sector == &new[range] {
            new_sectors += 1;
        } else {
            panic!("{what}: sector {index} is neither the old nor the new bytes");
        }
    }
    match (old_sectors, new_sectors) {
        (_, 0) => Seen::Old,
        (0, _) => Seen::New,
        _ => Seen::Torn,
    }
}

/// Adds a page's fate to a report-shaped tally (an old page counts as a dropped write).
fn tally(report: &mut CutReport, seen: Seen) {
    match seen {
        Seen::Old => report.writes_dropped += 1,
        Seen::New => report.writes_kept += 1,
        Seen::Torn => report.writes_torn += 1,
    }
}

const SCENARIO_PAGES: usize = 12;

/// Pages 0..8 written with A and synced; 4..8 rewritten with B and 8..12 written with C past
/// the old end of file, both unsynced; then a cut with `seed`. Returns the report and the file.
fn survive_scenario(choice: EngineChoice, seed: u64) -> (CutReport, Vec<u8>) {
    let file = fresh_file("pl-survive", choice);
    let power_loss = PowerLoss::new();
    let engine = simulated(choice, &power_loss);
    let a = AlignedBuf::filled(8 * PAGE, 1);
    write_pages_ok(&engine, &file, 0, &a);
    engine.sync_data(&file).expect("sync");
    let b = AlignedBuf::filled(4 * PAGE, 2);
    write_pages_ok(&engine, &file, 4, &b);
    let c = AlignedBuf::filled(4 * PAGE, 3);
    write_pages_ok(&engine, &file, 8, &c);
    assert_eq!(power_loss.writes_seen(), 16);
    let report = power_loss.cut(seed);
    (report, read_back(&file, SCENARIO_PAGES))
}

#[test]
fn synced_writes_survive_and_unsynced_ones_are_old_new_or_torn_per_sector() {
    let a = pattern(8 * PAGE, 1);
    let b = pattern(4 * PAGE, 2);
    let c = pattern(4 * PAGE, 3);
    let zeros = vec![0u8; 4 * PAGE];
    for choice in ENGINES {
        let mut overall = CutReport::default();
        for seed in 0..12 {
            let (report, disk) = survive_scenario(choice, seed);
            let what = format!("{choice:?} seed {seed}");
            assert_eq!(
                disk[..4 * PAGE],
                a[..4 * PAGE],
                "{what}: synced pages changed"
            );
            let mut observed = CutReport::default();
            for page in 4..SCENARIO_PAGES {
                let actual = &disk[page * PAGE..(page + 1) * PAGE];
                let (old, new) = if page < 8 {
                    let i = page - 4;
                    (
                        &a[page * PAGE..(page + 1) * PAGE],
                        &b[i * PAGE..(i + 1) * PAGE],
                    )
                } else {
                    let i = page - 8;
                    (
                        &zeros[i * PAGE..(i + 1) * PAGE],
                        &c[i * PAGE..(i + 1) * PAGE],
                    )
                };
                tally(
                    &mut observed,
                    classify(actual, old, new, &format!("{what} page {page}")),
                );
            }
            assert_eq!(
                observed, report,
                "{what}: the disk must be what the report says"
            );
            overall.writes_kept += report.writes_kept;
            overall.writes_dropped += report.writes_dropped;
            overall.writes_torn += report.writes_torn;
        }
        assert!(
            overall.writes_kept > 0 && overall.writes_dropped > 0 && overall.writes_torn > 0,
            "{choice:?}: 12 seeds x 8 writes take every branch: {overall:?}"
        );
    }
}

#[test]
fn a_seed_gives_the_same_disk_on_both_engines_and_seeds_differ() {
    let mut disks = Vec::new();
    for seed in [5, 6, 7] {
        let (sync_report, sync_disk) = survive_scenario(EngineChoice::Sync, seed);
        let (uring_report, uring_disk) = survive_scenario(EngineChoice::Uring, seed);
        assert_eq!(sync_report, uring_report, "seed {seed}");
        assert!(sync_disk == uring_disk, "seed {seed}: the engines disagree");
        disks.push(sync_disk);
    }
    assert!(
        disks[0] != disks[1] || disks[1] != disks[2],
        "three seeds gave the same cut"
    );
}

#[test]
fn overlapping_unsynced_writes_are_undone_newest_first() {
    const PAGES: usize = 4;
    let versions = [
        pattern(PAGES * PAGE, 10),
        pattern(PAGES * PAGE, 11),
        pattern(PAGES * PAGE, 12),
    ];
    for choice in ENGINES {
        let mut sectors_seen = [0usize; 3];
        for seed in 0..8 {
            let file = fresh_file("pl-overlap", choice);
            let power_loss = PowerLoss::new();
            let engine = simulated(choice, &power_loss);
            write_pages_ok(&engine, &file, 0, &AlignedBuf::filled(PAGES * PAGE, 10));
            engine.sync_data(&file).expect("sync");
            write_pages_ok(&engine, &file, 0, &AlignedBuf::filled(PAGES * PAGE, 11));
            write_pages_ok(&engine, &file, 0, &AlignedBuf::filled(PAGES * PAGE, 12));
            let report = power_loss.cut(seed);
            assert_eq!(
                report.writes_total(),
                2 * PAGES as u64,
                "{choice:?} seed {seed}"
            );
            let disk = read_back(&file, PAGES);
            for (index, sector) in disk.chunks(SECTOR_BYTES).enumerate() {
                let range = index * SECTOR_BYTES..(index + 1) * SECTOR_BYTES;
                let version = versions
                    .iter()
                    .position(|version| version[range.clone()] == *sector)
                    .unwrap_or_else(|| {
                        panic!("{choice:?} seed {seed}: sector {index} matches no version")
                    });
                sectors_seen[version] += 1;
            }
        }
        assert!(
            sectors_seen.iter().all(|&count| count > 0),
            "{choice:?}: the synced, middle and newest versions all appear: {sectors_seen:?}"
        );
    }
}

fn assert_eio(result: Result<(), IoError>, op: IoOp, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{what}: {error:?}");
    assert!(
        matches!(error, IoError::Os { op: failed, .. } if failed == op),
        "{what}: {error:?}"
    );
}

#[test]
fn every_read_write_and_sync_fails_after_a_cut_on_every_engine_sharing_it() {
    let power_loss = PowerLoss::new();
    let files: Vec<DirectFile> = ENGINES.iter().map(|&c| fresh_file("pl-off", c)).collect();
    let engines: Vec<IoEngine> = ENGINES.iter().map(|&c| simulated(c, &power_loss)).collect();
    let data = AlignedBuf::filled(PAGE, 20);
    for (engine, file) in engines.iter().zip(&files) {
        // SAFETY: `data` is live for the call.
        unsafe { engine.write_at(file, 0, data.as_ptr(), PAGE) }.expect("before the cut");
    }
    power_loss.cut(1);
    assert!(power_loss.is_cut());
    let seen = (power_loss.writes_seen(), power_loss.syncs_seen());
    for ((engine, file), choice) in engines.iter().zip(&files).zip(ENGINES) {
        let what = |op: &str| format!("{choice:?} {op} after the cut");
        // SAFETY: `data` is live and exclusive for each call below.
        let read = unsafe { engine.read_at(file, 0, data.as_ptr(), PAGE) };
        assert_eio(read, IoOp::Read, &what("read"));
        // SAFETY: as above.
        let write = unsafe { engine.write_at(file, 0, data.as_ptr(), PAGE) };
        assert_eio(write, IoOp::Write, &what("write"));
        assert_eio(engine.sync_data(file), IoOp::Sync, &what("sync"));
        let request = [IoRequest::write(PAGE as u64, data.as_ptr(), PAGE)];
        let mut outcomes = [Ok(())];
        // SAFETY: as above.
        let synced = unsafe { engine.write_batch_and_sync(file, &request, &mut outcomes) };
        assert_eio(synced, IoOp::Sync, &what("write_batch_and_sync"));
        let [outcome] = outcomes;
        assert_eio(outcome, IoOp::Write, &what("batched write"));
        let mut queue = engine.queue(file, 2).expect("queue");
        // SAFETY: `data` outlives the queue.
        unsafe { queue.push(IoRequest::read(0, data.as_ptr(), PAGE), 1) }.expect("push");
        let mut completions = Vec::new();
        queue.reap(1, &mut completions);
        let completion = completions.pop().expect("one completion");
        assert_eio(completion.result, IoOp::Read, &what("queued read"));
    }
    assert_eq!(
        (power_loss.writes_seen(), power_loss.syncs_seen()),
        seen,
        "nothing is submitted once the power is off"
    );
    assert_eq!(
        power_loss.cut(2).writes_total(),
        2,
        "a second cut repeats the first report"
    );
}

#[test]
fn cut_at_write_fires_on_the_nth_write_even_inside_a_batch() {
    for choice in ENGINES {
        let file = fresh_file("pl-at-write", choice);
        let power_loss = PowerLoss::new();
        let engine = simulated(choice, &power_loss);
        let base = AlignedBuf::filled(2 * PAGE, 30);
        write_pages_ok(&engine, &file, 0, &base);
        engine.sync_data(&file).expect("sync");
        power_loss.set_seed(3);
        // Pages 2..10 in one batch: writes 1..=4 go to the kernel, the 5th is the cut.
        power_loss.cut_at_write(5);
        let data = AlignedBuf::filled(8 * PAGE, 31);
        let outcomes = write_pages(&engine, &file, 2, &data);
        assert!(power_loss.is_cut(), "{choice:?}");
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let what = format!("{choice:?} batch write {}", i + 1);
            if i < 4 {
                assert!(outcome.is_ok(), "{what}: {outcome:?}");
            } else {
                assert_eio(outcome, IoOp::Write, &what);
            }
        }
        assert_eq!(power_loss.writes_seen(), 2 + 5, "{choice:?}");
        let report = power_loss.cut(999);
        assert_eq!(
            report.writes_total(),
            5,
            "{choice:?}: four written plus the one cut"
        );
        let disk = read_back(&file, 10);
        assert_eq!(
            disk[..2 * PAGE],
            base.as_slice()[..],
            "{choice:?}: synced pages"
        );
        let data = data.as_slice();
        let mut observed = CutReport::default();
        for i in 0..5 {
            let page = 2 + i;
            let actual = &disk[page * PAGE..(page + 1) * PAGE];
            let new = &data[i * PAGE..(i + 1) * PAGE];
            let seen = classify(actual, &[0; PAGE], new, &format!("{choice:?} page {page}"));
            tally(&mut observed, seen);
        }
        assert_eq!(observed, report, "{choice:?}");
        assert_eq!(
            file.len().expect("len"),
            7 * PAGE as u64,
            "{choice:?}: writes refused after the cut never reached the disk"
        );
        // The automatic cut used set_seed's seed: the same run cut by hand with seed 3 agrees.
        let again = fresh_file("pl-at-write-again", choice);
        let by_hand = PowerLoss::new();
        let engine = simulated(choice, &by_hand);
        write_pages_ok(&engine, &again, 0, &base);
        engine.sync_data(&again).expect("sync");
        let data = AlignedBuf::filled(5 * PAGE, 31);
        write_pages_ok(&engine, &again, 2, &data);
        assert_eq!(by_hand.cut(3), report, "{choice:?}");
        assert!(read_back(&again, 10) == disk, "{choice:?}");
    }
}

#[test]
fn cut_at_sync_fires_before_the_nth_sync_completes() {
    let old = pattern(4 * PAGE, 40);
    let new = pattern(4 * PAGE, 41);
    for choice in ENGINES {
        let file = fresh_file("pl-at-sync", choice);
        let power_loss = PowerLoss::new();
        let engine = simulated(choice, &power_loss);
        power_loss.set_seed(17);
        power_loss.cut_at_sync(2);
        write_pages_ok(&engine, &file, 0, &AlignedBuf::filled(4 * PAGE, 40));
        engine.sync_data(&file).expect("the first sync completes");
        assert!(!power_loss.is_cut(), "{choice:?}");
        let data = AlignedBuf::filled(4 * PAGE, 41);
        let requests: Vec<IoRequest> = (0..4)
            .map(|i| {
                IoRequest::write(
                    (i * PAGE) as u64,
                    data.as_ptr().wrapping_add(i * PAGE),
                    PAGE,
                )
            })
            .collect();
        let mut outcomes: Vec<Result<(), IoError>> = (0..4).map(|_| Ok(())).collect();
        // SAFETY: `data` outlives the call.
        let synced = unsafe { engine.write_batch_and_sync(&file, &requests, &mut outcomes) };
        assert_eio(synced, IoOp::Sync, &format!("{choice:?} second sync"));
        assert!(
            outcomes.iter().all(Result::is_ok),
            "{choice:?}: {outcomes:?}"
        );
        assert!(power_loss.is_cut(), "{choice:?}");
        assert_eq!(power_loss.syncs_seen(), 2, "{choice:?}");
        let report = power_loss.cut(0);
        assert_eq!(
            report.writes_total(),
            4,
            "{choice:?}: the batch was never synced"
        );
        let disk = read_back(&file, 4);
        let mut observed = CutReport::default();
        for page in 0..4 {
            let range = page * PAGE..(page + 1) * PAGE;
            let what = format!("{choice:?} page {page}");
            tally(
                &mut observed,
                classify(
                    &disk[range.clone()],
                    &old[range.clone()],
                    &new[range],
                    &what,
                ),
            );
        }
        assert_eq!(observed, report, "{choice:?}");
    }
}

#[test]
fn a_sync_forgets_only_its_own_file_which_is_known_by_inode_not_handle() {
    let power_loss = PowerLoss::new();
    let sync_engine = simulated(EngineChoice::Sync, &power_loss);
    let uring_engine = simulated(EngineChoice::Uring, &power_loss);
    let synced = fresh_file("pl-own-synced", EngineChoice::Sync);
    let same_file = DirectFile::open(synced.path(), &OpenOptions::default()).expect("reopen");
    let unsynced = fresh_file("pl-own-unsynced", EngineChoice::Uring);
    write_pages_ok(&sync_engine, &synced, 0, &AlignedBuf::filled(3 * PAGE, 50));
    write_pages_ok(
        &uring_engine,
        &unsynced,
        0,
        &AlignedBuf::filled(2 * PAGE, 51),
    );
    // Another handle on the same inode, through another engine: the writes above are covered.
    uring_engine.sync_data(&same_file).expect("sync");
    let report = power_loss.cut(8);
    assert_eq!(
        report.writes_total(),
        2,
        "only the other file's writes: {report:?}"
    );
    assert!(
        read_back(&synced, 3) == pattern(3 * PAGE, 50),
        "the synced file is intact"
    );
    let disk = read_back(&unsynced, 2);
    let new = pattern(2 * PAGE, 51);
    let mut observed = CutReport::default();
    for page in 0..2 {
        let range = page * PAGE..(page + 1) * PAGE;
        tally(
            &mut observed,
            classify(&disk[range.clone()], &[0; PAGE], &new[range], "unsynced"),
        );
    }
    assert_eq!(observed, report);
}

#[test]
fn writes_through_an_io_queue_are_remembered() {
    for choice in ENGINES {
        let file = fresh_file("pl-queue", choice);
        let power_loss = PowerLoss::new();
        let engine = simulated(choice, &power_loss);
        let data = AlignedBuf::filled(4 * PAGE, 60);
        let mut queue = engine.queue(&file, 4).expect("queue");
        for i in 0..4 {
            let request = IoRequest::write(
                (i * PAGE) as u64,
                data.as_ptr().wrapping_add(i * PAGE),
                PAGE,
            );
            // SAFETY: `data` outlives the queue.
            unsafe { queue.push(request, i as u64) }.expect("push");
        }
        let mut completions = Vec::new();
        // Bounded: each reap returns at least one of the four.
        while completions.len() < 4 {
            queue.reap(4 - completions.len(), &mut completions);
        }
        assert!(
            completions.iter().all(|c| c.result.is_ok()),
            "{choice:?}: {completions:?}"
        );
        drop(queue);
        assert_eq!(power_loss.writes_seen(), 4, "{choice:?}");
        assert_eq!(power_loss.cut(4).writes_total(), 4, "{choice:?}");
    }
}

#[test]
fn a_cut_by_one_thread_waits_for_the_writes_other_threads_have_in_flight() {
    const THREADS: usize = 4;
    const PAGES_PER_THREAD: usize = 64;
    const BATCH_PAGES: usize = 8;
    const CUT_AT: u64 = 100;
    for choice in ENGINES {
        let file = fresh_file("pl-threads", choice);
        let power_loss = PowerLoss::new();
        let engine = simulated(choice, &power_loss);
        power_loss.set_seed(23);
        power_loss.cut_at_write(CUT_AT);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (engine, file) = (&engine, &file);
                scope.spawn(move || {
                    let first = thread * PAGES_PER_THREAD;
                    for batch in 0..PAGES_PER_THREAD / BATCH_PAGES {
                        let page = first + batch * BATCH_PAGES;
                        let data = AlignedBuf::filled(BATCH_PAGES * PAGE, page as u64 + 1000);
                        let outcomes = write_pages(engine, file, page, &data);
                        if outcomes.iter().any(Result::is_err) {
                            return;
                        }
                    }
                });
            }
        });
        let report = power_loss.cut(0);
        assert_eq!(power_loss.writes_seen(), CUT_AT, "{choice:?}");
        assert_eq!(report.writes_total(), CUT_AT, "{choice:?}");
        let disk = read_back(&file, THREADS * PAGES_PER_THREAD);
        let mut observed = CutReport::default();
        for page in 0..THREADS * PAGES_PER_THREAD {
            let batch_first = page / BATCH_PAGES * BATCH_PAGES;
            let new_batch = pattern(BATCH_PAGES * PAGE, batch_first as u64 + 1000);
            let i = page - batch_first;
            let new = &new_batch[i * PAGE..(i + 1) * PAGE];
            let actual = &disk[page * PAGE..(page + 1) * PAGE];
            tally(
                &mut observed,
                classify(actual, &[0; PAGE], new, &format!("{choice:?} page {page}")),
            );
        }
        // Pages never written read as old too, so only kept and torn can be compared exactly.
        // A write that landed after the restore would show up as an extra kept page.
        assert_eq!(
            (observed.writes_kept, observed.writes_torn),
            (report.writes_kept, report.writes_torn),
            "{choice:?}: {report:?}"
        );
    }
}
