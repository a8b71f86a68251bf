//! The async TCP server over loopback: lifecycle, handler rules, timeouts, parse errors,
//! graceful shutdown (reference/behaviour.md §1-2).

#![cfg(feature = "tokio")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet::aio::{AsyncTcpServer, ServerError};
use easynet::handler::ConnInfo;
use easynet::protocol::Stream;
use support::drivers::Echo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

type Server = AsyncTcpServer<
    Box<dyn Fn(&ConnInfo) -> Echo + Send + Sync>,
    easynet::protocol::Stream<easynet::protocol::Lines, easynet::protocol::Utf8, String, String>,
>;

fn server(timeout: Option<Duration>) -> Server {
    let service: Box<dyn Fn(&ConnInfo) -> Echo + Send + Sync> = Box::new(move |_| Echo { timeout });
    AsyncTcpServer::builder(Stream::lines(), service)
        .host("127.0.0.1")
        .port(0)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Starts serving in a task; returns once it is up.
async fn start(server: &Server) -> tokio::task::JoinHandle<Result<(), ServerError>> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, rx.wait_for(|up| *up))
        .await
        .unwrap()
        .unwrap();
    task
}

struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(server: &Server) -> Self {
        let addr = server.addresses()[0];
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        Self {
            lines: BufReader::new(r).lines(),
            write: w,
        }
    }

    async fn send(&mut self, data: &[u8]) {
        self.write.write_all(data).await.unwrap();
    }

    async fn line(&mut self) -> Option<String> {
        timeout(LIMIT, self.lines.next_line())
            .await
            .expect("no answer in time")
            .ok()
            .flatten()
    }
}

#[tokio::test]
async fn activate_is_idempotent_and_addresses_follow_listening() {
    let server = server(None);
    assert!(server.addresses().is_empty());
    assert!(!server.is_listening());
    server.activate().await.unwrap();
    let addrs = server.addresses();
    assert_eq!(addrs.len(), 1);
    assert_ne!(addrs[0].port(), 0);
    server.activate().await.unwrap();
    assert_eq!(server.addresses(), addrs, "second activate changes nothing");
    assert!(server.is_listening());
    assert!(!server.is_serving());
    server.close();
    assert!(server.addresses().is_empty());
    assert!(matches!(server.activate().await, Err(ServerError::Closed)));
    assert!(matches!(server.serve().await, Err(ServerError::Closed)));
}

#[tokio::test]
async fn echo_pipelined_lines_in_order() {
    let server = server(None);
    let task = start(&server).await;
    assert!(server.is_serving());
    let mut c = Client::connect(&server).await;
    c.send(b"one\ntwo\nthr").await;
    c.send(b"ee\n").await;
    assert_eq!(c.line().await.as_deref(), Some("one"));
    assert_eq!(c.line().await.as_deref(), Some("two"));
    assert_eq!(c.line().await.as_deref(), Some("three"));
    c.send(b"quit\n").await;
    assert_eq!(c.line().await, None, "closed after quit");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_forever_twice_is_already_running_and_serve_again_after_shutdown() {
    let server = server(None);
    let task = start(&server).await;
    assert!(matches!(
        server.serve().await,
        Err(ServerError::AlreadyRunning)
    ));
    let addr = server.addresses();
    server.shutdown().await;
    task.await.unwrap().unwrap();
    assert!(!server.is_serving());
    assert!(server.is_listening());
    assert_eq!(
        server.addresses(),
        addr,
        "listeners stay bound after shutdown"
    );
    server.shutdown().await; // no run: harmless
    let task = start(&server).await;
    let mut c = Client::connect(&server).await;
    c.send(b"again\n").await;
    assert_eq!(c.line().await.as_deref(), Some("again"));
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn parse_error_then_next_request() {
    let server = server(None);
    let task = start(&server).await;
    let mut c = Client::connect(&server).await;
    c.send(b"\xff\xfe\nfine\n").await;
    assert_eq!(c.line().await.as_deref(), Some("error"));
    assert_eq!(c.line().await.as_deref(), Some("fine"));
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn receive_timeout_reaches_the_handler() {
    let server = server(Some(Duration::from_millis(100)));
    let task = start(&server).await;
    let mut c = Client::connect(&server).await;
    c.send(b"par").await;
    assert_eq!(c.line().await.as_deref(), Some("timeout"));
    c.send(b"tial\n").await;
    // Another timeout may come before the rest arrives; the partial bytes are kept.
    let mut got = c.line().await;
    while got.as_deref() == Some("timeout") {
        got = c.line().await;
    }
    assert_eq!(got.as_deref(), Some("partial"));
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_panicking_handler_closes_only_its_connection() {
    let server = server(None);
    let task = start(&server).await;
    let mut bad = Client::connect(&server).await;
    let mut good = Client::connect(&server).await;
    bad.send(b"panic\n").await;
    assert_eq!(bad.line().await, None);
    good.send(b"still here\n").await;
    assert_eq!(good.line().await.as_deref(), Some("still here"));
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_answers_requests_already_sent() {
    let server = server(None);
    let task = start(&server).await;
    let mut c = Client::connect(&server).await;
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(format!("req{i}\n").as_bytes());
    }
    c.send(&batch).await;
    // Wait for the first answer so the server has read (some of) the batch.
    assert_eq!(c.line().await.as_deref(), Some("req0"));
    let s = server.clone();
    let shut = tokio::spawn(async move { s.shutdown().await });
    let mut n = 1;
    while let Some(line) = c.line().await {
        assert_eq!(line, format!("req{n}"));
        n += 1;
    }
    assert!(n >= 1);
    shut.await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn close_keeps_existing_connections_and_refuses_new_ones() {
    let server = server(None);
    let task = start(&server).await;
    let addr = server.addresses()[0];
    let mut c = Client::connect(&server).await;
    c.send(b"before\n").await;
    assert_eq!(c.line().await.as_deref(), Some("before"));
    server.close();
    assert!(!server.is_serving());
    c.send(b"after close\n").await;
    assert_eq!(c.line().await.as_deref(), Some("after close"));
    // The listener is gone (allow the accept task a moment to drop it).
    let refused = timeout(LIMIT, async {
        loop {
            match TcpStream::connect(addr).await {
                Err(_) => break,
                Ok(mut s) => {
                    // Connected to a listener that is being torn down; it must not be served.
                    let _ = s.write_all(b"x\n").await;
                    let mut buf = [0u8; 8];
                    if matches!(
                        timeout(Duration::from_millis(200), s.read(&mut buf)).await,
                        Ok(Ok(0)) | Ok(Err(_))
                    ) {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    })
    .await;
    assert!(refused.is_ok());
    c.send(b"quit\n").await;
    assert_eq!(c.line().await, None);
    // The run ends once the last connection is gone.
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn bind_conflict_is_a_typed_error_that_names_the_address() {
    let first = server(None);
    first.activate().await.unwrap();
    let port = first.addresses()[0].port();
    let service: Box<dyn Fn(&ConnInfo) -> Echo + Send + Sync> =
        Box::new(|_| Echo { timeout: None });
    let second = AsyncTcpServer::builder(Stream::lines(), service)
        .host("127.0.0.1")
        .port(port)
        .build()
        .unwrap();
    match second.activate().await {
        Err(ServerError::Bind(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].addr.port(), port);
            assert_eq!(errors[0].error.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    assert!(!second.is_listening());
}

#[tokio::test]
async fn service_init_and_teardown_run_once_per_run() {
    struct Counting(Arc<AtomicUsize>, Arc<AtomicUsize>);
    impl easynet::handler::Service for Counting {
        type Handler = Echo;
        fn on_start(&self) -> Result<(), easynet::handler::HandlerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn new_handler(&self, _: &ConnInfo) -> Echo {
            Echo { timeout: None }
        }
        fn on_stop(&self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (inits, teardowns) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let server = AsyncTcpServer::builder_with_service(
        Stream::lines(),
        Counting(inits.clone(), teardowns.clone()),
    )
    .host("127.0.0.1")
    .build()
    .unwrap();
    for run in 1..=2 {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let task = tokio::spawn(async move { s.serve_notify(tx).await });
        rx.wait_for(|u| *u).await.unwrap();
        assert_eq!(inits.load(Ordering::SeqCst), run);
        server.shutdown().await;
        task.await.unwrap().unwrap();
        assert_eq!(teardowns.load(Ordering::SeqCst), run);
    }
    let _ = Mutex::new(());
}

#[test]
fn invalid_settings_are_refused_at_build() {
    let service = |_: &ConnInfo| Echo { timeout: None };
    let err = AsyncTcpServer::builder(Stream::lines(), service)
        .max_recv_size(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "'max_recv_size' must be a strictly positive integer"
    );
    let service = |_: &ConnInfo| Echo { timeout: None };
    let err = AsyncTcpServer::builder(Stream::lines(), service)
        .tls_handshake_timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tls_handshake_timeout is only meaningful with tls"
    );
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[tokio::test]
async fn host_list_binds_one_listener_per_address_each_with_its_own_port() {
    if !ipv6_loopback_available() {
        eprintln!("skipping: no ::1 on this machine");
        return;
    }
    let service = |_: &ConnInfo| Echo { timeout: None };
    let server = AsyncTcpServer::builder(Stream::lines(), service)
        .hosts(["127.0.0.1", "::1"])
        .port(0)
        .build()
        .unwrap();
    server.activate().await.unwrap();
    let addrs = server.addresses();
    assert_eq!(addrs.len(), 2);
    assert!(addrs.iter().any(|a| a.is_ipv4()) && addrs.iter().any(|a| a.is_ipv6()));
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    rx.wait_for(|u| *u).await.unwrap();
    for addr in addrs {
        let (r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
        w.write_all(b"via listener\n").await.unwrap();
        let mut lines = BufReader::new(r).lines();
        assert_eq!(
            timeout(LIMIT, lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .as_deref(),
            Some("via listener")
        );
    }
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn sockets_expose_listener_options_and_reuse_port_shares_a_port() {
    let make = || {
        let service = |_: &ConnInfo| Echo { timeout: None };
        AsyncTcpServer::builder(Stream::lines(), service)
            .host("127.0.0.1")
            .reuse_port(true)
            .backlog(16)
    };
    let first = make().build().unwrap();
    first.activate().await.unwrap();
    let sockets = first.sockets();
    assert_eq!(sockets.len(), 1);
    let sock = socket2::SockRef::from(&*sockets[0]);
    assert!(
        sock.reuse_address().unwrap(),
        "SO_REUSEADDR is set on TCP listeners"
    );
    assert!(sock.reuse_port().unwrap());
    let port = first.addresses()[0].port();
    let second = make().port(port).build().unwrap();
    second
        .activate()
        .await
        .expect("reuse_port lets a second server bind the same port");
    assert_eq!(second.addresses()[0].port(), port);
    first.close();
    assert!(first.sockets().is_empty());
}

#[tokio::test]
async fn tcp_client_responses_end_at_eof_and_parse_errors_are_typed() {
    use easynet::aio::{AsyncTcpClient, ClientError};
    let server = server(None);
    let task = start(&server).await;
    let mut c = AsyncTcpClient::connect(server.addresses()[0], Stream::lines())
        .await
        .unwrap();
    for t in ["a", "b", "quit"] {
        c.send(&t.to_owned()).await.unwrap();
    }
    let mut got = Vec::new();
    let mut responses = c.responses(Some(LIMIT));
    while let Some(r) = responses.next().await {
        got.push(r.unwrap());
    }
    assert_eq!(got, ["a", "b"]);
    assert!(matches!(c.recv().await, Err(ClientError::Eof)));
    c.close().await;
    assert!(matches!(
        c.send(&"late".to_owned()).await,
        Err(ClientError::Closed)
    ));
    server.shutdown().await;
    task.await.unwrap().unwrap();
}
