//! What the kernel counts for this process: bytes read from storage and resident memory.

use std::fs;

/// Bytes this process (all its threads) caused to be read from storage: `read_bytes` of
/// /proc/self/io. Counts page-cache misses of mmap faults and reads as well as O_DIRECT reads.
pub fn storage_read_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/io").ok()?;
    field(&text, "read_bytes:")
}

/// Resident set size: `VmRSS` of /proc/self/status (includes mapped file pages, e.g. LMDB's).
pub fn resident_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/status").ok()?;
    Some(field(&text, "VmRSS:")? * 1024)
}

/// CPU time of the whole process (every thread, io_uring workers included) in nanoseconds.
/// Unlike wall-clock throughput it stays meaningful on a machine shared with other work.
pub fn process_cpu_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds * 1_000_000_000 + nanos
}

fn field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        assert!(super::resident_bytes().unwrap() > 0);
        assert!(super::storage_read_bytes().is_some());
    }
}
