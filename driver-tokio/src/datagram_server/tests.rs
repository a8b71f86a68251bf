//! The portable socket loop against a scripted socket: the order of its reads and sends.

use super::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use easynet_core::handler::{ConnInfo, DatagramContext, HandlerResult, Next, Received};
use easynet_core::protocol::{Datagram, RawBytes};

/// What the loop did to the socket, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A read that returned this many datagrams.
    Read(usize),
    /// A send of this many datagrams.
    Sent(usize),
}

/// A socket with datagrams queued, read as many at a time as asked (as `recvmmsg` would),
/// readable while any are queued (then never again: the test stops the loop with its
/// cancel token); it logs every read that returned some and every send, and keeps the
/// first byte of each datagram sent. It sends while it has `room`; with none, it is full
/// and never becomes writable.
struct Script {
    queued: Mutex<VecDeque<(SocketAddr, Bytes)>>,
    log: Mutex<Vec<Op>>,
    sent_bytes: Mutex<Vec<u8>>,
    room: Mutex<usize>,
}

impl Script {
    fn new(peers: u16, per_peer: u8) -> Self {
        let mut queued = VecDeque::new();
        for i in 0..per_peer {
            for p in 0..peers {
                let from = SocketAddr::from(([127, 0, 0, 1], 3000 + p));
                queued.push_back((from, Bytes::from(vec![i; 10])));
            }
        }
        Self {
            queued: Mutex::new(queued),
            log: Mutex::new(Vec::new()),
            sent_bytes: Mutex::new(Vec::new()),
            room: Mutex::new(usize::MAX),
        }
    }

    fn sent(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .map(|op| match op {
                Op::Sent(n) => *n,
                Op::Read(_) => 0,
            })
            .sum()
    }
}

impl DgramSocket for Script {
    type Addr = SocketAddr;

    fn try_recv_from(&self, _: &mut [u8]) -> io::Result<(usize, Option<SocketAddr>, Option<u32>)> {
        unreachable!("the loop reads with try_recv_batch")
    }
    fn try_recv_batch(
        &self,
        _: &mut DatagramBuffers,
        max: usize,
        mut each: impl FnMut(BytesMut, Option<SocketAddr>),
    ) -> io::Result<(usize, Option<u32>)> {
        let taken: Vec<_> = {
            let mut queued = self.queued.lock().unwrap();
            let n = queued.len().min(max);
            queued.drain(..n).collect()
        };
        if taken.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.log.lock().unwrap().push(Op::Read(taken.len()));
        for (from, data) in &taken {
            each(BytesMut::from(&data[..]), Some(*from));
        }
        Ok((taken.len(), None))
    }
    fn try_send_to(&self, _: &[u8], _: &SocketAddr) -> io::Result<usize> {
        unreachable!("the loop sends with try_send_batch")
    }
    fn try_send_batch(&self, ts: &[Transmit]) -> io::Result<usize> {
        let mut room = self.room.lock().unwrap();
        let n = ts.len().min(DATAGRAM_BATCH).min(*room);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        *room -= n;
        self.log.lock().unwrap().push(Op::Sent(n));
        let mut sent = self.sent_bytes.lock().unwrap();
        sent.extend(ts[..n].iter().map(|t| t.data[0]));
        Ok(n)
    }
    fn poll_recv_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.queued.lock().unwrap().is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
    async fn writable(&self) -> io::Result<()> {
        if *self.room.lock().unwrap() == 0 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    fn local(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
    }
}

struct Echo;

impl DatagramHandler for Echo {
    type Request = Bytes;
    type Response = Bytes;

    fn handle(&mut self, cx: &mut DatagramContext<'_, Bytes>, r: Received<Bytes>) -> HandlerResult {
        if let Received::Request(data) = r {
            cx.send(data)?;
        }
        Ok(Next::Close)
    }
}

type EchoEndpoint = DatagramServer<fn(&ConnInfo) -> Echo, Datagram<RawBytes, Bytes, Bytes>>;

fn echo_endpoint(script: &Script) -> EchoEndpoint {
    let service: fn(&ConnInfo) -> Echo = |_| Echo;
    DatagramServer::new(
        Arc::new(service),
        Arc::new(Datagram::raw()),
        script.local().unwrap(),
        DatagramConfig::default(),
    )
    .unwrap()
}

/// Runs the loop on `script` until it has answered `want` datagrams, then stops it.
async fn serve(script: Arc<Script>, want: usize) {
    let endpoint = echo_endpoint(&script);
    let (cancel, closed) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(serve_socket(
        script.clone(),
        endpoint,
        cancel.clone(),
        closed,
        DropCounter::default(),
    ));
    tokio::time::timeout(Duration::from_secs(10), async {
        while script.sent() < want {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every datagram answered");
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// A batch's answers go out before the next read (as mio's loop does): the peers go on at
/// once, and the buffer the batch was read into in place is free for the next batch. Read
/// after read, the answers held it, and every later read of the wake-up was a single
/// datagram copied.
#[tokio::test]
async fn a_batch_is_answered_before_the_next_read() {
    // 20 datagrams: reads of 1, 2, 4, 8 and 5 (the `ReadAhead`).
    let script = Arc::new(Script::new(4, 5));
    serve(script.clone(), 20).await;
    let log = script.log.lock().unwrap().clone();
    let batches = [1, 2, 4, 8, 5];
    let expected: Vec<Op> = batches
        .iter()
        .flat_map(|&n| [Op::Read(n), Op::Sent(n)])
        .collect();
    assert_eq!(log, expected);
}

/// More than a wake-up's budget queued: still every batch answered before the next read,
/// and all answered (the loop reads on after the budget without a new readiness event).
#[tokio::test]
async fn past_the_read_budget_every_batch_is_answered_before_the_next() {
    let script = Arc::new(Script::new(5, 21));
    let total = 5 * 21;
    assert!(total > 3 * READ_BUDGET);
    serve(script.clone(), total).await;
    let log = script.log.lock().unwrap().clone();
    for pair in log.windows(2) {
        assert!(
            !matches!(pair, [Op::Read(_), Op::Read(_)]),
            "a read right after a read: {log:?}"
        );
    }
    assert_eq!(script.sent(), total);
}

/// Cancel safety of `send_answers`: dropped while it waits for room, it has sent what it
/// sent; called again, it goes on with what the endpoint holds next and sends no datagram
/// twice (the rest of the dropped batch is lost, as `serve_socket` states).
#[tokio::test]
async fn send_answers_dropped_while_waiting_sends_nothing_twice_when_called_again() {
    let script = Script::new(1, 12); // one peer; datagram i starts with byte i
    let mut endpoint = echo_endpoint(&script);
    let queued: Vec<_> = script.queued.lock().unwrap().drain(..).collect();
    for (from, data) in queued {
        endpoint.handle_datagram(std::time::Instant::now(), from, BytesMut::from(&data[..]));
    }
    *script.room.lock().unwrap() = 3;
    let mut batch = Vec::new();
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        send_answers(&mut endpoint, &script, &mut batch),
    )
    .await;
    assert!(dropped.is_err(), "it waits for room that never comes");
    assert_eq!(*script.sent_bytes.lock().unwrap(), [0, 1, 2]);
    *script.room.lock().unwrap() = usize::MAX;
    tokio::time::timeout(
        Duration::from_secs(10),
        send_answers(&mut endpoint, &script, &mut batch),
    )
    .await
    .unwrap();
    // The dropped batch was 0..8: 3..8 are lost, 8..12 follow, none twice.
    assert_eq!(*script.sent_bytes.lock().unwrap(), [0, 1, 2, 8, 9, 10, 11]);
}
