//! `load_sorted`: packed bottom-up build of an empty tree.

mod common;

use bufpool_engine::{Direction, Engine, EngineError};

fn record(i: u64) -> (Vec<u8>, Vec<u8>) {
    let value = if i % 997 == 0 {
        vec![i as u8; 5000]
    } else {
        format!("value-{i}").into_bytes()
    };
    (i.to_be_bytes().to_vec(), value)
}

#[test]
fn loads_sorted_records_and_they_read_back() {
    let path = common::test_path("bulk");
    let options = common::options_with_frames(512);
    let engine = Engine::create(&path, options.clone()).unwrap();
    let tree = engine.tree("bulk").unwrap();
    let n = 60_000u64;
    assert_eq!(tree.load_sorted((0..n).map(|i| record(i * 2))).unwrap(), n);
    assert_eq!(tree.len().unwrap(), n);
    let summary = tree.verify().unwrap();
    assert_eq!(
        (summary.records, summary.overflow_values),
        (n, (0..n).filter(|i| (i * 2) % 997 == 0).count() as u64)
    );
    assert!(
        summary.height >= 2 && summary.used_bytes > summary.leaves * 3500,
        "leaves not packed: {summary:?}"
    );
    for i in (0..2 * n).step_by(7) {
        let expected = (i % 2 == 0).then(|| record(i).1);
        assert_eq!(tree.get(&i.to_be_bytes()).unwrap(), expected, "key {i}");
    }
    let reversed: Vec<_> = tree
        .range::<[u8], _>(.., Direction::Reverse)
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(reversed.len() as u64, n);
    assert!(reversed.windows(2).all(|pair| pair[0] > pair[1]));
    // The loaded tree takes ordinary writes.
    tree.put(&1u64.to_be_bytes(), b"odd").unwrap();
    assert!(tree.delete(&0u64.to_be_bytes()).unwrap());
    assert!(matches!(
        tree.load_sorted([(b"a", b"b")]),
        Err(EngineError::LoadIntoNonEmpty { .. })
    ));
    drop(tree);
    engine.close().unwrap();
    let engine = Engine::open(&path, options).unwrap();
    let tree = engine.tree("bulk").unwrap();
    assert_eq!(tree.len().unwrap(), n);
    assert_eq!(tree.get(&1u64.to_be_bytes()).unwrap().unwrap(), b"odd");
    assert_eq!(tree.iter().count() as u64, n);
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unsorted_input_installs_nothing_and_frees_its_pages() {
    let path = common::test_path("bulk-unsorted");
    let engine = Engine::create(&path, common::options_with_frames(256)).unwrap();
    let tree = engine.tree("t").unwrap();
    let records = (0..20_000u64).map(|i| if i == 15_000 { record(3) } else { record(i) });
    assert!(matches!(
        tree.load_sorted(records),
        Err(EngineError::UnsortedLoad { index: 15_000 })
    ));
    assert_eq!(tree.len().unwrap(), 0);
    assert_eq!(tree.iter().count(), 0);
    let (pages, free) = engine.page_counts();
    assert!(
        free + 10 >= pages,
        "pages of the failed load not freed: {free} free of {pages}"
    );
    tree.load_sorted((0..100u64).map(record)).unwrap();
    assert_eq!(tree.iter().count(), 100);
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// Ordinary puts in ascending key order (a server loading keys in order, a list growing at
/// its tail) fill their leaves: a split at the end of the last child keeps the left page full.
#[test]
fn ascending_puts_fill_their_leaves() {
    let path = common::test_path("ascending-puts");
    let engine = Engine::create(&path, common::options_with_frames(512)).unwrap();
    let tree = engine.tree("ascending").unwrap();
    let n = 40_000u64;
    for i in 0..n {
        tree.put_nowait(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    let summary = tree.verify().unwrap();
    assert_eq!(summary.records, n);
    assert!(
        summary.used_bytes > summary.leaves * 3500,
        "ascending puts left leaves half empty: {summary:?}"
    );
    // Puts in between still split where they land, and everything reads back.
    for i in (0..n).step_by(3) {
        tree.put_nowait(&i.to_be_bytes(), &[1; 300]).unwrap();
    }
    assert_eq!(tree.verify().unwrap().records, n);
    for i in (0..n).step_by(11) {
        let expected = if i % 3 == 0 {
            vec![1; 300]
        } else {
            vec![i as u8; 100]
        };
        assert_eq!(
            tree.get(&i.to_be_bytes()).unwrap(),
            Some(expected),
            "key {i}"
        );
    }
    drop(tree);
    engine.close().unwrap();
    Engine::remove(&path).unwrap();
}
