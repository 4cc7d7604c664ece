//! Structural check of a tree: every node of the right kind and level, keys strictly
//! ascending and inside the separators above them, overflow chains of the right length.
//! Meant for tests and tools, on a tree no one writes to meanwhile (nodes are read one at
//! a time under a shared latch, not as a snapshot).

use bufpool::PageId;

use super::descend::{HEIGHT_MAX, TreeCtx};
use crate::EngineError;
use crate::node::{self, ValueRef};
use crate::overflow;
use crate::page::{self, PAGE_SIZE, PageKind};

/// What [`super::Tree::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSummary {
    /// Levels above the leaves (0: the root is a leaf).
    pub height: u16,
    pub leaves: u64,
    pub inner_nodes: u64,
    pub records: u64,
    /// Records whose value lives on overflow pages.
    pub overflow_values: u64,
    /// Bytes of slots and cells in use over all nodes.
    pub used_bytes: u64,
}

/// Key bounds a node must respect: `lower <= key < upper`.
struct Bounds<'b> {
    lower: Option<&'b [u8]>,
    upper: Option<&'b [u8]>,
}

pub(crate) fn verify(tree: TreeCtx<'_>) -> Result<TreeSummary, EngineError> {
    let root = read_node(tree, tree.root)?;
    let height = node::level(&root[..]);
    let mut summary = TreeSummary {
        height,
        ..TreeSummary::default()
    };
    check_node(
        tree,
        tree.root,
        height,
        &Bounds {
            lower: None,
            upper: None,
        },
        &mut summary,
        0,
    )?;
    Ok(summary)
}

fn read_node(tree: TreeCtx<'_>, page: PageId) -> Result<Box<[u8; PAGE_SIZE]>, EngineError> {
    let guard = tree.shared.pool.shared(page)?;
    let copy: Box<[u8; PAGE_SIZE]> =
        Box::new((&guard[..]).try_into().expect("a page is PAGE_SIZE bytes"));
    Ok(copy)
}

fn check_node(
    tree: TreeCtx<'_>,
    page: PageId,
    level: u16,
    bounds: &Bounds<'_>,
    summary: &mut TreeSummary,
    depth: usize,
) -> Result<(), EngineError> {
    let bad = |reason: String| tree.shared.corrupted(page, reason);
    if depth > HEIGHT_MAX {
        return Err(bad("tree deeper than its height".into()));
    }
    let bytes = read_node(tree, page)?;
    let expected_kind = if level == 0 {
        PageKind::Leaf
    } else {
        PageKind::Inner
    };
    if page::kind_of(&bytes[..]) != Some(expected_kind) || node::level(&bytes[..]) != level {
        return Err(bad(format!("expected a node of level {level}")));
    }
    let keys: Vec<Vec<u8>> = (0..node::count(&bytes[..]))
        .map(|index| {
            let mut key = Vec::new();
            node::copy_key(&bytes[..], index, &mut key);
            key
        })
        .collect();
    check_keys(&keys, bounds).map_err(bad)?;
    node::check_prefix_and_heads(&bytes[..]).map_err(bad)?;
    for (index, key) in keys.iter().enumerate() {
        if node::lower_bound(&bytes[..], key) != (index, true) {
            return Err(bad(format!("key {index} is not found by a search")));
        }
    }
    summary.used_bytes += node::used(&bytes[..]) as u64;
    if level == 0 {
        summary.leaves += 1;
        summary.records += keys.len() as u64;
        return check_values(tree, &bytes[..], keys.len(), summary);
    }
    summary.inner_nodes += 1;
    for child in 0..=keys.len() {
        let lower = if child == 0 {
            bounds.lower
        } else {
            Some(keys[child - 1].as_slice())
        };
        let upper = if child == keys.len() {
            bounds.upper
        } else {
            Some(keys[child].as_slice())
        };
        let child_page = node::child_at(&bytes[..], child);
        check_node(
            tree,
            child_page,
            level - 1,
            &Bounds { lower, upper },
            summary,
            depth + 1,
        )?;
    }
    Ok(())
}

fn check_keys(keys: &[Vec<u8>], bounds: &Bounds<'_>) -> Result<(), String> {
    if !keys.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err("keys not strictly ascending".into());
    }
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(());
    };
    if bounds.lower.is_some_and(|lower| first.as_slice() < lower) {
        return Err("a key below the separator of its subtree".into());
    }
    if bounds.upper.is_some_and(|upper| last.as_slice() >= upper) {
        return Err("a key at or above the separator after its subtree".into());
    }
    Ok(())
}

fn check_values(
    tree: TreeCtx<'_>,
    bytes: &[u8],
    count: usize,
    summary: &mut TreeSummary,
) -> Result<(), EngineError> {
    let mut value = Vec::new();
    for index in 0..count {
        if let ValueRef::Overflow { first, len } = node::value_ref(bytes, index) {
            let _epoch = crossbeam_epoch::pin();
            overflow::read_into(tree.shared, first, len, &mut value)?;
            summary.overflow_values += 1;
        }
    }
    Ok(())
}
