//! Shared helpers of the io tests: a data directory on a real filesystem, page-aligned
//! buffers, and the loop over both engines.

#![allow(dead_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::path::PathBuf;

use bufpool_io::{DirectFile, EngineChoice, IoConfig, IoEngine, IoError, IoRequest, OpenOptions};

pub const PAGE: usize = 4096;

/// Both engines; every test runs against each.
pub const ENGINES: [EngineChoice; 2] = [EngineChoice::Sync, EngineChoice::Uring];

/// A fresh file under target/test-data (ext4 here: O_DIRECT works; never /tmp or /dev/shm).
pub fn fresh_file(test: &str, engine: EngineChoice) -> DirectFile {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/io");
    std::fs::create_dir_all(&dir).expect("create test-data directory");
    let path = dir.join(format!("{test}-{engine:?}.data"));
    let options = OpenOptions {
        create: true,
        truncate: true,
        ..OpenOptions::default()
    };
    DirectFile::open(&path, &options)
        .unwrap_or_else(|error| panic!("O_DIRECT must work under target/: {error}"))
}

pub fn engine(choice: EngineChoice) -> IoEngine {
    engine_with(IoConfig {
        engine: choice,
        ..IoConfig::default()
    })
}

pub fn engine_with(config: IoConfig) -> IoEngine {
    let choice = config.engine;
    IoEngine::new(config)
        .unwrap_or_else(|error| panic!("engine {choice:?} must be available here: {error}"))
}

/// A zeroed, page-aligned heap buffer.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, PAGE).expect("layout");
        // SAFETY: len > 0 in every test.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        AlignedBuf { ptr, layout }
    }

    pub fn filled(len: usize, seed: u64) -> Self {
        let mut buf = Self::new(len);
        fill_pattern(buf.as_mut_slice(), seed);
        buf
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for layout.size() initialized bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

/// One write per page of `data`, page i at file offset i * PAGE, and an `Ok` outcome slot
/// for each (as `submit_batch` wants them).
pub fn page_writes(data: &AlignedBuf, pages: usize) -> (Vec<IoRequest>, Vec<Result<(), IoError>>) {
    assert!(
        pages * PAGE <= data.as_slice().len(),
        "more pages than the buffer holds"
    );
    let requests = (0..pages)
        .map(|i| {
            IoRequest::write(
                (i * PAGE) as u64,
                data.as_ptr().wrapping_add(i * PAGE),
                PAGE,
            )
        })
        .collect();
    let outcomes = (0..pages).map(|_| Ok(())).collect();
    (requests, outcomes)
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

// SAFETY: the buffer is plain heap memory owned by the value.
unsafe impl Send for AlignedBuf {}

/// Bytes that differ per seed and per position (so a misplaced page is caught).
pub fn fill_pattern(bytes: &mut [u8], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = state.to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fill_pattern(&mut bytes, seed);
    bytes
}
