//! Overflow pages: values too large for a leaf live in a chain of pages.
//!
//! Each page: header, next page u64 at 16 (0 ends the chain), chunk length u32 at 24,
//! data from 32. A chain is written before the leaf entry that points at it and never
//! changed afterwards: replacing or deleting the value retires the whole chain through the
//! allocator (epoch-deferred), so a reader pinned while it follows a chain never sees its
//! pages reused.

use bufpool::PageId;

use crate::EngineError;
use crate::page::{self, PAGE_HEADER_SIZE, PAGE_SIZE, PageKind};
use crate::shared::Shared;
use crate::wal::PageMut;

const NEXT_OFFSET: usize = PAGE_HEADER_SIZE;
const LEN_OFFSET: usize = 24;
const DATA_OFFSET: usize = 32;
/// Value bytes per overflow page.
pub const DATA_PER_PAGE: usize = PAGE_SIZE - DATA_OFFSET;

/// Writes `value` into a new chain, back to front (one latch at a time); returns its
/// first page. Each written page is handed to `keep` (to be logged with the leaf that will
/// point at the chain, or written unlogged by a bulk load).
pub(crate) fn write<'s>(
    shared: &'s Shared,
    value: &[u8],
    mut keep: impl FnMut(PageMut<'s>),
) -> Result<PageId, EngineError> {
    assert!(!value.is_empty());
    let mut next = PageId(0);
    for chunk in value.chunks(DATA_PER_PAGE).rev() {
        let mut guard = shared.allocate()?;
        page::init_header(&mut guard, PageKind::Overflow);
        guard[NEXT_OFFSET..NEXT_OFFSET + 8].copy_from_slice(&next.0.to_le_bytes());
        guard[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        guard[DATA_OFFSET..DATA_OFFSET + chunk.len()].copy_from_slice(chunk);
        next = guard.id();
        keep(guard);
    }
    Ok(next)
}

/// Reads a chain of `len` bytes into `out` (cleared first). The caller is pinned.
pub(crate) fn read_into(
    shared: &Shared,
    first: PageId,
    len: usize,
    out: &mut Vec<u8>,
) -> Result<(), EngineError> {
    out.clear();
    out.resize(len, 0);
    let mut page = first;
    for start in (0..len).step_by(DATA_PER_PAGE) {
        let expected = (len - start).min(DATA_PER_PAGE);
        let target = &mut out[start..start + expected];
        let (kind, next, chunk) = shared.pool.read(page, |view| {
            view.copy_to(DATA_OFFSET, target);
            (
                page::kind_of(view),
                PageId(view.u64_at(NEXT_OFFSET)),
                view.u32_at(LEN_OFFSET) as usize,
            )
        })?;
        if kind != Some(PageKind::Overflow) || chunk != expected {
            return Err(shared.corrupted(page, "overflow chain does not match its value length"));
        }
        page = next;
    }
    Ok(())
}

/// The pages of the chain of a value of `len` bytes starting at `first` (to free them).
/// The caller holds the latch of the leaf that points at the chain, so nobody frees it
/// meanwhile.
pub(crate) fn chain_pages(
    shared: &Shared,
    first: PageId,
    len: usize,
) -> Result<Vec<PageId>, EngineError> {
    let mut pages = Vec::with_capacity(len.div_ceil(DATA_PER_PAGE));
    let mut page = first;
    for _ in 0..len.div_ceil(DATA_PER_PAGE) {
        let (kind, next) = shared.pool.read(page, |view| {
            (page::kind_of(view), PageId(view.u64_at(NEXT_OFFSET)))
        })?;
        if kind != Some(PageKind::Overflow) {
            return Err(shared.corrupted(page, "freeing an overflow chain that is not one"));
        }
        pages.push(page);
        page = next;
    }
    Ok(pages)
}
