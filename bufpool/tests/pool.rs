//! The pool's access paths: fault-in, latches, allocation, write-back, eviction under a small
//! budget, on both backings.

mod common;

use std::sync::{Arc, Barrier};

use bufpool::{Backing, PAGE_SIZE, PageId, Pool, PoolError};
use bufpool_io::{DirectFile, OpenOptions};
use common::{BACKINGS, config, open_pool, page_bytes, read_stamp};

#[test]
fn fault_in_through_every_latch_mode() {
    for backing in BACKINGS {
        let pool = open_pool(&format!("latch-{backing:?}"), backing, 32, 16);
        assert_eq!(pool.page_count(), 32);
        assert_eq!(read_stamp(&pool, 3), (3, 0));
        assert_eq!(&pool.shared(PageId(4)).unwrap()[..], &page_bytes(4, 0)[..]);
        assert_eq!(
            &pool.exclusive(PageId(5)).unwrap()[..],
            &page_bytes(5, 0)[..]
        );
        let guard = pool.optimistic(PageId(6)).unwrap();
        assert_eq!(guard.peek(|view| view.u64_at(0)), 6);
        guard.validate().unwrap();
        let stats = pool.stats();
        assert_eq!(stats.misses, 4);
        assert_eq!(stats.reads, 4);
        assert_eq!(stats.resident_bytes, 4 * PAGE_SIZE as u64);
        read_stamp(&pool, 3);
        assert_eq!(pool.stats().hits, 1);
    }
}

#[test]
fn out_of_range_pages_are_errors() {
    let pool = open_pool("range", Backing::Anonymous, 4, 16);
    assert!(matches!(
        pool.read(PageId(4), |_| ()),
        Err(PoolError::PageOutOfRange { .. })
    ));
    assert!(matches!(
        pool.exclusive(PageId(u64::MAX)),
        Err(PoolError::PageOutOfRange { .. })
    ));
    let error = pool
        .read(PageId(1), |view| view.u64_at(PAGE_SIZE - 4))
        .unwrap_err();
    assert!(matches!(error, PoolError::ViewOutOfRange { .. }), "{error}");
}

#[test]
fn writes_invalidate_optimistic_readers_and_upgrade() {
    let pool = open_pool("upgrade", Backing::Anonymous, 4, 16);
    let guard = pool.optimistic(PageId(1)).unwrap();
    let stale = pool.optimistic(PageId(1)).unwrap();
    let mut exclusive = guard.upgrade().unwrap();
    exclusive[8] = 0xEE;
    drop(exclusive);
    assert!(stale.validate().is_err());
    assert!(stale.upgrade().is_err());
    assert_eq!(pool.read(PageId(1), |view| view.u8_at(8)).unwrap(), 0xEE);
    assert_eq!(pool.stats().dirty_pages, 1);
}

#[test]
fn allocate_flush_and_reopen() {
    for backing in BACKINGS {
        let path = common::data_path(&format!("allocate-{backing:?}"));
        let options = OpenOptions {
            create: true,
            ..OpenOptions::default()
        };
        let pool = Pool::open(
            DirectFile::open(&path, &options).unwrap(),
            config(backing, 16),
        )
        .unwrap();
        for page in 0..40u64 {
            let mut guard = pool.allocate().unwrap();
            assert_eq!(guard.page_id(), PageId(page));
            assert!(
                guard.iter().all(|&byte| byte == 0),
                "allocated page not zeroed"
            );
            guard.copy_from_slice(&page_bytes(page, 1));
        }
        assert_eq!(pool.page_count(), 40);
        for page in 0..40 {
            assert_eq!(read_stamp(&pool, page), (page, 1));
        }
        pool.flush().unwrap();
        assert_eq!(pool.stats().dirty_pages, 0);
        drop(pool);
        let pool = Pool::open(
            DirectFile::open(&path, &OpenOptions::default()).unwrap(),
            config(backing, 16),
        )
        .unwrap();
        assert_eq!(pool.page_count(), 40);
        for page in 0..40 {
            assert_eq!(read_stamp(&pool, page), (page, 1));
        }
    }
}

#[test]
fn eviction_keeps_every_write_with_budget_a_quarter_of_the_data() {
    for backing in BACKINGS {
        let page_count = 128;
        let pool = open_pool(&format!("evict-{backing:?}"), backing, page_count, 32);
        for round in 1..=3u64 {
            for page in 0..page_count {
                let mut guard = pool.exclusive(PageId(page)).unwrap();
                assert_eq!(
                    u64::from_le_bytes(guard[8..16].try_into().unwrap()),
                    round - 1
                );
                guard.copy_from_slice(&page_bytes(page, round));
            }
            for page in (0..page_count).rev() {
                assert_eq!(read_stamp(&pool, page), (page, round));
            }
            let stats = pool.stats();
            assert!(stats.resident_bytes <= 32 * PAGE_SIZE as u64, "{stats:?}");
        }
        let stats = pool.stats();
        assert!(
            stats.evictions > 0 && stats.shootdowns >= stats.evictions,
            "{stats:?}"
        );
        assert!(stats.writes > 0, "{stats:?}");
        pool.flush().unwrap();
        for page in 0..page_count {
            assert_eq!(read_stamp(&pool, page), (page, 3));
        }
    }
}

#[test]
fn evicted_frames_are_freed() {
    for backing in BACKINGS {
        let page_count = 64;
        let pool = open_pool(&format!("freed-{backing:?}"), backing, page_count, 16);
        for page in 0..page_count {
            read_stamp(&pool, page);
        }
        let resident = (0..page_count)
            .filter(|&page| pool.frame_resident(PageId(page)).unwrap())
            .count();
        assert!(
            resident <= 16,
            "{resident} frames instantiated with a budget of 16 ({backing:?})"
        );
    }
}

#[test]
fn concurrent_faulters_of_one_page_do_one_read() {
    let pool = Arc::new(open_pool("one-read", Backing::Memfd, 8, 16));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                match thread % 3 {
                    0 => read_stamp(&pool, 2).0,
                    1 => u64::from_le_bytes(
                        pool.shared(PageId(2)).unwrap()[0..8].try_into().unwrap(),
                    ),
                    _ => u64::from_le_bytes(
                        pool.exclusive(PageId(2)).unwrap()[0..8].try_into().unwrap(),
                    ),
                }
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), 2);
    }
    assert_eq!(pool.stats().reads, 1);
}

#[test]
fn prefetch_reads_a_batch() {
    let pool = open_pool("prefetch", Backing::Anonymous, 64, 32);
    let pages: Vec<PageId> = (0..20).map(PageId).collect();
    pool.prefetch(&pages).unwrap();
    assert_eq!(pool.stats().reads, 20);
    for page in 0..20 {
        read_stamp(&pool, page);
    }
    assert_eq!(pool.stats().reads, 20, "prefetched pages are hits");
    assert!(pool.prefetch(&[PageId(1000)]).is_err());
}

#[test]
fn export_needs_memfd() {
    let pool = open_pool("export-anon", Backing::Anonymous, 4, 16);
    assert!(matches!(pool.export(), Err(PoolError::ExportNeedsMemfd)));
}

/// Issue 8, finding 5: every public method taking a page id returns an error for an id past
/// the file or the reservation; none panics.
#[test]
fn no_public_method_panics_on_a_bad_page_id() {
    for backing in BACKINGS {
        let pool = open_pool(&format!("bad-ids-{backing:?}"), backing, 4, 16);
        let page_count_max = pool.config().page_count_max;
        for bad in [4, page_count_max - 1, page_count_max, 1 << 40, u64::MAX] {
            let page = PageId(bad);
            let out_of_range = |result: Result<(), PoolError>| {
                matches!(result, Err(PoolError::PageOutOfRange { .. }))
            };
            assert!(
                out_of_range(pool.exclusive(page).map(drop)),
                "exclusive {bad}"
            );
            assert!(out_of_range(pool.shared(page).map(drop)), "shared {bad}");
            assert!(
                out_of_range(pool.optimistic(page).map(drop)),
                "optimistic {bad}"
            );
            assert!(
                out_of_range(pool.optimistic_if_resident(page).map(drop)),
                "optimistic_if_resident {bad}"
            );
            assert!(out_of_range(pool.read(page, |_| ())), "read {bad}");
            assert!(out_of_range(pool.prefetch(&[page])), "prefetch {bad}");
            assert!(
                out_of_range(pool.frame_resident(page).map(drop)),
                "frame_resident {bad}"
            );
        }
        if backing == Backing::Memfd {
            let view = bufpool::ExportedView::open(pool.export().unwrap()).unwrap();
            for bad in [page_count_max, u64::MAX] {
                assert_eq!(
                    view.read(PageId(bad), |_| ()),
                    Err(bufpool::ViewError::OutOfRange(PageId(bad)))
                );
            }
        }
    }
}

/// Issue 8, finding 8: latching a page exclusively does not dirty it; the first mutable
/// access does, and only a dirty page is written back.
#[test]
fn a_page_is_dirtied_by_its_first_write_not_by_its_latch() {
    let pool = open_pool("dirty-on-write", Backing::Anonymous, 8, 16);
    let guard = pool.exclusive(PageId(1)).unwrap();
    assert_eq!(u64::from_le_bytes(guard[0..8].try_into().unwrap()), 1);
    drop(guard);
    let guard = pool.optimistic(PageId(2)).unwrap().upgrade().unwrap();
    assert_eq!(guard[0], 2);
    drop(guard);
    assert_eq!(
        pool.stats().dirty_pages,
        0,
        "a read under the latch dirtied"
    );
    pool.flush().unwrap();
    assert_eq!(pool.stats().writes, 0);
    let mut guard = pool.exclusive(PageId(3)).unwrap();
    guard[9] = 0xAB;
    guard[10] = 0xCD;
    drop(guard);
    assert_eq!(pool.stats().dirty_pages, 1);
    pool.flush().unwrap();
    assert_eq!(pool.stats().writes, 1);
    assert_eq!(pool.stats().dirty_pages, 0);
}

/// The streaming fault-in: every started page comes back once, readable and unlatched, while
/// the budget (16 frames for 48 pages) evicts earlier ones; a page already in flight or
/// resident is not started twice; another thread wanting a page in flight waits for it and
/// reads the right bytes.
#[test]
fn a_fault_stream_hands_back_each_page_once_it_is_in() {
    for backing in BACKINGS {
        let pool = Arc::new(open_pool(&format!("stream-{backing:?}"), backing, 64, 16));
        read_stamp(&pool, 63);
        let mut stream = pool.fault_stream(8).unwrap();
        assert!(
            !stream.start(PageId(63)).unwrap(),
            "a resident page is not read"
        );
        assert!(matches!(
            stream.start(PageId(64)),
            Err(PoolError::PageOutOfRange { .. })
        ));
        let mut done = Vec::new();
        let mut returned = Vec::new();
        for chunk in (0..48u64).collect::<Vec<_>>().chunks(6) {
            for &page in chunk {
                assert!(stream.start(PageId(page)).unwrap(), "page {page}");
                assert!(!stream.start(PageId(page)).unwrap(), "page {page} twice");
            }
            stream.submit().unwrap();
            // Another thread wanting one of the pages in flight waits for its read.
            let waiter = {
                let pool = Arc::clone(&pool);
                let page = chunk[0];
                std::thread::spawn(move || read_stamp(&pool, page))
            };
            stream.complete(chunk.len(), &mut done);
            assert_eq!(waiter.join().unwrap(), (chunk[0], 0));
            for (page, outcome) in done.drain(..) {
                outcome.unwrap();
                returned.push(page.0);
                assert_eq!(read_stamp(&pool, page.0), (page.0, 0));
            }
        }
        assert_eq!(stream.in_flight(), 0);
        returned.sort_unstable();
        assert_eq!(returned, (0..48).collect::<Vec<_>>());
        assert_eq!(pool.stats().reads, 49, "one read per page");
        // Dropped with reads in flight: they finish and the pages end unlatched.
        for page in 48..52 {
            assert!(stream.start(PageId(page)).unwrap());
        }
        drop(stream);
        for page in 48..52 {
            assert_eq!(read_stamp(&pool, page), (page, 0));
        }
    }
}
