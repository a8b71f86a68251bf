//! [`Session`]: a [`Connection`] driven by a portable [`StreamHandler`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use super::{Action, CloseHow, Connection, ServerRole, StreamConfig};
use crate::handler::{
    ConnInfo, HandlerError, Next, Received, SendError, Service, StreamContext, StreamHandler,
};
use crate::panic_message;
use crate::protocol::StreamServerProtocol;
use crate::push::CloseAsked;
#[cfg(feature = "tls")]
use crate::tls::TlsSession;

/// Handler calls one connection may make in one turn before the others get theirs. Fairness
/// is counted in requests handled, not in socket reads: one read can hold thousands of tiny
/// requests (or parse errors).
pub const HANDLER_CALLS_PER_TURN: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the TLS handshake; no handler call yet.
    Handshake,
    /// `on_connection` ran; `handle` is called with each receive.
    Running,
    /// No more handler calls.
    Finished,
}

/// One server-side connection with its handler: EasyNetwork's per-connection flow.
///
/// - After the handshake, `on_connection`; its error closes abortively without
///   `on_disconnection`. A failed handshake calls nothing.
/// - Then `handle` with each [`Received`](crate::handler::Received) while it returns
///   `Next::Recv`; buffered complete requests are handled before reading more, strictly in
///   order.
/// - `on_disconnection` runs exactly once when the connection ends for any other reason:
///   `Next::Close` (graceful close), peer EOF or reset, a handler error or panic (logged,
///   then an abortive close after flushing earlier responses), or a server shutdown (after the
///   requests already read were handled).
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::Arc;
/// use std::time::Instant;
/// use easynet_core::ConnId;
/// use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// use easynet_core::protocol::Stream;
/// use easynet_core::stream::{CloseHow, Session, StreamConfig};
///
/// struct Echo;
/// impl StreamHandler for Echo {
///     type Request = String;
///     type Response = String;
///     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
///         if let Received::Request(line) = r { cx.send(&line)?; }
///         Ok(Next::recv())
///     }
/// }
///
/// let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let now = Instant::now();
/// let info = ConnInfo::new(ConnId(1), addr, addr);
/// let mut session = Session::new(now, Echo, Arc::new(Stream::lines()), StreamConfig::default(), info);
/// session.handle_read(now, b"one\ntwo\n");
/// assert_eq!(session.transmit(), b"one\ntwo\n");
/// session.advance(8);
/// session.handle_eof(now);
/// assert_eq!(session.poll_close(), Some(CloseHow::Graceful));
/// ```
pub struct Session<H, P>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    conn: Connection<P, ServerRole>,
    /// Dropped (contained) once no handler call can come any more.
    handler: Option<H>,
    stage: Stage,
    /// The turn's budget ran out with requests still buffered: `resume` goes on.
    pending: bool,
}

impl<H, P> std::fmt::Debug for Session<H, P>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("conn", &self.conn)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl<H, P> Session<H, P>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    /// A plain connection; `on_connection` runs at once.
    pub fn new(
        now: Instant,
        handler: H,
        protocol: Arc<P>,
        config: StreamConfig,
        info: ConnInfo,
    ) -> Self {
        Self::from_connection(now, handler, Connection::new(protocol, config, info))
    }

    /// A TLS connection; `on_connection` runs after the handshake.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        now: Instant,
        handler: H,
        protocol: Arc<P>,
        config: StreamConfig,
        info: ConnInfo,
        tls: TlsSession,
    ) -> Self {
        Self::from_connection(
            now,
            handler,
            Connection::with_tls(now, protocol, config, info, tls),
        )
    }

    /// Runs `handler` on a connection made by the caller (plain or TLS, not yet used).
    pub fn from_connection(now: Instant, handler: H, conn: Connection<P, ServerRole>) -> Self {
        let mut session = Self {
            conn,
            handler: Some(handler),
            stage: Stage::Handshake,
            pending: false,
        };
        session.drive(now);
        session
    }

    /// Makes the connection's handler with `service` and runs it on `conn`. A panicking
    /// factory is logged once and gives `None`: the caller drops the connection, the
    /// server goes on.
    pub fn start<S>(now: Instant, service: &S, mut conn: Connection<P, ServerRole>) -> Option<Self>
    where
        S: Service<Handler = H>,
    {
        let handler = make_handler(now, service, &mut conn)?;
        Some(Self::from_connection(now, handler, conn))
    }

    /// The connection machine.
    pub fn connection(&self) -> &Connection<P, ServerRole> {
        &self.conn
    }

    /// The handler; `None` once the connection ended and it was dropped.
    pub fn handler(&self) -> Option<&H> {
        self.handler.as_ref()
    }

    /// Who is at the other end.
    pub fn info(&self) -> &ConnInfo {
        self.conn.info()
    }

    /// True once no handler call will happen any more.
    pub fn is_finished(&self) -> bool {
        self.stage == Stage::Finished
    }

    /// Bytes read from the socket.
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) {
        self.conn.handle_read(now, data);
        self.drive(now);
    }

    /// See [`Connection::read_buffer`]: where to read in place, when that is better.
    pub fn read_buffer(&mut self) -> Option<&mut bytes::BytesMut> {
        self.conn.read_buffer()
    }

    /// `n` bytes were read into [`read_buffer`](Self::read_buffer); 0 means end of stream.
    pub fn handle_read_in_place(&mut self, now: Instant, n: usize) {
        self.conn.handle_read_in_place(now, n);
        self.drive(now);
    }

    /// The answer to [`Action::QueryUnsent`]; see [`Connection::handle_unsent`].
    pub fn handle_unsent(&mut self, now: Instant, unsent: Option<usize>) {
        self.conn.handle_unsent(now, unsent);
    }

    /// Goes on with buffered requests after the driver let the others run
    /// ([`Want::resume`](super::Want::resume)).
    pub fn resume(&mut self, now: Instant) {
        self.drive(now);
    }

    /// What the driver does next; see [`Action`]. Requests left over from a turn whose
    /// budget ran out ask for [`Want::resume`](super::Want::resume) instead of a read.
    pub fn poll_action(&mut self, now: Instant) -> Action {
        if let Some(how) = self.conn.take_close_asked() {
            self.close_from_outside(now, how);
        }
        let mut action = self.conn.poll_action(now);
        if let Action::Io(want) = &mut action
            && self.pending
        {
            want.resume = true;
            want.read = false;
        }
        action
    }

    /// The peer closed its write side.
    pub fn handle_eof(&mut self, now: Instant) {
        self.conn.handle_eof(now);
        self.drive(now);
    }

    /// Reading or writing failed; the connection is gone.
    pub fn handle_io_error(&mut self, now: Instant) {
        self.conn.handle_io_error(now);
        self.drive(now);
    }

    /// The time from [`poll_timeout`](Self::poll_timeout) has come (extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.drive(now);
    }

    /// A server shutdown began: requests already read are handled, then the connection
    /// closes gracefully, abortively at `deadline` at the latest.
    pub fn shutdown(&mut self, now: Instant, deadline: Instant) {
        self.conn.shutdown(now, deadline);
        self.drive(now);
    }

    /// Bytes to write to the socket.
    pub fn transmit(&mut self) -> &[u8] {
        self.conn.transmit()
    }

    /// `n` bytes of [`transmit`](Self::transmit) were written.
    pub fn advance(&mut self, n: usize) {
        self.conn.advance(n);
    }

    /// See [`Connection::write_to`]: writes queued bytes (TLS records straight from rustls).
    pub fn write_to(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<usize> {
        self.conn.write_to(out)
    }

    /// True when bytes wait to be written to the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// True when the driver should read from the socket.
    pub fn wants_read(&self) -> bool {
        !self.pending && self.conn.wants_read()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// `Some` once the driver must close the socket, and how.
    pub fn poll_close(&mut self) -> Option<CloseHow> {
        // Every path into closing has already run `drive`, so the handler has been told.
        self.conn.poll_close()
    }

    fn call(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut H, &mut StreamContext<'_, H::Response>) -> Result<Next, HandlerError>,
    ) -> Result<Next, HandlerError> {
        let mut cx = StreamContext {
            sink: &mut self.conn,
            now,
        };
        let Some(handler) = self.handler.as_mut() else {
            return Err("handler already dropped".into());
        };
        match catch_unwind(AssertUnwindSafe(|| f(handler, &mut cx))) {
            Ok(res) => res,
            Err(panic) => {
                self.conn.count_handler_panic();
                Err(Box::new(HandlerPanic(panic_message("handler", panic))))
            }
        }
    }

    /// A pusher asked to close: as `Next::Close` (or an abort), at the handler's next
    /// stop.
    fn close_from_outside(&mut self, now: Instant, how: CloseAsked) {
        if self.stage == Stage::Running {
            self.disconnect(now);
        }
        self.finish();
        match how {
            CloseAsked::Graceful => self.conn.close(now),
            CloseAsked::Abort => self.conn.close_abortively(now),
        }
    }

    fn disconnect(&mut self, now: Instant) {
        self.conn.mark_closing();
        let mut cx = StreamContext {
            sink: &mut self.conn,
            now,
        };
        if let Some(handler) = self.handler.as_mut()
            && let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.on_disconnection(&mut cx)))
        {
            self.conn.count_handler_panic();
            if let Some(suppressed) = self.conn.log_budget(now) {
                let info = self.conn.info();
                tracing::error!(conn = %info.id, peer = %info.peer, error = %panic_message("on_disconnection", panic), suppressed, "exception occurred during processing of request");
            }
        }
        self.finish();
    }

    /// No handler call can come any more: the handler goes now (its `Drop` is user code
    /// too, so it is contained).
    fn finish(&mut self) {
        self.stage = Stage::Finished;
        if let Some(handler) = self.handler.take() {
            drop_contained(self.conn.info(), handler);
        }
    }

    fn failed(&mut self, now: Instant, err: HandlerError, disconnect: bool) {
        // Any error closes abortively; a panic was counted where it was caught.
        let panicked = err.is::<HandlerPanic>();
        let conn = &self.conn;
        if log_handler_error(conn.info(), err, || conn.log_budget(now)) && !panicked {
            self.conn.count_handler_error();
        }
        if disconnect {
            self.disconnect(now);
        }
        self.finish();
        self.conn.close_abortively(now);
    }

    /// Runs handler calls until the handler waits for input the connection does not have.
    fn drive(&mut self, now: Instant) {
        let mut timed_out = false;
        let mut calls = 0;
        self.pending = false;
        loop {
            match self.stage {
                Stage::Finished => return,
                Stage::Handshake => {
                    if self.conn.is_ready() && !self.conn.is_closing() {
                        self.stage = Stage::Running;
                        match self.call(now, |h, cx| h.on_connection(cx)) {
                            Ok(next) => self.apply(now, next),
                            Err(err) => self.failed(now, err, false),
                        }
                    } else {
                        if self.conn.is_closing() {
                            self.finish(); // handshake failed: nobody to tell
                        }
                        return;
                    }
                }
                Stage::Running => {
                    if self.conn.is_closed() {
                        self.disconnect(now);
                        return;
                    }
                    if timed_out && self.conn.poll_timeout().is_some_and(|t| t <= now) {
                        // A handler that answers a timeout with another zero timeout would
                        // spin here; hand control back and let the driver's timer call again.
                        return;
                    }
                    if calls == HANDLER_CALLS_PER_TURN {
                        self.pending = true; // the others' turn; `resume` goes on
                        return;
                    }
                    let received = self.conn.poll_received(now);
                    timed_out = matches!(received, Some(Received::Timeout));
                    calls += 1;
                    match received {
                        Some(received) => match self.call(now, |h, cx| h.handle(cx, received)) {
                            Ok(next) => self.apply(now, next),
                            Err(err) => self.failed(now, err, true),
                        },
                        None => {
                            if self.conn.is_input_finished() {
                                self.disconnect(now);
                                self.conn.close(now);
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    fn apply(&mut self, now: Instant, next: Next) {
        match next {
            Next::Recv { timeout } => self.conn.recv(now, timeout),
            Next::Close => {
                self.disconnect(now);
                self.conn.close(now);
            }
        }
    }
}

/// A handler panic turned into its error (counted as a panic, not as an error too).
#[derive(Debug)]
struct HandlerPanic(String);

impl std::fmt::Display for HandlerPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandlerPanic {}

/// Logs an error a handler returned (or a panic), once, by the one rule every handler kind
/// follows: a send on a closed client is a WARN (the peer left while the handler answered),
/// an async handler's `RecvError::Closed` propagated with `?` is a normal end (not logged),
/// anything else an ERROR. The error's `Display` and `Drop` are user code: contained.
/// Returns true for an ERROR: the connection failed (the closed cases are normal ends).
/// `budget` is asked before a line is written (a client can cause errors at will).
pub(crate) fn log_handler_error(
    info: &ConnInfo,
    err: HandlerError,
    budget: impl FnOnce() -> Option<u64>,
) -> bool {
    let failed = if matches!(
        err.downcast_ref::<super::RecvError>(),
        Some(super::RecvError::Closed)
    ) {
        false // an async handler's `recv()?` after the peer left
    } else if matches!(err.downcast_ref::<SendError>(), Some(SendError::Closed)) {
        if let Some(suppressed) = budget() {
            tracing::warn!(conn = %info.id, peer = %info.peer, suppressed, "handler sent on a closed client");
        }
        false
    } else {
        if let Some(suppressed) = budget() {
            let text = catch_unwind(AssertUnwindSafe(|| err.to_string()))
                .unwrap_or_else(|_| "<the error's Display panicked>".to_owned());
            tracing::error!(conn = %info.id, peer = %info.peer, error = text, suppressed, "exception occurred during processing of request");
        }
        true
    };
    drop_contained(info, err);
    failed
}

/// Makes a connection's handler with `service`; a panicking factory is counted, logged
/// once and gives `None` (the caller drops the connection).
pub(crate) fn make_handler<S: Service, P: StreamServerProtocol>(
    now: Instant,
    service: &S,
    conn: &mut Connection<P, ServerRole>,
) -> Option<S::Handler> {
    match catch_unwind(AssertUnwindSafe(|| service.new_handler(conn.info()))) {
        Ok(handler) => Some(handler),
        Err(panic) => {
            conn.count_handler_panic();
            if let Some(suppressed) = conn.log_budget(now) {
                let info = conn.info();
                tracing::error!(conn = %info.id, peer = %info.peer, error = %panic_message("handler factory", panic), suppressed, "cannot make a handler; connection dropped");
            }
            None
        }
    }
}

/// Drops user state (a handler, an error), logging a panic in its `Drop` once.
pub(crate) fn drop_contained<T>(info: &ConnInfo, value: T) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| drop(value))) {
        tracing::error!(conn = %info.id, peer = %info.peer, error = %panic_message("drop", panic), "exception occurred while dropping user state");
    }
}

impl<H, P> super::Driven for Session<H, P>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    fn poll_action(&mut self, now: Instant) -> Action {
        Session::poll_action(self, now)
    }
    fn handle_read(&mut self, now: Instant, data: &[u8]) {
        Session::handle_read(self, now, data);
    }
    fn read_buffer(&mut self) -> Option<&mut bytes::BytesMut> {
        Session::read_buffer(self)
    }
    fn handle_read_in_place(&mut self, now: Instant, n: usize) {
        Session::handle_read_in_place(self, now, n);
    }
    fn handle_eof(&mut self, now: Instant) {
        Session::handle_eof(self, now);
    }
    fn handle_io_error(&mut self, now: Instant) {
        Session::handle_io_error(self, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Session::handle_timeout(self, now);
    }
    fn handle_unsent(&mut self, now: Instant, unsent: Option<usize>) {
        Session::handle_unsent(self, now, unsent);
    }
    fn resume(&mut self, now: Instant) {
        Session::resume(self, now);
    }
    fn shutdown(&mut self, now: Instant, deadline: Instant) {
        Session::shutdown(self, now, deadline);
    }
    fn write_to(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<usize> {
        Session::write_to(self, out)
    }
    fn read_size(&self) -> usize {
        self.conn.read_size()
    }
    fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }
    fn info(&self) -> &ConnInfo {
        self.conn.info()
    }
    fn wakeable(&self) -> bool {
        self.conn.has_pushers()
    }
    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.conn.poll_push(cx)
    }
}

impl<H, P> Drop for Session<H, P>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    fn drop(&mut self) {
        // Dropped mid-way (the server went away): the handler's `Drop` is still contained.
        if let Some(handler) = self.handler.take() {
            drop_contained(self.conn.info(), handler);
        }
    }
}
