//! User code on the datagram path is contained by the core: a panic in the handler factory,
//! a `Decode`, an `Encode`, a handler's `Drop` or its error's `Display` ends (at most) that
//! peer's routine, is logged once, and the endpoint goes on. Logs are captured with a small
//! `tracing::Subscriber` (the endpoint is synchronous: everything logs on the test thread).

mod support;

use std::fmt;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use easynet_core::datagram::{
    DatagramConfig, DatagramServer, Output, Payload, RoutineId, RoutineOutput, RoutineTable,
};
use easynet_core::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, SendError,
};
use easynet_core::protocol::{Datagram, Decode, DeserializeError, Encode, SerializeError};
use support::clock::Clock;
use support::logs::{Capture, Log};
use tracing::Level;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const LOCAL: u16 = 9000;
const A: u16 = 40001;
const B: u16 = 40002;

/// UTF-8 text that panics decoding `decode-panic` and encoding `encode-panic`.
#[derive(Debug, Clone, Copy)]
struct Touchy;

impl Decode<String> for Touchy {
    fn decode(&self, payload: BytesMut) -> Result<String, DeserializeError> {
        if &payload[..] == b"decode-panic" {
            panic!("Decode panicked on purpose");
        }
        Ok(std::str::from_utf8(&payload)?.to_owned())
    }
}

impl Encode<String> for Touchy {
    fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), SerializeError> {
        if item == "encode-panic" {
            panic!("Encode panicked on purpose");
        }
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }

    /// Shares nothing; panics for `shared-panic` (asked first on a borrowed send).
    fn encode_shared(&self, item: &String) -> Option<Bytes> {
        if item == "shared-panic" {
            panic!("encode_shared panicked on purpose");
        }
        None
    }
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct BadDisplay;

impl fmt::Display for BadDisplay {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("Display panicked on purpose")
    }
}

impl std::error::Error for BadDisplay {}

/// One datagram per routine: "encode" answers a response its serializer panics on,
/// "closed" returns `SendError::Closed`, "bad-display" an error whose `Display` panics,
/// "drop-panic" makes its `Drop` panic, "wait" keeps receiving; anything else is echoed.
#[derive(Default)]
struct Probe {
    panic_on_drop: bool,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if self.panic_on_drop && !std::thread::panicking() {
            panic!("handler Drop panicked on purpose");
        }
    }
}

impl DatagramHandler for Probe {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        received: Received<String>,
    ) -> HandlerResult {
        let Received::Request(text) = received else {
            return Ok(Next::Close);
        };
        match text.as_str() {
            "encode" => cx.send("encode-panic".to_owned())?,
            "shared" => {
                // The borrowed send is the path under test (it asks encode_shared first).
                #[allow(clippy::needless_borrows_for_generic_args)]
                cx.send(&"shared-panic".to_owned())?;
            }
            "closed" => return Err(SendError::Closed.into()),
            "bad-display" => return Err(BadDisplay.into()),
            "drop-panic" => {
                self.panic_on_drop = true;
                cx.send(&text)?;
            }
            "wait" => {
                cx.send(&text)?;
                return Ok(Next::recv());
            }
            _ => cx.send(&text)?,
        }
        Ok(Next::Close)
    }
}

type Service = Box<dyn Fn(&ConnInfo) -> Probe + Send + Sync>;
type Server = DatagramServer<Service, Datagram<Touchy, String, String>>;

impl Capture {
    /// The events at `level` that name `peer`.
    fn at(&self, level: Level, peer: u16) -> Vec<Log> {
        let peer = addr(peer).to_string();
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.level == level && l.text.contains(&peer))
            .cloned()
            .collect()
    }

    fn count(&self, level: Level, peer: u16) -> usize {
        self.at(level, peer).len()
    }
}

struct Harness {
    clock: Clock,
    server: Server,
    made: Arc<AtomicUsize>,
    logs: Capture,
}

impl Harness {
    /// The service panics for its first `factory_panics` calls.
    fn new(factory_panics: usize, config: DatagramConfig) -> Self {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let service: Service = Box::new(move |_: &ConnInfo| {
            if m.fetch_add(1, Ordering::SeqCst) < factory_panics {
                panic!("handler factory panicked on purpose");
            }
            Probe::default()
        });
        let server = DatagramServer::new(
            Arc::new(service),
            Arc::new(Datagram::new(Touchy)),
            addr(LOCAL),
            config,
        )
        .unwrap();
        Self {
            clock: Clock::new(),
            server,
            made,
            logs: Capture::default(),
        }
    }

    /// Runs `f` with the capture as this thread's subscriber; a panic out of the endpoint
    /// fails the test with a clear message.
    fn logged<R>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let dispatch = tracing::Dispatch::new(self.logs.clone());
        let result = tracing::dispatcher::with_default(&dispatch, || {
            catch_unwind(AssertUnwindSafe(|| f(self)))
        });
        match result {
            Ok(r) => r,
            Err(_) => panic!("a panic escaped the endpoint while {what}"),
        }
    }

    fn send(&mut self, from: u16, data: &str) {
        self.logged(data, |h| {
            let now = h.clock.now();
            h.server
                .handle_datagram(now, addr(from), BytesMut::from(data.as_bytes()))
        });
    }

    fn advance_ms(&mut self, ms: u64) {
        let now = self.clock.advance_ms(ms);
        self.logged("firing timers", |h| h.server.handle_timeout(now));
    }

    fn shutdown(&mut self) {
        let now = self.clock.now();
        self.logged("shutting down", |h| h.server.shutdown(now));
    }

    fn sent(&mut self) -> Vec<(SocketAddr, Bytes)> {
        let mut sent = Vec::new();
        loop {
            match self.server.poll_output() {
                Output::Transmit(t) => sent.push((t.to, t.data)),
                Output::Idle { .. } => return sent,
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
}

fn reply(port: u16, text: &'static str) -> (SocketAddr, Bytes) {
    (addr(port), Bytes::from_static(text.as_bytes()))
}

#[test]
fn a_panicking_factory_drops_that_datagram_once_logged_and_the_peer_is_served_later() {
    let mut h = Harness::new(1, DatagramConfig::default());
    h.send(A, "a1"); // the factory panics: dropped
    h.send(A, "a2");
    h.send(B, "b1");
    assert_eq!(h.sent(), vec![reply(A, "a2"), reply(B, "b1")]);
    assert_eq!(h.made.load(Ordering::SeqCst), 3);
    let errors = h.logs.at(Level::ERROR, A);
    assert_eq!(errors.len(), 1, "logged once: {errors:?}");
    assert!(errors[0].text.contains("factory"), "{errors:?}");
    assert!(errors[0].text.contains("on purpose"), "{errors:?}");
}

#[test]
fn a_panicking_decode_ends_that_routine_once_logged_and_the_endpoint_goes_on() {
    let mut h = Harness::new(0, DatagramConfig::default());
    h.send(A, "decode-panic"); // at the start of a routine
    h.send(A, "a1");
    h.send(B, "wait");
    h.send(B, "decode-panic"); // delivered to a waiting routine
    h.send(B, "b1");
    assert_eq!(
        h.sent(),
        vec![reply(A, "a1"), reply(B, "wait"), reply(B, "b1")]
    );
    for peer in [A, B] {
        let errors = h.logs.at(Level::ERROR, peer);
        assert_eq!(errors.len(), 1, "logged once: {errors:?}");
        assert!(errors[0].text.contains("on purpose"), "{errors:?}");
    }
    // Decoding comes before the factory (A's first handler is made for a1), and the routine
    // ended like a handler error: B's next datagram got a fresh handler.
    assert_eq!(h.made.load(Ordering::SeqCst), 3);
}

/// `trigger` makes A's handler send something whose encode panics: that routine ends,
/// logged once (the message contains `needle`), and A and B are served on.
fn a_panicking_encode_on(trigger: &str, needle: &str) {
    let mut h = Harness::new(0, DatagramConfig::default());
    h.send(A, trigger);
    h.send(A, "a1");
    h.send(B, "b1");
    assert_eq!(h.sent(), vec![reply(A, "a1"), reply(B, "b1")]);
    let errors = h.logs.at(Level::ERROR, A);
    assert_eq!(errors.len(), 1, "logged once: {errors:?}");
    assert!(errors[0].text.contains(needle), "{errors:?}");
    assert_eq!(
        h.made.load(Ordering::SeqCst),
        3,
        "the peer got a fresh handler"
    );
}

#[test]
fn a_panicking_encode_ends_that_routine_once_logged_and_the_endpoint_goes_on() {
    a_panicking_encode_on("encode", "on purpose");
}

#[test]
fn a_panicking_encode_shared_ends_that_routine_once_logged_and_the_endpoint_goes_on() {
    a_panicking_encode_on("shared", "encode_shared panicked");
}

#[test]
fn a_panicking_handler_drop_is_contained_at_eviction_replacement_and_shutdown() {
    let config = DatagramConfig::default().with_idle_timeout(Duration::from_secs(1));
    let mut h = Harness::new(0, config);
    h.send(A, "drop-panic");
    h.advance_ms(1_000); // A is evicted: its handler is dropped
    assert!(h.server.peer(addr(A)).is_none());
    h.send(B, "drop-panic");
    h.send(B, "closed"); // the failed handler is replaced: dropped
    h.send(A, "drop-panic");
    h.shutdown(); // every handler is dropped
    assert_eq!(
        h.sent(),
        vec![
            reply(A, "drop-panic"),
            reply(B, "drop-panic"),
            reply(A, "drop-panic")
        ]
    );
    assert_eq!(h.logs.count(Level::ERROR, A), 2, "one per panicking drop");
    assert_eq!(h.logs.count(Level::ERROR, B), 1);
}

#[test]
fn a_handler_error_whose_display_panics_is_contained() {
    let mut h = Harness::new(0, DatagramConfig::default());
    h.send(A, "bad-display");
    h.send(A, "a1");
    assert_eq!(h.sent(), vec![reply(A, "a1")]);
    assert_eq!(h.logs.count(Level::ERROR, A), 1, "logged once");
}

#[test]
fn a_closed_send_returned_from_a_handler_is_one_warn_never_an_error() {
    let mut h = Harness::new(0, DatagramConfig::default());
    h.send(A, "closed");
    h.send(A, "a1");
    assert_eq!(h.sent(), vec![reply(A, "a1")]);
    assert_eq!(h.logs.count(Level::WARN, A), 1);
    assert_eq!(h.logs.count(Level::ERROR, A), 0);
}

// The same containment in the RoutineTable (async handlers): the factory and handler drops
// run in the table; decoding, encoding and the handler run in the driver's routine tasks
// through `contain::{decode, encode, handler_failed, handler_panicked, drop_handler}`.

type Routines = RoutineTable<Service>;

fn with_logs<R>(logs: &Capture, f: impl FnOnce() -> R) -> R {
    let dispatch = tracing::Dispatch::new(logs.clone());
    tracing::dispatcher::with_default(&dispatch, || {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("a panic escaped the table"))
    })
}

/// The routines started now: (routine, first datagram, the handler).
fn starts(t: &mut Routines) -> Vec<(RoutineId, Payload, Probe)> {
    let mut v = Vec::new();
    while let Some(o) = t.poll_output() {
        if let RoutineOutput::Start {
            routine,
            first,
            handler,
            ..
        } = o
        {
            v.push((routine, first, handler));
        }
    }
    v
}

#[test]
fn the_routine_table_contains_a_panicking_factory_and_handler_drops() {
    let logs = Capture::default();
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    // The second handler made panics.
    let service: Service = Box::new(move |_: &ConnInfo| {
        if m.fetch_add(1, Ordering::SeqCst) == 1 {
            panic!("handler factory panicked on purpose");
        }
        Probe::default()
    });
    let config = DatagramConfig::default().with_idle_timeout(Duration::from_secs(1));
    let mut t: Routines = RoutineTable::new(Arc::new(service), addr(LOCAL), config).unwrap();
    let mut clock = Clock::new();
    let d = |text: &str| BytesMut::from(text.as_bytes());
    with_logs(&logs, || {
        t.handle_datagram(clock.now(), addr(A), d("a1"));
        t.handle_datagram(clock.now(), addr(A), d("a2")); // queued
        t.handle_datagram(clock.now(), addr(A), d("a3")); // queued
    });
    let mut started = starts(&mut t);
    assert_eq!(started.len(), 1);
    let (r0, _, handler) = started.pop().unwrap();
    drop(handler);
    // The routine failed (no handler back): a fresh one is made for a2, and panics; a2 is
    // dropped and a3 starts with the next one.
    with_logs(&logs, || t.finish(clock.now(), &addr(A), r0, None, None));
    let started = starts(&mut t);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].1, Payload::Data(d("a3")));
    assert_eq!(made.load(Ordering::SeqCst), 3);
    assert_eq!(logs.count(Level::ERROR, A), 1, "the factory panic, once");
    // The handler comes back set to panic when dropped: eviction drops it, contained.
    let (r1, _, mut handler) = started.into_iter().next().unwrap();
    handler.panic_on_drop = true;
    with_logs(&logs, || {
        t.finish(clock.now(), &addr(A), r1, Some(handler), None);
        t.handle_timeout(clock.advance_ms(1_000));
    });
    assert!(t.peer(&addr(A)).is_none(), "evicted");
    assert_eq!(logs.count(Level::ERROR, A), 2, "and the drop panic, once");
    // And at shutdown.
    with_logs(&logs, || t.handle_datagram(clock.now(), addr(B), d("b1")));
    let (rb, _, mut handler) = starts(&mut t).into_iter().next().unwrap();
    handler.panic_on_drop = true;
    with_logs(&logs, || {
        t.finish(clock.now(), &addr(B), rb, Some(handler), None);
        t.shutdown(clock.now());
    });
    assert_eq!(logs.count(Level::ERROR, B), 1);
}
