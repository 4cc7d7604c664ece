//! Server commands that need the engine: INFO, CONFIG, DBSIZE, FLUSHDB, SAVE.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::keys::glob_match;
use super::{CommandResult, eq_ignore_case, parse_i64};
use crate::executor::Exec;
use crate::resp::Reply;
use crate::store::now_ms;

pub fn dbsize(exec: &mut Exec, _args: &[Bytes]) -> CommandResult {
    // Exact: records in `keys` less those already expired but not yet swept.
    let live = exec.store.keys.len()? - exec.store.due_count()?;
    Ok(Reply::Integer(live as i64))
}

pub fn flushdb(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    if args.len() > 2
        || args
            .get(1)
            .is_some_and(|mode| !eq_ignore_case(mode, "sync") && !eq_ignore_case(mode, "async"))
    {
        return Err(super::syntax_error());
    }
    exec.store.clear()?;
    Ok(Reply::ok())
}

fn checkpoint(exec: &mut Exec) -> Result<(), super::CommandError> {
    exec.store.engine.checkpoint()?;
    exec.state
        .last_save_unix_s
        .store(now_ms() / 1000, Ordering::Relaxed);
    Ok(())
}

pub fn save(exec: &mut Exec, _args: &[Bytes]) -> CommandResult {
    checkpoint(exec)?;
    Ok(Reply::ok())
}

/// BGSAVE runs the checkpoint at once (it is incremental: dirty pages only).
pub fn bgsave(exec: &mut Exec, _args: &[Bytes]) -> CommandResult {
    checkpoint(exec)?;
    Ok(Reply::Status("Background saving started".into()))
}

pub fn lastsave(exec: &mut Exec, _args: &[Bytes]) -> CommandResult {
    Ok(Reply::Integer(
        exec.state.last_save_unix_s.load(Ordering::Relaxed) as i64,
    ))
}

/// CONFIG settings: name, current value. Those `config_set` accepts are changeable.
fn settings(exec: &Exec) -> Vec<(&'static str, String)> {
    let state = &exec.state;
    let fsync = state.settings.fsync;
    let yes_no = |flag: bool| if flag { "yes" } else { "no" }.to_string();
    vec![
        ("bind", state.settings.bind.to_string()),
        ("port", state.settings.port.to_string()),
        ("dir", state.settings.dir.display().to_string()),
        ("databases", "1".into()),
        ("save", String::new()),
        ("appendonly", yes_no(fsync != crate::shared::Fsync::No)),
        ("appendfsync", fsync.name().into()),
        ("requirepass", state.requirepass().unwrap_or_default()),
        ("protected-mode", yes_no(state.settings.protected_mode)),
        (
            "maxclients",
            state.maxclients.load(Ordering::Relaxed).to_string(),
        ),
        ("maxmemory", state.settings.pool_bytes.to_string()),
        (
            "proto-max-bulk-len",
            state.bulk_bytes_max.load(Ordering::Relaxed).to_string(),
        ),
        (
            "client-query-buffer-limit",
            state
                .query_buffer_bytes_max
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "client-output-buffer-limit",
            format!(
                "normal {} 0 0",
                state.output_buffer_bytes_max.load(Ordering::Relaxed)
            ),
        ),
        ("timeout", "0".into()),
        (
            "group-commit",
            yes_no(state.group_commit.load(Ordering::Relaxed)),
        ),
        (
            "read-prefetch",
            yes_no(state.read_prefetch.load(Ordering::Relaxed)),
        ),
        (
            "fast-reads",
            yes_no(state.fast_reads.load(Ordering::Relaxed)),
        ),
    ]
}

pub fn config(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let sub = &args[1];
    if eq_ignore_case(sub, "get") && args.len() >= 3 {
        let all = settings(exec);
        let mut pairs = Vec::new();
        for (name, value) in &all {
            if args[2..]
                .iter()
                .any(|pattern| glob_match(&pattern.to_ascii_lowercase(), name.as_bytes()))
            {
                pairs.push((Reply::bulk(*name), Reply::bulk(value.clone())));
            }
        }
        return Ok(Reply::Map(pairs));
    }
    if eq_ignore_case(sub, "set") && args.len() >= 4 && args.len() % 2 == 0 {
        for pair in args[2..].chunks(2) {
            config_set(exec, &pair[0], &pair[1])?;
        }
        return Ok(Reply::ok());
    }
    if eq_ignore_case(sub, "resetstat") && args.len() == 2 {
        exec.state.commands_total.store(0, Ordering::Relaxed);
        exec.state.connections_total.store(0, Ordering::Relaxed);
        exec.state.connections_rejected.store(0, Ordering::Relaxed);
        exec.state.expired_keys.store(0, Ordering::Relaxed);
        return Ok(Reply::ok());
    }
    let sub = String::from_utf8_lossy(sub);
    Err(Reply::error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CONFIG HELP."
    ))
    .into())
}

fn config_set(exec: &Exec, name: &[u8], value: &[u8]) -> Result<(), super::CommandError> {
    let name_text = String::from_utf8_lossy(name).to_ascii_lowercase();
    let invalid = |reason: &str| {
        super::CommandError::from(Reply::error(format!(
            "ERR CONFIG SET failed (possibly related to argument '{name_text}') - {reason}"
        )))
    };
    let size = |value: &[u8]| -> Result<usize, super::CommandError> {
        let number = parse_i64(value).map_err(|_| invalid("argument must be a memory value"))?;
        usize::try_from(number).map_err(|_| invalid("argument must be a memory value"))
    };
    let flag = |value: &[u8]| -> Result<bool, super::CommandError> {
        match value.to_ascii_lowercase().as_slice() {
            b"yes" => Ok(true),
            b"no" => Ok(false),
            _ => Err(invalid("argument must be 'yes' or 'no'")),
        }
    };
    let state = &exec.state;
    match name_text.as_str() {
        "maxclients" => state
            .maxclients
            .store(size(value)?.max(1), Ordering::Relaxed),
        "requirepass" => state.set_requirepass(Some(String::from_utf8_lossy(value).into_owned())),
        "proto-max-bulk-len" => {
            let bytes = size(value)?;
            if !(1024..=bufpool_engine::VALUE_SIZE_MAX).contains(&bytes) {
                return Err(invalid(
                    "argument must be between 1024 and the engine's value limit",
                ));
            }
            state.bulk_bytes_max.store(bytes, Ordering::Relaxed);
        }
        "client-query-buffer-limit" => {
            let bytes = size(value)?;
            if bytes < 1 << 20 {
                return Err(invalid("argument must be at least 1mb"));
            }
            state.query_buffer_bytes_max.store(bytes, Ordering::Relaxed);
        }
        "client-output-buffer-limit" => {
            // Redis's form `normal <hard> <soft> <seconds>`, or just the byte limit.
            let text = String::from_utf8_lossy(value).to_ascii_lowercase();
            let words: Vec<&str> = text.split_whitespace().collect();
            let hard = match words.as_slice() {
                [bytes] => bytes,
                ["normal", hard, _soft, _seconds] => hard,
                _ => return Err(invalid("argument must be 'normal <hard> <soft> <seconds>'")),
            };
            let bytes = size(hard.as_bytes())?;
            if bytes < 1 << 20 {
                return Err(invalid("argument must be at least 1mb"));
            }
            state
                .output_buffer_bytes_max
                .store(bytes, Ordering::Relaxed);
        }
        "group-commit" => state.group_commit.store(flag(value)?, Ordering::Relaxed),
        "read-prefetch" => state.read_prefetch.store(flag(value)?, Ordering::Relaxed),
        "fast-reads" => state.fast_reads.store(flag(value)?, Ordering::Relaxed),
        "save" | "appendonly" | "appendfsync" | "bind" | "port" | "dir" | "databases"
        | "protected-mode" | "maxmemory" => return Err(invalid("can't set immutable config")),
        _ => {
            return Err(Reply::error(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name_text}'"
            ))
            .into());
        }
    }
    Ok(())
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The server's group-commit size: replies released per log sync waited for (under
/// `always`). INFO's `log_group_commit_avg` counts the log's waiters, and the server has
/// one, its syncer thread, however many clients a sync serves.
fn replies_per_durable_wait(state: &crate::shared::ServerState) -> f64 {
    let waits = state.durable_waits_total.load(Ordering::Relaxed);
    if waits == 0 {
        0.0
    } else {
        state.durable_replies_total.load(Ordering::Relaxed) as f64 / waits as f64
    }
}

pub fn info(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|section| String::from_utf8_lossy(section).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|name| matches!(name.as_str(), "all" | "everything" | "default"));
    let show = |name: &str| all || wanted.iter().any(|wanted| wanted == name);
    let state = &exec.state;
    let mut text = String::new();
    let uptime = state.started.elapsed().as_secs();
    if show("server") {
        let _ = write!(
            text,
            "# Server\r\nredis_version:7.0.0\r\nbufpool_server_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
             uptime_in_days:{}\r\nexecutable:bufpool-server\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            state.settings.port,
            uptime / 86_400,
        );
    }
    if show("clients") {
        let per_thread = state
            .placement
            .get()
            .map(|placement| placement.connections_per_thread())
            .unwrap_or_default();
        let per_thread: Vec<String> = per_thread.iter().map(usize::to_string).collect();
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\
             connection_threads:{}\r\nconnections_per_thread:{}\r\n\r\n",
            state.connected.load(Ordering::Relaxed),
            state.maxclients.load(Ordering::Relaxed),
            per_thread.len(),
            per_thread.join(","),
        );
    }
    let pool = exec.store.engine.pool_stats();
    if show("memory") {
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{}\r\nused_memory_rss:{}\r\nmaxmemory:{}\r\n\
             maxmemory_policy:noeviction\r\n\r\n",
            pool.resident_bytes,
            rss_bytes(),
            state.settings.pool_bytes,
        );
    }
    let log = exec.store.engine.log_stats();
    if show("persistence") {
        let _ = write!(
            text,
            "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:0\r\n\
             rdb_last_save_time:{}\r\naof_enabled:{}\r\nappendfsync:{}\r\n\
             checkpoints:{}\r\n\r\n",
            state.last_save_unix_s.load(Ordering::Relaxed),
            u8::from(state.settings.fsync != crate::shared::Fsync::No),
            state.settings.fsync.name(),
            log.checkpoints,
        );
    }
    if show("stats") {
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nexpired_keys:{}\r\nexecutor_batches:{}\r\n\
             durable_waits:{}\r\nreplies_per_durable_wait:{:.2}\r\nfast_reads:{}\r\n\
             fast_read_fallbacks:{}\r\nmiss_reads:{}\r\nmiss_read_batches:{}\r\n\
             miss_read_leaves:{}\r\nmiss_read_fallbacks:{}\r\nconnections_moved:{}\r\n\r\n",
            state.connections_total.load(Ordering::Relaxed),
            state.commands_total.load(Ordering::Relaxed),
            state.connections_rejected.load(Ordering::Relaxed),
            state.expired_keys.load(Ordering::Relaxed),
            state.batches_total.load(Ordering::Relaxed),
            state.durable_waits_total.load(Ordering::Relaxed),
            replies_per_durable_wait(state),
            state.fast_reads_total.load(Ordering::Relaxed),
            state.fast_fallbacks.load(Ordering::Relaxed),
            state.miss_reads.load(Ordering::Relaxed),
            state.miss_read_batches.load(Ordering::Relaxed),
            state.miss_read_leaves.load(Ordering::Relaxed),
            state.miss_read_fallbacks.load(Ordering::Relaxed),
            state.connections_moved.load(Ordering::Relaxed),
        );
    }
    if show("keyspace") {
        text.push_str("# Keyspace\r\n");
        let keys = exec.store.keys.len()?;
        if keys > 0 {
            let _ = write!(
                text,
                "db0:keys={keys},expires={},avg_ttl=0\r\n",
                exec.store.expires_len()?
            );
        }
        text.push_str("\r\n");
    }
    if show("bufpool") {
        let _ = write!(
            text,
            "# Bufpool\r\npool_hits:{}\r\npool_misses:{}\r\npool_reads:{}\r\npool_writes:{}\r\n\
             pool_evictions:{}\r\npool_background_evictions:{}\r\npool_refault_retries:{}\r\npool_optimistic_restarts:{}\r\n\
             pool_dirty_pages:{}\r\npool_resident_bytes:{}\r\npool_budget_bytes:{}\r\n\
             log_durable_lsn:{}\r\nlog_end_lsn:{}\r\nlog_records:{}\r\nlog_bytes:{}\r\n\
             log_writes:{}\r\nlog_syncs:{}\r\nlog_durable_waits:{}\r\n\
             log_group_commit_avg:{:.2}\r\nlog_page_images:{}\r\n\
             log_segments_prepared:{}\r\nlog_segments_unprepared:{}\r\ndurability:{}\r\n\
             group_commit:{}\r\nread_prefetch:{}\r\n\r\n",
            pool.hits,
            pool.misses,
            pool.reads,
            pool.writes,
            pool.evictions,
            pool.background_evictions,
            pool.refault_retries,
            pool.optimistic_restarts,
            pool.dirty_pages,
            pool.resident_bytes,
            state.settings.pool_bytes,
            exec.store.engine.durable_lsn().0,
            log.end_lsn,
            log.records,
            log.bytes,
            log.writes,
            log.syncs,
            log.durable_waits,
            log.group_commit_average(),
            log.page_images,
            log.segments_prepared,
            log.segments_unprepared,
            state.settings.fsync.durability().name(),
            u8::from(state.group_commit.load(Ordering::Relaxed)),
            u8::from(state.read_prefetch.load(Ordering::Relaxed)),
        );
    }
    Ok(Reply::Verbatim(text))
}
