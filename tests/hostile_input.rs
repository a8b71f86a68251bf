//! Hostile input on both drivers over loopback (issue 6): oversized frames, garbage, slow
//! clients, handler faults. Each scenario: a typed error reaches the handler (the probe
//! answers with its name), the connection goes on, and other clients are served meanwhile.

#![cfg(all(feature = "tokio", feature = "mio", feature = "tls", feature = "json"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
#[path = "support/hostile.rs"]
mod hostile;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use easynet::protocol::{LengthPrefixed, Lines, PrefixWidth, Stream, Utf8};
use easynet::stream::StreamConfig;
use hostile::{DRIVERS, LIMIT, Peer, ProbeService, Setup, serve};

type Text = ProbeService<String>;

fn lines(limit: usize) -> Stream<Lines, Utf8, String, String> {
    Stream::new(Lines::new().limit(limit).unwrap(), Utf8::new())
}

fn length(width: PrefixWidth, max: usize) -> Stream<LengthPrefixed, Utf8, String, String> {
    Stream::new(LengthPrefixed::new(width, max).unwrap(), Utf8::new())
}

fn frame(width: PrefixWidth, payload: &[u8]) -> Vec<u8> {
    let mut f = match width {
        PrefixWidth::U16 => (payload.len() as u16).to_be_bytes().to_vec(),
        _ => (payload.len() as u32).to_be_bytes().to_vec(),
    };
    f.extend_from_slice(payload);
    f
}

/// Reads one length-prefixed frame as text.
fn read_frame(s: &mut TcpStream, width: PrefixWidth) -> String {
    let mut len = vec![0u8; width.bytes()];
    s.read_exact(&mut len).unwrap();
    let n = len.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
    let mut payload = vec![0u8; n];
    s.read_exact(&mut payload).unwrap();
    String::from_utf8(payload).unwrap()
}

/// Checks a "line too long" answer: the limit, and that the server held at most the limit
/// plus `slack` bytes of the line when it gave up on it (memory stays bounded).
fn assert_line_too_long(answer: Option<String>, limit: usize, slack: usize) {
    let answer = answer.expect("an answer");
    let rest = answer
        .strip_prefix("error: line too long ")
        .unwrap_or_else(|| panic!("not a LineTooLong: {answer}"));
    let (l, got) = rest.split_once(' ').unwrap();
    assert_eq!(l.parse::<usize>().unwrap(), limit);
    let got: usize = got.parse().unwrap();
    assert!(
        got > limit && got <= limit + slack,
        "held {got} bytes, limit {limit}"
    );
}

#[test]
fn a_line_past_the_limit_is_a_typed_error_and_the_connection_goes_on() {
    for driver in DRIVERS {
        let server = serve(driver, lines(1024), Text::default(), Setup::default());
        let mut big = server.connect();
        let mut other = server.connect();
        // 1 MiB without a separator, in two halves; another client is served in between.
        let half = vec![b'x'; 512 * 1024];
        big.send(&half);
        let read_size = StreamConfig::default().read_size;
        assert_line_too_long(big.line(), 1024, read_size);
        assert_eq!(
            other.ask("meanwhile").as_deref(),
            Some("meanwhile"),
            "{driver:?}"
        );
        big.send(&half);
        big.send(b"\nafter\n");
        assert_eq!(
            big.line().as_deref(),
            Some("after"),
            "{driver:?}: rest skipped"
        );
        assert_eq!(big.ask("again").as_deref(), Some("again"));
        server.stop();
    }
}

#[test]
fn a_length_prefix_past_the_max_is_a_typed_error_and_the_next_frame_decodes() {
    for driver in DRIVERS {
        for (width, max, announced) in [
            (PrefixWidth::U16, 100, 60_000usize),
            (PrefixWidth::U32, 1024, 4 << 20),
        ] {
            let server = serve(
                driver,
                length(width, max),
                Text::default(),
                Setup::default(),
            );
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            let mut other = TcpStream::connect(server.addr).unwrap();
            other.set_read_timeout(Some(LIMIT)).unwrap();
            // The announced frame arrives in pieces; the server skips it as it comes.
            let mut head = match width {
                PrefixWidth::U16 => (announced as u16).to_be_bytes().to_vec(),
                _ => (announced as u32).to_be_bytes().to_vec(),
            };
            head.extend_from_slice(&[b'z'; 1000]);
            s.write_all(&head).unwrap();
            assert_eq!(
                read_frame(&mut s, width),
                format!("error: frame too large {max} {announced}"),
                "{driver:?}"
            );
            other.write_all(&frame(width, b"meanwhile")).unwrap();
            assert_eq!(read_frame(&mut other, width), "meanwhile");
            let mut left = announced - 1000;
            let chunk = vec![b'z'; 64 * 1024];
            while left > 0 {
                let n = left.min(chunk.len());
                s.write_all(&chunk[..n]).unwrap();
                left -= n;
            }
            s.write_all(&frame(width, b"next")).unwrap();
            assert_eq!(read_frame(&mut s, width), "next", "{driver:?} {width:?}");
            server.stop();
        }
    }
}

#[test]
fn invalid_utf8_and_garbage_get_typed_errors_and_the_next_request_is_served() {
    for driver in DRIVERS {
        let service = Text::default();
        let handled = service.handled.clone();
        let server = serve(driver, lines(256), service, Setup::default());
        let mut p = server.connect();
        p.send(b"\xff\xfe\xc3\n");
        assert_eq!(p.line().as_deref(), Some("error: utf8"), "{driver:?}");
        assert_eq!(p.ask("fine").as_deref(), Some("fine"));
        // 64 KiB of pseudo-random bytes: every line gets exactly one answer.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let garbage: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let lines_sent = garbage.iter().filter(|b| **b == b'\n').count();
        p.send(&garbage);
        p.send(b"\nend\n");
        let mut answers = 0;
        loop {
            let l = p.line().expect("connection stays open");
            if l == "end" {
                break;
            }
            answers += 1;
        }
        // Each garbage line: an echo, a UTF-8 error, or a line-too-long error (which also
        // swallows the rest of its line); the tail line (terminated by our "\n") too.
        assert!(
            answers >= 1 && answers <= lines_sent + 1,
            "{answers} answers, {lines_sent} lines"
        );
        assert_eq!(p.ask("still").as_deref(), Some("still"));
        assert!(handled.load(Ordering::SeqCst) >= 3);
        server.stop();
    }
}

#[test]
fn invalid_json_gets_a_typed_error_and_the_next_document_is_served() {
    for driver in DRIVERS {
        let server = serve(
            driver,
            Stream::<_, _, serde_json::Value, serde_json::Value>::json_lines(),
            ProbeService::<serde_json::Value>::default(),
            Setup::default(),
        );
        let mut p = server.connect();
        for bad in [&b"{not json\n"[..], b"\xff\xff\n", b"[1, 2\n", b"}\n"] {
            p.send(bad);
            assert_eq!(
                p.line().as_deref(),
                Some(r#""error: json""#),
                "{driver:?} {bad:?}"
            );
        }
        p.send(b"{\"a\":[1,2,{\"b\":null}]}\n");
        assert_eq!(
            p.line().as_deref(),
            Some(r#"{"a":[1,2,{"b":null}]}"#),
            "{driver:?}"
        );
        server.stop();
    }
}

#[test]
fn a_tls_client_that_never_finishes_the_handshake_is_closed_at_the_deadline() {
    let id = certs::Identity::localhost();
    for driver in DRIVERS {
        let setup = Setup {
            tls: Some(id.server_config()),
            handshake_timeout: Some(Duration::from_millis(300)),
            ..Setup::default()
        };
        let server = serve(driver, lines(1024), Text::default(), setup);
        let start = Instant::now();
        // One client trickles a ClientHello, a byte every 20 ms: activity does not move the
        // deadline.
        let trickler = {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            std::thread::spawn(move || {
                let hello = [
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ];
                let mut buf = [0u8; 64];
                for b in hello.iter().cycle().take(500) {
                    if s.write_all(&[*b]).is_err() {
                        return start.elapsed();
                    }
                    match s.read(&mut buf) {
                        Ok(0) => return start.elapsed(),
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
                        _ => {}
                    }
                }
                panic!("a trickling handshake was never closed");
            })
        };
        // 20 clients: silent, or a TLS record header and a few bytes of a ClientHello.
        let mut stalled: Vec<TcpStream> = (0..20)
            .map(|i| {
                let mut s = TcpStream::connect(server.addr).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                if i % 2 == 1 {
                    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                        .unwrap();
                }
                s
            })
            .collect();
        // Meanwhile a real TLS client is served.
        let conn = rustls::ClientConnection::new(id.client_config(), certs::localhost()).unwrap();
        let sock = TcpStream::connect(server.addr).unwrap();
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"secret\n").unwrap();
        let mut got = [0u8; 7];
        tls.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"secret\n");
        for s in &mut stalled {
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {} // an alert
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("{driver:?}: not closed: {e}"),
                }
            }
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_secs(3),
            "{driver:?}: closed after {took:?}"
        );
        let trickled = trickler.join().unwrap();
        assert!(
            trickled >= Duration::from_millis(280) && trickled < Duration::from_secs(3),
            "{driver:?}: trickling handshake closed after {trickled:?}"
        );
        server.stop();
    }
}

#[test]
fn a_trickling_client_cannot_make_the_server_hold_more_than_its_limit() {
    for driver in DRIVERS {
        // Reads of at most 64 bytes: the server never holds more than the limit plus one
        // read of a line, however the trickle coalesces in the kernel.
        let setup = Setup {
            stream: StreamConfig::default().with_read_size(64),
            ..Setup::default()
        };
        let server = serve(driver, lines(1024), Text::default(), setup);
        let mut slow = server.connect();
        let mut other = server.connect();
        // 8 bytes every 2 ms, no separator: the error comes once the limit is passed.
        let start = Instant::now();
        let mut sent = 0;
        while sent <= 1024 {
            slow.send(b"abcdefgh");
            sent += 8;
            std::thread::sleep(Duration::from_millis(2));
            if sent == 512 {
                assert_eq!(other.ask("meanwhile").as_deref(), Some("meanwhile"));
            }
        }
        assert_line_too_long(slow.line(), 1024, 64);
        // It keeps trickling: skipped, not buffered, and no second error for the same line.
        for _ in 0..100 {
            slow.send(b"abcdefgh");
            std::thread::sleep(Duration::from_millis(1));
        }
        slow.send(b"\nok\n");
        assert_eq!(slow.line().as_deref(), Some("ok"), "{driver:?}");
        assert!(start.elapsed() < LIMIT);
        server.stop();
    }
}

#[test]
fn a_handler_that_panics_or_fails_closes_only_its_connection() {
    for driver in DRIVERS {
        let server = serve(driver, lines(1024), Text::default(), Setup::default());
        let mut bystanders: Vec<Peer> = (0..4).map(|_| server.connect()).collect();
        for (i, fault) in ["panic", "fail", "panic", "fail"].iter().enumerate() {
            let mut bad = server.connect();
            assert_eq!(bad.ask("before").as_deref(), Some("before"));
            bad.send(format!("{fault}\nnever answered\n").as_bytes());
            let mut rest = Vec::new();
            match bad.reader.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) => panic!("{driver:?}: {fault} did not close its connection: {e}"),
            }
            assert!(
                rest.is_empty(),
                "{driver:?}: nothing handled after the fault"
            );
            for (j, p) in bystanders.iter_mut().enumerate() {
                let msg = format!("{i}-{j}");
                assert_eq!(p.ask(&msg).as_deref(), Some(msg.as_str()), "{driver:?}");
            }
        }
        let mut late = server.connect();
        assert_eq!(late.ask("new client").as_deref(), Some("new client"));
        server.stop();
    }
}
