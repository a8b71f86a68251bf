//! Server push: [`Pusher`] sends to a connection from anywhere, at any time (a background
//! thread, another connection's handler, a timer task), and [`Broadcast`] sends one message
//! to many connections; [`DatagramPusher`] sends to a datagram peer.
//!
//! A handler gets its connection's pusher from its context
//! ([`StreamContext::pusher`](crate::handler::StreamContext::pusher),
//! [`StreamPeer::pusher`](crate::stream::StreamPeer::pusher)). `send` encodes the message
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
//! let mut sim = StreamSim::new(Stream::lines(), move |_: &ConnInfo| Subscribe(shared.clone()));
//! let client = sim.connect();
//! let pusher = slot.lock().unwrap().clone().unwrap();
//! // From any thread, while the handler waits for a request:
//! std::thread::spawn(move || pusher.try_send("news".to_owned()).unwrap()).join().unwrap();
//! assert_eq!(sim.replies(client), ["news"]);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::handler::ConnInfo;
use crate::protocol::SerializeError;

mod broadcast;
mod datagram;

pub use broadcast::{Broadcast, SlowConsumer};
pub use datagram::DatagramPusher;
pub(crate) use datagram::{DatagramEncoder, DatagramOutbox};

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

    /// Takes frames while `take` accepts them; a frame it refuses comes back (`Err`) and
    /// stays first. Wakes senders waiting for room.
    pub(crate) fn drain(&self, mut take: impl FnMut(Bytes) -> Result<(), Bytes>) {
        let mut s = self.lock();
        let mut freed = false;
        while let Some(frame) = s.frames.pop_front() {
            let len = frame.len();
            if let Err(frame) = take(frame) {
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
    /// One frame (or datagram) of `item`: its own bytes when the protocol shares them (no
    /// copy), else encoded into a new buffer.
    fn encode(&self, item: &T) -> Result<Bytes, SerializeError>;
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
        self.encoder.encode(message)
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
