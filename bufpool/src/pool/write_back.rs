//! Write-back: batches of exclusively latched dirty pages through the `before_write_back`
//! hook and one io submission (runs of adjacent dirty pages as one request); `flush` over
//! every dirty page in file order, then fdatasync.

use bufpool_io::{IoError, IoKind, IoRequest};

use super::{Pool, backoff};
use crate::BATCH_MAX;
use crate::latch::LATCH_WAIT_ROUNDS_MAX;
use crate::stats::Counter;
use crate::{PAGE_SIZE, PageId, PoolError};

/// What `lock_for_write_back` found.
enum WriteBackLatch {
    Locked,
    Clean,
    Busy,
}

impl Pool {
    /// Writes back the dirty pages among `pages`, all exclusively latched by the caller, with
    /// one submission; marks the written ones clean. Dirty pages that follow each other in
    /// `pages` and on disk go out as one request: their frames are adjacent in the region too.
    pub(super) fn write_back_locked(
        &self,
        pages: &[PageId],
        outcomes: &mut [Result<(), PoolError>],
    ) {
        assert!(pages.len() <= BATCH_MAX && outcomes.len() == pages.len());
        let mut requests = [IoRequest {
            kind: IoKind::Write,
            offset: 0,
            buf: std::ptr::null_mut(),
            len: 0,
        }; BATCH_MAX];
        // Request r covers pages[first[r]..first[r] + runs[r]].
        let mut first = [0usize; BATCH_MAX];
        let mut runs = [0usize; BATCH_MAX];
        let mut request_count = 0;
        for (index, &page) in pages.iter().enumerate() {
            outcomes[index] = Ok(());
            if !self.dirty.get(page) {
                continue;
            }
            if let Err(error) = self.run_before_write_back(page) {
                outcomes[index] = Err(error);
                continue;
            }
            if request_count > 0 {
                let last = request_count - 1;
                let end = first[last] + runs[last];
                if end == index && pages[end - 1].0 + 1 == page.0 {
                    runs[last] += 1;
                    requests[last].len += PAGE_SIZE;
                    continue;
                }
            }
            requests[request_count] = IoRequest {
                kind: IoKind::Write,
                offset: page.0 * PAGE_SIZE as u64,
                buf: self.page_ptr(page),
                len: PAGE_SIZE,
            };
            first[request_count] = index;
            runs[request_count] = 1;
            request_count += 1;
        }
        let mut io_outcomes: [Result<(), IoError>; BATCH_MAX] = std::array::from_fn(|_| Ok(()));
        // SAFETY: every page is exclusively latched by the caller: nobody writes its bytes
        // until the batch completes, and the frames (adjacent pages of a run included) stay
        // mapped.
        unsafe {
            self.io.submit_batch(
                &self.file,
                &requests[..request_count],
                &mut io_outcomes[..request_count],
            )
        };
        for request in 0..request_count {
            let covered = first[request]..first[request] + runs[request];
            match std::mem::replace(&mut io_outcomes[request], Ok(())) {
                Ok(()) => {
                    for index in covered {
                        self.counters.add(Counter::Writes, 1);
                        if self.dirty.clear(pages[index]) {
                            self.counters.add(Counter::DirtyPagesCleaned, 1);
                        }
                    }
                }
                Err(error) => {
                    // Every page of a failed run stays dirty and reports the failure.
                    for index in covered.clone().skip(1) {
                        outcomes[index] = Err(self.same_failure(&error).into());
                    }
                    outcomes[covered.start] = Err(error.into());
                }
            }
        }
    }

    /// An error for another page of a failed run: the same errno where there is one.
    fn same_failure(&self, error: &IoError) -> IoError {
        let source = match error.raw_os_error() {
            Some(errno) => std::io::Error::from_raw_os_error(errno),
            None => std::io::Error::other(error.to_string()),
        };
        match error {
            IoError::Os {
                op,
                path,
                offset,
                len,
                ..
            } => IoError::Os {
                op: *op,
                path: path.clone(),
                offset: *offset,
                len: *len,
                source,
            },
            _ => IoError::Os {
                op: bufpool_io::IoOp::Write,
                path: self.file.path().to_path_buf(),
                offset: 0,
                len: 0,
                source,
            },
        }
    }

    fn run_before_write_back(&self, page: PageId) -> Result<(), PoolError> {
        let Some(hooks) = &self.config.hooks else {
            return Ok(());
        };
        // SAFETY: the caller holds the exclusive latch: this is the only reference.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.page_ptr(page), PAGE_SIZE) };
        hooks.before_write_back(page, bytes)
    }

    /// Writes every dirty page (batched, one submission per batch), then fdatasyncs. Pages
    /// latched by others are waited for one at a time, holding no other latch. Every page is
    /// tried; the first error is returned and failed pages stay dirty.
    pub fn flush(&self) -> Result<(), PoolError> {
        let mut dirty = Vec::new();
        self.resident.for_each(|page| {
            if self.dirty.get(page) {
                dirty.push(page);
            }
        });
        // In file order, so that runs of adjacent pages become single large writes.
        dirty.sort_unstable();
        let mut first_error = None;
        let mut busy = Vec::new();
        for chunk in dirty.chunks(BATCH_MAX) {
            let mut locked = [PageId(0); BATCH_MAX];
            let mut locked_count = 0;
            for &page in chunk {
                match self.lock_for_write_back(page, false) {
                    Ok(WriteBackLatch::Locked) => {
                        locked[locked_count] = page;
                        locked_count += 1;
                    }
                    Ok(WriteBackLatch::Clean) => {}
                    Ok(WriteBackLatch::Busy) => busy.push(page),
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            self.write_back_and_unlock(&locked[..locked_count], &mut first_error);
        }
        for page in busy {
            match self.lock_for_write_back(page, true) {
                Ok(WriteBackLatch::Locked) => self.write_back_and_unlock(&[page], &mut first_error),
                Ok(_) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        self.io.sync_data(&self.file)?;
        Ok(())
    }

    fn lock_for_write_back(&self, page: PageId, wait: bool) -> Result<WriteBackLatch, PoolError> {
        let state = self.state(page);
        for round in 0..LATCH_WAIT_ROUNDS_MAX {
            if !self.dirty.get(page) {
                return Ok(WriteBackLatch::Clean);
            }
            let seen = state.load();
            if state.try_lock_exclusive(seen) {
                if self.dirty.get(page) {
                    return Ok(WriteBackLatch::Locked);
                }
                state.unlock_exclusive();
                return Ok(WriteBackLatch::Clean);
            }
            if !wait {
                return Ok(WriteBackLatch::Busy);
            }
            backoff(round);
        }
        Err(PoolError::LatchWaitLimit { page })
    }

    fn write_back_and_unlock(&self, pages: &[PageId], first_error: &mut Option<PoolError>) {
        let mut outcomes: [Result<(), PoolError>; BATCH_MAX] = std::array::from_fn(|_| Ok(()));
        let outcomes = &mut outcomes[..pages.len()];
        self.write_back_locked(pages, outcomes);
        for (&page, outcome) in pages.iter().zip(outcomes.iter_mut()) {
            self.state(page).unlock_exclusive();
            if let Err(error) = std::mem::replace(outcome, Ok(())) {
                first_error.get_or_insert(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use bufpool_io::{DirectFile, Fault, FaultInjector, OpenOptions};

    use crate::{Backing, Config, PAGE_SIZE, PageId, Pool, PoolError};

    fn open(path: &PathBuf, faults: Option<FaultInjector>) -> Pool {
        let options = OpenOptions {
            create: true,
            ..OpenOptions::default()
        };
        let mut config = Config {
            page_count_max: 1 << 12,
            frame_budget_bytes: 32 * PAGE_SIZE as u64,
            backing: Backing::Anonymous,
            eviction_batch: 8,
            ..Config::default()
        };
        config.io.faults = faults;
        Pool::open(DirectFile::open(path, &options).expect("open"), config).expect("pool")
    }

    fn stamp(pool: &Pool, page: u64, value: u8) {
        pool.exclusive(PageId(page)).unwrap().fill(value);
    }

    fn last_byte(pool: &Pool, page: u64) -> u8 {
        pool.read(PageId(page), |view| view.u8_at(PAGE_SIZE - 1))
            .unwrap()
    }

    #[test]
    fn adjacent_dirty_pages_go_out_as_one_write_and_fail_together() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/bufpool");
        std::fs::create_dir_all(&dir).expect("create test-data dir");
        let path = dir.join(format!("coalesce-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let faults = FaultInjector::new();
        let pool = open(&path, Some(faults.clone()));
        for _ in 0..8 {
            drop(pool.allocate().unwrap());
        }
        pool.flush().unwrap();
        for page in [2, 3, 4, 6] {
            stamp(&pool, page, page as u8 + 1);
        }
        // The run 2..=4 is the first write: all three stay dirty, page 6 is written.
        faults.fail_nth_write(1, Fault::Eio);
        let error = pool.flush().unwrap_err();
        assert!(
            matches!(&error, PoolError::Io(io) if io.raw_os_error() == Some(libc::EIO)),
            "{error}"
        );
        assert_eq!(pool.stats().dirty_pages, 3);
        let writes = pool.stats().writes;
        pool.flush().unwrap();
        assert_eq!(pool.stats().dirty_pages, 0);
        assert_eq!(pool.stats().writes, writes + 3);
        drop(pool);
        let pool = open(&path, None);
        for page in 0..8 {
            let expected = if [2, 3, 4, 6].contains(&page) {
                page as u8 + 1
            } else {
                0
            };
            assert_eq!(last_byte(&pool, page), expected, "page {page}");
        }
    }
}
