//! Every bad open gives its typed error, names the file, and leaves the file as it was.

mod common;

use std::path::Path;

use bufpool_engine::{Engine, EngineError};

const PAGE: usize = 4096;

fn options() -> bufpool_engine::EngineOptions {
    common::options_with_frames(256)
}

/// A small engine file with one tree of 1000 records; returns its bytes.
fn make_database(path: &Path) -> Vec<u8> {
    let engine = Engine::create(path, options()).unwrap();
    let tree = engine.tree("t").unwrap();
    for i in 0u32..1000 {
        tree.put(&i.to_be_bytes(), format!("value {i}").as_bytes())
            .unwrap();
    }
    engine.close().unwrap();
    std::fs::read(path).unwrap()
}

fn reopen_fails(path: &Path, bytes: &[u8]) -> EngineError {
    std::fs::write(path, bytes).unwrap();
    let error = Engine::open(path, options()).unwrap_err();
    assert_eq!(
        std::fs::read(path).unwrap(),
        bytes,
        "a failed open changed the file"
    );
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "error does not name the file: {error}"
    );
    error
}

#[test]
fn missing_file_is_not_found() {
    let path = common::test_path("missing");
    assert!(matches!(
        Engine::open(&path, options()),
        Err(EngineError::NotFound { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn create_refuses_an_existing_file() {
    let path = common::test_path("exists");
    std::fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        Engine::create(&path, options()),
        Err(EngineError::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn foreign_files_are_not_ours() {
    let path = common::test_path("foreign");
    let text = b"just some text, not a database\n".repeat(1000);
    assert!(matches!(
        reopen_fails(&path, &text),
        EngineError::NotOurs { .. }
    ));
    assert!(matches!(
        reopen_fails(&path, &vec![7u8; 4 * PAGE]),
        EngineError::NotOurs { .. }
    ));
    assert!(matches!(
        reopen_fails(&path, b""),
        EngineError::NotOurs { .. }
    ));
}

/// Sets superblock copy `copy` (a byte offset) of a file image to format `version`, with a
/// checksum that matches, as that format's code wrote it.
fn set_version(bytes: &mut [u8], copy: usize, version: u32) {
    bytes[copy + 24..copy + 28].copy_from_slice(&version.to_le_bytes());
    let page_id = (copy / PAGE) as u64;
    let seed = crc32c::crc32c(&page_id.to_le_bytes());
    let sum = crc32c::crc32c_append(seed, &bytes[copy + 4..copy + PAGE]);
    bytes[copy..copy + 4].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn a_version_3_file_opens_and_both_superblock_copies_become_version_4() {
    let path = common::test_path("version-3");
    let mut bytes = make_database(&path);
    for copy in [0, PAGE] {
        set_version(&mut bytes, copy, 3);
    }
    std::fs::write(&path, &bytes).unwrap();
    let engine = Engine::open(&path, options()).unwrap();
    let tree = engine.tree("t").unwrap();
    assert_eq!(
        tree.get(&7u32.to_be_bytes()).unwrap(),
        Some(b"value 7".to_vec())
    );
    drop(tree);
    drop(engine);
    // Before any change: code of format 3 finds no copy it can read, so it refuses the file
    // instead of misreading nodes with longer prefixes.
    let upgraded = std::fs::read(&path).unwrap();
    for copy in [0, PAGE] {
        let version = u32::from_le_bytes(upgraded[copy + 24..copy + 28].try_into().unwrap());
        assert_eq!(version, bufpool_engine::FORMAT_VERSION, "copy at {copy}");
    }
    // A copy written by a newer format beside an older copy: refused, not rolled back.
    let mut newer = upgraded.clone();
    let newest = common::files::newest_superblock_page(&path) as usize * PAGE;
    set_version(&mut newer, newest, bufpool_engine::FORMAT_VERSION + 1);
    let error = reopen_fails(&path, &newer);
    assert!(
        matches!(error, EngineError::UnsupportedFormat { found, .. } if found == bufpool_engine::FORMAT_VERSION + 1),
        "{error}"
    );
}

#[test]
fn other_version_and_other_page_size_are_named() {
    let path = common::test_path("version");
    let good = make_database(&path);
    let mut other_version = good.clone();
    for copy in [0, PAGE] {
        other_version[copy + 24] = 99;
    }
    let error = reopen_fails(&path, &other_version);
    assert!(
        matches!(
            error,
            EngineError::UnsupportedFormat {
                found: 99,
                expected: bufpool_engine::FORMAT_VERSION,
                ..
            }
        ),
        "{error}"
    );
    let mut other_page_size = good.clone();
    for copy in [0, PAGE] {
        other_page_size[copy + 28..copy + 32].copy_from_slice(&8192u32.to_le_bytes());
    }
    let error = reopen_fails(&path, &other_page_size);
    assert!(
        matches!(
            error,
            EngineError::PageSizeMismatch {
                found: 8192,
                expected: 4096,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn truncated_files_are_named_truncated() {
    let path = common::test_path("truncated");
    let good = make_database(&path);
    let error = reopen_fails(&path, &good[..good.len() - 2 * PAGE]);
    assert!(
        matches!(error, EngineError::Truncated { expected, .. } if expected == good.len() as u64),
        "{error}"
    );
    let error = reopen_fails(&path, &good[..good.len() - 100]);
    assert!(matches!(error, EngineError::Truncated { .. }), "{error}");
    let error = reopen_fails(&path, &good[..PAGE + 10]);
    assert!(matches!(error, EngineError::Truncated { .. }), "{error}");
}

#[test]
fn a_torn_superblock_copy_falls_back_to_the_other() {
    let path = common::test_path("torn");
    make_database(&path);
    // One more checkpoint without changes: both copies now describe the same data.
    Engine::open(&path, options()).unwrap().close().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let newest = (0..2)
        .max_by_key(|copy| {
            u64::from_le_bytes(
                bytes[copy * PAGE + 32..copy * PAGE + 40]
                    .try_into()
                    .unwrap(),
            )
        })
        .unwrap();
    bytes[newest * PAGE + 1000..newest * PAGE + 3000].fill(0x5A);
    std::fs::write(&path, &bytes).unwrap();
    let engine = Engine::open(&path, options()).unwrap();
    let tree = engine.tree("t").unwrap();
    assert_eq!(tree.len().unwrap(), 1000);
    assert_eq!(tree.get(&7u32.to_be_bytes()).unwrap().unwrap(), b"value 7");
    // Both copies torn: corrupted, not opened.
    drop(tree);
    drop(engine);
    let mut both = std::fs::read(&path).unwrap();
    for copy in [0, PAGE] {
        both[copy + 1000..copy + 3000].fill(0x5A);
    }
    assert!(matches!(
        reopen_fails(&path, &both),
        EngineError::Corrupted { .. }
    ));
}

#[test]
fn tmpfs_is_refused_with_the_cause() {
    let dir = Path::new("/dev/shm");
    if !dir.is_dir() {
        eprintln!("no /dev/shm here: nothing to check");
        return;
    }
    let path = dir.join(format!("bufpool-engine-test-{}.db", std::process::id()));
    let error = Engine::create(&path, options()).unwrap_err();
    assert!(!path.exists(), "a failed create left its file");
    assert!(
        matches!(
            error,
            EngineError::Io(bufpool_io::IoError::DirectIoUnsupported { .. })
        ),
        "expected DirectIoUnsupported, got {error}"
    );
}

#[test]
fn a_second_engine_on_the_same_file_is_refused() {
    let path = common::test_path("locked");
    let first = Engine::create(&path, options()).unwrap();
    first.tree("t").unwrap().put(b"k", b"v").unwrap();
    assert!(matches!(
        Engine::open(&path, options()),
        Err(EngineError::Locked { .. })
    ));
    first.close().unwrap();
    let second = Engine::open(&path, options()).unwrap();
    assert_eq!(second.tree("t").unwrap().get(b"k").unwrap().unwrap(), b"v");
    second.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}
