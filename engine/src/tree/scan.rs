//! Range scans in both directions.
//!
//! A scan reads one leaf at a time: it descends to the leaf for its current position
//! (recording the separators around it: the leaf's fences), copies the leaf's entries in
//! range out through the page view, validates, and then moves its position to the fence:
//! forward to "keys >= upper fence", reverse to "keys < lower fence". Each step re-descends
//! from the root, so splits and merges between steps neither skip nor repeat keys.

use std::collections::VecDeque;
use std::ops::{Bound, Range};

use bufpool::PageId;

use super::Direction;
use super::descend::{self, Abort, Fences, OPTIMISTIC_ATTEMPTS_MAX, Route, TreeCtx};
use crate::EngineError;
use crate::node::{self, ValueRef};
use crate::overflow;
use crate::page::PageBytes;

/// Iterator over `(key, value)` records of a range. Stops after the first error.
pub struct RangeIter<'t> {
    tree: TreeCtx<'t>,
    direction: Direction,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// Where the next leaf read starts: forward, its lower bound; reverse, its upper bound.
    /// `None`: no further leaf.
    position: Option<Bound<Vec<u8>>>,
    ready: VecDeque<(Vec<u8>, Vec<u8>)>,
    leaf: LeafCopy,
    fences: Fences,
}

/// Entries copied out of one leaf: bytes in `arena`, unvalidated until the read validates.
#[derive(Default)]
struct LeafCopy {
    arena: Vec<u8>,
    entries: Vec<(Range<usize>, Stored)>,
}

#[derive(Clone)]
enum Stored {
    Arena(Range<usize>),
    Overflow { first: PageId, len: usize },
}

impl LeafCopy {
    fn fill<P: PageBytes + ?Sized>(&mut self, page: &P, slots: Range<usize>) {
        self.arena.clear();
        self.entries.clear();
        let mut key = Vec::new();
        for index in slots {
            node::copy_key(page, index, &mut key);
            let key_range = self.push(&key);
            let stored = match node::value_ref(page, index) {
                ValueRef::Inline { offset, len } => {
                    let at = self.arena.len();
                    self.arena.resize(at + len, 0);
                    page.copy_to(offset, &mut self.arena[at..]);
                    Stored::Arena(at..at + len)
                }
                ValueRef::Overflow { first, len } => Stored::Overflow { first, len },
            };
            self.entries.push((key_range, stored));
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Range<usize> {
        let at = self.arena.len();
        self.arena.extend_from_slice(bytes);
        at..at + bytes.len()
    }
}

fn owned(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(key) => Bound::Included(key.to_vec()),
        Bound::Excluded(key) => Bound::Excluded(key.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn key_of(bound: &Bound<Vec<u8>>) -> &[u8] {
    match bound {
        Bound::Included(key) | Bound::Excluded(key) => key,
        Bound::Unbounded => &[],
    }
}

/// Whether `key` is at or below the end bound.
fn before_end(end: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match end {
        Bound::Included(last) => key <= last.as_slice(),
        Bound::Excluded(limit) => key < limit.as_slice(),
        Bound::Unbounded => true,
    }
}

/// Whether `key` is at or above the start bound.
fn after_start(start: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match start {
        Bound::Included(first) => key >= first.as_slice(),
        Bound::Excluded(limit) => key > limit.as_slice(),
        Bound::Unbounded => true,
    }
}

impl<'t> RangeIter<'t> {
    pub(crate) fn new(
        tree: TreeCtx<'t>,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
    ) -> RangeIter<'t> {
        let (start, end) = (owned(start), owned(end));
        let position = Some(match direction {
            Direction::Forward => start.clone(),
            Direction::Reverse => end.clone(),
        });
        RangeIter {
            tree,
            direction,
            start,
            end,
            position,
            ready: VecDeque::new(),
            leaf: LeafCopy::default(),
            fences: Fences::default(),
        }
    }

    /// The slots of a leaf that lie at or past the position.
    fn slots<P: PageBytes + ?Sized>(&self, page: &P, position: &Bound<Vec<u8>>) -> Range<usize> {
        let count = node::count(page);
        let (index, found) = node::lower_bound(page, key_of(position));
        match (self.direction, position) {
            (Direction::Forward, Bound::Excluded(_)) if found => index + 1..count,
            (Direction::Forward, _) => index..count,
            (Direction::Reverse, Bound::Unbounded) => 0..count,
            (Direction::Reverse, Bound::Included(_)) if found => 0..index + 1,
            (Direction::Reverse, _) => 0..index,
        }
    }

    fn route<'k>(&self, position: &'k Bound<Vec<u8>>) -> Route<'k> {
        match (self.direction, position) {
            (Direction::Forward, position) => Route::Key(key_of(position)),
            (Direction::Reverse, Bound::Unbounded) => Route::Last,
            (Direction::Reverse, Bound::Included(key)) => Route::Key(key),
            (Direction::Reverse, Bound::Excluded(key)) => Route::Before(key),
        }
    }

    fn read_optimistic(&mut self, position: &Bound<Vec<u8>>) -> Result<(), Abort> {
        let route = self.route(position);
        let leaf = descend::descend(self.tree, route, 0, Some(&mut self.fences))?;
        let mut copy = std::mem::take(&mut self.leaf);
        leaf.peek(|view| {
            let slots = self.slots(view, position);
            copy.fill(view, slots);
        });
        self.leaf = copy;
        leaf.validate()?;
        Ok(())
    }

    fn read_leaf(&mut self, position: &Bound<Vec<u8>>) -> Result<(), EngineError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
            match self.read_optimistic(position) {
                Ok(()) => return Ok(()),
                Err(Abort::Restart) => continue,
                Err(Abort::Failed(error)) => return Err(error),
            }
        }
        let leaf =
            descend::descend_shared(self.tree, self.route(position), Some(&mut self.fences))?;
        let slots = self.slots(&leaf[..], position);
        self.leaf.fill(&leaf[..], slots);
        Ok(())
    }

    /// Reads the leaf at `position` into `ready`; returns the next position.
    fn step(&mut self, position: Bound<Vec<u8>>) -> Result<Option<Bound<Vec<u8>>>, EngineError> {
        // Pinned until the overflow chains of this leaf are read.
        let _epoch = crossbeam_epoch::pin();
        self.read_leaf(&position)?;
        let forward = self.direction == Direction::Forward;
        let count = self.leaf.entries.len();
        for n in 0..count {
            let (key_range, stored) =
                self.leaf.entries[if forward { n } else { count - 1 - n }].clone();
            let key = &self.leaf.arena[key_range];
            let inside = if forward {
                before_end(&self.end, key)
            } else {
                after_start(&self.start, key)
            };
            if !inside {
                return Ok(None);
            }
            let value = match stored {
                Stored::Arena(range) => self.leaf.arena[range].to_vec(),
                Stored::Overflow { first, len } => {
                    let mut value = Vec::new();
                    overflow::read_into(self.tree.shared, first, len, &mut value)?;
                    value
                }
            };
            self.ready.push_back((key.to_vec(), value));
        }
        Ok(self.next_position())
    }

    /// The position after the leaf just read, from its fences and the range's far bound.
    fn next_position(&mut self) -> Option<Bound<Vec<u8>>> {
        match self.direction {
            Direction::Forward => {
                let upper = self.fences.upper.take()?;
                before_end(&self.end, &upper).then_some(Bound::Included(upper))
            }
            Direction::Reverse => {
                let lower = self.fences.lower.take()?;
                let more = match &self.start {
                    Bound::Included(first) | Bound::Excluded(first) => {
                        first.as_slice() < lower.as_slice()
                    }
                    Bound::Unbounded => true,
                };
                more.then_some(Bound::Excluded(lower))
            }
        }
    }
}

impl Iterator for RangeIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Each round reads one more leaf; empty leaves are passed over. The number of rounds
        // is bounded by the number of leaves in the range.
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Some(Ok(record));
            }
            let position = self.position.take()?;
            match self.step(position) {
                Ok(next) => self.position = next,
                Err(error) => return Some(Err(error)),
            }
        }
    }
}
