//! Inserts, deletes, splits and merges.
//!
//! A write descends optimistically and latches only the leaf (upgrade of the optimistic
//! guard: it succeeds only if the leaf is unchanged since its parent pointed at it). If
//! the leaf is full, the writer lets go of it and splits it in a separate step that
//! latches exactly the parent and the node (and the new right sibling); a parent without
//! room is split first the same way, one level at a time, then the write starts over.
//! Deletes that leave a node underfull merge it with a sibling under the same parent,
//! latching parent, left and right in that order. Latches are only ever waited for
//! top-down and left to right, so writers cannot deadlock; readers hold none.

use bufpool::{ExclusiveGuard, PageId};

use super::descend::{self, Abort, MAX_HEIGHT, OPTIMISTIC_ATTEMPTS, Route, TreeCtx};
use crate::EngineError;
use crate::node::{self, LeafValue, ValueRef};
use crate::overflow;

/// Tries of one write (optimistic, then latched) before giving up.
const WRITE_ATTEMPTS: u32 = OPTIMISTIC_ATTEMPTS + 4 * MAX_HEIGHT as u32 + 1024;
/// Tries of one split or merge step.
const STRUCTURE_ATTEMPTS: u32 = 64;
/// A merge is done only if the merged node is at most this full, so a merge is not
/// undone by the next insert.
const MERGED_MAX_BYTES: usize = node::CAPACITY * 3 / 4;
/// Merges one delete may set off (in a row and upwards).
const MERGE_CASCADE_MAX: usize = 4 * MAX_HEIGHT;

fn retry_limit(operation: &'static str) -> EngineError {
    EngineError::RetryLimit { operation }
}

/// The leaf for `key`, exclusively latched: optimistic first, latch coupling after
/// `OPTIMISTIC_ATTEMPTS`. `None`: conflict, try again.
fn latch_leaf<'p>(
    tree: TreeCtx<'p>,
    key: &[u8],
    attempt: u32,
) -> Result<Option<ExclusiveGuard<'p>>, EngineError> {
    let leaf = if attempt < OPTIMISTIC_ATTEMPTS {
        match descend::descend(tree, Route::Key(key), 0, None).and_then(|leaf| Ok(leaf.upgrade()?))
        {
            Ok(leaf) => leaf,
            Err(Abort::Restart) => return Ok(None),
            Err(Abort::Failed(error)) => return Err(error),
        }
    } else {
        descend::descend_exclusive(tree, key)?
    };
    if !node::is_leaf(&leaf[..]) {
        return Err(descend::not_a_node(tree.shared, leaf.page_id().0));
    }
    Ok(Some(leaf))
}

enum Insert {
    /// Done; the value replaced, if the key was present.
    Done {
        replaced: Option<ValueRef>,
    },
    Full,
}

fn insert_into(leaf: &mut [u8], key: &[u8], value: LeafValue<'_>, entry_size: usize) -> Insert {
    let (index, found) = node::lower_bound(leaf, key);
    if !found {
        if !node::fits(leaf, entry_size) {
            return Insert::Full;
        }
        node::insert_leaf(leaf, index, key, value);
        return Insert::Done { replaced: None };
    }
    let old = node::value_ref(leaf, index);
    if let LeafValue::Inline(bytes) = value {
        if node::overwrite_inline(leaf, index, bytes) {
            return Insert::Done {
                replaced: Some(old),
            };
        }
    }
    if !node::fits_replacing(leaf, index, entry_size) {
        return Insert::Full;
    }
    node::remove(leaf, index);
    node::insert_leaf(leaf, index, key, value);
    Insert::Done {
        replaced: Some(old),
    }
}

/// Inserts or replaces; `Ok(true)` if the key is new. The caller holds the writers' lock.
pub(crate) fn put(tree: TreeCtx<'_>, key: &[u8], value: &[u8]) -> Result<bool, EngineError> {
    let mut chain = Vec::new();
    let stored = if key.len() + value.len() > node::MAX_INLINE_PAYLOAD {
        LeafValue::Overflow {
            first: overflow::write(tree.shared, value, &mut chain)?,
            len: value.len(),
        }
    } else {
        LeafValue::Inline(value)
    };
    let result = put_stored(tree, key, stored);
    if let (Err(_), LeafValue::Overflow { first, len }) = (&result, stored) {
        // Best effort: the chain is unreachable either way.
        let _ = overflow::retire(tree.shared, first, len, &crossbeam_epoch::pin());
    }
    result
}

fn put_stored(tree: TreeCtx<'_>, key: &[u8], stored: LeafValue<'_>) -> Result<bool, EngineError> {
    let entry_size = node::leaf_entry_size(key.len(), &stored);
    for attempt in 0..WRITE_ATTEMPTS {
        let Some(mut leaf) = latch_leaf(tree, key, attempt)? else {
            continue;
        };
        match insert_into(&mut leaf, key, stored, entry_size) {
            Insert::Done { replaced } => {
                drop(leaf);
                if let Some(ValueRef::Overflow { first, len }) = replaced {
                    // Pinned only now: readers that may still see the chain pinned before
                    // they read the leaf that pointed at it, so the release waits for them.
                    overflow::retire(tree.shared, first, len, &crossbeam_epoch::pin())?;
                }
                return Ok(replaced.is_none());
            }
            Insert::Full => {
                let page = leaf.page_id().0;
                drop(leaf);
                split(tree, page, key, entry_size, 0)?;
            }
        }
    }
    Err(retry_limit("put"))
}

/// Removes `key`; `Ok(true)` if it was present. The caller holds the writers' lock.
pub(crate) fn delete(tree: TreeCtx<'_>, key: &[u8]) -> Result<bool, EngineError> {
    if !may_contain(tree, key)? {
        return Ok(false);
    }
    for attempt in 0..WRITE_ATTEMPTS {
        let Some(mut leaf) = latch_leaf(tree, key, attempt)? else {
            continue;
        };
        let (index, found) = node::lower_bound(&leaf[..], key);
        if !found {
            return Ok(false);
        }
        let old = node::value_ref(&leaf[..], index);
        node::remove(&mut leaf, index);
        let page = leaf.page_id().0;
        let underfull = page != tree.root && node::used(&leaf) < node::UNDERFULL_BYTES;
        drop(leaf);
        if let ValueRef::Overflow { first, len } = old {
            overflow::retire(tree.shared, first, len, &crossbeam_epoch::pin())?;
        }
        if underfull {
            merge(tree, page, key, &crossbeam_epoch::pin(), 0)?;
        }
        return Ok(true);
    }
    Err(retry_limit("delete"))
}

/// Whether `key` may be present, checked without a latch (so deleting a missing key does
/// not dirty its leaf). `true` after repeated conflicts: the latched path decides.
fn may_contain(tree: TreeCtx<'_>, key: &[u8]) -> Result<bool, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        let attempt = descend::descend(tree, Route::Key(key), 0, None).and_then(|leaf| {
            let found = leaf.peek(|view| node::lower_bound(view, key).1);
            leaf.validate()?;
            Ok(found)
        });
        match attempt {
            Ok(found) => return Ok(found),
            Err(Abort::Restart) => continue,
            Err(Abort::Failed(error)) => return Err(error),
        }
    }
    Ok(true)
}

enum SplitStep {
    Done,
    /// The parent (this page) has no room for the separator entry (this many bytes):
    /// split it first.
    ParentFull {
        parent: u64,
        entry_size: usize,
    },
}

/// Splits `target` (on the path of `key`) unless it meanwhile has room for an entry of
/// `entry_size` bytes; splits ancestors first where needed.
fn split(
    tree: TreeCtx<'_>,
    target: u64,
    key: &[u8],
    entry_size: usize,
    depth: usize,
) -> Result<(), EngineError> {
    if depth > MAX_HEIGHT {
        return Err(retry_limit("split"));
    }
    for _ in 0..STRUCTURE_ATTEMPTS {
        match split_step(tree, target, key, entry_size) {
            Ok(SplitStep::Done) => return Ok(()),
            Ok(SplitStep::ParentFull { parent, entry_size }) => {
                split(tree, parent, key, entry_size, depth + 1)?;
            }
            Err(Abort::Restart) => continue,
            Err(Abort::Failed(error)) => return Err(error),
        }
    }
    // Contended: the caller's next attempt finds the node split, or splits again.
    Ok(())
}

fn split_step(
    tree: TreeCtx<'_>,
    target: u64,
    key: &[u8],
    entry_size: usize,
) -> Result<SplitStep, Abort> {
    let Some((parent, target_guard)) = descend::find_with_parent(tree, target, key)? else {
        return Ok(SplitStep::Done);
    };
    let Some(parent) = parent else {
        let mut root = target_guard.upgrade()?;
        if !node::fits(&root, entry_size) {
            split_root(tree, &mut root)?;
        }
        return Ok(SplitStep::Done);
    };
    let mut parent = parent.upgrade()?;
    let mut node = target_guard.upgrade()?;
    if node::fits(&node, entry_size) || node::count(&node[..]) < 2 {
        return Ok(SplitStep::Done);
    }
    let mut separator = Vec::new();
    node::split_separator(&node, &mut separator);
    let separator_size = node::inner_entry_size(separator.len());
    if !node::fits(&parent, separator_size) {
        return Ok(SplitStep::ParentFull {
            parent: parent.page_id().0,
            entry_size: separator_size,
        });
    }
    let mut right = tree.shared.allocator.allocate(&tree.shared.pool)?;
    node::split(&mut node, &mut right, &mut separator);
    let index = node::child_index(&parent[..], key);
    assert_eq!(
        node::child_at(&parent[..], index),
        target,
        "parent changed under its latch"
    );
    node::set_child(&mut parent, index, right.page_id().0);
    node::insert_inner(&mut parent, index, &separator, target);
    Ok(SplitStep::Done)
}

/// The root page stays the root: its contents move into two new children.
fn split_root(tree: TreeCtx<'_>, root: &mut ExclusiveGuard<'_>) -> Result<(), EngineError> {
    let level = node::level(&root[..]);
    let mut left = tree.shared.allocator.allocate(&tree.shared.pool)?;
    let mut right = tree.shared.allocator.allocate(&tree.shared.pool)?;
    node::copy_node(&mut left, root);
    let mut separator = Vec::new();
    node::split(&mut left, &mut right, &mut separator);
    node::init(root, level + 1);
    node::insert_inner(root, 0, &separator, left.page_id().0);
    node::set_upper(root, right.page_id().0);
    Ok(())
}

/// Which neighbour (under the same parent) a merge tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Right,
    Left,
}

enum MergeStep {
    /// Merged: the merged node if it is still underfull, the parent if it now is (and is
    /// not the root).
    Merged {
        merged: Option<u64>,
        parent: Option<u64>,
    },
    /// No neighbour on that side, or the two would not fit in 3/4 of a page.
    NoFit,
    /// Nothing to do (the node is gone from the key's path, or is the root).
    Nothing,
}

/// Merges the underfull `target` (on the path of `key`) with its right or else its left
/// neighbour if they fit; continues upwards while parents become underfull. Merging only
/// keeps the tree dense: giving up on contention leaves a valid tree.
fn merge(
    tree: TreeCtx<'_>,
    target: u64,
    key: &[u8],
    epoch: &crossbeam_epoch::Guard,
    depth: usize,
) -> Result<(), EngineError> {
    // Each level may merge a few times in a row (an underfull result absorbs the next
    // neighbour, e.g. an empty one left behind earlier), then moves up.
    if depth > MERGE_CASCADE_MAX {
        return Ok(());
    }
    for side in [Side::Right, Side::Left] {
        for _ in 0..STRUCTURE_ATTEMPTS {
            match merge_step(tree, target, key, epoch, side) {
                Ok(MergeStep::Merged { merged, parent }) => {
                    if let Some(merged) = merged {
                        merge(tree, merged, key, epoch, depth + 1)?;
                    }
                    return match parent {
                        Some(parent) => merge(tree, parent, key, epoch, depth + 1),
                        None => Ok(()),
                    };
                }
                Ok(MergeStep::Nothing) => return Ok(()),
                Ok(MergeStep::NoFit) => break,
                Err(Abort::Restart) => continue,
                Err(Abort::Failed(error)) => return Err(error),
            }
        }
    }
    Ok(())
}

/// One merge of `target` with its neighbour on `side`.
fn merge_step(
    tree: TreeCtx<'_>,
    target: u64,
    key: &[u8],
    epoch: &crossbeam_epoch::Guard,
    side: Side,
) -> Result<MergeStep, Abort> {
    let Some((Some(parent), target_guard)) = descend::find_with_parent(tree, target, key)? else {
        return Ok(MergeStep::Nothing);
    };
    let mut separator = Vec::new();
    let plan = parent.peek(|view| {
        let count = node::count(view);
        let index = node::child_index(view, key);
        // The left node's slot in the parent; its key separates left from right.
        let (left_slot, sibling) = match side {
            Side::Right if index < count => (index, node::child_at(view, index + 1)),
            Side::Left if index > 0 => (index - 1, node::child_at(view, index - 1)),
            _ => return None,
        };
        node::copy_key(view, left_slot, &mut separator);
        Some((left_slot, sibling))
    });
    parent.validate()?;
    let Some((left_slot, sibling)) = plan else {
        return Ok(MergeStep::NoFit);
    };
    let pool = &tree.shared.pool;
    // Whether the two fit, checked before latching anything: a merge that does not
    // happen dirties no page.
    let sibling_guard = pool.optimistic(PageId(sibling))?;
    let (target_used, target_is_leaf) =
        target_guard.peek(|view| (node::used_of(view), node::is_leaf(view)));
    let sibling_used = sibling_guard.peek(|view| node::used_of(view));
    target_guard.validate()?;
    sibling_guard.validate()?;
    parent.validate()?;
    let pulled_down = if target_is_leaf {
        0
    } else {
        node::inner_entry_size(separator.len())
    };
    if target_used + sibling_used + pulled_down > MERGED_MAX_BYTES {
        return Ok(MergeStep::NoFit);
    }
    let mut parent = parent.upgrade()?;
    // Latch order: parent, then left, then right.
    let (left, mut right) = match side {
        Side::Right => {
            let left = target_guard.upgrade()?;
            (left, sibling_guard.upgrade()?)
        }
        Side::Left => {
            let left = sibling_guard.upgrade()?;
            (left, target_guard.upgrade()?)
        }
    };
    if node::level(&left[..]) != node::level(&right[..]) {
        return Err(tree
            .shared
            .corrupted(parent.page_id().0, "siblings on different levels")
            .into());
    }
    let fits = node::merged_size(&left, &right, separator.len()) <= MERGED_MAX_BYTES;
    if !fits || !node::can_merge(&left, &right, separator.len()) {
        return Ok(MergeStep::NoFit);
    }
    node::merge_into_right(&left, &mut right, &separator);
    node::remove(&mut parent, left_slot);
    tree.shared.allocator.retire(left, epoch);
    let is_root = parent.page_id().0 == tree.root;
    if is_root && node::count(&parent[..]) == 0 {
        // The root has one child left: it takes the child's place (height - 1).
        node::copy_node(&mut parent, &right);
        tree.shared.allocator.retire(right, epoch);
        return Ok(MergeStep::Merged {
            merged: None,
            parent: None,
        });
    }
    let merged = (node::used(&right) < node::UNDERFULL_BYTES).then_some(right.page_id().0);
    let parent_underfull = !is_root && node::used(&parent) < node::UNDERFULL_BYTES;
    Ok(MergeStep::Merged {
        merged,
        parent: parent_underfull.then_some(parent.page_id().0),
    })
}
