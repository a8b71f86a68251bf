//! The portable socket loop against a scripted socket: the order of its reads and sends.

use super::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use easynet_core::handler::{ConnInfo, DatagramContext, HandlerResult, Next, Received};
use easynet_core::protocol::Datagram;

/// What the loop did to the socket, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A read that returned this many datagrams.
    Read(usize),
    /// A send of this many datagrams.
    Sent(usize),
}

/// A socket with datagrams queued, read `DATAGRAM_BATCH` at a time as `recvmmsg` would,
/// readable while any are queued (then never again: the test stops the loop with its
/// cancel token); it logs every read that returned some and every send.
struct Script {
    queued: Mutex<VecDeque<(SocketAddr, Bytes)>>,
    log: Mutex<Vec<Op>>,
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
        mut each: impl FnMut(BytesMut, Option<SocketAddr>),
    ) -> io::Result<(usize, Option<u32>)> {
        let taken: Vec<_> = {
            let mut queued = self.queued.lock().unwrap();
            let n = queued.len().min(DATAGRAM_BATCH);
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
        let n = ts.len().min(DATAGRAM_BATCH);
        self.log.lock().unwrap().push(Op::Sent(n));
        Ok(n)
    }
    fn poll_recv_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.queued.lock().unwrap().is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
    async fn writable(&self) -> io::Result<()> {
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

/// Runs the loop on `script` until it has answered `want` datagrams, then stops it.
async fn serve(script: Arc<Script>, want: usize) {
    let endpoint = DatagramServer::new(
        Arc::new(|_: &ConnInfo| Echo),
        Arc::new(Datagram::raw()),
        script.local().unwrap(),
        DatagramConfig::default(),
    )
    .unwrap();
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
    let script = Arc::new(Script::new(4, 5)); // 20 datagrams: batches of 8, 8, 4
    serve(script.clone(), 20).await;
    let log = script.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            Op::Read(8),
            Op::Sent(8),
            Op::Read(8),
            Op::Sent(8),
            Op::Read(4),
            Op::Sent(4)
        ]
    );
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
