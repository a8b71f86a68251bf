//! The same scenarios, with the same portable handler, on both drivers (and the poll loop
//! example) over loopback (reference/behaviour.md §2 and §4). Blocking std clients keep the
//! scenarios driver-free.

#![cfg(all(feature = "tokio", feature = "mio"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::drivers::{self, Opts, Running, Start};

const LIMIT: Duration = Duration::from_secs(10);

struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Peer {
    fn connect(server: &Running) -> Self {
        let s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        Self {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.writer.write_all(data).unwrap();
    }

    /// The next line, or `None` at EOF or reset.
    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => None,
            Ok(_) => Some(l.trim_end_matches('\n').to_owned()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Runs `scenario` on both drivers and on the poll loop example (examples/poll_loop.rs), a
/// third driver written against the core's public API.
fn both(scenario: fn(Start)) {
    scenario(drivers::tokio);
    scenario(drivers::mio);
    #[cfg(all(unix, feature = "tls", feature = "json"))]
    scenario(drivers::poll_loop);
}

#[test]
fn echo_pipelined_then_close() {
    both(|start| {
        let server = start(Opts::default());
        let mut p = Peer::connect(&server);
        p.send(b"one\ntwo\nthr");
        p.send(b"ee\nquit\nignored\n");
        assert_eq!(p.line().as_deref(), Some("one"));
        assert_eq!(p.line().as_deref(), Some("two"));
        assert_eq!(p.line().as_deref(), Some("three"));
        assert_eq!(p.line(), None, "closed after quit");
        server.stop();
    });
}

#[test]
fn parse_error_then_next_request() {
    both(|start| {
        let server = start(Opts::default());
        let mut p = Peer::connect(&server);
        p.send(b"\xff\xfe\nfine\n");
        assert_eq!(p.line().as_deref(), Some("error"));
        assert_eq!(p.line().as_deref(), Some("fine"));
        server.stop();
    });
}

#[test]
fn receive_timeout_reaches_the_handler_and_partial_bytes_are_kept() {
    both(|start| {
        let server = start(Opts {
            timeout: Some(Duration::from_millis(100)),
            ..Opts::default()
        });
        let mut p = Peer::connect(&server);
        p.send(b"par");
        assert_eq!(p.line().as_deref(), Some("timeout"));
        p.send(b"tial\n");
        let mut got = p.line();
        while got.as_deref() == Some("timeout") {
            got = p.line();
        }
        assert_eq!(got.as_deref(), Some("partial"));
        server.stop();
    });
}

#[test]
fn a_panicking_handler_closes_only_its_connection() {
    both(|start| {
        let server = start(Opts::default());
        let mut bad = Peer::connect(&server);
        let mut good = Peer::connect(&server);
        bad.send(b"panic\n");
        assert_eq!(bad.line(), None);
        good.send(b"still here\n");
        assert_eq!(good.line().as_deref(), Some("still here"));
        server.stop();
    });
}

#[test]
fn shutdown_answers_every_request_already_sent() {
    both(|start| {
        let server = start(Opts::default());
        let mut p = Peer::connect(&server);
        let mut batch = Vec::new();
        for i in 0..500 {
            batch.extend_from_slice(format!("req{i}\n").as_bytes());
        }
        p.send(&batch);
        assert_eq!(p.line().as_deref(), Some("req0"));
        let stopper = std::thread::spawn(move || server.stop());
        let mut n = 1;
        while let Some(line) = p.line() {
            assert_eq!(line, format!("req{n}"));
            n += 1;
        }
        assert_eq!(n, 500, "every request that was read got its answer");
        stopper.join().unwrap();
    });
}

#[test]
fn a_client_that_does_not_read_is_not_buffered_without_bound() {
    both(|start| {
        let server = start(Opts {
            write_high_water: Some(64 * 1024),
            ..Opts::default()
        });
        let s = TcpStream::connect(server.addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut w = s.try_clone().unwrap();
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // 256 MiB of requests would be echoed back in full if the server kept reading; it
        // stops once its write queue is full, so our writes block and time out.
        let mut sent = 0usize;
        let blocked = loop {
            match w.write(&line) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break true;
                }
                Err(e) => panic!("write failed: {e}"),
            }
            if sent > 256 << 20 {
                break false;
            }
        };
        assert!(
            blocked,
            "the server kept reading {sent} bytes from a client that never reads"
        );
        drop((s, w));
        server.stop();
    });
}

#[cfg(feature = "tls")]
#[test]
fn tls_echo_and_handshake_deadline() {
    both(|start| {
        let id = certs::Identity::localhost();
        let server = start(Opts {
            tls: Some(id.server_config().into()),
            handshake_timeout: Some(Duration::from_millis(200)),
            ..Opts::default()
        });
        // A TLS client.
        let conn = rustls::ClientConnection::new(id.client_config(), certs::localhost()).unwrap();
        let sock = TcpStream::connect(server.addr).unwrap();
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"secret\n").unwrap();
        let mut reader = BufReader::new(tls);
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        assert_eq!(l, "secret\n");
        // A client that never sends its hello is dropped at the deadline.
        let mut idle = TcpStream::connect(server.addr).unwrap();
        idle.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(
            std::io::Read::read(&mut idle, &mut buf),
            Ok(0) | Err(_)
        ));
        server.stop();
    });
}

/// A client over `rustls` that trusts `trusted`; the line it gets back for `line`, or the
/// handshake error.
#[cfg(feature = "tls")]
fn tls_echo(
    addr: std::net::SocketAddr,
    trusted: &certs::Identity,
    line: &str,
) -> Result<
    (
        String,
        rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    ),
    std::io::Error,
> {
    let conn = rustls::ClientConnection::new(trusted.client_config(), certs::localhost()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let answer = tls_line(&mut tls, line)?;
    Ok((answer, tls))
}

#[cfg(feature = "tls")]
fn tls_line(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    line: &str,
) -> Result<String, std::io::Error> {
    tls.write_all(format!("{line}\n").as_bytes())?;
    let mut got = Vec::new();
    let mut byte = [0u8];
    while got.last() != Some(&b'\n') {
        if std::io::Read::read(tls, &mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got.push(byte[0]);
    }
    Ok(String::from_utf8(got).unwrap().trim_end().to_owned())
}

/// Hot TLS: after `SharedServerConfig::set`, new connections get the new certificate and
/// a connection opened before keeps its session.
#[cfg(feature = "tls")]
#[test]
fn tls_configuration_replaced_while_serving() {
    for start in [drivers::tokio as Start, drivers::mio] {
        let (old, new) = (certs::Identity::localhost(), certs::Identity::localhost());
        let shared = easynet::tls::SharedServerConfig::new(old.server_config());
        let server = start(Opts {
            tls: Some(shared.clone()),
            ..Opts::default()
        });
        let (answer, mut before) = tls_echo(server.addr, &old, "one").unwrap();
        assert_eq!(answer, "one");

        shared.set(new.server_config());
        let refused = tls_echo(server.addr, &old, "two").unwrap_err();
        assert!(
            refused.to_string().contains("invalid peer certificate"),
            "a client trusting only the old certificate: {refused}"
        );
        assert_eq!(tls_echo(server.addr, &new, "three").unwrap().0, "three");
        assert_eq!(tls_line(&mut before, "four").unwrap(), "four");
        server.stop();
    }
}
