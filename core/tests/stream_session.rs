//! Behaviour of a stream connection and its handler (reference/behaviour.md §2), without
//! sockets: a scripted peer, a virtual clock, a recording handler.

mod support;

use std::time::Duration;

use easynet_core::handler::{Next, SendError};
use easynet_core::protocol::{Lines, Stream, Utf8};
use easynet_core::stream::{CloseHow, StreamConfig};
use support::sim::{LineSim, Scripted, Seen, Sim};

fn log(l: &std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) -> Vec<Seen> {
    l.lock().unwrap().clone()
}

fn req(s: &str) -> Seen {
    Seen::Request(s.to_owned())
}

const DISCONNECTED: Seen = Seen::Disconnected {
    closing: true,
    send_refused: true,
};

#[test]
fn on_connection_runs_first_then_requests_in_order() {
    let (h, l) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    assert_eq!(log(&l), [Seen::Connected]);
    sim.read(b"a\nb\n");
    sim.read(b"c\n");
    assert_eq!(log(&l), [Seen::Connected, req("a"), req("b"), req("c")]);
    assert_eq!(sim.take_written(), "a\nb\nc\n");
}

#[test]
fn pipelined_requests_of_one_read_are_answered_in_one_transmit() {
    let (h, _) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    sim.session.handle_read(sim.clock.now(), b"1\n2\n3\n4\n5\n");
    assert_eq!(sim.session.transmit(), b"1\n2\n3\n4\n5\n");
}

#[test]
fn a_request_split_across_reads_is_completed() {
    let (h, l) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    sim.read(b"hel");
    sim.read(b"lo");
    assert_eq!(log(&l), [Seen::Connected]);
    sim.read(b"\n");
    assert_eq!(log(&l), [Seen::Connected, req("hello")]);
}

#[test]
fn receive_timeout_is_delivered_and_partial_bytes_are_kept() {
    let (h, l) = Scripted::new(|cx, seen| {
        if let Seen::Request(r) = seen {
            cx.send(r)?;
        }
        Ok(Next::recv_timeout(Duration::from_secs(1)))
    });
    let mut sim = LineSim::lines(h);
    sim.read(b"par");
    sim.advance(Duration::from_millis(999));
    assert_eq!(log(&l), [Seen::Connected]);
    sim.advance(Duration::from_millis(1));
    assert_eq!(log(&l), [Seen::Connected, Seen::Timeout]);
    sim.read(b"tial\n");
    assert_eq!(log(&l), [Seen::Connected, Seen::Timeout, req("partial")]);
    assert!(
        sim.closed.is_none(),
        "a caught timeout keeps the connection"
    );
}

#[test]
fn zero_timeout_with_nothing_buffered_times_out_at_once_without_spinning() {
    let (h, l) = Scripted::new(|_, _| Ok(Next::recv_timeout(Duration::ZERO)));
    let mut sim = LineSim::lines(h);
    // One timeout per wake-up: a handler that keeps asking for zero timeouts cannot hang
    // the machine; the driver's timer (due now) brings the next one.
    assert_eq!(log(&l), [Seen::Connected, Seen::Timeout]);
    assert_eq!(sim.session.poll_timeout(), Some(sim.clock.now()));
    sim.session.handle_timeout(sim.clock.now());
    assert_eq!(log(&l), [Seen::Connected, Seen::Timeout, Seen::Timeout]);
    sim.session.handle_read(sim.clock.now(), b"a\n");
    let seen = log(&l);
    assert_eq!(
        &seen[3..],
        [req("a"), Seen::Timeout],
        "buffered data comes before the next timeout"
    );
}

#[test]
fn zero_timeout_with_buffered_request_gets_the_request() {
    let (h, l) = Scripted::new(move |_, seen| {
        Ok(match seen {
            Seen::Connected => Next::recv(),
            Seen::Request(r) if r == "a" => Next::recv_timeout(Duration::ZERO),
            _ => Next::recv(),
        })
    });
    let mut sim = LineSim::lines(h);
    sim.read(b"a\nb\n");
    assert_eq!(log(&l), [Seen::Connected, req("a"), req("b")]);
    sim.read(b"c\n");
    assert_eq!(log(&l).last(), Some(&req("c")));
}

#[test]
fn parse_error_reaches_the_handler_and_the_next_line_is_served() {
    let (h, l) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    sim.read(b"\xff\xfe\nok\n");
    assert_eq!(
        log(&l),
        [
            Seen::Connected,
            Seen::ParseError("deserialize".into()),
            req("ok")
        ]
    );
    assert_eq!(sim.take_written(), "error\nok\n");
    assert!(sim.closed.is_none());
}

#[test]
fn over_long_line_is_a_parse_error_and_the_connection_goes_on() {
    let (h, l) = Scripted::echo();
    let config = StreamConfig::default();
    let lines = Stream::<_, _, String, String>::new(Lines::new().limit(8).unwrap(), Utf8::new());
    let mut sim = Sim::with_config(h, lines, config);
    sim.read(b"0123456789ABCDEF");
    sim.read(b"GH\nnext\n");
    let seen = log(&l);
    assert_eq!(seen[1], Seen::ParseError("line too long".into()));
    assert_eq!(seen.last(), Some(&req("next")));
    assert!(sim.closed.is_none());
}

#[test]
fn next_close_flushes_then_closes_gracefully_after_on_disconnection() {
    let (h, l) = Scripted::new(|cx, seen| {
        Ok(match seen {
            Seen::Request(r) => {
                cx.send(r)?;
                Next::Close
            }
            _ => Next::recv(),
        })
    });
    let mut sim = LineSim::lines(h);
    sim.read(b"last\nignored\n");
    assert_eq!(log(&l), [Seen::Connected, req("last"), DISCONNECTED]);
    assert_eq!(sim.take_written(), "last\n");
    assert_eq!(sim.closed, Some(CloseHow::Graceful));
    assert!(!sim.session.wants_read());
}

#[test]
fn handler_error_runs_on_disconnection_and_resets_after_flushing_earlier_responses() {
    let (h, l) = Scripted::new(|cx, seen| match seen {
        Seen::Request(r) if r == "boom" => Err("boom".into()),
        Seen::Request(r) => {
            cx.send(r)?;
            Ok(Next::recv())
        }
        _ => Ok(Next::recv()),
    });
    let mut sim = LineSim::lines(h);
    sim.read(b"fine\nboom\nnever\n");
    assert_eq!(
        log(&l),
        [Seen::Connected, req("fine"), req("boom"), DISCONNECTED]
    );
    assert_eq!(sim.take_written(), "fine\n");
    assert_eq!(sim.closed, Some(CloseHow::Abort));
}

#[test]
fn handler_panic_closes_only_its_connection() {
    let (h1, l1) = Scripted::new(|_, seen| {
        if let Seen::Request(_) = seen {
            panic!("handler bug");
        }
        Ok(Next::recv())
    });
    let (h2, l2) = Scripted::echo();
    let mut bad = LineSim::lines(h1);
    let mut good = LineSim::lines(h2);
    bad.read(b"x\n");
    good.read(b"y\n");
    assert_eq!(bad.closed, Some(CloseHow::Abort));
    assert_eq!(log(&l1).last(), Some(&DISCONNECTED));
    assert_eq!(log(&l2), [Seen::Connected, req("y")]);
    assert_eq!(good.take_written(), "y\n");
    assert!(good.closed.is_none());
}

#[test]
fn on_connection_error_closes_without_on_disconnection() {
    let (h, l) = Scripted::new(|_, seen| match seen {
        Seen::Connected => Err("refused".into()),
        _ => Ok(Next::recv()),
    });
    let sim = LineSim::lines(h);
    assert_eq!(log(&l), [Seen::Connected]);
    assert_eq!(sim.closed, Some(CloseHow::Abort));
}

#[test]
fn on_connection_close_skips_handle_but_calls_on_disconnection() {
    let (h, l) = Scripted::new(|cx, _| {
        cx.send(&"go away".to_owned())?;
        Ok(Next::Close)
    });
    let mut sim = LineSim::lines(h);
    assert_eq!(log(&l), [Seen::Connected, DISCONNECTED]);
    assert_eq!(sim.take_written(), "go away\n");
    assert_eq!(sim.closed, Some(CloseHow::Graceful));
}

#[test]
fn peer_eof_delivers_complete_requests_first_and_drops_the_partial_one() {
    let (h, l) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    sim.session.handle_read(sim.clock.now(), b"one\ntwo\npart");
    sim.eof();
    assert_eq!(
        log(&l),
        [Seen::Connected, req("one"), req("two"), DISCONNECTED]
    );
    assert_eq!(sim.take_written(), "one\ntwo\n");
    assert_eq!(sim.closed, Some(CloseHow::Graceful));
}

#[test]
fn reset_by_peer_calls_on_disconnection_and_aborts() {
    let (h, l) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    sim.session.handle_io_error(sim.clock.now());
    sim.pump();
    assert_eq!(log(&l), [Seen::Connected, DISCONNECTED]);
    assert_eq!(sim.closed, Some(CloseHow::Abort));
}

#[test]
fn shutdown_answers_what_was_read_then_closes_gracefully() {
    let (h, l) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    sim.write_window = Some(0); // the peer is not reading yet
    sim.read(b"r1\n");
    sim.session.handle_read(sim.clock.now(), b"r2\nr3\npartial");
    let deadline = sim.clock.now() + Duration::from_secs(5);
    sim.session.shutdown(sim.clock.now(), deadline);
    sim.pump();
    assert!(
        !sim.session.wants_read(),
        "nothing more is read after shutdown"
    );
    assert_eq!(
        log(&l),
        [
            Seen::Connected,
            req("r1"),
            req("r2"),
            req("r3"),
            DISCONNECTED
        ]
    );
    assert_eq!(sim.closed, None, "responses still queued");
    sim.write_window = None;
    sim.pump();
    assert_eq!(sim.take_written(), "r1\nr2\nr3\n");
    assert_eq!(sim.closed, Some(CloseHow::Graceful));
}

#[test]
fn shutdown_deadline_aborts_a_peer_that_never_reads() {
    let (h, _) = Scripted::echo();
    let mut sim = LineSim::lines(h);
    sim.write_window = Some(0);
    sim.read(b"x\n");
    let deadline = sim.clock.now() + Duration::from_secs(2);
    sim.session.shutdown(sim.clock.now(), deadline);
    sim.pump();
    assert_eq!(sim.closed, None);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.closed, Some(CloseHow::Abort));
}

#[test]
fn graceful_close_is_bounded_by_the_shutdown_timeout() {
    let (h, _) = Scripted::new(|cx, seen| {
        if let Seen::Request(_) = seen {
            cx.send(&"x".repeat(100))?;
            return Ok(Next::Close);
        }
        Ok(Next::recv())
    });
    let config = StreamConfig::default().with_shutdown_timeout(Duration::from_secs(3));
    let mut sim = Sim::with_config(h, Stream::lines(), config);
    sim.write_window = Some(0); // the peer stops reading
    sim.read(b"go\n");
    assert_eq!(sim.closed, None);
    sim.advance(Duration::from_millis(2999));
    assert_eq!(sim.closed, None);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.closed, Some(CloseHow::Abort));
}

#[test]
fn reading_stops_while_the_write_queue_is_over_the_high_water_mark() {
    let (h, _) = Scripted::echo();
    let config = StreamConfig::default().with_write_high_water(64);
    let mut sim = Sim::with_config(h, Stream::lines(), config);
    sim.write_window = Some(0);
    let line = format!("{}\n", "y".repeat(40));
    sim.read(line.as_bytes());
    assert!(sim.session.wants_read());
    sim.read(line.as_bytes());
    assert!(!sim.session.wants_read(), "82 bytes queued > 64");
    sim.write_window = None;
    sim.pump();
    assert!(sim.session.wants_read());
}

#[test]
fn send_after_close_is_refused_with_a_typed_error() {
    let (h, l) = Scripted::new(|cx, seen| {
        if let Seen::Request(_) = seen {
            return Ok(Next::Close);
        }
        let _ = cx;
        Ok(Next::recv())
    });
    let mut sim = LineSim::lines(h);
    sim.read(b"q\n");
    // Disconnected records that a send in on_disconnection was refused as Closed.
    assert_eq!(log(&l).last(), Some(&DISCONNECTED));
    let _ = SendError::Closed;
}

#[test]
fn large_reads_switch_to_reading_in_place_and_small_ones_back() {
    let (h, l) = Scripted::echo();
    let config = StreamConfig::default().with_read_size(64);
    let mut sim = Sim::with_config(h, Stream::lines(), config);
    assert!(
        sim.session.read_buffer().is_none(),
        "small reads copy: idle connections keep no buffer"
    );
    sim.read(&[b'x'; 40]); // at least half a read: the next one goes in place
    let buf = sim.session.read_buffer().expect("in-place read offered");
    assert!(buf.capacity() - buf.len() >= 64);
    buf.extend_from_slice(b"yz\n");
    sim.session.handle_read_in_place(sim.clock.now(), 3);
    sim.pump();
    assert_eq!(log(&l).last(), Some(&req(&format!("{}yz", "x".repeat(40)))));
    // A bulk request's short last read keeps reading in place; four small reads in a row
    // switch back.
    for _ in 0..3 {
        let buf = sim.session.read_buffer().expect("still in place");
        buf.extend_from_slice(b"w\n");
        sim.session.handle_read_in_place(sim.clock.now(), 2);
        sim.pump();
    }
    assert_eq!(log(&l).last(), Some(&req("w")));
    assert!(
        sim.session.read_buffer().is_none(),
        "four small reads switch back"
    );
    sim.read(b"v\n");
    sim.pump();
    assert_eq!(log(&l).last(), Some(&req("v")));
    sim.session.handle_eof(sim.clock.now());
    sim.pump();
    assert_eq!(sim.closed, Some(CloseHow::Graceful), "end of stream closes");
}
