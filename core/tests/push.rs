//! Server push in the simulator: pushers used from other threads while handlers wait,
//! concurrent pushers keep their frames whole and in order, the bound holds for a client
//! that does not read, closed connections refuse, close from outside, broadcast.

#![cfg(feature = "sim")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet_core::ConnId;
use easynet_core::datagram::{AsyncDatagramHandler, DatagramPeer};
use easynet_core::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    StreamContext, StreamHandler,
};
use easynet_core::protocol::{Datagram, Stream};
use easynet_core::push::{Broadcast, DatagramPusher, Pusher, SlowConsumer, TrySendError};
use easynet_core::sim::{ClientState, DatagramSim, StreamSim};
use easynet_core::stream::{AsyncStreamHandler, StreamConfig, StreamPeer};

type Pushers = Arc<Mutex<HashMap<ConnId, Pusher<String>>>>;

/// Registers its pusher, echoes requests; "bye" closes. Counts `on_disconnection`.
struct Member {
    pushers: Pushers,
    gone: Arc<Mutex<Vec<ConnId>>>,
}

impl StreamHandler for Member {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        let pusher = cx.pusher();
        self.pushers
            .lock()
            .unwrap()
            .insert(pusher.info().id, pusher);
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

    fn on_disconnection(&mut self, cx: &mut StreamContext<'_, String>) {
        let id = cx.pusher().info().id;
        self.gone.lock().unwrap().push(id);
    }
}

type MemberService = Box<dyn Fn(&ConnInfo) -> Member + Send + Sync>;
type Lines = Stream<easynet_core::protocol::Lines, easynet_core::protocol::Utf8, String, String>;

struct World {
    sim: StreamSim<MemberService, Lines>,
    pushers: Pushers,
    gone: Arc<Mutex<Vec<ConnId>>>,
}

fn world(config: StreamConfig) -> World {
    let pushers = Pushers::default();
    let gone = Arc::new(Mutex::new(Vec::new()));
    let (p, g) = (pushers.clone(), gone.clone());
    let service: MemberService = Box::new(move |_| Member {
        pushers: p.clone(),
        gone: g.clone(),
    });
    let sim = StreamSim::builder(Stream::lines(), service)
        .config(config)
        .build();
    World { sim, pushers, gone }
}

impl World {
    fn pusher(&self, conn: u64) -> Pusher<String> {
        self.pushers.lock().unwrap()[&ConnId(conn)].clone()
    }
}

#[test]
fn a_thread_pushes_while_the_handler_waits_for_a_request() {
    let mut w = world(StreamConfig::default());
    let c = w.sim.connect();
    let pusher = w.pusher(1);
    std::thread::spawn(move || {
        for i in 0..3 {
            pusher.try_send(format!("news {i}")).unwrap();
        }
    })
    .join()
    .unwrap();
    w.sim.send(c, &"request".to_owned());
    assert_eq!(w.sim.replies(c), ["news 0", "news 1", "news 2", "request"]);
}

#[test]
fn concurrent_pushers_keep_frames_whole_and_in_order() {
    let mut w = world(StreamConfig::default().with_write_high_water(4096));
    let c = w.sim.connect();
    let pusher = w.pusher(1);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pusher = pusher.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let mut msg = format!("{t} {i} {}", "x".repeat(i % 50));
                    loop {
                        match pusher.try_send(msg) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => {
                                msg = back;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < 8000 {
        assert!(
            std::time::Instant::now() < limit,
            "stalled at {}",
            got.len()
        );
        got.extend(w.sim.replies(c));
        std::thread::yield_now();
    }
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut next = [0usize; 8];
    for line in &got {
        let mut parts = line.split(' ');
        let t: usize = parts.next().unwrap().parse().unwrap();
        let i: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(i, next[t], "per-sender order");
        assert_eq!(
            parts.next().unwrap_or(""),
            "x".repeat(i % 50),
            "whole frame"
        );
        next[t] += 1;
    }
    assert_eq!(next, [1000; 8]);
}

#[test]
fn a_client_that_does_not_read_hits_the_bound() {
    let mut w = world(StreamConfig::default().with_write_high_water(8192));
    let c = w.sim.connect();
    w.sim.set_reading(c, false);
    let pusher = w.pusher(1);
    let mut queued = 0usize;
    let full = loop {
        match pusher.try_send("y".repeat(1000)) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(back)) => break back,
            Err(e) => panic!("{e}"),
        }
        w.sim.run_until_idle();
        assert!(queued < 10_000, "no bound");
    };
    assert_eq!(full.len(), 1000, "the message comes back");
    // Socket buffers (256 KiB each way in the simulator) + write queue + pusher queue.
    assert!(queued * 1001 < 256 * 1024 + 2 * 8192 + 2002, "{queued}");
    w.sim.set_reading(c, true);
    assert_eq!(w.sim.replies(c).len(), queued);
    pusher.try_send("after".to_owned()).unwrap();
    assert_eq!(w.sim.replies(c), ["after"]);
}

#[test]
fn pushing_to_a_closed_connection_is_closed() {
    let mut w = world(StreamConfig::default());
    let c = w.sim.connect();
    let pusher = w.pusher(1);
    w.sim.send(c, &"bye".to_owned());
    assert!(pusher.is_closed());
    assert!(matches!(
        pusher.try_send("late".to_owned()),
        Err(TrySendError::Closed(m)) if m == "late"
    ));
    w.sim.advance(Duration::from_secs(1));
    assert_eq!(w.sim.connections(), 0);
    assert!(matches!(
        pusher.try_send("later".to_owned()),
        Err(TrySendError::Closed(_))
    ));
}

#[test]
fn a_pusher_closes_its_connection_gracefully_from_outside() {
    let mut w = world(StreamConfig::default());
    let c = w.sim.connect();
    let pusher = w.pusher(1);
    pusher.try_send("last words".to_owned()).unwrap();
    pusher.close();
    w.sim.run_until_idle();
    assert_eq!(w.sim.replies(c), ["last words"]);
    assert_eq!(w.sim.state(c), ClientState::EndOfStream);
    assert_eq!(*w.gone.lock().unwrap(), [ConnId(1)], "on_disconnection ran");
}

#[test]
fn a_chat_of_fifty_clients_delivers_every_line_to_every_other_once() {
    let room: Arc<Broadcast<String>> = Arc::new(Broadcast::new(SlowConsumer::DropMessage));
    let r = room.clone();
    struct Chat(Arc<Broadcast<String>>);
    impl StreamHandler for Chat {
        type Request = String;
        type Response = String;
        fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
            self.0.insert(cx.pusher());
            Ok(Next::recv())
        }
        fn handle(
            &mut self,
            cx: &mut StreamContext<'_, String>,
            r: Received<String>,
        ) -> HandlerResult {
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
    let mut sim = StreamSim::new(Stream::lines(), move |_: &ConnInfo| Chat(r.clone()));
    let clients: Vec<_> = (0..50).map(|_| sim.connect()).collect();
    for (n, &c) in clients.iter().enumerate() {
        sim.send(c, &format!("hello from {n}"));
    }
    for (n, &c) in clients.iter().enumerate() {
        let mut got = sim.replies(c);
        got.sort();
        let mut expected: Vec<_> = (0..50)
            .filter(|&m| m != n)
            .map(|m| format!("hello from {m}"))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "client {n}");
    }
    assert_eq!(room.dropped(), 0);
    sim.close(clients[0]);
    sim.advance(Duration::from_secs(1));
    assert_eq!(room.len(), 49);
}

/// An async handler hands its pusher to a spawned thread and keeps receiving.
struct AsyncSub(Arc<Mutex<Option<Pusher<String>>>>);

impl AsyncStreamHandler for AsyncSub {
    type Request = String;
    type Response = String;

    async fn on_connection(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        *self.0.lock().unwrap() = Some(client.pusher());
        Ok(())
    }

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        client.send(&format!("echo {line}")).await?;
        Ok(())
    }
}

#[test]
fn async_handlers_push_too() {
    let slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    let mut sim = StreamSim::new_async(Stream::lines(), move |_: &ConnInfo| AsyncSub(s.clone()));
    let c = sim.connect();
    let pusher = slot.lock().unwrap().clone().unwrap();
    std::thread::spawn(move || pusher.try_send("pushed".to_owned()).unwrap())
        .join()
        .unwrap();
    sim.send(c, &"hi".to_owned());
    assert_eq!(sim.replies(c), ["pushed", "echo hi"]);
}

/// Keeps each datagram peer's pusher; answers "ok".
struct DatagramSub(Arc<Mutex<Vec<DatagramPusher<String>>>>);

impl DatagramHandler for DatagramSub {
    type Request = String;
    type Response = String;
    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        _: Received<String>,
    ) -> HandlerResult {
        self.0.lock().unwrap().push(cx.pusher());
        cx.send("ok".to_owned())?;
        Ok(Next::Close)
    }
}

struct AsyncDatagramSub(Arc<Mutex<Vec<DatagramPusher<String>>>>);

impl AsyncDatagramHandler for AsyncDatagramSub {
    type Request = String;
    type Response = String;
    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        client.recv().await?;
        self.0.lock().unwrap().push(client.pusher());
        client.send(&"ok".to_owned()).await?;
        Ok(())
    }
}

type Kept = Arc<Mutex<Vec<DatagramPusher<String>>>>;
type DatagramLines = Datagram<easynet_core::protocol::Utf8, String, String>;

fn datagram_push<S: easynet_core::handler::Service>(
    mut sim: DatagramSim<S, DatagramLines>,
    kept: Kept,
) {
    let peer = sim.peer();
    sim.send(peer, &"subscribe".to_owned());
    assert_eq!(sim.replies(peer), ["ok"]);
    let pusher = kept.lock().unwrap()[0].clone();
    std::thread::spawn(move || {
        for i in 0..3 {
            pusher.try_send(format!("tick {i}")).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(sim.replies(peer), ["tick 0", "tick 1", "tick 2"]);
    sim.shutdown();
    let pusher = kept.lock().unwrap()[0].clone();
    assert!(pusher.is_closed());
    assert!(matches!(
        pusher.try_send("late".into()),
        Err(TrySendError::Closed(_))
    ));
}

#[test]
fn datagram_peers_are_pushed_to_from_other_threads() {
    let kept = Kept::default();
    let k = kept.clone();
    datagram_push(
        DatagramSim::new(Datagram::lines(), move |_: &ConnInfo| {
            DatagramSub(k.clone())
        }),
        kept,
    );
    let kept = Kept::default();
    let k = kept.clone();
    datagram_push(
        DatagramSim::new_async(Datagram::lines(), move |_: &ConnInfo| {
            AsyncDatagramSub(k.clone())
        }),
        kept,
    );
}

/// Keeps the peer's pusher of raw bytes.
struct RawSub(Arc<Mutex<Option<DatagramPusher<bytes::Bytes>>>>);

impl DatagramHandler for RawSub {
    type Request = bytes::Bytes;
    type Response = bytes::Bytes;
    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, bytes::Bytes>,
        _: Received<bytes::Bytes>,
    ) -> HandlerResult {
        *self.0.lock().unwrap() = Some(cx.pusher());
        Ok(Next::Close)
    }
}

/// A pusher encodes bytes the protocol can share (raw bytes) without a copy, as a borrowed
/// send does.
#[test]
fn a_datagram_pusher_shares_raw_bytes() {
    use easynet_core::datagram::{DatagramConfig, DatagramServer};
    type Raw = Datagram<easynet_core::protocol::RawBytes, bytes::Bytes, bytes::Bytes>;
    let kept = Arc::new(Mutex::new(None));
    let k = kept.clone();
    let service = move |_: &ConnInfo| RawSub(k.clone());
    let local: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let mut server: DatagramServer<_, Raw> = DatagramServer::new(
        Arc::new(service),
        Arc::new(Datagram::raw()),
        local,
        DatagramConfig::default(),
    )
    .unwrap();
    let peer: std::net::SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let now = std::time::Instant::now();
    server.handle_datagram(now, peer, bytes::BytesMut::from(&b"subscribe"[..]));
    let pusher = kept
        .lock()
        .unwrap()
        .take()
        .expect("the handler kept its pusher");
    let message = bytes::Bytes::from_static(b"pushed");
    let datagram = pusher.encode(&message).unwrap();
    assert_eq!(
        datagram.as_ptr(),
        message.as_ptr(),
        "the message's bytes, not a copy"
    );
}
