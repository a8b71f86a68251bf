//! Server push: [`Pusher`] sends to a connection from anywhere, at any time (a background
//! thread, another connection's handler, a timer task), and [`Broadcast`] sends one message
//! to many connections; [`DatagramPusher`] sends to a datagram peer.
//!
//! A handler gets its connection's pusher from its context
//! ([`StreamContext::pusher`](crate::handler::StreamContext::pusher),
//! [`AsyncClient::pusher`](crate::stream::AsyncClient::pusher)). `send` encodes the message
//! on the caller's thread, queues it as one whole frame (frames from different pushers never
//! interleave), and wakes the connection's driver, which moves it into the connection's write
//! queue when that is below its high-water mark. The pusher's own queue is bounded by the
//! same mark ([`StreamConfig::write_high_water`](crate::stream::StreamConfig)): past it,
//! [`try_send`](Pusher::try_send) gives the message back ([`TrySendError::Full`]) and
//! [`send`](Pusher::send) waits for room. Once the connection closes, every send fails with
//! `Closed`.
//!
//! ```
//! use std::time::Instant;
//! use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
//! use easynet_core::protocol::Stream;
//! use easynet_core::push::Pusher;
//! use easynet_core::sim::StreamSim;
//! use std::sync::{Arc, Mutex};
//!
//! /// Hands its connection's pusher out, then waits for requests.
//! struct Subscribe(Arc<Mutex<Option<Pusher<String>>>>);
//! impl StreamHandler for Subscribe {
//!     type Request = String;
//!     type Response = String;
//!     fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
//!         *self.0.lock().unwrap() = Some(cx.pusher());
//!         Ok(Next::recv())
//!     }
//!     fn handle(&mut self, _: &mut StreamContext<'_, String>, _: Received<String>) -> HandlerResult {
//!         Ok(Next::recv())
//!     }
//! }
//!
//! let slot = Arc::new(Mutex::new(None));
//! let shared = slot.clone();
//! let mut sim = StreamSim::new(move |_: &ConnInfo| Subscribe(shared.clone()), Stream::lines());
//! let client = sim.connect();
//! let pusher = slot.lock().unwrap().clone().unwrap();
//! // From any thread, while the handler waits for a request:
//! std::thread::spawn(move || pusher.try_send("news".to_owned()).unwrap()).join().unwrap();
//! assert_eq!(sim.replies(client), ["news"]);
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use crate::ConnId;
use crate::addr::Addr;
use crate::handler::ConnInfo;
use crate::protocol::{DatagramServerProtocol, SerializeError};

/// Why [`Pusher::try_send`] did not queue the message; the message comes back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The connection's queue is at its bound: the peer reads slower than we push.
    #[error("the connection's send queue is full")]
    Full(T),
    /// The connection is closing or gone.
    #[error("client is closed")]
    Closed(T),
    /// The message could not be encoded; nothing was queued.
    #[error(transparent)]
    Serialize(SerializeError),
}

/// Why [`Pusher::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The connection is closing or gone.
    #[error("client is closed")]
    Closed,
    /// The message could not be encoded; nothing was queued.
    #[error(transparent)]
    Serialize(#[from] SerializeError),
}

/// How a connection was asked to close from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseAsked {
    Graceful,
    Abort,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
    close: Option<CloseAsked>,
    /// The connection's driver, woken when there is something new to do.
    driver: Option<Waker>,
    /// Something new since the driver last looked (edge-triggered: a full write queue
    /// does not keep waking it; it drains the outbox after each write anyway).
    signaled: bool,
    /// Async senders waiting for room.
    room: Vec<Waker>,
}

/// The queue a connection's pushers fill and the connection drains.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    limit: usize,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                closed: false,
                close: None,
                driver: None,
                signaled: false,
                room: Vec::new(),
            }),
            limit: limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under the lock: it cannot be left inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame; it comes back if the queue is full or closed.
    fn push(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        let mut s = self.lock();
        if s.closed || s.close.is_some() {
            return Err(TrySendError::Closed(frame));
        }
        // One frame always fits in an empty queue, however large.
        if s.bytes > 0 && s.bytes + frame.len() > self.limit {
            return Err(TrySendError::Full(frame));
        }
        let wake = s.frames.is_empty();
        s.bytes += frame.len();
        s.frames.push_back(frame);
        s.signaled |= wake;
        let driver = if wake { s.driver.clone() } else { None };
        drop(s);
        if let Some(w) = driver {
            w.wake();
        }
        Ok(())
    }

    fn ask_close(&self, how: CloseAsked) {
        let mut s = self.lock();
        if s.closed || s.close.is_some() {
            return;
        }
        s.close = Some(how);
        s.signaled = true;
        let driver = s.driver.clone();
        drop(s);
        if let Some(w) = driver {
            w.wake();
        }
    }

    /// Takes frames while `take` accepts them (it gets each frame's size), waking senders
    /// waiting for room.
    pub(crate) fn drain(&self, mut take: impl FnMut(Bytes) -> bool) {
        let mut s = self.lock();
        let mut freed = false;
        while let Some(frame) = s.frames.pop_front() {
            let len = frame.len();
            if !take(frame.clone()) {
                s.frames.push_front(frame);
                break;
            }
            s.bytes -= len;
            freed = true;
        }
        let room = if freed {
            std::mem::take(&mut s.room)
        } else {
            Vec::new()
        };
        drop(s);
        room.into_iter().for_each(Waker::wake);
    }

    /// A close asked from outside, taken once.
    pub(crate) fn take_close(&self) -> Option<CloseAsked> {
        self.lock().close.take()
    }

    /// The connection is closing: nothing more is taken, queued frames are dropped, every
    /// pusher is told.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.closed = true;
        s.frames.clear();
        s.bytes = 0;
        let room = std::mem::take(&mut s.room);
        drop(s);
        room.into_iter().for_each(Waker::wake);
    }

    /// Registers the driver's waker; ready once after each push into an empty queue or a
    /// close asked.
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

    /// True when frames wait.
    pub(crate) fn has_frames(&self) -> bool {
        !self.lock().frames.is_empty()
    }
}

/// Encodes a connection's outgoing messages, without the protocol type.
pub(crate) trait Encoder<T>: Send + Sync {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError>;
}

/// Sends to one connection from anywhere; see the [module docs](self). Cheap to clone;
/// `Send + Sync`.
pub struct Pusher<T> {
    outbox: Arc<Outbox>,
    encoder: Arc<dyn Encoder<T>>,
    info: Arc<ConnInfo>,
}

impl<T> Clone for Pusher<T> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
            encoder: self.encoder.clone(),
            info: self.info.clone(),
        }
    }
}

impl<T> fmt::Debug for Pusher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pusher")
            .field("conn", &self.info.id)
            .field("peer", &self.info.peer)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> Pusher<T> {
    pub(crate) fn new(outbox: Arc<Outbox>, encoder: Arc<dyn Encoder<T>>, info: ConnInfo) -> Self {
        Self {
            outbox,
            encoder,
            info: Arc::new(info),
        }
    }

    /// Encodes `message` as one frame of the connection's protocol.
    pub fn encode(&self, message: &T) -> Result<Bytes, SerializeError> {
        let mut dst = BytesMut::new();
        self.encoder.encode(message, &mut dst)?;
        Ok(dst.freeze())
    }

    /// Queues `message` now, or gives it back: [`TrySendError::Full`] while the queue is at
    /// its bound, [`TrySendError::Closed`] once the connection is closing.
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        let frame = self.encode(&message).map_err(TrySendError::Serialize)?;
        self.outbox.push(frame).map_err(|e| match e {
            TrySendError::Full(_) => TrySendError::Full(message),
            _ => TrySendError::Closed(message),
        })
    }

    /// Queues `message`, waiting while the queue is at its bound.
    ///
    /// Cancel safety: cancel-safe. The message is queued whole in the poll that completes
    /// the call; dropped before, nothing was queued.
    pub fn send(&self, message: &T) -> impl Future<Output = Result<(), PushError>> + Send + '_
    where
        T: Sync,
    {
        let frame = self.encode(message);
        SendFuture {
            pusher: self,
            frame: Some(frame),
        }
    }

    /// Queues a frame [encoded](Self::encode) before (by this connection's protocol), as
    /// [`Broadcast`] does to encode a message once for many connections.
    pub fn try_send_encoded(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        self.outbox.push(frame)
    }

    /// Closes the connection gracefully, as the handler returning `Close` would (what is
    /// queued is sent first; `on_disconnection` runs).
    pub fn close(&self) {
        self.outbox.ask_close(CloseAsked::Graceful);
    }

    /// Closes the connection at once with a reset (a slow consumer, say).
    pub fn abort(&self) {
        self.outbox.ask_close(CloseAsked::Abort);
    }

    /// True once the connection is closing or gone.
    pub fn is_closed(&self) -> bool {
        let s = self.outbox.lock();
        s.closed || s.close.is_some()
    }

    /// Who the connection is with.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

struct SendFuture<'a, T> {
    pusher: &'a Pusher<T>,
    frame: Option<Result<Bytes, SerializeError>>,
}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), PushError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let frame = match self.frame.take() {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Err(e.into())),
            None => return Poll::Ready(Err(PushError::Closed)), // polled after completion
        };
        match self.pusher.outbox.push(frame) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TrySendError::Full(frame)) => {
                let mut s = self.pusher.outbox.lock();
                // Room may have come between the push and the lock: try again at once.
                if s.bytes == 0 || s.closed {
                    cx.waker().wake_by_ref();
                } else {
                    s.room.push(cx.waker().clone());
                }
                drop(s);
                self.frame = Some(Ok(frame));
                Poll::Pending
            }
            Err(_) => Poll::Ready(Err(PushError::Closed)),
        }
    }
}

/// What [`Broadcast`] does with a member whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// Skip the message for that member and count it ([`Broadcast::dropped`]); the default.
    #[default]
    DropMessage,
    /// Reset that member's connection and remove it.
    Disconnect,
}

/// A set of connections that get the same messages: each message is encoded once, then
/// queued on each member without a lock held while encoding. Members are added with their
/// pusher (usually in `on_connection`) and removed by connection id (in
/// `on_disconnection`); closed members are removed as they are met.
///
/// ```
/// use easynet_core::push::{Broadcast, SlowConsumer};
/// let room: Broadcast<String> = Broadcast::new(SlowConsumer::DropMessage);
/// assert_eq!(room.send(&"nobody listens".to_owned()).unwrap(), 0);
/// ```
pub struct Broadcast<T> {
    members: RwLock<HashMap<ConnId, Pusher<T>>>,
    policy: SlowConsumer,
    dropped: AtomicU64,
}

impl<T> fmt::Debug for Broadcast<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("members", &self.len())
            .field("policy", &self.policy)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl<T> Default for Broadcast<T> {
    fn default() -> Self {
        Self::new(SlowConsumer::default())
    }
}

impl<T> Broadcast<T> {
    /// An empty set with a slow-consumer `policy`.
    pub fn new(policy: SlowConsumer) -> Self {
        Self {
            members: RwLock::new(HashMap::new()),
            policy,
            dropped: AtomicU64::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, Pusher<T>>> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ConnId, Pusher<T>>> {
        self.members.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a member (replacing one with the same connection id).
    pub fn insert(&self, pusher: Pusher<T>) {
        self.write().insert(pusher.info().id, pusher);
    }

    /// Removes a member.
    pub fn remove(&self, conn: ConnId) {
        self.write().remove(&conn);
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True without members.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Messages skipped so far because a member's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends `message` to every member; returns how many queued it.
    pub fn send(&self, message: &T) -> Result<usize, SerializeError> {
        self.send_except(None, message)
    }

    /// Sends `message` to every member but `except` (the sender of a chat line, say);
    /// returns how many queued it.
    pub fn send_except(
        &self,
        except: Option<ConnId>,
        message: &T,
    ) -> Result<usize, SerializeError> {
        // Encoded once, with no lock held.
        let Some(first) = self.read().values().next().cloned() else {
            return Ok(0);
        };
        let frame = first.encode(message)?;
        let mut delivered = 0;
        let mut gone = Vec::new();
        for (id, member) in self.read().iter() {
            if Some(*id) == except {
                continue;
            }
            match member.try_send_encoded(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => match self.policy {
                    SlowConsumer::DropMessage => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    SlowConsumer::Disconnect => {
                        member.abort();
                        gone.push(*id);
                    }
                },
                Err(_) => gone.push(*id),
            }
        }
        if !gone.is_empty() {
            let mut members = self.write();
            for id in gone {
                members.remove(&id);
            }
        }
        Ok(delivered)
    }
}

/// The queue a datagram endpoint's pushers fill and the endpoint drains.
#[derive(Debug)]
pub(crate) struct DatagramOutbox {
    state: Mutex<DatagramState>,
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
        s.signaled |= wake;
        let driver = if wake { s.driver.clone() } else { None };
        drop(s);
        if let Some(w) = driver {
            w.wake();
        }
        Ok(())
    }

    /// Takes every queued datagram.
    pub(crate) fn drain(&self, mut f: impl FnMut(Addr, Bytes)) {
        let taken = std::mem::take(&mut self.lock().datagrams);
        for (to, datagram) in taken {
            f(to, datagram);
        }
    }

    /// The endpoint stopped: pushers are refused from now on.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.datagrams.clear();
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
    fn encode(&self, item: &P::Response, dst: &mut BytesMut) -> Result<(), SerializeError> {
        self.0.encode_response(item, dst)
    }
}

/// Sends datagrams to one peer of a datagram server from anywhere, at any time; the
/// datagram twin of [`Pusher`]. Get it from
/// [`DatagramContext::pusher`](crate::handler::DatagramContext::pusher) or
/// [`AsyncDatagramClient::pusher`](crate::datagram::AsyncDatagramClient::pusher).
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
        let mut dst = BytesMut::new();
        self.encoder.encode(message, &mut dst)?;
        Ok(dst.freeze())
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
