//! Behaviour of a stream connection and its handler (reference/behaviour.md §2), without
//! sockets: the public simulator (`easynet_core::sim`) runs the server and its client on a
//! virtual clock, a recording handler says what it was told. A few tests check the
//! `Session`'s own surface (one transmit, one timeout per wake-up, in-place reads) on a bare
//! session.

#![cfg(feature = "sim")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easynet_core::ConnId;
use easynet_core::handler::{ConnInfo, Next};
use easynet_core::protocol::{Lines, Stream, Utf8};
use easynet_core::sim::{ClientState, Faults, Side, StreamSim};
use easynet_core::stream::{CloseHow, Connection, Session, StreamConfig};
use support::scripted::{Script, Scripted, Seen};

type Lp = Stream<Lines, Utf8, String, String>;

fn req(s: &str) -> Seen {
    Seen::Request(s.to_owned())
}

const DISCONNECTED: Seen = Seen::Disconnected {
    closing: true,
    send_refused: true,
};

/// The simulated server running `script`'s handlers, speaking lines.
fn lines(script: Script) -> StreamSim<Script, Lp> {
    StreamSim::builder_with_service(Stream::lines(), script).build()
}

/// Lets a lingering close run out (the server releases its socket once the client has
/// everything, 10 ms of virtual time later) and says how the server closed.
fn closed_after_linger(
    sim: &mut StreamSim<Script, Lp>,
    c: easynet_core::sim::ClientId,
) -> Option<CloseHow> {
    sim.advance(Duration::from_secs(1));
    sim.server_closed(c)
}

/// A bare session, for the tests of the session's own surface.
fn session(script: &Script, config: StreamConfig, now: Instant) -> Session<Scripted, Lp> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
    let info = ConnInfo::new(ConnId(1), addr, addr);
    let conn = Connection::new(Arc::new(Stream::lines()), config, info);
    Session::start(now, script, conn).expect("the handler is made")
}

#[test]
fn on_connection_runs_first_then_requests_in_order() {
    let (script, l) = Script::echo();
    let mut sim = lines(script);
    let c = sim.connect();
    assert_eq!(l.seen(), [Seen::Connected]);
    sim.send_bytes(c, b"a\nb\n");
    sim.send_bytes(c, b"c\n");
    assert_eq!(l.seen(), [Seen::Connected, req("a"), req("b"), req("c")]);
    assert_eq!(sim.received_bytes(c), b"a\nb\nc\n");
}

#[test]
fn pipelined_requests_of_one_read_are_answered_in_one_transmit() {
    let (script, _) = Script::echo();
    let now = Instant::now();
    let mut s = session(&script, StreamConfig::default(), now);
    s.handle_read(now, b"1\n2\n3\n4\n5\n");
    assert_eq!(s.transmit(), b"1\n2\n3\n4\n5\n");
}

#[test]
fn a_write_that_empties_the_queue_keeps_the_want_poll_action_would_give() {
    use easynet_core::stream::{Action, Driven};
    // Driven::want_after_write: both drivers act on it instead of asking again.
    let (script, _) = Script::new(|cx, seen| {
        if let Seen::Request(r) = seen {
            cx.send(r)?;
        }
        Ok(Next::recv_timeout(Duration::from_secs(5)))
    });
    let now = Instant::now();
    let mut s = session(&script, StreamConfig::default(), now);
    s.handle_read(now, b"hello\n");
    let Action::Io(want) = s.poll_action(now) else {
        panic!("an answer to write")
    };
    assert!(want.read && want.write);
    // A write that leaves bytes queued: ask again.
    let mut part = [0u8; 3];
    s.write_to(&mut &mut part[..]).unwrap();
    assert_eq!(s.want_after_write(want), None);
    let mut out = Vec::new();
    s.write_to(&mut out).unwrap();
    assert_eq!(out, b"lo\n");
    let kept = s.want_after_write(want).expect("the queue is empty");
    assert!(kept.read && !kept.write);
    assert_eq!(kept.timeout, want.timeout);
    assert_eq!(
        s.poll_action(now),
        Action::Io(kept),
        "what poll_action says too"
    );
}

#[test]
fn a_turns_last_want_is_kept_for_the_next_event_unless_something_else_can_change_it() {
    use easynet_core::stream::{Action, Driven};
    // Driven::want_until_event: the mio worker starts an event's turn from it.
    let (script, _) = Script::new(|cx, seen| {
        if let Seen::Request(r) = seen {
            if r == "push" {
                drop(cx.pusher());
            }
            cx.send(r)?;
        }
        Ok(Next::recv_timeout(Duration::from_secs(5)))
    });
    let now = Instant::now();
    let mut s = session(&script, StreamConfig::default(), now);
    let Action::Io(want) = s.poll_action(now) else {
        panic!("waiting for a request")
    };
    assert!(want.read && !want.write && want.timeout.is_some());
    assert_eq!(s.want_until_event(want), Some(want));
    assert_eq!(
        s.poll_action(now),
        Action::Io(want),
        "what poll_action says too"
    );
    // Handler work waits: the next turn must resume it.
    let mut resume = want;
    resume.resume = true;
    assert_eq!(s.want_until_event(resume), None);
    // A pusher can queue frames from outside between turns: always ask.
    s.handle_read(now, b"push\n");
    let mut out = Vec::new();
    s.write_to(&mut out).unwrap();
    assert_eq!(out, b"push\n");
    let Action::Io(want) = s.poll_action(now) else {
        panic!("waiting for a request")
    };
    assert_eq!(s.want_until_event(want), None);
}

#[test]
fn a_request_split_across_reads_is_completed() {
    let (script, l) = Script::echo();
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"hel");
    sim.send_bytes(c, b"lo");
    assert_eq!(l.seen(), [Seen::Connected]);
    sim.send_bytes(c, b"\n");
    assert_eq!(l.seen(), [Seen::Connected, req("hello")]);
}

#[test]
fn receive_timeout_is_delivered_and_partial_bytes_are_kept() {
    let (script, l) = Script::new(|cx, seen| {
        if let Seen::Request(r) = seen {
            cx.send(r)?;
        }
        Ok(Next::recv_timeout(Duration::from_secs(1)))
    });
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"par");
    sim.advance(Duration::from_millis(999));
    assert_eq!(l.seen(), [Seen::Connected]);
    sim.advance(Duration::from_millis(1));
    assert_eq!(l.seen(), [Seen::Connected, Seen::Timeout]);
    sim.send_bytes(c, b"tial\n");
    assert_eq!(l.seen(), [Seen::Connected, Seen::Timeout, req("partial")]);
    assert_eq!(sim.replies(c), ["partial"]);
    assert_eq!(
        (sim.server_closed(c), sim.state(c)),
        (None, ClientState::Open),
        "a caught timeout keeps the connection"
    );
}

#[test]
fn zero_timeout_with_nothing_buffered_times_out_at_once_without_spinning() {
    let (script, l) = Script::new(|_, _| Ok(Next::recv_timeout(Duration::ZERO)));
    let now = Instant::now();
    let mut s = session(&script, StreamConfig::default(), now);
    // One timeout per wake-up: a handler that keeps asking for zero timeouts cannot hang
    // the machine; the driver's timer (due now) brings the next one.
    assert_eq!(l.seen(), [Seen::Connected, Seen::Timeout]);
    assert_eq!(s.poll_timeout(), Some(now));
    s.handle_timeout(now);
    assert_eq!(l.seen(), [Seen::Connected, Seen::Timeout, Seen::Timeout]);
    s.handle_read(now, b"a\n");
    let seen = l.seen();
    assert_eq!(
        &seen[3..],
        [req("a"), Seen::Timeout],
        "buffered data comes before the next timeout"
    );
}

#[test]
fn zero_timeout_with_buffered_request_gets_the_request() {
    let (script, l) = Script::new(move |_, seen| {
        Ok(match seen {
            Seen::Connected => Next::recv(),
            Seen::Request(r) if r == "a" => Next::recv_timeout(Duration::ZERO),
            _ => Next::recv(),
        })
    });
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"a\nb\n");
    assert_eq!(l.seen(), [Seen::Connected, req("a"), req("b")]);
    sim.send_bytes(c, b"c\n");
    assert_eq!(l.seen().last(), Some(&req("c")));
}

#[test]
fn parse_error_reaches_the_handler_and_the_next_line_is_served() {
    let (script, l) = Script::echo();
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"\xff\xfe\nok\n");
    assert_eq!(
        l.seen(),
        [
            Seen::Connected,
            Seen::ParseError("deserialize".into()),
            req("ok")
        ]
    );
    assert_eq!(sim.received_bytes(c), b"error\nok\n");
    assert_eq!(
        (sim.server_closed(c), sim.state(c)),
        (None, ClientState::Open)
    );
}

#[test]
fn over_long_line_is_a_parse_error_and_the_connection_goes_on() {
    let (script, l) = Script::echo();
    let lines = Stream::<_, _, String, String>::new(Lines::new().limit(8).unwrap(), Utf8::new());
    let mut sim = StreamSim::builder_with_service(lines, script).build();
    let c = sim.connect();
    sim.send_bytes(c, b"0123456789ABCDEF");
    sim.send_bytes(c, b"GH\nnext\n");
    let seen = l.seen();
    assert_eq!(seen[1], Seen::ParseError("line too long".into()));
    assert_eq!(seen.last(), Some(&req("next")));
    assert_eq!(sim.replies(c), ["error", "next"]);
    assert_eq!(
        (sim.server_closed(c), sim.state(c)),
        (None, ClientState::Open)
    );
}

#[test]
fn next_close_flushes_then_closes_gracefully_after_on_disconnection() {
    let (script, l) = Script::new(|cx, seen| {
        Ok(match seen {
            Seen::Request(r) => {
                cx.send(r)?;
                Next::Close
            }
            _ => Next::recv(),
        })
    });
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"last\nignored\n");
    sim.send_bytes(c, b"later\n");
    // Nothing after the close reaches the handler: "ignored" came in the same read,
    // "later" is read and dropped by the lingering close.
    assert_eq!(l.seen(), [Seen::Connected, req("last"), DISCONNECTED]);
    assert_eq!(sim.received_bytes(c), b"last\n");
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    assert_eq!(closed_after_linger(&mut sim, c), Some(CloseHow::Graceful));
}

#[test]
fn handler_error_runs_on_disconnection_and_resets_after_flushing_earlier_responses() {
    let (script, l) = Script::new(|cx, seen| match seen {
        Seen::Request(r) if r == "boom" => Err("boom".into()),
        Seen::Request(r) => {
            cx.send(r)?;
            Ok(Next::recv())
        }
        _ => Ok(Next::recv()),
    });
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"fine\nboom\nnever\n");
    assert_eq!(
        l.seen(),
        [Seen::Connected, req("fine"), req("boom"), DISCONNECTED]
    );
    assert_eq!(sim.received_bytes(c), b"fine\n");
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
    assert_eq!(sim.state(c), ClientState::Reset);
}

#[test]
fn handler_panic_closes_only_its_connection() {
    let (script, l) = Script::new(|cx, seen| {
        match seen {
            Seen::Request(r) if r == "x" => panic!("handler bug"),
            Seen::Request(r) => cx.send(r)?,
            _ => {}
        }
        Ok(Next::recv())
    });
    let mut sim = lines(script);
    let (bad, good) = (sim.connect(), sim.connect());
    sim.send_bytes(bad, b"x\n");
    sim.send_bytes(good, b"y\n");
    assert_eq!(sim.server_closed(bad), Some(CloseHow::Abort));
    assert_eq!(sim.state(bad), ClientState::Reset);
    assert_eq!(l.of(0).last(), Some(&DISCONNECTED));
    assert_eq!(l.of(1), [Seen::Connected, req("y")]);
    assert_eq!(sim.received_bytes(good), b"y\n");
    assert_eq!(
        (sim.server_closed(good), sim.state(good)),
        (None, ClientState::Open)
    );
    assert!(sim.is_serving());
}

#[test]
fn on_connection_error_closes_without_on_disconnection() {
    let (script, l) = Script::new(|_, seen| match seen {
        Seen::Connected => Err("refused".into()),
        _ => Ok(Next::recv()),
    });
    let mut sim = lines(script);
    let c = sim.connect();
    assert_eq!(l.seen(), [Seen::Connected]);
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
    assert_eq!(sim.state(c), ClientState::Reset);
}

#[test]
fn on_connection_close_skips_handle_but_calls_on_disconnection() {
    let (script, l) = Script::new(|cx, _| {
        cx.send("go away".to_owned())?;
        Ok(Next::Close)
    });
    let mut sim = lines(script);
    let c = sim.connect();
    assert_eq!(l.seen(), [Seen::Connected, DISCONNECTED]);
    assert_eq!(sim.received_bytes(c), b"go away\n");
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    assert_eq!(closed_after_linger(&mut sim, c), Some(CloseHow::Graceful));
}

#[test]
fn peer_eof_delivers_complete_requests_first_and_drops_the_partial_one() {
    let (script, l) = Script::echo();
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"one\ntwo\npart");
    sim.shutdown_write(c);
    assert_eq!(
        l.seen(),
        [Seen::Connected, req("one"), req("two"), DISCONNECTED]
    );
    assert_eq!(sim.received_bytes(c), b"one\ntwo\n");
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    // The client's EOF ends the linger at once.
    assert_eq!(sim.server_closed(c), Some(CloseHow::Graceful));
}

#[test]
fn reset_by_peer_calls_on_disconnection_and_aborts() {
    let (script, l) = Script::echo();
    let mut sim = lines(script);
    let c = sim.connect();
    sim.reset(c);
    assert_eq!(l.seen(), [Seen::Connected, DISCONNECTED]);
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
    assert_eq!(sim.connections(), 0);
}

#[test]
fn shutdown_answers_what_was_read_then_closes_gracefully() {
    let (script, l) = Script::echo();
    let mut sim = StreamSim::builder_with_service(Stream::lines(), script)
        .shutdown_timeout(Duration::from_secs(5))
        .faults(Faults::none().with_socket_buffer(4))
        .build();
    let c = sim.connect();
    sim.set_reading(c, false); // the peer is not reading yet: answers wait in the server
    sim.send_bytes(c, b"r1\n");
    sim.send_bytes(c, b"r2\nr3\npartial");
    sim.begin_shutdown();
    sim.send_bytes(c, b"r4\n");
    assert_eq!(
        sim.in_flight(c, Side::Server),
        3,
        "nothing more is read after shutdown"
    );
    assert_eq!(
        l.seen(),
        [
            Seen::Connected,
            req("r1"),
            req("r2"),
            req("r3"),
            DISCONNECTED
        ]
    );
    assert_eq!(sim.server_closed(c), None, "responses still queued");
    sim.set_reading(c, true);
    assert_eq!(sim.received_bytes(c), b"r1\nr2\nr3\n");
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    assert_eq!(closed_after_linger(&mut sim, c), Some(CloseHow::Graceful));
    assert!(sim.is_stopped());
}

#[test]
fn shutdown_deadline_aborts_a_peer_that_never_reads() {
    let (script, _) = Script::echo();
    let mut sim = StreamSim::builder_with_service(Stream::lines(), script)
        .shutdown_timeout(Duration::from_secs(2))
        .faults(Faults::none().with_socket_buffer(1))
        .build();
    let c = sim.connect();
    sim.set_reading(c, false);
    sim.send_bytes(c, b"x\n");
    sim.begin_shutdown();
    assert_eq!(sim.server_closed(c), None);
    sim.advance(Duration::from_millis(1999));
    assert_eq!(sim.server_closed(c), None);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
    assert_eq!(sim.state(c), ClientState::Reset);
}

#[test]
fn graceful_close_is_bounded_by_the_shutdown_timeout() {
    let (script, _) = Script::new(|cx, seen| {
        if let Seen::Request(_) = seen {
            cx.send("x".repeat(100))?;
            return Ok(Next::Close);
        }
        Ok(Next::recv())
    });
    let config = StreamConfig::default().with_shutdown_timeout(Duration::from_secs(3));
    let mut sim = StreamSim::builder_with_service(Stream::lines(), script)
        .config(config)
        .faults(Faults::none().with_socket_buffer(10))
        .build();
    let c = sim.connect();
    sim.set_reading(c, false); // the peer stops reading
    sim.send_bytes(c, b"go\n");
    assert_eq!(sim.server_closed(c), None);
    sim.advance(Duration::from_millis(2999));
    assert_eq!(sim.server_closed(c), None);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.server_closed(c), Some(CloseHow::Abort));
}

#[test]
fn reading_stops_while_the_write_queue_is_over_the_high_water_mark() {
    let (script, _) = Script::echo();
    let config = StreamConfig::default().with_write_high_water(64);
    let mut sim = StreamSim::builder_with_service(Stream::lines(), script)
        .config(config)
        .faults(Faults::none().with_socket_buffer(1))
        .build();
    let c = sim.connect();
    sim.set_reading(c, false);
    let line = format!("{}\n", "y".repeat(40));
    sim.send_bytes(c, line.as_bytes());
    assert_eq!(sim.in_flight(c, Side::Server), 0, "40 bytes queued: read");
    sim.send_bytes(c, line.as_bytes());
    assert_eq!(sim.in_flight(c, Side::Server), 0);
    sim.send_bytes(c, line.as_bytes());
    assert_eq!(
        sim.in_flight(c, Side::Server),
        41,
        "over 64 bytes queued: not read"
    );
    sim.set_reading(c, true);
    assert_eq!(sim.in_flight(c, Side::Server), 0, "read again once drained");
    assert_eq!(sim.replies(c).len(), 3);
}

#[test]
fn send_after_close_is_refused_with_a_typed_error() {
    let (script, l) = Script::new(|_, seen| {
        if let Seen::Request(_) = seen {
            return Ok(Next::Close);
        }
        Ok(Next::recv())
    });
    let mut sim = lines(script);
    let c = sim.connect();
    sim.send_bytes(c, b"q\n");
    // Disconnected records that a send in on_disconnection was refused as
    // `SendError::Closed`.
    assert_eq!(l.seen().last(), Some(&DISCONNECTED));
}

#[test]
fn large_reads_switch_to_reading_in_place_and_small_ones_back() {
    let (script, l) = Script::echo();
    let config = StreamConfig::default().with_read_size(64);
    let now = Instant::now();
    let mut s = session(&script, config, now);
    let mut out = Vec::new();
    assert!(
        s.read_buffer().is_none(),
        "small reads copy: idle connections keep no buffer"
    );
    s.handle_read(now, &[b'x'; 40]); // at least half a read: the next one goes in place
    let buf = s.read_buffer().expect("in-place read offered");
    assert!(buf.capacity() - buf.len() >= 64);
    buf.extend_from_slice(b"yz\n");
    s.handle_read_in_place(now, 3);
    assert_eq!(
        l.seen().last(),
        Some(&req(&format!("{}yz", "x".repeat(40))))
    );
    // A bulk request's short last read keeps reading in place; four small reads in a row
    // switch back.
    for _ in 0..3 {
        let buf = s.read_buffer().expect("still in place");
        buf.extend_from_slice(b"w\n");
        s.handle_read_in_place(now, 2);
    }
    assert_eq!(l.seen().last(), Some(&req("w")));
    assert!(s.read_buffer().is_none(), "four small reads switch back");
    s.handle_read(now, b"v\n");
    assert_eq!(l.seen().last(), Some(&req("v")));
    while s.write_to(&mut out).unwrap() > 0 {}
    assert_eq!(out.len(), 43 + 3 * 2 + 2, "every answer written");
    s.handle_eof(now);
    assert_eq!(
        s.poll_close(),
        Some(CloseHow::Graceful),
        "end of stream closes"
    );
}
