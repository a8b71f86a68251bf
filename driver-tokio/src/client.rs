//! The async stream client: [`AsyncTcpClient`] (optionally TLS), speaking the same
//! protocol definitions as the servers, from the other side; the Unix stream client
//! shares its machinery. The datagram client is in `udp_client`.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use easynet_common::{ClientError, TcpClientOptions};
use easynet_core::ConnId;
use easynet_core::addr::Addr;
use easynet_core::handler::{ConnInfo, Received};
use easynet_core::protocol::StreamClientProtocol;
use easynet_core::stream::{ClientRole, CloseHow, Connection};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::StreamSocket;
use crate::conn::{Readiness, Turn, now, turn};

/// An async stream client: send requests, receive responses, with protocol `P`.
///
/// ```no_run
/// use easynet_core::protocol::Stream;
/// use easynet_tokio::AsyncTcpClient;
///
/// # async fn run() -> Result<(), easynet_tokio::ClientError> {
/// let mut client = AsyncTcpClient::connect("127.0.0.1:9000", Stream::lines()).await?;
/// client.send(&"hello".to_owned()).await?;
/// let reply: String = client.recv().await?;
/// client.close().await;
/// # Ok(()) }
/// ```
pub struct AsyncTcpClient<P: StreamClientProtocol> {
    inner: StreamClient<P>,
}

/// What the TCP and Unix stream clients share: a [`Connection`] with [`ClientRole`] over
/// the socket.
pub(crate) struct StreamClient<P: StreamClientProtocol> {
    stream: StreamSocket,
    conn: Connection<P, ClientRole>,
    ready: Readiness,
    pub(crate) closed: bool,
    /// `send_eof` was called: no more sends.
    eof_sent: bool,
    /// TLS has no half-close.
    tls: bool,
}

impl<P: StreamClientProtocol> std::fmt::Debug for AsyncTcpClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTcpClient")
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
            self.inner.is_closing()
        }

        /// The old name of [`is_closed`](Self::is_closed).
        #[deprecated(note = "renamed is_closed, as the blocking clients'")]
        pub fn is_closing(&self) -> bool {
            self.is_closed()
        }

        /// Sends end-of-stream (half-close): the server sees EOF, and responses can
        /// still be received. Later sends fail with [`ClientError::Closed`]. Idempotent;
        /// not supported over TLS (an `Unsupported` I/O error), as in EasyNetwork.
        ///
        /// Cancel safety: dropped before its first poll, it did nothing; dropped later,
        /// sends are refused from then on, and the end-of-stream may not have been sent
        /// (it is sent by `close`, or when the client is dropped).
        pub async fn send_eof(&mut self) -> Result<(), ClientError> {
            self.inner.send_eof().await
        }

        /// Sends one request and waits until it is handed to the kernel.
        ///
        /// Cancel safety: the request is queued whole before the first wait; if the future
        /// is dropped, what is left of it goes out with the next `send`, `recv` or `close`.
        pub async fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
            self.inner.send(request).await
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
        /// Cancel safety: as [`send`](Self::send). A call dropped before its timeout
        /// leaves the connection open and the request queued whole: what is left of it goes
        /// out, before anything sent later, with the next `send`, `recv` or `close`.
        ///
        /// ```
        /// use std::time::Duration;
        /// use easynet_core::protocol::Stream;
        /// use easynet_tokio::{AsyncTcpClient, ClientError};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        /// let addr = listener.local_addr().unwrap();
        /// let mut client = AsyncTcpClient::connect(addr, Stream::lines()).await.unwrap();
        /// let (_server, _) = listener.accept().await.unwrap(); // it never reads
        /// let big = "x".repeat(32 << 20); // more than the socket buffers hold
        /// let sent = client.send_timeout(&big, Duration::from_millis(100)).await;
        /// assert!(matches!(sent, Err(ClientError::Timeout)));
        /// assert!(client.is_closed());
        /// # }
        /// ```
        pub async fn send_timeout(
            &mut self,
            request: &P::Request,
            timeout: Duration,
        ) -> Result<(), ClientError> {
            self.inner.send_timeout(request, timeout).await
        }

        /// Waits for the next response.
        ///
        /// Cancel safety: cancel-safe. A dropped call loses no response (bytes read are
        /// kept for the next call) and leaves no deadline behind.
        pub async fn recv(&mut self) -> Result<P::Response, ClientError> {
            self.inner.recv_inner(None).await
        }

        /// Waits for the next response at most `timeout`; a zero timeout returns only a
        /// response already buffered.
        ///
        /// Cancel safety: as [`recv`](Self::recv); each call has its own deadline.
        pub async fn recv_timeout(
            &mut self,
            timeout: Duration,
        ) -> Result<P::Response, ClientError> {
            self.inner.recv_inner(Some(timeout)).await
        }

        /// The responses as they come, until the connection ends or `timeout` passes in all.
        pub fn responses(&mut self, timeout: Option<Duration>) -> Responses<'_, P> {
            let deadline = timeout.map(|t| easynet_core::deadline_after(now(), t));
            Responses {
                client: &mut self.inner,
                deadline,
            }
        }

        /// Closes gracefully (TLS close_notify, then end of stream); idempotent.
        ///
        /// Cancel safety: a dropped call still closes the client (later calls fail with
        /// `Closed`), but the graceful end may be cut short: the socket closes when the
        /// client is dropped.
        pub async fn close(&mut self) {
            self.inner.close().await
        }
    };
}
pub(crate) use stream_client_methods;

impl<P: StreamClientProtocol> AsyncTcpClient<P> {
    /// Connects over plain TCP with the default [`TcpClientOptions`].
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the sockets are closed).
    pub async fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        Self::connect_with(addr, protocol, TcpClientOptions::new()).await
    }

    /// Connects over TLS and completes the handshake (60 s deadline); the server's
    /// certificate must be valid for `server_name`.
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the sockets are closed).
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        protocol: P,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, ClientError> {
        let options = TcpClientOptions::new().tls(config, server_name);
        Self::connect_with(addr, protocol, options).await
    }

    /// Connects as `options` say: the host is resolved by the runtime
    /// (`tokio::net::lookup_host`), the addresses are tried in turn with a head start of
    /// `happy_eyeballs_delay` each (RFC 8305), the first to answer wins, all within
    /// `connect_timeout`; then the TLS handshake, if any, within its own timeout.
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the sockets are closed).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use easynet_core::protocol::Stream;
    /// use easynet_tokio::{AsyncTcpClient, TcpClientOptions};
    ///
    /// # async fn run() -> Result<(), easynet_tokio::ClientError> {
    /// let options = TcpClientOptions::new().connect_timeout(Duration::from_secs(5));
    /// let mut client =
    ///     AsyncTcpClient::connect_with("localhost:9000", Stream::lines(), options).await?;
    /// client.send(&"hello".to_owned()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        protocol: P,
        options: TcpClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        let targets = options.targets(tokio::net::lookup_host(addr).await?)?;
        let stream = crate::connect::connect(&targets, &options).await?;
        Self::over(stream, protocol, options).await
    }

    /// A client over a TCP stream already connected (EasyNetwork's "connected socket"
    /// form); the TLS handshake, if `options` asks for TLS, is done here. The connect
    /// options (timeout, local address) do not apply. Must be called within a runtime.
    ///
    /// Cancel safety: a dropped call closes the stream.
    ///
    /// ```no_run
    /// use easynet_core::protocol::Stream;
    /// use easynet_tokio::{AsyncTcpClient, TcpClientOptions};
    ///
    /// # async fn run() -> Result<(), easynet_tokio::ClientError> {
    /// let stream = std::net::TcpStream::connect("127.0.0.1:9000")?;
    /// let client =
    ///     AsyncTcpClient::from_std(stream, Stream::lines(), TcpClientOptions::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_std(
        stream: std::net::TcpStream,
        protocol: P,
        options: TcpClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        stream.set_nonblocking(true)?;
        Self::over(TcpStream::from_std(stream)?, protocol, options).await
    }

    async fn over(
        stream: TcpStream,
        protocol: P,
        options: TcpClientOptions,
    ) -> Result<Self, ClientError> {
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(ConnId(0), stream.peer_addr()?, stream.local_addr()?);
        let protocol = Arc::new(protocol);
        #[cfg(feature = "tls")]
        if let Some((config, name)) = options.tls {
            let tls = easynet_core::tls::TlsSession::client(config, name)
                .map_err(|e| ClientError::Io(io::Error::other(e)))?;
            let conn = Connection::with_tls(now(), protocol, options.stream, info, tls);
            let mut client = StreamClient::new(stream.into(), conn);
            client.tls = true;
            client.handshake().await?;
            return Ok(Self { inner: client });
        }
        let conn = Connection::new(protocol, options.stream, info);
        Ok(Self {
            inner: StreamClient::new(stream.into(), conn),
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
            StreamSocket::Tcp(s) => s,
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
fn inet(addr: &Addr) -> SocketAddr {
    addr.as_inet()
        .expect("a TCP connection has internet addresses")
}

impl<P: StreamClientProtocol> StreamClient<P> {
    pub(crate) fn new(stream: StreamSocket, conn: Connection<P, ClientRole>) -> Self {
        Self {
            stream,
            conn,
            ready: Readiness::default(),
            closed: false,
            eof_sent: false,
            tls: false,
        }
    }

    pub(crate) fn conn(&self) -> &Connection<P, ClientRole> {
        &self.conn
    }

    pub(crate) fn stream(&self) -> &StreamSocket {
        &self.stream
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closed || self.conn.is_closing()
    }

    /// Completes the TLS handshake, or returns why it failed.
    #[cfg(feature = "tls")]
    async fn handshake(&mut self) -> Result<(), ClientError> {
        while !self.conn.is_ready() {
            if self.conn.is_closing() {
                let cause = self.conn.take_handshake_error();
                self.finish().await;
                return Err(ClientError::Handshake(
                    cause.unwrap_or(easynet_core::stream::HandshakeError::Abandoned),
                ));
            }
            if let Err(e) = self.step().await {
                // A deadline or the peer's EOF closes the connection at once.
                return Err(self
                    .conn
                    .take_handshake_error()
                    .map_or(e, ClientError::Handshake));
            }
        }
        // The handshake's last flight goes out before the client is handed over.
        self.flush().await
    }

    pub(crate) async fn send_eof(&mut self) -> Result<(), ClientError> {
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
            self.conn.cancel_recv();
            self.flush().await?;
            crate::conn::ConnStream::shutdown_write(&mut self.stream).await;
        }
        Ok(())
    }

    pub(crate) async fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        if self.is_closing() || self.eof_sent {
            return Err(ClientError::Closed);
        }
        // A receive left armed by a dropped call has a deadline that would end the waits
        // below; nobody waits for it any more.
        self.conn.cancel_recv();
        self.conn.send(request)?;
        self.flush().await
    }

    pub(crate) async fn send_timeout(
        &mut self,
        request: &P::Request,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        if self.is_closing() || self.eof_sent {
            return Err(ClientError::Closed);
        }
        self.conn.cancel_recv();
        self.conn.send(request)?;
        match tokio::time::timeout(timeout, self.flush()).await {
            Ok(sent) => sent,
            Err(_) => {
                // Partly written, maybe: nothing sent later may follow it on this stream,
                // and the peer learns now (the fd lives as long as the client).
                self.conn.abort();
                self.closed = true;
                crate::conn::ConnStream::set_abortive(&self.stream);
                let _ = match &self.stream {
                    StreamSocket::Tcp(s) => socket2::SockRef::from(s).shutdown(Shutdown::Both),
                    #[cfg(unix)]
                    StreamSocket::Unix(s) => socket2::SockRef::from(s).shutdown(Shutdown::Both),
                };
                Err(ClientError::Timeout)
            }
        }
    }

    /// Waits until everything queued is handed to the kernel.
    async fn flush(&mut self) -> Result<(), ClientError> {
        while self.conn.wants_write() {
            if self.conn.is_closed() {
                return Err(ClientError::Closed);
            }
            self.step().await?;
        }
        Ok(())
    }

    pub(crate) async fn recv_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<P::Response, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        // Armed anew on every call: a receive left armed by a dropped call must not lend us
        // its deadline (or its lack of one).
        self.conn.recv(now(), timeout);
        loop {
            match self.conn.poll_received(now()) {
                Some(Received::Request(r)) => return Ok(r),
                Some(Received::ParseError(e)) => return Err(ClientError::Parse(e)),
                Some(Received::Timeout) => return Err(ClientError::Timeout),
                None => {}
            }
            if self.conn.is_input_finished() || self.conn.is_closed() {
                self.conn.cancel_recv();
                return Err(ClientError::Eof);
            }
            self.step().await?;
        }
    }

    pub(crate) async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.conn.close(now());
        self.finish().await;
    }

    /// Drives the close to its end: flush, TLS close_notify, FIN, then the core's lingering
    /// close (the server's answers and EOF are read and dropped), as a server connection.
    async fn finish(&mut self) {
        self.closed = true;
        while self.step().await.is_ok() {}
    }

    /// One turn of the runtime's connection loop ([`turn`]), shared with the servers.
    async fn step(&mut self) -> Result<(), ClientError> {
        // The loop reads the clock after its waits; a client's call may come much later.
        self.ready.touch();
        let none: Option<std::pin::Pin<&mut std::future::Pending<()>>> = None;
        match turn(
            &mut self.stream,
            &mut self.conn,
            &mut self.ready,
            none,
            false,
        )
        .await
        {
            Turn::Progress | Turn::Other => Ok(()),
            Turn::Closed(CloseHow::Abort) if !self.closed => {
                Err(ClientError::Io(io::ErrorKind::ConnectionReset.into()))
            }
            Turn::Closed(_) | Turn::Idle => Err(ClientError::Eof),
        }
    }
}

/// The responses of a stream client as they come; see [`AsyncTcpClient::responses`].
pub struct Responses<'a, P: StreamClientProtocol> {
    pub(crate) client: &'a mut StreamClient<P>,
    pub(crate) deadline: Option<std::time::Instant>,
}

impl<P: StreamClientProtocol> std::fmt::Debug for Responses<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<P: StreamClientProtocol> Responses<'_, P> {
    /// The next response; `None` at the end of the connection or of the time allowed.
    ///
    /// Cancel safety: cancel-safe, as the client's `recv`.
    pub async fn next(&mut self) -> Option<Result<P::Response, ClientError>> {
        let timeout = self.deadline.map(|d| d.saturating_duration_since(now()));
        match self.client.recv_inner(timeout).await {
            Err(ClientError::Eof | ClientError::Timeout | ClientError::Closed) => None,
            other => Some(other),
        }
    }
}
