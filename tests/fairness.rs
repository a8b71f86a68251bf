//! Regression: one connection must not starve the others.
//!
//! A flooding client sends [`FLOOD`] empty lines (each a complete, tiny request) in one
//! stream; meanwhile a probe client on another connection of the same event loop (mio: one
//! worker; tokio: a current-thread runtime; the poll loop example: its one thread) sends a
//! request every 20 ms and times each answer. Every probe sent while the flood is being
//! handled must be answered within [`BOUND`]. A per-turn budget that counts socket reads rather than requests handled lets
//! one turn of the flooding connection handle hundreds of thousands of requests (16 reads
//! of 16 KiB of empty lines) while the probe waits.
//!
//! The speed of the server is not what is measured: the flood is long enough (seconds in a
//! debug build) that a fair loop answers the probe between two slices of it. The tests
//! take turns (one flood at a time) so that they do not compete for the cores.

#![cfg(all(feature = "tokio", feature = "mio"))]

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use easynet::handler::{
    ConnInfo, HandlerResult, Next, Received, Service, StreamContext, StreamHandler,
};
use easynet::protocol::Stream;

/// Empty lines the flooding client sends.
const FLOOD: u64 = 2_000_000;
/// The longest a probe may wait for its answer while the flood is handled.
const BOUND: Duration = Duration::from_millis(100);
/// Probes sent during the flood needed for a verdict.
const MIN_PROBES: usize = 5;
/// A probe that waits this long is not waited for any more (it failed anyway).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Every other wait of this file gives up after this.
const LIMIT: Duration = Duration::from_secs(20);

/// Handles empty lines without answering (counted in `flood`); echoes anything else.
struct Quiet {
    flood: Arc<AtomicU64>,
}

impl StreamHandler for Quiet {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(line) if line.is_empty() => {
                self.flood.fetch_add(1, Ordering::Relaxed);
            }
            Received::Request(line) => cx.send(&line)?,
            Received::Timeout => {}
            Received::ParseError(e) => cx.send(format!("error: {e}"))?,
        }
        Ok(Next::recv())
    }
}

#[derive(Clone, Default)]
struct QuietService {
    flood: Arc<AtomicU64>,
}

impl Service for QuietService {
    type Handler = Quiet;

    fn new_handler(&self, _: &ConnInfo) -> Quiet {
        Quiet {
            flood: self.flood.clone(),
        }
    }
}

/// A server on one thread; `stop` shuts it down (bounded).
struct Server {
    addr: SocketAddr,
    stop: Box<dyn FnOnce() + Send>,
}

/// Mio: a `TcpServer` with one worker (the default) on a `ServerThread`.
fn mio(service: QuietService) -> Server {
    use easynet::blocking::{ServerThread, TcpServer};
    let server = TcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .workers(1)
        .log_client_connection(false)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addr = thread.addresses()[0];
    Server {
        addr,
        stop: Box::new(move || {
            let _ = thread.join(None);
        }),
    }
}

/// Tokio: an `AsyncTcpServer` on a current-thread runtime, so every connection shares one
/// thread.
fn tokio(service: QuietService) -> Server {
    use easynet::aio::AsyncTcpServer;
    let server = AsyncTcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .log_client_connection(false)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (up_tx, up_rx) = mpsc::channel();
    let s = server.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(s.serve_notify(up_tx));
        rt.shutdown_timeout(Duration::ZERO);
        r
    });
    up_rx.recv_timeout(LIMIT).expect("serving within the limit");
    let addr = server.addresses()[0];
    Server {
        addr,
        stop: Box::new(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = tokio::time::timeout(LIMIT, server.shutdown()).await;
            });
            let _ = thread.join();
        }),
    }
}

/// The poll loop example (examples/poll_loop.rs): one thread for every connection.
#[cfg(all(unix, feature = "tls", feature = "json"))]
fn poll_loop(service: QuietService) -> Server {
    let opts = support::drivers::Opts {
        shutdown_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let start = easynet::stream::Session::start;
    let running = support::drivers::poll_loop_tcp(Stream::lines(), service, opts, start);
    Server {
        addr: running.addr,
        stop: Box::new(move || running.stop()),
    }
}

/// Runs `f` on a thread and waits for it at most `limit`.
fn bounded(what: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    if rx.recv_timeout(limit).is_err() {
        panic!("{what}: did not finish within {limit:?}");
    }
}

/// One probe round trip; `None` if no answer came within [`PROBE_TIMEOUT`].
fn probe(writer: &mut TcpStream, reader: &mut BufReader<TcpStream>, i: usize) -> Option<Duration> {
    let t = Instant::now();
    writer.write_all(format!("probe-{i}\n").as_bytes()).unwrap();
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => panic!("probe {i}: the server closed the connection"),
        Ok(_) => {
            assert_eq!(line, format!("probe-{i}\n"), "probe {i}: its echo");
            Some(t.elapsed())
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("probe {i}: {e}"),
    }
}

/// One flood at a time: the tests would otherwise share the machine's cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn scenario(name: &str, start: fn(QuietService) -> Server) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let service = QuietService::default();
    let flood = service.flood.clone();
    let server = start(service);

    let p = TcpStream::connect(server.addr).unwrap();
    p.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
    p.set_write_timeout(Some(LIMIT)).unwrap();
    let mut pw = p.try_clone().unwrap();
    let mut pr = BufReader::new(p);
    // Idle round trips, for the report.
    let idle: Vec<Duration> = (0..5)
        .map(|i| probe(&mut pw, &mut pr, i).expect("an idle probe is answered"))
        .collect();
    let idle_max = idle.iter().max().copied().unwrap();

    // The flood, in one write, from a thread of its own; the socket stays open until the
    // end (no EOF or reset while the server works through it).
    let f = TcpStream::connect(server.addr).unwrap();
    f.set_write_timeout(Some(LIMIT)).unwrap();
    let mut fw = f.try_clone().unwrap();
    let flooder = std::thread::spawn(move || {
        let data = vec![b'\n'; FLOOD as usize];
        fw.write_all(&data).is_ok()
    });
    assert!(
        wait_until(LIMIT, || flood.load(Ordering::Relaxed) > 0),
        "{name}: the flood did not start"
    );

    // Probes every 20 ms while the flood is being handled.
    let flood_began = Instant::now();
    let mut during = Vec::new();
    let mut i = 5;
    let mut timed_out = false;
    while flood.load(Ordering::Relaxed) < FLOOD && flood_began.elapsed() < LIMIT {
        let handled_before = flood.load(Ordering::Relaxed);
        match probe(&mut pw, &mut pr, i) {
            Some(rtt) => during.push((handled_before, rtt)),
            None => {
                during.push((handled_before, PROBE_TIMEOUT));
                timed_out = true;
                break; // the connection is out of step now; the verdict is clear
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let flood_handled = flood.load(Ordering::Relaxed);
    let flood_took = flood_began.elapsed();

    drop(pw);
    drop(pr);
    bounded("stopping the server", LIMIT + LIMIT, server.stop);
    let flood_written = flooder.join().unwrap();
    drop(f);

    let worst = during
        .iter()
        .max_by_key(|(_, rtt)| *rtt)
        .copied()
        .unwrap_or_default();
    let over: Vec<_> = during.iter().filter(|(_, rtt)| *rtt >= BOUND).collect();
    eprintln!(
        "{name}: idle max {idle_max:?}; {} probes during the flood ({flood_handled} of {FLOOD} \
         empty lines handled in {flood_took:?}, flood written: {flood_written}); worst {:?} \
         (sent after {} flood requests); {} probes at or over {BOUND:?}{}",
        during.len(),
        worst.1,
        worst.0,
        over.len(),
        if timed_out {
            " (a probe timed out)"
        } else {
            ""
        }
    );
    assert!(
        worst.1 < BOUND,
        "{name}: a probe waited {:?} (bound {BOUND:?}) while the flood was handled \
         (sent after {} of {FLOOD} flood requests; {} of {} probes over the bound; idle max \
         {idle_max:?})",
        worst.1,
        worst.0,
        over.len(),
        during.len()
    );
    assert!(
        during.len() >= MIN_PROBES,
        "{name}: only {} probes during the flood: it ended too soon to judge",
        during.len()
    );
}

/// Polls `done` every millisecond; false at the deadline.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
fn mio_probe_is_answered_promptly_while_another_connection_floods() {
    scenario("mio", mio);
}

#[test]
fn tokio_probe_is_answered_promptly_while_another_connection_floods() {
    scenario("tokio", tokio);
}

#[test]
#[cfg(all(unix, feature = "tls", feature = "json"))]
fn poll_loop_probe_is_answered_promptly_while_another_connection_floods() {
    scenario("poll_loop", poll_loop);
}
