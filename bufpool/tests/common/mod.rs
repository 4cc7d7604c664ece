//! Helpers shared by the integration tests: data files on a real filesystem (O_DIRECT needs
//! one), pools over them, and the page format the tests stamp.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

use bufpool::{Backing, Config, PAGE_SIZE, PageId, Pool};
use bufpool_io::{DirectFile, OpenOptions};

/// A fresh path under `target/test-data/bufpool/` (never tmpfs: O_DIRECT must work).
pub fn data_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/bufpool");
    std::fs::create_dir_all(&dir).expect("create test-data dir");
    let path = dir.join(format!("{name}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Page `page`'s bytes as the tests stamp them: id at 0, `generation` at 8, a pattern after.
pub fn page_bytes(page: u64, generation: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; PAGE_SIZE];
    bytes[0..8].copy_from_slice(&page.to_le_bytes());
    bytes[8..16].copy_from_slice(&generation.to_le_bytes());
    for (index, byte) in bytes.iter_mut().enumerate().skip(16) {
        *byte = (page as usize * 31 + generation as usize * 7 + index) as u8;
    }
    bytes
}

/// Writes a file of `page_count` stamped pages (generation 0) and opens it O_DIRECT.
pub fn stamped_file(name: &str, page_count: u64) -> DirectFile {
    let path = data_path(name);
    let mut file = std::fs::File::create(&path).expect("create data file");
    for page in 0..page_count {
        file.write_all(&page_bytes(page, 0))
            .expect("write data file");
    }
    file.sync_all().expect("sync data file");
    drop(file);
    DirectFile::open(&path, &OpenOptions::default()).expect("open O_DIRECT (is target/ on tmpfs?)")
}

pub fn config(backing: Backing, frame_count: u64) -> Config {
    Config {
        page_count_max: 1 << 16,
        frame_budget_bytes: frame_count * PAGE_SIZE as u64,
        backing,
        eviction_batch: 8,
        ..Config::default()
    }
}

pub fn open_pool(name: &str, backing: Backing, page_count: u64, frame_count: u64) -> Pool {
    Pool::open(stamped_file(name, page_count), config(backing, frame_count)).expect("open pool")
}

/// Reads page `page` optimistically and returns (id, generation), checking the pattern.
pub fn read_stamp(pool: &Pool, page: u64) -> (u64, u64) {
    let (id, generation, pattern_ok) = pool
        .read(PageId(page), |view| {
            let id = view.u64_at(0);
            let generation = view.u64_at(8);
            let mut body = vec![0u8; PAGE_SIZE];
            view.copy_to(0, &mut body);
            (id, generation, body == page_bytes(id, generation))
        })
        .expect("read page");
    assert!(pattern_ok, "page {page} has a torn or foreign body");
    (id, generation)
}

pub const BACKINGS: [Backing; 2] = [Backing::Anonymous, Backing::Memfd];
