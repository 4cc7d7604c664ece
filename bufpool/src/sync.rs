//! The synchronisation shim: std atomics in normal builds, loom's under `--cfg loom`, so the
//! loom model checks the very state-word code the pool runs.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(loom)]
pub use loom::thread::yield_now;

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub use std::thread::yield_now;
