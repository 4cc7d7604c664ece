//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bufpool_engine::EngineOptions;

/// A fresh path for a test's database file, on the target directory's filesystem (ext4
/// here: O_DIRECT works; tests fail loudly where it does not).
pub fn test_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(log_dir(&path));
    path
}

/// The log directory of a database file.
pub fn log_dir(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

/// Options with a frame budget of `frames` pages: small budgets force eviction.
pub fn options_with_frames(frames: u64) -> EngineOptions {
    EngineOptions {
        pool_bytes: frames * 4096,
        max_file_bytes: 1 << 32,
        eviction_batch: 8,
        ..EngineOptions::default()
    }
}

pub mod oracle;
pub mod workload;
