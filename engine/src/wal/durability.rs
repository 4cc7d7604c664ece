//! What a write's `Ok` promises, and the log's counters.

use std::time::Duration;

/// When a write returns `Ok`, how durable it is. Set per engine
/// ([`crate::EngineOptions::durability`]); `Tree::put_nowait` / `delete_nowait` plus
/// [`crate::Engine::wait_durable`] let a caller choose per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The call returns after the fdatasync of the log that covers it: it survives a
    /// process kill and a power cut. Concurrent writers share one log write and one sync
    /// (group commit). The default.
    #[default]
    Immediate,
    /// The call returns once the write is in the log buffer; a background thread makes the
    /// log durable at least every `interval`. A crash loses at most about that much
    /// (never half an operation, never a corrupted database).
    Periodic(Duration),
    /// No sync until a checkpoint (or until the log buffer fills and is written). A crash
    /// loses what was written since the last durable point; the database stays consistent.
    None,
}

impl Durability {
    /// Parses `immediate`, `periodic` (1 s), `periodic:MS`, `none` (and Redis's names
    /// `always`, `everysec`, `no`).
    pub fn parse(text: &str) -> Option<Durability> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "immediate" | "always" => Some(Durability::Immediate),
            "periodic" | "everysec" => Some(Durability::Periodic(Duration::from_secs(1))),
            "none" | "no" => Some(Durability::None),
            _ => {
                let ms = text.strip_prefix("periodic:")?.parse::<u64>().ok()?;
                (ms > 0).then(|| Durability::Periodic(Duration::from_millis(ms)))
            }
        }
    }

    /// The name `parse` reads back (`periodic:MS` for a non-default interval).
    pub fn name(&self) -> String {
        match self {
            Durability::Immediate => "immediate".into(),
            Durability::Periodic(interval) if *interval == Duration::from_secs(1) => {
                "periodic".into()
            }
            Durability::Periodic(interval) => format!("periodic:{}", interval.as_millis()),
            Durability::None => "none".into(),
        }
    }
}

/// A position in the log: the byte offset just past a record. A write's `Lsn` is durable
/// once [`crate::Engine::durable_lsn`] reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// The log's counters since the engine was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogStats {
    /// Records appended (one per atomic page change: a write, a split, a merge...).
    pub records: u64,
    /// Bytes appended, padding included.
    pub bytes: u64,
    /// Full page images logged (first change of a page after a checkpoint, new pages).
    pub page_images: u64,
    /// Log writes (each one submission) and fdatasyncs of the log.
    pub writes: u64,
    pub syncs: u64,
    /// Commits that waited for a sync, and how many syncs served them: their ratio is the
    /// average group-commit size.
    pub durable_waits: u64,
    /// Durable end of the log.
    pub durable_lsn: u64,
    /// End of the log (appended, maybe not yet durable).
    pub end_lsn: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Old-chain pages that could not be freed (I/O error while reading the chain): they
    /// stay allocated; no sweep reclaims them yet.
    pub leaked_pages: u64,
    /// Segments zero-filled ahead of need (their syncs are cache flushes only), and
    /// segments the append path had to create itself (fallocated: slower syncs).
    pub segments_prepared: u64,
    pub segments_unprepared: u64,
}

impl LogStats {
    /// Average writers served per log sync (0 if none).
    pub fn group_commit_average(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.durable_waits as f64 / self.syncs as f64
        }
    }
}

/// What recovery did when the engine was opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryReport {
    /// Records replayed and their bytes.
    pub records: u64,
    pub bytes: u64,
    /// Page changes applied (skipped ones were already on disk).
    pub pages_applied: u64,
    pub pages_skipped: u64,
    /// Bytes at the tail discarded as torn or incomplete.
    pub discarded_tail_bytes: u64,
    /// Wall time of the replay.
    pub duration: std::time::Duration,
}
