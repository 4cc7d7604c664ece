//! Miss readers: threads that read the evicted leaves of point reads while the pool misses.
//!
//! While the pool misses, a connection's turn of point reads does not run at once (a miss
//! would block the runtime thread on the disk, and one at a time). It hands the turn's keys
//! to a reader thread and awaits it; the reader starts the reads of their evicted leaves on
//! its own ring (`Tree::leaf_reads`), takes more turns from other clients meanwhile, and
//! tells each connection the moment that turn's leaves are in; the connection then reads
//! them as a connection-task read (`fast`). So the disk holds the reads of every waiting
//! client, and no client waits for a batch's slowest read or for a reader to finish an
//! earlier batch (the batch-at-a-time design, one `prefetch_keys` per batch answered at its
//! end, did: see DESIGN.md).
//!
//! A reader never runs a lookup and never waits for a latch (`LeafReads::start` gives up
//! instead): its started reads are latched by it until it completes them, and other threads
//! (the executor holding a parent while it needs a leaf, a connection reading) may wait for
//! them; if it waited for them in turn, they would deadlock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::thread::JoinHandle;

use bufpool_engine::LeafReads;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::shared::ServerState;
use crate::store::Reader;

/// A connection's turn of point reads: the keys it reads in the main tree, and where to say
/// that their leaves are in.
pub struct ReadJob {
    pub keys: Vec<Bytes>,
    pub leaves_in: oneshot::Sender<()>,
}

/// Leaf reads one reader keeps in flight at most. Above fio's best depth on the disks
/// measured (32), so that two readers' streams together keep a deep queue.
const READS_IN_FLIGHT_MAX: u32 = 128;
/// Turns taken off the channel and not yet started, at most (each connection has at most
/// one turn outstanding, so this is rarely reached).
const JOBS_QUEUED_MAX: usize = 1024;

/// Where connections send their read-only turns: one queue per reader thread, taken in
/// turn (a connection has at most one turn outstanding, so this spreads the load).
pub struct MissReaders {
    queues: Vec<mpsc::Sender<ReadJob>>,
    next: AtomicUsize,
}

impl MissReaders {
    /// Hands `job` to a reader; gives it back if the readers are gone (server stopping).
    pub fn send(&self, job: ReadJob) -> Result<(), ReadJob> {
        if self.queues.is_empty() {
            return Err(job);
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        self.queues[index].send(job).map_err(|error| error.0)
    }
}

/// Starts `count` reader threads; they stop when the returned handle is dropped and their
/// work is done.
pub fn spawn(
    count: usize,
    reader: &Reader,
    state: &Arc<ServerState>,
) -> std::io::Result<(MissReaders, Vec<JoinHandle<()>>)> {
    let mut queues = Vec::with_capacity(count);
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let (sender, receiver) = mpsc::channel::<ReadJob>();
        let (reader, state) = (reader.clone(), Arc::clone(state));
        handles.push(
            std::thread::Builder::new()
                .name(format!("miss-reader-{index}"))
                .spawn(move || run(&receiver, &reader, &state))?,
        );
        queues.push(sender);
    }
    let readers = MissReaders {
        queues,
        next: AtomicUsize::new(0),
    };
    Ok((readers, handles))
}

/// A turn waiting for `reads_left` of its leaves.
struct Waiting {
    job: ReadJob,
    reads_left: usize,
}

/// One reader's state: the turns waiting for leaves, and which read each waits for.
struct Stream<'r> {
    reads: Option<LeafReads<'r>>,
    /// Turns taken off the channel, started once their keys' reads fit: a turn started
    /// with too little room would leave some leaves to its connection to read, blocking
    /// that runtime thread and every client on it.
    queued: VecDeque<ReadJob>,
    state: &'r ServerState,
    /// Slots of waiting turns; `free` lists the empty ones (bounded by the connections).
    waiting: Vec<Option<Waiting>>,
    free: Vec<usize>,
    /// (read token, waiting slot): one entry per leaf a turn waits for.
    waits: Vec<(u64, usize)>,
    tokens: Vec<u64>,
}

fn run(receiver: &mpsc::Receiver<ReadJob>, reader: &Reader, state: &ServerState) {
    let reads = match reader.leaf_reads(READS_IN_FLIGHT_MAX) {
        Ok(reads) => Some(reads),
        Err(error) => {
            // Still correct without it: every turn is let through at once, its lookups
            // faulting leaves in one at a time.
            eprintln!(
                "bufpool-server: miss reader without its own ring ({error}); reading one leaf at a time"
            );
            None
        }
    };
    let mut stream = Stream {
        reads,
        queued: VecDeque::new(),
        state,
        waiting: Vec::new(),
        free: Vec::new(),
        waits: Vec::new(),
        tokens: Vec::new(),
    };
    let mut open = true;
    // Ends when the queue is closed and every turn taken has been let go.
    while open || stream.in_flight() > 0 || !stream.queued.is_empty() {
        if open && stream.in_flight() == 0 && stream.queued.is_empty() {
            // Nothing to do: sleep until a turn comes.
            match receiver.recv() {
                Ok(job) => stream.queued.push_back(job),
                Err(_) => open = false,
            }
        }
        while open && stream.queued.len() < JOBS_QUEUED_MAX {
            match receiver.try_recv() {
                Ok(job) => stream.queued.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        let started = stream.start_queued();
        // With new turns started, only collect what is done; otherwise wait for a read
        // (turns arriving meanwhile are taken after it: at most one read's time later).
        stream.complete(usize::from(started == 0));
    }
    assert!(
        stream.waits.is_empty() && stream.waiting.iter().all(Option::is_none),
        "a miss reader stopped with turns still waiting"
    );
}

impl Stream<'_> {
    fn in_flight(&self) -> usize {
        self.reads.as_ref().map_or(0, LeafReads::in_flight)
    }

    /// Starts the queued turns, in order, while their keys' reads fit (any turn when nothing
    /// is in flight); returns how many it started.
    fn start_queued(&mut self) -> usize {
        let mut started = 0;
        // Bounded by the queue, which only shrinks here.
        while let Some(job) = self.queued.front() {
            let in_flight = self.in_flight();
            if in_flight > 0 && in_flight + job.keys.len() > READS_IN_FLIGHT_MAX as usize {
                break;
            }
            let job = self.queued.pop_front().expect("front checked");
            self.take(job);
            started += 1;
        }
        started
    }

    /// Starts the reads of `job`'s evicted leaves; lets it go at once if there are none.
    fn take(&mut self, job: ReadJob) {
        let Some(reads) = self
            .reads
            .as_mut()
            .filter(|_| self.state.read_prefetch.load(Ordering::Relaxed))
        else {
            let _ = job.leaves_in.send(());
            return;
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.waiting.push(None);
            self.waiting.len() - 1
        });
        let mut reads_left = 0;
        let first_wait = self.waits.len();
        let started_before = reads.in_flight();
        for key in &job.keys {
            // A failed start is no answer: the lookup meets the same error and replies it.
            let Ok(Some(token)) = reads.start(key) else {
                continue;
            };
            if !self.waits[first_wait..].contains(&(token, slot)) {
                self.waits.push((token, slot));
                reads_left += 1;
            }
        }
        let started = reads.in_flight() - started_before;
        if started > 0 {
            self.state.miss_read_batches.fetch_add(1, Ordering::Relaxed);
            self.state
                .miss_read_leaves
                .fetch_add(started as u64, Ordering::Relaxed);
        }
        if reads_left == 0 {
            self.free.push(slot);
            // A connection that went away no longer waits.
            let _ = job.leaves_in.send(());
        } else {
            self.waiting[slot] = Some(Waiting { job, reads_left });
        }
    }

    /// Hands the started reads to the disk, waits for at least `min_complete` of them, and
    /// lets go every turn whose leaves are all in.
    fn complete(&mut self, min_complete: usize) {
        let Some(reads) = self.reads.as_mut() else {
            return;
        };
        if reads.in_flight() == 0 {
            return;
        }
        if let Err(error) = reads.submit() {
            // The reads stay queued and go with the next enter; the lookups report failures.
            eprintln!("bufpool-server: miss reader: submitting reads: {error}");
        }
        reads.complete(min_complete, &mut self.tokens);
        let (waiting, free, tokens) = (&mut self.waiting, &mut self.free, &self.tokens);
        self.waits.retain(|&(token, slot)| {
            if !tokens.contains(&token) {
                return true;
            }
            let entry = waiting[slot].as_mut().expect("a wait names a waiting turn");
            entry.reads_left -= 1;
            if entry.reads_left == 0 {
                let job = waiting[slot].take().expect("checked above").job;
                free.push(slot);
                let _ = job.leaves_in.send(());
            }
            false
        });
        self.tokens.clear();
    }
}
