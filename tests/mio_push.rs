//! Server push on the blocking (mio) driver over loopback: a thread pushes while the handler
//! waits in a receive, concurrent pushers keep frames whole and in order, the bound holds
//! for a client that does not read, a closed connection refuses, a 50-client chat, and a UDP
//! peer pushed to.

#![cfg(feature = "mio")]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet::blocking::{ServerThread, TcpServer, UdpServer};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::protocol::{Datagram, Stream};
use easynet::push::{Broadcast, DatagramPusher, Pusher, SlowConsumer, TrySendError};
use easynet::stream::StreamConfig;

const LIMIT: Duration = Duration::from_secs(20);

/// Hands each connection's pusher out, echoes; "bye" closes.
struct Sub(Mutex<mpsc::Sender<Pusher<String>>>);

impl StreamHandler for Sub {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        let _ = self.0.lock().unwrap().send(cx.pusher());
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

fn server(config: StreamConfig) -> (ServerThread, mpsc::Receiver<Pusher<String>>) {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let server = TcpServer::builder(Stream::lines(), move |_: &ConnInfo| {
        Sub(Mutex::new(tx.lock().unwrap().clone()))
    })
    .host("127.0.0.1")
    .stream_config(config)
    .shutdown_timeout(Duration::from_secs(2))
    .build()
    .unwrap();
    (ServerThread::start(server).unwrap(), rx)
}

struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        Self {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(l.trim_end().to_owned()),
        }
    }
}

#[test]
fn a_thread_pushes_while_the_handler_waits_in_a_receive() {
    let (mut thread, pushers) = server(StreamConfig::default());
    let mut peer = Peer::connect(thread.addresses()[0]);
    let pusher = pushers.recv_timeout(LIMIT).unwrap();
    std::thread::spawn(move || {
        for i in 0..3 {
            pusher.try_send(format!("news {i}")).unwrap();
        }
    });
    for i in 0..3 {
        assert_eq!(peer.line().unwrap(), format!("news {i}"));
    }
    peer.send("request");
    assert_eq!(peer.line().unwrap(), "request");
    thread.join(None).unwrap();
}

#[test]
fn eight_threads_push_a_thousand_frames_each_whole_and_in_order() {
    let (mut thread, pushers) = server(StreamConfig::default().with_write_high_water(8192));
    let mut peer = Peer::connect(thread.addresses()[0]);
    let pusher = pushers.recv_timeout(LIMIT).unwrap();
    for t in 0..8 {
        let pusher = pusher.clone();
        std::thread::spawn(move || {
            for i in 0..1000 {
                let mut msg = format!("{t} {i} {}", "x".repeat(i % 64));
                loop {
                    match pusher.try_send(msg) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            msg = back;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
    }
    let mut next = [0usize; 8];
    for _ in 0..8000 {
        let line = peer.line().expect("every frame arrives");
        let mut parts = line.split(' ');
        let t: usize = parts.next().unwrap().parse().unwrap();
        let i: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(i, next[t], "per-sender order");
        assert_eq!(parts.next().unwrap_or(""), "x".repeat(i % 64), "whole");
        next[t] += 1;
    }
    assert_eq!(next, [1000; 8]);
    thread.join(None).unwrap();
}

#[test]
fn a_push_to_a_closed_connection_is_closed() {
    let (mut thread, pushers) = server(StreamConfig::default());
    let mut peer = Peer::connect(thread.addresses()[0]);
    let pusher = pushers.recv_timeout(LIMIT).unwrap();
    peer.send("bye");
    assert_eq!(peer.line(), None);
    let start = std::time::Instant::now();
    while !pusher.is_closed() {
        assert!(start.elapsed() < LIMIT);
        std::thread::yield_now();
    }
    assert!(matches!(
        pusher.try_send("late".to_owned()),
        Err(TrySendError::Closed(m)) if m == "late"
    ));
    thread.join(None).unwrap();
}

#[test]
fn a_client_that_does_not_read_hits_the_bound() {
    let (mut thread, pushers) = server(StreamConfig::default().with_write_high_water(64 * 1024));
    let _peer = Peer::connect(thread.addresses()[0]); // never reads
    let pusher = pushers.recv_timeout(LIMIT).unwrap();
    let frame = "z".repeat(64 * 1024 - 1);
    let mut queued = 0usize;
    let mut full_since = None;
    // Full for half a second in a row: the socket cannot take more, the bound holds.
    loop {
        match pusher.try_send(frame.clone()) {
            Ok(()) => {
                queued += 1;
                full_since = None;
            }
            Err(TrySendError::Full(back)) => {
                assert_eq!(back.len(), frame.len(), "the message comes back");
                let since = *full_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
        assert!(queued < 2_000, "no bound");
    }
    assert!(queued * 64 < 32 * 1024, "{queued} frames of 64 KiB");
    thread.join(None).unwrap();
}

/// The chat: every line to every other member.
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

#[test]
fn a_chat_of_fifty_clients_delivers_every_line_to_every_other_once() {
    let room = Arc::new(Broadcast::new(SlowConsumer::DropMessage));
    let r = room.clone();
    let server = TcpServer::builder(Stream::lines(), move |_: &ConnInfo| Chat(r.clone()))
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addr = thread.addresses()[0];
    let mut peers: Vec<Peer> = (0..50)
        .map(|_| {
            let mut p = Peer::connect(addr);
            assert_eq!(p.line().unwrap(), "joined");
            p
        })
        .collect();
    for (n, peer) in peers.iter_mut().enumerate() {
        peer.send(&format!("hello from {n}"));
    }
    for (n, peer) in peers.iter_mut().enumerate() {
        let mut got: Vec<String> = (0..49).map(|_| peer.line().unwrap()).collect();
        got.sort();
        let mut expected: Vec<_> = (0..50)
            .filter(|&m| m != n)
            .map(|m| format!("hello from {m}"))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "client {n}");
    }
    assert_eq!(room.dropped(), 0);
    thread.join(None).unwrap();
}

/// Hands each datagram peer's pusher out, answers "ok".
struct UdpSub(Mutex<mpsc::Sender<DatagramPusher<String>>>);

impl DatagramHandler for UdpSub {
    type Request = String;
    type Response = String;
    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        _: Received<String>,
    ) -> HandlerResult {
        let _ = self.0.lock().unwrap().send(cx.pusher());
        cx.send("ok".to_owned())?;
        Ok(Next::Close)
    }
}

#[test]
fn a_udp_peer_is_pushed_to_from_a_thread() {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let server = UdpServer::builder(Datagram::lines(), move |_: &ConnInfo| {
        UdpSub(Mutex::new(tx.lock().unwrap().clone()))
    })
    .host("127.0.0.1")
    .build()
    .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    socket.connect(thread.addresses()[0]).unwrap();
    let mut buf = [0u8; 100];
    let mut recv = || {
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    socket.send(b"subscribe\n").unwrap();
    assert_eq!(recv(), "ok");
    let pusher = rx.recv_timeout(LIMIT).unwrap();
    let p = pusher.clone();
    std::thread::spawn(move || {
        for i in 0..3 {
            p.try_send(format!("tick {i}")).unwrap();
        }
    });
    for i in 0..3 {
        assert_eq!(recv(), format!("tick {i}"));
    }
    thread.join(None).unwrap();
    assert!(matches!(
        pusher.try_send("late".into()),
        Err(TrySendError::Closed(_))
    ));
}
