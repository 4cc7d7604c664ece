//! I/O failures reach the caller as errors; the engine stays usable and a later
//! checkpoint makes everything durable.

mod common;

use std::collections::BTreeMap;

use bufpool_engine::{Engine, EngineError, EngineOptions};
use bufpool_io::{Fault, FaultInjector, IoConfig};

fn options(faults: &FaultInjector, frames: u64) -> EngineOptions {
    let io = IoConfig {
        faults: Some(faults.clone()),
        ..IoConfig::default()
    };
    EngineOptions {
        io,
        ..common::options_with_frames(frames)
    }
}

#[test]
fn a_failed_checkpoint_is_reported_and_the_next_one_succeeds() {
    let path = common::test_path("faults-checkpoint");
    let faults = FaultInjector::new();
    let engine = Engine::create(&path, options(&faults, 1024)).unwrap();
    let tree = engine.tree("t").unwrap();
    let mut model = BTreeMap::new();
    for i in 0u32..3000 {
        let (key, value) = (i.to_be_bytes().to_vec(), vec![i as u8; 50]);
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    engine.checkpoint().unwrap();
    for i in (0u32..3000).step_by(3) {
        let (key, value) = (i.to_be_bytes().to_vec(), vec![!(i as u8); 70]);
        tree.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    faults.fail_all_writes(Some(Fault::Enospc));
    let error = engine.checkpoint().unwrap_err();
    assert!(
        matches!(error, EngineError::Io(_) | EngineError::Pool(_)),
        "{error}"
    );
    // Reads go on; writes too once the disk takes writes again (nothing was lost: the
    // pages that failed stay dirty, and the log has every change).
    assert_eq!(
        tree.get(&3u32.to_be_bytes()).unwrap().as_ref(),
        model.get(&3u32.to_be_bytes()[..])
    );
    faults.clear();
    tree.put(b"after", b"failure").unwrap();
    model.insert(b"after".to_vec(), b"failure".to_vec());
    drop(tree);
    engine.close().unwrap();
    let engine = Engine::open(&path, options(&faults, 1024)).unwrap();
    let tree = engine.tree("t").unwrap();
    let stored: BTreeMap<_, _> = tree.iter().map(Result::unwrap).collect();
    assert!(stored == model, "reopened data differs");
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_failed_read_is_an_error_and_a_retry_reads_the_page() {
    let path = common::test_path("faults-read");
    let faults = FaultInjector::new();
    let engine = Engine::create(&path, options(&faults, 256)).unwrap();
    let tree = engine.tree("t").unwrap();
    for i in 0u32..2000 {
        tree.put(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    drop(tree);
    engine.close().unwrap();
    let engine = Engine::open(&path, options(&faults, 256)).unwrap();
    let tree = engine.tree("t").unwrap();
    faults.fail_nth_read(1, Fault::Eio);
    let error = tree.get(&1500u32.to_be_bytes()).unwrap_err();
    assert!(
        matches!(error, EngineError::Io(_) | EngineError::Pool(_)),
        "{error}"
    );
    assert_eq!(
        tree.get(&1500u32.to_be_bytes()).unwrap(),
        Some(vec![1500u32 as u8; 100])
    );
    drop(tree);
    engine.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}
