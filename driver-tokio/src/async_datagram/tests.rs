//! The async handlers' socket loop against a scripted socket: the order of its reads and
//! sends.

use super::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use easynet_common::{DATAGRAM_BATCH, DatagramBuffers};
use easynet_core::datagram::DatagramPeer;
use easynet_core::handler::{ConnInfo, HandlerError};
use easynet_core::protocol::{Datagram, RawBytes};

/// What the loop did to the socket, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A read of this many datagrams in place, into the shared buffer.
    Read(usize),
    /// A read of one datagram copied, the shared buffer being held.
    Copied,
    /// Sends in a row, this many datagrams (the async loop sends one per call).
    Sent(usize),
}

/// Bytes of each datagram queued by [`Script::new`].
const SIZE: usize = 10;

/// A socket with datagrams queued, readable while any are queued (then never again: the
/// test stops the loop with its cancel token). It reads as `DatagramBuffers` does with
/// `recvmmsg`: as many as asked in place into one shared buffer while nothing read
/// into it before is held, else one datagram copied. It logs every read and the sends
/// between them, and keeps the first byte of each datagram sent. It sends while it has
/// `room`; with none, it is full and never becomes writable. A loop that sends `RUNAWAY`
/// datagrams without a read while some are queued fails (it would never read them).
struct Script {
    queued: Mutex<VecDeque<(SocketAddr, Bytes)>>,
    shared: Mutex<BytesMut>,
    log: Mutex<Vec<Op>>,
    sent_bytes: Mutex<Vec<u8>>,
    room: Mutex<usize>,
    since_read: Mutex<usize>,
}

const RUNAWAY: usize = 1000;

impl Script {
    /// `per_peer` rounds of one datagram from each of `peers`; datagram `i` of a peer is
    /// `SIZE` bytes `i`.
    fn new(peers: u16, per_peer: u8) -> Self {
        let mut queued = VecDeque::new();
        for i in 0..per_peer {
            for p in 0..peers {
                queued.push_back((peer(p), Bytes::from(vec![i; SIZE])));
            }
        }
        Self {
            queued: Mutex::new(queued),
            shared: Mutex::new(BytesMut::with_capacity(DATAGRAM_BATCH * SIZE)),
            log: Mutex::new(Vec::new()),
            sent_bytes: Mutex::new(Vec::new()),
            room: Mutex::new(usize::MAX),
            since_read: Mutex::new(0),
        }
    }

    fn sent(&self) -> usize {
        self.sent_bytes.lock().unwrap().len()
    }
}

fn peer(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000 + p))
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
        let read: Vec<_> = {
            let mut queued = self.queued.lock().unwrap();
            let mut shared = self.shared.lock().unwrap();
            if queued.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let (op, read) = if shared.try_reclaim(DATAGRAM_BATCH * SIZE) {
                let n = queued.len().min(max);
                let read = queued.drain(..n).map(|(from, data)| {
                    shared.extend_from_slice(&data);
                    (from, shared.split_to(data.len()))
                });
                (Op::Read(n), read.collect())
            } else {
                let (from, data) = queued.pop_front().unwrap();
                (Op::Copied, vec![(from, BytesMut::from(&data[..]))])
            };
            self.log.lock().unwrap().push(op);
            read
        };
        *self.since_read.lock().unwrap() = 0;
        let n = read.len();
        for (from, data) in read {
            each(data, Some(from));
        }
        Ok((n, None))
    }
    fn try_send_to(&self, data: &[u8], _: &SocketAddr) -> io::Result<usize> {
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        *room -= 1;
        let mut since_read = self.since_read.lock().unwrap();
        *since_read += 1;
        assert!(
            *since_read < RUNAWAY || self.queued.lock().unwrap().is_empty(),
            "{RUNAWAY} datagrams sent and no read while datagrams wait"
        );
        let mut log = self.log.lock().unwrap();
        match log.last_mut() {
            Some(Op::Sent(n)) => *n += 1,
            _ => log.push(Op::Sent(1)),
        }
        self.sent_bytes.lock().unwrap().push(data[0]);
        Ok(data.len())
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

/// Answers one datagram with itself; a datagram starting with `FLOOD` is answered with
/// itself forever.
struct Echo;

const FLOOD: u8 = 0xff;

impl AsyncDatagramHandler for Echo {
    type Request = Bytes;
    type Response = Bytes;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<Bytes, Bytes>,
    ) -> Result<(), HandlerError> {
        let data = client.recv().await?;
        client.send(&data).await?;
        if data[0] == FLOOD {
            loop {
                client.send(&data).await?;
            }
        }
        Ok(())
    }
}

/// A server of [`Echo`] routines on raw datagrams.
type EchoServer = AsyncDatagramServer<fn(&ConnInfo) -> Echo, Datagram<RawBytes, Bytes, Bytes>>;

/// The server of [`Echo`] routines on raw datagrams, at `script`'s address.
fn echo_server(script: &Script) -> EchoServer {
    let service: fn(&ConnInfo) -> Echo = |_| Echo;
    AsyncDatagramServer::new(
        Arc::new(service),
        Arc::new(Datagram::raw()),
        script.local().unwrap(),
        DatagramConfig::default(),
    )
    .unwrap()
}

/// Runs the loop on `script` until it has sent `want` datagrams whose first byte is not
/// `FLOOD`, then stops it.
async fn serve(script: Arc<Script>, want: usize) {
    let service: fn(&ConnInfo) -> Echo = |_| Echo;
    let (cancel, closed) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(serve_socket(
        script.clone(),
        Arc::new(service),
        Arc::new(Datagram::raw()),
        DatagramConfig::default(),
        cancel.clone(),
        closed,
        DropCounter::default(),
    ));
    let answered = || {
        let sent = script.sent_bytes.lock().unwrap();
        sent.iter().filter(|b| **b != FLOOD).count()
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while answered() < want {
            assert!(!task.is_finished(), "the loop ended before answering");
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every datagram answered");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop stops when cancelled")
        .unwrap()
        .unwrap();
}

/// A batch's answers go out and its routines end before the next read (as the portable
/// loop's answers do): the peers go on at once, and the buffer the batch was read into in
/// place is free for the next batch. Read after read, the routines and their peers' queues
/// held it, and every later read of the wake-up was a single datagram copied.
#[tokio::test]
async fn a_batch_is_answered_before_the_next_read() {
    // 20 datagrams: reads of 1, 2, 4, 8 and 5 (the `ReadAhead`); two of a peer in a
    // batch, the second waiting in its queue until the routine of the first has ended.
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

/// More than a wake-up's budget queued: still every batch answered before the next read
/// and read in place, and all answered (the loop reads on after the budget without a new
/// readiness event).
#[tokio::test]
async fn past_the_read_budget_every_batch_is_answered_before_the_next() {
    let script = Arc::new(Script::new(5, 21));
    let total = 5 * 21;
    assert!(total > 3 * READ_BUDGET);
    serve(script.clone(), total).await;
    let log = script.log.lock().unwrap().clone();
    for pair in log.windows(2) {
        assert!(
            matches!(
                pair,
                [Op::Read(_), Op::Sent(_)] | [Op::Sent(_), Op::Read(_)]
            ),
            "not a batch read in place, then its answers: {log:?}"
        );
    }
    assert_eq!(script.sent(), total);
}

/// A routine that never stops sending does not keep the loop from reading the other peers'
/// datagrams, nor from stopping: answering a batch goes on for a bounded number of turns.
#[tokio::test]
async fn a_routine_sending_forever_leaves_room_for_reads_and_the_stop() {
    let script = Arc::new(Script::new(4, 5));
    script
        .queued
        .lock()
        .unwrap()
        .push_front((peer(9), Bytes::from(vec![FLOOD; SIZE])));
    serve(script.clone(), 20).await;
}

/// Cancel safety of `send_transmits`: dropped while it waits for room, it has sent what it
/// sent and lost the datagram it was sending; called again, it goes on with what the server
/// holds next and sends no datagram twice.
#[tokio::test]
async fn send_transmits_dropped_while_waiting_sends_nothing_twice_when_called_again() {
    let script = Script::new(0, 0);
    let mut server = echo_server(&script);
    for i in 0..12 {
        let data = BytesMut::from(&[i; SIZE][..]);
        server.handle_datagram(std::time::Instant::now(), peer(i.into()), data);
    }
    *script.room.lock().unwrap() = 3;
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        send_transmits(&mut server, &script),
    )
    .await;
    assert!(dropped.is_err(), "it waits for room that never comes");
    assert_eq!(*script.sent_bytes.lock().unwrap(), [0, 1, 2]);
    *script.room.lock().unwrap() = usize::MAX;
    tokio::time::timeout(
        Duration::from_secs(10),
        send_transmits(&mut server, &script),
    )
    .await
    .unwrap();
    // 3 was being sent: lost; 4..12 follow, none twice.
    assert_eq!(
        *script.sent_bytes.lock().unwrap(),
        [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    );
}

/// Cancel safety of `read_and_answer`: dropped while it waits for room, the datagrams it
/// read are in the server and those it sent stay sent; the datagram it was sending is lost.
/// The loop goes on with the server, which sends the rest once, none twice.
#[tokio::test]
async fn read_and_answer_dropped_while_waiting_loses_only_the_datagram_being_sent() {
    // 8 peers, one datagram each: reads of 1 and 2, answered (the room is gone), then 4.
    let script = Script::new(8, 1);
    let mut server = echo_server(&script);
    let drops = DropCounter::default();
    let mut reads = Reads::new(SocketDrops::starting_at(server.recorder().clone(), 0));
    *script.room.lock().unwrap() = 3;
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        read_and_answer(&mut server, &script, &mut reads, &drops),
    )
    .await;
    assert!(dropped.is_err(), "it waits for room that never comes");
    assert_eq!(script.queued.lock().unwrap().len(), 1, "7 were read");
    assert_eq!(script.sent(), 3);
    *script.room.lock().unwrap() = usize::MAX;
    tokio::time::timeout(
        Duration::from_secs(10),
        send_transmits(&mut server, &script),
    )
    .await
    .unwrap();
    // The fourth was being sent: lost; the other six read went once each.
    assert_eq!(script.sent(), 6);
}
