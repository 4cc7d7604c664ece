//! Bulk loading: an empty tree built bottom up from sorted records.
//!
//! Leaves are filled completely in key order; each level of inner nodes is then built from
//! the level below (child page ids and the shortest separators between neighbours) until
//! one node remains, which is copied into the tree's fixed root page under its latch. Until
//! that last step nothing is reachable, so a failure (unsorted input, oversized record,
//! I/O) frees every page built and leaves the tree as it was.
//!
//! The built pages are not logged (that would write every byte twice): they are written
//! back and synced with the data file first, then one logged change installs the root and
//! records their allocation, as PostgreSQL does for a table created and filled in one
//! transaction. A crash before that change leaves them free.

use std::ops::Range;

use bufpool::PageId;

use super::descend::TreeCtx;
use super::{check_key, check_value};
use crate::EngineError;
use crate::node::{self, LeafValue};
use crate::overflow;
use crate::wal::{self, Change, PageMut};

/// One level under construction: its nodes in key order and the separator before each
/// node but the first.
#[derive(Default)]
struct Level {
    pages: Vec<PageId>,
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

/// Returns the records loaded and the LSN of the change that installed them.
pub(crate) fn load_sorted<I, K, V>(
    tree: TreeCtx<'_>,
    records: I,
    len: u64,
) -> Result<(u64, u64), EngineError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    if len != 0 {
        return Err(EngineError::LoadIntoNonEmpty { len });
    }
    let mut built = Vec::new();
    let result = build(tree, records, &mut built)
        .and_then(|(top, loaded)| install(tree, top, &built, loaded).map(|lsn| (loaded, lsn)));
    if result.is_err() {
        // Never reachable: free again at once.
        tree.shared.allocator.release(&built);
    }
    result
}

/// Builds the whole tree; returns its top node and the number of records.
fn build<I, K, V>(
    tree: TreeCtx<'_>,
    records: I,
    built: &mut Vec<PageId>,
) -> Result<(PageId, u64), EngineError>
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
    built: &mut Vec<PageId>,
) -> Result<(Level, u64), EngineError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let shared = tree.shared;
    let mut level = Level::default();
    let mut leaf = shared.allocate()?;
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
        let stored = if key.len() + value.len() > node::INLINE_PAYLOAD_MAX {
            LeafValue::Overflow {
                first: overflow::write(shared, value, |page| built.push(page.into_unlogged()))?,
                len: value.len(),
            }
        } else {
            LeafValue::Inline(value)
        };
        if !node::fits(&leaf, node::leaf_entry_size(key.len(), &stored)) {
            let full = std::mem::replace(&mut leaf, shared.allocate()?);
            level.pages.push(keep(full, built));
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
    level.pages.push(keep(leaf, built));
    Ok((level, loaded))
}

/// A finished page: written unlogged, listed for release on failure.
fn keep(page: PageMut<'_>, built: &mut Vec<PageId>) -> PageId {
    let id = page.into_unlogged();
    built.push(id);
    id
}

fn build_inner_level(
    tree: TreeCtx<'_>,
    below: &Level,
    height: u16,
    built: &mut Vec<PageId>,
) -> Result<Level, EngineError> {
    let shared = tree.shared;
    let mut level = Level::default();
    let mut inner = shared.allocate()?;
    node::init(&mut inner, height);
    node::set_upper(&mut inner, below.pages[0]);
    for index in 1..below.pages.len() {
        let separator = below.separator(index);
        if node::fits(&inner, node::inner_entry_size(separator.len())) {
            let count = node::count(&inner[..]);
            let previous = node::upper(&inner[..]);
            node::insert_inner(&mut inner, count, separator, previous);
        } else {
            let full = std::mem::replace(&mut inner, shared.allocate()?);
            level.pages.push(keep(full, built));
            node::init(&mut inner, height);
            level.push_separator(separator);
        }
        node::set_upper(&mut inner, below.pages[index]);
    }
    level.pages.push(keep(inner, built));
    Ok(level)
}

/// Writes the built pages to disk (synced), then copies the top node into the root page,
/// if the tree is still empty, as one logged change that also records the allocations.
fn install(
    tree: TreeCtx<'_>,
    top: PageId,
    built: &[PageId],
    loaded: u64,
) -> Result<u64, EngineError> {
    let shared = tree.shared;
    // Frees of pages the build reused must be durable before those pages are overwritten.
    shared.log.flush_to(shared.log.end(), false)?;
    if let Err(error) = shared.pool.flush() {
        let error = EngineError::from(error);
        if error.is_sync_failure() {
            shared
                .log
                .fail(format!("data file sync failed in a bulk load: {error}"));
        }
        return Err(error);
    }
    let pool = &shared.pool;
    let mut root = PageMut::new(pool.exclusive(tree.root)?);
    if !node::is_leaf(&root[..]) || node::count(&root[..]) != 0 {
        return Err(EngineError::LoadIntoNonEmpty {
            len: node::count(&root[..]) as u64,
        });
    }
    let top_page = pool.exclusive(top)?;
    node::copy_node(&mut root, &top_page);
    drop(top_page);
    let change = Change {
        allocated_unlogged: built.iter().copied().filter(|&id| id != top).collect(),
        len_delta: Some((tree.root, loaded as i64)),
        ..Change::default()
    };
    let lsn = wal::commit(&shared.log, &shared.allocator, &mut [&mut root], change)?;
    // The top node's copy is the root now; the page itself was never reachable.
    shared.allocator.release(&[top]);
    Ok(lsn)
}
