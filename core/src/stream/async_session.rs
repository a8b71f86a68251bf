//! [`AsyncSession`]: a [`Connection`] driven by an [`AsyncStreamHandler`], with the same rules
//! as the portable [`Session`](super::Session), in the core.
//!
//! The handler's calls run in one future that the session owns and polls itself, inside
//! `catch_unwind`, after every event; its [`StreamPeer`] only looks at the connection's
//! state. No runtime is involved: a driver supplies a waker through
//! [`Driven::poll_wake`] for what the handler awaits outside the connection (its own timers
//! and channels), and calls [`Driven::resume`] when woken.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use super::peer::{Shared, SharedRef, StreamPeer, lock};
use super::session::{drop_contained, log_handler_error, make_handler};
use super::{Action, Connection, Driven, ServerRole};
use crate::handler::{ConnInfo, HandlerError, Service};
use crate::panic_message;
use crate::protocol::StreamServerProtocol;
use crate::push::CloseAsked;

/// An async request handler for one connection; `async fn` in the impl is fine.
///
/// Rules (the portable handlers', see [`StreamHandler`](crate::handler::StreamHandler)):
/// - `on_connection` runs once after the TLS handshake; its error closes abortively and
///   skips `on_disconnection`.
/// - `handle` is called again and again while the client is open. If a call returns
///   without having received anything, the connection is closed abortively (no hot loop).
/// - An error from `handle` is logged, `on_disconnection` runs and the connection is reset
///   after flushing. `RecvError::Closed` propagated with `?` is a normal end (not logged),
///   `SendError::Closed` one WARN. A panic anywhere in the handler closes this connection
///   (logged once); the server goes on.
/// - `on_disconnection` runs once at the end otherwise; `client.is_closing()` is true there.
///
/// ```
/// use easynet_core::handler::HandlerError;
/// use easynet_core::stream::{StreamPeer, AsyncStreamHandler, RecvError};
///
/// struct Echo;
///
/// impl AsyncStreamHandler for Echo {
///     type Request = String;
///     type Response = String;
///
///     async fn handle(&mut self, client: &mut StreamPeer<String, String>) -> Result<(), HandlerError> {
///         match client.recv().await {
///             Ok(line) => client.send(&line).await?,
///             Err(RecvError::Parse(e)) => client.send(&format!("error: {e}")).await?,
///             Err(e) => return Err(e.into()),
///         }
///         Ok(())
///     }
/// }
/// # let _ = Echo;
/// ```
pub trait AsyncStreamHandler: Send + 'static {
    /// The request type, as the protocol decodes it.
    type Request: Send + 'static;
    /// The response type, as the protocol encodes it.
    type Response: Send + Sync + 'static;

    /// Called once when the connection is ready (after the TLS handshake).
    fn on_connection(
        &mut self,
        client: &mut StreamPeer<Self::Request, Self::Response>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = client;
        async { Ok(()) }
    }

    /// Called again and again while the connection is open; each call should receive.
    fn handle(
        &mut self,
        client: &mut StreamPeer<Self::Request, Self::Response>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called once when the connection ends, unless `on_connection` failed.
    fn on_disconnection(
        &mut self,
        client: &mut StreamPeer<Self::Request, Self::Response>,
    ) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }
}

/// Set by the handler's waker; the driver's waker is woken with it.
#[derive(Default)]
struct WakeFlag {
    woken: AtomicBool,
    driver: Mutex<Option<Waker>>,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(w) = self
            .driver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            w.wake_by_ref();
        }
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One server-side connection with its async handler; a driver runs it through [`Driven`].
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::Arc;
/// use std::time::Instant;
/// use easynet_core::ConnId;
/// use easynet_core::handler::{ConnInfo, HandlerError};
/// use easynet_core::protocol::Stream;
/// use easynet_core::stream::{Action, StreamPeer, AsyncSession, AsyncStreamHandler, Connection, Driven, StreamConfig};
///
/// struct Echo;
/// impl AsyncStreamHandler for Echo {
///     type Request = String;
///     type Response = String;
///     async fn handle(&mut self, client: &mut StreamPeer<String, String>) -> Result<(), HandlerError> {
///         let line = client.recv().await?;
///         client.send(&line).await?;
///         Ok(())
///     }
/// }
///
/// let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let now = Instant::now();
/// let conn = Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), ConnInfo::new(ConnId(1), addr, addr));
/// let mut session = AsyncSession::new(now, Echo, conn);
/// session.handle_read(now, b"one\n");
/// let mut out = Vec::new();
/// session.write_to(&mut out).unwrap();
/// assert_eq!(out, b"one\n");
/// assert!(matches!(session.poll_action(now), Action::Io(_)));
/// ```
pub struct AsyncSession<P: StreamServerProtocol> {
    shared: Arc<Mutex<Shared<Connection<P, ServerRole>>>>,
    handler: Option<HandlerFuture>,
    wake: Arc<WakeFlag>,
    info: ConnInfo,
    read_size: usize,
}

impl<P: StreamServerProtocol> std::fmt::Debug for AsyncSession<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSession")
            .field("conn", &lock(&self.shared).conn)
            .field("handler_running", &self.handler.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: StreamServerProtocol> AsyncSession<P> {
    /// Runs `handler` on `conn` (plain or TLS, not yet used).
    pub fn new<H>(now: Instant, handler: H, conn: Connection<P, ServerRole>) -> Self
    where
        H: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    {
        let info = conn.info().clone();
        let read_size = conn.config().read_size;
        let shared = Arc::new(Mutex::new(Shared::new(conn, info.clone(), now)));
        let view: SharedRef<P::Request, P::Response> = shared.clone();
        let mut session = Self {
            shared,
            handler: Some(Box::pin(rules(handler, StreamPeer::new(view)))),
            wake: Arc::default(),
            info,
            read_size,
        };
        session.run_handler(now);
        session
    }

    /// Makes the handler with `service` (a panicking factory is logged once and gives
    /// `None`: the caller drops the connection) and runs it on `conn`.
    pub fn start<S>(now: Instant, service: &S, conn: Connection<P, ServerRole>) -> Option<Self>
    where
        S: Service,
        S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    {
        let mut conn = conn;
        let handler = make_handler(now, service, &mut conn)?;
        Some(Self::new(now, handler, conn))
    }

    /// True once the handler's last call has returned.
    pub fn is_finished(&self) -> bool {
        self.handler.is_none()
    }

    /// Polls the handler's future once, contained: a panic closes this connection only.
    fn run_handler(&mut self, now: Instant) {
        let Some(fut) = self.handler.as_mut() else {
            return;
        };
        lock(&self.shared).now = now;
        self.wake.woken.store(false, Ordering::Release);
        let waker = Waker::from(self.wake.clone());
        let mut cx = Context::from_waker(&waker);
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => {
                if let Some(done) = self.handler.take() {
                    drop_contained(&self.info, done); // it held the handler
                }
            }
            Err(panic) => {
                if let Some(broken) = self.handler.take() {
                    drop_contained(&self.info, broken);
                }
                let mut shared = lock(&self.shared);
                shared.conn.count_handler_panic();
                if let Some(suppressed) = shared.conn.log_budget(now) {
                    tracing::error!(conn = %self.info.id, peer = %self.info.peer, error = %panic_message("handler", panic), suppressed, "exception occurred during processing of request");
                }
                shared.conn.close_abortively(now);
            }
        }
    }

    fn with_conn(&mut self, now: Instant, f: impl FnOnce(&mut Connection<P, ServerRole>)) {
        {
            let mut s = lock(&self.shared);
            f(&mut s.conn);
            self.read_size = s.conn.read_size(); // it follows the traffic
        }
        self.run_handler(now);
    }
}

impl<P: StreamServerProtocol> Driven for AsyncSession<P> {
    fn poll_action(&mut self, now: Instant) -> Action {
        let asked = lock(&self.shared).conn.take_close_asked();
        if let Some(how) = asked {
            // As if the handler closed: its receive ends with `Closed`, on_disconnection runs.
            self.with_conn(now, |c| match how {
                CloseAsked::Graceful => c.close(now),
                CloseAsked::Abort => c.close_abortively(now),
            });
        }
        let mut s = lock(&self.shared);
        let mut action = s.conn.poll_action(now);
        if let Action::Io(want) = &mut action
            && s.resume
        {
            want.resume = true;
            want.read = false;
        }
        action
    }
    fn handle_read(&mut self, now: Instant, data: &[u8]) {
        self.with_conn(now, |c| c.handle_read(now, data));
    }
    fn read_buffer(&mut self) -> Option<&mut bytes::BytesMut> {
        None // the buffer is shared with the handler's client, behind its lock
    }
    fn handle_read_in_place(&mut self, now: Instant, n: usize) {
        self.with_conn(now, |c| c.handle_read_in_place(now, n));
    }
    fn handle_eof(&mut self, now: Instant) {
        self.with_conn(now, |c| c.handle_eof(now));
    }
    fn handle_io_error(&mut self, now: Instant) {
        self.with_conn(now, |c| c.handle_io_error(now));
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.with_conn(now, |c| c.handle_timeout(now));
    }
    fn handle_unsent(&mut self, now: Instant, unsent: Option<usize>) {
        lock(&self.shared).conn.handle_unsent(now, unsent);
    }
    fn resume(&mut self, now: Instant) {
        lock(&self.shared).new_turn();
        self.run_handler(now);
    }
    fn shutdown(&mut self, now: Instant, deadline: Instant) {
        self.with_conn(now, |c| c.shutdown(now, deadline));
    }
    fn write_to(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<usize> {
        let (res, now, waiting) = {
            let mut s = lock(&self.shared);
            let res = s.conn.write_to(out);
            (res, s.now, s.send_waiting)
        };
        if waiting {
            self.run_handler(now); // a `send` may have room now
        }
        res
    }
    fn read_size(&self) -> usize {
        self.read_size
    }
    fn info(&self) -> &ConnInfo {
        &self.info
    }
    fn wakeable(&self) -> bool {
        self.handler.is_some() || lock(&self.shared).conn.has_pushers()
    }
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let pushed = lock(&self.shared).conn.poll_push(cx).is_ready();
        {
            let mut driver = self.wake.driver.lock().unwrap_or_else(|e| e.into_inner());
            if !driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *driver = Some(cx.waker().clone());
            }
        }
        if self.wake.woken.swap(false, Ordering::AcqRel) || pushed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Waits for the TLS handshake: true once ready, false if the connection closed first.
struct Handshake<'a, Req, Resp>(&'a SharedRef<Req, Resp>);

impl<Req, Resp> Future for Handshake<'_, Req, Resp> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<bool> {
        let s = lock(self.0);
        if s.conn.is_ready() && !s.conn.is_closing() {
            Poll::Ready(true)
        } else if s.conn.is_closing() {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    }
}

/// The log budget for a handler error of this connection, at the current event's time.
fn client_budget<Req, Resp>(shared: &SharedRef<Req, Resp>) -> Option<u64> {
    let s = lock(shared);
    s.conn.log_budget(s.now)
}

/// EasyNetwork's per-connection flow for an async handler (see [`AsyncStreamHandler`]).
async fn rules<H: AsyncStreamHandler>(
    mut handler: H,
    mut client: StreamPeer<H::Request, H::Response>,
) {
    let shared = client.shared.clone();
    if !Handshake(&shared).await {
        return; // a failed handshake calls nothing
    }
    if let Err(e) = handler.on_connection(&mut client).await {
        // Closes abortively either way.
        let failed = log_handler_error(client.info(), e, || client_budget(&shared));
        let mut s = lock(&shared);
        if failed {
            s.conn.count_handler_error();
        }
        let now = s.now;
        s.conn.close_abortively(now);
        return;
    }
    let mut failed = false;
    while !client.is_closing() {
        lock(&shared).received = 0;
        match handler.handle(&mut client).await {
            // Returned without receiving: close now instead of looping (decision 5).
            Ok(()) if lock(&shared).received == 0 && !client.is_closing() => {
                failed = true;
                break;
            }
            Ok(()) => {}
            Err(e) => {
                failed = log_handler_error(client.info(), e, || client_budget(&shared));
                if failed {
                    lock(&shared).conn.count_handler_error();
                }
                break;
            }
        }
    }
    lock(&shared).conn.mark_closing();
    handler.on_disconnection(&mut client).await;
    let mut s = lock(&shared);
    let now = s.now;
    if failed {
        s.conn.close_abortively(now);
    } else {
        s.conn.close(now);
    }
}

impl<P: StreamServerProtocol> Drop for AsyncSession<P> {
    fn drop(&mut self) {
        // The handler's future holds the handler: its `Drop` is user code, contained.
        if let Some(fut) = self.handler.take() {
            drop_contained(&self.info, fut);
        }
    }
}
