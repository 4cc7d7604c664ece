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
