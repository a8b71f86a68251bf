//! The blocking Unix clients: [`UnixStreamClient`] and [`UnixDatagramClient`], the TCP and
//! UDP clients' machinery over Unix sockets.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easynet_common::ClientError;
use easynet_common::unix::{self as sys, SocketFile, UnixStreamClientOptions};
use easynet_core::addr::{PeerCred, UnixAddr};
use easynet_core::protocol::{DatagramClientProtocol, StreamClientProtocol};
use easynet_core::stream::Connection;

use crate::client::{ClientStream, Responses, StreamClient, stream_client_methods};
use crate::udp_client::{ClientDgram, DgramClient, UdpResponses, datagram_client_methods};

/// A blocking Unix stream client: send requests, receive responses, with protocol `P`.
///
/// ```no_run
/// use easynet_core::protocol::Stream;
/// use easynet_mio::UnixStreamClient;
///
/// let mut client = UnixStreamClient::connect("/run/app.sock", Stream::lines()).unwrap();
/// client.send(&"hello".to_owned()).unwrap();
/// let reply: String = client.recv().unwrap();
/// client.close();
/// ```
///
/// A runnable example is on [`UnixStreamServer`](crate::UnixStreamServer).
pub struct UnixStreamClient<P: StreamClientProtocol> {
    inner: StreamClient<P>,
    /// The local path bound by `connect_with`, removed when the client is dropped.
    _file: Option<SocketFile>,
}

impl<P: StreamClientProtocol> std::fmt::Debug for UnixStreamClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixStreamClient")
            .field("conn", self.inner.conn())
            .finish_non_exhaustive()
    }
}

impl<P: StreamClientProtocol> UnixStreamClient<P> {
    /// Connects to the server at the filesystem `path` with the default
    /// [`UnixStreamClientOptions`].
    pub fn connect(path: impl AsRef<Path>, protocol: P) -> Result<Self, ClientError> {
        Self::connect_addr(&UnixAddr::pathname(path), protocol)
    }

    /// Connects to a path or a Linux abstract name with the default
    /// [`UnixStreamClientOptions`].
    pub fn connect_addr(addr: &UnixAddr, protocol: P) -> Result<Self, ClientError> {
        Self::connect_with(addr, protocol, UnixStreamClientOptions::new())
    }

    /// Connects to a path or a Linux abstract name as `options` say: from
    /// `options.local_addr` when set (a path, removed when the client is dropped, or an
    /// abstract name), reading at most `max_recv_size` bytes at once.
    ///
    /// ```
    /// use easynet_core::addr::UnixAddr;
    /// use easynet_core::protocol::Stream;
    /// use easynet_mio::{UnixStreamClient, UnixStreamClientOptions};
    ///
    /// let dir = std::env::temp_dir().join(format!("easynet-doc-mio-uc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let listener = std::os::unix::net::UnixListener::bind(dir.join("server.sock")).unwrap();
    /// let options = UnixStreamClientOptions::new()
    ///     .local_addr(UnixAddr::pathname(dir.join("client.sock")))
    ///     .max_recv_size(4096);
    /// let server = UnixAddr::pathname(dir.join("server.sock"));
    /// let client = UnixStreamClient::connect_with(&server, Stream::lines(), options).unwrap();
    /// let (_conn, from) = listener.accept().unwrap();
    /// assert_eq!(from.as_pathname(), Some(dir.join("client.sock").as_path()));
    /// assert_eq!(client.local_addr(), &UnixAddr::pathname(dir.join("client.sock")));
    /// drop(client); // removes client.sock
    /// assert!(!dir.join("client.sock").exists());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn connect_with(
        addr: &UnixAddr,
        protocol: P,
        options: UnixStreamClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        let (stream, file) = sys::connect_stream_from(addr, options.local_addr.as_ref())?;
        let mut client = Self::over(stream, Some(addr.clone()), protocol, options)?;
        client._file = file;
        Ok(client)
    }

    /// A client over a Unix stream already connected (EasyNetwork's "connected socket"
    /// form). `options.local_addr` does not apply; the socket is put in blocking mode.
    ///
    /// ```
    /// use easynet_core::protocol::Stream;
    /// use easynet_mio::{UnixStreamClient, UnixStreamClientOptions};
    ///
    /// let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let mut client =
    ///     UnixStreamClient::from_std(ours, Stream::lines(), UnixStreamClientOptions::new()).unwrap();
    /// client.send(&"hello".to_owned()).unwrap();
    /// # drop(theirs);
    /// ```
    pub fn from_std(
        stream: std::os::unix::net::UnixStream,
        protocol: P,
        options: UnixStreamClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        stream.set_nonblocking(false)?;
        Self::over(stream, None, protocol, options)
    }

    /// `peer`: the address connected to, which the OS does not report for an abstract name
    /// on every system; else the socket's peer address.
    fn over(
        stream: std::os::unix::net::UnixStream,
        peer: Option<UnixAddr>,
        protocol: P,
        options: UnixStreamClientOptions,
    ) -> Result<Self, ClientError> {
        let info = sys::client_info(&stream, peer)?;
        let conn = Connection::new(Arc::new(protocol), options.stream, info);
        Ok(Self {
            inner: StreamClient::new(ClientStream::Unix(stream), conn),
            _file: None,
        })
    }

    /// This end's address: unnamed unless one was bound
    /// ([`UnixStreamClientOptions::local_addr`]).
    pub fn local_addr(&self) -> &UnixAddr {
        self.inner
            .conn()
            .info()
            .local
            .as_unix()
            .expect("a Unix connection has Unix addresses")
    }

    /// The server's address.
    pub fn peer_addr(&self) -> &UnixAddr {
        self.inner
            .conn()
            .info()
            .peer
            .as_unix()
            .expect("a Unix connection has Unix addresses")
    }

    /// The server process's credentials, where the OS gives them.
    pub fn peer_cred(&self) -> Option<PeerCred> {
        self.inner.conn().info().peer_cred
    }

    /// The socket, for options.
    pub fn socket(&self) -> &std::os::unix::net::UnixStream {
        match self.inner.stream() {
            ClientStream::Unix(s) => s,
            _ => unreachable!("a Unix client holds a Unix stream"),
        }
    }

    stream_client_methods!();
}

/// A blocking Unix datagram client connected to one server socket.
///
/// The server can only answer a client socket that has an address: [`connect`](Self::connect)
/// binds one (a kernel-chosen abstract name on Linux; elsewhere give one with
/// [`connect_from`](Self::connect_from), or the server drops the requests). A path bound this
/// way is removed when the client is dropped.
///
/// ```no_run
/// use easynet_core::protocol::Datagram;
/// use easynet_mio::UnixDatagramClient;
///
/// let mut client = UnixDatagramClient::connect("/run/app-dgram.sock", Datagram::lines()).unwrap();
/// client.send(&"ping".to_owned()).unwrap();
/// let reply: String = client.recv().unwrap();
/// ```
#[derive(Debug)]
pub struct UnixDatagramClient<P> {
    inner: DgramClient<P>,
    _file: Option<SocketFile>,
}

impl<P: DatagramClientProtocol> UnixDatagramClient<P> {
    /// Connects to the server at `path`, from an address of its own (see the type's docs).
    pub fn connect(path: impl AsRef<Path>, protocol: P) -> Result<Self, ClientError> {
        Self::connect_addr(&UnixAddr::pathname(path), None, protocol)
    }

    /// Connects to the server at `server` from the address `local` (a path or an abstract
    /// name).
    pub fn connect_from(
        server: &UnixAddr,
        local: &UnixAddr,
        protocol: P,
    ) -> Result<Self, ClientError> {
        Self::connect_addr(server, Some(local), protocol)
    }

    fn connect_addr(
        server: &UnixAddr,
        local: Option<&UnixAddr>,
        protocol: P,
    ) -> Result<Self, ClientError> {
        let (socket, file) = sys::client_datagram(server, local)?;
        Ok(Self {
            inner: DgramClient::new(ClientDgram::Unix(socket), protocol),
            _file: file,
        })
    }

    /// This end's address (unnamed if it has none).
    pub fn local_addr(&self) -> io::Result<UnixAddr> {
        let socket = self.socket().ok_or_else(crate::udp_client::closed)?;
        Ok(sys::to_unix_addr(&socket.local_addr()?))
    }

    /// The socket, for options; `None` once closed.
    pub fn socket(&self) -> Option<&std::os::unix::net::UnixDatagram> {
        match self.inner.socket()? {
            ClientDgram::Unix(s) => Some(s),
            _ => unreachable!("a Unix datagram client holds a Unix socket"),
        }
    }

    datagram_client_methods!();
}
