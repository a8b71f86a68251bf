//! Server counters (`ServerStats`) and per-peer log limits, counted in the core: checked on
//! the simulator, so every driver reports the same numbers (the drivers' tests check the
//! same counters over sockets).

#![cfg(feature = "sim")]

mod support;

use std::time::Duration;

use easynet_core::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    StreamContext, StreamHandler,
};
use easynet_core::log_limit::DEFAULT_BURST;
use easynet_core::protocol::{Datagram, Stream};
use easynet_core::sim::{DatagramSim, StreamSim};
use easynet_core::stream::{AsyncStreamHandler, RecvError, StreamPeer};
use support::logs::Capture;

/// Echoes lines; "fail" returns an error, "panic" panics, "quit" closes.
struct Echo;

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) if l == "fail" => return Err("failed on request".into()),
            Received::Request(l) if l == "panic" => panic!("requested panic"),
            Received::Request(l) => cx.send(&l)?,
            Received::ParseError(_) => cx.send("error".to_owned())?,
            Received::Timeout => {}
        }
        Ok(Next::recv())
    }
}

fn echo(_: &ConnInfo) -> Echo {
    Echo
}

#[test]
fn stream_counters_match_what_the_clients_sent() {
    let mut sim = StreamSim::new(Stream::lines(), echo);
    // Client a: 3 requests, 2 undecodable lines, then closes itself (quit).
    let a = sim.connect();
    let sent_a: &[u8] = b"one\ntwo\n\xff\xfe\n\xff\nthree\nquit\n";
    sim.send_bytes(a, sent_a);
    // Client b: one request, then EOF: closed by the peer.
    let b = sim.connect();
    sim.send_bytes(b, b"hello\n");
    sim.shutdown_write(b);
    // Client c: a handler error. Client d: a handler panic.
    let c = sim.connect();
    sim.send_bytes(c, b"fail\n");
    let d = sim.connect();
    sim.send_bytes(d, b"panic\n");
    sim.run_until_idle();
    sim.advance(Duration::from_secs(1));

    let s = sim.stats();
    assert_eq!((s.accepted, s.open, s.closed), (4, 0, 4), "{s:?}");
    // quit, fail and panic are requests too.
    assert_eq!(s.requests, 4 + 1 + 1 + 1, "{s:?}");
    assert_eq!(s.parse_errors, 2, "{s:?}");
    assert_eq!((s.handler_errors, s.handler_panics), (1, 1), "{s:?}");
    assert_eq!(s.handshake_failures, 0);
    let sent = sent_a.len() + b"hello\n".len() + b"fail\n".len() + b"panic\n".len();
    assert_eq!(s.bytes_in, sent as u64, "{s:?}");
    // Replies: one, two, error, error, three (client a), hello (client b).
    let replied = b"one\ntwo\nerror\nerror\nthree\nhello\n".len();
    assert_eq!(s.bytes_out, replied as u64, "{s:?}");
    let by = s.closed_by;
    assert_eq!((by.normal, by.by_peer, by.error), (1, 1, 2), "{s:?}");
    assert_eq!((by.reset, by.timeout, by.shutdown), (0, 0, 0), "{s:?}");
}

#[test]
fn a_shutdown_is_counted_as_the_reason() {
    let mut sim = StreamSim::new(Stream::lines(), echo);
    let a = sim.connect();
    sim.send_bytes(a, b"x\n");
    assert_eq!(sim.stats().open, 1);
    sim.shutdown();
    let s = sim.stats();
    assert_eq!((s.closed, s.closed_by.shutdown), (1, 1), "{s:?}");
}

#[test]
fn reconnecting_does_not_buy_more_log_lines() {
    let mut sim = StreamSim::builder(Stream::lines(), echo)
        .capture_logs()
        .build();
    // 100 connections from one host, each making its handler fail, in one instant.
    for _ in 0..100 {
        let c = sim.connect();
        sim.send_bytes(c, b"fail\n");
    }
    let errors = |sim: &StreamSim<_, _>| {
        sim.logs()
            .into_iter()
            .filter(|l| l.text.contains("exception occurred"))
            .collect::<Vec<_>>()
    };
    assert_eq!(errors(&sim).len(), DEFAULT_BURST as usize);
    assert_eq!(sim.stats().handler_errors, 100);
    // A second later the next line says how many were left out.
    sim.advance(Duration::from_secs(1));
    let c = sim.connect();
    sim.send_bytes(c, b"fail\n");
    let all = errors(&sim);
    assert_eq!(all.len(), DEFAULT_BURST as usize + 1);
    let last = &all.last().unwrap().text;
    assert!(
        last.contains(&format!("suppressed={}", 100 - DEFAULT_BURST)),
        "{last}"
    );
}

/// The async twin: "fail" is an error, a bad line a parse error it reports back.
struct AsyncEcho;

impl AsyncStreamHandler for AsyncEcho {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        match client.recv().await {
            Ok(l) if l == "fail" => Err("failed on request".into()),
            Ok(l) if l == "panic" => panic!("requested panic"),
            Ok(l) => Ok(client.send(&l).await?),
            Err(RecvError::Parse(_)) => Ok(client.send(&"error".to_owned()).await?),
            Err(e) => Err(e.into()),
        }
    }
}

#[test]
fn async_handlers_are_counted_the_same() {
    let mut sim = StreamSim::new_async(Stream::lines(), |_: &ConnInfo| AsyncEcho);
    let a = sim.connect();
    sim.send_bytes(a, b"one\n\xff\ntwo\n");
    sim.close(a);
    let b = sim.connect();
    sim.send_bytes(b, b"fail\n");
    let c = sim.connect();
    sim.send_bytes(c, b"panic\n");
    sim.run_until_idle();
    sim.advance(Duration::from_secs(1));
    let s = sim.stats();
    assert_eq!((s.accepted, s.closed), (3, 3), "{s:?}");
    assert_eq!((s.requests, s.parse_errors), (4, 1), "{s:?}");
    assert_eq!((s.handler_errors, s.handler_panics), (1, 1), "{s:?}");
    assert_eq!(s.closed_by.error, 2, "{s:?}");
}

/// Echoes datagrams; "fail" fails, "panic" panics, a bad datagram is answered "error".
struct DgramEcho;

impl DatagramHandler for DgramEcho {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        match r {
            Received::Request(l) if l == "fail" => return Err("failed on request".into()),
            Received::Request(l) if l == "panic" => panic!("requested panic"),
            Received::Request(l) => cx.send(&l)?,
            Received::ParseError(_) => cx.send("error".to_owned())?,
            Received::Timeout => {}
        }
        Ok(Next::Close)
    }
}

#[test]
fn datagram_counters_and_log_limits() {
    let capture = Capture::default();
    let s = tracing::subscriber::with_default(capture.clone(), || {
        let mut sim = DatagramSim::new(Datagram::lines(), |_: &ConnInfo| DgramEcho);
        let p = sim.peer();
        sim.send_bytes(p, b"hello");
        sim.send_bytes(p, b"\xff");
        for _ in 0..50 {
            sim.send_bytes(p, b"fail");
        }
        sim.send_bytes(p, b"panic");
        sim.stats()
    });
    assert_eq!(
        (s.datagrams_in, s.requests, s.parse_errors),
        (53, 52, 1),
        "{s:?}"
    );
    assert_eq!((s.handler_errors, s.handler_panics), (50, 1), "{s:?}");
    assert_eq!(s.datagrams_out, 2, "{s:?}");
    assert_eq!(s.bytes_in, (5 + 1 + 50 * 4 + 5) as u64, "{s:?}");
    assert_eq!(
        s.bytes_out,
        (b"hello".len() + b"error".len()) as u64,
        "{s:?}"
    );
    let lines = capture
        .logs()
        .into_iter()
        .filter(|l| l.text.contains("error in datagram handler") || l.text.contains("panicked"))
        .count();
    assert_eq!(
        lines, DEFAULT_BURST as usize,
        "51 failures, one instant, one peer"
    );
}
