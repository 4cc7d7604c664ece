//! Point lookups: optimistic descent, binary search in the leaf through the page view,
//! value copied out, then validated; no allocation, no latch.

use bufpool::PageId;

use super::descend::{self, Abort, OPTIMISTIC_ATTEMPTS, Route, TreeCtx};
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
        first: u64,
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

fn lookup_optimistic(tree: TreeCtx<'_>, key: &[u8], out: &mut Vec<u8>) -> Result<Hit, Abort> {
    let leaf = descend::descend(tree, Route::Key(key), 0, None)?;
    let hit = leaf.peek(|view| read_leaf(view, key, out));
    leaf.validate()?;
    Ok(hit)
}

fn lookup(tree: TreeCtx<'_>, key: &[u8], out: &mut Vec<u8>) -> Result<Hit, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        match lookup_optimistic(tree, key, out) {
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
    // Unpinned: node pages are protected by lock coupling alone. Only a value on overflow
    // pages needs the epoch (its chain must not be reused while it is read), so such a
    // lookup is repeated pinned: the chain it then finds stays intact until unpinned.
    match lookup(tree, key, out)? {
        Hit::Missing => Ok(false),
        Hit::Inline => Ok(true),
        Hit::Overflow { .. } => {
            let _epoch = crossbeam_epoch::pin();
            match lookup(tree, key, out)? {
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

/// The leaf page that holds `key`, found without touching the leaf itself (so it can be
/// prefetched). `None` after repeated conflicts: prefetching is only an optimization.
fn leaf_page_of(tree: TreeCtx<'_>, key: &[u8]) -> Result<Option<u64>, EngineError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        let attempt = descend::descend(tree, Route::Key(key), 1, None).and_then(|parent| {
            let child = parent.peek(|view| {
                if node::is_leaf(view) {
                    parent.page_id().0
                } else {
                    node::child_at(view, node::child_index(view, key))
                }
            });
            parent.validate()?;
            Ok(child)
        });
        match attempt {
            Ok(page) => return Ok(Some(page)),
            Err(Abort::Restart) => continue,
            Err(Abort::Failed(error)) => return Err(error),
        }
    }
    Ok(None)
}

pub(crate) fn multi_get(
    tree: TreeCtx<'_>,
    keys: &[&[u8]],
) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
    let _epoch = crossbeam_epoch::pin();
    let mut leaves = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(page) = leaf_page_of(tree, key)? {
            leaves.push(PageId(page));
        }
    }
    leaves.sort_unstable();
    leaves.dedup();
    tree.shared.pool.prefetch(&leaves)?;
    keys.iter()
        .map(|key| {
            let mut value = Vec::new();
            Ok(get_into(tree, key, &mut value)?.then_some(value))
        })
        .collect()
}
