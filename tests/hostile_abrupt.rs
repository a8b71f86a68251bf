//! Abrupt peers at volume on both drivers (issue 6): resets mid-frame, half-closes with a
//! partial frame, connect-then-close, thousands each. Afterwards the process's file
//! descriptors, the tokio runtime's alive tasks and the resident memory are back to their
//! baseline, and the server still serves.
//!
//! One test in this binary, so nothing else opens descriptors while it counts them.

#![cfg(all(feature = "tokio", feature = "mio", feature = "tls"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
#[path = "support/hostile.rs"]
mod hostile;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use easynet::protocol::Stream;
use hostile::{DRIVERS, LIMIT, ProbeService, Server, Setup, open_fds, reset_on_drop, rss_kib};

const ROUNDS: usize = 2000;
const TLS_ROUNDS: usize = 300;

/// One round of each kind of abrupt peer.
fn abuse(server: &Server, rounds: usize) {
    for i in 0..rounds {
        // A reset in the middle of a frame.
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"a partial fra").unwrap();
        reset_on_drop(&s);
        drop(s);

        // Half-close with a complete request and a partial one: the complete one is
        // answered, the partial one dropped, then the server closes.
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(format!("req{i}\npartial").as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        match s.read_to_string(&mut got) {
            Ok(_) => assert_eq!(got, format!("req{i}\n"), "{:?}", server.driver),
            Err(e) => panic!("{:?}: half-closed peer not answered: {e}", server.driver),
        }

        // Connect, then close at once.
        drop(TcpStream::connect(server.addr).unwrap());
    }
}

/// The same on a TLS server: resets and closes in the middle of the handshake, and a reset
/// in the middle of a frame after it.
fn abuse_tls(server: &Server, rounds: usize, id: &certs::Identity) {
    // The first bytes of a ClientHello record.
    let hello_start = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for i in 0..rounds {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(&hello_start).unwrap();
        reset_on_drop(&s);
        drop(s);

        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(&hello_start).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // an alert, then EOF or a reset
        drop(s);

        if i % 3 == 0 {
            let conn =
                rustls::ClientConnection::new(id.client_config(), certs::localhost()).unwrap();
            let sock = TcpStream::connect(server.addr).unwrap();
            sock.set_read_timeout(Some(LIMIT)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(format!("r{i}\n").as_bytes()).unwrap();
            let mut echo = [0u8; 64];
            let n = tls.read(&mut echo).unwrap();
            assert!(n > 0);
            tls.write_all(b"a partial fra").unwrap();
            reset_on_drop(&tls.sock);
        }
    }
}

#[test]
fn abrupt_peers_at_volume_leak_no_fd_task_or_memory() {
    let id = certs::Identity::localhost();
    for driver in DRIVERS {
        for tls in [false, true] {
            let setup = Setup {
                tls: tls.then(|| id.server_config()),
                ..Setup::default()
            };
            let server = hostile::serve(
                driver,
                Stream::lines(),
                ProbeService::<String>::default(),
                setup,
            );
            leaves_nothing_behind(
                &server,
                |server, n| {
                    if tls {
                        abuse_tls(server, n / (ROUNDS / TLS_ROUNDS), &id);
                    } else {
                        abuse(server, n);
                    }
                },
                |server| {
                    if tls {
                        tls_ask(server, &id, "still serving")
                    } else {
                        server.connect().ask("still serving")
                    }
                },
            );
            let stopped = server.stop();
            assert!(
                stopped < Duration::from_secs(4),
                "{driver:?}: stop took {stopped:?}"
            );
        }
    }
}

fn tls_ask(server: &Server, id: &certs::Identity, line: &str) -> Option<String> {
    let conn = rustls::ClientConnection::new(id.client_config(), certs::localhost()).unwrap();
    let sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, sock));
    tls.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut tls, &mut answer).ok()?;
    Some(answer.trim_end().to_owned())
}

fn leaves_nothing_behind(
    server: &Server,
    abuse: impl Fn(&Server, usize),
    ask: impl Fn(&Server) -> Option<String>,
) {
    let driver = server.driver;
    {
        // The baseline at rest, before any client; then a warm-up (allocator pools, runtime
        // threads) after which everything must be back to it, and memory is measured.
        let fds = open_fds();
        let tasks = server.alive_tasks();
        abuse(server, 100);
        assert!(hostile::wait_until(LIMIT, || {
            open_fds() <= fds && server.alive_tasks() <= tasks
        }));
        let rss = rss_kib();

        let start = Instant::now();
        abuse(server, ROUNDS);
        let took = start.elapsed();

        let settled =
            hostile::wait_until(LIMIT, || open_fds() <= fds && server.alive_tasks() <= tasks);
        assert!(
            settled,
            "{driver:?}: fds {} (baseline {fds}), tasks {} (baseline {tasks})",
            open_fds(),
            server.alive_tasks()
        );
        let (fds_after, tasks_after) = (open_fds(), server.alive_tasks());
        let grown = rss_kib().saturating_sub(rss);
        // 3000 leaked connections would hold far more than this (socket + buffers).
        assert!(grown < 8 * 1024, "{driver:?}: RSS grew by {grown} KiB");
        assert_eq!(ask(server).as_deref(), Some("still serving"));
        eprintln!(
            "{driver:?}: abrupt peers for {took:?}; fds {fds} -> {fds_after}, tasks {tasks} -> {tasks_after}, RSS +{grown} KiB"
        );
    }
}
