//! [`Connection`]: one stream connection's bytes, deadlines and close, without a handler.
//!
//! Its methods are split by what they handle: `input` (reads, the end of input, deadlines,
//! decoding), `output` (answers and the write queue), `pushed` (frames from pushers) and
//! `closing` (how a connection ends). This file holds the state, the accessors, and
//! `poll_action`, which the driver asks what to do next.

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
const TLS_RECORD: usize = crate::tls::MAX_RECORD;

/// Small reads in a row after which a connection reading in place goes back to reading
/// through the driver's shared buffer. A bulk request often ends with a short read; switching
/// back on that one read made the next request's first (full) read a copy.
const SMALL_READS_TO_COPY: u8 = 4;

mod chunk;
mod closing;
mod input;
mod observe;
mod output;
mod pushed;

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

    /// A server connection with the default settings.
    fn server<P: crate::protocol::StreamServerProtocol>(protocol: P) -> Connection<P, ServerRole> {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = ConnInfo::new(ConnId(1), addr, addr);
        Connection::new(Arc::new(protocol), StreamConfig::default(), info)
    }

    #[test]
    fn in_place_reads_survive_a_short_read_and_end_after_four() {
        let read_size = StreamConfig::default().read_size;
        let mut conn = server(Stream::raw());
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
        let mut conn = server(Stream::raw());
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

    /// A write that empties the buffer leaves its room where it was: the next answers are
    /// appended in place, and a partial write still leaves the rest first in line.
    #[test]
    fn an_emptied_write_buffer_keeps_its_room() {
        let mut conn = server(Stream::raw());
        let small = |c: u8| Bytes::from(vec![c; 100]);
        conn.send(&small(b'a')).unwrap();
        let (start, room) = (conn.transmit().as_ptr(), conn.wbuf.capacity());
        conn.advance(100);
        assert_eq!(conn.queued(), 0);
        assert_eq!(conn.wbuf.capacity(), room);
        conn.send(&small(b'b')).unwrap();
        assert_eq!(
            conn.transmit().as_ptr(),
            start,
            "appended at the buffer's start"
        );
        conn.advance(40);
        assert_eq!(conn.transmit(), &[b'b'; 60][..]);
        conn.advance(60);
        assert_eq!(conn.queued(), 0);
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
        let mut conn = server(Stream::lines());
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
