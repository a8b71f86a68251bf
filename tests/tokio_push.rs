//! Server push on the tokio driver over loopback: a task pushes while the handler waits in a
//! receive (portable and async handlers), concurrent pushers keep frames whole and in
//! order, the bound holds for a client that does not read, a closed connection refuses,
//! and a 50-client chat delivers every line to every other client exactly once.

#![cfg(feature = "tokio")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use easynet::aio::{
    AsyncDatagramHandler, AsyncStreamHandler, AsyncTcpServer, AsyncUdpServer, DatagramPeer,
    ServerError, StreamPeer,
};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    Service, StreamContext, StreamHandler,
};
use easynet::protocol::{Datagram, Lines, Stream, Utf8};
use easynet::push::{Broadcast, DatagramPusher, PushError, Pusher, SlowConsumer, TrySendError};
use easynet::stream::StreamConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

type Lined = Stream<Lines, Utf8, String, String>;

/// Hands each connection's pusher out on a channel, then echoes; "bye" closes.
struct Portable(mpsc::UnboundedSender<Pusher<String>>);

impl StreamHandler for Portable {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        let _ = self.0.send(cx.pusher());
        Ok(Next::recv())
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "bye" => return Ok(Next::Close),
            Received::Request(l) => cx.send(&l)?,
            _ => {}
        }
        Ok(Next::recv())
    }
}

/// The async twin of [`Portable`].
struct Async(mpsc::UnboundedSender<Pusher<String>>);

impl AsyncStreamHandler for Async {
    type Request = String;
    type Response = String;

    async fn on_connection(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let _ = self.0.send(client.pusher());
        Ok(())
    }

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        if line == "bye" {
            client.close().await;
        } else {
            client.send(&line).await?;
        }
        Ok(())
    }
}

type Running<S> = (
    AsyncTcpServer<S, Lined>,
    tokio::task::JoinHandle<Result<(), ServerError>>,
);

async fn run<S: Service>(server: AsyncTcpServer<S, Lined>) -> Running<S> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, rx.wait_for(|u| *u)).await.unwrap().unwrap();
    (server, task)
}

fn builder<S: Service>(
    service: S,
    config: StreamConfig,
) -> easynet::aio::TcpServerBuilder<S, Lined> {
    AsyncTcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .stream_config(config)
        .shutdown_timeout(Duration::from_secs(2))
}

/// A server of either handler kind that hands out pushers.
async fn pushing(
    asynchronous: bool,
    config: StreamConfig,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<Pusher<String>>,
    Box<dyn FnOnce() -> tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    if asynchronous {
        let (server, task) = run(builder(move |_: &ConnInfo| Async(tx.clone()), config)
            .build_async()
            .unwrap())
        .await;
        let addr = server.addresses()[0];
        (
            addr,
            rx,
            Box::new(move || {
                tokio::spawn(async move {
                    server.shutdown().await;
                    let _ = task.await;
                })
            }),
        )
    } else {
        let (server, task) = run(builder(move |_: &ConnInfo| Portable(tx.clone()), config)
            .build()
            .unwrap())
        .await;
        let addr = server.addresses()[0];
        (
            addr,
            rx,
            Box::new(move || {
                tokio::spawn(async move {
                    server.shutdown().await;
                    let _ = task.await;
                })
            }),
        )
    }
}

struct Peer {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Peer {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        Self {
            lines: BufReader::new(r).lines(),
            write: w,
        }
    }

    async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn line(&mut self) -> Option<String> {
        timeout(LIMIT, self.lines.next_line())
            .await
            .unwrap()
            .ok()
            .flatten()
    }
}

#[tokio::test]
async fn a_task_pushes_while_the_handler_waits_in_a_receive() {
    for asynchronous in [false, true] {
        let (addr, mut pushers, stop) = pushing(asynchronous, StreamConfig::default()).await;
        let mut peer = Peer::connect(addr).await;
        let pusher = timeout(LIMIT, pushers.recv()).await.unwrap().unwrap();
        tokio::spawn(async move {
            for i in 0..3 {
                pusher.send(&format!("news {i}")).await.unwrap();
            }
        });
        for i in 0..3 {
            assert_eq!(peer.line().await.unwrap(), format!("news {i}"));
        }
        peer.send("request").await;
        assert_eq!(peer.line().await.unwrap(), "request");
        stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_push_a_thousand_frames_each_whole_and_in_order() {
    for asynchronous in [false, true] {
        let config = StreamConfig::default().with_write_high_water(8192);
        let (addr, mut pushers, stop) = pushing(asynchronous, config).await;
        let mut peer = Peer::connect(addr).await;
        let pusher = timeout(LIMIT, pushers.recv()).await.unwrap().unwrap();
        for t in 0..8 {
            let pusher = pusher.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    let msg = format!("{t} {i} {}", "x".repeat(i % 64));
                    pusher.send(&msg).await.unwrap();
                }
            });
        }
        let mut next = [0usize; 8];
        for _ in 0..8000 {
            let line = peer.line().await.expect("every frame arrives");
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(i, next[t], "per-sender order");
            assert_eq!(parts.next().unwrap_or(""), "x".repeat(i % 64), "whole");
            next[t] += 1;
        }
        assert_eq!(next, [1000; 8]);
        stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_push_to_a_closed_connection_is_closed() {
    for asynchronous in [false, true] {
        let (addr, mut pushers, stop) = pushing(asynchronous, StreamConfig::default()).await;
        let mut peer = Peer::connect(addr).await;
        let pusher = timeout(LIMIT, pushers.recv()).await.unwrap().unwrap();
        peer.send("bye").await;
        assert_eq!(peer.line().await, None);
        let refused = timeout(LIMIT, async {
            loop {
                match pusher.send(&"late".to_owned()).await {
                    Err(PushError::Closed) => break,
                    _ => tokio::task::yield_now().await,
                }
            }
        });
        refused.await.unwrap();
        assert!(matches!(
            pusher.try_send("late".to_owned()),
            Err(TrySendError::Closed(_))
        ));
        stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_hits_the_bound() {
    for asynchronous in [false, true] {
        let config = StreamConfig::default().with_write_high_water(64 * 1024);
        let (addr, mut pushers, stop) = pushing(asynchronous, config).await;
        let peer = Peer::connect(addr).await; // never reads
        let pusher = timeout(LIMIT, pushers.recv()).await.unwrap().unwrap();
        let frame = "z".repeat(64 * 1024 - 1);
        let mut queued = 0usize;
        // Waits for room while the kernel takes what it can; once the socket is full and
        // the client never reads, a send waits for ever: that is the bound.
        while timeout(Duration::from_millis(500), pusher.send(&frame))
            .await
            .is_ok()
        {
            queued += 1;
            assert!(queued < 2_000, "no bound");
        }
        match pusher.try_send(frame.clone()) {
            Err(TrySendError::Full(back)) => assert_eq!(back.len(), frame.len(), "it comes back"),
            other => panic!("expected Full, got {other:?}"),
        }
        // Kernel buffers (a few MiB on loopback) + write queue + pusher queue.
        assert!(queued * 64 < 32 * 1024, "{queued} frames of 64 KiB");
        drop(peer);
        stop().await.unwrap();
    }
}

/// The chat: every line goes to every other member.
struct Chat(Arc<Broadcast<String>>);

impl StreamHandler for Chat {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        self.0.insert(cx.pusher());
        cx.send("joined".to_owned())?;
        Ok(Next::recv())
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        if let Received::Request(line) = r {
            let me = cx.pusher().info().id;
            self.0.send_except(Some(me), &line)?;
        }
        Ok(Next::recv())
    }

    fn on_disconnection(&mut self, cx: &mut StreamContext<'_, String>) {
        self.0.remove(cx.pusher().info().id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_of_fifty_clients_delivers_every_line_to_every_other_once() {
    let room = Arc::new(Broadcast::new(SlowConsumer::DropMessage));
    let r = room.clone();
    let (server, task) = run(
        builder(move |_: &ConnInfo| Chat(r.clone()), StreamConfig::default())
            .build()
            .unwrap(),
    )
    .await;
    let addr = server.addresses()[0];
    let mut peers = Vec::new();
    for _ in 0..50 {
        let mut peer = Peer::connect(addr).await;
        assert_eq!(peer.line().await.unwrap(), "joined");
        peers.push(peer);
    }
    for (n, peer) in peers.iter_mut().enumerate() {
        peer.send(&format!("hello from {n}")).await;
    }
    let mut seen: HashMap<usize, Vec<String>> = HashMap::new();
    for (n, peer) in peers.iter_mut().enumerate() {
        for _ in 0..49 {
            seen.entry(n).or_default().push(peer.line().await.unwrap());
        }
    }
    for (n, mut got) in seen {
        got.sort();
        let mut expected: Vec<_> = (0..50)
            .filter(|&m| m != n)
            .map(|m| format!("hello from {m}"))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "client {n}");
    }
    assert_eq!(room.dropped(), 0);
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

/// Hands each datagram peer's pusher out, answers "ok".
struct UdpSub(mpsc::UnboundedSender<DatagramPusher<String>>);

impl DatagramHandler for UdpSub {
    type Request = String;
    type Response = String;
    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        _: Received<String>,
    ) -> HandlerResult {
        let _ = self.0.send(cx.pusher());
        cx.send("ok".to_owned())?;
        Ok(Next::Close)
    }
}

struct AsyncUdpSub(mpsc::UnboundedSender<DatagramPusher<String>>);

impl AsyncDatagramHandler for AsyncUdpSub {
    type Request = String;
    type Response = String;
    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        client.recv().await?;
        let _ = self.0.send(client.pusher());
        client.send(&"ok".to_owned()).await?;
        Ok(())
    }
}

type DatagramLines = Datagram<Utf8, String, String>;

async fn udp_push<S: Service>(
    server: AsyncUdpServer<S, DatagramLines>,
    mut pushers: mpsc::UnboundedReceiver<DatagramPusher<String>>,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, rx.wait_for(|u| *u)).await.unwrap().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.addresses()[0]).await.unwrap();
    let mut buf = [0u8; 100];
    let mut recv = async || {
        let n = timeout(LIMIT, socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    socket.send(b"subscribe\n").await.unwrap();
    assert_eq!(recv().await, "ok");
    let pusher = timeout(LIMIT, pushers.recv()).await.unwrap().unwrap();
    let p = pusher.clone();
    tokio::spawn(async move {
        for i in 0..3 {
            p.try_send(format!("tick {i}")).unwrap();
        }
    });
    for i in 0..3 {
        assert_eq!(recv().await, format!("tick {i}"));
    }
    server.shutdown().await;
    task.await.unwrap().unwrap();
    assert!(matches!(
        pusher.try_send("late".into()),
        Err(TrySendError::Closed(_))
    ));
}

#[tokio::test]
async fn udp_peers_are_pushed_to_from_a_task() {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = AsyncUdpServer::builder(Datagram::lines(), move |_: &ConnInfo| UdpSub(tx.clone()))
        .host("127.0.0.1")
        .build()
        .unwrap();
    udp_push(server, rx).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let server = AsyncUdpServer::builder(Datagram::lines(), move |_: &ConnInfo| {
        AsyncUdpSub(tx.clone())
    })
    .host("127.0.0.1")
    .build_async()
    .unwrap();
    udp_push(server, rx).await;
}
