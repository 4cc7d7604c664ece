//! Slotted B+-tree nodes: the byte layout and every operation on it.
//!
//! Read functions are generic over [`PageBytes`], so the same binary search runs on a
//! latched page (`[u8]`) and on an optimistic `PageView` (atomic loads, validated later).
//! On garbage (a page that changed underneath) they stay in bounds and terminate: counts
//! are clamped to [`SLOTS_MAX`], searches are binary, lengths are clamped. Write functions
//! take `&mut [u8]` under an exclusive latch and `assert!` their preconditions.
//!
//! Layout after the page header (little endian):
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 16     | 2    | slot count                                                   |
//! | 18     | 2    | heap start: lowest byte of the cell heap (cells grow down)   |
//! | 20     | 2    | garbage: bytes of dead cells inside the heap                 |
//! | 22     | 1    | level: 0 for a leaf, height above the leaves for inner nodes |
//! | 23     | 1    | prefix length p (0..=64): every key in the node starts with the prefix |
//! | 24     | 8    | upper: (inner) child for keys >= the last separator          |
//! | 32     | 8    | the prefix's first 8 bytes (first min(p, 8) used)             |
//! | 40     | 64   | hints: the heads of 16 evenly spaced slots                   |
//! | 104    | 8·n  | slots, sorted by key: key head u32, cell offset u16, key length u16 |
//!
//! The key head is the 4 key bytes after the node's common prefix, read big-endian (zero
//! padded), so most comparisons of a binary search touch only the header and the slot
//! array, even when all keys start alike (e.g. small big-endian integers, or text keys
//! like `key:000000123456`). A prefix longer than the header's 8 bytes is read on from
//! the node's first key: every key starts with it, so any key holds its bytes. Keys are
//! stored whole; the prefix only changes what the heads mean. The hints (as in vmcache)
//! narrow a search to 1/17 of the slots with reads from the first two cache lines, so a
//! lookup touches few lines of a large slot array. Cells:
//!
//! * leaf: value word u32 (bit 31: value on overflow pages; bits 0..31: value length),
//!   key, then the value bytes or the first overflow page id (u64);
//! * inner: child page id u64, key. Child `i` holds the keys `k` with
//!   `separator[i-1] <= k < separator[i]`; `upper` holds the keys `>= separator[n-1]`.

use std::cmp::Ordering;
use std::ops::Range;

use bufpool::PageId;

use crate::page::{PAGE_HEADER_SIZE, PAGE_SIZE, PageBytes, PageKind, init_header, kind_of};

const COUNT_OFFSET: usize = PAGE_HEADER_SIZE;
const HEAP_START_OFFSET: usize = 18;
const GARBAGE_OFFSET: usize = 20;
const LEVEL_OFFSET: usize = 22;
const PREFIX_LEN_OFFSET: usize = 23;
const UPPER_OFFSET: usize = 24;
const PREFIX_OFFSET: usize = 32;
/// Longest common prefix a node keeps (its length is one byte; longer prefixes are rare
/// and would only lengthen the prefix compare of every search).
const PREFIX_MAX: usize = 64;
/// Prefix bytes stored in the header; the rest are read from the node's first key.
const HEADER_PREFIX: usize = 8;
const HINTS_OFFSET: usize = 40;
const HINT_COUNT: usize = 16;
const SLOTS_OFFSET: usize = HINTS_OFFSET + 4 * HINT_COUNT;
const SLOT_SIZE: usize = 8;
/// Bytes available for slots and cells.
pub const CAPACITY: usize = PAGE_SIZE - SLOTS_OFFSET;
pub const SLOTS_MAX: usize = CAPACITY / SLOT_SIZE;

const LEAF_PREFIX: usize = 4;
const INNER_PREFIX: usize = 8;
const OVERFLOW_FLAG: u32 = 1 << 31;
const OVERFLOW_REF_SIZE: usize = 8;

/// Longest key.
pub const KEY_SIZE_MAX: usize = 1024;
/// Key plus value up to this size stay in the leaf; longer values go to overflow pages.
/// Chosen so that no cell (with its slot) exceeds a third of [`CAPACITY`]: then a full
/// node split in two by bytes always leaves room for any cell in either half.
pub const INLINE_PAYLOAD_MAX: usize = 1280;
const CELL_SIZE_MAX: usize = SLOT_SIZE + LEAF_PREFIX + INLINE_PAYLOAD_MAX;
const _: () = assert!(CELL_SIZE_MAX * 3 <= CAPACITY);
const _: () = assert!(SLOT_SIZE + INNER_PREFIX + KEY_SIZE_MAX <= CELL_SIZE_MAX);
const _: () = assert!(KEY_SIZE_MAX + OVERFLOW_REF_SIZE <= INLINE_PAYLOAD_MAX);
const _: () = assert!(PAGE_SIZE <= u16::MAX as usize);

/// A node is underfull (a merge candidate) below this many used bytes.
pub const UNDERFULL_BYTES: usize = CAPACITY / 4;

/// The key's first 4 bytes as a big-endian number: orders like the keys' prefixes.
#[inline]
pub fn key_head(key: &[u8]) -> u32 {
    match key.first_chunk::<4>() {
        Some(bytes) => u32::from_be_bytes(*bytes),
        None => (leading_u64(key) >> 32) as u32,
    }
}

/// The key's first 8 bytes (zero padded) as a big-endian number.
#[inline]
fn leading_u64(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(bytes) => u64::from_be_bytes(*bytes),
        None => {
            let mut bytes = [0u8; 8];
            for (byte, &value) in bytes.iter_mut().zip(key) {
                *byte = value;
            }
            u64::from_be_bytes(bytes)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading (generic: stable or optimistic bytes)
// ---------------------------------------------------------------------------------------

#[inline]
pub fn count<P: PageBytes + ?Sized>(page: &P) -> usize {
    (page.u16_at(COUNT_OFFSET) as usize).min(SLOTS_MAX)
}

#[inline]
pub fn level<P: PageBytes + ?Sized>(page: &P) -> u16 {
    page.u8_at(LEVEL_OFFSET) as u16
}

#[inline]
pub fn is_leaf<P: PageBytes + ?Sized>(page: &P) -> bool {
    kind_of(page) == Some(PageKind::Leaf)
}

#[inline]
pub fn upper<P: PageBytes + ?Sized>(page: &P) -> PageId {
    PageId(page.u64_at(UPPER_OFFSET))
}

/// A slot: the key head, where its cell starts and how long its key is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    head: u32,
    cell: usize,
    key_len: usize,
}

#[inline]
fn slot<P: PageBytes + ?Sized>(page: &P, index: usize) -> Slot {
    let word = page.u64_at(SLOTS_OFFSET + index * SLOT_SIZE);
    Slot {
        head: word as u32,
        cell: (word >> 32) as u16 as usize,
        // Clamped: a garbage length read optimistically cannot make a reader allocate much.
        key_len: ((word >> 48) as usize).min(KEY_SIZE_MAX),
    }
}

#[inline]
fn prefix_size<P: PageBytes + ?Sized>(page: &P) -> usize {
    if is_leaf(page) {
        LEAF_PREFIX
    } else {
        INNER_PREFIX
    }
}

/// Compares slot `index`'s key past the node's prefix (`prefix_len` bytes; its cell's
/// key starts `cell_prefix` bytes in) with `suffix`, the searched key past the prefix,
/// whose head is `head`.
#[inline]
fn compare_slot<P: PageBytes + ?Sized>(
    page: &P,
    index: usize,
    (cell_prefix, prefix_len): (usize, usize),
    suffix: &[u8],
    head: u32,
) -> Ordering {
    let slot = slot(page, index);
    match slot.head.cmp(&head) {
        // Saturating: a garbage length read optimistically stays in bounds.
        Ordering::Equal => page.compare(
            slot.cell + cell_prefix + prefix_len,
            slot.key_len.saturating_sub(prefix_len),
            suffix,
        ),
        unequal => unequal,
    }
}

/// The first slot whose key is `>= key`, and whether it is equal.
#[inline]
pub fn lower_bound<P: PageBytes + ?Sized>(page: &P, key: &[u8]) -> (usize, bool) {
    let count = count(page);
    let prefix_len = (page.u8_at(PREFIX_LEN_OFFSET) as usize).min(PREFIX_MAX);
    let cell_prefix = prefix_size(page);
    // The first `shared` bytes of key and prefix: up to 8 compared as big-endian numbers
    // against the header, the rest against the first key.
    let shared = prefix_len.min(key.len());
    let header_shared = shared.min(HEADER_PREFIX);
    let mask = if header_shared == 0 {
        0
    } else {
        u64::MAX << (8 * (HEADER_PREFIX - header_shared))
    };
    let prefix = u64::from_be_bytes(page.u64_at(PREFIX_OFFSET).to_le_bytes()) & mask;
    match (leading_u64(key) & mask).cmp(&prefix) {
        Ordering::Less => return (0, false),
        Ordering::Greater => return (count, false),
        // A key that is a proper prefix of the node's prefix is below every key.
        Ordering::Equal if shared < prefix_len.min(HEADER_PREFIX) => return (0, false),
        Ordering::Equal => {}
    }
    if prefix_len > HEADER_PREFIX {
        // The stored bytes are longer than the key's part unless the key reaches past the
        // prefix, so a key ending inside the prefix compares below it, like above.
        let first = slot(page, 0).cell + cell_prefix + HEADER_PREFIX;
        match page.compare(
            first,
            prefix_len - HEADER_PREFIX,
            &key[HEADER_PREFIX..shared],
        ) {
            Ordering::Less => return (count, false),
            Ordering::Greater => return (0, false),
            Ordering::Equal => {}
        }
    }
    // Every key here starts with the prefix, and so does `key`: compare only past it.
    let suffix = &key[prefix_len..];
    let head = key_head(suffix);
    let (mut low, mut high) = hinted_range(page, count, head);
    while low < high {
        let middle = (low + high) / 2;
        match compare_slot(page, middle, (cell_prefix, prefix_len), suffix, head) {
            Ordering::Less => low = middle + 1,
            Ordering::Greater => high = middle,
            Ordering::Equal => return (middle, true),
        }
    }
    (low, false)
}

#[inline]
fn hint<P: PageBytes + ?Sized>(page: &P, index: usize) -> u32 {
    page.u32_at(HINTS_OFFSET + 4 * index)
}

/// The slots a key with this head can be at, from the hints (all of them for small nodes).
#[inline]
fn hinted_range<P: PageBytes + ?Sized>(page: &P, count: usize, head: u32) -> (usize, usize) {
    let distance = count / (HINT_COUNT + 1);
    if distance == 0 {
        return (0, count);
    }
    // First hint >= head, then first hint > head (hints are sorted like the slots).
    let (mut first, mut high) = (0, HINT_COUNT);
    while first < high {
        let middle = (first + high) / 2;
        if hint(page, middle) < head {
            first = middle + 1
        } else {
            high = middle
        }
    }
    let (mut past, mut high) = (first, HINT_COUNT);
    while past < high {
        let middle = (past + high) / 2;
        if hint(page, middle) <= head {
            past = middle + 1
        } else {
            high = middle
        }
    }
    let upper = if past < HINT_COUNT {
        ((past + 1) * distance).min(count)
    } else {
        count
    };
    (first * distance, upper)
}

/// Inner node: the index of the child holding `key` (`count` means `upper`).
#[inline]
pub fn child_index<P: PageBytes + ?Sized>(page: &P, key: &[u8]) -> usize {
    match lower_bound(page, key) {
        (index, true) => index + 1,
        (index, false) => index,
    }
}

/// Inner node: the index of the child holding the largest key `< key`.
#[inline]
pub fn child_index_before<P: PageBytes + ?Sized>(page: &P, key: &[u8]) -> usize {
    lower_bound(page, key).0
}

/// Inner node: the child page at `index` (`count` or beyond means `upper`).
#[inline]
pub fn child_at<P: PageBytes + ?Sized>(page: &P, index: usize) -> PageId {
    if index >= count(page) {
        upper(page)
    } else {
        PageId(page.u64_at(slot(page, index).cell))
    }
}

/// Appends the key of slot `index` to `out` (cleared first).
pub fn copy_key<P: PageBytes + ?Sized>(page: &P, index: usize, out: &mut Vec<u8>) {
    let slot = slot(page, index);
    out.clear();
    out.resize(slot.key_len, 0);
    page.copy_to(slot.cell + prefix_size(page), out);
}

/// The bytes of the slots `slots` in the slot array.
pub fn slot_span(slots: Range<usize>) -> Range<usize> {
    SLOTS_OFFSET + slots.start * SLOT_SIZE..SLOTS_OFFSET + slots.end * SLOT_SIZE
}

/// The bytes a reader of the leaf entries `slots` touches: their slots, and the cell heap
/// (where their cells are, among others).
pub fn leaf_spans<P: PageBytes + ?Sized>(page: &P, slots: Range<usize>) -> [Range<usize>; 2] {
    let heap_start = (page.u16_at(HEAP_START_OFFSET) as usize).min(PAGE_SIZE);
    [slot_span(slots), heap_start..PAGE_SIZE]
}

/// Where the key of slot `index` is: (offset, length) in the page. Like every read here,
/// unchecked: a reader of a private copy slices with `get`.
#[inline]
pub fn key_ref<P: PageBytes + ?Sized>(page: &P, index: usize) -> (usize, usize) {
    let slot = slot(page, index);
    (slot.cell + prefix_size(page), slot.key_len)
}

/// Copies what a reader of the leaf entries `slots` needs into `out`, a page-sized buffer,
/// at the same offsets: the node header, those slots, and the span of cells from the lowest
/// of theirs to the end of the highest (keys and inline values). The rest of `out` is left
/// as it was. A scan's private copy of part of a leaf, made before validating: on garbage it
/// stays in bounds.
pub fn copy_leaf_slots<P: PageBytes + ?Sized>(page: &P, slots: Range<usize>, out: &mut [u8]) {
    assert_eq!(out.len(), PAGE_SIZE);
    page.copy_to(0, &mut out[..SLOTS_OFFSET]);
    let slots = slots.start.min(SLOTS_MAX)..slots.end.min(SLOTS_MAX);
    if slots.is_empty() {
        return;
    }
    let slot_bytes = SLOTS_OFFSET + slots.start * SLOT_SIZE..SLOTS_OFFSET + slots.end * SLOT_SIZE;
    page.copy_to(slot_bytes.start, &mut out[slot_bytes]);
    let (mut low, mut high) = (PAGE_SIZE, slot(&out[..], slots.start));
    for index in slots {
        let slot = slot(&out[..], index);
        low = low.min(slot.cell);
        if slot.cell > high.cell {
            high = slot;
        }
    }
    let word = page.u32_at(high.cell);
    let tail = if word & OVERFLOW_FLAG != 0 {
        OVERFLOW_REF_SIZE
    } else {
        word as usize
    };
    let end = (high.cell + LEAF_PREFIX + high.key_len + tail).min(PAGE_SIZE);
    let low = low.min(end);
    page.copy_to(low, &mut out[low..end]);
}

/// Where a leaf entry's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRef {
    Inline { offset: usize, len: usize },
    Overflow { first: PageId, len: usize },
}

/// Leaf node: where the value of slot `index` is. Lengths are clamped to what can be
/// real, so garbage cannot make a reader allocate without bound.
#[inline]
pub fn value_ref<P: PageBytes + ?Sized>(page: &P, index: usize) -> ValueRef {
    let slot = slot(page, index);
    let word = page.u32_at(slot.cell);
    let tail = slot.cell + LEAF_PREFIX + slot.key_len;
    if word & OVERFLOW_FLAG != 0 {
        let len = ((word & !OVERFLOW_FLAG) as usize).min(crate::VALUE_SIZE_MAX);
        ValueRef::Overflow {
            first: PageId(page.u64_at(tail)),
            len,
        }
    } else {
        ValueRef::Inline {
            offset: tail,
            len: (word as usize).min(PAGE_SIZE),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writing (latched bytes)
// ---------------------------------------------------------------------------------------

fn read_u16(bytes: &[u8], offset: usize) -> usize {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]]) as usize
}

fn write_u16(bytes: &mut [u8], offset: usize, value: usize) {
    assert!(value <= u16::MAX as usize);
    bytes[offset..offset + 2].copy_from_slice(&(value as u16).to_le_bytes());
}

/// Formats `bytes` as an empty node (leaf if `level == 0`).
pub fn init(bytes: &mut [u8], level: u16) {
    assert_eq!(bytes.len(), PAGE_SIZE);
    init_header(
        bytes,
        if level == 0 {
            PageKind::Leaf
        } else {
            PageKind::Inner
        },
    );
    reset_node_header(bytes, level);
}

fn reset_node_header(bytes: &mut [u8], level: u16) {
    assert!(level <= u8::MAX as u16);
    write_u16(bytes, COUNT_OFFSET, 0);
    write_u16(bytes, HEAP_START_OFFSET, PAGE_SIZE);
    write_u16(bytes, GARBAGE_OFFSET, 0);
    bytes[LEVEL_OFFSET] = level as u8;
    bytes[PREFIX_LEN_OFFSET] = 0;
    bytes[PREFIX_OFFSET..SLOTS_OFFSET].fill(0);
    set_upper(bytes, PageId(0));
}

/// Samples the heads of slots `d, 2d, .., 16d` (`d = count / 17`) into the hints.
fn update_hints(bytes: &mut [u8]) {
    let distance = count(bytes) / (HINT_COUNT + 1);
    for index in 0..HINT_COUNT {
        let head = if distance == 0 {
            0
        } else {
            slot(bytes, distance * (index + 1)).head
        };
        let at = HINTS_OFFSET + 4 * index;
        bytes[at..at + 4].copy_from_slice(&head.to_le_bytes());
    }
}

fn prefix_len(bytes: &[u8]) -> usize {
    bytes[PREFIX_LEN_OFFSET] as usize
}

/// Sets the node's common prefix to `key[..len]` and recomputes every slot's head. Every
/// key in the node (the first one above all: it holds the bytes past the header's) must
/// start with it.
fn set_prefix(bytes: &mut [u8], key: &[u8], len: usize) {
    assert!(len <= PREFIX_MAX && len <= key.len());
    let header = len.min(HEADER_PREFIX);
    let mut prefix = [0u8; HEADER_PREFIX];
    prefix[..header].copy_from_slice(&key[..header]);
    bytes[PREFIX_OFFSET..PREFIX_OFFSET + HEADER_PREFIX].copy_from_slice(&prefix);
    bytes[PREFIX_LEN_OFFSET] = len as u8;
    for index in 0..count(bytes) {
        let slot = slot(bytes, index);
        let key = key_of(bytes, index);
        debug_assert!(key.len() >= len, "a key shorter than the node's prefix");
        let head = key_head(&key[len..]);
        write_slot(bytes, index, head, slot.cell, slot.key_len);
    }
    update_hints(bytes);
}

/// Checks the prefix and the slot heads against the keys (for `verify`): every key starts
/// with the prefix (the header's bytes, and the first key's past them), and every head is the
/// key's 4 bytes past it.
pub fn check_prefix_and_heads(bytes: &[u8]) -> Result<(), String> {
    let len = prefix_len(bytes);
    if len > PREFIX_MAX {
        return Err(format!("prefix length {len} above {PREFIX_MAX}"));
    }
    let header = &bytes[PREFIX_OFFSET..PREFIX_OFFSET + len.min(HEADER_PREFIX)];
    let first = key_of(bytes, 0);
    for index in 0..count(bytes) {
        let key = key_of(bytes, index);
        if key.len() < len || !key.starts_with(header) || key[..len] != first[..len] {
            return Err(format!("key {index} does not start with the node's prefix"));
        }
        if slot(bytes, index).head != key_head(&key[len..]) {
            return Err(format!("slot {index}'s head is not its key's"));
        }
    }
    Ok(())
}

/// Recomputes the common prefix from the keys (sorted: the first and the last suffice).
fn recompute_prefix(bytes: &mut [u8]) {
    let n = count(bytes);
    if n == 0 {
        set_prefix(bytes, &[], 0);
        return;
    }
    let (first, last) = (key_of(bytes, 0), key_of(bytes, n - 1));
    let common = common_len(first, last).min(PREFIX_MAX);
    let mut prefix = [0u8; PREFIX_MAX];
    prefix[..common].copy_from_slice(&first[..common]);
    set_prefix(bytes, &prefix, common);
}

fn common_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(a, b)| a == b).count()
}

/// Keeps the prefix a prefix of `key` (about to be inserted): shortens it if need be.
fn admit_key(bytes: &mut [u8], key: &[u8]) {
    if count(bytes) == 0 {
        set_prefix(bytes, key, key.len().min(PREFIX_MAX));
        return;
    }
    let len = prefix_len(bytes);
    // The first key holds the whole prefix; copied out only when it shrinks (set_prefix
    // rewrites the slots the first key is read through).
    let common = common_len(&key_of(bytes, 0)[..len], key);
    if common < len {
        let mut prefix = [0u8; PREFIX_MAX];
        prefix[..common].copy_from_slice(&key[..common]);
        set_prefix(bytes, &prefix, common);
    }
}

pub fn set_upper(bytes: &mut [u8], child: PageId) {
    bytes[UPPER_OFFSET..UPPER_OFFSET + 8].copy_from_slice(&child.0.to_le_bytes());
}

fn free_contiguous(bytes: &[u8]) -> usize {
    read_u16(bytes, HEAP_START_OFFSET) - (SLOTS_OFFSET + count(bytes) * SLOT_SIZE)
}

fn free_total(bytes: &[u8]) -> usize {
    free_contiguous(bytes) + read_u16(bytes, GARBAGE_OFFSET)
}

/// Bytes in use by slots and live cells.
pub fn used(bytes: &[u8]) -> usize {
    CAPACITY - free_total(bytes)
}

/// [`used`] read optimistically: saturating, so garbage cannot overflow (validate after).
pub fn used_of<P: PageBytes + ?Sized>(page: &P) -> usize {
    let heap_start = page.u16_at(HEAP_START_OFFSET) as usize;
    let slots_end = SLOTS_OFFSET + count(page) * SLOT_SIZE;
    let free = heap_start.saturating_sub(slots_end) + page.u16_at(GARBAGE_OFFSET) as usize;
    CAPACITY.saturating_sub(free)
}

fn cell_len(bytes: &[u8], index: usize) -> usize {
    let slot = slot(bytes, index);
    if is_leaf(bytes) {
        let word = bytes.u32_at(slot.cell);
        let tail = if word & OVERFLOW_FLAG != 0 {
            OVERFLOW_REF_SIZE
        } else {
            word as usize
        };
        LEAF_PREFIX + slot.key_len + tail
    } else {
        INNER_PREFIX + slot.key_len
    }
}

/// A leaf value as stored: inline bytes or a reference to an overflow chain.
#[derive(Debug, Clone, Copy)]
pub enum LeafValue<'a> {
    Inline(&'a [u8]),
    Overflow { first: PageId, len: usize },
}

/// Bytes a leaf entry takes, its slot included.
pub fn leaf_entry_size(key_len: usize, value: &LeafValue<'_>) -> usize {
    let tail = match value {
        LeafValue::Inline(bytes) => bytes.len(),
        LeafValue::Overflow { .. } => OVERFLOW_REF_SIZE,
    };
    SLOT_SIZE + LEAF_PREFIX + key_len + tail
}

/// Bytes an inner entry takes, its slot included.
pub fn inner_entry_size(key_len: usize) -> usize {
    SLOT_SIZE + INNER_PREFIX + key_len
}

/// Whether an entry of `entry_size` bytes fits (after compaction if need be).
pub fn fits(bytes: &[u8], entry_size: usize) -> bool {
    count(bytes) < SLOTS_MAX && free_total(bytes) >= entry_size
}

/// Whether slot `index`'s entry can be replaced by one of `entry_size` bytes.
pub fn fits_replacing(bytes: &[u8], index: usize, entry_size: usize) -> bool {
    free_total(bytes) + cell_len(bytes, index) + SLOT_SIZE >= entry_size
}

/// Inserts a leaf entry at `index` (from [`lower_bound`]). Precondition: [`fits`].
pub fn insert_leaf(bytes: &mut [u8], index: usize, key: &[u8], value: LeafValue<'_>) {
    assert!(is_leaf(bytes));
    let (word, tail_inline, tail_ref) = match value {
        LeafValue::Inline(value) => (value.len() as u32, value, [0u8; 8]),
        LeafValue::Overflow { first, len } => {
            (len as u32 | OVERFLOW_FLAG, &[][..], first.0.to_le_bytes())
        }
    };
    assert!(word & !OVERFLOW_FLAG <= crate::VALUE_SIZE_MAX as u32);
    let tail: &[u8] = if word & OVERFLOW_FLAG != 0 {
        &tail_ref
    } else {
        tail_inline
    };
    insert_cell(bytes, index, key, &word.to_le_bytes(), tail);
}

/// Inserts an inner entry (separator `key`, `child` for keys below it) at `index`.
pub fn insert_inner(bytes: &mut [u8], index: usize, key: &[u8], child: PageId) {
    assert!(!is_leaf(bytes));
    insert_cell(bytes, index, key, &child.0.to_le_bytes(), &[]);
}

/// Inner node: points slot `index` (or `upper` for `index == count`) at `child`.
pub fn set_child(bytes: &mut [u8], index: usize, child: PageId) {
    assert!(!is_leaf(bytes) && index <= count(bytes));
    if index == count(bytes) {
        set_upper(bytes, child);
    } else {
        let cell = slot(bytes, index).cell;
        bytes[cell..cell + 8].copy_from_slice(&child.0.to_le_bytes());
    }
}

fn insert_cell(bytes: &mut [u8], index: usize, key: &[u8], prefix: &[u8], tail: &[u8]) {
    let n = count(bytes);
    let cell_size = prefix.len() + key.len() + tail.len();
    assert!(index <= n && key.len() <= KEY_SIZE_MAX);
    assert!(
        fits(bytes, SLOT_SIZE + cell_size),
        "insert_cell without room"
    );
    if free_contiguous(bytes) < SLOT_SIZE + cell_size {
        compact(bytes);
    }
    admit_key(bytes, key);
    let cell = read_u16(bytes, HEAP_START_OFFSET) - cell_size;
    bytes[cell..cell + prefix.len()].copy_from_slice(prefix);
    bytes[cell + prefix.len()..cell + prefix.len() + key.len()].copy_from_slice(key);
    bytes[cell + prefix.len() + key.len()..cell + cell_size].copy_from_slice(tail);
    write_u16(bytes, HEAP_START_OFFSET, cell);
    let at = SLOTS_OFFSET + index * SLOT_SIZE;
    bytes.copy_within(at..SLOTS_OFFSET + n * SLOT_SIZE, at + SLOT_SIZE);
    write_slot(
        bytes,
        index,
        key_head(&key[prefix_len(bytes)..]),
        cell,
        key.len(),
    );
    write_u16(bytes, COUNT_OFFSET, n + 1);
    update_hints(bytes);
}

fn write_slot(bytes: &mut [u8], index: usize, head: u32, cell: usize, key_len: usize) {
    let word = head as u64 | (cell as u64) << 32 | (key_len as u64) << 48;
    let at = SLOTS_OFFSET + index * SLOT_SIZE;
    bytes[at..at + SLOT_SIZE].copy_from_slice(&word.to_le_bytes());
}

/// Leaf: overwrites the inline value of slot `index` with one of the same length, in place
/// (no garbage, no slot moves). Returns false if the stored value is not inline of that length.
pub fn overwrite_inline(bytes: &mut [u8], index: usize, value: &[u8]) -> bool {
    assert!(is_leaf(bytes) && index < count(bytes));
    match value_ref(bytes, index) {
        ValueRef::Inline { offset, len } if len == value.len() => {
            bytes[offset..offset + len].copy_from_slice(value);
            true
        }
        _ => false,
    }
}

/// Removes slot `index`; its cell becomes garbage.
pub fn remove(bytes: &mut [u8], index: usize) {
    let n = count(bytes);
    assert!(index < n);
    let garbage = read_u16(bytes, GARBAGE_OFFSET) + cell_len(bytes, index);
    write_u16(bytes, GARBAGE_OFFSET, garbage);
    let at = SLOTS_OFFSET + index * SLOT_SIZE;
    bytes.copy_within(at + SLOT_SIZE..SLOTS_OFFSET + n * SLOT_SIZE, at);
    write_u16(bytes, COUNT_OFFSET, n - 1);
    update_hints(bytes);
}

/// Appends slot `index` of `source` (same kind) after the last slot of `dest`. The head is
/// copied as is: callers that mix nodes with other prefixes call [`recompute_prefix`].
fn append_from(dest: &mut [u8], source: &[u8], index: usize) {
    let slot = slot(source, index);
    let len = cell_len(source, index);
    let n = count(dest);
    let cell = read_u16(dest, HEAP_START_OFFSET) - len;
    assert!(
        cell >= SLOTS_OFFSET + (n + 1) * SLOT_SIZE,
        "append_from without room"
    );
    dest[cell..cell + len].copy_from_slice(&source[slot.cell..slot.cell + len]);
    write_u16(dest, HEAP_START_OFFSET, cell);
    write_slot(dest, n, slot.head, cell, slot.key_len);
    write_u16(dest, COUNT_OFFSET, n + 1);
}

fn append_range(dest: &mut [u8], source: &[u8], range: std::ops::Range<usize>) {
    for index in range {
        append_from(dest, source, index);
    }
}

/// Rewrites the heap without garbage.
fn compact(bytes: &mut [u8]) {
    let scratch: [u8; PAGE_SIZE] = (&*bytes).try_into().unwrap();
    let upper = upper(&scratch[..]);
    reset_node_header(bytes, level(&scratch[..]));
    set_upper(bytes, upper);
    // Same keys, same prefix: the heads stay valid.
    bytes[PREFIX_LEN_OFFSET..PREFIX_OFFSET + HEADER_PREFIX]
        .copy_from_slice(&scratch[PREFIX_LEN_OFFSET..PREFIX_OFFSET + HEADER_PREFIX]);
    append_range(bytes, &scratch, 0..count(&scratch[..]));
    update_hints(bytes);
}

/// How a split divides a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// Halves by bytes: room on both sides for keys arriving anywhere.
    Balanced,
    /// The key being added sorts after every key of a node that is its parent's last child
    /// (or the root): keys arriving in ascending order, over the whole tree or within one
    /// key range (a list's members). The left keeps all but the last entry (leaves) or the
    /// last two (inner nodes: one moves up, one stays on the right), so an ascending load
    /// fills its pages instead of leaving each half empty.
    Append,
}

/// `Append` if `key` sorts after every key of `bytes` and the node is its parent's last
/// child (`last_child`, true for the root), else `Balanced`.
pub fn split_kind_for<P: PageBytes + ?Sized>(bytes: &P, key: &[u8], last_child: bool) -> SplitKind {
    let past_every_key = matches!(lower_bound(bytes, key), (index, false) if index == count(bytes));
    if last_child && past_every_key {
        SplitKind::Append
    } else {
        SplitKind::Balanced
    }
}

/// Where to split: left keeps slots `0..m`.
fn split_point(bytes: &[u8], kind: SplitKind) -> usize {
    let n = count(bytes);
    match kind {
        SplitKind::Append if level(bytes) == 0 => (n - 1).max(1),
        SplitKind::Append => n.saturating_sub(2).max(1),
        SplitKind::Balanced => balanced_split_point(bytes),
    }
}

/// Balances bytes, so each half holds at most half the total plus half the largest entry.
fn balanced_split_point(bytes: &[u8]) -> usize {
    let n = count(bytes);
    let total: usize = (0..n).map(|i| cell_len(bytes, i) + SLOT_SIZE).sum();
    let mut left = 0;
    for index in 0..n {
        let size = cell_len(bytes, index) + SLOT_SIZE;
        if 2 * (left + size) > total {
            // Put this entry on the side that ends up closer to half.
            let with_it = left + size - total / 2;
            let without_it = total / 2 - left;
            let m = if with_it < without_it {
                index + 1
            } else {
                index
            };
            return m.clamp(1, n - 1);
        }
        left += size;
    }
    n - 1
}

/// The shortest key `s` with `left_last < s <= right_first`.
pub fn shortest_separator(left_last: &[u8], right_first: &[u8], out: &mut Vec<u8>) {
    assert!(left_last < right_first);
    let common = left_last
        .iter()
        .zip(right_first)
        .take_while(|(a, b)| a == b)
        .count();
    out.clear();
    out.extend_from_slice(&right_first[..common + 1]);
}

fn key_of(bytes: &[u8], index: usize) -> &[u8] {
    let slot = slot(bytes, index);
    let start = slot.cell + prefix_size(bytes);
    &bytes[start..start + slot.key_len]
}

/// The separator a [`split`] of this node would produce (to check the parent has room
/// before splitting).
pub fn split_separator(bytes: &[u8], kind: SplitKind, separator: &mut Vec<u8>) {
    let m = split_point(bytes, kind);
    if level(bytes) == 0 {
        shortest_separator(key_of(bytes, m - 1), key_of(bytes, m), separator);
    } else {
        separator.clear();
        separator.extend_from_slice(key_of(bytes, m));
    }
}

/// Moves the upper half of `left` into `right` (fresh, any content). Afterwards every key
/// in `left` is `< separator <= ` every key in `right`. For inner nodes the middle
/// separator moves up: it is returned and `left.upper` becomes its child.
pub fn split(left: &mut [u8], right: &mut [u8], kind: SplitKind, separator: &mut Vec<u8>) {
    let n = count(left);
    assert!(n >= 2, "split of a node with {n} entries");
    let scratch: [u8; PAGE_SIZE] = (&*left).try_into().unwrap();
    let level = level(&scratch[..]);
    let m = split_point(&scratch, kind);
    split_separator(&scratch, kind, separator);
    init(right, level);
    reset_node_header(left, level);
    append_range(left, &scratch, 0..m);
    if level == 0 {
        append_range(right, &scratch, m..n);
    } else {
        set_upper(left, child_at(&scratch[..], m));
        append_range(right, &scratch, m + 1..n);
        set_upper(right, upper(&scratch[..]));
    }
    recompute_prefix(left);
    recompute_prefix(right);
}

/// Bytes one node holding both `left` and `right` (and, for inner nodes, the separator
/// between them) would use.
pub fn merged_size(left: &[u8], right: &[u8], separator_len: usize) -> usize {
    let pulled_down = if is_leaf(left) {
        0
    } else {
        inner_entry_size(separator_len)
    };
    used(left) + used(right) + pulled_down
}

/// Whether `left` and `right` (adjacent siblings, `separator` between them in the parent)
/// fit in one node.
pub fn can_merge(left: &[u8], right: &[u8], separator_len: usize) -> bool {
    merged_size(left, right, separator_len) <= CAPACITY && count(left) + count(right) < SLOTS_MAX
}

/// Moves every entry of `left` in front of `right`'s; `left` is then unused. For inner
/// nodes the parent's separator comes down between them, pointing at `left.upper`.
pub fn merge_into_right(left: &[u8], right: &mut [u8], separator: &[u8]) {
    assert!(can_merge(left, right, separator.len()));
    assert_eq!(level(left), level(right));
    let scratch: [u8; PAGE_SIZE] = (&*right).try_into().unwrap();
    let level = level(&scratch[..]);
    reset_node_header(right, level);
    append_range(right, left, 0..count(left));
    if level > 0 {
        let n = count(right);
        insert_inner(right, n, separator, upper(left));
    }
    append_range(right, &scratch, 0..count(&scratch[..]));
    set_upper(right, upper(&scratch[..]));
    recompute_prefix(right);
}

/// Copies a whole node (e.g. into the fixed root page, or out of it on a root split).
pub fn copy_node(dest: &mut [u8], source: &[u8]) {
    dest.copy_from_slice(source);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        init(&mut page, 0);
        page
    }

    fn put(page: &mut [u8], key: &[u8], value: &[u8]) -> bool {
        let value = LeafValue::Inline(value);
        let (index, found) = lower_bound(page, key);
        if found {
            if !fits_replacing(page, index, leaf_entry_size(key.len(), &value)) {
                return false;
            }
            remove(page, index);
        } else if !fits(page, leaf_entry_size(key.len(), &value)) {
            return false;
        }
        insert_leaf(page, index, key, value);
        true
    }

    fn entries(page: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..count(page))
            .map(|i| {
                let ValueRef::Inline { offset, len } = value_ref(page, i) else {
                    panic!("overflow")
                };
                (
                    key_of(page, i).to_vec(),
                    page[offset..offset + len].to_vec(),
                )
            })
            .collect()
    }

    fn pseudo_random(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn leaf_keeps_entries_sorted_until_full_and_finds_them() {
        let mut page = leaf();
        let mut model = std::collections::BTreeMap::new();
        let mut seed = 42;
        loop {
            let n = pseudo_random(&mut seed);
            let key = (n % 5000).to_be_bytes()[4..].to_vec();
            let value = vec![n as u8; (n % 40) as usize];
            if !put(&mut page, &key, &value) {
                break;
            }
            model.insert(key, value);
        }
        assert!(model.len() > 50);
        assert_eq!(entries(&page), model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn short_keys_that_share_a_head_compare_by_full_key() {
        let mut page = leaf();
        for key in [&b"ab"[..], b"ab\0", b"a", b"", b"ab\0\0\x01", b"b"] {
            assert!(put(&mut page, key, key));
        }
        let keys: Vec<_> = entries(&page).into_iter().map(|(k, _)| k).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(lower_bound(&page[..], b"ab\0"), (3, true));
        assert_eq!(lower_bound(&page[..], b"aa"), (2, false));
    }

    #[test]
    fn keys_sharing_a_long_prefix_search_by_the_bytes_after_it() {
        let mut page = leaf();
        for i in (0u64..150).map(|i| i * 3 + 1000) {
            assert!(put(&mut page, &i.to_be_bytes(), b"v"));
        }
        assert_eq!(page[PREFIX_LEN_OFFSET], 6);
        for probe in 0u64..2000 {
            let expected = (probe.max(1000) - 1000).div_ceil(3).min(150) as usize;
            let found = (1000..1450).contains(&probe) && (probe - 1000) % 3 == 0;
            assert_eq!(
                lower_bound(&page[..], &probe.to_be_bytes()),
                (expected, found),
                "probe {probe}"
            );
        }
        // Keys outside the prefix: shorter, smaller, larger; inserting one shortens it.
        assert_eq!(lower_bound(&page[..], &[0, 0]), (0, false));
        assert_eq!(lower_bound(&page[..], &[]), (0, false));
        assert_eq!(lower_bound(&page[..], &[1]), (150, false));
        assert!(put(&mut page, &[0, 0, 0, 0, 0, 1], b"short"));
        assert_eq!(page[PREFIX_LEN_OFFSET], 5);
        assert_eq!(lower_bound(&page[..], &[0, 0, 0, 0, 0, 1]), (150, true));
        assert_eq!(lower_bound(&page[..], &1003u64.to_be_bytes()), (1, true));
    }

    /// `lower_bound` against the sorted keys, for every key and for probes around the
    /// prefix: its own prefixes, one byte lower or higher at each position, longer keys.
    fn assert_searches_like_sorted_keys(page: &[u8], keys: &[Vec<u8>]) {
        let mut probes: Vec<Vec<u8>> = keys.to_vec();
        let first = &keys[0];
        for at in 0..=first.len() {
            probes.push(first[..at].to_vec());
            for delta in [-1i16, 1] {
                if at < first.len() {
                    let mut probe = first.clone();
                    probe[at] = (probe[at] as i16 + delta).clamp(0, 255) as u8;
                    probes.push(probe);
                }
            }
        }
        probes.extend(keys.iter().map(|key| [key.as_slice(), b"\0"].concat()));
        for probe in &probes {
            let expected = keys.partition_point(|key| key < probe);
            let found = keys.get(expected) == Some(probe);
            assert_eq!(lower_bound(page, probe), (expected, found), "{probe:?}");
        }
    }

    #[test]
    fn text_keys_sharing_more_than_the_header_prefix_search_past_it() {
        let mut page = leaf();
        let mut seed = 7;
        for base in [
            &b"key:000000"[..],
            b"user:profile:region-eu-west-1:shard-0000:",
            &[b'x'; 90],
        ] {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            while count(&page[..]) > 0 {
                remove(&mut page, 0);
            }
            for _ in 0..30 {
                let digits = format!("{:06}", pseudo_random(&mut seed) % 1_000_000);
                let key = [base, digits.as_bytes()].concat();
                assert!(put(&mut page, &key, b"v"));
                if let Err(at) = keys.binary_search(&key) {
                    keys.insert(at, key);
                }
            }
            let common = common_len(&keys[0], &keys[keys.len() - 1]).min(PREFIX_MAX);
            assert!(
                prefix_len(&page) >= common.min(base.len()),
                "prefix not kept"
            );
            assert_searches_like_sorted_keys(&page, &keys);
            // A key leaving the prefix halfway shortens it; every search still agrees.
            let mut outsider = keys[0].clone();
            outsider.truncate(base.len() / 2);
            outsider.push(b'!');
            assert!(put(&mut page, &outsider, b"w"));
            let at = keys.partition_point(|key| key < &outsider);
            keys.insert(at, outsider);
            assert!(prefix_len(&page) <= base.len() / 2);
            assert_searches_like_sorted_keys(&page, &keys);
            assert_eq!(entries(&page).len(), keys.len());
        }
        // A split and a merge recompute the prefix of each side from its own keys.
        let mut right = vec![0u8; PAGE_SIZE];
        let mut separator = Vec::new();
        let keys: Vec<Vec<u8>> = entries(&page).into_iter().map(|(key, _)| key).collect();
        split(&mut page, &mut right, SplitKind::Balanced, &mut separator);
        let m = count(&page[..]);
        assert_searches_like_sorted_keys(&page, &keys[..m]);
        assert_searches_like_sorted_keys(&right, &keys[m..]);
        merge_into_right(&page, &mut right, &separator);
        assert_searches_like_sorted_keys(&right, &keys);
    }

    #[test]
    fn hints_narrow_the_search_without_changing_its_result() {
        let mut page = vec![0u8; PAGE_SIZE];
        init(&mut page, 1);
        // Runs of equal heads (keys differing only past the head) across hint boundaries.
        let keys: Vec<Vec<u8>> = (0u32..150)
            .map(|i| [(i / 20).to_be_bytes(), i.to_be_bytes()].concat())
            .collect();
        for (index, key) in keys.iter().enumerate() {
            insert_inner(&mut page, index, key, PageId(index as u64));
        }
        for probe in 0u32..170 {
            for key in [
                [(probe / 20).to_be_bytes(), probe.to_be_bytes()].concat(),
                (probe / 20).to_be_bytes().to_vec(),
            ] {
                let expected = keys.partition_point(|k| k < &key);
                let found = keys.get(expected) == Some(&key);
                assert_eq!(lower_bound(&page[..], &key), (expected, found), "{key:?}");
            }
        }
    }

    #[test]
    fn removing_and_reinserting_compacts_garbage() {
        let mut page = leaf();
        let mut index = 0u32;
        while put(&mut page, &index.to_be_bytes(), &[1; 50]) {
            index += 1;
        }
        for key in (0..index).step_by(2) {
            let (slot, found) = lower_bound(&page[..], &key.to_be_bytes());
            assert!(found);
            remove(&mut page, slot);
        }
        // The freed space is garbage, reachable only through compaction.
        let mut added = 0;
        for key in (0..index).step_by(2) {
            if put(&mut page, &key.to_be_bytes(), &[2; 50]) {
                added += 1;
            }
        }
        assert_eq!(added, index.div_ceil(2));
        assert_eq!(count(&page[..]), index as usize);
    }

    #[test]
    fn leaf_split_balances_and_separates() {
        let mut left = leaf();
        let mut index = 0u32;
        while put(&mut left, &(index * 3).to_be_bytes(), &[7; 100]) {
            index += 1;
        }
        let before = entries(&left);
        let mut right = vec![0u8; PAGE_SIZE];
        let mut separator = Vec::new();
        split(&mut left, &mut right, SplitKind::Balanced, &mut separator);
        let (l, r) = (entries(&left), entries(&right));
        assert!(l.len().abs_diff(r.len()) <= 1);
        assert!(l.last().unwrap().0 < separator && separator <= r[0].0);
        assert_eq!([l, r].concat(), before);
        // The new halves take any largest entry.
        let big = vec![9u8; INLINE_PAYLOAD_MAX - 8];
        assert!(fits(&left, leaf_entry_size(8, &LeafValue::Inline(&big))));
        assert!(fits(&right, leaf_entry_size(8, &LeafValue::Inline(&big))));
    }

    #[test]
    fn append_split_of_a_leaf_keeps_all_but_the_last_entry_on_the_left() {
        let mut left = leaf();
        let mut index = 0u32;
        while put(&mut left, &(index * 3).to_be_bytes(), &[7; 100]) {
            index += 1;
        }
        let before = entries(&left);
        let next_key = (index * 3).to_be_bytes();
        assert_eq!(
            split_kind_for(&left[..], &next_key, true),
            SplitKind::Append
        );
        assert_eq!(
            split_kind_for(&left[..], &next_key, false),
            SplitKind::Balanced
        );
        assert_eq!(
            split_kind_for(&left[..], &3u32.to_be_bytes(), true),
            SplitKind::Balanced
        );
        let mut right = vec![0u8; PAGE_SIZE];
        let mut separator = Vec::new();
        split(&mut left, &mut right, SplitKind::Append, &mut separator);
        let (l, r) = (entries(&left), entries(&right));
        assert_eq!(r.len(), 1);
        assert!(l.last().unwrap().0 < separator && separator <= r[0].0);
        assert_eq!([l, r].concat(), before);
        assert!(next_key[..] >= separator[..], "the appended key goes right");
        let big = vec![9u8; INLINE_PAYLOAD_MAX - 8];
        assert!(fits(&right, leaf_entry_size(8, &LeafValue::Inline(&big))));
    }

    #[test]
    fn inner_split_moves_the_middle_separator_up_and_children_follow() {
        for kind in [SplitKind::Balanced, SplitKind::Append] {
            inner_split_keeps_routing(kind);
        }
    }

    fn inner_split_keeps_routing(kind: SplitKind) {
        let mut page = vec![0u8; PAGE_SIZE];
        init(&mut page, 1);
        let mut n = 0u64;
        while fits(&page, inner_entry_size(8)) {
            insert_inner(
                &mut page,
                n as usize,
                &(n * 10).to_be_bytes(),
                PageId(1000 + n),
            );
            n += 1;
        }
        set_upper(&mut page, PageId(9999));
        let probe = |page: &[u8], key: u64| child_at(page, child_index(page, &key.to_be_bytes()));
        let expected: Vec<PageId> = (0..n * 10 + 20).map(|k| probe(&page, k)).collect();
        let mut right = vec![0u8; PAGE_SIZE];
        let mut separator = Vec::new();
        split(&mut page, &mut right, kind, &mut separator);
        if kind == SplitKind::Append {
            assert_eq!(
                count(&right[..]),
                1,
                "one entry stays right of the separator"
            );
        }
        for key in 0..n * 10 + 20 {
            let side = if key.to_be_bytes()[..] < separator[..] {
                &page
            } else {
                &right
            };
            assert_eq!(probe(side, key), expected[key as usize], "key {key}");
        }
        // Merging back restores the original routing.
        merge_into_right(&page, &mut right, &separator);
        for key in 0..n * 10 + 20 {
            assert_eq!(probe(&right, key), expected[key as usize]);
        }
    }

    #[test]
    fn leaf_merge_concatenates_in_order() {
        let (mut left, mut right) = (leaf(), leaf());
        for key in 0u32..10 {
            put(&mut left, &key.to_be_bytes(), b"l");
            put(&mut right, &(key + 100).to_be_bytes(), b"r");
        }
        let expected = [entries(&left), entries(&right)].concat();
        merge_into_right(&left, &mut right, b"");
        assert_eq!(entries(&right), expected);
    }

    #[test]
    fn child_index_routes_equal_keys_right_and_before_routes_left() {
        let mut page = vec![0u8; PAGE_SIZE];
        init(&mut page, 1);
        insert_inner(&mut page, 0, b"m", PageId(1));
        set_upper(&mut page, PageId(2));
        assert_eq!(child_index(&page[..], b"a"), 0);
        assert_eq!(child_index(&page[..], b"m"), 1);
        assert_eq!(child_index_before(&page[..], b"m"), 0);
        assert_eq!(child_index_before(&page[..], b"z"), 1);
        assert_eq!(child_at(&page[..], 1), PageId(2));
    }

    #[test]
    fn garbage_bytes_never_panic_readers() {
        let mut seed = 7;
        for _ in 0..200 {
            let page: Vec<u8> = (0..PAGE_SIZE)
                .map(|_| pseudo_random(&mut seed) as u8)
                .collect();
            let key = pseudo_random(&mut seed).to_be_bytes();
            let (index, _) = lower_bound(&page[..], &key);
            let _ = child_at(&page[..], child_index(&page[..], &key));
            let _ = value_ref(&page[..], index);
            let mut out = Vec::new();
            copy_key(&page[..], index.min(SLOTS_MAX - 1), &mut out);
            assert!(out.len() <= u16::MAX as usize);
        }
    }
}
