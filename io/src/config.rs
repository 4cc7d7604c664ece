//! `IoConfig`: which engine, how big its rings are, and the optional test hooks (fault
//! injection, simulated power loss).

use crate::error::IoError;
use crate::faults::FaultInjector;
use crate::power_loss::PowerLoss;

/// The environment variable that overrides `EngineChoice::Auto`: `sync`, `uring` or `auto`.
pub const ENGINE_ENV_VAR: &str = "BUFPOOL_IO_ENGINE";

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// io_uring, falling back to Sync (announced once with `tracing::warn!`) when ring setup
    /// fails with EPERM/ENOSYS. `BUFPOOL_IO_ENGINE` overrides it.
    Auto,
    /// io_uring or an `EngineUnavailable` error.
    Uring,
    /// pread/pwrite.
    Sync,
}

/// What the engine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Uring,
    Sync,
}

#[derive(Debug, Clone)]
pub struct IoConfig {
    pub engine: EngineChoice,
    /// Submission-queue entries of each per-thread ring (the completion queue gets twice as
    /// many). Also the most requests one thread keeps in flight.
    pub ring_entries: u32,
    /// Injected faults (tests).
    pub faults: Option<FaultInjector>,
    /// Simulated power loss (crash tests); give every engine of one "machine" (data file and
    /// log files) a clone of the same simulator.
    pub power_loss: Option<PowerLoss>,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            engine: EngineChoice::Auto,
            ring_entries: 256,
            faults: None,
            power_loss: None,
        }
    }
}

/// Largest ring we ask the kernel for (its own limit is 32768).
pub(crate) const RING_ENTRIES_MAX: u32 = 32768;

impl IoConfig {
    /// The choice after applying `BUFPOOL_IO_ENGINE` to `Auto`.
    pub(crate) fn effective_choice(&self) -> Result<EngineChoice, IoError> {
        if self.engine != EngineChoice::Auto {
            return Ok(self.engine);
        }
        match std::env::var(ENGINE_ENV_VAR) {
            Err(_) => Ok(EngineChoice::Auto),
            Ok(value) => parse_engine_choice(&value).ok_or_else(|| IoError::InvalidArgument {
                reason: format!("{ENGINE_ENV_VAR}={value:?}: expected sync, uring or auto"),
            }),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), IoError> {
        if self.ring_entries == 0 || self.ring_entries > RING_ENTRIES_MAX {
            return Err(IoError::InvalidArgument {
                reason: format!(
                    "ring_entries {} is outside 1..={RING_ENTRIES_MAX}",
                    self.ring_entries
                ),
            });
        }
        Ok(())
    }
}

/// `sync`, `uring` (or `io_uring`), `auto` or empty; case-insensitive.
pub fn parse_engine_choice(value: &str) -> Option<EngineChoice> {
    match value.trim().to_ascii_lowercase().as_str() {
        "sync" | "psync" => Some(EngineChoice::Sync),
        "uring" | "io_uring" => Some(EngineChoice::Uring),
        "auto" | "" => Some(EngineChoice::Auto),
        _ => None,
    }
}
