//! Export demo: `cargo run --release -p bufpool --example export_reader`.
//!
//! The pool process (memfd backing) fills a small file, starts a second process (itself, with
//! `--child`), and hands it the export over a Unix socket (SCM_RIGHTS). The child maps the
//! frames and the page-state table read-only and reads pages zero-copy with validated
//! optimistic reads while the parent keeps writing pages and evicting (budget: a quarter of
//! the data). Pages the child finds evicted are requested back through the socket.

#[path = "shared/channel.rs"]
mod channel;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bufpool::{Backing, Config, ExportedView, PAGE_SIZE, PageId, Pool, ViewError};
use bufpool_io::{DirectFile, OpenOptions};

const PAGE_COUNT: u64 = 4096;
const RUN_TIME: Duration = Duration::from_secs(2);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().collect();
    match arguments.get(1).map(String::as_str) {
        Some("--child") => child(PathBuf::from(&arguments[2])),
        _ => parent(),
    }
}

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/export-demo");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("data.db");
    let _ = std::fs::remove_file(&path);
    let file = DirectFile::open(
        &path,
        &OpenOptions {
            create: true,
            ..OpenOptions::default()
        },
    )?;
    let config = Config {
        page_count_max: PAGE_COUNT,
        frame_budget_bytes: PAGE_COUNT / 4 * PAGE_SIZE as u64,
        backing: Backing::Memfd,
        ..Config::default()
    };
    let pool = Pool::open(file, config)?;
    for page in 0..PAGE_COUNT {
        let mut guard = pool.allocate()?;
        guard[..8].copy_from_slice(&page.to_le_bytes());
    }

    let socket = dir.join("export.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    let child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&socket)
        .stdout(Stdio::inherit())
        .spawn()?;
    let stream = channel::send_export(&listener, &pool.export()?, pool.page_count())?;
    println!(
        "parent: sent the export (2 read-only fds) to process {}",
        child.id()
    );

    std::thread::scope(|scope| -> Result<(), bufpool::PoolError> {
        let served = scope.spawn(|| channel::serve_fault_ins(stream, &pool));
        let deadline = Instant::now() + RUN_TIME;
        let mut writes = 0u64;
        while Instant::now() < deadline {
            // Bump a counter at offset 8 of pages all over the file: faults in, dirties, evicts.
            let page = PageId(writes * 7919 % PAGE_COUNT);
            let mut guard = pool.exclusive(page)?;
            let counter = u64::from_le_bytes(guard[8..16].try_into().expect("8 bytes")) + 1;
            guard[8..16].copy_from_slice(&counter.to_le_bytes());
            writes += 1;
        }
        let stats = pool.stats();
        println!(
            "parent: {writes} writes; evictions {}, shootdowns {}, refault retries {}",
            stats.evictions, stats.shootdowns, stats.refault_retries
        );
        let served = served.join().expect("fault-in server panicked");
        println!("parent: faulted in {served} pages the child asked for");
        Ok(())
    })?;
    child.wait_with_output()?;
    pool.flush()?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

fn child(socket: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let (mut stream, export, page_count) = channel::receive_export(&socket)?;
    let view = ExportedView::open(export)?;
    let (mut reads, mut evicted, mut wrong) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + RUN_TIME;
    let mut page = 0;
    while Instant::now() < deadline {
        page = (page + 1) % page_count;
        match view.read(PageId(page), |bytes| (bytes.u64_at(0), bytes.u64_at(8))) {
            Ok((id, _counter)) if id == page => reads += 1,
            Ok(_) => wrong += 1,
            Err(ViewError::Evicted(page)) => {
                evicted += 1;
                channel::request_fault_in(&mut stream, page)?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    println!(
        "child: {reads} validated zero-copy reads, {evicted} evicted pages requested, {wrong} wrong pages"
    );
    Ok(())
}
