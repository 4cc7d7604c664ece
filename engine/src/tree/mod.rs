//! The B+-tree: a named tree's handle and its public operations.
//!
//! Layers inside: [`descend`] finds nodes (optimistic lock coupling, latched fallbacks),
//! [`read`] does point lookups, [`write`] inserts, deletes, splits and merges, [`scan`]
//! iterates ranges, [`bulk`] builds a tree from sorted records. The root page of a tree
//! never moves (a root split moves its contents down), so the catalog entry of a tree
//! never changes after creation.

pub(crate) mod bulk;
pub(crate) mod descend;
pub(crate) mod read;
pub(crate) mod scan;
pub(crate) mod verify;
pub(crate) mod visit;
pub(crate) mod write;

use std::ops::{Bound, ControlFlow, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bufpool::PageId;

use crate::EngineError;
use crate::shared::Shared;
pub use read::{LeafReads, NoWait};
pub use scan::{Cursor, RangeIter};
pub use verify::TreeSummary;

use descend::TreeCtx;

/// Scan order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

/// One open tree, shared by all its handles.
#[derive(Debug)]
pub(crate) struct TreeState {
    pub name: String,
    pub root: PageId,
    /// Records in the tree; changed with each logged record (see `wal::commit`).
    pub len: Arc<AtomicU64>,
}

/// A named B+-tree: a cheap handle (`Clone + Send + Sync`).
#[derive(Clone)]
pub struct Tree {
    shared: Arc<Shared>,
    state: Arc<TreeState>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("name", &self.state.name)
            .field("root", &self.state.root)
            .finish()
    }
}

/// A range's bounds as byte slices.
fn key_bounds<'r, K, R>(range: &'r R) -> (Bound<&'r [u8]>, Bound<&'r [u8]>)
where
    K: AsRef<[u8]> + ?Sized + 'r,
    R: RangeBounds<K>,
{
    (
        range.start_bound().map(|key| key.as_ref()),
        range.end_bound().map(|key| key.as_ref()),
    )
}

pub(crate) fn check_key(key: &[u8]) -> Result<(), EngineError> {
    if key.len() > crate::KEY_SIZE_MAX {
        return Err(EngineError::KeyTooLarge {
            len: key.len(),
            max: crate::KEY_SIZE_MAX,
        });
    }
    Ok(())
}

pub(crate) fn check_value(value: &[u8]) -> Result<(), EngineError> {
    if value.len() > crate::VALUE_SIZE_MAX {
        return Err(EngineError::ValueTooLarge {
            len: value.len(),
            max: crate::VALUE_SIZE_MAX,
        });
    }
    Ok(())
}

impl Tree {
    pub(crate) fn new(shared: Arc<Shared>, state: Arc<TreeState>) -> Tree {
        Tree { shared, state }
    }

    fn ctx(&self) -> TreeCtx<'_> {
        TreeCtx {
            shared: &self.shared,
            root: self.state.root,
        }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let mut value = Vec::new();
        Ok(self.get_into(key, &mut value)?.then_some(value))
    }

    /// Copies the value of `key` into `out` (cleared first); `Ok(true)` if found. Does not
    /// allocate once `out` has the capacity.
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, EngineError> {
        check_key(key)?;
        read::get_into(self.ctx(), key, out)
    }

    /// `get_into` that never waits for a latch or the disk: [`NoWait::Ready`] with whether
    /// the key was found (its value in `out`), or what stood in the way. For a thread that
    /// holds leaf reads of its own (`leaf_reads`) others may wait for, or that serves many
    /// clients and must not block on one.
    pub fn try_get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<NoWait<bool>, EngineError> {
        check_key(key)?;
        read::try_get_into(self.ctx(), key, out)
    }

    /// Looks up many keys: first finds every key's leaf and faults all evicted ones in with
    /// one I/O submission (overlapped misses), then reads the values.
    pub fn multi_get(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        keys.iter().try_for_each(|key| check_key(key))?;
        read::multi_get(self.ctx(), keys)
    }

    /// Faults in, with one I/O submission per batch, the leaves of `keys` that are not
    /// resident, without reading any value (a server does this for all the keys a turn's
    /// commands will read, then serves them from memory). Returns the leaves read. A key
    /// whose leaf is evicted again before it is read simply misses then.
    pub fn prefetch_keys(&self, keys: &[&[u8]]) -> Result<usize, EngineError> {
        keys.iter().try_for_each(|key| check_key(key))?;
        read::prefetch_keys(self.ctx(), keys)
    }

    /// A stream of this tree's leaf reads on the calling thread with up to `depth` in
    /// flight, each handed back as soon as it is in: see [`LeafReads`]. The thread must not
    /// look up a key whose leaf it started before `complete` returned that leaf's token (the
    /// lookup would wait for a read only this thread can finish).
    pub fn leaf_reads(&self, depth: u32) -> Result<LeafReads<'_>, EngineError> {
        LeafReads::new(self.ctx(), depth)
    }

    /// Inserts or replaces. Returns once the write is as durable as the engine's
    /// [`crate::Durability`] says.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        let lsn = self.put_nowait(key, value)?;
        self.shared.acknowledge(lsn.0)
    }

    /// `put` that does not wait for the log sync even under `Durability::Immediate`: returns
    /// the write's LSN, for [`crate::Engine::wait_durable`] (a server acknowledging many
    /// writes after one sync).
    pub fn put_nowait(&self, key: &[u8], value: &[u8]) -> Result<crate::Lsn, EngineError> {
        visit::assert_not_visiting("a put");
        check_key(key)?;
        check_value(value)?;
        let (_, lsn) = write::put(self.ctx(), key, value, Vec::new())?;
        Ok(crate::Lsn(lsn))
    }

    /// `delete` without waiting for the log sync; see [`Tree::put_nowait`]. The LSN is 0
    /// if the key was absent (nothing to wait for).
    pub fn delete_nowait(&self, key: &[u8]) -> Result<(bool, crate::Lsn), EngineError> {
        visit::assert_not_visiting("a delete");
        check_key(key)?;
        let (removed, lsn) = write::delete(self.ctx(), key)?;
        Ok((removed, crate::Lsn(lsn)))
    }

    /// Removes `key`; `Ok(true)` if it was present.
    pub fn delete(&self, key: &[u8]) -> Result<bool, EngineError> {
        let (removed, lsn) = self.delete_nowait(key)?;
        self.shared.acknowledge(lsn.0)?;
        Ok(removed)
    }

    /// Visits the records with keys in `range`, in key order or reversed, until `visit`
    /// breaks, with no allocation per record. Key and value are lent from the scan's
    /// private, validated copy of (a window of) each leaf; no latch is held, so `visit` may
    /// write to the tree ([`Tree::scan_latched`] is faster for visitors that do not). Bounds
    /// as for [`Tree::range`]; each leaf is read at one moment, writers running meanwhile are
    /// seen or not per leaf.
    pub fn scan<K, R, F>(
        &self,
        range: R,
        direction: Direction,
        mut visit: F,
    ) -> Result<(), EngineError>
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
        F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    {
        let mut cursor = self.cursor(range, direction);
        // Bounded by the records in the range.
        while let Some((key, value)) = cursor.next_record()? {
            if visit(key, value).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Visits the records with keys in `range`, in key order or reversed, until `visit`
    /// breaks, lending each key and value straight from the leaf's frame under a shared
    /// latch: no copy, no validation, no allocation (the fastest scan). One leaf is latched
    /// at a time; writers wait for it, and running writers are seen or not per leaf.
    ///
    /// While `visit` runs, a latch is held: it must not call into this engine (no writes,
    /// no scans, on any tree); writes and latched scans from inside it panic rather than
    /// wait on their own thread's latch. Use [`Tree::scan`] to write while scanning.
    pub fn scan_latched<K, R, F>(
        &self,
        range: R,
        direction: Direction,
        mut visit: F,
    ) -> Result<(), EngineError>
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
        F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    {
        let (start, end) = key_bounds(&range);
        visit::scan_latched(self.ctx(), start, end, direction, None, &mut visit)
    }

    /// [`Tree::scan_latched`] for a visitor that expects to take about `expected` records:
    /// moving on into an evicted leaf, the scan reads the leaves those records need in one
    /// submission, no more (without the hint it guesses, starting at one leaf and widening).
    pub fn scan_latched_expecting<K, R, F>(
        &self,
        range: R,
        direction: Direction,
        expected: usize,
        mut visit: F,
    ) -> Result<(), EngineError>
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
        F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    {
        let (start, end) = key_bounds(&range);
        visit::scan_latched(
            self.ctx(),
            start,
            end,
            direction,
            Some(expected),
            &mut visit,
        )
    }

    /// A cursor over the records with keys in `range`: [`Cursor::next_record`] lends each
    /// one until the next step, from the cursor's private, validated copy of (a window of)
    /// the leaf; it holds no latch between steps. Bounds as for [`Tree::range`].
    pub fn cursor<K, R>(&self, range: R, direction: Direction) -> Cursor<'_>
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
    {
        let (start, end) = key_bounds(&range);
        Cursor::new(self.ctx(), start, end, direction)
    }

    /// The records with keys in `range`, in key order or reversed, as owned pairs (one
    /// copy of each key and value; [`Tree::scan`] lends them instead). Bounds may be byte
    /// slices, vectors or arrays (`a..b`, `a..=b`, `..b`, `(Bound, Bound)`; for the whole
    /// tree use [`Tree::iter`] or `range::<[u8], _>(.., direction)`). Each step reads one
    /// leaf; writers running meanwhile are seen or not per leaf (no snapshot).
    pub fn range<K, R>(&self, range: R, direction: Direction) -> RangeIter<'_>
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
    {
        let (start, end) = key_bounds(&range);
        RangeIter::new(self.ctx(), start, end, direction)
    }

    /// Every record, in key order.
    pub fn iter(&self) -> RangeIter<'_> {
        RangeIter::new(
            self.ctx(),
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            Direction::Forward,
        )
    }

    /// Checks the tree's structure (node kinds and levels, key order, separators, overflow
    /// chains) and summarizes it. For tests and tools: run it without concurrent writers.
    pub fn verify(&self) -> Result<TreeSummary, EngineError> {
        verify::verify(self.ctx())
    }

    /// Number of records.
    pub fn len(&self) -> Result<u64, EngineError> {
        Ok(self.state.len.load(Ordering::Relaxed))
    }

    pub fn is_empty(&self) -> Result<bool, EngineError> {
        Ok(self.len()? == 0)
    }

    /// Fast path for loading an empty tree: builds packed leaves and inner nodes bottom up
    /// from records in strictly ascending key order, then installs them at the root in
    /// one step. Fails with `UnsortedLoad` (nothing installed) on out-of-order keys, and with
    /// `LoadIntoNonEmpty` if the tree holds records. Returns the number loaded.
    pub fn load_sorted<I, K, V>(&self, records: I) -> Result<u64, EngineError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        visit::assert_not_visiting("a load");
        let (loaded, lsn) = bulk::load_sorted(self.ctx(), records, self.len()?)?;
        self.shared.acknowledge(lsn)?;
        Ok(loaded)
    }
}
