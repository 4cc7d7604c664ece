//! The I/O engines against a real file: data integrity, alignment, EOF, batching, streaming,
//! concurrency. Every test runs on both engines (pread/pwrite and io_uring).

mod support;

use bufpool_io::{EngineChoice, IoError, IoKind, IoOp, IoRequest};
use support::{AlignedBuf, ENGINES, PAGE, engine, fresh_file, pattern};

/// Page numbers spread over 64 MiB, not in order.
fn scattered_pages(count: u64) -> Vec<u64> {
    (0..count).map(|i| (i * 7919) % 16384).collect()
}

#[test]
fn pages_written_at_many_offsets_read_back_identically() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("many-offsets", choice), engine(choice));
        let pages = scattered_pages(96);
        let buffers: Vec<AlignedBuf> = pages
            .iter()
            .map(|&page| AlignedBuf::filled(PAGE, page))
            .collect();
        let writes: Vec<IoRequest> = pages
            .iter()
            .zip(&buffers)
            .map(|(&page, buf)| IoRequest::write(page * PAGE as u64, buf.as_ptr(), PAGE))
            .collect();
        let mut outcomes: Vec<Result<(), IoError>> = (0..writes.len()).map(|_| Ok(())).collect();
        // SAFETY: every buffer lives until the call returns and nobody else touches it.
        unsafe { engine.submit_batch(&file, &writes, &mut outcomes) };
        assert!(
            outcomes.iter().all(Result::is_ok),
            "{choice:?}: {outcomes:?}"
        );

        // Read back half one by one, half as one batch.
        let mut copies: Vec<AlignedBuf> = pages.iter().map(|_| AlignedBuf::new(PAGE)).collect();
        let (singles, batched) = pages.split_at(pages.len() / 2);
        for (&page, copy) in singles.iter().zip(&copies) {
            // SAFETY: `copy` is a live, exclusive PAGE-byte buffer.
            unsafe { engine.read_at(&file, page * PAGE as u64, copy.as_ptr(), PAGE) }
                .expect("read");
        }
        let reads: Vec<IoRequest> = batched
            .iter()
            .zip(&copies[singles.len()..])
            .map(|(&page, copy)| IoRequest::read(page * PAGE as u64, copy.as_ptr(), PAGE))
            .collect();
        let mut outcomes: Vec<Result<(), IoError>> = (0..reads.len()).map(|_| Ok(())).collect();
        // SAFETY: as above; the read buffers are distinct.
        unsafe { engine.submit_batch(&file, &reads, &mut outcomes) };
        assert!(
            outcomes.iter().all(Result::is_ok),
            "{choice:?}: {outcomes:?}"
        );
        for (&page, copy) in pages.iter().zip(&mut copies) {
            assert!(
                copy.as_slice() == pattern(PAGE, page).as_slice(),
                "{choice:?}: page {page} differs"
            );
        }
    }
}

#[test]
fn a_large_multi_page_transfer_round_trips() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("large", choice), engine(choice));
        let len = 1 << 20;
        let data = AlignedBuf::filled(len, 42);
        let copy = AlignedBuf::new(len);
        // SAFETY: both buffers are live and exclusive for the calls.
        unsafe {
            engine
                .write_at(&file, 3 * PAGE as u64, data.as_ptr(), len)
                .expect("write");
            engine
                .read_at(&file, 3 * PAGE as u64, copy.as_ptr(), len)
                .expect("read");
        }
        assert!(copy.as_slice() == data.as_slice(), "{choice:?}");
        assert_eq!(file.len().expect("len"), (3 * PAGE + len) as u64);
    }
}

#[test]
fn misaligned_requests_are_rejected_with_the_typed_error_and_never_submitted() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("misaligned", choice), engine(choice));
        let buf = AlignedBuf::filled(4 * PAGE, 1);
        let base = buf.as_ptr();
        let requests = [
            IoRequest::write(0, base.wrapping_add(512), PAGE), // address
            IoRequest::write(0, base, 1000),                   // length
            IoRequest::write(100, base, PAGE),                 // offset
            IoRequest::write(PAGE as u64, base, PAGE),         // fine
        ];
        let mut outcomes: Vec<Result<(), IoError>> = (0..requests.len()).map(|_| Ok(())).collect();
        // SAFETY: all pointers lie inside `buf`, which outlives the call.
        unsafe { engine.submit_batch(&file, &requests, &mut outcomes) };
        for outcome in &outcomes[..3] {
            match outcome {
                Err(IoError::Misaligned {
                    op: IoOp::Write,
                    align,
                    ..
                }) => assert_eq!(*align, file.alignment()),
                other => panic!("{choice:?}: expected Misaligned, got {other:?}"),
            }
        }
        assert!(outcomes[3].is_ok(), "{choice:?}: {:?}", outcomes[3]);
        // Nothing of the misaligned ones reached the file: only the good page exists.
        assert_eq!(file.len().expect("len"), 2 * PAGE as u64);
        // SAFETY: inside `buf`.
        let single = unsafe { engine.read_at(&file, 0, base.wrapping_add(8), PAGE) };
        assert!(
            matches!(single, Err(IoError::Misaligned { op: IoOp::Read, .. })),
            "{choice:?}: {single:?}"
        );
    }
}

#[test]
fn reading_past_the_end_of_the_file_is_unexpected_eof() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("eof", choice), engine(choice));
        let buf = AlignedBuf::filled(2 * PAGE, 5);
        // SAFETY: `buf` is live and exclusive for each call.
        unsafe { engine.write_at(&file, 0, buf.as_ptr(), PAGE) }.expect("write");
        // Straddling the end: one page arrives, then EOF.
        // SAFETY: the buffer is live, owned by this test and not touched during the call.
        let straddling = unsafe { engine.read_at(&file, 0, buf.as_ptr(), 2 * PAGE) };
        match straddling {
            Err(IoError::UnexpectedEof {
                op: IoOp::Read,
                offset: 0,
                len,
                transferred,
                ..
            }) => {
                assert_eq!((len, transferred), (2 * PAGE, PAGE), "{choice:?}");
            }
            other => panic!("{choice:?}: expected UnexpectedEof, got {other:?}"),
        }
        // Wholly beyond the end.
        // SAFETY: as above.
        let beyond = unsafe { engine.read_at(&file, 10 * PAGE as u64, buf.as_ptr(), PAGE) };
        assert!(
            matches!(beyond, Err(IoError::UnexpectedEof { transferred: 0, .. })),
            "{choice:?}: {beyond:?}"
        );
    }
}

#[test]
fn grow_preallocate_and_sync_behave() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("grow", choice), engine(choice));
        file.grow_to(16 * PAGE as u64).expect("grow");
        assert_eq!(file.len().expect("len"), 16 * PAGE as u64);
        file.grow_to(PAGE as u64).expect("grow never shrinks");
        assert_eq!(file.len().expect("len"), 16 * PAGE as u64);
        file.preallocate(16 * PAGE as u64, 4 * PAGE as u64)
            .expect("preallocate");
        assert_eq!(file.len().expect("len"), 20 * PAGE as u64);
        // Preallocated space reads as zeros.
        let buf = AlignedBuf::filled(PAGE, 9);
        // SAFETY: `buf` is live and exclusive.
        unsafe { engine.read_at(&file, 17 * PAGE as u64, buf.as_ptr(), PAGE) }.expect("read");
        assert!(buf.as_slice().iter().all(|&byte| byte == 0), "{choice:?}");
        engine.sync_data(&file).expect("engine fdatasync");
        file.sync_data().expect("file fdatasync");
    }
}

#[test]
fn a_write_batch_followed_by_a_sync_completes_both() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("write-sync", choice), engine(choice));
        let buffers: Vec<AlignedBuf> = (0..40).map(|seed| AlignedBuf::filled(PAGE, seed)).collect();
        let requests: Vec<IoRequest> = buffers
            .iter()
            .enumerate()
            .map(|(i, buf)| IoRequest::write((i * PAGE) as u64, buf.as_ptr(), PAGE))
            .collect();
        let mut outcomes: Vec<Result<(), IoError>> = (0..requests.len()).map(|_| Ok(())).collect();
        // SAFETY: every buffer outlives the call.
        let synced = unsafe { engine.write_batch_and_sync(&file, &requests, &mut outcomes) };
        synced.expect("sync");
        assert!(outcomes.iter().all(Result::is_ok), "{choice:?}");
        let copy = AlignedBuf::new(40 * PAGE);
        // SAFETY: `copy` is live and exclusive.
        unsafe { engine.read_at(&file, 0, copy.as_ptr(), 40 * PAGE) }.expect("read");
        for (i, page) in copy.as_slice().chunks(PAGE).enumerate() {
            assert!(
                page == pattern(PAGE, i as u64).as_slice(),
                "{choice:?}: page {i}"
            );
        }
    }
}

#[test]
fn batches_larger_than_the_ring_complete() {
    for choice in ENGINES {
        let file = fresh_file("big-batch", choice);
        let config = bufpool_io::IoConfig {
            engine: choice,
            ring_entries: 8,
            ..bufpool_io::IoConfig::default()
        };
        let engine = support::engine_with(config);
        let data = AlignedBuf::filled(100 * PAGE, 77);
        let (requests, mut outcomes) = support::page_writes(&data, 100);
        // SAFETY: `data` outlives the call; requests only read it.
        unsafe { engine.submit_batch(&file, &requests, &mut outcomes) };
        assert!(outcomes.iter().all(Result::is_ok), "{choice:?}");
        let copy = AlignedBuf::new(100 * PAGE);
        // SAFETY: `copy` is live and exclusive.
        unsafe { engine.read_at(&file, 0, copy.as_ptr(), 100 * PAGE) }.expect("read");
        assert!(copy.as_slice() == data.as_slice(), "{choice:?}");
    }
}

#[test]
fn the_streaming_queue_keeps_its_depth_and_returns_every_request() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("queue", choice), engine(choice));
        let data = AlignedBuf::filled(64 * PAGE, 3);
        // SAFETY: `data` is live for the call.
        unsafe { engine.write_at(&file, 0, data.as_ptr(), 64 * PAGE) }.expect("write");
        let copy = AlignedBuf::new(64 * PAGE);
        let mut queue = engine.queue(&file, 8).expect("queue");
        let mut completions = Vec::new();
        let mut next_page = 0usize;
        let mut seen = [false; 64];
        // At most 64 pushes and 64 completions; each round reaps at least one.
        for _round in 0..128 {
            while next_page < 64 && queue.in_flight() < queue.depth() {
                let request = IoRequest::read(
                    (next_page * PAGE) as u64,
                    copy.as_ptr().wrapping_add(next_page * PAGE),
                    PAGE,
                );
                // SAFETY: each page of `copy` is used by one request and outlives the queue.
                unsafe { queue.push(request, next_page as u64) }.expect("push");
                next_page += 1;
            }
            if queue.in_flight() == 0 {
                break;
            }
            assert!(queue.reap(1, &mut completions) >= 1);
            for completion in completions.drain(..) {
                completion.result.expect("read");
                seen[completion.tag as usize] = true;
            }
        }
        drop(queue);
        assert!(
            seen.iter().all(|&seen| seen),
            "{choice:?}: a completion is missing"
        );
        assert!(copy.as_slice() == data.as_slice(), "{choice:?}");
    }
}

#[test]
fn a_full_queue_and_a_misaligned_push_are_refused() {
    for choice in ENGINES {
        let (file, engine) = (fresh_file("queue-full", choice), engine(choice));
        let buf = AlignedBuf::filled(4 * PAGE, 1);
        let mut queue = engine.queue(&file, 2).expect("queue");
        // SAFETY: `buf` outlives the queue; the two writes only read it.
        unsafe {
            queue
                .push(IoRequest::write(0, buf.as_ptr(), PAGE), 0)
                .expect("push");
            queue
                .push(IoRequest::write(PAGE as u64, buf.as_ptr(), PAGE), 1)
                .expect("push");
            let third = queue.push(IoRequest::write(2 * PAGE as u64, buf.as_ptr(), PAGE), 2);
            assert!(
                matches!(third, Err(IoError::InvalidArgument { .. })),
                "{choice:?}: {third:?}"
            );
            let misaligned = queue.push(
                IoRequest {
                    kind: IoKind::Write,
                    offset: 1,
                    buf: buf.as_ptr(),
                    len: PAGE,
                },
                3,
            );
            assert!(
                matches!(misaligned, Err(IoError::Misaligned { .. })),
                "{choice:?}: {misaligned:?}"
            );
        }
        let mut completions = Vec::new();
        queue.reap(2, &mut completions);
        assert_eq!(completions.len(), 2, "{choice:?}");
        assert!(
            completions
                .iter()
                .all(|completion| completion.result.is_ok())
        );
    }
}

#[test]
fn eight_threads_submitting_at_once_all_complete_correctly() {
    const THREADS: usize = 8;
    const PAGES_PER_THREAD: usize = 64;
    for choice in ENGINES {
        let (file, engine) = (fresh_file("threads", choice), engine(choice));
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (file, engine) = (&file, engine.clone());
                scope.spawn(move || {
                    let base = (thread * PAGES_PER_THREAD * PAGE) as u64;
                    let seed = |page: usize| (thread * 1000 + page) as u64;
                    let buffers: Vec<AlignedBuf> = (0..PAGES_PER_THREAD)
                        .map(|page| AlignedBuf::filled(PAGE, seed(page)))
                        .collect();
                    let writes: Vec<IoRequest> = buffers
                        .iter()
                        .enumerate()
                        .map(|(page, buf)| {
                            IoRequest::write(base + (page * PAGE) as u64, buf.as_ptr(), PAGE)
                        })
                        .collect();
                    let mut outcomes: Vec<Result<(), IoError>> =
                        (0..writes.len()).map(|_| Ok(())).collect();
                    // SAFETY: this thread's buffers outlive the call.
                    unsafe { engine.submit_batch(file, &writes, &mut outcomes) };
                    assert!(
                        outcomes.iter().all(Result::is_ok),
                        "{choice:?} thread {thread}"
                    );
                    let copy = AlignedBuf::new(PAGE);
                    for page in 0..PAGES_PER_THREAD {
                        // SAFETY: `copy` is this thread's own buffer.
                        unsafe {
                            engine.read_at(file, base + (page * PAGE) as u64, copy.as_ptr(), PAGE)
                        }
                        .expect("read");
                        assert!(
                            copy.as_slice() == pattern(PAGE, seed(page)).as_slice(),
                            "{choice:?} thread {thread} page {page}"
                        );
                    }
                });
            }
        });
    }
}

#[test]
fn engine_names_parse() {
    use bufpool_io::parse_engine_choice;
    assert_eq!(parse_engine_choice("sync"), Some(EngineChoice::Sync));
    assert_eq!(parse_engine_choice(" URING "), Some(EngineChoice::Uring));
    assert_eq!(parse_engine_choice("auto"), Some(EngineChoice::Auto));
    assert_eq!(parse_engine_choice("aio"), None);
}

#[test]
fn polling_the_queue_without_blocking_sees_completions() {
    // A completion arrives within a second on any working disk.
    const POLLS_MAX: u32 = 10_000;
    for choice in ENGINES {
        let (file, engine) = (fresh_file("queue-poll", choice), engine(choice));
        let data = AlignedBuf::filled(PAGE, 8);
        let mut queue = engine.queue(&file, 4).expect("queue");
        // SAFETY: `data` outlives the queue; the write only reads it.
        unsafe { queue.push(IoRequest::write(0, data.as_ptr(), PAGE), 5) }.expect("push");
        queue.submit().expect("submit");
        let mut completions = Vec::new();
        let mut polls = 0;
        while completions.is_empty() && polls < POLLS_MAX {
            queue.reap(0, &mut completions);
            polls += 1;
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        let completion = completions
            .pop()
            .expect("a non-blocking reap must see the completion");
        assert_eq!(completion.tag, 5, "{choice:?}");
        completion.result.expect("write");
        assert_eq!(queue.in_flight(), 0);
    }
}

#[test]
fn auto_follows_the_environment_variable_and_otherwise_picks_io_uring_here() {
    let engine = bufpool_io::IoEngine::new(bufpool_io::IoConfig::default()).expect("auto engine");
    let forced = std::env::var(bufpool_io::ENGINE_ENV_VAR).ok();
    let expected = match forced.as_deref().and_then(bufpool_io::parse_engine_choice) {
        Some(EngineChoice::Sync) => bufpool_io::EngineKind::Sync,
        // io_uring works on this machine (io_uring_disabled = 0).
        _ => bufpool_io::EngineKind::Uring,
    };
    assert_eq!(
        engine.kind(),
        expected,
        "{}={forced:?}",
        bufpool_io::ENGINE_ENV_VAR
    );
}
