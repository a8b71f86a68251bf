//! Async stream handlers: `client.recv().await` is EasyNetwork's `yield`.
//!
//! [`AsyncStreamHandler::handle`] gets an [`AsyncClient`], a thin async view over the core's
//! [`Connection`]: the same machine the portable handlers run on, so buffering, framing,
//! TLS, deadlines and close are decided in one place. Rules (EasyNetwork's §2.4, with our
//! decision 5):
//!
//! - `on_connection` runs once after the TLS handshake; its error closes abortively and
//!   skips `on_disconnection`.
//! - `handle` is called again and again while the client is open. If a call returns without
//!   having received anything, the connection is closed abortively (no hot loop).
//! - An error from `handle` is logged, `on_disconnection` runs and the connection is reset
//!   after flushing. A `RecvError::Closed` propagated with `?` is a normal end, not logged.
//! - `on_disconnection` runs once at the end otherwise; `client.is_closing()` is true there.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use easynet_core::addr::Addr;
use easynet_core::handler::{ConnInfo, HandlerError, Received, SendError};
use easynet_core::protocol::{ParseError, StreamServerProtocol};
use easynet_core::stream::{CloseHow, Connection, ServerRole};
use tokio::sync::watch;

use crate::StreamSocket;
use crate::conn::{self, ConnStream, now, read_into};

/// Why [`AsyncClient::recv`] returned without a request.
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

/// An async request handler for one connection; `async fn` in the impl is fine.
///
/// ```
/// use easynet_tokio::{AsyncClient, AsyncStreamHandler, RecvError};
/// use easynet_core::handler::HandlerError;
///
/// struct Echo;
///
/// impl AsyncStreamHandler for Echo {
///     type Request = String;
///     type Response = String;
///
///     async fn handle(&mut self, client: &mut AsyncClient<String, String>) -> Result<(), HandlerError> {
///         match client.recv().await {
///             Ok(line) => client.send(&line).await?,
///             Err(RecvError::Parse(e)) => client.send(&format!("error: {e}")).await?,
///             Err(e) => return Err(e.into()),
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait AsyncStreamHandler: Send + 'static {
    /// The request type, as the protocol decodes it.
    type Request: Send + 'static;
    /// The response type, as the protocol encodes it.
    type Response: Send + Sync + 'static;

    /// Called once when the connection is ready (after the TLS handshake).
    fn on_connection(
        &mut self,
        client: &mut AsyncClient<Self::Request, Self::Response>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = client;
        async { Ok(()) }
    }

    /// Called again and again while the connection is open; each call should receive.
    fn handle(
        &mut self,
        client: &mut AsyncClient<Self::Request, Self::Response>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called once when the connection ends, unless `on_connection` failed.
    fn on_disconnection(
        &mut self,
        client: &mut AsyncClient<Self::Request, Self::Response>,
    ) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }
}

/// The connection calls the async client needs, without the protocol type.
trait ConnOps<In, Out>: Send {
    fn conn_info(&self) -> &ConnInfo;
    fn handle_read(&mut self, now: Instant, data: &[u8]);
    fn handle_eof(&mut self, now: Instant);
    fn handle_io_error(&mut self, now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn recv(&mut self, now: Instant, timeout: Option<Duration>);
    fn is_receiving(&self) -> bool;
    fn poll_received(&mut self, now: Instant) -> Option<Received<In>>;
    fn send(&mut self, item: &Out) -> Result<(), SendError>;
    fn transmit(&mut self) -> &[u8];
    fn advance(&mut self, n: usize);
    fn queued(&self) -> usize;
    fn wants_read(&self) -> bool;
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_close(&mut self) -> Option<CloseHow>;
    fn close(&mut self, now: Instant);
    fn close_abortively(&mut self, now: Instant);
    fn shutdown(&mut self, now: Instant, deadline: Instant);
    fn mark_closing(&mut self);
    fn is_closing(&self) -> bool;
    fn is_closed(&self) -> bool;
    fn is_ready(&self) -> bool;
    fn is_input_finished(&self) -> bool;
    fn read_size(&self) -> usize;
    fn high_water(&self) -> usize;
}

impl<P: StreamServerProtocol> ConnOps<P::Request, P::Response> for Connection<P, ServerRole> {
    fn conn_info(&self) -> &ConnInfo {
        self.info()
    }
    fn handle_read(&mut self, now: Instant, data: &[u8]) {
        Connection::handle_read(self, now, data)
    }
    fn handle_eof(&mut self, now: Instant) {
        Connection::handle_eof(self, now)
    }
    fn handle_io_error(&mut self, now: Instant) {
        Connection::handle_io_error(self, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Connection::handle_timeout(self, now)
    }
    fn recv(&mut self, now: Instant, timeout: Option<Duration>) {
        Connection::recv(self, now, timeout)
    }
    fn is_receiving(&self) -> bool {
        Connection::is_receiving(self)
    }
    fn poll_received(&mut self, now: Instant) -> Option<Received<P::Request>> {
        Connection::poll_received(self, now)
    }
    fn send(&mut self, item: &P::Response) -> Result<(), SendError> {
        Connection::send(self, item)
    }
    fn transmit(&mut self) -> &[u8] {
        Connection::transmit(self)
    }
    fn advance(&mut self, n: usize) {
        Connection::advance(self, n)
    }
    fn queued(&self) -> usize {
        Connection::queued(self)
    }
    fn wants_read(&self) -> bool {
        Connection::wants_read(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Connection::poll_timeout(self)
    }
    fn poll_close(&mut self) -> Option<CloseHow> {
        Connection::poll_close(self)
    }
    fn close(&mut self, now: Instant) {
        Connection::close(self, now)
    }
    fn close_abortively(&mut self, now: Instant) {
        Connection::close_abortively(self, now)
    }
    fn shutdown(&mut self, now: Instant, deadline: Instant) {
        Connection::shutdown(self, now, deadline)
    }
    fn mark_closing(&mut self) {
        Connection::mark_closing(self)
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
    fn read_size(&self) -> usize {
        self.config().read_size
    }
    fn high_water(&self) -> usize {
        self.config().write_high_water
    }
}

/// One connection as an async handler sees it.
pub struct AsyncClient<Req, Resp> {
    stream: StreamSocket,
    conn: Box<dyn ConnOps<Req, Resp>>,
    shutdown: watch::Receiver<Option<Instant>>,
    shutdown_seen: bool,
    /// Receives completed during the current `handle` call.
    received: usize,
}

impl<Req, Resp> std::fmt::Debug for AsyncClient<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("peer", &self.conn.conn_info().peer)
            .field("closing", &self.conn.is_closing())
            .finish_non_exhaustive()
    }
}

impl<Req: Send + 'static, Resp: Send + Sync + 'static> AsyncClient<Req, Resp> {
    /// Waits for the next request, with no timeout.
    pub async fn recv(&mut self) -> Result<Req, RecvError> {
        self.recv_inner(None).await
    }

    /// Waits for the next complete request at most `timeout`; partial bytes are kept. A zero
    /// timeout returns a request already buffered, or times out at once.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Req, RecvError> {
        self.recv_inner(Some(timeout)).await
    }

    async fn recv_inner(&mut self, timeout: Option<Duration>) -> Result<Req, RecvError> {
        if self.conn.is_closing() {
            return Err(RecvError::Closed);
        }
        if !self.conn.is_receiving() {
            self.conn.recv(now(), timeout);
        }
        loop {
            match self.conn.poll_received(now()) {
                Some(Received::Request(r)) => {
                    self.received += 1;
                    return Ok(r);
                }
                Some(Received::ParseError(e)) => {
                    self.received += 1;
                    return Err(RecvError::Parse(e));
                }
                Some(Received::Timeout) => {
                    self.received += 1;
                    return Err(RecvError::Timeout);
                }
                None => {}
            }
            if self.conn.is_input_finished() || self.conn.is_closed() {
                self.received += 1;
                return Err(RecvError::Closed);
            }
            self.step().await;
        }
    }

    /// Encodes and sends one response; waits while the write queue is over its high-water
    /// mark. Fails with [`SendError::Closed`] once the client is closing.
    pub async fn send(&mut self, response: &Resp) -> Result<(), SendError> {
        self.conn.send(response)?;
        self.flush_some();
        while self.conn.queued() > self.conn.high_water() && !self.conn.is_closed() {
            self.step().await;
        }
        Ok(())
    }

    /// Closes gracefully: queued responses are flushed, TLS close_notify sent; the handler
    /// should return after it. Idempotent.
    pub async fn close(&mut self) {
        self.conn.close(now());
        self.flush_some();
    }

    /// True once the connection is closing (after `close`, the peer's EOF, a shutdown, and
    /// always in `on_disconnection`).
    pub fn is_closing(&self) -> bool {
        self.conn.is_closing() || self.conn.is_input_finished()
    }

    /// Who is connected, with TLS details.
    pub fn info(&self) -> &ConnInfo {
        self.conn.conn_info()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.info().peer
    }

    /// The server's address for this connection.
    pub fn local_addr(&self) -> &Addr {
        &self.info().local
    }

    /// The socket, for options.
    pub fn socket(&self) -> &StreamSocket {
        &self.stream
    }

    /// Writes what can be written without waiting.
    fn flush_some(&mut self) {
        loop {
            let data = self.conn.transmit();
            if data.is_empty() {
                return;
            }
            match self.stream.try_write(data) {
                Ok(n) => self.conn.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conn.handle_io_error(now());
                    return;
                }
            }
        }
    }

    /// One round of I/O: flush, then wait for the socket, a deadline or a shutdown.
    async fn step(&mut self) {
        self.flush_some();
        if !self.shutdown_seen
            && let Some(deadline) = *self.shutdown.borrow_and_update()
        {
            self.shutdown_seen = true;
            self.conn.shutdown(now(), deadline);
            return;
        }
        let want_write = !self.conn.transmit().is_empty();
        let want_read = self.conn.wants_read();
        let timer = self.conn.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            res = self.shutdown.changed(), if !self.shutdown_seen => {
                if res.is_err() {
                    self.shutdown_seen = true;
                    self.conn.shutdown(now(), now());
                }
            }
            res = self.stream.readable(), if want_read => {
                if res.is_err() {
                    self.conn.handle_io_error(now());
                    return;
                }
                let conn = &mut self.conn;
                read_into(&self.stream, conn.read_size(), |r| match r {
                    Ok([]) => conn.handle_eof(now()),
                    Ok(data) => conn.handle_read(now(), data),
                    Err(_) => conn.handle_io_error(now()),
                });
            }
            res = self.stream.writable(), if want_write => {
                if res.is_err() {
                    self.conn.handle_io_error(now());
                }
            }
            () = async { if let Some(t) = timer { tokio::time::sleep_until(t).await } }, if timer.is_some() => {
                self.conn.handle_timeout(now());
            }
            else => {
                // Nothing can happen (a receive is not armed and nothing is queued): the
                // connection is done.
                self.conn.mark_closing();
            }
        }
    }

    /// Drives the connection until the socket must be closed, then closes it.
    async fn finish(mut self) -> CloseHow {
        loop {
            self.flush_some();
            if let Some(how) = self.conn.poll_close() {
                let deadline = *self.shutdown.borrow();
                conn::close(self.stream, how, deadline).await;
                return how;
            }
            self.step().await;
        }
    }
}

fn is_closed_error(e: &HandlerError) -> bool {
    matches!(e.downcast_ref::<RecvError>(), Some(RecvError::Closed))
        || matches!(e.downcast_ref::<SendError>(), Some(SendError::Closed))
}

/// Runs an async handler on one accepted connection, to the end.
pub(crate) async fn run<H, P>(
    mut handler: H,
    stream: StreamSocket,
    conn: Connection<P, ServerRole>,
    shutdown: watch::Receiver<Option<Instant>>,
    log_connection: bool,
) where
    H: AsyncStreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    let mut client = AsyncClient {
        stream,
        conn: Box::new(conn) as Box<dyn ConnOps<H::Request, H::Response>>,
        shutdown,
        shutdown_seen: false,
        received: 0,
    };
    // The TLS handshake, if any.
    while !client.conn.is_ready() {
        if client.conn.is_closing() {
            client.finish().await;
            return;
        }
        client.step().await;
    }
    let peer = client.peer_addr().clone();
    if log_connection {
        tracing::info!("Accepted new connection (address = {peer})");
    } else {
        tracing::debug!("Accepted new connection (address = {peer})");
    }
    if let Err(e) = handler.on_connection(&mut client).await {
        if !is_closed_error(&e) {
            tracing::error!(error = %e, "exception occurred during processing of request");
        }
        client.conn.close_abortively(now());
        client.finish().await;
        return;
    }
    let mut failed = false;
    while !client.is_closing() {
        client.received = 0;
        match handler.handle(&mut client).await {
            Ok(()) if client.received == 0 && !client.is_closing() => {
                // Returned without receiving: close now instead of looping (decision 5).
                failed = true;
                break;
            }
            Ok(()) => {}
            Err(e) => {
                if !is_closed_error(&e) {
                    tracing::error!(error = %e, "exception occurred during processing of request");
                    failed = true;
                }
                break;
            }
        }
    }
    client.conn.mark_closing();
    handler.on_disconnection(&mut client).await;
    if failed {
        client.conn.close_abortively(now());
    } else {
        client.conn.close(now());
    }
    let how = client.finish().await;
    if log_connection {
        tracing::info!(?how, "{peer} disconnected");
    } else {
        tracing::debug!(?how, "{peer} disconnected");
    }
}
