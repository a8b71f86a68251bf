//! The blocking stream client: [`TcpClient`] (optionally TLS), over `std::net` sockets,
//! speaking the same protocol definitions as the servers from the other side; the Unix
//! stream client shares its machinery. The datagram client is in `udp_client`.
//!
//! `TcpClient` drives the core's [`Connection`] with [`ClientRole`] through the core's
//! [`blocking`] helpers, so framing, the partial-bytes rule, TLS, deadlines and the graceful
//! close are the servers' own code; this module only opens sockets, and bounds the writes
//! of `send_timeout` (`SO_SNDTIMEO`, reset per write to what is left of the deadline).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easynet_common::{ClientError, TcpClientOptions};
use easynet_core::ConnId;
use easynet_core::handler::{ConnInfo, Received};
use easynet_core::protocol::StreamClientProtocol;
use easynet_core::stream::blocking::{self, BlockingError, BlockingIo};
use easynet_core::stream::{ClientRole, Connection};

/// A blocking stream client: send requests, receive responses, with protocol `P`.
///
/// Threads: the client is `Send`, and `Sync` when its protocol is; its calls take
/// `&mut self`, so threads share one behind a `Mutex` (a receive waiting holds the lock).
/// It is not split into a sender and a receiver half: under TLS one rustls state serves
/// both directions.
///
/// ```no_run
/// use easynet_core::protocol::Stream;
/// use easynet_mio::TcpClient;
///
/// let mut client = TcpClient::connect("127.0.0.1:9000", Stream::lines()).unwrap();
/// client.send(&"hello".to_owned()).unwrap();
/// let reply: String = client.recv().unwrap();
/// client.close();
/// ```
pub struct TcpClient<P: StreamClientProtocol> {
    inner: StreamClient<P>,
}

/// A client's connected stream socket.
pub(crate) enum ClientStream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

/// Calls `$call` on whichever socket it is.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            ClientStream::Tcp($s) => $call,
            #[cfg(unix)]
            ClientStream::Unix($s) => $call,
        }
    };
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.read(buf))
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.write(buf))
    }
    // TLS records leave rustls in one vectored write.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => s.write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        each!(self, s => s.flush())
    }
}

impl BlockingIo for ClientStream {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        each!(self, s => s.set_read_timeout(t))
    }
    fn shutdown_write(&mut self) {
        let _ = each!(self, s => s.shutdown(Shutdown::Write));
    }
    fn set_abortive(&mut self) {
        each!(self, s => easynet_common::set_abortive(s))
    }
}

/// What the TCP and Unix stream clients share: a [`Connection`] with [`ClientRole`] over
/// the socket.
pub(crate) struct StreamClient<P: StreamClientProtocol> {
    stream: ClientStream,
    conn: Connection<P, ClientRole>,
    closed: bool,
    /// `send_eof` was called: no more sends.
    eof_sent: bool,
    /// TLS has no half-close.
    tls: bool,
}

impl<P: StreamClientProtocol> std::fmt::Debug for TcpClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient")
            .field("conn", &self.inner.conn)
            .finish_non_exhaustive()
    }
}

/// The request/response methods of a client wrapping a [`StreamClient`] in `inner`.
macro_rules! stream_client_methods {
    () => {
        /// True once `close` was called or the connection failed or closed. The
        /// server's end of stream alone does not close it: requests can still be sent.
        pub fn is_closed(&self) -> bool {
            self.inner.is_closed()
        }

        /// Sends end-of-stream (half-close): the server sees EOF, and responses can
        /// still be received. Later sends fail with [`ClientError::Closed`]. Idempotent;
        /// not supported over TLS (an `Unsupported` I/O error), as in EasyNetwork.
        pub fn send_eof(&mut self) -> Result<(), ClientError> {
            self.inner.send_eof()
        }

        /// Sends one request; returns once it is handed to the kernel.
        pub fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
            self.inner.send(request)
        }

        /// Sends one request, waiting at most `timeout` for it to be handed to the kernel
        /// (EasyNetwork's `send_packet(packet, timeout)`); a server that does not read
        /// fills the socket buffers and makes [`send`](Self::send) wait for ever.
        ///
        /// On a timeout the request may be partly written, and a byte stream cannot take
        /// it back: the connection is closed at once (the rest is dropped, the socket shut
        /// down) and [`ClientError::Timeout`] returned; later calls fail with
        /// [`ClientError::Closed`], so no later request can be read as the end of this one.
        ///
        /// ```
        /// use std::time::Duration;
        /// use easynet_core::protocol::Stream;
        /// use easynet_mio::{ClientError, TcpClient};
        ///
        /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        /// let mut client = TcpClient::connect(listener.local_addr().unwrap(), Stream::lines()).unwrap();
        /// let (_server, _) = listener.accept().unwrap(); // it never reads
        /// let big = "x".repeat(32 << 20); // more than the socket buffers hold
        /// let sent = client.send_timeout(&big, Duration::from_millis(100));
        /// assert!(matches!(sent, Err(ClientError::Timeout)));
        /// assert!(client.is_closed());
        /// ```
        pub fn send_timeout(
            &mut self,
            request: &P::Request,
            timeout: Duration,
        ) -> Result<(), ClientError> {
            self.inner.send_timeout(request, timeout)
        }

        /// Waits for the next response.
        pub fn recv(&mut self) -> Result<P::Response, ClientError> {
            self.inner.recv_inner(None)
        }

        /// Waits for the next response at most `timeout`; a zero timeout returns only a
        /// response already buffered.
        pub fn recv_timeout(&mut self, timeout: Duration) -> Result<P::Response, ClientError> {
            self.inner.recv_inner(Some(timeout))
        }

        /// The responses as they come, until the connection ends or `timeout` passes in all.
        pub fn responses(&mut self, timeout: Option<Duration>) -> Responses<'_, P> {
            Responses {
                deadline: timeout.map(|t| easynet_core::deadline_after(Instant::now(), t)),
                client: &mut self.inner,
            }
        }

        /// Closes gracefully (TLS close_notify, then end of stream); idempotent.
        pub fn close(&mut self) {
            self.inner.close()
        }
    };
}
pub(crate) use stream_client_methods;

impl<P: StreamClientProtocol> TcpClient<P> {
    /// Connects over plain TCP with the default [`TcpClientOptions`].
    pub fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        Self::connect_with(addr, protocol, TcpClientOptions::new())
    }

    /// Connects over TLS and completes the handshake (60 s deadline); the server's
    /// certificate must be valid for `server_name`.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        protocol: P,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(
            addr,
            protocol,
            TcpClientOptions::new().tls(config, server_name),
        )
    }

    /// Connects as `options` say: the resolved addresses are tried in turn with a head
    /// start of `happy_eyeballs_delay` each (RFC 8305), the first to answer wins, all
    /// within `connect_timeout`; then the TLS handshake, if any, within its own timeout.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use easynet_core::protocol::Stream;
    /// use easynet_mio::{TcpClient, TcpClientOptions};
    ///
    /// let options = TcpClientOptions::new().connect_timeout(Duration::from_secs(5));
    /// let mut client = TcpClient::connect_with("localhost:9000", Stream::lines(), options)?;
    /// client.send(&"hello".to_owned())?;
    /// # Ok::<(), easynet_mio::ClientError>(())
    /// ```
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        protocol: P,
        options: TcpClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        let targets = options.targets(addr.to_socket_addrs()?)?;
        let stream = crate::connect::connect(&targets, &options)?;
        Self::from_std(stream, protocol, options)
    }

    /// A client over a TCP stream already connected (EasyNetwork's "connected socket"
    /// form); the TLS handshake, if `options` asks for TLS, is done here. The connect
    /// options (timeout, local address) do not apply.
    ///
    /// ```no_run
    /// use easynet_core::protocol::Stream;
    /// use easynet_mio::{TcpClient, TcpClientOptions};
    ///
    /// let stream = std::net::TcpStream::connect("127.0.0.1:9000")?;
    /// let client = TcpClient::from_std(stream, Stream::lines(), TcpClientOptions::new())?;
    /// # Ok::<(), easynet_mio::ClientError>(())
    /// ```
    pub fn from_std(
        stream: TcpStream,
        protocol: P,
        options: TcpClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        stream.set_nonblocking(false)?;
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(ConnId(0), stream.peer_addr()?, stream.local_addr()?);
        let protocol = Arc::new(protocol);
        #[cfg(feature = "tls")]
        if let Some((config, name)) = options.tls {
            let tls = easynet_core::tls::TlsSession::client(config, name)
                .map_err(|e| ClientError::Io(io::Error::other(e)))?;
            let conn = Connection::with_tls(Instant::now(), protocol, options.stream, info, tls);
            let mut client = StreamClient::new(ClientStream::Tcp(stream), conn);
            client.tls = true;
            blocking::handshake(&mut client.conn, &mut client.stream, Instant::now)
                .map_err(client_error)?;
            return Ok(Self { inner: client });
        }
        let conn = Connection::new(protocol, options.stream, info);
        Ok(Self {
            inner: StreamClient::new(ClientStream::Tcp(stream), conn),
        })
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        inet(&self.inner.conn.info().peer)
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        inet(&self.inner.conn.info().local)
    }

    /// The socket, for options.
    pub fn socket(&self) -> &TcpStream {
        match &self.inner.stream {
            ClientStream::Tcp(s) => s,
            #[cfg(unix)]
            _ => unreachable!("a TCP client holds a TCP stream"),
        }
    }

    /// TLS details, for a TLS client.
    #[cfg(feature = "tls")]
    pub fn tls_info(&self) -> Option<&easynet_core::tls::TlsInfo> {
        self.inner.conn.info().tls.as_ref()
    }

    stream_client_methods!();
}

/// The internet address a TCP connection was made with.
fn inet(addr: &easynet_core::addr::Addr) -> SocketAddr {
    addr.as_inet()
        .expect("a TCP connection has internet addresses")
}

impl<P: StreamClientProtocol> StreamClient<P> {
    pub(crate) fn new(stream: ClientStream, conn: Connection<P, ClientRole>) -> Self {
        Self {
            stream,
            conn,
            closed: false,
            eof_sent: false,
            tls: false,
        }
    }

    pub(crate) fn conn(&self) -> &Connection<P, ClientRole> {
        &self.conn
    }

    pub(crate) fn stream(&self) -> &ClientStream {
        &self.stream
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed || self.conn.is_closing()
    }

    pub(crate) fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        if self.is_closed() || self.eof_sent {
            return Err(ClientError::Closed);
        }
        self.conn.send(request)?;
        blocking::flush(&mut self.conn, &mut self.stream, Instant::now).map_err(client_error)?;
        Ok(())
    }

    pub(crate) fn send_timeout(
        &mut self,
        request: &P::Request,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        if self.is_closed() || self.eof_sent {
            return Err(ClientError::Closed);
        }
        self.conn.send(request)?;
        let deadline = easynet_core::deadline_after(Instant::now(), timeout);
        let sent = self.flush_until(deadline);
        if sent.is_err() {
            // Partly written, maybe: nothing sent later may follow it on this stream.
            self.conn.abort();
            self.stream.set_abortive();
            let _ = each!(&self.stream, s => s.shutdown(Shutdown::Both));
            self.closed = true;
        } else {
            let _ = each!(&self.stream, s => s.set_write_timeout(None));
        }
        sent
    }

    /// Writes what is queued, each write bounded by what is left until `deadline`.
    fn flush_until(&mut self, deadline: Instant) -> Result<(), ClientError> {
        while self.conn.wants_write() && !self.conn.is_closed() {
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero SO_SNDTIMEO means no limit: a deadline passed is a timeout now.
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            each!(&self.stream, s => s.set_write_timeout(Some(left)))?;
            match self.conn.write_to(&mut self.stream) {
                Ok(0) => return Err(ClientError::Io(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Timeout);
                }
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        Ok(())
    }

    pub(crate) fn recv_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<P::Response, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        match blocking::recv(&mut self.conn, &mut self.stream, Instant::now, timeout) {
            Ok(Received::Request(r)) => Ok(r),
            Ok(Received::ParseError(e)) => Err(ClientError::Parse(e)),
            Ok(Received::Timeout) => Err(ClientError::Timeout),
            Err(e) => Err(client_error(e)),
        }
    }

    pub(crate) fn send_eof(&mut self) -> Result<(), ClientError> {
        if self.tls {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "send_eof is not supported over TLS",
            )));
        }
        if self.closed {
            return Err(ClientError::Closed);
        }
        if !self.eof_sent {
            self.eof_sent = true;
            blocking::flush(&mut self.conn, &mut self.stream, Instant::now)
                .map_err(client_error)?;
            self.stream.shutdown_write();
        }
        Ok(())
    }

    pub(crate) fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = blocking::close(&mut self.conn, &mut self.stream, Instant::now);
        }
    }
}

/// The client's error for what the core's blocking helpers report.
fn client_error(e: BlockingError) -> ClientError {
    match e {
        BlockingError::Eof => ClientError::Eof,
        BlockingError::Handshake(cause) => ClientError::Handshake(cause),
        BlockingError::Io(e) => ClientError::Io(e),
        _ => ClientError::Closed,
    }
}

/// The responses of a stream client as they come; see [`TcpClient::responses`].
pub struct Responses<'a, P: StreamClientProtocol> {
    pub(crate) client: &'a mut StreamClient<P>,
    pub(crate) deadline: Option<Instant>,
}

impl<P: StreamClientProtocol> std::fmt::Debug for Responses<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The old name of [`Responses`].
#[deprecated(note = "renamed Responses, as the async clients'")]
pub type TcpResponses<'a, P> = Responses<'a, P>;

impl<P: StreamClientProtocol> Iterator for Responses<'_, P> {
    type Item = Result<P::Response, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let timeout = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        match self.client.recv_inner(timeout) {
            Err(ClientError::Eof | ClientError::Timeout | ClientError::Closed) => None,
            other => Some(other),
        }
    }
}
