//! Shared helpers for the benchmark binaries: sizes with units, CPU time, page-aligned memory.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::time::Duration;

/// Parses `4096`, `4k`, `128K`, `1m`, `2G`, `1t` (binary units, as fio reads them).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 4k, 2G or 4096"))?;
    let shift = match unit
        .trim_end_matches(['b', 'B', 'i'])
        .to_ascii_lowercase()
        .as_str()
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use k, m, g or t)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// User and system CPU time of the whole process (every thread, including io_uring workers).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn now() -> CpuTime {
        // SAFETY: rusage is plain old data; all-zero is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF cannot fail.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let to_duration =
            |time: libc::timeval| Duration::new(time.tv_sec as u64, time.tv_usec as u32 * 1000);
        CpuTime {
            user: to_duration(usage.ru_utime),
            system: to_duration(usage.ru_stime),
        }
    }

    pub fn since(self, start: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(start.user),
            system: self.system.saturating_sub(start.system),
        }
    }

    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// A zeroed heap buffer aligned to 4096 bytes, for O_DIRECT.
pub struct AlignedBuffer {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuffer {
    /// # Panics
    /// If `len` is 0 or the allocation fails (benchmark set-up, not a runtime path).
    pub fn new(len: usize) -> AlignedBuffer {
        assert!(len > 0, "empty buffer");
        let layout = Layout::from_size_align(len, 4096).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocating {len} bytes failed");
        AlignedBuffer { ptr, layout }
    }

    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    pub fn is_empty(&self) -> bool {
        self.layout.size() == 0
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() initialized bytes, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

// SAFETY: the buffer is plain heap memory owned by the value.
unsafe impl Send for AlignedBuffer {}

/// xorshift64*: a fast random stream for offsets (quality is irrelevant, speed is not).
#[derive(Debug, Clone)]
pub struct FastRandom(u64);

impl FastRandom {
    pub fn new(seed: u64) -> FastRandom {
        FastRandom(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..bound` (bound > 0), by multiply-shift.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_fio() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("128K"), Ok(128 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("4x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn random_offsets_stay_below_the_bound() {
        let mut random = FastRandom::new(7);
        assert!((0..10_000).all(|_| random.below(1000) < 1000));
    }
}
