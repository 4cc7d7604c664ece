//! The crash tests' oracle: what every tree must hold after a crash, given the operations
//! acknowledged before it and the ones in flight when it happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bufpool_engine::Engine;

/// Records of one tree.
pub type Records = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every user tree by name.
pub type Db = BTreeMap<String, Records>;

/// One user operation, as the test issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateTree {
        tree: String,
    },
    Put {
        tree: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        tree: String,
        key: Vec<u8>,
    },
    /// `Engine::checkpoint`: changes no record.
    Checkpoint,
}

impl Op {
    /// A short name for counts and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateTree { .. } => "create-tree",
            Op::Put { value, .. } if value.len() > OVERFLOW_FROM => "put-overflow",
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Checkpoint => "checkpoint",
        }
    }

    /// The one record (tree, key) this operation can change, if any.
    fn record(&self) -> Option<(&str, &[u8])> {
        match self {
            Op::Put { tree, key, .. } | Op::Delete { tree, key } => Some((tree, key)),
            Op::CreateTree { .. } | Op::Checkpoint => None,
        }
    }
}

/// Values longer than this certainly live on overflow pages (a page is 4 KiB).
pub const OVERFLOW_FROM: usize = 4096;

/// Applies `op` to `db` as the engine would if it completed.
pub fn apply(db: &mut Db, op: &Op) {
    match op {
        Op::CreateTree { tree } => {
            db.entry(tree.clone()).or_default();
        }
        Op::Put { tree, key, value } => {
            db.entry(tree.clone())
                .or_default()
                .insert(key.clone(), value.clone());
        }
        Op::Delete { tree, key } => {
            if let Some(records) = db.get_mut(tree) {
                records.remove(key);
            }
        }
        Op::Checkpoint => {}
    }
}

/// What reading a database back found.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub db: Db,
    /// Records read (over all trees).
    pub records: u64,
}

/// Reads every user tree whole, checking on the way that `verify` passes and that `len`,
/// `verify`'s record count and the records iterated agree.
pub fn read_all(engine: &Engine) -> Result<ReadBack, String> {
    let mut back = ReadBack::default();
    let names = engine
        .tree_names()
        .map_err(|error| format!("tree_names: {error}"))?;
    for name in names {
        let tree = engine
            .tree(&name)
            .map_err(|error| format!("tree {name:?}: {error}"))?;
        let summary = tree
            .verify()
            .map_err(|error| format!("verify of tree {name:?}: {error}"))?;
        let records: Records = tree
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|error| format!("scan of tree {name:?}: {error}"))?;
        let len = tree
            .len()
            .map_err(|error| format!("len of tree {name:?}: {error}"))?;
        if len != records.len() as u64 || summary.records != records.len() as u64 {
            return Err(format!(
                "tree {name:?}: len() = {len}, verify counts {}, a scan finds {}",
                summary.records,
                records.len()
            ));
        }
        back.records += records.len() as u64;
        back.db.insert(name, records);
    }
    Ok(back)
}

/// How each in-flight operation turned out.
#[derive(Debug, Default, Clone, Copy)]
pub struct InFlightOutcome {
    pub present: u64,
    pub absent: u64,
}

/// Checks `actual` against `acked` (the state after every acknowledged operation) and the
/// operations in flight at the crash, which may each be wholly present or wholly absent;
/// in-flight operations must touch distinct records (one per writer, writers disjoint).
/// Everything else must be exactly as acknowledged. Each mismatch is described.
pub fn check(actual: &Db, acked: &Db, in_flight: &[Op]) -> Result<InFlightOutcome, Vec<String>> {
    let mut problems = Vec::new();
    let mut outcome = InFlightOutcome::default();
    let mut touched: BTreeSet<(&str, &[u8])> = BTreeSet::new();
    let mut created: HashMap<&str, &Op> = HashMap::new();
    for op in in_flight {
        if let Some(record) = op.record() {
            assert!(touched.insert(record), "two in-flight ops on one record");
        }
        if let Op::CreateTree { tree } = op {
            created.insert(tree, op);
        }
    }
    let names: BTreeSet<&String> = actual.keys().chain(acked.keys()).collect();
    let empty = Records::new();
    for name in names {
        let (got, want) = match (actual.get(name), acked.get(name)) {
            (Some(got), Some(want)) => (got, want),
            (None, Some(want)) => {
                // Only a tree no acknowledged operation put a record in, and whose creation
                // was in flight, may be missing.
                if created.contains_key(name.as_str()) && want.is_empty() {
                    outcome.absent += 1;
                } else {
                    problems.push(format!("tree {name:?} is missing (acknowledged)"));
                }
                continue;
            }
            (Some(got), None) => {
                if !created.contains_key(name.as_str()) {
                    problems.push(format!("tree {name:?} exists but was never created"));
                    continue;
                }
                outcome.present += 1;
                (got, &empty)
            }
            (None, None) => unreachable!("a name from one of the maps"),
        };
        let keys: BTreeSet<&Vec<u8>> = got.keys().chain(want.keys()).collect();
        for key in keys {
            let (got_value, want_value) = (got.get(key), want.get(key));
            if !touched.contains(&(name.as_str(), key.as_slice())) && got_value != want_value {
                problems.push(format!(
                    "tree {name:?} key {}: {} found, {} acknowledged",
                    show(key),
                    show_value(got_value),
                    show_value(want_value)
                ));
            }
        }
    }
    for op in in_flight {
        let Some((tree, key)) = op.record() else {
            continue;
        };
        let before = acked.get(tree).and_then(|records| records.get(key));
        let after = match op {
            Op::Put { value, .. } => Some(value),
            _ => None,
        };
        let got = actual.get(tree).and_then(|records| records.get(key));
        if got == after {
            outcome.present += 1;
        } else if got == before {
            outcome.absent += 1;
        } else {
            problems.push(format!(
                "in-flight {} on tree {tree:?} key {}: {} found, neither {} (before) nor {} (after)",
                op.kind(),
                show(key),
                show_value(got),
                show_value(before),
                show_value(after)
            ));
        }
    }
    if problems.is_empty() {
        Ok(outcome)
    } else {
        Err(problems)
    }
}

/// Finds a prefix of `ops` (at least `min_prefix` long) whose application to `base` gives
/// exactly `actual`; returns the longest such. For durability modes that may lose a tail of
/// acknowledged operations but never half of one. Trees must all exist in `base`.
pub fn matching_prefix(
    actual: &Db,
    base: &Db,
    ops: &[Op],
    min_prefix: usize,
) -> Result<usize, String> {
    let names: BTreeSet<&String> = actual.keys().chain(base.keys()).collect();
    let touched: BTreeSet<(&str, &[u8])> = ops.iter().filter_map(Op::record).collect();
    for name in names {
        let (Some(got), Some(want)) = (actual.get(name), base.get(name)) else {
            return Err(format!("tree {name:?} exists on one side only"));
        };
        let keys: BTreeSet<&Vec<u8>> = got.keys().chain(want.keys()).collect();
        for key in keys {
            if !touched.contains(&(name.as_str(), key.as_slice())) && got.get(key) != want.get(key)
            {
                return Err(format!(
                    "tree {name:?} key {} (no operation touched it): {} found, {} expected",
                    show(key),
                    show_value(got.get(key)),
                    show_value(want.get(key))
                ));
            }
        }
    }
    // Expected value of each touched record after the prefix so far, and how many touched
    // records differ from `actual`: a prefix matches when none does.
    let lookup = |db: &Db, (tree, key): (&str, &[u8])| -> Option<Vec<u8>> {
        db.get(tree).and_then(|records| records.get(key)).cloned()
    };
    let mut expected: HashMap<(&str, &[u8]), Option<Vec<u8>>> = touched
        .iter()
        .map(|&record| (record, lookup(base, record)))
        .collect();
    let mut differing = touched
        .iter()
        .filter(|&&record| expected[&record] != lookup(actual, record))
        .count();
    let mut best = (differing == 0 && min_prefix == 0).then_some(0);
    for (index, op) in ops.iter().enumerate() {
        if let Some(record) = op.record() {
            let now = match op {
                Op::Put { value, .. } => Some(value.clone()),
                _ => None,
            };
            let found = lookup(actual, record);
            let was_equal = expected[&record] == found;
            let is_equal = now == found;
            expected.insert(record, now);
            match (was_equal, is_equal) {
                (true, false) => differing += 1,
                (false, true) => differing -= 1,
                _ => {}
            }
        }
        if differing == 0 && index + 1 >= min_prefix {
            best = Some(index + 1);
        }
    }
    best.ok_or_else(|| {
        format!(
            "no prefix of the {} operations (at least {min_prefix}) gives the state found",
            ops.len()
        )
    })
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(24)]);
    format!("{text:?} ({} bytes)", bytes.len())
}

fn show_value(value: Option<&Vec<u8>>) -> String {
    match value {
        None => "absent".into(),
        Some(value) => format!(
            "{} bytes starting {:02x?}",
            value.len(),
            &value[..value.len().min(8)]
        ),
    }
}
