//! The blocking datagram client: [`UdpClient`], over the machinery the Unix datagram
//! client shares.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use easynet_common::ClientError;
use easynet_common::DatagramCodec;
use easynet_core::protocol::DatagramClientProtocol;

/// A blocking UDP client connected to one server address.
///
/// Threads: `Send`, and `Sync` when its protocol is; share it behind a `Mutex`.
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
    /// `None` once closed: the socket is released then.
    pub(crate) socket: Option<ClientDgram>,
    codec: DatagramCodec<P>,
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

        /// Waits for the next response datagram at most `timeout`; a zero timeout takes a
        /// datagram already queued, or fails with [`ClientError::Timeout`] at once.
        pub fn recv_timeout(&mut self, timeout: Duration) -> Result<P::Response, ClientError> {
            self.inner.recv_inner(Some(timeout))
        }

        /// The responses as they come, until `timeout` passes in all.
        pub fn responses(&mut self, timeout: Option<Duration>) -> UdpResponses<'_, P> {
            UdpResponses {
                deadline: timeout.map(|t| easynet_core::deadline_after(Instant::now(), t)),
                client: &mut self.inner,
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
    };
}
pub(crate) use datagram_client_methods;

impl<P: DatagramClientProtocol> UdpClient<P> {
    /// Binds an ephemeral port of the right family and connects to `addr`.
    pub fn connect(addr: impl ToSocketAddrs, protocol: P) -> Result<Self, ClientError> {
        Self::connect_inner(addr, None, protocol)
    }

    /// Binds `local` (port 0: any port) and connects to the first address of `addr` of the
    /// same family (EasyNetwork's `local_address`; the family follows from it).
    ///
    /// ```no_run
    /// use easynet_core::protocol::Datagram;
    /// use easynet_mio::UdpClient;
    ///
    /// let local = "127.0.0.1:0".parse().unwrap();
    /// let client = UdpClient::connect_from("localhost:9000", local, Datagram::lines())?;
    /// # Ok::<(), easynet_mio::ClientError>(())
    /// ```
    pub fn connect_from(
        addr: impl ToSocketAddrs,
        local: SocketAddr,
        protocol: P,
    ) -> Result<Self, ClientError> {
        Self::connect_inner(addr, Some(local), protocol)
    }

    fn connect_inner(
        addr: impl ToSocketAddrs,
        local: Option<SocketAddr>,
        protocol: P,
    ) -> Result<Self, ClientError> {
        let target = addr
            .to_socket_addrs()?
            .find(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
        let local: SocketAddr = local.unwrap_or(if target.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        });
        let socket = UdpSocket::bind(local)?;
        socket.connect(target)?;
        Self::from_std(socket, protocol)
    }

    /// A client over a UDP socket already connected to its server (EasyNetwork's socket
    /// form).
    ///
    /// ```no_run
    /// use easynet_core::protocol::Datagram;
    /// use easynet_mio::UdpClient;
    ///
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// socket.connect("127.0.0.1:9000")?;
    /// let client = UdpClient::from_std(socket, Datagram::lines())?;
    /// # Ok::<(), easynet_mio::ClientError>(())
    /// ```
    pub fn from_std(socket: UdpSocket, protocol: P) -> Result<Self, ClientError> {
        socket.peer_addr()?; // connected, or NotConnected
        socket.set_nonblocking(false)?;
        Ok(Self {
            inner: DgramClient::new(ClientDgram::Udp(socket), protocol),
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

    pub(crate) fn send(&mut self, request: &P::Request) -> Result<(), ClientError> {
        let Some(socket) = &self.socket else {
            return Err(ClientError::Closed);
        };
        let out = self.codec.encode(request)?;
        match socket {
            ClientDgram::Udp(s) => s.send(out)?,
            #[cfg(unix)]
            ClientDgram::Unix(s) => s.send(out)?,
        };
        Ok(())
    }

    pub(crate) fn recv_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<P::Response, ClientError> {
        let Some(socket) = &self.socket else {
            return Err(ClientError::Closed);
        };
        // Zero: only what is queued, without waiting (to the OS a zero timeout is none).
        let now_only = timeout == Some(Duration::ZERO);
        let buf = self.codec.recv_buf();
        macro_rules! recv {
            ($s:expr) => {{
                let s = $s;
                if now_only {
                    s.set_nonblocking(true).and_then(|()| {
                        let r = s.recv(buf);
                        s.set_nonblocking(false).and(r)
                    })
                } else {
                    s.set_read_timeout(timeout).and_then(|()| s.recv(buf))
                }
            }};
        }
        let received = match socket {
            ClientDgram::Udp(s) => recv!(s),
            #[cfg(unix)]
            ClientDgram::Unix(s) => recv!(s),
        };
        match received {
            Ok(n) => self.codec.decode(n),
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

pub(crate) use easynet_common::client_closed as closed;

/// The responses of a datagram client as they come; see [`UdpClient::responses`].
pub struct UdpResponses<'a, P> {
    pub(crate) client: &'a mut DgramClient<P>,
    pub(crate) deadline: Option<Instant>,
}

impl<P> std::fmt::Debug for UdpResponses<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpResponses")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
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
