//! A damaged page is reported as `Corrupted { page, file }`, never handed out as data.

mod common;

use bufpool_engine::{Engine, EngineError};

const PAGE: usize = 4096;

#[test]
fn a_flipped_byte_gives_corrupted_not_data() {
    let path = common::test_path("flipped");
    let options = common::options_with_frames(256);
    let engine = Engine::create(&path, options.clone()).unwrap();
    let tree = engine.tree("t").unwrap();
    for i in 0u32..5000 {
        tree.put(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    drop(tree);
    engine.close().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let pages = bytes.len() / PAGE;
    // Flip one bit in every tree page past the catalog (pages 0..=2: superblocks, catalog).
    let mut damaged = Vec::new();
    for page in 3..pages {
        let kind = bytes[page * PAGE + 4];
        if kind == 2 {
            bytes[page * PAGE + 3000] ^= 0x10;
            damaged.push(page as u64);
        }
    }
    assert!(damaged.len() > 10);
    std::fs::write(&path, &bytes).unwrap();

    let engine = Engine::open(&path, options).unwrap();
    let tree = engine.tree("t").unwrap();
    let mut corrupted = 0;
    for i in 0u32..5000 {
        match tree.get(&i.to_be_bytes()) {
            Err(EngineError::Corrupted { page, file, .. }) => {
                assert!(damaged.contains(&page), "page {page} was not damaged");
                assert_eq!(file, path);
                corrupted += 1;
            }
            Ok(value) => panic!("key {i}: data from a damaged leaf: {value:?}"),
            Err(other) => panic!("key {i}: {other}"),
        }
    }
    assert_eq!(corrupted, 5000);
    assert!(matches!(
        tree.iter().next(),
        Some(Err(EngineError::Corrupted { .. }))
    ));
    drop(tree);
    drop(engine);
    // Opening writes checkpoints (superblock pages 0 and 1); the data pages stay as found.
    let after = std::fs::read(&path).unwrap();
    assert!(
        after[2 * PAGE..] == bytes[2 * PAGE..],
        "reading a damaged file changed its data pages"
    );
}
