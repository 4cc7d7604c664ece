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

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use bufpool::{Config, Pool};
    use bufpool_io::{DirectFile, OpenOptions};

    use crate::page::{PAGE_SIZE, PageBytes};

    #[test]
    fn view_and_slice_compare_agree_out_of_range() {
        // O_DIRECT needs a real filesystem: the file goes under the target directory.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join("page-view-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("compare.db");
        let _ = std::fs::remove_file(&path);
        let create = OpenOptions {
            create: true,
            ..OpenOptions::default()
        };
        let file = DirectFile::open(&path, &create).unwrap();
        let config = Config {
            page_count_max: 16,
            frame_budget_bytes: 16 * PAGE_SIZE as u64,
            eviction_batch: 4,
            ..Config::default()
        };
        let pool = Pool::open(file, config).unwrap();
        let mut page = pool.allocate().unwrap();
        for (index, byte) in page.iter_mut().enumerate() {
            *byte = (index % 251) as u8;
        }
        let id = page.page_id();
        let bytes = page.to_vec();
        drop(page);

        let guard = pool.optimistic(id).unwrap();
        let past_end: &[u8] = &[0; 8];
        let cases: [(usize, usize, &[u8]); 6] = [
            (PAGE_SIZE - 2, 3, b"abc"),
            (PAGE_SIZE - 2, 3, b""),
            (PAGE_SIZE + 1, 0, b"abc"),
            (0, PAGE_SIZE + 1, &[255; 8]),
            (usize::MAX, 2, past_end),
            (8, usize::MAX, b"\x00"),
        ];
        for (offset, len, key) in cases {
            let slice = bytes[..].compare(offset, len, key);
            let view = guard.peek(|view| PageBytes::compare(view, offset, len, key));
            assert_eq!(view, slice, "offset {offset} len {len}");
            assert_eq!(slice, Ordering::Less, "offset {offset} len {len}");
        }
        // In range both are plain memcmp order.
        let view = guard.peek(|view| PageBytes::compare(view, 3, 4, &bytes[3..7]));
        assert_eq!(view, Ordering::Equal);
        assert_eq!(bytes[..].compare(3, 4, &bytes[3..7]), Ordering::Equal);
        drop(pool);
        let _ = std::fs::remove_file(&path);
    }
}
