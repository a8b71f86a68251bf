//! Datagram sockets for the server loops, UDP or Unix: [`DgramSocket`] is what the loops
//! are written against.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use easynet_common::DatagramBuffers;

use crate::relay::Relayed;
#[cfg(unix)]
use easynet_common::unix::SocketFile;
use easynet_core::addr::PeerAddr;
#[cfg(unix)]
use easynet_core::addr::UnixAddr;
use easynet_core::datagram::{Transmit, send_in_order};
use tokio::net::UdpSocket;
#[cfg(unix)]
use tokio::net::UnixDatagram;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What woke a socket loop.
pub(crate) enum Event {
    Stop,
    Readable(io::Result<()>),
    Timer,
    Woken,
}

/// A socket loop's wait, made once per loop: the stop signals, the timer and the socket's
/// readiness are polled in place at every wait, not made again per datagram (a
/// cancellation future per wait registered and removed a `Notify` waiter; a timer per wait
/// went in and out of the timer wheel).
pub(crate) struct Wait {
    cancel: Relayed<Pin<Box<WaitForCancellationFutureOwned>>>,
    closed: Relayed<Pin<Box<WaitForCancellationFutureOwned>>>,
    sleep: Pin<Box<Sleep>>,
    /// Where `sleep` is set; moved only to an earlier deadline. A later one lets it fire
    /// first: the core's timers ignore an early call and give their next deadline.
    armed: Option<tokio::time::Instant>,
}

impl Wait {
    pub(crate) fn new(cancel: &CancellationToken, closed: &CancellationToken) -> Self {
        Self {
            cancel: Relayed::new(Box::pin(cancel.clone().cancelled_owned())),
            closed: Relayed::new(Box::pin(closed.clone().cancelled_owned())),
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
        }
    }

    /// Waits for the first of: a stop, the socket readable, the core's `timeout`, an
    /// outside wake-up (`poll_wake`), in that order.
    ///
    /// Cancel safe: it consumes nothing (readiness stays until read, the timer stays set),
    /// so a wait dropped part-way is simply waited again.
    pub(crate) async fn wait<D: DgramSocket>(
        &mut self,
        socket: &D,
        timeout: Option<Instant>,
        mut poll_wake: impl FnMut(&mut Context<'_>) -> Poll<()>,
    ) -> Event {
        let timeout = timeout.map(tokio::time::Instant::from_std);
        if let Some(t) = timeout
            && self.armed.is_none_or(|a| t < a)
        {
            self.sleep.as_mut().reset(t);
            self.armed = Some(t);
        }
        std::future::poll_fn(|cx| {
            if self.cancel.poll(cx).is_ready() || self.closed.poll(cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            if let Poll::Ready(res) = socket.poll_recv_ready(cx) {
                return Poll::Ready(Event::Readable(res));
            }
            if timeout.is_some() && self.sleep.as_mut().poll(cx).is_ready() {
                self.armed = None;
                return Poll::Ready(Event::Timer);
            }
            if poll_wake(cx).is_ready() {
                return Poll::Ready(Event::Woken);
            }
            Poll::Pending
        })
        .await
    }
}

/// A bound datagram socket the server loops receive on and answer from.
pub(crate) trait DgramSocket: Send + Sync + 'static {
    /// What peers are keyed by.
    type Addr: PeerAddr;

    /// One datagram; the sender is `None` when it cannot be answered (an unnamed Unix
    /// socket), and the caller drops it. Last, the socket's drop count if the kernel reports
    /// it (UDP on Linux: SO_RXQ_OVFL, asked with every read, see
    /// [`SocketDrops`](easynet_core::stats::SocketDrops); Unix datagram sockets have none).
    fn try_recv_from(&self, buf: &mut [u8])
    -> io::Result<(usize, Option<Self::Addr>, Option<u32>)>;
    /// Datagrams read by one system call, each given to `each` as
    /// [`try_recv_from`](Self::try_recv_from) returns it; how many, and the drop count as
    /// `try_recv_from` reports it. By default one, read into `buffers`' scratch buffer and
    /// copied; UDP on Linux reads up to `max` (1 to `DATAGRAM_BATCH`) in place with
    /// `recvmmsg`.
    fn try_recv_batch(
        &self,
        buffers: &mut DatagramBuffers,
        _max: usize,
        mut each: impl FnMut(BytesMut, Option<Self::Addr>),
    ) -> io::Result<(usize, Option<u32>)> {
        let buf = buffers.scratch();
        let (n, from, count) = self.try_recv_from(buf)?;
        each(BytesMut::from(&buf[..n]), from);
        Ok((1, count))
    }
    fn try_send_to(&self, buf: &[u8], to: &Self::Addr) -> io::Result<usize>;
    /// Read readiness without a waiter future (one waker slot: the socket loop's).
    fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn local(&self) -> io::Result<Self::Addr>;
    /// The kernel's drop count now, where [`try_recv_from`](Self::try_recv_from) reports one.
    fn drop_count(&self) -> Option<u32> {
        None
    }

    /// Sends datagrams from the front of `ts` (not empty) by one system call, in order;
    /// how many went (fewer when the socket filled up or the next one failed), or the
    /// first one's error. By default the first alone; UDP on Linux sends up to
    /// `DATAGRAM_BATCH` with `sendmmsg`.
    fn try_send_batch(&self, ts: &[Transmit<Self::Addr>]) -> io::Result<usize> {
        self.try_send_to(&ts[0].data, &ts[0].to).map(|_| 1)
    }

    /// Sends all of `ts` in order, a batch per call, waiting while the socket would block;
    /// a datagram that fails is logged and dropped (its handler has returned already:
    /// ARCHITECTURE.md, datagrams). Cancel safety: a cancelled send leaves the datagrams
    /// not sent yet unsent; `ts` is the caller's.
    fn send_all(&self, ts: &[Transmit<Self::Addr>]) -> impl Future<Output = ()> + Send {
        async move {
            let mut gone = 0;
            loop {
                gone += send_in_order(&ts[gone..], |ts| self.try_send_batch(ts));
                if gone == ts.len() {
                    return;
                }
                if let Err(e) = self.writable().await {
                    tracing::warn!(peer = %ts[gone].to, error = %e, "datagram send failed");
                    gone += 1;
                }
            }
        }
    }

    /// Sends, waiting while the socket would block.
    fn send_to(
        &self,
        buf: &[u8],
        to: &Self::Addr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        async move {
            loop {
                match self.try_send_to(buf, to) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                    other => return other,
                }
            }
        }
    }
}

impl DgramSocket for UdpSocket {
    type Addr = SocketAddr;

    fn try_recv_from(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<SocketAddr>, Option<u32>)> {
        // try_io clears the readiness on WouldBlock, as try_recv_from does.
        self.try_io(tokio::io::Interest::READABLE, || {
            easynet_common::recv_from_counting(self, buf, true)
        })
        .map(|(n, from, drops)| (n, Some(from), drops))
    }
    #[cfg(target_os = "linux")]
    fn try_send_batch(&self, ts: &[Transmit]) -> io::Result<usize> {
        self.try_io(tokio::io::Interest::WRITABLE, || {
            easynet_common::send_batch_to(self, ts)
        })
    }
    #[cfg(target_os = "linux")]
    fn try_recv_batch(
        &self,
        buffers: &mut DatagramBuffers,
        max: usize,
        mut each: impl FnMut(BytesMut, Option<SocketAddr>),
    ) -> io::Result<(usize, Option<u32>)> {
        // try_io clears the readiness on WouldBlock, as try_recv_from does.
        self.try_io(tokio::io::Interest::READABLE, || {
            buffers.recv_batch_from(self, true, max, |data, from| each(data, Some(from)))
        })
    }
    fn try_send_to(&self, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
        UdpSocket::try_send_to(self, buf, *to)
    }
    fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UdpSocket::poll_recv_ready(self, cx)
    }
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UdpSocket::writable(self)
    }
    fn local(&self) -> io::Result<SocketAddr> {
        self.local_addr()
    }
    fn drop_count(&self) -> Option<u32> {
        easynet_common::socket_drop_count(self)
    }
}

/// A bound Unix datagram socket and the file it made (removed when this is dropped).
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct UnixDgram {
    pub socket: Arc<UnixDatagram>,
    pub local: UnixAddr,
    pub _file: Option<SocketFile>,
}

#[cfg(unix)]
impl DgramSocket for UnixDgram {
    type Addr = UnixAddr;

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Option<UnixAddr>, Option<u32>)> {
        // No SO_RXQ_OVFL here: a full Unix datagram socket blocks or refuses its senders
        // rather than dropping.
        let (n, from) = self.socket.try_recv_from(buf)?;
        let from = easynet_common::unix::to_unix_addr(&from.into());
        Ok((n, (!from.is_unnamed()).then_some(from), None))
    }
    fn try_send_to(&self, buf: &[u8], to: &UnixAddr) -> io::Result<usize> {
        self.socket.try_io(tokio::io::Interest::WRITABLE, || {
            easynet_common::unix::send_to(&*self.socket, buf, to)
        })
    }
    fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_recv_ready(cx)
    }
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.socket.writable()
    }
    fn local(&self) -> io::Result<UnixAddr> {
        Ok(self.local.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Sends while it has room (`room` per writable wait), fails every datagram to `bad`,
    /// and records what it sent and how often `writable` was awaited.
    struct Fake {
        room: Mutex<usize>,
        bad: SocketAddr,
        sent: Mutex<Vec<u8>>,
        waits: Mutex<usize>,
        /// `writable` never resolves (a socket that stays full).
        stuck: bool,
    }

    impl Fake {
        fn new(room: usize, stuck: bool) -> Self {
            Self {
                room: Mutex::new(room),
                bad: "127.0.0.1:9".parse().unwrap(),
                sent: Mutex::new(Vec::new()),
                waits: Mutex::new(0),
                stuck,
            }
        }
    }

    fn transmits(n: u8, bad: Option<(u8, SocketAddr)>) -> Vec<Transmit> {
        let good: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        (0..n)
            .map(|i| Transmit {
                to: bad.filter(|(b, _)| *b == i).map_or(good, |(_, to)| to),
                data: bytes::Bytes::from(vec![i]),
            })
            .collect()
    }

    impl DgramSocket for Fake {
        type Addr = SocketAddr;

        fn try_recv_from(
            &self,
            _: &mut [u8],
        ) -> io::Result<(usize, Option<SocketAddr>, Option<u32>)> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn try_send_to(&self, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
            if *to == self.bad {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            *room -= 1;
            self.sent.lock().unwrap().push(buf[0]);
            Ok(buf.len())
        }
        /// As `sendmmsg`: in order until one fails; that one's error only when it is first.
        fn try_send_batch(&self, ts: &[Transmit]) -> io::Result<usize> {
            for (i, t) in ts.iter().take(easynet_common::DATAGRAM_BATCH).enumerate() {
                if let Err(e) = self.try_send_to(&t.data, &t.to) {
                    return if i == 0 { Err(e) } else { Ok(i) };
                }
            }
            Ok(ts.len().min(easynet_common::DATAGRAM_BATCH))
        }
        fn poll_recv_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
            *self.waits.lock().unwrap() += 1;
            let stuck = self.stuck;
            if !stuck {
                *self.room.lock().unwrap() = 3;
            }
            async move {
                if stuck {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        }
        fn local(&self) -> io::Result<SocketAddr> {
            Ok("127.0.0.1:1".parse().unwrap())
        }
    }

    #[tokio::test]
    async fn send_all_waits_for_room_in_order_and_drops_only_what_fails() {
        let fake = Fake::new(2, false);
        let ts = transmits(12, Some((5, fake.bad)));
        tokio::time::timeout(Duration::from_secs(10), fake.send_all(&ts))
            .await
            .unwrap();
        let want: Vec<u8> = (0..12).filter(|&i| i != 5).collect();
        assert_eq!(*fake.sent.lock().unwrap(), want);
        // 2, then 3 per wait: 11 sent after 3 waits.
        assert_eq!(*fake.waits.lock().unwrap(), 3);
    }

    /// Cancel safety: a `send_all` dropped while it waits for room has sent what it sent,
    /// in order, and nothing more; the datagrams are the caller's to send again.
    #[tokio::test]
    async fn send_all_cancelled_while_waiting_sends_nothing_more() {
        let fake = Fake::new(4, true);
        let ts = transmits(10, None);
        let cancelled = tokio::time::timeout(Duration::from_millis(20), fake.send_all(&ts)).await;
        assert!(cancelled.is_err(), "it waits for room that never comes");
        assert_eq!(*fake.sent.lock().unwrap(), [0, 1, 2, 3]);
        *fake.room.lock().unwrap() = 100;
        tokio::time::timeout(Duration::from_secs(10), fake.send_all(&ts[4..]))
            .await
            .unwrap();
        assert_eq!(*fake.sent.lock().unwrap(), (0..10).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn a_wait_dropped_part_way_can_be_waited_again() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (cancel, closed) = (CancellationToken::new(), CancellationToken::new());
        let mut wait = Wait::new(&cancel, &closed);
        let later = Instant::now() + Duration::from_secs(3600);
        let never = |_: &mut Context<'_>| Poll::Pending;
        let dropped = tokio::time::timeout(
            Duration::from_millis(10),
            wait.wait(&socket, Some(later), never),
        )
        .await;
        assert!(dropped.is_err(), "nothing to wake it");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"x", socket.local_addr().unwrap()).unwrap();
        let woken = tokio::time::timeout(
            Duration::from_secs(10),
            wait.wait(&socket, Some(later), never),
        );
        assert!(matches!(woken.await, Ok(Event::Readable(Ok(())))));
        let soon = Instant::now() + Duration::from_millis(5);
        let mut buf = [0u8; 8];
        DgramSocket::try_recv_from(&socket, &mut buf).unwrap();
        // As the loop does: read until the socket would block (that clears readiness).
        assert!(DgramSocket::try_recv_from(&socket, &mut buf).is_err());
        let timer = tokio::time::timeout(
            Duration::from_secs(10),
            wait.wait(&socket, Some(soon), never),
        );
        assert!(
            matches!(timer.await, Ok(Event::Timer)),
            "an earlier deadline moves the timer"
        );
        cancel.cancel();
        let stop = tokio::time::timeout(Duration::from_secs(10), wait.wait(&socket, None, never));
        assert!(matches!(stop.await, Ok(Event::Stop)));
    }
}
