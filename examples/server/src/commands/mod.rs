//! The command table: one entry per command with its arity, flags and key positions, and
//! the function that implements it (as Redis's table). The connection checks arity,
//! authentication and key sizes once for all; replies and errors go through the helpers
//! here so that error strings are the same everywhere.

pub mod hashes;
pub mod keys;
pub mod lists;
pub mod server;
pub mod sets;
pub mod strings;
pub mod zsets;

use bufpool_engine::EngineError;
use bytes::Bytes;

use crate::executor::Exec;
use crate::resp::Reply;
use crate::store::{Collection, Entry, KEY_BYTES_MAX, Keyspace, Kind};

/// What a command's function returns on failure: a reply for the client (user error) or an
/// engine error (logged, and reported to the client as `ERR`).
#[derive(Debug)]
pub enum CommandError {
    Reply(Reply),
    Engine(EngineError),
}

impl From<EngineError> for CommandError {
    fn from(error: EngineError) -> CommandError {
        CommandError::Engine(error)
    }
}

impl From<Reply> for CommandError {
    fn from(reply: Reply) -> CommandError {
        CommandError::Reply(reply)
    }
}

pub type CommandResult = Result<Reply, CommandError>;
/// A tree record: key and value.
pub type Record = (Vec<u8>, Vec<u8>);
pub type EngineFn = fn(&mut Exec, &[Bytes]) -> CommandResult;

/// Where a command runs.
#[derive(Clone, Copy)]
pub enum Handler {
    /// In the connection task (per-connection state, no engine access).
    Connection,
    /// On the executor thread, in the engine.
    Engine(EngineFn),
}

pub const WRITE: u32 = 1;
pub const READONLY: u32 = 2;
pub const FAST: u32 = 4;
/// Served before authentication.
pub const NO_AUTH: u32 = 8;

pub struct CommandSpec {
    pub name: &'static str,
    /// Redis's arity: positive = exact argument count (name included), negative = at least.
    pub arity: i32,
    pub flags: u32,
    pub first_key: i32,
    pub last_key: i32,
    pub key_step: i32,
    pub group: &'static str,
    pub summary: &'static str,
    pub handler: Handler,
}

impl CommandSpec {
    pub fn arity_ok(&self, count: usize) -> bool {
        let count = count as i32;
        if self.arity >= 0 {
            count == self.arity
        } else {
            count >= -self.arity
        }
    }

    /// Indexes of the key arguments.
    pub fn key_indexes(&self, count: usize) -> impl Iterator<Item = usize> {
        let count = count as i32;
        let last = if self.last_key < 0 {
            count + self.last_key
        } else {
            self.last_key.min(count - 1)
        };
        let step = self.key_step.max(1) as usize;
        let first = self.first_key;
        (first.max(1)..=last.max(0))
            .step_by(step)
            .filter(move |_| first > 0)
            .map(|index| index as usize)
    }

    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.flags & WRITE != 0 {
            names.push("write");
        }
        if self.flags & READONLY != 0 {
            names.push("readonly");
        }
        if self.flags & FAST != 0 {
            names.push("fast");
        }
        if self.flags & NO_AUTH != 0 {
            names.push("no_auth");
        }
        names
    }
}

macro_rules! command {
    ($name:literal, $arity:expr, $flags:expr, $first:expr, $last:expr, $step:expr, $group:literal, $summary:literal, $handler:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            key_step: $step,
            group: $group,
            summary: $summary,
            handler: $handler,
        }
    };
}

use Handler::{Connection, Engine};

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    // Connection and server.
    command!("ping", -1, FAST | NO_AUTH, 0, 0, 0, "connection", "Returns the server's liveliness response.", Connection),
    command!("echo", 2, FAST, 0, 0, 0, "connection", "Returns the given string.", Connection),
    command!("quit", -1, FAST | NO_AUTH, 0, 0, 0, "connection", "Closes the connection.", Connection),
    command!("select", 2, FAST, 0, 0, 0, "connection", "Changes the selected database (only 0 exists).", Connection),
    command!("auth", -2, FAST | NO_AUTH, 0, 0, 0, "connection", "Authenticates the connection.", Connection),
    command!("hello", -1, FAST | NO_AUTH, 0, 0, 0, "connection", "Handshakes with the server (protocol 2 or 3).", Connection),
    command!("client", -2, 0, 0, 0, 0, "connection", "CLIENT ID, SETNAME, GETNAME.", Connection),
    command!("command", -1, 0, 0, 0, 0, "server", "Returns information about commands.", Connection),
    command!("shutdown", -1, 0, 0, 0, 0, "server", "Checkpoints and stops the server.", Connection),
    command!("time", 1, FAST, 0, 0, 0, "server", "Returns the server time.", Connection),
    command!("info", -1, 0, 0, 0, 0, "server", "Returns information and statistics about the server.", Engine(server::info)),
    command!("config", -2, 0, 0, 0, 0, "server", "CONFIG GET / SET.", Engine(server::config)),
    command!("dbsize", 1, READONLY | FAST, 0, 0, 0, "server", "Returns the number of keys.", Engine(server::dbsize)),
    command!("flushdb", -1, WRITE, 0, 0, 0, "server", "Removes all keys.", Engine(server::flushdb)),
    command!("flushall", -1, WRITE, 0, 0, 0, "server", "Removes all keys.", Engine(server::flushdb)),
    command!("save", 1, 0, 0, 0, 0, "server", "Checkpoints the engine.", Engine(server::save)),
    command!("bgsave", -1, 0, 0, 0, 0, "server", "Checkpoints the engine.", Engine(server::bgsave)),
    command!("lastsave", 1, FAST, 0, 0, 0, "server", "Unix time of the last checkpoint.", Engine(server::lastsave)),
    // Strings.
    command!("get", 2, READONLY | FAST, 1, 1, 1, "string", "Returns the string value of a key.", Engine(strings::get)),
    command!("set", -3, WRITE, 1, 1, 1, "string", "Sets the string value of a key.", Engine(strings::set)),
    command!("setnx", 3, WRITE | FAST, 1, 1, 1, "string", "Sets a key only if it does not exist.", Engine(strings::setnx)),
    command!("setex", 4, WRITE, 1, 1, 1, "string", "Sets a key with a time to live in seconds.", Engine(strings::setex)),
    command!("psetex", 4, WRITE, 1, 1, 1, "string", "Sets a key with a time to live in milliseconds.", Engine(strings::psetex)),
    command!("getset", 3, WRITE | FAST, 1, 1, 1, "string", "Sets a key and returns its old value.", Engine(strings::getset)),
    command!("getdel", 2, WRITE | FAST, 1, 1, 1, "string", "Returns a key's value and deletes it.", Engine(strings::getdel)),
    command!("mget", -2, READONLY | FAST, 1, -1, 1, "string", "Returns the values of keys.", Engine(strings::mget)),
    command!("mset", -3, WRITE, 1, -1, 2, "string", "Sets many keys.", Engine(strings::mset)),
    command!("msetnx", -3, WRITE, 1, -1, 2, "string", "Sets many keys if none exists.", Engine(strings::msetnx)),
    command!("incr", 2, WRITE | FAST, 1, 1, 1, "string", "Increments an integer by one.", Engine(strings::incr)),
    command!("incrby", 3, WRITE | FAST, 1, 1, 1, "string", "Increments an integer.", Engine(strings::incrby)),
    command!("decr", 2, WRITE | FAST, 1, 1, 1, "string", "Decrements an integer by one.", Engine(strings::decr)),
    command!("decrby", 3, WRITE | FAST, 1, 1, 1, "string", "Decrements an integer.", Engine(strings::decrby)),
    command!("incrbyfloat", 3, WRITE | FAST, 1, 1, 1, "string", "Increments a float.", Engine(strings::incrbyfloat)),
    command!("append", 3, WRITE | FAST, 1, 1, 1, "string", "Appends to a string.", Engine(strings::append)),
    command!("strlen", 2, READONLY | FAST, 1, 1, 1, "string", "Returns a string's length.", Engine(strings::strlen)),
    command!("getrange", 4, READONLY, 1, 1, 1, "string", "Returns a substring.", Engine(strings::getrange)),
    command!("setrange", 4, WRITE, 1, 1, 1, "string", "Overwrites part of a string.", Engine(strings::setrange)),
    // Keys.
    command!("del", -2, WRITE, 1, -1, 1, "generic", "Deletes keys.", Engine(keys::del)),
    command!("unlink", -2, WRITE | FAST, 1, -1, 1, "generic", "Deletes keys (members reclaimed in the background).", Engine(keys::del)),
    command!("exists", -2, READONLY | FAST, 1, -1, 1, "generic", "Counts existing keys.", Engine(keys::exists)),
    command!("type", 2, READONLY | FAST, 1, 1, 1, "generic", "Returns a key's type.", Engine(keys::type_of)),
    command!("expire", -3, WRITE | FAST, 1, 1, 1, "generic", "Sets a time to live in seconds.", Engine(keys::expire)),
    command!("pexpire", -3, WRITE | FAST, 1, 1, 1, "generic", "Sets a time to live in milliseconds.", Engine(keys::pexpire)),
    command!("expireat", -3, WRITE | FAST, 1, 1, 1, "generic", "Sets an expiry as a Unix time in seconds.", Engine(keys::expireat)),
    command!("pexpireat", -3, WRITE | FAST, 1, 1, 1, "generic", "Sets an expiry as a Unix time in milliseconds.", Engine(keys::pexpireat)),
    command!("ttl", 2, READONLY | FAST, 1, 1, 1, "generic", "Time to live in seconds.", Engine(keys::ttl)),
    command!("pttl", 2, READONLY | FAST, 1, 1, 1, "generic", "Time to live in milliseconds.", Engine(keys::pttl)),
    command!("persist", 2, WRITE | FAST, 1, 1, 1, "generic", "Removes a key's expiry.", Engine(keys::persist)),
    command!("scan", -2, READONLY, 0, 0, 0, "generic", "Iterates the keyspace.", Engine(keys::scan)),
    command!("keys", 2, READONLY, 0, 0, 0, "generic", "Returns the keys matching a pattern.", Engine(keys::keys)),
    command!("rename", 3, WRITE, 1, 2, 1, "generic", "Renames a key.", Engine(keys::rename)),
    command!("randomkey", 1, READONLY, 0, 0, 0, "generic", "Returns a random key.", Engine(keys::randomkey)),
    // Hashes.
    command!("hset", -4, WRITE | FAST, 1, 1, 1, "hash", "Sets fields of a hash.", Engine(hashes::hset)),
    command!("hmset", -4, WRITE | FAST, 1, 1, 1, "hash", "Sets fields of a hash.", Engine(hashes::hmset)),
    command!("hget", 3, READONLY | FAST, 1, 1, 1, "hash", "Returns a field's value.", Engine(hashes::hget)),
    command!("hmget", -3, READONLY | FAST, 1, 1, 1, "hash", "Returns fields' values.", Engine(hashes::hmget)),
    command!("hdel", -3, WRITE | FAST, 1, 1, 1, "hash", "Deletes fields.", Engine(hashes::hdel)),
    command!("hlen", 2, READONLY | FAST, 1, 1, 1, "hash", "Number of fields.", Engine(hashes::hlen)),
    command!("hgetall", 2, READONLY, 1, 1, 1, "hash", "All fields and values.", Engine(hashes::hgetall)),
    command!("hexists", 3, READONLY | FAST, 1, 1, 1, "hash", "Whether a field exists.", Engine(hashes::hexists)),
    command!("hincrby", 4, WRITE | FAST, 1, 1, 1, "hash", "Increments a field's integer.", Engine(hashes::hincrby)),
    command!("hkeys", 2, READONLY, 1, 1, 1, "hash", "All fields.", Engine(hashes::hkeys)),
    command!("hvals", 2, READONLY, 1, 1, 1, "hash", "All values.", Engine(hashes::hvals)),
    command!("hscan", -3, READONLY, 1, 1, 1, "hash", "Iterates fields and values.", Engine(hashes::hscan)),
    // Lists.
    command!("lpush", -3, WRITE | FAST, 1, 1, 1, "list", "Prepends elements.", Engine(lists::lpush)),
    command!("rpush", -3, WRITE | FAST, 1, 1, 1, "list", "Appends elements.", Engine(lists::rpush)),
    command!("lpop", -2, WRITE | FAST, 1, 1, 1, "list", "Removes and returns first elements.", Engine(lists::lpop)),
    command!("rpop", -2, WRITE | FAST, 1, 1, 1, "list", "Removes and returns last elements.", Engine(lists::rpop)),
    command!("llen", 2, READONLY | FAST, 1, 1, 1, "list", "Length of a list.", Engine(lists::llen)),
    command!("lrange", 4, READONLY, 1, 1, 1, "list", "A range of elements.", Engine(lists::lrange)),
    command!("lindex", 3, READONLY, 1, 1, 1, "list", "The element at an index.", Engine(lists::lindex)),
    // Sets.
    command!("sadd", -3, WRITE | FAST, 1, 1, 1, "set", "Adds members.", Engine(sets::sadd)),
    command!("srem", -3, WRITE | FAST, 1, 1, 1, "set", "Removes members.", Engine(sets::srem)),
    command!("spop", -2, WRITE | FAST, 1, 1, 1, "set", "Removes and returns random members.", Engine(sets::spop)),
    command!("smembers", 2, READONLY, 1, 1, 1, "set", "All members.", Engine(sets::smembers)),
    command!("sismember", 3, READONLY | FAST, 1, 1, 1, "set", "Whether a member exists.", Engine(sets::sismember)),
    command!("scard", 2, READONLY | FAST, 1, 1, 1, "set", "Number of members.", Engine(sets::scard)),
    command!("sscan", -3, READONLY, 1, 1, 1, "set", "Iterates members.", Engine(sets::sscan)),
    // Sorted sets.
    command!("zadd", -4, WRITE | FAST, 1, 1, 1, "sorted-set", "Adds members or updates scores.", Engine(zsets::zadd)),
    command!("zrem", -3, WRITE | FAST, 1, 1, 1, "sorted-set", "Removes members.", Engine(zsets::zrem)),
    command!("zscore", 3, READONLY | FAST, 1, 1, 1, "sorted-set", "A member's score.", Engine(zsets::zscore)),
    command!("zcard", 2, READONLY | FAST, 1, 1, 1, "sorted-set", "Number of members.", Engine(zsets::zcard)),
    command!("zrange", -4, READONLY, 1, 1, 1, "sorted-set", "Members in a range of ranks or scores.", Engine(zsets::zrange)),
    command!("zpopmin", -2, WRITE | FAST, 1, 1, 1, "sorted-set", "Removes and returns the lowest-scored members.", Engine(zsets::zpopmin)),
    command!("zpopmax", -2, WRITE | FAST, 1, 1, 1, "sorted-set", "Removes and returns the highest-scored members.", Engine(zsets::zpopmax)),
    command!("zrank", -3, READONLY, 1, 1, 1, "sorted-set", "A member's rank.", Engine(zsets::zrank)),
];

/// Longest command name in the table (checked by a test).
const NAME_BYTES_MAX: usize = 16;

static BY_NAME: std::sync::LazyLock<
    std::collections::HashMap<&'static [u8], &'static CommandSpec>,
> = std::sync::LazyLock::new(|| {
    COMMANDS
        .iter()
        .map(|spec| (spec.name.as_bytes(), spec))
        .collect()
});

/// The table entry of `name` (any case), without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > NAME_BYTES_MAX {
        return None;
    }
    let mut lower = [0u8; NAME_BYTES_MAX];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    BY_NAME.get(&*lower).copied()
}

// Errors with Redis's texts.

pub fn wrong_type() -> CommandError {
    Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value").into()
}

pub fn not_integer() -> CommandError {
    Reply::error("ERR value is not an integer or out of range").into()
}

pub fn not_float() -> CommandError {
    Reply::error("ERR value is not a valid float").into()
}

pub fn syntax_error() -> CommandError {
    Reply::error("ERR syntax error").into()
}

pub fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub fn too_large(what: &str, len: usize, max: usize) -> CommandError {
    Reply::error(format!(
        "ERR {what} is too large ({len} bytes, the limit is {max})"
    ))
    .into()
}

// Argument parsing.

pub fn parse_i64(argument: &[u8]) -> Result<i64, CommandError> {
    std::str::from_utf8(argument)
        .ok()
        .filter(|text| !(text.starts_with('+') || text.len() > 1 && text.starts_with('0')))
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(not_integer)
}

pub fn parse_f64(argument: &[u8]) -> Result<f64, CommandError> {
    let text = std::str::from_utf8(argument).map_err(|_| not_float())?;
    let value = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ if text.is_empty() || text.trim() != text => return Err(not_float()),
        _ => text.parse::<f64>().map_err(|_| not_float())?,
    };
    if value.is_nan() {
        return Err(not_float());
    }
    Ok(value)
}

pub fn eq_ignore_case(argument: &[u8], word: &str) -> bool {
    argument.eq_ignore_ascii_case(word.as_bytes())
}

/// Checks a hash field, set or sorted-set member against the key limit.
pub fn check_member(member: &[u8]) -> Result<(), CommandError> {
    if member.len() > KEY_BYTES_MAX {
        return Err(too_large("member", member.len(), KEY_BYTES_MAX));
    }
    Ok(())
}

/// The live collection of type `kind` at `key`, if any; WRONGTYPE for another type.
pub fn collection(
    exec: &Exec,
    key: &[u8],
    kind: Kind,
) -> Result<Option<(Entry, Collection)>, CommandError> {
    collection_in(&exec.store, key, kind)
}

/// [`collection`] in any keyspace view.
pub fn collection_in(
    keyspace: &impl Keyspace,
    key: &[u8],
    kind: Kind,
) -> Result<Option<(Entry, Collection)>, CommandError> {
    let Some(entry) = keyspace.entry(key)? else {
        return Ok(None);
    };
    if entry.kind != kind {
        return Err(wrong_type());
    }
    let header = Collection::decode(&entry.body).expect("collection header");
    Ok(Some((entry, header)))
}

/// The collection at `key`, created empty (not yet written) if absent.
pub fn collection_or_new(
    exec: &Exec,
    key: &[u8],
    kind: Kind,
) -> Result<(Entry, Collection), CommandError> {
    if let Some(found) = collection(exec, key, kind)? {
        return Ok(found);
    }
    let header = Collection {
        id: exec.store.allocate_id()?,
        len: 0,
        head: crate::store::LIST_ORIGIN,
        tail: crate::store::LIST_ORIGIN,
    };
    let entry = Entry {
        kind,
        expire_ms: 0,
        body: Vec::new(),
    };
    Ok((entry, header))
}

/// Writes a collection's header back, or deletes the key if it became empty. Members are
/// written before this: the header is the last write of a command.
pub fn store_collection(
    exec: &Exec,
    key: &[u8],
    mut entry: Entry,
    header: Collection,
    existed: bool,
) -> Result<(), CommandError> {
    if header.len == 0 {
        if existed {
            entry.body = header.encode();
            exec.store.remove(key, &entry)?;
        }
        return Ok(());
    }
    let old_expire = entry.expire_ms;
    entry.body = header.encode();
    exec.store.write_entry(key, &entry, old_expire)?;
    Ok(())
}

/// Normalizes Redis's inclusive `start..=stop` indexes (negative from the end) on a
/// sequence of `len`; `None` if the range is empty.
pub fn index_range(start: i64, stop: i64, len: u64) -> Option<(u64, u64)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len && stop >= 0).then_some((start as u64, stop as u64))
}

/// Visits every member of collection `id` in `tree` in `direction` (suffix after the id,
/// value; lent from the latched leaf, no copy) until `visit` breaks. `visit` must not call
/// the engine (see `Tree::scan_latched`).
pub fn visit_members(
    tree: &bufpool_engine::Tree,
    id: u64,
    direction: bufpool_engine::Direction,
    mut visit: impl FnMut(&[u8], &[u8]) -> std::ops::ControlFlow<()>,
) -> Result<(), EngineError> {
    let (start, end) = crate::store::id_bounds(id);
    tree.scan_latched(start..end, direction, |key, value| visit(&key[8..], value))
}

/// Every member of collection `id` in `tree`, in key order: (suffix after the id, value).
pub fn members(
    tree: &bufpool_engine::Tree,
    id: u64,
    direction: bufpool_engine::Direction,
) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>> + '_ {
    let (start, end) = crate::store::id_bounds(id);
    tree.range(start..end, direction)
        .map(|record| record.map(|(key, value)| (key[8..].to_vec(), value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_lowercase_and_unique() {
        let mut names: Vec<_> = COMMANDS.iter().map(|spec| spec.name).collect();
        assert!(names.iter().all(|name| name.to_ascii_lowercase() == *name));
        assert!(names.iter().all(|name| name.len() <= NAME_BYTES_MAX));
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn key_positions_follow_the_table() {
        let mset = lookup(b"MSET").expect("mset");
        assert_eq!(mset.key_indexes(7).collect::<Vec<_>>(), vec![1, 3, 5]);
        let get = lookup(b"get").expect("get");
        assert_eq!(get.key_indexes(2).collect::<Vec<_>>(), vec![1]);
        let ping = lookup(b"ping").expect("ping");
        assert_eq!(ping.key_indexes(1).count(), 0);
    }

    #[test]
    fn index_ranges_match_redis() {
        assert_eq!(index_range(0, -1, 5), Some((0, 4)));
        assert_eq!(index_range(-2, -1, 5), Some((3, 4)));
        assert_eq!(index_range(3, 100, 5), Some((3, 4)));
        assert_eq!(index_range(5, 10, 5), None);
        assert_eq!(index_range(2, 1, 5), None);
        assert_eq!(index_range(-100, 0, 5), Some((0, 0)));
        assert_eq!(index_range(0, -1, 0), None);
    }

    #[test]
    fn integers_parse_strictly() {
        assert_eq!(parse_i64(b"-42").ok(), Some(-42));
        assert!(parse_i64(b"+1").is_err());
        assert!(parse_i64(b"01").is_err());
        assert!(parse_i64(b"1.0").is_err());
        assert!(parse_i64(b"99999999999999999999").is_err());
    }
}
