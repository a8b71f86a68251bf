//! Cancel safety of the tokio clients: a `recv` dropped under `tokio::time::timeout` (or in
//! `select!`) loses no message and leaves no stale deadline behind.

#![cfg(feature = "tokio")]

use std::time::{Duration, Instant};

use easynet::aio::{AsyncTcpClient, AsyncUdpClient, ClientError};
use easynet::protocol::{Datagram, Stream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);
/// The timeout of the receive that follows a dropped one.
const SHORT: Duration = Duration::from_millis(300);

/// Asserts that `recv_timeout(SHORT)` returns a timeout, on time.
macro_rules! times_out_on_time {
    ($client:expr) => {{
        let start = Instant::now();
        let r = timeout(LIMIT, $client.recv_timeout(SHORT))
            .await
            .expect("recv_timeout never timed out");
        let took = start.elapsed();
        assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
        assert!(
            took >= SHORT - Duration::from_millis(20) && took < SHORT + Duration::from_secs(2),
            "timed out after {took:?}"
        );
    }};
}

/// A TCP client connected to a raw peer we write lines with.
async fn tcp_pair() -> (
    AsyncTcpClient<
        easynet::protocol::Stream<
            easynet::protocol::Lines,
            easynet::protocol::Utf8,
            String,
            String,
        >,
    >,
    tokio::net::TcpStream,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(
        AsyncTcpClient::connect(addr, Stream::lines()),
        listener.accept()
    );
    (client.unwrap(), accepted.unwrap().0)
}

#[tokio::test]
async fn tcp_dropped_recv_leaves_no_endless_receive() {
    let (mut client, _peer) = tcp_pair().await;
    assert!(
        timeout(Duration::from_millis(50), client.recv())
            .await
            .is_err()
    );
    times_out_on_time!(client);
}

#[tokio::test]
async fn tcp_dropped_recv_timeout_leaves_no_stale_deadline() {
    let (mut client, mut peer) = tcp_pair().await;
    // A receive with a 100 ms deadline, dropped after 20 ms.
    let dropped = timeout(
        Duration::from_millis(20),
        client.recv_timeout(Duration::from_millis(100)),
    )
    .await;
    assert!(dropped.is_err());
    // Let the dropped receive's deadline pass (time passing is the point, not an event).
    tokio::time::sleep(Duration::from_millis(200)).await;
    peer.write_all(b"next\n").await.unwrap();
    let got = timeout(LIMIT, client.recv()).await.expect("recv hangs");
    assert_eq!(got.unwrap(), "next");
    // A later recv_timeout has its own deadline.
    times_out_on_time!(client);
}

#[tokio::test]
async fn tcp_dropped_recvs_lose_nothing() {
    let (mut client, mut peer) = tcp_pair().await;
    let writer = tokio::spawn(async move {
        for i in 0..50 {
            peer.write_all(format!("m{i}\n").as_bytes()).await.unwrap();
            if i % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        peer
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while got.len() < 50 && Instant::now() < deadline {
        // Most of these are dropped before a message is complete.
        if let Ok(r) = timeout(Duration::from_micros(500), client.recv()).await {
            got.push(r.unwrap());
        }
    }
    let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    let _peer = writer.await.unwrap();
    times_out_on_time!(client);
}

/// A UDP client connected to a raw peer; returns the peer once it knows the client's address.
async fn udp_pair() -> (
    AsyncUdpClient<Datagram<easynet::protocol::Utf8, String, String>>,
    UdpSocket,
) {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut client = AsyncUdpClient::connect(peer.local_addr().unwrap(), Datagram::lines())
        .await
        .unwrap();
    client.send(&"hi".to_owned()).await.unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = timeout(LIMIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    peer.connect(from).await.unwrap();
    (client, peer)
}

#[tokio::test]
async fn udp_dropped_recv_loses_nothing_and_leaves_no_deadline() {
    let (mut client, peer) = udp_pair().await;
    assert!(
        timeout(Duration::from_millis(50), client.recv())
            .await
            .is_err()
    );
    times_out_on_time!(client);
    let dropped = timeout(
        Duration::from_millis(20),
        client.recv_timeout(Duration::from_millis(100)),
    )
    .await;
    assert!(dropped.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await; // past the dropped deadline
    peer.send(b"one").await.unwrap();
    peer.send(b"two").await.unwrap();
    assert_eq!(timeout(LIMIT, client.recv()).await.unwrap().unwrap(), "one");
    assert_eq!(client.recv_timeout(LIMIT).await.unwrap(), "two");

    // Many receives dropped while datagrams arrive: every one is received, in order.
    let writer = tokio::spawn(async move {
        for i in 0..50 {
            peer.send(format!("d{i}").as_bytes()).await.unwrap();
            if i % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        peer
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while got.len() < 50 && Instant::now() < deadline {
        if let Ok(r) = timeout(Duration::from_micros(500), client.recv()).await {
            got.push(r.unwrap());
        }
    }
    let expected: Vec<String> = (0..50).map(|i| format!("d{i}")).collect();
    assert_eq!(got, expected);
    let _peer = writer.await.unwrap();
    times_out_on_time!(client);
}

#[cfg(unix)]
#[tokio::test]
async fn unix_stream_dropped_recv_leaves_no_stale_deadline() {
    use easynet::aio::AsyncUnixStreamClient;
    let path =
        std::env::temp_dir().join(format!("easynet-client-cancel-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (client, accepted) = tokio::join!(
        AsyncUnixStreamClient::connect(&path, Stream::lines()),
        listener.accept()
    );
    let (mut client, (mut peer, _)) = (client.unwrap(), accepted.unwrap());
    let _ = std::fs::remove_file(&path);
    assert!(
        timeout(Duration::from_millis(50), client.recv())
            .await
            .is_err()
    );
    times_out_on_time!(client);
    let dropped = timeout(
        Duration::from_millis(20),
        client.recv_timeout(Duration::from_millis(100)),
    )
    .await;
    assert!(dropped.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await; // past the dropped deadline
    peer.write_all(b"next\n").await.unwrap();
    assert_eq!(
        timeout(LIMIT, client.recv()).await.unwrap().unwrap(),
        "next"
    );
}
