//! Closing under load on both drivers over loopback (issue 6): a graceful shutdown answers
//! every request the server has read, within the shutdown timeout, then closes everything;
//! a close with unread input still delivers every answer.

#![cfg(all(feature = "tokio", feature = "mio", feature = "tls"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
#[path = "support/hostile.rs"]
mod hostile;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use easynet::protocol::{Lines, Stream, Utf8};
use easynet::stream::StreamConfig;
use hostile::{DRIVERS, LIMIT, Peer, ProbeService, Setup, serve};

type Text = ProbeService<String>;

fn lines(limit: usize) -> Stream<Lines, Utf8, String, String> {
    Stream::new(Lines::new().limit(limit).unwrap(), Utf8::new())
}

#[test]
fn graceful_shutdown_under_load_answers_every_request_read() {
    for driver in DRIVERS {
        let service = Text::default();
        let handled = service.handled.clone();
        let server = serve(driver, lines(1024), service, Setup::default());
        const CLIENTS: usize = 16;
        const REQUESTS: usize = 2000;
        let mut peers: Vec<Peer> = (0..CLIENTS).map(|_| server.connect()).collect();
        // Writers keep sending while the shutdown starts; readers count in-order answers.
        let readers: Vec<_> = peers
            .iter_mut()
            .enumerate()
            .map(|(c, p)| {
                let mut reader = p.reader.get_ref().try_clone().unwrap();
                let mut writer = p.writer.try_clone().unwrap();
                let w = std::thread::spawn(move || {
                    for i in 0..REQUESTS {
                        if writer.write_all(format!("c{c}-{i}\n").as_bytes()).is_err() {
                            return; // the server stopped reading and closed
                        }
                    }
                });
                let r = std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        match reader.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                            Err(e) => panic!("read: {e}"),
                        }
                    }
                    let text = String::from_utf8(buf).unwrap();
                    let mut n = 0;
                    for l in text.split_terminator('\n') {
                        assert_eq!(l, format!("c{c}-{n}"), "answers in order, none missing");
                        n += 1;
                    }
                    n
                });
                (w, r)
            })
            .collect();
        assert!(hostile::wait_until(LIMIT, || handled
            .load(Ordering::SeqCst)
            >= 2000));
        let took = server.stop();
        assert!(
            took < Duration::from_secs(3) + Duration::from_secs(1),
            "{driver:?}: {took:?}"
        );
        let mut answered = 0;
        for (w, r) in readers {
            w.join().unwrap();
            answered += r.join().unwrap();
        }
        let read = handled.load(Ordering::SeqCst) as usize;
        assert_eq!(
            answered, read,
            "{driver:?}: every request read was answered"
        );
        assert!(read > 0 && read <= CLIENTS * REQUESTS);
        drop(peers);
        eprintln!("{driver:?}: shutdown after {read} requests read, all answered, in {took:?}");
    }
}

#[test]
fn shutdown_with_a_client_that_never_reads_ends_within_the_shutdown_timeout() {
    for driver in DRIVERS {
        let setup = Setup {
            stream: StreamConfig::default().with_shutdown_timeout(Duration::from_millis(500)),
            shutdown_timeout: Duration::from_millis(500),
            ..Setup::default()
        };
        let service = Text::default();
        let handled = service.handled.clone();
        let server = serve(driver, lines(1024), service, setup);
        // A client that sends requests and never reads: the server's write queue fills,
        // it stops reading, and it holds answers it cannot deliver.
        let stuck = TcpStream::connect(server.addr).unwrap();
        stuck
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let line = [&[b'x'; 1023][..], b"\n"].concat();
        let mut w = &stuck;
        while w.write_all(&line).is_ok() {}
        let mut good = server.connect();
        assert_eq!(good.ask("ok").as_deref(), Some("ok"));
        assert!(handled.load(Ordering::SeqCst) > 1);
        let took = server.stop();
        assert!(
            took < Duration::from_millis(500) + Duration::from_secs(1),
            "{driver:?}: shutdown took {took:?}"
        );
        assert!(
            good.closed_by_server(),
            "{driver:?}: the good client was closed"
        );
        // The stuck client's connection is gone too (reset at the deadline).
        let mut s = stuck;
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "{driver:?}: the stuck client was closed");
    }
}

/// The second Ctrl-C: a graceful shutdown held for 30 s by a client that never reads is
/// hurried with a zero timeout; every connection is reset at once and the run ends.
#[test]
fn a_hurried_shutdown_resets_every_connection_at_once() {
    for driver in DRIVERS {
        let setup = Setup {
            stream: StreamConfig::default().with_shutdown_timeout(Duration::from_secs(30)),
            shutdown_timeout: Duration::from_secs(30),
            ..Setup::default()
        };
        let server = serve(driver, lines(1024), Text::default(), setup);
        let stuck = TcpStream::connect(server.addr).unwrap();
        stuck
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let line = [&[b'x'; 1023][..], b"\n"].concat();
        let mut w = &stuck;
        while w.write_all(&line).is_ok() {}
        let mut good = server.connect();
        assert_eq!(good.ask("ok").as_deref(), Some("ok"));

        let hurry = server.hurry();
        let stopping = std::thread::spawn(move || server.stop());
        // The graceful shutdown has begun once the good client is closed; the stuck one
        // would hold the run for 30 s.
        assert!(
            good.closed_by_server(),
            "{driver:?}: the good client was closed"
        );
        let hurried = Instant::now();
        hurry();
        let took = stopping.join().unwrap();
        assert!(
            hurried.elapsed() < Duration::from_secs(5),
            "{driver:?}: the hurried shutdown took {:?} (the whole stop {took:?})",
            hurried.elapsed()
        );
        let mut s = stuck;
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let reset = loop {
            match s.read(&mut buf) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(e) => break e.kind() == ErrorKind::ConnectionReset,
            }
        };
        assert!(reset, "{driver:?}: the stuck client was reset");
    }
}

#[test]
fn graceful_tls_shutdown_under_load_answers_every_request_read() {
    let id = certs::Identity::localhost();
    for driver in DRIVERS {
        let service = Text::default();
        let handled = service.handled.clone();
        let setup = Setup {
            tls: Some(id.server_config()),
            ..Setup::default()
        };
        let server = serve(driver, lines(1024), service, setup);
        const CLIENTS: usize = 8;
        const REQUESTS: usize = 1000;
        // Each client pipelines all its requests, then reads answers until the close.
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let conn =
                    rustls::ClientConnection::new(id.client_config(), certs::localhost()).unwrap();
                let sock = TcpStream::connect(server.addr).unwrap();
                sock.set_read_timeout(Some(LIMIT)).unwrap();
                sock.set_write_timeout(Some(LIMIT)).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let batch: String = (0..REQUESTS).map(|i| format!("c{c}-{i}\n")).collect();
                tls.write_all(batch.as_bytes()).unwrap();
                std::thread::spawn(move || {
                    let mut text = Vec::new();
                    // close_notify ends the read; a client whose connection was still in the
                    // listener's queue (or handshaking) at shutdown is reset with nothing
                    // read: the count below shows nothing read was lost either way.
                    match tls.read_to_end(&mut text) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                        Err(e) => panic!("client {c}: {e}"),
                    }
                    let text = String::from_utf8(text).unwrap();
                    let mut n = 0;
                    for l in text.split_terminator('\n') {
                        assert_eq!(l, format!("c{c}-{n}"), "answers in order, none missing");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        assert!(hostile::wait_until(LIMIT, || handled
            .load(Ordering::SeqCst)
            >= 1000));
        let took = server.stop();
        assert!(took < Duration::from_secs(4), "{driver:?}: {took:?}");
        let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
        let read = handled.load(Ordering::SeqCst) as usize;
        assert_eq!(
            answered, read,
            "{driver:?}: every request read was answered"
        );
        eprintln!("{driver:?} TLS: shutdown after {read} requests read, all answered, in {took:?}");
    }
}

#[test]
fn answers_survive_a_close_with_unread_input() {
    for driver in DRIVERS {
        let server = serve(driver, lines(1024), Text::default(), Setup::default());
        let mut p = server.connect();
        // 3 MB of requests, "quit", then more the server will never read. The answers must
        // all reach the client although the server closes with unread input (a plain close
        // would reset the connection and drop the answers still in its send buffer).
        let body = "y".repeat(1000);
        let mut data = Vec::new();
        for i in 0..3000 {
            data.extend_from_slice(format!("{i:04}{body}\n").as_bytes());
        }
        data.extend_from_slice(b"quit\n");
        data.extend_from_slice(&[b'z'; 1 << 20]);
        let mut w = p.writer.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
        // Read slowly at first, so answers pile up in the server's socket.
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..3000 {
            let expected = format!("{i:04}{body}");
            assert_eq!(
                p.line().as_deref(),
                Some(expected.as_str()),
                "{driver:?}: answer {i}"
            );
        }
        assert!(p.closed_by_server());
        drop(p);
        writer.join().unwrap();
        server.stop();
    }
}
