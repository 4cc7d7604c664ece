//! The log file set: appends into a memory buffer, group commit, segments on disk.
//!
//! The log is a byte stream; LSN `x` lives in segment `x / segment_bytes` (a file
//! `<16 hex digits>.wal` in the log directory, preallocated) at offset `x % segment_bytes`.
//! Records are appended to an in-memory buffer under one mutex; whoever needs them durable
//! and finds no write in progress becomes the *leader*: it takes the whole buffer (padded
//! to a block), swaps in the spare one, and writes and fdatasyncs it (O_DIRECT, through the
//! io crate's io_uring path) without holding the mutex. Writers arriving meanwhile append
//! to the fresh buffer and wait; the next leader writes all of them with one sync. There is
//! no timer: a flush starts as soon as the previous one is done ("flush when the device is
//! free").
//!
//! Segments are zero-filled before use. A write into fallocated (unwritten) blocks makes
//! ext4 convert the extent, so every fdatasync after it is a journal commit; into written
//! blocks it is a plain overwrite and the sync only a cache flush (about 1.4x the syncs/s
//! on our VM disk). The flusher thread zero-fills the next segment ahead of need, under a
//! temporary name, and links it in; an append that gets there first falls back to a
//! fallocated segment, which is as correct, only slower to sync.
//!
//! Invariants:
//! 1. `durable <= end`; both only grow; `durable` is a block boundary.
//! 2. The buffer holds exactly the stream `[buffer_lsn, end)`; `buffer_lsn` is a block
//!    boundary equal to `durable` when no flush is in progress.
//! 3. At most one leader writes at a time (`flushing`), so blocks reach the disk in order
//!    and no block is written twice.
//! 4. Once `failed` is set it stays set: nothing more is appended or acknowledged (a failed
//!    write or sync is never retried as if nothing happened).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bufpool::PageId;
use bufpool_io::{AlignedBuf, DirectFile, IoEngine, OpenOptions};

use super::record::{self, BLOCK};
use crate::EngineError;

/// Default size of one segment file.
pub const SEGMENT_BYTES_DEFAULT: u64 = 16 << 20;
/// Initial size of each of the two append buffers; a larger record grows them.
const BUFFER_BYTES: usize = 4 << 20;
/// A buffer this full is handed to the flusher thread (nobody may be waiting for it).
const BUFFER_FLUSH_AT: usize = BUFFER_BYTES / 2;
/// A buffer this full makes its appender wait for a flush (the flusher fell behind).
const BUFFER_BACKPRESSURE_AT: usize = 4 * BUFFER_BYTES;
/// Rounds of waiting for other leaders before `flush_to` gives up (each round is one
/// completed flush by someone else, or a 100 ms timeout).
const FLUSH_WAIT_ROUNDS_MAX: u32 = 100_000;
/// Size of the zero buffer a segment is filled from, one write each.
const ZERO_FILL_CHUNK: usize = 1 << 20;
/// Suffix of a segment being zero-filled; never read as a segment, removed at open.
const ZEROING_SUFFIX: &str = ".wal.zeroing";

/// The log's counters (atomics: read without the mutex).
#[derive(Debug, Default)]
pub struct Counters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub page_images: AtomicU64,
    pub writes: AtomicU64,
    pub syncs: AtomicU64,
    pub durable_waits: AtomicU64,
    pub checkpoints: AtomicU64,
    pub leaked_pages: AtomicU64,
    /// Segments zero-filled ahead of need / created on the append path (fallocated only).
    pub segments_prepared: AtomicU64,
    pub segments_unprepared: AtomicU64,
}

pub(crate) struct Log {
    dir: PathBuf,
    db_id: u64,
    segment_bytes: u64,
    io: IoEngine,
    /// The zero-filling engine: `io` without test hooks, so background zero-fills do not
    /// shift the n-th write or sync a fault-injection or power-loss test aims at.
    zero_fill_io: IoEngine,
    inner: Mutex<Inner>,
    flushed: Condvar,
    /// Wakes the flusher thread (`start_flusher`) when the buffer fills, or to end.
    flush_wanted: Arc<FlushSignal>,
    durable: AtomicU64,
    end: AtomicU64,
    /// Redo LSN of the newest checkpoint begun: a page whose LSN is below it gets a full
    /// image on its next change (torn-write protection).
    image_threshold: AtomicU64,
    pub counters: Counters,
}

pub(crate) struct Inner {
    buffer: AlignedBuf,
    spare: AlignedBuf,
    buffer_lsn: u64,
    end: u64,
    flushing: bool,
    segments: BTreeMap<u64, Arc<DirectFile>>,
    failed: Option<String>,
    /// Per-tree record counts, changed only with a record appended (so a checkpoint's
    /// snapshot matches its redo LSN exactly).
    pub tree_lens: BTreeMap<u64, Arc<AtomicU64>>,
}

/// Where a segment file lives.
pub fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016x}.wal"))
}

/// Writes zeros over bytes `[from, to)` of `file` (block-aligned; O_DIRECT, a chunk per
/// write, not synced).
pub(crate) fn write_zeros(
    io: &IoEngine,
    file: &DirectFile,
    from: u64,
    to: u64,
) -> Result<(), EngineError> {
    let zeros = AlignedBuf::new(ZERO_FILL_CHUNK);
    let mut at = from;
    while at < to {
        let len = (to - at).min(ZERO_FILL_CHUNK as u64) as usize;
        io.write_buf(file, at, &zeros, 0..len, false)?;
        at += len as u64;
    }
    Ok(())
}

fn zeroing_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016x}{ZEROING_SUFFIX}"))
}

/// Zero-fills segment `index` for the log behind `log` (the flusher thread). The log is
/// held only to start and to install, not while the disk writes zeros, so a closed engine
/// is not kept open; a failure only means the append path will create the segment itself.
fn prepare_segment(log: &std::sync::Weak<Log>, index: u64) {
    let Some(strong) = log.upgrade() else { return };
    let prepared = strong.zero_fill(index);
    drop(strong);
    let temporary = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            tracing::debug!(%error, index, "log segment not zero-filled ahead; appends will allocate it");
            return;
        }
    };
    let Some(strong) = log.upgrade() else {
        let _ = std::fs::remove_file(&temporary);
        return;
    };
    if let Err(error) = strong.install_prepared(index, &temporary) {
        tracing::warn!(%error, index, "installing a zero-filled log segment failed");
    }
}

/// Removes the temporary files of zero-fills a previous process did not finish.
fn remove_unfinished_zero_fills(dir: &Path) -> Result<(), EngineError> {
    let io_error = |source| EngineError::LogIo {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(ZEROING_SUFFIX)
        {
            std::fs::remove_file(entry.path()).map_err(io_error)?;
        }
    }
    Ok(())
}

/// The log directory of a database file: `<file>.wal/`.
pub fn dir_of(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

impl Log {
    /// A log whose next record goes at `end` (a block boundary; everything before it is
    /// durable), for database `db_id`.
    pub fn open(
        dir: &Path,
        db_id: u64,
        segment_bytes: u64,
        end: u64,
        io_config: &bufpool_io::IoConfig,
        tree_lens: BTreeMap<u64, Arc<AtomicU64>>,
    ) -> Result<Log, EngineError> {
        assert!(end % BLOCK == 0, "the log resumes at a block boundary");
        assert!(segment_bytes % BLOCK == 0 && segment_bytes >= 1 << 20);
        let io = IoEngine::new(io_config.clone())?;
        let zero_fill_io = IoEngine::new(bufpool_io::IoConfig {
            faults: None,
            power_loss: None,
            ..io_config.clone()
        })?;
        remove_unfinished_zero_fills(dir)?;
        let inner = Inner {
            buffer: AlignedBuf::new(BUFFER_BYTES),
            spare: AlignedBuf::new(BUFFER_BYTES),
            buffer_lsn: end,
            end,
            flushing: false,
            segments: BTreeMap::new(),
            failed: None,
            tree_lens,
        };
        Ok(Log {
            dir: dir.to_path_buf(),
            db_id,
            segment_bytes,
            io,
            zero_fill_io,
            inner: Mutex::new(inner),
            flushed: Condvar::new(),
            flush_wanted: Arc::new(FlushSignal::default()),
            durable: AtomicU64::new(end),
            end: AtomicU64::new(end),
            image_threshold: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The reason the log refuses work, if it does.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Refuses all further appends and acknowledgements (a failed data sync, a failed log
    /// write): only a reopen, whose recovery starts from the durable state, goes on.
    pub fn fail(&self, reason: String) {
        let mut inner = self.lock();
        inner.failed.get_or_insert(reason);
        drop(inner);
        self.flushed.notify_all();
    }

    fn failed_error(&self, reason: &str) -> EngineError {
        EngineError::WritesRefused {
            path: self.dir.clone(),
            reason: reason.to_string(),
        }
    }

    /// The record count of the tree rooted at `root` (shared by all its handles).
    pub fn tree_len(&self, root: PageId) -> Arc<AtomicU64> {
        let mut inner = self.lock();
        Arc::clone(
            inner
                .tree_lens
                .entry(root.0)
                .or_insert_with(|| Arc::new(AtomicU64::new(0))),
        )
    }

    pub fn set_image_threshold(&self, lsn: u64) {
        self.image_threshold.store(lsn, Ordering::Release);
    }

    pub fn stats(&self) -> super::LogStats {
        let counter = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        super::LogStats {
            records: counter(&c.records),
            bytes: counter(&c.bytes),
            page_images: counter(&c.page_images),
            writes: counter(&c.writes),
            syncs: counter(&c.syncs),
            durable_waits: counter(&c.durable_waits),
            durable_lsn: self.durable(),
            end_lsn: self.end(),
            checkpoints: counter(&c.checkpoints),
            leaked_pages: counter(&c.leaked_pages),
            segments_prepared: counter(&c.segments_prepared),
            segments_unprepared: counter(&c.segments_unprepared),
        }
    }

    pub fn image_threshold(&self) -> u64 {
        self.image_threshold.load(Ordering::Acquire)
    }

    /// Appends the record in `bytes` (header not yet finished) with `inner` held; returns
    /// the LSN just past it. Fails, appending nothing, if the log has failed or a new
    /// segment cannot be allocated (ENOSPC).
    pub fn append_locked(
        &self,
        inner: &mut MutexGuard<'_, Inner>,
        bytes: &mut [u8],
    ) -> Result<u64, EngineError> {
        if let Some(reason) = &inner.failed {
            return Err(self.failed_error(reason));
        }
        let lsn = inner.end;
        let padded = record::align8(bytes.len()) as u64;
        self.ensure_segments(inner, lsn, lsn + padded)?;
        record::finish(bytes, lsn, self.db_id, self.durable());
        let at = (lsn - inner.buffer_lsn) as usize;
        let needed = at + padded as usize + BLOCK as usize;
        if needed > inner.buffer.len() {
            grow(&mut inner.buffer, needed);
        }
        inner.buffer[at..at + bytes.len()].copy_from_slice(bytes);
        inner.end = lsn + padded;
        self.end.store(inner.end, Ordering::Release);
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(padded, Ordering::Relaxed);
        Ok(inner.end)
    }

    /// After an append: wakes the flusher if the buffer is half full, or writes it out here
    /// if the flusher fell far behind (bounded memory).
    pub fn after_append(&self, inner: MutexGuard<'_, Inner>) -> Result<(), EngineError> {
        let buffered = (inner.end - inner.buffer_lsn) as usize;
        let end = inner.end;
        drop(inner);
        if buffered >= BUFFER_BACKPRESSURE_AT {
            return self.flush_to(end, false);
        }
        if buffered >= BUFFER_FLUSH_AT {
            self.flush_wanted.raise(false);
        }
        Ok(())
    }

    /// A thread that writes the buffer out when it fills, so appenders never wait for the
    /// disk unless they ask for durability. It holds the log only while flushing (never
    /// while idle), so the log and its files close as soon as the engine does.
    pub fn start_flusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let signal = Arc::clone(&self.flush_wanted);
        let spawned = std::thread::Builder::new()
            .name("bufpool-log".into())
            .spawn(move || {
                while signal.wait(std::time::Duration::from_millis(100)) {
                    let Some(log) = weak.upgrade() else { return };
                    let full = {
                        let inner = log.lock();
                        if inner.failed.is_some() {
                            return;
                        }
                        (inner.end - inner.buffer_lsn) as usize >= BUFFER_FLUSH_AT
                    };
                    if full && log.flush_buffer().is_err() {
                        return;
                    }
                    let wanted = log.next_segment_to_prepare();
                    drop(log);
                    if let Some(index) = wanted {
                        prepare_segment(&weak, index);
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no log flusher thread: appenders write the buffer themselves");
        }
    }

    /// Creates (preallocated, directory synced) the segments covering `[from, to)`.
    fn ensure_segments(&self, inner: &mut Inner, from: u64, to: u64) -> Result<(), EngineError> {
        let first = from / self.segment_bytes;
        let last = (to + BLOCK - 1) / self.segment_bytes;
        for index in first..=last {
            if let std::collections::btree_map::Entry::Vacant(slot) = inner.segments.entry(index) {
                slot.insert(Arc::new(self.create_segment(index)?));
            }
        }
        Ok(())
    }

    /// The segment after the one being appended to, once that one is half used (a log
    /// that never gets there, as in most tests, never pays for it), if not there yet.
    fn next_segment_to_prepare(&self) -> Option<u64> {
        let inner = self.lock();
        let next = inner.end / self.segment_bytes + 1;
        let half_used = inner.end % self.segment_bytes >= self.segment_bytes / 2;
        let missing = inner.failed.is_none() && !inner.segments.contains_key(&next);
        (half_used && missing).then_some(next)
    }

    /// Zero-fills the segment appends start in, if it does not exist yet (a new database):
    /// on failure the first append creates it as before.
    pub fn prepare_first_segment(&self) {
        let index = self.end() / self.segment_bytes;
        if self.lock().segments.contains_key(&index) {
            return;
        }
        let installed = self
            .zero_fill(index)
            .and_then(|temporary| self.install_prepared(index, &temporary));
        if let Err(error) = installed {
            tracing::debug!(%error, index, "first log segment not zero-filled; appends will allocate it");
        }
    }

    /// Segment `index` zero-filled and synced, under a temporary name (no lock held).
    fn zero_fill(&self, index: u64) -> Result<PathBuf, EngineError> {
        let path = zeroing_path(&self.dir, index);
        let file = self.allocated_file(&path)?;
        let filled = write_zeros(&self.zero_fill_io, &file, 0, self.segment_bytes)
            .and_then(|()| Ok(self.zero_fill_io.sync_data(&file)?));
        drop(file);
        match filled {
            Ok(()) => Ok(path),
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                Err(error)
            }
        }
    }

    /// `path` created (or opened) with a segment's blocks allocated, so a later log write
    /// cannot fail with ENOSPC; removed again if they cannot be. (Allocated through the io
    /// engine so that tests can make the disk full.)
    fn allocated_file(&self, path: &Path) -> Result<DirectFile, EngineError> {
        let file = DirectFile::open(
            path,
            &OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        )?;
        if let Err(error) = self.io.allocate(&file, self.segment_bytes) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(error.into());
        }
        Ok(file)
    }

    /// Puts a zero-filled segment in place as `index` unless an append created it first. The
    /// name is made durable before the segment is used; `hard_link` never replaces a file.
    fn install_prepared(&self, index: u64, temporary: &Path) -> Result<(), EngineError> {
        let mut inner = self.lock();
        let wanted = inner.failed.is_none() && !inner.segments.contains_key(&index);
        let linked =
            wanted && std::fs::hard_link(temporary, segment_path(&self.dir, index)).is_ok();
        let _ = std::fs::remove_file(temporary);
        if linked {
            sync_dir(&self.dir)?;
            // Opened by its own name, which I/O errors will report.
            let file = DirectFile::open(segment_path(&self.dir, index), &OpenOptions::default())?;
            inner.segments.insert(index, Arc::new(file));
            self.counters
                .segments_prepared
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn create_segment(&self, index: u64) -> Result<DirectFile, EngineError> {
        let file = self.allocated_file(&segment_path(&self.dir, index))?;
        sync_dir(&self.dir)?;
        self.counters
            .segments_unprepared
            .fetch_add(1, Ordering::Relaxed);
        Ok(file)
    }

    /// Opens an existing segment for appending (after recovery).
    pub fn adopt_segment(&self, index: u64) -> Result<(), EngineError> {
        let path = segment_path(&self.dir, index);
        if !path.exists() {
            return Ok(());
        }
        let file = DirectFile::open(&path, &OpenOptions::default())?;
        file.grow_to(self.segment_bytes)?;
        self.lock().segments.insert(index, Arc::new(file));
        Ok(())
    }

    /// Makes the log durable up to `lsn`: returns at once if it is, else joins or leads a
    /// group flush. With `count`, the wait is counted for the group-commit average.
    pub fn flush_to(&self, lsn: u64, count: bool) -> Result<(), EngineError> {
        if self.durable() >= lsn {
            return Ok(());
        }
        if count {
            self.counters.durable_waits.fetch_add(1, Ordering::Relaxed);
        }
        let mut inner = self.lock();
        for _ in 0..FLUSH_WAIT_ROUNDS_MAX {
            if self.durable() >= lsn {
                return Ok(());
            }
            if let Some(reason) = &inner.failed {
                return Err(self.failed_error(reason));
            }
            if inner.flushing {
                inner = self
                    .flushed
                    .wait_timeout(inner, std::time::Duration::from_millis(100))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                continue;
            }
            inner = self.lead_flush(inner)?;
        }
        Err(EngineError::RetryLimit {
            operation: "log flush",
        })
    }

    /// Writes out the buffer without waiting for anyone (the buffer filled up).
    pub fn flush_buffer(&self) -> Result<(), EngineError> {
        let inner = self.lock();
        if inner.flushing || inner.end == inner.buffer_lsn {
            return Ok(());
        }
        drop(self.lead_flush(inner)?);
        Ok(())
    }

    /// As the leader: takes the buffer, writes and syncs it with the mutex released.
    fn lead_flush<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> Result<MutexGuard<'a, Inner>, EngineError> {
        assert!(!inner.flushing);
        let start = inner.buffer_lsn;
        let end = inner.end.next_multiple_of(BLOCK);
        if end == start {
            return Ok(inner);
        }
        // Padding to the block: the next record starts in a fresh block.
        inner.end = end;
        self.end.store(end, Ordering::Release);
        let fresh = std::mem::replace(&mut inner.spare, AlignedBuf::new(BLOCK as usize));
        let full = std::mem::replace(&mut inner.buffer, fresh);
        inner.buffer_lsn = end;
        inner.flushing = true;
        let segments: Vec<(u64, Arc<DirectFile>)> = inner
            .segments
            .range(start / self.segment_bytes..=(end - 1) / self.segment_bytes)
            .map(|(&index, file)| (index, Arc::clone(file)))
            .collect();
        drop(inner);
        let written = self.write_out(&full, start, end, &segments);
        // The written buffer, zeroed (a zero header is padding), is the next spare; zeroed
        // before the mutex is taken again, so appenders never wait for it.
        let mut full = full;
        let used = (end - start) as usize;
        full[..used].fill(0);
        let mut inner = self.lock();
        inner.flushing = false;
        inner.spare = full;
        match written {
            Ok(()) => {
                self.durable.store(end, Ordering::Release);
                self.flushed.notify_all();
                Ok(inner)
            }
            Err(error) => {
                let reason = format!("log write or sync failed: {error}");
                tracing::error!(%reason, "the log refuses further writes until the engine is reopened");
                inner.failed.get_or_insert(reason);
                self.flushed.notify_all();
                Err(error)
            }
        }
    }

    fn write_out(
        &self,
        buffer: &AlignedBuf,
        start: u64,
        end: u64,
        segments: &[(u64, Arc<DirectFile>)],
    ) -> Result<(), EngineError> {
        let mut at = start;
        while at < end {
            let index = at / self.segment_bytes;
            let segment_end = (index + 1) * self.segment_bytes;
            let piece_end = end.min(segment_end);
            let file = segments
                .iter()
                .find(|(candidate, _)| *candidate == index)
                .map(|(_, file)| file)
                .expect("segments are created before records are appended to them");
            let range = (at - start) as usize..(piece_end - start) as usize;
            self.io
                .write_buf(file, at - index * self.segment_bytes, buffer, range, true)?;
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            at = piece_end;
        }
        Ok(())
    }

    /// Starts a checkpoint: with the mutex held, the redo LSN is the end of the log and
    /// `snapshot` sees exactly the effects of the records before it.
    pub fn begin_checkpoint<T>(&self, snapshot: impl FnOnce(&Inner) -> T) -> (u64, T) {
        let inner = self.lock();
        let redo = inner.end;
        self.image_threshold.store(redo, Ordering::Release);
        (redo, snapshot(&inner))
    }

    /// Deletes the segments wholly before `lsn` (no checkpoint that might be used needs
    /// them).
    pub fn remove_before(&self, lsn: u64) -> Result<(), EngineError> {
        let keep_from = lsn / self.segment_bytes;
        let mut inner = self.lock();
        let old: Vec<u64> = inner.segments.range(..keep_from).map(|(&i, _)| i).collect();
        for index in &old {
            inner.segments.remove(index);
        }
        drop(inner);
        let mut removed = false;
        for index in existing_segments(&self.dir)? {
            if index < keep_from {
                std::fs::remove_file(segment_path(&self.dir, index)).map_err(|source| {
                    EngineError::LogIo {
                        path: segment_path(&self.dir, index),
                        source,
                    }
                })?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.flush_wanted.raise(true);
    }
}

/// The flusher's wake-up: `wanted` (the buffer filled) or `stop` (the log is gone).
#[derive(Default)]
struct FlushSignal {
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl FlushSignal {
    fn raise(&self, stop: bool) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0 = true;
        state.1 |= stop;
        self.changed.notify_one();
    }

    /// Waits until raised or `timeout`; `false` once told to stop.
    fn wait(&self, timeout: std::time::Duration) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !state.0 {
            state = self
                .changed
                .wait_timeout(state, timeout)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        state.0 = false;
        !state.1
    }
}

fn grow(buffer: &mut AlignedBuf, needed: usize) {
    let mut bigger = AlignedBuf::new(needed.next_power_of_two());
    bigger[..buffer.len()].copy_from_slice(buffer);
    *buffer = bigger;
}

/// The segment indexes present in `dir`, ascending.
pub fn existing_segments(dir: &Path) -> Result<Vec<u64>, EngineError> {
    let io_error = |source| EngineError::LogIo {
        path: dir.to_path_buf(),
        source,
    };
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let name = entry.map_err(io_error)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_suffix(".wal") {
            if let Ok(index) = u64::from_str_radix(hex, 16) {
                indexes.push(index);
            }
        }
    }
    indexes.sort_unstable();
    Ok(indexes)
}

/// fsync of a directory: a created or removed file's name is durable.
pub fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|source| EngineError::LogIo {
            path: dir.to_path_buf(),
            source,
        })
}
