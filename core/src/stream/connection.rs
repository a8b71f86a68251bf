//! [`Connection`]: one stream connection's bytes, deadlines and close, without a handler.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::action::{Action, Linger, Want};
use super::idle::IdleTimer;
use super::{CloseHow, HandshakeError, Role, StreamConfig};
use crate::handler::{ConnInfo, Received, ResponseSink, SendError, StreamSink};
use crate::panic_message;
use crate::protocol::{OwnedFrame, SerializeError, StreamProtocol};
use crate::push::{CloseAsked, Encoder, Outbox, Pusher};
use crate::stats::{CloseReason, ConnCounts, Counter};
#[cfg(feature = "tls")]
use crate::tls::TlsSession;

/// Shared payloads at least this large are queued without a copy; smaller ones are copied
/// into the write buffer, which is cheaper than a queue entry.
const SHARED_MIN: usize = 4096;

/// Most buffers given to one vectored write by [`Connection::write_to`].
const MAX_WRITE_SLICES: usize = 16;

/// Plaintext bytes of one TLS record: answers gathered past this go to rustls at once.
#[cfg(feature = "tls")]
const TLS_RECORD: usize = 16 * 1024;

/// Small reads in a row after which a connection reading in place goes back to reading
/// through the driver's shared buffer. A bulk request often ends with a short read; switching
/// back on that one read made the next request's first (full) read a copy.
const SMALL_READS_TO_COPY: u8 = 4;

mod chunk;
mod observe;

use chunk::Chunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS handshake under way.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Handshaking { deadline: Instant },
    /// Ready: messages flow both ways.
    Open,
    /// Flushing the write queue (and, for TLS, exchanging close_notify) before `then`.
    Closing {
        deadline: Instant,
        then: CloseHow,
        await_close_notify: bool,
    },
    /// Flushed after a graceful close: the driver sends FIN next ([`Action::ShutdownWrite`]).
    Fin { deadline: Instant },
    /// FIN sent; dropping input until the peer's EOF, an empty send queue or the deadline.
    Lingering(Linger),
    /// The driver must close the socket this way.
    Closed(CloseHow),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    Idle,
    Armed { deadline: Option<Instant> },
}

/// One stream connection: receive buffer and decoder, write queue, optional TLS, receive
/// deadline, graceful or abortive close. Generic over the protocol `P` and the side `R`.
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use easynet_core::ConnId;
/// use easynet_core::handler::{ConnInfo, Received};
/// use easynet_core::protocol::Stream;
/// use easynet_core::stream::{CloseHow, Connection, ServerRole, StreamConfig};
///
/// let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let info = ConnInfo::new(ConnId(1), addr, addr);
/// let now = Instant::now();
/// let mut conn: Connection<_, ServerRole> =
///     Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info);
///
/// conn.recv(now, Some(Duration::from_secs(5)));
/// conn.handle_read(now, b"hi\n");
/// let Some(Received::Request(line)) = conn.poll_received(now) else { panic!() };
/// conn.send(&line).unwrap();
/// assert_eq!(conn.transmit(), b"hi\n");
/// conn.advance(3);
/// conn.close(now);
/// assert_eq!(conn.poll_close(), Some(CloseHow::Graceful));
/// ```
pub struct Connection<P: StreamProtocol, R: Role<P>> {
    protocol: Arc<P>,
    decoder: P::Decoder,
    /// Received plaintext not yet decoded.
    rbuf: BytesMut,
    /// Large shared payloads queued as they are (no copy), ahead of `wbuf`.
    chunks: VecDeque<Chunk>,
    /// Bytes in `chunks`.
    chunked: usize,
    /// Bytes for the socket (ciphertext under TLS), after `chunks`.
    wbuf: BytesMut,
    /// Boxed: a rustls session is over a kilobyte, which a plain connection should not
    /// carry (an idle connection's memory is mostly this struct).
    #[cfg(feature = "tls")]
    tls: Option<Box<TlsSession>>,
    /// Answers encoded under TLS and not yet given to rustls: the answers of one turn go to
    /// rustls together (one record for several small answers, not one each), when bytes
    /// are taken for the socket or a record's worth has gathered.
    #[cfg(feature = "tls")]
    scratch: BytesMut,
    /// About how many ciphertext bytes rustls holds for the socket (plaintext queued since
    /// its buffer was last empty), so the write high-water mark covers them.
    #[cfg(feature = "tls")]
    tls_pending: usize,
    phase: Phase,
    recv: Recv,
    ready: bool,
    /// The peer sent EOF (or TLS close_notify).
    eof: bool,
    /// A read brought at least a quarter of `read_size` (4 KiB by default), and fewer than
    /// [`SMALL_READS_TO_COPY`] small reads came after it: read in place next time.
    large_reads: bool,
    /// Small reads in a row while `large_reads`.
    small_reads: u8,
    /// Bytes to read next: the configured read size, doubled after each read that filled
    /// it, up to [`StreamConfig::max_read_size`].
    read_size: usize,
    /// Sends are refused (close asked, or on_disconnection running).
    closing: bool,
    /// Server shutdown deadline, once a shutdown began (or the idle timeout fired: a
    /// shutdown of this connection alone).
    shutdown: Option<Instant>,
    /// "Accepted new connection" was logged (a server connection, once ready).
    announced: bool,
    /// The end was logged.
    farewell: bool,
    config: StreamConfig,
    info: ConnInfo,
    /// What pushers queue for this connection, once one was made.
    outbox: Option<Arc<Outbox>>,
    /// [`StreamConfig::idle_timeout`].
    idle: IdleTimer,
    /// Counts not yet added to the config's recorder (see `observe`).
    counts: ConnCounts,
    /// Why it ends: the first cause, set when closing begins.
    reason: Option<CloseReason>,
    /// The end was counted in the recorder.
    counted: bool,
    /// Why the TLS handshake failed, for a client to return. Boxed: only a failed
    /// handshake has one, and inline it would take 64 bytes of every connection.
    handshake_error: Option<Box<HandshakeError>>,
    _role: PhantomData<fn() -> R>,
}

impl<P: StreamProtocol, R: Role<P>> std::fmt::Debug for Connection<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.info.id)
            .field("peer", &self.info.peer)
            .field("phase", &self.phase)
            .field("received", &self.rbuf.len())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl<P: StreamProtocol, R: Role<P>> Connection<P, R> {
    /// A plain (no TLS) connection, ready at once.
    pub fn new(protocol: Arc<P>, config: StreamConfig, info: ConnInfo) -> Self {
        let decoder = protocol.new_decoder();
        Self {
            protocol,
            decoder,
            rbuf: BytesMut::new(),
            chunks: VecDeque::new(),
            chunked: 0,
            wbuf: BytesMut::new(),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            scratch: BytesMut::new(),
            #[cfg(feature = "tls")]
            tls_pending: 0,
            phase: Phase::Open,
            recv: Recv::Idle,
            ready: true,
            eof: false,
            large_reads: false,
            small_reads: 0,
            read_size: config.read_size,
            closing: false,
            shutdown: None,
            announced: false,
            farewell: false,
            idle: IdleTimer::new(config.idle_timeout),
            config,
            info,
            outbox: None,
            counts: ConnCounts::default(),
            reason: None,
            counted: false,
            handshake_error: None,
            _role: PhantomData,
        }
    }

    /// A TLS connection; the handshake must finish within the configured timeout.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        now: Instant,
        protocol: Arc<P>,
        config: StreamConfig,
        info: ConnInfo,
        mut tls: TlsSession,
    ) -> Self {
        let deadline = crate::deadline_after(now, config.tls_handshake_timeout);
        let mut conn = Self::new(protocol, config, info);
        tls.write_ciphertext(&mut conn.wbuf); // a client's hello
        conn.tls = Some(Box::new(tls));
        conn.phase = Phase::Handshaking { deadline };
        conn.ready = false;
        conn
    }

    /// Who is at the other end; TLS details are filled in once the handshake is done.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The settings this connection runs with.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// True once messages can flow (at once for plain TCP, after the TLS handshake).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Why the TLS handshake failed, once it has (a client returns it from its connect);
    /// `None` while it may still complete, after it did, and on a plain connection.
    /// [`HandshakeError::Abandoned`] when the connection was closed or aborted during it.
    /// The cause is taken: a second call returns `Abandoned`.
    pub fn take_handshake_error(&mut self) -> Option<HandshakeError> {
        if self.ready || !self.is_closing() {
            return None;
        }
        Some(
            self.handshake_error
                .take()
                .map_or(HandshakeError::Abandoned, |e| *e),
        )
    }

    /// True once sends are refused: a close began, or the connection is closed.
    pub fn is_closing(&self) -> bool {
        self.closing || !matches!(self.phase, Phase::Handshaking { .. } | Phase::Open)
    }

    /// True once the driver has been told to close the socket.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed(_))
    }

    /// True when no more requests will come: the peer sent EOF, a shutdown or close began.
    pub fn is_input_finished(&self) -> bool {
        self.eof || self.shutdown.is_some() || !matches!(self.phase, Phase::Open)
    }

    /// Bytes received and not yet decoded (a partial message, or messages not yet asked for).
    pub fn buffered(&self) -> usize {
        self.rbuf.len()
    }

    /// `now + shutdown_timeout`, or far in the future when the clock cannot add it.
    fn close_deadline(&self, now: Instant) -> Instant {
        crate::deadline_after(now, self.config.shutdown_timeout)
    }

    fn fail(&mut self, now: Instant) {
        // Flush what is queued (a TLS alert, earlier responses), then reset.
        self.end_because(CloseReason::Error);
        self.closing = true;
        let mut deadline = self.close_deadline(now);
        if let Some(d) = self.shutdown {
            deadline = deadline.min(d);
        }
        self.phase = Phase::Closing {
            deadline,
            then: CloseHow::Abort,
            await_close_notify: false,
        };
    }

    /// Bytes read from the socket.
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) {
        if !data.is_empty() {
            self.idle.touch(now);
        }
        match &mut self.phase {
            Phase::Closed(_) | Phase::Fin { .. } => return,
            Phase::Lingering(l) => {
                l.heard |= !data.is_empty();
                return; // after FIN, input is dropped unread
            }
            _ => {}
        }
        // First, so that a switch back to small reads can let the big buffer go.
        self.note_read(data.len());
        self.counts.bytes_in += data.len() as u64;
        #[cfg(feature = "tls")]
        self.flush_plaintext();
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            let res = tls.read_ciphertext(data, &mut self.rbuf);
            tls.write_ciphertext(&mut self.wbuf);
            self.tls_pending = 0;
            if let Err(err) = res {
                if matches!(self.phase, Phase::Handshaking { .. }) {
                    self.counts.handshake_failures += 1;
                    if R::SERVER {
                        // A client can fail handshakes at will: a budget per peer host.
                        if let Some(suppressed) = self.log_budget(now) {
                            tracing::warn!(conn = %self.info.id, peer = %self.info.peer, error = %err, suppressed, "error during TLS handshake");
                        }
                    } else {
                        // The client's connect returns it.
                        tracing::debug!(peer = %self.info.peer, error = %err, "error during TLS handshake");
                    }
                    self.handshake_error = Some(Box::new(match err {
                        crate::tls::TlsError::Rustls(e) => HandshakeError::Tls(e),
                        crate::tls::TlsError::NotTls(b) => HandshakeError::NotTls(b),
                        crate::tls::TlsError::Io(e) => HandshakeError::Io(e),
                    }));
                } else {
                    tracing::debug!(conn = %self.info.id, peer = %self.info.peer, error = %err, "TLS error");
                }
                self.rbuf.clear();
                self.fail(now);
                return;
            }
            if let Phase::Handshaking { .. } = self.phase
                && !tls.is_handshaking()
            {
                self.phase = Phase::Open;
                self.ready = true;
                self.info.tls = Some(tls.info());
            }
            if tls.peer_closed() {
                self.eof = true;
            }
            if matches!(self.phase, Phase::Closing { .. }) {
                self.rbuf.clear(); // data after we closed is dropped
            }
            return;
        }
        if matches!(self.phase, Phase::Open) && !self.eof {
            self.rbuf.extend_from_slice(data);
        }
    }

    /// Chooses how the next read is done (see [`read_buffer`](Self::read_buffer)) and how
    /// large it is ([`read_size`](Self::read_size)).
    fn note_read(&mut self, n: usize) {
        if n >= self.read_size {
            // The read was filled: more is likely waiting. Fewer, larger reads.
            self.read_size = (self.read_size * 2).min(self.config.max_read_size());
        }
        if n >= self.config.read_size / 4 {
            self.large_reads = true;
            self.small_reads = 0;
        } else if self.large_reads {
            self.small_reads += 1;
            if self.small_reads >= SMALL_READS_TO_COPY {
                self.large_reads = false;
                self.read_size = self.config.read_size;
                if self.rbuf.is_empty() {
                    // Small messages again: do not keep a read-sized buffer for them.
                    self.rbuf = BytesMut::new();
                }
            }
        }
    }

    /// The receive buffer, with room for one read, when the driver may read straight into
    /// it: a plain open connection that read at least a quarter of the configured read size
    /// lately (until four small reads in a row). That saves a copy per read for bulk
    /// transfers and pipelined requests; small reads go through [`handle_read`](Self::handle_read) so that an
    /// idle connection does not keep a read-sized buffer. After reading, call
    /// [`handle_read_in_place`](Self::handle_read_in_place).
    pub fn read_buffer(&mut self) -> Option<&mut BytesMut> {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return None;
        }
        if !self.large_reads || !matches!(self.phase, Phase::Open) || self.eof {
            return None;
        }
        self.rbuf.reserve(self.read_size);
        Some(&mut self.rbuf)
    }

    /// Bytes the driver reads next: [`StreamConfig::read_size`], larger while reads fill it
    /// (up to [`StreamConfig::max_read_size`]), back to it once reads are small again.
    pub fn read_size(&self) -> usize {
        self.read_size
    }

    /// `n` bytes were read into [`read_buffer`](Self::read_buffer); 0 means end of stream.
    pub fn handle_read_in_place(&mut self, now: Instant, n: usize) {
        self.counts.bytes_in += n as u64;
        if n == 0 {
            self.handle_eof(now);
        } else {
            self.idle.touch(now);
        }
        self.note_read(n);
    }

    /// The peer closed its write side (read returned 0).
    pub fn handle_eof(&mut self, now: Instant) {
        let _ = now;
        self.eof = true;
        if !self.closing {
            self.end_because(CloseReason::ByPeer);
        }
        if let Phase::Handshaking { .. } = self.phase {
            self.handshake_error
                .get_or_insert_with(|| Box::new(HandshakeError::Eof));
            self.closing = true;
            self.phase = Phase::Closed(CloseHow::Abort);
        }
    }

    /// Reading or writing failed (reset, broken pipe): nothing more can be sent.
    pub fn handle_io_error(&mut self, now: Instant) {
        let _ = now;
        self.end_because(CloseReason::Reset);
        self.eof = true;
        self.closing = true;
        self.clear_writes();
        if !self.is_closed() {
            self.phase = Phase::Closed(CloseHow::Abort);
        }
    }

    /// The answer to [`Action::QueryUnsent`]: how many bytes the kernel still holds for
    /// the peer, `None` if the driver cannot tell (the linger then waits for the peer's
    /// EOF or the deadline only).
    pub fn handle_unsent(&mut self, now: Instant, unsent: Option<usize>) {
        if let Phase::Lingering(linger) = &mut self.phase
            && linger.unsent(now, unsent)
        {
            self.phase = Phase::Closed(CloseHow::Graceful);
        }
    }

    /// A deadline may have passed: the handshake's, the idle timeout's or the close's.
    /// Receive deadlines are reported by [`poll_received`](Self::poll_received).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Handshaking { .. } | Phase::Open) && self.idle.expired(now) {
            self.idle_expired(now);
        }
        match self.phase {
            Phase::Handshaking { deadline } if now >= deadline => {
                tracing::debug!(conn = %self.info.id, peer = %self.info.peer, "TLS handshake timed out");
                self.counts.handshake_failures += 1;
                self.end_because(CloseReason::Timeout);
                self.handshake_error = Some(Box::new(HandshakeError::Timeout(
                    self.config.tls_handshake_timeout,
                )));
                self.closing = true;
                self.clear_writes();
                self.phase = Phase::Closed(CloseHow::Abort);
            }
            Phase::Closing { deadline, .. } if now >= deadline => {
                self.end_because(CloseReason::Timeout);
                self.clear_writes();
                self.phase = Phase::Closed(CloseHow::Abort);
            }
            // The peer did not finish in time; everything we wrote went out at least.
            Phase::Lingering(l) if now >= l.deadline => {
                self.phase = Phase::Closed(CloseHow::Graceful);
            }
            Phase::Open if self.shutdown.is_some_and(|d| now >= d) => {
                tracing::debug!(conn = %self.info.id, peer = %self.info.peer, "still open at the shutdown deadline");
                self.end_because(CloseReason::Shutdown);
                self.closing = true;
                self.clear_writes();
                self.phase = Phase::Closed(CloseHow::Abort);
            }
            _ => {}
        }
    }

    /// Nothing came for [`StreamConfig::idle_timeout`]: a handshake is dropped; an open
    /// connection ends as at a server shutdown of its own (reading stops, what was read is
    /// answered, then a graceful close by `now + shutdown_timeout`).
    fn idle_expired(&mut self, now: Instant) {
        tracing::debug!(conn = %self.info.id, peer = %self.info.peer, "idle timeout: closing");
        // Counted as a timeout, whatever the close that follows says.
        self.end_because(CloseReason::Timeout);
        if let Phase::Handshaking { .. } = self.phase {
            self.counts.handshake_failures += 1;
            self.closing = true;
            self.clear_writes();
            self.phase = Phase::Closed(CloseHow::Abort);
            return;
        }
        let deadline = self.close_deadline(now);
        self.shutdown = Some(self.shutdown.map_or(deadline, |d| d.min(deadline)));
    }

    /// Arms a receive: the next [`poll_received`](Self::poll_received) returns a message, a
    /// parse error, or a timeout once `timeout` has passed.
    /// A timeout the clock cannot add (`Duration::MAX`) means no deadline.
    pub fn recv(&mut self, now: Instant, timeout: Option<Duration>) {
        self.recv = Recv::Armed {
            deadline: timeout.and_then(|t| now.checked_add(t)),
        };
    }

    /// Disarms the receive (a dropped async receive), so no stale deadline stays behind.
    pub fn cancel_recv(&mut self) {
        self.recv = Recv::Idle;
    }

    /// True while a receive is armed.
    pub fn is_receiving(&self) -> bool {
        matches!(self.recv, Recv::Armed { .. })
    }

    /// What the armed receive got, if anything yet. Complete messages already buffered come
    /// first, even after EOF; then a timeout if the deadline has passed.
    pub fn poll_received(&mut self, now: Instant) -> Option<Received<R::Incoming>> {
        let Recv::Armed { deadline } = self.recv else {
            return None;
        };
        if !self.ready || self.is_closed() {
            return None;
        }
        let (protocol, decoder, rbuf) = (&self.protocol, &mut self.decoder, &mut self.rbuf);
        let decoded = match catch_unwind(AssertUnwindSafe(|| R::decode(protocol, decoder, rbuf))) {
            Ok(decoded) => decoded,
            Err(panic) => {
                // The user's framing or serializer panicked: its state is unknown, so this
                // one connection ends; the server goes on.
                self.counts.handler_panics += 1;
                if let Some(suppressed) = self.log_budget(now) {
                    tracing::error!(conn = %self.info.id, peer = %self.info.peer, error = %panic_message("decoder", panic), suppressed, "exception occurred during processing of request");
                }
                self.recv = Recv::Idle;
                self.rbuf.clear();
                self.fail(now);
                return None;
            }
        };
        let received = match decoded {
            Ok(Some(item)) => {
                self.counts.requests += 1;
                Received::Request(item)
            }
            Err(err) => {
                self.counts.parse_errors += 1;
                Received::ParseError(err)
            }
            Ok(None) => match deadline {
                Some(d) if now >= d && !self.is_input_finished() => Received::Timeout,
                _ => return None,
            },
        };
        self.recv = Recv::Idle;
        Some(received)
    }

    /// Encodes and queues one message.
    pub fn send(&mut self, item: &R::Outgoing) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            // Gathered with the turn's other answers (`flush_plaintext`).
            let before = self.scratch.len();
            R::encode(&self.protocol, item, &mut self.scratch)?;
            self.tls_pending += self.scratch.len() - before;
            if self.scratch.len() >= TLS_RECORD {
                self.flush_plaintext();
            }
            return Ok(());
        }
        if let Some(bytes) = R::shared(&self.protocol, item).filter(|b| b.len() >= SHARED_MIN) {
            // What was encoded before goes first.
            if !self.wbuf.is_empty() {
                let head = self.wbuf.split().freeze();
                self.chunked += head.len();
                self.chunks.push_back(head.into());
            }
            self.chunked += bytes.len();
            self.chunks.push_back(bytes.into());
            return Ok(());
        }
        R::encode(&self.protocol, item, &mut self.wbuf)?;
        Ok(())
    }

    /// Encodes and queues one message, taking it: the same bytes as
    /// [`send`](Self::send), but a large message's own buffer (a `String` line, `Bytes`)
    /// is queued as it is instead of being copied, when the protocol allows
    /// ([`StreamServerProtocol::encode_response_owned`](crate::protocol::StreamServerProtocol::encode_response_owned)).
    pub fn send_owned(&mut self, item: R::Outgoing) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            // rustls copies the plaintext into its records anyway.
            return self.send(&item);
        }
        if let Some(frame) = R::encode_owned(&self.protocol, item, &mut self.wbuf)? {
            self.queue_owned(frame);
        }
        Ok(())
    }

    /// Queues a frame whose head is in `wbuf` already: a small body is copied after it
    /// (cheaper than a queue entry), a large one queued as it is; the tail goes after it.
    fn queue_owned(&mut self, frame: OwnedFrame) {
        let OwnedFrame { body, tail } = frame;
        if body.len() < SHARED_MIN {
            self.wbuf.extend_from_slice(body.as_slice());
        } else {
            // What was encoded before goes first (the frame's head with it).
            if !self.wbuf.is_empty() {
                let head = self.wbuf.split().freeze();
                self.chunked += head.len();
                self.chunks.push_back(head.into());
            }
            self.chunked += body.len();
            self.chunks.push_back(body.into());
        }
        // After the queued chunks: written with them in one vectored write.
        self.wbuf.extend_from_slice(tail);
    }

    fn clear_writes(&mut self) {
        self.chunks.clear();
        self.chunked = 0;
        self.wbuf.clear();
        #[cfg(feature = "tls")]
        {
            self.tls_pending = 0;
            self.scratch.clear();
        }
    }

    /// Gives the gathered answers to rustls (encrypted into records there), before any
    /// ciphertext is taken for the socket.
    #[cfg(feature = "tls")]
    fn flush_plaintext(&mut self) {
        if !self.scratch.is_empty()
            && let Some(tls) = self.tls.as_mut()
        {
            tls.write_plaintext(&self.scratch);
            self.scratch.clear();
        }
    }

    /// Bytes to write to the socket, in order; empty when nothing is queued.
    pub fn transmit(&mut self) -> &[u8] {
        #[cfg(feature = "tls")]
        self.flush_plaintext();
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            tls.write_ciphertext(&mut self.wbuf);
            self.tls_pending = 0;
        }
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.wbuf,
        }
    }

    /// Writes queued bytes to `out` (the socket) with one write call, instead of
    /// [`transmit`](Self::transmit) + [`advance`](Self::advance). Under TLS the records go
    /// from rustls's buffer straight to `out` (a vectored write, as rustls's `write_tls`)
    /// rather than through the write queue: a copy less per byte sent. Returns the bytes
    /// written, 0 when nothing is queued; `out`'s errors (`WouldBlock`) are returned as
    /// they are, for the driver to handle as it would a failed socket write.
    ///
    /// The core still owns no socket: `out` is any [`io::Write`](std::io::Write).
    pub fn write_to(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<usize> {
        #[cfg(feature = "tls")]
        self.flush_plaintext();
        #[cfg(feature = "tls")]
        if self.chunks.is_empty()
            && self.wbuf.is_empty()
            && !matches!(self.phase, Phase::Closed(_))
            && let Some(tls) = self.tls.as_mut()
        {
            let n = tls.write_tls(out)?;
            self.counts.bytes_out += n as u64;
            self.tls_pending = if tls.wants_write() {
                self.tls_pending.saturating_sub(n)
            } else {
                0
            };
            return Ok(n);
        }
        let n = if self.chunks.is_empty() {
            if self.wbuf.is_empty() {
                return Ok(0);
            }
            out.write(&self.wbuf)?
        } else {
            // Queued chunks and the buffer after them in one vectored write (a large
            // owned line and its separator, pushed frames).
            let mut slices = [std::io::IoSlice::new(&[]); MAX_WRITE_SLICES];
            let mut count = 0;
            for chunk in self.chunks.iter().take(MAX_WRITE_SLICES) {
                slices[count] = std::io::IoSlice::new(chunk);
                count += 1;
            }
            if count < MAX_WRITE_SLICES && !self.wbuf.is_empty() {
                slices[count] = std::io::IoSlice::new(&self.wbuf);
                count += 1;
            }
            if count == 1 {
                out.write(&slices[0])?
            } else {
                out.write_vectored(&slices[..count])?
            }
        };
        // Counted at once (no fold later): a loop may skip the `poll_action` after a write
        // that emptied the queue (`Driven::wants_write`), and the stats stay current.
        self.drain_queue(n);
        if let Some(r) = &self.config.recorder {
            r.add(Counter::BytesOut, n as u64);
        }
        Ok(n)
    }

    /// True when bytes wait to be written to the socket.
    pub fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls
            && (tls.wants_write() || !self.scratch.is_empty())
        {
            return true;
        }
        self.chunked + self.wbuf.len() > 0
    }

    /// `n` bytes of [`transmit`](Self::transmit) were written.
    pub fn advance(&mut self, n: usize) {
        self.counts.bytes_out += n as u64;
        self.drain_queue(n);
    }

    /// Takes `n` written bytes off the write queue.
    fn drain_queue(&mut self, n: usize) {
        let mut n = n;
        // Across chunks too: `write_to` writes several at once.
        while let Some(chunk) = self.chunks.front_mut() {
            let k = n.min(chunk.len());
            chunk.advance(k);
            self.chunked -= k;
            n -= k;
            if !chunk.is_empty() {
                return;
            }
            self.chunks.pop_front();
        }
        self.wbuf.advance(n.min(self.wbuf.len()));
    }

    /// Bytes queued for the socket (under TLS, ciphertext still in rustls counted by the
    /// plaintext it holds).
    pub fn queued(&self) -> usize {
        #[cfg(feature = "tls")]
        let pending = self.tls_pending;
        #[cfg(not(feature = "tls"))]
        let pending = 0;
        self.chunked + self.wbuf.len() + pending
    }

    /// True when the driver should read from the socket.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Handshaking { .. } => true,
            Phase::Open => {
                self.is_receiving()
                    && !self.eof
                    && self.shutdown.is_none()
                    && self.queued() < self.config.write_high_water
            }
            Phase::Closing {
                await_close_notify, ..
            } => await_close_notify && !self.eof,
            Phase::Lingering(_) => !self.eof,
            Phase::Fin { .. } | Phase::Closed(_) => false,
        }
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) (or, for a receive
    /// deadline, [`poll_received`](Self::poll_received)) has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle.next();
        match self.phase {
            Phase::Handshaking { deadline } => Some(idle.map_or(deadline, |i| i.min(deadline))),
            Phase::Closing { deadline, .. } | Phase::Fin { deadline } => Some(deadline),
            Phase::Lingering(l) => Some(l.next_wake()),
            Phase::Open => {
                let recv = match self.recv {
                    Recv::Armed { deadline } => deadline,
                    Recv::Idle => None,
                };
                // A shutdown's deadline holds even for an owner that never closes (an async
                // handler awaiting something else).
                earliest(earliest(recv, self.shutdown), idle)
            }
            Phase::Closed(_) => None,
        }
    }

    /// Begins a graceful close: queued bytes are flushed (and TLS close_notify exchanged when
    /// standard-compatible), bounded by the shutdown timeout; then the socket is closed.
    pub fn close(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Handshaking { .. } | Phase::Open) {
            return;
        }
        self.end_because(if self.shutdown.is_some() {
            CloseReason::Shutdown
        } else if self.eof {
            CloseReason::ByPeer
        } else {
            CloseReason::Normal
        });
        self.closing = true;
        if let Phase::Handshaking { .. } = self.phase {
            self.phase = Phase::Closed(CloseHow::Abort);
            return;
        }
        let mut deadline = self.close_deadline(now);
        if let Some(d) = self.shutdown {
            deadline = deadline.min(d);
        }
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut await_close_notify = false;
        #[cfg(feature = "tls")]
        self.flush_plaintext(); // the answers go before the close_notify
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut()
            && self.config.tls_standard_compatible
        {
            tls.send_close_notify();
            // During a server shutdown the deadline is for flushing answers, not for
            // waiting on every idle peer's close_notify.
            await_close_notify = !self.eof && self.shutdown.is_none();
        }
        self.rbuf.clear();
        self.phase = Phase::Closing {
            deadline,
            then: CloseHow::Graceful,
            await_close_notify,
        };
    }

    /// Flushes what is queued, then closes with a reset (after a handler error).
    pub fn close_abortively(&mut self, now: Instant) {
        if !self.is_closed() {
            self.rbuf.clear();
            self.fail(now);
        }
    }

    /// Drops everything and closes with a reset now.
    pub fn abort(&mut self) {
        self.end_because(CloseReason::Normal);
        self.closing = true;
        self.clear_writes();
        self.rbuf.clear();
        self.phase = Phase::Closed(CloseHow::Abort);
    }

    /// A server shutdown began: read nothing more; the owner answers what is buffered and
    /// closes by `deadline`. A connection still in its TLS handshake is dropped.
    pub fn shutdown(&mut self, now: Instant, deadline: Instant) {
        let _ = now;
        self.shutdown = Some(self.shutdown.map_or(deadline, |d| d.min(deadline)));
        match &mut self.phase {
            Phase::Handshaking { .. } => {
                self.end_because(CloseReason::Shutdown);
                self.abort();
            }
            Phase::Closing { deadline: d, .. } | Phase::Fin { deadline: d } => {
                *d = (*d).min(deadline);
            }
            Phase::Lingering(l) => l.deadline = l.deadline.min(deadline),
            Phase::Open | Phase::Closed(_) => {}
        }
    }

    /// Marks the connection closing without closing it yet (sends are refused from now on).
    pub fn mark_closing(&mut self) {
        self.closing = true;
    }

    /// True when a close's flush (and close_notify exchange) is complete.
    fn flushed(&mut self, await_close_notify: bool) -> bool {
        #[allow(unused_mut)]
        let mut waiting = await_close_notify && !self.eof;
        #[cfg(feature = "tls")]
        self.flush_plaintext();
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            tls.write_ciphertext(&mut self.wbuf);
            self.tls_pending = 0;
            waiting &= !tls.peer_closed();
        }
        self.queued() == 0 && !waiting
    }

    /// `Some` once the socket must be closed, and how (a graceful close sends FIN and
    /// closes, without lingering); then on every later call. For the clients' loops;
    /// a server's loop uses [`poll_action`](Self::poll_action).
    pub fn poll_close(&mut self) -> Option<CloseHow> {
        let phase = self.phase; // a copy: `flushed` needs `self`
        match phase {
            Phase::Closing {
                then,
                await_close_notify,
                ..
            } if self.flushed(await_close_notify) => self.phase = Phase::Closed(then),
            Phase::Fin { .. } | Phase::Lingering(_) => {
                self.phase = Phase::Closed(CloseHow::Graceful);
            }
            _ => {}
        }
        match self.phase {
            Phase::Closed(how) => Some(how),
            _ => None,
        }
    }

    /// A [`Pusher`] for this connection: send to it from anywhere (server push). Every
    /// pusher of a connection shares one queue, bounded by
    /// [`write_high_water`](StreamConfig::write_high_water).
    pub fn pusher(&mut self) -> Pusher<R::Outgoing> {
        let limit = self.config.write_high_water;
        let outbox = self
            .outbox
            .get_or_insert_with(|| Arc::new(Outbox::new(limit)))
            .clone();
        if self.is_closing() {
            outbox.close();
        }
        let encoder: Arc<dyn Encoder<R::Outgoing>> =
            Arc::new(RoleEncoder::<P, R>(self.protocol.clone(), PhantomData));
        Pusher::new(outbox, encoder, self.info.clone())
    }

    /// True once a pusher was made: the driver must poll [`poll_push`](Self::poll_push).
    pub fn has_pushers(&self) -> bool {
        self.outbox.is_some()
    }

    /// Ready when pushed frames or a close asked from outside wait; registers the waker.
    pub fn poll_push(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match &self.outbox {
            Some(outbox) => outbox.poll(cx),
            None => std::task::Poll::Pending,
        }
    }

    /// A close asked through a pusher, taken once. Before a graceful one, every frame
    /// pushed before it is queued (past the high-water mark too): it goes out first.
    #[inline]
    pub(crate) fn take_close_asked(&mut self) -> Option<CloseAsked> {
        let how = self.outbox.as_ref().and_then(|o| o.take_close())?;
        if how == CloseAsked::Graceful
            && let Some(outbox) = self.outbox.clone()
            && !self.is_closing()
        {
            outbox.drain(|frame| {
                self.queue_frame(frame);
                Ok(())
            });
        }
        Some(how)
    }

    /// Moves pushed frames into the write queue while it is below its high-water mark.
    fn take_pushed(&mut self) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        if self.is_closing() {
            outbox.close();
            return;
        }
        if !outbox.has_frames() {
            return;
        }
        let high_water = self.config.write_high_water;
        outbox.drain(|frame| {
            if self.queued() >= high_water {
                return Err(frame);
            }
            self.queue_frame(frame);
            Ok(())
        });
    }

    /// Queues an encoded frame after what is queued: small frames are copied into the write
    /// buffer so that many go out in one write; large ones are queued as they are (shared,
    /// no copy), as `send` does.
    fn queue_frame(&mut self, frame: Bytes) {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            // After the answers gathered before it (`send`), in order.
            self.tls_pending += frame.len();
            if frame.len() >= TLS_RECORD {
                self.flush_plaintext();
                if let Some(tls) = self.tls.as_mut() {
                    tls.write_plaintext(&frame);
                }
            } else {
                self.scratch.extend_from_slice(&frame);
                if self.scratch.len() >= TLS_RECORD {
                    self.flush_plaintext();
                }
            }
            return;
        }
        if frame.len() < SHARED_MIN && self.chunks.is_empty() {
            self.wbuf.extend_from_slice(&frame);
            return;
        }
        if !self.wbuf.is_empty() {
            let head = self.wbuf.split().freeze();
            self.chunked += head.len();
            self.chunks.push_back(head.into());
        }
        self.chunked += frame.len();
        self.chunks.push_back(frame.into());
    }

    /// What the driver does next: the one question a server's loop asks (see
    /// [`Action`]). Logs the connection's start (once ready) and end.
    pub fn poll_action(&mut self, now: Instant) -> Action {
        self.idle.start(now);
        self.take_pushed();
        self.fold_counts();
        if !self.announced && self.ready && R::SERVER {
            self.announced = true;
            let peer = &self.info.peer;
            if self.config.log_connections {
                tracing::info!(conn = %self.info.id, "Accepted new connection (address = {peer})");
            } else {
                tracing::debug!(conn = %self.info.id, "Accepted new connection (address = {peer})");
            }
        }
        loop {
            match self.phase {
                Phase::Handshaking { .. } | Phase::Open => {
                    return Action::Io(Want {
                        read: self.wants_read(),
                        write: self.wants_write(),
                        timeout: self.poll_timeout(),
                        resume: false,
                    });
                }
                Phase::Closing {
                    deadline,
                    then,
                    await_close_notify,
                } => {
                    if !self.flushed(await_close_notify) {
                        return Action::Io(Want {
                            read: self.wants_read(),
                            write: self.wants_write(),
                            timeout: Some(deadline),
                            resume: false,
                        });
                    }
                    self.phase = match then {
                        CloseHow::Graceful => Phase::Fin { deadline },
                        CloseHow::Abort => Phase::Closed(CloseHow::Abort),
                    };
                }
                Phase::Fin { deadline } => {
                    self.phase = Phase::Lingering(Linger::new(now, deadline));
                    return Action::ShutdownWrite;
                }
                Phase::Lingering(l) => {
                    if self.eof || now >= l.deadline {
                        self.phase = Phase::Closed(CloseHow::Graceful);
                    } else if l.query_at.is_some_and(|q| q <= now) {
                        return Action::QueryUnsent;
                    } else {
                        return Action::Io(Want {
                            read: true,
                            write: false,
                            timeout: Some(l.next_wake()),
                            resume: false,
                        });
                    }
                }
                Phase::Closed(how) => {
                    self.count_end();
                    if self.announced && !self.farewell {
                        self.farewell = true;
                        let peer = &self.info.peer;
                        if self.config.log_connections {
                            tracing::info!(conn = %self.info.id, ?how, "{peer} disconnected");
                        } else {
                            tracing::debug!(conn = %self.info.id, ?how, "{peer} disconnected");
                        }
                    }
                    return Action::Close(how);
                }
            }
        }
    }
}

/// The earlier of two optional instants (asked at every `poll_action`).
#[inline]
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<P: StreamProtocol, R: Role<P>> ResponseSink<R::Outgoing> for Connection<P, R> {
    fn send(&mut self, response: &R::Outgoing) -> Result<(), SendError> {
        Connection::send(self, response)
    }

    fn send_owned(&mut self, response: R::Outgoing) -> Result<(), SendError> {
        Connection::send_owned(self, response)
    }

    fn is_closing(&self) -> bool {
        Connection::is_closing(self)
    }
}

impl<P: StreamProtocol, R: Role<P>> StreamSink<R::Outgoing> for Connection<P, R> {
    fn info(&self) -> &ConnInfo {
        &self.info
    }

    fn pusher(&mut self) -> Pusher<R::Outgoing> {
        Connection::pusher(self)
    }

    fn input_finished(&self) -> bool {
        self.is_input_finished()
    }
}

/// Encodes outgoing messages for pushers, by the connection's role.
struct RoleEncoder<P, R>(Arc<P>, PhantomData<fn() -> R>);

impl<P: StreamProtocol, R: Role<P>> Encoder<R::Outgoing> for RoleEncoder<P, R> {
    fn encode(&self, item: &R::Outgoing, dst: &mut BytesMut) -> Result<(), SerializeError> {
        R::encode(&self.0, item, dst)
    }
}

impl<P: StreamProtocol, R: Role<P>> Drop for Connection<P, R> {
    fn drop(&mut self) {
        self.count_end(); // dropped without reaching `Close` (a failed factory, a driver error)
        // Pushers learn the connection is gone.
        if let Some(outbox) = &self.outbox {
            outbox.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnId;
    use crate::protocol::Stream;
    use crate::stream::ServerRole;

    #[test]
    fn in_place_reads_survive_a_short_read_and_end_after_four() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = ConnInfo::new(ConnId(1), addr, addr);
        let config = StreamConfig::default();
        let read_size = config.read_size;
        let mut conn: Connection<_, ServerRole> =
            Connection::new(Arc::new(Stream::raw()), config, info);
        let now = Instant::now();
        assert!(
            conn.read_buffer().is_none(),
            "small reads until a large one"
        );
        conn.handle_read(now, &vec![b'x'; read_size]);
        // A bulk request's short last read keeps the next read in place.
        for _ in 0..SMALL_READS_TO_COPY - 1 {
            let buf = conn.read_buffer().expect("in place");
            buf.extend_from_slice(b"short");
            conn.handle_read_in_place(now, 5);
        }
        assert!(conn.read_buffer().is_some());
        conn.rbuf.clear(); // decoded
        conn.handle_read(now, b"short");
        assert!(conn.read_buffer().is_none(), "small messages again");
        assert!(
            conn.rbuf.capacity() < read_size,
            "no read-sized buffer kept for them"
        );
    }

    #[test]
    fn large_shared_payloads_are_queued_without_copy_and_keep_their_order() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = ConnInfo::new(ConnId(1), addr, addr);
        let mut conn: Connection<_, ServerRole> =
            Connection::new(Arc::new(Stream::raw()), StreamConfig::default(), info);
        let big = Bytes::from(vec![b'b'; 10_000]);
        let small = |c: u8| Bytes::from(vec![c; 10]);
        conn.send(&small(b'a')).unwrap();
        conn.send(&big).unwrap();
        conn.send(&small(b'c')).unwrap();
        assert_eq!(conn.queued(), 10_020);
        // The big payload is the very same allocation, not a copy.
        conn.advance(10);
        assert_eq!(conn.transmit().as_ptr(), big.as_ptr());
        let mut out = vec![b'a'; 10];
        while !conn.transmit().is_empty() {
            let n = conn.transmit().len().min(3_000); // partial writes
            out.extend_from_slice(&conn.transmit()[..n]);
            conn.advance(n);
        }
        let mut expected = vec![b'a'; 10];
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&[b'c'; 10]);
        assert_eq!(out, expected);
        assert_eq!(conn.queued(), 0);
        conn.close(Instant::now());
        assert_eq!(conn.poll_close(), Some(CloseHow::Graceful));
    }

    /// A writer that takes at most `max` bytes a call, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
    }

    impl std::io::Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn large_owned_lines_are_queued_as_they_are_and_written_in_order() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = ConnInfo::new(ConnId(1), addr, addr);
        let mut conn: Connection<_, ServerRole> =
            Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info);
        // Spare room: the separator goes in it. None: it follows as the frame's tail.
        let mut roomy = String::with_capacity(6_000);
        roomy.push_str(&"r".repeat(5_000));
        let tight = "t".repeat(5_000);
        let ptr = roomy.as_ptr();
        conn.send_owned("a".into()).unwrap();
        conn.send_owned(roomy).unwrap();
        conn.send_owned(tight).unwrap();
        conn.send_owned("c".into()).unwrap();
        assert_eq!(conn.queued(), 2 + 5_001 * 2 + 2);
        conn.advance(2);
        assert_eq!(conn.transmit().as_ptr(), ptr, "the String's own buffer");
        let mut out = Trickle {
            out: b"a\n".to_vec(),
            max: 3_000,
        };
        while conn.write_to(&mut out).unwrap() > 0 {}
        let expected = format!("a\n{}\n{}\nc\n", "r".repeat(5_000), "t".repeat(5_000));
        assert_eq!(out.out, expected.as_bytes());
        assert_eq!(conn.queued(), 0);
    }
}
