//! Generic key commands, SCAN's cursors, and glob matching.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;

use bufpool_engine::{Direction, Tree};
use bytes::Bytes;
use rand::RngExt;

use super::{CommandError, CommandResult, eq_ignore_case, parse_i64, syntax_error};
use crate::executor::Exec;
use crate::resp::Reply;
use crate::store::{Keyspace, decode_entry, now_ms};

pub fn del(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let mut removed = 0;
    for key in &args[1..] {
        if let Some(entry) = exec.store.entry(key)? {
            exec.store.remove(key, &entry)?;
            removed += 1;
        }
    }
    Ok(Reply::Integer(removed))
}

pub fn exists(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    exists_in(&exec.store, args)
}

pub fn exists_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let mut found = 0;
    for key in &args[1..] {
        if keyspace.entry(key)?.is_some() {
            found += 1;
        }
    }
    Ok(Reply::Integer(found))
}

pub fn type_of(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    type_of_in(&exec.store, args)
}

pub fn type_of_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let name = keyspace
        .entry(&args[1])?
        .map_or("none", |entry| entry.kind.name());
    Ok(Reply::Status(name.into()))
}

fn invalid_expire(command: &str) -> CommandError {
    Reply::error(format!("ERR invalid expire time in '{command}' command")).into()
}

/// EXPIRE and friends: `unit_ms` per unit of the amount, `absolute` for the *AT forms.
fn set_expiry(exec: &mut Exec, args: &[Bytes], unit_ms: i64, absolute: bool) -> CommandResult {
    let command = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let amount = parse_i64(&args[2])?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[3..] {
        match option.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                let text = String::from_utf8_lossy(option);
                return Err(Reply::error(format!("ERR Unsupported option {text}")).into());
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        )
        .into());
    }
    if gt && lt {
        return Err(
            Reply::error("ERR GT and LT options at the same time are not compatible").into(),
        );
    }
    let relative = amount
        .checked_mul(unit_ms)
        .ok_or_else(|| invalid_expire(&command))?;
    let at_ms = if absolute {
        relative
    } else {
        relative
            .checked_add(now_ms() as i64)
            .ok_or_else(|| invalid_expire(&command))?
    };
    let Some(mut entry) = exec.store.entry(&args[1])? else {
        return Ok(Reply::Integer(0));
    };
    let current = entry.expire_ms;
    // No expiry counts as an infinite one for GT and LT.
    let allowed = !(nx && current != 0
        || xx && current == 0
        || gt && (current == 0 || at_ms <= current as i64)
        || lt && current != 0 && at_ms >= current as i64);
    if !allowed {
        return Ok(Reply::Integer(0));
    }
    if at_ms <= now_ms() as i64 {
        exec.store.remove(&args[1], &entry)?;
        return Ok(Reply::Integer(1));
    }
    entry.expire_ms = at_ms as u64;
    exec.store.write_entry(&args[1], &entry, current)?;
    Ok(Reply::Integer(1))
}

pub fn expire(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    set_expiry(exec, args, 1000, false)
}

pub fn pexpire(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    set_expiry(exec, args, 1, false)
}

pub fn expireat(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    set_expiry(exec, args, 1000, true)
}

pub fn pexpireat(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    set_expiry(exec, args, 1, true)
}

fn remaining_ms(keyspace: &impl Keyspace, key: &[u8]) -> Result<i64, CommandError> {
    Ok(match keyspace.entry(key)? {
        None => -2,
        Some(entry) if entry.expire_ms == 0 => -1,
        Some(entry) => entry.expire_ms.saturating_sub(now_ms()) as i64,
    })
}

pub fn ttl(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    ttl_in(&exec.store, args)
}

pub fn ttl_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    let ms = remaining_ms(keyspace, &args[1])?;
    Ok(Reply::Integer(if ms < 0 { ms } else { (ms + 500) / 1000 }))
}

pub fn pttl(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    pttl_in(&exec.store, args)
}

pub fn pttl_in(keyspace: &impl Keyspace, args: &[Bytes]) -> CommandResult {
    Ok(Reply::Integer(remaining_ms(keyspace, &args[1])?))
}

pub fn persist(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let Some(mut entry) = exec.store.entry(&args[1])? else {
        return Ok(Reply::Integer(0));
    };
    if entry.expire_ms == 0 {
        return Ok(Reply::Integer(0));
    }
    let old = entry.expire_ms;
    entry.expire_ms = 0;
    exec.store.write_entry(&args[1], &entry, old)?;
    Ok(Reply::Integer(1))
}

pub fn rename(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let Some(entry) = exec.store.entry(&args[1])? else {
        return Err(Reply::error("ERR no such key").into());
    };
    if args[1] == args[2] {
        return Ok(Reply::ok());
    }
    if let Some(target) = exec.store.entry(&args[2])? {
        exec.store.remove(&args[2], &target)?;
    }
    // The header (and so the collection id) moves: members follow without being copied.
    exec.store.detach(&args[1], &entry)?;
    exec.store.write_entry(&args[2], &entry, 0)?;
    Ok(Reply::ok())
}

pub fn randomkey(exec: &mut Exec, _args: &[Bytes]) -> CommandResult {
    const PROBES: usize = 16;
    for _ in 0..PROBES {
        let probe: [u8; 8] = exec.rng.random();
        let at_or_after = first_record(&exec.store.keys, Bound::Included(&probe[..]))?;
        let found = match at_or_after {
            Some(record) => Some(record),
            None => first_record(&exec.store.keys, Bound::Unbounded)?,
        };
        let Some((key, _)) = found else {
            return Ok(Reply::Nil);
        };
        if exec.store.entry(&key)?.is_some() {
            return Ok(Reply::bulk(key));
        }
    }
    Ok(Reply::Nil)
}

fn first_record(tree: &Tree, start: Bound<&[u8]>) -> Result<Option<super::Record>, CommandError> {
    let mut records = tree.range::<[u8], _>((start, Bound::Unbounded), Direction::Forward);
    Ok(records.next().transpose()?)
}

pub fn keys(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let pattern = &args[1];
    let now = now_ms();
    let mut found = Vec::new();
    // Lent from the latched leaves; the visitor only decodes, matches and copies.
    exec.store
        .keys
        .scan_latched::<[u8], _, _>(.., Direction::Forward, |key, value| {
            let entry = decode_entry(value);
            if entry.is_live_at(now) && glob_match(pattern, key) {
                found.push(Reply::bulk(key.to_vec()));
            }
            std::ops::ControlFlow::Continue(())
        })?;
    Ok(Reply::Array(found))
}

/// Server-side SCAN positions: cursor number → last key visited. Bounded; the oldest
/// cursors are forgotten first (a forgotten cursor is an error, never a silent restart).
pub struct Cursors {
    next: u64,
    positions: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
}

const CURSORS_MAX: usize = 16 * 1024;

impl Cursors {
    pub fn new() -> Cursors {
        Cursors {
            next: 1,
            positions: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn remember(&mut self, position: Vec<u8>) -> u64 {
        if self.order.len() >= CURSORS_MAX
            && let Some(oldest) = self.order.pop_front()
        {
            self.positions.remove(&oldest);
        }
        let cursor = self.next;
        self.next += 1;
        self.positions.insert(cursor, position);
        self.order.push_back(cursor);
        cursor
    }

    /// The position of `cursor`: `Ok(None)` for 0 (start).
    fn position(&self, cursor: &[u8]) -> Result<Option<Vec<u8>>, CommandError> {
        let invalid = || CommandError::from(Reply::error("ERR invalid cursor"));
        let number = std::str::from_utf8(cursor)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(invalid)?;
        if number == 0 {
            return Ok(None);
        }
        self.positions
            .get(&number)
            .cloned()
            .map(Some)
            .ok_or_else(invalid)
    }
}

/// SCAN-family options.
pub struct ScanOptions {
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub kind: Option<Bytes>,
}

pub fn scan_options(args: &[Bytes], allow_type: bool) -> Result<ScanOptions, CommandError> {
    let mut options = ScanOptions {
        pattern: None,
        count: 10,
        kind: None,
    };
    let mut index = 0;
    while index < args.len() {
        let value = args.get(index + 1).ok_or_else(syntax_error)?;
        if eq_ignore_case(&args[index], "match") {
            options.pattern = Some(value.clone());
        } else if eq_ignore_case(&args[index], "count") {
            let count = parse_i64(value)?;
            if count < 1 {
                return Err(syntax_error());
            }
            options.count = (count as usize).min(1 << 20);
        } else if allow_type && eq_ignore_case(&args[index], "type") {
            options.kind = Some(value.clone());
        } else {
            return Err(syntax_error());
        }
        index += 2;
    }
    Ok(options)
}

/// One step of a scan over `tree` within `[lower, upper)`: visits up to `count` records
/// after the cursor's position and returns the next cursor (0 at the end) and the records
/// `keep` accepts.
pub fn scan_step(
    exec: &mut Exec,
    tree: Tree,
    cursor: &[u8],
    lower: &[u8],
    upper: &[u8],
    count: usize,
    mut keep: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<(u64, Vec<super::Record>), CommandError> {
    let position = exec.cursors.position(cursor)?;
    let start = match &position {
        Some(last) if last.as_slice() >= lower => Bound::Excluded(last.as_slice()),
        _ => Bound::Included(lower),
    };
    let end = if upper.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(upper)
    };
    let mut visited = 0;
    let mut last: Option<Vec<u8>> = None;
    let mut kept = Vec::new();
    // Lent records: only the kept ones and the last key are copied.
    let mut records = tree.cursor::<[u8], _>((start, end), Direction::Forward);
    while let Some((key, value)) = records.next_record()? {
        if keep(key, value) {
            kept.push((key.to_vec(), value.to_vec()));
        }
        visited += 1;
        let last = last.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(key);
        if visited == count {
            break;
        }
    }
    let more = visited == count && records.next_record()?.is_some();
    let next = match last {
        Some(last) if more => exec.cursors.remember(last),
        _ => 0,
    };
    Ok((next, kept))
}

pub fn scan(exec: &mut Exec, args: &[Bytes]) -> CommandResult {
    let options = scan_options(&args[2..], true)?;
    let now = now_ms();
    let tree = exec.store.keys.clone();
    let (next, kept) = scan_step(
        exec,
        tree,
        &args[1],
        &[],
        &[],
        options.count,
        |key, value| {
            let entry = decode_entry(value);
            let live = entry.is_live_at(now);
            let type_ok = options
                .kind
                .as_ref()
                .is_none_or(|kind| eq_ignore_case(kind, entry.kind.name()));
            let pattern_ok = options
                .pattern
                .as_ref()
                .is_none_or(|pattern| glob_match(pattern, key));
            live && type_ok && pattern_ok
        },
    )?;
    let keys = kept.into_iter().map(|(key, _)| Reply::bulk(key)).collect();
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(keys),
    ]))
}

/// Redis's glob: `*`, `?`, `[abc]`, `[^a-z]`, `\x`. Iterative with backtracking to the
/// last `*`, so its time is bounded by pattern length × text length.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t])
                        && matched
                    {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                literal => {
                    if literal == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// Matches `byte` against the class starting at `pattern[open] == '['`; returns whether it
/// matched and the index after the class.
fn class_match(pattern: &[u8], open: usize, byte: u8) -> Option<(bool, usize)> {
    let mut index = open + 1;
    let negate = pattern.get(index) == Some(&b'^');
    if negate {
        index += 1;
    }
    let mut matched = false;
    while index < pattern.len() && pattern[index] != b']' {
        if pattern[index] == b'\\' && index + 1 < pattern.len() {
            matched |= pattern[index + 1] == byte;
            index += 2;
        } else if index + 2 < pattern.len()
            && pattern[index + 1] == b'-'
            && pattern[index + 2] != b']'
        {
            let (low, high) = (
                pattern[index].min(pattern[index + 2]),
                pattern[index].max(pattern[index + 2]),
            );
            matched |= (low..=high).contains(&byte);
            index += 3;
        } else {
            matched |= pattern[index] == byte;
            index += 1;
        }
    }
    // An unclosed class ends at the pattern's end, as in Redis.
    Some((matched != negate, (index + 1).min(pattern.len())))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_redis() {
        let cases: [(&str, &str, bool); 12] = [
            ("*", "anything", true),
            ("key:*", "key:42", true),
            ("key:*", "kez:42", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("\\*x", "*x", true),
            ("", "", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
        }
    }
}
