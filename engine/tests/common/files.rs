//! Byte-level helpers for durability tests: deterministic records, snapshots of a database
//! file and its log directory, and damage done to them the way a crash or a careless user
//! would.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bufpool_engine::Tree;

/// Page size of engine files.
pub const PAGE: u64 = 4096;
/// Offset of the generation in a superblock copy (stable across format versions 2 and 3).
const GENERATION_OFFSET: usize = 32;

/// Key `i` (byte order = numeric order).
pub fn key(i: u32) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

/// A value of `len` bytes that names `i` and `salt`, so a value returned for the wrong key
/// or from the wrong write is told apart.
pub fn value(i: u32, salt: u8, len: usize) -> Vec<u8> {
    let seed = i.wrapping_mul(2_654_435_761) ^ u32::from(salt) << 24;
    (0..len)
        .map(|at| (seed.wrapping_add(at as u32).wrapping_mul(31) >> 7) as u8)
        .collect()
}

/// Every record of a tree, in key order.
pub fn contents(tree: &Tree) -> BTreeMap<Vec<u8>, Vec<u8>> {
    tree.iter().map(|record| record.unwrap()).collect()
}

/// Asserts that `tree` holds exactly `model`, naming the first few differences.
pub fn assert_contents(tree: &Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>, context: &str) {
    let stored = contents(tree);
    if stored == *model {
        return;
    }
    let missing: Vec<String> = model
        .keys()
        .filter(|key| !stored.contains_key(*key))
        .take(5)
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect();
    let wrong = model
        .iter()
        .filter(|(key, value)| stored.get(*key).is_some_and(|found| found != *value))
        .count();
    let extra = stored
        .keys()
        .filter(|key| !model.contains_key(*key))
        .count();
    panic!(
        "{context}: tree {:?} differs from what was acknowledged: {} of {} records missing \
         (first: {missing:?}), {wrong} with a wrong value, {extra} never written",
        tree.name(),
        model
            .keys()
            .filter(|key| !stored.contains_key(*key))
            .count(),
        model.len(),
    );
}

/// The database file and every file of its log directory, byte for byte.
pub fn snapshot(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(path.to_path_buf(), std::fs::read(path).unwrap());
    let log_dir = super::log_dir(path);
    if let Ok(entries) = std::fs::read_dir(&log_dir) {
        for entry in entries {
            let entry = entry.unwrap();
            files.insert(entry.path(), std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

/// Asserts two snapshots are equal, naming the first file that differs.
pub fn assert_untouched(before: &BTreeMap<PathBuf, Vec<u8>>, path: &Path, what: &str) {
    let after = snapshot(path);
    let names = |files: &BTreeMap<PathBuf, Vec<u8>>| files.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(before),
        names(&after),
        "{what}: files added or removed"
    );
    for (file, bytes) in before {
        assert!(
            after[file] == *bytes,
            "{what}: {} was modified",
            file.display()
        );
    }
}

/// The generation stored in superblock copy `page` (its checksum not checked).
pub fn superblock_generation(path: &Path, page: u64) -> u64 {
    let mut bytes = [0u8; 8];
    let mut file = std::fs::File::open(path).unwrap();
    file.seek(SeekFrom::Start(page * PAGE + GENERATION_OFFSET as u64))
        .unwrap();
    file.read_exact(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

/// The page of the newest superblock copy of a closed file (generation `g` lives in page
/// `g % 2`).
pub fn newest_superblock_page(path: &Path) -> u64 {
    let generations = [0, 1].map(|page| superblock_generation(path, page));
    let page = u64::from(generations[1] > generations[0]);
    assert_eq!(generations[page as usize] % 2, page, "{generations:?}");
    page
}

/// Tears `page` of a closed file as a power cut in the middle of its write would: the
/// second half is replaced by other bytes, the first half kept.
pub fn tear_page(path: &Path, page: u64) {
    overwrite(path, page * PAGE + PAGE / 2, &vec![0xA5; PAGE as usize / 2]);
}

/// Writes `bytes` at `offset` of `path` (buffered, synced).
pub fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

/// Copies a directory's files (not recursive: a log directory is flat).
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The log segment files of a database, ascending.
pub fn segments(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(super::log_dir(path))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|file| file.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

/// Where log position `lsn` is stored: its segment file and the offset in it.
pub fn log_position(path: &Path, lsn: u64, segment_bytes: u64) -> (PathBuf, u64) {
    let segment = super::log_dir(path).join(format!("{:016x}.wal", lsn / segment_bytes));
    (segment, lsn % segment_bytes)
}

/// The header fields of the log record at `lsn`: (length, LSN it names).
pub fn record_header(path: &Path, lsn: u64, segment_bytes: u64) -> (u32, u64) {
    let (segment, offset) = log_position(path, lsn, segment_bytes);
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(segment).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut header).unwrap();
    (
        u32::from_le_bytes(header[4..8].try_into().unwrap()),
        u64::from_le_bytes(header[8..16].try_into().unwrap()),
    )
}
