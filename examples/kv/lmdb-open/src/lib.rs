//! Opens the LMDB environment of the `kv` bench peer.
//!
//! heed marks `EnvOpenOptions::open` and `EnvOpenOptions::flags` as `unsafe` (a memory map of a
//! file that something else could modify, and flags that weaken durability). `kv` itself is
//! `#![forbid(unsafe_code)]`, so the obligation is discharged here, in one function.

use std::path::Path;

use heed::{Env, EnvFlags, EnvOpenOptions, WithTls};

/// The settings the `kv` bench opens LMDB with, as its expert users would for a
/// random-lookup benchmark (see `store/lmdb.rs` in `kv` for the why of each).
#[derive(Debug, Clone, Copy)]
pub struct LmdbSettings {
    /// Virtual size of the memory map; must exceed the data file.
    pub map_size_bytes: usize,
    /// Reader slots; one per concurrent read transaction.
    pub max_readers: u32,
    /// Named databases (the data and the data set's description).
    pub max_dbs: u32,
    /// `MDB_NORDAHEAD`: without it random lookups out of memory read 128 KiB per miss.
    pub no_read_ahead: bool,
    /// `MDB_NOSYNC`: commits do not fsync (the bench syncs once after loading).
    pub no_sync: bool,
}

/// Opens (creating if needed) the LMDB environment in the single file `path`
/// (`MDB_NOSUBDIR`). Read transactions use thread-local reader slots (no `MDB_NOTLS`): each
/// thread keeps its slot between transactions, so beginning one takes no lock.
pub fn open_env(path: &Path, settings: LmdbSettings) -> heed::Result<Env<WithTls>> {
    let mut options = EnvOpenOptions::new();
    options
        .map_size(settings.map_size_bytes)
        .max_readers(settings.max_readers)
        .max_dbs(settings.max_dbs);
    let mut flags = EnvFlags::NO_SUB_DIR;
    if settings.no_read_ahead {
        flags |= EnvFlags::NO_READ_AHEAD;
    }
    if settings.no_sync {
        flags |= EnvFlags::NO_SYNC;
    }
    // SAFETY: `flags` is unsafe because NO_SYNC lets a crash lose or corrupt the last commits;
    // the bench data set is disposable and `kv` calls `force_sync` after loading.
    unsafe {
        options.flags(flags);
    }
    // SAFETY: the map is only unsound if the file is modified behind LMDB's back (truncated or
    // written by something other than LMDB). `kv` opens each path once per process, writes it
    // only through this environment, and LMDB's lock file coordinates other processes.
    unsafe { options.open(path) }
}
