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
//!
//! Each step is one logged change (`wal::commit`, with its latches held): the leaf write
//! (with a new overflow chain, the old chain freed and the record count), each split,
//! each merge. A crash keeps a step entirely or not at all; splits and merges never change
//! the tree's contents, so a put or delete is atomic as the user sees it.

use bufpool::PageId;

use super::descend::{self, Abort, HEIGHT_MAX, OPTIMISTIC_ATTEMPTS_MAX, Route, TreeCtx};
use crate::EngineError;
use crate::node::{self, LeafValue, ValueRef};
use crate::overflow;
use crate::wal::{self, Change, PageMut};

/// Tries of one write (optimistic, then latched) before giving up.
const WRITE_ATTEMPTS_MAX: u32 = OPTIMISTIC_ATTEMPTS_MAX + 4 * HEIGHT_MAX as u32 + 1024;
/// Tries of one split or merge step.
const STRUCTURE_ATTEMPTS_MAX: u32 = 64;
/// A merge is done only if the merged node is at most this full, so a merge is not
/// undone by the next insert.
const MERGED_MAX_BYTES: usize = node::CAPACITY * 3 / 4;
/// Merges one delete may set off (in a row and upwards).
const MERGE_CASCADE_MAX: usize = 4 * HEIGHT_MAX;

fn retry_limit(operation: &'static str) -> EngineError {
    EngineError::RetryLimit { operation }
}

/// The leaf for `key`, exclusively latched: optimistic first, latch coupling after
/// `OPTIMISTIC_ATTEMPTS_MAX`. `None`: conflict, try again.
fn latch_leaf<'p>(
    tree: TreeCtx<'p>,
    key: &[u8],
    attempt: u32,
) -> Result<Option<PageMut<'p>>, EngineError> {
    let leaf = if attempt < OPTIMISTIC_ATTEMPTS_MAX {
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
        return Err(descend::not_a_node(tree.shared, leaf.page_id()));
    }
    Ok(Some(PageMut::new(leaf)))
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

/// Inserts or replaces; returns whether the key is new and the LSN of the change. `images`
/// are new unreachable pages to log with it (a new tree's root).
pub(crate) fn put(
    tree: TreeCtx<'_>,
    key: &[u8],
    value: &[u8],
    mut images: Vec<(PageId, Vec<u8>)>,
) -> Result<(bool, u64), EngineError> {
    let stored = if key.len() + value.len() > node::INLINE_PAYLOAD_MAX {
        let first = overflow::write(tree.shared, value, |page| images.push(page.into_image()));
        match first {
            Ok(first) => LeafValue::Overflow {
                first,
                len: value.len(),
            },
            Err(error) => {
                release_images(tree, &images);
                return Err(error);
            }
        }
    } else {
        LeafValue::Inline(value)
    };
    let result = put_stored(tree, key, stored, &mut images);
    // Pages not logged (the put failed) were never reachable: free again.
    release_images(tree, &images);
    result
}

/// Logs one change of this tree's pages (see `wal::commit`).
fn commit(
    tree: TreeCtx<'_>,
    pages: &mut [&mut PageMut<'_>],
    change: Change,
) -> Result<u64, EngineError> {
    wal::commit(&tree.shared.log, &tree.shared.allocator, pages, change)
}

fn release_images(tree: TreeCtx<'_>, images: &[(PageId, Vec<u8>)]) {
    let ids: Vec<PageId> = images.iter().map(|(id, _)| *id).collect();
    tree.shared.allocator.release(&ids);
}

/// The pages of an old value's chain, to free with the change that unlinks it. If they
/// cannot be read, the change happens anyway and the chain leaks (counted; no sweep
/// reclaims it yet): never the other way round.
fn old_chain(tree: TreeCtx<'_>, old: Option<ValueRef>) -> Vec<PageId> {
    let Some(ValueRef::Overflow { first, len }) = old else {
        return Vec::new();
    };
    match overflow::chain_pages(tree.shared, first, len) {
        Ok(pages) => pages,
        Err(error) => {
            let pages = len.div_ceil(overflow::DATA_PER_PAGE) as u64;
            tree.shared
                .log
                .counters
                .leaked_pages
                .fetch_add(pages, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%error, first = first.0, pages, "old overflow chain not freed (leaked)");
            Vec::new()
        }
    }
}

fn put_stored(
    tree: TreeCtx<'_>,
    key: &[u8],
    stored: LeafValue<'_>,
    images: &mut Vec<(PageId, Vec<u8>)>,
) -> Result<(bool, u64), EngineError> {
    let entry_size = node::leaf_entry_size(key.len(), &stored);
    for attempt in 0..WRITE_ATTEMPTS_MAX {
        let Some(mut leaf) = latch_leaf(tree, key, attempt)? else {
            continue;
        };
        match insert_into(&mut leaf, key, stored, entry_size) {
            Insert::Done { replaced } => {
                let image_ids: Vec<PageId> = images.iter().map(|(id, _)| *id).collect();
                let change = Change {
                    images: std::mem::take(images),
                    freed: old_chain(tree, replaced),
                    len_delta: Some((tree.root, i64::from(replaced.is_none()))),
                    ..Change::default()
                };
                let lsn = commit(tree, &mut [&mut leaf], change);
                return match lsn {
                    Ok(lsn) => Ok((replaced.is_none(), lsn)),
                    Err(error) => {
                        // Nothing logged: the leaf rolls back when dropped, and the new
                        // pages are free again.
                        drop(leaf);
                        tree.shared.allocator.release(&image_ids);
                        Err(error)
                    }
                };
            }
            Insert::Full => {
                let page = leaf.id();
                drop(leaf);
                split(tree, page, key, entry_size, 0)?;
            }
        }
    }
    Err(retry_limit("put"))
}

/// Removes `key`; returns whether it was present and the LSN of the change (0 if none).
pub(crate) fn delete(tree: TreeCtx<'_>, key: &[u8]) -> Result<(bool, u64), EngineError> {
    if !may_contain(tree, key)? {
        return Ok((false, 0));
    }
    for attempt in 0..WRITE_ATTEMPTS_MAX {
        let Some(mut leaf) = latch_leaf(tree, key, attempt)? else {
            continue;
        };
        let (index, found) = node::lower_bound(&leaf[..], key);
        if !found {
            return Ok((false, 0));
        }
        let old = node::value_ref(&leaf[..], index);
        let freed = old_chain(tree, Some(old));
        node::remove(&mut leaf, index);
        let page = leaf.id();
        let underfull = page != tree.root && node::used(&leaf) < node::UNDERFULL_BYTES;
        let change = Change {
            freed,
            len_delta: Some((tree.root, -1)),
            ..Change::default()
        };
        let lsn = commit(tree, &mut [&mut leaf], change)?;
        drop(leaf);
        if underfull {
            // The delete has happened: a merge that fails only leaves the tree less dense.
            if let Err(error) = merge(tree, page, key, 0) {
                tracing::warn!(%error, page = page.0, "merge after a delete failed");
            }
        }
        return Ok((true, lsn));
    }
    Err(retry_limit("delete"))
}

/// Whether `key` may be present, checked without a latch (so deleting a missing key does
/// not dirty its leaf). `true` after repeated conflicts: the latched path decides.
fn may_contain(tree: TreeCtx<'_>, key: &[u8]) -> Result<bool, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS_MAX {
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
        parent: PageId,
        entry_size: usize,
    },
}

/// Splits `target` (on the path of `key`) unless it meanwhile has room for an entry of
/// `entry_size` bytes; splits ancestors first where needed.
fn split(
    tree: TreeCtx<'_>,
    target: PageId,
    key: &[u8],
    entry_size: usize,
    depth: usize,
) -> Result<(), EngineError> {
    if depth > HEIGHT_MAX {
        return Err(retry_limit("split"));
    }
    for _ in 0..STRUCTURE_ATTEMPTS_MAX {
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
    target: PageId,
    key: &[u8],
    entry_size: usize,
) -> Result<SplitStep, Abort> {
    let Some((parent, target_guard)) = descend::find_with_parent(tree, target, key)? else {
        return Ok(SplitStep::Done);
    };
    let Some(parent) = parent else {
        let mut root = PageMut::new(target_guard.upgrade()?);
        if !node::fits(&root, entry_size) {
            let kind = node::split_kind_for(&root[..], key, true);
            split_root(tree, &mut root, kind)?;
        }
        return Ok(SplitStep::Done);
    };
    let mut parent = PageMut::new(parent.upgrade()?);
    let mut node = PageMut::new(target_guard.upgrade()?);
    if node::fits(&node, entry_size) || node::count(&node[..]) < 2 {
        return Ok(SplitStep::Done);
    }
    let last_child = node::child_index(&parent[..], key) == node::count(&parent[..]);
    let kind = node::split_kind_for(&node[..], key, last_child);
    let mut separator = Vec::new();
    node::split_separator(&node, kind, &mut separator);
    let separator_size = node::inner_entry_size(separator.len());
    if !node::fits(&parent, separator_size) {
        return Ok(SplitStep::ParentFull {
            parent: parent.id(),
            entry_size: separator_size,
        });
    }
    let mut right = tree.shared.allocate()?;
    node::split(&mut node, &mut right, kind, &mut separator);
    let index = node::child_index(&parent[..], key);
    assert_eq!(
        node::child_at(&parent[..], index),
        target,
        "parent changed under its latch"
    );
    node::set_child(&mut parent, index, right.id());
    node::insert_inner(&mut parent, index, &separator, target);
    let pages = &mut [&mut parent, &mut node, &mut right];
    commit(tree, pages, Change::default())?;
    Ok(SplitStep::Done)
}

/// The root page stays the root: its contents move into two new children.
fn split_root<'p>(
    tree: TreeCtx<'p>,
    root: &mut PageMut<'p>,
    kind: node::SplitKind,
) -> Result<(), EngineError> {
    let level = node::level(&root[..]);
    let mut left = tree.shared.allocate()?;
    let mut right = tree.shared.allocate()?;
    node::copy_node(&mut left, root);
    let mut separator = Vec::new();
    node::split(&mut left, &mut right, kind, &mut separator);
    node::init(root, level + 1);
    node::insert_inner(root, 0, &separator, left.id());
    node::set_upper(root, right.id());
    let pages = &mut [root, &mut left, &mut right];
    commit(tree, pages, Change::default())?;
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
        merged: Option<PageId>,
        parent: Option<PageId>,
    },
    /// No neighbour on that side, or the two would not fit in 3/4 of a page.
    NoFit,
    /// Nothing to do (the node is gone from the key's path, or is the root).
    Nothing,
}

/// Merges the underfull `target` (on the path of `key`) with its right or else its left
/// neighbour if they fit; continues upwards while parents become underfull. Merging only
/// keeps the tree dense: giving up on contention leaves a valid tree.
fn merge(tree: TreeCtx<'_>, target: PageId, key: &[u8], depth: usize) -> Result<(), EngineError> {
    // Each level may merge a few times in a row (an underfull result absorbs the next
    // neighbour, e.g. an empty one left behind earlier), then moves up.
    if depth > MERGE_CASCADE_MAX {
        return Ok(());
    }
    for side in [Side::Right, Side::Left] {
        for _ in 0..STRUCTURE_ATTEMPTS_MAX {
            match merge_step(tree, target, key, side) {
                Ok(MergeStep::Merged { merged, parent }) => {
                    if let Some(merged) = merged {
                        merge(tree, merged, key, depth + 1)?;
                    }
                    return match parent {
                        Some(parent) => merge(tree, parent, key, depth + 1),
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
    target: PageId,
    key: &[u8],
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
    let sibling_guard = pool.optimistic(sibling)?;
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
    let mut parent = PageMut::new(parent.upgrade()?);
    // Latch order: parent, then left, then right.
    let (left, right) = match side {
        Side::Right => {
            let left = target_guard.upgrade()?;
            (left, sibling_guard.upgrade()?)
        }
        Side::Left => {
            let left = sibling_guard.upgrade()?;
            (left, target_guard.upgrade()?)
        }
    };
    let (left, mut right) = (PageMut::new(left), PageMut::new(right));
    if node::level(&left[..]) != node::level(&right[..]) {
        return Err(tree
            .shared
            .corrupted(parent.id(), "siblings on different levels")
            .into());
    }
    let fits = node::merged_size(&left, &right, separator.len()) <= MERGED_MAX_BYTES;
    if !fits || !node::can_merge(&left, &right, separator.len()) {
        return Ok(MergeStep::NoFit);
    }
    node::merge_into_right(&left, &mut right, &separator);
    node::remove(&mut parent, left_slot);
    let is_root = parent.id() == tree.root;
    if is_root && node::count(&parent[..]) == 0 {
        // The root has one child left: it takes the child's place (height - 1).
        node::copy_node(&mut parent, &right);
        let change = Change {
            freed: vec![left.id(), right.id()],
            ..Change::default()
        };
        commit(tree, &mut [&mut parent], change)?;
        return Ok(MergeStep::Merged {
            merged: None,
            parent: None,
        });
    }
    let change = Change {
        freed: vec![left.id()],
        ..Change::default()
    };
    commit(tree, &mut [&mut parent, &mut right], change)?;
    let merged = (node::used(&right) < node::UNDERFULL_BYTES).then_some(right.id());
    let parent_underfull = !is_root && node::used(&parent) < node::UNDERFULL_BYTES;
    Ok(MergeStep::Merged {
        merged,
        parent: parent_underfull.then_some(parent.id()),
    })
}
