//! `kv get|put|delete|scan`: the store for a person at a shell, on a bufpool database.
//!
//! Keys and values are taken as UTF-8 text (or hex with `--hex`) and printed with non-printable
//! bytes escaped (or as hex). A missing key is an error (exit 1), so scripts can test for it.

use std::path::PathBuf;

use crate::error::KvError;

/// Where the records live.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// The database file.
    #[arg(long)]
    pub db: PathBuf,
    /// The named tree (the demo and the bench load `data`).
    #[arg(long, default_value = "data")]
    pub tree: String,
    /// Buffer pool size in MiB.
    #[arg(long, default_value_t = 64)]
    pub pool_mb: u64,
    /// Keys and values are hex on the command line and in the output.
    #[arg(long)]
    pub hex: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub db: DbArgs,
    pub key: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Create the database if it does not exist.
    #[arg(long)]
    pub create: bool,
    pub key: String,
    /// The value; `-` reads it from stdin (for values too large or too binary for argv).
    pub value: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub db: DbArgs,
    pub key: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// First key (inclusive); default: the smallest.
    #[arg(long)]
    pub start: Option<String>,
    /// Last key (exclusive); default: past the largest.
    #[arg(long)]
    pub end: Option<String>,
    /// Largest key first.
    #[arg(long)]
    pub reverse: bool,
    /// At most this many records.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// Decodes a command-line key or value.
pub fn parse_bytes(text: &str, hex: bool) -> Result<Vec<u8>, KvError> {
    if !hex {
        return Ok(text.as_bytes().to_vec());
    }
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(KvError::InvalidArgument(format!(
            "`{text}` is not hex: odd number of digits"
        )));
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(pair, 16)
                .map_err(|_| KvError::InvalidArgument(format!("`{text}` is not hex")))
        })
        .collect()
}

/// Encodes bytes for output.
pub fn show_bytes(bytes: &[u8], hex: bool) -> String {
    if hex {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    } else {
        bytes.escape_ascii().to_string()
    }
}

pub use commands::{delete, get, put, scan};

/// The commands themselves, on the engine.
/// Refuses a key longer than the engine takes, before the database is touched.
pub fn check_key(key: &[u8]) -> Result<(), KvError> {
    let max = bufpool_engine::KEY_SIZE_MAX;
    if key.len() > max {
        return Err(KvError::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    Ok(())
}

mod commands {
    use std::io::{Read, Write};
    use std::ops::Bound;

    use super::{
        DbArgs, DeleteArgs, GetArgs, PutArgs, ScanArgs, check_key, parse_bytes, show_bytes,
    };
    use crate::error::KvError;

    fn check_value(value: &[u8]) -> Result<(), KvError> {
        let max = bufpool_engine::VALUE_SIZE_MAX;
        if value.len() > max {
            return Err(KvError::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        Ok(())
    }

    /// Reads a value from stdin, at most one byte past the limit (enough to reject it).
    fn read_stdin_value() -> Result<Vec<u8>, KvError> {
        let limit = bufpool_engine::VALUE_SIZE_MAX as u64 + 1;
        let mut value = Vec::new();
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut value)
            .map_err(|error| KvError::io("read the value from stdin", error))?;
        Ok(value)
    }

    fn open(args: &DbArgs, create: bool) -> Result<bufpool_engine::Engine, KvError> {
        let options = bufpool_engine::EngineOptions {
            pool_bytes: args.pool_mb << 20,
            ..Default::default()
        };
        if create {
            return Ok(bufpool_engine::Engine::open_or_create(&args.db, options)?);
        }
        if !args.db.exists() {
            return Err(KvError::DatabaseMissing {
                path: args.db.clone(),
            });
        }
        Ok(bufpool_engine::Engine::open(&args.db, options)?)
    }

    /// The tree if it exists (reads must not create it).
    fn existing_tree(
        engine: &bufpool_engine::Engine,
        name: &str,
    ) -> Result<Option<bufpool_engine::Tree>, KvError> {
        if engine.tree_names()?.iter().any(|existing| existing == name) {
            return Ok(Some(engine.tree(name)?));
        }
        Ok(None)
    }

    fn not_found(key: &[u8], hex: bool) -> KvError {
        KvError::NotFound {
            key: show_bytes(key, hex),
        }
    }

    pub fn get(args: &GetArgs) -> Result<(), KvError> {
        let key = parse_bytes(&args.key, args.db.hex)?;
        check_key(&key)?;
        let engine = open(&args.db, false)?;
        let value = match existing_tree(&engine, &args.db.tree)? {
            Some(tree) => tree.get(&key)?,
            None => None,
        };
        // Reads leave the file as it was: no close, whose checkpoint writes a new superblock.
        drop(engine);
        let value = value.ok_or_else(|| not_found(&key, args.db.hex))?;
        println!("{}", show_bytes(&value, args.db.hex));
        Ok(())
    }

    pub fn put(args: &PutArgs) -> Result<(), KvError> {
        let key = parse_bytes(&args.key, args.db.hex)?;
        let value = if args.value == "-" {
            read_stdin_value()?
        } else {
            parse_bytes(&args.value, args.db.hex)?
        };
        check_key(&key)?;
        check_value(&value)?;
        let engine = open(&args.db, args.create)?;
        engine.tree(&args.db.tree)?.put(&key, &value)?;
        engine.close()?;
        Ok(())
    }

    pub fn delete(args: &DeleteArgs) -> Result<(), KvError> {
        let key = parse_bytes(&args.key, args.db.hex)?;
        check_key(&key)?;
        let engine = open(&args.db, false)?;
        let deleted = match existing_tree(&engine, &args.db.tree)? {
            Some(tree) => tree.delete(&key)?,
            None => false,
        };
        engine.close()?;
        if !deleted {
            return Err(not_found(&key, args.db.hex));
        }
        Ok(())
    }

    pub fn scan(args: &ScanArgs) -> Result<(), KvError> {
        let hex = args.db.hex;
        let start = args
            .start
            .as_deref()
            .map(|text| parse_bytes(text, hex))
            .transpose()?;
        let end = args
            .end
            .as_deref()
            .map(|text| parse_bytes(text, hex))
            .transpose()?;
        let engine = open(&args.db, false)?;
        if let Some(tree) = existing_tree(&engine, &args.db.tree)? {
            let bounds = (
                start.as_deref().map_or(Bound::Unbounded, Bound::Included),
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            );
            let direction = if args.reverse {
                bufpool_engine::Direction::Reverse
            } else {
                bufpool_engine::Direction::Forward
            };
            let limit = args.limit.unwrap_or(u64::MAX);
            let mut out = std::io::stdout().lock();
            for entry in tree
                .range::<[u8], _>(bounds, direction)
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
            {
                let (key, value) = entry?;
                writeln!(
                    out,
                    "{}\t{}",
                    show_bytes(&key, hex),
                    show_bytes(&value, hex)
                )
                .map_err(|error| KvError::io("write to stdout", error))?;
            }
        }
        drop(engine);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let bytes = parse_bytes("00ff10", true).unwrap();
        assert_eq!(bytes, [0, 255, 16]);
        assert_eq!(show_bytes(&bytes, true), "00ff10");
        assert!(parse_bytes("0", true).is_err());
        assert!(parse_bytes("zz", true).is_err());
        assert_eq!(parse_bytes("zz", false).unwrap(), b"zz");
    }

    #[test]
    fn text_output_escapes_control_bytes() {
        assert_eq!(show_bytes(b"a\tb\x01", false), "a\\tb\\x01");
    }
}
