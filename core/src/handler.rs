//! The portable, synchronous request handler traits and the service that makes handlers.
//!
//! EasyNetwork's handler is an async generator: it `yield`s to receive the next request and
//! returns to end. Here that generator is flattened into calls that return [`Next`]:
//! `Next::Recv { timeout }` is the `yield`, `Next::Close` the early return. What the server
//! has for the handler at each receive point comes in as [`Received`]. The same handler runs
//! on both drivers and in any custom event loop.
//!
//! ```
//! use easynet_core::handler::{HandlerResult, Next, Received, StreamContext, StreamHandler};
//!
//! /// Echoes each line back; answers parse errors and closes on "quit".
//! struct Echo;
//!
//! impl StreamHandler for Echo {
//!     type Request = String;
//!     type Response = String;
//!
//!     fn handle(&mut self, cx: &mut StreamContext<'_, String>, received: Received<String>) -> HandlerResult {
//!         match received {
//!             Received::Request(line) if line == "quit" => return Ok(Next::Close),
//!             Received::Request(line) => cx.send(&line)?,
//!             Received::ParseError(e) => cx.send(format!("error: {e}"))?,
//!             Received::Timeout => {}
//!         }
//!         Ok(Next::recv())
//!     }
//! }
//! # let _ = Echo;
//! ```

use std::time::{Duration, Instant};

use crate::ConnId;
use crate::addr::{Addr, PeerCred};
use crate::protocol::{BoxError, ParseError, SerializeError};

/// What the handler wants after a call: receive again, or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// Wait for the next request. With a timeout, [`Received::Timeout`] comes if no complete
    /// request arrived within it; partial bytes received meanwhile are kept. A zero timeout
    /// delivers an already-buffered request or times out at once.
    Recv {
        /// How long to wait for one complete request; `None` waits for ever.
        timeout: Option<Duration>,
    },
    /// End: queued responses are flushed and the connection is closed gracefully (for a
    /// datagram handler, the routine for this peer ends).
    Close,
}

impl Next {
    /// Receive with no timeout.
    pub const fn recv() -> Self {
        Next::Recv { timeout: None }
    }

    /// Receive with a timeout.
    pub const fn recv_timeout(timeout: Duration) -> Self {
        Next::Recv {
            timeout: Some(timeout),
        }
    }
}

/// What the server delivers at a receive point.
///
/// Deliberately exhaustive: a handler matches all three, as EasyNetwork's generator handles
/// a packet, a timeout or a parse error at its `yield`.
#[derive(Debug)]
pub enum Received<R> {
    /// A complete request.
    Request(R),
    /// The receive timeout expired before a complete request arrived.
    Timeout,
    /// Bytes that do not form a valid request; they were skipped and the rest is kept.
    ParseError(ParseError),
}

/// The error type handlers return; any error closes that one connection, never the server.
///
/// How a returned error is logged, one rule for every handler kind: a send on a closed
/// client ([`SendError::Closed`], or an async client's `Closed` send error) is one WARN,
/// never an ERROR (the server was closing; the handler did nothing wrong); a receive on a
/// closed client propagated by an async handler (`RecvError::Closed`) ends it quietly;
/// any other error is one ERROR with the conn and peer fields. A panic is one ERROR too.
/// Datagram handlers follow it on both drivers
/// ([`contain::handler_failed`](crate::datagram::contain::handler_failed)).
pub type HandlerError = BoxError;

/// What handler calls return.
pub type HandlerResult = Result<Next, HandlerError>;

/// Why [`StreamContext::send`] or [`DatagramContext::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The client is closing or closed; nothing was queued.
    #[error("client is closed")]
    Closed,
    /// The response could not be serialized; nothing was queued.
    #[error(transparent)]
    Serialize(#[from] SerializeError),
}

/// Who is at the other end, and where they connected.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The connection (or datagram peer) handle.
    pub id: ConnId,
    /// The peer's address (internet or Unix).
    pub peer: Addr,
    /// The server's address for this connection.
    pub local: Addr,
    /// The peer process's credentials, for a Unix stream connection where the OS gives
    /// them; `None` otherwise.
    pub peer_cred: Option<PeerCred>,
    /// TLS details, once the handshake is done.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsInfo>,
}

impl ConnInfo {
    /// Info for a plain connection (no credentials, no TLS).
    pub fn new(id: ConnId, peer: impl Into<Addr>, local: impl Into<Addr>) -> Self {
        Self {
            id,
            peer: peer.into(),
            local: local.into(),
            peer_cred: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// This info with the peer's credentials.
    pub fn with_peer_cred(mut self, cred: Option<PeerCred>) -> Self {
        self.peer_cred = cred;
        self
    }
}

/// A response given to a `send`: the message itself (owned) or a reference to it.
///
/// Made by [`IntoResponse`]; what the send paths look at to choose between encoding a copy
/// and taking the message's own buffer.
#[derive(Debug)]
pub enum MaybeOwned<'a, T> {
    /// The message, given away: its buffer can be queued without a copy (a `String` or a
    /// `Bytes` response under [`Lines`](crate::protocol::Lines),
    /// [`LengthPrefixed`](crate::protocol::LengthPrefixed) or
    /// [`RawChunks`](crate::protocol::RawChunks)).
    Owned(T),
    /// A reference: the message is encoded into the write queue (a copy of its bytes).
    Borrowed(&'a T),
}

/// What `send` takes: a response by value (`cx.send(line)`) or by reference
/// (`cx.send(&line)`).
///
/// Implemented for `T` and `&T`, so every `send` takes either. Giving the message away lets
/// the connection queue its buffer as it is: a large `String` line goes to the socket without
/// being copied, its separator appended in its spare capacity. A reference keeps the message
/// for the caller and copies its bytes.
///
/// Since `send` is generic, an argument whose type is inferred from `send` alone is
/// ambiguous (`cx.send(v.iter().sum())`, `cx.send(x.into())`): name the type
/// (`sum::<i64>()`) or pass a reference, as before.
///
/// ```
/// use easynet_core::handler::{HandlerResult, IntoResponse, MaybeOwned, Next, Received, StreamContext, StreamHandler};
///
/// struct Echo;
///
/// impl StreamHandler for Echo {
///     type Request = String;
///     type Response = String;
///
///     fn handle(&mut self, cx: &mut StreamContext<'_, String>, received: Received<String>) -> HandlerResult {
///         match received {
///             // Owned: the line's own buffer is queued, no copy.
///             Received::Request(line) => cx.send(line)?,
///             // A reference works as well (the bytes are then copied): `cx.send(&msg)`.
///             Received::ParseError(e) => cx.send(format!("error: {e}"))?,
///             Received::Timeout => {}
///         }
///         Ok(Next::recv())
///     }
/// }
/// # let _ = Echo;
///
/// let line = String::from("hi");
/// let borrowed: MaybeOwned<'_, String> = (&line).into_response();
/// assert!(matches!(borrowed, MaybeOwned::Borrowed(_)));
/// let owned: MaybeOwned<'_, String> = line.into_response();
/// assert!(matches!(owned, MaybeOwned::Owned(_)));
/// ```
pub trait IntoResponse<T> {
    /// The response, owned or borrowed.
    fn into_response<'a>(self) -> MaybeOwned<'a, T>
    where
        Self: 'a;
}

impl<T> IntoResponse<T> for T {
    fn into_response<'a>(self) -> MaybeOwned<'a, T>
    where
        Self: 'a,
    {
        MaybeOwned::Owned(self)
    }
}

impl<T> IntoResponse<T> for &T {
    fn into_response<'a>(self) -> MaybeOwned<'a, T>
    where
        Self: 'a,
    {
        MaybeOwned::Borrowed(self)
    }
}

/// Where a context's responses go; implemented by the connection and endpoint machines.
pub(crate) trait ResponseSink<Resp> {
    fn send(&mut self, response: &Resp) -> Result<(), SendError>;
    /// Sends `response`, taking it: its buffer is queued without a copy where the protocol
    /// allows. By default it is encoded as a borrowed one.
    fn send_owned(&mut self, response: Resp) -> Result<(), SendError> {
        self.send(&response)
    }
    fn is_closing(&self) -> bool;
}

/// Sends `response` into `sink`, owned or borrowed as it was given.
pub(crate) fn send_into<Resp>(
    sink: &mut (impl ResponseSink<Resp> + ?Sized),
    response: impl IntoResponse<Resp>,
) -> Result<(), SendError> {
    match response.into_response() {
        MaybeOwned::Owned(r) => sink.send_owned(r),
        MaybeOwned::Borrowed(r) => sink.send(r),
    }
}

/// A stream connection as its handler context sees it.
pub(crate) trait DatagramSink<Resp>: ResponseSink<Resp> {
    /// A pusher for this peer.
    fn pusher(&mut self) -> crate::push::DatagramPusher<Resp>;
}

pub(crate) trait StreamSink<Resp>: ResponseSink<Resp> {
    fn info(&self) -> &ConnInfo;
    /// A pusher for this connection.
    fn pusher(&mut self) -> crate::push::Pusher<Resp>;
    /// No more requests will come (peer EOF, shutdown, close).
    fn input_finished(&self) -> bool;
}

/// What a stream handler can do and know during a call.
pub struct StreamContext<'a, Resp> {
    pub(crate) sink: &'a mut dyn StreamSink<Resp>,
    pub(crate) now: Instant,
}

impl<Resp> std::fmt::Debug for StreamContext<'_, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamContext")
            .field("info", self.sink.info())
            .field("closing", &self.is_closing())
            .finish_non_exhaustive()
    }
}

impl<Resp> StreamContext<'_, Resp> {
    /// Encodes `response` and queues it for sending, in call order.
    ///
    /// Takes the response by value (`cx.send(line)`: its buffer is queued without a copy
    /// where the protocol allows, see [`IntoResponse`]) or by reference (`cx.send(&line)`).
    ///
    /// Fails with [`SendError::Closed`] once the client is closing (for example inside
    /// `on_disconnection`), and with [`SendError::Serialize`] if it cannot be encoded.
    pub fn send(&mut self, response: impl IntoResponse<Resp>) -> Result<(), SendError> {
        send_into(self.sink, response)
    }

    /// A [`Pusher`](crate::push::Pusher) for this connection: keep it (it is `Clone + Send +
    /// Sync`) to send to the client later, from any thread or task (server push).
    pub fn pusher(&mut self) -> crate::push::Pusher<Resp> {
        self.sink.pusher()
    }

    /// True once the connection is closing: after the peer left (even while requests it
    /// sent before leaving are still being handled; answers can still be sent then), a
    /// shutdown began or the handler asked to close. Always true inside
    /// `on_disconnection`. The async handlers' client follows the same rule.
    pub fn is_closing(&self) -> bool {
        self.sink.is_closing() || self.sink.input_finished()
    }

    /// Who is connected (with TLS details once the handshake is done).
    pub fn info(&self) -> &ConnInfo {
        self.sink.info()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.sink.info().peer
    }

    /// The server's address for this connection.
    pub fn local_addr(&self) -> &Addr {
        &self.sink.info().local
    }

    /// The time of the event being handled (the driver's clock).
    pub fn now(&self) -> Instant {
        self.now
    }
}

/// A request handler for one stream connection (TCP or TLS), made by a [`Service`].
///
/// Rules (EasyNetwork's, see ARCHITECTURE.md for where we differ):
/// - `on_connection` runs once, after the TLS handshake; an error from it closes the
///   connection abortively and `on_disconnection` is **not** called.
/// - `handle` is called once per [`Received`] while the handler returns `Next::Recv`.
///   Requests of one connection are handled strictly in order.
/// - `Next::Close` flushes queued responses and closes gracefully.
/// - An error (or panic) from `handle` is logged, `on_disconnection` runs, and the connection
///   is closed abortively. Other connections are untouched.
/// - `on_disconnection` runs when the connection ends for any other reason (peer EOF or
///   reset, close, shutdown); `cx.is_closing()` is true there and sends fail.
pub trait StreamHandler: Send + 'static {
    /// The request type, as the protocol decodes it.
    type Request: Send + 'static;
    /// The response type, as the protocol encodes it.
    type Response: Send + 'static;

    /// Called once when the connection is ready; by default, receive with no timeout.
    fn on_connection(&mut self, cx: &mut StreamContext<'_, Self::Response>) -> HandlerResult {
        let _ = cx;
        Ok(Next::recv())
    }

    /// Called with what arrived at each receive point.
    fn handle(
        &mut self,
        cx: &mut StreamContext<'_, Self::Response>,
        received: Received<Self::Request>,
    ) -> HandlerResult;

    /// Called once when the connection ends, unless `on_connection` failed.
    fn on_disconnection(&mut self, cx: &mut StreamContext<'_, Self::Response>) {
        let _ = cx;
    }
}

/// What a datagram handler can do and know during a call.
pub struct DatagramContext<'a, Resp> {
    pub(crate) sink: &'a mut dyn DatagramSink<Resp>,
    pub(crate) info: &'a ConnInfo,
    pub(crate) now: Instant,
}

impl<Resp> std::fmt::Debug for DatagramContext<'_, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramContext")
            .field("info", self.info)
            .field("closing", &self.sink.is_closing())
            .finish_non_exhaustive()
    }
}

impl<Resp> DatagramContext<'_, Resp> {
    /// Encodes `response` as one datagram to this peer and queues it. Takes the response
    /// by value or by reference ([`IntoResponse`]); by value, a `Bytes` datagram is sent
    /// without a copy.
    pub fn send(&mut self, response: impl IntoResponse<Resp>) -> Result<(), SendError> {
        send_into(self.sink, response)
    }

    /// A [`DatagramPusher`](crate::push::DatagramPusher) for this peer: keep it to send to
    /// the peer later, from any thread or task (server push).
    pub fn pusher(&mut self) -> crate::push::DatagramPusher<Resp> {
        self.sink.pusher()
    }

    /// True once the service is shutting down; sends then fail.
    pub fn is_closing(&self) -> bool {
        self.sink.is_closing()
    }

    /// Who sent the datagram.
    pub fn info(&self) -> &ConnInfo {
        self.info
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.info.peer
    }

    /// The server's bound address.
    pub fn local_addr(&self) -> &Addr {
        &self.info.local
    }

    /// The time of the event being handled (the driver's clock).
    pub fn now(&self) -> Instant {
        self.now
    }
}

/// A request handler for one datagram peer, made by a [`Service`] when the peer first shows.
///
/// A *routine* starts with a datagram from an idle peer: `handle` gets it, and keeps getting
/// that peer's next datagrams (or [`Received::Timeout`]) while it returns `Next::Recv`. After
/// `Next::Close`, the next queued datagram of that peer starts a new routine. At most one
/// routine per peer is active; datagrams that arrive meanwhile wait in a bounded queue. The
/// timeout returned from the last call of a routine bounds the wait for the next datagram.
pub trait DatagramHandler: Send + 'static {
    /// The request type, as the protocol decodes it.
    type Request: Send + 'static;
    /// The response type, as the protocol encodes it.
    type Response: Send + 'static;

    /// Called with each datagram (or timeout) of this peer's active routine.
    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, Self::Response>,
        received: Received<Self::Request>,
    ) -> HandlerResult;
}

/// Makes one handler per connection (or per datagram peer), with hooks around a serve run.
///
/// A closure `Fn(&ConnInfo) -> H` is a service.
///
/// ```
/// use easynet_core::handler::{ConnInfo, Service};
/// # use easynet_core::handler::{HandlerResult, Next, Received, StreamContext, StreamHandler};
/// # struct Echo;
/// # impl StreamHandler for Echo { type Request = String; type Response = String;
/// #   fn handle(&mut self, _: &mut StreamContext<'_, String>, _: Received<String>) -> HandlerResult { Ok(Next::recv()) } }
/// let service = |_: &ConnInfo| Echo;
/// assert!(service.on_start().is_ok());
/// ```
pub trait Service: Send + Sync + 'static {
    /// The handler made for each connection.
    type Handler;

    /// Called once per serve run, after binding and before the first accept. An error stops
    /// the run before it serves.
    fn on_start(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Makes the handler of a new connection or datagram peer.
    fn new_handler(&self, info: &ConnInfo) -> Self::Handler;

    /// Called once per serve run after every connection has ended (bounded by the driver's
    /// shutdown timeout).
    fn on_stop(&self) {}
}

impl<F, H> Service for F
where
    F: Fn(&ConnInfo) -> H + Send + Sync + 'static,
{
    type Handler = H;

    fn new_handler(&self, info: &ConnInfo) -> H {
        self(info)
    }
}
