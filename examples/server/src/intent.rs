//! Commands that write several records, made atomic across a crash without engine
//! transactions.
//!
//! While a command runs, the store does not write: it records each write as an idempotent
//! [`Op`] in a [`Plan`] (reads inside the command see the plan first). After the command, a
//! plan of one op is applied as is; a plan of more is first written as one *intent* (the
//! encoded ops, in `sys` under `intent:`), then applied, then the intent is deleted. The log
//! replays a prefix of the writes, in order, and only the executor writes records, so after
//! a crash either no op of the command survived (nor its intent, or only part of it, which
//! is discarded) or the whole intent did: the next start redoes its ops (idempotent) and
//! deletes it. A command is never seen half-applied after a restart.

use std::collections::HashMap;

/// Tree numbers in an encoded op (`Store::tree_by_number`).
pub type TreeNumber = u8;

/// One write of a command, safe to apply again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(TreeNumber, Vec<u8>, Vec<u8>),
    Delete(TreeNumber, Vec<u8>),
}

/// The writes a running command has made so far, and the values they left.
#[derive(Debug, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Latest planned value per (tree, key): `None` = deleted.
    view: HashMap<(TreeNumber, Vec<u8>), Option<Vec<u8>>>,
}

impl Plan {
    pub fn put(&mut self, tree: TreeNumber, key: &[u8], value: &[u8]) {
        self.view.insert((tree, key.to_vec()), Some(value.to_vec()));
        self.ops.push(Op::Put(tree, key.to_vec(), value.to_vec()));
    }

    pub fn delete(&mut self, tree: TreeNumber, key: &[u8]) {
        self.view.insert((tree, key.to_vec()), None);
        self.ops.push(Op::Delete(tree, key.to_vec()));
    }

    /// What the plan says about `key`: `None` if it does not touch it, `Some(None)` if it
    /// deletes it.
    pub fn lookup(&self, tree: TreeNumber, key: &[u8]) -> Option<Option<&[u8]>> {
        if self.view.is_empty() {
            return None;
        }
        self.view
            .get(&(tree, key.to_vec()))
            .map(|value| value.as_deref())
    }
}

/// `sys` keys of an intent: `intent:` ++ chunk number (u32 BE).
pub const INTENT_PREFIX: &[u8] = b"intent:";
/// Bytes of encoded ops per intent record (an intent above it is split into chunks).
pub const CHUNK_BYTES: usize = 512 * 1024;

pub fn chunk_key(number: u32) -> Vec<u8> {
    [INTENT_PREFIX, &number.to_be_bytes()].concat()
}

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// `[kind u8][tree u8][key len u32 BE][key]` and for a put `[value len u32 BE][value]`.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for op in ops {
        let (kind, tree, key, value) = match op {
            Op::Put(tree, key, value) => (PUT, tree, key, Some(value)),
            Op::Delete(tree, key) => (DELETE, tree, key, None),
        };
        bytes.push(kind);
        bytes.push(*tree);
        bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
        bytes.extend_from_slice(key);
        if let Some(value) = value {
            bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
            bytes.extend_from_slice(value);
        }
    }
    bytes
}

/// The ops of an encoded intent; `None` if it is damaged.
pub fn decode(mut bytes: &[u8]) -> Option<Vec<Op>> {
    fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(len)?;
        *bytes = rest;
        Some(head)
    }
    fn take_len(bytes: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?) as usize)
    }
    let mut ops = Vec::new();
    // Bounded: each round consumes at least 6 bytes.
    while !bytes.is_empty() {
        let header = take(&mut bytes, 2)?;
        let (kind, tree) = (header[0], header[1]);
        let key_len = take_len(&mut bytes)?;
        let key = take(&mut bytes, key_len)?.to_vec();
        ops.push(match kind {
            PUT => {
                let value_len = take_len(&mut bytes)?;
                Op::Put(tree, key, take(&mut bytes, value_len)?.to_vec())
            }
            DELETE => Op::Delete(tree, key),
            _ => return None,
        });
    }
    Some(ops)
}

/// Splits an encoded intent into the values of its chunk records, chunk 0 first. Chunk 0
/// starts with the chunk count (u32 BE), so a start can tell a complete intent.
pub fn chunks(encoded: &[u8]) -> Vec<Vec<u8>> {
    let parts: Vec<&[u8]> = if encoded.is_empty() {
        vec![&[][..]]
    } else {
        encoded.chunks(CHUNK_BYTES).collect()
    };
    let count = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            if index == 0 {
                [&count.to_be_bytes()[..], part].concat()
            } else {
                part.to_vec()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = vec![
            Op::Put(0, b"key".to_vec(), b"value".to_vec()),
            Op::Delete(3, vec![0, 1, 2]),
            Op::Put(7, Vec::new(), Vec::new()),
        ];
        assert_eq!(decode(&encode(&ops)), Some(ops.clone()));
        let encoded = encode(&ops);
        assert_eq!(decode(&encoded[..encoded.len() - 1]), None);
    }

    #[test]
    fn large_intents_split_into_chunks() {
        let ops = vec![Op::Put(0, b"k".to_vec(), vec![7; CHUNK_BYTES * 2])];
        let encoded = encode(&ops);
        let parts = chunks(&encoded);
        assert_eq!(parts.len(), 3);
        assert_eq!(u32::from_be_bytes(parts[0][..4].try_into().unwrap()), 3);
        let joined: Vec<u8> = [&parts[0][4..], &parts[1][..], &parts[2][..]].concat();
        assert_eq!(joined, encoded);
    }

    #[test]
    fn the_plan_answers_for_what_it_wrote() {
        let mut plan = Plan::default();
        assert_eq!(plan.lookup(1, b"a"), None);
        plan.put(1, b"a", b"x");
        plan.delete(1, b"b");
        assert_eq!(plan.lookup(1, b"a"), Some(Some(&b"x"[..])));
        assert_eq!(plan.lookup(1, b"b"), Some(None));
        assert_eq!(plan.lookup(2, b"a"), None);
        assert_eq!(plan.ops.len(), 2);
    }
}
