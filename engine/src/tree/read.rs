//! Point lookups: optimistic descent, binary search in the leaf through the page view,
//! value copied out, then validated; no allocation, no latch.

use std::collections::HashSet;

use bufpool::{FaultStream, PageId, PoolError};

use super::descend::{self, Abort, OPTIMISTIC_ATTEMPTS_MAX, Route, TreeCtx, Warming};
use crate::EngineError;
use crate::node::{self, ValueRef};
use crate::overflow;
use crate::page::PageBytes;

/// What a leaf said about a key.
enum Hit {
    Missing,
    /// The value was copied into `out`.
    Inline,
    Overflow {
        first: PageId,
        len: usize,
    },
}

#[inline]
fn read_leaf<P: PageBytes + ?Sized>(page: &P, key: &[u8], out: &mut Vec<u8>) -> Hit {
    let (index, found) = node::lower_bound(page, key);
    if !found {
        return Hit::Missing;
    }
    match node::value_ref(page, index) {
        ValueRef::Inline { offset, len } => {
            out.clear();
            out.resize(len, 0);
            page.copy_to(offset, out);
            Hit::Inline
        }
        ValueRef::Overflow { first, len } => Hit::Overflow { first, len },
    }
}

fn lookup_optimistic(
    tree: TreeCtx<'_>,
    key: &[u8],
    out: &mut Vec<u8>,
    warming: Warming,
) -> Result<Hit, Abort> {
    let leaf = descend::descend_warming(tree, Route::Key(key), 0, None, warming)?;
    let hit = leaf.peek(|view| read_leaf(view, key, out));
    leaf.validate()?;
    Ok(hit)
}

fn lookup(
    tree: TreeCtx<'_>,
    key: &[u8],
    out: &mut Vec<u8>,
    warming: Warming,
) -> Result<Hit, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
        match lookup_optimistic(tree, key, out, warming) {
            Ok(hit) => return Ok(hit),
            Err(Abort::Restart) => continue,
            Err(Abort::Failed(error)) => return Err(error),
        }
    }
    let leaf = descend::descend_shared(tree, Route::Key(key), None)?;
    Ok(read_leaf(&leaf[..], key, out))
}

pub(crate) fn get_into(
    tree: TreeCtx<'_>,
    key: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, EngineError> {
    get_with(tree, key, out, Warming::Warm)
}

fn get_with(
    tree: TreeCtx<'_>,
    key: &[u8],
    out: &mut Vec<u8>,
    warming: Warming,
) -> Result<bool, EngineError> {
    // Unpinned: node pages are protected by lock coupling alone. Only a value on overflow
    // pages needs the epoch (its chain must not be reused while it is read), so such a
    // lookup is repeated pinned: the chain it then finds stays intact until unpinned.
    match lookup(tree, key, out, warming)? {
        Hit::Missing => Ok(false),
        Hit::Inline => Ok(true),
        Hit::Overflow { .. } => {
            let _epoch = crossbeam_epoch::pin();
            match lookup(tree, key, out, warming)? {
                Hit::Missing => Ok(false),
                Hit::Inline => Ok(true),
                Hit::Overflow { first, len } => {
                    overflow::read_into(tree.shared, first, len, out)?;
                    Ok(true)
                }
            }
        }
    }
}

/// What a lookup that must not wait found ([`crate::Tree::try_get`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoWait<T> {
    /// The answer, read without waiting.
    Ready(T),
    /// The key's leaf is evicted: read it (`LeafReads::start_leaf` with this token) and look
    /// again.
    LeafEvicted(u64),
    /// Not answerable without waiting: a node on the way is latched or being read by another
    /// thread, an inner node is evicted, writers kept moving the path, or the value lives on
    /// overflow pages. A thread that may wait answers it.
    Busy,
}

/// One optimistic attempt of `try_get`: descends without waiting, reads the leaf only if it
/// is readable now.
fn lookup_nowait(tree: TreeCtx<'_>, key: &[u8], out: &mut Vec<u8>) -> Result<NoWait<bool>, Abort> {
    let Some(parent) = descend::descend_nowait(tree, Route::Key(key), 1)? else {
        return Ok(NoWait::Busy);
    };
    let child = parent.peek(|view| {
        (!node::is_leaf(view)).then(|| node::child_at(view, node::child_index(view, key)))
    });
    parent.validate()?;
    let leaf = match child {
        // The root is the leaf.
        None => parent,
        Some(child) => match tree.shared.pool.try_optimistic(child)? {
            Some(leaf) => {
                // Lock coupling: the leaf was the parent's child when its version was taken.
                parent.validate()?;
                leaf
            }
            None if tree.shared.pool.is_evicted(child) => {
                return Ok(NoWait::LeafEvicted(child.0));
            }
            None => return Ok(NoWait::Busy),
        },
    };
    let hit = leaf.peek(|view| node::is_leaf(view).then(|| read_leaf(view, key, out)));
    leaf.validate()?;
    Ok(match hit {
        Some(Hit::Missing) => NoWait::Ready(false),
        Some(Hit::Inline) => NoWait::Ready(true),
        Some(Hit::Overflow { .. }) | None => NoWait::Busy,
    })
}

/// `get_into` for a thread that must never wait for a latch or the disk: one that holds
/// reads of its own others may wait for (`LeafReads`), or an event loop serving many
/// clients.
pub(crate) fn try_get_into(
    tree: TreeCtx<'_>,
    key: &[u8],
    out: &mut Vec<u8>,
) -> Result<NoWait<bool>, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
        match lookup_nowait(tree, key, out) {
            Ok(found) => return Ok(found),
            Err(Abort::Restart) => continue,
            Err(Abort::Failed(error)) => return Err(error),
        }
    }
    Ok(NoWait::Busy)
}

/// What the first pass of `multi_get` did with a key.
enum FirstPass {
    /// Looked up in a resident leaf.
    Done(Hit),
    /// Its leaf is not resident: prefetch it, then look the key up.
    Miss(PageId),
    /// Conflicts or an unexpected page: looked up the ordinary way after the prefetch.
    Later,
}

/// One optimistic attempt: descend to level 1, then read the leaf only if it is resident
/// (no fault-in), so a batch's misses can go to the disk together.
fn lookup_if_resident(
    tree: TreeCtx<'_>,
    key: &[u8],
    out: &mut Vec<u8>,
) -> Result<FirstPass, Abort> {
    let parent = descend::descend(tree, Route::Key(key), 1, None)?;
    let child = parent.peek(|view| {
        if node::is_leaf(view) {
            None
        } else {
            Some(node::child_at(view, node::child_index(view, key)))
        }
    });
    let Some(child) = child else {
        let hit = parent.peek(|view| read_leaf(view, key, out));
        parent.validate()?;
        return Ok(FirstPass::Done(hit));
    };
    parent.validate()?;
    let Some(leaf) = tree.shared.pool.optimistic_if_resident(child)? else {
        return Ok(FirstPass::Miss(child));
    };
    // Lock coupling: the leaf was the parent's child when its version was taken.
    parent.validate()?;
    let hit = leaf.peek(|view| node::is_leaf(view).then(|| read_leaf(view, key, out)));
    leaf.validate()?;
    Ok(hit.map_or(FirstPass::Later, FirstPass::Done))
}

fn first_pass(tree: TreeCtx<'_>, key: &[u8], out: &mut Vec<u8>) -> Result<FirstPass, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
        match lookup_if_resident(tree, key, out) {
            Ok(pass) => return Ok(pass),
            Err(Abort::Restart) => continue,
            Err(Abort::Failed(error)) => return Err(error),
        }
    }
    Ok(FirstPass::Later)
}

/// Whether a descent may wait: for latches on the way and for inner pages to be faulted in
/// (`Wait`), or must give up instead (`NoWait`: a thread holding fault-ins of its own that
/// others may be waiting for, see `LeafReads`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Wait,
    NoWait,
}

/// The leaf `key` lives in if it is not resident now (`None`: resident, or the root is the
/// leaf; with `NoWait` also a node on the way not readable right now). One optimistic descent
/// to level 1; no leaf is faulted in and no value is read.
fn missing_leaf(tree: TreeCtx<'_>, key: &[u8], waiting: Waiting) -> Result<Option<PageId>, Abort> {
    let parent = match waiting {
        Waiting::Wait => descend::descend(tree, Route::Key(key), 1, None)?,
        Waiting::NoWait => match descend::descend_nowait(tree, Route::Key(key), 1)? {
            Some(parent) => parent,
            None => return Ok(None),
        },
    };
    let child = parent.peek(|view| {
        (!node::is_leaf(view)).then(|| node::child_at(view, node::child_index(view, key)))
    });
    parent.validate()?;
    let Some(child) = child else {
        return Ok(None);
    };
    let pool = &tree.shared.pool;
    let resident = match waiting {
        Waiting::Wait => pool.optimistic_if_resident(child)?.is_some(),
        Waiting::NoWait => pool.try_optimistic(child)?.is_some(),
    };
    Ok((!resident).then_some(child))
}

/// `missing_leaf`, retrying the optimistic descent as lookups do.
fn evicted_leaf(
    tree: TreeCtx<'_>,
    key: &[u8],
    waiting: Waiting,
) -> Result<Option<PageId>, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
        match missing_leaf(tree, key, waiting) {
            Ok(leaf) => return Ok(leaf),
            Err(Abort::Restart) => continue,
            Err(Abort::Failed(error)) => return Err(error),
        }
    }
    // Writers kept moving the path: let the lookup itself fault the leaf in.
    Ok(None)
}

/// Faults in, with one submission per pool batch, the leaves of `keys` that are not resident;
/// returns how many were read. Inner pages on the way are faulted in by the descents.
pub(crate) fn prefetch_keys(tree: TreeCtx<'_>, keys: &[&[u8]]) -> Result<usize, EngineError> {
    let mut leaves = Vec::new();
    for key in keys {
        leaves.extend(evicted_leaf(tree, key, Waiting::Wait)?);
    }
    leaves.sort_unstable();
    leaves.dedup();
    tree.shared.pool.prefetch(&leaves)?;
    Ok(leaves.len())
}

/// Leaf reads of one tree in flight on the calling thread, each finished as its read
/// completes ([`crate::Tree::leaf_reads`]): a server starts the leaves of the requests it has,
/// takes more requests meanwhile, and answers each as soon as its own leaves are in.
pub struct LeafReads<'t> {
    tree: TreeCtx<'t>,
    stream: FaultStream<'t>,
    /// Pages this stream started and has not handed back: a second key on one of them
    /// waits for the same read.
    started: HashSet<u64>,
    done: Vec<(PageId, Result<(), PoolError>)>,
}

impl<'t> LeafReads<'t> {
    pub(crate) fn new(tree: TreeCtx<'t>, depth: u32) -> Result<LeafReads<'t>, EngineError> {
        Ok(LeafReads {
            tree,
            stream: tree.shared.pool.fault_stream(depth)?,
            started: HashSet::with_capacity(depth as usize),
            done: Vec::with_capacity(depth as usize),
        })
    }

    /// Reads started and not yet returned by `complete`.
    pub fn in_flight(&self) -> usize {
        self.stream.in_flight()
    }

    /// Whether another read can be started (fewer than `depth` in flight).
    pub fn has_room(&self) -> bool {
        self.stream.has_room()
    }

    /// Starts reading the leaf that holds `key` if it is evicted, and returns a token that
    /// `complete` returns once it is in (keys on one leaf share it). `None`: nothing to wait
    /// for here (the leaf is resident, another thread is reading it or latched a node on
    /// the way, an inner node is evicted, or no more reads fit): a lookup of `key` then does
    /// what it always does. Never waits for a latch or reads an inner page: the thread's
    /// own started reads may be what another thread holding a latch waits for.
    pub fn start(&mut self, key: &[u8]) -> Result<Option<u64>, EngineError> {
        super::check_key(key)?;
        let Some(leaf) = evicted_leaf(self.tree, key, Waiting::NoWait)? else {
            return Ok(None);
        };
        Ok(self.start_leaf(leaf.0)?.then_some(leaf.0))
    }

    /// Starts reading the leaf `token` names (from [`NoWait::LeafEvicted`]) if it is still
    /// evicted and unlatched; `Ok(true)` if this stream is reading it (started now or
    /// earlier), so `complete` will return `token`. `Ok(false)`: nothing to wait for here
    /// (resident again, being read by another thread, or no room).
    pub fn start_leaf(&mut self, token: u64) -> Result<bool, EngineError> {
        if self.started.contains(&token) {
            return Ok(true);
        }
        if !self.stream.has_room() || !self.stream.start(PageId(token))? {
            return Ok(false);
        }
        self.started.insert(token);
        Ok(true)
    }

    /// An eventfd signalled as started reads complete, for an owner that waits in an event
    /// loop: when it fires, `submit` and then `complete(0, ..)` (see
    /// `FaultStream::completion_eventfd`).
    pub fn completion_eventfd(&mut self) -> Result<std::os::fd::OwnedFd, EngineError> {
        Ok(self.stream.completion_eventfd()?)
    }

    /// Hands the started reads to the disk without waiting.
    pub fn submit(&mut self) -> Result<(), EngineError> {
        Ok(self.stream.submit()?)
    }

    /// Waits until at least `min_complete` reads (capped at those in flight) are in, and
    /// appends the tokens of every read that is. A failed read is not reported here: its
    /// page stays evicted, and the lookup that follows reads it again and returns the error.
    pub fn complete(&mut self, min_complete: usize, tokens: &mut Vec<u64>) {
        self.stream.complete(min_complete, &mut self.done);
        for (page, _) in self.done.drain(..) {
            let was_started = self.started.remove(&page.0);
            assert!(was_started, "page {} completed but never started", page.0);
            tokens.push(page.0);
        }
    }
}

/// Looks up every key with one descent each, reading resident leaves at once; the leaves
/// that missed are prefetched in one submission and only their keys are looked up again.
pub(crate) fn multi_get(
    tree: TreeCtx<'_>,
    keys: &[&[u8]],
) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
    // Pinned for the whole batch: an overflow chain found in the first pass stays intact.
    let _epoch = crossbeam_epoch::pin();
    let mut values = Vec::with_capacity(keys.len());
    let mut missed = Vec::new();
    let mut leaves = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let mut value = Vec::new();
        match first_pass(tree, key, &mut value)? {
            FirstPass::Done(Hit::Missing) => values.push(None),
            FirstPass::Done(Hit::Inline) => values.push(Some(value)),
            FirstPass::Done(Hit::Overflow { first, len }) => {
                overflow::read_into(tree.shared, first, len, &mut value)?;
                values.push(Some(value));
            }
            FirstPass::Miss(leaf) => {
                leaves.push(leaf);
                missed.push((index, Warming::Unwarmed));
                values.push(None);
            }
            FirstPass::Later => {
                missed.push((index, Warming::Warm));
                values.push(None);
            }
        }
    }
    if missed.is_empty() {
        return Ok(values);
    }
    leaves.sort_unstable();
    leaves.dedup();
    tree.shared.pool.prefetch(&leaves)?;
    // A missed key's read is its leaf's one access so far (the prefetch left it cold).
    for (index, warming) in missed {
        let mut value = Vec::new();
        values[index] = get_with(tree, keys[index], &mut value, warming)?.then_some(value);
    }
    Ok(values)
}
