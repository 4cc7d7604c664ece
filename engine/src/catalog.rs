//! The catalog of named trees: itself a B+-tree (root page in the superblock) mapping a
//! tree's name to its root page (the 16-byte entry's second half, once a record count, is
//! unused since format 3: counts live in the log's checkpoint records). Open trees
//! are registered in a concurrent map (`dashmap`) so every handle of a name shares one
//! state (and one record counter); the map is touched when a tree is opened and at
//! checkpoints, never on the read or write path.

use std::sync::Arc;

use bufpool::PageId;

use crate::EngineError;
use crate::node;
use crate::shared::Shared;
use crate::tree::descend::TreeCtx;
use crate::tree::{Direction, RangeIter, Tree, TreeState, read, write};
use crate::wal::Durability;

/// Longest tree name in bytes.
pub const TREE_NAME_MAX: usize = 255;

fn catalog(shared: &Shared) -> TreeCtx<'_> {
    TreeCtx {
        shared,
        root: shared.catalog_root,
    }
}

fn encode(root: PageId, len: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&root.0.to_le_bytes());
    value[8..].copy_from_slice(&len.to_le_bytes());
    value
}

fn decode(shared: &Shared, value: &[u8]) -> Result<(PageId, u64), EngineError> {
    let (Some(root), Some(len)) = (value.get(..8), value.get(8..16)) else {
        return Err(shared.corrupted(shared.catalog_root, "catalog entry of the wrong size"));
    };
    Ok((
        PageId(u64::from_le_bytes(root.try_into().unwrap())),
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
    if name.len() > TREE_NAME_MAX {
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
    let mut value = Vec::new();
    let root = if read::get_into(catalog(shared), name.as_bytes(), &mut value)? {
        decode(shared, &value)?.0
    } else {
        crate::tree::visit::assert_not_visiting("creating a tree");
        let mut page = shared.allocate()?;
        node::init(&mut page, 0);
        let (root, image) = page.into_image();
        // The root page and the catalog entry are one logged change.
        let (_, lsn) = write::put(
            catalog(shared),
            name.as_bytes(),
            &encode(root, 0),
            vec![(root, image)],
        )?;
        if shared.durability == Durability::Immediate {
            shared.log.flush_to(lsn, true)?;
        }
        root
    };
    let state = Arc::new(TreeState {
        name: name.to_string(),
        root,
        len: shared.log.tree_len(root),
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
