//! The write-ahead log: record format, the log file set with group commit, logged page
//! changes, and recovery. See DESIGN.md, "The log and recovery", for the argument.

mod durability;
pub(crate) mod log;
pub(crate) mod mtr;
pub(crate) mod record;
pub(crate) mod recovery;

pub use durability::{Durability, LogStats, Lsn, RecoveryReport};
pub(crate) use log::{Log, SEGMENT_BYTES_DEFAULT, dir_of as log_dir_of};
pub(crate) use mtr::{Change, PageMut, commit};
