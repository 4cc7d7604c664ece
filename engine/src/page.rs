//! What every page starts with (checksum, kind, LSN) and the read interface the node code
//! uses on both stable bytes (`[u8]` under a latch) and bytes that may change underneath
//! (the pool's `PageView`, atomic loads).
//!
//! Page header, little endian:
//!
//! | offset | size | field                                                         |
//! |--------|------|---------------------------------------------------------------|
//! | 0      | 4    | CRC32C of bytes 4..PAGE_SIZE, seeded with the page id          |
//! | 4      | 1    | kind ([`PageKind`])                                            |
//! | 5      | 3    | reserved (zero)                                                |
//! | 8      | 8    | LSN: end of the last log record that changed the page          |
//!
//! Seeding the checksum with the page id makes a page written to the wrong place fail
//! verification too.

use std::cmp::Ordering;

/// The page size of every engine file (must equal the pool's).
pub const PAGE_SIZE: usize = 4096;

pub const CHECKSUM_OFFSET: usize = 0;
pub const KIND_OFFSET: usize = 4;
pub const LSN_OFFSET: usize = 8;
/// First byte after the common header.
pub const PAGE_HEADER_SIZE: usize = 16;

/// What a page holds; byte 4 of every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    /// Never written (all zero).
    Zero = 0,
    Superblock = 1,
    Leaf = 2,
    Inner = 3,
    Overflow = 4,
    FreeList = 5,
}

impl PageKind {
    pub fn from_byte(byte: u8) -> Option<PageKind> {
        Some(match byte {
            0 => PageKind::Zero,
            1 => PageKind::Superblock,
            2 => PageKind::Leaf,
            3 => PageKind::Inner,
            4 => PageKind::Overflow,
            5 => PageKind::FreeList,
            _ => return None,
        })
    }
}

/// The checksum a page with these bytes and this id must carry.
pub fn checksum(page_id: u64, bytes: &[u8]) -> u32 {
    assert_eq!(bytes.len(), PAGE_SIZE);
    let seed = crc32c::crc32c(&page_id.to_le_bytes());
    crc32c::crc32c_append(seed, &bytes[CHECKSUM_OFFSET + 4..])
}

/// Stamps the checksum into the header (on write-back).
pub fn stamp_checksum(page_id: u64, bytes: &mut [u8]) {
    let sum = checksum(page_id, bytes);
    bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Why a page failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumMismatch {
    pub stored: u32,
    pub computed: u32,
}

/// Verifies a page read from disk. A page that is entirely zero was never written (the
/// file grew but the page was not written back before a crash) and is accepted: it holds
/// no data, and any use of it as a node fails the kind check.
pub fn verify_checksum(page_id: u64, bytes: &[u8]) -> Result<(), ChecksumMismatch> {
    let stored = u32::from_le_bytes(
        bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4]
            .try_into()
            .unwrap(),
    );
    let computed = checksum(page_id, bytes);
    if stored == computed || bytes.iter().all(|&b| b == 0) {
        return Ok(());
    }
    Err(ChecksumMismatch { stored, computed })
}

pub fn kind_of<P: PageBytes + ?Sized>(page: &P) -> Option<PageKind> {
    PageKind::from_byte(page.u8_at(KIND_OFFSET))
}

/// Writes a fresh header (kind, zero LSN); the checksum is stamped at write-back.
pub fn init_header(bytes: &mut [u8], kind: PageKind) {
    bytes[..PAGE_HEADER_SIZE].fill(0);
    bytes[KIND_OFFSET] = kind as u8;
}

/// The page's LSN: the end of the last log record that changed it. The page may be written
/// back only once the log is durable up to it (the write-ahead rule).
pub fn lsn_of(bytes: &[u8]) -> u64 {
    bytes.u64_at(LSN_OFFSET)
}

pub fn set_lsn(bytes: &mut [u8], lsn: u64) {
    bytes[LSN_OFFSET..LSN_OFFSET + 8].copy_from_slice(&lsn.to_le_bytes());
}

/// Read access to a page's bytes. Implemented for `[u8]` (a latched page: stable) and for
/// the pool's `PageView` (an optimistic read: every access an atomic load, results to be
/// validated). Out-of-range accesses never panic: they return 0 / compare `Less` / copy
/// nothing, so garbage read from a page that changed underneath cannot crash a reader.
pub trait PageBytes {
    fn u8_at(&self, offset: usize) -> u8;
    fn u16_at(&self, offset: usize) -> u16;
    fn u32_at(&self, offset: usize) -> u32;
    fn u64_at(&self, offset: usize) -> u64;
    /// Compares the page bytes `[offset, offset + len)` with `key` (memcmp order); a range
    /// that leaves the page compares `Less` than any key, in both implementations.
    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> Ordering;
    /// Copies `out.len()` bytes starting at `offset` into `out`.
    fn copy_to(&self, offset: usize, out: &mut [u8]);
}

fn array_at<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    match offset.checked_add(N).and_then(|end| bytes.get(offset..end)) {
        Some(slice) => slice.try_into().unwrap_or([0; N]),
        None => [0; N],
    }
}

impl PageBytes for [u8] {
    fn u8_at(&self, offset: usize) -> u8 {
        self.get(offset).copied().unwrap_or(0)
    }
    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes(array_at(self, offset))
    }
    fn u32_at(&self, offset: usize) -> u32 {
        u32::from_le_bytes(array_at(self, offset))
    }
    fn u64_at(&self, offset: usize) -> u64 {
        u64::from_le_bytes(array_at(self, offset))
    }
    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> Ordering {
        match offset
            .checked_add(len)
            .and_then(|end| self.get(offset..end))
        {
            Some(stored) => stored.cmp(key),
            None => Ordering::Less,
        }
    }
    fn copy_to(&self, offset: usize, out: &mut [u8]) {
        if let Some(source) = offset
            .checked_add(out.len())
            .and_then(|end| self.get(offset..end))
        {
            out.copy_from_slice(source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_detects_a_flipped_byte_and_a_misplaced_page() {
        let mut page = vec![0u8; PAGE_SIZE];
        init_header(&mut page, PageKind::Leaf);
        page[100] = 7;
        stamp_checksum(9, &mut page);
        assert_eq!(verify_checksum(9, &page), Ok(()));
        assert!(verify_checksum(10, &page).is_err());
        page[2000] ^= 1;
        assert!(verify_checksum(9, &page).is_err());
    }

    #[test]
    fn an_all_zero_page_verifies() {
        assert_eq!(verify_checksum(3, &vec![0u8; PAGE_SIZE]), Ok(()));
    }

    #[test]
    fn out_of_range_reads_do_not_panic() {
        let page = [1u8; 64];
        let page = &page[..];
        assert_eq!(page.u64_at(60), 0);
        assert_eq!(page.u32_at(usize::MAX - 1), 0);
        assert_eq!(page.compare(60, 10, b"abc"), Ordering::Less);
        let mut out = [9u8; 8];
        page.copy_to(usize::MAX, &mut out);
        assert_eq!(out, [9u8; 8]);
    }
}
