//! Connection threads: unpipelined clients stay on the accepting thread, pipelining clients
//! are spread over the threads, and a connection that moves keeps its state and its
//! commands' order.

mod common;

use common::{Server, stat};

/// One field of INFO's clients section.
fn clients_field(con: &mut redis::Connection, name: &str) -> String {
    let info: String = redis::cmd("INFO").arg("clients").query(con).expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} missing from {info}"))
        .trim()
        .to_string()
}

/// One round of a pipelining client: 16 commands that depend on each other's order.
fn pipelined_round(con: &mut redis::Connection, client: usize, round: i64) {
    let key = format!("counter:{client}");
    let mut pipe = redis::pipe();
    pipe.set(&key, round * 10).ignore();
    for _ in 0..7 {
        pipe.incr(&key, 1).get(&key);
    }
    pipe.get(&key);
    let values: Vec<i64> = pipe.query(con).expect("pipeline");
    assert_eq!(values.len(), 15, "16 commands, the SET's reply ignored");
    for step in 0..7 {
        let expected = round * 10 + step as i64 + 1;
        assert_eq!(values[2 * step], expected, "client {client} round {round}");
        assert_eq!(
            values[2 * step + 1],
            expected,
            "client {client} round {round}"
        );
    }
    assert_eq!(values[14], round * 10 + 7);
}

#[test]
fn pipelining_clients_spread_over_the_threads_and_keep_their_state() {
    let server = Server::start("connection-threads", &["--io-threads", "3"]);
    let mut plain = server.client();
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg(1)
        .query(&mut plain)
        .expect("set");
    let mut pipelining: Vec<redis::Connection> = (0..6).map(|_| server.client()).collect();
    for (client, con) in pipelining.iter_mut().enumerate() {
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("piper-{client}"))
            .query(con)
            .expect("setname");
    }
    // All six start on the accepting thread and become busy there one after another, so
    // where they go is fixed: the 1st stays (a tie goes home), the 2nd and 3rd go to the
    // two other threads, the 4th stays, the 5th and 6th move again.
    for (client, con) in pipelining.iter_mut().enumerate() {
        pipelined_round(con, client, 0);
    }
    assert_eq!(stat(&mut plain, "connections_moved"), 4);
    assert_eq!(clients_field(&mut plain, "connection_threads"), "3");
    assert_eq!(clients_field(&mut plain, "connections_per_thread"), "3,2,2");
    // Moved or not, each goes on in order, concurrently, with its name.
    std::thread::scope(|scope| {
        for (client, con) in pipelining.iter_mut().enumerate() {
            scope.spawn(move || {
                for round in 1..40 {
                    pipelined_round(con, client, round);
                }
                let name: String = redis::cmd("CLIENT")
                    .arg("GETNAME")
                    .query(con)
                    .expect("getname");
                assert_eq!(name, format!("piper-{client}"));
            });
        }
        for value in 2..200i64 {
            let _: () = redis::cmd("SET")
                .arg("plain")
                .arg(value)
                .query(&mut plain)
                .expect("set");
            let read: i64 = redis::cmd("GET")
                .arg("plain")
                .query(&mut plain)
                .expect("get");
            assert_eq!(read, value);
        }
    });
    // Unpipelined, the plain client never moved; nobody moved twice.
    assert_eq!(stat(&mut plain, "connections_moved"), 4);
    let total: u64 = stat(&mut plain, "total_connections_received");
    assert_eq!(total, 7);
    // Connections on every thread end with the server, which exits cleanly.
    assert!(server.terminate().success());
}

#[test]
fn new_connections_fill_one_thread_before_the_next() {
    let server = Server::start("connection-fill", &["--io-threads", "2"]);
    let mut admin = server.client();
    let mut others: Vec<redis::Connection> = (0..69).map(|_| server.client()).collect();
    for con in &mut others {
        let pong: String = redis::cmd("PING").query(con).expect("ping");
        assert_eq!(pong, "PONG");
    }
    assert_eq!(clients_field(&mut admin, "connections_per_thread"), "64,6");
    assert_eq!(stat(&mut admin, "connections_moved"), 0);
    // Those that leave are counted off their thread; the next one fills the first again.
    others.truncate(10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while clients_field(&mut admin, "connected_clients") != "11" {
        assert!(
            std::time::Instant::now() < deadline,
            "closed clients still counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Left: the admin and the first ten, all on the first thread.
    let mut late = server.client();
    let pong: String = redis::cmd("PING").query(&mut late).expect("ping");
    assert_eq!(pong, "PONG");
    assert_eq!(clients_field(&mut admin, "connections_per_thread"), "12,0");
    assert!(server.terminate().success());
}

/// Unpipelined clients whose reads wait for the disk are busy too: each such read costs the
/// thread several GETs from memory, so one thread serving all of them saturates. With a
/// 1 MiB pool under about 4 MiB of records, four clients reading keys spread over the data
/// set are spread over the two threads, two and two, and every reply stays right.
#[test]
fn clients_whose_reads_wait_for_the_disk_spread_over_the_threads() {
    let server = Server::start(
        "connection-threads-misses",
        &["--io-threads", "2", "--pool-mb", "1"],
    );
    let mut admin = server.client();
    let value = |key: usize| format!("{key:06}-{}", "m".repeat(90));
    let keys = 30_000;
    common::load_keys(&mut admin, keys, value);
    let moved_before = stat(&mut admin, "connections_moved");
    let mut readers: Vec<redis::Connection> = (0..4).map(|_| server.client()).collect();
    // Many rounds, so that every client meets an evicted leaf (each is busy from then on).
    for round in 0..500usize {
        for (client, con) in readers.iter_mut().enumerate() {
            let key = (round * 7_919 + client * 104_729) % keys;
            let got: String = redis::cmd("GET")
                .arg(format!("key:{key:08}"))
                .query(con)
                .expect("get");
            assert_eq!(got, value(key), "client {client} round {round}");
        }
    }
    assert!(
        stat(&mut admin, "miss_reads") > 0,
        "no read waited for the disk"
    );
    // Five connections: the admin (never busy) and the four readers, which the busy rule
    // places one after another: home (a tie), away, home, away.
    assert_eq!(stat(&mut admin, "connections_moved") - moved_before, 2);
    assert_eq!(clients_field(&mut admin, "connections_per_thread"), "3,2");
    drop(readers);
    assert!(server.terminate().success());
}
