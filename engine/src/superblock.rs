//! The superblock: what an engine file is and where its structures start.
//!
//! Two copies live in pages 0 and 1; generation `g` is written to page `g % 2`, so a torn
//! write of one copy leaves the other (one checkpoint older) intact. Opening picks the
//! valid copy with the highest generation. Layout after the page header (little endian):
//!
//! | offset | size | field                                           |
//! |--------|------|-------------------------------------------------|
//! | 16     | 8    | magic `b"bufpoolE"`                             |
//! | 24     | 4    | format version                                  |
//! | 28     | 4    | page size                                       |
//! | 32     | 8    | generation                                      |
//! | 40     | 8    | page count at the checkpoint                    |
//! | 48     | 8    | catalog root page                               |
//! | 56     | 8    | database id (random; every log record carries it) |
//! | 64     | 8    | redo LSN: recovery replays the log from here    |
//! | 72     | 8    | LSN of the checkpoint record (free list, tree counts) |
//! | 80     | 8    | log segment size in bytes                       |
//!
//! The copies are written directly (O_DIRECT, synced), never through the pool, so a torn
//! copy is never read back into the pool, and the other copy stays intact.
//!
//! Magic, version and page size are checked before the checksum, so a file of another
//! version or page size is reported as such rather than as corrupted.

use crate::page::{self, PAGE_SIZE, PageBytes, PageKind};

pub const MAGIC: [u8; 8] = *b"bufpoolE";
/// Version 3: the write-ahead log (free list and tree counts in checkpoint records).
/// Version 4: node prefixes up to 64 bytes and slot shifts logged as moves. Version 3 kept
/// prefixes of at most 8 bytes, which version 4 reads the same way: a version-3 file opens,
/// and the open rewrites both superblock copies as version 4 before any change, so version-3
/// code then refuses the file instead of misreading its nodes or log. A copy of a newer
/// version is refused here even beside a readable one (`choose`).
pub const FORMAT_VERSION: u32 = 4;
/// The oldest version this code reads.
pub const OLDEST_READABLE_VERSION: u32 = 3;
/// The pages holding the two superblock copies.
pub const SUPERBLOCK_PAGES: [u64; 2] = [0, 1];
/// The first page that is not a superblock.
pub const FIRST_DATA_PAGE: u64 = 2;

const MAGIC_OFFSET: usize = 16;
const VERSION_OFFSET: usize = 24;
const PAGE_SIZE_OFFSET: usize = 28;
const GENERATION_OFFSET: usize = 32;
const PAGE_COUNT_OFFSET: usize = 40;
const CATALOG_ROOT_OFFSET: usize = 48;
const DB_ID_OFFSET: usize = 56;
const REDO_LSN_OFFSET: usize = 64;
const CHECKPOINT_LSN_OFFSET: usize = 72;
const SEGMENT_BYTES_OFFSET: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub generation: u64,
    pub page_count: u64,
    pub catalog_root: u64,
    pub db_id: u64,
    pub redo_lsn: u64,
    pub checkpoint_lsn: u64,
    pub segment_bytes: u64,
}

/// Why a superblock copy is unusable, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperblockProblem {
    /// Another format version (the magic matched).
    Version { found: u32 },
    /// Another page size (magic and version matched).
    PageSize { found: u32 },
    /// Magic, version and page size matched but the checksum or a field is wrong.
    Damaged { reason: String },
    /// No magic: not an engine file.
    NotOurs,
}

impl SuperblockProblem {
    fn rank(&self) -> u8 {
        match self {
            SuperblockProblem::Version { .. } => 0,
            SuperblockProblem::PageSize { .. } => 1,
            SuperblockProblem::Damaged { .. } => 2,
            SuperblockProblem::NotOurs => 3,
        }
    }
}

/// Whether the first bytes of a file carry the magic (for files too short for a page).
pub fn has_magic(prefix: &[u8]) -> bool {
    prefix.get(MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()) == Some(&MAGIC[..])
}

impl Superblock {
    /// Which page this generation is written to.
    pub fn page(&self) -> u64 {
        SUPERBLOCK_PAGES[(self.generation % 2) as usize]
    }

    /// Writes this superblock into a page (the checksum is stamped at write-back).
    pub fn encode(&self, bytes: &mut [u8]) {
        assert_eq!(bytes.len(), PAGE_SIZE);
        bytes.fill(0);
        page::init_header(bytes, PageKind::Superblock);
        bytes[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&MAGIC);
        put_u32(bytes, VERSION_OFFSET, FORMAT_VERSION);
        put_u32(bytes, PAGE_SIZE_OFFSET, PAGE_SIZE as u32);
        put_u64(bytes, GENERATION_OFFSET, self.generation);
        put_u64(bytes, PAGE_COUNT_OFFSET, self.page_count);
        put_u64(bytes, CATALOG_ROOT_OFFSET, self.catalog_root);
        put_u64(bytes, DB_ID_OFFSET, self.db_id);
        put_u64(bytes, REDO_LSN_OFFSET, self.redo_lsn);
        put_u64(bytes, CHECKPOINT_LSN_OFFSET, self.checkpoint_lsn);
        put_u64(bytes, SEGMENT_BYTES_OFFSET, self.segment_bytes);
    }

    /// The format version a copy that has the magic was written with.
    pub fn stored_version(bytes: &[u8]) -> u32 {
        bytes.u32_at(VERSION_OFFSET)
    }

    /// Reads the copy stored in page `page_id`, checking magic, version, page size,
    /// checksum and field sanity in that order.
    pub fn decode(page_id: u64, bytes: &[u8]) -> Result<Superblock, SuperblockProblem> {
        if !has_magic(bytes) {
            return Err(SuperblockProblem::NotOurs);
        }
        let found = bytes.u32_at(VERSION_OFFSET);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(SuperblockProblem::Version { found });
        }
        let found = bytes.u32_at(PAGE_SIZE_OFFSET);
        if found != PAGE_SIZE as u32 {
            return Err(SuperblockProblem::PageSize { found });
        }
        let damaged = |reason: String| Err(SuperblockProblem::Damaged { reason });
        if let Err(mismatch) = page::verify_checksum(page_id, bytes) {
            return damaged(format!(
                "superblock copy in page {page_id}: checksum {:#010x}, computed {:#010x}",
                mismatch.stored, mismatch.computed
            ));
        }
        let superblock = Superblock {
            generation: bytes.u64_at(GENERATION_OFFSET),
            page_count: bytes.u64_at(PAGE_COUNT_OFFSET),
            catalog_root: bytes.u64_at(CATALOG_ROOT_OFFSET),
            db_id: bytes.u64_at(DB_ID_OFFSET),
            redo_lsn: bytes.u64_at(REDO_LSN_OFFSET),
            checkpoint_lsn: bytes.u64_at(CHECKPOINT_LSN_OFFSET),
            segment_bytes: bytes.u64_at(SEGMENT_BYTES_OFFSET),
        };
        if let Some(reason) = superblock.insane(page_id, bytes) {
            return damaged(format!("superblock copy in page {page_id}: {reason}"));
        }
        Ok(superblock)
    }

    fn insane(&self, page_id: u64, bytes: &[u8]) -> Option<String> {
        let in_file = |page: u64| (FIRST_DATA_PAGE..self.page_count).contains(&page);
        if page::kind_of(bytes) != Some(PageKind::Superblock) {
            return Some("wrong page kind".into());
        }
        if self.page() != page_id {
            return Some(format!(
                "generation {} belongs in the other copy",
                self.generation
            ));
        }
        if !in_file(self.catalog_root) {
            return Some(format!(
                "catalog root {} outside the file",
                self.catalog_root
            ));
        }
        if self.checkpoint_lsn < self.redo_lsn {
            return Some(format!(
                "checkpoint record at {} before its redo point {}",
                self.checkpoint_lsn, self.redo_lsn
            ));
        }
        if self.segment_bytes < 1 << 20 || self.segment_bytes % 4096 != 0 {
            return Some(format!("log segment size {}", self.segment_bytes));
        }
        None
    }
}

/// The newest valid copy; if none is valid, the most specific problem.
pub fn choose(
    copies: [Result<Superblock, SuperblockProblem>; 2],
) -> Result<Superblock, SuperblockProblem> {
    let [first, second] = copies;
    // A copy written by a newer format: the other copy is older than it, so using it would
    // roll the database back (and misread what the newer code wrote since).
    for copy in [&first, &second] {
        if let Err(SuperblockProblem::Version { found }) = copy
            && *found > FORMAT_VERSION
        {
            return Err(SuperblockProblem::Version { found: *found });
        }
    }
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if a.generation >= b.generation { a } else { b }),
        (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
        (Err(a), Err(b)) => Err(if a.rank() <= b.rank() { a } else { b }),
    }
}

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(generation: u64) -> Superblock {
        Superblock {
            generation,
            page_count: 10,
            catalog_root: 2,
            db_id: 0x1234,
            redo_lsn: 4096,
            checkpoint_lsn: 8192,
            segment_bytes: 16 << 20,
        }
    }

    fn stored(superblock: &Superblock) -> Vec<u8> {
        let mut bytes = vec![0u8; PAGE_SIZE];
        superblock.encode(&mut bytes);
        page::stamp_checksum(superblock.page(), &mut bytes);
        bytes
    }

    #[test]
    fn round_trips_and_the_newest_copy_wins() {
        let (old, new) = (sample(6), sample(7));
        let decoded = [
            Superblock::decode(0, &stored(&old)),
            Superblock::decode(1, &stored(&new)),
        ];
        assert_eq!(decoded[0], Ok(old));
        assert_eq!(choose(decoded), Ok(new));
    }

    #[test]
    fn a_torn_copy_falls_back_to_the_other() {
        let (old, new) = (sample(6), sample(7));
        let mut torn = stored(&new);
        torn[2048..].fill(0xAB);
        let decoded = [
            Superblock::decode(0, &stored(&old)),
            Superblock::decode(1, &torn),
        ];
        assert!(matches!(decoded[1], Err(SuperblockProblem::Damaged { .. })));
        assert_eq!(choose(decoded), Ok(old));
    }

    #[test]
    fn problems_are_named_most_specific_first() {
        let mut other_version = stored(&sample(0));
        other_version[VERSION_OFFSET] = 9;
        let mut other_page_size = stored(&sample(1));
        put_u32(&mut other_page_size, PAGE_SIZE_OFFSET, 8192);
        assert_eq!(
            Superblock::decode(0, &other_version),
            Err(SuperblockProblem::Version { found: 9 })
        );
        assert_eq!(
            Superblock::decode(1, &other_page_size),
            Err(SuperblockProblem::PageSize { found: 8192 })
        );
        assert_eq!(
            Superblock::decode(0, &vec![0u8; PAGE_SIZE]),
            Err(SuperblockProblem::NotOurs)
        );
        let either = [
            Err(SuperblockProblem::NotOurs),
            Err(SuperblockProblem::Version { found: 9 }),
        ];
        assert_eq!(choose(either), Err(SuperblockProblem::Version { found: 9 }));
    }

    #[test]
    fn version_3_copies_still_open_and_older_ones_are_refused() {
        let superblock = sample(4);
        for (version, readable) in [(2, false), (3, true), (FORMAT_VERSION, true), (5, false)] {
            let mut bytes = stored(&superblock);
            put_u32(&mut bytes, VERSION_OFFSET, version);
            page::stamp_checksum(superblock.page(), &mut bytes);
            let decoded = Superblock::decode(superblock.page(), &bytes);
            if readable {
                assert_eq!(decoded, Ok(superblock), "version {version}");
            } else {
                assert_eq!(decoded, Err(SuperblockProblem::Version { found: version }));
            }
        }
    }

    #[test]
    fn a_copy_of_a_newer_format_is_refused_rather_than_the_older_copy_used() {
        let newer = Err(SuperblockProblem::Version {
            found: FORMAT_VERSION + 1,
        });
        for copies in [
            [newer.clone(), Ok(sample(3))],
            [Ok(sample(3)), newer.clone()],
        ] {
            assert_eq!(choose(copies), newer);
        }
        // An older, unreadable format beside a readable copy: the readable one.
        let older = Err(SuperblockProblem::Version { found: 1 });
        assert_eq!(choose([older, Ok(sample(3))]), Ok(sample(3)));
    }

    #[test]
    fn a_copy_in_the_wrong_page_is_damaged() {
        let superblock = sample(7);
        let mut bytes = vec![0u8; PAGE_SIZE];
        superblock.encode(&mut bytes);
        page::stamp_checksum(0, &mut bytes);
        assert!(matches!(
            Superblock::decode(0, &bytes),
            Err(SuperblockProblem::Damaged { .. })
        ));
    }
}
