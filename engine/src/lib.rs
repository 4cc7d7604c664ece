//! bufpool-engine: what a storage service embeds on the bufpool buffer pool.
//!
//! An engine file holds named B+-trees with variable-length keys and values. Pages carry a
//! CRC32C checksum (stamped on write-back, verified on fault-in) and a reserved LSN; the
//! superblock is kept in two alternating copies; freed pages are reused once no optimistic
//! reader can still see them. Lookups use optimistic lock coupling on the pool's page
//! versions; writers latch only the leaf, and parent and node for a split or merge.
//!
//! Layers, top down: `engine` (open/create/checkpoint) and `catalog` (named trees) →
//! `tree` (the B+-tree) → `node` (slotted node layout), `overflow` (large values),
//! `allocator` (free list) → `page` (header, checksum) and `superblock`.
#![forbid(unsafe_code)]

mod allocator;
mod catalog;
mod engine;
mod error;
mod node;
mod overflow;
mod page;
mod page_view;
mod shared;
mod superblock;
mod tree;
mod wal;

pub use catalog::TREE_NAME_MAX;
pub use engine::{Engine, EngineOptions};
pub use error::EngineError;
pub use node::KEY_SIZE_MAX;
pub use superblock::FORMAT_VERSION;
pub use tree::{Cursor, Direction, LeafReads, NoWait, RangeIter, Tree, TreeSummary};
pub use wal::{Durability, LogStats, Lsn, RecoveryReport};

/// Largest value. Values longer than `node::INLINE_PAYLOAD_MAX` minus their key live on
/// overflow pages.
pub const VALUE_SIZE_MAX: usize = 1 << 20;
const _: () = assert!(KEY_SIZE_MAX >= 1024 && VALUE_SIZE_MAX >= 16 * 1024);

/// Engines and trees are shared between threads.
const _: fn() = || {
    fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<Engine>();
    shared_between_threads::<Tree>();
};
