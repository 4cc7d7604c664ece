//! Opening (with recovery), creating, checkpointing and closing an engine file.
//!
//! Files: the database `PATH` (pages 0 and 1 the two superblock copies, then tree nodes
//! and overflow pages in any order; the catalog root is fixed at creation) and its log
//! directory `PATH.wal/` (segment files, see `wal::log`).
//!
//! Durability: every change is logged before it can reach the data file (the write-ahead
//! rule, enforced in the pool's write-back hook), and `Ok` from a write means durable as
//! `EngineOptions::durability` says. A checkpoint writes dirty pages back while writers go
//! on, then the next superblock copy: recovery replays the log from the newest complete
//! checkpoint's redo point. See DESIGN.md, "The log and recovery".

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bufpool::{Backing, PageId, Pool, Stats};
use bufpool_io::{AlignedBuf, DirectFile, IoConfig, IoEngine, OpenOptions};
use dashmap::DashMap;

use crate::allocator::Allocator;
use crate::catalog;
use crate::node;
use crate::page::PAGE_SIZE;
use crate::shared::{ChecksumHooks, Shared};
use crate::superblock::{self, FIRST_DATA_PAGE, SUPERBLOCK_PAGES, Superblock, SuperblockProblem};
use crate::tree::Tree;
use crate::wal::record::{self, BLOCK, CheckpointBody, KIND_CHECKPOINT};
use crate::wal::{self, Durability, Log, Lsn, recovery};
use crate::{EngineError, page};

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Frame budget of the buffer pool in bytes.
    pub pool_bytes: u64,
    /// Largest the file may grow (the pool reserves this much address space, MAP_NORESERVE).
    pub max_file_bytes: u64,
    pub backing: Backing,
    pub io: IoConfig,
    /// Pages evicted per eviction round (their write-backs share one submission).
    pub eviction_batch: usize,
    /// What a write's `Ok` promises (default: `Immediate`, synced).
    pub durability: Durability,
    /// A checkpoint starts by itself once this much log was written since the last one
    /// (bounds recovery time and log disk space).
    pub checkpoint_log_bytes: u64,
    /// Size of each log segment file (used when the file is created).
    pub log_segment_bytes: u64,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            pool_bytes: 256 << 20,
            max_file_bytes: 1 << 40,
            backing: Backing::Anonymous,
            io: IoConfig::default(),
            eviction_batch: 32,
            durability: Durability::Immediate,
            checkpoint_log_bytes: 1 << 30,
            log_segment_bytes: wal::SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// An open engine file: `Send + Sync`, share it with `Arc`. Trees from [`Engine::tree`]
/// keep the file open even after the engine value is dropped or closed.
pub struct Engine {
    shared: Arc<Shared>,
    /// Periodic sync and automatic checkpoints; stopped (and joined) when the engine value
    /// is dropped or closed, so a reopen right after finds the file lock free.
    background: Option<std::thread::JoinHandle<()>>,
    /// Eviction ahead of demand (`spawn_evictor`); stopped and joined the same way.
    evictor: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        for (thread, name) in [
            (self.background.take(), "background"),
            (self.evictor.take(), "evictor"),
        ] {
            let Some(thread) = thread else { continue };
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("the engine's {name} thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.shared.path)
            .finish()
    }
}

fn pool_config(options: &EngineOptions, hooks: Arc<ChecksumHooks>) -> bufpool::Config {
    bufpool::Config {
        page_count_max: options.max_file_bytes / PAGE_SIZE as u64,
        frame_budget_bytes: options.pool_bytes,
        backing: options.backing,
        eviction_batch: options.eviction_batch,
        io: options.io.clone(),
        hooks: Some(hooks),
        ..bufpool::Config::default()
    }
}

/// A random database id (no dependency: std's per-process random hasher keys, the time
/// and the process id).
fn new_db_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish() | 1
}

/// What an open engine is assembled from.
struct Parts {
    pool: Pool,
    log: Arc<Log>,
    data_file: DirectFile,
    lock: std::fs::File,
    allocator: Allocator,
    last: Superblock,
    recovery: crate::RecoveryReport,
}

impl Engine {
    /// Creates a new engine file and its log directory; fails with `AlreadyExists` if
    /// either exists.
    pub fn create(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine, EngineError> {
        let path = path.as_ref().to_path_buf();
        let log_dir = wal::log_dir_of(&path);
        for existing in [&path, &log_dir] {
            if std::fs::symlink_metadata(existing).is_ok() {
                return Err(EngineError::AlreadyExists {
                    path: existing.clone(),
                });
            }
        }
        let file = DirectFile::open(
            &path,
            &OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        )?;
        let result = lock_file(&path)
            .and_then(|lock| Engine::initialize(file, lock, &path, &log_dir, &options));
        if result.is_err() {
            // Only what this call created is removed.
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir_all(&log_dir);
        }
        result
    }

    fn initialize(
        file: DirectFile,
        lock: std::fs::File,
        path: &Path,
        log_dir: &Path,
        options: &EngineOptions,
    ) -> Result<Engine, EngineError> {
        // The superblock pages exist before the pool does: it never touches them.
        file.grow_to(FIRST_DATA_PAGE * PAGE_SIZE as u64)?;
        let data_file = DirectFile::open(path, &OpenOptions::default())?;
        let hooks = Arc::new(ChecksumHooks::new(path));
        let pool = Pool::open(file, pool_config(options, Arc::clone(&hooks)))?;
        std::fs::create_dir(log_dir).map_err(|source| EngineError::LogIo {
            path: log_dir.to_path_buf(),
            source,
        })?;
        let db_id = new_db_id();
        let segment_bytes = options
            .log_segment_bytes
            .next_multiple_of(BLOCK)
            .max(1 << 20);
        let log = Arc::new(Log::open(
            log_dir,
            db_id,
            segment_bytes,
            BLOCK,
            &options.io,
            Default::default(),
        )?);
        log.set_image_threshold(BLOCK);
        log.prepare_first_segment();
        log.start_flusher();
        hooks.attach_log(Arc::clone(&log));
        let allocator = Allocator::with_free(Vec::new());
        let mut catalog = allocator.allocate(&pool, log.end())?;
        assert_eq!(
            catalog.id(),
            PageId(FIRST_DATA_PAGE),
            "a new file's first page"
        );
        node::init(&mut catalog, 0);
        wal::commit(
            &log,
            &allocator,
            &mut [&mut catalog],
            wal::Change::default(),
        )?;
        drop(catalog);
        let last = Superblock {
            generation: 0,
            page_count: FIRST_DATA_PAGE,
            catalog_root: FIRST_DATA_PAGE,
            db_id,
            redo_lsn: BLOCK,
            checkpoint_lsn: BLOCK,
            segment_bytes,
        };
        let parts = Parts {
            pool,
            log,
            data_file,
            lock,
            allocator,
            last,
            recovery: crate::RecoveryReport::default(),
        };
        let engine = Engine::assemble(parts, path, options);
        // Both copies valid from the start.
        engine.shared.checkpoint_forced()?;
        engine.shared.checkpoint_forced()?;
        Ok(engine)
    }

    fn assemble(parts: Parts, path: &Path, options: &EngineOptions) -> Engine {
        let shared = Shared {
            catalog_root: PageId(parts.last.catalog_root),
            pool: parts.pool,
            path: path.to_path_buf(),
            allocator: parts.allocator,
            trees: DashMap::new(),
            tree_creation: Mutex::new(()),
            log: parts.log,
            durability: options.durability,
            checkpoint_log_bytes: options.checkpoint_log_bytes.max(1 << 20),
            data_file: parts.data_file,
            last_superblock: Mutex::new(parts.last),
            checkpoint_end: AtomicU64::new(0),
            checkpoint_lock: Mutex::new(()),
            closing: AtomicBool::new(false),
            recovery: parts.recovery,
            _file_lock: parts.lock,
        };
        let shared = Arc::new(shared);
        let background = spawn_background(&shared);
        let evictor = spawn_evictor(&shared);
        Engine {
            shared,
            background,
            evictor,
        }
    }

    /// Opens an existing engine file and recovers it from its log. Fails, naming the cause
    /// and writing nothing, if it is missing, not an engine file, of another format version
    /// or page size, truncated, damaged, on a filesystem without O_DIRECT, or if its log is
    /// missing, another database's, older than the file, or damaged before its tail.
    pub fn open(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine, EngineError> {
        let path = path.as_ref().to_path_buf();
        let len = match std::fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(EngineError::NotFound { path });
            }
            // Anything else (permissions, ...) is reported by the direct open below.
            Err(_) => 0,
        };
        let file = DirectFile::open(&path, &OpenOptions::default())?;
        let lock = lock_file(&path)?;
        if len < 2 * PAGE_SIZE as u64 || len % PAGE_SIZE as u64 != 0 {
            return Err(classify_short_file(&path, len));
        }
        let data_file = DirectFile::open(&path, &OpenOptions::default())?;
        let io = IoEngine::new(options.io.clone())?;
        let copies = SUPERBLOCK_PAGES.map(|page| read_superblock(&io, &data_file, page));
        let [first, second] = copies;
        let ((first, first_version), (second, second_version)) = (first?, second?);
        // A copy of an older readable format: both copies are rewritten at this open, so
        // code of that format refuses the file from now on instead of misreading it.
        let upgrade = [(&first, first_version), (&second, second_version)]
            .iter()
            .any(|(copy, version)| copy.is_ok() && *version < superblock::FORMAT_VERSION);
        let mut candidates: Vec<Superblock> = [&first, &second]
            .into_iter()
            .filter_map(|copy| copy.clone().ok())
            .collect();
        candidates.sort_by_key(|copy| std::cmp::Reverse(copy.generation));
        let newest =
            superblock::choose([first, second]).map_err(|problem| describe(problem, &path))?;
        if newest.page_count > len / PAGE_SIZE as u64 {
            return Err(EngineError::Truncated {
                path,
                len,
                expected: newest.page_count * PAGE_SIZE as u64,
            });
        }
        let log_dir = wal::log_dir_of(&path);
        // The newest copy whose checkpoint record the log holds (a damaged newest copy or
        // record falls back to the older checkpoint, whose log is kept).
        let mut chosen = None;
        let mut first_error = None;
        for candidate in candidates {
            let start = recovery::Start {
                db_id: candidate.db_id,
                segment_bytes: candidate.segment_bytes,
                redo_lsn: candidate.redo_lsn,
                checkpoint_lsn: candidate.checkpoint_lsn,
            };
            match recovery::read_checkpoint(&log_dir, &start, &options.io, &path) {
                Ok(body) => {
                    chosen = Some((candidate, start, body));
                    break;
                }
                Err(error) => {
                    tracing::warn!(generation = candidate.generation, %error, "superblock copy unusable");
                    first_error.get_or_insert(error);
                }
            }
        }
        let Some((last, start, checkpoint)) = chosen else {
            return Err(first_error.expect("at least one valid superblock copy"));
        };
        let hooks = Arc::new(ChecksumHooks::new(&path));
        let pool = Pool::open(file, pool_config(&options, Arc::clone(&hooks)))?;
        hooks.set_recovering(true);
        let recovered = recovery::redo(&pool, &hooks, &log_dir, &start, &checkpoint, &options.io)?;
        hooks.set_recovering(false);
        let report = &recovered.report;
        // Closed cleanly: nothing after the checkpoint, nothing torn, the newest copy used.
        // Such an open writes nothing (a read-only use leaves the files as they were).
        let clean = report.pages_applied + report.pages_skipped == 0
            && report.discarded_tail_bytes == 0
            && last.generation == newest.generation
            && !upgrade;
        let resume = recovery::truncate(
            &log_dir,
            start.segment_bytes,
            recovered.end,
            recovered.end + report.discarded_tail_bytes,
            &options.io,
        )?;
        let tree_lens = recovered
            .tree_lens
            .iter()
            .map(|(&root, &len)| (root, Arc::new(AtomicU64::new(len))))
            .collect();
        let log = Arc::new(Log::open(
            &log_dir,
            start.db_id,
            start.segment_bytes,
            resume,
            &options.io,
            tree_lens,
        )?);
        log.adopt_segment(resume / start.segment_bytes)?;
        log.set_image_threshold(start.redo_lsn);
        log.prepare_first_segment();
        log.start_flusher();
        hooks.attach_log(Arc::clone(&log));
        let kind = pool.read(PageId(last.catalog_root), |view| page::kind_of(view))?;
        if !matches!(kind, Some(page::PageKind::Leaf | page::PageKind::Inner)) {
            return Err(EngineError::Corrupted {
                page: last.catalog_root,
                file: path,
                reason: "catalog root is not a tree node".into(),
            });
        }
        let parts = Parts {
            pool,
            log,
            data_file,
            lock,
            allocator: Allocator::with_free(recovered.free),
            last,
            recovery: recovered.report,
        };
        let engine = Engine::assemble(parts, &path, &options);
        engine
            .shared
            .checkpoint_end
            .store(resume, Ordering::Release);
        if !clean {
            // Twice: both superblock copies then start past the recovered end, so neither
            // refers to a log stretch with a discarded tail in it (and both are of this
            // format).
            engine.shared.checkpoint_forced()?;
            engine.shared.checkpoint_forced()?;
        }
        Ok(engine)
    }

    /// The log directory of the database file `path` (`PATH.wal`).
    pub fn log_dir(path: impl AsRef<Path>) -> PathBuf {
        wal::log_dir_of(path.as_ref())
    }

    /// Deletes a database: its file and its log directory (missing ones are fine). The
    /// database must not be open.
    pub fn remove(path: impl AsRef<Path>) -> std::io::Result<()> {
        let path = path.as_ref();
        let ignore_missing = |result: std::io::Result<()>| match result {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        ignore_missing(std::fs::remove_file(path))?;
        ignore_missing(std::fs::remove_dir_all(wal::log_dir_of(path)))
    }

    /// Opens `path` if it exists, creates it otherwise.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        match Engine::open(path.as_ref(), options.clone()) {
            Err(EngineError::NotFound { .. }) => Engine::create(path, options),
            other => other,
        }
    }

    /// Opens the tree `name`, creating it if it does not exist.
    pub fn tree(&self, name: &str) -> Result<Tree, EngineError> {
        catalog::open_tree(&self.shared, name)
    }

    /// Names of all trees, in byte order.
    pub fn tree_names(&self) -> Result<Vec<String>, EngineError> {
        catalog::names(&self.shared)
    }

    /// A checkpoint: bounds recovery time and log space. Writers go on meanwhile. See
    /// [`Shared::checkpoint`].
    pub fn checkpoint(&self) -> Result<(), EngineError> {
        self.shared.checkpoint()
    }

    /// Checkpoints and closes.
    pub fn close(self) -> Result<(), EngineError> {
        let result = self.shared.checkpoint();
        drop(self);
        result
    }

    /// Blocks until the log is durable up to `lsn` (from `Tree::put_nowait` and friends);
    /// concurrent callers share one log write and sync.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        self.shared.log.flush_to(lsn.0, true)
    }

    /// The durable end of the log.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.log.durable())
    }

    /// The log's counters.
    pub fn log_stats(&self) -> crate::LogStats {
        self.shared.log.stats()
    }

    /// What recovery did when this engine was opened.
    pub fn recovery_report(&self) -> crate::RecoveryReport {
        self.shared.recovery.clone()
    }

    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    pub fn pool_stats(&self) -> Stats {
        self.shared.pool.stats()
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Pages in the file, and free ids among them (ready or waiting for readers).
    pub fn page_counts(&self) -> (u64, u64) {
        (
            self.shared.pool.page_count(),
            self.shared.allocator.free_count() as u64,
        )
    }
}

impl Shared {
    /// Makes everything logged so far part of a checkpoint, writers going on meanwhile:
    /// 1. with the log's mutex held, the redo LSN is the log's end; the free list, page
    ///    count and tree counts are snapshotted exactly as of it (and from now on a page's
    ///    next change logs a full image);
    /// 2. every dirty page is written back (each only once the log covers it) and the data
    ///    file fdatasync'd: everything before the redo LSN is now in the file;
    /// 3. a checkpoint record with the snapshot is appended and the log synced to it;
    /// 4. the next superblock copy (redo LSN, record position) is written and synced;
    /// 5. log segments older than the other copy's redo LSN are deleted.
    ///
    /// A failed data or superblock sync makes the engine refuse writes until reopened:
    /// pages it marked clean may not be on disk, and only the log still has them.
    /// Does nothing if nothing was logged since the last checkpoint.
    pub(crate) fn checkpoint(&self) -> Result<(), EngineError> {
        self.checkpoint_if(false)
    }

    pub(crate) fn checkpoint_forced(&self) -> Result<(), EngineError> {
        self.checkpoint_if(true)
    }

    fn checkpoint_if(&self, forced: bool) -> Result<(), EngineError> {
        let _one = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !forced && self.log.end() == self.checkpoint_end.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(reason) = self.log.failure() {
            return Err(EngineError::WritesRefused {
                path: self.path.clone(),
                reason,
            });
        }
        let (redo_lsn, body) = self.log.begin_checkpoint(|inner| {
            let (free, page_count) = self.allocator.snapshot(&self.pool);
            CheckpointBody {
                redo_lsn: 0,
                page_count,
                free: CheckpointBody::ranges_of(&free),
                trees: inner
                    .tree_lens
                    .iter()
                    .map(|(&root, len)| (root, len.load(Ordering::Relaxed)))
                    .collect(),
            }
        });
        let body = CheckpointBody { redo_lsn, ..body };
        if let Err(error) = self.pool.flush() {
            let error = EngineError::from(error);
            if error.is_sync_failure() {
                self.log
                    .fail(format!("data file sync failed at a checkpoint: {error}"));
            }
            return Err(error);
        }
        let mut bytes = Vec::new();
        record::begin(&mut bytes, KIND_CHECKPOINT);
        body.encode(&mut bytes);
        let padded = record::align8(bytes.len()) as u64;
        let end = {
            let mut inner = self.log.lock();
            self.log.append_locked(&mut inner, &mut bytes)?
        };
        let checkpoint_lsn = end - padded;
        self.log.flush_to(end, false)?;
        let mut last = self
            .last_superblock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = Superblock {
            generation: last.generation + 1,
            page_count: body.page_count,
            catalog_root: self.catalog_root.0,
            db_id: last.db_id,
            redo_lsn,
            checkpoint_lsn,
            segment_bytes: last.segment_bytes,
        };
        if let Err(error) = write_superblock(self.pool.io_engine(), &self.data_file, &next) {
            self.log
                .fail(format!("superblock write or sync failed: {error}"));
            return Err(error);
        }
        let older = std::mem::replace(&mut *last, next);
        drop(last);
        self.log
            .counters
            .checkpoints
            .fetch_add(1, Ordering::Relaxed);
        // The older copy stays usable: keep its log.
        self.log.remove_before(older.redo_lsn.min(redo_lsn))
    }

    /// Log bytes written since the newest checkpoint's redo point.
    fn log_since_checkpoint(&self) -> u64 {
        let last = self
            .last_superblock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.log.end().saturating_sub(last.redo_lsn)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Release);
        // Not a checkpoint: what was logged is kept (recovery replays it at the next open).
        if let Err(error) = self.log.flush_to(self.log.end(), false) {
            tracing::warn!(%error, path = %self.path.display(), "log not flushed on drop");
        }
    }
}

/// Background duties of an engine: the periodic log sync of `Durability::Periodic`, and
/// checkpoints by log size. Holds the engine only weakly; it ends when the `Engine` value
/// is dropped (trees that outlive it get neither).
fn spawn_background(shared: &Arc<Shared>) -> Option<std::thread::JoinHandle<()>> {
    let weak = Arc::downgrade(shared);
    let interval = match shared.durability {
        Durability::Periodic(interval) => Some(interval),
        _ => None,
    };
    let tick = interval.map_or(Duration::from_millis(50), |interval| {
        interval.min(Duration::from_millis(50))
    });
    let spawned = std::thread::Builder::new()
        .name("bufpool-engine".into())
        .spawn(move || {
            let mut last_sync = Instant::now();
            loop {
                std::thread::park_timeout(tick);
                let Some(shared) = weak.upgrade() else { return };
                if shared.closing.load(Ordering::Acquire) || shared.log.failure().is_some() {
                    return;
                }
                if interval.is_some_and(|interval| last_sync.elapsed() >= interval) {
                    last_sync = Instant::now();
                    if let Err(error) = shared.log.flush_to(shared.log.end(), false) {
                        tracing::error!(%error, "periodic log sync failed");
                    }
                }
                if shared.log_since_checkpoint() >= shared.checkpoint_log_bytes {
                    if let Err(error) = shared.checkpoint() {
                        tracing::warn!(%error, "automatic checkpoint failed");
                    }
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "no background thread: no periodic sync, no automatic checkpoints");
            None
        }
    }
}

/// Rounds of one `make_room` call before the evictor looks at `closing` again.
const EVICTOR_ROUNDS_PER_WAKE: u32 = 64;

/// The evictor: keeps `Pool::reserve_target` frames free, so that a fault-in usually finds
/// a frame instead of evicting while its caller waits (out of memory, about a fifth of a
/// miss's CPU is eviction: `process_madvise`, `mincore`, TLB shootdowns). It runs at the
/// lowest priority (nice 19), so it takes CPU time mostly when the threads it serves are
/// waiting for the disk; when it falls behind they evict for themselves as before. Pools too
/// small for a reserve get no thread. Holds the engine only weakly, like `spawn_background`.
fn spawn_evictor(shared: &Arc<Shared>) -> Option<std::thread::JoinHandle<()>> {
    if shared.pool.reserve_target() == 0 {
        return None;
    }
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("bufpool-evictor".into())
        .spawn(move || {
            if let Err(error) =
                rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
            {
                tracing::debug!(%error, "evictor left at normal priority");
            }
            // Ends when the engine is dropped or closing; each pass is bounded.
            loop {
                let Some(shared) = weak.upgrade() else { return };
                if shared.closing.load(Ordering::Acquire) {
                    return;
                }
                shared.pool.make_room(EVICTOR_ROUNDS_PER_WAKE);
                drop(shared);
                // Woken by the pool when the reserve runs low; the timeout is a safety net.
                std::thread::park_timeout(Duration::from_millis(100));
            }
        });
    match spawned {
        Ok(handle) => {
            shared.pool.set_evictor(handle.thread().clone());
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "no evictor thread: fault-ins evict for themselves");
            None
        }
    }
}

fn write_superblock(
    io: &IoEngine,
    file: &DirectFile,
    superblock: &Superblock,
) -> Result<(), EngineError> {
    let mut buffer = AlignedBuf::new(PAGE_SIZE);
    superblock.encode(&mut buffer);
    page::stamp_checksum(superblock.page(), &mut buffer);
    io.write_buf(
        file,
        superblock.page() * PAGE_SIZE as u64,
        &buffer,
        0..PAGE_SIZE,
        true,
    )?;
    Ok(())
}

/// An advisory exclusive lock (flock) on the file, held for the engine's life: two engines
/// writing one file would corrupt it.
fn lock_file(path: &Path) -> Result<std::fs::File, EngineError> {
    let lock_error = |source| EngineError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(lock_error)?;
    // The trait's method, named in full: std's own `File::try_lock` is newer than our MSRV.
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(file),
        Err(fs4::TryLockError::WouldBlock) => Err(EngineError::Locked {
            path: path.to_path_buf(),
        }),
        Err(fs4::TryLockError::Error(source)) => Err(lock_error(source)),
    }
}

/// The copy in `page`, decoded, and the format version it says it has.
fn read_superblock(
    io: &IoEngine,
    file: &DirectFile,
    page: u64,
) -> Result<(Result<Superblock, SuperblockProblem>, u32), EngineError> {
    let mut buffer = AlignedBuf::new(PAGE_SIZE);
    io.read_buf(file, page * PAGE_SIZE as u64, &mut buffer, 0..PAGE_SIZE)?;
    Ok((
        Superblock::decode(page, &buffer),
        Superblock::stored_version(&buffer),
    ))
}

fn describe(problem: SuperblockProblem, path: &Path) -> EngineError {
    let path = path.to_path_buf();
    match problem {
        SuperblockProblem::NotOurs => EngineError::NotOurs { path },
        SuperblockProblem::Version { found } => EngineError::UnsupportedFormat {
            path,
            found,
            expected: superblock::FORMAT_VERSION,
        },
        SuperblockProblem::PageSize { found } => EngineError::PageSizeMismatch {
            path,
            found,
            expected: PAGE_SIZE as u32,
        },
        SuperblockProblem::Damaged { reason } => EngineError::Corrupted {
            page: 0,
            file: path,
            reason,
        },
    }
}

/// A file too short for both superblock copies or not made of whole pages: truncated if
/// it starts like an engine file, else not ours. Reads at most two pages with plain I/O
/// (no pool exists for such a file).
fn classify_short_file(path: &PathBuf, len: u64) -> EngineError {
    let mut prefix = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|file| file.take(2 * PAGE_SIZE as u64).read_to_end(&mut prefix));
    if read.is_err() || !superblock::has_magic(&prefix) {
        return EngineError::NotOurs { path: path.clone() };
    }
    let decoded = SUPERBLOCK_PAGES.map(|page| {
        let start = page as usize * PAGE_SIZE;
        prefix
            .get(start..start + PAGE_SIZE)
            .map_or(Err(SuperblockProblem::NotOurs), |bytes| {
                Superblock::decode(page, bytes)
            })
    });
    let expected = superblock::choose(decoded).map_or(2 * PAGE_SIZE as u64, |last| {
        last.page_count * PAGE_SIZE as u64
    });
    EngineError::Truncated {
        path: path.clone(),
        len,
        expected,
    }
}
