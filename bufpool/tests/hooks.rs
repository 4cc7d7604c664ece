//! The page hooks: `before_write_back` runs under the exclusive latch before every write (its
//! changes reach the disk, its error keeps the page dirty), `after_read` before anyone sees a
//! page read from disk (its error leaves the page evicted and reaches the faulting caller).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bufpool::{Backing, PAGE_SIZE, PageHooks, PageId, Pool, PoolError};
use bufpool_io::{DirectFile, OpenOptions};
use common::{config, data_path};

/// Stamps a checksum into the last 4 bytes and checks it on read.
#[derive(Default)]
struct Checksums {
    refuse_writes: AtomicBool,
    stamped: AtomicU64,
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes[..PAGE_SIZE - 4].iter().fold(17u32, |sum, &byte| {
        sum.wrapping_mul(31).wrapping_add(byte.into())
    })
}

impl PageHooks for Checksums {
    fn before_write_back(&self, page: PageId, bytes: &mut [u8]) -> Result<(), PoolError> {
        if self.refuse_writes.load(Ordering::SeqCst) {
            return Err(PoolError::Hook(format!(
                "log not yet durable for page {}",
                page.0
            )));
        }
        let sum = checksum(bytes);
        bytes[PAGE_SIZE - 4..].copy_from_slice(&sum.to_le_bytes());
        self.stamped.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn after_read(&self, page: PageId, bytes: &[u8]) -> Result<(), PoolError> {
        let stored = u32::from_le_bytes(bytes[PAGE_SIZE - 4..].try_into().unwrap());
        if stored != checksum(bytes) {
            return Err(PoolError::Corrupted {
                page,
                file: "test".into(),
                reason: "checksum mismatch".into(),
            });
        }
        Ok(())
    }
}

fn pool_with_hooks(path: &std::path::Path, hooks: Arc<Checksums>, create: bool) -> Pool {
    let mut config = config(Backing::Memfd, 16);
    config.hooks = Some(hooks);
    let options = OpenOptions {
        create,
        ..OpenOptions::default()
    };
    Pool::open(DirectFile::open(path, &options).unwrap(), config).unwrap()
}

#[test]
fn hooks_stamp_on_write_back_and_check_on_read() {
    let path = data_path("hooks");
    let hooks = Arc::new(Checksums::default());
    let pool = pool_with_hooks(&path, hooks.clone(), true);
    for page in 0..40u64 {
        pool.allocate().unwrap()[..8].copy_from_slice(&page.to_le_bytes());
    }
    // Under a 16-frame budget most pages were written back by eviction, through the hook.
    assert!(hooks.stamped.load(Ordering::SeqCst) >= 24);
    for page in 0..40 {
        assert_eq!(
            pool.read(PageId(page), |view| view.u64_at(0)).unwrap(),
            page
        );
    }

    hooks.refuse_writes.store(true, Ordering::SeqCst);
    pool.exclusive(PageId(39)).unwrap()[8] = 1;
    let error = pool.flush().unwrap_err();
    assert!(matches!(error, PoolError::Hook(_)), "{error}");
    assert!(pool.stats().dirty_pages >= 1);
    hooks.refuse_writes.store(false, Ordering::SeqCst);
    pool.flush().unwrap();
    assert_eq!(pool.stats().dirty_pages, 0);
    drop(pool);

    // Corrupt page 5 on disk: faulting it in fails with Corrupted, the page stays evicted,
    // other pages are fine, and the error repeats (nothing half-read is served).
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5 * PAGE_SIZE + 100] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let pool = pool_with_hooks(&path, hooks, false);
    for _ in 0..2 {
        let error = pool.read(PageId(5), |view| view.u64_at(0)).unwrap_err();
        assert!(
            matches!(
                error,
                PoolError::Corrupted {
                    page: PageId(5),
                    ..
                }
            ),
            "{error}"
        );
    }
    assert!(pool.exclusive(PageId(5)).is_err());
    assert_eq!(pool.read(PageId(6), |view| view.u64_at(0)).unwrap(), 6);
    assert_eq!(
        pool.stats().resident_bytes,
        PAGE_SIZE as u64,
        "the failed fault-ins released their frames"
    );
}

#[test]
fn upgrade_shared_keeps_the_version() {
    let path = data_path("upgrade-shared");
    let pool = pool_with_hooks(&path, Arc::new(Checksums::default()), true);
    drop(pool.allocate().unwrap());
    let optimistic = pool.optimistic(PageId(0)).unwrap();
    let shared = optimistic.upgrade_shared().unwrap();
    assert!(
        pool.optimistic(PageId(0)).unwrap().upgrade().is_err(),
        "exclusive while shared"
    );
    drop(shared);
    let stale = pool.optimistic(PageId(0)).unwrap();
    pool.exclusive(PageId(0)).unwrap()[0] = 1;
    assert!(stale.upgrade_shared().is_err());
}
