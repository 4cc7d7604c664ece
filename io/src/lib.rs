//! bufpool-io: O_DIRECT files, io_uring rings, a pread/pwrite fallback, fault injection.
//!
//! The only kernel-facing I/O code of bufpool. Bytes move between the disk and caller memory
//! given as raw pointers (the pool's frames), never through a bounce buffer:
//!
//! * [`DirectFile`] opens a data file with `O_DIRECT | O_CLOEXEC` and knows its alignment.
//! * [`IoEngine`] reads and writes at offsets, alone or in batches, on io_uring (one ring per
//!   thread) or pread/pwrite, chosen once by [`IoConfig`].
//! * [`IoQueue`] streams requests on one thread with a constant queue depth.
//! * [`FaultInjector`] makes chosen transfers fail or complete short, or chosen fdatasyncs
//!   fail (without syncing), for tests.
//! * [`PowerLoss`] simulates a power cut for crash tests: it remembers every write since each
//!   file's last completed sync (with the bytes it replaced) and, when cut (on command or at
//!   the n-th write or sync), keeps, drops or tears each of them on disk, then fails all I/O.
//!
//! Both hooks live in [`IoConfig`]; absent, each costs one `Option` check per transfer.
//!
//! Read past end of file: an [`IoError::UnexpectedEof`], never zero-filled data.

mod buffer;
mod config;
mod engine;
mod error;
mod faults;
mod file;
mod power_loss;
mod queue;
mod sync_engine;
mod transfer;
mod uring;

pub use buffer::AlignedBuf;
pub use config::{ENGINE_ENV_VAR, EngineChoice, EngineKind, IoConfig, parse_engine_choice};
pub use engine::{IoEngine, IoKind, IoRequest};
pub use error::{IoError, IoOp};
pub use faults::{Fault, FaultInjector};
pub use file::{DIRECT_IO_ALIGN, DirectFile, OpenOptions, SYNC_EINTR_RETRIES_MAX};
pub use power_loss::{CutReport, PowerLoss, SECTOR_BYTES};
pub use queue::{Completion, DEFAULT_SUBMIT_BATCH, IoQueue};
