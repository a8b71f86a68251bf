//! Async clients: [`AsyncTcpClient`] (optionally TLS) and [`AsyncUdpClient`], speaking the
//! same protocol definitions as the servers, from the other side.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use easynet_common::ClientError;
use easynet_core::ConnId;
use easynet_core::addr::Addr;
use easynet_core::handler::{ConnInfo, Received};
use easynet_core::protocol::{DatagramClientProtocol, StreamClientProtocol};
use easynet_core::stream::{ClientRole, CloseHow, Connection, StreamConfig};
use tokio::net::{TcpStream, ToSocketAddrs, UdpSocket};

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
        /// True once `close` was called or the connection ended.
        pub fn is_closing(&self) -> bool {
            self.inner.is_closing()
        }

        /// Sends one request and waits until it is handed to the kernel.
        ///
        /// Cancel safety: the request is queued whole before the first wait; if the future
        /// is dropped, what is left of it goes out with the next `send`, `recv` or `close`.
        pub async fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
            self.inner.send(request).await
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
            let deadline = timeout.map(|t| now() + t);
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
    async fn tcp(addr: impl ToSocketAddrs) -> io::Result<(TcpStream, ConnInfo)> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(ConnId(0), stream.peer_addr()?, stream.local_addr()?);
        Ok((stream, info))
    }

    /// Connects over plain TCP.
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the socket is closed).
    pub async fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        let (stream, info) = Self::tcp(addr).await?;
        let conn = Connection::new(Arc::new(protocol), StreamConfig::default(), info);
        Ok(Self {
            inner: StreamClient::new(stream.into(), conn),
        })
    }

    /// Connects over TLS and completes the handshake (60 s deadline).
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the socket is closed).
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        protocol: P,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, ClientError> {
        let (stream, info) = Self::tcp(addr).await?;
        let tls = easynet_core::tls::TlsSession::client(config, server_name)
            .map_err(|e| ClientError::Io(io::Error::other(e)))?;
        let conn = Connection::with_tls(
            now(),
            Arc::new(protocol),
            StreamConfig::default(),
            info,
            tls,
        );
        let mut client = StreamClient::new(stream.into(), conn);
        while !client.conn.is_ready() {
            if client.conn.is_closing() {
                client.finish().await;
                return Err(ClientError::Handshake);
            }
            client.step().await?;
        }
        // The handshake's last flight goes out before the client is handed over.
        client.flush().await?;
        Ok(Self { inner: client })
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

    pub(crate) async fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        if self.is_closing() {
            return Err(ClientError::Closed);
        }
        // A receive left armed by a dropped call has a deadline that would end the waits
        // below; nobody waits for it any more.
        self.conn.cancel_recv();
        self.conn.send(request)?;
        self.flush().await
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

/// An async UDP client connected to one server address.
///
/// ```no_run
/// use easynet_core::protocol::Datagram;
/// use easynet_tokio::AsyncUdpClient;
///
/// # async fn run() -> Result<(), easynet_tokio::ClientError> {
/// let mut client = AsyncUdpClient::connect("127.0.0.1:9000", Datagram::lines()).await?;
/// client.send(&"ping".to_owned()).await?;
/// let reply: String = client.recv().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncUdpClient<P> {
    inner: DgramClient<P>,
}

/// A connected datagram socket of a client.
#[derive(Debug)]
pub(crate) enum ClientDgram {
    Udp(UdpSocket),
    #[cfg(unix)]
    Unix(tokio::net::UnixDatagram),
}

/// What the UDP and Unix datagram clients share.
#[derive(Debug)]
pub(crate) struct DgramClient<P> {
    socket: ClientDgram,
    protocol: P,
    pub(crate) closed: bool,
    buf: Vec<u8>,
}

/// The request/response methods of a client wrapping a [`DgramClient`] in `inner`.
macro_rules! datagram_client_methods {
    () => {
        /// Sends one request as one datagram.
        ///
        /// Cancel safety: a dropped call has sent nothing.
        pub async fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
            self.inner.send(request).await
        }

        /// Waits for the next response datagram.
        ///
        /// Cancel safety: cancel-safe. A dropped call has taken no datagram off the
        /// socket, and leaves no deadline behind.
        pub async fn recv(&mut self) -> Result<P::Response, ClientError> {
            self.inner.recv().await
        }

        /// Waits for the next response datagram at most `timeout`.
        ///
        /// Cancel safety: as [`recv`](Self::recv); each call has its own deadline.
        pub async fn recv_timeout(
            &mut self,
            timeout: Duration,
        ) -> Result<P::Response, ClientError> {
            self.inner.recv_timeout(timeout).await
        }

        /// The responses as they come, until `timeout` passes in all (or an error).
        pub fn responses(&mut self, timeout: Option<Duration>) -> UdpResponses<'_, P> {
            let deadline = timeout.map(|t| now() + t);
            UdpResponses {
                client: &mut self.inner,
                deadline,
            }
        }

        /// Closes the client; later calls fail with [`ClientError::Closed`].
        pub fn close(&mut self) {
            self.inner.closed = true;
        }

        /// True once closed.
        pub fn is_closing(&self) -> bool {
            self.inner.closed
        }
    };
}
pub(crate) use datagram_client_methods;

impl<P: DatagramClientProtocol> AsyncUdpClient<P> {
    /// Binds an ephemeral port of the right family and connects to `addr`.
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the socket is closed).
    pub async fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        let target = tokio::net::lookup_host(addr)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
        let local: SocketAddr = if target.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(target).await?;
        Ok(Self {
            inner: DgramClient::new(ClientDgram::Udp(socket), protocol),
        })
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket().local_addr()
    }

    /// The socket, for options.
    pub fn socket(&self) -> &UdpSocket {
        match &self.inner.socket {
            ClientDgram::Udp(s) => s,
            #[cfg(unix)]
            _ => unreachable!("a UDP client holds a UDP socket"),
        }
    }

    datagram_client_methods!();
}

impl<P: DatagramClientProtocol> DgramClient<P> {
    pub(crate) fn new(socket: ClientDgram, protocol: P) -> Self {
        Self {
            socket,
            protocol,
            closed: false,
            buf: vec![0; 64 * 1024],
        }
    }

    pub(crate) fn socket(&self) -> &ClientDgram {
        &self.socket
    }

    pub(crate) async fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let mut out = BytesMut::new();
        self.protocol.encode_request(request, &mut out)?;
        match &self.socket {
            ClientDgram::Udp(s) => s.send(&out).await?,
            #[cfg(unix)]
            ClientDgram::Unix(s) => s.send(&out).await?,
        };
        Ok(())
    }

    pub(crate) async fn recv(&mut self) -> Result<P::Response, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        // tokio's `recv` is cancel-safe: no datagram is taken unless it returns.
        let n = match &self.socket {
            ClientDgram::Udp(s) => s.recv(&mut self.buf).await?,
            #[cfg(unix)]
            ClientDgram::Unix(s) => s.recv(&mut self.buf).await?,
        };
        Ok(self
            .protocol
            .decode_response(BytesMut::from(&self.buf[..n]))?)
    }

    pub(crate) async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<P::Response, ClientError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

/// The responses of a datagram client as they come; see [`AsyncUdpClient::responses`].
pub struct UdpResponses<'a, P> {
    pub(crate) client: &'a mut DgramClient<P>,
    pub(crate) deadline: Option<std::time::Instant>,
}

impl<P: DatagramClientProtocol> UdpResponses<'_, P> {
    /// The next response; `None` once the time allowed has passed or the client is closed.
    ///
    /// Cancel safety: cancel-safe, as the client's `recv`.
    pub async fn next(&mut self) -> Option<Result<P::Response, ClientError>> {
        let res = match self.deadline {
            Some(d) => {
                self.client
                    .recv_timeout(d.saturating_duration_since(now()))
                    .await
            }
            None => self.client.recv().await,
        };
        match res {
            Err(ClientError::Timeout | ClientError::Closed) => None,
            other => Some(other),
        }
    }
}
