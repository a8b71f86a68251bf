//! Async datagram handlers: one routine task per active peer, fed by the socket task through
//! the core's [`PeerTable`] (bounded per-peer queue, timeouts, idle eviction).
//!
//! A routine starts with a datagram from an idle peer: [`AsyncDatagramHandler::handle`] is
//! called and its first `client.recv()` returns that datagram; later receives get the peer's
//! next datagrams in order. Returning without receiving discards the datagram (EasyNetwork's
//! rule). When the routine returns and datagrams are queued, the next routine starts at once.
//! An error or panic ends the routine (logged) and the peer gets a fresh handler.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use easynet_core::addr::{Addr, PeerAddr};
use easynet_core::datagram::{Arrival, DatagramConfig, PeerEvent, PeerTable, Recv};
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

/// The codec calls a client needs, without the protocol type.
trait Codec<Req, Resp>: Send + Sync {
    fn decode(&self, datagram: BytesMut) -> Result<Req, ParseError>;
    fn encode(&self, item: &Resp, dst: &mut BytesMut) -> Result<(), SerializeError>;
}

impl<P: DatagramServerProtocol> Codec<P::Request, P::Response> for P {
    fn decode(&self, datagram: BytesMut) -> Result<P::Request, ParseError> {
        self.decode_request(datagram)
    }
    fn encode(&self, item: &P::Response, dst: &mut BytesMut) -> Result<(), SerializeError> {
        self.encode_response(item, dst)
    }
}

/// A received datagram, or the length of one past `max_datagram_size` (not kept).
type Payload = Result<BytesMut, usize>;

/// The routine of a peer ended; its handler comes back unless it failed.
struct Done<H, A> {
    peer: A,
    handler: Option<H>,
}

/// One datagram peer as an async handler sees it.
pub struct AsyncDatagramClient<Req, Resp> {
    info: ConnInfo,
    socket: DatagramSocket,
    codec: Arc<dyn Codec<Req, Resp>>,
    first: Option<Payload>,
    max_datagram_size: usize,
    recv: mpsc::UnboundedSender<RecvAsk>,
    closing: CancellationToken,
}

/// A routine asks for its peer's next datagram; `None` in the reply is a timeout.
struct RecvAsk {
    peer: Addr,
    timeout: Option<Duration>,
    reply: oneshot::Sender<Option<Payload>>,
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
    pub async fn recv(&mut self) -> Result<Req, RecvError> {
        self.recv_inner(None).await
    }

    /// The next datagram of this peer within `timeout`; a zero timeout takes only what is
    /// queued.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Req, RecvError> {
        self.recv_inner(Some(timeout)).await
    }

    async fn recv_inner(&mut self, timeout: Option<Duration>) -> Result<Req, RecvError> {
        if let Some(first) = self.first.take() {
            return self.decode(first);
        }
        if self.closing.is_cancelled() {
            return Err(RecvError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        if self
            .recv
            .send(RecvAsk {
                peer: self.info.peer.clone(),
                timeout,
                reply,
            })
            .is_err()
        {
            return Err(RecvError::Closed);
        }
        tokio::select! {
            got = answer => match got {
                Ok(Some(datagram)) => self.decode(datagram),
                Ok(None) => Err(RecvError::Timeout),
                Err(_) => Err(RecvError::Closed),
            },
            () = self.closing.cancelled() => Err(RecvError::Closed),
        }
    }

    fn decode(&self, datagram: Payload) -> Result<Req, RecvError> {
        match datagram {
            Ok(data) => Ok(self.codec.decode(data)?),
            Err(got) => Err(RecvError::Parse(ParseError::FrameTooLarge {
                limit: self.max_datagram_size,
                got,
            })),
        }
    }

    /// Encodes `response` and sends it to this peer as one datagram; send errors are
    /// returned (decision 3 of the brief).
    pub async fn send(&self, response: &Resp) -> Result<(), DatagramSendError> {
        if self.closing.is_cancelled() {
            return Err(DatagramSendError::Closed);
        }
        let mut out = BytesMut::new();
        self.codec.encode(response, &mut out)?;
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

struct Slot<H> {
    handler: Option<H>,
    waiting: Option<oneshot::Sender<Option<Payload>>>,
}

impl<H> Default for Slot<H> {
    fn default() -> Self {
        Self {
            handler: None,
            waiting: None,
        }
    }
}

/// One socket's loop for async datagram handlers.
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
    let local = socket.local()?.to_addr();
    let max_datagram_size = config.max_datagram_size;
    let mut table: PeerTable<Payload, Slot<S::Handler>, D::Addr> =
        PeerTable::new(config).map_err(io::Error::other)?;
    let (ask_tx, mut asks) = mpsc::unbounded_channel::<RecvAsk>();
    let (done_tx, mut dones) = mpsc::unbounded_channel::<Done<S::Handler, D::Addr>>();
    let client_socket = socket.client_socket();
    let mut unnamed = 0u64;
    let closing = CancellationToken::new();
    let mut routines = JoinSet::new();
    let codec: Arc<dyn Codec<P::Request, P::Response>> = protocol;
    let start = |table: &mut PeerTable<Payload, Slot<S::Handler>, D::Addr>,
                 routines: &mut JoinSet<()>,
                 peer: D::Addr,
                 first: Payload| {
        let id = table
            .peer(&peer)
            .map(|p| p.id)
            .unwrap_or(easynet_core::ConnId(0));
        let info = ConnInfo::new(id, peer.to_addr(), local.clone());
        let handler = table
            .state_mut(&peer)
            .and_then(|slot| slot.handler.take())
            .unwrap_or_else(|| service.new_handler(&info));
        let mut client = AsyncDatagramClient {
            info,
            socket: client_socket.clone(),
            codec: codec.clone(),
            first: Some(first),
            max_datagram_size,
            recv: ask_tx.clone(),
            closing: closing.clone(),
        };
        let done = done_tx.clone();
        let log_peer = client.info.peer.clone();
        let routine = tokio::spawn(async move {
            let mut handler = handler;
            match handler.handle(&mut client).await {
                Ok(()) => Some(handler),
                Err(e) => {
                    if !matches!(e.downcast_ref::<RecvError>(), Some(RecvError::Closed)) {
                        tracing::error!(peer = %log_peer, error = %e, "exception occurred during processing of request");
                    }
                    None
                }
            }
        });
        routines.spawn(async move {
            let handler = match routine.await {
                Ok(h) => h,
                Err(e) => {
                    if e.is_panic() {
                        tracing::error!(peer = %peer, "datagram handler panicked");
                    }
                    None
                }
            };
            let _ = done.send(Done { peer, handler });
        });
    };

    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut counted = 0;
    loop {
        let dropped = table.stats().dropped;
        drops.add(dropped - counted);
        counted = dropped;
        let sleep = table.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = closed.cancelled() => break,
            res = socket.recv_from(&mut buf) => match res {
                Ok((n, Some(from))) => {
                    // Past the limit only the length is kept: a typed error for the handler.
                    let item = match n {
                        n if n > max_datagram_size => Err(n),
                        n => Ok(BytesMut::from(&buf[..n])),
                    };
                    match table.arrive(now(), from.clone(), item) {
                        Arrival::Start(first) => start(&mut table, &mut routines, from, first),
                        Arrival::Deliver(d) => {
                            if let Some(w) = table.state_mut(&from).and_then(|s| s.waiting.take()) {
                                let _ = w.send(Some(d));
                            }
                        }
                        _ => {}
                    }
                }
                Ok((_, None)) => unanswerable(&mut unnamed, &drops),
                Err(e) => tracing::debug!(error = %e, "datagram receive error"),
            },
            Some(RecvAsk { peer, timeout, reply }) = asks.recv() => {
                let Some(peer) = D::Addr::from_addr(&peer) else { continue };
                match table.recv(now(), peer, timeout) {
                    Ok(Recv::Ready(d)) => { let _ = reply.send(Some(d)); }
                    Ok(Recv::Timeout) => { let _ = reply.send(None); }
                    Ok(Recv::Waiting) => {
                        if let Some(slot) = table.state_mut(peer) { slot.waiting = Some(reply); }
                    }
                    _ => {}
                }
            },
            Some(Done { peer, handler }) = dones.recv() => {
                if let Some(slot) = table.state_mut(&peer) {
                    slot.handler = handler;
                    slot.waiting = None;
                }
                if let Ok(Some(next)) = table.finish(now(), &peer) {
                    start(&mut table, &mut routines, peer, next);
                }
            }
            Some(_) = routines.join_next(), if !routines.is_empty() => {}
            () = async { if let Some(t) = sleep { tokio::time::sleep_until(t).await } }, if sleep.is_some() => {
                table.handle_timeout(now());
            }
        }
        while let Some(event) = table.poll_event() {
            if let PeerEvent::Timeout { peer } = event
                && let Some(w) = table.state_mut(&peer).and_then(|s| s.waiting.take())
            {
                let _ = w.send(None);
            }
        }
    }
    // Shutdown: routines see `Closed` at their next receive; give them a moment to return.
    closing.cancel();
    table.shutdown(now());
    drops.add(table.stats().dropped - counted);
    while table.poll_event().is_some() {}
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while routines.join_next().await.is_some() {}
    })
    .await;
    routines.abort_all();
    Ok(())
}
