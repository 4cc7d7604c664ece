//! Set commands. Each member is its own record `id ++ member → ""` in the `set` tree.

use bufpool_engine::Direction;
use bytes::Bytes;
use rand::RngExt;

use super::keys::{glob_match, scan_options, scan_step};
use super::{
    CommandError, CommandResult, check_member, collection, collection_in, collection_or_new,
    parse_i64, store_collection, visit_members,
};
use crate::executor::Exec;
use crate::resp::Reply;
use crate::store::{Keyspace, Kind, Store, id_bounds, member_key};

pub fn sadd(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    for member in &args[2..] {
        check_member(member)?;
    }
    let (entry, mut header) = collection_or_new(exec, &args[1], Kind::Set)?;
    let existed = header.len > 0;
    let mut added = 0;
    for member in &args[2..] {
        let key = member_key(header.id, member);
        if exec.store.read(&exec.store.set, &key)?.is_none() {
            exec.store.put(&exec.store.set, &key, &[])?;
            added += 1;
        }
    }
    if added > 0 {
        header.len += added;
        store_collection(exec, &args[1], entry, header, existed)?;
    }
    Ok(Reply::Integer(added as i64))
}

pub fn srem(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let Some((entry, mut header)) = collection(exec, &args[1], Kind::Set)? else {
        return Ok(Reply::Integer(0));
    };
    let mut removed = 0;
    for member in &args[2..] {
        if exec
            .store
            .delete(&exec.store.set, &member_key(header.id, member))?
        {
            removed += 1;
        }
    }
    if removed > 0 {
        header.len -= removed;
        store_collection(exec, &args[1], entry, header, true)?;
    }
    Ok(Reply::Integer(removed as i64))
}

/// A member chosen by probing at a random position in the set's key range: cheap on a
/// B+-tree, though not exactly uniform (members after wide gaps are likelier).
fn random_member(exec: &mut Exec, id: u64) -> Result<Option<Vec<u8>>, CommandError> {
    let probe = member_key(id, &exec.rng.random::<[u8; 8]>());
    let (start, end) = id_bounds(id);
    let found = match first_live(&exec.store, &probe, &end)? {
        Some(key) => Some(key),
        None => first_live(&exec.store, &start, &end)?,
    };
    Ok(found.map(|key| key[8..].to_vec()))
}

/// The first key of the `set` tree in `from..to` that this command has not deleted (SPOP
/// of several: the range still finds the members popped before, see `intent`).
fn first_live(store: &Store, from: &[u8], to: &[u8]) -> Result<Option<Vec<u8>>, CommandError> {
    // Bounded by the members this command popped, plus one.
    for record in store.set.range(from..to, Direction::Forward) {
        let (key, _) = record?;
        if !store.deleted(&store.set, &key) {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

pub fn spop(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    if args.len() > 3 {
        return Err(super::syntax_error());
    }
    let count = match args.get(2) {
        Some(text) => {
            let count = parse_i64(text)?;
            if count < 0 {
                return Err(Reply::error("ERR value is out of range, must be positive").into());
            }
            Some(count as u64)
        }
        None => None,
    };
    let Some((entry, mut header)) = collection(exec, &args[1], Kind::Set)? else {
        return Ok(if count.is_some() {
            Reply::Set(Vec::new())
        } else {
            Reply::Nil
        });
    };
    let take = count.unwrap_or(1).min(header.len);
    let mut popped = Vec::with_capacity(take as usize);
    for _ in 0..take {
        let Some(member) = random_member(exec, header.id)? else {
            break;
        };
        exec.store
            .delete(&exec.store.set, &member_key(header.id, &member))?;
        header.len -= 1;
        popped.push(Reply::bulk(member));
    }
    if !popped.is_empty() {
        store_collection(exec, &args[1], entry, header, true)?;
    }
    Ok(match count {
        Some(_) => Reply::Set(popped),
        None => popped.pop().unwrap_or(Reply::Nil),
    })
}

pub fn smembers(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let Some((_, header)) = collection(exec, &args[1], Kind::Set)? else {
        return Ok(Reply::Set(Vec::new()));
    };
    let mut found = Vec::with_capacity(header.len.min(1 << 20) as usize);
    visit_members(
        &exec.store.set,
        header.id,
        Direction::Forward,
        |member, _| {
            found.push(Reply::bulk(member.to_vec()));
            std::ops::ControlFlow::Continue(())
        },
    )?;
    Ok(Reply::Set(found))
}

pub fn sismember(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    sismember_in(&exec.store, args)
}

pub fn sismember_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let Some((_, header)) = collection_in(keyspace, &args[1], Kind::Set)? else {
        return Ok(Reply::Integer(0));
    };
    let found = keyspace
        .member_tree(Kind::Set)
        .get(&member_key(header.id, &args[2]))?;
    Ok(Reply::Integer(found.is_some() as i64))
}

pub fn scard(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    scard_in(&exec.store, args)
}

pub fn scard_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let len = collection_in(keyspace, &args[1], Kind::Set)?.map_or(0, |(_, header)| header.len);
    Ok(Reply::Integer(len as i64))
}

pub fn sscan(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let options = scan_options(&args[3..], false)?;
    let Some((_, header)) = collection(exec, &args[1], Kind::Set)? else {
        return Ok(Reply::Array(vec![
            Reply::bulk("0"),
            Reply::Array(Vec::new()),
        ]));
    };
    let (lower, upper) = id_bounds(header.id);
    let tree = exec.store.set.clone();
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
    let found = kept
        .into_iter()
        .map(|(key, _)| Reply::bulk(key[8..].to_vec()))
        .collect();
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(found),
    ]))
}
