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
    let res = easynet::blocking::TcpClient::connect_tls(
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
            Received::ParseError(_) => cx.send("error".to_owned())?,
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

/// Echoes; "block" first tells the test it is in (`entered`) and waits for `release`: the
/// server's loop stands still meanwhile, so datagrams pile up in its socket.
#[cfg(target_os = "linux")]
struct Gated(std::sync::Arc<Gate>);

#[cfg(target_os = "linux")]
struct Gate {
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

#[cfg(target_os = "linux")]
impl DatagramHandler for Gated {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        if let Received::Request(l) = r {
            if l == "block" {
                let _ = self.0.entered.lock().unwrap().send(());
                // Bounded: a test that fails before releasing does not hang the server.
                let _ = self.0.release.lock().unwrap().recv_timeout(LIMIT);
            }
            cx.send(&l)?;
        }
        Ok(Next::Close)
    }
}

/// Kernel drops on the UDP socket bound to `port` (the last column of /proc/net/udp).
#[cfg(target_os = "linux")]
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let p = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            (p == port).then(|| cols.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Datagrams in a burst: far more than the smallest receive buffer holds.
#[cfg(target_os = "linux")]
const BURST: u64 = 200;

/// A socket with the smallest receive buffer (the kernel raises 1 to its minimum: a few
/// small datagrams fit), and its port.
#[cfg(target_os = "linux")]
fn small_socket() -> (UdpSocket, u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(1)
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// A gate for [`Gated`] handlers, with where they say they entered and what releases them.
#[cfg(target_os = "linux")]
fn gate() -> (
    std::sync::Arc<Gate>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let gate = std::sync::Arc::new(Gate {
        entered: std::sync::Mutex::new(entered_tx),
        release: std::sync::Mutex::new(release_rx),
    });
    (gate, entered, release)
}

#[cfg(target_os = "linux")]
fn udp_client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    c
}

/// Sends "d0", "d1"... ([`BURST`] of them). Loopback delivers within `send_to`: each
/// datagram is queued or dropped on return.
#[cfg(target_os = "linux")]
fn burst(from: &UdpSocket, to: std::net::SocketAddr) {
    for i in 0..BURST {
        from.send_to(format!("d{i}").as_bytes(), to).unwrap();
    }
}

/// Reads answers up to and with "last": how many.
#[cfg(target_os = "linux")]
fn answers_until_last(s: &UdpSocket) -> u64 {
    let mut buf = [0; 64];
    let mut answered = 0;
    loop {
        let n = s.recv(&mut buf).unwrap();
        answered += 1;
        if &buf[..n] == b"last" {
            return answered;
        }
    }
}

/// A server on a socket with the smallest receive buffer, its loop held by a handler, gets
/// a burst: the kernel drops most of it, and `socket_dropped_datagrams` says exactly how
/// many (SO_RXQ_OVFL, read with the next datagram; the socket's drops from before the
/// server had it are left out); every datagram sent is answered or counted.
#[cfg(target_os = "linux")]
fn socket_drops_are_counted(start: fn(std::sync::Arc<Gate>, UdpSocket) -> Running, driver: &str) {
    let (socket, port) = small_socket();
    // Drops from before the server has the socket are not the server's.
    let early = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        early
            .send_to(b"early", socket.local_addr().unwrap())
            .unwrap();
    }
    socket.set_nonblocking(true).unwrap();
    while socket.recv_from(&mut [0; 64]).is_ok() {}
    let before = kernel_drops(port);
    assert!(before > 0, "{driver}: drops before the server");
    let (gate, entered, release) = gate();
    let server = start(gate, socket);
    let (blocker, flood) = (udp_client(), udp_client());
    blocker.send_to(b"block", server.addr).unwrap();
    entered.recv_timeout(LIMIT).unwrap();
    burst(&flood, server.addr);
    let dropped = kernel_drops(port) - before;
    assert!(dropped > 0, "{driver}: the burst overflowed the socket");
    release.send(()).unwrap();
    let mut buf = [0; 64];
    let n = blocker.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"block");
    // The queued datagrams were read before the drops (their count is the one at queueing);
    // once they are in, one more carries the kernel's count as it is now.
    wait_for(&server, |s| s.datagrams_in == 1 + BURST - dropped);
    flood.send_to(b"last", server.addr).unwrap();
    let answered = 1 + answers_until_last(&flood); // and "block"
    let s = wait_for(&server, |s| s.datagrams_out == answered);
    assert_eq!(
        kernel_drops(port),
        before + dropped,
        "{driver}: no drops after the burst"
    );
    assert_eq!(s.socket_dropped_datagrams, dropped, "{driver}: {s:?}");
    let sent = 1 + BURST + 1;
    eprintln!(
        "{driver}: sent {sent}, answered {answered}, dropped by the server {}, by its socket {}",
        s.dropped_datagrams, s.socket_dropped_datagrams
    );
    assert_eq!(
        sent,
        answered + s.dropped_datagrams + s.socket_dropped_datagrams,
        "{driver}: every datagram answered or counted: {s:?}"
    );
    server.stop();
}

#[cfg(target_os = "linux")]
#[test]
fn tokio_socket_drops_are_counted() {
    socket_drops_are_counted(
        |gate, socket| {
            drivers::tokio_udp_on(
                Datagram::lines(),
                move |_: &ConnInfo| Gated(gate.clone()),
                Some(socket),
            )
        },
        "tokio",
    );
}

#[cfg(target_os = "linux")]
#[test]
fn mio_socket_drops_are_counted() {
    socket_drops_are_counted(
        |gate, socket| {
            drivers::mio_udp_on(
                Datagram::lines(),
                move |_: &ConnInfo| Gated(gate.clone()),
                Some(socket),
            )
        },
        "mio",
    );
}

/// Drops that happen while the loop is busy in a turn are counted with the next datagram
/// it reads, even within that turn: a server's loop held by its handler twice in one turn
/// (a second "block" queued behind the burst that overflowed the socket), then one more
/// datagram queued after the drops. Once it is answered, every drop is counted.
#[cfg(target_os = "linux")]
fn drops_during_a_turn_are_counted(start: fn(std::sync::Arc<Gate>, UdpSocket) -> Running) {
    let (socket, port) = small_socket();
    let (gate, entered, release) = gate();
    let server = start(gate, socket);
    let (blocker, flood) = (udp_client(), udp_client());
    let before = kernel_drops(port);
    blocker.send_to(b"block", server.addr).unwrap();
    entered.recv_timeout(LIMIT).unwrap();
    // Queued first (the socket is empty): it holds the loop again in the same turn.
    flood.send_to(b"block", server.addr).unwrap();
    burst(&flood, server.addr);
    let dropped = kernel_drops(port) - before;
    assert!(dropped > 0, "the burst overflowed the socket");
    release.send(()).unwrap();
    entered.recv_timeout(LIMIT).unwrap();
    // The loop is held again, in the turn that read the burst; this one is queued after
    // the drops, and read in that turn once the handler lets go.
    flood.send_to(b"last", server.addr).unwrap();
    release.send(()).unwrap();
    let mut buf = [0; 64];
    let n = blocker.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"block");
    let answered = 1 + answers_until_last(&flood);
    let s = wait_for(&server, |s| s.datagrams_out == answered);
    assert_eq!(s.socket_dropped_datagrams, dropped, "{s:?}");
    server.stop();
}

#[cfg(target_os = "linux")]
#[test]
fn mio_drops_during_a_turn_are_counted() {
    drops_during_a_turn_are_counted(|gate, socket| {
        drivers::mio_udp_on(
            Datagram::lines(),
            move |_: &ConnInfo| Gated(gate.clone()),
            Some(socket),
        )
    });
}

#[cfg(target_os = "linux")]
#[test]
fn tokio_drops_during_a_turn_are_counted() {
    drops_during_a_turn_are_counted(|gate, socket| {
        drivers::tokio_udp_on(
            Datagram::lines(),
            move |_: &ConnInfo| Gated(gate.clone()),
            Some(socket),
        )
    });
}
