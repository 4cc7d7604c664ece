//! State every connection and the executor see: settings (some changeable with CONFIG SET),
//! counters for INFO, and the shutdown signal.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::io_threads::Placement;
use crate::resp::Limits;

/// Redis's names for the durability modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// Reply after the log is synced past the write (Durability::Immediate).
    Always,
    /// Sync at least every second (Durability::Periodic(1 s)).
    Everysec,
    /// No sync until a checkpoint (Durability::None).
    No,
}

impl Fsync {
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
            Fsync::No => "no",
        }
    }

    pub fn durability(self) -> bufpool_engine::Durability {
        match self {
            Fsync::Always => bufpool_engine::Durability::Immediate,
            Fsync::Everysec => {
                bufpool_engine::Durability::Periodic(std::time::Duration::from_secs(1))
            }
            Fsync::No => bufpool_engine::Durability::None,
        }
    }
}

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: IpAddr,
    pub port: u16,
    pub dir: PathBuf,
    pub pool_bytes: u64,
    pub fsync: Fsync,
    pub protected_mode: bool,
}

/// Server-wide state. Invariants: (1) `connected` counts connection tasks alive, each
/// counted once from accept to close; (2) `shutdown` only ever goes from false to true.
pub struct ServerState {
    pub settings: Settings,
    requirepass: RwLock<Option<[u8; 32]>>,
    requirepass_text: RwLock<Option<String>>,
    pub maxclients: AtomicUsize,
    pub bulk_bytes_max: AtomicUsize,
    pub query_buffer_bytes_max: AtomicUsize,
    pub output_buffer_bytes_max: AtomicUsize,
    /// Replies wait for one sync per batch (group commit) rather than one per write.
    pub group_commit: AtomicBool,
    /// The leaves of the keys a batch reads are fetched with one `prefetch_keys` before it runs.
    pub read_prefetch: AtomicBool,
    /// Point reads run on the connection task when safe (see `fast`).
    pub fast_reads: AtomicBool,
    /// The pool missed recently (set by the executor): fast reads are off meanwhile.
    pub pool_missing: AtomicBool,
    /// Reads served on connection tasks, and those that had to go to the executor.
    pub fast_reads_total: AtomicU64,
    pub fast_fallbacks: AtomicU64,
    /// Reads the miss readers answered, their batches, and turns they sent to the executor.
    pub miss_reads: AtomicU64,
    pub miss_read_batches: AtomicU64,
    /// Leaf reads the miss readers started.
    pub miss_read_leaves: AtomicU64,
    pub miss_read_fallbacks: AtomicU64,
    pub connected: AtomicUsize,
    pub next_client_id: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// Connections moved to another connection thread (`io_threads`).
    pub connections_moved: AtomicU64,
    /// Which connection thread keeps how many connections; set once they run.
    pub placement: OnceLock<Arc<Placement>>,
    pub commands_total: AtomicU64,
    pub expired_keys: AtomicU64,
    pub batches_total: AtomicU64,
    pub durable_waits_total: AtomicU64,
    /// Replies released by those waits: their ratio to `durable_waits_total` is the server's
    /// group-commit size (the log's own counter sees one waiter, the syncer, per sync).
    pub durable_replies_total: AtomicU64,
    /// The log position the syncer last saw durable.
    pub synced_lsn: AtomicU64,
    pub last_save_unix_s: AtomicU64,
    pub started: Instant,
    shutdown: watch::Sender<bool>,
}

impl ServerState {
    pub fn new(settings: Settings, requirepass: Option<String>, maxclients: usize) -> ServerState {
        let state = ServerState {
            settings,
            requirepass: RwLock::new(None),
            requirepass_text: RwLock::new(None),
            maxclients: AtomicUsize::new(maxclients),
            bulk_bytes_max: AtomicUsize::new(Limits::default().bulk_bytes_max),
            query_buffer_bytes_max: AtomicUsize::new(64 << 20),
            output_buffer_bytes_max: AtomicUsize::new(256 << 20),
            group_commit: AtomicBool::new(true),
            read_prefetch: AtomicBool::new(true),
            fast_reads: AtomicBool::new(true),
            pool_missing: AtomicBool::new(false),
            fast_reads_total: AtomicU64::new(0),
            fast_fallbacks: AtomicU64::new(0),
            miss_reads: AtomicU64::new(0),
            miss_read_batches: AtomicU64::new(0),
            miss_read_leaves: AtomicU64::new(0),
            miss_read_fallbacks: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            connections_moved: AtomicU64::new(0),
            placement: OnceLock::new(),
            commands_total: AtomicU64::new(0),
            expired_keys: AtomicU64::new(0),
            batches_total: AtomicU64::new(0),
            durable_waits_total: AtomicU64::new(0),
            durable_replies_total: AtomicU64::new(0),
            synced_lsn: AtomicU64::new(0),
            last_save_unix_s: AtomicU64::new(crate::store::now_ms() / 1000),
            started: Instant::now(),
            shutdown: watch::channel(false).0,
        };
        state.set_requirepass(requirepass);
        state
    }

    pub fn limits(&self) -> Limits {
        Limits {
            bulk_bytes_max: self.bulk_bytes_max.load(Ordering::Relaxed),
            ..Limits::default()
        }
    }

    /// Sets (or with `None` or an empty string, clears) the password.
    pub fn set_requirepass(&self, password: Option<String>) {
        let password = password.filter(|text| !text.is_empty());
        let digest = password
            .as_ref()
            .map(|text| Sha256::digest(text.as_bytes()).into());
        *self
            .requirepass
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = digest;
        *self
            .requirepass_text
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = password;
    }

    pub fn requirepass(&self) -> Option<String> {
        self.requirepass_text
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn auth_required(&self) -> bool {
        self.requirepass
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }

    /// Whether `password` is the configured one. Both sides are hashed to 32 bytes and
    /// compared in constant time, so neither the time nor the length leaks.
    pub fn password_matches(&self, password: &[u8]) -> bool {
        let expected = *self
            .requirepass
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(expected) = expected else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(password).into();
        bool::from(given.ct_eq(&expected))
    }

    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
