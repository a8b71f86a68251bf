//! The async datagram client: [`AsyncUdpClient`], over the machinery the Unix datagram
//! client shares.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use easynet_common::ClientError;
use easynet_common::DatagramCodec;
use easynet_core::protocol::DatagramClientProtocol;
use tokio::net::{ToSocketAddrs, UdpSocket};

use crate::conn::now;

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
    /// `None` once closed: the socket is released then.
    pub(crate) socket: Option<ClientDgram>,
    codec: DatagramCodec<P>,
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

        /// Waits for the next response datagram at most `timeout`; a zero timeout takes a
        /// datagram already queued, or fails with [`ClientError::Timeout`] at once.
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
            let deadline = timeout.map(|t| easynet_core::deadline_after(now(), t));
            UdpResponses {
                client: &mut self.inner,
                deadline,
            }
        }

        /// Closes the client and its socket; later calls fail with
        /// [`ClientError::Closed`]. Idempotent.
        pub fn close(&mut self) {
            self.inner.socket = None;
        }

        /// True once closed.
        pub fn is_closed(&self) -> bool {
            self.inner.socket.is_none()
        }

        /// The old name of [`is_closed`](Self::is_closed).
        #[deprecated(note = "renamed is_closed, as the blocking clients'")]
        pub fn is_closing(&self) -> bool {
            self.is_closed()
        }
    };
}
pub(crate) use datagram_client_methods;

impl<P: DatagramClientProtocol> AsyncUdpClient<P> {
    /// Binds an ephemeral port of the right family and connects to `addr`.
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the socket is closed).
    pub async fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        Self::connect_inner(addr, None, protocol).await
    }

    /// Binds `local` (port 0: any port) and connects to the first address of `addr` of the
    /// same family (EasyNetwork's `local_address`; the family follows from it).
    ///
    /// Cancel safety: a dropped call leaves nothing behind (the socket is closed).
    ///
    /// ```no_run
    /// use easynet_core::protocol::Datagram;
    /// use easynet_tokio::AsyncUdpClient;
    ///
    /// # async fn run() -> Result<(), easynet_tokio::ClientError> {
    /// let local = "127.0.0.1:0".parse().unwrap();
    /// let client = AsyncUdpClient::connect_from("localhost:9000", local, Datagram::lines()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_from(
        addr: impl ToSocketAddrs,
        local: SocketAddr,
        protocol: P,
    ) -> Result<Self, ClientError> {
        Self::connect_inner(addr, Some(local), protocol).await
    }

    async fn connect_inner(
        addr: impl ToSocketAddrs,
        local: Option<SocketAddr>,
        protocol: P,
    ) -> Result<Self, ClientError> {
        let target = tokio::net::lookup_host(addr)
            .await?
            .find(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
        let local = local.unwrap_or_else(|| unspecified(target));
        let socket = UdpSocket::bind(local).await?;
        socket.connect(target).await?;
        Ok(Self {
            inner: DgramClient::new(ClientDgram::Udp(socket), protocol),
        })
    }

    /// A client over a UDP socket already connected to its server (EasyNetwork's socket
    /// form). Must be called within a runtime.
    ///
    /// ```no_run
    /// use easynet_core::protocol::Datagram;
    /// use easynet_tokio::AsyncUdpClient;
    ///
    /// # async fn run() -> Result<(), easynet_tokio::ClientError> {
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// socket.connect("127.0.0.1:9000")?;
    /// let client = AsyncUdpClient::from_std(socket, Datagram::lines())?;
    /// # Ok(()) }
    /// ```
    pub fn from_std(socket: std::net::UdpSocket, protocol: P) -> Result<Self, ClientError> {
        socket.peer_addr()?; // connected, or NotConnected
        socket.set_nonblocking(true)?;
        Ok(Self {
            inner: DgramClient::new(ClientDgram::Udp(UdpSocket::from_std(socket)?), protocol),
        })
    }

    /// The server's address; an error once closed.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().ok_or_else(closed)?.peer_addr()
    }

    /// This end's address; an error once closed.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket().ok_or_else(closed)?.local_addr()
    }

    /// The socket, for options; `None` once closed.
    pub fn socket(&self) -> Option<&UdpSocket> {
        match self.inner.socket()? {
            ClientDgram::Udp(s) => Some(s),
            #[cfg(unix)]
            _ => unreachable!("a UDP client holds a UDP socket"),
        }
    }

    datagram_client_methods!();
}

impl<P: DatagramClientProtocol> DgramClient<P> {
    pub(crate) fn new(socket: ClientDgram, protocol: P) -> Self {
        Self {
            socket: Some(socket),
            codec: DatagramCodec::new(protocol),
        }
    }

    pub(crate) fn socket(&self) -> Option<&ClientDgram> {
        self.socket.as_ref()
    }

    pub(crate) async fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        let Some(socket) = &self.socket else {
            return Err(ClientError::Closed);
        };
        let out = self.codec.encode(request)?;
        match socket {
            ClientDgram::Udp(s) => s.send(out).await?,
            #[cfg(unix)]
            ClientDgram::Unix(s) => s.send(out).await?,
        };
        Ok(())
    }

    pub(crate) async fn recv(&mut self) -> Result<P::Response, ClientError> {
        let Some(socket) = &self.socket else {
            return Err(ClientError::Closed);
        };
        // tokio's `recv` is cancel-safe: no datagram is taken unless it returns.
        let n = match socket {
            ClientDgram::Udp(s) => s.recv(self.codec.recv_buf()).await?,
            #[cfg(unix)]
            ClientDgram::Unix(s) => s.recv(self.codec.recv_buf()).await?,
        };
        self.codec.decode(n)
    }

    pub(crate) async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<P::Response, ClientError> {
        if timeout.is_zero() {
            return self.recv_queued();
        }
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

impl<P: DatagramClientProtocol> DgramClient<P> {
    /// A datagram already queued, read straight from the (non-blocking) socket: tokio's
    /// readiness may not know of it yet, so a zero-timeout `recv` could miss it.
    fn recv_queued(&mut self) -> Result<P::Response, ClientError> {
        use std::io::Read;
        let Some(socket) = &self.socket else {
            return Err(ClientError::Closed);
        };
        let sock = match socket {
            ClientDgram::Udp(s) => socket2::SockRef::from(s),
            #[cfg(unix)]
            ClientDgram::Unix(s) => socket2::SockRef::from(s),
        };
        match (&*sock).read(self.codec.recv_buf()) {
            Ok(n) => self.codec.decode(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(ClientError::Timeout),
            Err(e) => Err(ClientError::Io(e)),
        }
    }
}

/// The unspecified address of `target`'s family, any port.
pub(crate) fn unspecified(target: SocketAddr) -> SocketAddr {
    if target.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

pub(crate) use easynet_common::client_closed as closed;

/// The responses of a datagram client as they come; see [`AsyncUdpClient::responses`].
pub struct UdpResponses<'a, P> {
    pub(crate) client: &'a mut DgramClient<P>,
    pub(crate) deadline: Option<std::time::Instant>,
}

impl<P> std::fmt::Debug for UdpResponses<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpResponses")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
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
