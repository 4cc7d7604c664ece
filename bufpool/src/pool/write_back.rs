//! Write-back: batches of exclusively latched dirty pages through the `before_write_back`
//! hook and one io submission; `flush` over every dirty page, then fdatasync.

use bufpool_io::{IoError, IoKind, IoRequest};

use super::{LATCH_WAIT_ROUNDS_MAX, Pool, backoff};
use crate::eviction::BATCH_MAX;
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
    /// one submission; marks the written ones clean.
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
        let mut request_index = [0usize; BATCH_MAX];
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
            requests[request_count] = IoRequest {
                kind: IoKind::Write,
                offset: page.0 * PAGE_SIZE as u64,
                buf: self.page_ptr(page),
                len: PAGE_SIZE,
            };
            request_index[request_count] = index;
            request_count += 1;
        }
        let mut io_outcomes: [Result<(), IoError>; BATCH_MAX] = std::array::from_fn(|_| Ok(()));
        // SAFETY: every page is exclusively latched by the caller: nobody writes its bytes
        // until the batch completes, and the frames stay mapped.
        unsafe {
            self.io.submit_batch(
                &self.file,
                &requests[..request_count],
                &mut io_outcomes[..request_count],
            )
        };
        for (&index, outcome) in request_index
            .iter()
            .zip(io_outcomes.iter_mut())
            .take(request_count)
        {
            match std::mem::replace(outcome, Ok(())) {
                Ok(()) => {
                    self.counters.add(Counter::Writes, 1);
                    if self.dirty.clear(pages[index]) {
                        self.counters.add(Counter::DirtyPagesCleaned, 1);
                    }
                }
                Err(error) => outcomes[index] = Err(error.into()),
            }
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
        let mut first_error = None;
        let mut busy = Vec::new();
        for chunk in dirty.chunks(self.config.eviction_batch) {
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
