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
//! | 48     | 8    | first free-list page (0: none)                  |
//! | 56     | 8    | number of free page ids on the list             |
//! | 64     | 8    | catalog root page                               |
//!
//! Magic, version and page size are checked before the checksum, so a file of another
//! version or page size is reported as such rather than as corrupted.

use crate::page::{self, PAGE_SIZE, PageBytes, PageKind};

pub const MAGIC: [u8; 8] = *b"bufpoolE";
/// Version 2: node headers with common prefix and search hints.
pub const FORMAT_VERSION: u32 = 2;
/// The pages holding the two superblock copies.
pub const SUPERBLOCK_PAGES: [u64; 2] = [0, 1];
/// The first page that is not a superblock.
pub const FIRST_DATA_PAGE: u64 = 2;

const MAGIC_OFFSET: usize = 16;
const VERSION_OFFSET: usize = 24;
const PAGE_SIZE_OFFSET: usize = 28;
const GENERATION_OFFSET: usize = 32;
const PAGE_COUNT_OFFSET: usize = 40;
const FREE_LIST_HEAD_OFFSET: usize = 48;
const FREE_LIST_LEN_OFFSET: usize = 56;
const CATALOG_ROOT_OFFSET: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub generation: u64,
    pub page_count: u64,
    /// First page of the persisted free list, 0 for none.
    pub free_list_head: u64,
    pub free_list_len: u64,
    pub catalog_root: u64,
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
        put_u64(bytes, FREE_LIST_HEAD_OFFSET, self.free_list_head);
        put_u64(bytes, FREE_LIST_LEN_OFFSET, self.free_list_len);
        put_u64(bytes, CATALOG_ROOT_OFFSET, self.catalog_root);
    }

    /// Reads the copy stored in page `page_id`, checking magic, version, page size,
    /// checksum and field sanity in that order.
    pub fn decode(page_id: u64, bytes: &[u8]) -> Result<Superblock, SuperblockProblem> {
        if !has_magic(bytes) {
            return Err(SuperblockProblem::NotOurs);
        }
        let found = bytes.u32_at(VERSION_OFFSET);
        if found != FORMAT_VERSION {
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
            free_list_head: bytes.u64_at(FREE_LIST_HEAD_OFFSET),
            free_list_len: bytes.u64_at(FREE_LIST_LEN_OFFSET),
            catalog_root: bytes.u64_at(CATALOG_ROOT_OFFSET),
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
        if self.free_list_head != 0 && !in_file(self.free_list_head) {
            return Some(format!(
                "free list head {} outside the file",
                self.free_list_head
            ));
        }
        if self.free_list_len >= self.page_count {
            return Some(format!(
                "free list of {} pages in a file of {}",
                self.free_list_len, self.page_count
            ));
        }
        None
    }
}

/// Writes `superblock` into its copy's page (marked dirty; durable at the next flush).
pub(crate) fn encode_into(
    pool: &bufpool::Pool,
    superblock: &Superblock,
) -> Result<(), bufpool::PoolError> {
    let mut page = pool.exclusive(bufpool::PageId(superblock.page()))?;
    superblock.encode(&mut page);
    Ok(())
}

/// The newest valid copy; if none is valid, the most specific problem.
pub fn choose(
    copies: [Result<Superblock, SuperblockProblem>; 2],
) -> Result<Superblock, SuperblockProblem> {
    let [first, second] = copies;
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
            free_list_head: 4,
            free_list_len: 3,
            catalog_root: 2,
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
