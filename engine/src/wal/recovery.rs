//! Recovery: redo the log from the last checkpoint's redo LSN.
//!
//! 1. Read the checkpoint record the superblock names (free list, page count, tree record
//!    counts as of its redo LSN).
//! 2. Scan forward from the redo LSN. Each record is checked whole (length, position,
//!    database id, CRC32C) before any of it is applied, so a record is applied entirely or
//!    not at all. The first record that fails is the end of the log: a torn tail is normal
//!    after a crash and is discarded (reported). If a valid record further on proves that
//!    the failing spot had been synced before it was written, the damage is in the middle
//!    of the log, and recovery stops with an error instead of losing acknowledged writes.
//! 3. For each page entry: a full image is applied if the page on disk is older than the
//!    record or torn (bad checksum); a delta only to an intact page older than the record.
//!    The page's LSN becomes the record's end. Redo is idempotent: a crash during recovery
//!    is recovered the same way.
//! 4. The free list is the checkpoint's, plus pages past its page count, with every
//!    record's allocations and frees replayed in order; tree counts likewise.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bufpool::{PageId, Pool};
use bufpool_io::{AlignedBuf, DirectFile, IoEngine, OpenOptions};

use super::log::{existing_segments, segment_path};
use super::record::{self, BLOCK, CheckpointBody, HEADER_SIZE, KIND_CHECKPOINT, KIND_PAGES};
use crate::EngineError;
use crate::page::{self, PAGE_SIZE};
use crate::shared::ChecksumHooks;
use crate::wal::RecoveryReport;

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;
/// How far past the end of the log recovery looks for proof of damage in the middle.
const EVIDENCE_SCAN_BYTES: u64 = 32 << 20;
/// How much of the oldest segment is searched for a record naming the log's database.
const OWNER_SCAN_BYTES: u64 = 1 << 20;

/// What the superblock tells recovery.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    pub db_id: u64,
    pub segment_bytes: u64,
    pub redo_lsn: u64,
    pub checkpoint_lsn: u64,
}

pub(crate) struct Recovered {
    /// Where the valid log ends (not block aligned).
    pub end: u64,
    pub free: Vec<u64>,
    pub tree_lens: BTreeMap<u64, u64>,
    pub report: RecoveryReport,
}

/// Reads the log stream through the segment files (O_DIRECT, the io engine).
struct Reader {
    dir: PathBuf,
    segment_bytes: u64,
    io: IoEngine,
    files: BTreeMap<u64, Option<DirectFile>>,
    chunk: AlignedBuf,
    chunk_lsn: u64,
    chunk_len: usize,
}

impl Reader {
    fn file(&mut self, index: u64) -> Result<Option<&DirectFile>, EngineError> {
        if !self.files.contains_key(&index) {
            let path = segment_path(&self.dir, index);
            let file = if path.exists() {
                Some(DirectFile::open(&path, &OpenOptions::default())?)
            } else {
                None
            };
            self.files.insert(index, file);
        }
        Ok(self.files[&index].as_ref())
    }

    /// Copies `out.len()` bytes at `lsn` into `out`; `false` if the log has no such bytes
    /// (a segment is missing or short).
    fn read(&mut self, lsn: u64, out: &mut [u8]) -> Result<bool, EngineError> {
        let mut done = 0;
        while done < out.len() {
            let at = lsn + done as u64;
            if !(self.chunk_lsn..self.chunk_lsn + self.chunk_len as u64).contains(&at)
                && !self.load(at)?
            {
                return Ok(false);
            }
            let offset = (at - self.chunk_lsn) as usize;
            let n = (self.chunk_len - offset).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.chunk[offset..offset + n]);
            done += n;
        }
        Ok(true)
    }

    fn load(&mut self, at: u64) -> Result<bool, EngineError> {
        let index = at / self.segment_bytes;
        let segment_start = index * self.segment_bytes;
        let start = segment_start + (at - segment_start) / READ_CHUNK as u64 * READ_CHUNK as u64;
        let len = (READ_CHUNK as u64).min(segment_start + self.segment_bytes - start) as usize;
        let io = self.io.clone();
        let mut chunk = std::mem::replace(&mut self.chunk, AlignedBuf::new(BLOCK as usize));
        let loaded = match self.file(index)? {
            None => false,
            Some(file) => {
                let file_len = file.len()?;
                if start + len as u64 - segment_start > file_len {
                    false
                } else {
                    io.read_buf(file, start - segment_start, &mut chunk, 0..len)?;
                    true
                }
            }
        };
        self.chunk = chunk;
        if loaded {
            self.chunk_lsn = start;
            self.chunk_len = len;
        }
        Ok(loaded)
    }

    /// The whole valid record at `lsn`, into `out`; `None` if there is none.
    fn record(
        &mut self,
        lsn: u64,
        db_id: u64,
        out: &mut Vec<u8>,
    ) -> Result<Option<record::Header>, EngineError> {
        let mut head = [0u8; HEADER_SIZE];
        if !self.read(lsn, &mut head)? {
            return Ok(None);
        }
        let Some(header) = record::header(&head) else {
            return Ok(None);
        };
        if header.lsn != lsn || header.db_id != db_id {
            return Ok(None);
        }
        out.clear();
        out.resize(header.len, 0);
        if !self.read(lsn, out)? || !record::checksum_ok(out, header.len) {
            return Ok(None);
        }
        Ok(Some(header))
    }
}

fn log_corrupted(dir: &Path, lsn: u64, reason: impl Into<String>) -> EngineError {
    EngineError::LogCorrupted {
        path: dir.to_path_buf(),
        lsn,
        reason: reason.into(),
    }
}

/// Reads the checkpoint record the superblock names.
pub(crate) fn read_checkpoint(
    dir: &Path,
    start: &Start,
    io_config: &bufpool_io::IoConfig,
    database: &Path,
) -> Result<CheckpointBody, EngineError> {
    let mut reader = reader(dir, start, io_config)?;
    let mut bytes = Vec::new();
    let lsn = start.checkpoint_lsn;
    match reader.record(lsn, start.db_id, &mut bytes)? {
        Some(header) if header.kind == KIND_CHECKPOINT => {
            let body = CheckpointBody::decode(&bytes[HEADER_SIZE..header.len])
                .map_err(|reason| log_corrupted(dir, lsn, reason))?;
            if body.redo_lsn != start.redo_lsn {
                return Err(log_corrupted(
                    dir,
                    lsn,
                    "checkpoint record of another redo point",
                ));
            }
            Ok(body)
        }
        Some(_) => Err(log_corrupted(dir, lsn, "not a checkpoint record")),
        None => {
            let mut head = [0u8; HEADER_SIZE];
            let found = reader.read(lsn, &mut head)?;
            // Whose log this is: a record header at the checkpoint's position says, else the
            // log's own first records (the position may fall inside another database's record).
            let owner = match record::header(&head) {
                Some(header) if found && header.lsn == lsn => Some(header.db_id),
                _ => log_owner(&mut reader, dir, start.segment_bytes)?,
            };
            let mismatch = |reason: String| EngineError::LogMismatch {
                path: dir.to_path_buf(),
                database: database.to_path_buf(),
                reason,
            };
            match owner {
                Some(owner) if owner != start.db_id => Err(mismatch(format!(
                    "the log belongs to database {owner:#018x}, this file is {:#018x}",
                    start.db_id
                ))),
                // Nothing at the checkpoint's position: an older copy of this database's log.
                _ if !found || record::is_zero_header(&head) => Err(mismatch(format!(
                    "the database file is newer than its log: its checkpoint at log position \
                     {lsn} is not in the log"
                ))),
                _ => Err(log_corrupted(dir, lsn, "the checkpoint record is damaged")),
            }
        }
    }
}

/// The database id of the first valid record at a block boundary within the first
/// `OWNER_SCAN_BYTES` of the oldest segment (every synced write is padded to a block, so
/// records start there often): whose log this is. `None` if none is found.
fn log_owner(
    reader: &mut Reader,
    dir: &Path,
    segment_bytes: u64,
) -> Result<Option<u64>, EngineError> {
    let Some(&first) = existing_segments(dir)?.first() else {
        return Ok(None);
    };
    let start = first * segment_bytes;
    let mut head = [0u8; HEADER_SIZE];
    let mut bytes = Vec::new();
    for at in (start..start + OWNER_SCAN_BYTES.min(segment_bytes)).step_by(BLOCK as usize) {
        if !reader.read(at, &mut head)? {
            break;
        }
        if let Some(header) = record::header(&head) {
            if header.lsn == at && reader.record(at, header.db_id, &mut bytes)?.is_some() {
                return Ok(Some(header.db_id));
            }
        }
    }
    Ok(None)
}

fn reader(
    dir: &Path,
    start: &Start,
    io_config: &bufpool_io::IoConfig,
) -> Result<Reader, EngineError> {
    if !dir.is_dir() {
        return Err(EngineError::LogMissing {
            path: dir.to_path_buf(),
        });
    }
    Ok(Reader {
        dir: dir.to_path_buf(),
        segment_bytes: start.segment_bytes,
        io: IoEngine::new(io_config.clone())?,
        files: BTreeMap::new(),
        chunk: AlignedBuf::new(READ_CHUNK),
        chunk_lsn: 0,
        chunk_len: 0,
    })
}

/// Redoes the log after the checkpoint into `pool`.
pub(crate) fn redo(
    pool: &Pool,
    hooks: &ChecksumHooks,
    dir: &Path,
    start: &Start,
    checkpoint: &CheckpointBody,
    io_config: &bufpool_io::IoConfig,
) -> Result<Recovered, EngineError> {
    let began = Instant::now();
    let mut reader = reader(dir, start, io_config)?;
    let mut report = RecoveryReport::default();
    let mut events: Vec<(bool, u64)> = Vec::new();
    let mut tree_lens: BTreeMap<u64, u64> = checkpoint.trees.iter().copied().collect();
    // Pass 1 finds the end and checks every record (and the tail) before anything is
    // applied: a log damaged in the middle is refused with the data file untouched.
    let mut touched = Touched::default();
    let end = scan(&mut reader, dir, start, u64::MAX, |_, _, body| {
        for entry in body.map_or(&[][..], |body| &body.entries[..]) {
            touched.note(entry.page);
        }
        Ok(())
    })?;
    if end <= start.checkpoint_lsn {
        return Err(log_corrupted(
            dir,
            end,
            "the log ends before the checkpoint record it must contain",
        ));
    }
    report.discarded_tail_bytes = check_tail(&mut reader, dir, start.db_id, end)?;
    // Pass 2 applies (page LSNs make it idempotent).
    let at = scan(&mut reader, dir, start, end, |record_end, header, body| {
        if let Some(body) = body {
            for entry in &body.entries {
                touched.prefetch_from(pool, entry.page);
                apply(pool, hooks, entry, record_end, &mut report)?;
            }
            events.extend(body.allocated.iter().map(|&id| (false, id)));
            events.extend(body.freed.iter().map(|&id| (true, id)));
            if body.tree_root != 0 {
                let len = tree_lens.entry(body.tree_root).or_insert(0);
                *len = len.wrapping_add(body.len_delta as u64);
            }
        }
        report.records += 1;
        report.bytes += record::align8(header.len) as u64;
        Ok(())
    })?;
    assert_eq!(at, end, "the second pass ends where the first did");
    if let Some(page) = hooks.torn_pages().first() {
        return Err(EngineError::Corrupted {
            page: page.0,
            file: hooks.path().to_path_buf(),
            reason: "torn page with no full image in the log".into(),
        });
    }
    let free = replay_free_list(checkpoint, pool.page_count(), &events);
    report.duration = began.elapsed();
    if report.discarded_tail_bytes > 0 {
        tracing::warn!(
            log = %dir.display(),
            lsn = at,
            discarded_bytes = report.discarded_tail_bytes,
            "recovery discarded a torn or incomplete tail of the log"
        );
    }
    tracing::info!(
        records = report.records,
        bytes = report.bytes,
        pages_applied = report.pages_applied,
        "recovery replayed the log"
    );
    Ok(Recovered {
        end: at,
        free,
        tree_lens,
        report,
    })
}

/// The pages the log changes, in the order it first changes them: redo reads them ahead in
/// batches (one io submission each) instead of one blocking miss at a time.
#[derive(Default)]
struct Touched {
    order: Vec<PageId>,
    first: HashMap<u64, usize>,
    prefetched_to: usize,
}

impl Touched {
    fn note(&mut self, page: u64) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.first.entry(page) {
            slot.insert(self.order.len());
            self.order.push(PageId(page));
        }
    }

    /// Before `page` is first applied: reads it and the next pages to be touched (half the
    /// pool's frames at most, so they are still resident when their turn comes).
    fn prefetch_from(&mut self, pool: &Pool, page: u64) {
        let Some(&at) = self.first.get(&page) else {
            return;
        };
        if at < self.prefetched_to {
            return;
        }
        let window = (pool.config().frame_budget_bytes / PAGE_SIZE as u64 / 2).clamp(16, 8192);
        let end = (at + window as usize).min(self.order.len());
        // Errors (a page past the file's end, a failed read) resurface on the page's own
        // access, where they are handled.
        let _ = pool.prefetch(&self.order[at..end]);
        self.prefetched_to = end;
    }
}

/// Walks the valid records from the redo LSN up to `limit` or the first invalid one, and
/// calls `visit(record end, header, parsed page-change body)` for each; returns where the
/// valid log ends.
fn scan(
    reader: &mut Reader,
    dir: &Path,
    start: &Start,
    limit: u64,
    mut visit: impl FnMut(
        u64,
        &record::Header,
        Option<&record::PagesBody<'_>>,
    ) -> Result<(), EngineError>,
) -> Result<u64, EngineError> {
    let mut bytes = Vec::new();
    let mut at = start.redo_lsn;
    let segments_end = existing_segments(dir)?
        .last()
        .map_or(0, |&last| (last + 1) * start.segment_bytes);
    // Each step advances by at least 8 bytes.
    for _ in 0..=(segments_end.saturating_sub(at) / 8) {
        if at >= limit {
            break;
        }
        let mut head = [0u8; HEADER_SIZE];
        if !reader.read(at, &mut head)? {
            break;
        }
        // Padding runs from the end of a flushed record to the end of its block and may be
        // shorter than a header: only the bytes left in this block tell (a record's length,
        // in its first 8 bytes, is never zero).
        let in_block = (BLOCK - at % BLOCK) as usize;
        if record::is_zero_header(&head[..HEADER_SIZE.min(in_block)]) {
            if at % BLOCK == 0 {
                break;
            }
            at = at.next_multiple_of(BLOCK);
            continue;
        }
        let Some(header) = reader.record(at, start.db_id, &mut bytes)? else {
            break;
        };
        let end = at + record::align8(header.len) as u64;
        match header.kind {
            KIND_PAGES => {
                let body = record::parse_pages(&bytes[HEADER_SIZE..header.len])
                    .map_err(|reason| log_corrupted(dir, at, reason))?;
                visit(end, &header, Some(&body))?;
            }
            KIND_CHECKPOINT => visit(end, &header, None)?,
            _ => return Err(log_corrupted(dir, at, "unknown record kind")),
        }
        at = end;
    }
    Ok(at)
}

fn apply(
    pool: &Pool,
    hooks: &ChecksumHooks,
    entry: &record::Entry<'_>,
    lsn: u64,
    report: &mut RecoveryReport,
) -> Result<(), EngineError> {
    // The file may be shorter than the log says (its growth was not synced).
    for _ in 0..(entry.page + 1).saturating_sub(pool.page_count()) {
        drop(pool.allocate()?);
    }
    let page = PageId(entry.page);
    let mut guard = pool.exclusive(page)?;
    let torn = hooks.take_torn(page);
    let older = page::lsn_of(&guard) < lsn;
    if entry.kind == record::ENTRY_IMAGE {
        if !(torn || older) {
            report.pages_skipped += 1;
            return Ok(());
        }
    } else {
        if torn {
            return Err(EngineError::Corrupted {
                page: entry.page,
                file: hooks.path().to_path_buf(),
                reason: "torn page with no full image in the log before this change".into(),
            });
        }
        if !older {
            report.pages_skipped += 1;
            return Ok(());
        }
    }
    entry
        .apply(&mut guard)
        .map_err(|reason| EngineError::Corrupted {
            page: entry.page,
            file: hooks.path().to_path_buf(),
            reason: reason.into(),
        })?;
    page::set_lsn(&mut guard, lsn);
    report.pages_applied += 1;
    Ok(())
}

/// Bytes of damaged or incomplete tail after `end`; an error if a later valid record shows
/// that `end` had been synced (damage in the middle of the log).
fn check_tail(reader: &mut Reader, dir: &Path, db_id: u64, end: u64) -> Result<u64, EngineError> {
    let mut last_nonzero = end;
    let mut block = [0u8; BLOCK as usize];
    let mut bytes = Vec::new();
    let mut at = end - end % BLOCK;
    while at < end + EVIDENCE_SCAN_BYTES {
        if !reader.read(at, &mut block)? {
            break;
        }
        if block.iter().any(|&b| b != 0) {
            last_nonzero = last_nonzero.max(at + BLOCK);
        }
        if at > end {
            if let Some(header) = reader.record(at, db_id, &mut bytes)? {
                if header.durable > end {
                    return Err(log_corrupted(
                        dir,
                        end,
                        format!(
                            "damaged record in the middle of the log: the record at {at} was \
                             written after everything up to {} was synced",
                            header.durable
                        ),
                    ));
                }
            }
        }
        at += BLOCK;
    }
    Ok(last_nonzero - end)
}

fn replay_free_list(
    checkpoint: &CheckpointBody,
    page_count: u64,
    events: &[(bool, u64)],
) -> Vec<u64> {
    let mut free: BTreeSet<u64> = checkpoint
        .free
        .iter()
        .flat_map(|&(first, count)| first..first + count)
        .collect();
    free.extend(
        checkpoint
            .page_count
            .max(crate::superblock::FIRST_DATA_PAGE)..page_count,
    );
    for &(freed, id) in events {
        if freed {
            free.insert(id);
        } else {
            free.remove(&id);
        }
    }
    free.into_iter().collect()
}

/// Zeroes the bytes after `end` in its block, keeping those before it, and syncs.
fn zero_block_tail(
    dir: &Path,
    segment_bytes: u64,
    end: u64,
    io_config: &bufpool_io::IoConfig,
) -> Result<(), EngineError> {
    let index = end / segment_bytes;
    let file = DirectFile::open(segment_path(dir, index), &OpenOptions::default())?;
    let io = IoEngine::new(io_config.clone())?;
    let block_offset = end - end % BLOCK - index * segment_bytes;
    let mut block = AlignedBuf::new(BLOCK as usize);
    io.read_buf(&file, block_offset, &mut block, 0..BLOCK as usize)?;
    block[(end % BLOCK) as usize..].fill(0);
    io.write_buf(&file, block_offset, &block, 0..BLOCK as usize, true)?;
    Ok(())
}

/// Makes the log end at `end` for good: zeroes what follows up to `garbage_end` (the
/// discarded tail; the rest of its segment) and deletes later segments, so no stale record
/// beyond can ever be read as a continuation. Returns the block where appending resumes.
pub(crate) fn truncate(
    dir: &Path,
    segment_bytes: u64,
    end: u64,
    garbage_end: u64,
    io_config: &bufpool_io::IoConfig,
) -> Result<u64, EngineError> {
    let resume = end.next_multiple_of(BLOCK);
    if garbage_end > end && end % BLOCK != 0 {
        // The discarded bytes start inside the block that holds the last records: left
        // there, a later recovery would stop at them again, before the records appended at
        // `resume`. The block is rewritten with its bytes up to `end` unchanged and zeros
        // after, which a torn write cannot harm (every sector is either old or new, and
        // both hold the same records).
        zero_block_tail(dir, segment_bytes, end, io_config)?;
    }
    let index = resume / segment_bytes;
    if garbage_end <= resume {
        return Ok(resume);
    }
    for later in existing_segments(dir)? {
        if later > index {
            let path = segment_path(dir, later);
            std::fs::remove_file(&path).map_err(|source| EngineError::LogIo { path, source })?;
        }
    }
    let path = segment_path(dir, index);
    if path.exists() {
        let file = DirectFile::open(&path, &OpenOptions::default())?;
        let io = IoEngine::new(io_config.clone())?;
        let offset = resume - index * segment_bytes;
        let file_len = file.len()?;
        if file_len > offset {
            super::log::write_zeros(&io, &file, offset, file_len)?;
            io.sync_data(&file)?;
        }
    }
    super::log::sync_dir(dir)?;
    Ok(resume)
}
