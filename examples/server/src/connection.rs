//! One client connection: read, parse every complete request, gate (arity, auth, key size),
//! run connection commands here, point reads here too while that is safe (see `fast`), and
//! the other engine commands as one job on the executor, write all replies, repeat. At most one job per connection is outstanding, so a client that sends
//! faster than it reads is held back by TCP, not buffered without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::commands::{
    self, COMMANDS, CommandSpec, EngineFn, Handler, NO_AUTH, eq_ignore_case, lookup, wrong_arity,
};
use crate::executor::Job;
use crate::fast;
use crate::io_threads::Home;
use crate::local_reads;
use crate::resp::{self, Reply, Request};
use crate::shared::ServerState;
use crate::store::{KEY_BYTES_MAX, Reader};

/// Where a connection sends the commands it does not run itself.
#[derive(Clone)]
pub struct Queues {
    pub jobs: mpsc::Sender<Job>,
}

/// Requests parsed per turn; the rest wait in the buffer for the next turn.
const REQUESTS_PER_TURN_MAX: usize = 1024;
/// A client that does not take its replies within this time is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 16 * 1024;

/// Per-connection state.
struct Client {
    id: u64,
    name: Option<Bytes>,
    protocol: u8,
    authenticated: bool,
    peer: SocketAddr,
}

/// What to do after this turn's replies are written.
#[derive(PartialEq, Eq)]
enum After {
    Continue,
    Close,
    /// Close without writing (SHUTDOWN).
    CloseSilently,
}

/// A reply slot: filled now (connection command) or by the executor.
struct Slot {
    protocol: u8,
    reply: Option<Reply>,
}

/// Decrements the connection count however the task ends.
struct Counted(Arc<ServerState>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's state between turns: everything that moves with it to another thread.
struct Conn {
    client: Client,
    input: BytesMut,
    /// Complete requests remain in `input` from the last turn.
    buffered: bool,
    state: Arc<ServerState>,
    queues: Queues,
    reader: Reader,
    home: Home,
    _counted: Counted,
}

/// Serves one accepted connection (already counted in `state.connected`).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
    queues: Queues,
    reader: Reader,
    home: Home,
) {
    let _ = stream.set_nodelay(true);
    let conn = Conn {
        client: Client {
            id: state.next_client_id.fetch_add(1, Ordering::Relaxed),
            name: None,
            protocol: 2,
            authenticated: !state.auth_required(),
            peer,
        },
        input: BytesMut::with_capacity(READ_CHUNK),
        buffered: false,
        _counted: Counted(Arc::clone(&state)),
        state,
        queues,
        reader,
        home,
    };
    match conn.home.placed_away() {
        Some(thread) => move_to(&thread, stream, conn),
        None => run(stream, conn).await,
    }
}

/// Turns until the connection closes or moves to another thread (`io_threads`).
async fn run(mut stream: TcpStream, mut conn: Conn) {
    let mut shutdown = conn.state.shutdown_receiver();
    let mut output = Vec::with_capacity(READ_CHUNK);
    let Conn {
        client,
        input,
        buffered,
        state,
        queues,
        reader,
        home,
        _counted: _,
    } = &mut conn;
    loop {
        if !*buffered {
            input.reserve(READ_CHUNK);
            let read = tokio::select! {
                read = stream.read_buf(input) => read,
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let limit = state.query_buffer_bytes_max.load(Ordering::Relaxed);
            if input.len() > limit {
                eprintln!(
                    "bufpool-server: closing client {} ({}) that reached max query buffer length ({} bytes)",
                    client.id, client.peer, limit
                );
                return;
            }
        }
        let Some(Turn {
            slots,
            after,
            more,
            read_leaves,
        }) = turn(client, state, queues, reader, input).await
        else {
            return;
        };
        *buffered = more;
        if after == After::CloseSilently {
            return;
        }
        output.clear();
        for slot in &slots {
            if let Some(reply) = &slot.reply {
                reply.encode(slot.protocol, &mut output);
            }
        }
        let limit = state.output_buffer_bytes_max.load(Ordering::Relaxed);
        if output.len() > limit {
            eprintln!(
                "bufpool-server: closing client {} ({}): output of {} bytes exceeds the limit of {limit}",
                client.id,
                client.peer,
                output.len()
            );
            return;
        }
        match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&output)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                eprintln!(
                    "bufpool-server: closing client {} ({}): not reading its replies",
                    client.id, client.peer
                );
                return;
            }
        }
        if after == After::Close || state.shutting_down() {
            return;
        }
        if let Some(thread) = home.after_turn(slots.len(), read_leaves) {
            state.connections_moved.fetch_add(1, Ordering::Relaxed);
            break move_to(&thread, stream, conn);
        }
    }
}

/// Goes on serving `conn` on `thread`'s runtime: a busy connection moving, or one just
/// accepted and placed there (a socket belongs to one runtime's reactor, so it is handed
/// over as a plain one; on failure dropping `conn` keeps every count right).
fn move_to(thread: &Handle, stream: TcpStream, conn: Conn) {
    let peer = conn.client.peer;
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("bufpool-server: closing client {peer}: moving it: {error}");
            return;
        }
    };
    thread.spawn(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => Box::pin(run(stream, conn)).await,
            Err(error) => eprintln!("bufpool-server: closing client {peer}: moving it: {error}"),
        }
    });
}

/// What a turn did.
struct Turn {
    slots: Vec<Slot>,
    /// What to do once the replies are written.
    after: After,
    /// Complete requests remain buffered.
    more: bool,
    /// Some of its reads waited for leaves from the disk.
    read_leaves: bool,
}

/// Parses and runs what is buffered; `None` if the executor is gone.
async fn turn(
    client: &mut Client,
    state: &Arc<ServerState>,
    queues: &Queues,
    reader: &Reader,
    input: &mut BytesMut,
) -> Option<Turn> {
    let limits = state.limits();
    let fast_reads = fast::enabled(state);
    let mut slots = Vec::new();
    let mut engine_commands = Vec::new();
    let mut engine_slots = Vec::new();
    // Reads waiting for their leaves (`local_reads`), in order, and those leaves.
    let mut waiting: Vec<(usize, &'static CommandSpec, EngineFn, Request)> = Vec::new();
    let mut leaves = Vec::new();
    let mut after = After::Continue;
    let mut parsed = 0;
    while parsed < REQUESTS_PER_TURN_MAX && after == After::Continue {
        let request = match resp::parse(input, &limits) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(error) => {
                eprintln!(
                    "bufpool-server: closing client {} ({}): {error}",
                    client.id, client.peer
                );
                slots.push(Slot {
                    protocol: client.protocol,
                    reply: Some(Reply::error(format!("ERR {error}"))),
                });
                after = After::Close;
                break;
            }
        };
        parsed += 1;
        if request.is_empty() {
            continue;
        }
        state.commands_total.fetch_add(1, Ordering::Relaxed);
        match gate(client, &request) {
            Err(reply) => slots.push(Slot {
                protocol: client.protocol,
                reply: Some(reply),
            }),
            Ok(spec) => match spec.handler {
                Handler::Engine(function) => {
                    // Inline only while nothing of this turn waits for the executor: a read
                    // behind one of the client's own writes must see it.
                    let inline = fast_reads && engine_commands.is_empty();
                    if let Some(read) = fast::read_fn(spec).filter(|_| inline) {
                        let served = fast::serve(reader, state, spec, read, &request, &mut leaves);
                        // A read behind one waiting for its leaves is served after it, in
                        // order (its answer now is dropped); its own leaves, if any, go to
                        // the disk with the others'.
                        let behind = !waiting.is_empty();
                        match served {
                            fast::Served::Reply(reply) if !behind => {
                                state.fast_reads_total.fetch_add(1, Ordering::Relaxed);
                                slots.push(Slot {
                                    protocol: client.protocol,
                                    reply: Some(reply),
                                });
                                continue;
                            }
                            fast::Served::Reply(_) | fast::Served::NeedsLeaves => {
                                waiting.push((slots.len(), spec, function, request));
                                slots.push(Slot {
                                    protocol: client.protocol,
                                    reply: None,
                                });
                                continue;
                            }
                            fast::Served::Executor => {}
                        }
                    }
                    engine_slots.push(slots.len());
                    slots.push(Slot {
                        protocol: client.protocol,
                        reply: None,
                    });
                    engine_commands.push((spec, function, request));
                }
                Handler::Connection => {
                    let (reply, next) = connection_command(client, state, spec, &request);
                    after = next;
                    slots.push(Slot {
                        protocol: client.protocol,
                        reply,
                    });
                }
            },
        }
    }
    let read_leaves = !waiting.is_empty();
    if read_leaves {
        let served = serve_after_leaf_reads(state, reader, &waiting, leaves, &mut slots).await;
        if served < waiting.len() {
            // The rest go to the executor, ahead of the turn's commands already there (all
            // of which came after them), so the turn keeps its order.
            state.miss_read_fallbacks.fetch_add(1, Ordering::Relaxed);
            let (rest_slots, rest_commands): (Vec<_>, Vec<_>) = waiting
                .drain(served..)
                .map(|(slot, spec, function, request)| (slot, (spec, function, request)))
                .unzip();
            engine_slots.splice(0..0, rest_slots);
            engine_commands.splice(0..0, rest_commands);
            assert_eq!(engine_slots.len(), engine_commands.len());
            assert!(
                engine_slots.is_sorted(),
                "the executor's commands keep the turn's order"
            );
        }
    }
    if !engine_commands.is_empty() {
        let (reply, replies) = oneshot::channel();
        let job = Job {
            commands: engine_commands,
            reply,
        };
        queues.jobs.send(job).ok()?;
        let replies = replies.await.ok()?;
        for (index, reply) in engine_slots.into_iter().zip(replies) {
            slots[index].reply = Some(reply);
        }
    }
    let more = parsed == REQUESTS_PER_TURN_MAX && after == After::Continue;
    Some(Turn {
        slots,
        after,
        more,
        read_leaves,
    })
}

/// Rounds of leaf reads a turn's waiting reads get before the executor serves the rest (a
/// leaf can be evicted again, or split, between its read and the lookup).
const LEAF_READ_ROUNDS_MAX: usize = 3;

/// Reads `leaves` on this thread's ring, then serves the `waiting` reads in order, reading
/// again the leaves of any that still miss; returns how many were served (a prefix, their
/// slots filled). Stops early where a read must go to the executor.
async fn serve_after_leaf_reads(
    state: &ServerState,
    reader: &Reader,
    waiting: &[(usize, &'static CommandSpec, EngineFn, Request)],
    mut leaves: Vec<u64>,
    slots: &mut [Slot],
) -> usize {
    let mut served = 0;
    for _ in 0..LEAF_READ_ROUNDS_MAX {
        if !state.read_prefetch.load(Ordering::Relaxed)
            || !local_reads::read(std::mem::take(&mut leaves)).await
        {
            return served;
        }
        while let Some((slot, spec, _, args)) = waiting.get(served) {
            let read = fast::read_fn(spec).expect("a waiting read has a connection-task form");
            match fast::serve(reader, state, spec, read, args, &mut leaves) {
                fast::Served::Reply(reply) => {
                    slots[*slot].reply = Some(reply);
                    served += 1;
                    state.fast_reads_total.fetch_add(1, Ordering::Relaxed);
                    state.miss_reads.fetch_add(1, Ordering::Relaxed);
                }
                fast::Served::NeedsLeaves => break,
                fast::Served::Executor => return served,
            }
        }
        if served == waiting.len() {
            return served;
        }
    }
    served
}

/// The table entry for `request`, or the error reply: unknown command, arity,
/// authentication, key size.
fn gate(client: &Client, request: &Request) -> Result<&'static CommandSpec, Reply> {
    let Some(spec) = lookup(&request[0]) else {
        let mut text = format!(
            "ERR unknown command '{}', with args beginning with: ",
            printable(&request[0])
        );
        for argument in request[1..].iter().take(16) {
            text.push_str(&format!("'{}' ", printable(argument)));
        }
        return Err(Reply::Error(text));
    };
    if !client.authenticated && spec.flags & NO_AUTH == 0 {
        return Err(Reply::error("NOAUTH Authentication required."));
    }
    if !spec.arity_ok(request.len()) {
        return Err(wrong_arity(spec.name));
    }
    if let Some(index) = spec
        .key_indexes(request.len())
        .find(|&index| request[index].len() > KEY_BYTES_MAX)
    {
        return Err(Reply::error(format!(
            "ERR key is too large ({} bytes, the limit is {KEY_BYTES_MAX})",
            request[index].len()
        )));
    }
    Ok(spec)
}

/// At most 128 characters of an argument, for error messages.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(128)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn connection_command(
    client: &mut Client,
    state: &ServerState,
    spec: &CommandSpec,
    args: &[Bytes],
) -> (Option<Reply>, After) {
    let reply = match spec.name {
        "ping" => match args.len() {
            1 => Reply::Status("PONG".into()),
            2 => Reply::Bulk(args[1].clone()),
            _ => wrong_arity("ping"),
        },
        "echo" => Reply::Bulk(args[1].clone()),
        "quit" => return (Some(Reply::ok()), After::Close),
        "select" => match commands::parse_i64(&args[1]) {
            Ok(0) => Reply::ok(),
            Ok(_) => Reply::error("ERR DB index is out of range"),
            Err(_) => Reply::error("ERR value is not an integer or out of range"),
        },
        "auth" => auth(client, state, &args[1..]),
        "hello" => hello(client, state, &args[1..]),
        "client" => client_command(client, &args[1..]),
        "command" => command_command(&args[1..]),
        "time" => {
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Reply::Array(vec![
                Reply::bulk(since.as_secs().to_string()),
                Reply::bulk(since.subsec_micros().to_string()),
            ])
        }
        "shutdown" => {
            eprintln!(
                "bufpool-server: SHUTDOWN requested by client {} ({})",
                client.id, client.peer
            );
            state.request_shutdown();
            return (None, After::CloseSilently);
        }
        other => Reply::error(format!("ERR unknown command '{other}'")),
    };
    (Some(reply), After::Continue)
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks `[username] password`; sets the client authenticated on success.
fn authenticate(client: &mut Client, state: &ServerState, args: &[Bytes]) -> Result<(), Reply> {
    let (user, password) = match args {
        [password] => (None, password),
        [user, password] => (Some(user), password),
        _ => return Err(Reply::error("ERR syntax error")),
    };
    if !state.auth_required() {
        return Err(Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    }
    // Both checks always run, so the reply time does not depend on which one failed.
    let user_ok = user.is_none_or(|user| user.as_ref() == b"default");
    let password_ok = state.password_matches(password);
    if user_ok && password_ok {
        client.authenticated = true;
        Ok(())
    } else {
        Err(Reply::error(WRONGPASS))
    }
}

fn auth(client: &mut Client, state: &ServerState, args: &[Bytes]) -> Reply {
    match authenticate(client, state, args) {
        Ok(()) => Reply::ok(),
        Err(reply) => reply,
    }
}

fn hello(client: &mut Client, state: &ServerState, args: &[Bytes]) -> Reply {
    let mut protocol = client.protocol;
    let mut rest = args;
    if let Some(version) = args.first() {
        match commands::parse_i64(version) {
            Ok(2) => protocol = 2,
            Ok(3) => protocol = 3,
            Ok(_) => return Reply::error("NOPROTO unsupported protocol version"),
            Err(_) => {
                return Reply::error("ERR Protocol version is not an integer or out of range");
            }
        }
        rest = &args[1..];
    }
    let mut name = None;
    let mut index = 0;
    while index < rest.len() {
        if eq_ignore_case(&rest[index], "auth") && index + 2 < rest.len() {
            if let Err(reply) = authenticate(client, state, &rest[index + 1..index + 3]) {
                return reply;
            }
            index += 3;
        } else if eq_ignore_case(&rest[index], "setname") && index + 1 < rest.len() {
            name = Some(rest[index + 1].clone());
            index += 2;
        } else {
            let option = printable(&rest[index]);
            return Reply::error(format!("ERR Syntax error in HELLO option '{option}'"));
        }
    }
    if !client.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        client.name = Some(name);
    }
    client.protocol = protocol;
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk("7.0.0")),
        (Reply::bulk("proto"), Reply::Integer(i64::from(protocol))),
        (Reply::bulk("id"), Reply::Integer(client.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ])
}

fn client_command(client: &mut Client, args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("id", 1) => Reply::Integer(client.id as i64),
        ("getname", 1) => client.name.clone().map_or(Reply::Nil, Reply::Bulk),
        ("setname", 2) => {
            let name = &args[1];
            if name.iter().any(|byte| !(b'!'..=b'~').contains(byte)) {
                return Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            client.name = (!name.is_empty()).then(|| name.clone());
            Reply::ok()
        }
        // Client libraries announce themselves; nothing here uses it.
        ("setinfo", 3) => Reply::ok(),
        ("info", 1) => Reply::bulk(format!(
            "id={} addr={} name={} db=0 resp={}\n",
            client.id,
            client.peer,
            client
                .name
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default(),
            client.protocol
        )),
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
        )),
    }
}

fn command_info(spec: &CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Integer(i64::from(spec.arity)),
        Reply::Set(
            spec.flag_names()
                .into_iter()
                .map(|flag| Reply::Status(flag.into()))
                .collect(),
        ),
        Reply::Integer(i64::from(spec.first_key)),
        Reply::Integer(i64::from(spec.last_key)),
        Reply::Integer(i64::from(spec.key_step)),
    ])
}

fn command_docs(spec: &CommandSpec) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("summary"), Reply::bulk(spec.summary)),
        (Reply::bulk("since"), Reply::bulk("1.0.0")),
        (Reply::bulk("group"), Reply::bulk(spec.group)),
    ])
}

/// The specs named in `args`, or all of them.
fn named_specs(args: &[Bytes]) -> Vec<Option<&'static CommandSpec>> {
    if args.is_empty() {
        COMMANDS.iter().map(Some).collect()
    } else {
        args.iter().map(|name| lookup(name)).collect()
    }
}

fn command_command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else {
        return Reply::Array(COMMANDS.iter().map(command_info).collect());
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    match sub.as_str() {
        "count" if args.len() == 1 => Reply::Integer(COMMANDS.len() as i64),
        "list" if args.len() == 1 => {
            Reply::Array(COMMANDS.iter().map(|spec| Reply::bulk(spec.name)).collect())
        }
        "info" => Reply::Array(
            named_specs(&args[1..])
                .into_iter()
                .map(|spec| spec.map_or(Reply::NilArray, command_info))
                .collect(),
        ),
        "docs" => Reply::Map(
            named_specs(&args[1..])
                .into_iter()
                .flatten()
                .map(|spec| (Reply::bulk(spec.name), command_docs(spec)))
                .collect(),
        ),
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try COMMAND HELP."
        )),
    }
}
