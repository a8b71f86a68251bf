//! The echo_server example's signals (issue 13): the first SIGTERM shuts it down
//! gracefully, logging how many connections drain, and it exits with status 0; a second
//! SIGTERM during that shutdown resets the connections still open and it exits with 130.

#![cfg(all(unix, feature = "tokio", feature = "mio", feature = "json"))]

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

struct Server {
    /// `None` once handed to a thread that waits for its end.
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    /// Its log lines, as they come.
    log: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    fn start(driver: &str) -> Self {
        let (mut child, addr) =
            support::spawn_echo_server(&["--driver", driver, "--port", "0", "--framing", "line"]);
        let (tx, log) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let pid = child.id();
        Self {
            child: Some(child),
            pid,
            addr,
            log,
        }
    }

    fn signal(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a log line containing `text`.
    fn logged(&self, text: &str) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => {
                    // stderr is a pipe here, not a terminal: no colour codes in the log.
                    assert!(!line.contains('\x1b'), "ANSI escape in {line:?}");
                    return line;
                }
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }

    /// The exit status, waiting at most `limit` (killed after that).
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("not waited for yet");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().map(|s| s.code()));
        });
        match rx.recv_timeout(limit) {
            Ok(code) => code.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
                panic!("still running after {limit:?}");
            }
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

fn ask(s: &TcpStream, line: &str) -> String {
    (&*s).write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    answer.trim_end().to_owned()
}

/// Reads until the end: true for an EOF, false for a reset.
fn ends_gracefully(mut s: &TcpStream) -> bool {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return false,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn first_signal_is_graceful(driver: &str) {
    let mut server = Server::start(driver);
    let client = connect(server.addr);
    assert_eq!(ask(&client, "hello"), "hello");
    server.signal();
    let line = server.logged("connections draining");
    assert!(
        line.contains("shutting down, 1 connections draining"),
        "{line}"
    );
    assert!(ends_gracefully(&client), "{driver}: closed gracefully");
    assert_eq!(server.exit_code(LIMIT), Some(0), "{driver}");
}

fn second_signal_resets_what_is_left(driver: &str) {
    let mut server = Server::start(driver);
    // A client that never reads: its answers fill the server's queue and hold the
    // graceful shutdown for its whole timeout (30 s).
    let stuck = connect(server.addr);
    stuck
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let line = [&[b'x'; 1023][..], b"\n"].concat();
    while (&stuck).write_all(&line).is_ok() {}
    let good = connect(server.addr);
    assert_eq!(ask(&good, "ok"), "ok");

    server.signal();
    let draining = server.logged("connections draining");
    assert!(draining.contains("2 connections draining"), "{draining}");
    assert!(
        ends_gracefully(&good),
        "{driver}: the good client closed gracefully"
    );
    assert_eq!(
        server.child.as_mut().unwrap().try_wait().unwrap(),
        None,
        "{driver}: held by the stuck client"
    );

    let hurried = Instant::now();
    server.signal();
    server.logged("second signal");
    assert_eq!(server.exit_code(LIMIT), Some(130), "{driver}");
    assert!(
        hurried.elapsed() < Duration::from_secs(5),
        "{driver}: {:?}",
        hurried.elapsed()
    );
    assert!(
        !ends_gracefully(&stuck),
        "{driver}: the stuck client was reset"
    );
}

#[test]
fn tokio_first_signal_is_graceful() {
    first_signal_is_graceful("tokio");
}

#[test]
fn mio_first_signal_is_graceful() {
    first_signal_is_graceful("mio");
}

#[test]
fn tokio_second_signal_resets_what_is_left() {
    second_signal_resets_what_is_left("tokio");
}

#[test]
fn mio_second_signal_resets_what_is_left() {
    second_signal_resets_what_is_left("mio");
}
