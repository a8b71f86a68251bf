//! TLS on stream connections, in memory: a real rustls handshake between the simulated
//! server and its client (`easynet_core::sim`), with rcgen certificates
//! (reference/behaviour.md §4).

#![cfg(feature = "sim")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet_core::handler::{
    ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler,
};
use easynet_core::protocol::{Lines, Stream, Utf8};
use easynet_core::sim::{ClientState, Event, Side, StreamSim};
use easynet_core::stream::{CloseHow, StreamConfig};
use support::certs::{Identity, localhost};
use support::scripted::{Log, Script, Seen};

type Lp = Stream<Lines, Utf8, String, String>;

/// A TLS server running `script`, its clients trusting `client`'s roots.
fn tls(
    script: Script,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    config: StreamConfig,
) -> StreamSim<Script, Lp> {
    StreamSim::builder_with_service(Stream::lines(), script)
        .tls(server, client, localhost())
        .config(config)
        .build()
}

/// A TLS server running `script` with a localhost certificate its clients trust.
fn localhost_tls(script: Script, config: StreamConfig) -> StreamSim<Script, Lp> {
    let id = Identity::localhost();
    tls(script, id.server_config(), id.client_config(), config)
}

/// Closes after the first request.
fn closes_on_a_request() -> (Script, Log) {
    Script::new(|_, seen| {
        Ok(if matches!(seen, Seen::Request(_)) {
            Next::Close
        } else {
            Next::recv()
        })
    })
}

const DISCONNECTED: Seen = Seen::Disconnected {
    closing: true,
    send_refused: true,
};

#[test]
fn handshake_then_echo_with_tls_info_in_on_connection() {
    let seen_tls = Arc::new(Mutex::new(None));
    let s = seen_tls.clone();
    let (script, log) = Script::new(move |cx, seen| {
        if *seen == Seen::Connected {
            *s.lock().unwrap() = cx.info().tls.clone();
        }
        if let Seen::Request(r) = seen {
            cx.send(r)?;
        }
        Ok(Next::recv())
    });
    let mut sim = localhost_tls(script, StreamConfig::default());
    // A peer that never says hello: no handler call before the handshake.
    let silent = sim.connect_raw();
    assert_eq!(log.of(0), []);
    // The request is sent before the handshake and waits for it in the client.
    let c = sim.connect_without_running();
    sim.send(c, &"hello".to_owned());
    assert_eq!(sim.replies(c), ["hello"]);
    let tls = seen_tls
        .lock()
        .unwrap()
        .clone()
        .expect("TLS info in on_connection");
    assert_eq!(tls.protocol_version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));
    assert!(tls.cipher_suite.is_some());
    assert_eq!(log.of(1), [Seen::Connected, Seen::Request("hello".into())]);
    assert_eq!(log.of(0), [], "still waiting for the silent peer's hello");
    assert_eq!(sim.state(silent), ClientState::Open);
}

#[test]
fn large_messages_cross_in_both_directions() {
    let (script, _) = Script::echo();
    let mut sim = localhost_tls(script, StreamConfig::default());
    let c = sim.connect();
    let big = "z".repeat(60_000);
    for _ in 0..3 {
        sim.send(c, &big);
    }
    assert_eq!(sim.replies(c), [big.as_str(); 3]);
}

/// Owned answers (`cx.send(line)`) under TLS: the same lines as borrowed ones, short and
/// large, two in one turn, one that ends with its separator already.
#[test]
fn owned_answers_cross_as_borrowed_ones_do() {
    let (script, _) = Script::new(|cx, seen| {
        if let Seen::Request(r) = seen {
            cx.send(r.clone())?;
            if r == "twice" {
                cx.send("again\n".to_owned())?;
            }
        }
        Ok(Next::recv())
    });
    let mut sim = localhost_tls(script, StreamConfig::default());
    let c = sim.connect();
    let (big, huge) = ("y".repeat(5_000), "z".repeat(60_000));
    for line in ["a", &big, "twice", &huge, "b"] {
        sim.send(c, &line.to_owned());
    }
    assert_eq!(
        sim.replies(c),
        ["a", big.as_str(), "twice", "again", huge.as_str(), "b"]
    );
}

/// Owned answers of a record's worth or more go to rustls without being gathered first,
/// yet make the records borrowed ones make: the server writes as many ciphertext bytes.
#[test]
fn large_owned_answers_make_the_records_borrowed_ones_make() {
    let lines = [
        "a".to_owned(),
        "x".repeat(3 * 16_384 - 1),
        "y".repeat(2 * 16_384),
        "z".repeat(40_000),
        "b".to_owned(),
    ];
    let sent = |owned: bool| {
        let (script, _) = Script::new(move |cx, seen| {
            if let Seen::Request(r) = seen {
                if owned {
                    cx.send(r.clone())?;
                } else {
                    cx.send(r)?;
                }
            }
            Ok(Next::recv())
        });
        let mut sim = localhost_tls(script, StreamConfig::default());
        let c = sim.connect();
        // After the handshake, whose size varies (ECDSA signatures do).
        let handshake = sim.stats().bytes_out;
        for line in &lines {
            sim.send(c, line);
        }
        assert_eq!(sim.replies(c), lines);
        sim.stats().bytes_out - handshake
    };
    assert_eq!(sent(true), sent(false));
}

/// Large owned answers go to rustls with their separator as one payload, after the
/// small answers gathered before them in the same turn: every answer arrives whole and in
/// order, whatever its length against a record's (16 KiB).
#[test]
fn large_owned_answers_amid_small_ones_in_one_turn_arrive_in_order() {
    let answers = [
        "a".to_owned(),
        "x".repeat(3 * 16_384 + 5),
        "b".to_owned(),
        "y".repeat(16_384),
        "z".repeat(16_383),
        "c".to_owned(),
    ];
    let sent = answers.clone();
    let (script, _) = Script::new(move |cx, seen| {
        if matches!(seen, Seen::Request(r) if r == "go") {
            for answer in &sent {
                cx.send(answer.clone())?;
            }
        }
        Ok(Next::recv())
    });
    let mut sim = localhost_tls(script, StreamConfig::default());
    let c = sim.connect();
    sim.send(c, &"go".to_owned());
    assert_eq!(sim.replies(c), answers);
}

/// Echoes lines as they came (owned), noting where each line's bytes were.
struct NotesBuffers(Arc<Mutex<Vec<usize>>>);

impl StreamHandler for NotesBuffers {
    type Request = String;
    type Response = String;
    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        if let Received::Request(line) = r {
            self.0.lock().unwrap().push(line.as_ptr() as usize);
            cx.send(line)?;
        }
        Ok(Next::recv())
    }
}

/// Under TLS a large line echoed owned is copied by rustls; its buffer then receives the
/// next large line, so echoing large lines allocates no buffer per request.
#[test]
fn a_large_echoed_lines_buffer_receives_the_next_line() {
    let id = Identity::localhost();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut sim = StreamSim::builder(Stream::lines(), move |_: &ConnInfo| NotesBuffers(s.clone()))
        .tls(id.server_config(), id.client_config(), localhost())
        .build();
    let c = sim.connect();
    let lines: Vec<String> = (b'a'..=b'd')
        .map(|b| (b as char).to_string().repeat(40_000))
        .collect();
    for line in &lines {
        sim.send(c, line);
        assert_eq!(sim.replies(c), [line.as_str()]);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    // The first line's buffer was new; after it, each line lands where the last one was.
    assert!(seen[1..].iter().all(|&p| p == seen[1]), "{seen:x?}");
}

#[test]
fn tls12_only_server_negotiates_tls12() {
    let id = Identity::localhost();
    let seen_tls = Arc::new(Mutex::new(None));
    let s = seen_tls.clone();
    let (script, _) = Script::new(move |cx, _| {
        *s.lock().unwrap() = cx.info().tls.clone();
        Ok(Next::recv())
    });
    let mut sim = tls(
        script,
        id.server_config_tls12(),
        id.client_config(),
        StreamConfig::default(),
    );
    sim.connect();
    assert_eq!(
        seen_tls.lock().unwrap().as_ref().unwrap().protocol_version,
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[test]
fn a_handshake_timeout_the_clock_cannot_add_waits_for_ever() {
    let (script, _log) = Script::echo();
    let config = StreamConfig::default().with_tls_handshake_timeout(Duration::MAX);
    let mut sim = localhost_tls(script, config);
    let c = sim.connect_raw(); // no hello: the handshake waits
    let year = Duration::from_secs(365 * 24 * 3600);
    assert!(sim.next_deadline().is_none_or(|t| t > sim.now() + year));
    sim.advance(Duration::from_secs(3600));
    assert_eq!(sim.server_closed(c), None);
    let speaking = sim.connect();
    sim.send(speaking, &"hello".to_owned());
    assert_eq!(sim.replies(speaking), ["hello"]);
}

#[test]
fn handshake_timeout_closes_abortively_without_handler_calls() {
    let (script, log) = Script::echo();
    let config = StreamConfig::default().with_tls_handshake_timeout(Duration::from_secs(2));
    let mut sim = localhost_tls(script, config);
    // The client never sends its hello.
    let c = sim.connect_raw();
    assert_eq!(
        sim.next_deadline(),
        Some(sim.now() + Duration::from_secs(2))
    );
    sim.advance(Duration::from_millis(1999));
    assert_eq!(sim.server_closed(c), None);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
    assert_eq!(sim.state(c), ClientState::Reset);
    assert_eq!(log.seen(), []);
}

#[test]
fn garbage_instead_of_a_hello_sends_an_alert_and_calls_no_handler() {
    let (script, log) = Script::echo();
    let mut sim = localhost_tls(script, StreamConfig::default());
    let c = sim.connect_raw();
    sim.send_bytes(c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let alert = sim.received_bytes(c).to_vec();
    assert_eq!(
        alert.first(),
        Some(&0x15),
        "an alert is flushed first: {alert:?}"
    );
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
    assert_eq!(sim.state(c), ClientState::Reset);
    assert_eq!(log.seen(), []);
}

#[test]
fn untrusted_server_certificate_fails_the_client_and_the_server_sees_nothing() {
    let id = Identity::localhost();
    let other = Identity::localhost();
    let (script, log) = Script::echo();
    let mut sim = tls(
        script,
        id.server_config(),
        other.client_config(),
        StreamConfig::default(),
    );
    let c = sim.connect();
    assert_eq!(
        sim.state(c),
        ClientState::Failed,
        "client failed the handshake"
    );
    assert_eq!(log.seen(), []);
    assert!(
        sim.server_closed(c).is_some(),
        "server closed after the client's alert"
    );
}

#[test]
fn graceful_close_exchanges_close_notify() {
    let (script, log) = closes_on_a_request();
    let mut sim = localhost_tls(script, StreamConfig::default());
    let c = sim.connect();
    sim.send(c, &"bye".to_owned());
    assert_eq!(log.seen().last(), Some(&DISCONNECTED));
    // The server sent close_notify and waits for the client's, its socket still whole.
    assert_eq!(sim.server_closed(c), None);
    assert!(!fin_from_server(&sim));
    assert_eq!(
        sim.state(c),
        ClientState::EndOfStream,
        "client saw close_notify"
    );
    sim.close(c);
    assert_eq!(sim.server_closed(c), Some(CloseHow::Graceful));
}

#[test]
fn close_notify_wait_is_bounded_then_resets() {
    let config = StreamConfig::default().with_shutdown_timeout(Duration::from_secs(5));
    let mut sim = localhost_tls(closes_on_a_request().0, config);
    let c = sim.connect();
    sim.send(c, &"bye".to_owned());
    // The client never answers with its close_notify.
    assert_eq!(sim.server_closed(c), None);
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
}

#[test]
fn not_standard_compatible_closes_without_close_notify() {
    let config = StreamConfig::default().with_tls_standard_compatible(false);
    let mut sim = localhost_tls(closes_on_a_request().0, config);
    let c = sim.connect();
    let before = sim.received_bytes(c).len();
    sim.send(c, &"bye".to_owned());
    assert_eq!(
        sim.received_bytes(c).len(),
        before,
        "no close_notify was sent"
    );
    assert!(fin_from_server(&sim), "a plain FIN");
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    // The lingering close releases the socket once the client has everything.
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.server_closed(c), Some(CloseHow::Graceful));
}

#[test]
fn tcp_eof_without_close_notify_is_a_disconnect() {
    let (script, log) = Script::echo();
    let mut sim = localhost_tls(script, StreamConfig::default());
    let c = sim.connect();
    sim.shutdown_write(c); // a FIN, no close_notify
    assert_eq!(log.seen().last(), Some(&DISCONNECTED));
    assert!(sim.server_closed(c).is_some());
}

/// The server sent its FIN.
fn fin_from_server(sim: &StreamSim<Script, Lp>) -> bool {
    sim.trace().iter().any(|t| {
        matches!(
            t.event,
            Event::Fin {
                from: Side::Server,
                ..
            }
        )
    })
}
