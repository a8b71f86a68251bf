//! Abrupt peers at volume on both drivers (issue 6): resets mid-frame, half-closes with a
//! partial frame, connect-then-close, thousands each. Afterwards the process's file
//! descriptors, the tokio runtime's alive tasks and the resident memory are back to their
//! baseline, and the server still serves.
//!
//! One test in this binary, so nothing else opens descriptors while it counts them.

#![cfg(all(feature = "tokio", feature = "mio"))]

#[path = "support/hostile.rs"]
mod hostile;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use easynet::protocol::Stream;
use hostile::{DRIVERS, LIMIT, ProbeService, Server, Setup, open_fds, reset_on_drop, rss_kib};

const ROUNDS: usize = 2000;

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

#[test]
fn abrupt_peers_at_volume_leak_no_fd_task_or_memory() {
    for driver in DRIVERS {
        let server = hostile::serve(
            driver,
            Stream::lines(),
            ProbeService::<String>::default(),
            Setup::default(),
        );
        // Warm up (allocator pools, runtime threads), then take the baseline at rest.
        abuse(&server, 100);
        let fds = open_fds();
        assert!(hostile::wait_until(LIMIT, || open_fds() <= fds));
        let fds = open_fds();
        let tasks = server.alive_tasks();
        let rss = rss_kib();

        let start = Instant::now();
        abuse(&server, ROUNDS);
        let took = start.elapsed();

        let settled =
            hostile::wait_until(LIMIT, || open_fds() <= fds && server.alive_tasks() <= tasks);
        assert!(
            settled,
            "{driver:?}: fds {} (baseline {fds}), tasks {} (baseline {tasks})",
            open_fds(),
            server.alive_tasks()
        );
        let grown = rss_kib().saturating_sub(rss);
        // 3000 leaked connections would hold far more than this (socket + buffers).
        assert!(grown < 8 * 1024, "{driver:?}: RSS grew by {grown} KiB");
        let mut p = server.connect();
        assert_eq!(p.ask("still serving").as_deref(), Some("still serving"));
        drop(p);
        eprintln!(
            "{driver:?}: {} abrupt peers in {took:?}; fds {fds} -> {}, tasks {tasks} -> {}, RSS +{grown} KiB",
            3 * ROUNDS,
            open_fds(),
            server.alive_tasks()
        );
        let stopped = server.stop();
        assert!(stopped < Duration::from_secs(4));
    }
}
