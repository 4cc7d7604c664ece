//! Sorted-set commands. Each member has two records: `id ++ member → score` in
//! `zset.member` (lookups by member) and `id ++ sortable(score) ++ member → ""` in
//! `zset.score` (order by score, then member, as Redis orders ties).

use bufpool_engine::Direction;
use bytes::Bytes;

use super::{
    CommandError, CommandResult, check_member, collection, collection_in, collection_or_new,
    eq_ignore_case, index_range, members, parse_f64, parse_i64, store_collection, syntax_error,
};
use crate::executor::Exec;
use crate::resp::Reply;
use crate::store::{
    Collection, Keyspace, Kind, id_bounds, member_key, score_from_sortable, sortable_score,
};

fn score_key(id: u64, score: f64, member: &[u8]) -> Vec<u8> {
    let mut key = member_key(id, &sortable_score(score));
    key.extend_from_slice(member);
    key
}

fn decode_score(bytes: &[u8]) -> f64 {
    bytes
        .get(..8)
        .and_then(|raw| raw.try_into().ok())
        .map_or(0.0, |raw| f64::from_bits(u64::from_be_bytes(raw)))
}

/// (member, score) from a `zset.score` key suffix (after the id).
fn split_score_key(suffix: &[u8]) -> (Vec<u8>, f64) {
    (suffix[8..].to_vec(), score_from_sortable(&suffix[..8]))
}

/// Sets `member`'s score, replacing `old`; returns nothing, the caller counts.
fn write_member(
    exec: &Exec,
    id: u64,
    member: &[u8],
    old: Option<f64>,
    score: f64,
) -> Result<(), CommandError> {
    if let Some(old) = old {
        exec.store
            .delete(&exec.store.zscore, &score_key(id, old, member))?;
    }
    exec.store
        .put(&exec.store.zscore, &score_key(id, score, member), &[])?;
    exec.store.put(
        &exec.store.zmember,
        &member_key(id, member),
        &score.to_bits().to_be_bytes(),
    )?;
    Ok(())
}

fn member_score(exec: &Exec, id: u64, member: &[u8]) -> Result<Option<f64>, CommandError> {
    member_score_in(&exec.store, id, member)
}

fn member_score_in(
    keyspace: &impl Keyspace,
    id: u64,
    member: &[u8],
) -> Result<Option<f64>, CommandError> {
    let found = keyspace.get(keyspace.member_tree(Kind::ZSet), &member_key(id, member))?;
    Ok(found.map(|bytes| decode_score(&bytes)))
}

#[derive(Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

pub fn zadd(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let mut flags = AddFlags::default();
    let mut index = 2;
    while index < args.len() {
        let word = args[index].to_ascii_lowercase();
        match word.as_slice() {
            b"nx" => flags.nx = true,
            b"xx" => flags.xx = true,
            b"gt" => flags.gt = true,
            b"lt" => flags.lt = true,
            b"ch" => flags.ch = true,
            b"incr" => flags.incr = true,
            _ => break,
        }
        index += 1;
    }
    let pairs = &args[index..];
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(syntax_error());
    }
    if flags.nx && flags.xx {
        return Err(
            Reply::error("ERR XX and NX options at the same time are not compatible").into(),
        );
    }
    if (flags.gt && flags.lt) || (flags.nx && (flags.gt || flags.lt)) {
        return Err(Reply::error(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        )
        .into());
    }
    if flags.incr && pairs.len() != 2 {
        return Err(
            Reply::error("ERR INCR option supports a single increment-element pair").into(),
        );
    }
    let mut parsed = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        check_member(&pair[1])?;
        parsed.push((parse_f64(&pair[0])?, &pair[1]));
    }
    let (entry, mut header) = collection_or_new(exec, &args[1], Kind::ZSet)?;
    let existed = header.len > 0;
    let (mut added, mut changed) = (0u64, 0u64);
    let mut incr_result = None;
    for (score, member) in parsed {
        let old = member_score(exec, header.id, member)?;
        let mut next = score;
        if flags.incr {
            next = old.unwrap_or(0.0) + score;
            if next.is_nan() {
                return Err(Reply::error("ERR resulting score is not a number (NaN)").into());
            }
        }
        let skip = match old {
            Some(_) if flags.nx => true,
            None if flags.xx => true,
            Some(old) => (flags.gt && next <= old) || (flags.lt && next >= old),
            None => false,
        };
        if skip {
            continue;
        }
        incr_result = Some(next);
        match old {
            None => {
                write_member(exec, header.id, member, None, next)?;
                added += 1;
            }
            Some(old) if old != next => {
                write_member(exec, header.id, member, Some(old), next)?;
                changed += 1;
            }
            Some(_) => {}
        }
    }
    if added > 0 {
        header.len += added;
        store_collection(exec, &args[1], entry, header, existed)?;
    }
    if flags.incr {
        return Ok(incr_result.map_or(Reply::Nil, Reply::Double));
    }
    let count = if flags.ch { added + changed } else { added };
    Ok(Reply::Integer(count as i64))
}

pub fn zrem(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let Some((entry, mut header)) = collection(exec, &args[1], Kind::ZSet)? else {
        return Ok(Reply::Integer(0));
    };
    let mut removed = 0;
    for member in &args[2..] {
        if let Some(score) = member_score(exec, header.id, member)? {
            remove_member(exec, header.id, member, score)?;
            removed += 1;
        }
    }
    if removed > 0 {
        header.len -= removed;
        store_collection(exec, &args[1], entry, header, true)?;
    }
    Ok(Reply::Integer(removed as i64))
}

fn remove_member(exec: &Exec, id: u64, member: &[u8], score: f64) -> Result<(), CommandError> {
    exec.store
        .delete(&exec.store.zscore, &score_key(id, score, member))?;
    exec.store
        .delete(&exec.store.zmember, &member_key(id, member))?;
    Ok(())
}

pub fn zscore(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    zscore_in(&exec.store, args)
}

pub fn zscore_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let Some((_, header)) = collection_in(keyspace, &args[1], Kind::ZSet)? else {
        return Ok(Reply::Nil);
    };
    Ok(member_score_in(keyspace, header.id, &args[2])?.map_or(Reply::Nil, Reply::Double))
}

pub fn zcard(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    zcard_in(&exec.store, args)
}

pub fn zcard_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let len = collection_in(keyspace, &args[1], Kind::ZSet)?.map_or(0, |(_, header)| header.len);
    Ok(Reply::Integer(len as i64))
}

/// A score bound of ZRANGE BYSCORE: `(` makes it exclusive.
fn score_bound(text: &[u8]) -> Result<(f64, bool), CommandError> {
    let not_float = || CommandError::from(Reply::error("ERR min or max is not a float"));
    let (exclusive, number) = match text.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = parse_f64(number).map_err(|_| not_float())?;
    Ok((value, exclusive))
}

fn pairs_reply(found: Vec<(Vec<u8>, f64)>, with_scores: bool) -> Reply {
    if with_scores {
        Reply::Pairs(
            found
                .into_iter()
                .map(|(member, score)| (Reply::bulk(member), Reply::Double(score)))
                .collect(),
        )
    } else {
        Reply::Array(
            found
                .into_iter()
                .map(|(member, _)| Reply::bulk(member))
                .collect(),
        )
    }
}

pub fn zrange(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let (mut by_score, mut reverse, mut with_scores) = (false, false, false);
    let mut limit: Option<(i64, i64)> = None;
    let mut index = 4;
    while index < args.len() {
        let word = &args[index];
        if eq_ignore_case(word, "byscore") {
            by_score = true;
        } else if eq_ignore_case(word, "rev") {
            reverse = true;
        } else if eq_ignore_case(word, "withscores") {
            with_scores = true;
        } else if eq_ignore_case(word, "limit") && index + 2 < args.len() {
            limit = Some((parse_i64(&args[index + 1])?, parse_i64(&args[index + 2])?));
            index += 2;
        } else if eq_ignore_case(word, "bylex") {
            return Err(Reply::error("ERR ZRANGE BYLEX is not supported by this server").into());
        } else {
            return Err(syntax_error());
        }
        index += 1;
    }
    if limit.is_some() && !by_score {
        return Err(Reply::error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        )
        .into());
    }
    let Some((_, header)) = collection(exec, &args[1], Kind::ZSet)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let direction = if reverse {
        Direction::Reverse
    } else {
        Direction::Forward
    };
    let found = if by_score {
        // REV takes the bounds as max then min.
        let (first, second) = (score_bound(&args[2])?, score_bound(&args[3])?);
        let (min, max) = if reverse {
            (second, first)
        } else {
            (first, second)
        };
        let (offset, count) = limit.unwrap_or((0, -1));
        by_score_range(exec, header, min, max, direction, offset, count)?
    } else {
        let start = parse_i64(&args[2])?;
        let stop = parse_i64(&args[3])?;
        match index_range(start, stop, header.len) {
            Some((first, last)) => {
                let mut found = Vec::with_capacity((last - first + 1).min(1 << 20) as usize);
                let mut index = 0;
                super::visit_members(&exec.store.zscore, header.id, direction, |suffix, _| {
                    if index >= first {
                        found.push(split_score_key(suffix));
                    }
                    index += 1;
                    if index > last {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                })?;
                found
            }
            None => Vec::new(),
        }
    };
    Ok(pairs_reply(found, with_scores))
}

fn by_score_range(
    exec: &Exec,
    header: Collection,
    (min, min_exclusive): (f64, bool),
    (max, max_exclusive): (f64, bool),
    direction: Direction,
    offset: i64,
    count: i64,
) -> Result<Vec<(Vec<u8>, f64)>, CommandError> {
    if offset < 0 || min > max {
        return Ok(Vec::new());
    }
    let lower = member_key(header.id, &sortable_score(min));
    let max_key = u64::from_be_bytes(sortable_score(max));
    let upper = match max_key.checked_add(1) {
        Some(next) => member_key(header.id, &next.to_be_bytes()),
        None => id_bounds(header.id).1,
    };
    let take = if count < 0 {
        usize::MAX
    } else {
        count as usize
    };
    let mut found = Vec::new();
    let records = exec
        .store
        .zscore
        .range(lower.as_slice()..upper.as_slice(), direction);
    let in_bounds = |score: f64| !(min_exclusive && score <= min || max_exclusive && score >= max);
    let mut skipped = 0;
    for record in records {
        let (member, score) = split_score_key(&record?.0[8..]);
        if !in_bounds(score) {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if found.len() == take {
            break;
        }
        found.push((member, score));
    }
    Ok(found)
}

fn pop(exec: &mut Exec, args: &[Bytes], direction: Direction) -> CommandResult {
    if args.len() > 3 {
        return Err(syntax_error());
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
    let Some((entry, mut header)) = collection(exec, &args[1], Kind::ZSet)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let take = count.unwrap_or(1).min(header.len) as usize;
    let mut popped = Vec::with_capacity(take);
    for record in members(&exec.store.zscore, header.id, direction).take(take) {
        popped.push(split_score_key(&record?.0));
    }
    for (member, score) in &popped {
        remove_member(exec, header.id, member, *score)?;
    }
    if !popped.is_empty() {
        header.len -= popped.len() as u64;
        store_collection(exec, &args[1], entry, header, true)?;
    }
    Ok(match count {
        Some(_) => pairs_reply(popped, true),
        None => Reply::Array(
            popped
                .into_iter()
                .flat_map(|(member, score)| [Reply::bulk(member), Reply::Double(score)])
                .collect(),
        ),
    })
}

pub fn zpopmin(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    pop(exec, args, Direction::Forward)
}

pub fn zpopmax(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    pop(exec, args, Direction::Reverse)
}

pub fn zrank(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let with_score = match args.get(3) {
        Some(word) if eq_ignore_case(word, "withscore") && args.len() == 4 => true,
        Some(_) => return Err(syntax_error()),
        None => false,
    };
    let Some((_, header)) = collection(exec, &args[1], Kind::ZSet)? else {
        return Ok(Reply::Nil);
    };
    let Some(score) = member_score(exec, header.id, &args[2])? else {
        return Ok(Reply::Nil);
    };
    // O(rank): the tree keeps no subtree counts.
    let (start, _) = id_bounds(header.id);
    let position = score_key(header.id, score, &args[2]);
    let mut rank = 0i64;
    for record in exec
        .store
        .zscore
        .range(start.as_slice()..position.as_slice(), Direction::Forward)
    {
        record?;
        rank += 1;
    }
    Ok(if with_score {
        Reply::Array(vec![Reply::Integer(rank), Reply::Double(score)])
    } else {
        Reply::Integer(rank)
    })
}
