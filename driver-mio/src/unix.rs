//! Unix domain sockets on mio: [`StandaloneUnixStreamServer`],
//! [`StandaloneUnixDatagramServer`] and the blocking [`UnixStreamClient`] and
//! [`UnixDatagramClient`].
//!
//! The servers are the TCP and UDP ones over another socket family: the same event loops
//! (the worker and the datagram loop are written once against a listener and a datagram
//! socket trait), the same handlers, the same [`ServerHandle`](crate::ServerHandle)/[`ServerThread`](crate::ServerThread)
//! model. Each run binds anew; the socket file (for a path) is removed at the end of each
//! run, if it is still ours. See [`easynet_common::unix`] for the stale-file rule. Stream
//! handlers see the peer's credentials in
//! [`ConnInfo::peer_cred`](easynet_core::handler::ConnInfo::peer_cred). Datagrams from
//! unnamed sockets cannot be answered; they are dropped (logged) and the server goes on.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easynet_common::unix::{self as sys, SocketFile};
use easynet_common::{ClientError, EventSet, UnixDatagramSettings, UnixStreamSettings};
use easynet_core::ConnId;
use easynet_core::addr::{Addr, PeerCred, UnixAddr};
use easynet_core::datagram::DatagramConfig;
use easynet_core::handler::{ConnInfo, DatagramHandler, Service, StreamHandler};
use easynet_core::protocol::{
    DatagramClientProtocol, DatagramServerProtocol, StreamClientProtocol, StreamServerProtocol,
};
use easynet_core::stream::{Connection, StreamConfig};
use mio::net::{UnixDatagram, UnixListener, UnixStream};

use crate::client::{ClientStream, Responses, StreamClient, stream_client_methods};
use crate::control::{Control, server_methods};
use crate::tcp::run_workers;
use crate::udp::{MioDgram, Parts, dropped_datagrams, run_endpoints};
use crate::udp_client::{ClientDgram, DgramClient, UdpResponses, datagram_client_methods};
use crate::worker::{Factory, MioListener};
use crate::{ConfigError, DropCounter, ServerError};

impl MioListener for UnixListener {
    type Stream = UnixStream;

    fn recv_into(stream: &UnixStream, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        easynet_common::recv_into(stream, buf)
    }
    fn accept_conn(&self) -> io::Result<(UnixStream, Addr)> {
        self.accept()
            .map(|(s, peer)| (s, Addr::Unix(sys::to_unix_addr(&peer))))
    }
    fn conn_info(
        &self,
        stream: &UnixStream,
        id: ConnId,
        peer: Addr,
        _: Option<&easynet_common::TcpKeepalive>,
    ) -> Option<ConnInfo> {
        let local = sys::to_unix_addr(&self.local_addr().ok()?);
        let cred = sys::peer_cred(stream).ok();
        Some(ConnInfo::new(id, peer, local).with_peer_cred(cred))
    }
    fn shutdown_write(stream: &UnixStream) {
        let _ = stream.shutdown(Shutdown::Write);
    }
    fn set_abortive(stream: &UnixStream) {
        // Unix streams have no reset; the close that follows is all there is.
        let _ = stream;
    }
    fn unsent(stream: &UnixStream) -> Option<usize> {
        easynet_common::unsent_bytes(stream)
    }
}

impl MioDgram for UnixDatagram {
    type Addr = UnixAddr;

    fn recv_dgram(&self, buf: &mut [u8]) -> io::Result<(usize, Option<UnixAddr>, Option<u32>)> {
        // No SO_RXQ_OVFL here: a full Unix datagram socket blocks or refuses its senders
        // rather than dropping.
        let (n, from) = self.recv_from(buf)?;
        let from = sys::to_unix_addr(&from);
        Ok((n, (!from.is_unnamed()).then_some(from), None))
    }
    fn send_dgram(&self, buf: &[u8], to: &UnixAddr) -> io::Result<usize> {
        sys::send_to(self, buf, to)
    }
}

fn dup(fd: OwnedFd) -> Vec<socket2::Socket> {
    vec![socket2::Socket::from(fd)]
}

/// Builds a [`StandaloneUnixStreamServer`]; a path or an abstract name is required.
#[derive(Debug)]
pub struct UnixStreamServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: UnixStreamSettings,
}

impl<S, P> UnixStreamServerBuilder<S, P>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    easynet_common::unix_stream_setters!(cfg);

    /// Checks the settings and makes the server (nothing is bound until `serve_forever`).
    pub fn build(mut self) -> Result<StandaloneUnixStreamServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let control = Control::limited(self.cfg.shutdown_timeout, self.cfg.max_connections);
        self.cfg.stream.recorder = Some(control.recorder());
        let factory = Factory::new(
            self.service,
            self.protocol,
            self.cfg.stream.clone(),
            None, // no keepalive on Unix streams
            #[cfg(feature = "tls")]
            None,
        );
        Ok(StandaloneUnixStreamServer {
            factory,
            control,
            cfg: self.cfg,
        })
    }
}

/// A blocking Unix stream server running portable [`StreamHandler`]s on a mio event loop.
///
/// ```
/// use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// use easynet_core::protocol::Stream;
/// use easynet_mio::{ServerThread, StandaloneUnixStreamServer, UnixStreamClient};
///
/// struct Echo;
/// impl StreamHandler for Echo {
///     type Request = String;
///     type Response = String;
///     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
///         if let Received::Request(line) = r { cx.send(&line)?; }
///         Ok(Next::recv())
///     }
/// }
///
/// let path = std::env::temp_dir().join(format!("easynet-doc-mio-{}.sock", std::process::id()));
/// let server = StandaloneUnixStreamServer::builder(Stream::lines(), |_: &ConnInfo| Echo)
///     .path(&path)
///     .build()
///     .unwrap();
/// let mut thread = ServerThread::start(server).unwrap();
///
/// let mut client = UnixStreamClient::connect(&path, Stream::lines()).unwrap();
/// client.send(&"hello".to_owned()).unwrap();
/// assert_eq!(client.recv().unwrap(), "hello");
/// client.close();
///
/// thread.join(None).unwrap();
/// assert!(!path.exists(), "the socket file is removed at the end of the run");
/// ```
pub struct StandaloneUnixStreamServer<S, P> {
    factory: Arc<Factory<S, P>>,
    cfg: UnixStreamSettings,
    control: Arc<Control>,
}

impl<S, P> StandaloneUnixStreamServer<S, P> {
    /// The bound address while serving; `None` otherwise.
    pub fn address(&self) -> Option<UnixAddr> {
        unix_address(&self.control)
    }
}

fn unix_address(control: &Control) -> Option<UnixAddr> {
    control
        .local_addresses()
        .first()
        .and_then(|a| a.as_unix().cloned())
}

impl<S, P> StandaloneUnixStreamServer<S, P>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    /// Starts building a server for `protocol`, making handlers with `service`.
    pub fn builder(protocol: P, service: S) -> UnixStreamServerBuilder<S, P> {
        UnixStreamServerBuilder {
            service,
            protocol,
            cfg: UnixStreamSettings::default(),
        }
    }

    fn run(&self, is_up: impl EventSet) -> Result<(), ServerError> {
        let (listener, addr, file) = self.cfg.listener()?;
        let dups = listener
            .try_clone()
            .map(|l| dup(l.into()))
            .unwrap_or_default();
        let set = vec![UnixListener::from_std(listener)];
        let result = run_workers(
            &self.factory,
            &self.control,
            vec![set],
            vec![addr.into()],
            dups,
            is_up,
        );
        drop(file); // the run is over: the path goes
        result
    }
}

/// Builds a [`StandaloneUnixDatagramServer`]; a path or an abstract name is required.
#[derive(Debug)]
pub struct UnixDatagramServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: UnixDatagramSettings,
}

impl<S, P> UnixDatagramServerBuilder<S, P>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    easynet_common::unix_setters!(cfg);

    /// Per-peer queue bound and idle eviction.
    pub fn datagram_config(mut self, config: DatagramConfig) -> Self {
        self.cfg.datagram = config;
        self
    }

    /// Checks the settings and makes the server (nothing is bound until `serve_forever`).
    pub fn build(mut self) -> Result<StandaloneUnixDatagramServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let control = Control::new(self.cfg.shutdown_timeout);
        self.cfg.datagram.recorder = Some(control.recorder());
        Ok(StandaloneUnixDatagramServer {
            service: Arc::new(self.service),
            protocol: Arc::new(self.protocol),
            control,
            drops: DropCounter::default(),
            cfg: self.cfg,
        })
    }
}

/// A blocking Unix datagram server running portable [`DatagramHandler`]s on a mio event
/// loop. Datagrams from unnamed client sockets cannot be answered: they are dropped and
/// logged (WARN, rate-limited).
///
/// ```
/// use easynet_core::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
/// use easynet_core::protocol::Datagram;
/// use easynet_mio::{ServerThread, StandaloneUnixDatagramServer, UnixDatagramClient};
///
/// struct Echo;
/// impl DatagramHandler for Echo {
///     type Request = String;
///     type Response = String;
///     fn handle(&mut self, cx: &mut DatagramContext<'_, String>, r: Received<String>) -> HandlerResult {
///         if let Received::Request(text) = r { cx.send(&text)?; }
///         Ok(Next::Close)
///     }
/// }
///
/// let path = std::env::temp_dir().join(format!("easynet-doc-mio-dgram-{}.sock", std::process::id()));
/// let server = StandaloneUnixDatagramServer::builder(Datagram::lines(), |_: &ConnInfo| Echo)
///     .path(&path)
///     .build()
///     .unwrap();
/// let mut thread = ServerThread::start(server).unwrap();
///
/// # #[cfg(target_os = "linux")] {
/// // On Linux the client binds an abstract name of its own, so it can be answered.
/// let mut client = UnixDatagramClient::connect(&path, Datagram::lines()).unwrap();
/// client.send(&"ping".to_owned()).unwrap();
/// assert_eq!(client.recv().unwrap(), "ping");
/// # }
///
/// thread.join(None).unwrap();
/// assert!(!path.exists());
/// ```
pub struct StandaloneUnixDatagramServer<S, P> {
    service: Arc<S>,
    protocol: Arc<P>,
    cfg: UnixDatagramSettings,
    control: Arc<Control>,
    drops: DropCounter,
}

impl<S, P> StandaloneUnixDatagramServer<S, P> {
    /// The bound address while serving; `None` otherwise.
    pub fn address(&self) -> Option<UnixAddr> {
        unix_address(&self.control)
    }
}

impl<S, P> StandaloneUnixDatagramServer<S, P>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    /// Starts building a server for `protocol`, making one handler per peer with `service`.
    pub fn builder(protocol: P, service: S) -> UnixDatagramServerBuilder<S, P> {
        UnixDatagramServerBuilder {
            service,
            protocol,
            cfg: UnixDatagramSettings::default(),
        }
    }

    fn run(&self, is_up: impl EventSet) -> Result<(), ServerError> {
        let (socket, addr, file) = self.cfg.socket()?;
        let dups = socket
            .try_clone()
            .map(|s| dup(s.into()))
            .unwrap_or_default();
        let server = Parts {
            service: &self.service,
            protocol: &self.protocol,
            config: &self.cfg.datagram,
            control: &self.control,
            drops: &self.drops,
        };
        let result = run_endpoints(
            server,
            vec![(addr, UnixDatagram::from_std(socket))],
            dups,
            is_up,
        );
        drop(file); // the run is over: the path goes
        result
    }
}

server_methods!(
    StandaloneUnixStreamServer,
    StreamHandler,
    StreamServerProtocol
);
server_methods!(
    StandaloneUnixDatagramServer,
    DatagramHandler,
    DatagramServerProtocol
);
dropped_datagrams!(StandaloneUnixDatagramServer);

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
/// A runnable example is on [`StandaloneUnixStreamServer`].
pub struct UnixStreamClient<P: StreamClientProtocol> {
    inner: StreamClient<P>,
}

impl<P: StreamClientProtocol> std::fmt::Debug for UnixStreamClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixStreamClient")
            .field("conn", self.inner.conn())
            .finish_non_exhaustive()
    }
}

impl<P: StreamClientProtocol> UnixStreamClient<P> {
    /// Connects to the server at the filesystem `path`.
    pub fn connect(path: impl AsRef<Path>, protocol: P) -> Result<Self, ClientError> {
        Self::connect_addr(&UnixAddr::pathname(path), protocol)
    }

    /// Connects to a path or a Linux abstract name.
    pub fn connect_addr(addr: &UnixAddr, protocol: P) -> Result<Self, ClientError> {
        let stream = sys::connect_stream(addr)?;
        let local = sys::to_unix_addr(&stream.local_addr()?);
        let info = ConnInfo::new(ConnId(0), addr.clone(), local)
            .with_peer_cred(sys::peer_cred(&stream).ok());
        let conn = Connection::new(Arc::new(protocol), StreamConfig::default(), info);
        Ok(Self {
            inner: StreamClient::new(ClientStream::Unix(stream), conn),
        })
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
