//! kill -9 while clients write under `--durability always`: after a restart every write
//! that was acknowledged is there.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;

/// `rounds` of: start, 4 clients write (SET, RPUSH, HSET) recording what was acknowledged,
/// kill -9 mid-stream, restart and check.
fn acknowledged_writes_survive_kill_9(rounds: u32) {
    let dir = common::data_dir("crash");
    for round in 0..rounds {
        let server = Server::start_in(&dir, &["--durability", "always"]);
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let url = server.url();
                let stop = Arc::clone(&stop);
                let acknowledged = Arc::clone(&acknowledged);
                std::thread::spawn(move || {
                    let client = redis::Client::open(url).expect("client");
                    let Ok(mut con) = client.get_connection() else {
                        return;
                    };
                    // Bounded by the kill: a write after it fails and ends the loop.
                    for index in 0..1_000_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("r{round}:w{writer}:{index}");
                        let set: redis::RedisResult<()> =
                            redis::cmd("SET").arg(&key).arg(index).query(&mut con);
                        let push: redis::RedisResult<i64> = redis::cmd("RPUSH")
                            .arg(format!("list:w{writer}"))
                            .arg(&key)
                            .query(&mut con);
                        if set.is_err() || push.is_err() {
                            break;
                        }
                        acknowledged
                            .lock()
                            .expect("lock")
                            .push((writer, key, push.unwrap_or(0)));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 100 * u64::from(round % 5)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().expect("writer thread");
        }
        let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("lock"));
        assert!(
            !acknowledged.is_empty(),
            "round {round}: no write was acknowledged"
        );
        let server = Server::start_in(&dir, &["--durability", "always"]);
        let mut con = server.client();
        for (writer, key, length) in &acknowledged {
            let value: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("get");
            assert!(value.is_some(), "round {round}: acknowledged {key} lost");
            let list_len: i64 = redis::cmd("LLEN")
                .arg(format!("list:w{writer}"))
                .query(&mut con)
                .expect("llen");
            assert!(
                list_len >= *length,
                "round {round}: list:w{writer} lost acknowledged pushes"
            );
        }
        assert!(server.terminate().success());
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_a_few_rounds() {
    acknowledged_writes_survive_kill_9(3);
}

#[test]
#[ignore = "long: cargo test -p bufpool-server --release --test crash -- --ignored"]
fn acknowledged_writes_survive_kill_9_many_rounds() {
    acknowledged_writes_survive_kill_9(30);
}

/// `rounds` of: start under `everysec` (its background flush cuts the log anywhere, also
/// inside a command), 4 clients write commands of several records each (HSET of two new
/// fields, SADD of two members, RPUSH of three elements then LPOP of one, MSET of a group
/// of three keys), kill -9, restart, and check that no command survived in part: every
/// collection's stored length is its member count, every MSET group is whole.
fn multi_record_commands_survive_kill_9_whole(rounds: u32) {
    let dir = common::data_dir("crash-atomic");
    for round in 0..rounds {
        let server = Server::start_in(&dir, &["--durability", "everysec"]);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let url = server.url();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let client = redis::Client::open(url).expect("client");
                    let Ok(mut con) = client.get_connection() else {
                        return;
                    };
                    // Bounded by the kill: a write after it fails and ends the loop.
                    for index in 0..1_000_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let tag = format!("{round}:{index}");
                        let mut pipe = redis::pipe();
                        pipe.cmd("HSET")
                            .arg(format!("hash:w{writer}"))
                            .arg(format!("a{tag}"))
                            .arg(index)
                            .arg(format!("b{tag}"))
                            .arg(index)
                            .ignore()
                            .cmd("SADD")
                            .arg(format!("set:w{writer}"))
                            .arg(format!("a{tag}"))
                            .arg(format!("b{tag}"))
                            .ignore()
                            .cmd("RPUSH")
                            .arg(format!("list:w{writer}"))
                            .arg(&[&tag, &tag, &tag])
                            .ignore()
                            .cmd("LPOP")
                            .arg(format!("list:w{writer}"))
                            .ignore()
                            .cmd("MSET")
                            .arg(&[format!("g{writer}:a"), tag.clone()])
                            .arg(&[format!("g{writer}:b"), tag.clone()])
                            .arg(&[format!("g{writer}:c"), tag.clone()])
                            .ignore();
                        if pipe.query::<()>(&mut con).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1100 + 150 * u64::from(round % 4)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().expect("writer thread");
        }
        let server = Server::start_in(&dir, &["--durability", "everysec"]);
        let mut con = server.client();
        for writer in 0..4 {
            let hash = format!("hash:w{writer}");
            let len: usize = redis::cmd("HLEN").arg(&hash).query(&mut con).expect("hlen");
            let fields: Vec<String> = redis::cmd("HKEYS")
                .arg(&hash)
                .query(&mut con)
                .expect("hkeys");
            assert_eq!(len, fields.len(), "round {round}: {hash} length vs fields");
            let set = format!("set:w{writer}");
            let len: usize = redis::cmd("SCARD")
                .arg(&set)
                .query(&mut con)
                .expect("scard");
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&set)
                .query(&mut con)
                .expect("smembers");
            assert_eq!(len, members.len(), "round {round}: {set} length vs members");
            let list = format!("list:w{writer}");
            let len: usize = redis::cmd("LLEN").arg(&list).query(&mut con).expect("llen");
            let elements: Vec<String> = redis::cmd("LRANGE")
                .arg(&list)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .expect("lrange");
            assert_eq!(
                len,
                elements.len(),
                "round {round}: {list} length vs elements"
            );
            let group: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&[
                    format!("g{writer}:a"),
                    format!("g{writer}:b"),
                    format!("g{writer}:c"),
                ])
                .query(&mut con)
                .expect("mget");
            assert!(
                group.windows(2).all(|pair| pair[0] == pair[1]),
                "round {round}: MSET group {writer} survived in part: {group:?}"
            );
        }
        assert!(server.terminate().success());
    }
}

#[test]
fn multi_record_commands_survive_kill_9_whole_a_few_rounds() {
    multi_record_commands_survive_kill_9_whole(3);
}

#[test]
#[ignore = "long: cargo test -p bufpool-server --release --test crash -- --ignored"]
fn multi_record_commands_survive_kill_9_whole_many_rounds() {
    multi_record_commands_survive_kill_9_whole(30);
}
