//! bufpool-io: O_DIRECT files, io_uring rings, a pread/pwrite fallback, fault injection.
//!
//! The only kernel-facing I/O code of bufpool. Bytes move between the disk and caller memory
//! given as raw pointers (the pool's frames), never through a bounce buffer:
//!
//! * [`DirectFile`] opens a data file with `O_DIRECT | O_CLOEXEC` and knows its alignment.
//! * [`IoEngine`] reads and writes at offsets, alone or in batches, on io_uring (one ring per
//!   thread) or pread/pwrite, chosen once by [`IoConfig`].
//! * [`IoQueue`] streams requests on one thread with a constant queue depth.
//! * [`FaultInjector`] makes chosen transfers fail or complete short, for tests.
//!
//! Read past end of file: an [`IoError::UnexpectedEof`], never zero-filled data.

mod buffer;
mod config;
mod engine;
mod error;
mod faults;
mod file;
mod queue;
mod sync_engine;
mod transfer;
mod uring;

pub use buffer::AlignedBuf;
pub use config::{ENGINE_ENV_VAR, EngineChoice, EngineKind, IoConfig, parse_engine_choice};
pub use engine::{IoEngine, IoKind, IoRequest};
pub use error::{IoError, IoOp};
pub use faults::{Fault, FaultInjector};
pub use file::{DIRECT_IO_ALIGN, DirectFile, OpenOptions};
pub use queue::{Completion, DEFAULT_SUBMIT_BATCH, IoQueue};
