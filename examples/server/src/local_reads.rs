//! Leaf reads on the connection threads: each thread keeps the reads of its clients'
//! evicted leaves in flight on a ring of its own, and answers each client once its leaves
//! are in, without a hand-off to another thread.
//!
//! A connection thread never waits for a latch or the disk (`fast`, `Tree::try_get_into`):
//! a point read whose leaf is evicted names that leaf instead, and its task awaits `read`.
//! The thread's driver (`drive`, polled beside the thread's other tasks) starts the leaves
//! of every request queued since it last ran, hands them to the disk in one submission (the
//! misses of all clients ready in one turn of the event loop), and wakes each request's task
//! when its leaves are in. The ring's completions wake the thread through an eventfd that
//! the runtime polls with the sockets, so one `epoll_wait` covers clients and disk.
//!
//! Why no waiting: a started read keeps its page latched by this thread until the driver
//! completes it, and other threads (the executor holding a parent, another connection
//! thread) may wait for that page. Had this thread waited for any latch in turn, or for one
//! of its own started pages, nothing would complete the read. A read that cannot be served
//! without waiting (a latched node, a page another thread reads, a value on overflow pages)
//! goes to the executor, which may wait.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fs::File;
use std::future::{Future, poll_fn};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::shared::ServerState;
use crate::store::Reader;

/// Leaf reads one thread keeps in flight at most: above fio's best depth on the disks
/// measured (32), so that the clients of one thread can keep a deep queue alone.
const READS_IN_FLIGHT_MAX: u32 = 128;

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Requests for this thread's driver, queued by its connection tasks.
#[derive(Default)]
struct Queue {
    /// A driver runs on this thread.
    running: bool,
    requests: Vec<Request>,
    /// The driver, if it sleeps.
    driver: Option<Waker>,
}

/// One turn's leaves, and where to say they are in.
struct Request {
    leaves: Vec<u64>,
    done: oneshot::Sender<()>,
}

/// Reads `leaves` (tokens from `NoWait::LeafEvicted`) on this thread's ring and resolves once
/// each is in, or is left to another thread (being read elsewhere, or no room). False if
/// this thread has no driver (it failed to start, or the thread is stopping): the caller
/// then has the executor serve the reads.
pub fn read(leaves: Vec<u64>) -> impl Future<Output = bool> {
    let (done, wait) = oneshot::channel();
    let queued = QUEUE.with(|queue| {
        let mut queue = queue.borrow_mut();
        if !queue.running {
            return None;
        }
        queue.requests.push(Request { leaves, done });
        Some(queue.driver.take())
    });
    let queued = match queued {
        Some(driver) => {
            if let Some(driver) = driver {
                driver.wake();
            }
            true
        }
        None => false,
    };
    async move { queued && wait.await.is_ok() }
}

/// Clears this thread's queue when the driver stops: queued requests are dropped, so their
/// tasks see `read` fail and go to the executor.
struct Running;

impl Running {
    fn start() -> Running {
        QUEUE.with(|queue| queue.borrow_mut().running = true);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        QUEUE.with(|queue| *queue.borrow_mut() = Queue::default());
    }
}

/// A request waiting for `reads_left` of its leaves.
struct Waiting {
    done: oneshot::Sender<()>,
    reads_left: usize,
}

/// Runs this thread's leaf reads for as long as it is polled (the thread's runtime polls it
/// beside its connection tasks until the thread stops). Without a ring (an error, said once)
/// it never serves a request, and reads go to the executor.
pub async fn drive(reader: &Reader, state: &ServerState) -> Infallible {
    let mut reads = match reader.leaf_reads(READS_IN_FLIGHT_MAX) {
        Ok(reads) => reads,
        Err(error) => return idle(&format!("opening its ring: {error}")).await,
    };
    // `AsyncFd::with_interest` is deprecated for types whose descriptor could change or
    // close under it; a `File` owns its descriptor until dropped, with the `AsyncFd`.
    #[allow(deprecated)]
    let watch = |file: File| AsyncFd::with_interest(file, Interest::READABLE);
    let eventfd = match reads
        .completion_eventfd()
        .map_err(|error| error.to_string())
        .and_then(|fd| watch(File::from(fd)).map_err(|error| error.to_string()))
    {
        Ok(eventfd) => eventfd,
        Err(error) => return idle(&format!("watching its ring: {error}")).await,
    };
    let _running = Running::start();
    // Slots of waiting requests (`free` lists the empty ones); one (token, slot) per leaf a
    // request waits for. Bounded by the connections on this thread.
    let mut waiting: Vec<Option<Waiting>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut waits: Vec<(u64, usize)> = Vec::new();
    let mut requests = Vec::new();
    // Requests taken from the queue and not yet started: one is started only once all its
    // leaves fit (any request when nothing is in flight), in order; one started with too
    // little room would find its other leaves unread and go round again, then to the
    // executor.
    let mut queued: VecDeque<Request> = VecDeque::new();
    let mut tokens = Vec::new();
    loop {
        QUEUE.with(|queue| std::mem::swap(&mut queue.borrow_mut().requests, &mut requests));
        queued.extend(requests.drain(..));
        let mut started = 0;
        // Bounded by the queued requests, which only shrink here.
        while let Some(request) = queued.front() {
            let in_flight = reads.in_flight();
            if in_flight > 0 && in_flight + request.leaves.len() > READS_IN_FLIGHT_MAX as usize {
                break;
            }
            let request = queued.pop_front().expect("front checked");
            let slot = free.pop().unwrap_or_else(|| {
                waiting.push(None);
                waiting.len() - 1
            });
            let first_wait = waits.len();
            let before = reads.in_flight();
            for &leaf in &request.leaves {
                // A failed start is no answer: the lookup after it meets the same error
                // (through the executor) and replies it.
                if matches!(reads.start_leaf(leaf), Ok(true))
                    && !waits[first_wait..].contains(&(leaf, slot))
                {
                    waits.push((leaf, slot));
                }
            }
            started += reads.in_flight() - before;
            let reads_left = waits.len() - first_wait;
            if reads_left == 0 {
                free.push(slot);
                // A connection that went away no longer waits.
                let _ = request.done.send(());
            } else {
                waiting[slot] = Some(Waiting {
                    done: request.done,
                    reads_left,
                });
            }
        }
        if started > 0 {
            state.miss_read_batches.fetch_add(1, Ordering::Relaxed);
            state
                .miss_read_leaves
                .fetch_add(started as u64, Ordering::Relaxed);
        }
        if reads.in_flight() > 0 {
            // Enters the kernel even with nothing new to submit: with DEFER_TASKRUN that is
            // what posts the completions the eventfd announced.
            if let Err(error) = reads.submit() {
                // The reads stay queued and go with the next enter; the lookups report failures.
                eprintln!("bufpool-server: leaf reads: submitting: {error}");
            }
            reads.complete(0, &mut tokens);
            waits.retain(|&(token, slot)| {
                if !tokens.contains(&token) {
                    return true;
                }
                let entry = waiting[slot]
                    .as_mut()
                    .expect("a wait names a waiting request");
                entry.reads_left -= 1;
                if entry.reads_left == 0 {
                    let done = waiting[slot].take().expect("checked above").done;
                    free.push(slot);
                    let _ = done.send(());
                }
                false
            });
            tokens.clear();
        }
        // Sleeps until a request is queued or a read completes.
        let in_flight = reads.in_flight() > 0;
        poll_fn(|context| {
            let queued = QUEUE.with(|queue| {
                let mut queue = queue.borrow_mut();
                if queue.requests.is_empty() {
                    queue.driver = Some(context.waker().clone());
                    false
                } else {
                    true
                }
            });
            if queued {
                return Poll::Ready(());
            }
            if !in_flight {
                return Poll::Pending;
            }
            match eventfd.poll_read_ready(context) {
                Poll::Ready(Ok(mut ready)) => {
                    // Resets the counter (one read takes all of it); the completions
                    // themselves are collected above.
                    let mut counter = [0u8; 8];
                    let mut file: &File = ready.get_inner();
                    let _ = file.read(&mut counter);
                    ready.clear_ready();
                    Poll::Ready(())
                }
                // Only when the runtime is shutting down, which stops polling this anyway.
                Poll::Ready(Err(_)) => Poll::Pending,
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
    }
}

/// A driver that could not start: says why once and never serves a request.
async fn idle(why: &str) -> Infallible {
    eprintln!(
        "bufpool-server: a connection thread reads without its own ring ({why}); its reads of evicted leaves go to the executor"
    );
    std::future::pending().await
}
