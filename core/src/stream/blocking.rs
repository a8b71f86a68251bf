//! Driving one [`Connection`] over a blocking socket, in the style of rustls's
//! `Connection::complete_io`.
//!
//! A blocking client (or a one-connection blocking server) need not write its own loop over
//! `write_to`, `wants_read`, `poll_timeout` and `poll_close`: it hands the connection and its
//! socket, seen as a [`BlockingIo`], to these functions.
//!
//! - [`complete_io`]: one round: write everything queued, then one read bounded by the
//!   connection's next deadline (or the caller's), or fire that deadline.
//! - [`flush`]: write everything queued.
//! - [`handshake`]: finish a TLS handshake (bounded by its deadline).
//! - [`recv`]: the next message, within a receive timeout.
//! - [`close`]: a graceful close: flush, the TLS close_notify exchange bounded by the
//!   close's deadline, then end-of-stream (FIN).
//!
//! The core still reads no clock: every function takes a `clock` closure (`Instant::now`
//! over a socket, a virtual clock in tests) and never sleeps. Time passes only inside the
//! socket's reads, which [`BlockingIo::set_read_timeout`] bounds by the next deadline. As
//! [`Connection::poll_close`], a graceful close does not linger after FIN: it is meant for
//! a client, which has nothing left to answer once it closes.
//!
//! ```
//! # use std::collections::VecDeque;
//! # use std::io::{self, Read, Write};
//! # use std::time::Duration;
//! # use easynet_core::stream::blocking::BlockingIo;
//! # /// The server's side in memory: it sent `input`, then closed its end.
//! # #[derive(Default)]
//! # struct Mem { input: VecDeque<u8>, output: Vec<u8>, fin: bool }
//! # impl Read for Mem {
//! #     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> { self.input.read(buf) }
//! # }
//! # impl Write for Mem {
//! #     fn write(&mut self, b: &[u8]) -> io::Result<usize> { self.output.write(b) }
//! #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
//! # }
//! # impl BlockingIo for Mem {
//! #     fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> { Ok(()) }
//! #     fn shutdown_write(&mut self) { self.fin = true; }
//! #     fn set_abortive(&mut self) {}
//! # }
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//! use std::time::Instant;
//! use easynet_core::ConnId;
//! use easynet_core::handler::{ConnInfo, Received};
//! use easynet_core::protocol::Stream;
//! use easynet_core::stream::{blocking, ClientRole, CloseHow, Connection, StreamConfig};
//!
//! let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
//! let info = ConnInfo::new(ConnId(0), addr, addr);
//! let mut conn: Connection<_, ClientRole> =
//!     Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info);
//! let mut socket = Mem { input: b"pong\n".iter().copied().collect(), ..Mem::default() };
//!
//! conn.send(&"ping".to_owned()).unwrap();
//! blocking::flush(&mut conn, &mut socket, Instant::now).unwrap();
//! let reply = blocking::recv(&mut conn, &mut socket, Instant::now, Some(Duration::from_secs(5)));
//! assert!(matches!(reply, Ok(Received::Request(r)) if r == "pong"));
//! let how = blocking::close(&mut conn, &mut socket, Instant::now).unwrap();
//! assert_eq!(how, CloseHow::Graceful);
//! assert_eq!(socket.output, b"ping\n");
//! assert!(socket.fin);
//! ```

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::{CloseHow, Connection, Role};
use crate::handler::Received;
use crate::protocol::StreamProtocol;

/// Most bytes read per call (the default `read_size`): read into a stack buffer, so a
/// blocking connection owns no read buffer and a read allocates nothing.
const READ_CHUNK: usize = 16 * 1024;

/// Shortest read wait: to the OS a zero read timeout means none, and some timers are
/// coarser than a millisecond anyway.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A blocking, connected stream socket as the helpers of this module use it: reads and
/// writes block, reads can be bounded in time.
///
/// The drivers implement it for their sockets (`TcpStream`, `UnixStream`); the core knows
/// no socket type. An in-memory implementation:
///
/// ```
/// use std::collections::VecDeque;
/// use std::io::{self, Read, Write};
/// use std::time::Duration;
/// use easynet_core::stream::blocking::BlockingIo;
///
/// /// What the peer sent (then it closed its end) and what it was sent.
/// #[derive(Default)]
/// struct Mem {
///     input: VecDeque<u8>,
///     output: Vec<u8>,
///     fin: bool,
/// }
///
/// impl Read for Mem {
///     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
///         self.input.read(buf) // 0 once empty: the peer's end of stream
///     }
/// }
///
/// impl Write for Mem {
///     fn write(&mut self, data: &[u8]) -> io::Result<usize> {
///         self.output.write(data)
///     }
///     fn flush(&mut self) -> io::Result<()> {
///         Ok(())
///     }
/// }
///
/// impl BlockingIo for Mem {
///     fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
///         Ok(()) // reads never wait here
///     }
///     fn shutdown_write(&mut self) {
///         self.fin = true;
///     }
///     fn set_abortive(&mut self) {}
/// }
///
/// let mut m = Mem::default();
/// m.shutdown_write();
/// assert!(m.fin);
/// ```
pub trait BlockingIo: Read + Write {
    /// Bounds the reads that follow: with `None` a read blocks until bytes or the end of
    /// stream come; with `Some(t)` a read that got nothing for `t` fails with
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) or [`TimedOut`](io::ErrorKind::TimedOut)
    /// (as `std::net::TcpStream::set_read_timeout`). `t` is never zero.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Sends end-of-stream (`shutdown(Write)`). Errors are not reported: the connection is
    /// done with the socket either way.
    fn shutdown_write(&mut self);

    /// Makes the socket's close a reset (`SO_LINGER` 0) where the transport has one; a
    /// no-op elsewhere (a Unix stream).
    fn set_abortive(&mut self);
}

/// Why a helper of this module returned without its result.
///
/// ```
/// use easynet_core::stream::blocking::BlockingError;
///
/// let err = BlockingError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// assert!(matches!(err, BlockingError::Io(_)));
/// assert_eq!(BlockingError::Eof.to_string(), "connection closed");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockingError {
    /// No more messages will come: the peer ended its stream (EOF, TLS close_notify), or
    /// the connection is closing or closed.
    #[error("connection closed")]
    Eof,
    /// The TLS handshake failed, timed out, or the peer left during it; it says which. The
    /// alert, if any, was flushed and the socket set abortive. The cause is in the text
    /// (not in `source`, so it is printed once).
    #[error("TLS handshake failed: {0}")]
    Handshake(super::HandshakeError),
    /// A socket call failed. A failed read or write closes the connection and sets the
    /// socket abortive.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What one [`complete_io`] round did, besides writing everything queued.
///
/// ```
/// use easynet_core::stream::CloseHow;
/// use easynet_core::stream::blocking::Progress;
///
/// let p = Progress::Closed(CloseHow::Graceful);
/// assert_ne!(p, Progress::Eof);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// This many bytes were read and handed to the connection.
    Read(usize),
    /// The peer ended its stream (a read returned 0).
    Eof,
    /// The wait ended with nothing read (the connection's next deadline, or the caller's
    /// `until`); a deadline of the connection that was due has been handled.
    Timeout,
    /// The connection wants no input (no receive armed) and no deadline is due: there is
    /// nothing to wait for, and nothing was read.
    Idle,
    /// The connection is closed and the socket was ended this way: end-of-stream sent
    /// ([`CloseHow::Graceful`]) or set abortive ([`CloseHow::Abort`]). Reported (and
    /// applied) again on every later round.
    Closed(CloseHow),
}

/// One round, as rustls's `complete_io`: writes everything queued, then either does one
/// read, bounded by the connection's next deadline and by `until`, or fires a deadline
/// that is due. Returns what happened; the caller asks the connection what it means
/// (`poll_received`, `is_ready`, ...).
///
/// Once the connection is closed, the socket is ended as it says (FIN or abortive) and
/// [`Progress::Closed`] is returned. A failed read or write closes the connection and is
/// returned as [`BlockingError::Io`]. `clock` gives the `now` of every input.
///
/// ```
/// # use std::collections::VecDeque;
/// # use std::io::{self, Read, Write};
/// # use std::time::Duration;
/// # use easynet_core::stream::blocking::BlockingIo;
/// # #[derive(Default)]
/// # struct Mem { input: VecDeque<u8>, output: Vec<u8> }
/// # impl Read for Mem {
/// #     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> { self.input.read(buf) }
/// # }
/// # impl Write for Mem {
/// #     fn write(&mut self, b: &[u8]) -> io::Result<usize> { self.output.write(b) }
/// #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
/// # }
/// # impl BlockingIo for Mem {
/// #     fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> { Ok(()) }
/// #     fn shutdown_write(&mut self) {}
/// #     fn set_abortive(&mut self) {}
/// # }
/// # use std::sync::Arc;
/// # use easynet_core::{ConnId, handler::ConnInfo, protocol::Stream};
/// # use easynet_core::stream::{ClientRole, Connection, StreamConfig};
/// # let addr: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// # let info = ConnInfo::new(ConnId(0), addr, addr);
/// # let mut conn: Connection<_, ClientRole> =
/// #     Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info);
/// use std::time::Instant;
/// use easynet_core::handler::Received;
/// use easynet_core::stream::blocking::{self, Progress};
///
/// let mut socket = Mem { input: b"one\n".iter().copied().collect(), ..Mem::default() };
/// conn.send(&"hi".to_owned()).unwrap();
/// // No receive armed: the request is written, nothing is read.
/// let p = blocking::complete_io(&mut conn, &mut socket, Instant::now, None).unwrap();
/// assert_eq!(p, Progress::Idle);
/// assert_eq!(socket.output, b"hi\n");
///
/// conn.recv(Instant::now(), None);
/// let p = blocking::complete_io(&mut conn, &mut socket, Instant::now, None).unwrap();
/// assert_eq!(p, Progress::Read(4));
/// assert!(matches!(conn.poll_received(Instant::now()), Some(Received::Request(r)) if r == "one"));
///
/// // A bound already passed: nothing is read.
/// let now = Instant::now();
/// conn.recv(now, None);
/// let p = blocking::complete_io(&mut conn, &mut socket, Instant::now, Some(now)).unwrap();
/// assert_eq!(p, Progress::Timeout);
/// ```
pub fn complete_io<P, R, T>(
    conn: &mut Connection<P, R>,
    io: &mut T,
    mut clock: impl FnMut() -> Instant,
    until: Option<Instant>,
) -> Result<Progress, BlockingError>
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    flush(conn, io, &mut clock)?;
    loop {
        if let Some(how) = settle(conn, io) {
            return Ok(Progress::Closed(how));
        }
        let now = clock();
        let wait = match earliest(conn.poll_timeout(), until) {
            Some(deadline) if deadline <= now => return Ok(fire(conn, io, now)),
            Some(deadline) => Some((deadline - now).max(MIN_WAIT)),
            None => None,
        };
        if !conn.wants_read() {
            return Ok(Progress::Idle);
        }
        io.set_read_timeout(wait)?;
        let mut buf = [0u8; READ_CHUNK];
        let len = conn.config().read_size.clamp(1, READ_CHUNK);
        match io.read(&mut buf[..len]) {
            Ok(0) => {
                conn.handle_eof(clock());
                return Ok(Progress::Eof);
            }
            Ok(n) => {
                let n = n.min(len); // a reader claiming more than it was given is wrong
                conn.handle_read(clock(), &buf[..n]);
                return Ok(Progress::Read(n));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(fire(conn, io, clock()));
            }
            // A signal: wait again for what is left of the wait.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(conn, io, clock(), e)),
        }
    }
}

/// Writes everything queued (under TLS, the records rustls holds too), then flushes `io`.
/// Returns the bytes written to the socket. A failed write closes the connection and sets
/// the socket abortive. Nothing is written once the connection is closed.
///
/// ```
/// # use std::collections::VecDeque;
/// # use std::io::{self, Read, Write};
/// # use std::time::Duration;
/// # use easynet_core::stream::blocking::BlockingIo;
/// # #[derive(Default)]
/// # struct Mem { input: VecDeque<u8>, output: Vec<u8> }
/// # impl Read for Mem {
/// #     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> { self.input.read(buf) }
/// # }
/// # impl Write for Mem {
/// #     fn write(&mut self, b: &[u8]) -> io::Result<usize> { self.output.write(b) }
/// #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
/// # }
/// # impl BlockingIo for Mem {
/// #     fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> { Ok(()) }
/// #     fn shutdown_write(&mut self) {}
/// #     fn set_abortive(&mut self) {}
/// # }
/// # use std::sync::Arc;
/// # use easynet_core::{ConnId, handler::ConnInfo, protocol::Stream};
/// # use easynet_core::stream::{ClientRole, Connection, StreamConfig};
/// # let addr: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// # let info = ConnInfo::new(ConnId(0), addr, addr);
/// # let mut conn: Connection<_, ClientRole> =
/// #     Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info);
/// use std::time::Instant;
/// use easynet_core::stream::blocking;
///
/// let mut socket = Mem::default();
/// conn.send(&"a".to_owned()).unwrap();
/// conn.send(&"b".to_owned()).unwrap();
/// assert_eq!(blocking::flush(&mut conn, &mut socket, Instant::now).unwrap(), 4);
/// assert_eq!(socket.output, b"a\nb\n");
/// assert!(!conn.wants_write());
/// ```
pub fn flush<P, R, T>(
    conn: &mut Connection<P, R>,
    mut io: &mut T,
    mut clock: impl FnMut() -> Instant,
) -> Result<usize, BlockingError>
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    let mut written = 0;
    while conn.wants_write() && !conn.is_closed() {
        match conn.write_to(&mut io) {
            // Bytes wait, yet the socket took none: it will take none later either.
            Ok(0) => return Err(fail(conn, io, clock(), io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(conn, io, clock(), e)),
        }
    }
    if written > 0
        && let Err(e) = Write::flush(io)
    {
        return Err(fail(conn, io, clock(), e));
    }
    Ok(written)
}

/// Drives a TLS handshake to its end (a plain connection is ready at once), bounded by the
/// connection's handshake deadline, then flushes the last flight. On failure (a TLS
/// error, the deadline, the peer leaving) the alert is flushed, the socket set abortive
/// and [`BlockingError::Handshake`] returned with the cause.
///
/// ```
/// # use std::collections::VecDeque;
/// # use std::io::{self, Read, Write};
/// # use std::time::Duration;
/// # use easynet_core::stream::blocking::BlockingIo;
/// # #[derive(Default)]
/// # struct Mem { input: VecDeque<u8>, output: Vec<u8> }
/// # impl Read for Mem {
/// #     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> { self.input.read(buf) }
/// # }
/// # impl Write for Mem {
/// #     fn write(&mut self, b: &[u8]) -> io::Result<usize> { self.output.write(b) }
/// #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
/// # }
/// # impl BlockingIo for Mem {
/// #     fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> { Ok(()) }
/// #     fn shutdown_write(&mut self) {}
/// #     fn set_abortive(&mut self) {}
/// # }
/// use std::net::SocketAddr;
/// use std::sync::Arc;
/// use std::time::Instant;
/// use easynet_core::ConnId;
/// use easynet_core::handler::ConnInfo;
/// use easynet_core::protocol::Stream;
/// use easynet_core::stream::blocking::{self, BlockingError};
/// use easynet_core::stream::{ClientRole, Connection, HandshakeError, StreamConfig};
/// use easynet_core::tls::TlsSession;
///
/// let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let info = ConnInfo::new(ConnId(0), addr, addr);
/// let roots = rustls::RootCertStore::empty();
/// let config = rustls::ClientConfig::builder_with_provider(
///     Arc::new(rustls::crypto::ring::default_provider()),
/// )
/// .with_safe_default_protocol_versions()
/// .unwrap()
/// .with_root_certificates(roots)
/// .with_no_client_auth();
/// let tls = TlsSession::client(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
/// let mut conn: Connection<_, ClientRole> = Connection::with_tls(
///     Instant::now(),
///     Arc::new(Stream::lines()),
///     StreamConfig::default(),
///     info,
///     tls,
/// );
///
/// // The "server" closes its end without a word: no handshake.
/// let mut socket = Mem::default();
/// let res = blocking::handshake(&mut conn, &mut socket, Instant::now);
/// assert!(matches!(res, Err(BlockingError::Handshake(HandshakeError::Eof))));
/// assert!(socket.output.starts_with(&[0x16])); // our ClientHello went out
/// assert!(conn.is_closed());
/// ```
#[cfg(feature = "tls")]
pub fn handshake<P, R, T>(
    conn: &mut Connection<P, R>,
    io: &mut T,
    mut clock: impl FnMut() -> Instant,
) -> Result<(), BlockingError>
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    while !conn.is_ready() {
        if conn.is_closing() {
            // Failed, timed out or the peer left: flush the alert, end the socket.
            let cause = conn.take_handshake_error();
            let _ = finish(conn, io, &mut clock);
            return Err(BlockingError::Handshake(
                cause.unwrap_or(super::HandshakeError::Abandoned),
            ));
        }
        if complete_io(conn, io, &mut clock, None)? == Progress::Idle {
            // A handshake always reads; waiting for nothing would never end.
            conn.abort();
        }
    }
    flush(conn, io, clock)?;
    Ok(())
}

/// Waits for the next message: arms a receive with `timeout` (none: wait for ever; a
/// timeout the clock cannot add, `Duration::MAX`, is none) and reads until the connection
/// has a message, a parse error, or the timeout ([`Received::Timeout`]; partial bytes are
/// kept). Complete messages already buffered come first, even after the peer's EOF.
///
/// [`BlockingError::Eof`] once no more messages will come. A blocking receive always
/// completes, so it needs no cancel: no receive stays armed after it returns. On a
/// connection still in its TLS handshake the handshake runs first (under its own
/// deadline; call [`handshake`] to learn why one failed).
///
/// ```
/// # use std::collections::VecDeque;
/// # use std::io::{self, Read, Write};
/// # use std::time::Duration;
/// # use easynet_core::stream::blocking::BlockingIo;
/// # #[derive(Default)]
/// # struct Mem { input: VecDeque<u8>, output: Vec<u8> }
/// # impl Read for Mem {
/// #     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> { self.input.read(buf) }
/// # }
/// # impl Write for Mem {
/// #     fn write(&mut self, b: &[u8]) -> io::Result<usize> { self.output.write(b) }
/// #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
/// # }
/// # impl BlockingIo for Mem {
/// #     fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> { Ok(()) }
/// #     fn shutdown_write(&mut self) {}
/// #     fn set_abortive(&mut self) {}
/// # }
/// # use std::sync::Arc;
/// # use easynet_core::{ConnId, handler::ConnInfo, protocol::Stream};
/// # use easynet_core::stream::{ClientRole, Connection, StreamConfig};
/// # let addr: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// # let info = ConnInfo::new(ConnId(0), addr, addr);
/// # let mut conn: Connection<_, ClientRole> =
/// #     Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info);
/// use std::time::Instant;
/// use easynet_core::handler::Received;
/// use easynet_core::stream::blocking::{self, BlockingError};
///
/// let mut socket = Mem { input: b"one\ntw".iter().copied().collect(), ..Mem::default() };
/// let got = blocking::recv(&mut conn, &mut socket, Instant::now, None);
/// assert!(matches!(got, Ok(Received::Request(r)) if r == "one"));
/// // A zero timeout returns only what is buffered: "tw" is not a line yet.
/// let got = blocking::recv(&mut conn, &mut socket, Instant::now, Some(Duration::ZERO));
/// assert!(matches!(got, Ok(Received::Timeout)));
/// // The peer closed its end in the middle of a line.
/// let got = blocking::recv(&mut conn, &mut socket, Instant::now, None);
/// assert!(matches!(got, Err(BlockingError::Eof)));
/// assert!(!conn.is_receiving());
/// ```
pub fn recv<P, R, T>(
    conn: &mut Connection<P, R>,
    io: &mut T,
    mut clock: impl FnMut() -> Instant,
    timeout: Option<Duration>,
) -> Result<Received<R::Incoming>, BlockingError>
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    conn.recv(clock(), timeout);
    let end = loop {
        if let Some(received) = conn.poll_received(clock()) {
            return Ok(received);
        }
        // Nothing more can come (a connection in its handshake is not ready yet).
        if conn.is_closed() || (conn.is_ready() && conn.is_input_finished()) {
            break BlockingError::Eof;
        }
        match complete_io(conn, io, &mut clock, None) {
            // Wants no input with a receive armed: only a zero write high-water mark
            // does that, and no read would ever come.
            Ok(Progress::Idle) => break BlockingError::Eof,
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    conn.cancel_recv();
    Err(end)
}

/// Closes gracefully and waits for the end: flushes what is queued, exchanges TLS
/// close_notify when the connection is standard-compatible (waiting for the peer's up to
/// the close's deadline, `shutdown_timeout`), then sends end-of-stream. Returns how the
/// socket was ended: [`CloseHow::Abort`] (socket set abortive) when the deadline passed
/// first or the connection had failed. A connection already closed is only ended again.
///
/// ```
/// # use std::collections::VecDeque;
/// # use std::io::{self, Read, Write};
/// # use std::time::Duration;
/// # use easynet_core::stream::blocking::BlockingIo;
/// # #[derive(Default)]
/// # struct Mem { input: VecDeque<u8>, output: Vec<u8>, fin: bool }
/// # impl Read for Mem {
/// #     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> { self.input.read(buf) }
/// # }
/// # impl Write for Mem {
/// #     fn write(&mut self, b: &[u8]) -> io::Result<usize> { self.output.write(b) }
/// #     fn flush(&mut self) -> io::Result<()> { Ok(()) }
/// # }
/// # impl BlockingIo for Mem {
/// #     fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> { Ok(()) }
/// #     fn shutdown_write(&mut self) { self.fin = true; }
/// #     fn set_abortive(&mut self) {}
/// # }
/// # use std::sync::Arc;
/// # use easynet_core::{ConnId, handler::ConnInfo, protocol::Stream};
/// # use easynet_core::stream::{ClientRole, Connection, StreamConfig};
/// # let addr: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// # let info = ConnInfo::new(ConnId(0), addr, addr);
/// # let mut conn: Connection<_, ClientRole> =
/// #     Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info);
/// use std::time::Instant;
/// use easynet_core::stream::{blocking, CloseHow};
///
/// let mut socket = Mem::default();
/// conn.send(&"last".to_owned()).unwrap();
/// let how = blocking::close(&mut conn, &mut socket, Instant::now).unwrap();
/// assert_eq!(how, CloseHow::Graceful);
/// assert_eq!(socket.output, b"last\n");
/// assert!(socket.fin && conn.is_closed());
/// ```
pub fn close<P, R, T>(
    conn: &mut Connection<P, R>,
    io: &mut T,
    mut clock: impl FnMut() -> Instant,
) -> Result<CloseHow, BlockingError>
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    conn.close(clock());
    finish(conn, io, clock)
}

/// Drives a closing connection until it is closed; the socket is ended as it says.
fn finish<P, R, T>(
    conn: &mut Connection<P, R>,
    io: &mut T,
    mut clock: impl FnMut() -> Instant,
) -> Result<CloseHow, BlockingError>
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    loop {
        match complete_io(conn, io, &mut clock, None)? {
            Progress::Closed(how) => return Ok(how),
            // Not closed, yet waiting for nothing: nothing would ever close it.
            Progress::Idle => conn.abort(),
            _ => {}
        }
    }
}

/// Once the connection is closed, ends the socket as it says.
fn settle<P, R, T>(conn: &mut Connection<P, R>, io: &mut T) -> Option<CloseHow>
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    let how = conn.poll_close()?;
    match how {
        CloseHow::Graceful => io.shutdown_write(),
        CloseHow::Abort => io.set_abortive(),
    }
    Some(how)
}

/// A wait ended, or a deadline was already due.
fn fire<P, R, T>(conn: &mut Connection<P, R>, io: &mut T, now: Instant) -> Progress
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    conn.handle_timeout(now);
    settle(conn, io).map_or(Progress::Timeout, Progress::Closed)
}

/// A read or write failed: nothing more can be sent, the socket is reset.
fn fail<P, R, T>(
    conn: &mut Connection<P, R>,
    io: &mut T,
    now: Instant,
    e: io::Error,
) -> BlockingError
where
    P: StreamProtocol,
    R: Role<P>,
    T: BlockingIo + ?Sized,
{
    conn.handle_io_error(now);
    settle(conn, io);
    BlockingError::Io(e)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
