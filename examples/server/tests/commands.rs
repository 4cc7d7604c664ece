//! The server's commands through a Rust Redis client, against the running binary.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Server;
use redis::{Commands, RedisResult, Value};

fn error_text<T: std::fmt::Debug>(result: RedisResult<T>) -> String {
    let error = result.expect_err("an error reply");
    format!(
        "{} {}",
        error.code().unwrap_or("?"),
        error.detail().unwrap_or("")
    )
}

#[test]
fn strings_with_redis_semantics() {
    let server = Server::start("strings", &[]);
    let mut con = server.client();
    let _: () = con.set("a", "1").expect("set");
    assert_eq!(con.incr::<_, _, i64>("a", 41).expect("incrby"), 42);
    assert_eq!(con.get::<_, String>("a").expect("get"), "42");
    let set_nx: Option<String> = redis::cmd("SET")
        .arg("a")
        .arg("x")
        .arg("NX")
        .query(&mut con)
        .expect("set nx");
    assert_eq!(set_nx, None);
    let set_get: Option<String> = redis::cmd("SET")
        .arg("a")
        .arg("y")
        .arg("GET")
        .query(&mut con)
        .expect("set get");
    assert_eq!(set_get.as_deref(), Some("42"));
    let set_xx: Option<String> = redis::cmd("SET")
        .arg("missing")
        .arg("v")
        .arg("XX")
        .query(&mut con)
        .expect("set xx");
    assert_eq!(set_xx, None);
    assert_eq!(
        error_text(con.incr::<_, _, i64>("a", 1)),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(con.append::<_, _, i64>("a", "bc").expect("append"), 3);
    assert_eq!(
        con.getrange::<_, String>("a", 1, -1).expect("getrange"),
        "bc"
    );
    assert_eq!(
        con.setrange::<_, _, i64>("pad", 3, "x").expect("setrange"),
        4
    );
    assert_eq!(con.get::<_, Vec<u8>>("pad").expect("get"), b"\0\0\0x");
    assert_eq!(con.strlen::<_, i64>("pad").expect("strlen"), 4);
    let _: () = con.mset(&[("k1", "v1"), ("k2", "v2")]).expect("mset");
    let values: Vec<Option<String>> = con.mget(&["k1", "nope", "k2"]).expect("mget");
    assert_eq!(values, vec![Some("v1".into()), None, Some("v2".into())]);
    let msetnx: i64 = redis::cmd("MSETNX")
        .arg("k1")
        .arg("z")
        .arg("k3")
        .arg("z")
        .query(&mut con)
        .expect("msetnx");
    assert_eq!(msetnx, 0);
    let float: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("10.5")
        .query(&mut con)
        .expect("incrbyfloat");
    assert_eq!(float, "10.5");
    assert_eq!(con.decr::<_, _, i64>("counter", 5).expect("decrby"), -5);
    assert_eq!(con.getset::<_, _, String>("k1", "w").expect("getset"), "v1");
    let deleted: Option<String> = redis::cmd("GETDEL")
        .arg("k1")
        .query(&mut con)
        .expect("getdel");
    assert_eq!(deleted.as_deref(), Some("w"));
    assert!(!con.exists::<_, bool>("k1").expect("exists"));
    let _: () = con.lpush("list", "x").expect("lpush");
    assert_eq!(
        error_text(con.get::<_, Option<String>>("list")),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    // SET replaces a value of any type.
    let _: () = con.set("list", "now a string").expect("set over list");
    assert_eq!(con.key_type::<_, String>("list").expect("type"), "string");
    let unknown = error_text(redis::cmd("FROB").arg("x").query::<Value>(&mut con));
    // Redis's text, trailing space included.
    assert_eq!(
        unknown,
        "ERR unknown command 'FROB', with args beginning with: 'x' "
    );
    let arity = error_text(redis::cmd("GET").query::<Value>(&mut con));
    assert_eq!(arity, "ERR wrong number of arguments for 'get' command");
}

#[test]
fn expiry_is_exact_on_access_and_swept() {
    let server = Server::start("expiry", &[]);
    let mut con = server.client();
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(80)
        .query(&mut con)
        .expect("set px");
    let _: () = con.set_ex("long", "v", 100).expect("setex");
    let _: () = con.set("plain", "v").expect("set");
    let ttl: i64 = con.ttl("long").expect("ttl");
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(con.ttl::<_, i64>("plain").expect("ttl"), -1);
    assert_eq!(con.ttl::<_, i64>("nope").expect("ttl"), -2);
    assert_eq!(
        redis::cmd("DBSIZE").query::<i64>(&mut con).expect("dbsize"),
        3
    );
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(con.get::<_, Option<String>>("short").expect("get"), None);
    assert_eq!(
        redis::cmd("DBSIZE").query::<i64>(&mut con).expect("dbsize"),
        2
    );
    // PERSIST, then a past EXPIREAT deletes at once.
    assert!(con.persist::<_, bool>("long").expect("persist"));
    assert_eq!(con.ttl::<_, i64>("long").expect("ttl"), -1);
    assert!(con.expire_at::<_, bool>("long", 1).expect("expireat"));
    assert!(!con.exists::<_, bool>("long").expect("exists"));
    // The background sweep reclaims keys nobody reads again.
    for index in 0..50 {
        let _: () = con
            .pset_ex(format!("gone:{index}"), "v", 30)
            .expect("psetex");
    }
    std::thread::sleep(Duration::from_millis(400));
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut con)
        .expect("info");
    let expired: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("expired_keys:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("expired_keys");
    assert!(expired >= 50, "{info}");
    let keyspace: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut con)
        .expect("info");
    assert!(keyspace.contains("db0:keys=1,"), "{keyspace}");
}

#[test]
fn hashes_lists_sets_and_sorted_sets() {
    let server = Server::start("collections", &[]);
    let mut con = server.client();
    assert_eq!(
        con.hset_multiple::<_, _, _, String>("h", &[("a", "1"), ("b", "2")])
            .expect("hmset"),
        "OK"
    );
    assert_eq!(con.hset::<_, _, _, i64>("h", "c", "3").expect("hset"), 1);
    assert_eq!(con.hset::<_, _, _, i64>("h", "c", "4").expect("hset"), 0);
    assert_eq!(con.hlen::<_, i64>("h").expect("hlen"), 3);
    assert_eq!(
        con.hincr::<_, _, _, i64>("h", "a", 10).expect("hincrby"),
        11
    );
    let all: Vec<(String, String)> = con.hgetall("h").expect("hgetall");
    assert_eq!(
        all,
        vec![
            ("a".into(), "11".into()),
            ("b".into(), "2".into()),
            ("c".into(), "4".into())
        ]
    );
    assert_eq!(con.hdel::<_, _, i64>("h", &["a", "zz"]).expect("hdel"), 1);
    assert_eq!(
        con.hkeys::<_, Vec<String>>("h").expect("hkeys"),
        vec!["b", "c"]
    );

    assert_eq!(
        con.rpush::<_, _, i64>("l", &["1", "2", "3"])
            .expect("rpush"),
        3
    );
    assert_eq!(con.lpush::<_, _, i64>("l", &["0", "-1"]).expect("lpush"), 5);
    assert_eq!(
        con.lrange::<_, Vec<String>>("l", 0, -1).expect("lrange"),
        vec!["-1", "0", "1", "2", "3"]
    );
    assert_eq!(
        con.lrange::<_, Vec<String>>("l", -2, 100).expect("lrange"),
        vec!["2", "3"]
    );
    assert_eq!(con.lindex::<_, String>("l", -1).expect("lindex"), "3");
    let popped: Vec<String> = redis::cmd("LPOP")
        .arg("l")
        .arg(2)
        .query(&mut con)
        .expect("lpop count");
    assert_eq!(popped, vec!["-1", "0"]);
    assert_eq!(con.rpop::<_, String>("l", None).expect("rpop"), "3");
    assert_eq!(con.llen::<_, i64>("l").expect("llen"), 2);
    let _: Vec<String> = redis::cmd("RPOP")
        .arg("l")
        .arg(5)
        .query(&mut con)
        .expect("rpop all");
    assert!(!con.exists::<_, bool>("l").expect("empty list is gone"));
    let missing: Value = redis::cmd("LPOP")
        .arg("l")
        .arg(2)
        .query(&mut con)
        .expect("lpop missing");
    assert_eq!(missing, Value::Nil);

    assert_eq!(
        con.sadd::<_, _, i64>("s", &["a", "b", "c", "a"])
            .expect("sadd"),
        3
    );
    assert!(con.sismember::<_, _, bool>("s", "b").expect("sismember"));
    assert_eq!(con.srem::<_, _, i64>("s", "b").expect("srem"), 1);
    let members: BTreeSet<String> = con.smembers("s").expect("smembers");
    assert_eq!(members, ["a", "c"].into_iter().map(String::from).collect());
    let popped: String = con.spop("s").expect("spop");
    assert!(popped == "a" || popped == "c");
    assert_eq!(con.scard::<_, i64>("s").expect("scard"), 1);

    let added: i64 = redis::cmd("ZADD")
        .arg("z")
        .arg(2)
        .arg("b")
        .arg(1)
        .arg("a")
        .arg(3)
        .arg("c")
        .arg("-1.5")
        .arg("neg")
        .query(&mut con)
        .expect("zadd");
    assert_eq!(added, 4);
    let changed: i64 = redis::cmd("ZADD")
        .arg("z")
        .arg("CH")
        .arg("GT")
        .arg(0)
        .arg("b")
        .arg(5)
        .arg("a")
        .query(&mut con)
        .expect("zadd gt ch");
    assert_eq!(changed, 1);
    assert_eq!(con.zscore::<_, _, f64>("z", "a").expect("zscore"), 5.0);
    let ranged: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("z")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut con)
        .expect("zrange");
    assert_eq!(
        ranged,
        vec![
            ("neg".into(), -1.5),
            ("b".into(), 2.0),
            ("c".into(), 3.0),
            ("a".into(), 5.0)
        ]
    );
    let by_score: Vec<String> = redis::cmd("ZRANGE")
        .arg("z")
        .arg("(2")
        .arg("+inf")
        .arg("BYSCORE")
        .query(&mut con)
        .expect("byscore");
    assert_eq!(by_score, vec!["c", "a"]);
    let reversed: Vec<String> = redis::cmd("ZRANGE")
        .arg("z")
        .arg("+inf")
        .arg("-inf")
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(1)
        .arg(2)
        .query(&mut con)
        .expect("rev limit");
    assert_eq!(reversed, vec!["c", "b"]);
    assert_eq!(con.zrank::<_, _, i64>("z", "c").expect("zrank"), 2);
    let incr: f64 = redis::cmd("ZADD")
        .arg("z")
        .arg("INCR")
        .arg("0.5")
        .arg("neg")
        .query(&mut con)
        .expect("zadd incr");
    assert_eq!(incr, -1.0);
    let lowest: Vec<String> = redis::cmd("ZPOPMIN")
        .arg("z")
        .query(&mut con)
        .expect("zpopmin");
    assert_eq!(lowest, vec!["neg", "-1"]);
    let highest: Vec<String> = redis::cmd("ZPOPMAX")
        .arg("z")
        .arg(2)
        .query(&mut con)
        .expect("zpopmax");
    assert_eq!(highest, vec!["a", "5", "c", "3"]);
    assert_eq!(con.zcard::<_, i64>("z").expect("zcard"), 1);
    assert_eq!(
        error_text(
            redis::cmd("ZADD")
                .arg("z")
                .arg("NX")
                .arg("XX")
                .arg(1)
                .arg("q")
                .query::<Value>(&mut con)
        ),
        "ERR XX and NX options at the same time are not compatible"
    );
    assert_eq!(
        error_text(con.sadd::<_, _, i64>("h", "x")),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
}

#[test]
fn deleted_collections_leave_nothing_behind() {
    let server = Server::start("reclaim", &[]);
    let mut con = server.client();
    // Larger than the inline-drop size: members are reclaimed by the sweep.
    let members: Vec<String> = (0..1000).map(|index| format!("m{index:04}")).collect();
    let _: () = con.sadd("big", &members).expect("sadd");
    assert_eq!(con.del::<_, i64>("big").expect("del"), 1);
    let _: () = con.sadd("big", "fresh").expect("sadd again");
    let now: Vec<String> = con.smembers("big").expect("smembers");
    assert_eq!(now, vec!["fresh"]);
    // RENAME moves a collection with its members.
    let _: () = con.rpush("from", &["1", "2"]).expect("rpush");
    let _: () = con.rename("from", "to").expect("rename");
    assert_eq!(
        con.lrange::<_, Vec<String>>("to", 0, -1).expect("lrange"),
        vec!["1", "2"]
    );
    assert!(!con.exists::<_, bool>("from").expect("exists"));
    let _: () = redis::cmd("FLUSHALL").query(&mut con).expect("flushall");
    assert_eq!(
        redis::cmd("DBSIZE").query::<i64>(&mut con).expect("dbsize"),
        0
    );
    assert_eq!(
        redis::cmd("RANDOMKEY")
            .query::<Option<String>>(&mut con)
            .expect("randomkey"),
        None
    );
}

#[test]
fn scan_visits_every_key_once() {
    let server = Server::start("scan", &[]);
    let mut con = server.client();
    let keys: BTreeSet<String> = (0..500).map(|index| format!("key:{index}")).collect();
    for key in &keys {
        let _: () = con.set(key, "v").expect("set");
    }
    let _: () = con.hset("a-hash", "f", "v").expect("hset");
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    // Bounded: 501 keys at COUNT 37 need 14 calls.
    for _ in 0..100 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("key:*")
            .arg("COUNT")
            .arg(37)
            .query(&mut con)
            .expect("scan");
        seen.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "the scan finished");
    assert_eq!(seen.len(), keys.len(), "no key twice");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), keys);
    let (_, hashes): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .arg("COUNT")
        .arg(1000)
        .query(&mut con)
        .expect("scan type");
    assert_eq!(hashes, vec!["a-hash"]);
    let found: Vec<String> = con.keys("key:4?9").expect("keys");
    assert_eq!(found.len(), 10);
    let fields: Vec<String> = (0..100).map(|index| format!("f{index}")).collect();
    for field in &fields {
        let _: () = con.sadd("members", field).expect("sadd");
    }
    let mut members = BTreeSet::new();
    let mut cursor = 0u64;
    for _ in 0..100 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg("members")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query(&mut con)
            .expect("sscan");
        members.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(members, fields.into_iter().collect());
    assert_eq!(
        error_text(redis::cmd("SCAN").arg("123456789").query::<Value>(&mut con)),
        "ERR invalid cursor"
    );
}

#[test]
fn server_commands() {
    let server = Server::start("admin", &[]);
    let mut con = server.client();
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut con)
        .expect("config get");
    assert_eq!(save, vec!["save", ""]);
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(&mut con)
        .expect("config get");
    assert_eq!(fsync, vec!["appendfsync", "always"]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("77")
        .query(&mut con)
        .expect("config set");
    let max: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut con)
        .expect("config get");
    assert_eq!(max[1], "77");
    let info: String = redis::cmd("INFO").query(&mut con).expect("info");
    for needle in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Keyspace",
        "# Bufpool",
        "pool_hits:",
        "pool_evictions:",
        "pool_refault_retries:",
        "pool_resident_bytes:",
        "log_durable_lsn:",
        "log_syncs:",
        "log_group_commit_avg:",
        "replies_per_durable_wait:",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}");
    }
    let before: i64 = redis::cmd("LASTSAVE").query(&mut con).expect("lastsave");
    let _: () = redis::cmd("SAVE").query(&mut con).expect("save");
    let after: i64 = redis::cmd("LASTSAVE").query(&mut con).expect("lastsave");
    assert!(after >= before);
    let (seconds, _micros): (String, String) = redis::cmd("TIME").query(&mut con).expect("time");
    assert!(seconds.parse::<u64>().expect("seconds") > 1_600_000_000);
    let count: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query(&mut con)
        .expect("command count");
    assert!(count > 80, "{count}");
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query(&mut con)
        .expect("client id");
    assert!(id > 0);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut con)
        .expect("setname");
    let name: String = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query(&mut con)
        .expect("getname");
    assert_eq!(name, "tester");
    assert_eq!(
        error_text(redis::cmd("SELECT").arg(1).query::<Value>(&mut con)),
        "ERR DB index is out of range"
    );
    let _: () = redis::cmd("SELECT")
        .arg(0)
        .query(&mut con)
        .expect("select 0");
}

#[test]
fn data_survives_shutdown_sigterm_and_sigint() {
    let dir = common::data_dir("restart");
    let server = Server::start_in(&dir, &[]);
    let mut con = server.client();
    for index in 0..300 {
        let _: () = con.set(format!("k{index}"), index).expect("set");
    }
    let _: () = con.zadd("z", "m", 2.5).expect("zadd");
    let _: () = con.rpush("l", &["a", "b"]).expect("rpush");
    let _: Value = redis::cmd("SHUTDOWN").query(&mut con).unwrap_or(Value::Nil);
    let mut server = server;
    assert!(server.wait().success(), "SHUTDOWN exits 0");

    let server = Server::start_in(&dir, &[]);
    let mut con = server.client();
    assert_eq!(
        redis::cmd("DBSIZE").query::<i64>(&mut con).expect("dbsize"),
        302
    );
    assert_eq!(con.get::<_, i64>("k299").expect("get"), 299);
    assert_eq!(con.zscore::<_, _, f64>("z", "m").expect("zscore"), 2.5);
    // A collection created after the restart gets a fresh id: no stale members show up.
    let _: () = con.rpush("l2", "x").expect("rpush");
    assert_eq!(
        con.lrange::<_, Vec<String>>("l2", 0, -1).expect("lrange"),
        vec!["x"]
    );
    let _: () = con.set("after", "restart").expect("set");
    assert!(server.terminate().success(), "SIGTERM exits 0");

    let server = Server::start_in(&dir, &[]);
    let mut con = server.client();
    assert_eq!(con.get::<_, String>("after").expect("get"), "restart");
    assert_eq!(
        con.lrange::<_, Vec<String>>("l", 0, -1).expect("lrange"),
        vec!["a", "b"]
    );
    let _: () = con.set("before-sigint", "1").expect("set");
    assert!(server.signal("-INT").success(), "SIGINT exits 0");

    let server = Server::start_in(&dir, &[]);
    let mut con = server.client();
    assert_eq!(con.get::<_, String>("before-sigint").expect("get"), "1");
}

#[test]
fn pipelined_clients_all_get_their_replies() {
    pipelined_clients(&[]);
}

/// The naive designs kept for comparison (a log wait per write, no read prefetch) give the
/// same answers.
#[test]
fn naive_modes_give_the_same_answers() {
    pipelined_clients(&[("group-commit", "no"), ("read-prefetch", "no")]);
}

fn pipelined_clients(config: &[(&str, &str)]) {
    let server = Server::start("pipeline", &[]);
    let mut admin = server.client();
    for (name, value) in config {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut admin)
            .expect("config set");
    }
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let url = server.url();
            std::thread::spawn(move || {
                let mut con = common::connect_to(&url);
                let mut pipe = redis::pipe();
                for index in 0..500 {
                    pipe.set(format!("t{thread}:{index}"), index).ignore();
                    pipe.incr(format!("count:{thread}"), 1);
                }
                let counts: Vec<i64> = pipe.query(&mut con).expect("pipeline");
                assert_eq!(counts, (1..=500).collect::<Vec<_>>());
                let keys: Vec<String> =
                    (0..500).map(|index| format!("t{thread}:{index}")).collect();
                let values: Vec<i64> = redis::cmd("MGET").arg(&keys).query(&mut con).expect("mget");
                assert_eq!(values, (0..500).collect::<Vec<_>>());
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
    let mut con = server.client();
    assert_eq!(
        redis::cmd("DBSIZE").query::<i64>(&mut con).expect("dbsize"),
        8 * 501
    );
}
