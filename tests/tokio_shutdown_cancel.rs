//! Cancel safety of the tokio servers' `shutdown` and `shutdown_within`: the shutdown
//! begins at the first poll, and dropping the future after that neither stops it nor loses
//! its deadline.
#![cfg(feature = "tokio")]

mod support;
use std::time::{Duration, Instant};
use support::drivers::Echo;

use easynet::aio::{AsyncStreamHandler, AsyncTcpServer, StreamPeer};
use easynet::handler::HandlerError;
use easynet::protocol::Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// Answers "busy" to the first request, then works for an hour.
struct Stuck;

impl AsyncStreamHandler for Stuck {
    type Request = String;
    type Response = String;

    async fn handle(&mut self, peer: &mut StreamPeer<String, String>) -> Result<(), HandlerError> {
        peer.recv().await?;
        peer.send(&"busy".to_owned()).await?;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

/// Reads to the end of the connection (EOF or reset), at most `LIMIT`.
async fn ends(mut reader: BufReader<TcpStream>) {
    let mut rest = Vec::new();
    let _ = timeout(LIMIT, reader.read_to_end(&mut rest))
        .await
        .expect("the connection did not end");
}

/// Serves `$server` on a task and sends one line from a client that reads the answer:
/// the serve task, the client and the answer.
macro_rules! serving {
    ($server:expr) => {{
        $server.activate().await.unwrap();
        let addr = $server.addresses()[0];
        let running = tokio::spawn({
            let server = $server.clone();
            async move { server.serve().await }
        });
        let mut client = BufReader::new(TcpStream::connect(addr).await.unwrap());
        client.get_mut().write_all(b"hi\n").await.unwrap();
        let mut line = String::new();
        timeout(LIMIT, client.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        (running, client, line)
    }};
}

#[tokio::test]
async fn a_dropped_shutdown_within_keeps_its_deadline() {
    let server = AsyncTcpServer::builder(Stream::lines(), |_| Stuck)
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(3600))
        .build_async()
        .unwrap();
    let (running, client, line) = serving!(server);
    assert_eq!(line, "busy\n");

    // Polled once, then dropped: the handler is still working, so it cannot be done yet.
    let start = Instant::now();
    let once = timeout(
        Duration::ZERO,
        server.shutdown_within(Duration::from_millis(100)),
    )
    .await;
    assert!(once.is_err(), "the shutdown finished at its first poll");

    // The shutdown goes on and ends at its 100 ms deadline, not the hour of shutdown_timeout.
    timeout(LIMIT, running)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    assert!(start.elapsed() < LIMIT);
    assert!(!server.is_serving());
    ends(client).await;
}

#[tokio::test]
async fn a_dropped_shutdown_still_shuts_down() {
    let server = AsyncTcpServer::builder(Stream::lines(), |_| Echo { timeout: None })
        .host("127.0.0.1")
        .build()
        .unwrap();
    let (running, client, line) = serving!(server);
    assert_eq!(line, "hi\n");

    let once = timeout(Duration::ZERO, server.shutdown()).await;
    assert!(once.is_err(), "the shutdown finished at its first poll");

    timeout(LIMIT, running)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    assert!(!server.is_serving());
    ends(client).await;
    // A later shutdown has nothing left to do.
    timeout(LIMIT, server.shutdown()).await.unwrap();
}
