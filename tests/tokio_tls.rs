//! TLS on the async TCP server over loopback with rcgen certificates (behaviour.md §4).

#![cfg(all(feature = "tokio", feature = "tls"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;

use std::time::Duration;

use certs::{Identity, localhost};
use easynet::aio::{AsyncTcpClient, AsyncTcpServer, ClientError, ServerError};
use easynet::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
use easynet::protocol::{Lines, Stream, Utf8};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

struct Echo;

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        let tls = cx
            .info()
            .tls
            .as_ref()
            .expect("TLS info after the handshake");
        cx.send(format!("hello {:?}", tls.protocol_version.unwrap()))?;
        Ok(Next::recv())
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) => cx.send(&l)?,
            _ => {}
        }
        Ok(Next::recv())
    }
}

type Server = AsyncTcpServer<fn(&ConnInfo) -> Echo, Stream<Lines, Utf8, String, String>>;

async fn start(
    id: &Identity,
    handshake: Duration,
) -> (Server, tokio::task::JoinHandle<Result<(), ServerError>>) {
    let make: fn(&ConnInfo) -> Echo = |_| Echo;
    let server = AsyncTcpServer::builder(Stream::lines(), make)
        .host("127.0.0.1")
        .tls(id.server_config())
        .tls_handshake_timeout(handshake)
        .tls_shutdown_timeout(Duration::from_secs(2))
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, rx.wait_for(|u| *u)).await.unwrap().unwrap();
    (server, task)
}

#[tokio::test]
async fn tls_echo_and_graceful_close() {
    let id = Identity::localhost();
    let (server, task) = start(&id, Duration::from_secs(60)).await;
    let addr = server.addresses()[0];
    let mut c = timeout(
        LIMIT,
        AsyncTcpClient::connect_tls(addr, Stream::lines(), id.client_config(), localhost()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        c.tls_info().unwrap().protocol_version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        timeout(LIMIT, c.recv()).await.unwrap().unwrap(),
        "hello TLSv1_3"
    );
    c.send(&"over tls".to_owned()).await.unwrap();
    assert_eq!(timeout(LIMIT, c.recv()).await.unwrap().unwrap(), "over tls");
    c.send(&"quit".to_owned()).await.unwrap();
    assert!(matches!(
        timeout(LIMIT, c.recv()).await.unwrap(),
        Err(ClientError::Eof)
    ));
    c.close().await;
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed_at_the_deadline() {
    let id = Identity::localhost();
    let (server, task) = start(&id, Duration::from_millis(200)).await;
    let mut raw = TcpStream::connect(server.addresses()[0]).await.unwrap();
    let mut buf = [0u8; 16];
    // Nothing sent: the server closes when the handshake deadline passes.
    let res = timeout(LIMIT, raw.read(&mut buf))
        .await
        .expect("closed within the limit");
    assert!(matches!(res, Ok(0) | Err(_)));
    // Others are still served.
    let mut c = AsyncTcpClient::connect_tls(
        server.addresses()[0],
        Stream::lines(),
        id.client_config(),
        localhost(),
    )
    .await
    .unwrap();
    assert_eq!(
        timeout(LIMIT, c.recv()).await.unwrap().unwrap(),
        "hello TLSv1_3"
    );
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn plain_text_to_a_tls_server_is_refused_and_the_server_goes_on() {
    let id = Identity::localhost();
    let (server, task) = start(&id, Duration::from_secs(60)).await;
    let mut raw = TcpStream::connect(server.addresses()[0]).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = timeout(LIMIT, raw.read_to_end(&mut got))
        .await
        .expect("closed within the limit");
    assert_eq!(got.first(), Some(&0x15), "a TLS alert record comes back");
    let mut c = AsyncTcpClient::connect_tls(
        server.addresses()[0],
        Stream::lines(),
        id.client_config(),
        localhost(),
    )
    .await
    .unwrap();
    assert_eq!(
        timeout(LIMIT, c.recv()).await.unwrap().unwrap(),
        "hello TLSv1_3"
    );
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn untrusted_certificate_is_a_typed_handshake_error() {
    let id = Identity::localhost();
    let other = Identity::localhost();
    let (server, task) = start(&id, Duration::from_secs(60)).await;
    let res = timeout(
        LIMIT,
        AsyncTcpClient::connect_tls(
            server.addresses()[0],
            Stream::lines(),
            other.client_config(),
            localhost(),
        ),
    )
    .await
    .unwrap();
    assert!(matches!(res, Err(ClientError::Handshake(_))), "{res:?}");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}
