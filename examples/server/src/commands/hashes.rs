//! Hash commands. Each field is its own record `id ++ field → value` in the `hash` tree.

use bufpool_engine::Direction;
use bytes::Bytes;

use super::keys::{glob_match, scan_options, scan_step};
use super::{
    CommandResult, check_member, collection, collection_in, collection_or_new, parse_i64,
    store_collection, visit_members, wrong_arity,
};
use crate::executor::Exec;
use crate::resp::Reply;
use crate::store::{Keyspace, Kind, id_bounds, member_key};

/// Sets the field pairs in `args[2..]`; returns how many fields are new.
fn set_fields(exec: &mut Exec, args: &[Bytes]) -> Result<i64, super::CommandError> {
    for pair in args[2..].chunks(2) {
        check_member(&pair[0])?;
    }
    let (entry, mut header) = collection_or_new(exec, &args[1], Kind::Hash)?;
    let existed = header.len > 0;
    let mut added = 0;
    for pair in args[2..].chunks(2) {
        let key = member_key(header.id, &pair[0]);
        if exec.store.read(&exec.store.hash, &key)?.is_none() {
            added += 1;
        }
        exec.store.put(&exec.store.hash, &key, &pair[1])?;
    }
    header.len += added as u64;
    store_collection(exec, &args[1], entry, header, existed)?;
    Ok(added)
}

pub fn hset(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    if args.len() % 2 != 0 {
        return Ok(wrong_arity("hset"));
    }
    Ok(Reply::Integer(set_fields(exec, args)?))
}

pub fn hmset(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    if args.len() % 2 != 0 {
        return Ok(wrong_arity("hmset"));
    }
    set_fields(exec, args)?;
    Ok(Reply::ok())
}

pub fn hget(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    hget_in(&exec.store, args)
}

pub fn hget_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let Some((_, header)) = collection_in(keyspace, &args[1], Kind::Hash)? else {
        return Ok(Reply::Nil);
    };
    let value = keyspace
        .member_tree(Kind::Hash)
        .get(&member_key(header.id, &args[2]))?;
    Ok(value.map_or(Reply::Nil, Reply::bulk))
}

pub fn hmget(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    hmget_in(&exec.store, args)
}

pub fn hmget_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let found = collection_in(keyspace, &args[1], Kind::Hash)?;
    let mut values = Vec::with_capacity(args.len() - 2);
    for field in &args[2..] {
        let value = match &found {
            Some((_, header)) => keyspace
                .member_tree(Kind::Hash)
                .get(&member_key(header.id, field))?,
            None => None,
        };
        values.push(value.map_or(Reply::Nil, Reply::bulk));
    }
    Ok(Reply::Array(values))
}

pub fn hdel(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let Some((entry, mut header)) = collection(exec, &args[1], Kind::Hash)? else {
        return Ok(Reply::Integer(0));
    };
    let mut removed = 0;
    for field in &args[2..] {
        if exec
            .store
            .delete(&exec.store.hash, &member_key(header.id, field))?
        {
            removed += 1;
        }
    }
    header.len -= removed;
    if removed > 0 {
        store_collection(exec, &args[1], entry, header, true)?;
    }
    Ok(Reply::Integer(removed as i64))
}

pub fn hlen(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    hlen_in(&exec.store, args)
}

pub fn hlen_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let len = collection_in(keyspace, &args[1], Kind::Hash)?.map_or(0, |(_, header)| header.len);
    Ok(Reply::Integer(len as i64))
}

pub fn hexists(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    hexists_in(&exec.store, args)
}

pub fn hexists_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let Some((_, header)) = collection_in(keyspace, &args[1], Kind::Hash)? else {
        return Ok(Reply::Integer(0));
    };
    let found = keyspace
        .member_tree(Kind::Hash)
        .get(&member_key(header.id, &args[2]))?;
    Ok(Reply::Integer(found.is_some() as i64))
}

pub fn hincrby(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let delta = parse_i64(&args[3])?;
    check_member(&args[2])?;
    let (entry, mut header) = collection_or_new(exec, &args[1], Kind::Hash)?;
    let existed = header.len > 0;
    let key = member_key(header.id, &args[2]);
    let old = exec.store.read(&exec.store.hash, &key)?;
    let current = match &old {
        Some(value) => {
            parse_i64(value).map_err(|_| Reply::error("ERR hash value is not an integer"))?
        }
        None => 0,
    };
    let Some(next) = current.checked_add(delta) else {
        return Err(Reply::error("ERR increment or decrement would overflow").into());
    };
    exec.store
        .put(&exec.store.hash, &key, next.to_string().as_bytes())?;
    if old.is_none() {
        header.len += 1;
        store_collection(exec, &args[1], entry, header, existed)?;
    }
    Ok(Reply::Integer(next))
}

/// Fields and values of the hash at `key` (empty if absent).
fn all_fields(exec: &Exec, key: &[u8]) -> Result<Vec<super::Record>, super::CommandError> {
    let Some((_, header)) = collection(exec, key, Kind::Hash)? else {
        return Ok(Vec::new());
    };
    let mut fields = Vec::with_capacity(header.len.min(1 << 20) as usize);
    visit_members(
        &exec.store.hash,
        header.id,
        Direction::Forward,
        |field, value| {
            fields.push((field.to_vec(), value.to_vec()));
            std::ops::ControlFlow::Continue(())
        },
    )?;
    Ok(fields)
}

pub fn hgetall(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let pairs = all_fields(exec, &args[1])?
        .into_iter()
        .map(|(field, value)| (Reply::bulk(field), Reply::bulk(value)))
        .collect();
    Ok(Reply::Map(pairs))
}

pub fn hkeys(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let fields = all_fields(exec, &args[1])?;
    Ok(Reply::Array(
        fields
            .into_iter()
            .map(|(field, _)| Reply::bulk(field))
            .collect(),
    ))
}

pub fn hvals(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let fields = all_fields(exec, &args[1])?;
    Ok(Reply::Array(
        fields
            .into_iter()
            .map(|(_, value)| Reply::bulk(value))
            .collect(),
    ))
}

pub fn hscan(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let options = scan_options(&args[3..], false)?;
    let Some((_, header)) = collection(exec, &args[1], Kind::Hash)? else {
        return Ok(Reply::Array(vec![
            Reply::bulk("0"),
            Reply::Array(Vec::new()),
        ]));
    };
    let (lower, upper) = id_bounds(header.id);
    let tree = exec.store.hash.clone();
    let (next, kept) = scan_step(
        exec,
        tree,
        &args[2],
        &lower,
        &upper,
        options.count,
        |key, _| {
            options
                .pattern
                .as_ref()
                .is_none_or(|pattern| glob_match(pattern, &key[8..]))
        },
    )?;
    let mut flat = Vec::with_capacity(kept.len() * 2);
    for (key, value) in kept {
        flat.push(Reply::bulk(key[8..].to_vec()));
        flat.push(Reply::bulk(value));
    }
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(flat),
    ]))
}
