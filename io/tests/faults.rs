//! Injected faults surface typed at the caller, on both engines and through every entry point.

mod support;

use bufpool_io::{
    EngineChoice, Fault, FaultInjector, IoConfig, IoEngine, IoError, IoOp, IoRequest, PowerLoss,
};
use support::{AlignedBuf, ENGINES, PAGE, engine_with, fresh_file, pattern};

fn faulty_engine(choice: EngineChoice) -> (IoEngine, FaultInjector) {
    let faults = FaultInjector::new();
    let engine = engine_with(IoConfig {
        engine: choice,
        faults: Some(faults.clone()),
        ..IoConfig::default()
    });
    (engine, faults)
}

#[test]
fn injected_eio_on_a_read_arrives_typed_with_op_and_offset() {
    for choice in ENGINES {
        let file = fresh_file("fault-eio", choice);
        let (engine, faults) = faulty_engine(choice);
        let buf = AlignedBuf::filled(PAGE, 1);
        // SAFETY: `buf` is live and exclusive for every call below.
        unsafe { engine.write_at(&file, 0, buf.as_ptr(), PAGE) }.expect("write");
        faults.fail_nth_read(2, Fault::Eio);
        // SAFETY: the buffer is live, owned by this test and not touched during the call.
        unsafe { engine.read_at(&file, 0, buf.as_ptr(), PAGE) }.expect("first read is fine");
        let error =
            // SAFETY: the buffer is live, owned by this test and not touched during the call.
            unsafe { engine.read_at(&file, 0, buf.as_ptr(), PAGE) }.expect_err("second read fails");
        assert_eq!(
            error.raw_os_error(),
            Some(libc::EIO),
            "{choice:?}: {error:?}"
        );
        assert!(
            matches!(
                error,
                IoError::Os {
                    op: IoOp::Read,
                    offset: 0,
                    len: PAGE,
                    ..
                }
            ),
            "{choice:?}: {error:?}"
        );
        // SAFETY: the buffer is live, owned by this test and not touched during the call.
        unsafe { engine.read_at(&file, 0, buf.as_ptr(), PAGE) }.expect("the fault was one-shot");
    }
}

#[test]
fn injected_enospc_fails_only_its_request_in_a_batch() {
    for choice in ENGINES {
        let file = fresh_file("fault-enospc", choice);
        let (engine, faults) = faulty_engine(choice);
        let data = AlignedBuf::filled(4 * PAGE, 2);
        let (requests, mut outcomes) = support::page_writes(&data, 4);
        faults.fail_nth_write(3, Fault::Enospc);
        // SAFETY: `data` outlives the call.
        unsafe { engine.submit_batch(&file, &requests, &mut outcomes) };
        let failed: Vec<usize> = (0..4).filter(|&i| outcomes[i].is_err()).collect();
        assert_eq!(failed.len(), 1, "{choice:?}: {outcomes:?}");
        let error = outcomes[failed[0]].as_ref().expect_err("failed");
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{choice:?}");
        assert!(
            matches!(
                error,
                IoError::Os {
                    op: IoOp::Write,
                    ..
                }
            ),
            "{choice:?}: {error:?}"
        );
    }
}

#[test]
fn a_short_write_is_continued_and_the_data_is_intact() {
    for choice in ENGINES {
        let file = fresh_file("fault-short", choice);
        let (engine, faults) = faulty_engine(choice);
        let data = AlignedBuf::filled(8 * PAGE, 3);
        faults.fail_nth_write(1, Fault::Short { bytes: 3 * PAGE });
        faults.fail_nth_write(2, Fault::Short { bytes: PAGE });
        // SAFETY: `data` is live for the call.
        unsafe { engine.write_at(&file, 0, data.as_ptr(), 8 * PAGE) }
            .expect("short writes are continued");
        faults.fail_nth_read(1, Fault::Short { bytes: 2 * PAGE });
        let copy = AlignedBuf::new(8 * PAGE);
        // SAFETY: `copy` is live and exclusive.
        unsafe { engine.read_at(&file, 0, copy.as_ptr(), 8 * PAGE) }
            .expect("short reads are continued");
        assert!(
            copy.as_slice() == pattern(8 * PAGE, 3).as_slice(),
            "{choice:?}"
        );
    }
}

#[test]
fn a_short_write_followed_by_enospc_surfaces_enospc() {
    for choice in ENGINES {
        let file = fresh_file("fault-short-enospc", choice);
        let (engine, faults) = faulty_engine(choice);
        let data = AlignedBuf::filled(4 * PAGE, 4);
        faults.fail_nth_write(1, Fault::Short { bytes: PAGE });
        faults.fail_nth_write(2, Fault::Enospc);
        // SAFETY: `data` is live for the call.
        let error =
            unsafe { engine.write_at(&file, 0, data.as_ptr(), 4 * PAGE) }.expect_err("disk full");
        assert_eq!(
            error.raw_os_error(),
            Some(libc::ENOSPC),
            "{choice:?}: {error:?}"
        );
        assert!(
            matches!(error, IoError::Os { op: IoOp::Write, offset: 0, len, .. } if len == 4 * PAGE),
            "{error:?}"
        );
        // The part before the fault did land.
        assert_eq!(file.len().expect("len"), PAGE as u64, "{choice:?}");
    }
}

#[test]
fn a_full_disk_fails_every_write_until_cleared() {
    for choice in ENGINES {
        let file = fresh_file("fault-all", choice);
        let (engine, faults) = faulty_engine(choice);
        let data = AlignedBuf::filled(PAGE, 5);
        faults.fail_all_writes(Some(Fault::Enospc));
        for page in 0..3u64 {
            // SAFETY: `data` is live for the call.
            let error = unsafe { engine.write_at(&file, page * PAGE as u64, data.as_ptr(), PAGE) }
                .expect_err("full");
            assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{choice:?}");
        }
        let mut queue = engine.queue(&file, 4).expect("queue");
        // SAFETY: `data` outlives the queue.
        unsafe { queue.push(IoRequest::write(0, data.as_ptr(), PAGE), 7) }.expect("push");
        let mut completions = Vec::new();
        queue.reap(1, &mut completions);
        let completion = completions.pop().expect("one completion");
        assert_eq!(completion.tag, 7);
        let error = completion.result.expect_err("full through the queue too");
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{choice:?}");
        drop(queue);
        faults.fail_all_writes(None);
        // SAFETY: as above.
        unsafe { engine.write_at(&file, 0, data.as_ptr(), PAGE) }.expect("space freed");
    }
}

#[test]
fn clear_forgets_planned_faults_and_a_queued_read_sees_eio() {
    for choice in ENGINES {
        let file = fresh_file("fault-clear", choice);
        let (engine, faults) = faulty_engine(choice);
        let data = AlignedBuf::filled(PAGE, 6);
        faults.fail_nth_write(1, Fault::Eio);
        faults.clear();
        // SAFETY: `data` is live for the call.
        unsafe { engine.write_at(&file, 0, data.as_ptr(), PAGE) }
            .expect("cleared plan injects nothing");
        faults.fail_nth_read(1, Fault::Eio);
        let mut queue = engine.queue(&file, 2).expect("queue");
        // SAFETY: `data` outlives the queue.
        unsafe { queue.push(IoRequest::read(0, data.as_ptr(), PAGE), 1) }.expect("push");
        let mut completions = Vec::new();
        queue.reap(1, &mut completions);
        let error = completions
            .pop()
            .expect("completion")
            .result
            .expect_err("EIO");
        assert_eq!(error.raw_os_error(), Some(libc::EIO), "{choice:?}");
    }
}

/// Sync faults are tested on each engine by name: the Sync engine's fdatasync and io_uring's
/// fsync op are different code paths.
const SYNC_ENGINES: [EngineChoice; 2] = [EngineChoice::Sync, EngineChoice::Uring];

fn assert_sync_error(result: Result<(), IoError>, errno: i32, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(error.raw_os_error(), Some(errno), "{what}: {error:?}");
    assert!(
        matches!(
            error,
            IoError::Os {
                op: IoOp::Sync,
                offset: 0,
                len: 0,
                ..
            }
        ),
        "{what}: {error:?}"
    );
}

#[test]
fn the_nth_sync_from_now_fails_once_on_both_engines() {
    for choice in SYNC_ENGINES {
        let file = fresh_file("fault-sync-nth", choice);
        let (engine, faults) = faulty_engine(choice);
        let data = AlignedBuf::filled(PAGE, 8);
        // SAFETY: `data` is live for the call.
        unsafe { engine.write_at(&file, 0, data.as_ptr(), PAGE) }.expect("write");
        engine
            .sync_data(&file)
            .expect("a sync before the plan counts for nothing");
        faults.fail_nth_sync(2, Fault::Eio);
        engine.sync_data(&file).expect("first sync from now");
        assert_sync_error(
            engine.sync_data(&file),
            libc::EIO,
            &format!("{choice:?} 2nd"),
        );
        engine.sync_data(&file).expect("the fault was one-shot");
    }
}

#[test]
fn write_batch_and_sync_does_the_writes_and_reports_the_injected_sync_fault() {
    for choice in SYNC_ENGINES {
        let file = fresh_file("fault-sync-batch", choice);
        let (engine, faults) = faulty_engine(choice);
        let data = AlignedBuf::filled(4 * PAGE, 9);
        let (requests, mut outcomes) = support::page_writes(&data, 4);
        faults.fail_nth_sync(1, Fault::Enospc);
        // SAFETY: `data` outlives the call.
        let synced = unsafe { engine.write_batch_and_sync(&file, &requests, &mut outcomes) };
        assert_sync_error(synced, libc::ENOSPC, &format!("{choice:?}"));
        assert!(
            outcomes.iter().all(Result::is_ok),
            "{choice:?}: {outcomes:?}"
        );
        let copy = AlignedBuf::new(4 * PAGE);
        // SAFETY: `copy` is live and exclusive.
        unsafe { engine.read_at(&file, 0, copy.as_ptr(), 4 * PAGE) }.expect("read");
        assert!(
            copy.as_slice() == data.as_slice(),
            "{choice:?}: the writes landed"
        );
        let (requests, mut outcomes) = support::page_writes(&data, 4);
        // SAFETY: as above.
        unsafe { engine.write_batch_and_sync(&file, &requests, &mut outcomes) }
            .expect("the next drained sync succeeds");
    }
}

#[test]
fn fail_all_syncs_fails_every_sync_until_cleared() {
    for choice in SYNC_ENGINES {
        let file = fresh_file("fault-sync-all", choice);
        let (engine, faults) = faulty_engine(choice);
        faults.fail_all_syncs(Some(Fault::Eio));
        for attempt in 0..3 {
            let what = format!("{choice:?} attempt {attempt}");
            assert_sync_error(engine.sync_data(&file), libc::EIO, &what);
        }
        faults.fail_all_syncs(None);
        engine.sync_data(&file).expect("cleared");
        faults.fail_all_syncs(Some(Fault::Enospc));
        faults.clear();
        engine
            .sync_data(&file)
            .expect("clear forgets sync faults too");
    }
}

/// Seen through the power-loss simulator: a sync that completes makes it forget the file's
/// writes; one failed by injection must not have synced anything, so they stay unsynced.
#[test]
fn an_injected_sync_failure_performs_no_sync() {
    for choice in SYNC_ENGINES {
        for inject in [true, false] {
            let file = fresh_file("fault-sync-none", choice);
            let (faults, power_loss) = (FaultInjector::new(), PowerLoss::new());
            let engine = engine_with(IoConfig {
                engine: choice,
                faults: Some(faults.clone()),
                power_loss: Some(power_loss.clone()),
                ..IoConfig::default()
            });
            let data = AlignedBuf::filled(2 * PAGE, 10);
            // SAFETY: `data` is live for the call.
            unsafe { engine.write_at(&file, 0, data.as_ptr(), 2 * PAGE) }.expect("write");
            if inject {
                faults.fail_nth_sync(1, Fault::Eio);
                assert_sync_error(engine.sync_data(&file), libc::EIO, &format!("{choice:?}"));
            } else {
                engine.sync_data(&file).expect("sync");
            }
            let expected = if inject { (0, 1) } else { (1, 0) };
            let report = power_loss.cut(1);
            assert_eq!(
                (power_loss.syncs_seen(), report.writes_total()),
                expected,
                "{choice:?} inject={inject}: (syncs reaching the simulator, unsynced writes)"
            );
        }
    }
}

#[test]
#[should_panic(expected = "cannot be short")]
fn a_short_sync_fault_is_refused() {
    FaultInjector::new().fail_nth_sync(1, Fault::Short { bytes: PAGE });
}
