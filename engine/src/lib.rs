//! bufpool-engine: superblock, page allocation, checksums, checkpoint, B+-tree.
#![forbid(unsafe_code)]
