//! The shell's words: how keys and values with spaces or any bytes are written on one line.
//!
//! A line is words separated by spaces or tabs. A word is either bare (no space, tab or `"`)
//! or quoted (`"..."`, which may hold spaces). In both, a backslash escapes: `\\`, `\"`, `\n`,
//! `\t`, `\r`, `\0` and `\xHH` (any byte, two hex digits). Any other byte stands for itself,
//! so a bare word may carry raw UTF-8.
//!
//! Output quotes every key and value (as redis-cli does): `"` + printable ASCII as is (space
//! included), `\\`, `\"`, `\n`, `\t`, `\r`, every other byte as `\xHH` + `"`. A quoted output
//! word is valid input and decodes to the same bytes, and it can never be mistaken for one of
//! the bare result words (`OK`, `(nil)`, `END`, `ERR`).

/// Splits `line` into words, decoding quotes and escapes.
pub fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        while at < line.len() && is_blank(line[at]) {
            at += 1;
        }
        if at == line.len() {
            return Ok(words);
        }
        let (word, next) = if line[at] == b'"' {
            quoted_word(line, at + 1)?
        } else {
            bare_word(line, at)?
        };
        words.push(word);
        at = next;
    }
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// A bare word from `start`; returns it and the index just past it.
fn bare_word(line: &[u8], start: usize) -> Result<(Vec<u8>, usize), String> {
    let mut word = Vec::new();
    let mut at = start;
    while at < line.len() && !is_blank(line[at]) {
        match line[at] {
            b'"' => {
                return Err(format!(
                    "unexpected `\"` inside the word starting at column {}: quote the whole word",
                    start + 1
                ));
            }
            b'\\' => at = escape(line, at, &mut word)?,
            byte => {
                word.push(byte);
                at += 1;
            }
        }
    }
    Ok((word, at))
}

/// A quoted word whose opening quote is just before `start`.
fn quoted_word(line: &[u8], start: usize) -> Result<(Vec<u8>, usize), String> {
    let mut word = Vec::new();
    let mut at = start;
    loop {
        match line.get(at) {
            None => return Err(format!("unterminated quote at column {start}")),
            Some(b'"') => {
                at += 1;
                if at < line.len() && !is_blank(line[at]) {
                    return Err(format!(
                        "a closing `\"` must end the word (column {})",
                        at + 1
                    ));
                }
                return Ok((word, at));
            }
            Some(b'\\') => at = escape(line, at, &mut word)?,
            Some(&byte) => {
                word.push(byte);
                at += 1;
            }
        }
    }
}

/// Decodes the escape whose backslash is at `at` into `word`; returns the index past it.
fn escape(line: &[u8], at: usize, word: &mut Vec<u8>) -> Result<usize, String> {
    let column = at + 1;
    let Some(&kind) = line.get(at + 1) else {
        return Err(format!("a lone `\\` ends the line (column {column})"));
    };
    let byte = match kind {
        b'\\' => b'\\',
        b'"' => b'"',
        b'n' => b'\n',
        b't' => b'\t',
        b'r' => b'\r',
        b'0' => 0,
        b'x' => {
            let digits = line
                .get(at + 2..at + 4)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok());
            let Some(byte) = digits else {
                return Err(format!("`\\x` needs two hex digits (column {column})"));
            };
            word.push(byte);
            return Ok(at + 4);
        }
        other => {
            return Err(format!(
                "unknown escape `\\{}` (column {column}); use \\\\ \\\" \\n \\t \\r \\0 \\xHH",
                other.escape_ascii()
            ));
        }
    };
    word.push(byte);
    Ok(at + 2)
}

/// The quoted form of `bytes`, which `split_words` reads back as the same bytes.
pub fn quote(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() + 2);
    text.push('"');
    for &byte in bytes {
        match byte {
            b'\\' => text.push_str("\\\\"),
            b'"' => text.push_str("\\\""),
            b'\n' => text.push_str("\\n"),
            b'\t' => text.push_str("\\t"),
            b'\r' => text.push_str("\\r"),
            b' '..=b'~' => text.push(char::from(byte)),
            other => text.push_str(&format!("\\x{other:02x}")),
        }
    }
    text.push('"');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<u8>> {
        split_words(line.as_bytes()).unwrap()
    }

    #[test]
    fn bare_and_quoted_words() {
        assert_eq!(
            words("  put  a\tb  "),
            [b"put".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            words(r#"put "two words" "a \"q\" \\ \x00\xff""#),
            [
                b"put".to_vec(),
                b"two words".to_vec(),
                b"a \"q\" \\ \x00\xff".to_vec()
            ]
        );
        assert_eq!(words(r#"get """#), [b"get".to_vec(), Vec::new()]);
        assert_eq!(words(r"get a\x20b\n"), [b"get".to_vec(), b"a b\n".to_vec()]);
        assert!(words("").is_empty());
    }

    #[test]
    fn malformed_words_are_errors() {
        for bad in [
            r#"put "open"#,
            r#"put "a"b"#,
            r#"put a"b"#,
            r"put a\",
            r"put a\q",
            r"put \x4",
            r"put \xzz",
        ] {
            assert!(split_words(bad.as_bytes()).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn every_byte_round_trips_through_quote() {
        let all: Vec<u8> = (0..=255).collect();
        for bytes in [all.as_slice(), b"", b"plain", b"with space", b"\"\\"] {
            let quoted = quote(bytes);
            assert!(!quoted.contains('\n'), "{quoted}");
            assert_eq!(split_words(quoted.as_bytes()).unwrap(), [bytes.to_vec()]);
        }
        assert_eq!(quote(b"a b\x01\xff"), r#""a b\x01\xff""#);
    }
}
