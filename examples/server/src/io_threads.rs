//! The connection threads: each runs its own single-threaded tokio runtime, so a wake-up
//! never crosses threads and no thread steals another's tasks.
//!
//! A new connection goes to the first thread keeping fewer than
//! `CONNECTIONS_PER_THREAD_FILL` connections (the accepting thread, index 0, first), else to
//! the one keeping the fewest. One whose turns carry many commands (a pipelining client,
//! `BUSY_TURN_COMMANDS`) or wait for leaves from the disk (each such read costs the thread
//! about three times a GET from memory, `local_reads`) is busy: it moves, once, to the
//! thread keeping the fewest busy connections. So unpipelined clients share a thread, which finds many of them ready in
//! each poll (on two cores, a second thread taking half of 50 of them cost 12% of their
//! GETs/s: more wake-ups, fewer sockets per poll), until there are enough to load a core;
//! pipelining clients, each able to keep a core busy alone, are spread over every thread
//! (with one thread, pipelined GETs left a core idle). Redis turns its I/O threads on only
//! under load for the same reason. DESIGN.md, "The storage server", has the figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

use crate::connection::{self, Queues};
use crate::local_reads;
use crate::shared::ServerState;
use crate::store::Reader;

/// How long a stopping thread lets its remaining tasks run before dropping them (they
/// have been told to stop; the accept loop already waited for them to drain).
const STOP_WAIT: Duration = Duration::from_secs(1);

/// Commands in one turn that make a connection busy (a pipelining client).
pub const BUSY_TURN_COMMANDS: usize = 8;
/// Connections a thread takes before a new one goes to the next thread: unpipelined
/// clients share one thread, which finds many ready per poll, until there are enough of
/// them to load a core (a 16-core server with 1,000 clients spreads them all).
pub const CONNECTIONS_PER_THREAD_FILL: usize = 64;

/// The runtimes connections are served on, shared with every connection. Index 0 is the
/// accepting thread's own runtime; the others each have a thread.
pub struct Placement {
    handles: Vec<Handle>,
    /// Connections each thread keeps, and how many of them are busy.
    connections: Vec<AtomicUsize>,
    busy: Vec<AtomicUsize>,
}

impl Placement {
    fn threads(&self) -> usize {
        self.handles.len()
    }

    /// The connections each thread keeps, for INFO.
    pub fn connections_per_thread(&self) -> Vec<usize> {
        self.connections
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// Counts a new connection on the first thread with room below the fill, else on the
    /// one with the fewest, and returns that thread.
    fn place_new(&self) -> usize {
        let count = |thread: usize| self.connections[thread].load(Ordering::Relaxed);
        let target = (0..self.threads())
            .find(|&thread| count(thread) < CONNECTIONS_PER_THREAD_FILL)
            .or_else(|| (0..self.threads()).min_by_key(|&thread| count(thread)))
            .expect("at least one connection thread");
        self.connections[target].fetch_add(1, Ordering::Relaxed);
        target
    }

    /// Counts a connection on `home` that just became busy on the thread keeping the fewest
    /// busy connections (`home` on a tie), moving its count there, and returns that thread.
    fn place_busy(&self, home: usize) -> usize {
        let target = (0..self.threads())
            .min_by_key(|&thread| (self.busy[thread].load(Ordering::Relaxed), thread != home))
            .expect("at least one connection thread");
        self.busy[target].fetch_add(1, Ordering::Relaxed);
        if target != home {
            self.connections[home].fetch_sub(1, Ordering::Relaxed);
            self.connections[target].fetch_add(1, Ordering::Relaxed);
        }
        target
    }
}

/// Where one connection is served, and whether it counts as busy there.
pub struct Home {
    placement: Arc<Placement>,
    thread: usize,
    busy: bool,
}

impl Home {
    /// For a connection just accepted, whose task starts on the accepting thread: the
    /// thread it was placed on, if another.
    pub fn placed_away(&self) -> Option<Handle> {
        (self.thread != 0).then(|| self.placement.handles[self.thread].clone())
    }

    /// After a turn of `commands` that read leaves from the disk or not: the thread this
    /// connection should move to now, if any. A connection is placed at most once, the first
    /// time a turn makes it busy.
    pub fn after_turn(&mut self, commands: usize, read_leaves: bool) -> Option<Handle> {
        let busy_turn = commands >= BUSY_TURN_COMMANDS || read_leaves;
        if self.busy || !busy_turn || self.placement.threads() == 1 {
            return None;
        }
        self.busy = true;
        let target = self.placement.place_busy(self.thread);
        if target == self.thread {
            return None;
        }
        self.thread = target;
        Some(self.placement.handles[target].clone())
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let placement = &self.placement;
        placement.connections[self.thread].fetch_sub(1, Ordering::Relaxed);
        if self.busy {
            placement.busy[self.thread].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The connection threads, owned by the accept loop.
pub struct ConnectionThreads {
    placement: Arc<Placement>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// A single-threaded runtime with timers and sockets.
pub fn runtime() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

impl ConnectionThreads {
    /// `count` connection threads in all (at least one): the caller's runtime `own` and
    /// `count - 1` new threads.
    /// Each new thread runs its leaf reads (`local_reads::drive`) beside its connections;
    /// the caller runs them on its own.
    pub fn start(
        own: Handle,
        count: usize,
        reader: &Reader,
        state: &Arc<ServerState>,
    ) -> std::io::Result<ConnectionThreads> {
        let mut handles = vec![own];
        let mut threads = Vec::new();
        for index in 1..count.max(1) {
            let (stop, stopped) = oneshot::channel::<()>();
            let (handle_sender, handle_receiver) = std::sync::mpsc::channel();
            let (reader, state) = (reader.clone(), Arc::clone(state));
            let thread = std::thread::Builder::new()
                .name(format!("bufpool-server-io-{index}"))
                .spawn(move || {
                    let runtime = match runtime() {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = handle_sender.send(Err(error));
                            return;
                        }
                    };
                    let _ = handle_sender.send(Ok(runtime.handle().clone()));
                    // A dropped sender (the server stopping on an error) also stops it.
                    runtime.block_on(async {
                        tokio::select! {
                            _ = stopped => {}
                            never = local_reads::drive(&reader, &state) => match never {},
                        }
                    });
                    runtime.shutdown_timeout(STOP_WAIT);
                })?;
            let handle = handle_receiver
                .recv()
                .map_err(|_| std::io::Error::other("a connection thread ended at start"))??;
            handles.push(handle);
            threads.push((stop, thread));
        }
        let counters = || handles.iter().map(|_| AtomicUsize::new(0)).collect();
        let (connections, busy) = (counters(), counters());
        Ok(ConnectionThreads {
            placement: Arc::new(Placement {
                handles,
                connections,
                busy,
            }),
            threads,
        })
    }

    /// Where connections are placed (for INFO).
    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// Serves `stream`, accepted on this thread and counted in `state.connected`, on the
    /// thread `Placement::place_new` picks (see the module's text for when it moves).
    pub fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        state: &Arc<ServerState>,
        queues: &Queues,
        reader: &Reader,
    ) {
        let thread = self.placement.place_new();
        let home = Home {
            placement: Arc::clone(&self.placement),
            thread,
            busy: false,
        };
        let (state, queues, reader) = (Arc::clone(state), queues.clone(), reader.clone());
        // Starts here and moves at once if placed on another thread (`Home::placed_away`).
        tokio::spawn(connection::serve(stream, peer, state, queues, reader, home));
    }

    /// Stops the other threads, each after its remaining tasks had `STOP_WAIT` to end.
    pub fn stop(self) {
        for (stop, thread) in self.threads {
            let _ = stop.send(());
            if thread.join().is_err() {
                eprintln!("bufpool-server: a connection thread panicked");
            }
        }
    }
}
