//! The executor: one thread that runs every engine command, in the order batches arrive.
//!
//! One thread keeps each command atomic (INCR, LPUSH... read and write several records)
//! without locks, as Redis's single thread does. It takes all the batches that are ready
//! from all connections at once, faults in the leaves of the keys they will read with one
//! `prefetch_keys` while the pool is missing (misses from many clients in one I/O
//! submission), runs them, and hands the replies with the highest LSN written to the syncer
//! thread. Under `always` the syncer waits once
//! (`Engine::wait_durable`) for the whole group and then releases the replies: writes from
//! many connections share one log sync, while the executor goes on with the next batch.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bufpool_engine::{Engine, EngineError, Lsn};
use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::oneshot;

use crate::commands::keys::Cursors;
use crate::commands::{CommandError, CommandSpec, EngineFn, READONLY, WRITE};
use crate::resp::{Reply, Request};
use crate::shared::{Fsync, ServerState};
use crate::store::Store;

/// A connection's ready commands, run together; the replies come back in order.
pub struct Job {
    pub commands: Vec<(&'static CommandSpec, EngineFn, Request)>,
    pub reply: oneshot::Sender<Vec<Reply>>,
}

/// What commands see: the store, server state, SCAN cursors, randomness.
pub struct Exec {
    pub store: Store,
    pub state: Arc<ServerState>,
    pub cursors: Cursors,
    pub rng: SmallRng,
}

/// Jobs taken in one turn (each connection has at most one job outstanding, so this only
/// bounds a turn, never a queue).
const JOBS_PER_TURN_MAX: usize = 512;
/// How often the background sweep runs (expired keys, deleted collections' members).
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// How often the executor looks whether the pool is missing (turning read prefetch on/off).
const PREFETCH_CHECK_INTERVAL: Duration = Duration::from_millis(5);
/// Records the sweep removes per turn and per kind.
const SWEEP_BUDGET: usize = 256;

type Delivery = (Lsn, Vec<(oneshot::Sender<Vec<Reply>>, Vec<Reply>)>);

/// Starts the executor and syncer threads. The executor stops when every sender of the
/// returned channel is gone, after delivering every reply.
pub fn spawn(
    store: Store,
    state: Arc<ServerState>,
) -> std::io::Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
    let (jobs, receiver) = mpsc::channel::<Job>();
    let engine = Arc::clone(&store.engine);
    let seed = crate::store::now_ms() ^ u64::from(std::process::id());
    let exec = Exec {
        store,
        state,
        cursors: Cursors::new(),
        rng: SmallRng::seed_from_u64(seed),
    };
    let handle = std::thread::Builder::new()
        .name("executor".into())
        .spawn(move || run(exec, receiver, engine))?;
    Ok((jobs, handle))
}

fn run(mut exec: Exec, receiver: mpsc::Receiver<Job>, engine: Arc<Engine>) {
    let (deliveries, syncer_input) = mpsc::channel::<Delivery>();
    let syncer_state = Arc::clone(&exec.state);
    let syncer = std::thread::Builder::new()
        .name("syncer".into())
        .spawn(move || sync_and_deliver(&engine, &syncer_state, syncer_input))
        .expect("spawning the syncer thread");
    let mut last_sweep = Instant::now();
    // Prefetching costs a second lookup per key when everything is resident: it runs only
    // while the pool is missing (its miss counter grew since the last look, taken every
    // PREFETCH_CHECK_INTERVAL: summing the pool's counters is not free).
    // The same look also turns the connection tasks' fast reads off while missing, so that
    // misses are batched here rather than block the runtime's threads; it is taken on idle
    // turns too, since fast reads do not wake the executor.
    let mut pool_misses = exec.store.engine.pool_stats().misses;
    let mut missing = true;
    let mut last_check = Instant::now();
    loop {
        if last_check.elapsed() >= PREFETCH_CHECK_INTERVAL {
            let misses = exec.store.engine.pool_stats().misses;
            missing = misses > pool_misses;
            pool_misses = misses;
            last_check = Instant::now();
            exec.state.pool_missing.store(missing, Ordering::Relaxed);
        }
        let first = match receiver.recv_timeout(PREFETCH_CHECK_INTERVAL) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if last_sweep.elapsed() >= SWEEP_INTERVAL {
                    sweep(&exec);
                    last_sweep = Instant::now();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut jobs = vec![first];
        while jobs.len() < JOBS_PER_TURN_MAX {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        exec.state.batches_total.fetch_add(1, Ordering::Relaxed);
        if missing && exec.state.read_prefetch.load(Ordering::Relaxed) {
            prefetch(&exec, &jobs);
        }
        let mut outputs = Vec::with_capacity(jobs.len());
        let wrote = jobs.iter().any(|job| {
            job.commands
                .iter()
                .any(|(spec, _, _)| spec.flags & WRITE != 0)
        });
        for job in jobs {
            let replies = job
                .commands
                .iter()
                .map(|(spec, function, args)| execute(&mut exec, spec, *function, args))
                .collect();
            outputs.push((job.reply, replies));
        }
        let delivery = (exec.store.max_lsn(), outputs);
        // A turn without writes goes through the syncer too while an earlier turn's sync is
        // still running: its reads may have seen those writes and must not be answered first.
        let synced = Lsn(exec.state.synced_lsn.load(Ordering::Acquire));
        if exec.state.settings.fsync == Fsync::Always && (wrote || delivery.0 > synced) {
            if deliveries.send(delivery).is_err() {
                break;
            }
        } else {
            deliver(delivery.1);
        }
        if last_sweep.elapsed() >= SWEEP_INTERVAL {
            sweep(&exec);
            last_sweep = Instant::now();
        }
    }
    // A clean stop leaves no intent for the next start to redo.
    if let Err(error) = exec.store.retire_intent() {
        eprintln!("bufpool-server: deleting the last intent failed: {error}");
    }
    drop(deliveries);
    if syncer.join().is_err() {
        eprintln!("bufpool-server: the syncer thread panicked");
    }
}

/// Runs one command, turning engine errors and panics into error replies.
fn execute(exec: &mut Exec, spec: &CommandSpec, function: EngineFn, args: &[Bytes]) -> Reply {
    let naive_sync = exec.state.settings.fsync == Fsync::Always
        && !exec.state.group_commit.load(Ordering::Relaxed)
        && spec.flags & WRITE != 0;
    exec.store.begin_plan();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| function(exec, args)));
    // Whatever the outcome, the writes planned so far are made (as they were made directly
    // before plans): the store's id counters already count on them.
    let applied = exec.store.finish_plan();
    // Before the reply can be sent: the command's writes are all made (or it failed).
    exec.store.end_change();
    if let Err(error) = applied {
        return engine_error(spec, &error);
    }
    let reply = match outcome {
        Ok(Ok(reply)) => reply,
        Ok(Err(CommandError::Reply(reply))) => reply,
        Ok(Err(CommandError::Engine(error))) => engine_error(spec, &error),
        Err(_) => {
            eprintln!("bufpool-server: internal error in {}", spec.name);
            Reply::error(format!("ERR internal error in '{}'", spec.name))
        }
    };
    if naive_sync && let Err(error) = exec.store.engine.wait_durable(exec.store.max_lsn()) {
        return engine_error(spec, &error);
    }
    reply
}

pub fn engine_error(spec: &CommandSpec, error: &EngineError) -> Reply {
    eprintln!("bufpool-server: engine error in {}: {error}", spec.name);
    Reply::error(format!("ERR engine: {error}"))
}

/// Faults in, with one `prefetch_keys` (no value read, no second lookup), the leaves of the
/// keys the batch's read-only commands will look up: the misses of all those clients go to
/// the disk in one submission.
fn prefetch(exec: &Exec, jobs: &[Job]) {
    let mut keys: Vec<&[u8]> = Vec::new();
    for job in jobs {
        for (spec, _, args) in &job.commands {
            if spec.flags & READONLY != 0 {
                keys.extend(spec.key_indexes(args.len()).map(|index| &args[index][..]));
            }
        }
    }
    // One key gains nothing from a batch; the command's own lookup will fault it in.
    if keys.len() >= 2 {
        // Only the page faults matter here; a failure shows again in the command itself.
        let _ = exec.store.keys.prefetch_keys(&keys);
    }
}

fn sweep(exec: &Exec) {
    let outcome = exec.store.sweep(SWEEP_BUDGET);
    exec.store.end_change();
    match outcome {
        Ok(expired) => {
            exec.state
                .expired_keys
                .fetch_add(expired, Ordering::Relaxed);
        }
        Err(error) => eprintln!("bufpool-server: expiry sweep failed: {error}"),
    }
}

fn deliver(outputs: Vec<(oneshot::Sender<Vec<Reply>>, Vec<Reply>)>) {
    for (reply_to, replies) in outputs {
        // A client that went away meanwhile no longer wants its replies.
        let _ = reply_to.send(replies);
    }
}

/// The syncer: for each delivery, waits until the log is durable past its LSN (one wait
/// covers every batch queued behind it), then releases its replies.
fn sync_and_deliver(engine: &Engine, state: &ServerState, input: mpsc::Receiver<Delivery>) {
    let mut durable = Lsn(0);
    while let Ok((lsn, outputs)) = input.recv() {
        let mut outputs = outputs;
        let mut target = lsn;
        // Everything already queued shares this sync.
        let mut queued = Vec::new();
        while let Ok((more_lsn, more)) = input.try_recv() {
            target = target.max(more_lsn);
            queued.push(more);
        }
        if target > durable {
            let replies: usize = std::iter::once(&outputs)
                .chain(queued.iter())
                .flat_map(|output| output.iter().map(|(_, replies)| replies.len()))
                .sum();
            state.durable_waits_total.fetch_add(1, Ordering::Relaxed);
            state
                .durable_replies_total
                .fetch_add(replies as u64, Ordering::Relaxed);
            if let Err(error) = engine.wait_durable(target) {
                // Not durable: every write in these batches must fail, not be acknowledged.
                eprintln!("bufpool-server: log sync failed: {error}");
                let failure = Reply::error(format!("ERR engine: log sync failed: {error}"));
                for output in std::iter::once(&mut outputs).chain(queued.iter_mut()) {
                    for (_, replies) in output.iter_mut() {
                        replies
                            .iter_mut()
                            .for_each(|reply| *reply = failure.clone());
                    }
                }
            } else {
                durable = target;
                state.synced_lsn.fetch_max(durable.0, Ordering::Release);
            }
        }
        deliver(outputs);
        queued.into_iter().for_each(deliver);
    }
}
