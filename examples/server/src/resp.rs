//! The wire: parsing requests (RESP multibulk and inline) and encoding replies (RESP2, RESP3).
//!
//! Requests are only ever arrays of bulk strings or inline lines, so the parser is small
//! and written here: it must enforce Redis's limits with Redis's exact error strings, which
//! a general RESP crate does not do (see DESIGN.md). Replies are built as [`Reply`] values
//! and encoded per the connection's protocol version when written.

use bytes::{Buf, Bytes, BytesMut};

/// Limits the parser enforces; each violation is a protocol error that closes the client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string (`proto-max-bulk-len`).
    pub bulk_bytes_max: usize,
    /// Most elements in one multibulk request.
    pub multibulk_count_max: usize,
    /// Longest inline request line.
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            bulk_bytes_max: bufpool_engine::VALUE_SIZE_MAX,
            multibulk_count_max: 1024 * 1024,
            inline_bytes_max: 64 * 1024,
        }
    }
}

/// Why a request could not be parsed. The text is Redis's, after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedDollar(char),
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: too big mbulk count string")]
    CountTooLong,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: missing CRLF after bulk string")]
    MissingCrlf,
}

/// One parsed request: the command name and its arguments (an empty inline line yields
/// nothing and is skipped by the caller).
pub type Request = Vec<Bytes>;

/// Parses one request from the front of `buffer`. `Ok(None)`: incomplete, read more (the
/// buffer is untouched). On success the request's bytes are consumed.
pub fn parse(buffer: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    if buffer.is_empty() {
        return Ok(None);
    }
    if buffer[0] == b'*' {
        parse_multibulk(buffer, limits)
    } else {
        parse_inline(buffer, limits)
    }
}

/// The line at `start` (without CRLF) and the offset just past its `\n`.
fn line_at(buffer: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let end = start + memchr::memchr(b'\n', &buffer[start..])?;
    let line = &buffer[start..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, end + 1))
}

/// A count or length line: decimal, at most 19 digits, `-1` allowed only where noted.
fn parse_number(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse::<i64>().ok()
}

fn parse_multibulk(
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    let Some((line, mut offset)) = line_at(buffer, 1) else {
        if buffer.len() > limits.inline_bytes_max {
            return Err(ProtocolError::CountTooLong);
        }
        return Ok(None);
    };
    let count = parse_number(line).ok_or(ProtocolError::MultibulkLength)?;
    if count > limits.multibulk_count_max as i64 {
        return Err(ProtocolError::MultibulkLength);
    }
    if count <= 0 {
        // Redis treats `*0` and `*-1` as an empty request.
        buffer.advance(offset);
        return Ok(Some(Vec::new()));
    }
    // Bounds for the pass below: no allocation is sized by the client beyond the limits.
    let mut spans = Vec::with_capacity((count as usize).min(1024));
    for _ in 0..count {
        if offset >= buffer.len() {
            return Ok(None);
        }
        if buffer[offset] != b'$' {
            return Err(ProtocolError::ExpectedDollar(buffer[offset] as char));
        }
        let Some((line, data_start)) = line_at(buffer, offset + 1) else {
            if buffer.len() - offset > 32 {
                return Err(ProtocolError::BulkLength);
            }
            return Ok(None);
        };
        let length = parse_number(line).ok_or(ProtocolError::BulkLength)?;
        if length < 0 || length > limits.bulk_bytes_max as i64 {
            return Err(ProtocolError::BulkLength);
        }
        let data_end = data_start + length as usize;
        if buffer.len() < data_end + 2 {
            return Ok(None);
        }
        if &buffer[data_end..data_end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        spans.push((data_start, data_end));
        offset = data_end + 2;
    }
    let frame = buffer.split_to(offset).freeze();
    Ok(Some(
        spans
            .into_iter()
            .map(|(start, end)| frame.slice(start..end))
            .collect(),
    ))
}

fn parse_inline(buffer: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let Some((line, next)) = line_at(buffer, 0) else {
        if buffer.len() > limits.inline_bytes_max {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(None);
    };
    if line.len() > limits.inline_bytes_max {
        return Err(ProtocolError::InlineTooBig);
    }
    let arguments = split_inline(line)?;
    buffer.advance(next);
    Ok(Some(arguments))
}

/// Splits an inline line as Redis's `sdssplitargs` does: spaces separate, double quotes
/// allow `\n \r \t \b \a \\ \" \xHH`, single quotes allow `\'`.
fn split_inline(line: &[u8]) -> Result<Request, ProtocolError> {
    let mut arguments = Vec::new();
    let mut index = 0;
    while index < line.len() {
        while index < line.len() && line[index].is_ascii_whitespace() {
            index += 1;
        }
        if index == line.len() {
            break;
        }
        let mut current = Vec::new();
        match line[index] {
            b'"' => {
                index += 1;
                loop {
                    let Some(&byte) = line.get(index) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if byte == b'"' {
                        index += 1;
                        break;
                    }
                    if byte == b'\\' && index + 1 < line.len() {
                        let hex = line.get(index + 2..index + 4);
                        if line[index + 1] == b'x'
                            && let Some(value) = hex
                                .and_then(|digits| std::str::from_utf8(digits).ok())
                                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                        {
                            current.push(value);
                            index += 4;
                            continue;
                        }
                        current.push(match line[index + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        index += 2;
                        continue;
                    }
                    current.push(byte);
                    index += 1;
                }
                if index < line.len() && !line[index].is_ascii_whitespace() {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                index += 1;
                loop {
                    let Some(&byte) = line.get(index) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if byte == b'\'' {
                        index += 1;
                        break;
                    }
                    if byte == b'\\' && line.get(index + 1) == Some(&b'\'') {
                        current.push(b'\'');
                        index += 2;
                        continue;
                    }
                    current.push(byte);
                    index += 1;
                }
                if index < line.len() && !line[index].is_ascii_whitespace() {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while index < line.len() && !line[index].is_ascii_whitespace() {
                    current.push(line[index]);
                    index += 1;
                }
            }
        }
        arguments.push(Bytes::from(current));
    }
    Ok(arguments)
}

/// A reply, encoded per protocol version when written.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+text`.
    Status(String),
    /// `-text`: the text includes its code (`ERR ...`, `WRONGTYPE ...`).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Nil,
    /// RESP2 `*-1`, RESP3 `_`.
    NilArray,
    Array(Vec<Reply>),
    /// RESP3 `%`; RESP2 a flat array of keys and values.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`; RESP2 an array.
    Set(Vec<Reply>),
    /// Member-score pairs: RESP3 an array of 2-element arrays; RESP2 one flat array.
    Pairs(Vec<(Reply, Reply)>),
    /// RESP3 `,`; RESP2 a bulk string.
    Double(f64),
    /// RESP3 `=` with format `txt`; RESP2 a bulk string.
    Verbatim(String),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    /// Appends the reply's encoding for protocol `protocol` (2 or 3).
    pub fn encode(&self, protocol: u8, out: &mut Vec<u8>) {
        match self {
            Reply::Status(text) => push_line(out, b'+', text.as_bytes()),
            Reply::Error(text) => {
                // An error line must not contain CR or LF.
                let clean: String = text
                    .chars()
                    .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                    .collect();
                push_line(out, b'-', clean.as_bytes());
            }
            Reply::Integer(value) => push_line(out, b':', value.to_string().as_bytes()),
            Reply::Bulk(bytes) => push_bulk(out, bytes),
            Reply::Nil if protocol >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray if protocol >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                push_line(out, b'*', items.len().to_string().as_bytes());
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Reply::Set(items) => {
                let marker = if protocol >= 3 { b'~' } else { b'*' };
                push_line(out, marker, items.len().to_string().as_bytes());
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Reply::Pairs(pairs) => {
                // RESP2 flattens the pairs into one array.
                let count = if protocol >= 3 {
                    pairs.len()
                } else {
                    pairs.len() * 2
                };
                push_line(out, b'*', count.to_string().as_bytes());
                for (member, score) in pairs {
                    if protocol >= 3 {
                        out.extend_from_slice(b"*2\r\n");
                    }
                    member.encode(protocol, out);
                    score.encode(protocol, out);
                }
            }
            Reply::Map(pairs) => {
                if protocol >= 3 {
                    push_line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    push_line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
            Reply::Double(value) if protocol >= 3 => {
                push_line(out, b',', format_double(*value).as_bytes())
            }
            Reply::Double(value) => push_bulk(out, format_double(*value).as_bytes()),
            Reply::Verbatim(text) if protocol >= 3 => {
                push_line(out, b'=', (text.len() + 4).to_string().as_bytes());
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(text) => push_bulk(out, text.as_bytes()),
        }
    }
}

fn push_line(out: &mut Vec<u8>, marker: u8, text: &[u8]) {
    out.push(marker);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    push_line(out, b'$', bytes.len().to_string().as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A double as Redis prints it: integers without a fraction, `inf`/`-inf`, else the
/// shortest text that reads back to the same value.
pub fn format_double(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if value.fract() == 0.0 && value.abs() < 1e17 {
        return format!("{}", value as i64);
    }
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<Vec<Request>, ProtocolError> {
        let mut buffer = BytesMut::from(bytes);
        let mut requests = Vec::new();
        while let Some(request) = parse(&mut buffer, &Limits::default())? {
            requests.push(request);
        }
        Ok(requests)
    }

    #[test]
    fn multibulk_inline_and_pipelines() {
        let requests = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\nSET \"a b\" 'c'\r\n")
            .expect("valid input");
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0], vec![Bytes::from("GET"), Bytes::from("a")]);
        assert_eq!(requests[1], vec![Bytes::from("PING")]);
        assert_eq!(
            requests[2],
            vec![Bytes::from("SET"), Bytes::from("a b"), Bytes::from("c")]
        );
    }

    #[test]
    fn incomplete_input_waits_and_keeps_the_buffer() {
        let full = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for cut in 0..full.len() {
            let mut buffer = BytesMut::from(&full[..cut]);
            assert_eq!(
                parse(&mut buffer, &Limits::default()),
                Ok(None),
                "cut {cut}"
            );
            assert_eq!(&buffer[..], &full[..cut]);
        }
    }

    #[test]
    fn bad_lengths_are_redis_errors() {
        let cases: [(&[u8], ProtocolError); 5] = [
            (b"*x\r\n", ProtocolError::MultibulkLength),
            (b"*99999999\r\n", ProtocolError::MultibulkLength),
            (b"*1\r\n$-5\r\n", ProtocolError::BulkLength),
            (b"*1\r\n$2000000\r\n", ProtocolError::BulkLength),
            (b"*1\r\n:3\r\n", ProtocolError::ExpectedDollar(':')),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_all(input), Err(expected), "{input:?}");
        }
        assert_eq!(
            parse_all(b"*1\r\n$1\r\nabc\r\n"),
            Err(ProtocolError::MissingCrlf)
        );
        assert_eq!(
            parse_all(b"SET \"abc\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        let long = vec![b'a'; 70 * 1024];
        assert_eq!(parse_all(&long), Err(ProtocolError::InlineTooBig));
    }

    #[test]
    fn resp3_and_resp2_encodings() {
        let reply = Reply::Map(vec![(Reply::bulk("a"), Reply::Double(1.5))]);
        let mut two = Vec::new();
        reply.encode(2, &mut two);
        assert_eq!(two, b"*2\r\n$1\r\na\r\n$3\r\n1.5\r\n");
        let mut three = Vec::new();
        reply.encode(3, &mut three);
        assert_eq!(three, b"%1\r\n$1\r\na\r\n,1.5\r\n");
        let mut nil = Vec::new();
        Reply::Nil.encode(3, &mut nil);
        assert_eq!(nil, b"_\r\n");
    }

    /// Random and mutated frames never panic the parser, and it never consumes more than it
    /// was given (100,000 inputs).
    #[test]
    fn random_and_mutated_frames_never_panic() {
        use rand::rngs::SmallRng;
        use rand::{RngExt, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(0x5eed);
        let seeds: [&[u8]; 4] = [
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
            b"PING\r\n",
            b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n",
            b"SET \"a\\x41\" 'b\\'c'\r\n",
        ];
        let limits = Limits {
            bulk_bytes_max: 4096,
            multibulk_count_max: 64,
            inline_bytes_max: 256,
        };
        for round in 0..100_000u32 {
            let mut input: Vec<u8> = if round % 4 == 0 {
                (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
            } else {
                seeds[rng.random_range(0..seeds.len())].to_vec()
            };
            for _ in 0..rng.random_range(0..4) {
                if input.is_empty() {
                    break;
                }
                let at = rng.random_range(0..input.len());
                match rng.random_range(0..3) {
                    0 => input[at] = rng.random(),
                    1 => {
                        input.remove(at);
                    }
                    _ => input.insert(at, b"*$\r\n-09"[rng.random_range(0..7)]),
                }
            }
            let mut buffer = BytesMut::from(&input[..]);
            // Bounded: each successful parse consumes at least one byte.
            for _ in 0..=input.len() {
                let before = buffer.len();
                match parse(&mut buffer, &limits) {
                    Ok(Some(_)) => assert!(buffer.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
