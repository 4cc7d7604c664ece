//! Reads served on the connection task, without the trip to the executor thread and back
//! (two thread wake-ups per command, most of a GET's cost when the data is in memory).
//!
//! Only commands that read a few records by key run here; every write, and every read
//! that scans, stays on the executor. A fast read is served only when it is safe:
//! * the connection has no command of its own ahead of it still to run (the connection
//!   sends a turn's reads inline only until its first command for the executor, and the
//!   previous turn's job has completed), so a client always sees its own writes;
//! * no command was half-applied while it read: the executor's epoch (a seqlock word in
//!   [`Published`]) was the same even value before and after the read, else it is retried
//!   a few times and then sent to the executor;
//! * under `always`, every write it could have seen is durable (the published applied LSN
//!   is at most the LSN the syncer last saw durable), as a read answered by the executor
//!   waits for the sync of the writes before it; otherwise it goes to the executor, whose
//!   reply then waits behind that sync;
//! * it never waits (`NoWaitReader`): a read whose leaf is evicted names the leaf, which the
//!   connection has read on its thread's ring (`local_reads`) before serving it again; one
//!   that meets a latch or a page another thread reads goes to the executor.
//!
//! An expired key reads as absent here (the executor or the sweep reclaims it).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{Ordering, fence};

use bytes::Bytes;

use crate::commands::{CommandError, CommandResult, CommandSpec, hashes, keys, lists, sets};
use crate::commands::{strings, zsets};
use crate::resp::Reply;
use crate::shared::{Fsync, ServerState};
use crate::store::{NoWaitReader, Reader};

pub type ReadFn<'r> = fn(&NoWaitReader<'r>, &[Bytes]) -> CommandResult;

/// Tries before a read that keeps meeting writes in progress goes to the executor.
const ATTEMPTS_MAX: usize = 4;

/// The connection-task form of `spec`, if it has one.
pub fn read_fn<'r>(spec: &CommandSpec) -> Option<ReadFn<'r>> {
    let read: ReadFn<'r> = match spec.name {
        "get" => strings::get_in,
        "mget" => strings::mget_in,
        "strlen" => strings::strlen_in,
        "exists" => keys::exists_in,
        "type" => keys::type_of_in,
        "ttl" => keys::ttl_in,
        "pttl" => keys::pttl_in,
        "hget" => hashes::hget_in,
        "hmget" => hashes::hmget_in,
        "hexists" => hashes::hexists_in,
        "hlen" => hashes::hlen_in,
        "llen" => lists::llen_in,
        "lindex" => lists::lindex_in,
        "sismember" => sets::sismember_in,
        "scard" => sets::scard_in,
        "zscore" => zsets::zscore_in,
        "zcard" => zsets::zcard_in,
        _ => return None,
    };
    Some(read)
}

/// Whether fast reads may be tried at all now.
pub fn enabled(state: &ServerState) -> bool {
    state.fast_reads.load(Ordering::Relaxed)
}

/// What `serve` did with a read.
pub enum Served {
    /// Its answer (counted in `fast_reads` by the caller once it is kept: a read behind one
    /// waiting for its leaves is answered again later).
    Reply(Reply),
    /// Its leaves are evicted: they were appended to the caller's list; serve it again once
    /// they are in.
    NeedsLeaves,
    /// The executor must serve it.
    Executor,
}

/// Runs `function` on this thread without waiting; appends to `leaves` the evicted leaves
/// it needs if that is why it could not answer.
pub fn serve<'r>(
    reader: &'r Reader,
    state: &ServerState,
    spec: &CommandSpec,
    function: ReadFn<'r>,
    args: &[Bytes],
    leaves: &mut Vec<u64>,
) -> Served {
    let published = &reader.published;
    for _ in 0..ATTEMPTS_MAX {
        let before = published.epoch.load(Ordering::Acquire);
        if before & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let keyspace = NoWaitReader::new(reader);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| function(&keyspace, args)));
        // Pairs with the executor's release fence after it makes the epoch odd: a read
        // that saw any of a command's writes sees the epoch changed.
        fence(Ordering::Acquire);
        if published.epoch.load(Ordering::Relaxed) != before {
            continue;
        }
        if keyspace.busy() {
            break;
        }
        if !keyspace.answered() {
            leaves.extend(keyspace.into_leaves());
            return Served::NeedsLeaves;
        }
        if state.settings.fsync == Fsync::Always
            && published.applied_lsn.load(Ordering::Relaxed)
                > state.synced_lsn.load(Ordering::Acquire)
        {
            break;
        }
        return Served::Reply(match outcome {
            Ok(Ok(reply)) => reply,
            Ok(Err(CommandError::Reply(reply))) => reply,
            Ok(Err(CommandError::Engine(error))) => crate::executor::engine_error(spec, &error),
            Err(_) => {
                eprintln!("bufpool-server: internal error in {}", spec.name);
                Reply::error(format!("ERR internal error in '{}'", spec.name))
            }
        });
    }
    state.fast_fallbacks.fetch_add(1, Ordering::Relaxed);
    Served::Executor
}
