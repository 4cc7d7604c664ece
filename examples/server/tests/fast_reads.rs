//! Point reads served on the connection task: a client sees its own pipelined writes, no
//! read sees a multi-record write half-applied, and the path is really taken.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Server, stat};

/// Pipelines that interleave writes and reads of the same keys: each read answers what the
/// writes ahead of it in the pipeline made.
fn own_writes_are_seen(durability: &str) {
    let server = Server::start("fast-own", &["--durability", durability]);
    let mut con = server.client();
    for round in 0..50i64 {
        let mut pipe = redis::pipe();
        pipe.get("k")
            .set("k", round)
            .get("k")
            .incr("counter", 1)
            .get("counter")
            .hset("h", "f", round)
            .hget("h", "f")
            .rpush("list", round)
            .llen("list")
            .exists("k")
            .del("k")
            .get("k")
            .exists("k");
        let values: Vec<redis::Value> = pipe.query(&mut con).expect("pipeline");
        let at = |index: usize| -> Option<i64> {
            redis::from_redis_value(&values[index]).expect("an integer or nil")
        };
        let (before, after, incr, counter) = (at(0), at(2), at(3), at(4));
        let (field, pushed, len, exists) = (at(6), at(7), at(8), at(9));
        assert_eq!(
            (at(11), at(12)),
            (None, Some(0)),
            "round {round}: after DEL"
        );
        assert_eq!(before, None, "round {round}: deleted in the previous round");
        assert_eq!(after, Some(round));
        assert_eq!(incr, Some(round + 1));
        assert_eq!(counter, Some(round + 1));
        assert_eq!(field, Some(round));
        assert_eq!(pushed, Some(round + 1));
        assert_eq!(len, Some(round + 1));
        assert_eq!(exists, Some(1));
    }
    // A read-only pipeline is answered on the connection task.
    let served = stat(&mut con, "fast_reads");
    let mut pipe = redis::pipe();
    for _ in 0..100 {
        pipe.get("counter");
    }
    let counters: Vec<i64> = pipe.query(&mut con).expect("reads");
    assert!(counters.iter().all(|counter| *counter == 50));
    assert!(
        stat(&mut con, "fast_reads") >= served + 100,
        "the reads did not take the fast path"
    );
    assert!(server.terminate().success());
}

#[test]
fn own_pipelined_writes_are_seen_always() {
    own_writes_are_seen("always");
}

#[test]
fn own_pipelined_writes_are_seen_everysec() {
    own_writes_are_seen("everysec");
}

/// One client rewrites eight keys together (MSET) and a hash's fields with HSET; others
/// read them (MGET, HMGET) on the fast path: every read sees one MSET or HSET whole.
#[test]
fn multi_record_writes_are_never_seen_half_applied() {
    // everysec: under always, reads that meet writes not yet durable go to the executor.
    let server = Server::start("fast-atomic", &["--durability", "everysec"]);
    let mut admin = server.client();
    let keys: Vec<String> = (0..8).map(|index| format!("k{index}")).collect();
    let mut mset = redis::cmd("MSET");
    for key in &keys {
        mset.arg(key).arg(0);
    }
    let _: () = mset.query(&mut admin).expect("mset");
    let _: () = redis::cmd("HSET")
        .arg(&["h", "x", "0", "y", "0"])
        .query(&mut admin)
        .expect("hset");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let url = server.url();
        let stop = Arc::clone(&stop);
        let keys = keys.clone();
        std::thread::spawn(move || {
            let mut con = common::connect_to(&url);
            // Bounded; the readers usually stop it sooner.
            for value in 1..200_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let value = value.to_string();
                let mut pipe = redis::pipe();
                let mset = pipe.cmd("MSET");
                for key in &keys {
                    mset.arg(key).arg(&value);
                }
                pipe.ignore()
                    .cmd("HSET")
                    .arg(&["h", "x", &value, "y", &value])
                    .ignore();
                let _: () = pipe.query(&mut con).expect("writes");
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let url = server.url();
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut con = common::connect_to(&url);
                for _ in 0..1000 {
                    let mut pipe = redis::pipe();
                    for _ in 0..32 {
                        pipe.cmd("MGET").arg(&keys);
                        pipe.cmd("HMGET").arg(&["h", "x", "y"]);
                    }
                    let replies: Vec<Vec<u64>> = pipe.query(&mut con).expect("reads");
                    for values in replies {
                        assert!(
                            values.windows(2).all(|pair| pair[0] == pair[1]),
                            "a write seen half-applied: {values:?}"
                        );
                    }
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().expect("reader");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(
        stat(&mut admin, "fast_reads") > 0,
        "no read took the fast path"
    );
    assert!(server.terminate().success());
}

/// While the pool misses (a 1 MiB pool under about 4 MiB of records), point reads name
/// their evicted leaves, which the connection thread reads on its own ring before serving
/// them; every reply is right, and a client's read after its own write sees it (durable,
/// under `always`, before it is answered).
#[test]
fn reads_while_the_pool_misses_read_their_leaves_on_the_connection_thread_and_are_right() {
    let server = Server::start("fast-miss-leaf-reads", &["--pool-mb", "1"]);
    let mut admin = server.client();
    let value = |key: usize| format!("{key:06}-{}", "v".repeat(90));
    common::load_keys(&mut admin, 30_000, value);
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let url = server.url();
            std::thread::spawn(move || {
                let mut con = common::connect_to(&url);
                for round in 0..200usize {
                    let key = (round * 7919 + client * 104_729) % 30_000;
                    let got: String = redis::cmd("GET")
                        .arg(format!("key:{key:08}"))
                        .query(&mut con)
                        .expect("get");
                    assert_eq!(got, value(key));
                    // A write of its own, then a read of it in the next turn.
                    let mine = format!("mine:{client}");
                    let _: () = redis::cmd("SET")
                        .arg(&mine)
                        .arg(round)
                        .query(&mut con)
                        .expect("set");
                    let seen: usize = redis::cmd("GET").arg(&mine).query(&mut con).expect("get");
                    assert_eq!(seen, round, "client {client} missed its own write");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    assert!(
        stat(&mut admin, "miss_reads") > 0,
        "no read was served after its leaf was read"
    );
    assert!(server.terminate().success());
}

/// Pipelined turns of many reads while the pool misses (what `redis-benchmark -P 16` sends),
/// on two connection threads, with a writer changing the same leaves: every reply is right
/// and nothing stalls. A connection thread keeps leaf reads of its own in flight, and other
/// threads (the executor holding a parent, the other connection thread) may wait for them;
/// if its lookups waited for any latch in turn, two threads could each wait for a read only
/// the other would complete (`ERR engine: gave up waiting for the latch of page …` after
/// 20 s, what the first miss readers did). Reads of a hash's field miss too, and are right.
#[test]
fn pipelined_reads_while_missing_never_stall_and_are_right() {
    let server = Server::start(
        "fast-miss-pipelined",
        &["--pool-mb", "1", "--io-threads", "2"],
    );
    let mut admin = server.client();
    let value = |key: usize| format!("{key:06}-{}", "v".repeat(90));
    let keys = 30_000;
    common::load_keys(&mut admin, keys, value);
    let _: () = redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("hv")
        .query(&mut admin)
        .expect("hset");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (server.url(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut con = common::connect_to(&url);
            let mut round = 0usize;
            // Writes between the read keys: splits of the leaves the readers fault in.
            while !stop.load(Ordering::Relaxed) && round < 100_000 {
                let key = format!("key:{:08}x{round}", (round * 7_919) % keys);
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(round)
                    .query(&mut con)
                    .expect("set");
                round += 1;
            }
        })
    };
    let clients: Vec<_> = (0..6)
        .map(|client| {
            let url = server.url();
            std::thread::spawn(move || {
                let mut con = common::connect_to(&url);
                con.set_read_timeout(Some(std::time::Duration::from_secs(15)))
                    .expect("timeout");
                for round in 0..60usize {
                    let chosen: Vec<usize> = (0..16)
                        .map(|i| (round * 104_729 + client * 7_907 + i * 1_009) % keys)
                        .collect();
                    let mut pipe = redis::pipe();
                    for key in &chosen {
                        pipe.cmd("GET").arg(format!("key:{key:08}"));
                    }
                    pipe.cmd("MGET")
                        .arg(format!("key:{:08}", chosen[3]))
                        .arg("absent")
                        .arg(format!("key:{:08}", chosen[9]));
                    let (gets, mget): (Vec<String>, Vec<Option<String>>) = {
                        let mut replies: Vec<redis::Value> =
                            pipe.query(&mut con).expect("pipeline");
                        let mget = redis::from_redis_value(&replies.pop().expect("mget"))
                            .expect("mget reply");
                        let gets = replies
                            .iter()
                            .map(|reply| redis::from_redis_value(reply).expect("get reply"))
                            .collect();
                        (gets, mget)
                    };
                    for (key, got) in chosen.iter().zip(&gets) {
                        assert_eq!(got, &value(*key), "client {client} round {round}");
                    }
                    assert_eq!(
                        mget,
                        vec![Some(value(chosen[3])), None, Some(value(chosen[9]))]
                    );
                    let hget: String = redis::cmd("HGET")
                        .arg("h")
                        .arg("f")
                        .query(&mut con)
                        .expect("hget");
                    assert_eq!(hget, "hv");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(
        stat(&mut admin, "miss_read_leaves") > 0,
        "no leaf was read by a connection thread"
    );
    assert!(server.terminate().success());
}

/// Reads waiting for their leaves that the connection thread does not read (here: leaf
/// reads turned off with `CONFIG SET read-prefetch no`) go to the executor ahead of the
/// turn's later commands: a pipeline mixing such reads, a write, a read of that write and a
/// connection command gets every reply right and in order.
#[test]
fn waiting_reads_left_to_the_executor_keep_the_turns_order() {
    let server = Server::start("fast-miss-executor-order", &["--pool-mb", "1"]);
    let mut admin = server.client();
    let value = |key: usize| format!("{key:06}-{}", "o".repeat(90));
    let keys = 30_000;
    common::load_keys(&mut admin, keys, value);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("read-prefetch")
        .arg("no")
        .query(&mut admin)
        .expect("config set");
    let fallbacks_before = stat(&mut admin, "miss_read_fallbacks");
    let mut con = server.client();
    for round in 0..200usize {
        let key = |i: usize| (round * 7_919 + i * 104_729) % keys;
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(format!("key:{:08}", key(0)));
        pipe.cmd("GET").arg(format!("key:{:08}", key(1)));
        pipe.cmd("SET").arg("mine").arg(round).ignore();
        pipe.cmd("GET").arg("mine");
        pipe.cmd("ECHO").arg(format!("echo-{round}"));
        pipe.cmd("GET").arg(format!("key:{:08}", key(2)));
        let (first, second, mine, echo, last): (String, String, usize, String, String) =
            pipe.query(&mut con).expect("pipeline");
        assert_eq!(first, value(key(0)), "round {round}");
        assert_eq!(second, value(key(1)), "round {round}");
        assert_eq!(mine, round, "round {round}: the read after the write");
        assert_eq!(echo, format!("echo-{round}"));
        assert_eq!(last, value(key(2)), "round {round}");
    }
    assert!(
        stat(&mut admin, "miss_read_fallbacks") > fallbacks_before,
        "no waiting read went to the executor"
    );
    assert!(server.terminate().success());
}

/// SIGTERM while clients' leaf reads are in flight on both connection threads: the server
/// finishes or drops those turns, completes every read it started (a thread's ring is
/// drained before it exits), checkpoints and exits 0, and every record reads back after a
/// restart.
#[test]
fn stopping_while_leaf_reads_are_in_flight_exits_cleanly_and_keeps_everything() {
    let dir = common::data_dir("fast-miss-stop");
    let server = Server::start_in(&dir, &["--pool-mb", "1", "--io-threads", "2"]);
    let mut admin = server.client();
    let value = |key: usize| format!("{key:06}-{}", "s".repeat(90));
    let keys = 30_000;
    common::load_keys(&mut admin, keys, value);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let url = server.url();
            std::thread::spawn(move || {
                let mut con = common::connect_to(&url);
                let mut answered = 0usize;
                // Until the server goes away under it: a closed connection ends the client.
                for round in 0..100_000usize {
                    let mut pipe = redis::pipe();
                    for i in 0..8 {
                        pipe.cmd("GET")
                            .arg(format!("key:{:08}", (round * 8 + i) * 7_919 % keys));
                    }
                    match pipe.query::<Vec<String>>(&mut con) {
                        Ok(values) => {
                            for (i, got) in values.iter().enumerate() {
                                assert_eq!(got, &value((round * 8 + i) * 7_919 % keys));
                            }
                            answered += 1;
                        }
                        Err(_) => break,
                    }
                }
                answered
            })
        })
        .collect();
    // Let the clients keep reads in flight, then stop the server under them.
    while stat(&mut admin, "miss_read_leaves") < 2_000 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(admin);
    assert!(
        server.terminate().success(),
        "SIGTERM exits 0 with reads in flight"
    );
    for client in clients {
        assert!(
            client.join().expect("client") > 0,
            "a client was never answered"
        );
    }
    let server = Server::start_in(&dir, &["--pool-mb", "1"]);
    let mut con = server.client();
    assert_eq!(
        redis::cmd("DBSIZE")
            .query::<usize>(&mut con)
            .expect("dbsize"),
        keys
    );
    for key in (0..keys).step_by(97) {
        let got: String = redis::cmd("GET")
            .arg(format!("key:{key:08}"))
            .query(&mut con)
            .expect("get");
        assert_eq!(got, value(key));
    }
    assert!(server.terminate().success());
}
