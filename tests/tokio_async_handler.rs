//! Async stream handlers (`client.recv().await`) on the async TCP server over loopback.

#![cfg(feature = "tokio")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet::aio::{AsyncStreamHandler, AsyncTcpServer, RecvError, ServerError, StreamPeer};
use easynet::handler::{ConnInfo, HandlerError};
use easynet::protocol::{Lines, Stream, Utf8};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

type Log = Arc<Mutex<Vec<String>>>;

/// Commands: "echo X", "close", "noop" (returns without receiving next time), "boom"
/// (error), "panic", "slow" (next receive has a 100 ms timeout).
struct Handler {
    log: Log,
    noop_next: bool,
    timeout: Option<Duration>,
    fail_connect: bool,
}

impl AsyncStreamHandler for Handler {
    type Request = String;
    type Response = String;

    async fn on_connection(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        self.log.lock().unwrap().push("connected".into());
        if self.fail_connect {
            return Err("refused".into());
        }
        client.send(&"welcome".to_owned()).await?;
        Ok(())
    }

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        if self.noop_next {
            return Ok(()); // returns without receiving: the connection is closed
        }
        let got = match self.timeout.take() {
            Some(t) => client.recv_timeout(t).await,
            None => client.recv().await,
        };
        let line = match got {
            Ok(line) => line,
            Err(RecvError::Timeout) => {
                client.send(&"timeout".to_owned()).await?;
                return Ok(());
            }
            Err(RecvError::Parse(_)) => {
                client.send(&"error".to_owned()).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.log.lock().unwrap().push(line.clone());
        match line.as_str() {
            "close" => {
                client.send(&"bye".to_owned()).await?;
                client.close().await;
            }
            "noop" => self.noop_next = true,
            "boom" => return Err("boom".into()),
            "panic" => panic!("requested panic"),
            "slow" => self.timeout = Some(Duration::from_millis(100)),
            other => client.send(&other.to_owned()).await?,
        }
        Ok(())
    }

    async fn on_disconnection(&mut self, client: &mut StreamPeer<String, String>) {
        let refused = client.send(&"late".to_owned()).await.is_err();
        self.log.lock().unwrap().push(format!(
            "disconnected closing={} refused={refused}",
            client.is_closing()
        ));
    }
}

type Server = AsyncTcpServer<
    Box<dyn Fn(&ConnInfo) -> Handler + Send + Sync>,
    Stream<Lines, Utf8, String, String>,
>;

fn server(log: &Log, fail_connect: bool) -> Server {
    let log = log.clone();
    let service: Box<dyn Fn(&ConnInfo) -> Handler + Send + Sync> = Box::new(move |_| Handler {
        log: log.clone(),
        noop_next: false,
        timeout: None,
        fail_connect,
    });
    AsyncTcpServer::builder(Stream::lines(), service)
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(2))
        .build_async()
        .unwrap()
}

async fn start(server: &Server) -> tokio::task::JoinHandle<Result<(), ServerError>> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, rx.wait_for(|u| *u)).await.unwrap().unwrap();
    task
}

struct Peer {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Peer {
    async fn connect(server: &Server) -> Self {
        let (r, w) = TcpStream::connect(server.addresses()[0])
            .await
            .unwrap()
            .into_split();
        Self {
            lines: BufReader::new(r).lines(),
            write: w,
        }
    }
    async fn send(&mut self, data: &str) {
        self.write.write_all(data.as_bytes()).await.unwrap();
    }
    async fn line(&mut self) -> Option<String> {
        timeout(LIMIT, self.lines.next_line())
            .await
            .expect("no answer in time")
            .ok()
            .flatten()
    }
}

async fn wait_for(log: &Log, entry: &str) {
    timeout(LIMIT, async {
        while !log.lock().unwrap().iter().any(|e| e == entry) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{entry:?} never logged: {:?}", log.lock().unwrap()));
}

#[tokio::test]
async fn echo_timeout_parse_error_and_graceful_close() {
    let log = Log::default();
    let server = server(&log, false);
    let task = start(&server).await;
    let mut p = Peer::connect(&server).await;
    assert_eq!(p.line().await.as_deref(), Some("welcome"));
    p.send("one\n").await;
    assert_eq!(p.line().await.as_deref(), Some("one"));
    p.write.write_all(b"\xff\n").await.unwrap();
    assert_eq!(p.line().await.as_deref(), Some("error"));
    p.send("slow\n").await;
    assert_eq!(p.line().await.as_deref(), Some("timeout"));
    p.send("close\n").await;
    assert_eq!(p.line().await.as_deref(), Some("bye"));
    assert_eq!(p.line().await, None);
    wait_for(&log, "disconnected closing=true refused=true").await;
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn returning_without_receiving_closes_the_connection() {
    let log = Log::default();
    let server = server(&log, false);
    let task = start(&server).await;
    let mut p = Peer::connect(&server).await;
    assert_eq!(p.line().await.as_deref(), Some("welcome"));
    p.send("noop\n").await;
    assert_eq!(p.line().await, None, "closed instead of looping");
    wait_for(&log, "disconnected closing=true refused=true").await;
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn handler_error_and_panic_close_only_their_connection() {
    let log = Log::default();
    let server = server(&log, false);
    let task = start(&server).await;
    let mut boom = Peer::connect(&server).await;
    let mut panics = Peer::connect(&server).await;
    let mut fine = Peer::connect(&server).await;
    for p in [&mut boom, &mut panics, &mut fine] {
        assert_eq!(p.line().await.as_deref(), Some("welcome"));
    }
    boom.send("boom\n").await;
    assert_eq!(boom.line().await, None);
    panics.send("panic\n").await;
    assert_eq!(panics.line().await, None);
    fine.send("still here\n").await;
    assert_eq!(fine.line().await.as_deref(), Some("still here"));
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn on_connection_error_skips_on_disconnection() {
    let log = Log::default();
    let server = server(&log, true);
    let task = start(&server).await;
    let mut p = Peer::connect(&server).await;
    assert_eq!(p.line().await, None);
    wait_for(&log, "connected").await;
    server.shutdown().await;
    task.await.unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), ["connected"]);
}

#[tokio::test]
async fn shutdown_answers_what_was_sent_then_recv_reports_closed() {
    let log = Log::default();
    let server = server(&log, false);
    let task = start(&server).await;
    let mut p = Peer::connect(&server).await;
    assert_eq!(p.line().await.as_deref(), Some("welcome"));
    p.send("a\nb\nc\n").await;
    assert_eq!(p.line().await.as_deref(), Some("a"));
    server.shutdown().await;
    assert_eq!(p.line().await.as_deref(), Some("b"));
    assert_eq!(p.line().await.as_deref(), Some("c"));
    assert_eq!(p.line().await, None);
    task.await.unwrap().unwrap();
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("disconnected closing=true"))
    );
}
