//! The log's record format: what one atomic change looks like on disk.
//!
//! The log is one byte stream; a position in it is an LSN. Every record starts 8-byte
//! aligned with this header (little endian):
//!
//! | offset | size | field                                                            |
//! |--------|------|------------------------------------------------------------------|
//! | 0      | 4    | CRC32C of bytes 4..len                                           |
//! | 4      | 4    | len: header + body, unpadded                                     |
//! | 8      | 8    | LSN of the record's first byte (a record found elsewhere is stale) |
//! | 16     | 8    | database id (from the superblock: a log of another file is refused) |
//! | 24     | 8    | durable LSN when the record was appended (everything before it was synced) |
//! | 32     | 1    | kind: 1 page change, 2 checkpoint                                |
//! | 33     | 7    | zero                                                             |
//!
//! A header of zeros is padding: inside a block it means "continue at the next block"
//! (each log write ends padded to a block, so no block holding acknowledged records is
//! ever written again); at a block boundary it is the end of the log.
//!
//! Page-change body: tree root u64, record-count delta i64 (root 0: none), then counts
//! u32 of entries, freed ids, allocated ids, then the freed ids, the allocated ids, and
//! the entries. An entry: page id u64, kind u8 (1 full image, 2 delta), zero u8, range
//! count u16, data length u32, then a 4096-byte image or ranges, applied in order:
//! `(offset u16, len u16, bytes)` sets bytes; `(offset u16, len | 0x8000 u16, source u16,
//! zero u16)` copies `len` bytes of the page from `source` to `offset` (memmove): an insert
//! or a removal shifts a node's slot array by one slot, which is logged as a move instead
//! of every shifted byte. A delta applies to the page exactly as it was before the change
//! (recovery applies it only to an intact page older than the record).
//!
//! Checkpoint body: redo LSN u64, page count u64, free-range count u64, tree count u64,
//! then `(first id, count)` per free range and `(root, record count)` per tree.

use bufpool::PageId;

use crate::page::{PAGE_SIZE, PageBytes};

/// Log writes are whole blocks, block aligned (O_DIRECT).
pub const BLOCK: u64 = 4096;
pub const HEADER_SIZE: usize = 40;
/// Largest record the reader accepts (a 1 MiB overflow value and its leaf, a checkpoint of
/// a very fragmented free list): a larger `len` is damage, not a record.
pub const RECORD_MAX: usize = 256 << 20;

pub const KIND_PAGES: u8 = 1;
pub const KIND_CHECKPOINT: u8 = 2;

pub const ENTRY_IMAGE: u8 = 1;
pub const ENTRY_DELTA: u8 = 2;
const ENTRY_HEADER: usize = 16;
const RANGE_HEADER: usize = 4;
/// Bytes that differ less than this far apart are logged as one range.
const RANGE_GAP_MAX: usize = 16;
/// A delta larger than this is logged as a full image instead.
const DELTA_MAX: usize = PAGE_SIZE / 2;
/// Marks a range as a move (lengths are at most a page, so the bit is free).
const MOVE_FLAG: u16 = 0x8000;
/// A move costs 4 bytes more than a range header: worth it from this many moved bytes.
const MOVE_MIN: usize = 32;
/// The shifts a move is looked for at, in bytes: one slot (8 bytes) either way.
const MOVE_SHIFTS: [isize; 2] = [-8, 8];

pub fn align8(value: usize) -> usize {
    value.next_multiple_of(8)
}

pub fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}
pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}
pub fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Starts a record in `out` (cleared); `finish` fills in length and checksum.
pub fn begin(out: &mut Vec<u8>, kind: u8) {
    out.clear();
    out.resize(HEADER_SIZE, 0);
    out[32] = kind;
}

/// Completes the header of the record in `out`, to be stored at `lsn`.
pub fn finish(out: &mut [u8], lsn: u64, db_id: u64, durable: u64) {
    let len = out.len() as u32;
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out[16..24].copy_from_slice(&db_id.to_le_bytes());
    out[24..32].copy_from_slice(&durable.to_le_bytes());
    let crc = crc32c::crc32c(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
}

/// A record header as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub lsn: u64,
    pub db_id: u64,
    pub durable: u64,
    pub kind: u8,
}

pub fn is_zero_header(bytes: &[u8]) -> bool {
    bytes.iter().take(HEADER_SIZE).all(|&b| b == 0)
}

/// The header at the start of `bytes`, if it is plausible (length in bounds).
pub fn header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < HEADER_SIZE {
        return None;
    }
    let len = bytes.u32_at(4) as usize;
    if !(HEADER_SIZE..=RECORD_MAX).contains(&len) {
        return None;
    }
    Some(Header {
        len,
        lsn: bytes.u64_at(8),
        db_id: bytes.u64_at(16),
        durable: bytes.u64_at(24),
        kind: bytes[32],
    })
}

/// Whether the whole record in `bytes[..len]` matches its checksum.
pub fn checksum_ok(bytes: &[u8], len: usize) -> bool {
    bytes.len() >= len && crc32c::crc32c(&bytes[4..len]) == bytes.u32_at(0)
}

/// Appends an entry for a changed page: its full image if `image` is set or the change is
/// large, else the byte ranges that differ. Returns whether an image was logged, or
/// `None` if nothing changed.
pub fn put_entry(
    out: &mut Vec<u8>,
    page: PageId,
    before: &[u8],
    after: &[u8],
    image: bool,
) -> Option<bool> {
    assert!(before.len() == PAGE_SIZE && after.len() == PAGE_SIZE);
    let mut differing = DifferingRanges::new(before, after).peekable();
    differing.peek()?;
    let start = out.len();
    put_u64(out, page.0);
    out.extend_from_slice(&[ENTRY_DELTA, 0, 0, 0, 0, 0, 0, 0]);
    if !image {
        let mut ranges = 0u16;
        let literal = |out: &mut Vec<u8>, first: usize, end: usize| -> u16 {
            if first == end {
                return 0;
            }
            put_u16(out, first as u16);
            put_u16(out, (end - first) as u16);
            out.extend_from_slice(&after[first..end]);
            1
        };
        for (first, end) in differing {
            match find_move(before, after, first, end) {
                // The move first: it reads bytes the literals around it may overwrite.
                Some(moved) => {
                    put_u16(out, moved.start as u16);
                    put_u16(out, moved.len() as u16 | MOVE_FLAG);
                    put_u16(out, moved.source as u16);
                    put_u16(out, 0);
                    ranges += 1 + literal(out, first, moved.start);
                    ranges += literal(out, moved.end, end);
                }
                None => ranges += literal(out, first, end),
            }
            if out.len() - start > DELTA_MAX {
                break;
            }
        }
        assert!(ranges > 0, "a page that differs has a differing range");
        if out.len() - start <= DELTA_MAX {
            let data_len = (out.len() - start - ENTRY_HEADER) as u32;
            out[start + 10..start + 12].copy_from_slice(&ranges.to_le_bytes());
            out[start + 12..start + 16].copy_from_slice(&data_len.to_le_bytes());
            return Some(false);
        }
        out.truncate(start + ENTRY_HEADER);
    }
    out[start + 8] = ENTRY_IMAGE;
    out[start + 12..start + 16].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    out.extend_from_slice(after);
    Some(true)
}

/// Appends a full image entry for a page whose bytes are given.
pub fn put_image(out: &mut Vec<u8>, page: PageId, bytes: &[u8]) {
    assert_eq!(bytes.len(), PAGE_SIZE);
    put_u64(out, page.0);
    out.extend_from_slice(&[ENTRY_IMAGE, 0, 0, 0]);
    put_u32(out, PAGE_SIZE as u32);
    out.extend_from_slice(bytes);
}

/// Bytes `[start, end)` of the new page that are the old page's bytes from `source` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    start: usize,
    end: usize,
    source: usize,
}

impl Move {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The longest run of whole words inside the differing range `[first, end)` that the old
/// page holds one slot away (a shifted slot array), if it is long enough to log as a move.
/// The run is grown from the range's middle word, so finding none costs two word compares.
///
/// Applying the move before the range's other bytes is exact: its source lies inside
/// `[first - 8, end + 8)`, which no earlier range of the entry touches (ranges are at least
/// `RANGE_GAP_MAX` > 8 bytes apart), and the move is applied before this range's literals.
fn find_move(before: &[u8], after: &[u8], first: usize, end: usize) -> Option<Move> {
    const _: () = assert!(RANGE_GAP_MAX > 8);
    let (low, high) = (first.div_ceil(8), end / 8);
    if high <= low || (high - low) * 8 < MOVE_MIN {
        return None;
    }
    let middle = (low + high) / 2;
    for shift in MOVE_SHIFTS {
        let words = shift / 8;
        let moved = |index: usize| {
            index
                .checked_add_signed(words)
                .filter(|&source| source < WORDS)
                .is_some_and(|source| word(after, index) == word(before, source))
        };
        if !moved(middle) {
            continue;
        }
        let (mut run_low, mut run_high) = (middle, middle + 1);
        while run_low > low && moved(run_low - 1) {
            run_low -= 1;
        }
        while run_high < high && moved(run_high) {
            run_high += 1;
        }
        if (run_high - run_low) * 8 >= MOVE_MIN {
            let start = run_low * 8;
            return Some(Move {
                start,
                end: run_high * 8,
                source: start.checked_add_signed(shift).expect("checked above"),
            });
        }
    }
    None
}

/// The byte ranges `[first, end)` where two pages differ, found a word at a time (an insert
/// shifts a slot array, so most words in a changed stretch differ and a byte loop over them
/// was a fifth of a write's CPU). Differences less than [`RANGE_GAP_MAX`] bytes apart share
/// a range (a range costs 4 bytes of header); each range starts and ends on a differing
/// byte. Ranges are ascending and disjoint.
struct DifferingRanges<'p> {
    before: &'p [u8],
    after: &'p [u8],
    word: usize,
}

const WORDS: usize = PAGE_SIZE / 8;

/// Word `index` of a page, little endian: byte `i` of the word is bits `8i..8i+8`.
#[inline(always)]
fn word(page: &[u8], index: usize) -> u64 {
    u64::from_le_bytes(page[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
}

impl<'p> DifferingRanges<'p> {
    fn new(before: &'p [u8], after: &'p [u8]) -> Self {
        assert!(before.len() == PAGE_SIZE && after.len() == PAGE_SIZE);
        DifferingRanges {
            before,
            after,
            word: 0,
        }
    }

    /// The XOR of word `index` of the two pages, as little-endian: byte `i` of the word is
    /// bits `8i..8i+8`.
    #[inline(always)]
    fn xor(&self, index: usize) -> u64 {
        word(self.before, index) ^ word(self.after, index)
    }
}

impl DifferingRanges<'_> {
    /// From `self.word` on. Equal stretches are skipped 64 bytes at a time (most of a page is
    /// unchanged by one write; the fixed-size XOR-OR compiles to a few vector instructions).
    fn first_differing_word(&self) -> Option<usize> {
        let mut index = self.word;
        while index % 8 != 0 && index < WORDS {
            if self.xor(index) != 0 {
                return Some(index);
            }
            index += 1;
        }
        while index + 8 <= WORDS {
            let at = index * 8;
            let (before, after) = (&self.before[at..at + 64], &self.after[at..at + 64]);
            let mut differs = 0u64;
            for word in 0..8 {
                let load = |page: &[u8]| {
                    u64::from_le_bytes(page[8 * word..8 * word + 8].try_into().expect("8 bytes"))
                };
                differs |= load(before) ^ load(after);
            }
            if differs != 0 {
                break;
            }
            index += 8;
        }
        (index..WORDS).find(|&index| self.xor(index) != 0)
    }
}

impl Iterator for DifferingRanges<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        // Whole words first; a range is then cut to its first and last differing byte.
        let first_word = self.first_differing_word()?;
        let mut last_word = first_word;
        let mut probe = first_word + 1;
        // The next differing byte is at most RANGE_GAP_MAX bytes past the range's end when
        // it lies within the next RANGE_GAP_MAX / 8 + 1 words; checked exactly below.
        while probe < WORDS && probe <= last_word + RANGE_GAP_MAX / 8 + 1 {
            let xor = self.xor(probe);
            if xor != 0 {
                let end = last_word * 8 + 8 - self.xor(last_word).leading_zeros() as usize / 8;
                let next = probe * 8 + xor.trailing_zeros() as usize / 8;
                if next >= end + RANGE_GAP_MAX {
                    break;
                }
                last_word = probe;
            }
            probe += 1;
        }
        self.word = last_word + 1;
        let first = first_word * 8 + self.xor(first_word).trailing_zeros() as usize / 8;
        let end = last_word * 8 + 8 - self.xor(last_word).leading_zeros() as usize / 8;
        Some((first, end))
    }
}

/// One page's change, as read back.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub page: u64,
    pub kind: u8,
    pub ranges: u16,
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// Applies the change to `page` (whose LSN the caller sets).
    pub fn apply(&self, page: &mut [u8]) -> Result<(), &'static str> {
        if self.kind == ENTRY_IMAGE {
            if self.data.len() != PAGE_SIZE {
                return Err("page image of the wrong size");
            }
            page.copy_from_slice(self.data);
            return Ok(());
        }
        let mut at = 0;
        for _ in 0..self.ranges {
            let offset = self.data.u16_at(at) as usize;
            let word = self.data.u16_at(at + 2);
            let len = (word & !MOVE_FLAG) as usize;
            if word & MOVE_FLAG != 0 {
                let source = self.data.u16_at(at + 4) as usize;
                if at + RANGE_HEADER + 4 > self.data.len() {
                    return Err("delta move past its entry");
                }
                if source.max(offset) + len > page.len() {
                    return Err("delta move past the page");
                }
                page.copy_within(source..source + len, offset);
                at += RANGE_HEADER + 4;
                continue;
            }
            let bytes = self
                .data
                .get(at + RANGE_HEADER..at + RANGE_HEADER + len)
                .ok_or("delta range past its entry")?;
            page.get_mut(offset..offset + len)
                .ok_or("delta range past the page")?
                .copy_from_slice(bytes);
            at += RANGE_HEADER + len;
        }
        if at != self.data.len() {
            return Err("delta entry of the wrong length");
        }
        Ok(())
    }
}

/// A page-change record's body, parsed.
#[derive(Debug, Default)]
pub struct PagesBody<'a> {
    pub tree_root: u64,
    pub len_delta: i64,
    pub freed: Vec<u64>,
    pub allocated: Vec<u64>,
    pub entries: Vec<Entry<'a>>,
}

/// Writes the fixed part of a page-change body; returns where the counts go.
pub fn begin_pages(
    out: &mut Vec<u8>,
    tree_root: u64,
    len_delta: i64,
    freed: &[PageId],
    allocated: &[PageId],
) -> usize {
    put_u64(out, tree_root);
    put_u64(out, len_delta as u64);
    let counts = out.len();
    put_u32(out, 0);
    put_u32(out, freed.len() as u32);
    put_u32(out, allocated.len() as u32);
    put_u32(out, 0);
    for &id in freed.iter().chain(allocated) {
        put_u64(out, id.0);
    }
    counts
}

pub fn set_pages_counts(out: &mut [u8], counts: usize, entries: u32) {
    out[counts..counts + 4].copy_from_slice(&entries.to_le_bytes());
}

pub fn parse_pages(body: &[u8]) -> Result<PagesBody<'_>, &'static str> {
    let mut cursor = Cursor { bytes: body, at: 0 };
    let tree_root = cursor.u64()?;
    let len_delta = cursor.u64()? as i64;
    let entry_count = cursor.u32()?;
    let freed_count = cursor.u32()?;
    let allocated_count = cursor.u32()?;
    cursor.u32()?;
    let mut parsed = PagesBody {
        tree_root,
        len_delta,
        ..PagesBody::default()
    };
    for _ in 0..freed_count {
        parsed.freed.push(cursor.u64()?);
    }
    for _ in 0..allocated_count {
        parsed.allocated.push(cursor.u64()?);
    }
    for _ in 0..entry_count {
        let page = cursor.u64()?;
        let kind = cursor.take(1)?[0];
        cursor.take(1)?;
        let ranges = cursor.u16()?;
        let data_len = cursor.u32()? as usize;
        let data = cursor.take(data_len)?;
        if kind != ENTRY_IMAGE && kind != ENTRY_DELTA {
            return Err("unknown entry kind");
        }
        parsed.entries.push(Entry {
            page,
            kind,
            ranges,
            data,
        });
    }
    if cursor.at != body.len() {
        return Err("trailing bytes after the entries");
    }
    Ok(parsed)
}

/// What a checkpoint record says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointBody {
    pub redo_lsn: u64,
    pub page_count: u64,
    /// Sorted, disjoint `(first, count)` ranges of free page ids.
    pub free: Vec<(u64, u64)>,
    /// `(root, record count)` of every tree.
    pub trees: Vec<(u64, u64)>,
}

impl CheckpointBody {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.redo_lsn);
        put_u64(out, self.page_count);
        put_u64(out, self.free.len() as u64);
        put_u64(out, self.trees.len() as u64);
        for &(first, count) in self.free.iter().chain(self.trees.iter()) {
            put_u64(out, first);
            put_u64(out, count);
        }
    }

    pub fn decode(body: &[u8]) -> Result<CheckpointBody, &'static str> {
        let mut cursor = Cursor { bytes: body, at: 0 };
        let redo_lsn = cursor.u64()?;
        let page_count = cursor.u64()?;
        let free_count = cursor.u64()? as usize;
        let tree_count = cursor.u64()? as usize;
        if free_count.saturating_add(tree_count).saturating_mul(16) != body.len() - cursor.at {
            return Err("checkpoint record of the wrong length");
        }
        let mut pair = || Ok::<_, &'static str>((cursor.u64()?, cursor.u64()?));
        let free = (0..free_count).map(|_| pair()).collect::<Result<_, _>>()?;
        let trees = (0..tree_count).map(|_| pair()).collect::<Result<_, _>>()?;
        Ok(CheckpointBody {
            redo_lsn,
            page_count,
            free,
            trees,
        })
    }

    /// Sorted ids as ranges.
    pub fn ranges_of(sorted: &[u64]) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &id in sorted {
            match ranges.last_mut() {
                Some((first, count)) if *first + *count == id => *count += 1,
                _ => ranges.push((id, 1)),
            }
        }
        ranges
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(len).ok_or("length overflow")?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or("record body too short")?;
        self.at = end;
        Ok(slice)
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_reproduces_the_page_and_an_unchanged_page_logs_nothing() {
        let before = vec![7u8; PAGE_SIZE];
        let mut after = before.clone();
        after[100] = 1;
        after[105] = 2;
        after[3000..3100].fill(9);
        let mut out = Vec::new();
        assert_eq!(
            put_entry(&mut out, PageId(5), &before, &before, false),
            None
        );
        assert!(out.is_empty());
        let size = round_trip_delta(&before, &after);
        assert!(size < 200, "{size}");
    }

    /// A seeded generator of numbers below a bound (xorshift64).
    fn xorshift(mut state: u64) -> impl FnMut(usize) -> usize {
        move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        }
    }

    /// The byte-at-a-time scan the word-wise `DifferingRanges` replaced: the same ranges.
    fn differing_ranges_bytewise(before: &[u8], after: &[u8]) -> Vec<(usize, usize)> {
        let mut ranges = Vec::new();
        let mut at = 0;
        while let Some(first) = (at..PAGE_SIZE).find(|&index| before[index] != after[index]) {
            let mut end = first + 1;
            let mut probe = end;
            while probe < PAGE_SIZE && probe < end + RANGE_GAP_MAX {
                if before[probe] != after[probe] {
                    end = probe + 1;
                }
                probe += 1;
            }
            ranges.push((first, end));
            at = end;
        }
        ranges
    }

    #[test]
    fn word_wise_differing_ranges_equal_the_byte_wise_ones() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..3000 {
            let before: Vec<u8> = (0..PAGE_SIZE).map(|_| next(4) as u8).collect();
            let mut after = before.clone();
            // Slot-array-like shifts, scattered bytes, and stretches near the page's ends.
            for _ in 0..1 + next(6) {
                match next(3) {
                    0 => {
                        let from = next(PAGE_SIZE - 64);
                        let len = 1 + next(63);
                        after.copy_within(from..from + len, from + 1);
                    }
                    1 => after[next(PAGE_SIZE)] ^= 1 + next(255) as u8,
                    _ => {
                        let len = 1 + next(40);
                        let from = if next(2) == 0 { 0 } else { PAGE_SIZE - len };
                        after[from..from + len].iter_mut().for_each(|b| *b = !*b);
                    }
                }
            }
            let ours: Vec<_> = DifferingRanges::new(&before, &after).collect();
            assert_eq!(
                ours,
                differing_ranges_bytewise(&before, &after),
                "round {round}"
            );
        }
    }

    /// `before` changed into `after`, logged as a delta (not an image), parsed and applied
    /// to `before`: must give `after`. Returns the entry's size.
    fn round_trip_delta(before: &[u8], after: &[u8]) -> usize {
        let mut out = Vec::new();
        assert_eq!(
            put_entry(&mut out, PageId(3), before, after, false),
            Some(false)
        );
        let mut body = Vec::new();
        let counts = begin_pages(&mut body, 0, 0, &[], &[]);
        body.extend_from_slice(&out);
        set_pages_counts(&mut body, counts, 1);
        let parsed = parse_pages(&body).unwrap();
        let mut page = before.to_vec();
        parsed.entries[0].apply(&mut page).unwrap();
        assert!(page == after, "the delta does not reproduce the page");
        out.len()
    }

    #[test]
    fn a_shifted_slot_array_is_logged_as_a_move() {
        use crate::node::{self, LeafValue};
        let mut before = vec![0u8; PAGE_SIZE];
        node::init(&mut before, 0);
        for key in (0u64..150).map(|i| 1000 + 2 * i) {
            let at = node::count(&before[..]);
            node::insert_leaf(
                &mut before,
                at,
                &key.to_be_bytes(),
                LeafValue::Inline(b"value"),
            );
        }
        // An insert at the front shifts every slot; one in the middle, half of them; a
        // removal shifts them back the other way.
        for (key, remove) in [(1u64, false), (1151, false), (1000, true), (1150, true)] {
            let mut after = before.clone();
            let (at, found) = node::lower_bound(&after[..], &key.to_be_bytes());
            assert_eq!(found, remove);
            if remove {
                node::remove(&mut after, at);
            } else {
                node::insert_leaf(
                    &mut after,
                    at,
                    &key.to_be_bytes(),
                    LeafValue::Inline(b"new"),
                );
            }
            let size = round_trip_delta(&before, &after);
            assert!(
                size < 200,
                "key {key}: a {size}-byte delta for a one-slot shift"
            );
        }
    }

    #[test]
    fn deltas_with_moves_reproduce_random_changes() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let mut deltas = 0;
        for _ in 0..3000 {
            let before: Vec<u8> = (0..PAGE_SIZE).map(|_| next(3) as u8).collect();
            let mut after = before.clone();
            for _ in 0..1 + next(5) {
                match next(4) {
                    // A slot-array shift either way, aligned or not, of any length.
                    0 | 1 => {
                        let len = 1 + next(1500);
                        let from = 8 + next(PAGE_SIZE - len - 16);
                        let to = if next(2) == 0 { from - 8 } else { from + 8 };
                        after.copy_within(from..from + len, to);
                        after[to.min(from)..to.min(from) + 8].fill(next(256) as u8);
                    }
                    2 => after[next(PAGE_SIZE)] ^= 1 + next(255) as u8,
                    _ => {
                        let len = 1 + next(40);
                        let from = next(PAGE_SIZE - len);
                        after[from..from + len].iter_mut().for_each(|b| *b = !*b);
                    }
                }
            }
            let mut out = Vec::new();
            if put_entry(&mut out, PageId(3), &before, &after, false) == Some(false) {
                round_trip_delta(&before, &after);
                deltas += 1;
            }
        }
        assert!(
            deltas > 1000,
            "only {deltas} of the changes were logged as deltas"
        );
    }

    #[test]
    fn a_large_change_is_a_full_image() {
        let before = vec![0u8; PAGE_SIZE];
        let after: Vec<u8> = (0..PAGE_SIZE).map(|i| (i % 251) as u8 + 1).collect();
        let mut out = Vec::new();
        assert_eq!(
            put_entry(&mut out, PageId(9), &before, &after, false),
            Some(true)
        );
        assert_eq!(out.len(), ENTRY_HEADER + PAGE_SIZE);
    }

    #[test]
    fn records_check_their_crc_and_checkpoints_round_trip() {
        let body = CheckpointBody {
            redo_lsn: 4096,
            page_count: 77,
            free: CheckpointBody::ranges_of(&[3, 4, 5, 9]),
            trees: vec![(2, 10), (6, 0)],
        };
        assert_eq!(body.free, vec![(3, 3), (9, 1)]);
        let mut out = Vec::new();
        begin(&mut out, KIND_CHECKPOINT);
        body.encode(&mut out);
        finish(&mut out, 8192, 42, 4096);
        let head = header(&out).unwrap();
        assert_eq!(
            (head.lsn, head.db_id, head.kind),
            (8192, 42, KIND_CHECKPOINT)
        );
        assert!(checksum_ok(&out, head.len));
        assert_eq!(CheckpointBody::decode(&out[HEADER_SIZE..]).unwrap(), body);
        out[50] ^= 1;
        assert!(!checksum_ok(&out, head.len));
    }
}
