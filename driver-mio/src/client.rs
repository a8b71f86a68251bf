//! Blocking clients: [`TcpClient`] (optionally TLS) and [`UdpClient`], over `std::net`
//! sockets, speaking the same protocol definitions as the servers from the other side.
//!
//! `TcpClient` drives the core's [`Connection`] with [`ClientRole`], so framing, the
//! partial-bytes rule, TLS and the graceful close are the servers' own code.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use easynet_common::ClientError;
use easynet_core::ConnId;
use easynet_core::handler::{ConnInfo, Received};
use easynet_core::protocol::{DatagramClientProtocol, StreamClientProtocol};
use easynet_core::stream::{ClientRole, CloseHow, Connection, StreamConfig};

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
    stream: TcpStream,
    conn: Connection<P, ClientRole>,
    buf: Vec<u8>,
    closed: bool,
}

impl<P: StreamClientProtocol> std::fmt::Debug for TcpClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<P: StreamClientProtocol> TcpClient<P> {
    fn tcp(addr: impl ToSocketAddrs) -> io::Result<(TcpStream, ConnInfo)> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(ConnId(0), stream.peer_addr()?, stream.local_addr()?);
        Ok((stream, info))
    }

    fn with(stream: TcpStream, conn: Connection<P, ClientRole>) -> Self {
        let buf = vec![0; conn.config().read_size];
        Self {
            stream,
            conn,
            buf,
            closed: false,
        }
    }

    /// Connects over plain TCP.
    pub fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        let (stream, info) = Self::tcp(addr)?;
        let conn = Connection::new(Arc::new(protocol), StreamConfig::default(), info);
        Ok(Self::with(stream, conn))
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
        let mut client = Self::with(stream, conn);
        while !client.conn.is_ready() {
            if client.conn.is_closing() {
                client.finish();
                return Err(ClientError::Handshake);
            }
            client.step()?;
        }
        Ok(client)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.info().peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.info().local
    }

    /// The socket, for options.
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// TLS details, for a TLS client.
    #[cfg(feature = "tls")]
    pub fn tls_info(&self) -> Option<&easynet_core::tls::TlsInfo> {
        self.conn.info().tls.as_ref()
    }

    /// True once `close` was called or the connection ended.
    pub fn is_closed(&self) -> bool {
        self.closed || self.conn.is_closing()
    }

    /// Sends one request; returns once it is handed to the kernel.
    pub fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.conn.send(request)?;
        self.write_all()
    }

    /// Waits for the next response.
    pub fn recv(&mut self) -> Result<P::Response, ClientError> {
        self.recv_inner(None)
    }

    /// Waits for the next response at most `timeout`; a zero timeout returns only a response
    /// already buffered.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<P::Response, ClientError> {
        self.recv_inner(Some(timeout))
    }

    fn recv_inner(&mut self, timeout: Option<Duration>) -> Result<P::Response, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let now = Instant::now();
        if !self.conn.is_receiving() {
            self.conn.recv(now, timeout);
        }
        loop {
            match self.conn.poll_received(Instant::now()) {
                Some(Received::Request(r)) => return Ok(r),
                Some(Received::ParseError(e)) => return Err(ClientError::Parse(e)),
                Some(Received::Timeout) => return Err(ClientError::Timeout),
                None => {}
            }
            if self.conn.is_input_finished() || self.conn.is_closed() {
                return Err(ClientError::Eof);
            }
            self.step()?;
        }
    }

    /// The responses as they come, until the connection ends or `timeout` passes in all.
    pub fn responses(&mut self, timeout: Option<Duration>) -> TcpResponses<'_, P> {
        TcpResponses {
            deadline: timeout.map(|t| Instant::now() + t),
            client: self,
        }
    }

    /// Closes gracefully (TLS close_notify, then FIN); idempotent.
    pub fn close(&mut self) {
        if !self.closed {
            self.conn.close(Instant::now());
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.closed = true;
        loop {
            if let Some(how) = self.conn.poll_close() {
                match how {
                    CloseHow::Graceful => {
                        let _ = self.stream.shutdown(Shutdown::Write);
                    }
                    CloseHow::Abort => easynet_common::set_abortive(&self.stream),
                }
                return;
            }
            if self.step().is_err() {
                return;
            }
        }
    }

    fn write_all(&mut self) -> Result<(), ClientError> {
        loop {
            let data = self.conn.transmit();
            if data.is_empty() {
                return Ok(());
            }
            match self.stream.write(data) {
                Ok(n) => self.conn.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.conn.handle_io_error(Instant::now());
                    return Err(ClientError::Io(e));
                }
            }
        }
    }

    /// One round: write what is queued, then read once (bounded by the connection's next
    /// deadline) or fire that deadline.
    fn step(&mut self) -> Result<(), ClientError> {
        self.write_all()?;
        if self.conn.poll_close().is_some() {
            return Ok(());
        }
        let timer = self.conn.poll_timeout();
        if !self.conn.wants_read() {
            return match timer {
                Some(t) => {
                    std::thread::sleep(t.saturating_duration_since(Instant::now()));
                    self.conn.handle_timeout(Instant::now());
                    Ok(())
                }
                None => Err(ClientError::Eof),
            };
        }
        let wait = timer.map(|t| {
            t.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        self.stream.set_read_timeout(wait)?;
        match self.stream.read(&mut self.buf) {
            Ok(0) => self.conn.handle_eof(Instant::now()),
            Ok(n) => self.conn.handle_read(Instant::now(), &self.buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.conn.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                self.conn.handle_io_error(Instant::now());
                return Err(ClientError::Io(e));
            }
        }
        Ok(())
    }
}

/// The responses of a [`TcpClient`] as they come; see [`TcpClient::responses`].
pub struct TcpResponses<'a, P: StreamClientProtocol> {
    client: &'a mut TcpClient<P>,
    deadline: Option<Instant>,
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
    socket: UdpSocket,
    protocol: P,
    closed: bool,
    buf: Vec<u8>,
}

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
            socket,
            protocol,
            closed: false,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.peer_addr()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket, for options.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends one request as one datagram.
    pub fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let mut out = BytesMut::new();
        self.protocol.encode_request(request, &mut out)?;
        self.socket.send(&out)?;
        Ok(())
    }

    /// Waits for the next response datagram.
    pub fn recv(&mut self) -> Result<P::Response, ClientError> {
        self.recv_inner(None)
    }

    /// Waits for the next response datagram at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<P::Response, ClientError> {
        self.recv_inner(Some(timeout))
    }

    fn recv_inner(&mut self, timeout: Option<Duration>) -> Result<P::Response, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        self.socket
            .set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))))?;
        match self.socket.recv(&mut self.buf) {
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

    /// The responses as they come, until `timeout` passes in all.
    pub fn responses(&mut self, timeout: Option<Duration>) -> UdpResponses<'_, P> {
        UdpResponses {
            deadline: timeout.map(|t| Instant::now() + t),
            client: self,
        }
    }

    /// Closes the client; later calls fail with [`ClientError::Closed`].
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// The responses of a [`UdpClient`] as they come; see [`UdpClient::responses`].
pub struct UdpResponses<'a, P> {
    client: &'a mut UdpClient<P>,
    deadline: Option<Instant>,
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
