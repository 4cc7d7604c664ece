//! List commands. Elements are records `id ++ seq → element` in the `list` tree with
//! contiguous sequence numbers from the header's `head` (first) to `tail` (one past the
//! last): push and pop move an end, and an index is a point lookup at `head + index`.

use bufpool_engine::Direction;
use bytes::Bytes;

use super::{
    CommandError, CommandResult, collection, collection_in, collection_or_new, index_range,
    parse_i64, store_collection,
};
use crate::executor::Exec;
use crate::resp::Reply;
use crate::store::{Keyspace, Kind, member_key};

fn element_key(id: u64, seq: u64) -> Vec<u8> {
    member_key(id, &seq.to_be_bytes())
}

fn push(exec: &mut Exec, args: &[Bytes], front: bool) -> CommandResult {
    let (entry, mut header) = collection_or_new(exec, &args[1], Kind::List)?;
    let existed = header.len > 0;
    for element in &args[2..] {
        let seq = if front {
            header.head -= 1;
            header.head
        } else {
            header.tail += 1;
            header.tail - 1
        };
        exec.store
            .put(&exec.store.list, &element_key(header.id, seq), element)?;
    }
    header.len += (args.len() - 2) as u64;
    store_collection(exec, &args[1], entry, header, existed)?;
    Ok(Reply::Integer(header.len as i64))
}

pub fn lpush(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    push(exec, args, true)
}

pub fn rpush(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    push(exec, args, false)
}

fn pop(exec: &mut Exec, args: &[Bytes], front: bool) -> CommandResult {
    if args.len() > 3 {
        return Err(super::syntax_error());
    }
    let count = match args.get(2) {
        Some(text) => {
            let count = parse_i64(text).map_err(|_| out_of_range())?;
            if count < 0 {
                return Err(out_of_range());
            }
            Some(count as u64)
        }
        None => None,
    };
    let Some((entry, mut header)) = collection(exec, &args[1], Kind::List)? else {
        return Ok(if count.is_some() {
            Reply::NilArray
        } else {
            Reply::Nil
        });
    };
    let take = count.unwrap_or(1).min(header.len);
    let mut popped = Vec::with_capacity(take as usize);
    for _ in 0..take {
        let seq = if front { header.head } else { header.tail - 1 };
        let key = element_key(header.id, seq);
        let element = exec.store.read(&exec.store.list, &key)?.unwrap_or_default();
        exec.store.delete(&exec.store.list, &key)?;
        if front {
            header.head += 1;
        } else {
            header.tail -= 1;
        }
        header.len -= 1;
        popped.push(Reply::bulk(element));
    }
    if take > 0 {
        store_collection(exec, &args[1], entry, header, true)?;
    }
    Ok(match count {
        Some(_) => Reply::Array(popped),
        None => popped.pop().unwrap_or(Reply::Nil),
    })
}

fn out_of_range() -> CommandError {
    Reply::error("ERR value is out of range, must be positive").into()
}

pub fn lpop(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    pop(exec, args, true)
}

pub fn rpop(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    pop(exec, args, false)
}

pub fn llen(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    llen_in(&exec.store, args)
}

pub fn llen_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let len = collection_in(keyspace, &args[1], Kind::List)?.map_or(0, |(_, header)| header.len);
    Ok(Reply::Integer(len as i64))
}

pub fn lrange(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let start = parse_i64(&args[2])?;
    let stop = parse_i64(&args[3])?;
    let Some((_, header)) = collection(exec, &args[1], Kind::List)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let Some((first, last)) = index_range(start, stop, header.len) else {
        return Ok(Reply::Array(Vec::new()));
    };
    let from = element_key(header.id, header.head + first);
    let to = element_key(header.id, header.head + last);
    let mut elements = Vec::with_capacity((last - first + 1) as usize);
    let range = from.as_slice()..=to.as_slice();
    // Lent from the latched leaves; the visitor only copies.
    exec.store
        .list
        .scan_latched(range, Direction::Forward, |_, value| {
            elements.push(Reply::bulk(value.to_vec()));
            std::ops::ControlFlow::Continue(())
        })?;
    Ok(Reply::Array(elements))
}

pub fn lindex(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    lindex_in(&exec.store, args)
}

pub fn lindex_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let index = parse_i64(&args[2])?;
    let Some((_, header)) = collection_in(keyspace, &args[1], Kind::List)? else {
        return Ok(Reply::Nil);
    };
    let Some((at, _)) = index_range(index, index, header.len) else {
        return Ok(Reply::Nil);
    };
    let element = keyspace
        .member_tree(Kind::List)
        .get(&element_key(header.id, header.head + at))?;
    Ok(element.map_or(Reply::Nil, Reply::bulk))
}
