//! [`DatagramPeer`]: one datagram peer as an async handler sees it, a runtime-agnostic
//! view over its routine's state in the [`AsyncDatagramServer`](super::AsyncDatagramServer).
//!
//! The client's futures only read and write their routine's [`Link`]; the server polls the
//! routine again whenever the link changed (a datagram, a timeout, a send result), so they
//! need no runtime.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Payload;
use super::contain::{self, Panicked, Scope};
use crate::addr::Addr;
use crate::handler::{ConnInfo, HandlerError};
use crate::protocol::{DatagramServerProtocol, ParseError, SerializeError};
use crate::push::{DatagramOutbox, DatagramPusher, Encoder};
use crate::stats::Recorder;
use crate::stream::RecvError;

/// An async handler for one datagram peer; `async fn` in the impl is fine.
///
/// - A routine starts with a datagram from an idle peer: `handle` is called and its first
///   `client.recv()` returns that datagram; later receives get the peer's next datagrams in
///   order. Returning without receiving discards the datagram (EasyNetwork's rule). When
///   the routine returns and datagrams are queued, the next routine starts at once.
/// - An error returned from `handle` ends the routine and is logged by the rule of
///   [`HandlerError`] (a [`DatagramSendError::Closed`] is one WARN, a propagated
///   [`RecvError::Closed`] is not logged, anything else one ERROR); a panic (in the handler,
///   or in the protocol's decoding or encoding inside `recv`/`send`) ends it too and is
///   logged once at ERROR. Either way the peer gets a fresh handler; the server goes on. A
///   panicking handler factory drops that datagram (logged once).
/// - Shutting the server down drops every routine where it waits (EasyNetwork cancels
///   handler tasks too): no routine runs once the server's shutdown has returned.
/// - The routines of one socket are polled by that socket's loop, one at a time (they
///   are not tasks of their own): a routine that blocks or computes for long between two
///   awaits delays every peer of the socket. Move such work off the loop (a runtime's
///   `spawn_blocking`, a thread) and await its result.
///
/// ```
/// use easynet_core::datagram::{DatagramPeer, AsyncDatagramHandler};
/// use easynet_core::handler::HandlerError;
///
/// struct Echo;
///
/// impl AsyncDatagramHandler for Echo {
///     type Request = String;
///     type Response = String;
///
///     async fn handle(&mut self, client: &mut DatagramPeer<String, String>) -> Result<(), HandlerError> {
///         let text = client.recv().await?;
///         client.send(&text).await?;
///         Ok(())
///     }
/// }
/// # let _ = Echo;
/// ```
pub trait AsyncDatagramHandler: Send + 'static {
    /// The request type, as the protocol decodes it.
    type Request: Send + 'static;
    /// The response type, as the protocol encodes it.
    type Response: Send + Sync + 'static;

    /// One routine for this peer.
    fn handle(
        &mut self,
        client: &mut DatagramPeer<Self::Request, Self::Response>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Why [`DatagramPeer::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramSendError {
    /// The service is shutting down.
    #[error("client is closed")]
    Closed,
    /// The response could not be serialized; nothing was sent.
    #[error(transparent)]
    Serialize(#[from] SerializeError),
    /// The kernel refused the datagram (too large, say).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The codec calls a client needs, without the protocol type; user code runs contained.
pub(crate) trait Codec<Req, Resp>: Send + Sync {
    fn decode(
        &self,
        scope: Option<&Scope<'_>>,
        info: &ConnInfo,
        datagram: Payload,
    ) -> Result<Result<Req, ParseError>, Panicked>;
    fn encode(
        &self,
        scope: Option<&Scope<'_>>,
        info: &ConnInfo,
        item: &Resp,
    ) -> Result<Result<Bytes, SerializeError>, Panicked>;
}

impl<P: DatagramServerProtocol> Codec<P::Request, P::Response> for P {
    fn decode(
        &self,
        scope: Option<&Scope<'_>>,
        info: &ConnInfo,
        datagram: Payload,
    ) -> Result<Result<P::Request, ParseError>, Panicked> {
        contain::decode_in(scope, self, info, datagram)
    }
    fn encode(
        &self,
        scope: Option<&Scope<'_>>,
        info: &ConnInfo,
        item: &P::Response,
    ) -> Result<Result<Bytes, SerializeError>, Panicked> {
        contain::encode_bytes_in(scope, self, info, item)
    }
}

/// Where a routine's receive stands.
#[derive(Debug)]
pub(crate) enum RecvSlot {
    /// No receive in the table.
    Idle,
    /// A call asks for the next datagram within the timeout; the server passes it on.
    Ask(Option<Duration>),
    /// The table holds the receive; its reply comes later.
    Waiting,
    /// The call waiting was dropped; the server ends the receive.
    Cancel,
    /// A datagram for the receiving call (or, if that call was dropped, for the next one).
    Got(Payload),
    /// The receiving call's timeout expired.
    TimedOut,
    /// No datagram will come any more.
    Closed,
}

/// What a routine's client and the server share.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) recv: RecvSlot,
    /// Encoded datagrams, by send number, for the server to hand to the driver.
    pub(crate) outbox: VecDeque<(u64, Bytes)>,
    /// The sends waiting for their result, by send number.
    pub(crate) sends: Vec<(u64, Option<io::Result<()>>)>,
    next_send: u64,
    pub(crate) closing: bool,
    /// The time of the server's current poll of this routine (counting and log budgets).
    pub(crate) now: Option<Instant>,
}

impl Link {
    pub(crate) fn new() -> Self {
        Self {
            recv: RecvSlot::Idle,
            outbox: VecDeque::new(),
            sends: Vec::new(),
            next_send: 0,
            closing: false,
            now: None,
        }
    }

    /// Empties it for the next routine, keeping its buffers' room (up to a few entries);
    /// false when they grew too large to keep.
    pub(crate) fn reset(&mut self) -> bool {
        const KEPT: usize = 4;
        if self.outbox.capacity() > KEPT || self.sends.capacity() > KEPT {
            return false;
        }
        *self = Self {
            outbox: std::mem::take(&mut self.outbox),
            sends: std::mem::take(&mut self.sends),
            ..Self::new()
        };
        self.outbox.clear();
        self.sends.clear();
        true
    }

    /// Gives send `seq` its result; if its call went away, the result comes back.
    pub(crate) fn sent(&mut self, seq: u64, result: io::Result<()>) -> Result<(), io::Error> {
        match self.sends.iter_mut().find(|(s, _)| *s == seq) {
            Some((_, slot)) => {
                *slot = Some(result);
                Ok(())
            }
            None => result,
        }
    }
}

pub(crate) type LinkRef = Arc<Mutex<Link>>;

pub(crate) fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    // A panic in user code while locked cannot leave it inconsistent: no user code runs
    // under the lock.
    link.lock().unwrap_or_else(|e| e.into_inner())
}

/// One datagram peer as an async handler sees it.
pub struct DatagramPeer<Req, Resp> {
    info: ConnInfo,
    codec: Arc<dyn Codec<Req, Resp>>,
    first: Option<Payload>,
    link: LinkRef,
    /// What [`pusher`](Self::pusher) makes a pusher of, when asked: most routines never ask,
    /// and making one costs an allocation and a copy of the info.
    outbox: Arc<DatagramOutbox>,
    encoder: Arc<dyn Encoder<Resp>>,
    recorder: Recorder,
}

impl<Req, Resp> std::fmt::Debug for DatagramPeer<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramPeer")
            .field("peer", &self.info.peer)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> PartialEq for DatagramPeer<Req, Resp> {
    fn eq(&self, other: &Self) -> bool {
        (&self.info.peer, &self.info.local) == (&other.info.peer, &other.info.local)
    }
}

impl<Req, Resp> Eq for DatagramPeer<Req, Resp> {}

impl<Req, Resp> std::hash::Hash for DatagramPeer<Req, Resp> {
    fn hash<St: std::hash::Hasher>(&self, state: &mut St) {
        (&self.info.peer, &self.info.local).hash(state);
    }
}

impl<Req, Resp> DatagramPeer<Req, Resp> {
    pub(crate) fn new(
        info: ConnInfo,
        codec: Arc<dyn Codec<Req, Resp>>,
        first: Payload,
        link: LinkRef,
        (outbox, encoder): (Arc<DatagramOutbox>, Arc<dyn Encoder<Resp>>),
        recorder: Recorder,
    ) -> Self {
        Self {
            info,
            codec,
            first: Some(first),
            link,
            outbox,
            encoder,
            recorder,
        }
    }

    /// A [`DatagramPusher`] for this peer: keep it to send to the peer later, from any
    /// thread or task, after this routine returned too (server push).
    pub fn pusher(&self) -> DatagramPusher<Resp> {
        DatagramPusher::new(self.outbox.clone(), self.encoder.clone(), self.info.clone())
    }

    /// The next datagram of this peer (the one that started the routine first).
    ///
    /// Cancel safety: cancel-safe. If the future is dropped before it completes (in
    /// `select!`, under a timeout), no datagram is lost and no deadline is left behind: a
    /// datagram that arrives for it is returned by the next receive call.
    pub fn recv(&mut self) -> impl Future<Output = Result<Req, RecvError>> + Send + '_
    where
        Req: Send,
    {
        RecvFuture {
            client: self,
            timeout: None,
            armed: false,
        }
    }

    /// The next datagram of this peer within `timeout`; a zero timeout takes only what is
    /// queued. A timeout the clock cannot add (`Duration::MAX`) waits for ever.
    ///
    /// Cancel safety: cancel-safe, as [`recv`](Self::recv): a dropped call loses no
    /// datagram, and its deadline does not apply to later calls.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Req, RecvError>> + Send + '_
    where
        Req: Send,
    {
        RecvFuture {
            client: self,
            timeout: Some(timeout),
            armed: false,
        }
    }

    /// Encodes `response` and sends it to this peer as one datagram; the result of the send
    /// is returned (a kernel error too: decision 3 of the brief).
    ///
    /// Cancel safety: cancel-safe in that the datagram is sent whole or not at all and the
    /// client stays usable. A call dropped in the poll that queued its datagram (or before
    /// any poll) sends nothing; after that poll the server has taken the datagram and sends
    /// it even if the call is dropped (an error is then logged at WARN, as nobody waits for
    /// it).
    pub fn send<'a>(
        &'a self,
        response: &'a Resp,
    ) -> impl Future<Output = Result<(), DatagramSendError>> + Send + 'a
    where
        Resp: Sync,
    {
        SendFuture {
            client: self,
            response,
            seq: None,
        }
    }

    /// True once the service is shutting down.
    pub fn is_closing(&self) -> bool {
        lock(&self.link).closing
    }

    /// Who this peer is.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.info.peer
    }

    /// The server's bound address.
    pub fn local_addr(&self) -> &Addr {
        &self.info.local
    }

    /// Runs `f` with the endpoint's counting scope at the time of the current poll.
    fn scoped<R>(&self, f: impl FnOnce(Option<&Scope<'_>>) -> R) -> R {
        let now = lock(&self.link).now;
        let scope = now.map(|now| Scope {
            recorder: Some(&self.recorder),
            now,
        });
        f(scope.as_ref())
    }

    fn decode(&self, datagram: Payload) -> Result<Req, RecvError> {
        let decoded = self.scoped(|scope| self.codec.decode(scope, &self.info, datagram));
        match decoded {
            Ok(request) => Ok(request?),
            // Logged already: unwinding ends the routine like a handler panic, and the
            // payload tells the routine's end not to log it again.
            Err(Panicked) => resume_unwind(Box::new(Panicked)),
        }
    }
}

/// The future of [`DatagramPeer::recv`] and [`recv_timeout`](DatagramPeer::recv_timeout).
struct RecvFuture<'a, Req, Resp> {
    client: &'a mut DatagramPeer<Req, Resp>,
    timeout: Option<Duration>,
    /// This call asked and has not been answered yet.
    armed: bool,
}

impl<Req, Resp> Future for RecvFuture<'_, Req, Resp> {
    type Output = Result<Req, RecvError>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(first) = self.client.first.take() {
            return Poll::Ready(self.client.decode(first));
        }
        let mut link = lock(&self.client.link);
        let answer = match std::mem::replace(&mut link.recv, RecvSlot::Idle) {
            RecvSlot::Got(d) => Ok(d),
            RecvSlot::TimedOut => Err(RecvError::Timeout),
            RecvSlot::Closed => {
                link.recv = RecvSlot::Closed;
                Err(RecvError::Closed)
            }
            _ if link.closing => Err(RecvError::Closed),
            RecvSlot::Idle => {
                link.recv = RecvSlot::Ask(self.timeout);
                drop(link);
                self.armed = true;
                return Poll::Pending;
            }
            // This call's receive is under way, or a dropped call's is being ended (the
            // server polls again once it has).
            waiting @ (RecvSlot::Ask(_) | RecvSlot::Waiting | RecvSlot::Cancel) => {
                link.recv = waiting;
                return Poll::Pending;
            }
        };
        drop(link);
        self.armed = false;
        Poll::Ready(answer.and_then(|d| self.client.decode(d)))
    }
}

impl<Req, Resp> Drop for RecvFuture<'_, Req, Resp> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut link = lock(&self.client.link);
        link.recv = match std::mem::replace(&mut link.recv, RecvSlot::Idle) {
            // Never reached the table, or its reply is not the next call's.
            RecvSlot::Ask(_) | RecvSlot::TimedOut | RecvSlot::Idle => RecvSlot::Idle,
            RecvSlot::Waiting => RecvSlot::Cancel,
            // A datagram is the next call's; the rest stays.
            other => other,
        };
    }
}

/// The future of [`DatagramPeer::send`].
struct SendFuture<'a, Req, Resp> {
    client: &'a DatagramPeer<Req, Resp>,
    response: &'a Resp,
    /// The send's number once its datagram is queued.
    seq: Option<u64>,
}

impl<Req, Resp> Future for SendFuture<'_, Req, Resp> {
    type Output = Result<(), DatagramSendError>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let client = self.client;
        let Some(seq) = self.seq else {
            if lock(&client.link).closing {
                return Poll::Ready(Err(DatagramSendError::Closed));
            }
            let encoded =
                client.scoped(|scope| client.codec.encode(scope, &client.info, self.response));
            let out = match encoded {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => return Poll::Ready(Err(e.into())),
                // As in `decode`: logged already, the routine ends.
                Err(Panicked) => resume_unwind(Box::new(Panicked)),
            };
            let mut link = lock(&client.link);
            let seq = link.next_send;
            link.next_send += 1;
            link.outbox.push_back((seq, out));
            link.sends.push((seq, None));
            drop(link);
            self.seq = Some(seq);
            return Poll::Pending;
        };
        let mut link = lock(&client.link);
        let Some(at) = link.sends.iter().position(|(s, _)| *s == seq) else {
            return Poll::Ready(Err(DatagramSendError::Closed)); // not reached
        };
        let result = match link.sends[at].1.take() {
            Some(result) => result.map_err(DatagramSendError::Io),
            None if link.closing => Err(DatagramSendError::Closed),
            None => return Poll::Pending,
        };
        link.sends.swap_remove(at);
        drop(link);
        self.seq = None;
        Poll::Ready(result)
    }
}

impl<Req, Resp> Drop for SendFuture<'_, Req, Resp> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            let mut link = lock(&self.client.link);
            link.outbox.retain(|(s, _)| *s != seq);
            link.sends.retain(|(s, _)| *s != seq);
        }
    }
}

/// One routine: the handler's `handle`, its error logged by the rule of [`HandlerError`].
/// Gives the handler back unless it failed. A panic unwinds out; the server logs it.
pub(crate) async fn run_routine<H: AsyncDatagramHandler>(
    mut handler: H,
    mut client: DatagramPeer<H::Request, H::Response>,
) -> Option<H> {
    match handler.handle(&mut client).await {
        Ok(()) => Some(handler),
        Err(e) => {
            // `RecvError::Closed` propagated with `?` ends the routine quietly.
            if !matches!(e.downcast_ref::<RecvError>(), Some(RecvError::Closed)) {
                let closed_send = matches!(
                    e.downcast_ref::<DatagramSendError>(),
                    Some(DatagramSendError::Closed)
                );
                client.scoped(|scope| {
                    contain::handler_failed_in(scope, &client.info, e, closed_send)
                });
            }
            contain::drop_handler(&client.info, handler);
            None
        }
    }
}
