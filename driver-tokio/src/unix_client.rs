//! Async Unix clients: [`AsyncUnixStreamClient`] and [`AsyncUnixDatagramClient`], the TCP
//! and UDP clients' machinery over Unix sockets.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use easynet_common::ClientError;
use easynet_common::unix::{self as sys, SocketFile, UnixStreamClientOptions};
use easynet_core::addr::{PeerCred, UnixAddr};
use easynet_core::protocol::{DatagramClientProtocol, StreamClientProtocol};
use easynet_core::stream::Connection;
use tokio::net::{UnixDatagram, UnixStream};

use crate::StreamSocket;
use crate::client::{Responses, StreamClient, stream_client_methods};
use crate::conn::now;
use crate::udp_client::{ClientDgram, DgramClient, UdpResponses, datagram_client_methods};

/// An async Unix stream client: send requests, receive responses, with protocol `P`.
///
/// ```no_run
/// use easynet_core::protocol::Stream;
/// use easynet_tokio::AsyncUnixStreamClient;
///
/// # async fn run() -> Result<(), easynet_tokio::ClientError> {
/// let mut client = AsyncUnixStreamClient::connect("/run/app.sock", Stream::lines()).await?;
/// client.send(&"hello".to_owned()).await?;
/// let reply: String = client.recv().await?;
/// client.close().await;
/// # Ok(()) }
/// ```
///
/// A runnable example is on [`AsyncUnixStreamServer`](crate::AsyncUnixStreamServer).
pub struct AsyncUnixStreamClient<P: StreamClientProtocol> {
    inner: StreamClient<P>,
    /// The local path bound by `connect_with`, removed when the client is dropped.
    _file: Option<SocketFile>,
}

impl<P: StreamClientProtocol> std::fmt::Debug for AsyncUnixStreamClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncUnixStreamClient")
            .field("conn", self.inner.conn())
            .finish_non_exhaustive()
    }
}

impl<P: StreamClientProtocol> AsyncUnixStreamClient<P> {
    /// Connects to the server at the filesystem `path` with the default
    /// [`UnixStreamClientOptions`].
    ///
    /// Cancel safety: a dropped call leaves nothing behind (a connect already under way
    /// finishes off the runtime and is closed).
    pub async fn connect(path: impl AsRef<Path>, protocol: P) -> Result<Self, ClientError> {
        Self::connect_addr(&UnixAddr::pathname(path), protocol).await
    }

    /// Connects to a path or a Linux abstract name with the default
    /// [`UnixStreamClientOptions`].
    ///
    /// Cancel safety: as [`connect`](Self::connect).
    pub async fn connect_addr(addr: &UnixAddr, protocol: P) -> Result<Self, ClientError> {
        Self::connect_with(addr, protocol, UnixStreamClientOptions::new()).await
    }

    /// Connects to a path or a Linux abstract name as `options` say: from
    /// `options.local_addr` when set (a path, removed when the client is dropped, or an
    /// abstract name), reading at most `max_recv_size` bytes at once.
    ///
    /// Cancel safety: as [`connect`](Self::connect); a local path bound by a connect
    /// that finishes after the call was dropped is removed with its socket.
    ///
    /// ```
    /// use easynet_core::addr::UnixAddr;
    /// use easynet_core::protocol::Stream;
    /// use easynet_tokio::{AsyncUnixStreamClient, UnixStreamClientOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = std::env::temp_dir().join(format!("easynet-doc-tokio-uc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let listener = tokio::net::UnixListener::bind(dir.join("server.sock")).unwrap();
    /// let options = UnixStreamClientOptions::new()
    ///     .local_addr(UnixAddr::pathname(dir.join("client.sock")))
    ///     .max_recv_size(4096);
    /// let server = UnixAddr::pathname(dir.join("server.sock"));
    /// let client = AsyncUnixStreamClient::connect_with(&server, Stream::lines(), options)
    ///     .await
    ///     .unwrap();
    /// let (_conn, from) = listener.accept().await.unwrap();
    /// assert_eq!(from.as_pathname(), Some(dir.join("client.sock").as_path()));
    /// assert_eq!(client.local_addr(), &UnixAddr::pathname(dir.join("client.sock")));
    /// drop(client); // removes client.sock
    /// assert!(!dir.join("client.sock").exists());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn connect_with(
        addr: &UnixAddr,
        protocol: P,
        options: UnixStreamClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        let target = addr.clone();
        let local = options.local_addr.clone();
        // A Unix connect completes at once unless the backlog is full: off the runtime.
        let (std, file) =
            tokio::task::spawn_blocking(move || sys::connect_stream_from(&target, local.as_ref()))
                .await
                .map_err(io::Error::other)??;
        let mut client = Self::over(std, Some(addr.clone()), protocol, options)?;
        client._file = file;
        Ok(client)
    }

    /// A client over a Unix stream already connected (EasyNetwork's "connected socket"
    /// form). `options.local_addr` does not apply; the socket is made non-blocking. Must be
    /// called within a runtime.
    ///
    /// ```
    /// use easynet_core::protocol::Stream;
    /// use easynet_tokio::{AsyncUnixStreamClient, UnixStreamClientOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let options = UnixStreamClientOptions::new();
    /// let mut client = AsyncUnixStreamClient::from_std(ours, Stream::lines(), options).unwrap();
    /// client.send(&"hello".to_owned()).await.unwrap();
    /// # drop(theirs);
    /// # }
    /// ```
    pub fn from_std(
        stream: std::os::unix::net::UnixStream,
        protocol: P,
        options: UnixStreamClientOptions,
    ) -> Result<Self, ClientError> {
        options.validate()?;
        Self::over(stream, None, protocol, options)
    }

    /// `peer`: the address connected to, when known; else the socket's peer address.
    fn over(
        std: std::os::unix::net::UnixStream,
        peer: Option<UnixAddr>,
        protocol: P,
        options: UnixStreamClientOptions,
    ) -> Result<Self, ClientError> {
        std.set_nonblocking(true)?;
        let stream = UnixStream::from_std(std)?;
        let info = sys::client_info(&stream, peer)?;
        let conn = Connection::new(Arc::new(protocol), options.stream, info);
        Ok(Self {
            inner: StreamClient::new(stream.into(), conn),
            _file: None,
        })
    }

    /// This end's address: unnamed unless one was bound
    /// ([`UnixStreamClientOptions::local_addr`]).
    pub fn local_addr(&self) -> &UnixAddr {
        unix(&self.inner.conn().info().local)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> &UnixAddr {
        unix(&self.inner.conn().info().peer)
    }

    /// The server process's credentials, where the OS gives them.
    pub fn peer_cred(&self) -> Option<PeerCred> {
        self.inner.conn().info().peer_cred
    }

    /// The socket, for options.
    pub fn socket(&self) -> &UnixStream {
        match self.inner.stream() {
            StreamSocket::Unix(s) => s,
            _ => unreachable!("a Unix client holds a Unix stream"),
        }
    }

    stream_client_methods!();
}

fn unix(addr: &easynet_core::addr::Addr) -> &UnixAddr {
    addr.as_unix()
        .expect("a Unix connection has Unix addresses")
}

/// An async Unix datagram client connected to one server socket.
///
/// The server can only answer a client socket that has an address: [`connect`](Self::connect)
/// binds one (a kernel-chosen abstract name on Linux; elsewhere give one with
/// [`connect_from`](Self::connect_from), or the server drops the requests). A path bound this
/// way is removed when the client is dropped.
///
/// ```no_run
/// use easynet_core::protocol::Datagram;
/// use easynet_tokio::AsyncUnixDatagramClient;
///
/// # async fn run() -> Result<(), easynet_tokio::ClientError> {
/// let mut client = AsyncUnixDatagramClient::connect("/run/app-dgram.sock", Datagram::lines()).await?;
/// client.send(&"ping".to_owned()).await?;
/// let reply: String = client.recv().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncUnixDatagramClient<P> {
    inner: DgramClient<P>,
    _file: Option<SocketFile>,
}

impl<P: DatagramClientProtocol> AsyncUnixDatagramClient<P> {
    /// Connects to the server at `path`, from an address of its own (see the type's docs).
    ///
    /// Cancel safety: it does not wait (the future completes at its first poll).
    pub async fn connect(path: impl AsRef<Path>, protocol: P) -> Result<Self, ClientError> {
        Self::connect_addr(&UnixAddr::pathname(path), None, protocol)
    }

    /// Connects to the server at `server` from the address `local` (a path or an abstract
    /// name).
    ///
    /// Cancel safety: as [`connect`](Self::connect).
    pub async fn connect_from(
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
        let (std, file) = sys::client_datagram(server, local)?;
        std.set_nonblocking(true)?;
        let socket = UnixDatagram::from_std(std)?;
        Ok(Self {
            inner: DgramClient::new(ClientDgram::Unix(socket), protocol),
            _file: file,
        })
    }

    /// This end's address (unnamed if it has none).
    pub fn local_addr(&self) -> io::Result<UnixAddr> {
        let socket = self.socket().ok_or_else(crate::udp_client::closed)?;
        Ok(sys::to_unix_addr(&socket.local_addr()?.into()))
    }

    /// The socket, for options; `None` once closed.
    pub fn socket(&self) -> Option<&UnixDatagram> {
        match self.inner.socket()? {
            ClientDgram::Unix(s) => Some(s),
            _ => unreachable!("a Unix datagram client holds a Unix socket"),
        }
    }

    datagram_client_methods!();
}
