//! Range scans that lend records straight from the leaf, under its shared latch.
//!
//! [`scan_latched`] takes a shared latch on one leaf at a time and calls the visitor with
//! `&[u8]` slices into the latched frame: no copy, no validation (the latch excludes every
//! writer, fault-in and eviction of the page while it is held). It lets the leaf go before
//! it takes the next, so it holds one latch at a time, and finds the next leaf as
//! [`super::scan::Cursor`] does: through the level-1 parent it came down by, if that parent's
//! version is unchanged (its children and separators are then too), else by a descent from
//! the root to the leaf's fence. Either way splits and merges between leaves neither skip
//! nor repeat keys. Overflow values are read into a reusable buffer, under the leaf's latch
//! (the chain cannot be unlinked, so not freed, while the leaf is latched).
//!
//! The visitor runs with a latch held, so it must not call into the engine: a write to a
//! latched leaf would wait for the latch its own thread holds. Writes and nested latched
//! scans from inside the visitor panic instead ([`assert_not_visiting`]). Callers that
//! must write between records, or hold records across steps, use the copying cursor.

use std::cell::Cell;
use std::ops::{Bound, ControlFlow, Range};

use bufpool::{OptimisticGuard, PageId, SharedGuard};

use super::Direction;
use super::descend::{self, Abort, Fences, OPTIMISTIC_ATTEMPTS_MAX, TreeCtx};
use super::scan::{
    Edge, Landing, after_start, before_end, land, neighbour, route, sibling_of, slots,
};
use crate::EngineError;
use crate::node::{self, ValueRef};
use crate::overflow;
use crate::page::PAGE_SIZE;

thread_local! {
    /// This thread runs a latched scan's visitor (a latch is held).
    static VISITING: Cell<bool> = const { Cell::new(false) };
    /// Buffers of the last latched scan on this thread, reused by the next.
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

/// Bytes of the next leaf prefetched while the current one is visited: its header and
/// first slots.
const PREFETCH_NEXT_BYTES: usize = 256;

/// Most leaves faulted in with one submission when a scan moves on into an evicted leaf (it
/// and the next ones under the same parent). A scan told how many records it will take
/// (`Tree::scan_latched_expecting`) reads the leaves those need, at the density of the
/// leaf it leaves; otherwise the window starts at one leaf and doubles with each evicted
/// leaf the scan moves into, as the kernel's readahead does. (A fixed four made YCSB E's
/// scans, 50 records on average, read 1.6 pages each where they visited 1.15.)
const READ_AHEAD_LEAVES: usize = 4;

/// A larger overflow buffer is not kept for the next scan.
const OVERFLOW_KEPT_MAX: usize = 64 * 1024;

/// Panics if this thread is inside a [`scan_latched`] visitor: `what` (a write, a latched
/// scan) could wait for the latch the visitor's own scan holds.
#[inline]
pub(crate) fn assert_not_visiting(what: &str) {
    assert!(
        !VISITING.get(),
        "{what} inside a Tree::scan_latched visitor: the scan holds a leaf latch; \
         use Tree::scan or Tree::cursor to write while scanning"
    );
}

/// Marks this thread as visiting while it lives (also on unwind).
struct Visiting;

impl Visiting {
    fn enter() -> Visiting {
        assert_not_visiting("a latched scan");
        VISITING.set(true);
        Visiting
    }
}

impl Drop for Visiting {
    fn drop(&mut self) {
        VISITING.set(false);
    }
}

/// The scan's growable buffers, kept per thread so that a short scan allocates nothing.
#[derive(Default)]
struct Scratch {
    /// The separators around the current leaf.
    fences: Fences,
    /// The separators around the current leaf's parent.
    parent_fences: Fences,
    /// The key the next leaf is found by (see [`Edge`]).
    position: Vec<u8>,
    /// The value of the record being visited, when it lives on overflow pages.
    overflow: Vec<u8>,
}

struct Walk<'t, 'b> {
    tree: TreeCtx<'t>,
    direction: Direction,
    start: Bound<&'b [u8]>,
    end: Bound<&'b [u8]>,
    /// The level-1 node the current leaf was reached through, and the leaf's index in it.
    parent: Option<(OptimisticGuard<'t>, usize)>,
    /// Leaves the next move into an evicted leaf reads without a hint (1..=`READ_AHEAD_LEAVES`).
    read_ahead: usize,
    /// Records the caller expects to take, if it said; records visited so far; records in
    /// the leaf visited last.
    expected: Option<usize>,
    visited: usize,
    leaf_records: usize,
    scratch: Scratch,
    /// Pinned once an overflow value is met (chains are retired epoch-deferred).
    epoch: Option<crossbeam_epoch::Guard>,
}

/// Visits the records of `start..end` in `direction`, lent from each latched leaf, until
/// `visit` breaks. See the module doc for what `visit` must not do.
pub(crate) fn scan_latched<F>(
    tree: TreeCtx<'_>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    direction: Direction,
    expected: Option<usize>,
    visit: &mut F,
) -> Result<(), EngineError>
where
    F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
{
    let _visiting = Visiting::enter();
    let mut walk = Walk {
        tree,
        direction,
        start,
        end,
        parent: None,
        read_ahead: 1,
        expected,
        visited: 0,
        leaf_records: 0,
        scratch: SCRATCH.take().unwrap_or_default(),
        epoch: None,
    };
    let result = walk.run(visit);
    let mut scratch = walk.scratch;
    if scratch.overflow.capacity() > OVERFLOW_KEPT_MAX {
        scratch.overflow = Vec::new();
    }
    SCRATCH.set(Some(scratch));
    result
}

impl<'t> Walk<'t, '_> {
    fn run<F>(&mut self, visit: &mut F) -> Result<(), EngineError>
    where
        F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    {
        let bound = match self.direction {
            Direction::Forward => self.start,
            Direction::Reverse => self.end,
        };
        let mut edge = match bound {
            Bound::Included(key) | Bound::Excluded(key) => {
                self.scratch.position.clear();
                self.scratch.position.extend_from_slice(key);
                if matches!(bound, Bound::Included(_)) {
                    Edge::Included
                } else {
                    Edge::Excluded
                }
            }
            Bound::Unbounded => Edge::Unbounded,
        };
        let mut leaf = self.seek(edge)?;
        // Each round visits one leaf; bounded by the leaves in the range.
        loop {
            // A leaf found by a descent starts at the position; a sibling is all past it.
            let range = match edge {
                Edge::Unbounded => 0..node::count(&leaf[..]),
                _ => slots(&leaf[..], self.direction, edge, &self.scratch.position),
            };
            if self.visit_leaf(&leaf, range, visit)?.is_break() {
                return Ok(());
            }
            // One latch at a time: this leaf is let go before the next is taken.
            drop(leaf);
            let Some(next) = self.advance() else {
                return Ok(());
            };
            leaf = match self.sibling() {
                Ok(Some(sibling)) => {
                    edge = Edge::Unbounded;
                    sibling
                }
                Ok(None) | Err(Abort::Restart) => {
                    edge = next;
                    self.seek(next)?
                }
                Err(Abort::Failed(error)) => return Err(error),
            };
        }
    }

    /// Visits the slots `range` of the latched `leaf` in scan order; `Break` once the
    /// visitor breaks or a key lies past the range.
    fn visit_leaf<F>(
        &mut self,
        leaf: &SharedGuard<'t>,
        range: Range<usize>,
        visit: &mut F,
    ) -> Result<ControlFlow<()>, EngineError>
    where
        F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    {
        // The lines of the leaf load in parallel, not one miss per record; and the next
        // leaf's first lines while this one is visited.
        for span in node::leaf_spans(&leaf[..], range.clone()) {
            leaf.prefetch(span);
        }
        self.prefetch_sibling();
        self.leaf_records = node::count(&leaf[..]);
        // Counted whole: on a break the scan is over and the count no longer matters.
        self.visited += range.len();
        match self.direction {
            Direction::Forward => {
                for index in range {
                    if self.visit_slot(leaf, index, visit)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            Direction::Reverse => {
                for index in range.rev() {
                    if self.visit_slot(leaf, index, visit)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Prefetches the beginning of the leaf after the current one under the same parent (a
    /// hint: read from the parent unvalidated).
    fn prefetch_sibling(&self) {
        let Some((parent, index)) = &self.parent else {
            return;
        };
        let Some(next) = neighbour(*index, self.direction) else {
            return;
        };
        let child =
            parent.peek(|view| (next <= node::count(view)).then(|| node::child_at(view, next)));
        if let Some(child) = child {
            self.tree
                .shared
                .pool
                .prefetch_page(child, 0..PREFETCH_NEXT_BYTES);
        }
    }

    /// The scan goes on into an evicted leaf: faults it in together with the next ones
    /// under the same parent (the window, `self.read_ahead` in all, one I/O submission)
    /// rather than one blocking read per leaf, and widens the window. A hint: the ids are
    /// only used if the parent validates, and a failed read shows when the leaf itself is
    /// read.
    fn read_ahead(&mut self, parent: &OptimisticGuard<'t>, first: usize) {
        let window = match self.expected {
            Some(expected) => expected
                .saturating_sub(self.visited)
                .div_ceil(self.leaf_records.max(1))
                .clamp(1, READ_AHEAD_LEAVES),
            None => {
                let window = self.read_ahead;
                self.read_ahead = (window * 2).min(READ_AHEAD_LEAVES);
                window
            }
        };
        assert!(
            (1..=READ_AHEAD_LEAVES).contains(&window),
            "read-ahead window {window}"
        );
        if window == 1 {
            // The leaf alone: the fault-in that follows reads it.
            return;
        }
        let mut leaves = [PageId(0); READ_AHEAD_LEAVES];
        let count = parent.peek(|view| {
            let children = 0..=node::count(view);
            let mut count = 0;
            for (slot, index) in leaves.iter_mut().zip(0..window) {
                let child = match self.direction {
                    Direction::Forward => first.checked_add(index),
                    Direction::Reverse => first.checked_sub(index),
                };
                match child {
                    Some(child) if children.contains(&child) => {
                        *slot = node::child_at(view, child);
                        count += 1;
                    }
                    _ => break,
                }
            }
            count
        });
        if parent.validate().is_ok() {
            // Errors surface when the scan reads the leaf; the rest were only a guess.
            let _ = self.tree.shared.pool.prefetch(&leaves[..count]);
        }
    }

    /// Visits slot `index`; `Break` if the visitor breaks or the key lies past the range.
    #[inline]
    fn visit_slot<F>(
        &mut self,
        leaf: &SharedGuard<'t>,
        index: usize,
        visit: &mut F,
    ) -> Result<ControlFlow<()>, EngineError>
    where
        F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    {
        let page: &[u8] = leaf;
        let (offset, len) = node::key_ref(page, index);
        let key = self.entry(leaf, offset, len)?;
        let inside = match self.direction {
            Direction::Forward => before_end(&self.end, key),
            Direction::Reverse => after_start(&self.start, key),
        };
        if !inside {
            return Ok(ControlFlow::Break(()));
        }
        Ok(match node::value_ref(page, index) {
            ValueRef::Inline { offset, len } => visit(key, self.entry(leaf, offset, len)?),
            ValueRef::Overflow { first, len } => {
                if self.epoch.is_none() {
                    self.epoch = Some(crossbeam_epoch::pin());
                }
                let buffer = &mut self.scratch.overflow;
                overflow::read_into(self.tree.shared, first, len, buffer)?;
                visit(key, buffer)
            }
        })
    }

    /// The bytes `offset..offset + len` of the latched leaf (an error if they leave the
    /// page: the leaf is corrupt).
    #[inline]
    fn entry<'g>(
        &self,
        leaf: &'g SharedGuard<'t>,
        offset: usize,
        len: usize,
    ) -> Result<&'g [u8], EngineError> {
        match offset.checked_add(len) {
            Some(end) if end <= PAGE_SIZE => Ok(&leaf[offset..end]),
            _ => Err(self
                .tree
                .shared
                .corrupted(leaf.page_id(), "leaf entry outside its page")),
        }
    }

    /// Sets the position to the fence past the current leaf and returns how a descent
    /// reads from it; `None` if the range has no further leaf.
    fn advance(&mut self) -> Option<Edge> {
        let scratch = &mut self.scratch;
        match self.direction {
            Direction::Forward => {
                let upper = scratch.fences.upper.get()?;
                if !before_end(&self.end, upper) {
                    return None;
                }
                scratch.position.clear();
                scratch.position.extend_from_slice(upper);
                Some(Edge::Included)
            }
            Direction::Reverse => {
                let lower = scratch.fences.lower.get()?;
                let more = match self.start {
                    Bound::Included(first) | Bound::Excluded(first) => first < lower,
                    Bound::Unbounded => true,
                };
                if !more {
                    return None;
                }
                scratch.position.clear();
                scratch.position.extend_from_slice(lower);
                Some(Edge::Excluded)
            }
        }
    }

    /// Latches the leaf that holds the position (as `edge` says), found from the root.
    fn seek(&mut self, edge: Edge) -> Result<SharedGuard<'t>, EngineError> {
        let key = std::mem::take(&mut self.scratch.position);
        let result = self.seek_at(edge, &key);
        self.scratch.position = key;
        result
    }

    fn seek_at(&mut self, edge: Edge, key: &[u8]) -> Result<SharedGuard<'t>, EngineError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
            match self.seek_optimistic(edge, key) {
                Ok(leaf) => return Ok(leaf),
                Err(Abort::Restart) => continue,
                Err(Abort::Failed(error)) => return Err(error),
            }
        }
        self.parent = None;
        let route = route(self.direction, edge, key);
        descend::descend_shared(self.tree, route, Some(&mut self.scratch.fences))
    }

    /// Down to the level-1 node optimistically, then the leaf under it: its version is
    /// taken with lock coupling and the shared latch only if that version is still current.
    fn seek_optimistic(&mut self, edge: Edge, key: &[u8]) -> Result<SharedGuard<'t>, Abort> {
        self.parent = None;
        let route = route(self.direction, edge, key);
        let scratch = &mut self.scratch;
        match land(
            self.tree,
            route,
            &mut scratch.fences,
            &mut scratch.parent_fences,
        )? {
            // The root is the only leaf.
            Landing::Root(root) => self.latch_leaf(root),
            Landing::Under {
                parent,
                index,
                leaf,
            } => {
                let leaf = self.latch_leaf(leaf)?;
                self.parent = Some((parent, index));
                Ok(leaf)
            }
        }
    }

    /// The shared latch on `leaf` if it is still at the version taken, and is a leaf.
    fn latch_leaf(&self, leaf: OptimisticGuard<'t>) -> Result<SharedGuard<'t>, Abort> {
        let leaf = leaf.upgrade_shared()?;
        if !node::is_leaf(&leaf[..]) {
            return Err(descend::not_a_node(self.tree.shared, leaf.page_id()).into());
        }
        Ok(leaf)
    }

    /// Latches the neighbour of the current leaf under the same, unchanged parent; `None`
    /// if there is none (the leaf is the parent's first or last child, or was found under
    /// latches).
    fn sibling(&mut self) -> Result<Option<SharedGuard<'t>>, Abort> {
        let Some((parent, index)) = self.parent.take() else {
            return Ok(None);
        };
        let scratch = &mut self.scratch;
        let sibling = sibling_of(
            &parent,
            index,
            self.direction,
            &mut scratch.fences,
            &scratch.parent_fences,
        )?;
        let Some((child, next)) = sibling else {
            return Ok(None);
        };
        let pool = &self.tree.shared.pool;
        if pool.optimistic_if_resident(child)?.is_none() {
            self.read_ahead(&parent, next);
        }
        let leaf = pool.optimistic(child)?;
        parent.validate()?;
        // Every key of the new leaf is past the old one's fence, so past the position.
        let leaf = self.latch_leaf(leaf)?;
        self.parent = Some((parent, next));
        Ok(Some(leaf))
    }
}
