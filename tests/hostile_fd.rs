//! File-descriptor exhaustion on both drivers (issue 6): a server under a low RLIMIT_NOFILE
//! is flooded with connections; accepting pauses (the core's AcceptGate: 100 ms on EMFILE),
//! the server keeps serving the connections it has, resumes when clients leave, and never
//! exits.
//!
//! The limit is process-wide, so the server runs in a child process: this binary starts
//! itself with `HOSTILE_FD_CHILD=<driver>`, lowers its limit and serves until told to stop
//! (no test harness: `harness = false` in Cargo.toml).

#[path = "support/hostile.rs"]
mod hostile;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use easynet::protocol::Stream;
use hostile::{DRIVERS, Driver, LIMIT, Peer, ProbeService, Setup};

const ENV: &str = "HOSTILE_FD_CHILD";
/// The child's descriptor limit; the flood is larger than what is left of it.
const NOFILE: u64 = 48;
const FLOOD: usize = 80;

fn main() {
    match std::env::var(ENV).as_deref() {
        Ok("tokio") => child(Driver::Tokio),
        Ok("mio") => child(Driver::Mio),
        Ok(other) => panic!("unknown driver {other}"),
        Err(_) => {
            let start = Instant::now();
            for driver in DRIVERS {
                parent(driver);
            }
            println!(
                "test result: ok. 2 scenarios passed in {:?}",
                start.elapsed()
            );
        }
    }
}

/// The server process: low limit, serve, report the address, stop on "stop".
fn child(driver: Driver) {
    let limit = libc::rlimit {
        rlim_cur: NOFILE,
        rlim_max: NOFILE,
    };
    // SAFETY: setrlimit reads the struct we pass; no other thread uses it.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let server = hostile::serve(
        driver,
        Stream::lines(),
        ProbeService::<String>::default(),
        Setup::default(),
    );
    println!("ADDR {}", server.addr);
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    // `stop` panics (exit code 101) unless the run ends cleanly, i.e. the server never
    // exited on its own.
    server.stop();
    println!("STOPPED");
}

struct ChildServer {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl ChildServer {
    fn start(driver: Driver) -> Self {
        let name = match driver {
            Driver::Tokio => "tokio",
            Driver::Mio => "mio",
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ENV, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(LIMIT)
            .expect("child reports its address");
        let addr = first.strip_prefix("ADDR ").unwrap().parse().unwrap();
        Self { child, addr, lines }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Asks the child to stop; true if it stopped cleanly within the limit.
    fn stop(mut self) -> bool {
        self.child
            .stdin
            .take()
            .unwrap()
            .write_all(b"stop\n")
            .unwrap();
        let stopped = self.lines.recv_timeout(LIMIT).is_ok_and(|l| l == "STOPPED");
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return stopped && status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads one answer with a timeout; `None` if none came.
fn answer(p: &mut Peer, timeout: Duration) -> Option<String> {
    p.reader.get_ref().set_read_timeout(Some(timeout)).unwrap();
    let mut l = String::new();
    match p.reader.read_line(&mut l) {
        Ok(0) => None,
        Ok(_) => Some(l.trim_end().to_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("read: {e}"),
    }
}

fn parent(driver: Driver) {
    let mut server = ChildServer::start(driver);
    let started = Instant::now();
    // The flood: every connection sends one request. The kernel queues what the server
    // cannot accept (FIFO), so the first ones are served and the rest wait.
    let mut peers: Vec<Peer> = (0..FLOOD)
        .map(|i| {
            let mut p = Peer::connect(server.addr);
            p.send(format!("ping{i}\n").as_bytes());
            p
        })
        .collect();
    let mut served = 0;
    for (i, p) in peers.iter_mut().enumerate() {
        // The first one is surely served; the later ones are either quick or waiting.
        let wait = if i == 0 {
            LIMIT
        } else {
            Duration::from_millis(500)
        };
        match answer(p, wait) {
            Some(a) => {
                assert_eq!(a, format!("ping{i}"));
                served += 1;
            }
            None => break,
        }
    }
    assert!(
        served > 0 && served < FLOOD,
        "{driver:?}: {served} of {FLOOD} served under a limit of {NOFILE} descriptors"
    );
    // Paused, not dead: the ones waiting stay unanswered while the served ones still work.
    assert!(answer(&mut peers[FLOOD - 1], Duration::from_millis(300)).is_none());
    assert!(server.alive(), "{driver:?}: the server process exited");
    assert_eq!(peers[0].ask("still").as_deref(), Some("still"));
    // The served clients leave; accepting resumes and every waiting client is answered.
    let waiting = peers.split_off(served);
    drop(peers);
    for (k, mut p) in waiting.into_iter().enumerate() {
        let i = served + k;
        assert_eq!(
            answer(&mut p, LIMIT).as_deref(),
            Some(format!("ping{i}").as_str()),
            "{driver:?}: waiting client {i} answered after recovery"
        );
        // Leave at once so the next waiting one gets a descriptor.
    }
    let mut late = Peer::connect(server.addr);
    assert_eq!(late.ask("after").as_deref(), Some("after"));
    drop(late);
    assert!(server.alive(), "{driver:?}: the server process exited");
    let took = started.elapsed();
    assert!(server.stop(), "{driver:?}: the server stopped cleanly");
    println!(
        "{driver:?}: {served} of {FLOOD} served at first, all served after recovery, in {took:?}"
    );
}
