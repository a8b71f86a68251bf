//! The log flood (issue 13): a client sends bad requests (empty lines, invalid JSON) to the
//! JSON echo server as fast as it can. The example's handler (examples/echo_server.rs,
//! compiled in here) logs at most a bounded number of lines per peer per second, says how
//! many it left out, and the server keeps answering another client. Both drivers.

#![cfg(all(feature = "tokio", feature = "mio", feature = "json"))]

mod support;

#[path = "../examples/echo_server.rs"]
// Both it and the poll loop example (in support) load the examples' logging module.
#[allow(clippy::duplicate_mod)]
#[allow(dead_code, unreachable_pub)]
mod echo_server;

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use easynet::handler::ConnInfo;
use easynet::log_limit::DEFAULT_BURST;
use easynet::protocol::Stream;
use support::drivers::{self, Opts, Running};
use tracing::field::{Field, Visit};

type Json = serde_json::Value;

const LIMIT: Duration = Duration::from_secs(10);
/// How long the server may take to parse what the flood left in its socket.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_millis(1500);

/// One "bad request" line, or the final "suppressed K similar messages".
#[derive(Debug, Clone)]
struct Line {
    at: Instant,
    peer: String,
    message: String,
    suppressed: u64,
}

#[derive(Default)]
struct Fields {
    peer: String,
    message: String,
    suppressed: u64,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "suppressed" {
            self.suppressed = value;
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "peer" => self.peer = format!("{value:?}"),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

/// Every event of the process (the servers log from their own threads), kept in memory.
struct Capture(Mutex<Vec<Line>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let line = Line {
            at: Instant::now(),
            peer: f.peer,
            message: f.message,
            suppressed: f.suppressed,
        };
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        tracing::subscriber::set_global_default(Forward(c)).unwrap();
        c
    })
}

/// The global subscriber must be owned: forwards to the leaked capture.
struct Forward(&'static Capture);

impl tracing::Subscriber for Forward {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, a: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.0.new_span(a)
    }
    fn record(&self, i: &tracing::span::Id, r: &tracing::span::Record<'_>) {
        self.0.record(i, r)
    }
    fn record_follows_from(&self, a: &tracing::span::Id, b: &tracing::span::Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, e: &tracing::Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, i: &tracing::span::Id) {
        self.0.enter(i)
    }
    fn exit(&self, i: &tracing::span::Id) {
        self.0.exit(i)
    }
}

fn lines_of(peer: SocketAddr) -> Vec<Line> {
    let peer = peer.to_string();
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.peer.contains(&peer))
        .cloned()
        .collect()
}

/// A well-behaved client: one request at a time; returns the slowest answer.
fn probe(addr: SocketAddr, stop: &AtomicBool) -> (usize, Duration) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut writer = s;
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        writer.write_all(b"{\"probe\":1}\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"probe\":1}\n");
        answered += 1;
        slowest = slowest.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    (answered, slowest)
}

fn flood(start: fn(Opts) -> Running) {
    capture();
    let server = start(Opts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || probe(addr, &stop))
    };
    // Empty lines and invalid JSON, as fast as the server takes them.
    let mut flooder = TcpStream::connect(server.addr).unwrap();
    let peer = flooder.local_addr().unwrap();
    let chunk = b"\nnope\n".repeat(8 * 1024);
    let began = Instant::now();
    let mut sent_lines = 0u64;
    while began.elapsed() < FLOOD {
        flooder.write_all(&chunk).unwrap();
        sent_lines += 2 * 8 * 1024;
    }
    drop(flooder);
    stop.store(true, Ordering::Relaxed);
    let (answered, slowest) = prober.join().unwrap();
    // The server still has the flood's buffered lines to parse (seconds in a debug build,
    // more on a loaded machine): a bound of its own.
    let stats = wait(DRAIN_LIMIT, || {
        let s = server.stats();
        (s.closed == 2).then_some(s)
    });
    let elapsed = began.elapsed();
    server.stop();

    // Every bad line was seen, and the probe was answered throughout.
    assert_eq!(stats.parse_errors, sent_lines, "{stats:?}");
    assert!(answered >= 10, "the probe got {answered} answers");
    assert!(
        slowest < Duration::from_secs(2),
        "slowest probe answer {slowest:?}"
    );

    let lines = lines_of(peer);
    let bad: Vec<_> = lines
        .iter()
        .filter(|l| l.message.starts_with("bad request"))
        .collect();
    // At most DEFAULT_BURST per second of flood (a window may straddle the end).
    let most = DEFAULT_BURST as u64 * (elapsed.as_secs() + 2);
    assert!(
        !bad.is_empty() && bad.len() as u64 <= most,
        "{} lines for {sent_lines} bad requests in {elapsed:?}",
        bad.len()
    );
    for w in bad.windows(DEFAULT_BURST as usize + 1) {
        assert!(w[DEFAULT_BURST as usize].at - w[0].at >= Duration::from_millis(900));
    }
    // Nothing is lost: written + reported suppressed (on lines and at the end) = all.
    let closing: Vec<_> = lines
        .iter()
        .filter(|l| l.message.contains("suppressed") && l.message.contains("similar"))
        .collect();
    assert_eq!(closing.len(), 1, "{closing:?}");
    let at_end: u64 = closing[0]
        .message
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    let reported: u64 = bad.iter().map(|l| l.suppressed).sum();
    assert_eq!(bad.len() as u64 + reported + at_end, sent_lines);
    eprintln!(
        "log flood: {sent_lines} bad requests in {elapsed:?} gave {} log lines; probe: \
         {answered} answers, slowest {slowest:?}",
        bad.len() + 1
    );
}

fn wait<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tokio_json(opts: Opts) -> Running {
    drivers::tokio_tcp(
        Stream::<_, _, Json, Json>::json_lines(),
        |info: &ConnInfo| echo_server::Echo::<Json>::new(info),
        opts,
    )
}

fn mio_json(opts: Opts) -> Running {
    drivers::mio_tcp(
        Stream::<_, _, Json, Json>::json_lines(),
        |info: &ConnInfo| echo_server::Echo::<Json>::new(info),
        opts,
    )
}

#[test]
fn tokio_log_flood_is_bounded_and_the_server_answers() {
    flood(tokio_json);
}

#[test]
fn mio_log_flood_is_bounded_and_the_server_answers() {
    flood(mio_json);
}
