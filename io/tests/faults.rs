//! Injected faults surface typed at the caller, on both engines and through every entry point.

mod support;

use bufpool_io::{
    EngineChoice, Fault, FaultInjector, IoConfig, IoEngine, IoError, IoOp, IoRequest,
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
