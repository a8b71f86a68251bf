//! Blocking clients: [`TcpClient`] (optionally TLS) and [`UdpClient`], over `std::net`
//! sockets, speaking the same protocol definitions as the servers from the other side.
//!
//! `TcpClient` drives the core's [`Connection`] with [`ClientRole`] through the core's
//! [`blocking`] helpers, so framing, the partial-bytes rule, TLS, deadlines and the graceful
//! close are the servers' own code; this module only opens sockets.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use easynet_common::ClientError;
use easynet_core::ConnId;
use easynet_core::handler::{ConnInfo, Received};
use easynet_core::protocol::{DatagramClientProtocol, StreamClientProtocol};
use easynet_core::stream::blocking::{self, BlockingError, BlockingIo};
use easynet_core::stream::{ClientRole, Connection, StreamConfig};

/// A blocking stream client: send requests, receive responses, with protocol `P`.
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
        /// True once `close` was called or the connection ended.
        pub fn is_closed(&self) -> bool {
            self.inner.is_closed()
        }

        /// Sends one request; returns once it is handed to the kernel.
        pub fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
            self.inner.send(request)
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
        pub fn responses(&mut self, timeout: Option<Duration>) -> TcpResponses<'_, P> {
            TcpResponses {
                deadline: timeout.map(|t| Instant::now() + t),
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
    fn tcp(addr: impl ToSocketAddrs) -> io::Result<(TcpStream, ConnInfo)> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(ConnId(0), stream.peer_addr()?, stream.local_addr()?);
        Ok((stream, info))
    }

    /// Connects over plain TCP.
    pub fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        let (stream, info) = Self::tcp(addr)?;
        let conn = Connection::new(Arc::new(protocol), StreamConfig::default(), info);
        Ok(Self {
            inner: StreamClient::new(ClientStream::Tcp(stream), conn),
        })
    }

    /// Connects over TLS and completes the handshake (60 s deadline).
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        protocol: P,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, ClientError> {
        let (stream, info) = Self::tcp(addr)?;
        let tls = easynet_core::tls::TlsSession::client(config, server_name)
            .map_err(|e| ClientError::Io(io::Error::other(e)))?;
        let conn = Connection::with_tls(
            Instant::now(),
            Arc::new(protocol),
            StreamConfig::default(),
            info,
            tls,
        );
        let mut client = StreamClient::new(ClientStream::Tcp(stream), conn);
        blocking::handshake(&mut client.conn, &mut client.stream, Instant::now)
            .map_err(client_error)?;
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
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.conn.send(request)?;
        blocking::flush(&mut self.conn, &mut self.stream, Instant::now).map_err(client_error)?;
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
        BlockingError::Handshake => ClientError::Handshake,
        BlockingError::Io(e) => ClientError::Io(e),
        _ => ClientError::Closed,
    }
}

/// The responses of a stream client as they come; see [`TcpClient::responses`].
pub struct TcpResponses<'a, P: StreamClientProtocol> {
    pub(crate) client: &'a mut StreamClient<P>,
    pub(crate) deadline: Option<Instant>,
}

impl<P: StreamClientProtocol> Iterator for TcpResponses<'_, P> {
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

/// A blocking UDP client connected to one server address.
///
/// ```no_run
/// use easynet_core::protocol::Datagram;
/// use easynet_mio::UdpClient;
///
/// let mut client = UdpClient::connect("127.0.0.1:9000", Datagram::lines()).unwrap();
/// client.send(&"ping".to_owned()).unwrap();
/// let reply: String = client.recv().unwrap();
/// ```
#[derive(Debug)]
pub struct UdpClient<P> {
    inner: DgramClient<P>,
}

/// A client's connected datagram socket.
#[derive(Debug)]
pub(crate) enum ClientDgram {
    Udp(UdpSocket),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixDatagram),
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
        pub fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
            self.inner.send(request)
        }

        /// Waits for the next response datagram.
        pub fn recv(&mut self) -> Result<P::Response, ClientError> {
            self.inner.recv_inner(None)
        }

        /// Waits for the next response datagram at most `timeout`.
        pub fn recv_timeout(&mut self, timeout: Duration) -> Result<P::Response, ClientError> {
            self.inner.recv_inner(Some(timeout))
        }

        /// The responses as they come, until `timeout` passes in all.
        pub fn responses(&mut self, timeout: Option<Duration>) -> UdpResponses<'_, P> {
            UdpResponses {
                deadline: timeout.map(|t| Instant::now() + t),
                client: &mut self.inner,
            }
        }

        /// Closes the client; later calls fail with [`ClientError::Closed`].
        pub fn close(&mut self) {
            self.inner.closed = true;
        }

        /// True once closed.
        pub fn is_closed(&self) -> bool {
            self.inner.closed
        }
    };
}
pub(crate) use datagram_client_methods;

impl<P: DatagramClientProtocol> UdpClient<P> {
    /// Binds an ephemeral port of the right family and connects to `addr`.
    pub fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        let target = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
        let local: SocketAddr = if target.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(target)?;
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

    pub(crate) fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let mut out = BytesMut::new();
        self.protocol.encode_request(request, &mut out)?;
        match &self.socket {
            ClientDgram::Udp(s) => s.send(&out)?,
            #[cfg(unix)]
            ClientDgram::Unix(s) => s.send(&out)?,
        };
        Ok(())
    }

    pub(crate) fn recv_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<P::Response, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        let received = match &self.socket {
            ClientDgram::Udp(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.recv(&mut self.buf)),
            #[cfg(unix)]
            ClientDgram::Unix(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.recv(&mut self.buf)),
        };
        match received {
            Ok(n) => Ok(self
                .protocol
                .decode_response(BytesMut::from(&self.buf[..n]))?),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Timeout)
            }
            Err(e) => Err(ClientError::Io(e)),
        }
    }
}

/// The responses of a datagram client as they come; see [`UdpClient::responses`].
pub struct UdpResponses<'a, P> {
    pub(crate) client: &'a mut DgramClient<P>,
    pub(crate) deadline: Option<Instant>,
}

impl<P: DatagramClientProtocol> Iterator for UdpResponses<'_, P> {
    type Item = Result<P::Response, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let timeout = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if timeout.is_some_and(|t| t.is_zero()) {
            return None;
        }
        match self.client.recv_inner(timeout) {
            Err(ClientError::Timeout | ClientError::Closed) => None,
            other => Some(other),
        }
    }
}
