//! `PageView`: read access to a page whose bytes may change concurrently.
//!
//! Every byte is read through Relaxed atomic loads of the aligned 8-byte words that hold it
//! (the reader's half of the seqlock pattern; the writer's half is plain stores under the
//! exclusive latch, see DESIGN.md on why that race is tolerated).
//! Safe code never gets a `&[u8]` into such a page: values are copied out, and only count once
//! the read is validated against the page's version. Accesses outside the page never panic:
//! they return zero / compare `Less` / copy nothing (the rule the engine's slice reads follow
//! too) and mark the view inconsistent, which fails validation.

use std::cell::Cell;
use std::cmp::Ordering as CmpOrdering;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::PAGE_SIZE;

const WORD: usize = size_of::<u64>();

pub struct PageView<'a> {
    base: *const u8,
    out_of_range: Cell<bool>,
    _page: PhantomData<&'a [u8]>,
}

// The loom build compiles the view for the eviction probe's signature only.
#[cfg_attr(loom, allow(dead_code))]
impl<'a> PageView<'a> {
    /// # Safety
    /// `base` is 8-aligned and `PAGE_SIZE` bytes from it stay mapped and readable for `'a`;
    /// they are only ever written by plain or atomic stores (never freed while `'a` lasts).
    pub(crate) unsafe fn new(base: *const u8) -> PageView<'a> {
        assert!(base as usize % WORD == 0, "page view base not 8-aligned");
        PageView {
            base,
            out_of_range: Cell::new(false),
            _page: PhantomData,
        }
    }

    /// True if some access fell outside the page (the result must be discarded).
    #[inline]
    pub(crate) fn out_of_range(&self) -> bool {
        self.out_of_range.get()
    }

    pub fn len(&self) -> usize {
        PAGE_SIZE
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Word `index` of the page, its bytes in address order.
    #[inline]
    fn word(&self, index: usize) -> [u8; WORD] {
        self.word_le(index).to_le_bytes()
    }

    /// Word `index` of the page read as little endian (byte at the lowest address lowest).
    #[inline]
    fn word_le(&self, index: usize) -> u64 {
        debug_assert!(index < PAGE_SIZE / WORD);
        // SAFETY: index < PAGE_SIZE / 8, so the word lies in the page, 8-aligned (new's contract);
        // the page stays mapped for 'a; AtomicU64 has u64's layout.
        let word = unsafe { &*self.base.add(index * WORD).cast::<AtomicU64>() };
        u64::from_le(word.load(Ordering::Relaxed))
    }

    #[inline]
    fn in_range(&self, offset: usize, len: usize) -> bool {
        let fits = offset.checked_add(len).is_some_and(|end| end <= PAGE_SIZE);
        if !fits {
            self.out_of_range.set(true);
        }
        fits
    }

    /// Copies `out.len()` bytes starting at `offset` (nothing if the range leaves the page).
    #[inline]
    pub fn copy_to(&self, offset: usize, out: &mut [u8]) {
        if !self.in_range(offset, out.len()) {
            return;
        }
        let end = offset + out.len();
        // Head: up to the next word boundary.
        let head = ((WORD - offset % WORD) % WORD).min(out.len());
        if head > 0 {
            let word = self.word(offset / WORD);
            let within = offset % WORD;
            out[..head].copy_from_slice(&word[within..within + head]);
        }
        // Body: whole words, one atomic load each.
        let first_word = (offset + head) / WORD;
        let mut body = out[head..].chunks_exact_mut(WORD);
        for (index, chunk) in (first_word..).zip(&mut body) {
            chunk.copy_from_slice(&self.word(index));
        }
        // Tail: a partial word.
        let tail = body.into_remainder();
        if !tail.is_empty() {
            let index = end / WORD;
            let length = tail.len();
            tail.copy_from_slice(&self.word(index)[..length]);
        }
    }

    /// `width` (1..=8) bytes at `offset` as a little-endian integer, from at most two words.
    #[inline]
    fn load_le(&self, offset: usize, width: usize) -> u64 {
        if !self.in_range(offset, width) {
            return 0;
        }
        let index = offset / WORD;
        let shift = (offset % WORD) * 8;
        let mut value = self.word_le(index) >> shift;
        if shift > 0 && shift / 8 + width > WORD {
            value |= self.word_le(index + 1) << (64 - shift);
        }
        if width < WORD {
            value & ((1u64 << (width * 8)) - 1)
        } else {
            value
        }
    }

    #[inline]
    pub fn u8_at(&self, offset: usize) -> u8 {
        self.load_le(offset, 1) as u8
    }

    #[inline]
    pub fn u16_at(&self, offset: usize) -> u16 {
        self.load_le(offset, 2) as u16
    }

    #[inline]
    pub fn u32_at(&self, offset: usize) -> u32 {
        self.load_le(offset, 4) as u32
    }

    #[inline]
    pub fn u64_at(&self, offset: usize) -> u64 {
        self.load_le(offset, 8)
    }

    /// Compares page bytes `[offset, offset + len)` with `key`, as `<[u8]>::cmp` would; a
    /// range that leaves the page compares `Less` than any key.
    pub fn compare(&self, offset: usize, len: usize, key: &[u8]) -> CmpOrdering {
        if !self.in_range(offset, len) {
            return CmpOrdering::Less;
        }
        let common = len.min(key.len());
        let mut done = 0;
        while done < common {
            let position = offset + done;
            let within = position % WORD;
            let take = (WORD - within).min(common - done);
            let word = self.word(position / WORD);
            let order = if take == WORD {
                // A whole aligned word: one integer comparison (big endian = byte order).
                let ours = u64::from_be_bytes(word);
                let theirs =
                    u64::from_be_bytes(key[done..done + WORD].try_into().expect("8 bytes"));
                ours.cmp(&theirs)
            } else {
                // At most 7 bytes: a loop, not a call to memcmp (which was 8% of a GET).
                let ours = &word[within..within + take];
                let theirs = &key[done..done + take];
                ours.iter()
                    .zip(theirs)
                    .find(|(a, b)| a != b)
                    .map_or(CmpOrdering::Equal, |(a, b)| a.cmp(b))
            };
            match order {
                CmpOrdering::Equal => done += take,
                unequal => return unequal,
            }
        }
        len.cmp(&key.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(align(4096))]
    struct Page([u8; PAGE_SIZE]);

    fn sample() -> Box<Page> {
        let mut page = Box::new(Page([0; PAGE_SIZE]));
        for (index, byte) in page.0.iter_mut().enumerate() {
            *byte = (index % 251) as u8;
        }
        page
    }

    #[test]
    fn reads_match_plain_slice() {
        let page = sample();
        // SAFETY: the box is page aligned and outlives the view.
        let view = unsafe { PageView::new(page.0.as_ptr()) };
        for offset in [0, 1, 3, 4, 5, 6, 7, 8, 13, 4086, 4087, 4088] {
            let plain = &page.0[offset..offset + 8];
            assert_eq!(
                view.u64_at(offset),
                u64::from_le_bytes(plain.try_into().unwrap())
            );
            assert_eq!(
                view.u32_at(offset),
                u32::from_le_bytes(plain[..4].try_into().unwrap())
            );
            assert_eq!(
                view.u16_at(offset),
                u16::from_le_bytes(plain[..2].try_into().unwrap())
            );
            assert_eq!(view.u8_at(offset), plain[0]);
        }
        for (offset, length) in [
            (3, 100),
            (0, 4096),
            (8, 8),
            (9, 3),
            (4093, 3),
            (5, 0),
            (16, 17),
        ] {
            let mut out = vec![0u8; length];
            view.copy_to(offset, &mut out);
            assert_eq!(
                &out[..],
                &page.0[offset..offset + length],
                "copy of {length} at {offset}"
            );
        }
        assert_eq!(
            view.u16_at(4094),
            u16::from_le_bytes([page.0[4094], page.0[4095]])
        );
        assert_eq!(view.u8_at(4095), page.0[4095]);
        assert_eq!(view.compare(3, 100, &page.0[3..103]), CmpOrdering::Equal);
        assert_eq!(view.compare(3, 100, &page.0[3..102]), CmpOrdering::Greater);
        assert_eq!(view.compare(3, 10, &[255; 10]), CmpOrdering::Less);
        for (offset, length) in [(0, 64), (5, 40), (8, 16), (4080, 16)] {
            let plain = &page.0[offset..offset + length];
            let mut key = plain.to_vec();
            assert_eq!(view.compare(offset, length, &key), CmpOrdering::Equal);
            for at in [0, length / 2, length - 1] {
                key[at] = key[at].wrapping_add(1);
                assert_eq!(
                    view.compare(offset, length, &key),
                    plain.cmp(&key[..]),
                    "{offset} {length} {at}"
                );
                key[at] = key[at].wrapping_sub(2);
                assert_eq!(
                    view.compare(offset, length, &key),
                    plain.cmp(&key[..]),
                    "{offset} {length} {at}"
                );
                key[at] = key[at].wrapping_add(1);
            }
        }
        assert!(!view.out_of_range());
        assert_eq!(view.compare(4090, 7, b"abc"), CmpOrdering::Less);
        assert_eq!(view.compare(usize::MAX, 2, b""), CmpOrdering::Less);
        assert!(view.out_of_range());
    }

    #[test]
    fn out_of_range_never_panics_and_is_flagged() {
        let page = sample();
        // SAFETY: the box is page aligned and outlives the view.
        let view = unsafe { PageView::new(page.0.as_ptr()) };
        assert_eq!(view.u64_at(4090), 0);
        assert!(view.out_of_range());
        // SAFETY: as above.
        let view = unsafe { PageView::new(page.0.as_ptr()) };
        let mut out = [7u8; 4];
        view.copy_to(usize::MAX - 1, &mut out);
        assert_eq!(out, [7; 4]);
        assert!(view.out_of_range());
    }
}
