//! A dropped async connect closes every connection attempt it started. Alone in its test
//! binary: it counts the process's open descriptors, which other tests running in
//! parallel would change.

#![cfg(all(feature = "tokio", target_os = "linux"))]

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use easynet::aio::{AsyncTcpClient, TcpClientOptions};
use easynet::protocol::Stream;

/// Descriptors this process holds.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A listener whose accept queue is full (backlog 0 holds one): Linux drops later SYNs,
/// so a connect to it hangs (as `tests/clients.rs` uses it).
fn unanswering() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (addr, listener, queued),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the accept queue never filled");
}

#[test]
fn a_dropped_async_connect_closes_every_attempt() {
    let (a, _la, _qa) = unanswering();
    let (b, _lb, _qb) = unanswering();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let targets = [a, b];
        let options = TcpClientOptions::new().happy_eyeballs_delay(Duration::from_millis(10));
        let before = open_fds();
        let mut connect = Box::pin(AsyncTcpClient::connect_with(
            &targets[..],
            Stream::lines(),
            options,
        ));
        // Both attempts start (10 ms apart) and hang: the connect is pending when dropped.
        let pending = tokio::time::timeout(Duration::from_millis(200), connect.as_mut()).await;
        assert!(pending.is_err());
        assert_eq!(open_fds(), before + 2, "both attempts under way");
        drop(connect);
        assert_eq!(open_fds(), before);
    });
}
