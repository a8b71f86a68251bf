//! The echo_server example with its stderr connected to a pipe nobody reads (issue 13):
//! it logs through a non-blocking writer, so once the pipe is full its log lines are
//! dropped and it goes on serving. Before, the first full pipe stopped every client.

#![cfg(all(unix, feature = "tokio", feature = "mio", feature = "json"))]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);
/// Connections opened and closed; each logs two INFO lines (about 280 bytes): 5 000 lines,
/// more than the pipe (64 KiB on Linux) and the example's log queue (4 096 lines) hold,
/// so lines are dropped by the end.
const CHURN: usize = 2500;

struct Server {
    child: Child,
    addr: SocketAddr,
    /// Kept open and never read.
    _stderr: std::process::ChildStderr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(driver: &str) -> Server {
    let (mut child, addr) = support::spawn_echo_server(&["--driver", driver, "--port", "0"]);
    let stderr = child.stderr.take().unwrap();
    Server {
        child,
        addr,
        _stderr: stderr,
    }
}

fn ask(addr: SocketAddr) -> Duration {
    let began = Instant::now();
    let s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    (&s).write_all(b"{\"still\":\"here\"}\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"still\":\"here\"}\n");
    began.elapsed()
}

fn served_with_stderr_blocked(driver: &str) {
    let server = start(driver);
    let began = Instant::now();
    for i in 0..CHURN {
        // A server stuck on a blocked stderr stops accepting: the backlog fills up.
        let s = TcpStream::connect_timeout(&server.addr, LIMIT)
            .unwrap_or_else(|e| panic!("connection {i} not accepted: {e}"));
        drop(s);
        assert!(
            began.elapsed() < 4 * LIMIT,
            "connections stopped being accepted"
        );
    }
    let churn = began.elapsed();
    // The pipe has been full for a while: a new client is still answered at once.
    let answer = ask(server.addr);
    assert!(answer < Duration::from_secs(2), "answered in {answer:?}");
    eprintln!(
        "{driver}: {CHURN} connections in {churn:?} with stderr blocked; then answered in {answer:?}"
    );
}

#[test]
fn tokio_example_serves_with_stderr_blocked() {
    served_with_stderr_blocked("tokio");
}

#[test]
fn mio_example_serves_with_stderr_blocked() {
    served_with_stderr_blocked("mio");
}
