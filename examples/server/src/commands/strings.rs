//! String commands. A string is its key's entry in the `keys` tree, value inline.

use bytes::Bytes;

use super::{
    CommandError, CommandResult, eq_ignore_case, not_integer, parse_f64, parse_i64, syntax_error,
    wrong_arity, wrong_type,
};
use crate::executor::Exec;
use crate::resp::{Reply, format_double};
use crate::store::{Entry, Keyspace, Kind, STRING_BYTES_MAX, now_ms};

fn too_big() -> CommandError {
    Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)").into()
}

/// The live entry at `key`, which must be a string if present.
fn string_entry(exec: &Exec, key: &[u8]) -> Result<Option<Entry>, CommandError> {
    string_entry_in(&exec.store, key)
}

fn string_entry_in(keyspace: &impl Keyspace, key: &[u8]) -> Result<Option<Entry>, CommandError> {
    match keyspace.entry(key)? {
        Some(entry) if entry.kind != Kind::String => Err(wrong_type()),
        found => Ok(found),
    }
}

/// Writes string `value` at `key` replacing `old` (of any type); `expire_ms` 0 = none.
fn write_string(
    exec: &Exec,
    key: &[u8],
    value: Vec<u8>,
    expire_ms: u64,
    old: Option<&Entry>,
) -> Result<(), CommandError> {
    if value.len() > STRING_BYTES_MAX {
        return Err(too_big());
    }
    let mut old_expire = 0;
    if let Some(old) = old {
        if old.kind == Kind::String {
            old_expire = old.expire_ms;
        } else {
            exec.store.remove(key, old)?;
        }
    }
    let entry = Entry {
        kind: Kind::String,
        expire_ms,
        body: value,
    };
    exec.store.write_entry(key, &entry, old_expire)?;
    Ok(())
}

pub fn get(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    get_in(&exec.store, args)
}

pub fn get_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    Ok(match string_entry_in(keyspace, &args[1])? {
        Some(entry) => Reply::bulk(entry.body),
        None => Reply::Nil,
    })
}

/// Expiry options of SET (and the form GETEX would share).
#[derive(Default)]
struct SetOptions {
    only_if_absent: bool,
    only_if_present: bool,
    get: bool,
    keep_ttl: bool,
    expire_ms: Option<u64>,
}

fn invalid_expire(command: &str) -> CommandError {
    Reply::error(format!("ERR invalid expire time in '{command}' command")).into()
}

/// An absolute expiry from a relative or absolute amount in `unit_ms` milliseconds.
fn expiry_from(
    amount: &[u8],
    unit_ms: u64,
    absolute: bool,
    command: &str,
) -> Result<u64, CommandError> {
    let amount = parse_i64(amount)?;
    if amount <= 0 {
        return Err(invalid_expire(command));
    }
    let ms = (amount as u64)
        .checked_mul(unit_ms)
        .ok_or_else(|| invalid_expire(command))?;
    if absolute {
        return Ok(ms);
    }
    now_ms()
        .checked_add(ms)
        .filter(|at| *at < i64::MAX as u64)
        .ok_or_else(|| invalid_expire(command))
}

fn parse_set_options(args: &[Bytes]) -> Result<SetOptions, CommandError> {
    let mut options = SetOptions::default();
    let mut index = 3;
    // Bounded by the argument count: each round consumes one or two arguments.
    while index < args.len() {
        let word = &args[index];
        let next = args.get(index + 1);
        let expiry = |unit_ms, absolute| -> Result<u64, CommandError> {
            let amount = next.ok_or_else(syntax_error)?;
            expiry_from(amount, unit_ms, absolute, "set")
        };
        let sets_expiry = options.expire_ms.is_some() || options.keep_ttl;
        if eq_ignore_case(word, "nx") && !options.only_if_present {
            options.only_if_absent = true;
        } else if eq_ignore_case(word, "xx") && !options.only_if_absent {
            options.only_if_present = true;
        } else if eq_ignore_case(word, "get") {
            options.get = true;
        } else if eq_ignore_case(word, "keepttl") && !sets_expiry {
            options.keep_ttl = true;
        } else if eq_ignore_case(word, "ex") && !sets_expiry {
            options.expire_ms = Some(expiry(1000, false)?);
            index += 1;
        } else if eq_ignore_case(word, "px") && !sets_expiry {
            options.expire_ms = Some(expiry(1, false)?);
            index += 1;
        } else if eq_ignore_case(word, "exat") && !sets_expiry {
            options.expire_ms = Some(expiry(1000, true)?);
            index += 1;
        } else if eq_ignore_case(word, "pxat") && !sets_expiry {
            options.expire_ms = Some(expiry(1, true)?);
            index += 1;
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    Ok(options)
}

pub fn set(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let options = parse_set_options(args)?;
    let key = &args[1];
    let old = exec.store.entry(key)?;
    let old_value = match &old {
        Some(entry) if options.get && entry.kind != Kind::String => return Err(wrong_type()),
        Some(entry) if options.get => Reply::bulk(entry.body.clone()),
        _ => Reply::Nil,
    };
    let blocked =
        (options.only_if_absent && old.is_some()) || (options.only_if_present && old.is_none());
    if blocked {
        return Ok(old_value);
    }
    let expire_ms = match (&old, options.keep_ttl) {
        (Some(entry), true) if entry.kind == Kind::String => entry.expire_ms,
        _ => options.expire_ms.unwrap_or(0),
    };
    write_string(exec, key, args[2].to_vec(), expire_ms, old.as_ref())?;
    Ok(if options.get { old_value } else { Reply::ok() })
}

pub fn setnx(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    if exec.store.entry(&args[1])?.is_some() {
        return Ok(Reply::Integer(0));
    }
    write_string(exec, &args[1], args[2].to_vec(), 0, None)?;
    Ok(Reply::Integer(1))
}

fn set_with_ttl(exec: &mut Exec, args: &[Bytes], unit_ms: u64, command: &str) -> CommandResult {
    let expire_ms = expiry_from(&args[2], unit_ms, false, command)?;
    let old = exec.store.entry(&args[1])?;
    write_string(exec, &args[1], args[3].to_vec(), expire_ms, old.as_ref())?;
    Ok(Reply::ok())
}

pub fn setex(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    set_with_ttl(exec, args, 1000, "setex")
}

pub fn psetex(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    set_with_ttl(exec, args, 1, "psetex")
}

pub fn getset(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let old = string_entry(exec, &args[1])?;
    write_string(exec, &args[1], args[2].to_vec(), 0, old.as_ref())?;
    Ok(old.map_or(Reply::Nil, |entry| Reply::bulk(entry.body)))
}

pub fn getdel(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let Some(old) = string_entry(exec, &args[1])? else {
        return Ok(Reply::Nil);
    };
    exec.store.remove(&args[1], &old)?;
    Ok(Reply::bulk(old.body))
}

pub fn mget(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    mget_in(&exec.store, args)
}

pub fn mget_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let mut values = Vec::with_capacity(args.len() - 1);
    for key in &args[1..] {
        values.push(match keyspace.entry(key)? {
            Some(entry) if entry.kind == Kind::String => Reply::bulk(entry.body),
            _ => Reply::Nil,
        });
    }
    Ok(Reply::Array(values))
}

pub fn mset(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    if args.len() % 2 == 0 {
        return Ok(wrong_arity("mset"));
    }
    // All or nothing: check every value before writing any.
    if args[1..]
        .chunks(2)
        .any(|pair| pair[1].len() > STRING_BYTES_MAX)
    {
        return Err(too_big());
    }
    for pair in args[1..].chunks(2) {
        let old = exec.store.entry(&pair[0])?;
        write_string(exec, &pair[0], pair[1].to_vec(), 0, old.as_ref())?;
    }
    Ok(Reply::ok())
}

pub fn msetnx(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    if args.len() % 2 == 0 {
        return Ok(wrong_arity("msetnx"));
    }
    if args[1..]
        .chunks(2)
        .any(|pair| pair[1].len() > STRING_BYTES_MAX)
    {
        return Err(too_big());
    }
    for pair in args[1..].chunks(2) {
        if exec.store.entry(&pair[0])?.is_some() {
            return Ok(Reply::Integer(0));
        }
    }
    for pair in args[1..].chunks(2) {
        write_string(exec, &pair[0], pair[1].to_vec(), 0, None)?;
    }
    Ok(Reply::Integer(1))
}

fn incr_by(exec: &mut Exec, key: &[u8], delta: i64) -> CommandResult {
    let old = string_entry(exec, key)?;
    let current = match &old {
        Some(entry) => parse_i64(&entry.body)?,
        None => 0,
    };
    let Some(next) = current.checked_add(delta) else {
        return Err(Reply::error("ERR increment or decrement would overflow").into());
    };
    let expire_ms = old.as_ref().map_or(0, |entry| entry.expire_ms);
    write_string(
        exec,
        key,
        next.to_string().into_bytes(),
        expire_ms,
        old.as_ref(),
    )?;
    Ok(Reply::Integer(next))
}

pub fn incr(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    incr_by(exec, &args[1], 1)
}

pub fn decr(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    incr_by(exec, &args[1], -1)
}

pub fn incrby(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let delta = parse_i64(&args[2])?;
    incr_by(exec, &args[1], delta)
}

pub fn decrby(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let delta = parse_i64(&args[2])?;
    let negated = delta.checked_neg().ok_or_else(not_integer)?;
    incr_by(exec, &args[1], negated)
}

pub fn incrbyfloat(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let delta = parse_f64(&args[2])?;
    let old = string_entry(exec, &args[1])?;
    let current = match &old {
        Some(entry) => parse_f64(&entry.body)?,
        None => 0.0,
    };
    let next = current + delta;
    if !next.is_finite() {
        return Err(Reply::error("ERR increment would produce NaN or Infinity").into());
    }
    let text = format_double(next);
    let expire_ms = old.as_ref().map_or(0, |entry| entry.expire_ms);
    write_string(
        exec,
        &args[1],
        text.clone().into_bytes(),
        expire_ms,
        old.as_ref(),
    )?;
    Ok(Reply::bulk(text))
}

pub fn append(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let old = string_entry(exec, &args[1])?;
    let (mut value, expire_ms) = match &old {
        Some(entry) => (entry.body.clone(), entry.expire_ms),
        None => (Vec::new(), 0),
    };
    if value.len() + args[2].len() > STRING_BYTES_MAX {
        return Err(too_big());
    }
    value.extend_from_slice(&args[2]);
    let len = value.len();
    write_string(exec, &args[1], value, expire_ms, old.as_ref())?;
    Ok(Reply::Integer(len as i64))
}

pub fn strlen(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    strlen_in(&exec.store, args)
}

pub fn strlen_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let len = string_entry_in(keyspace, &args[1])?.map_or(0, |entry| entry.body.len());
    Ok(Reply::Integer(len as i64))
}

pub fn getrange(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let start = parse_i64(&args[2])?;
    let end = parse_i64(&args[3])?;
    let value = string_entry(exec, &args[1])?.map_or(Vec::new(), |entry| entry.body);
    let len = value.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return Ok(Reply::bulk(Bytes::new()));
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if start > end || start >= len {
        return Ok(Reply::bulk(Bytes::new()));
    }
    Ok(Reply::bulk(value[start as usize..=end as usize].to_vec()))
}

pub fn setrange(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let offset = parse_i64(&args[2])?;
    if offset < 0 {
        return Err(Reply::error("ERR offset is out of range").into());
    }
    let offset = offset as usize;
    let old = string_entry(exec, &args[1])?;
    let patch = &args[3];
    let (mut value, expire_ms) = match &old {
        Some(entry) => (entry.body.clone(), entry.expire_ms),
        None => (Vec::new(), 0),
    };
    if patch.is_empty() {
        return Ok(Reply::Integer(value.len() as i64));
    }
    if offset.saturating_add(patch.len()) > STRING_BYTES_MAX {
        return Err(too_big());
    }
    if value.len() < offset + patch.len() {
        value.resize(offset + patch.len(), 0);
    }
    value[offset..offset + patch.len()].copy_from_slice(patch);
    let len = value.len();
    write_string(exec, &args[1], value, expire_ms, old.as_ref())?;
    Ok(Reply::Integer(len as i64))
}
