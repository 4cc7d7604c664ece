//! The catalog of named trees: itself a B+-tree (root page in the superblock) mapping a
//! tree's name to its root page and its record count at the last checkpoint. Open trees
//! are registered in a concurrent map (`dashmap`) so every handle of a name shares one
//! state (and one record counter); the map is touched when a tree is opened and at
//! checkpoints, never on the read or write path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::EngineError;
use crate::node;
use crate::shared::Shared;
use crate::tree::descend::TreeCtx;
use crate::tree::{Direction, RangeIter, Tree, TreeState, read, write};

/// Longest tree name in bytes.
pub const MAX_TREE_NAME: usize = 255;

fn catalog(shared: &Shared) -> TreeCtx<'_> {
    TreeCtx {
        shared,
        root: shared.catalog_root,
    }
}

fn encode(root: u64, len: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&root.to_le_bytes());
    value[8..].copy_from_slice(&len.to_le_bytes());
    value
}

fn decode(shared: &Shared, value: &[u8]) -> Result<(u64, u64), EngineError> {
    let (Some(root), Some(len)) = (value.get(..8), value.get(8..16)) else {
        return Err(shared.corrupted(shared.catalog_root, "catalog entry of the wrong size"));
    };
    Ok((
        u64::from_le_bytes(root.try_into().unwrap()),
        u64::from_le_bytes(len.try_into().unwrap()),
    ))
}

fn check_name(name: &str) -> Result<(), EngineError> {
    let invalid = |reason| {
        Err(EngineError::InvalidTreeName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_TREE_NAME {
        return invalid("longer than 255 bytes");
    }
    Ok(())
}

/// Opens the tree `name`, creating it (an empty leaf root) if the catalog lacks it.
pub(crate) fn open_tree(shared: &Arc<Shared>, name: &str) -> Result<Tree, EngineError> {
    check_name(name)?;
    if let Some(state) = shared.trees.get(name) {
        return Ok(Tree::new(Arc::clone(shared), Arc::clone(&state)));
    }
    let _creating = shared
        .tree_creation
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(state) = shared.trees.get(name) {
        return Ok(Tree::new(Arc::clone(shared), Arc::clone(&state)));
    }
    let _writer = shared
        .writers
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut value = Vec::new();
    let (root, len) = if read::get_into(catalog(shared), name.as_bytes(), &mut value)? {
        decode(shared, &value)?
    } else {
        let mut page = shared.allocator.allocate(&shared.pool)?;
        node::init(&mut page, 0);
        let root = page.page_id().0;
        drop(page);
        write::put(catalog(shared), name.as_bytes(), &encode(root, 0))?;
        (root, 0)
    };
    let state = Arc::new(TreeState {
        name: name.to_string(),
        root,
        len: AtomicU64::new(len),
        persisted_len: AtomicU64::new(len),
    });
    shared.trees.insert(name.to_string(), Arc::clone(&state));
    Ok(Tree::new(Arc::clone(shared), state))
}

/// The names of every tree in the catalog, in byte order.
pub(crate) fn names(shared: &Shared) -> Result<Vec<String>, EngineError> {
    let scan = RangeIter::new(
        catalog(shared),
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        Direction::Forward,
    );
    scan.map(|record| {
        let (name, _) = record?;
        String::from_utf8(name)
            .map_err(|_| shared.corrupted(shared.catalog_root, "tree name is not UTF-8"))
    })
    .collect()
}

/// Writes the record counts of open trees that changed into the catalog (at a
/// checkpoint, writers excluded).
pub(crate) fn persist_lengths(shared: &Shared) -> Result<(), EngineError> {
    let states: Vec<Arc<TreeState>> = shared
        .trees
        .iter()
        .map(|entry| Arc::clone(entry.value()))
        .collect();
    for state in states {
        let len = state.len.load(Ordering::Relaxed);
        if state.persisted_len.load(Ordering::Relaxed) != len {
            write::put(
                catalog(shared),
                state.name.as_bytes(),
                &encode(state.root, len),
            )?;
            state.persisted_len.store(len, Ordering::Relaxed);
        }
    }
    Ok(())
}
