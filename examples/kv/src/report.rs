//! A run's figures: a readable table for people, one JSON line for machines.

use std::time::Duration;

use bufpool_engine::{Durability, LogStats, RecoveryReport};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::dataset::Dataset;
use crate::memory_cap::MemoryCap;
use crate::proc_stats;
use crate::store::{EngineKind, PoolCounters};
use crate::workload::{Measurement, OP_KINDS, OpKind, RunConfig};

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
    /// `--durability`, and how the engine's syncs were counted (`Store::sync_source`).
    pub durability: Durability,
    pub sync_source: &'static str,
    /// The recovery workload's reopen.
    pub recovery: Option<Recovery>,
}

/// What the reopen after the recovery workload's crash found.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub report: RecoveryReport,
    /// Wall time of `Engine::open`, the replay included.
    pub reopen_seconds: f64,
}

impl Recovery {
    /// MiB of log replayed per second of replay (None if the replay took no measurable time).
    pub fn mib_per_s(&self) -> Option<f64> {
        let seconds = self.report.duration.as_secs_f64();
        (seconds > 0.0).then(|| self.report.bytes as f64 / MIB / seconds)
    }

    fn to_json(&self) -> serde_json::Map<String, Value> {
        let report = &self.report;
        let fields = json!({
            "recovery_log_bytes": report.bytes,
            "recovery_records": report.records,
            "recovery_seconds": round(report.duration.as_secs_f64(), 6),
            "recovery_mb_per_s": self.mib_per_s().map(|value| round(value, 1)),
            "recovery_pages_applied": report.pages_applied,
            "recovery_pages_skipped": report.pages_skipped,
            "recovery_discarded_tail_bytes": report.discarded_tail_bytes,
            "reopen_seconds": round(self.reopen_seconds, 6),
        });
        match fields {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object literal is an object"),
        }
    }
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

    /// Syncs during the measured phase (None for an engine without persistence).
    fn syncs(&self) -> Option<u64> {
        let before = self.measurement.before.syncs?;
        let after = self.measurement.after.syncs?;
        Some(after.saturating_sub(before))
    }

    /// The log's counters over the measured phase (bufpool).
    fn log_delta(&self) -> Option<LogStats> {
        let (before, after) = (self.measurement.before.log?, self.measurement.after.log?);
        Some(LogStats {
            records: after.records.saturating_sub(before.records),
            bytes: after.bytes.saturating_sub(before.bytes),
            page_images: after.page_images.saturating_sub(before.page_images),
            writes: after.writes.saturating_sub(before.writes),
            syncs: after.syncs.saturating_sub(before.syncs),
            durable_waits: after.durable_waits.saturating_sub(before.durable_waits),
            durable_lsn: after.durable_lsn,
            end_lsn: after.end_lsn,
            checkpoints: after.checkpoints.saturating_sub(before.checkpoints),
            leaked_pages: after.leaked_pages,
            segments_prepared: after
                .segments_prepared
                .saturating_sub(before.segments_prepared),
            segments_unprepared: after
                .segments_unprepared
                .saturating_sub(before.segments_unprepared),
        })
    }

    /// Sampled latency of the plain writes (updates and inserts, each one write
    /// transaction), if there were any.
    fn commit_latency(&self) -> Option<Histogram<u64>> {
        let latency = &self.measurement.tally.latency_ns;
        let mut histogram = latency[OpKind::Put as usize].clone();
        // Same bounds on both sides: adding cannot fail.
        let _ = histogram.add(&latency[OpKind::Insert as usize]);
        (!histogram.is_empty()).then_some(histogram)
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
        let mut object = json!({
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
            "latency_sample_every": self.config.latency_sample_every,
            "hits": pool.map(|pool| pool.hits),
            "misses": pool.map(|pool| pool.misses),
            "evictions": pool.map(|pool| pool.evictions),
            "refault_retries": pool.map(|pool| pool.refault_retries),
            "page_writes": pool.map(|pool| pool.page_writes),
            "write_back_pages_per_put": self.write_back_pages().map(|pages| {
                let puts = tally.writes().max(1);
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
        });
        if let Value::Object(map) = &mut object {
            // Outside `json!`, whose macro recursion the object above already nears.
            map.insert(
                "distribution".into(),
                self.config.distribution.name().into(),
            );
            let op_counts: serde_json::Map<String, Value> = OP_KINDS
                .iter()
                .map(|kind| (kind.name().into(), tally.ops[*kind as usize].into()))
                .collect();
            map.insert("op_counts".into(), op_counts.into());
            map.extend(self.durability_json());
            if let Some(recovery) = &self.recovery {
                map.extend(recovery.to_json());
            }
        }
        object
    }

    /// The JSON fields about durability and commits (every run has them).
    fn durability_json(&self) -> serde_json::Map<String, Value> {
        let tally = &self.measurement.tally;
        let syncs = self.syncs();
        let log = self.log_delta();
        let commit = self.commit_latency();
        let commit = commit.as_ref();
        let fields = json!({
            "durability": self.durability.name(),
            "durability_mapping": self.engine.durability_mapping(self.durability),
            "commits": tally.writes(),
            "syncs": syncs,
            "syncs_per_s": syncs.map(|count| round(self.per_second(count), 1)),
            "syncs_source": self.sync_source,
            "commit_p50_us": commit.map(|histogram| quantile_us(histogram, 0.50)),
            "commit_p99_us": commit.map(|histogram| quantile_us(histogram, 0.99)),
            "commit_p999_us": commit.map(|histogram| quantile_us(histogram, 0.999)),
            "log_bytes": log.map(|log| log.bytes),
            "log_mb_per_s": log.map(|log| round(self.per_second(log.bytes) / MIB, 2)),
            "log_page_images": log.map(|log| log.page_images),
            "group_commit_average": log.map(|log| round(log.group_commit_average(), 2)),
        });
        match fields {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object literal is an object"),
        }
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
                    "{} {} ({} threads, batch {})",
                    self.config.workload.name(),
                    self.config.distribution.name(),
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
            "durability".into(),
            format!(
                "{} ({})",
                self.durability.name(),
                self.engine.durability_mapping(self.durability)
            ),
        ));
        if let Some(histogram) = self.commit_latency() {
            let syncs = match self.syncs() {
                Some(count) => format!(
                    "{}/s ({})",
                    group_digits(self.per_second(count) as u64),
                    self.sync_source
                ),
                None => "none (no persistence)".into(),
            };
            rows.push((
                "commits".into(),
                format!(
                    "{}/s, p50 {} µs, p99 {} µs; syncs {syncs}",
                    group_digits(self.per_second(self.measurement.tally.writes()) as u64),
                    format_us(quantile_us(&histogram, 0.50)),
                    format_us(quantile_us(&histogram, 0.99)),
                ),
            ));
        }
        if let Some(log) = self.log_delta() {
            rows.push((
                "log".into(),
                format!(
                    "{:.1} MiB/s appended, {} page images, {:.2} commits per sync",
                    self.per_second(log.bytes) / MIB,
                    group_digits(log.page_images),
                    log.group_commit_average()
                ),
            ));
        }
        if let Some(recovery) = &self.recovery {
            let report = &recovery.report;
            rows.push((
                "recovery".into(),
                format!(
                    "{:.1} MiB of log, {} records in {:.3} s ({} MiB/s); reopen {:.3} s, {} tail bytes discarded",
                    report.bytes as f64 / MIB,
                    group_digits(report.records),
                    report.duration.as_secs_f64(),
                    recovery.mib_per_s().map_or("-".into(), |value| format!("{value:.0}")),
                    recovery.reopen_seconds,
                    group_digits(report.discarded_tail_bytes)
                ),
            ));
        }
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
