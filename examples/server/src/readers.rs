//! Miss readers: threads that serve read-only turns while the pool is missing.
//!
//! While the pool misses, point reads leave the connection tasks (a miss there would block
//! a runtime thread on the disk). Sent to the executor, they would wait behind its writes,
//! and the executor would wait for each batch's reads before it took the next batch, so the
//! disk would sit idle while it ran commands: at most one batch of reads in flight. Here a
//! few threads take turns: one holds the queue and collects every read-only turn that is
//! ready, faults their leaves in with one `prefetch_keys` (one submission), and answers
//! them; meanwhile the next thread collects the next batch and submits its reads, so two
//! batches' reads overlap each other and the executor's work.
//!
//! A reply is given here only under the rules of the connection-task reads (`fast`): no
//! command half-applied while it was read, and under `always` nothing read that is not yet
//! durable. A turn any of whose reads cannot be answered so goes to the executor whole (its
//! reads are simply run again there), so a client's replies keep their order.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::commands::{CommandSpec, EngineFn};
use crate::executor::Job;
use crate::fast::{self, ReadFn};
use crate::resp::{Reply, Request};
use crate::shared::ServerState;
use crate::store::Reader;

/// A connection's turn whose commands all have a connection-task form.
pub struct ReadJob {
    pub commands: Vec<(&'static CommandSpec, EngineFn, ReadFn, Request)>,
    pub reply: oneshot::Sender<Vec<Reply>>,
}

/// Turns one reader takes at once (each connection has at most one outstanding, so this
/// bounds a batch, never a queue).
const JOBS_PER_BATCH_MAX: usize = 512;

/// Starts `count` reader threads; they stop when every sender of the returned channel is
/// gone. Turns they cannot answer go to the executor through `jobs`.
pub fn spawn(
    count: usize,
    reader: &Reader,
    state: &Arc<ServerState>,
    jobs: &mpsc::Sender<Job>,
) -> std::io::Result<(mpsc::Sender<ReadJob>, Vec<JoinHandle<()>>)> {
    let (sender, receiver) = mpsc::channel::<ReadJob>();
    let receiver = Arc::new(Mutex::new(receiver));
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let (receiver, reader, state, jobs) = (
            Arc::clone(&receiver),
            reader.clone(),
            Arc::clone(state),
            jobs.clone(),
        );
        handles.push(
            std::thread::Builder::new()
                .name(format!("miss-reader-{index}"))
                .spawn(move || run(&receiver, &reader, &state, &jobs))?,
        );
    }
    Ok((sender, handles))
}

fn run(
    receiver: &Mutex<mpsc::Receiver<ReadJob>>,
    reader: &Reader,
    state: &ServerState,
    jobs: &mpsc::Sender<Job>,
) {
    let mut batch = Vec::with_capacity(JOBS_PER_BATCH_MAX);
    while let Some(()) = take_batch(receiver, &mut batch) {
        state.miss_read_batches.fetch_add(1, Ordering::Relaxed);
        if state.read_prefetch.load(Ordering::Relaxed) {
            let keys: Vec<&[u8]> = batch
                .iter()
                .flat_map(|job| job.commands.iter())
                .flat_map(|(spec, _, _, args)| {
                    spec.key_indexes(args.len()).map(|index| &args[index][..])
                })
                .collect();
            // Only the page faults matter here; a failure shows again in the read itself.
            let _ = reader.prefetch_keys(&keys);
        }
        for job in batch.drain(..) {
            answer(job, reader, state, jobs);
        }
    }
}

/// Waits for the first ready turn and takes every other one ready with it, holding the
/// queue meanwhile (the other readers wait for it); `None` once the server stops.
fn take_batch(receiver: &Mutex<mpsc::Receiver<ReadJob>>, batch: &mut Vec<ReadJob>) -> Option<()> {
    let receiver = receiver
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    batch.push(receiver.recv().ok()?);
    while batch.len() < JOBS_PER_BATCH_MAX {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(())
}

fn answer(job: ReadJob, reader: &Reader, state: &ServerState, jobs: &mpsc::Sender<Job>) {
    let mut replies = Vec::with_capacity(job.commands.len());
    for (spec, _, read, args) in &job.commands {
        match fast::serve(reader, state, spec, *read, args) {
            Some(reply) => replies.push(reply),
            None => {
                state.miss_read_fallbacks.fetch_add(1, Ordering::Relaxed);
                let commands = job
                    .commands
                    .into_iter()
                    .map(|(spec, function, _, args)| (spec, function, args))
                    .collect();
                // If the executor is gone the server is stopping; the client then sees its
                // connection close, as with any job in flight at shutdown.
                let _ = jobs.send(Job {
                    commands,
                    reply: job.reply,
                });
                return;
            }
        }
    }
    state
        .miss_reads
        .fetch_add(replies.len() as u64, Ordering::Relaxed);
    // A client that went away meanwhile no longer wants its replies.
    let _ = job.reply.send(replies);
}
