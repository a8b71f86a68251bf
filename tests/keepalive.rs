//! TCP keepalive settings reach the accepted sockets, on both drivers: read back from the
//! server's own socket (found among this process's descriptors by its peer address).

#![cfg(all(feature = "tokio", feature = "mio", target_os = "linux"))]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use easynet_common::TcpKeepalive;
use support::drivers::{self, Opts, Start};

/// What the server's end of `client` says about keepalive: on, and (time, interval,
/// retries).
fn server_side(client: &TcpStream) -> (bool, Duration, Duration, u32) {
    let (me, server) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the descriptor is open while we look (the server's end stays open: the
        // client does not close); a descriptor closed meanwhile only fails the calls.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        if peer == Some(me) && local == Some(server) {
            return (
                sock.keepalive().unwrap(),
                sock.tcp_keepalive_time().unwrap(),
                sock.tcp_keepalive_interval().unwrap(),
                sock.tcp_keepalive_retries().unwrap(),
            );
        }
    }
    panic!("the server's end of {me} is not among our descriptors");
}

fn connected(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(b"hi\n").unwrap(); // answered: accepted and tuned
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "hi\n");
    s
}

fn keepalive_settings(start: Start) {
    let set = TcpKeepalive::new()
        .with_time(Duration::from_secs(71))
        .with_interval(Duration::from_secs(13))
        .with_retries(4);
    let server = start(Opts {
        tcp_keepalive: Some(Some(set)),
        ..Opts::default()
    });
    let c = connected(server.addr);
    assert_eq!(
        server_side(&c),
        (true, Duration::from_secs(71), Duration::from_secs(13), 4)
    );
    drop(c);
    server.stop();

    let off = start(Opts {
        tcp_keepalive: Some(None),
        ..Opts::default()
    });
    let c = connected(off.addr);
    assert!(!server_side(&c).0, "keepalive off");
    drop(c);
    off.stop();

    let default = start(Opts::default());
    let c = connected(default.addr);
    assert!(server_side(&c).0, "keepalive on by default");
    drop(c);
    default.stop();
}

#[test]
fn keepalive_settings_reach_accepted_sockets_tokio() {
    keepalive_settings(drivers::tokio);
}

#[test]
fn keepalive_settings_reach_accepted_sockets_mio() {
    keepalive_settings(drivers::mio);
}
