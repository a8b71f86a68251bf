//! Unix domain socket servers: [`AsyncUnixStreamServer`] and [`AsyncUnixDatagramServer`].
//!
//! They are the TCP and UDP servers over another socket family: the same run, connection
//! tasks and datagram loops (written once against the stream and datagram socket traits),
//! the same handlers. Differences: the address is a filesystem path or a Linux abstract
//! name; there is no TLS; handlers see [`Addr::Unix`] addresses and, on stream
//! connections, the peer's credentials in
//! [`ConnInfo::peer_cred`](easynet_core::handler::ConnInfo::peer_cred). The socket file is
//! created at activation and removed when the socket is let go (`close`, or the server
//! dropped), if it is still ours; see [`easynet_common::unix`] for the stale-file rule.
//! Datagrams from unnamed sockets cannot be answered and are dropped (logged).

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use easynet_common::unix::{self as sys, SocketFile};
use easynet_common::{UnixDatagramSettings, UnixStreamSettings};
use easynet_core::ConnId;
use easynet_core::addr::{Addr, UnixAddr};
use easynet_core::datagram::DatagramConfig;
use easynet_core::handler::{ConnInfo, DatagramHandler, Service, StreamHandler};
use easynet_core::protocol::{DatagramServerProtocol, StreamServerProtocol};
use easynet_core::stream::Connection;
use tokio::net::{UnixListener, UnixStream};

use crate::async_stream::AsyncStreamHandler;
use crate::datagram_server::{DgramCore, datagram_builder_methods, dropped_datagrams};
use crate::dgram::UnixDgram;
use crate::shell::server_methods;
use crate::stream_server::{Core, Listener, NewConn, stream_builder_methods};
use crate::{ConfigError, EventSet, ServerError};
use easynet_core::datagram::AsyncDatagramHandler;

/// A bound Unix listener and the file it made (removed when this is dropped).
pub(crate) struct UnixListenerSocket {
    listener: UnixListener,
    local: UnixAddr,
    _file: Option<SocketFile>,
}

impl Listener for UnixListenerSocket {
    type Stream = UnixStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(UnixStream, Addr)>> {
        self.listener.poll_accept(cx).map_ok(|(stream, _)| {
            let peer = sys::peer_addr(&stream);
            (stream, Addr::Unix(peer))
        })
    }

    fn conn_info(
        &self,
        stream: &UnixStream,
        id: ConnId,
        peer: Addr,
        _: Option<&easynet_common::TcpKeepalive>,
    ) -> Option<ConnInfo> {
        let cred = sys::peer_cred(stream).ok();
        Some(ConnInfo::new(id, peer, self.local.clone()).with_peer_cred(cred))
    }

    fn local(&self) -> Option<Addr> {
        Some(self.local.clone().into())
    }
}

/// Unix streams have no keepalive.
fn no_keepalive(_: &UnixStreamSettings) -> Option<easynet_common::TcpKeepalive> {
    None
}

/// Builds an [`AsyncUnixStreamServer`]; a path or an abstract name is required.
#[derive(Debug)]
pub struct UnixStreamServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: UnixStreamSettings,
}

impl<S, P> UnixStreamServerBuilder<S, P>
where
    S: Service,
    P: StreamServerProtocol,
{
    easynet_common::unix_stream_setters!(cfg);

    stream_builder_methods!(
        AsyncUnixStreamServer,
        UnixStream,
        unix_connections,
        no_keepalive
    );
}

/// Makes each connection's machine (no TLS on Unix sockets).
fn unix_connections<P: StreamServerProtocol>(
    protocol: Arc<P>,
    cfg: &UnixStreamSettings,
) -> NewConn<P> {
    let stream = cfg.stream.clone();
    Arc::new(move |info| Some(Connection::new(protocol.clone(), stream.clone(), info)))
}

/// An async Unix stream server: [`AsyncTcpServer`](crate::AsyncTcpServer) on a path or an
/// abstract name, with the peer's credentials in the connection info.
///
/// ```
/// use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// use easynet_core::protocol::Stream;
/// use easynet_tokio::{AsyncUnixStreamClient, AsyncUnixStreamServer};
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
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("easynet-doc-tokio-{}.sock", std::process::id()));
/// let server = AsyncUnixStreamServer::builder(Stream::lines(), |_: &ConnInfo| Echo)
///     .path(&path)
///     .build()?;
/// server.activate().await?;
/// let running = tokio::spawn({ let s = server.clone(); async move { s.serve().await } });
///
/// let mut client = AsyncUnixStreamClient::connect(&path, Stream::lines()).await?;
/// client.send(&"hello".to_owned()).await?;
/// assert_eq!(client.recv().await?, "hello");
/// client.close().await;
///
/// server.shutdown().await;
/// server.close();
/// running.await??;
/// assert!(!path.exists(), "the socket file is gone");
/// # Ok(()) }
/// ```
pub struct AsyncUnixStreamServer<S, P> {
    core: Arc<Core<S, UnixListenerSocket>>,
    cfg: Arc<UnixStreamSettings>,
    _protocol: std::marker::PhantomData<fn() -> P>,
}

/// An async Unix datagram server: [`AsyncUdpServer`](crate::AsyncUdpServer) on a path or
/// an abstract name. Datagrams from unnamed client sockets cannot be answered: they are
/// dropped and logged (WARN, rate-limited), and the server goes on.
///
/// ```
/// use easynet_core::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
/// use easynet_core::protocol::Datagram;
/// use easynet_tokio::{AsyncUnixDatagramClient, AsyncUnixDatagramServer};
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
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("easynet-doc-tokio-dgram-{}.sock", std::process::id()));
/// let server = AsyncUnixDatagramServer::builder(Datagram::lines(), |_: &ConnInfo| Echo)
///     .path(&path)
///     .build()?;
/// server.activate().await?;
/// let running = tokio::spawn({ let s = server.clone(); async move { s.serve().await } });
///
/// # #[cfg(target_os = "linux")] {
/// // On Linux the client binds an abstract name of its own, so it can be answered.
/// let mut client = AsyncUnixDatagramClient::connect(&path, Datagram::lines()).await?;
/// client.send(&"ping".to_owned()).await?;
/// assert_eq!(client.recv().await?, "ping");
/// # }
///
/// server.close();
/// running.await??;
/// assert!(!path.exists());
/// # Ok(()) }
/// ```
pub struct AsyncUnixDatagramServer<S, P> {
    core: Arc<DgramCore<S, UnixDgram>>,
    cfg: Arc<UnixDatagramSettings>,
    _protocol: std::marker::PhantomData<fn() -> P>,
}

/// Builds an [`AsyncUnixDatagramServer`]; a path or an abstract name is required.
#[derive(Debug)]
pub struct UnixDatagramServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: UnixDatagramSettings,
}

impl<S, P> UnixDatagramServerBuilder<S, P>
where
    S: Service,
    P: DatagramServerProtocol,
{
    easynet_common::unix_setters!(cfg);

    datagram_builder_methods!(AsyncUnixDatagramServer, UnixDgram);
}

server_methods!(
    AsyncUnixStreamServer,
    UnixStreamServerBuilder,
    UnixStreamSettings,
    StreamServerProtocol
);
server_methods!(
    AsyncUnixDatagramServer,
    UnixDatagramServerBuilder,
    UnixDatagramSettings,
    DatagramServerProtocol
);
dropped_datagrams!(AsyncUnixDatagramServer);
crate::stream_server::stream_stats!(AsyncUnixStreamServer);

impl<S, P> AsyncUnixStreamServer<S, P> {
    /// The bound address; `None` before activation and after close.
    pub fn address(&self) -> Option<UnixAddr> {
        self.core.shell.sockets().first().map(|s| s.local.clone())
    }

    fn bind(&self) -> Result<Vec<Arc<UnixListenerSocket>>, ServerError> {
        let (listener, local, file) = self.cfg.listener()?;
        let listener = UnixListener::from_std(listener).map_err(ServerError::Listener)?;
        Ok(vec![Arc::new(UnixListenerSocket {
            listener,
            local,
            _file: file,
        })])
    }
}

impl<S, P> AsyncUnixDatagramServer<S, P> {
    /// The bound address; `None` before activation and after close.
    pub fn address(&self) -> Option<UnixAddr> {
        self.core.shell.sockets().first().map(|s| s.local.clone())
    }

    fn bind(&self) -> Result<Vec<Arc<UnixDgram>>, ServerError> {
        let (socket, local, file) = self.cfg.socket()?;
        let socket = tokio::net::UnixDatagram::from_std(socket).map_err(ServerError::Listener)?;
        Ok(vec![Arc::new(UnixDgram {
            socket: Arc::new(socket),
            local,
            _file: file,
        })])
    }
}
