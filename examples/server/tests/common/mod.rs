//! Starting and stopping the built `bufpool-server` for tests: ephemeral port on 127.0.0.1,
//! data directory under the target dir (O_DIRECT needs a real filesystem).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A fresh data directory for one test.
pub fn data_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "server-{test}-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A running server; killed (SIGKILL) on drop if still running.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    stderr_lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts the server on `dir` with extra flags; waits for its startup line.
    pub fn start_in(dir: &Path, flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bufpool-server"))
            .args(["--port", "0", "--pool-mb", "32", "--dir"])
            .arg(dir)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting bufpool-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        // Lines before it (recovery notes) are skipped; bounded by the timeout per line.
        let first = loop {
            let line = receiver
                .recv_timeout(Duration::from_secs(30))
                .expect("the server's startup line");
            if line.contains("listening on") || !line.starts_with("bufpool-server: redoing") {
                break line;
            }
        };
        let port = first
            .split("listening on 127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected startup line: {first}"));
        Server {
            child,
            port,
            dir: dir.to_path_buf(),
            stderr_lines: receiver,
        }
    }

    pub fn start(test: &str, flags: &[&str]) -> Server {
        Server::start_in(&data_dir(test), flags)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        connect_to(&self.url())
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// Sends SIGTERM and waits for the exit (bounded).
    pub fn terminate(self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Sends `signal` (as `kill` spells it) and waits for the exit (bounded).
    pub fn signal(mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        self.wait()
    }

    /// Waits for the process to exit on its own (bounded).
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the server did not exit within 60 s");
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaping");
    }

    /// Lines the server logged after its startup line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.stderr_lines.try_iter().collect()
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A raw TCP client: exact bytes in, exact bytes out.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sending");
    }

    /// Sends a command as a multibulk request.
    pub fn command(&mut self, args: &[&str]) {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.send(request.as_bytes());
    }

    /// Reads until `expected` bytes arrived or the peer closed; returns what came.
    pub fn read_exactly(&mut self, expected: usize) -> Vec<u8> {
        let mut got = vec![0u8; expected];
        let mut filled = 0;
        while filled < expected {
            match self.stream.read(&mut got[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(count) => filled += count,
            }
        }
        got.truncate(filled);
        got
    }

    /// Reads one line (through CRLF).
    pub fn line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        // Bounded by the read timeout and the line length.
        while line.len() < 1 << 20 {
            match self.stream.read(&mut byte) {
                Ok(1) => {
                    line.push(byte[0]);
                    if line.ends_with(b"\r\n") {
                        break;
                    }
                }
                _ => break,
            }
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    /// Whether the server closed the connection (EOF or a reset within the read timeout;
    /// a timeout means it is still open).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// A `redis` connection to `url` (for threads, which cannot borrow the `Server`).
pub fn connect_to(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connecting")
}

/// A counter of INFO's stats section.
pub fn stat(con: &mut redis::Connection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(con).expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from {info}"))
}

/// Writes `key:{key:08}` = `value(key)` for every key below `keys`, 1,000 to an MSET: a
/// data set several times a 1 MiB pool for the tests of reads that miss.
pub fn load_keys(con: &mut redis::Connection, keys: usize, value: impl Fn(usize) -> String) {
    for chunk in (0..keys).collect::<Vec<usize>>().chunks(1000) {
        let mut mset = redis::cmd("MSET");
        for &key in chunk {
            mset.arg(format!("key:{key:08}")).arg(value(key));
        }
        let _: () = mset.query(con).expect("mset");
    }
}
