//! The loop's sending with a socket whose room and failures the test decides: the
//! `WouldBlock` and error paths that loopback does not reach on demand.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use easynet_core::handler::{ConnInfo, DatagramContext, HandlerResult, Next, Received};
use easynet_core::protocol::{Datagram, RawBytes};
use mio::{Registry, Token};

use super::*;

/// A datagram socket with datagrams queued, read as many at a time as asked (as
/// `recvmmsg` would). It sends while it has room, fails every datagram to `bad`, records
/// what it sent, and logs its reads and batched sends.
struct Fake {
    room: Mutex<usize>,
    bad: SocketAddr,
    sent: Mutex<Vec<(SocketAddr, Bytes)>>,
    queued: Mutex<VecDeque<(SocketAddr, Bytes)>>,
    log: Mutex<Vec<Op>>,
}

/// What the loop did to the socket, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A read that returned this many datagrams.
    Read(usize),
    /// A batched send of this many datagrams.
    Sent(usize),
}

impl Fake {
    fn new(room: usize) -> Self {
        Self {
            room: Mutex::new(room),
            bad: "127.0.0.1:9".parse().unwrap(),
            sent: Mutex::new(Vec::new()),
            queued: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
        }
    }

    fn sent(&self) -> Vec<(SocketAddr, Bytes)> {
        std::mem::take(&mut self.sent.lock().unwrap())
    }
}

impl Source for Fake {
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
}

impl MioDgram for Fake {
    type Addr = SocketAddr;

    fn recv_dgram(
        &self,
        _: &mut DatagramBuffers,
    ) -> io::Result<(BytesMut, Option<SocketAddr>, Option<u32>)> {
        unreachable!("the loop reads with recv_dgrams")
    }
    fn recv_dgrams(
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
    fn send_dgram(&self, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
        if *to == self.bad {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        *room -= 1;
        self.sent
            .lock()
            .unwrap()
            .push((*to, Bytes::copy_from_slice(buf)));
        Ok(buf.len())
    }
    /// As `sendmmsg`: in order until one fails; that one's error only when it is the first.
    fn send_dgrams(&self, ts: &[Transmit]) -> io::Result<usize> {
        let mut sent = ts.len().min(DATAGRAM_BATCH);
        for (i, t) in ts.iter().take(DATAGRAM_BATCH).enumerate() {
            if let Err(err) = self.send_dgram(&t.data, &t.to) {
                if i == 0 {
                    return Err(err);
                }
                sent = i;
                break;
            }
        }
        self.log.lock().unwrap().push(Op::Sent(sent));
        Ok(sent)
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

type EchoService = fn(&ConnInfo) -> Echo;
type Raw = Datagram<RawBytes, Bytes, Bytes>;

fn endpoint(room: usize) -> Endpoint<EchoService, Raw, Fake> {
    let service: EchoService = |_| Echo;
    let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
    Endpoint {
        socket: Fake::new(room),
        server: DatagramServer::new(
            Arc::new(service),
            Arc::new(Datagram::raw()),
            local,
            DatagramConfig::default(),
        )
        .unwrap(),
        pending: VecDeque::new(),
        batch: Vec::new(),
        socket_drops: SocketDrops::starting_at(Default::default(), 0),
        counted: 0,
        read_ahead: ReadAhead::new(),
        readable: true,
        writable: true,
        write_interest: false,
        unnamed: 0,
    }
}

/// Datagrams from three peers, `n` in all, numbered in the order they arrive.
fn arrive(e: &mut Endpoint<EchoService, Raw, Fake>, n: u8) -> Vec<(SocketAddr, Bytes)> {
    let now = Instant::now();
    (0..n)
        .map(|i| {
            let from: SocketAddr = format!("127.0.0.1:{}", 2000 + u16::from(i % 3))
                .parse()
                .unwrap();
            e.server
                .handle_datagram(now, from, BytesMut::from(&[i][..]));
            (from, Bytes::from(vec![i]))
        })
        .collect()
}

#[test]
fn answers_wait_in_order_while_the_socket_is_full_and_go_first_once_it_has_room() {
    let mut e = endpoint(5);
    let first = arrive(&mut e, 20);
    flush(&mut e, None);
    assert_eq!(e.socket.sent(), first[..5]);
    assert!(!e.writable);
    assert_eq!(e.pending.len(), 15);
    // More arrive while the socket is full: they queue behind.
    let second = arrive(&mut e, 4);
    flush(&mut e, None);
    assert!(e.socket.sent().is_empty());
    assert_eq!(e.pending.len(), 19);
    *e.socket.room.lock().unwrap() = 100;
    e.writable = true;
    flush(&mut e, None);
    let want: Vec<_> = first[5..].iter().chain(&second).cloned().collect();
    assert_eq!(e.socket.sent(), want);
    assert!(e.pending.is_empty() && e.batch.is_empty() && e.writable);
}

#[test]
fn a_failed_send_is_dropped_and_the_rest_of_its_batch_goes_on() {
    let mut e = endpoint(100);
    let bad = e.socket.bad;
    let now = Instant::now();
    let good: SocketAddr = "127.0.0.1:2000".parse().unwrap();
    for (i, from) in [good, bad, good, bad, good].into_iter().enumerate() {
        e.server
            .handle_datagram(now, from, BytesMut::from(&[i as u8][..]));
    }
    flush(&mut e, None);
    let sent: Vec<_> = e
        .socket
        .sent()
        .into_iter()
        .map(|(to, d)| (to, d[0]))
        .collect();
    assert_eq!(sent, [(good, 0), (good, 2), (good, 4)]);
    assert!(e.pending.is_empty() && e.writable);
}

/// Each read asks for what the endpoint's `ReadAhead` says (one, then twice as many while
/// reads fill up), and its answers go out before the next read.
#[test]
fn reads_as_the_read_ahead_asks_and_answers_each_read_before_the_next() {
    let mut e = endpoint(usize::MAX);
    let sent: Vec<_> = (0..20u8)
        .map(|i| {
            let from = SocketAddr::from(([127, 0, 0, 1], 2000 + u16::from(i % 3)));
            (from, Bytes::from(vec![i]))
        })
        .collect();
    e.socket.queued.lock().unwrap().extend(sent.iter().cloned());
    let drops = DropCounter::default();
    read(
        &mut e,
        &mut DatagramBuffers::new(),
        Instant::now(),
        None,
        &drops,
    );
    let expected: Vec<Op> = [1, 2, 4, 8, 5]
        .iter()
        .flat_map(|&n| [Op::Read(n), Op::Sent(n)])
        .collect();
    assert_eq!(*e.socket.log.lock().unwrap(), expected);
    assert_eq!(e.socket.sent(), sent, "every one answered, in order");
    // It read until the socket would block: the next wake-up's first read takes one.
    assert!(!e.readable);
    assert_eq!(e.read_ahead.next(), 1);
}
