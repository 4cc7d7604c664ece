//! The pool's concurrently changing page view as [`PageBytes`].

use std::cmp::Ordering;

use crate::page::{PAGE_SIZE, PageBytes};

const _: () = assert!(PAGE_SIZE == bufpool::PAGE_SIZE);

impl PageBytes for bufpool::PageView<'_> {
    #[inline]
    fn u8_at(&self, offset: usize) -> u8 {
        bufpool::PageView::u8_at(self, offset)
    }
    #[inline]
    fn u16_at(&self, offset: usize) -> u16 {
        bufpool::PageView::u16_at(self, offset)
    }
    #[inline]
    fn u32_at(&self, offset: usize) -> u32 {
        bufpool::PageView::u32_at(self, offset)
    }
    #[inline]
    fn u64_at(&self, offset: usize) -> u64 {
        bufpool::PageView::u64_at(self, offset)
    }
    #[inline]
    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> Ordering {
        bufpool::PageView::compare(self, offset, len, key)
    }
    #[inline]
    fn copy_to(&self, offset: usize, out: &mut [u8]) {
        bufpool::PageView::copy_to(self, offset, out)
    }
}
