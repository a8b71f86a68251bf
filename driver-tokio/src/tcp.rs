//! [`AsyncTcpServer`]: EasyNetwork's AsyncTCPNetworkServer on tokio.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use easynet_core::ConnId;
use easynet_core::addr::Addr;
use easynet_core::handler::{ConnInfo, Service, StreamHandler};
use easynet_core::protocol::StreamServerProtocol;
use easynet_core::stream::{Connection, ServerRole};
use tokio::net::{TcpListener, TcpStream};

use crate::async_stream::AsyncStreamHandler;
#[cfg(feature = "tls")]
use crate::conn::now;
use crate::shell::server_methods;
use crate::stream_server::{Core, Listener, NewConn, stream_builder_methods};
use crate::{ConfigError, EventSet, ServerError};
use easynet_common::{self as bind, ListenOptions, TcpSettings};

type TcpConfig = TcpSettings;

/// Builds an [`AsyncTcpServer`]; every setting has EasyNetwork's default.
#[derive(Debug)]
pub struct TcpServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: TcpConfig,
}

impl<S, P> TcpServerBuilder<S, P>
where
    S: Service,
    P: StreamServerProtocol,
{
    easynet_common::tcp_setters!(cfg);

    stream_builder_methods!(AsyncTcpServer, TcpStream, tcp_connections, keepalive);
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, Addr)>> {
        TcpListener::poll_accept(self, cx).map_ok(|(stream, peer)| (stream, peer.into()))
    }

    fn conn_info(
        &self,
        stream: &TcpStream,
        id: ConnId,
        peer: Addr,
        keepalive: Option<&bind::TcpKeepalive>,
    ) -> Option<ConnInfo> {
        let local = stream.local_addr().ok()?;
        bind::tune_accepted_with(stream, keepalive);
        Some(ConnInfo::new(id, peer, local))
    }

    fn local(&self) -> Option<Addr> {
        self.local_addr().ok().map(Addr::from)
    }
}

/// An async TCP (optionally TLS) server running portable [`StreamHandler`]s, one tokio task
/// per connection.
///
/// ```no_run
/// use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// use easynet_core::protocol::Stream;
/// use easynet_tokio::AsyncTcpServer;
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
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = AsyncTcpServer::builder(Stream::lines(), |_: &ConnInfo| Echo)
///     .host("127.0.0.1")
///     .port(9000)
///     .build()?;
/// server.serve().await?;
/// # Ok(()) }
/// ```
pub struct AsyncTcpServer<S, P> {
    core: Arc<Core<S, TcpListener>>,
    cfg: Arc<TcpConfig>,
    _protocol: std::marker::PhantomData<fn() -> P>,
}

server_methods!(
    AsyncTcpServer,
    TcpServerBuilder,
    TcpSettings,
    StreamServerProtocol
);
crate::stream_server::stream_stats!(AsyncTcpServer);

impl<S, P> AsyncTcpServer<S, P> {
    fn bind(&self) -> Result<Vec<Arc<TcpListener>>, ServerError> {
        let cfg = &self.cfg;
        let listeners = match cfg.listen.inherited() {
            Some(inherited) => inherited.map_err(ServerError::Listener)?,
            None => {
                let addrs = bind::resolve(&cfg.listen.host, cfg.listen.port)
                    .map_err(ServerError::Resolve)?;
                let opts = ListenOptions {
                    backlog: cfg.backlog,
                    reuse_port: cfg.listen.reuse_port,
                };
                bind::tcp_listeners(&addrs, opts).map_err(ServerError::Bind)?
            }
        };
        listeners
            .into_iter()
            .map(|l| {
                TcpListener::from_std(l)
                    .map(Arc::new)
                    .map_err(ServerError::Listener)
            })
            .collect()
    }

    /// The bound addresses; empty before activation and after close.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets()
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The listener sockets (for `getsockopt` through `socket2::SockRef`); same rule as
    /// [`addresses`](Self::addresses).
    pub fn sockets(&self) -> Vec<Arc<TcpListener>> {
        self.core.shell.sockets()
    }
}

fn keepalive(cfg: &TcpConfig) -> Option<bind::TcpKeepalive> {
    cfg.keepalive
}

/// Makes each connection's machine: TLS when configured.
fn tcp_connections<P: StreamServerProtocol>(protocol: Arc<P>, cfg: &TcpConfig) -> NewConn<P> {
    let cfg = cfg.clone();
    Arc::new(move |info| new_connection(protocol.clone(), &cfg, info))
}

fn new_connection<P: StreamServerProtocol>(
    protocol: Arc<P>,
    cfg: &TcpConfig,
    info: ConnInfo,
) -> Option<Connection<P, ServerRole>> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls {
        return match easynet_core::tls::TlsSession::server(tls.get()) {
            Ok(session) => Some(Connection::with_tls(
                now(),
                protocol,
                cfg.stream.clone(),
                info,
                session,
            )),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start TLS session");
                None
            }
        };
    }
    Some(Connection::new(protocol, cfg.stream.clone(), info))
}
