//! The keyspace in the engine's trees: how each data type is encoded, expiry, and the lazy
//! reclamation of deleted collections.
//!
//! Trees (see DESIGN.md, "The storage server"):
//! * `keys`: user key → `[type u8][expire_at_ms u64 BE, 0 = none][body]`. A string's body is
//!   its value; a collection's body is its header `[id u64][len u64][head u64][tail u64]`
//!   (head and tail only used by lists).
//! * `expires`: `expire_at_ms BE ++ key` → empty, for the background sweep.
//! * `hash`: `id ++ field` → value; `set`: `id ++ member` → empty;
//!   `list`: `id ++ seq BE` → element, seqs contiguous from head to tail;
//!   `zset.member`: `id ++ member` → score (f64 BE); `zset.score`: `id ++ sortable score ++
//!   member` → empty.
//! * `sys`: `next_id` (the reserved id ceiling), `gc ++ id` → type of a deleted collection
//!   whose members the sweep still has to remove, `intent: ++ n` → the ops of the command
//!   being applied (see `intent`), `flushing` while a FLUSHDB runs.
//!
//! Each collection has a fresh id, so deleting one is O(1): its header goes at once, its
//! members later (they are unreachable without the header).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{SystemTime, UNIX_EPOCH};

use bufpool_engine::{
    Direction, Engine, EngineError, KEY_SIZE_MAX, LeafReads, Lsn, NoWait, Tree, VALUE_SIZE_MAX,
};

use crate::intent::{self, Op, Plan, TreeNumber};

/// Longest user key, hash field, set or sorted-set member: the engine's key limit less the
/// 16 bytes of prefix the longest encoding adds (`id ++ score ++ member`).
pub const KEY_BYTES_MAX: usize = KEY_SIZE_MAX - 16;
/// Longest string value: the engine's value limit less the entry header.
pub const STRING_BYTES_MAX: usize = VALUE_SIZE_MAX - HEADER_BYTES;
const HEADER_BYTES: usize = 9;
/// Ids are reserved in blocks so that `next_id` is written once per block.
const ID_BLOCK: u64 = 1024;
/// Collections up to this size are deleted at once; larger ones by the sweep.
const INLINE_DROP_MAX: u64 = 128;
/// First list sequence number: lists grow both ways from the middle of the u64 range.
pub const LIST_ORIGIN: u64 = 1 << 63;

/// A value's type, as `TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String = 0,
    Hash = 1,
    List = 2,
    Set = 3,
    ZSet = 4,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0 => Kind::String,
            1 => Kind::Hash,
            2 => Kind::List,
            3 => Kind::Set,
            4 => Kind::ZSet,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
        }
    }
}

/// A key's record in the `keys` tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: Kind,
    /// Absolute expiry in Unix milliseconds; 0 = none.
    pub expire_ms: u64,
    pub body: Vec<u8>,
}

impl Entry {
    /// Not expired at `now_ms` (the one expiry rule: exact on access, scans and the sweep).
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        self.expire_ms == 0 || self.expire_ms > now_ms
    }
}

/// A collection's header (the body of its entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collection {
    pub id: u64,
    pub len: u64,
    pub head: u64,
    pub tail: u64,
}

impl Collection {
    pub fn encode(&self) -> Vec<u8> {
        [self.id, self.len, self.head, self.tail]
            .iter()
            .flat_map(|value| value.to_be_bytes())
            .collect()
    }

    pub fn decode(body: &[u8]) -> Option<Collection> {
        let word = |index: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                body.get(index * 8..index * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(Collection {
            id: word(0)?,
            len: word(1)?,
            head: word(2)?,
            tail: word(3)?,
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// `id ++ suffix`: a member's key in a collection tree.
pub fn member_key(id: u64, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + suffix.len());
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(suffix);
    key
}

/// The range of keys of collection `id`: `[id, id + 1)`.
pub fn id_bounds(id: u64) -> (Vec<u8>, Vec<u8>) {
    (id.to_be_bytes().to_vec(), (id + 1).to_be_bytes().to_vec())
}

/// A score's 8 bytes whose byte order is the numeric order (sign bit flipped for
/// positives, all bits flipped for negatives).
pub fn sortable_score(score: f64) -> [u8; 8] {
    let bits = score.to_bits();
    let ordered = if bits >> 63 == 0 {
        bits | (1 << 63)
    } else {
        !bits
    };
    ordered.to_be_bytes()
}

pub fn score_from_sortable(bytes: &[u8]) -> f64 {
    let ordered = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits)
}

/// Read access to the keyspace, for the read-only commands that run both on the executor
/// ([`Store`]) and on the connection tasks ([`Reader`]).
pub trait Keyspace {
    /// The live entry of `key`; an expired one reads as absent.
    fn entry(&self, key: &[u8]) -> Result<Option<Entry>, EngineError>;
    /// The value of `key` in `tree` (one of this keyspace's).
    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        tree.get(key)
    }
    /// The tree of `kind`'s members (sorted sets: member → score). Not for strings.
    fn member_tree(&self, kind: Kind) -> &Tree;
}

/// What the executor publishes for the reads served on connection tasks (see `fast`).
#[derive(Debug, Default)]
pub struct Published {
    /// A seqlock word: odd while a command's writes are being made, bumped to the next even
    /// value once they are all made. A read that saw the same even value before and after
    /// saw no command half-applied.
    pub epoch: AtomicU64,
    /// Highest LSN written by the commands completed so far (stored before `epoch` turns
    /// even).
    pub applied_lsn: AtomicU64,
}

/// The keyspace's trees for reading on any thread: cheap to clone, never writes (an
/// expired key reads as absent and is left for the executor to reclaim).
#[derive(Clone)]
pub struct Reader {
    keys: Tree,
    hash: Tree,
    list: Tree,
    set: Tree,
    zmember: Tree,
    pub published: Arc<Published>,
}

impl Reader {
    /// A stream of leaf reads on this thread (see `local_reads`).
    pub fn leaf_reads(&self, depth: u32) -> Result<LeafReads<'_>, EngineError> {
        self.keys.leaf_reads(depth)
    }
}

/// The entry a main-tree record holds, unless it has expired (read as absent; the executor
/// or the sweep reclaims it).
fn live_entry(bytes: Vec<u8>) -> Option<Entry> {
    let entry = decode_entry(&bytes);
    entry.is_live_at(now_ms()).then_some(entry)
}

/// A `Reader` for connection threads, which never wait (see `local_reads`): a record it
/// cannot read without waiting reads as absent and is noted, so that the answer is thrown
/// away and the read tried again once its leaf is in, or sent to the executor.
pub struct NoWaitReader<'r> {
    reader: &'r Reader,
    /// Evicted leaves the reads met (`NoWait::LeafEvicted` tokens).
    leaves: RefCell<Vec<u64>>,
    /// A read met something it cannot read without waiting (`NoWait::Busy`).
    busy: Cell<bool>,
}

impl<'r> NoWaitReader<'r> {
    pub fn new(reader: &'r Reader) -> NoWaitReader<'r> {
        NoWaitReader {
            reader,
            leaves: RefCell::new(Vec::new()),
            busy: Cell::new(false),
        }
    }

    /// Whether every read so far was answered (no leaf to read, nothing busy).
    pub fn answered(&self) -> bool {
        !self.busy.get() && self.leaves.borrow().is_empty()
    }

    pub fn busy(&self) -> bool {
        self.busy.get()
    }

    /// The evicted leaves the reads met.
    pub fn into_leaves(self) -> Vec<u64> {
        self.leaves.into_inner()
    }

    fn try_get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let mut value = Vec::new();
        match tree.try_get_into(key, &mut value)? {
            NoWait::Ready(found) => Ok(found.then_some(value)),
            NoWait::LeafEvicted(leaf) => {
                self.leaves.borrow_mut().push(leaf);
                Ok(None)
            }
            NoWait::Busy => {
                self.busy.set(true);
                Ok(None)
            }
        }
    }
}

impl Keyspace for NoWaitReader<'_> {
    fn entry(&self, key: &[u8]) -> Result<Option<Entry>, EngineError> {
        Ok(self.try_get(&self.reader.keys, key)?.and_then(live_entry))
    }

    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.try_get(tree, key)
    }

    fn member_tree(&self, kind: Kind) -> &Tree {
        self.reader.member_tree(kind)
    }
}

impl Keyspace for Reader {
    fn entry(&self, key: &[u8]) -> Result<Option<Entry>, EngineError> {
        Ok(self.keys.get(key)?.and_then(live_entry))
    }

    fn member_tree(&self, kind: Kind) -> &Tree {
        match kind {
            Kind::Hash => &self.hash,
            Kind::List => &self.list,
            Kind::Set => &self.set,
            Kind::ZSet => &self.zmember,
            Kind::String => unreachable!("strings have no member tree"),
        }
    }
}

impl Keyspace for Store {
    fn entry(&self, key: &[u8]) -> Result<Option<Entry>, EngineError> {
        Store::entry(self, key)
    }

    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.read(tree, key)
    }

    fn member_tree(&self, kind: Kind) -> &Tree {
        match kind {
            Kind::Hash => &self.hash,
            Kind::List => &self.list,
            Kind::Set => &self.set,
            Kind::ZSet => &self.zmember,
            Kind::String => unreachable!("strings have no member tree"),
        }
    }
}

/// The engine's trees and the writes made through them. Used by one thread (the executor).
pub struct Store {
    pub engine: Arc<Engine>,
    pub keys: Tree,
    expires: Tree,
    pub hash: Tree,
    pub list: Tree,
    pub set: Tree,
    pub zmember: Tree,
    pub zscore: Tree,
    sys: Tree,
    /// Highest LSN of a write made so far: what an acknowledgement waits for.
    max_lsn: Cell<Lsn>,
    next_id: Cell<u64>,
    reserved_id: Cell<u64>,
    published: Arc<Published>,
    /// The current command has made a write (`published.epoch` is odd).
    changing: Cell<bool>,
    /// While a command runs: its writes, applied when it ends (see `intent`).
    plan: RefCell<Option<Plan>>,
    /// Chunks of the last intent, still stored though its command is applied: it is deleted
    /// only before a write that is not itself behind an intent (see `finish_plan`).
    live_intent: Cell<usize>,
    /// Tests: writes left before a simulated crash stops them.
    #[cfg(test)]
    writes_left: Cell<usize>,
}

const NEXT_ID_KEY: &[u8] = b"next_id";
const FLUSHING_KEY: &[u8] = b"flushing";
/// `sys`'s number in `Store::numbered_trees`.
const SYS_TREE: TreeNumber = 7;
const GC_PREFIX: &[u8] = b"gc:";

impl Store {
    pub fn open(engine: Arc<Engine>) -> Result<Store, EngineError> {
        let sys = engine.tree("sys")?;
        let store = Store {
            keys: engine.tree("keys")?,
            expires: engine.tree("expires")?,
            hash: engine.tree("hash")?,
            list: engine.tree("list")?,
            set: engine.tree("set")?,
            zmember: engine.tree("zset.member")?,
            zscore: engine.tree("zset.score")?,
            sys,
            engine,
            max_lsn: Cell::new(Lsn(0)),
            next_id: Cell::new(1),
            reserved_id: Cell::new(1),
            published: Arc::new(Published::default()),
            changing: Cell::new(false),
            plan: RefCell::new(None),
            live_intent: Cell::new(0),
            #[cfg(test)]
            writes_left: Cell::new(usize::MAX),
        };
        // First finish what a crash interrupted: the intent may move the id ceiling.
        store.recover()?;
        let reserved = store
            .sys
            .get(NEXT_ID_KEY)?
            .and_then(|bytes| Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?)))
            .unwrap_or(1);
        // Ids below the persisted ceiling may have been used before a crash: start past it.
        store.next_id.set(reserved);
        store.reserved_id.set(reserved);
        Ok(store)
    }

    /// At open: redoes the command whose intent survived a crash, drops a partial intent,
    /// and finishes an interrupted FLUSHDB.
    fn recover(&self) -> Result<(), EngineError> {
        if self.sys.get(FLUSHING_KEY)?.is_some() {
            self.clear_trees()?;
            self.delete(&self.sys, FLUSHING_KEY)?;
        }
        let mut stored = Vec::new();
        for record in self.sys.range(intent::INTENT_PREFIX.., Direction::Forward) {
            let (key, value) = record?;
            if !key.starts_with(intent::INTENT_PREFIX) {
                break;
            }
            stored.push((key, value));
        }
        let Some(first) = stored.iter().find(|(key, _)| *key == intent::chunk_key(0)) else {
            // Chunk 0 is written last: without it the command wrote nothing else.
            for (key, _) in &stored {
                self.delete(&self.sys, key)?;
            }
            return Ok(());
        };
        let count = first.1.get(..4).map_or(0, |bytes| {
            u32::from_be_bytes(bytes.try_into().expect("4 bytes")) as usize
        });
        let mut encoded = first.1[4.min(first.1.len())..].to_vec();
        for number in 1..count {
            let key = intent::chunk_key(number as u32);
            match stored.iter().find(|(stored_key, _)| *stored_key == key) {
                Some((_, value)) => encoded.extend_from_slice(value),
                None => return Err(self.damaged_intent()),
            }
        }
        let ops = intent::decode(&encoded).ok_or_else(|| self.damaged_intent())?;
        eprintln!(
            "bufpool-server: redoing the {} writes of the last multi-record command before a \
             crash (its intent was still stored)",
            ops.len()
        );
        for op in &ops {
            self.apply(op)?;
        }
        self.delete(&self.sys, &intent::chunk_key(0))?;
        for (key, _) in &stored {
            self.delete(&self.sys, key)?;
        }
        Ok(())
    }

    /// A stored intent that does not decode (damage the checksums missed, or a bug).
    fn damaged_intent(&self) -> EngineError {
        EngineError::Corrupted {
            page: 0,
            file: self.engine.path().to_path_buf(),
            reason: "the server's intent record (sys intent:*) is damaged".into(),
        }
    }

    /// The number an op names `tree` by.
    fn tree_number(&self, tree: &Tree) -> TreeNumber {
        let trees = self.numbered_trees();
        let number = trees.iter().position(|known| known.name() == tree.name());
        number.expect("one of the store's trees") as TreeNumber
    }

    fn numbered_trees(&self) -> [&Tree; 8] {
        [
            &self.keys,
            &self.expires,
            &self.hash,
            &self.list,
            &self.set,
            &self.zmember,
            &self.zscore,
            &self.sys,
        ]
    }

    fn apply(&self, op: &Op) -> Result<(), EngineError> {
        #[cfg(test)]
        {
            let left = self.writes_left.get();
            if left == 0 {
                return Err(EngineError::WritesRefused {
                    path: self.engine.path().to_path_buf(),
                    reason: "simulated crash".into(),
                });
            }
            self.writes_left.set(left - 1);
        }
        let trees = self.numbered_trees();
        let tree = |number: TreeNumber| {
            trees
                .get(usize::from(number))
                .copied()
                .ok_or_else(|| self.damaged_intent())
        };
        match op {
            Op::Put(number, key, value) => {
                self.begin_change();
                self.note(tree(*number)?.put_nowait(key, value)?);
            }
            Op::Delete(number, key) => {
                self.begin_change();
                self.note(tree(*number)?.delete_nowait(key)?.1);
            }
        }
        Ok(())
    }

    /// From here the command's writes are planned, not made (see `intent`).
    pub fn begin_plan(&self) {
        *self.plan.borrow_mut() = Some(Plan::default());
    }

    /// Applies the planned writes: one as is, more behind an intent.
    pub fn finish_plan(&self) -> Result<(), EngineError> {
        let Some(plan) = self.plan.borrow_mut().take() else {
            return Ok(());
        };
        if plan.ops.len() <= 1 {
            if !plan.ops.is_empty() {
                self.retire_intent()?;
            }
            return plan.ops.iter().try_for_each(|op| self.apply(op));
        }
        let chunks = intent::chunks(&intent::encode(&plan.ops));
        // The previous intent's command is applied: a start that finds it redoes nothing
        // new. A one-record one is replaced by writing chunk 0 (its count ignores new chunks
        // written before); a larger one goes first, as its chunks are about to be reused.
        if self.live_intent.get() > 1 {
            self.retire_intent()?;
        }
        // Chunk 0 last: a start finds it only if every chunk is there.
        for (number, chunk) in chunks.iter().enumerate().skip(1) {
            self.apply(&Op::Put(
                SYS_TREE,
                intent::chunk_key(number as u32),
                chunk.clone(),
            ))?;
        }
        self.apply(&Op::Put(SYS_TREE, intent::chunk_key(0), chunks[0].clone()))?;
        self.live_intent.set(chunks.len());
        for op in &plan.ops {
            self.apply(op)?;
        }
        // The intent stays: deleting it now would cost a record per command, and a redo
        // of an applied command is harmless until a write not behind an intent follows.
        Ok(())
    }

    /// Deletes the stored intent of an applied command, before a write that a redo of it
    /// could undo (a single-record command, FLUSHDB, the sweep) and at shutdown.
    pub fn retire_intent(&self) -> Result<(), EngineError> {
        let chunks = self.live_intent.get();
        // Chunk 0 first: without it the others are stale and dropped at the next start.
        for number in 0..chunks {
            self.apply(&Op::Delete(SYS_TREE, intent::chunk_key(number as u32)))?;
        }
        self.live_intent.set(0);
        Ok(())
    }

    /// The value of `key` in `tree` as the running command left it.
    pub fn read(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if let Some(plan) = self.plan.borrow().as_ref()
            && let Some(planned) = plan.lookup(self.tree_number(tree), key)
        {
            return Ok(planned.map(<[u8]>::to_vec));
        }
        tree.get(key)
    }

    /// Whether the running command deleted `key` from `tree` (a range read, which does not
    /// see the plan, still finds it).
    pub fn deleted(&self, tree: &Tree, key: &[u8]) -> bool {
        self.plan
            .borrow()
            .as_ref()
            .is_some_and(|plan| matches!(plan.lookup(self.tree_number(tree), key), Some(None)))
    }

    /// A reader of the same trees, for the connection tasks.
    pub fn reader(&self) -> Reader {
        Reader {
            keys: self.keys.clone(),
            hash: self.hash.clone(),
            list: self.list.clone(),
            set: self.set.clone(),
            zmember: self.zmember.clone(),
            published: Arc::clone(&self.published),
        }
    }

    /// Before a command's first write: makes the epoch odd, so that readers on other
    /// threads retry rather than see the command half-applied.
    fn begin_change(&self) {
        if !self.changing.replace(true) {
            let epoch = self.published.epoch.load(Ordering::Relaxed);
            self.published.epoch.store(epoch + 1, Ordering::Relaxed);
            // The odd epoch is visible before any of the writes that follow.
            fence(Ordering::Release);
        }
    }

    /// After a command (or a sweep): if it wrote, publishes its LSN and makes the epoch
    /// even again.
    pub fn end_change(&self) {
        if self.changing.replace(false) {
            let published = &self.published;
            published
                .applied_lsn
                .store(self.max_lsn.get().0, Ordering::Relaxed);
            let epoch = published.epoch.load(Ordering::Relaxed);
            published.epoch.store(epoch + 1, Ordering::Release);
        }
    }

    pub fn max_lsn(&self) -> Lsn {
        self.max_lsn.get()
    }

    fn note(&self, lsn: Lsn) {
        if lsn > self.max_lsn.get() {
            self.max_lsn.set(lsn);
        }
    }

    /// Writes a record (planned while a command runs) without waiting for the log; the
    /// executor waits once per batch.
    pub fn put(&self, tree: &Tree, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        if let Some(plan) = self.plan.borrow_mut().as_mut() {
            plan.put(self.tree_number(tree), key, value);
            return Ok(());
        }
        self.retire_intent()?;
        self.begin_change();
        self.note(tree.put_nowait(key, value)?);
        Ok(())
    }

    /// Deletes a record; `Ok(true)` if it was there.
    pub fn delete(&self, tree: &Tree, key: &[u8]) -> Result<bool, EngineError> {
        if self.plan.borrow().is_some() {
            if self.read(tree, key)?.is_none() {
                return Ok(false);
            }
            self.delete_present(tree, key)?;
            return Ok(true);
        }
        self.retire_intent()?;
        self.begin_change();
        let (removed, lsn) = tree.delete_nowait(key)?;
        self.note(lsn);
        Ok(removed)
    }

    /// Deletes a record known to be there (no lookup to tell).
    fn delete_present(&self, tree: &Tree, key: &[u8]) -> Result<(), EngineError> {
        if let Some(plan) = self.plan.borrow_mut().as_mut() {
            plan.delete(self.tree_number(tree), key);
            return Ok(());
        }
        self.delete(tree, key).map(drop)
    }

    /// A fresh collection id.
    pub fn allocate_id(&self) -> Result<u64, EngineError> {
        let id = self.next_id.get();
        if id >= self.reserved_id.get() {
            let ceiling = id + ID_BLOCK;
            self.put(&self.sys, NEXT_ID_KEY, &ceiling.to_be_bytes())?;
            self.reserved_id.set(ceiling);
        }
        self.next_id.set(id + 1);
        Ok(id)
    }

    /// The live entry of `key`: an expired one is deleted here and reported absent.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Entry>, EngineError> {
        let Some(bytes) = self.read(&self.keys, key)? else {
            return Ok(None);
        };
        let entry = decode_entry(&bytes);
        if !entry.is_live_at(now_ms()) {
            self.remove(key, &entry)?;
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Writes `entry` for `key`; `old_expire_ms` is the expiry of the record it replaces
    /// (0 if none), so the `expires` index stays in step.
    pub fn write_entry(
        &self,
        key: &[u8],
        entry: &Entry,
        old_expire_ms: u64,
    ) -> Result<(), EngineError> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + entry.body.len());
        bytes.push(entry.kind as u8);
        bytes.extend_from_slice(&entry.expire_ms.to_be_bytes());
        bytes.extend_from_slice(&entry.body);
        if old_expire_ms != entry.expire_ms {
            if old_expire_ms != 0 {
                self.delete(&self.expires, &expiry_key(old_expire_ms, key))?;
            }
            if entry.expire_ms != 0 {
                self.put(&self.expires, &expiry_key(entry.expire_ms, key), &[])?;
            }
        }
        self.put(&self.keys, key, &bytes)
    }

    /// Deletes the record of `key` and its expiry, leaving members alone (RENAME moves them
    /// with the header).
    pub fn detach(&self, key: &[u8], entry: &Entry) -> Result<(), EngineError> {
        self.delete(&self.keys, key)?;
        if entry.expire_ms != 0 {
            self.delete(&self.expires, &expiry_key(entry.expire_ms, key))?;
        }
        Ok(())
    }

    /// Deletes `key` (whose current entry is `entry`) and, now or later, its members.
    pub fn remove(&self, key: &[u8], entry: &Entry) -> Result<(), EngineError> {
        self.detach(key, entry)?;
        if entry.kind == Kind::String {
            return Ok(());
        }
        let collection = Collection::decode(&entry.body).expect("collection header");
        if collection.len <= INLINE_DROP_MAX {
            self.drop_members(entry.kind, collection.id, u64::MAX)?;
        } else {
            self.put(
                &self.sys,
                &[GC_PREFIX, &collection.id.to_be_bytes()].concat(),
                &[entry.kind as u8],
            )?;
        }
        Ok(())
    }

    fn member_trees(&self, kind: Kind) -> Vec<&Tree> {
        match kind {
            Kind::String => Vec::new(),
            Kind::Hash => vec![&self.hash],
            Kind::List => vec![&self.list],
            Kind::Set => vec![&self.set],
            Kind::ZSet => vec![&self.zmember, &self.zscore],
        }
    }

    /// Deletes up to `limit` member records of collection `id` per tree; returns how many.
    fn drop_members(&self, kind: Kind, id: u64, limit: u64) -> Result<u64, EngineError> {
        let (start, end) = id_bounds(id);
        let mut dropped = 0;
        for tree in self.member_trees(kind) {
            let mut doomed = Vec::new();
            for record in tree.range(start.as_slice()..end.as_slice(), Direction::Forward) {
                doomed.push(record?.0);
                if doomed.len() as u64 >= limit {
                    break;
                }
            }
            for key in doomed {
                self.delete_present(tree, &key)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Background work for one idle turn: expired keys and members of deleted collections,
    /// at most `budget` records each. Returns the number of keys expired.
    pub fn sweep(&self, budget: usize) -> Result<u64, EngineError> {
        let now = (now_ms() + 1).to_be_bytes();
        let mut due = Vec::new();
        for record in self
            .expires
            .range(..now.as_slice(), Direction::Forward)
            .take(budget)
        {
            due.push(record?.0);
        }
        let mut expired = 0;
        for index_key in due {
            let key = &index_key[8..];
            // `entry` deletes the key if it is due; a stale index record is removed too.
            // Both, and a small collection's members, as one command (see `intent`).
            self.begin_plan();
            let gone = self.entry(key).map(|entry| entry.is_none());
            let unindexed = self.delete(&self.expires, &index_key);
            self.finish_plan()?;
            if gone? {
                expired += 1;
            }
            unindexed?;
        }
        let mut collections = Vec::new();
        for record in self.sys.range(GC_PREFIX.., Direction::Forward).take(budget) {
            let (key, value) = record?;
            if !key.starts_with(GC_PREFIX) {
                break;
            }
            collections.push((key, value));
        }
        for (key, value) in collections {
            let id = u64::from_be_bytes(key[GC_PREFIX.len()..].try_into().expect("8-byte id"));
            let kind = value.first().and_then(|byte| Kind::from_byte(*byte));
            let kind = kind.unwrap_or(Kind::String);
            if self.drop_members(kind, id, budget as u64)? == 0 {
                self.delete(&self.sys, &key)?;
            }
        }
        Ok(expired)
    }

    /// Keys whose expiry is due but not yet swept: `DBSIZE` subtracts them.
    pub fn due_count(&self) -> Result<u64, EngineError> {
        let now = (now_ms() + 1).to_be_bytes();
        let mut count = 0;
        for record in self.expires.range(..now.as_slice(), Direction::Forward) {
            record?;
            count += 1;
        }
        Ok(count)
    }

    /// Keys with an expiry set.
    pub fn expires_len(&self) -> Result<u64, EngineError> {
        self.expires.len()
    }

    /// Deletes every record of every tree (FLUSHDB), in bounded chunks.
    /// FLUSHDB is too large for one intent: a `flushing` mark goes first, and a start that
    /// finds it finishes the job.
    pub fn clear(&self) -> Result<(), EngineError> {
        let planned = self.plan.borrow().is_some();
        if planned {
            self.finish_plan()?;
        }
        let result = self
            .put(&self.sys, FLUSHING_KEY, &[])
            .and_then(|()| self.clear_trees())
            .and_then(|()| self.delete(&self.sys, FLUSHING_KEY).map(drop));
        if planned {
            self.begin_plan();
        }
        result
    }

    fn clear_trees(&self) -> Result<(), EngineError> {
        const CHUNK: usize = 4096;
        let trees = [
            &self.keys,
            &self.expires,
            &self.hash,
            &self.list,
            &self.set,
            &self.zmember,
            &self.zscore,
        ];
        for tree in trees {
            // Bounded: each round deletes up to CHUNK records and the tree only shrinks.
            loop {
                let mut doomed = Vec::with_capacity(CHUNK);
                for record in tree.iter().take(CHUNK) {
                    doomed.push(record?.0);
                }
                if doomed.is_empty() {
                    break;
                }
                for key in doomed {
                    self.delete(tree, &key)?;
                }
            }
        }
        let mut gc = Vec::new();
        for record in self.sys.range(GC_PREFIX.., Direction::Forward) {
            let key = record?.0;
            if !key.starts_with(GC_PREFIX) {
                break;
            }
            gc.push(key);
        }
        for key in gc {
            self.delete(&self.sys, &key)?;
        }
        Ok(())
    }
}

pub fn decode_entry(bytes: &[u8]) -> Entry {
    // Only this module writes the `keys` tree; a short or unknown record is a bug or damage
    // the checksums missed, reported as an empty string rather than a crash.
    if bytes.len() < HEADER_BYTES {
        return Entry {
            kind: Kind::String,
            expire_ms: 0,
            body: Vec::new(),
        };
    }
    Entry {
        kind: Kind::from_byte(bytes[0]).unwrap_or(Kind::String),
        expire_ms: u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes")),
        body: bytes[HEADER_BYTES..].to_vec(),
    }
}

fn expiry_key(expire_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut index_key = Vec::with_capacity(8 + key.len());
    index_key.extend_from_slice(&expire_ms.to_be_bytes());
    index_key.extend_from_slice(key);
    index_key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_scores_order_like_numbers() {
        let scores = [
            f64::NEG_INFINITY,
            -1e9,
            -1.5,
            -0.0,
            0.0,
            1e-9,
            2.0,
            f64::INFINITY,
        ];
        for pair in scores.windows(2) {
            assert!(
                sortable_score(pair[0]) <= sortable_score(pair[1]),
                "{pair:?}"
            );
        }
        for score in scores {
            assert_eq!(score_from_sortable(&sortable_score(score)), score);
        }
    }

    /// A command of several records whose writes stop after each possible count (as a
    /// crash would cut the log) is, after the store is reopened, there whole or not at all;
    /// also when the intent of the command before it is still stored (of one chunk, or of
    /// two, which must be deleted before its chunks are reused).
    #[test]
    fn a_command_cut_anywhere_is_redone_whole_or_not_at_all() {
        let dir = std::env::current_exe()
            .expect("test binary path")
            .with_file_name(format!("store-intent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let options = bufpool_engine::EngineOptions {
            pool_bytes: 8 << 20,
            ..bufpool_engine::EngineOptions::default()
        };
        for large in [false, true] {
            // Large: an intent of two chunks.
            let big = vec![b'v'; if large { intent::CHUNK_BYTES } else { 10 }];
            let records = |store: &Store| -> Vec<Option<Vec<u8>>> {
                [&b"a"[..], b"b", b"c", b"big"]
                    .iter()
                    .map(|key| store.keys.get(key).expect("get"))
                    .chain([store.hash.get(b"member").expect("get")])
                    .collect()
            };
            let old = |value: &[u8]| Some(value.to_vec());
            let before = vec![old(b"old"), None, Some(big.clone()), None, None];
            let after = vec![
                old(b"new"),
                old(b"new"),
                Some(big.clone()),
                Some(big.clone()),
                old(b"new"),
            ];
            let mut cuts = 0;
            // Bounded: the command makes a dozen writes at most.
            for cut in 0..64 {
                let path = dir.join(format!("cut-{large}-{cut}.db"));
                let engine = Arc::new(Engine::create(&path, options.clone()).expect("create"));
                let store = Store::open(Arc::clone(&engine)).expect("open");
                // The command before: applied whole, its intent still stored.
                store.begin_plan();
                store.put(&store.keys, b"a", b"old").expect("plan");
                store.put(&store.keys, b"c", &big).expect("plan");
                store.finish_plan().expect("first command");
                assert_eq!(store.live_intent.get(), if large { 2 } else { 1 });
                store.begin_plan();
                store.put(&store.keys, b"a", b"new").expect("plan");
                store.put(&store.keys, b"b", b"new").expect("plan");
                store.put(&store.hash, b"member", b"new").expect("plan");
                store.put(&store.keys, b"big", &big[..1]).expect("plan");
                store.put(&store.keys, b"big", &big).expect("plan");
                store.writes_left.set(cut);
                let complete = store.finish_plan().is_ok();
                drop(store);
                let store = Store::open(Arc::clone(&engine)).expect("reopen");
                let found = records(&store);
                assert!(
                    found == before || found == after,
                    "large {large}, cut after {cut} writes: the command survived in part"
                );
                let intents = store
                    .sys
                    .range(intent::INTENT_PREFIX.., Direction::Forward)
                    .filter_map(Result::ok)
                    .filter(|(key, _)| key.starts_with(intent::INTENT_PREFIX))
                    .count();
                assert_eq!(intents, 0, "cut after {cut} writes: intent left behind");
                drop(store);
                drop(engine);
                cuts += 1;
                if complete {
                    break;
                }
            }
            assert!(cuts > 5, "the command wrote too few records to test");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn collection_headers_round_trip() {
        let header = Collection {
            id: 7,
            len: 3,
            head: LIST_ORIGIN - 1,
            tail: LIST_ORIGIN + 2,
        };
        assert_eq!(Collection::decode(&header.encode()), Some(header));
    }
}
