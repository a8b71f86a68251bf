//! Regression: a graceful shutdown must not destroy answers already written.
//!
//! Ten clients pipeline requests; the server reads and answers every one of them into its
//! send queues; then a graceful shutdown starts while the clients are still sending (one
//! request per 10 ms, as a client that has not seen the close yet does) and before they
//! have read their answers. Every answer to every request the server handled must reach its
//! client, followed by a clean EOF: no reset, nothing truncated. A server that closes its
//! socket as soon as the answers are handed to the kernel makes the peer's next request
//! reset the connection, and the kernel drops the answers still queued to that peer.
//!
//! Each driver runs two variants: clients that read as fast as they can once the shutdown
//! begins, and slow readers (16 KiB per 10 ms).

#![cfg(all(feature = "tokio", feature = "mio"))]

mod support;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use easynet::addr::Addr;
use easynet::handler::{
    ConnInfo, HandlerResult, Next, Received, Service, StreamContext, StreamHandler,
};
use easynet::protocol::Stream;

/// Clients per scenario.
const CLIENTS: usize = 10;
/// Requests each client pipelines before it slows down to one per 10 ms. Their answers
/// (252 000 bytes) stay under the default 256 KiB write high-water mark, so the server
/// reads and answers all of them although the clients read nothing before the shutdown.
const PIPELINED: u64 = 14_000;
/// The servers' shutdown timeout: long enough that its deadline is not what cuts clients.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Every blocking read, write, wait and join of this file gives up after this.
const LIMIT: Duration = Duration::from_secs(20);

/// Echoes lines and counts the requests it answered (one answer per request).
struct Counted {
    handled: Arc<AtomicU64>,
}

impl StreamHandler for Counted {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(line) => {
                cx.send(&line)?;
                self.handled.fetch_add(1, Ordering::SeqCst);
            }
            Received::Timeout => {}
            Received::ParseError(e) => panic!("unexpected parse error: {e}"),
        }
        Ok(Next::recv())
    }
}

/// Makes [`Counted`] handlers; one counter per connection, keyed by the peer's address.
#[derive(Clone, Default)]
struct Counters {
    by_peer: Arc<Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>>,
}

impl Counters {
    fn handled(&self, peer: SocketAddr) -> Option<u64> {
        let map = self.by_peer.lock().unwrap();
        map.get(&peer).map(|c| c.load(Ordering::SeqCst))
    }
}

impl Service for Counters {
    type Handler = Counted;

    fn new_handler(&self, info: &ConnInfo) -> Counted {
        let Addr::Inet(peer) = info.peer else {
            panic!("not an internet peer: {:?}", info.peer)
        };
        let handled = Arc::new(AtomicU64::new(0));
        self.by_peer.lock().unwrap().insert(peer, handled.clone());
        Counted { handled }
    }
}

#[derive(Debug, Clone, Copy)]
enum Driver {
    Tokio,
    Mio,
    /// The poll loop example (examples/poll_loop.rs).
    #[cfg(all(unix, feature = "tls", feature = "json"))]
    PollLoop,
}

/// A running server: its address and how to stop it (graceful shutdown, then the run's end;
/// the tokio runtime is dropped afterwards, as a process exiting would).
struct Server {
    addr: SocketAddr,
    stop: Box<dyn FnOnce() -> Result<(), String> + Send>,
}

fn start(driver: Driver, service: Counters) -> Server {
    match driver {
        Driver::Tokio => start_tokio(service),
        Driver::Mio => start_mio(service),
        #[cfg(all(unix, feature = "tls", feature = "json"))]
        Driver::PollLoop => {
            let opts = support::drivers::Opts {
                shutdown_timeout: Some(SHUTDOWN_TIMEOUT),
                ..Default::default()
            };
            let start = easynet::stream::Session::start;
            let running = support::drivers::poll_loop_tcp(Stream::lines(), service, opts, start);
            Server {
                addr: running.addr,
                stop: Box::new(move || {
                    running.stop();
                    Ok(())
                }),
            }
        }
    }
}

fn start_tokio(service: Counters) -> Server {
    use easynet::aio::AsyncTcpServer;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = AsyncTcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .log_client_connection(false)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = rt.spawn(async move { s.serve_notify(tx).await });
    rt.block_on(async {
        tokio::time::timeout(LIMIT, rx.wait_for(|up| *up))
            .await
            .expect("serving within the limit")
            .unwrap();
    });
    let addr = server.addresses()[0];
    Server {
        addr,
        stop: Box::new(move || {
            let r = rt.block_on(async {
                tokio::time::timeout(LIMIT, server.shutdown())
                    .await
                    .map_err(|_| "shutdown() did not return in time".to_owned())?;
                match tokio::time::timeout(LIMIT, task).await {
                    Err(_) => Err("serve did not return in time".to_owned()),
                    Ok(Err(e)) => Err(format!("serve task failed: {e}")),
                    Ok(Ok(Err(e))) => Err(format!("serve returned {e}")),
                    Ok(Ok(Ok(()))) => Ok(()),
                }
            });
            rt.shutdown_timeout(Duration::ZERO);
            r
        }),
    }
}

fn start_mio(service: Counters) -> Server {
    use easynet::blocking::{ServerThread, TcpServer};
    let server = TcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .log_client_connection(false)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addr = thread.addresses()[0];
    Server {
        addr,
        stop: Box::new(move || {
            let handle = thread.handle().clone();
            handle.shutdown(Some(SHUTDOWN_TIMEOUT));
            thread.join(None).map_err(|e| format!("serve returned {e}"))
        }),
    }
}

/// How a client's reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    TimedOut,
    Other(String),
}

struct Outcome {
    answers: u64,
    end: End,
    sent: u64,
    /// From the shutdown order to the end of reading.
    took: Duration,
}

struct Client {
    local: SocketAddr,
    thread: JoinHandle<Outcome>,
}

/// Request `i` of client `c`: 18 bytes with its newline.
fn request(c: usize, i: u64) -> String {
    format!("c{c:02}-{i:012}\n")
}

/// Connects, pipelines [`PIPELINED`] requests, then sends one request every 10 ms until it
/// has read the server's EOF (or the connection failed). Its reader starts once `go` is set
/// (the shutdown has been ordered: the answers are still queued at the server, as for any
/// client that is behind), then counts the answers until EOF, checking that they are the
/// echoes, in order; a `slow` reader reads 16 KiB per 10 ms, the others as fast as they can.
fn client(addr: SocketAddr, c: usize, slow: bool, go: Arc<AtomicBool>) -> Client {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    sock.set_write_timeout(Some(LIMIT)).unwrap();
    let local = sock.local_addr().unwrap();
    let mut w = sock.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = std::thread::spawn(move || {
        let batch: String = (0..PIPELINED).map(|i| request(c, i)).collect();
        if w.write_all(batch.as_bytes()).is_err() {
            return 0;
        }
        let mut sent = PIPELINED;
        while !stop_w.load(Ordering::SeqCst) {
            if w.write_all(request(c, sent).as_bytes()).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        sent
    });
    let thread = std::thread::spawn(move || {
        let waiting = Instant::now();
        while !go.load(Ordering::SeqCst) && waiting.elapsed() < LIMIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        let mut r = &sock;
        let mut chunk = vec![0u8; if slow { 16 * 1024 } else { 64 * 1024 }];
        let mut line = Vec::new();
        let mut answers = 0u64;
        let end = 'read: loop {
            match r.read(&mut chunk) {
                Ok(0) => break End::Eof,
                Ok(n) => {
                    for &b in &chunk[..n] {
                        line.push(b);
                        if b == b'\n' {
                            if line != request(c, answers).as_bytes() {
                                let got = String::from_utf8_lossy(&line).into_owned();
                                break 'read End::Other(format!("answer {answers} was {got:?}"));
                            }
                            answers += 1;
                            line.clear();
                        }
                    }
                    if slow {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break End::Reset,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break End::TimedOut;
                }
                Err(e) => break End::Other(e.to_string()),
            }
        };
        let took = t.elapsed();
        stop.store(true, Ordering::SeqCst);
        let sent = writer.join().unwrap();
        let _ = sock.shutdown(Shutdown::Both);
        let end = match end {
            // The reset was reported to the writer's send; the read then sees a bare EOF
            // in the middle of an answer.
            End::Eof if !line.is_empty() => End::Other("EOF in the middle of an answer".into()),
            end => end,
        };
        Outcome {
            answers,
            end,
            sent,
            took,
        }
    });
    Client { local, thread }
}

/// Polls `done` every 5 ms; false at the deadline.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Runs `f` on a thread and waits for it at most `limit`.
fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(e) => panic!("{what}: did not finish within {limit:?} ({e})"),
    }
}

fn scenario(driver: Driver, slow: bool) {
    let counters = Counters::default();
    let server = start(driver, counters.clone());
    let go = Arc::new(AtomicBool::new(false));
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|c| client(server.addr, c, slow, go.clone()))
        .collect();
    // Shut down once the server has handled the pipelined requests of every client.
    let ready = wait_until(LIMIT, || {
        clients
            .iter()
            .all(|cl| counters.handled(cl.local).is_some_and(|n| n >= PIPELINED))
    });
    assert!(
        ready,
        "{driver:?}: the server did not handle {PIPELINED} requests of every client in time"
    );
    go.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let stopped = bounded("stopping the server", LIMIT + LIMIT, server.stop);
    let stop_took = t.elapsed();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (c, cl) in clients.into_iter().enumerate() {
        let out = bounded("a client", LIMIT + LIMIT, move || {
            cl.thread.join().map(|o| (cl.local, o))
        });
        let (local, out) = match out {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!("client {c}: its thread panicked"));
                continue;
            }
        };
        let handled = counters.handled(local).unwrap_or(0);
        report.push(format!(
            "client {c}: handled {handled}, answers {} ({} lost), sent {}, ended {:?} after {:?}",
            out.answers,
            handled as i64 - out.answers as i64,
            out.sent,
            out.end,
            out.took
        ));
        if out.answers != handled || out.end != End::Eof {
            failures.push(format!(
                "client {c}: {} answers of {handled} handled, ended by {:?}",
                out.answers, out.end
            ));
        }
    }
    let kind = if slow { "slow readers" } else { "fast readers" };
    eprintln!(
        "{driver:?}, {kind}: stop took {stop_took:?} ({stopped:?})\n  {}",
        report.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{driver:?}, {kind}: answers lost at shutdown:\n  {}",
        failures.join("\n  ")
    );
    stopped.unwrap_or_else(|e| panic!("{driver:?}: {e}"));
}

#[test]
fn tokio_shutdown_delivers_every_answer_to_pipelining_clients() {
    scenario(Driver::Tokio, false);
}

#[test]
fn tokio_shutdown_delivers_every_answer_to_slow_readers() {
    scenario(Driver::Tokio, true);
}

#[test]
fn mio_shutdown_delivers_every_answer_to_pipelining_clients() {
    scenario(Driver::Mio, false);
}

#[test]
fn mio_shutdown_delivers_every_answer_to_slow_readers() {
    scenario(Driver::Mio, true);
}

#[test]
#[cfg(all(unix, feature = "tls", feature = "json"))]
fn poll_loop_shutdown_delivers_every_answer_to_pipelining_clients() {
    scenario(Driver::PollLoop, false);
}

#[test]
#[cfg(all(unix, feature = "tls", feature = "json"))]
fn poll_loop_shutdown_delivers_every_answer_to_slow_readers() {
    scenario(Driver::PollLoop, true);
}
