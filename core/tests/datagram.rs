//! The datagram endpoint without sockets: behaviours of behaviour.md §3 that the core decides,
//! on a virtual clock.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use easynet_core::ConnId;
use easynet_core::datagram::{
    Arrival, DatagramConfig, DatagramServer, Output, Payload, PeerEvent, PeerTable, Recv, Reply,
    RoutineError, RoutineId, RoutineOutput, RoutineState, RoutineTable,
};
use easynet_core::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, SendError,
};
use easynet_core::protocol::{ConfigError, Datagram, ParseError, Utf8};
use support::clock::Clock;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const LOCAL: u16 = 9000;
const A: u16 = 40001;
const B: u16 = 40002;

/// One handler call as the test sees it: (peer, handler serial, conn id, what it got).
type Call = (SocketAddr, u64, ConnId, String);
type Behaviour = fn(&mut DatagramContext<'_, String>, &str, usize) -> HandlerResult;

struct Recorder {
    serial: u64,
    calls: usize,
    log: Arc<Mutex<Vec<Call>>>,
    dropped: Arc<AtomicU64>,
    behave: Behaviour,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl DatagramHandler for Recorder {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        received: Received<String>,
    ) -> HandlerResult {
        let what = match received {
            Received::Request(text) => text,
            Received::Timeout => "<timeout>".to_owned(),
            Received::ParseError(ParseError::FrameTooLarge { limit, got }) => {
                format!("<too large: {got} > {limit}>")
            }
            Received::ParseError(_) => "<parse error>".to_owned(),
        };
        assert_eq!(*cx.local_addr(), addr(LOCAL));
        self.log.lock().unwrap().push((
            cx.peer_addr().as_inet().unwrap(),
            self.serial,
            cx.info().id,
            what.clone(),
        ));
        self.calls += 1;
        (self.behave)(cx, &what, self.calls)
    }
}

type Server = DatagramServer<
    Box<dyn Fn(&ConnInfo) -> Recorder + Send + Sync>,
    Datagram<Utf8, String, String>,
>;

struct Harness {
    clock: Clock,
    server: Server,
    log: Arc<Mutex<Vec<Call>>>,
    made: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Harness {
    fn new(behave: Behaviour) -> Self {
        Self::with_config(behave, DatagramConfig::default())
    }

    fn with_config(behave: Behaviour, config: DatagramConfig) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let made = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (l, m, d) = (log.clone(), made.clone(), dropped.clone());
        let service: Box<dyn Fn(&ConnInfo) -> Recorder + Send + Sync> =
            Box::new(move |_: &ConnInfo| Recorder {
                serial: m.fetch_add(1, Ordering::SeqCst),
                calls: 0,
                log: l.clone(),
                dropped: d.clone(),
                behave,
            });
        let server = DatagramServer::new(
            Arc::new(service),
            Arc::new(Datagram::lines()),
            addr(LOCAL),
            config,
        )
        .unwrap();
        Self {
            clock: Clock::new(),
            server,
            log,
            made,
            dropped,
        }
    }

    fn send(&mut self, from: u16, data: &[u8]) {
        let now = self.clock.now();
        self.server
            .handle_datagram(now, addr(from), BytesMut::from(data));
    }

    fn advance_ms(&mut self, ms: u64) {
        let now = self.clock.advance_ms(ms);
        self.server.handle_timeout(now);
    }

    /// Drains the server: the transmits, and the `next_timeout` of the final Idle.
    fn drain(&mut self) -> (Vec<(SocketAddr, Bytes)>, Option<std::time::Instant>) {
        let mut sent = Vec::new();
        loop {
            match self.server.poll_output() {
                Output::Transmit(t) => sent.push((t.to, t.data)),
                Output::Idle { next_timeout } => return (sent, next_timeout),
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    fn calls(&self) -> Vec<(SocketAddr, u64, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(p, s, _, w)| (*p, *s, w.clone()))
            .collect()
    }

    fn ids(&self) -> Vec<ConnId> {
        self.log.lock().unwrap().iter().map(|c| c.2).collect()
    }
}

fn call(port: u16, serial: u64, what: &str) -> (SocketAddr, u64, String) {
    (addr(port), serial, what.to_owned())
}

/// Echoes each datagram and ends the routine.
fn echo_once(cx: &mut DatagramContext<'_, String>, what: &str, _: usize) -> HandlerResult {
    cx.send(what.to_owned())?;
    Ok(Next::Close)
}

/// Echoes everything it gets and keeps receiving, with a 5 s timeout.
fn echo_loop(cx: &mut DatagramContext<'_, String>, what: &str, _: usize) -> HandlerResult {
    cx.send(what.to_owned())?;
    Ok(Next::recv_timeout(Duration::from_secs(5)))
}

/// Keeps receiving with no timeout.
fn wait_forever(_: &mut DatagramContext<'_, String>, _: &str, _: usize) -> HandlerResult {
    Ok(Next::recv())
}

/// Fails on "boom", panics on "panic", else echoes and waits for more.
fn fragile(cx: &mut DatagramContext<'_, String>, what: &str, _: usize) -> HandlerResult {
    match what {
        "boom" => Err("boom".into()),
        "panic" => panic!("handler panicked on purpose"),
        _ => {
            cx.send(what.to_owned())?;
            Ok(Next::recv())
        }
    }
}

#[test]
fn responses_follow_arrival_order_per_peer() {
    let mut h = Harness::new(echo_once);
    for (from, text) in [(A, "a1"), (B, "b1"), (A, "a2"), (A, "a3"), (B, "b2")] {
        h.send(from, format!("{text}\n").as_bytes());
    }
    let (sent, _) = h.drain();
    let text = |p: u16| -> Vec<Bytes> {
        sent.iter()
            .filter(|(to, _)| *to == addr(p))
            .map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(text(A), ["a1", "a2", "a3"].map(Bytes::from));
    assert_eq!(text(B), ["b1", "b2"].map(Bytes::from));
    // One handler per peer, kept across routines.
    assert_eq!(h.made.load(Ordering::SeqCst), 2);
}

#[test]
fn later_receive_points_get_the_peers_next_datagrams() {
    let mut h = Harness::new(echo_loop);
    h.send(A, b"a1");
    h.send(B, b"b1");
    h.send(A, b"a2");
    h.send(B, b"b2");
    h.send(A, b"a3");
    // Each peer has one routine (one handler), fed its own datagrams in order.
    assert_eq!(
        h.calls(),
        vec![
            call(A, 0, "a1"),
            call(B, 1, "b1"),
            call(A, 0, "a2"),
            call(B, 1, "b2"),
            call(A, 0, "a3"),
        ]
    );
    let ids = h.ids();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(h.server.peer(addr(A)).unwrap().id, ids[0]);
    assert_eq!(h.drain().0.len(), 5);
}

#[test]
fn timeout_is_delivered_after_the_deadline() {
    let mut h = Harness::new(echo_loop);
    let t0 = h.clock.now();
    h.send(A, b"a1");
    let (_, next) = h.drain();
    assert_eq!(next, Some(t0 + Duration::from_secs(5)));
    h.advance_ms(4_999);
    assert_eq!(h.calls().len(), 1);
    h.advance_ms(1);
    assert_eq!(h.calls(), vec![call(A, 0, "a1"), call(A, 0, "<timeout>")]);
    // It asked again; a datagram before the new deadline is delivered, not a timeout.
    h.advance_ms(1_000);
    h.send(A, b"a2");
    assert_eq!(h.calls().last().unwrap(), &call(A, 0, "a2"));
}

#[test]
fn zero_timeout_with_nothing_queued_times_out_at_once() {
    fn poll_once(_: &mut DatagramContext<'_, String>, what: &str, _: usize) -> HandlerResult {
        Ok(if what == "<timeout>" {
            Next::Close
        } else {
            Next::recv_timeout(Duration::ZERO)
        })
    }
    let mut h = Harness::new(poll_once);
    h.send(A, b"a1");
    assert_eq!(h.calls(), vec![call(A, 0, "a1"), call(A, 0, "<timeout>")]);
    assert_eq!(h.server.peer(addr(A)).unwrap().routine, RoutineState::Idle);
}

#[test]
fn repeated_zero_timeouts_do_not_spin_inside_one_call() {
    fn spin(_: &mut DatagramContext<'_, String>, _: &str, _: usize) -> HandlerResult {
        Ok(Next::recv_timeout(Duration::ZERO))
    }
    let mut h = Harness::new(spin);
    let now = h.clock.now();
    h.send(A, b"a1");
    // The first timeout comes at once; the next waits for the next timer turn.
    assert_eq!(h.calls().len(), 2);
    assert_eq!(h.drain().1, Some(now));
    h.send(B, b"b1");
    assert_eq!(h.calls().len(), 4);
    h.server.handle_timeout(now);
    assert!(h.calls().len() <= 8);
}

#[test]
fn parse_error_is_delivered_and_the_next_datagram_still_handled() {
    let mut h = Harness::new(echo_once);
    h.send(A, b"\xff\xfe");
    h.send(A, b"ok");
    assert_eq!(
        h.calls(),
        vec![call(A, 0, "<parse error>"), call(A, 0, "ok")]
    );
}

#[test]
fn an_oversized_datagram_is_a_typed_error_and_the_next_one_is_handled() {
    let config = DatagramConfig::default().with_max_datagram_size(8);
    let mut h = Harness::with_config(echo_loop, config);
    h.send(A, &[b'x'; 9]);
    h.send(A, b"fits\n");
    assert_eq!(
        h.calls(),
        vec![call(A, 0, "<too large: 9 > 8>"), call(A, 0, "fits")]
    );
    assert!(
        DatagramConfig::default()
            .with_max_datagram_size(0)
            .validate()
            .is_err()
    );
}

#[test]
fn handler_error_ends_only_that_routine_and_a_fresh_handler_follows() {
    let mut h = Harness::new(fragile);
    h.send(A, b"a1");
    h.send(B, b"b1");
    h.send(A, b"boom");
    assert_eq!(
        h.dropped.load(Ordering::SeqCst),
        1,
        "failed handler dropped"
    );
    h.send(B, b"b2"); // B's routine still waits and gets it
    h.send(A, b"a2"); // A gets a fresh handler
    assert_eq!(
        h.calls(),
        vec![
            call(A, 0, "a1"),
            call(B, 1, "b1"),
            call(A, 0, "boom"),
            call(B, 1, "b2"),
            call(A, 2, "a2"),
        ]
    );
    let ids = h.ids();
    assert_eq!(ids[0], ids[4], "same peer, same ConnId");
    let sent: Vec<_> = h.drain().0.into_iter().map(|(_, d)| d).collect();
    assert_eq!(sent, ["a1", "b1", "b2", "a2"].map(Bytes::from));
}

#[test]
fn handler_panic_ends_only_that_routine_and_a_fresh_handler_follows() {
    let mut h = Harness::new(fragile);
    h.send(A, b"a1");
    h.send(B, b"b1");
    h.send(A, b"panic");
    h.send(B, b"b2");
    h.send(A, b"a2");
    assert_eq!(
        h.calls(),
        vec![
            call(A, 0, "a1"),
            call(B, 1, "b1"),
            call(A, 0, "panic"),
            call(B, 1, "b2"),
            call(A, 2, "a2"),
        ]
    );
    assert!(!h.server.is_closing());
}

#[test]
fn serialize_error_is_returned_to_the_handler_and_nothing_is_sent() {
    fn too_big(cx: &mut DatagramContext<'_, String>, _: &str, _: usize) -> HandlerResult {
        let huge = "x".repeat(70_000);
        match cx.send(&huge) {
            Err(SendError::Serialize(_)) => cx.send("too big".to_owned())?,
            other => panic!("unexpected {other:?}"),
        }
        Ok(Next::Close)
    }
    let mut h = Harness::new(too_big);
    h.send(A, b"go");
    assert_eq!(h.drain().0, vec![(addr(A), Bytes::from_static(b"too big"))]);
}

#[test]
fn idle_peers_are_evicted_after_the_idle_timeout() {
    let config = DatagramConfig::default().with_idle_timeout(Duration::from_secs(10));
    let mut h = Harness::with_config(echo_once, config);
    let t0 = h.clock.now();
    h.send(A, b"a1");
    let first_id = h.server.peer(addr(A)).unwrap().id;
    assert_eq!(h.drain().1, Some(t0 + Duration::from_secs(10)));
    h.advance_ms(9_999);
    assert!(h.server.peer(addr(A)).is_some());
    h.advance_ms(1);
    assert!(h.server.peer(addr(A)).is_none());
    assert_eq!(h.server.stats().evicted, 1);
    assert_eq!(h.server.stats().peers, 0);
    assert_eq!(
        h.dropped.load(Ordering::SeqCst),
        1,
        "handler dropped on eviction"
    );
    assert_eq!(h.drain().1, None);
    // It comes back as a new peer: new handler, new id.
    h.send(A, b"a2");
    assert_eq!(h.calls().last().unwrap(), &call(A, 1, "a2"));
    assert_ne!(h.server.peer(addr(A)).unwrap().id, first_id);
}

#[test]
fn a_waiting_routine_keeps_its_peer() {
    let config = DatagramConfig::default().with_idle_timeout(Duration::from_secs(1));
    let mut h = Harness::with_config(wait_forever, config);
    h.send(A, b"a1");
    h.advance_ms(60_000);
    assert!(h.server.peer(addr(A)).is_some());
    assert_eq!(h.drain().1, None);
}

#[test]
fn shutdown_stops_handlers_and_drops_later_datagrams() {
    let mut h = Harness::new(echo_loop);
    h.send(A, b"a1");
    h.send(B, b"b1");
    let now = h.clock.now();
    h.server.shutdown(now);
    assert!(h.server.is_closing());
    assert_eq!(h.dropped.load(Ordering::SeqCst), 2, "handlers dropped");
    h.send(A, b"a2");
    h.advance_ms(10_000);
    h.server.shutdown(h.clock.now()); // idempotent
    assert_eq!(h.calls().len(), 2, "no handler call after shutdown");
    assert_eq!(h.server.drops(), 1);
    // Responses sent before shutdown are still drained; no timer is left.
    let (sent, next) = h.drain();
    assert_eq!(sent.len(), 2);
    assert_eq!(next, None);
}

// PeerTable on its own, with routines kept running by hand.

fn table(max_pending: usize) -> PeerTable<u32> {
    PeerTable::new(DatagramConfig::default().with_max_pending(max_pending)).unwrap()
}

#[test]
fn config_rejects_a_zero_queue_bound() {
    let err = PeerTable::<u32>::new(DatagramConfig::default().with_max_pending(0)).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Zero {
            what: "max_pending"
        }
    );
    assert_eq!(DatagramConfig::default().max_pending, 1024);
    assert_eq!(
        DatagramConfig::default().idle_timeout,
        Duration::from_secs(120)
    );
}

#[test]
fn table_queues_in_fifo_order_behind_one_routine() {
    let clock = Clock::new();
    let now = clock.now();
    let mut t = table(8);
    assert_eq!(t.arrive(now, addr(A), 1), Arrival::Start(1));
    assert_eq!(t.arrive(now, addr(A), 2), Arrival::Queued);
    assert_eq!(t.arrive(now, addr(A), 3), Arrival::Queued);
    assert_eq!(
        t.arrive(now, addr(B), 10),
        Arrival::Start(10),
        "peers independent"
    );
    assert_eq!(t.recv(now, addr(A), None), Ok(Recv::Ready(2)));
    // The routine ends with 3 still queued: a new routine starts with it at once.
    assert_eq!(t.finish(now, addr(A)), Ok(Some(3)));
    assert_eq!(t.peer(addr(A)).unwrap().routine, RoutineState::Running);
    assert_eq!(t.finish(now, addr(A)), Ok(None));
    assert_eq!(t.peer(addr(A)).unwrap().routine, RoutineState::Idle);
    assert_eq!(t.arrive(now, addr(A), 4), Arrival::Start(4));
}

#[test]
fn table_bounds_each_queue_and_counts_drops() {
    let now = Clock::new().now();
    let mut t = table(2);
    assert_eq!(t.arrive(now, addr(A), 1), Arrival::Start(1));
    assert_eq!(t.arrive(now, addr(A), 2), Arrival::Queued);
    assert_eq!(t.arrive(now, addr(A), 3), Arrival::Queued);
    assert_eq!(t.arrive(now, addr(A), 4), Arrival::Dropped(4));
    assert_eq!(t.arrive(now, addr(A), 5), Arrival::Dropped(5));
    assert_eq!(t.arrive(now, addr(B), 1), Arrival::Start(1));
    assert_eq!(t.arrive(now, addr(B), 2), Arrival::Queued);
    let a = t.peer(addr(A)).unwrap();
    assert_eq!((a.queued, a.dropped), (2, 2));
    assert_eq!(t.peer(addr(B)).unwrap().dropped, 0);
    let stats = t.stats();
    assert_eq!((stats.dropped, stats.queued, stats.peers), (2, 3, 2));
    // Room again once the routine takes one.
    assert_eq!(t.recv(now, addr(A), None), Ok(Recv::Ready(2)));
    assert_eq!(t.arrive(now, addr(A), 6), Arrival::Queued);
    assert_eq!(t.recv(now, addr(A), None), Ok(Recv::Ready(3)));
    assert_eq!(t.recv(now, addr(A), None), Ok(Recv::Ready(6)));
}

#[test]
fn table_wait_deadlines_and_zero_timeouts() {
    let mut clock = Clock::new();
    let t0 = clock.now();
    let mut t = table(8);
    let _ = t.arrive(t0, addr(A), 1);
    assert_eq!(t.recv(t0, addr(A), Some(Duration::ZERO)), Ok(Recv::Timeout));
    let _ = t.arrive(t0, addr(A), 2);
    assert_eq!(
        t.recv(t0, addr(A), Some(Duration::ZERO)),
        Ok(Recv::Ready(2))
    );
    assert_eq!(
        t.recv(t0, addr(A), Some(Duration::from_secs(3))),
        Ok(Recv::Waiting)
    );
    assert_eq!(
        t.recv(t0, addr(A), None),
        Err(RoutineError::AlreadyWaiting(addr(A)))
    );
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    t.handle_timeout(clock.advance_ms(2_999));
    assert!(t.poll_event().is_none());
    t.handle_timeout(clock.advance_ms(1));
    assert!(matches!(t.poll_event(), Some(PeerEvent::Timeout { peer }) if peer == addr(A)));
    assert_eq!(t.peer(addr(A)).unwrap().routine, RoutineState::Running);
    // A datagram reaching a routine whose deadline passed unnoticed comes after its timeout.
    assert_eq!(
        t.recv(clock.now(), addr(A), Some(Duration::from_secs(1))),
        Ok(Recv::Waiting)
    );
    let late = clock.advance_ms(1_500);
    assert_eq!(t.arrive(late, addr(A), 3), Arrival::Queued);
    assert!(matches!(t.poll_event(), Some(PeerEvent::Timeout { .. })));
    assert_eq!(t.recv(late, addr(A), None), Ok(Recv::Ready(3)));
}

#[test]
fn table_reports_misuse_without_panicking() {
    let now = Clock::new().now();
    let mut t = table(8);
    assert_eq!(
        t.recv(now, addr(A), None),
        Err(RoutineError::UnknownPeer(addr(A)))
    );
    assert_eq!(
        t.finish(now, addr(A)),
        Err(RoutineError::UnknownPeer(addr(A)))
    );
    let _ = t.arrive(now, addr(A), 1);
    assert_eq!(t.finish(now, addr(A)), Ok(None));
    assert_eq!(
        t.finish(now, addr(A)),
        Err(RoutineError::NoRoutine(addr(A)))
    );
    assert_eq!(
        t.recv(now, addr(A), None),
        Err(RoutineError::NoRoutine(addr(A)))
    );
}

#[test]
fn table_evicts_idle_peers_and_hands_back_their_state() {
    let mut clock = Clock::new();
    let config = DatagramConfig::default().with_idle_timeout(Duration::from_secs(10));
    let mut t: PeerTable<u32, Vec<u32>> = PeerTable::new(config).unwrap();
    let _ = t.arrive(clock.now(), addr(A), 1);
    t.state_mut(addr(A)).unwrap().push(7);
    let id = t.peer(addr(A)).unwrap().id;
    // Running peers are never evicted.
    t.handle_timeout(clock.advance_ms(60_000));
    assert_eq!(t.len(), 1);
    assert_eq!(t.finish(clock.now(), addr(A)), Ok(None));
    t.handle_timeout(clock.advance_ms(10_000));
    match t.poll_event() {
        Some(PeerEvent::Evicted {
            peer,
            id: gone,
            state,
        }) => {
            assert_eq!((peer, gone, state), (addr(A), id, vec![7]));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(t.is_empty());
    assert_eq!(t.stats().evicted, 1);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn table_shutdown_drops_queued_datagrams_and_ends_routines() {
    let now = Clock::new().now();
    let mut t = table(8);
    let _ = t.arrive(now, addr(A), 1);
    let _ = t.arrive(now, addr(A), 2);
    let _ = t.arrive(now, addr(A), 3);
    let _ = t.arrive(now, addr(B), 1);
    assert_eq!(t.recv(now, addr(B), None), Ok(Recv::Waiting));
    t.shutdown(now);
    assert!(t.is_closed());
    assert!(matches!(t.poll_event(), Some(PeerEvent::Closed { peer }) if peer == addr(B)));
    assert!(t.poll_event().is_none());
    assert_eq!(t.stats().dropped, 2);
    assert_eq!(t.stats().queued, 0);
    assert_eq!(t.arrive(now, addr(A), 4), Arrival::Closed(4));
    assert_eq!(t.stats().dropped, 3);
    assert_eq!(t.recv(now, addr(A), None), Ok(Recv::Closed));
    assert_eq!(t.finish(now, addr(A)), Ok(None));
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn table_cancel_recv_ends_a_wait_and_its_deadline() {
    let now = Clock::new().now();
    let mut t = table(8);
    assert_eq!(
        t.cancel_recv(now, addr(A)),
        Err(RoutineError::UnknownPeer(addr(A)))
    );
    let _ = t.arrive(now, addr(A), 1);
    assert_eq!(
        t.cancel_recv(now, addr(A)),
        Ok(false),
        "running: nothing to cancel"
    );
    assert_eq!(
        t.recv(now, addr(A), Some(Duration::from_secs(3))),
        Ok(Recv::Waiting)
    );
    assert_eq!(t.cancel_recv(now, addr(A)), Ok(true));
    assert_eq!(t.peer(addr(A)).unwrap().routine, RoutineState::Running);
    assert_eq!(t.poll_timeout(), None, "the deadline is gone");
    // The next datagram waits for the next receive, which may have another deadline.
    assert_eq!(t.arrive(now, addr(A), 2), Arrival::Queued);
    assert_eq!(t.recv(now, addr(A), None), Ok(Recv::Ready(2)));
    assert_eq!(t.finish(now, addr(A)), Ok(None));
    assert_eq!(
        t.cancel_recv(now, addr(A)),
        Err(RoutineError::NoRoutine(addr(A)))
    );
}

// RoutineTable: the routines of async handlers, driven by hand.

/// An async handler stand-in: the table only keeps and hands it over.
#[derive(Debug, PartialEq, Eq)]
struct Token(u64);

type Routines = RoutineTable<Box<dyn Fn(&ConnInfo) -> Token + Send + Sync>>;

fn routines(config: DatagramConfig) -> (Routines, Arc<AtomicU64>) {
    let made = Arc::new(AtomicU64::new(0));
    let m = made.clone();
    let service: Box<dyn Fn(&ConnInfo) -> Token + Send + Sync> =
        Box::new(move |_: &ConnInfo| Token(m.fetch_add(1, Ordering::SeqCst)));
    let table = RoutineTable::new(Arc::new(service), addr(LOCAL), config).unwrap();
    (table, made)
}

fn data(text: &str) -> Payload {
    Payload::Data(BytesMut::from(text.as_bytes()))
}

/// The outputs now: starts as ("start", peer, routine, handler, first), replies as
/// ("reply", peer, routine, reply).
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Start(u16, RoutineId, Token, Payload),
    Reply(u16, RoutineId, Reply),
}

fn outputs(t: &mut Routines) -> Vec<Out> {
    let mut v = Vec::new();
    while let Some(o) = t.poll_output() {
        v.push(match o {
            RoutineOutput::Start {
                peer,
                routine,
                info,
                handler,
                first,
            } => {
                assert_eq!(info.peer.as_inet(), Some(peer));
                Out::Start(peer.port(), routine, handler, first)
            }
            RoutineOutput::Reply {
                peer,
                routine,
                reply,
            } => Out::Reply(peer.port(), routine, reply),
            other => panic!("unexpected {other:?}"),
        });
    }
    v
}

#[test]
fn routines_start_per_peer_and_receives_get_the_next_datagrams() {
    let (mut t, _) = routines(DatagramConfig::default());
    let now = Clock::new().now();
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a1"[..]));
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a2"[..]));
    t.handle_datagram(now, addr(B), BytesMut::from(&b"b1"[..]));
    let (ra, rb) = (RoutineId(0), RoutineId(1));
    assert_eq!(
        outputs(&mut t),
        vec![
            Out::Start(A, ra, Token(0), data("a1")),
            Out::Start(B, rb, Token(1), data("b1")),
        ]
    );
    assert!(t.recv(now, &addr(A), ra, None));
    assert_eq!(
        outputs(&mut t),
        vec![Out::Reply(A, ra, Reply::Datagram(data("a2")))]
    );
    assert!(t.recv(now, &addr(A), ra, Some(Duration::ZERO)));
    assert_eq!(outputs(&mut t), vec![Out::Reply(A, ra, Reply::Timeout)]);
    assert!(t.recv(now, &addr(A), ra, None));
    assert!(!t.recv(now, &addr(A), ra, None), "one receive at a time");
    assert!(!t.recv(now, &addr(A), rb, None), "not A's routine");
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a3"[..]));
    assert_eq!(
        outputs(&mut t),
        vec![Out::Reply(A, ra, Reply::Datagram(data("a3")))]
    );
    // The handler comes back and serves the next routine.
    t.finish(now, &addr(A), ra, Some(Token(0)), None);
    assert!(outputs(&mut t).is_empty());
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a4"[..]));
    assert_eq!(
        outputs(&mut t),
        vec![Out::Start(A, RoutineId(2), Token(0), data("a4"))]
    );
    assert!(
        !t.recv(now, &addr(A), ra, None),
        "an ended routine is not answered"
    );
}

#[test]
fn routine_receive_timeouts_and_oversized_datagrams() {
    let config = DatagramConfig::default().with_max_datagram_size(4);
    let (mut t, _) = routines(config);
    let mut clock = Clock::new();
    let t0 = clock.now();
    t.handle_datagram(t0, addr(A), BytesMut::from(&b"12345"[..]));
    let r = RoutineId(0);
    assert_eq!(
        outputs(&mut t),
        vec![Out::Start(
            A,
            r,
            Token(0),
            Payload::TooLarge { limit: 4, got: 5 }
        )]
    );
    assert!(t.recv(t0, &addr(A), r, Some(Duration::from_secs(2))));
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    t.handle_timeout(clock.advance_ms(2_000));
    assert_eq!(outputs(&mut t), vec![Out::Reply(A, r, Reply::Timeout)]);
}

#[test]
fn a_cancelled_receive_leaves_no_deadline_and_loses_no_datagram() {
    let (mut t, _) = routines(DatagramConfig::default());
    let now = Clock::new().now();
    let r = RoutineId(0);
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a1"[..]));
    let _ = outputs(&mut t);
    // Cancelled while waiting: Cancelled, and its deadline is gone.
    assert!(t.recv(now, &addr(A), r, Some(Duration::from_secs(1))));
    t.cancel(now, &addr(A), r);
    assert_eq!(outputs(&mut t), vec![Out::Reply(A, r, Reply::Cancelled)]);
    assert_eq!(t.poll_timeout(), None);
    t.cancel(now, &addr(A), r); // nothing pending: nothing happens
    assert!(outputs(&mut t).is_empty());
    // A datagram delivered before the cancel arrives stays the routine's reply.
    assert!(t.recv(now, &addr(A), r, None));
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a2"[..]));
    t.cancel(now, &addr(A), r);
    assert_eq!(
        outputs(&mut t),
        vec![Out::Reply(A, r, Reply::Datagram(data("a2")))]
    );
    // A next receive after a cancel gets the next datagram, with its own deadline.
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a3"[..]));
    assert!(t.recv(now, &addr(A), r, Some(Duration::from_secs(5))));
    assert_eq!(
        outputs(&mut t),
        vec![Out::Reply(A, r, Reply::Datagram(data("a3")))]
    );
}

#[test]
fn a_datagram_the_routine_did_not_take_starts_the_next_routine_first() {
    let (mut t, _) = routines(DatagramConfig::default());
    let now = Clock::new().now();
    let r = RoutineId(0);
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a1"[..]));
    let _ = outputs(&mut t);
    assert!(t.recv(now, &addr(A), r, None));
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a2"[..])); // delivered
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a3"[..])); // queued
    let Out::Reply(_, _, reply) = outputs(&mut t).pop().unwrap() else {
        panic!("a reply")
    };
    // The routine had ended: the driver hands the reply back.
    t.undelivered(&addr(A), r, reply);
    t.finish(now, &addr(A), r, None, None);
    assert_eq!(
        outputs(&mut t),
        vec![Out::Start(A, RoutineId(1), Token(1), data("a2"))],
        "a2 first, with a fresh handler (the routine failed)"
    );
    // Or the routine gives it back itself when it ends.
    let r = RoutineId(1);
    assert!(t.recv(now, &addr(A), r, None));
    assert_eq!(
        outputs(&mut t),
        vec![Out::Reply(A, r, Reply::Datagram(data("a3")))]
    );
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a4"[..]));
    t.finish(now, &addr(A), r, Some(Token(1)), Some(data("a3")));
    assert_eq!(
        outputs(&mut t),
        vec![Out::Start(A, RoutineId(2), Token(1), data("a3"))]
    );
    assert!(t.recv(now, &addr(A), RoutineId(2), None));
    assert_eq!(
        outputs(&mut t),
        vec![Out::Reply(A, RoutineId(2), Reply::Datagram(data("a4")))]
    );
}

#[test]
fn a_routine_ending_while_its_receive_waits_leaves_the_peer_idle_and_evictable() {
    let config = DatagramConfig::default().with_idle_timeout(Duration::from_secs(10));
    let (mut t, _) = routines(config);
    let mut clock = Clock::new();
    let r = RoutineId(0);
    t.handle_datagram(clock.now(), addr(A), BytesMut::from(&b"a1"[..]));
    let _ = outputs(&mut t);
    assert!(t.recv(clock.now(), &addr(A), r, Some(Duration::from_secs(1))));
    t.finish(clock.now(), &addr(A), r, Some(Token(0)), None);
    assert_eq!(t.peer(&addr(A)).unwrap().routine, RoutineState::Idle);
    assert_eq!(
        t.poll_timeout(),
        Some(clock.now() + Duration::from_secs(10))
    );
    t.handle_timeout(clock.advance_ms(10_000));
    assert!(t.peer(&addr(A)).is_none());
    assert!(outputs(&mut t).is_empty(), "no reply to an ended routine");
}

#[test]
fn routine_table_shutdown_drops_queues_and_answers_nothing() {
    let (mut t, _) = routines(DatagramConfig::default());
    let now = Clock::new().now();
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a1"[..]));
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a2"[..]));
    let _ = outputs(&mut t);
    t.shutdown(now);
    assert!(t.is_closing());
    assert_eq!(t.drops(), 1);
    t.handle_datagram(now, addr(A), BytesMut::from(&b"a3"[..]));
    assert_eq!(t.drops(), 2);
    assert!(!t.recv(now, &addr(A), RoutineId(0), None));
    t.finish(now, &addr(A), RoutineId(0), Some(Token(0)), None);
    assert!(outputs(&mut t).is_empty());
    assert_eq!(t.poll_timeout(), None);
}

/// Echoes raw bytes with a borrowed send (`cx.send(&data)`).
struct BorrowedEcho;

impl DatagramHandler for BorrowedEcho {
    type Request = Bytes;
    type Response = Bytes;

    fn handle(&mut self, cx: &mut DatagramContext<'_, Bytes>, r: Received<Bytes>) -> HandlerResult {
        if let Received::Request(data) = r {
            cx.send(&data)?;
        }
        Ok(Next::Close)
    }
}

/// A borrowed send of bytes the protocol can share (raw bytes) queues the request's own
/// buffer, not a copy; one too large for a datagram is still the typed error.
#[test]
fn a_borrowed_send_of_shared_bytes_is_not_copied() {
    type Raw = Datagram<easynet_core::protocol::RawBytes, Bytes, Bytes>;
    let service = |_: &ConnInfo| BorrowedEcho;
    let mut server: DatagramServer<_, Raw> = DatagramServer::new(
        Arc::new(service),
        Arc::new(Datagram::raw()),
        addr(LOCAL),
        DatagramConfig::default(),
    )
    .unwrap();
    let request = BytesMut::from(&b"shared"[..]);
    let at = request.as_ptr();
    server.handle_datagram(Clock::new().now(), addr(A), request);
    match server.poll_output() {
        Output::Transmit(t) => {
            assert_eq!(&t.data[..], b"shared");
            assert_eq!(t.data.as_ptr(), at, "the request's buffer, not a copy");
        }
        other => panic!("{other:?}"),
    }
    use easynet_core::protocol::{DatagramServerProtocol, MAX_DATAGRAM_SIZE, SerializeError};
    let raw = Datagram::raw();
    let fits = Bytes::from(vec![7; MAX_DATAGRAM_SIZE]);
    assert_eq!(raw.response_bytes(&fits).unwrap().as_ptr(), fits.as_ptr());
    let large = Bytes::from(vec![7; MAX_DATAGRAM_SIZE + 1]);
    assert_eq!(raw.response_bytes(&large), None);
    let err = raw
        .encode_response(&large, &mut BytesMut::new())
        .unwrap_err();
    assert!(matches!(err, SerializeError::TooLarge { .. }), "{err:?}");
}
