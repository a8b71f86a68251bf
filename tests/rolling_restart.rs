//! Rolling restart under load (issue 13): a second server takes over the port with
//! `reuse_port` while the first shuts down gracefully, and no request is lost or answered
//! twice. Both drivers.
//!
//! The guarantee tested is the one a graceful shutdown gives: every request a server read is
//! answered before its connection closes. A client whose connection ends before the answer
//! (a FIN from the closing server, or a reset for a connection still waiting in the old
//! listener's accept queue when it closed: the kernel does that, see the recipe in
//! RELIABILITY.md) knows the request was not handled and sends it again on a new
//! connection, which the new server takes. So each request is handled exactly once: the
//! servers count every id they handle, and a handled request whose answer was lost would
//! show up handled twice.

#![cfg(all(feature = "tokio", feature = "mio"))]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use easynet::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
use easynet::protocol::Stream;

const LIMIT: Duration = Duration::from_secs(20);
const CLIENTS: usize = 8;
/// A client opens a new connection after this many requests, so that connections are
/// accepted all through the restart.
const PER_CONNECTION: u64 = 20;

/// How often each request id was handled, by which server.
#[derive(Default)]
struct Handled {
    ids: Mutex<HashMap<String, u32>>,
    by_server: [AtomicU64; 2],
}

struct Recorder {
    handled: Arc<Handled>,
    server: usize,
}

impl StreamHandler for Recorder {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        if let Received::Request(id) = r {
            *self
                .handled
                .ids
                .lock()
                .unwrap()
                .entry(id.clone())
                .or_default() += 1;
            self.handled.by_server[self.server].fetch_add(1, Ordering::Relaxed);
            cx.send(&id)?;
        }
        Ok(Next::recv())
    }
}

/// A server in the background; `stop` shuts it down gracefully and waits for the end.
struct Running {
    addr: SocketAddr,
    stop: Box<dyn FnOnce() + Send>,
}

type Start = fn(u16, Arc<Handled>, usize) -> Running;

fn service(handled: Arc<Handled>, server: usize) -> impl Fn(&ConnInfo) -> Recorder + Send + Sync {
    move |_: &ConnInfo| Recorder {
        handled: handled.clone(),
        server,
    }
}

fn mio(port: u16, handled: Arc<Handled>, server: usize) -> Running {
    use easynet::blocking::{ServerThread, TcpServer};
    let s = TcpServer::builder(Stream::lines(), service(handled, server))
        .host("127.0.0.1")
        .port(port)
        .reuse_port(true)
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut thread = ServerThread::start(s).unwrap();
    Running {
        addr: thread.addresses()[0],
        stop: Box::new(move || thread.join(None).unwrap()),
    }
}

fn tokio(port: u16, handled: Arc<Handled>, server: usize) -> Running {
    use easynet::aio::AsyncTcpServer;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = AsyncTcpServer::builder(Stream::lines(), service(handled, server))
        .host("127.0.0.1")
        .port(port)
        .reuse_port(true)
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    rt.block_on(s.activate()).unwrap();
    let addr = s.addresses()[0];
    let task = rt.spawn({
        let s = s.clone();
        async move { s.serve().await }
    });
    Running {
        addr,
        stop: Box::new(move || {
            rt.block_on(async {
                s.shutdown().await;
                task.await.unwrap().unwrap();
            })
        }),
    }
}

/// Requests answered so far, for the test to wait on.
#[derive(Default)]
struct Progress {
    answered: Mutex<u64>,
    cv: Condvar,
}

impl Progress {
    fn add(&self) {
        *self.answered.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    /// Waits until `n` more requests than now have been answered.
    fn at_least(&self, n: u64) {
        let mut got = self.answered.lock().unwrap();
        let target = *got + n;
        while *got < target {
            let (g, timeout) = self.cv.wait_timeout(got, LIMIT).unwrap();
            assert!(
                !timeout.timed_out(),
                "no progress: {} of {target} answered",
                *g
            );
            got = g;
        }
    }
}

/// One client: request ids `c-0`, `c-1`, ... one at a time, until `stop`; a request whose
/// connection ends before its answer is sent again on a new connection. Returns how many
/// requests were answered, how many were sent again, and how many of those were resets.
fn client(c: usize, addr: SocketAddr, progress: &Progress, stop: &AtomicBool) -> (u64, u64, u64) {
    let connect = || {
        let s = TcpStream::connect(addr).expect("one of the servers listens");
        s.set_read_timeout(Some(LIMIT)).unwrap();
        (s.try_clone().unwrap(), BufReader::new(s))
    };
    let (mut w, mut r) = connect();
    let (mut n, mut retried, mut resets, mut on_this) = (0u64, 0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if on_this == PER_CONNECTION {
            (w, r) = connect();
            on_this = 0;
        }
        let id = format!("{c}-{n}");
        let mut answer = String::new();
        let ok = match w.write_all(format!("{id}\n").as_bytes()) {
            Err(_) => false,
            Ok(()) => match r.read_line(&mut answer) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => {
                    // A connection still queued when the old listener closed.
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                    resets += 1;
                    false
                }
            },
        };
        if !ok {
            // Closed or reset before the answer: not handled (checked below); again.
            retried += 1;
            (w, r) = connect();
            on_this = 0;
            continue;
        }
        assert_eq!(answer.trim_end(), id);
        n += 1;
        on_this += 1;
        progress.add();
    }
    (n, retried, resets)
}

fn rolling_restart(old: Start, new: Start) {
    let handled = Arc::new(Handled::default());
    let first = old(0, handled.clone(), 0);
    let addr = first.addr;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (progress, stop) = (progress.clone(), stop.clone());
            std::thread::spawn(move || client(c, addr, &progress, &stop))
        })
        .collect();

    progress.at_least(500);
    let second = new(addr.port(), handled.clone(), 1);
    progress.at_least(500);
    (first.stop)(); // graceful, under load
    progress.at_least(500);
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut retried, mut resets) = (0, 0, 0);
    for c in clients {
        let (n, r, x) = c.join().unwrap();
        total += n;
        retried += r;
        resets += x;
    }
    (second.stop)();

    let ids = handled.ids.lock().unwrap();
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "handled more than once (an answer was lost): {twice:?}"
    );
    assert_eq!(
        ids.len() as u64,
        total,
        "every answered request handled once, none else"
    );
    let by = [0, 1].map(|s| handled.by_server[s].load(Ordering::Relaxed));
    assert!(by[0] > 0 && by[1] > 0, "both servers served: {by:?}");
    eprintln!(
        "{total} requests, {retried} sent again ({resets} after a reset), handled by old/new: {by:?}"
    );
}

#[test]
fn mio_to_mio() {
    rolling_restart(mio, mio);
}

#[test]
fn tokio_to_tokio() {
    rolling_restart(tokio, tokio);
}
