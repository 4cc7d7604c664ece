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
//! * the pool is not missing: a miss would block the connection's runtime thread on the
//!   disk, while on the executor the misses of all ready clients go out in one submission.
//!
//! An expired key reads as absent here (the executor or the sweep reclaims it).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{Ordering, fence};

use bytes::Bytes;

use crate::commands::{CommandError, CommandResult, CommandSpec, hashes, keys, lists, sets};
use crate::commands::{strings, zsets};
use crate::resp::Reply;
use crate::shared::{Fsync, ServerState};
use crate::store::Reader;

pub type ReadFn = fn(&Reader, &[Bytes]) -> CommandResult;

/// Tries before a read that keeps meeting writes in progress goes to the executor.
const ATTEMPTS_MAX: usize = 4;

/// A command's connection-task form.
struct FastRead {
    read: ReadFn,
    /// It reads only the records of its keys in the main tree (not a hash's field, a list's
    /// element...): the miss readers fault exactly those leaves in, so such a turn can then
    /// run on the connection task without a disk read.
    main_tree_only: bool,
}

fn fast_read(spec: &CommandSpec) -> Option<FastRead> {
    let (read, main_tree_only): (ReadFn, bool) = match spec.name {
        "get" => (strings::get_in, true),
        "mget" => (strings::mget_in, true),
        "strlen" => (strings::strlen_in, true),
        "exists" => (keys::exists_in, true),
        "type" => (keys::type_of_in, true),
        "ttl" => (keys::ttl_in, true),
        "pttl" => (keys::pttl_in, true),
        "hget" => (hashes::hget_in, false),
        "hmget" => (hashes::hmget_in, false),
        "hexists" => (hashes::hexists_in, false),
        "hlen" => (hashes::hlen_in, true),
        "llen" => (lists::llen_in, true),
        "lindex" => (lists::lindex_in, false),
        "sismember" => (sets::sismember_in, false),
        "scard" => (sets::scard_in, true),
        "zscore" => (zsets::zscore_in, false),
        "zcard" => (zsets::zcard_in, true),
        _ => return None,
    };
    Some(FastRead {
        read,
        main_tree_only,
    })
}

/// The connection-task form of `spec`, if it has one.
pub fn read_fn(spec: &CommandSpec) -> Option<ReadFn> {
    fast_read(spec).map(|fast| fast.read)
}

/// Whether `spec` has a connection-task form that reads only its keys' records in the main
/// tree (see `FastRead::main_tree_only`).
pub fn reads_main_tree_only(spec: &CommandSpec) -> bool {
    fast_read(spec).is_some_and(|fast| fast.main_tree_only)
}

/// Whether fast reads may be tried at all now.
pub fn enabled(state: &ServerState) -> bool {
    state.fast_reads.load(Ordering::Relaxed) && !state.pool_missing.load(Ordering::Relaxed)
}

/// Runs `function` on this thread; `None` if the read must go to the executor instead.
pub fn serve(
    reader: &Reader,
    state: &ServerState,
    spec: &CommandSpec,
    function: ReadFn,
    args: &[Bytes],
) -> Option<Reply> {
    let published = &reader.published;
    for _ in 0..ATTEMPTS_MAX {
        let before = published.epoch.load(Ordering::Acquire);
        if before & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| function(reader, args)));
        // Pairs with the executor's release fence after it makes the epoch odd: a read
        // that saw any of a command's writes sees the epoch changed.
        fence(Ordering::Acquire);
        if published.epoch.load(Ordering::Relaxed) != before {
            continue;
        }
        if state.settings.fsync == Fsync::Always
            && published.applied_lsn.load(Ordering::Relaxed)
                > state.synced_lsn.load(Ordering::Acquire)
        {
            state.fast_fallbacks.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        state.fast_reads_total.fetch_add(1, Ordering::Relaxed);
        return Some(match outcome {
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
    None
}
