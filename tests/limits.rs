//! Server limits over loopback on both drivers (issue 13): a slowloris of 1,000
//! connections is shed by the idle timeout while a well-behaved client keeps being served,
//! and `max_connections` holds under churn (a client waiting at the limit is served once
//! another closes).
//!
//! The server-side count is the number of live handlers: a handler is made when its
//! connection is accepted and dropped before its socket is closed, so it is never more than
//! the server's connection table, which the limit bounds.

#![cfg(all(feature = "tokio", feature = "mio"))]

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use easynet::handler::{ConnInfo, HandlerResult, Received, Service, StreamContext, StreamHandler};
use easynet::protocol::Stream;
use support::drivers::{self, Echo, Opts, Running};

/// Live handlers, their peak, and how many were made.
#[derive(Default)]
struct Gauge {
    live: AtomicUsize,
    peak: AtomicUsize,
    made: AtomicUsize,
}

/// The line echo (no receive timeout of its own), counted.
struct Counted {
    echo: Echo,
    gauge: Arc<Gauge>,
}

impl StreamHandler for Counted {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        self.echo.on_connection(cx)
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        self.echo.handle(cx, r)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.live.fetch_sub(1, SeqCst);
    }
}

struct CountedService(Arc<Gauge>);

impl Service for CountedService {
    type Handler = Counted;

    fn new_handler(&self, _: &ConnInfo) -> Counted {
        let live = self.0.live.fetch_add(1, SeqCst) + 1;
        self.0.peak.fetch_max(live, SeqCst);
        self.0.made.fetch_add(1, SeqCst);
        Counted {
            echo: Echo { timeout: None },
            gauge: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Driver {
    Tokio,
    Mio,
    /// examples/poll_loop.rs, the third driver written against the core's public API.
    #[cfg(all(unix, feature = "tls", feature = "json"))]
    PollLoop,
}

fn start(driver: Driver, gauge: &Arc<Gauge>, opts: Opts) -> Running {
    let service = CountedService(gauge.clone());
    match driver {
        Driver::Tokio => drivers::tokio_tcp(Stream::lines(), service, opts),
        Driver::Mio => drivers::mio_tcp(Stream::lines(), service, opts),
        #[cfg(all(unix, feature = "tls", feature = "json"))]
        Driver::PollLoop => {
            let start = easynet::stream::Session::start;
            drivers::poll_loop_tcp(Stream::lines(), service, opts, start)
        }
    }
}

/// A line client; every read is bounded.
struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client(BufReader::new(s))
    }

    fn send(&mut self, line: &str) {
        self.0
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn read_line(&mut self) -> String {
        let mut got = String::new();
        self.0.read_line(&mut got).unwrap();
        got.trim_end().to_owned()
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.read_line()
    }
}

const SLOW: usize = 1000;
const IDLE: Duration = Duration::from_secs(1);

fn slowloris(driver: Driver) {
    let gauge = Arc::new(Gauge::default());
    let opts = Opts {
        idle_timeout: Some(IDLE),
        ..Opts::default()
    };
    let server = start(driver, &gauge, opts);
    let addr = server.addr;

    // The well-behaved client asks every 50 ms (well inside the idle timeout) until the
    // slowloris is over, and times each answer.
    let done = Arc::new(AtomicBool::new(false));
    let good = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let (mut n, mut worst) = (0u32, Duration::ZERO);
            while !done.load(SeqCst) {
                let t = Instant::now();
                assert_eq!(c.ask(&format!("ping{n}")), format!("ping{n}"));
                worst = worst.max(t.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(50)); // its pace, not a wait
            }
            (n, worst)
        })
    };

    // 1,000 connections each send a byte, and another one half the idle timeout later;
    // never a whole line.
    let t0 = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    let connected = t0.elapsed();
    if let Some(rest) = (IDLE / 2).checked_sub(t0.elapsed()) {
        std::thread::sleep(rest); // the trickle's pace
    }
    let mut last = Vec::with_capacity(SLOW);
    for s in &mut slow {
        // Taken before the write: the server may read the byte before `write_all` returns.
        last.push(Instant::now());
        s.write_all(b"E").unwrap();
    }

    // Each is closed gracefully (FIN, not a reset), no earlier than the idle timeout after
    // its last byte (that byte restarted it), and all within a bound.
    for (i, (s, sent)) in slow.iter_mut().zip(&last).enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            other => panic!("{driver:?}: slowloris {i} not shed by a graceful close: {other:?}"),
        }
        assert!(
            sent.elapsed() >= IDLE,
            "{driver:?}: slowloris {i} shed early"
        );
    }
    let shed = last.last().unwrap().elapsed();
    done.store(true, SeqCst);
    let (asked, worst) = good.join().unwrap();
    // Handlers are dropped before their socket closes: only the good client's is left
    // once every slowloris socket has seen its end (and the good client has just left).
    assert!(gauge.live.load(SeqCst) <= 1, "{driver:?}: handlers left");
    assert_eq!(gauge.made.load(SeqCst), SLOW + 1);
    assert!(
        asked >= 10,
        "{driver:?}: the good client asked only {asked} times"
    );
    assert!(
        shed < IDLE + Duration::from_secs(5),
        "{driver:?}: shedding took {shed:?}"
    );
    eprintln!(
        "{driver:?}: {SLOW} slowloris connected in {connected:?}, all shed {shed:?} after the last byte \
         (idle timeout {IDLE:?}); good client: {asked} answers, worst {worst:?}"
    );
    drop(slow);
    server.stop();
}

#[test]
fn slowloris_is_shed_by_the_idle_timeout_tokio() {
    slowloris(Driver::Tokio);
}

#[test]
fn slowloris_is_shed_by_the_idle_timeout_mio() {
    slowloris(Driver::Mio);
}

#[cfg(all(unix, feature = "tls", feature = "json"))]
#[test]
fn slowloris_is_shed_by_the_idle_timeout_poll_loop() {
    slowloris(Driver::PollLoop);
}

const MAX: usize = 8;
const CHURNERS: usize = 32;
const ROUNDS: usize = 20;

fn max_connections(driver: Driver) {
    let gauge = Arc::new(Gauge::default());
    let opts = Opts {
        max_connections: Some(MAX),
        ..Opts::default()
    };
    let server = start(driver, &gauge, opts);
    let addr = server.addr;

    // Full: the next client connects (the kernel's backlog) but is not served...
    let mut held: Vec<Client> = (0..MAX)
        .map(|i| {
            let mut c = Client::connect(addr);
            assert_eq!(c.ask(&format!("held{i}")), format!("held{i}"));
            c
        })
        .collect();
    assert_eq!(gauge.live.load(SeqCst), MAX);
    let mut waiting = Client::connect(addr);
    waiting.send("waiting");
    let sock = waiting.0.get_ref();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    match sock.peek(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{driver:?}: served past max_connections: {other:?}"),
    }
    assert_eq!(
        gauge.live.load(SeqCst),
        MAX,
        "{driver:?}: accepted past the limit"
    );
    // ...until one closes.
    let t = Instant::now();
    drop(held.pop());
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(waiting.read_line(), "waiting");
    let resumed = t.elapsed();
    drop(held);
    drop(waiting);

    // Churn: many more clients than the limit connect, ask, close.
    let t = Instant::now();
    let churners: Vec<_> = (0..CHURNERS)
        .map(|n| {
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    let mut c = Client::connect(addr);
                    let line = format!("c{n}r{r}");
                    assert_eq!(c.ask(&line), line);
                }
            })
        })
        .collect();
    for c in churners {
        c.join().unwrap();
    }
    let churned = t.elapsed();
    let peak = gauge.peak.load(SeqCst);
    assert!(
        peak <= MAX,
        "{driver:?}: {peak} connections open, limit {MAX}"
    );
    assert_eq!(gauge.made.load(SeqCst), MAX + 1 + CHURNERS * ROUNDS);
    eprintln!(
        "{driver:?}: limit {MAX}: a waiting client served {resumed:?} after a close; \
         {} clients by {CHURNERS} threads in {churned:?}, peak {peak} open",
        CHURNERS * ROUNDS
    );
    server.stop();
}

#[test]
fn max_connections_holds_under_churn_tokio() {
    max_connections(Driver::Tokio);
}

#[test]
fn max_connections_holds_under_churn_mio() {
    max_connections(Driver::Mio);
}

#[cfg(all(unix, feature = "tls", feature = "json"))]
#[test]
fn max_connections_holds_under_churn_poll_loop() {
    max_connections(Driver::PollLoop);
}

/// On a Unix stream socket, both limits at once: at `max_connections` 1 a second client
/// waits until the first, gone silent, is closed by the idle timeout.
#[cfg(unix)]
fn unix_limits(driver: Driver) {
    use std::os::unix::net::UnixStream;
    let path = support::unix::TempPath::new("limits");
    let idle = Duration::from_millis(300);
    let echo = |_: &ConnInfo| Echo { timeout: None };
    let stop: Box<dyn FnOnce()> = match driver {
        Driver::Tokio => {
            let server = easynet::aio::AsyncUnixStreamServer::builder(Stream::lines(), echo)
                .path(path.path())
                .max_connections(1)
                .idle_timeout(idle)
                .build()
                .unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (tx, mut rx) = tokio::sync::watch::channel(false);
            let s = server.clone();
            let task = rt.spawn(async move { s.serve_notify(tx).await });
            rt.block_on(rx.wait_for(|up| *up)).unwrap();
            Box::new(move || {
                rt.block_on(async {
                    server.shutdown().await;
                    task.await.unwrap().unwrap();
                })
            })
        }
        #[cfg(all(unix, feature = "tls", feature = "json"))]
        Driver::PollLoop => unreachable!("the poll loop example serves TCP only"),
        Driver::Mio => {
            let server = easynet::blocking::UnixStreamServer::builder(Stream::lines(), echo)
                .path(path.path())
                .max_connections(1)
                .idle_timeout(idle)
                .build()
                .unwrap();
            let mut thread = easynet::blocking::ServerThread::start(server).unwrap();
            Box::new(move || thread.join(None).unwrap())
        }
    };
    let ask = |s: &UnixStream, line: &str| {
        (&*s).write_all(format!("{line}\n").as_bytes()).unwrap();
    };
    let a = UnixStream::connect(path.path()).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ask(&a, "a");
    let mut reader = BufReader::new(&a);
    let mut got = String::new();
    reader.read_line(&mut got).unwrap();
    assert_eq!(got, "a\n");
    let t = Instant::now();
    let b = UnixStream::connect(path.path()).unwrap();
    ask(&b, "b");
    b.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 8];
    match (&b).read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{driver:?}: served past max_connections: {other:?}"),
    }
    got.clear();
    assert_eq!(
        reader.read_line(&mut got).unwrap(),
        0,
        "{driver:?}: idle A not closed"
    );
    assert!(
        t.elapsed() >= idle - Duration::from_millis(50),
        "{driver:?}: closed early"
    );
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    got.clear();
    BufReader::new(&b).read_line(&mut got).unwrap();
    assert_eq!(
        got, "b\n",
        "{driver:?}: the waiting client served once A was closed"
    );
    drop((a, b));
    stop();
}

#[cfg(unix)]
#[test]
fn unix_stream_limits_tokio() {
    unix_limits(Driver::Tokio);
}

#[cfg(unix)]
#[test]
fn unix_stream_limits_mio() {
    unix_limits(Driver::Mio);
}
