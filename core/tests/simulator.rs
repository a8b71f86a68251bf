//! The public simulator (`easynet_core::sim`): whole servers without sockets, portable and
//! async, stream and datagram, plain and TLS; its faults, its determinism, and the server
//! rules it lets a test check (shutdown answers every request read, a panic stays in its
//! connection, backpressure, lingering close).

#![cfg(feature = "sim")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use easynet_core::datagram::{AsyncDatagramHandler, DatagramPeer};
use easynet_core::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    Service, StreamContext, StreamHandler,
};
use easynet_core::protocol::{Datagram, Stream};
use easynet_core::sim::{ClientState, DatagramSim, Event, Faults, Side, StreamSim, strategy};
use easynet_core::stream::{AsyncStreamHandler, RecvError, StreamConfig, StreamPeer};
use proptest::prelude::*;

/// Echoes lines; "timeout" on a receive timeout, "error" on a parse error, "quit" closes,
/// "panic" panics.
struct Echo {
    timeout: Option<Duration>,
}

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, _: &mut StreamContext<'_, String>) -> HandlerResult {
        Ok(Next::Recv {
            timeout: self.timeout,
        })
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) if l == "panic" => panic!("requested panic"),
            Received::Request(l) => cx.send(&l)?,
            Received::Timeout => cx.send("timeout".to_owned())?,
            Received::ParseError(_) => cx.send("error".to_owned())?,
        }
        Ok(Next::Recv {
            timeout: self.timeout,
        })
    }
}

fn echo(_: &ConnInfo) -> Echo {
    Echo { timeout: None }
}

/// The async twin of [`Echo`].
struct AsyncEcho;

impl AsyncStreamHandler for AsyncEcho {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        match client.recv_timeout(Duration::from_secs(2)).await {
            Ok(l) if l == "quit" => client.close().await,
            Ok(l) => client.send(&l).await?,
            Err(RecvError::Timeout) => client.send(&"timeout".to_owned()).await?,
            Err(RecvError::Parse(_)) => client.send(&"error".to_owned()).await?,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

#[test]
fn echo_with_chunked_reads_and_writes() {
    let mut sim = StreamSim::builder(Stream::lines(), echo)
        .faults(Faults::chunked(3))
        .seed(7)
        .build();
    let c = sim.connect();
    sim.send_bytes(c, b"hello\nwor");
    sim.send_bytes(c, b"ld\n");
    sim.send(c, &"again".to_owned());
    assert_eq!(sim.replies(c), ["hello", "world", "again"]);
    assert_eq!(sim.received_bytes(c), b"hello\nworld\nagain\n");
}

#[test]
fn an_async_handler_runs_without_a_runtime() {
    let mut sim = StreamSim::new_async(Stream::lines(), |_: &ConnInfo| AsyncEcho);
    let c = sim.connect();
    sim.send(c, &"one".to_owned());
    sim.send_bytes(c, b"\xff\n");
    assert_eq!(sim.replies(c), ["one", "error"]);
    sim.advance(Duration::from_millis(1999));
    assert!(sim.replies(c).is_empty());
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.replies(c), ["timeout"]);
    sim.send(c, &"quit".to_owned());
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    // The server lingers until the client has everything, which takes a query or two.
    assert_eq!(sim.connections(), 1);
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.connections(), 0);
}

#[test]
fn shutdown_answers_every_request_already_read() {
    for seed in 0..20 {
        let mut sim = StreamSim::builder(Stream::lines(), echo)
            .faults(Faults::chunked(7))
            .seed(seed)
            .build();
        let clients: Vec<_> = (0..3).map(|_| sim.connect()).collect();
        for &c in &clients {
            for i in 0..50 {
                sim.send(c, &format!("{c} request {i}"));
            }
        }
        sim.shutdown();
        assert!(sim.is_stopped());
        for &c in &clients {
            let replies = sim.replies(c);
            assert_eq!(replies.len(), 50, "seed {seed}: {c}");
            assert_eq!(sim.state(c), ClientState::EndOfStream, "seed {seed}");
        }
        let late = sim.connect();
        assert_eq!(sim.state(late), ClientState::Refused);
    }
}

#[test]
fn a_client_that_keeps_sending_during_shutdown_gets_every_answer_then_the_end() {
    let mut sim = StreamSim::new(Stream::lines(), echo);
    let c = sim.connect();
    sim.send(c, &"before".to_owned());
    sim.begin_shutdown();
    // The server closed its side; the client's late request is read and dropped by the
    // lingering close, not answered with a reset that would destroy "before".
    sim.send(c, &"late".to_owned());
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.replies(c), ["before"]);
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    assert!(
        !sim.trace()
            .iter()
            .any(|t| matches!(t.event, Event::Reset { .. })),
        "no reset: {:?}",
        sim.trace()
    );
}

#[test]
fn a_slow_reader_is_bounded_and_reset_at_the_shutdown_deadline() {
    let mut sim = StreamSim::builder(Stream::lines(), echo)
        .config(StreamConfig::default().with_write_high_water(4096))
        .faults(Faults::none().with_socket_buffer(1024))
        .shutdown_timeout(Duration::from_secs(5))
        .build();
    let c = sim.connect();
    sim.set_reading(c, false);
    let line = "x".repeat(100);
    for _ in 0..200 {
        sim.send_bytes(c, format!("{line}\n").as_bytes());
    }
    // The server stopped reading once its queue was full: the requests wait in the socket.
    let reads = sim
        .trace()
        .iter()
        .filter_map(|t| match t.event {
            Event::Read {
                to: Side::Server,
                bytes,
                ..
            } => Some(bytes),
            _ => None,
        })
        .sum::<usize>();
    assert!(reads < 200 * 101, "the server read everything: {reads}");
    let begun = sim.now();
    sim.shutdown();
    assert_eq!(sim.now() - begun, Duration::from_secs(5), "at the deadline");
    assert_eq!(sim.state(c), ClientState::Reset);
}

#[test]
fn a_panicking_handler_closes_only_its_connection() {
    let mut sim = StreamSim::new(Stream::lines(), echo);
    let (a, b) = (sim.connect(), sim.connect());
    sim.send(a, &"panic".to_owned());
    sim.send(b, &"still here".to_owned());
    assert_eq!(sim.state(a), ClientState::Reset);
    assert_eq!(sim.replies(b), ["still here"]);
    assert!(sim.is_serving());
}

#[test]
fn a_receive_timeout_fires_on_the_virtual_clock() {
    let mut sim = StreamSim::new(Stream::lines(), |_: &ConnInfo| Echo {
        timeout: Some(Duration::from_secs(3)),
    });
    let c = sim.connect();
    sim.send_bytes(c, b"par"); // partial bytes are kept
    assert_eq!(sim.advance_to_next_deadline(), Some(Duration::from_secs(3)));
    sim.send_bytes(c, b"tial\n");
    assert_eq!(sim.replies(c), ["timeout", "partial"]);
}

/// Counts `on_start` and `on_stop`; init fails if asked to.
struct Hooks {
    fail_init: bool,
    inits: Arc<AtomicUsize>,
    teardowns: Arc<AtomicUsize>,
}

impl Service for Hooks {
    type Handler = Echo;
    fn new_handler(&self, _: &ConnInfo) -> Echo {
        Echo { timeout: None }
    }
    fn on_start(&self) -> Result<(), HandlerError> {
        self.inits.fetch_add(1, Ordering::SeqCst);
        if self.fail_init {
            return Err("init failed on purpose".into());
        }
        Ok(())
    }
    fn on_stop(&self) {
        self.teardowns.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn service_hooks_run_once_in_order() {
    for fail_init in [false, true] {
        let (inits, teardowns) = (Arc::default(), Arc::default());
        let hooks = Hooks {
            fail_init,
            inits: Arc::clone(&inits),
            teardowns: Arc::clone(&teardowns),
        };
        let mut sim = StreamSim::builder_with_service(Stream::lines(), hooks).build();
        assert_eq!(inits.load(Ordering::SeqCst), 1);
        assert_eq!(sim.is_serving(), !fail_init);
        let c = sim.connect();
        sim.shutdown();
        assert!(sim.is_stopped());
        let expected = if fail_init {
            ClientState::Refused
        } else {
            ClientState::EndOfStream
        };
        assert_eq!(sim.state(c), expected);
        assert_eq!(teardowns.load(Ordering::SeqCst), usize::from(!fail_init));
    }
}

#[test]
fn tls_in_memory() {
    let id = support::certs::Identity::localhost();
    let mut sim = StreamSim::builder(Stream::lines(), echo)
        .tls(
            id.server_config(),
            id.client_config(),
            support::certs::localhost(),
        )
        .faults(Faults::chunked(100))
        .seed(3)
        .build();
    let c = sim.connect();
    sim.send(c, &"secret".to_owned());
    assert_eq!(sim.replies(c), ["secret"]);
    assert!(!sim.received_bytes(c).windows(6).any(|w| w == b"secret"));
    sim.shutdown();
    assert_eq!(sim.state(c), ClientState::EndOfStream);
}

/// Runs one faulty scenario and returns its trace.
fn faulty_run(seed: u64) -> Vec<easynet_core::sim::Traced> {
    let mut sim = StreamSim::builder(Stream::lines(), echo)
        .faults(Faults::chunked(5).with_socket_buffer(64))
        .seed(seed)
        .build();
    let c = sim.connect();
    for i in 0..20 {
        sim.send(c, &format!("message {i}"));
    }
    sim.send_bytes(c, b"half a fra");
    sim.reset(c);
    sim.shutdown();
    sim.trace().to_vec()
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    assert_eq!(faulty_run(42), faulty_run(42));
    assert_ne!(faulty_run(42), faulty_run(43), "the seed drives the faults");
}

struct Upper;

impl DatagramHandler for Upper {
    type Request = String;
    type Response = String;
    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        if let Received::Request(text) = r {
            cx.send(text.to_uppercase())?;
        }
        Ok(Next::Close)
    }
}

struct AsyncUpper;

impl AsyncDatagramHandler for AsyncUpper {
    type Request = String;
    type Response = String;
    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let text = client.recv().await?;
        client.send(&text.to_uppercase()).await?;
        Ok(())
    }
}

#[test]
fn datagrams_portable_and_async() {
    let mut portable = DatagramSim::new(Datagram::lines(), |_: &ConnInfo| Upper);
    let mut asynchronous = DatagramSim::new_async(Datagram::lines(), |_: &ConnInfo| AsyncUpper);
    let (p, q) = (portable.peer(), asynchronous.peer());
    portable.send(p, &"a".to_owned());
    asynchronous.send(q, &"b".to_owned());
    assert_eq!(portable.replies(p), ["A"]);
    assert_eq!(asynchronous.replies(q), ["B"]);
    portable.shutdown();
    asynchronous.shutdown();
    assert!(portable.is_stopped() && asynchronous.is_stopped());
}

fn datagram_run(seed: u64) -> (Vec<String>, Vec<easynet_core::sim::Traced>) {
    let mut sim = DatagramSim::builder(Datagram::lines(), |_: &ConnInfo| Upper)
        .faults(Faults::none().with_datagram_faults(200, 200, 200))
        .seed(seed)
        .build();
    let peer = sim.peer();
    for i in 0..50 {
        sim.send(peer, &format!("m{i}"));
    }
    sim.flush_reordered();
    (sim.replies(peer), sim.trace().to_vec())
}

#[test]
fn datagram_faults_are_deterministic_and_do_what_they_say() {
    let (replies, trace) = datagram_run(9);
    assert_eq!(datagram_run(9), (replies.clone(), trace.clone()));
    let count = |f: fn(&Event) -> bool| trace.iter().filter(|t| f(&t.event)).count();
    let lost = count(|e| matches!(e, Event::Lost { .. }));
    let duplicated = count(|e| matches!(e, Event::Duplicated { .. }));
    let reordered = count(|e| matches!(e, Event::Reordered { .. }));
    assert!(
        lost > 0 && duplicated > 0 && reordered > 0,
        "{lost} {duplicated} {reordered}"
    );
    assert_ne!(replies.len(), 50);
    let mut sorted = replies.clone();
    sorted.sort();
    sorted.dedup();
    assert!(sorted.iter().all(|r| r.starts_with('M')));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any cut of the requests, any faults, any seed, either handler kind: the same
    /// replies, in order.
    #[test]
    fn chunking_never_changes_the_replies(
        faults in strategy::faults(),
        seed in strategy::seed(),
        cuts in strategy::chunking(40),
        asynchronous in any::<bool>(),
    ) {
        let input = b"alpha\nbeta\n\xff\ngamma\n";
        let expected = ["alpha", "beta", "error", "gamma"];
        if asynchronous {
            let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| AsyncEcho)
                .faults(faults)
                .seed(seed)
                .build_async();
            let c = sim.connect();
            for piece in strategy::split(input, &cuts) {
                sim.send_bytes(c, piece);
            }
            prop_assert_eq!(sim.replies(c), expected);
        } else {
            let mut sim = StreamSim::builder(Stream::lines(), echo)
                .faults(faults)
                .seed(seed)
                .build();
            let c = sim.connect();
            for piece in strategy::split(input, &cuts) {
                sim.send_bytes(c, piece);
            }
            prop_assert_eq!(sim.replies(c), expected);
        }
    }
}

#[test]
fn handler_calls_and_logs_are_observable() {
    let (service, calls) = easynet_core::sim::record(|_: &ConnInfo| AsyncEcho);
    let mut sim = StreamSim::builder_with_service(Stream::lines(), service)
        .capture_logs()
        .build_async();
    let c = sim.connect();
    sim.send(c, &"one".to_owned());
    sim.close(c);
    sim.advance(Duration::from_secs(1));
    use easynet_core::sim::Call;
    let seen = calls.of(easynet_core::ConnId(1));
    assert_eq!(seen.first(), Some(&Call::Connection));
    assert_eq!(seen.last(), Some(&Call::Disconnection));
    assert!(seen.iter().filter(|c| **c == Call::Handle).count() >= 2);

    let (service, calls) = easynet_core::sim::record(echo);
    let mut sim = StreamSim::builder_with_service(Stream::lines(), service)
        .capture_logs()
        .build();
    let c = sim.connect();
    sim.send(c, &"panic".to_owned());
    assert_eq!(
        calls.of(easynet_core::ConnId(1)),
        [
            Call::Connection,
            Call::Request("\"panic\"".into()),
            Call::Disconnection
        ]
    );
    let errors: Vec<_> = sim
        .logs()
        .into_iter()
        .filter(|l| l.level == tracing::Level::ERROR)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].text.contains("requested panic"), "{errors:?}");
}
