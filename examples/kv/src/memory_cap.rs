//! `--cgroup-mb`: caps this process's memory, page cache included, with a cgroup memory
//! controller, so engines that cache through the kernel (LMDB, redb) get the same memory as
//! bufpool's pool. The group is created as a child of the cgroup the process is already in
//! (so any outer limits still apply), the process moves itself in, and on drop it moves back
//! and removes the group.
//!
//! Page-cache pages are charged to the cgroup of whoever first read them, and moving a process
//! does not move charges; so before a capped run on an existing database, `drop_page_cache`
//! evicts the engine's files (`posix_fadvise(DONTNEED)`), and the engine starts cold inside
//! its cap instead of reading pages cached (and charged) elsewhere.

use std::fs;
use std::path::{Path, PathBuf};

const CGROUP_V1_MEMORY: &str = "/sys/fs/cgroup/memory";
const CGROUP_V2_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup version a cap uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A memory cap in force (or the reason there is none).
#[derive(Debug)]
pub enum MemoryCap {
    None { reason: String },
    Cgroup(CgroupCap),
}

/// A cgroup this process created and moved into.
#[derive(Debug)]
pub struct CgroupCap {
    version: Version,
    limit_mib: u64,
    group: PathBuf,
    original: PathBuf,
}

impl MemoryCap {
    /// No cap was asked for.
    pub fn uncapped() -> MemoryCap {
        MemoryCap::None {
            reason: "not requested".into(),
        }
    }

    /// Caps this process at `limit_mib`; never fails: without a usable controller the result
    /// says why, and the caller runs uncapped.
    pub fn apply(limit_mib: u64) -> MemoryCap {
        let version = if Path::new(CGROUP_V1_MEMORY).is_dir() {
            Version::V1
        } else if Path::new(CGROUP_V2_ROOT)
            .join("cgroup.controllers")
            .is_file()
        {
            Version::V2
        } else {
            return MemoryCap::None {
                reason: format!("neither {CGROUP_V1_MEMORY} (v1) nor a cgroup v2 hierarchy"),
            };
        };
        match CgroupCap::create(version, limit_mib) {
            Ok(cap) => MemoryCap::Cgroup(cap),
            Err(reason) => MemoryCap::None { reason },
        }
    }

    /// For reports: `cgroup-v1 1024 MiB` or `none`.
    pub fn label(&self) -> String {
        match self {
            MemoryCap::None { .. } => "none".into(),
            MemoryCap::Cgroup(cap) => {
                let version = match cap.version {
                    Version::V1 => "cgroup-v1",
                    Version::V2 => "cgroup-v2",
                };
                format!("{version} {} MiB", cap.limit_mib)
            }
        }
    }

    /// Bytes the cgroup currently charges (process memory plus its page cache).
    pub fn usage_bytes(&self) -> Option<u64> {
        let MemoryCap::Cgroup(cap) = self else {
            return None;
        };
        let file = match cap.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        read_u64(&cap.group.join(file))
    }

    pub fn is_capped(&self) -> bool {
        matches!(self, MemoryCap::Cgroup(_))
    }

    /// Human explanation for stderr.
    pub fn explain(&self) -> String {
        match self {
            MemoryCap::None { reason } => format!("memory cap not applied ({reason}); uncapped"),
            MemoryCap::Cgroup(cap) => {
                format!("memory cap: {} in {}", self.label(), cap.group.display())
            }
        }
    }
}

impl CgroupCap {
    fn create(version: Version, limit_mib: u64) -> Result<CgroupCap, String> {
        let original = current_group(version)?;
        remove_stale_groups(&original);
        let group = original.join(format!("kv-bench-{}", std::process::id()));
        fs::create_dir(&group).map_err(|error| format!("mkdir {}: {error}", group.display()))?;
        let cap = CgroupCap {
            version,
            limit_mib,
            group,
            original,
        };
        let limit_file = match version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        write_file(&cap.group.join(limit_file), &(limit_mib << 20).to_string())?;
        // Writing the pid to cgroup.procs moves every thread of the process.
        write_file(
            &cap.group.join("cgroup.procs"),
            &std::process::id().to_string(),
        )?;
        Ok(cap)
    }
}

impl Drop for CgroupCap {
    fn drop(&mut self) {
        // Best effort: the group is empty once the process has moved back or exited.
        let pid = std::process::id().to_string();
        let _ = write_file(&self.original.join("cgroup.procs"), &pid);
        let _ = fs::remove_dir(&self.group);
    }
}

/// Removes `kv-bench-PID` groups left by kv processes that were killed (e.g. by the cap's own
/// out-of-memory killer) before they could clean up: only empty ones whose PID is gone.
fn remove_stale_groups(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("kv-bench-"))
        else {
            continue;
        };
        let empty = fs::read_to_string(entry.path().join("cgroup.procs"))
            .is_ok_and(|procs| procs.trim().is_empty());
        if empty && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// The directory of the cgroup this process is in, from /proc/self/cgroup.
fn current_group(version: Version) -> Result<PathBuf, String> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|error| format!("read /proc/self/cgroup: {error}"))?;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        match version {
            Version::V1 if controllers.split(',').any(|name| name == "memory") => {
                return Ok(Path::new(CGROUP_V1_MEMORY).join(relative));
            }
            Version::V2 if id == "0" && controllers.is_empty() => {
                return Ok(Path::new(CGROUP_V2_ROOT).join(relative));
            }
            _ => {}
        }
    }
    Err("this process's memory cgroup is not in /proc/self/cgroup".into())
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|error| format!("write {text} to {}: {error}", path.display()))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Evicts the clean page-cache pages of `files` (after they were synced), so a capped run
/// starts cold. Returns the files it could not advise, with why.
pub fn drop_page_cache(files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in files {
        let result = fs::File::open(path).and_then(|file| {
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
                .map_err(std::io::Error::from)
        });
        match result {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => failures.push(format!("{}: {error}", path.display())),
        }
    }
    failures
}
