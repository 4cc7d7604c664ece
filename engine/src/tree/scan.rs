//! Range scans in both directions, without an allocation per record.
//!
//! A [`Cursor`] reads one leaf at a time into a private page buffer: the entries it is about
//! to lend are copied through the page view and only then validated, so the keys and values
//! it lends out (`&[u8]` into that buffer) cannot change underneath. It copies a window of
//! entries at a time ([`WINDOW_FIRST`], doubling), so a short scan does not pay for the
//! whole leaf; the next window of the same leaf is valid if the leaf's version is still the
//! one the first was read at (else the cursor reads on from the last key it lent). Overflow
//! values are read into a second reusable buffer. [`Tree::scan`](super::Tree::scan) is a visitor over a
//! cursor; [`RangeIter`] copies each record out for those who want owned pairs.
//!
//! Moving on from a leaf: the cursor keeps the level-1 node it came through as an
//! optimistic guard and the index of the leaf in it. If that parent's version is unchanged,
//! its children and separators are too, and so is its own key range (a node's range only
//! changes by a split or merge that latches it, and every latch release bumps the version),
//! so the next child in scan order, taken with lock coupling (the parent validated again
//! after the child's version was taken), is the leaf that holds the keys right after the
//! current one. Otherwise, or at the parent's first or last child, it descends from the root
//! to the leaf's fence (the separators around the leaf, recorded on the way down): forward
//! to "keys >= upper fence", reverse to "keys < lower fence". Either way, splits and merges
//! between steps neither skip nor repeat keys.

use std::ops::{Bound, Range};

use bufpool::{OptimisticGuard, PageId};

use super::Direction;
use super::descend::{self, Abort, Fences, OPTIMISTIC_ATTEMPTS_MAX, Route, TreeCtx};
use crate::EngineError;
use crate::node::{self, ValueRef};
use crate::overflow;
use crate::page::{PAGE_SIZE, PageBytes};

/// Entries in the first window copied from a leaf; each further window of the same leaf is
/// twice as large.
pub(crate) const WINDOW_FIRST: usize = 16;

/// Where a leaf read starts, with the key in `Cursor::position`: forward, the lowest key
/// wanted; reverse, the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    Unbounded,
    Included,
    Excluded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No leaf read yet.
    Start,
    /// Lending records of the leaf in `page`.
    Leaf,
    /// The range is done (or an error ended the scan).
    Done,
}

/// A record found in the leaf copy: ranges into `page`, the value perhaps in `overflow`.
enum Found {
    Inline {
        key: Range<usize>,
        value: Range<usize>,
    },
    Overflow {
        key: Range<usize>,
    },
}

/// A position in a range scan that lends each record (`&[u8]` into its own buffers) until
/// the next step. Allocates its buffers once; no allocation per record or per leaf once
/// they have grown to the largest key and value met.
pub struct Cursor<'t> {
    tree: TreeCtx<'t>,
    direction: Direction,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    state: State,
    /// The validated copy of the current leaf (a window of it).
    page: Box<[u8]>,
    leaf_id: PageId,
    /// Slots of the leaf in range and not yet copied, and the size of their next window.
    remaining: Range<usize>,
    window_len: usize,
    /// Slots copied into `page` and not yet lent: forward taken from the front, reverse
    /// from the back.
    window: Range<usize>,
    /// The current leaf's guard, to check later that the copy is still current (`None`:
    /// read under a latch).
    leaf: Option<OptimisticGuard<'t>>,
    /// The level-1 node the leaf was reached through, and the leaf's index in it.
    parent: Option<(OptimisticGuard<'t>, usize)>,
    parent_fences: Fences,
    /// The separators around the current leaf.
    fences: Fences,
    /// The key of the next leaf read (see [`Edge`]).
    position: Vec<u8>,
    /// The value of the last record lent, when it lives on overflow pages.
    overflow: Vec<u8>,
}

fn owned(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    bound.map(<[u8]>::to_vec)
}

/// Whether `key` is at or below the end bound.
#[inline]
pub(crate) fn before_end<K: AsRef<[u8]>>(end: &Bound<K>, key: &[u8]) -> bool {
    match end {
        Bound::Included(last) => key <= last.as_ref(),
        Bound::Excluded(limit) => key < limit.as_ref(),
        Bound::Unbounded => true,
    }
}

/// Whether `key` is at or above the start bound.
#[inline]
pub(crate) fn after_start<K: AsRef<[u8]>>(start: &Bound<K>, key: &[u8]) -> bool {
    match start {
        Bound::Included(first) => key >= first.as_ref(),
        Bound::Excluded(limit) => key > limit.as_ref(),
        Bound::Unbounded => true,
    }
}

pub(crate) fn route(direction: Direction, edge: Edge, key: &[u8]) -> Route<'_> {
    match (direction, edge) {
        (Direction::Forward, Edge::Unbounded) => Route::Key(&[]),
        (Direction::Forward, _) => Route::Key(key),
        (Direction::Reverse, Edge::Unbounded) => Route::Last,
        (Direction::Reverse, Edge::Included) => Route::Key(key),
        (Direction::Reverse, Edge::Excluded) => Route::Before(key),
    }
}

/// Where an optimistic seek lands: the root, when it is the only leaf, or a leaf whose
/// version was taken under its level-1 parent (lock coupling: the parent was validated
/// after it).
pub(crate) enum Landing<'t> {
    Root(OptimisticGuard<'t>),
    Under {
        parent: OptimisticGuard<'t>,
        index: usize,
        leaf: OptimisticGuard<'t>,
    },
}

/// Descends optimistically toward `route` to the leaf, recording the level-1 node's fences
/// in `parent_fences` and the leaf's in `fences`. Shared by the copying cursor and the
/// latched visitor.
pub(crate) fn land<'t>(
    tree: TreeCtx<'t>,
    route: Route<'_>,
    fences: &mut Fences,
    parent_fences: &mut Fences,
) -> Result<Landing<'t>, Abort> {
    let node = descend::descend(tree, route, 1, Some(&mut *parent_fences))?;
    let child = node.peek(|view| {
        fences.copy_from(parent_fences);
        if node::is_leaf(view) {
            return None;
        }
        let index = route.index(view);
        fences.record(view, index);
        Some((node::child_at(view, index), index))
    });
    node.validate()?;
    let Some((child, index)) = child else {
        return Ok(Landing::Root(node));
    };
    let leaf = tree.shared.pool.optimistic(child)?;
    node.validate()?;
    Ok(Landing::Under {
        parent: node,
        index,
        leaf,
    })
}

/// The index of the child after `index` in `direction` (`None` before the first); whether
/// the parent has it is the caller's to check.
pub(crate) fn neighbour(index: usize, direction: Direction) -> Option<usize> {
    match direction {
        Direction::Forward => index.checked_add(1),
        Direction::Reverse => index.checked_sub(1),
    }
}

/// The neighbour in `direction` of child `index` of `parent` (validated), with its fences
/// recorded in `fences`; `None` at the parent's first or last child.
pub(crate) fn sibling_of(
    parent: &OptimisticGuard<'_>,
    index: usize,
    direction: Direction,
    fences: &mut Fences,
    parent_fences: &Fences,
) -> Result<Option<(PageId, usize)>, Abort> {
    let Some(next) = neighbour(index, direction) else {
        return Ok(None);
    };
    let child = parent.peek(|view| {
        (next <= node::count(view)).then(|| {
            fences.copy_from(parent_fences);
            fences.record(view, next);
            node::child_at(view, next)
        })
    });
    parent.validate()?;
    Ok(child.map(|child| (child, next)))
}

/// The slots of a leaf that lie at or past the position.
pub(crate) fn slots<P: PageBytes + ?Sized>(
    page: &P,
    direction: Direction,
    edge: Edge,
    key: &[u8],
) -> Range<usize> {
    let count = node::count(page);
    if edge == Edge::Unbounded {
        return 0..count;
    }
    let (index, found) = node::lower_bound(page, key);
    match (direction, edge) {
        (Direction::Forward, Edge::Excluded) if found => index + 1..count,
        (Direction::Forward, _) => index..count,
        (Direction::Reverse, Edge::Included) if found => 0..index + 1,
        (Direction::Reverse, _) => 0..index,
    }
}

impl<'t> Cursor<'t> {
    pub(crate) fn new(
        tree: TreeCtx<'t>,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
    ) -> Cursor<'t> {
        Cursor {
            tree,
            direction,
            start: owned(start),
            end: owned(end),
            state: State::Start,
            page: vec![0; PAGE_SIZE].into_boxed_slice(),
            leaf_id: tree.root,
            remaining: 0..0,
            window_len: WINDOW_FIRST,
            window: 0..0,
            leaf: None,
            parent: None,
            parent_fences: Fences::default(),
            fences: Fences::default(),
            position: Vec::new(),
            overflow: Vec::new(),
        }
    }

    /// The next record in scan order, lent until the next call; `None` at the end of the
    /// range. After an error the cursor is at its end.
    #[allow(clippy::type_complexity)]
    pub fn next_record(&mut self) -> Result<Option<(&[u8], &[u8])>, EngineError> {
        match self.find() {
            Ok(Some(Found::Inline { key, value })) => {
                let page = &self.page[..];
                Ok(Some((&page[key], &page[value])))
            }
            Ok(Some(Found::Overflow { key })) => Ok(Some((&self.page[key], &self.overflow))),
            Ok(None) => {
                self.state = State::Done;
                Ok(None)
            }
            Err(error) => {
                self.state = State::Done;
                Err(error)
            }
        }
    }

    fn find(&mut self) -> Result<Option<Found>, EngineError> {
        match self.state {
            State::Done => return Ok(None),
            State::Leaf => {}
            State::Start => {
                let bound = match self.direction {
                    Direction::Forward => &self.start,
                    Direction::Reverse => &self.end,
                };
                let edge = match bound {
                    Bound::Included(key) | Bound::Excluded(key) => {
                        self.position.clear();
                        self.position.extend_from_slice(key);
                        if matches!(bound, Bound::Included(_)) {
                            Edge::Included
                        } else {
                            Edge::Excluded
                        }
                    }
                    Bound::Unbounded => Edge::Unbounded,
                };
                self.seek(edge)?;
                self.state = State::Leaf;
            }
        }
        // Pinned once an overflow value is met, until it is read: its chain must not be
        // reused meanwhile. A chain is safe to read if the leaf naming it is validated (or
        // latched) while pinned: it was not yet unlinked, so not yet freed, when pinned.
        let mut epoch: Option<crossbeam_epoch::Guard> = None;
        // The leaf copy was validated while `epoch` was pinned.
        let mut copied_pinned = false;
        // Each round lends a record, moves to the next leaf or re-reads this one pinned;
        // bounded by the leaves in the range.
        loop {
            let next = match self.direction {
                Direction::Forward => self.window.clone().next(),
                Direction::Reverse => self.window.clone().next_back(),
            };
            let Some(index) = next else {
                if self.remaining.is_empty() {
                    if !self.next_leaf()? {
                        return Ok(None);
                    }
                } else {
                    self.next_window()?;
                }
                copied_pinned = epoch.is_some();
                continue;
            };
            let page = &self.page[..];
            let (offset, len) = node::key_ref(page, index);
            let key = self.checked(offset, len)?;
            let inside = match self.direction {
                Direction::Forward => before_end(&self.end, &page[key.clone()]),
                Direction::Reverse => after_start(&self.start, &page[key.clone()]),
            };
            if !inside {
                return Ok(None);
            }
            match node::value_ref(page, index) {
                ValueRef::Inline { offset, len } => {
                    let value = self.checked(offset, len)?;
                    self.consume();
                    return Ok(Some(Found::Inline { key, value }));
                }
                ValueRef::Overflow { first, len } => {
                    if epoch.is_none() {
                        epoch = Some(crossbeam_epoch::pin());
                    }
                    let current = self
                        .leaf
                        .as_ref()
                        .is_some_and(|leaf| leaf.validate().is_ok());
                    if copied_pinned || current {
                        overflow::read_into(self.tree.shared, first, len, &mut self.overflow)?;
                        self.consume();
                        return Ok(Some(Found::Overflow { key }));
                    }
                    // The leaf changed since it was copied (or was read under a latch, now
                    // let go): read it again from this key, pinned.
                    self.position.clear();
                    self.position.extend_from_slice(&self.page[key]);
                    self.seek(Edge::Included)?;
                    copied_pinned = true;
                }
            }
        }
    }

    /// `offset..offset + len` if it lies in the page (else the leaf is corrupt: a
    /// validated copy is a well-formed node).
    fn checked(&self, offset: usize, len: usize) -> Result<Range<usize>, EngineError> {
        match offset.checked_add(len) {
            Some(end) if end <= PAGE_SIZE => Ok(offset..end),
            _ => Err(self
                .tree
                .shared
                .corrupted(self.leaf_id, "leaf entry outside its page")),
        }
    }

    fn consume(&mut self) {
        match self.direction {
            Direction::Forward => self.window.start += 1,
            Direction::Reverse => self.window.end -= 1,
        }
    }

    /// Copies the next window of `remaining` from `view` into `page`.
    fn copy_window<P: PageBytes + ?Sized>(&mut self, view: &P) {
        let Range { start, end } = self.remaining;
        let len = self.window_len.min(end - start);
        self.window = match self.direction {
            Direction::Forward => start..start + len,
            Direction::Reverse => end - len..end,
        };
        node::copy_leaf_slots(view, self.window.clone(), &mut self.page);
        match self.direction {
            Direction::Forward => self.remaining.start += len,
            Direction::Reverse => self.remaining.end -= len,
        }
        self.window_len = self.window_len.saturating_mul(2);
    }

    /// Copies the next window of the current leaf; if the leaf changed since it was first
    /// read, reads on from the last key lent instead.
    fn next_window(&mut self) -> Result<(), EngineError> {
        // The key lent last (all of the window was lent), kept before the copy overwrites
        // it: where to read on from if the leaf changed.
        let last = match self.direction {
            Direction::Forward => self.window.start - 1,
            Direction::Reverse => self.window.end,
        };
        let (offset, len) = node::key_ref(&self.page[..], last);
        let key = self.checked(offset, len)?;
        self.position.clear();
        self.position.extend_from_slice(&self.page[key]);
        if let Some(leaf) = self.leaf.take() {
            leaf.peek(|view| self.copy_window(view));
            if leaf.validate().is_ok() {
                self.leaf = Some(leaf);
                return Ok(());
            }
        }
        self.seek(Edge::Excluded)
    }

    /// Reads the leaf that holds `position` (as `edge` says) by a descent from the root.
    fn seek(&mut self, edge: Edge) -> Result<(), EngineError> {
        let key = std::mem::take(&mut self.position);
        let result = self.seek_at(edge, &key);
        self.position = key;
        result
    }

    fn seek_at(&mut self, edge: Edge, key: &[u8]) -> Result<(), EngineError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
            match self.seek_optimistic(edge, key) {
                Ok(()) => return Ok(()),
                Err(Abort::Restart) => continue,
                Err(Abort::Failed(error)) => return Err(error),
            }
        }
        self.leaf = None;
        self.parent = None;
        let route = route(self.direction, edge, key);
        let leaf = descend::descend_shared(self.tree, route, Some(&mut self.fences))?;
        // Latched: all of the leaf in one window (there is no version to check later).
        self.window = slots(&leaf[..], self.direction, edge, key);
        self.remaining = 0..0;
        self.leaf_id = leaf.page_id();
        self.page.copy_from_slice(&leaf[..]);
        Ok(())
    }

    fn seek_optimistic(&mut self, edge: Edge, key: &[u8]) -> Result<(), Abort> {
        self.leaf = None;
        self.parent = None;
        let route = route(self.direction, edge, key);
        let from = Some((edge, key));
        match land(self.tree, route, &mut self.fences, &mut self.parent_fences)? {
            Landing::Root(root) => self.read_leaf(root, from)?,
            Landing::Under {
                parent,
                index,
                leaf,
            } => {
                self.read_leaf(leaf, from)?;
                self.parent = Some((parent, index));
            }
        }
        Ok(())
    }

    /// Reads `leaf` from the position `from` (`None`: all of it): copies the first window
    /// of its slots in range into `page` and validates.
    fn read_leaf(
        &mut self,
        leaf: OptimisticGuard<'t>,
        from: Option<(Edge, &[u8])>,
    ) -> Result<(), Abort> {
        let direction = self.direction;
        leaf.peek(|view| {
            self.remaining = match from {
                Some((edge, key)) => slots(view, direction, edge, key),
                None => 0..node::count(view),
            };
            self.window_len = WINDOW_FIRST;
            self.copy_window(view);
        });
        leaf.validate()?;
        self.leaf_id = leaf.page_id();
        if !node::is_leaf(&self.page[..]) {
            return Err(descend::not_a_node(self.tree.shared, leaf.page_id()).into());
        }
        self.leaf = Some(leaf);
        Ok(())
    }

    /// Reads the next leaf in scan order; `false` if the range has no further leaf.
    fn next_leaf(&mut self) -> Result<bool, EngineError> {
        // One latch at a time: the current leaf is let go before the next is taken.
        let edge = match self.direction {
            Direction::Forward => {
                let Some(upper) = self.fences.upper.get() else {
                    return Ok(false);
                };
                if !before_end(&self.end, upper) {
                    return Ok(false);
                }
                self.position.clear();
                self.position.extend_from_slice(upper);
                Edge::Included
            }
            Direction::Reverse => {
                let Some(lower) = self.fences.lower.get() else {
                    return Ok(false);
                };
                let more = match &self.start {
                    Bound::Included(first) | Bound::Excluded(first) => first.as_slice() < lower,
                    Bound::Unbounded => true,
                };
                if !more {
                    return Ok(false);
                }
                self.position.clear();
                self.position.extend_from_slice(lower);
                Edge::Excluded
            }
        };
        match self.sibling() {
            Ok(true) => return Ok(true),
            Ok(false) | Err(Abort::Restart) => {}
            Err(Abort::Failed(error)) => return Err(error),
        }
        self.seek(edge)?;
        Ok(true)
    }

    /// Reads the neighbour of the current leaf under the same, unchanged parent; `false` if
    /// there is none (the leaf is the parent's first or last child, or was read latched).
    fn sibling(&mut self) -> Result<bool, Abort> {
        let Some((parent, index)) = self.parent.take() else {
            return Ok(false);
        };
        self.leaf = None;
        let sibling = sibling_of(
            &parent,
            index,
            self.direction,
            &mut self.fences,
            &self.parent_fences,
        )?;
        let Some((child, next)) = sibling else {
            return Ok(false);
        };
        let leaf = self.tree.shared.pool.optimistic(child)?;
        parent.validate()?;
        // Every key of the new leaf is past the old one's fence, so past the position.
        self.read_leaf(leaf, None)?;
        self.parent = Some((parent, next));
        Ok(true)
    }
}

/// Iterator over owned `(key, value)` records of a range, on top of a [`Cursor`] (one copy
/// of each key and value). Stops after the first error.
pub struct RangeIter<'t> {
    cursor: Cursor<'t>,
}

impl<'t> RangeIter<'t> {
    pub(crate) fn new(
        tree: TreeCtx<'t>,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
    ) -> RangeIter<'t> {
        RangeIter {
            cursor: Cursor::new(tree, start, end, direction),
        }
    }
}

impl Iterator for RangeIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.cursor.next_record() {
            Ok(Some((key, value))) => Some(Ok((key.to_vec(), value.to_vec()))),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }
}
