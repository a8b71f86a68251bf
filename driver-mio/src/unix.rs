//! Unix domain sockets on mio: [`UnixStreamServer`] and
//! [`UnixDatagramServer`]; the blocking Unix clients are in `unix_client`.
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
use std::sync::Arc;

use bytes::BytesMut;
use easynet_common::unix::{self as sys};
use easynet_common::{DatagramBuffers, EventSet, UnixDatagramSettings, UnixStreamSettings};
use easynet_core::ConnId;
use easynet_core::addr::{Addr, UnixAddr};
use easynet_core::datagram::DatagramConfig;
use easynet_core::handler::{ConnInfo, DatagramHandler, Service, StreamHandler};
use easynet_core::protocol::{DatagramServerProtocol, StreamServerProtocol};
use mio::net::{UnixDatagram, UnixListener, UnixStream};

use crate::control::{Control, server_methods};
use crate::tcp::run_workers;
use crate::udp::{MioDgram, Parts, dropped_datagrams, run_endpoints};
use crate::worker::{Factory, MioListener};
use crate::{ConfigError, DropCounter, ServerError};

impl MioListener for UnixListener {
    type Stream = UnixStream;

    fn recv_into(stream: &UnixStream, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        easynet_common::recv_into(stream, buf)
    }
    fn accept_conn(&self) -> io::Result<(UnixStream, Addr)> {
        self.accept().map(|(s, _)| {
            let peer = sys::peer_addr(&s);
            (s, Addr::Unix(peer))
        })
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

    fn recv_dgram(
        &self,
        buffers: &mut DatagramBuffers,
    ) -> io::Result<(BytesMut, Option<UnixAddr>, Option<u32>)> {
        // No SO_RXQ_OVFL here: a full Unix datagram socket blocks or refuses its senders
        // rather than dropping. Read into the scratch buffer and copied: a Unix sender
        // costs an allocation per datagram anyway (its address).
        let buf = buffers.scratch();
        let (n, from) = self.recv_from(buf)?;
        let from = sys::to_unix_addr(&from);
        if from.is_unnamed() {
            return Ok((BytesMut::new(), None, None));
        }
        Ok((BytesMut::from(&buf[..n]), Some(from), None))
    }
    fn send_dgram(&self, buf: &[u8], to: &UnixAddr) -> io::Result<usize> {
        sys::send_to(self, buf, to)
    }
}

fn dup(fd: OwnedFd) -> Vec<socket2::Socket> {
    vec![socket2::Socket::from(fd)]
}

/// Builds a [`UnixStreamServer`]; a path or an abstract name is required.
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

    /// Checks the settings and makes the server (nothing is bound until `serve`).
    pub fn build(mut self) -> Result<UnixStreamServer<S, P>, ConfigError> {
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
        Ok(UnixStreamServer {
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
/// use easynet_mio::{ServerThread, UnixStreamServer, UnixStreamClient};
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
/// let server = UnixStreamServer::builder(Stream::lines(), |_: &ConnInfo| Echo)
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
pub struct UnixStreamServer<S, P> {
    factory: Arc<Factory<S, P>>,
    cfg: UnixStreamSettings,
    control: Arc<Control>,
}

impl<S, P> UnixStreamServer<S, P> {
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

impl<S, P> UnixStreamServer<S, P>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    /// Starts building a server for `protocol`, making one handler per connection with `factory`,
    /// a closure given the peer's [`ConnInfo`](easynet_core::handler::ConnInfo):
    /// `|_| MyHandler` needs no type annotation. A [`Service`] with `on_start` /
    /// `on_stop` hooks goes to [`builder_with_service`](Self::builder_with_service).
    pub fn builder<H>(protocol: P, factory: S) -> UnixStreamServerBuilder<S, P>
    where
        S: Fn(&easynet_core::handler::ConnInfo) -> H + Send + Sync + 'static,
    {
        Self::builder_with_service(protocol, factory)
    }

    /// Starts building a server for `protocol` whose handlers `service` makes
    /// (EasyNetwork's request handler with `service_init` / `service_actions`).
    pub fn builder_with_service(protocol: P, service: S) -> UnixStreamServerBuilder<S, P> {
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

/// Builds a [`UnixDatagramServer`]; a path or an abstract name is required.
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

    /// Checks the settings and makes the server (nothing is bound until `serve`).
    pub fn build(mut self) -> Result<UnixDatagramServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let control = Control::new(self.cfg.shutdown_timeout);
        self.cfg.datagram.recorder = Some(control.recorder());
        Ok(UnixDatagramServer {
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
/// use easynet_mio::{ServerThread, UnixDatagramServer, UnixDatagramClient};
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
/// let server = UnixDatagramServer::builder(Datagram::lines(), |_: &ConnInfo| Echo)
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
pub struct UnixDatagramServer<S, P> {
    service: Arc<S>,
    protocol: Arc<P>,
    cfg: UnixDatagramSettings,
    control: Arc<Control>,
    drops: DropCounter,
}

impl<S, P> UnixDatagramServer<S, P> {
    /// The bound address while serving; `None` otherwise.
    pub fn address(&self) -> Option<UnixAddr> {
        unix_address(&self.control)
    }
}

impl<S, P> UnixDatagramServer<S, P>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    /// Starts building a server for `protocol`, making one handler per peer with `factory`,
    /// a closure given the peer's [`ConnInfo`](easynet_core::handler::ConnInfo):
    /// `|_| MyHandler` needs no type annotation. A [`Service`] with `on_start` /
    /// `on_stop` hooks goes to [`builder_with_service`](Self::builder_with_service).
    pub fn builder<H>(protocol: P, factory: S) -> UnixDatagramServerBuilder<S, P>
    where
        S: Fn(&easynet_core::handler::ConnInfo) -> H + Send + Sync + 'static,
    {
        Self::builder_with_service(protocol, factory)
    }

    /// Starts building a server for `protocol` whose handlers `service` makes
    /// (EasyNetwork's request handler with `service_init` / `service_actions`).
    pub fn builder_with_service(protocol: P, service: S) -> UnixDatagramServerBuilder<S, P> {
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

server_methods!(UnixStreamServer, StreamHandler, StreamServerProtocol);
server_methods!(UnixDatagramServer, DatagramHandler, DatagramServerProtocol);
dropped_datagrams!(UnixDatagramServer);
