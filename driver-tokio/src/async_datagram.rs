//! Async datagram handlers: one routine task per active peer, fed by the socket task through
//! the core's [`PeerTable`] (bounded per-peer queue, timeouts, idle eviction).
//!
//! A routine starts with a datagram from an idle peer: [`AsyncDatagramHandler::handle`] is
//! called and its first `client.recv()` returns that datagram; later receives get the peer's
//! next datagrams in order. Returning without receiving discards the datagram (EasyNetwork's
//! rule). When the routine returns and datagrams are queued, the next routine starts at once.
//! An error or panic ends the routine (logged) and the peer gets a fresh handler.
//!
//! The rules live in the core's [`RoutineTable`] (which datagram goes where, cancelled
//! receives, handlers made and kept contained); this module runs its routines as tasks and
//! carries datagrams and receives between them and the socket.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::resume_unwind;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use easynet_core::ConnId;
use easynet_core::addr::{Addr, PeerAddr};
use easynet_core::datagram::contain::{self, Panicked};
use easynet_core::datagram::{
    DatagramConfig, Payload, Reply, RoutineId, RoutineOutput, RoutineTable,
};
use easynet_core::handler::{ConnInfo, HandlerError, Service};
use easynet_core::protocol::{DatagramServerProtocol, ParseError, SerializeError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::now;
use crate::datagram_server::{MAX_DATAGRAM, unanswerable};
use crate::dgram::{DatagramSocket, DgramSocket};
use crate::{DropCounter, RecvError};

/// An async handler for one datagram peer; `async fn` in the impl is fine.
///
/// - Each routine is a task of its own. An error returned from `handle` ends the routine and
///   is logged by the rule of [`HandlerError`] (a [`DatagramSendError::Closed`] is one WARN,
///   a propagated [`RecvError::Closed`] is not logged, anything else one ERROR); a panic
///   (in the handler, or in the protocol's decoding or encoding inside `recv`/`send`) ends
///   it too and is logged once at ERROR. Either way the peer gets a fresh handler; the
///   server goes on. A panicking handler factory drops that datagram (logged once).
/// - `shutdown()` and `close()` cancel the routines: each routine's future is dropped at its
///   next await (EasyNetwork cancels handler tasks too), and no routine runs once
///   `shutdown()` returns or a closed run has returned.
///
/// ```
/// use easynet_tokio::{AsyncDatagramClient, AsyncDatagramHandler};
/// use easynet_core::handler::HandlerError;
///
/// struct Echo;
///
/// impl AsyncDatagramHandler for Echo {
///     type Request = String;
///     type Response = String;
///
///     async fn handle(&mut self, client: &mut AsyncDatagramClient<String, String>) -> Result<(), HandlerError> {
///         let text = client.recv().await?;
///         client.send(&text).await?;
///         Ok(())
///     }
/// }
/// ```
pub trait AsyncDatagramHandler: Send + 'static {
    /// The request type, as the protocol decodes it.
    type Request: Send + 'static;
    /// The response type, as the protocol encodes it.
    type Response: Send + Sync + 'static;

    /// One routine for this peer.
    fn handle(
        &mut self,
        client: &mut AsyncDatagramClient<Self::Request, Self::Response>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Why [`AsyncDatagramClient::send`] failed.
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
trait Codec<Req, Resp>: Send + Sync {
    fn decode(
        &self,
        info: &ConnInfo,
        datagram: Payload,
    ) -> Result<Result<Req, ParseError>, Panicked>;
    fn encode(
        &self,
        info: &ConnInfo,
        item: &Resp,
        dst: &mut BytesMut,
    ) -> Result<Result<(), SerializeError>, Panicked>;
}

impl<P: DatagramServerProtocol> Codec<P::Request, P::Response> for P {
    fn decode(
        &self,
        info: &ConnInfo,
        datagram: Payload,
    ) -> Result<Result<P::Request, ParseError>, Panicked> {
        contain::decode(self, info, datagram)
    }
    fn encode(
        &self,
        info: &ConnInfo,
        item: &P::Response,
        dst: &mut BytesMut,
    ) -> Result<Result<(), SerializeError>, Panicked> {
        contain::encode(self, info, item, dst)
    }
}

/// One datagram peer as an async handler sees it.
pub struct AsyncDatagramClient<Req, Resp> {
    info: ConnInfo,
    socket: DatagramSocket,
    codec: Arc<dyn Codec<Req, Resp>>,
    first: Option<Payload>,
    routine: RoutineId,
    asks: mpsc::UnboundedSender<Ask>,
    /// The answer to this routine's receive, from asking until a call takes it. A call
    /// dropped while waiting leaves it here, for the next call (cancel safety).
    pending: Option<oneshot::Receiver<Reply>>,
    closing: CancellationToken,
}

/// What a routine asks of the socket loop (the core's receive protocol).
enum Ask {
    /// Its next datagram, within `timeout`; exactly one [`Reply`] comes on `reply`.
    Recv {
        peer: Addr,
        routine: RoutineId,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Reply>,
    },
    /// The call waiting for the pending receive's reply went away: end that receive.
    Cancel { peer: Addr, routine: RoutineId },
}

impl<Req, Resp> std::fmt::Debug for AsyncDatagramClient<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncDatagramClient")
            .field("peer", &self.info.peer)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> PartialEq for AsyncDatagramClient<Req, Resp> {
    fn eq(&self, other: &Self) -> bool {
        (&self.info.peer, &self.info.local) == (&other.info.peer, &other.info.local)
    }
}

impl<Req, Resp> Eq for AsyncDatagramClient<Req, Resp> {}

impl<Req, Resp> std::hash::Hash for AsyncDatagramClient<Req, Resp> {
    fn hash<St: std::hash::Hasher>(&self, state: &mut St) {
        (&self.info.peer, &self.info.local).hash(state);
    }
}

impl<Req: Send + 'static, Resp: Send + Sync + 'static> AsyncDatagramClient<Req, Resp> {
    /// The next datagram of this peer (the one that started the routine first).
    ///
    /// Cancel safety: cancel-safe. If the future is dropped before it completes (in
    /// `select!`, under `timeout`), no datagram is lost and no deadline is left behind: a
    /// datagram that arrives for it is returned by the next receive call, which first ends
    /// the dropped call's wait.
    pub async fn recv(&mut self) -> Result<Req, RecvError> {
        self.recv_inner(None).await
    }

    /// The next datagram of this peer within `timeout`; a zero timeout takes only what is
    /// queued.
    ///
    /// Cancel safety: cancel-safe, as [`recv`](Self::recv): a dropped call loses no
    /// datagram, and its deadline does not apply to later calls.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Req, RecvError> {
        self.recv_inner(Some(timeout)).await
    }

    async fn recv_inner(&mut self, timeout: Option<Duration>) -> Result<Req, RecvError> {
        if let Some(first) = self.first.take() {
            return self.decode(first);
        }
        if self.pending.is_some() {
            // An earlier call was dropped while its receive was pending: end that receive
            // (its deadline is stale). A datagram it got meanwhile is this call's.
            let _ = self.asks.send(Ask::Cancel {
                peer: self.info.peer.clone(),
                routine: self.routine,
            });
            if let Reply::Datagram(d) = self.answer().await? {
                return self.decode(d);
            }
        }
        loop {
            if self.closing.is_cancelled() {
                return Err(RecvError::Closed);
            }
            let (reply, answer) = oneshot::channel();
            let ask = Ask::Recv {
                peer: self.info.peer.clone(),
                routine: self.routine,
                timeout,
                reply,
            };
            self.asks.send(ask).map_err(|_| RecvError::Closed)?;
            self.pending = Some(answer);
            match self.answer().await? {
                Reply::Datagram(d) => return self.decode(d),
                Reply::Timeout => return Err(RecvError::Timeout),
                // Only a cancel answers so, and this receive was not cancelled: ask again.
                Reply::Cancelled => {}
            }
        }
    }

    /// Waits for the pending receive's reply. Dropped before it comes, the receive stays
    /// pending for the next call.
    async fn answer(&mut self) -> Result<Reply, RecvError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(RecvError::Closed);
        };
        let got = tokio::select! {
            got = pending => got.map_err(|_| RecvError::Closed),
            () = self.closing.cancelled() => Err(RecvError::Closed),
        };
        self.pending = None;
        got
    }

    fn decode(&self, datagram: Payload) -> Result<Req, RecvError> {
        match self.codec.decode(&self.info, datagram) {
            Ok(request) => Ok(request?),
            // Logged already: unwinding ends the routine like a handler panic, and the
            // payload tells the routine's end not to log it again.
            Err(Panicked) => resume_unwind(Box::new(Panicked)),
        }
    }

    /// A reply that came for a receive no call took; the routine has ended.
    fn take_leftover(&mut self) -> Option<Payload> {
        let mut pending = self.pending.take()?;
        pending.close();
        match pending.try_recv() {
            Ok(Reply::Datagram(d)) => Some(d),
            _ => None,
        }
    }

    /// Encodes `response` and sends it to this peer as one datagram; send errors are
    /// returned (decision 3 of the brief).
    ///
    /// Cancel safety: cancel-safe. A datagram is sent whole in the poll that completes the
    /// call; if the future is dropped before, nothing was sent.
    pub async fn send(&self, response: &Resp) -> Result<(), DatagramSendError> {
        if self.closing.is_cancelled() {
            return Err(DatagramSendError::Closed);
        }
        let mut out = BytesMut::new();
        match self.codec.encode(&self.info, response, &mut out) {
            Ok(encoded) => encoded?,
            // As in `decode`: logged already, the routine ends.
            Err(Panicked) => resume_unwind(Box::new(Panicked)),
        }
        self.socket.send_to(&out, &self.info.peer).await?;
        Ok(())
    }

    /// True once the service is shutting down.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
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

    /// The server's socket, for options.
    pub fn socket(&self) -> &DatagramSocket {
        &self.socket
    }
}

/// What a routine task gives back: the handler (unless it failed) and a datagram that came
/// for a receive it did not take.
struct RoutineEnd<H> {
    handler: Option<H>,
    leftover: Option<Payload>,
}

/// One routine: the handler's `handle`, its error logged by the rule of [`HandlerError`].
/// A panic unwinds out of the task; the socket loop logs it from the `JoinError`.
async fn run_routine<H: AsyncDatagramHandler>(
    mut handler: H,
    mut client: AsyncDatagramClient<H::Request, H::Response>,
) -> RoutineEnd<H> {
    let handler = match handler.handle(&mut client).await {
        Ok(()) => Some(handler),
        Err(e) => {
            // `RecvError::Closed` propagated with `?` ends the routine quietly.
            if !matches!(e.downcast_ref::<RecvError>(), Some(RecvError::Closed)) {
                let closed_send = matches!(
                    e.downcast_ref::<DatagramSendError>(),
                    Some(DatagramSendError::Closed)
                );
                contain::handler_failed(&client.info, e, closed_send);
            }
            contain::drop_handler(&client.info, handler);
            None
        }
    };
    RoutineEnd {
        handler,
        leftover: client.take_leftover(),
    }
}

/// One socket's loop for async handlers: the core's [`RoutineTable`] decides, this loop
/// receives, runs routine tasks and carries their receives and replies.
pub(crate) async fn serve_socket<S, P, D>(
    socket: Arc<D>,
    service: Arc<S>,
    protocol: Arc<P>,
    config: DatagramConfig,
    cancel: CancellationToken,
    closed: CancellationToken,
    drops: DropCounter,
) -> io::Result<()>
where
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    let local = socket.local()?;
    let local_addr = local.to_addr();
    let mut table: RoutineTable<S, D::Addr> =
        RoutineTable::new(service, local, config).map_err(io::Error::other)?;
    let (ask_tx, mut asks) = mpsc::unbounded_channel::<Ask>();
    let client_socket = socket.client_socket();
    let closing = CancellationToken::new();
    let codec: Arc<dyn Codec<P::Request, P::Response>> = protocol;
    let mut routines: JoinSet<RoutineEnd<S::Handler>> = JoinSet::new();
    // Each routine task's peer, routine and conn, for its end (a panic has no value).
    let mut tasks: HashMap<tokio::task::Id, (D::Addr, RoutineId, ConnId)> = HashMap::new();
    // Receives waiting for the table's reply.
    let mut waiting: HashMap<RoutineId, oneshot::Sender<Reply>> = HashMap::new();
    let mut unnamed = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut counted = 0;
    loop {
        while let Some(output) = table.poll_output() {
            match output {
                RoutineOutput::Start {
                    peer,
                    routine,
                    info,
                    handler,
                    first,
                } => {
                    let conn = info.id;
                    let client = AsyncDatagramClient {
                        info,
                        socket: client_socket.clone(),
                        codec: codec.clone(),
                        first: Some(first),
                        routine,
                        asks: ask_tx.clone(),
                        pending: None,
                        closing: closing.clone(),
                    };
                    let task = routines.spawn(run_routine(handler, client));
                    tasks.insert(task.id(), (peer, routine, conn));
                }
                RoutineOutput::Reply {
                    peer,
                    routine,
                    reply,
                } => {
                    let reply = match waiting.remove(&routine) {
                        Some(tx) => match tx.send(reply) {
                            Ok(()) => continue,
                            Err(reply) => reply,
                        },
                        None => reply,
                    };
                    table.undelivered(&peer, routine, reply);
                }
                _ => {}
            }
        }
        let dropped = table.drops();
        drops.add(dropped - counted);
        counted = dropped;
        let sleep = table.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = closed.cancelled() => break,
            res = socket.recv_from(&mut buf) => match res {
                Ok((n, Some(from))) => table.handle_datagram(now(), from, BytesMut::from(&buf[..n])),
                Ok((_, None)) => unanswerable(&mut unnamed, &drops),
                Err(e) => tracing::debug!(error = %e, "datagram receive error"),
            },
            Some(ask) = asks.recv() => match ask {
                Ask::Recv { peer, routine, timeout, reply } => {
                    if let Some(peer) = D::Addr::from_addr(&peer)
                        && table.recv(now(), peer, routine, timeout)
                    {
                        waiting.insert(routine, reply);
                    }
                }
                Ask::Cancel { peer, routine } => {
                    if let Some(peer) = D::Addr::from_addr(&peer) {
                        table.cancel(now(), peer, routine);
                    }
                }
            },
            Some(joined) = routines.join_next_with_id(), if !routines.is_empty() => {
                let (id, end) = match joined {
                    Ok((id, end)) => (id, Ok(end)),
                    Err(e) => (e.id(), Err(e)),
                };
                if let Some((peer, routine, conn)) = tasks.remove(&id) {
                    waiting.remove(&routine);
                    let end = end.unwrap_or_else(|e| {
                        if e.is_panic() {
                            let info = ConnInfo::new(conn, peer.to_addr(), local_addr.clone());
                            contain::handler_panicked(&info, e.into_panic());
                        }
                        RoutineEnd { handler: None, leftover: None }
                    });
                    table.finish(now(), &peer, routine, end.handler, end.leftover);
                }
            }
            () = async { if let Some(t) = sleep { tokio::time::sleep_until(t).await } }, if sleep.is_some() => {
                table.handle_timeout(now());
            }
        }
    }
    // Shutdown and close cancel the routines: aborted and awaited, so none runs (or holds
    // the socket) once this returns.
    closing.cancel();
    routines.abort_all();
    while let Some(joined) = routines.join_next_with_id().await {
        // A routine may have ended just before its abort: its handler (user `Drop`) and a
        // panic in dropping an aborted one are contained here too.
        let (id, end) = match joined {
            Ok((id, end)) => (id, Ok(end)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some((peer, _, conn)) = tasks.remove(&id) else {
            continue;
        };
        let info = ConnInfo::new(conn, peer.to_addr(), local_addr.clone());
        match end {
            Ok(RoutineEnd {
                handler: Some(handler),
                ..
            }) => contain::drop_handler(&info, handler),
            Err(e) if e.is_panic() => contain::handler_panicked(&info, e.into_panic()),
            _ => {}
        }
    }
    table.shutdown(now());
    drops.add(table.drops() - counted);
    Ok(())
}
