//! [`DatagramPusher`]: server push to a datagram peer.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::{Encoder, TrySendError};
use crate::addr::Addr;
use crate::handler::ConnInfo;
use crate::protocol::{DatagramServerProtocol, SerializeError};

/// The queue a datagram endpoint's pushers fill and the endpoint drains.
#[derive(Debug)]
pub(crate) struct DatagramOutbox {
    state: Mutex<DatagramState>,
    /// Set with each datagram queued, cleared when they are taken (under the lock): the
    /// endpoints look for pushed datagrams after every datagram they handle, and without the
    /// lock when there are none.
    queued: AtomicBool,
    limit: usize,
}

#[derive(Debug, Default)]
struct DatagramState {
    datagrams: VecDeque<(Addr, Bytes)>,
    closed: bool,
    driver: Option<Waker>,
    signaled: bool,
}

impl DatagramOutbox {
    /// A queue of at most `limit` datagrams.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(DatagramState::default()),
            queued: AtomicBool::new(false),
            limit: limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DatagramState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, to: Addr, datagram: Bytes) -> Result<(), TrySendError<Bytes>> {
        let mut s = self.lock();
        if s.closed {
            return Err(TrySendError::Closed(datagram));
        }
        if s.datagrams.len() >= self.limit {
            return Err(TrySendError::Full(datagram));
        }
        let wake = s.datagrams.is_empty();
        s.datagrams.push_back((to, datagram));
        self.queued.store(true, Ordering::Release);
        s.signaled |= wake;
        let driver = if wake { s.driver.clone() } else { None };
        drop(s);
        if let Some(w) = driver {
            w.wake();
        }
        Ok(())
    }

    /// True if datagrams may be queued (false: [`drain`](Self::drain) would find none).
    #[inline]
    pub(crate) fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// Takes every queued datagram.
    pub(crate) fn drain(&self, mut f: impl FnMut(Addr, Bytes)) {
        // A push this misses wakes the driver, which drains again (after the lock of its
        // `poll`, which shows the flag set).
        if !self.has_queued() {
            return;
        }
        let taken = {
            let mut s = self.lock();
            self.queued.store(false, Ordering::Release);
            std::mem::take(&mut s.datagrams)
        };
        for (to, datagram) in taken {
            f(to, datagram);
        }
    }

    /// The endpoint stopped: pushers are refused from now on.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.datagrams.clear();
        self.queued.store(false, Ordering::Release);
    }

    /// Registers the driver's waker; ready once after each push into an empty queue.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if !s.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.driver = Some(cx.waker().clone());
        }
        if std::mem::take(&mut s.signaled) && !s.closed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Encodes responses with a datagram protocol.
pub(crate) struct DatagramEncoder<P>(pub(crate) Arc<P>);

impl<P: DatagramServerProtocol> Encoder<P::Response> for DatagramEncoder<P> {
    fn encode(&self, item: &P::Response) -> Result<Bytes, SerializeError> {
        crate::protocol::response_datagram(&*self.0, item)
    }
}

/// Sends datagrams to one peer of a datagram server from anywhere, at any time; the
/// datagram twin of [`Pusher`](super::Pusher). Get it from
/// [`DatagramContext::pusher`](crate::handler::DatagramContext::pusher) or
/// [`DatagramPeer::pusher`](crate::datagram::DatagramPeer::pusher).
/// `Clone + Send + Sync`. The endpoint's push queue holds at most
/// [`DatagramConfig::max_pending`](crate::datagram::DatagramConfig::max_pending) datagrams
/// (all peers together); past it [`try_send`](Self::try_send) gives the message back. Once
/// the server stops, sends fail with `Closed`.
pub struct DatagramPusher<T> {
    outbox: Arc<DatagramOutbox>,
    encoder: Arc<dyn Encoder<T>>,
    info: Arc<ConnInfo>,
}

impl<T> Clone for DatagramPusher<T> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
            encoder: self.encoder.clone(),
            info: self.info.clone(),
        }
    }
}

impl<T> fmt::Debug for DatagramPusher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramPusher")
            .field("peer", &self.info.peer)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> DatagramPusher<T> {
    pub(crate) fn new(
        outbox: Arc<DatagramOutbox>,
        encoder: Arc<dyn Encoder<T>>,
        info: ConnInfo,
    ) -> Self {
        Self {
            outbox,
            encoder,
            info: Arc::new(info),
        }
    }

    /// Encodes `message` as one datagram of the endpoint's protocol.
    pub fn encode(&self, message: &T) -> Result<Bytes, SerializeError> {
        self.encoder.encode(message)
    }

    /// Queues `message` as one datagram to this peer, or gives it back.
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        let datagram = self.encode(&message).map_err(TrySendError::Serialize)?;
        self.outbox
            .push(self.info.peer.clone(), datagram)
            .map_err(|e| match e {
                TrySendError::Full(_) => TrySendError::Full(message),
                _ => TrySendError::Closed(message),
            })
    }

    /// Queues a datagram [encoded](Self::encode) before.
    pub fn try_send_encoded(&self, datagram: Bytes) -> Result<(), TrySendError<Bytes>> {
        self.outbox.push(self.info.peer.clone(), datagram)
    }

    /// True once the server stopped.
    pub fn is_closed(&self) -> bool {
        self.outbox.lock().closed
    }

    /// The peer.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(outbox: &DatagramOutbox) -> Vec<Bytes> {
        let mut got = Vec::new();
        outbox.drain(|_, d| got.push(d));
        got
    }

    #[test]
    fn the_queued_flag_follows_the_queue() {
        let outbox = DatagramOutbox::new(4);
        let to: Addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9)).into();
        assert!(!outbox.has_queued());
        assert!(drained(&outbox).is_empty());
        outbox.push(to.clone(), Bytes::from_static(b"a")).unwrap();
        outbox.push(to.clone(), Bytes::from_static(b"b")).unwrap();
        assert!(outbox.has_queued());
        assert_eq!(drained(&outbox), [&b"a"[..], b"b"]);
        assert!(!outbox.has_queued());
        outbox.push(to.clone(), Bytes::from_static(b"c")).unwrap();
        outbox.close();
        assert!(!outbox.has_queued());
        assert!(drained(&outbox).is_empty());
    }

    /// Pushes from other threads are all taken, whenever the drains run.
    #[test]
    fn concurrent_pushes_are_never_lost() {
        let outbox = Arc::new(DatagramOutbox::new(usize::MAX));
        let to: Addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9)).into();
        let pushers: Vec<_> = (0..4)
            .map(|_| {
                let (outbox, to) = (outbox.clone(), to.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        outbox.push(to.clone(), Bytes::from_static(b"x")).unwrap();
                    }
                })
            })
            .collect();
        let mut taken = 0;
        while pushers.iter().any(|p| !p.is_finished()) {
            taken += drained(&outbox).len();
        }
        for p in pushers {
            p.join().unwrap();
        }
        taken += drained(&outbox).len();
        assert_eq!(taken, 4000);
    }
}
