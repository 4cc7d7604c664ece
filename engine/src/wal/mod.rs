//! The write-ahead log.

mod durability;

pub use durability::{Durability, LogStats, Lsn, RecoveryReport};
