//! Write-back under injected I/O faults (EIO, ENOSPC, short writes): the page stays dirty and
//! resident, the error reaches the caller, a later flush succeeds and the data is on disk.

mod common;

use bufpool::{Backing, PageId, Pool, PoolError};
use bufpool_io::{DirectFile, Fault, FaultInjector, OpenOptions};
use common::{config, data_path, page_bytes, read_stamp};

fn pool_with_faults(
    name: &str,
    page_count: u64,
    frame_count: u64,
) -> (Pool, FaultInjector, std::path::PathBuf) {
    let path = data_path(name);
    let options = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    let faults = FaultInjector::new();
    let mut config = config(Backing::Memfd, frame_count);
    config.io.faults = Some(faults.clone());
    let pool = Pool::open(DirectFile::open(&path, &options).unwrap(), config).unwrap();
    for page in 0..page_count {
        pool.allocate()
            .unwrap()
            .copy_from_slice(&page_bytes(page, 0));
    }
    pool.flush().unwrap();
    (pool, faults, path)
}

fn assert_on_disk(path: &std::path::Path, page_count: u64, generation_of: impl Fn(u64) -> u64) {
    let pool = Pool::open(
        DirectFile::open(path, &OpenOptions::default()).unwrap(),
        config(Backing::Anonymous, 16),
    )
    .unwrap();
    for page in 0..page_count {
        assert_eq!(read_stamp(&pool, page), (page, generation_of(page)));
    }
}

fn os_error(error: &PoolError) -> Option<i32> {
    match error {
        PoolError::Io(io) => io.raw_os_error(),
        _ => None,
    }
}

#[test]
fn flush_error_keeps_page_dirty_until_a_later_flush() {
    let cases = [
        ("eio", vec![(1, Fault::Eio)], libc::EIO),
        ("enospc", vec![(1, Fault::Enospc)], libc::ENOSPC),
        (
            "short",
            vec![(1, Fault::Short { bytes: 512 }), (2, Fault::Enospc)],
            libc::ENOSPC,
        ),
    ];
    for (name, plan, errno) in cases {
        let (pool, faults, path) = pool_with_faults(&format!("flush-{name}"), 4, 16);
        pool.exclusive(PageId(2))
            .unwrap()
            .copy_from_slice(&page_bytes(2, 1));
        for (n, fault) in plan {
            faults.fail_nth_write(n, fault);
        }
        let error = pool.flush().unwrap_err();
        assert_eq!(os_error(&error), Some(errno), "{name}: {error}");
        assert_eq!(pool.stats().dirty_pages, 1, "{name}");
        assert_eq!(
            read_stamp(&pool, 2),
            (2, 1),
            "{name}: the page kept its bytes"
        );
        pool.flush().unwrap();
        assert_eq!(pool.stats().dirty_pages, 0);
        drop(pool);
        assert_on_disk(&path, 4, |page| u64::from(page == 2));
    }
}

/// Issue 8, finding 6: a reader fails only for its own page's reasons. Victims whose
/// write-back fails stay resident and dirty (their owner's next flush reports it) while the
/// clean victims of the same rounds make room for the reads.
#[test]
fn a_read_does_not_fail_with_another_pages_write_back_error() {
    let page_count = 64;
    let (pool, faults, path) = pool_with_faults("evict-enospc", page_count, 16);
    for page in 0..8 {
        pool.exclusive(PageId(page))
            .unwrap()
            .copy_from_slice(&page_bytes(page, 1));
    }
    faults.fail_all_writes(Some(Fault::Enospc));
    for page in 8..page_count {
        match pool.read(PageId(page), |view| view.u64_at(0)) {
            Ok(id) => assert_eq!(id, page),
            Err(error) => panic!("read of page {page} failed with: {error}"),
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.dirty_pages, 8, "{stats:?}");
    let error = pool.flush().unwrap_err();
    assert_eq!(os_error(&error), Some(libc::ENOSPC), "{error}");
    for page in 0..8 {
        assert_eq!(
            read_stamp(&pool, page),
            (page, 1),
            "dirty page {page} lost its bytes"
        );
    }
    faults.fail_all_writes(None);
    pool.flush().unwrap();
    assert_eq!(pool.stats().dirty_pages, 0);
    drop(pool);
    assert_on_disk(&path, page_count, |page| u64::from(page < 8));
}

#[test]
fn failed_fault_in_leaves_the_page_evicted_and_a_retry_reads_it() {
    let (pool, faults, _path) = pool_with_faults("read-eio", 64, 16);
    // Push page 0 out, then fail its next read.
    for page in 1..64 {
        read_stamp(&pool, page);
    }
    faults.fail_nth_read(1, Fault::Eio);
    let error = pool.read(PageId(0), |view| view.u64_at(0)).unwrap_err();
    assert_eq!(os_error(&error), Some(libc::EIO), "{error}");
    assert_eq!(read_stamp(&pool, 0), (0, 0));
}

/// A read that fails in a fault stream is handed back as an error, its frame uncharged and the
/// page evicted and unlatched; the other reads of the stream are unharmed, and the next access
/// reads the page again.
#[test]
fn a_failed_read_in_a_fault_stream_leaves_the_page_evicted() {
    let (pool, faults, _path) = pool_with_faults("stream-eio", 64, 16);
    for page in 32..64 {
        read_stamp(&pool, page);
    }
    let before = pool.stats();
    faults.fail_nth_read(2, Fault::Eio);
    let mut stream = pool.fault_stream(4).unwrap();
    for page in 0..4 {
        assert!(stream.start(PageId(page)).unwrap());
    }
    let mut done = Vec::new();
    stream.complete(4, &mut done);
    done.sort_by_key(|(page, _)| page.0);
    let failed: Vec<u64> = done
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(page, _)| page.0)
        .collect();
    assert_eq!(failed.len(), 1, "{done:?}");
    let error = done[failed[0] as usize].1.as_ref().unwrap_err();
    assert_eq!(os_error(error), Some(libc::EIO), "{error}");
    assert_eq!(pool.stats().reads, before.reads + 3);
    assert!(pool.stats().resident_bytes <= 16 * bufpool::PAGE_SIZE as u64);
    drop(stream);
    for page in 0..4 {
        assert_eq!(read_stamp(&pool, page), (page, 0));
    }
    assert_eq!(
        pool.stats().reads,
        before.reads + 4,
        "only the failed page read again"
    );
}
