//! `kv shell`: a line-oriented session on one database, for scripts and for people.
//!
//! Reads one command per line from standard input and answers each with one result line on
//! standard output (a `scan` answers with its records, then one closing line), flushed at
//! once, so a script can drive the shell through a pipe one command at a time. The protocol
//! is [`PROTOCOL_HELP`] (also `kv shell --help`); the quoting is in [`syntax`].
//!
//! On a terminal (stdin and stdout both), lines are read with rustyline: a prompt, line
//! editing and history (`--history FILE` keeps it across sessions). Piped, nothing but result
//! lines is printed. End of input or `quit` closes the engine cleanly (a checkpoint).

mod syntax;

use crate::shell::check_key;

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::ops::Bound;
use std::path::PathBuf;

use bufpool_engine::{Direction, Durability, Engine, EngineOptions, Tree};

use crate::error::{KvError, one_line};

/// The protocol, as `kv shell --help` prints it (README repeats it).
pub const PROTOCOL_HELP: &str = "\
Commands, one per line (names are case-insensitive; blank lines and lines starting with # are
skipped without an answer):
  put KEY VALUE      insert or replace                        -> OK
  get KEY            the value                                -> \"VALUE\" or (nil)
  delete KEY         remove                                   -> OK, or (nil) if it was absent
  scan START [LIMIT] records with key >= START, LIMIT (default 100) at most
                     -> one \"KEY\" \"VALUE\" line per record, then END
  checkpoint         write every dirty page back and sync     -> OK
  quit               checkpoint, close and exit (so does end of input) -> OK
  help               this list on one line
Any failure answers ERR REASON on one line and the session goes on (a scan that fails midway
ends with ERR instead of END). Every command gets exactly one result line, except scan, whose
record lines always start with a quote, so END or ERR closes it unambiguously.

Keys and values: bare words, or \"quoted\" to hold spaces. Escapes, in both: \\\\ \\\" \\n \\t \\r \\0
and \\xHH (any byte). Output always quotes keys and values with the same escapes (printable
ASCII as is, every other byte as \\xHH), so every answer can be pasted back as input.

A write's OK comes once the write is as durable as --durability promises: immediate (the
default) after the log's fdatasync covering it; periodic[:MS] once in the log buffer, synced in
the background at least every MS (1000) ms; none at the next checkpoint.";

/// The one-line `help` answer.
const HELP_LINE: &str = "commands: put KEY VALUE | get KEY | delete KEY | scan START [LIMIT] \
                         | checkpoint | quit | help; words bare or \"quoted\", escapes \\\\ \\\" \
                         \\n \\t \\r \\0 \\xHH; see kv shell --help";

/// Records a `scan` returns when no LIMIT is given.
pub const SCAN_LIMIT_DEFAULT: u64 = 100;

/// The longest input line: the largest key and value, every byte as a 4-byte `\xHH`.
const LINE_BYTES_MAX: usize =
    4 * (bufpool_engine::KEY_SIZE_MAX + bufpool_engine::VALUE_SIZE_MAX) + 64;

const PROMPT: &str = "kv> ";

#[derive(Debug, Clone, clap::Args)]
pub struct ShellArgs {
    /// The database file.
    #[arg(long)]
    pub db: PathBuf,
    /// Create the database if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// What a write's OK promises: immediate (synced), periodic[:MS] or none.
    #[arg(long, default_value = "immediate", value_parser = parse_durability)]
    pub durability: Durability,
    /// Buffer pool size in MiB.
    #[arg(long, default_value_t = 64)]
    pub pool_mb: u64,
    /// The named tree (the demo and the bench load `data`).
    #[arg(long, default_value = "data")]
    pub tree: String,
    /// On a terminal, keep the line history in this file.
    #[arg(long)]
    pub history: Option<PathBuf>,
}

/// `--durability` for clap: `Durability::parse`'s names.
pub fn parse_durability(text: &str) -> Result<Durability, String> {
    Durability::parse(text).ok_or_else(|| {
        format!("`{text}` is not a durability: use immediate, periodic, periodic:MS or none")
    })
}

/// Runs the session until `quit` or end of input.
pub fn run(args: &ShellArgs) -> Result<(), KvError> {
    let engine = open(args)?;
    let mut session = Session::new(engine, &args.tree)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let ended = if interactive {
        session.interactive(&mut out, args.history.as_deref())
    } else {
        session.piped(&mut std::io::stdin().lock(), &mut out)
    };
    // Close even after a failed write to stdout: the database must not be left unclean.
    let closed = session.close();
    let ended = ended.map_err(|error| KvError::io("read commands or write results", error))?;
    match (ended, closed) {
        (Ended::Quit, Err(error)) => {
            // The quit command's result, then the one-line error and exit 1 as for any failure.
            let _ = writeln!(out, "ERR {}", one_line(&error)).and_then(|()| out.flush());
            Err(error)
        }
        (Ended::EndOfInput, Err(error)) => Err(error),
        (Ended::Quit, Ok(())) => writeln!(out, "OK")
            .and_then(|()| out.flush())
            .map_err(|error| KvError::io("write to stdout", error)),
        (Ended::EndOfInput, Ok(())) => Ok(()),
    }
}

fn open(args: &ShellArgs) -> Result<Engine, KvError> {
    let options = EngineOptions {
        pool_bytes: args.pool_mb << 20,
        durability: args.durability,
        ..EngineOptions::default()
    };
    if args.create {
        return Ok(Engine::open_or_create(&args.db, options)?);
    }
    if !args.db.exists() {
        return Err(KvError::DatabaseMissing {
            path: args.db.clone(),
        });
    }
    Ok(Engine::open(&args.db, options)?)
}

/// How the input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Quit,
    EndOfInput,
}

/// What a command asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Quit,
}

/// One read of a line from a pipe.
enum LineRead {
    Line,
    TooLong,
    EndOfInput,
}

struct Session {
    engine: Engine,
    tree_name: String,
    /// The tree, once it exists: reads never create it, the first write does.
    tree: Option<Tree>,
}

impl Session {
    fn new(engine: Engine, tree_name: &str) -> Result<Session, KvError> {
        let exists = engine.tree_names()?.iter().any(|name| name == tree_name);
        let tree = if exists {
            Some(engine.tree(tree_name)?)
        } else {
            None
        };
        Ok(Session {
            engine,
            tree_name: tree_name.to_string(),
            tree,
        })
    }

    fn close(self) -> Result<(), KvError> {
        let Session { engine, tree, .. } = self;
        drop(tree);
        Ok(engine.close()?)
    }

    fn piped(&mut self, input: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<Ended> {
        let mut line = Vec::new();
        loop {
            match read_line(input, &mut line)? {
                LineRead::EndOfInput => return Ok(Ended::EndOfInput),
                LineRead::TooLong => {
                    writeln!(out, "ERR line longer than {LINE_BYTES_MAX} bytes")?;
                    out.flush()?;
                }
                LineRead::Line => {
                    if self.execute(&line, out)? == Next::Quit {
                        return Ok(Ended::Quit);
                    }
                }
            }
        }
    }

    fn interactive(
        &mut self,
        out: &mut impl Write,
        history: Option<&std::path::Path>,
    ) -> std::io::Result<Ended> {
        use rustyline::error::ReadlineError;
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(editor) => editor,
            Err(error) => {
                // No usable terminal after all: read it as a pipe.
                eprintln!("kv: line editing unavailable ({error}); reading plain lines");
                return self.piped(&mut std::io::stdin().lock(), out);
            }
        };
        if let Some(path) = history {
            if path.exists() {
                if let Err(error) = editor.load_history(path) {
                    eprintln!("kv: could not read the history {}: {error}", path.display());
                }
            }
        }
        let ended = loop {
            match editor.readline(PROMPT) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if self.execute(line.as_bytes(), out)? == Next::Quit {
                        break Ended::Quit;
                    }
                }
                // Ctrl-C drops the line being typed, as in a shell.
                Err(ReadlineError::Interrupted) => {}
                Err(ReadlineError::Eof) => break Ended::EndOfInput,
                Err(ReadlineError::Io(error)) => return Err(error),
                Err(error) => return Err(std::io::Error::other(error)),
            }
        };
        if let Some(path) = history {
            if let Err(error) = editor.save_history(path) {
                eprintln!("kv: could not save the history {}: {error}", path.display());
            }
        }
        Ok(ended)
    }

    /// Runs one line and writes its result; only an error writing `out` is returned.
    fn execute(&mut self, line: &[u8], out: &mut impl Write) -> std::io::Result<Next> {
        let text_start = line.iter().position(|&byte| byte != b' ' && byte != b'\t');
        match text_start.map(|start| line[start]) {
            None | Some(b'#') => return Ok(Next::Continue), // blank or a comment: no answer
            Some(_) => {}
        }
        let next = match syntax::split_words(line) {
            Err(reason) => {
                writeln!(out, "ERR {reason}")?;
                Next::Continue
            }
            Ok(words) => self.command(&words, out)?,
        };
        out.flush()?;
        Ok(next)
    }

    fn command(&mut self, words: &[Vec<u8>], out: &mut impl Write) -> std::io::Result<Next> {
        let name = words[0].to_ascii_lowercase();
        let args = &words[1..];
        let result = match (name.as_slice(), args) {
            (b"put", [key, value]) => self.put(key, value).map(|()| "OK".to_string()),
            (b"get", [key]) => self.get(key),
            (b"delete", [key]) => self.delete(key),
            (b"scan", [start]) => return self.scan(start, SCAN_LIMIT_DEFAULT, out),
            (b"scan", [start, limit]) => match parse_limit(limit) {
                Ok(limit) => return self.scan(start, limit, out),
                Err(error) => Err(error),
            },
            (b"checkpoint", []) => self
                .engine
                .checkpoint()
                .map(|()| "OK".to_string())
                .map_err(KvError::from),
            (b"quit", []) => return Ok(Next::Quit),
            (b"help", _) => Ok(HELP_LINE.to_string()),
            (b"put" | b"get" | b"delete" | b"scan" | b"checkpoint" | b"quit", _) => {
                Err(KvError::InvalidArgument(format!("usage: {}", usage(&name))))
            }
            _ => Err(KvError::InvalidArgument(format!(
                "unknown command {}; try help",
                syntax::quote(&words[0])
            ))),
        };
        match result {
            Ok(answer) => writeln!(out, "{answer}")?,
            Err(error) => writeln!(out, "ERR {}", one_line(&error))?,
        }
        Ok(Next::Continue)
    }

    fn write_tree(&mut self) -> Result<&Tree, KvError> {
        if self.tree.is_none() {
            self.tree = Some(self.engine.tree(&self.tree_name)?);
        }
        Ok(self.tree.as_ref().expect("just set"))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > bufpool_engine::VALUE_SIZE_MAX {
            return Err(KvError::ValueTooLarge {
                len: value.len(),
                max: bufpool_engine::VALUE_SIZE_MAX,
            });
        }
        // Under `Durability::Immediate` this returns after the sync that covers the write.
        Ok(self.write_tree()?.put(key, value)?)
    }

    fn get(&self, key: &[u8]) -> Result<String, KvError> {
        check_key(key)?;
        let found = match &self.tree {
            Some(tree) => tree.get(key)?,
            None => None,
        };
        Ok(found.map_or_else(|| "(nil)".to_string(), |value| syntax::quote(&value)))
    }

    fn delete(&mut self, key: &[u8]) -> Result<String, KvError> {
        check_key(key)?;
        let Some(tree) = &self.tree else {
            return Ok("(nil)".into());
        };
        let removed = tree.delete(key)?;
        Ok(if removed { "OK" } else { "(nil)" }.into())
    }

    fn scan(&self, start: &[u8], limit: u64, out: &mut impl Write) -> std::io::Result<Next> {
        if let Err(error) = check_key(start) {
            writeln!(out, "ERR {}", one_line(&error))?;
            return Ok(Next::Continue);
        }
        if let Some(tree) = &self.tree {
            let bounds = (Bound::Included(start), Bound::Unbounded);
            let take = usize::try_from(limit).unwrap_or(usize::MAX);
            for entry in tree.range::<[u8], _>(bounds, Direction::Forward).take(take) {
                match entry {
                    Ok((key, value)) => {
                        writeln!(out, "{} {}", syntax::quote(&key), syntax::quote(&value))?;
                    }
                    Err(error) => {
                        writeln!(out, "ERR {}", one_line(&KvError::from(error)))?;
                        return Ok(Next::Continue);
                    }
                }
            }
        }
        writeln!(out, "END")?;
        Ok(Next::Continue)
    }
}

fn usage(name: &[u8]) -> &'static str {
    match name {
        b"put" => "put KEY VALUE",
        b"get" => "get KEY",
        b"delete" => "delete KEY",
        b"scan" => "scan START [LIMIT]",
        b"checkpoint" => "checkpoint (no arguments)",
        _ => "quit (no arguments)",
    }
}

fn parse_limit(word: &[u8]) -> Result<u64, KvError> {
    std::str::from_utf8(word)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| {
            KvError::InvalidArgument(format!(
                "LIMIT must be a whole number, not {}",
                syntax::quote(word)
            ))
        })
}

/// Reads one line (without its `\n` or `\r\n`) of at most `LINE_BYTES_MAX` into `line`; a
/// longer one is skipped to its end and reported as `TooLong`.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<LineRead> {
    use std::io::Read;
    line.clear();
    let limit = LINE_BYTES_MAX as u64 + 1;
    let read = input.by_ref().take(limit).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(LineRead::EndOfInput);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(LineRead::Line);
    }
    if line.len() <= LINE_BYTES_MAX {
        return Ok(LineRead::Line); // the last line, without a newline
    }
    // Skip the rest of the long line. Bounded: each round consumes at least one byte.
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(LineRead::TooLong);
        }
        match buffer.iter().position(|&byte| byte == b'\n') {
            Some(end) => {
                input.consume(end + 1);
                return Ok(LineRead::TooLong);
            }
            None => {
                let all = buffer.len();
                input.consume(all);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_skipped() {
        let long = vec![b'x'; LINE_BYTES_MAX + 10];
        let mut input = Vec::new();
        input.extend_from_slice(b"one\r\n");
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\ntwo\nlast");
        let mut reader = std::io::BufReader::new(input.as_slice());
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            LineRead::Line
        ));
        assert_eq!(line, b"one");
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            LineRead::TooLong
        ));
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            LineRead::Line
        ));
        assert_eq!(line, b"two");
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            LineRead::Line
        ));
        assert_eq!(line, b"last");
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            LineRead::EndOfInput
        ));
    }

    #[test]
    fn durability_names_parse() {
        assert_eq!(parse_durability("immediate"), Ok(Durability::Immediate));
        assert_eq!(parse_durability("none"), Ok(Durability::None));
        assert!(parse_durability("sometimes").is_err());
    }
}
