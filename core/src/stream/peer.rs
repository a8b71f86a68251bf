//! [`StreamPeer`]: one connection as an async handler sees it, a runtime-agnostic view
//! over the core's [`Connection`](super::Connection).
//!
//! Its futures only look at the connection's state; the [`AsyncSession`](super::AsyncSession)
//! that owns the handler polls them again after every event (bytes, EOF, a deadline, room in
//! the write queue, a shutdown), so they need no runtime: tokio, the mio loop or a test's
//! own loop can run them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Connection, ServerRole};
use crate::addr::Addr;
use crate::handler::{ConnInfo, IntoResponse, MaybeOwned, Received, SendError};
use crate::protocol::{ParseError, StreamServerProtocol};

/// Receives one `handle` call may complete in one turn before the other connections get
/// theirs (as [`HANDLER_CALLS_PER_TURN`](super::HANDLER_CALLS_PER_TURN) for portable handlers).
const RECEIVES_PER_TURN: u32 = super::HANDLER_CALLS_PER_TURN;

/// Why [`StreamPeer::recv`] returned without a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No complete request within the timeout; partial bytes are kept.
    #[error("timed out")]
    Timeout,
    /// Bytes that do not form a valid request; skipped, the rest is kept.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// No more requests: the peer left, the server shuts down, or the client was closed.
    /// Returning (or propagating this with `?`) ends the connection normally.
    #[error("client is closed")]
    Closed,
}

/// The connection calls the client needs, without the protocol type.
pub(crate) trait ConnOps<In, Out>: Send {
    fn recv(&mut self, now: Instant, timeout: Option<Duration>);
    fn cancel_recv(&mut self);
    fn poll_received(&mut self, now: Instant) -> Option<Received<In>>;
    fn send(&mut self, item: &Out) -> Result<(), SendError>;
    fn send_owned(&mut self, item: Out) -> Result<(), SendError>;
    fn queued(&self) -> usize;
    fn high_water(&self) -> usize;
    fn close(&mut self, now: Instant);
    fn close_abortively(&mut self, now: Instant);
    fn mark_closing(&mut self);
    fn is_closing(&self) -> bool;
    fn is_closed(&self) -> bool;
    fn is_ready(&self) -> bool;
    fn is_input_finished(&self) -> bool;
    fn pusher(&mut self) -> crate::push::Pusher<Out>;
    fn log_budget(&self, now: Instant) -> Option<u64>;
    fn count_handler_error(&mut self);
}

impl<P: StreamServerProtocol> ConnOps<P::Request, P::Response> for Connection<P, ServerRole> {
    fn recv(&mut self, now: Instant, timeout: Option<Duration>) {
        Connection::recv(self, now, timeout);
    }
    fn cancel_recv(&mut self) {
        Connection::cancel_recv(self);
    }
    fn poll_received(&mut self, now: Instant) -> Option<Received<P::Request>> {
        Connection::poll_received(self, now)
    }
    fn send(&mut self, item: &P::Response) -> Result<(), SendError> {
        Connection::send(self, item)
    }
    fn send_owned(&mut self, item: P::Response) -> Result<(), SendError> {
        Connection::send_owned(self, item)
    }
    fn queued(&self) -> usize {
        Connection::queued(self)
    }
    fn high_water(&self) -> usize {
        self.config().write_high_water
    }
    fn log_budget(&self, now: Instant) -> Option<u64> {
        Connection::log_budget(self, now)
    }
    fn count_handler_error(&mut self) {
        Connection::count_handler_error(self);
    }
    fn close(&mut self, now: Instant) {
        Connection::close(self, now);
    }
    fn close_abortively(&mut self, now: Instant) {
        Connection::close_abortively(self, now);
    }
    fn mark_closing(&mut self) {
        Connection::mark_closing(self);
    }
    fn is_closing(&self) -> bool {
        Connection::is_closing(self)
    }
    fn is_closed(&self) -> bool {
        Connection::is_closed(self)
    }
    fn is_ready(&self) -> bool {
        Connection::is_ready(self)
    }
    fn is_input_finished(&self) -> bool {
        Connection::is_input_finished(self)
    }
    fn pusher(&mut self) -> crate::push::Pusher<P::Response> {
        Connection::pusher(self)
    }
}

/// What the session and its client share: the session holds it with the concrete
/// connection type, the client as `Shared<dyn ConnOps<..>>` (the same allocation).
pub(crate) struct Shared<C: ?Sized> {
    /// The time of the event being handled.
    pub(crate) now: Instant,
    /// Receives completed during the current `handle` call (decision 5).
    pub(crate) received: usize,
    /// Receives left in this turn; at zero a receive yields and asks to be resumed.
    pub(crate) budget: u32,
    /// The handler yielded for fairness and wants to go on without waiting.
    pub(crate) resume: bool,
    /// A `send` waits for room in the write queue.
    pub(crate) send_waiting: bool,
    /// Info kept outside the lock, for `info()` returning a reference.
    pub(crate) info: Arc<ConnInfo>,
    pub(crate) conn: C,
}

pub(crate) type SharedRef<In, Out> = Arc<Mutex<Shared<dyn ConnOps<In, Out>>>>;

pub(crate) fn lock<C: ?Sized>(shared: &Mutex<Shared<C>>) -> MutexGuard<'_, Shared<C>> {
    // A panicking serializer may poison it; the state is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C> Shared<C> {
    pub(crate) fn new(conn: C, info: ConnInfo, now: Instant) -> Self {
        Self {
            conn,
            info: Arc::new(info),
            now,
            received: 0,
            budget: RECEIVES_PER_TURN,
            resume: false,
            send_waiting: false,
        }
    }
}

impl<C: ?Sized> Shared<C> {
    pub(crate) fn new_turn(&mut self) {
        self.budget = RECEIVES_PER_TURN;
        self.resume = false;
    }
}

/// One connection as an async handler sees it: receive requests, send responses, close.
pub struct StreamPeer<Req, Resp> {
    pub(crate) shared: SharedRef<Req, Resp>,
    info: Arc<ConnInfo>,
}

impl<Req, Resp> std::fmt::Debug for StreamPeer<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPeer")
            .field("peer", &self.info.peer)
            .field("closing", &self.is_closing())
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> StreamPeer<Req, Resp> {
    pub(crate) fn new(shared: SharedRef<Req, Resp>) -> Self {
        let info = lock(&shared).info.clone();
        Self { shared, info }
    }

    /// Waits for the next request, with no timeout.
    ///
    /// Cancel safety: cancel-safe. A request is taken off the buffer only when this returns
    /// it; dropping the future (in `select!`, under a timeout) loses nothing and leaves no
    /// receive armed.
    pub fn recv(&mut self) -> impl Future<Output = Result<Req, RecvError>> + Send + '_
    where
        Req: Send,
        Resp: Send,
    {
        RecvFuture {
            shared: &self.shared,
            timeout: None,
            armed: false,
        }
    }

    /// Waits for the next complete request at most `timeout`; partial bytes are kept. A zero
    /// timeout returns a request already buffered, or times out at once. A timeout the clock
    /// cannot add (`Duration::MAX`) waits for ever.
    ///
    /// Cancel safety: cancel-safe, as [`recv`](Self::recv); the next call starts a new
    /// timeout.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Req, RecvError>> + Send + '_
    where
        Req: Send,
        Resp: Send,
    {
        RecvFuture {
            shared: &self.shared,
            timeout: Some(timeout),
            armed: false,
        }
    }

    /// Encodes and queues one response, then waits while the write queue is over its
    /// high-water mark. Fails with [`SendError::Closed`] once the client is closing.
    ///
    /// Cancel safety: the response is queued whole when the future is first polled;
    /// dropping the future later (while it waits for room) does not take it back, and
    /// dropping it before does not send it. Responses never interleave.
    ///
    /// Takes the response by value (its buffer queued without a copy where the protocol
    /// allows) or by reference ([`IntoResponse`]).
    pub async fn send(&mut self, response: impl IntoResponse<Resp>) -> Result<(), SendError> {
        {
            let mut shared = lock(&self.shared);
            match response.into_response() {
                MaybeOwned::Owned(r) => shared.conn.send_owned(r)?,
                MaybeOwned::Borrowed(r) => shared.conn.send(r)?,
            }
        }
        RoomFuture {
            shared: &self.shared,
        }
        .await;
        Ok(())
    }

    /// A [`Pusher`](crate::push::Pusher) for this connection: keep it (it is `Clone + Send +
    /// Sync`) to send to the client from any thread or task, while this handler waits in a
    /// receive or after it returned (server push).
    pub fn pusher(&self) -> crate::push::Pusher<Resp> {
        lock(&self.shared).conn.pusher()
    }

    /// Closes gracefully: queued responses are flushed, TLS close_notify sent; the handler
    /// should return after it. Idempotent.
    ///
    /// Cancel safety: the close begins when the future is first polled, and completes
    /// then; the flush goes on after the handler returns.
    pub async fn close(&mut self) {
        let mut s = lock(&self.shared);
        let now = s.now;
        s.conn.close(now);
    }

    /// True once the connection is closing (after `close`, the peer's EOF, a shutdown, and
    /// always in `on_disconnection`): the portable handlers' rule.
    pub fn is_closing(&self) -> bool {
        let s = lock(&self.shared);
        s.conn.is_closing() || s.conn.is_input_finished()
    }

    /// Who is connected, with TLS details.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.info.peer
    }

    /// The server's address for this connection.
    pub fn local_addr(&self) -> &Addr {
        &self.info.local
    }
}

struct RecvFuture<'a, Req, Resp> {
    shared: &'a SharedRef<Req, Resp>,
    timeout: Option<Duration>,
    armed: bool,
}

impl<Req, Resp> Future for RecvFuture<'_, Req, Resp> {
    type Output = Result<Req, RecvError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut s = lock(this.shared);
        if s.conn.is_closing() {
            this.armed = false;
            return Poll::Ready(Err(RecvError::Closed));
        }
        if s.budget == 0 {
            // This turn's share is used: let the other connections run first.
            s.resume = true;
            return Poll::Pending;
        }
        let now = s.now;
        if !this.armed {
            this.armed = true;
            s.conn.recv(now, this.timeout);
        }
        let out = match s.conn.poll_received(now) {
            Some(Received::Request(r)) => Ok(r),
            Some(Received::ParseError(e)) => Err(RecvError::Parse(e)),
            Some(Received::Timeout) => Err(RecvError::Timeout),
            None if s.conn.is_input_finished() || s.conn.is_closed() => {
                s.conn.cancel_recv();
                Err(RecvError::Closed)
            }
            // The session polls again after every event; no waker needed.
            None => return Poll::Pending,
        };
        this.armed = false;
        s.received += 1;
        s.budget -= 1;
        Poll::Ready(out)
    }
}

impl<Req, Resp> Drop for RecvFuture<'_, Req, Resp> {
    fn drop(&mut self) {
        if self.armed {
            // Dropped while waiting: no receive (and no deadline) stays armed.
            lock(self.shared).conn.cancel_recv();
        }
    }
}

struct RoomFuture<'a, Req, Resp> {
    shared: &'a SharedRef<Req, Resp>,
}

impl<Req, Resp> Future for RoomFuture<'_, Req, Resp> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(self.shared);
        let full = s.conn.queued() > s.conn.high_water() && !s.conn.is_closed();
        s.send_waiting = full;
        if full { Poll::Pending } else { Poll::Ready(()) }
    }
}

impl<Req, Resp> Drop for RoomFuture<'_, Req, Resp> {
    fn drop(&mut self) {
        lock(self.shared).send_waiting = false;
    }
}
