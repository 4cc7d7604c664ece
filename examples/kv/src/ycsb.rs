//! YCSB's core workloads and key choosers, as the YCSB client (`CoreWorkload`) defines them.
//!
//! * Mixes (percent of operations): A 50 read / 50 update; B 95 read / 5 update; C 100 read;
//!   D 95 read / 5 insert (reads skewed to the newest records); E 95 scan / 5 insert (scan
//!   length uniform in 1..=`--scan-length`, YCSB's `maxscanlength` 100); F 50 read / 50
//!   read-modify-write.
//! * `zipfian`: YCSB's `ScrambledZipfianGenerator`: a zipfian rank (θ = 0.99) over 10¹⁰
//!   items, hashed with 64-bit FNV-1a of the rank and taken modulo the loaded records, so the
//!   hot records are spread over the key space instead of packed at its start.
//! * `uniform`: uniform over the loaded records (YCSB's `UniformLongGenerator`).
//! * `latest`: YCSB's `SkewedLatestGenerator`: the newest inserted record is the most likely,
//!   then the one before it, zipfian by distance from the newest (the zipfian's item count
//!   grows with the inserts, its zeta updated incrementally).
//!
//! Zipfian and uniform draw from the loaded records only (as YCSB's uniform chooser does; its
//! zipfian chooser also covers the expected new keys and redraws those not inserted yet,
//! which needs the run's operation count, unknown to a timed run): inserted records are read
//! by `latest` and by the scans that run past the last loaded record.
//!
//! Inserts take new record indexes from one counter shared by the threads
//! ([`InsertCounter`]); a read only ever draws below its `limit`, the first index not yet
//! known inserted, so no read looks for a record an insert has not finished writing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngExt;
use rand::rngs::SmallRng;

/// YCSB's default zipfian constant.
pub const ZIPFIAN_THETA: f64 = 0.99;
/// Items of the zipfian behind the scrambled chooser (YCSB's `ITEM_COUNT`).
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;
/// zeta(10¹⁰, 0.99): YCSB's precomputed constant (summing 10¹⁰ terms takes a minute).
const SCRAMBLED_ZETA: f64 = 26.469_028_201_783_02;

/// How a workload picks the record of each operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// Scrambled zipfian, θ = 0.99 (YCSB's default).
    Zipfian,
    /// Uniform over the loaded records.
    Uniform,
    /// Skewed towards the newest inserts (YCSB's read-latest).
    Latest,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Zipfian => "zipfian",
            Distribution::Uniform => "uniform",
            Distribution::Latest => "latest",
        }
    }
}

/// Percent of each operation in a mix (they add up to 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mix {
    pub read: u32,
    pub update: u32,
    pub insert: u32,
    pub scan: u32,
    pub read_modify_write: u32,
}

/// YCSB's core workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Core {
    A,
    B,
    C,
    D,
    E,
    F,
}

impl Core {
    pub fn mix(self) -> Mix {
        let zero = Mix::default();
        match self {
            Core::A => Mix {
                read: 50,
                update: 50,
                ..zero
            },
            Core::B => Mix {
                read: 95,
                update: 5,
                ..zero
            },
            Core::C => Mix { read: 100, ..zero },
            Core::D => Mix {
                read: 95,
                insert: 5,
                ..zero
            },
            Core::E => Mix {
                scan: 95,
                insert: 5,
                ..zero
            },
            Core::F => Mix {
                read: 50,
                read_modify_write: 50,
                ..zero
            },
        }
    }

    /// YCSB's request distribution for the workload: `latest` for D, else zipfian.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Core::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }
}

/// YCSB's `Utils.fnvhash64`: 64-bit FNV-1a over the 8 little-endian bytes of `value`,
/// made non-negative as Java's `Math.abs` does.
pub fn fnv_hash64(value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash as i64).unsigned_abs()
}

/// Σ_{i=from}^{to-1} 1/(i+1)^θ: the part of zeta(to) beyond zeta(from).
fn zeta_range(from: u64, to: u64, theta: f64) -> f64 {
    (from..to).map(|i| 1.0 / ((i + 1) as f64).powf(theta)).sum()
}

/// Gray et al.'s zipfian generator over `0..items` (rank 0 the most likely), as YCSB's
/// `ZipfianGenerator`, whose item count may grow (zeta extended term by term).
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_items: f64,
    zeta_two: f64,
    eta: f64,
}

impl Zipfian {
    /// Costs one `powf` per item (about 10 ms per million): build once, clone per thread.
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zeta(items, theta, zeta_range(0, items, theta))
    }

    fn with_zeta(items: u64, theta: f64, zeta_items: f64) -> Zipfian {
        assert!(items > 0, "a zipfian needs at least one item");
        let zeta_two = zeta_range(0, 2, theta);
        let mut zipfian = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_items,
            zeta_two,
            eta: 0.0,
        };
        zipfian.eta = zipfian.eta_for_items();
        zipfian
    }

    fn eta_for_items(&self) -> f64 {
        (1.0 - (2.0 / self.items as f64).powf(1.0 - self.theta))
            / (1.0 - self.zeta_two / self.zeta_items)
    }

    #[cfg(test)]
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Extends the item count to `items` (never shrinks it).
    pub fn grow_to(&mut self, items: u64) {
        if items <= self.items {
            return;
        }
        self.zeta_items += zeta_range(self.items, items, self.theta);
        self.items = items;
        self.eta = self.eta_for_items();
    }

    /// A rank in `0..items`.
    pub fn next(&self, rng: &mut SmallRng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_items;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (rank as u64).min(self.items - 1)
    }

    /// The probability of rank 0: 1 / zeta(items).
    #[cfg(test)]
    pub fn top_share(&self) -> f64 {
        1.0 / self.zeta_items
    }
}

/// One thread's key chooser (the zipfians hold per-thread state for `latest`).
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform { records: u64 },
    Scrambled { zipfian: Zipfian, records: u64 },
    Latest { zipfian: Zipfian },
}

impl KeyChooser {
    /// The chooser for `records` loaded records (for `latest`, the O(records) zeta sum is
    /// done here, once, and the chooser cloned into each thread).
    pub fn new(distribution: Distribution, records: u64) -> KeyChooser {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform { records },
            Distribution::Zipfian => KeyChooser::Scrambled {
                zipfian: Zipfian::with_zeta(SCRAMBLED_ITEMS, ZIPFIAN_THETA, SCRAMBLED_ZETA),
                records,
            },
            Distribution::Latest => KeyChooser::Latest {
                zipfian: Zipfian::new(records, ZIPFIAN_THETA),
            },
        }
    }

    /// A record index below `limit`, the first index not known to be inserted
    /// (`InsertCounter::limit`, at least the loaded records).
    pub fn choose(&mut self, rng: &mut SmallRng, limit: u64) -> u64 {
        match self {
            KeyChooser::Uniform { records } => rng.random_range(0..*records),
            KeyChooser::Scrambled { zipfian, records } => fnv_hash64(zipfian.next(rng)) % *records,
            KeyChooser::Latest { zipfian } => {
                zipfian.grow_to(limit);
                limit - 1 - zipfian.next(rng).min(limit - 1)
            }
        }
    }
}

/// The insert counter the threads share: the next new record index, and the limit below
/// which every index is inserted (YCSB's `AcknowledgedCounterGenerator`).
#[derive(Debug)]
pub struct InsertCounter {
    next: AtomicU64,
    limit: AtomicU64,
    /// Inserted indexes above the limit, waiting for the ones below them.
    pending: Mutex<BinaryHeap<Reverse<u64>>>,
}

impl InsertCounter {
    /// Records `0..records` are loaded; inserts start at `records`.
    pub fn new(records: u64) -> InsertCounter {
        InsertCounter {
            next: AtomicU64::new(records),
            limit: AtomicU64::new(records),
            pending: Mutex::new(BinaryHeap::new()),
        }
    }

    /// A new record index for an insert.
    pub fn allocate(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The index `allocate` will hand out next (every index below it is allocated).
    #[cfg(test)]
    pub fn allocated(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Record `index` is inserted (its write returned).
    pub fn acknowledge(&self, index: u64) {
        // Inserts are a few percent of the operations: one short lock each is cheap.
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.push(Reverse(index));
        let mut limit = self.limit.load(Ordering::Relaxed);
        while pending.peek() == Some(&Reverse(limit)) {
            pending.pop();
            limit += 1;
        }
        // Release: a reader that sees the new limit sees every insert below it done.
        self.limit.store(limit, Ordering::Release);
    }

    /// Every index below this is inserted.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashMap;

    const DRAWS: u64 = 200_000;

    fn counts(chooser: &mut KeyChooser, limit: u64, seed: u64) -> HashMap<u64, u64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = HashMap::new();
        for _ in 0..DRAWS {
            let index = chooser.choose(&mut rng, limit);
            assert!(index < limit, "{index} drawn at or above the limit {limit}");
            *counts.entry(index).or_insert(0u64) += 1;
        }
        counts
    }

    fn top_share(counts: &HashMap<u64, u64>) -> (u64, f64) {
        let (index, count) = counts
            .iter()
            .max_by_key(|(_, count)| **count)
            .expect("draws were made");
        (*index, *count as f64 / DRAWS as f64)
    }

    #[test]
    fn zipfian_top_rank_share_is_near_theory() {
        let items = 1000;
        let zipfian = Zipfian::new(items, ZIPFIAN_THETA);
        let theory = zipfian.top_share();
        let mut rng = SmallRng::seed_from_u64(1);
        let (mut ranks, mut head) = ([0u64; 2], 0u64);
        for _ in 0..DRAWS {
            let rank = zipfian.next(&mut rng);
            assert!(rank < items);
            if rank < 2 {
                ranks[rank as usize] += 1;
            }
            head += u64::from(rank < 100);
        }
        // Ranks 0 and 1 are exact in Gray et al.'s method; beyond, it approximates the
        // distribution with a continuous one: the first hundred ranks' mass within 2 points.
        let share = ranks[0] as f64 / DRAWS as f64;
        assert!((share - theory).abs() < 0.01, "{share} vs {theory}");
        let ratio = ranks[1] as f64 / ranks[0] as f64;
        assert!((ratio - 0.5f64.powf(ZIPFIAN_THETA)).abs() < 0.05, "{ratio}");
        let head_share = head as f64 / DRAWS as f64;
        let head_theory = zeta_range(0, 100, ZIPFIAN_THETA) / zeta_range(0, items, ZIPFIAN_THETA);
        assert!(
            (head_share - head_theory).abs() < 0.02,
            "{head_share} vs {head_theory}"
        );
    }

    #[test]
    fn zipfian_grown_matches_one_built_at_that_size() {
        let mut grown = Zipfian::new(500, ZIPFIAN_THETA);
        grown.grow_to(2000);
        let built = Zipfian::new(2000, ZIPFIAN_THETA);
        assert_eq!(grown.items(), 2000);
        assert!((grown.top_share() - built.top_share()).abs() < 1e-9);
        assert!((grown.eta - built.eta).abs() < 1e-9);
    }

    #[test]
    fn scrambled_zipfian_is_skewed_but_spread_over_the_key_space() {
        let records = 1_000_000;
        let mut chooser = KeyChooser::new(Distribution::Zipfian, records);
        let counts = counts(&mut chooser, records, 2);
        // Rank 0 of 10^10 items has 1/zeta = 3.78% of the draws (YCSB's constant).
        let (hottest, share) = top_share(&counts);
        let theory = 1.0 / SCRAMBLED_ZETA;
        assert!((share - theory).abs() < 0.005, "{share} vs {theory}");
        assert_eq!(hottest, fnv_hash64(0) % records, "rank 0 lands at its hash");
        // The hundred hottest records are spread over the key space: every tenth of it holds
        // some, where an unscrambled zipfian would put them all in the first.
        let mut by_count: Vec<(u64, u64)> = counts.into_iter().collect();
        by_count.sort_by_key(|(index, count)| (Reverse(*count), *index));
        let mut tenths = [0u32; 10];
        for (index, _) in by_count.iter().take(100) {
            tenths[(index * 10 / records) as usize] += 1;
        }
        assert!(tenths.iter().all(|&hot| hot > 0), "{tenths:?}");
    }

    #[test]
    fn uniform_covers_the_loaded_records_evenly() {
        let records = 100;
        let mut chooser = KeyChooser::new(Distribution::Uniform, records);
        // Inserted records beyond the loaded ones are not drawn by `uniform`.
        let counts = counts(&mut chooser, records + 50, 3);
        assert!(counts.keys().all(|index| *index < records));
        let expected = DRAWS as f64 / records as f64;
        for count in counts.values() {
            assert!((*count as f64 - expected).abs() < expected * 0.2, "{count}");
        }
        assert_eq!(counts.len(), records as usize);
    }

    #[test]
    fn latest_prefers_the_newest_and_follows_the_inserts() {
        let records = 10_000;
        let mut chooser = KeyChooser::new(Distribution::Latest, records);
        let counts = counts(&mut chooser, records, 4);
        let (hottest, share) = top_share(&counts);
        assert_eq!(hottest, records - 1, "the newest record is the hottest");
        let theory = Zipfian::new(records, ZIPFIAN_THETA).top_share();
        assert!((share - theory).abs() < 0.01, "{share} vs {theory}");
        // After 500 inserts the newest is the 500th insert; nothing at or above the limit.
        let limit = records + 500;
        let counts = counts_after_growth(&mut chooser, limit);
        assert_eq!(top_share(&counts).0, limit - 1);
        let newest_tenth: u64 = counts
            .iter()
            .filter(|(index, _)| **index >= limit - limit / 10)
            .map(|(_, count)| count)
            .sum();
        assert!(newest_tenth as f64 > 0.5 * DRAWS as f64, "{newest_tenth}");
    }

    fn counts_after_growth(chooser: &mut KeyChooser, limit: u64) -> HashMap<u64, u64> {
        counts(chooser, limit, 5)
    }

    #[test]
    fn mixes_add_up_and_match_ycsb() {
        for core in [Core::A, Core::B, Core::C, Core::D, Core::E, Core::F] {
            let mix = core.mix();
            let total = mix.read + mix.update + mix.insert + mix.scan + mix.read_modify_write;
            assert_eq!(total, 100, "{core:?}");
        }
        assert_eq!(Core::B.mix().update, 5);
        assert_eq!(Core::E.mix().scan, 95);
        assert_eq!(Core::F.mix().read_modify_write, 50);
        assert_eq!(Core::D.default_distribution(), Distribution::Latest);
        assert_eq!(Core::A.default_distribution(), Distribution::Zipfian);
    }

    #[test]
    fn fnv_hash_matches_ycsb() {
        // Values of YCSB's Java fnvhash64 (computed independently, Math.abs applied).
        assert_eq!(fnv_hash64(0), 0x5738_07cd_d7e5_c63b);
        assert_eq!(fnv_hash64(1), 0x7632_ced6_e2d5_105c);
        assert_eq!(fnv_hash64(12345), 0x18e1_4e7a_1d12_33b4);
    }

    #[test]
    fn insert_limit_waits_for_every_earlier_insert() {
        let counter = InsertCounter::new(10);
        let (first, second, third) = (counter.allocate(), counter.allocate(), counter.allocate());
        assert_eq!((first, second, third), (10, 11, 12));
        assert_eq!(counter.allocated(), 13);
        counter.acknowledge(second);
        assert_eq!(counter.limit(), 10, "11 is done but 10 is not");
        counter.acknowledge(third);
        assert_eq!(counter.limit(), 10);
        counter.acknowledge(first);
        assert_eq!(counter.limit(), 13);
    }

    #[test]
    fn insert_counter_across_threads_ends_at_the_total() {
        let counter = InsertCounter::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        let index = counter.allocate();
                        assert!(index < counter.allocated());
                        counter.acknowledge(index);
                    }
                });
            }
        });
        assert_eq!(counter.limit(), 4000);
    }
}
