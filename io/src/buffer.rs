//! `AlignedBuf`: owned, zeroed memory aligned for O_DIRECT, and safe I/O on it.
//!
//! The pool transfers straight to and from its mmapped frames through raw pointers
//! (`IoEngine::read_at`/`submit_batch`, `unsafe`). Callers without such a region (the
//! engine's write-ahead log, its superblock) use this buffer instead: borrowing it for the
//! whole call is what makes these transfers safe.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut, Range};
use std::ptr::NonNull;

use crate::engine::{IoEngine, IoRequest};
use crate::error::IoError;
use crate::file::{DIRECT_IO_ALIGN, DirectFile};

/// Zeroed bytes whose address is aligned to `DIRECT_IO_ALIGN`; its length is a multiple of it.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through &self, like a Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, rounded up to a multiple of `DIRECT_IO_ALIGN` (at least
    /// one block).
    pub fn new(len: usize) -> AlignedBuf {
        let len = len.max(1).next_multiple_of(DIRECT_IO_ALIGN);
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, DIRECT_IO_ALIGN).expect("buffer length overflows a layout")
    }

    fn check(&self, range: &Range<usize>) {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} outside a buffer of {} bytes",
            self.len
        );
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of len initialised (zeroed) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; &mut self is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

impl IoEngine {
    /// Writes `buf[range]` at `offset`; with `sync`, fdatasyncs in the same submission after
    /// the write completed. Alignment of offset and range is checked (`Misaligned`).
    pub fn write_buf(
        &self,
        file: &DirectFile,
        offset: u64,
        buf: &AlignedBuf,
        range: Range<usize>,
        sync: bool,
    ) -> Result<(), IoError> {
        buf.check(&range);
        // SAFETY: (used below) the shared borrow of `buf` lasts for the whole call, so nobody
        // writes those bytes while the kernel reads them; the allocation outlives the call.
        let request = IoRequest::write(offset, buf.as_ptr().wrapping_add(range.start), range.len());
        let mut outcome = [Ok(())];
        let synced = if sync {
            // SAFETY: see above.
            unsafe { self.write_batch_and_sync(file, &[request], &mut outcome) }
        } else {
            // SAFETY: see above.
            unsafe { self.submit_batch(file, &[request], &mut outcome) };
            Ok(())
        };
        let [written] = outcome;
        written.and(synced)
    }

    /// Reads `buf[range].len()` bytes at `offset` into `buf[range]`.
    pub fn read_buf(
        &self,
        file: &DirectFile,
        offset: u64,
        buf: &mut AlignedBuf,
        range: Range<usize>,
    ) -> Result<(), IoError> {
        buf.check(&range);
        let start = buf.as_mut_ptr().wrapping_add(range.start);
        // SAFETY: the exclusive borrow of `buf` lasts for the whole call: nobody else reads or
        // writes those bytes meanwhile, and the allocation outlives the call.
        unsafe { self.read_at(file, offset, start, range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_rounded_up() {
        let buf = AlignedBuf::new(100);
        assert_eq!(buf.len(), DIRECT_IO_ALIGN);
        assert_eq!(buf.as_ptr() as usize % DIRECT_IO_ALIGN, 0);
        assert!(buf.iter().all(|&b| b == 0));
    }
}
