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

pub mod files;

/// A small ext4 filesystem in an image file under the target directory, loop-mounted for a
/// test (needs root and a kernel that allows loop mounts); unmounted and removed on drop.
pub struct LoopMount {
    image: PathBuf,
    pub dir: PathBuf,
}

impl LoopMount {
    /// `None` (after saying why on stderr) where it cannot be made.
    pub fn new(name: &str, bytes: u64) -> Option<LoopMount> {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loop-mounts");
        std::fs::create_dir_all(&base).unwrap();
        let image = base.join(format!("{name}.img"));
        let dir = base.join(name);
        // A mount left behind by a killed run.
        let _ = std::process::Command::new("umount").arg(&dir).output();
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(bytes).unwrap();
        drop(file);
        let run = |program: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let output = std::process::Command::new(program)
                .args(args)
                .output()
                .map_err(|error| format!("{program}: {error}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        };
        // `-m 0`: no blocks reserved for root (the test runs as root and must see ENOSPC).
        let made = run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                image.as_os_str(),
            ],
        )
        .and_then(|()| {
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop".as_ref(),
                    image.as_os_str(),
                    dir.as_os_str(),
                ],
            )
        });
        match made {
            Ok(()) => Some(LoopMount { image, dir }),
            Err(reason) => {
                eprintln!(
                    "\n*** SKIPPED: cannot loop-mount a small ext4 filesystem here ({reason}); \
                     the full-disk test on a real filesystem did not run ***\n"
                );
                let _ = std::fs::remove_file(&image);
                None
            }
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|status| status.success());
        if unmounted {
            let _ = std::fs::remove_file(&self.image);
        } else {
            eprintln!("could not unmount {}", self.dir.display());
        }
    }
}
pub mod oracle;
pub mod workload;
