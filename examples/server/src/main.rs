//! `bufpool-server`: a Redis-protocol storage server that keeps its data in bufpool-engine,
//! so the data set can be many times larger than memory.
//!
//! Layers: `main` (flags, start, shutdown) → `connection` (one task per client: read,
//! parse, gate, reply) → `resp` (the wire) → `commands` (the command table and one module
//! per data type) → `executor` (the engine thread and the group-commit syncer) → `store`
//! (the key encoding in the engine's trees).
#![forbid(unsafe_code)]

mod commands;
mod connection;
mod executor;
mod fast;
mod intent;
mod io_threads;
mod local_reads;
mod resp;
mod shared;
mod store;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bufpool_engine::{Engine, EngineError, EngineOptions};
use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::shared::{Fsync, ServerState, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum YesNo {
    Yes,
    No,
}

#[derive(Debug, Parser)]
#[command(
    name = "bufpool-server",
    version,
    // A flag given twice takes the later value (a script's defaults, then the user's).
    args_override_self = true,
    about = "A Redis-protocol storage server on the bufpool buffer pool",
    long_about = "A Redis-protocol storage server on the bufpool buffer pool.\n\n\
                  Keeps its data in a bufpool-engine file under --dir, so the data set can be \
                  larger than memory; speaks RESP2 and RESP3, so redis-cli, redis-benchmark and \
                  Redis client libraries work unchanged."
)]
struct Cli {
    /// Address to listen on. Anything but a loopback address needs --requirepass or
    /// --protected-mode no.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// TCP port (0: any free port; the startup line says which).
    #[arg(long, default_value_t = 6380)]
    port: u16,
    /// Data directory, created if missing; the data lives in DIR/data.db.
    #[arg(long, default_value = "./server-data")]
    dir: PathBuf,
    /// Buffer pool size in MiB: the memory the data set is cached in.
    #[arg(long, default_value_t = 256)]
    pool_mb: u64,
    /// When a write is acknowledged: always (after the log is synced past it; survives
    /// kill -9 and power loss), everysec (log synced every second; a crash loses at most
    /// about one second), no (synced at checkpoints only).
    #[arg(long, value_enum, default_value = "always")]
    durability: Fsync,
    /// Password clients must give with AUTH (or HELLO ... AUTH) before other commands.
    #[arg(long)]
    requirepass: Option<String>,
    /// Most simultaneous client connections; more are refused with an error.
    #[arg(long, default_value_t = 10_000)]
    maxclients: usize,
    /// With yes (the default), refuse to listen on a non-loopback address without
    /// --requirepass.
    #[arg(long, value_enum, default_value = "yes")]
    protected_mode: YesNo,
    /// Threads serving connections (parsing, replies, point reads), each keeping the
    /// connections it is given; 0: one per core.
    #[arg(long, default_value_t = 0)]
    io_threads: usize,
}

#[derive(Debug, thiserror::Error)]
enum ServerError {
    #[error(
        "refusing to listen on {bind} without a password (protected mode): pass --requirepass, \
         or --protected-mode no to expose the server to the network unauthenticated"
    )]
    Protected { bind: IpAddr },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut line = error.to_string();
            if let Some(source) = std::error::Error::source(&error)
                && !line.contains(&source.to_string())
            {
                line = format!("{line}: {source}");
            }
            eprintln!("bufpool-server: error: {}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), ServerError> {
    let protected_mode = cli.protected_mode == YesNo::Yes;
    if protected_mode && !cli.bind.is_loopback() && cli.requirepass.is_none() {
        return Err(ServerError::Protected { bind: cli.bind });
    }
    std::fs::create_dir_all(&cli.dir)
        .map_err(io_error(format!("creating {}", cli.dir.display())))?;
    let path = cli.dir.join("data.db");
    let options = EngineOptions {
        pool_bytes: cli.pool_mb.max(1) << 20,
        durability: cli.durability.durability(),
        ..EngineOptions::default()
    };
    let engine = Arc::new(Engine::open_or_create(&path, options)?);
    let store = store::Store::open(Arc::clone(&engine))?;
    let io_threads = match cli.io_threads {
        0 => std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        threads => threads,
    };
    // The accept loop's runtime, and the first connection thread's.
    let runtime = io_threads::runtime().map_err(io_error("starting the runtime"))?;
    let settings = Settings {
        bind: cli.bind,
        port: cli.port,
        dir: cli.dir.clone(),
        pool_bytes: cli.pool_mb << 20,
        fsync: cli.durability,
        protected_mode,
    };
    let listen_at = SocketAddr::new(cli.bind, cli.port);
    let listener = runtime
        .block_on(TcpListener::bind(listen_at))
        .map_err(io_error(format!("listening on {listen_at}")))?;
    let local = listener
        .local_addr()
        .map_err(io_error("reading the listening address"))?;
    let mut settings = settings;
    settings.port = local.port();
    let state = Arc::new(ServerState::new(settings, cli.requirepass, cli.maxclients));
    let reader = store.reader();
    let (jobs, executor) = executor::spawn(store, Arc::clone(&state))
        .map_err(io_error("starting the executor thread"))?;
    eprintln!(
        "bufpool-server: listening on {local}, data in {} (durability {}, pool {} MiB)",
        path.display(),
        cli.durability.name(),
        cli.pool_mb
    );
    let queues = connection::Queues { jobs };
    let threads =
        io_threads::ConnectionThreads::start(runtime.handle().clone(), io_threads, &reader, &state)
            .map_err(io_error("starting the connection threads"))?;
    let _ = state.placement.set(Arc::clone(threads.placement()));
    let own_reads = reader.clone();
    let accepted = runtime.block_on(async {
        tokio::select! {
            accepted = accept_loop(listener, Arc::clone(&state), queues, reader, threads) => accepted,
            never = local_reads::drive(&own_reads, &state) => match never {},
        }
    });
    // Dropping the runtime ends any connection task still alive past the drain wait; with
    // every sender gone the executor delivers what it has and stops.
    runtime.shutdown_timeout(Duration::from_secs(1));
    accepted?;
    if executor.join().is_err() {
        eprintln!("bufpool-server: the executor thread panicked");
    }
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close()?,
        // A tree handle outlived the executor (a bug): still make everything durable.
        Err(engine) => engine.checkpoint()?,
    }
    eprintln!("bufpool-server: checkpointed and stopped");
    Ok(())
}

/// Accepts clients until SHUTDOWN, SIGTERM or SIGINT, then waits for the connections to
/// finish the commands they have in flight.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<ServerState>,
    queues: connection::Queues,
    reader: store::Reader,
    threads: io_threads::ConnectionThreads,
) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(io_error("installing the SIGTERM handler"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(io_error("installing the SIGINT handler"))?;
    let mut shutdown = state.shutdown_receiver();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = terminate.recv() => { eprintln!("bufpool-server: SIGTERM, shutting down"); break; }
            _ = interrupt.recv() => { eprintln!("bufpool-server: SIGINT, shutting down"); break; }
            _ = shutdown.wait_for(|stopping| *stopping) => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly rather than spin.
                eprintln!("bufpool-server: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        state.connections_total.fetch_add(1, Ordering::Relaxed);
        let maxclients = state.maxclients.load(Ordering::Relaxed);
        if state.connected.fetch_add(1, Ordering::Relaxed) >= maxclients {
            state.connected.fetch_sub(1, Ordering::Relaxed);
            state.connections_rejected.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        threads.serve(stream, peer, &state, &queues, &reader);
    }
    drop(listener);
    state.request_shutdown();
    drop(queues);
    // Bounded: connections finish their in-flight job and close on the shutdown signal.
    const DRAIN_WAIT: Duration = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    while state.connected.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    threads.stop();
    Ok(())
}
