//! Simulated power loss, for crash tests of the layers above (the idea of SQLite's `test6.c`,
//! applied to the real files).
//!
//! A [`PowerLoss`] is set in `IoConfig::power_loss`; every engine made from a config carrying a
//! clone of it shares its state, so one simulator covers a data file and its log files.
//!
//! Invariants:
//! 1. For each file, identified by (st_dev, st_ino), `State::files` holds every write submitted
//!    since that file's last completed sync, with its pre-image (the bytes before it, zeros past
//!    the end of the file), read before the write was handed to the kernel. A completed sync
//!    forgets the writes that had completed when it started (what fdatasync covers); a write
//!    still in flight at that moment stays remembered.
//! 2. Once `Inner::cut` is set it never clears; every read, write and sync that consults the
//!    simulator afterwards fails with EIO, and no write is recorded or submitted any more.
//! 3. Pre-images are restored only when no recorded write is in flight (`in_flight == 0`), so
//!    no write submitted before the cut can land on top of a restored sector. The restore is
//!    run by whoever brings `in_flight` to zero: the cut itself, or the last completion.
//!
//! Limits, by design:
//! * File sizes are not rolled back: a dropped write past the old end of file leaves zeros
//!   there, not a shorter file. (A file grown with fallocate is unaffected.)
//! * Pre-images are exact when no two writes to overlapping ranges of one file are in flight
//!   at once (the pool writes a page from one place at a time; a log writes its tail from one
//!   thread). Overlapping writes in sequence are fine: they are undone newest first.
//! * A file truncated or rewritten by other means while writes are remembered gets the
//!   remembered pre-images back at the cut.
//! * Only I/O through `IoEngine` (and its `IoQueue`) is seen. `DirectFile::sync_data`,
//!   `grow_to` and `preallocate` called directly bypass the simulator.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::file::DirectFile;
use crate::transfer::Chunk;

/// The unit a torn write is torn at: the smallest block a disk writes atomically.
pub const SECTOR_BYTES: usize = 512;

/// How long `cut` waits for writes submitted before the cut to complete. They are in the
/// kernel already, so anything near this bound means a hung device.
const RESTORE_WAIT_MAX: Duration = Duration::from_secs(60);

/// Consecutive EINTR results tolerated while reading or restoring a block.
const INTERRUPTED_RETRIES_MAX: u32 = 64;

/// What a cut did to the writes it found unsynced (each write submitted to the kernel counts
/// once, as in `writes_seen`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Left as written.
    pub writes_kept: u64,
    /// Wholly undone: the pre-image is back.
    pub writes_dropped: u64,
    /// Undone on a random non-empty proper subset of its 512-byte sectors.
    pub writes_torn: u64,
}

impl CutReport {
    pub fn writes_total(&self) -> u64 {
        self.writes_kept + self.writes_dropped + self.writes_torn
    }
}

/// A simulated power supply shared by every engine configured with a clone of it (an `Arc`
/// inside). See the module documentation for what it remembers and what a cut does.
#[derive(Debug, Clone, Default)]
pub struct PowerLoss {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Set once, by the cut (invariant 2); read without the lock on every transfer.
    cut: AtomicBool,
    state: Mutex<State>,
    /// Signalled when the restore after a cut has finished.
    restored: Condvar,
}

/// (st_dev, st_ino).
type FileId = (u64, u64);

/// Carried by a transfer from its submission to its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteTicket {
    file: FileId,
    seq: u64,
}

/// Taken when a sync starts; the writes it covers are those completed before then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncTicket {
    file: FileId,
    completions: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Seed of automatic cuts.
    seed: u64,
    writes_seen: u64,
    syncs_seen: u64,
    /// Absolute `writes_seen` / `syncs_seen` numbers at which power fails.
    cut_at_write: Option<u64>,
    cut_at_sync: Option<u64>,
    files: HashMap<FileId, FileLog>,
    /// Recorded writes handed to the kernel and not yet completed.
    in_flight: u64,
    /// Completions of recorded writes so far; orders completions against sync starts.
    completions: u64,
    /// Seed of a cut whose restore waits for `in_flight` to reach zero.
    pending_seed: Option<u64>,
    /// The restore's result, once it ran.
    outcome: Option<Result<CutReport, String>>,
}

/// One file's unsynced writes, oldest first.
#[derive(Debug)]
struct FileLog {
    /// A duplicate of the engine's descriptor: the same O_DIRECT open file description, kept
    /// open while writes are remembered, so the inode (and its number) stays ours.
    file: File,
    path: PathBuf,
    alignment: usize,
    writes: Vec<Unsynced>,
}

#[derive(Debug)]
struct Unsynced {
    seq: u64,
    offset: u64,
    pre_image: Vec<u8>,
    /// `State::completions` after this write completed; `None` while in flight.
    completed_at: Option<u64>,
}

impl PowerLoss {
    pub fn new() -> Self {
        Self::default()
    }

    /// The seed of automatic cuts (`cut_at_write`, `cut_at_sync`); 0 until set.
    pub fn set_seed(&self, seed: u64) {
        self.state().seed = seed;
    }

    /// Power fails just as the `n`-th write from now (1-based) is submitted: that write and
    /// every unsynced one are kept, dropped or torn; the write's caller gets EIO.
    pub fn cut_at_write(&self, n: u64) {
        assert!(n >= 1, "n is 1-based");
        let mut state = self.state();
        state.cut_at_write = Some(state.writes_seen + n);
    }

    /// Power fails just before the `n`-th sync from now (1-based) completes: the sync fails
    /// with EIO and is not performed; every unsynced write is kept, dropped or torn.
    pub fn cut_at_sync(&self, n: u64) {
        assert!(n >= 1, "n is 1-based");
        let mut state = self.state();
        state.cut_at_sync = Some(state.syncs_seen + n);
    }

    /// Write transfers submitted through the simulator so far (continuations of a short write
    /// count, as for `FaultInjector`), the one that triggered a cut included.
    pub fn writes_seen(&self) -> u64 {
        self.state().writes_seen
    }

    /// Syncs that reached the simulator so far (a sync failed by an injected fault does not),
    /// the one that triggered a cut included.
    pub fn syncs_seen(&self) -> u64 {
        self.state().syncs_seen
    }

    /// Whether power has been lost (by `cut` or an automatic cut point).
    pub fn is_cut(&self) -> bool {
        self.inner.cut.load(Ordering::Acquire)
    }

    /// Loses power now: for each unsynced write, newest first, decides from `seed` whether it
    /// is kept, dropped or torn, and makes the files on disk say so. Waits for writes still in
    /// flight to complete first (invariant 3). From then on, all I/O through the simulator
    /// fails with EIO.
    ///
    /// After an automatic cut, or a second time, it changes nothing and returns the first
    /// cut's report once its restore is done: call it before reopening the files.
    ///
    /// # Panics
    /// If restoring a pre-image failed (the files are then not in a state a power cut could
    /// leave, and any check made on them would be meaningless), or if writes submitted before
    /// the cut are still in flight after a minute.
    pub fn cut(&self, seed: u64) -> CutReport {
        let mut state = self.state();
        if !self.is_cut() {
            self.power_off(&mut state, seed);
        }
        let deadline = Instant::now() + RESTORE_WAIT_MAX;
        // Bounded by the deadline.
        loop {
            match &state.outcome {
                Some(Ok(report)) => return *report,
                Some(Err(reason)) => panic!("power-loss simulation failed to restore: {reason}"),
                None => {}
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "power cut: {} writes still in flight after {RESTORE_WAIT_MAX:?}",
                state.in_flight
            );
            state = self
                .inner
                .restored
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Called before a write chunk is handed to the kernel: records it with its pre-image.
    /// `Err(errno)`: do not submit, complete with that errno (power is off, or this write is
    /// the automatic cut point, or the pre-image could not be read).
    ///
    /// # Safety
    /// `[chunk.buf, chunk.buf + chunk.len)` is valid for reads until this returns.
    pub(crate) unsafe fn before_write(
        &self,
        file: &DirectFile,
        chunk: &Chunk,
    ) -> Result<WriteTicket, i32> {
        let mut state = self.state();
        if self.is_cut() {
            return Err(libc::EIO);
        }
        let id = file.identity().map_err(errno)?;
        let seq = state.writes_seen + 1;
        let log = match state.files.entry(id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(FileLog {
                file: file.duplicate().map_err(errno)?,
                path: file.path().to_path_buf(),
                alignment: file.alignment(),
                writes: Vec::new(),
            }),
        };
        let pre_image = read_range(&log.file, log.alignment, chunk.offset, chunk.len);
        let pre_image = pre_image.map_err(errno)?;
        log.writes.push(Unsynced {
            seq,
            offset: chunk.offset,
            pre_image,
            completed_at: None,
        });
        state.writes_seen = seq;
        if state.cut_at_write != Some(seq) {
            state.in_flight += 1;
            return Ok(WriteTicket { file: id, seq });
        }
        // Power fails while this write is on its way: perform it here, so that the choice
        // made by the restore decides how much of it survives. Whatever part lands, its
        // pre-image covers it. Its caller sees EIO: a machine that is off completes nothing.
        // SAFETY: the caller guarantees the chunk's buffer for reads.
        let bytes = unsafe { std::slice::from_raw_parts(chunk.buf.cast_const(), chunk.len) };
        let log = state.files.get(&id).expect("recorded above");
        let landed = log.file.write_all_at(bytes, chunk.offset);
        if let Err(error) = landed {
            tracing::debug!("power cut: the interrupted write failed on its own: {error}");
        }
        state.completions += 1;
        let completions = state.completions;
        if let Some(write) = state
            .files
            .get_mut(&id)
            .and_then(|log| log.writes.last_mut())
        {
            write.completed_at = Some(completions);
        }
        let seed = state.seed;
        self.power_off(&mut state, seed);
        Err(libc::EIO)
    }

    /// Called when a recorded write completes (successfully or not).
    pub(crate) fn write_completed(&self, ticket: WriteTicket) {
        let mut state = self.state();
        assert!(state.in_flight > 0, "a completion without a submission");
        state.in_flight -= 1;
        state.completions += 1;
        let completions = state.completions;
        if let Some(log) = state.files.get_mut(&ticket.file) {
            if let Ok(index) = log.writes.binary_search_by_key(&ticket.seq, |w| w.seq) {
                log.writes[index].completed_at = Some(completions);
            }
        }
        if state.in_flight == 0 {
            self.restore_if_pending(&mut state);
        }
    }

    /// Called before a sync is issued. `Err(errno)`: do not sync, fail with that errno.
    pub(crate) fn before_sync(&self, file: &DirectFile) -> Result<SyncTicket, i32> {
        let mut state = self.state();
        if self.is_cut() {
            return Err(libc::EIO);
        }
        let id = file.identity().map_err(errno)?;
        state.syncs_seen += 1;
        if state.cut_at_sync == Some(state.syncs_seen) {
            let seed = state.seed;
            self.power_off(&mut state, seed);
            return Err(libc::EIO);
        }
        Ok(SyncTicket {
            file: id,
            completions: state.completions,
        })
    }

    /// Called after a sync succeeded: the file's writes completed before it started are
    /// durable. `Err(EIO)` if power failed meanwhile: the sync did not complete before the
    /// cut, so its caller must not believe it.
    pub(crate) fn after_sync(&self, ticket: SyncTicket) -> Result<(), i32> {
        let mut state = self.state();
        if self.is_cut() {
            return Err(libc::EIO);
        }
        if let Some(log) = state.files.get_mut(&ticket.file) {
            log.writes
                .retain(|write| write.completed_at.is_none_or(|at| at > ticket.completions));
            if log.writes.is_empty() {
                // Closes the duplicate descriptor.
                state.files.remove(&ticket.file);
            }
        }
        Ok(())
    }

    fn power_off(&self, state: &mut State, seed: u64) {
        self.inner.cut.store(true, Ordering::Release);
        state.pending_seed = Some(seed);
        if state.in_flight == 0 {
            self.restore_if_pending(state);
        }
    }

    fn restore_if_pending(&self, state: &mut State) {
        let Some(seed) = state.pending_seed.take() else {
            return;
        };
        let files = std::mem::take(&mut state.files);
        let outcome = restore(&files, seed);
        match &outcome {
            Ok(report) => tracing::debug!("power cut with seed {seed}: {report:?}"),
            Err(reason) => tracing::error!("power cut with seed {seed}: {reason}"),
        }
        state.outcome = Some(outcome);
        self.inner.restored.notify_all();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves usable state behind.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn errno(error: io::Error) -> i32 {
    error.raw_os_error().unwrap_or(libc::EIO)
}

/// Undoes the unsynced writes of every file, newest first, and syncs what it changed.
///
/// Sector rule: a sector the decision keeps for some write now holds that write's bytes (or
/// a newer kept write's), and no older write may restore over it; a sector it undoes gets
/// the write's pre-image, which is what the sector held before that write, so undoing older
/// writes afterwards peels back one layer at a time.
fn restore(files: &HashMap<FileId, FileLog>, seed: u64) -> Result<CutReport, String> {
    let mut order: Vec<(u64, FileId, usize)> = files
        .iter()
        .flat_map(|(id, log)| {
            let writes = log.writes.iter().enumerate();
            writes.map(move |(index, write)| (write.seq, *id, index))
        })
        .collect();
    order.sort_unstable_by_key(|&(seq, ..)| std::cmp::Reverse(seq));
    let mut random = SplitMix64(seed);
    let mut report = CutReport::default();
    let mut settled: HashSet<(FileId, u64)> = HashSet::new();
    for (_, id, index) in order {
        let log = &files[&id];
        let write = &log.writes[index];
        let undo = choose(
            &mut random,
            write.pre_image.len() / SECTOR_BYTES,
            &mut report,
        );
        let first_sector = write.offset / SECTOR_BYTES as u64;
        let mut to_restore = Vec::new();
        for (sector_index, undo_it) in undo.into_iter().enumerate() {
            let sector = first_sector + sector_index as u64;
            if settled.contains(&(id, sector)) {
                continue;
            }
            if undo_it {
                to_restore.push(sector_index);
            } else {
                settled.insert((id, sector));
            }
        }
        restore_sectors(log, write, &to_restore).map_err(|error| {
            format!(
                "{}: restoring the pre-image of the write at offset {}: {error}",
                log.path.display(),
                write.offset
            )
        })?;
    }
    for log in files.values() {
        log.file
            .sync_data()
            .map_err(|error| format!("{}: fdatasync after restore: {error}", log.path.display()))?;
    }
    Ok(report)
}

/// Keep, drop or tear one write of `sectors` sectors; returns which sectors to undo.
fn choose(random: &mut SplitMix64, sectors: usize, report: &mut CutReport) -> Vec<bool> {
    match random.next() % 3 {
        0 => {
            report.writes_kept += 1;
            vec![false; sectors]
        }
        // A one-sector write cannot be torn: it is dropped instead.
        roll if roll == 1 || sectors < 2 => {
            report.writes_dropped += 1;
            vec![true; sectors]
        }
        _ => {
            report.writes_torn += 1;
            let mut undo: Vec<bool> = (0..sectors).map(|_| random.next() & 1 == 1).collect();
            let undone = undo.iter().filter(|&&undo_it| undo_it).count();
            // Make the subset non-empty and proper.
            let flip = (random.next() % sectors as u64) as usize;
            if undone == 0 {
                undo[flip] = true;
            } else if undone == sectors {
                undo[flip] = false;
            }
            undo
        }
    }
}

/// Writes the pre-image of the given sectors (indices within `write`, ascending) back.
///
/// Through the duplicated O_DIRECT descriptor, read-modify-write of whole aligned blocks from
/// an aligned buffer. Not through a second, buffered descriptor: its bytes would sit in the
/// page cache while the next engine reads with O_DIRECT, and mixing the two on one file
/// relies on the kernel's flush-and-invalidate before each direct I/O, which can fail
/// silently ("page cache invalidation failure"). Direct writes leave no cached copy at all,
/// so the next reader sees what the device holds. The fdatasync after the restore makes that
/// the durable state too.
fn restore_sectors(log: &FileLog, write: &Unsynced, sectors: &[usize]) -> io::Result<()> {
    let align = log.alignment as u64;
    let mut block = AlignedBuf::new(log.alignment, log.alignment);
    let mut next = 0;
    // Each pass restores at least one sector.
    while next < sectors.len() {
        let sector_offset = write.offset + (sectors[next] * SECTOR_BYTES) as u64;
        let block_start = sector_offset / align * align;
        let block_end = block_start + align;
        read_aligned(&log.file, block_start, block.as_mut_slice())?;
        while next < sectors.len() {
            let index = sectors[next];
            let offset = write.offset + (index * SECTOR_BYTES) as u64;
            if offset >= block_end {
                break;
            }
            let at = (offset - block_start) as usize;
            let source = &write.pre_image[index * SECTOR_BYTES..(index + 1) * SECTOR_BYTES];
            block.as_mut_slice()[at..at + SECTOR_BYTES].copy_from_slice(source);
            next += 1;
        }
        with_retries(|| log.file.write_all_at(block.as_slice(), block_start))?;
    }
    Ok(())
}

/// The bytes of `[offset, offset + len)`, zeros past the end of the file. Reads the aligned
/// blocks around the range, as O_DIRECT requires.
/// A range that is not sector-aligned (only a misused `Fault::Short` makes one) gets EINVAL,
/// as the kernel would give the O_DIRECT write itself.
fn read_range(file: &File, alignment: usize, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    if offset % SECTOR_BYTES as u64 != 0 || len % SECTOR_BYTES != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let align = alignment as u64;
    let start = offset / align * align;
    let end = (offset + len as u64).div_ceil(align) * align;
    let mut buf = AlignedBuf::new((end - start) as usize, alignment);
    read_aligned(file, start, buf.as_mut_slice())?;
    let skip = (offset - start) as usize;
    Ok(buf.as_slice()[skip..skip + len].to_vec())
}

/// Fills `buf` from `offset`; what lies past the end of the file reads as zeros. A direct
/// read stops short only at the end of the file, so one read is enough.
fn read_aligned(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    buf.fill(0);
    with_retries(|| file.read_at(buf, offset).map(drop))
}

fn with_retries(mut call: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let mut retries = 0;
    loop {
        match call() {
            Err(error)
                if error.kind() == io::ErrorKind::Interrupted
                    && retries < INTERRUPTED_RETRIES_MAX =>
            {
                retries += 1;
            }
            result => return result,
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a seed must give the same cut in every build, which
/// a fixed ten-line generator guarantees and a general-purpose RNG crate does not promise
/// across versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A zeroed heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len.max(align), align)
            .expect("the alignment is a power of two and the length fits isize");
        // SAFETY: the layout has a non-zero size (at least `align`, which is >= 4096).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` holds `layout.size()` initialised (zeroed) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_write_undoes_a_non_empty_proper_subset() {
        let mut random = SplitMix64(7);
        let mut report = CutReport::default();
        // Enough rolls that every branch is taken many times.
        for _ in 0..3000 {
            let before = report.writes_torn;
            let undo = choose(&mut random, 8, &mut report);
            let undone = undo.iter().filter(|&&undo_it| undo_it).count();
            if report.writes_torn > before {
                assert!((1..8).contains(&undone), "torn: {undo:?}");
            } else {
                assert!(undone == 0 || undone == 8, "kept or dropped: {undo:?}");
            }
        }
        assert!(
            report.writes_kept > 800 && report.writes_dropped > 800 && report.writes_torn > 800
        );
        let mut one = CutReport::default();
        for _ in 0..100 {
            choose(&mut random, 1, &mut one);
        }
        assert_eq!(one.writes_torn, 0, "one sector cannot be torn");
    }
}
