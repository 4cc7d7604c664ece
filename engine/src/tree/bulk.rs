//! Bulk loading: an empty tree built bottom up from sorted records.
//!
//! Leaves are filled completely in key order; each level of inner nodes is then built from
//! the level below (child page ids and the shortest separators between neighbours) until
//! one node remains, which is copied into the tree's fixed root page under its latch. Until
//! that last step nothing is reachable, so a failure (unsorted input, oversized record,
//! I/O) frees every page built and leaves the tree as it was.

use std::ops::Range;

use bufpool::PageId;

use super::descend::TreeCtx;
use super::{check_key, check_value};
use crate::EngineError;
use crate::node::{self, LeafValue};
use crate::overflow;

/// One level under construction: its nodes in key order and the separator before each
/// node but the first.
#[derive(Default)]
struct Level {
    pages: Vec<u64>,
    separator_bytes: Vec<u8>,
    separators: Vec<Range<usize>>,
}

impl Level {
    fn push_separator(&mut self, separator: &[u8]) {
        let at = self.separator_bytes.len();
        self.separator_bytes.extend_from_slice(separator);
        self.separators.push(at..at + separator.len());
    }

    /// The separator between node `index - 1` and node `index`.
    fn separator(&self, index: usize) -> &[u8] {
        &self.separator_bytes[self.separators[index - 1].clone()]
    }
}

pub(crate) fn load_sorted<I, K, V>(
    tree: TreeCtx<'_>,
    records: I,
    len: u64,
) -> Result<u64, EngineError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    if len != 0 {
        return Err(EngineError::LoadIntoNonEmpty { len });
    }
    let epoch = crossbeam_epoch::pin();
    let mut built = Vec::new();
    let result = build(tree, records, &mut built)
        .and_then(|(top, loaded)| install(tree, top, &epoch).map(|()| loaded));
    if result.is_err() {
        for page in built {
            // Best effort: these pages are unreachable either way.
            if let Ok(guard) = tree.shared.pool.exclusive(PageId(page)) {
                tree.shared.allocator.retire(guard, &epoch);
            }
        }
    }
    result
}

/// Builds the whole tree; returns its top node and the number of records.
fn build<I, K, V>(
    tree: TreeCtx<'_>,
    records: I,
    built: &mut Vec<u64>,
) -> Result<(u64, u64), EngineError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let (mut level, loaded) = build_leaves(tree, records, built)?;
    let mut height = 0u16;
    while level.pages.len() > 1 {
        height += 1;
        level = build_inner_level(tree, &level, height, built)?;
    }
    Ok((level.pages[0], loaded))
}

fn build_leaves<I, K, V>(
    tree: TreeCtx<'_>,
    records: I,
    built: &mut Vec<u64>,
) -> Result<(Level, u64), EngineError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let shared = tree.shared;
    let mut level = Level::default();
    let mut leaf = shared.allocator.allocate(&shared.pool)?;
    built.push(leaf.page_id().0);
    node::init(&mut leaf, 0);
    let mut previous: Vec<u8> = Vec::new();
    let mut separator = Vec::new();
    let mut loaded = 0u64;
    for (key, value) in records {
        let (key, value) = (key.as_ref(), value.as_ref());
        check_key(key)?;
        check_value(value)?;
        if loaded > 0 && key <= previous.as_slice() {
            return Err(EngineError::UnsortedLoad { index: loaded });
        }
        let stored = if key.len() + value.len() > node::MAX_INLINE_PAYLOAD {
            LeafValue::Overflow {
                first: overflow::write(shared, value, built)?,
                len: value.len(),
            }
        } else {
            LeafValue::Inline(value)
        };
        if !node::fits(&leaf, node::leaf_entry_size(key.len(), &stored)) {
            level.pages.push(leaf.page_id().0);
            leaf = shared.allocator.allocate(&shared.pool)?;
            built.push(leaf.page_id().0);
            node::init(&mut leaf, 0);
            node::shortest_separator(&previous, key, &mut separator);
            level.push_separator(&separator);
        }
        let count = node::count(&leaf[..]);
        node::insert_leaf(&mut leaf, count, key, stored);
        previous.clear();
        previous.extend_from_slice(key);
        loaded += 1;
    }
    level.pages.push(leaf.page_id().0);
    Ok((level, loaded))
}

fn build_inner_level(
    tree: TreeCtx<'_>,
    below: &Level,
    height: u16,
    built: &mut Vec<u64>,
) -> Result<Level, EngineError> {
    let shared = tree.shared;
    let mut level = Level::default();
    let mut inner = shared.allocator.allocate(&shared.pool)?;
    built.push(inner.page_id().0);
    node::init(&mut inner, height);
    node::set_upper(&mut inner, below.pages[0]);
    for index in 1..below.pages.len() {
        let separator = below.separator(index);
        if node::fits(&inner, node::inner_entry_size(separator.len())) {
            let count = node::count(&inner[..]);
            let previous = node::upper(&inner[..]);
            node::insert_inner(&mut inner, count, separator, previous);
        } else {
            level.pages.push(inner.page_id().0);
            inner = shared.allocator.allocate(&shared.pool)?;
            built.push(inner.page_id().0);
            node::init(&mut inner, height);
            level.push_separator(separator);
        }
        node::set_upper(&mut inner, below.pages[index]);
    }
    level.pages.push(inner.page_id().0);
    Ok(level)
}

/// Copies the built top node into the root page, if the tree is still empty.
fn install(tree: TreeCtx<'_>, top: u64, epoch: &crossbeam_epoch::Guard) -> Result<(), EngineError> {
    let pool = &tree.shared.pool;
    let mut root = pool.exclusive(PageId(tree.root))?;
    if !node::is_leaf(&root[..]) || node::count(&root[..]) != 0 {
        return Err(EngineError::LoadIntoNonEmpty {
            len: node::count(&root[..]) as u64,
        });
    }
    let top = pool.exclusive(PageId(top))?;
    node::copy_node(&mut root, &top);
    tree.shared.allocator.retire(top, epoch);
    Ok(())
}
