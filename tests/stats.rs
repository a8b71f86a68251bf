//! `stats()` on both drivers over loopback: the counters match exactly what the clients sent
//! (requests, bytes, parse errors from bad input, handler panics, closes by reason, failed
//! TLS handshakes, datagrams).

#![cfg(all(feature = "tokio", feature = "mio"))]

#[cfg(feature = "tls")]
#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use easynet::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
use easynet::protocol::{Datagram, Stream};
use easynet::stats::ServerStats;
use support::drivers::{self, Opts, Running};

const LIMIT: Duration = Duration::from_secs(10);

/// Polls `stats` until `done` holds (the counters of a connection are added when the
/// server sees its end), or fails with the last snapshot.
fn wait_for(server: &Running, done: impl Fn(&ServerStats) -> bool) -> ServerStats {
    let start = Instant::now();
    loop {
        let s = server.stats();
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < LIMIT, "stats never got there: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn connect(server: &Running) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// Reads until the server closes; returns what came.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

fn stream_counters(start: fn(Opts) -> Running) {
    let server = start(Opts::default());
    // a: three requests (quit is one), one undecodable line; the handler closes.
    let sent_a: &[u8] = b"one\ntwo\n\xff\xfe\nquit\n";
    let mut a = connect(&server);
    a.write_all(sent_a).unwrap();
    assert_eq!(read_to_close(&mut a), b"one\ntwo\nerror\n");
    // b: a handler panic (the connection is reset).
    let mut b = connect(&server);
    b.write_all(b"panic\n").unwrap();
    read_to_close(&mut b);
    // c: one request, then the client closes first.
    let mut c = connect(&server);
    c.write_all(b"x\n").unwrap();
    let mut reply = [0; 2];
    c.read_exact(&mut reply).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    read_to_close(&mut c);

    let s = wait_for(&server, |s| s.closed == 3);
    assert_eq!((s.accepted, s.open), (3, 0), "{s:?}");
    assert_eq!((s.requests, s.parse_errors), (5, 1), "{s:?}");
    assert_eq!((s.handler_errors, s.handler_panics), (0, 1), "{s:?}");
    let sent = sent_a.len() + b"panic\n".len() + b"x\n".len();
    assert_eq!(s.bytes_in, sent as u64, "{s:?}");
    assert_eq!(s.bytes_out, b"one\ntwo\nerror\nx\n".len() as u64, "{s:?}");
    let by = s.closed_by;
    assert_eq!((by.normal, by.error, by.by_peer), (1, 1, 1), "{s:?}");
    server.stop();
}

#[test]
fn tokio_stream_counters() {
    stream_counters(drivers::tokio);
}

#[test]
fn mio_stream_counters() {
    stream_counters(drivers::mio);
}

#[cfg(feature = "tls")]
/// A client that does not trust the server's certificate fails the handshake: the server
/// counts one failed handshake and no request.
fn handshake_failure(start: fn(Opts) -> Running) {
    let id = certs::Identity::localhost();
    let stranger = certs::Identity::localhost();
    let server = start(Opts {
        tls: Some(id.server_config().into()),
        ..Opts::default()
    });
    let res = easynet::mio::TcpClient::connect_tls(
        server.addr,
        Stream::lines(),
        stranger.client_config(),
        certs::localhost(),
    );
    assert!(res.is_err(), "the client must refuse the certificate");
    let s = wait_for(&server, |s| s.closed == 1);
    assert_eq!(
        (s.accepted, s.handshake_failures, s.requests),
        (1, 1, 0),
        "{s:?}"
    );
    assert_eq!(s.closed_by.error, 1, "{s:?}");
    server.stop();
}

#[cfg(feature = "tls")]
#[test]
fn tokio_handshake_failure_is_counted() {
    handshake_failure(drivers::tokio);
}

#[cfg(feature = "tls")]
#[test]
fn mio_handshake_failure_is_counted() {
    handshake_failure(drivers::mio);
}

/// Echoes datagrams; "fail" fails; a bad datagram is answered "error".
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
            Received::Request(l) => cx.send(&l)?,
            Received::ParseError(_) => cx.send(&"error".to_owned())?,
            Received::Timeout => {}
        }
        Ok(Next::Close)
    }
}

fn datagram_counters(server: Running) {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0; 64];
    for (datagram, reply) in [
        (&b"hello"[..], Some(&b"hello"[..])),
        (b"\xff", Some(b"error")),
    ] {
        client.send_to(datagram, server.addr).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(Some(&buf[..n]), reply);
    }
    client.send_to(b"fail", server.addr).unwrap();
    let s = wait_for(&server, |s| s.handler_errors == 1);
    assert_eq!((s.datagrams_in, s.datagrams_out), (3, 2), "{s:?}");
    assert_eq!((s.requests, s.parse_errors), (2, 1), "{s:?}");
    assert_eq!((s.bytes_in, s.bytes_out), (10, 10), "{s:?}");
    assert_eq!((s.handler_panics, s.dropped_datagrams), (0, 0), "{s:?}");
    assert_eq!((s.accepted, s.closed), (0, 0), "{s:?}");
    server.stop();
}

#[test]
fn tokio_datagram_counters() {
    datagram_counters(drivers::tokio_udp(Datagram::lines(), |_: &ConnInfo| {
        DgramEcho
    }));
}

#[test]
fn mio_datagram_counters() {
    datagram_counters(drivers::mio_udp(Datagram::lines(), |_: &ConnInfo| {
        DgramEcho
    }));
}
