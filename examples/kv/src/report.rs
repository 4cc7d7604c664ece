//! A run's figures: a readable table for people, one JSON line for machines.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::dataset::Dataset;
use crate::memory_cap::MemoryCap;
use crate::proc_stats;
use crate::store::{EngineKind, PoolCounters};
use crate::workload::{Measurement, OP_KINDS, RunConfig};

/// Bytes per page read, to turn /proc/self/io's byte count into pages.
const PAGE_BYTES: u64 = 4096;
const MIB: f64 = 1024.0 * 1024.0;

/// Where a figure came from (said in the report, since engines differ).
const READS_FROM_POOL: &str = "pool stats (pages faulted in)";
const READS_FROM_PROC: &str = "/proc/self/io read_bytes / 4096";

/// Everything a report says about one run.
pub struct Report<'run> {
    pub engine: EngineKind,
    pub dataset: &'run Dataset,
    pub config: &'run RunConfig,
    pub measurement: &'run Measurement,
    pub memory_budget_mib: u64,
    pub memory_cap: &'run MemoryCap,
    pub load_seconds: f64,
    pub loaded: bool,
    pub database: String,
}

impl Report<'_> {
    fn seconds(&self) -> f64 {
        self.measurement
            .elapsed
            .as_secs_f64()
            .max(f64::MIN_POSITIVE)
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.seconds()
    }

    fn pool_delta(&self) -> Option<PoolCounters> {
        let (before, after) = (self.measurement.before.pool?, self.measurement.after.pool?);
        Some(PoolCounters {
            hits: after.hits.saturating_sub(before.hits),
            misses: after.misses.saturating_sub(before.misses),
            evictions: after.evictions.saturating_sub(before.evictions),
            refault_retries: after.refault_retries.saturating_sub(before.refault_retries),
            page_reads: after.page_reads.saturating_sub(before.page_reads),
            resident_bytes: after.resident_bytes,
            page_writes: after.page_writes.saturating_sub(before.page_writes),
            dirty_pages: after.dirty_pages,
        })
    }

    /// Page write-backs the measured phase caused: the pages it wrote, plus the change in
    /// dirty pages (each dirty page left behind costs one write-back later).
    fn write_back_pages(&self) -> Option<i64> {
        let (before, after) = (self.measurement.before.pool?, self.measurement.after.pool?);
        let written = after.page_writes.saturating_sub(before.page_writes) as i64;
        Some(written + after.dirty_pages as i64 - before.dirty_pages as i64)
    }

    /// Process CPU seconds spent in the measured phase (all threads).
    fn cpu_seconds(&self) -> f64 {
        let spent = self
            .measurement
            .after
            .cpu_ns
            .saturating_sub(self.measurement.before.cpu_ns);
        spent as f64 / 1e9
    }

    /// CPU microseconds per unit of `count`, or None for zero.
    fn cpu_us_per(&self, count: u64) -> Option<f64> {
        (count > 0).then(|| round(self.cpu_seconds() * 1e6 / count as f64, 3))
    }

    /// Pages read from storage per second by the whole process (any engine).
    fn io_pages_per_s(&self) -> Option<f64> {
        let before = self.measurement.before.storage_read_bytes?;
        let after = self.measurement.after.storage_read_bytes?;
        Some(self.per_second(after.saturating_sub(before) / PAGE_BYTES))
    }

    /// Page reads per second and where the count came from.
    fn reads_per_s(&self) -> (Option<f64>, &'static str) {
        match self.pool_delta() {
            Some(pool) => (Some(self.per_second(pool.page_reads)), READS_FROM_POOL),
            None => (self.io_pages_per_s(), READS_FROM_PROC),
        }
    }

    /// Resident memory in MiB and what it measures.
    fn resident_mib(&self) -> (Option<f64>, &'static str) {
        if let Some(pool) = self.measurement.after.pool {
            return (
                Some(pool.resident_bytes as f64 / MIB),
                "pool resident frames",
            );
        }
        if let Some(usage) = self.memory_cap.usage_bytes() {
            return (
                Some(usage as f64 / MIB),
                "cgroup memory usage (incl. page cache)",
            );
        }
        (
            proc_stats::resident_bytes().map(|bytes| bytes as f64 / MIB),
            "process RSS",
        )
    }

    /// The JSON object (`--json` prints it as the last line).
    pub fn to_json(&self) -> Value {
        let tally = &self.measurement.tally;
        let all = tally.all_latency_ns();
        let pool = self.pool_delta();
        let (reads_per_s, reads_source) = self.reads_per_s();
        let (resident_mb, resident_source) = self.resident_mib();
        let mut latency = serde_json::Map::new();
        for kind in OP_KINDS {
            let histogram = &tally.latency_ns[kind as usize];
            if !histogram.is_empty() {
                latency.insert(kind.name().into(), percentiles_json(histogram));
            }
        }
        json!({
            "engine": self.engine.name(),
            "workload": self.config.workload.name(),
            "records": self.dataset.records,
            "key_size": self.dataset.key_size,
            "value_size": self.dataset.value_size,
            "threads": self.config.threads,
            "batch": self.config.batch,
            "seconds": round(self.seconds(), 3),
            "warmup_seconds": self.config.warmup.as_secs_f64(),
            "ops": tally.total_ops(),
            "ops_per_s": round(self.per_second(tally.total_ops()), 1),
            "lookups": tally.lookups,
            "lookups_per_s": round(self.per_second(tally.lookups), 1),
            "scanned_records": tally.scanned_records,
            "reads_per_s": reads_per_s.map(|value| round(value, 1)),
            "reads_source": reads_source,
            "io_read_pages_per_s": self.io_pages_per_s().map(|value| round(value, 1)),
            "cpu_seconds": round(self.cpu_seconds(), 3),
            "cpu_cores_used": round(self.cpu_seconds() / self.seconds(), 2),
            "cpu_us_per_op": self.cpu_us_per(tally.total_ops()),
            "cpu_us_per_lookup": self.cpu_us_per(tally.lookups),
            "p50_us": quantile_us(&all, 0.50),
            "p99_us": quantile_us(&all, 0.99),
            "p999_us": quantile_us(&all, 0.999),
            "max_us": quantile_us(&all, 1.0),
            "latency_us": latency,
            "latency_sample_every": crate::workload::LATENCY_SAMPLE_EVERY,
            "hits": pool.map(|pool| pool.hits),
            "misses": pool.map(|pool| pool.misses),
            "evictions": pool.map(|pool| pool.evictions),
            "refault_retries": pool.map(|pool| pool.refault_retries),
            "page_writes": pool.map(|pool| pool.page_writes),
            "write_back_pages_per_put": self.write_back_pages().map(|pages| {
                let puts = tally.ops[crate::workload::OpKind::Put as usize].max(1);
                round(pages as f64 / puts as f64, 3)
            }),
            "resident_mb": resident_mb.map(|value| round(value, 1)),
            "resident_source": resident_source,
            "rss_mb": proc_stats::resident_bytes().map(|bytes| round(bytes as f64 / MIB, 1)),
            "memory_budget_mb": self.memory_budget_mib,
            "memory_cap": self.memory_cap.label(),
            "load_seconds": round(self.load_seconds, 3),
            "loaded": self.loaded,
            "database": self.database,
        })
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let tally = &self.measurement.tally;
        let pool = self.pool_delta();
        let (reads_per_s, reads_source) = self.reads_per_s();
        let (resident_mb, resident_source) = self.resident_mib();
        let mut rows: Vec<(String, String)> = vec![
            ("engine".into(), self.engine.name().into()),
            (
                "workload".into(),
                format!(
                    "{} ({} threads, batch {})",
                    self.config.workload.name(),
                    self.config.threads,
                    self.config.batch
                ),
            ),
            (
                "data set".into(),
                format!(
                    "{} records of {} + {} bytes ({:.0} MiB of keys and values)",
                    group_digits(self.dataset.records),
                    self.dataset.key_size,
                    self.dataset.value_size,
                    self.dataset.payload_bytes() as f64 / MIB
                ),
            ),
            (
                "memory".into(),
                format!(
                    "budget {} MiB, cap: {}",
                    self.memory_budget_mib,
                    self.memory_cap.label()
                ),
            ),
            ("load".into(), self.load_text()),
            ("measured".into(), format!("{:.2} s", self.seconds())),
            (
                "throughput".into(),
                format!(
                    "{} ops/s, {} lookups/s",
                    group_digits(self.per_second(tally.total_ops()) as u64),
                    group_digits(self.per_second(tally.lookups) as u64)
                ),
            ),
        ];
        rows.push((
            "cpu".into(),
            format!(
                "{:.2} cores busy, {} µs per operation",
                self.cpu_seconds() / self.seconds(),
                self.cpu_us_per(tally.total_ops())
                    .map_or("-".into(), |value| format!("{value:.2}"))
            ),
        ));
        for kind in OP_KINDS {
            let histogram = &tally.latency_ns[kind as usize];
            if histogram.is_empty() {
                continue;
            }
            rows.push((
                format!("{} latency", kind.name()),
                format!(
                    "{} ops; p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                    group_digits(tally.ops[kind as usize]),
                    format_us(quantile_us(histogram, 0.50)),
                    format_us(quantile_us(histogram, 0.99)),
                    format_us(quantile_us(histogram, 0.999)),
                    format_us(quantile_us(histogram, 1.0)),
                ),
            ));
        }
        rows.push((
            "page reads".into(),
            match reads_per_s {
                Some(value) => format!("{}/s ({reads_source})", group_digits(value as u64)),
                None => "unknown".into(),
            },
        ));
        if let Some(pool) = pool {
            rows.push((
                "pool".into(),
                format!(
                    "{} hits, {} misses ({:.2}% hit), {} evictions, {} refault retries",
                    group_digits(pool.hits),
                    group_digits(pool.misses),
                    hit_percent(pool),
                    group_digits(pool.evictions),
                    group_digits(pool.refault_retries)
                ),
            ));
        }
        rows.push((
            "resident".into(),
            match resident_mb {
                Some(value) => format!("{value:.1} MiB ({resident_source})"),
                None => "unknown".into(),
            },
        ));
        render_rows(&rows)
    }

    fn load_text(&self) -> String {
        if !self.loaded {
            return format!("reused {}", self.database);
        }
        let rate = self.dataset.records as f64 / self.load_seconds.max(f64::MIN_POSITIVE);
        format!(
            "{:.1} s ({} records/s) into {}",
            self.load_seconds,
            group_digits(rate as u64),
            self.database
        )
    }
}

fn hit_percent(pool: PoolCounters) -> f64 {
    let total = pool.hits + pool.misses;
    if total == 0 {
        return 100.0;
    }
    pool.hits as f64 * 100.0 / total as f64
}

fn percentiles_json(histogram: &Histogram<u64>) -> Value {
    json!({
        "p50": quantile_us(histogram, 0.50),
        "p99": quantile_us(histogram, 0.99),
        "p999": quantile_us(histogram, 0.999),
        "max": quantile_us(histogram, 1.0),
    })
}

/// The quantile in microseconds, to 0.01 µs; 0 for an empty histogram.
fn quantile_us(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    round(histogram.value_at_quantile(quantile) as f64 / 1000.0, 2)
}

fn format_us(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// 1234567 → "1,234,567".
pub fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn render_rows(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (name, value) in rows {
        text.push_str(&format!("  {name:<width$}  {value}\n"));
    }
    text
}

/// Seconds as a Duration from a CLI float (negative or NaN become zero).
pub fn duration_from_seconds(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_digits_by_thousands() {
        assert_eq!(super::group_digits(0), "0");
        assert_eq!(super::group_digits(999), "999");
        assert_eq!(super::group_digits(1000), "1,000");
        assert_eq!(super::group_digits(1234567), "1,234,567");
    }
}
