//! [`AsyncTcpServer`]: EasyNetwork's AsyncTCPNetworkServer on tokio.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use easynet_core::ConnId;
use easynet_core::addr::Addr;
use easynet_core::handler::{ConnInfo, Service, StreamHandler};
use easynet_core::protocol::StreamServerProtocol;
use easynet_core::stream::{Connection, ServerRole};
use tokio::net::{TcpListener, TcpStream};

use crate::async_stream::AsyncStreamHandler;
#[cfg(feature = "tls")]
use crate::conn::now;
use crate::stream_server::{self, Core, Listener, NewConn, ServeConn};
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

    /// Makes a server whose connections run portable [`StreamHandler`]s (nothing is bound
    /// yet); fails on invalid settings.
    pub fn build(self) -> Result<AsyncTcpServer<S, P>, ConfigError>
    where
        S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    {
        // The core catches portable handlers' panics itself.
        self.finish(false, stream_server::portable)
    }

    /// Makes a server whose connections run [`AsyncStreamHandler`]s (nothing is bound yet);
    /// fails on invalid settings.
    pub fn build_async(self) -> Result<AsyncTcpServer<S, P>, ConfigError>
    where
        S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    {
        self.finish(true, stream_server::asynchronous)
    }

    fn finish(
        self,
        supervise: bool,
        serve: impl FnOnce(Arc<S>, NewConn<P>, bool) -> ServeConn<TcpStream>,
    ) -> Result<AsyncTcpServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let service = Arc::new(self.service);
        let protocol = Arc::new(self.protocol);
        let cfg = self.cfg.clone();
        let new_conn: NewConn<P> =
            Arc::new(move |info| new_connection(protocol.clone(), &cfg, info));
        let serve_conn = serve(service.clone(), new_conn, self.cfg.log_client_connection);
        Ok(AsyncTcpServer {
            core: Arc::new(Core::new(
                service,
                serve_conn,
                supervise,
                self.cfg.shutdown_timeout,
            )),
            cfg: Arc::new(self.cfg),
            _protocol: std::marker::PhantomData,
        })
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, Addr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        Ok((stream, peer.into()))
    }

    fn conn_info(&self, stream: &TcpStream, id: ConnId, peer: Addr) -> Option<ConnInfo> {
        let local = stream.local_addr().ok()?;
        bind::tune_accepted(stream);
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
/// server.serve_forever(()).await?;
/// # Ok(()) }
/// ```
pub struct AsyncTcpServer<S, P> {
    core: Arc<Core<S, TcpListener>>,
    cfg: Arc<TcpConfig>,
    _protocol: std::marker::PhantomData<fn() -> P>,
}

impl<S, P> Clone for AsyncTcpServer<S, P> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            cfg: self.cfg.clone(),
            _protocol: std::marker::PhantomData,
        }
    }
}

impl<S, P> std::fmt::Debug for AsyncTcpServer<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTcpServer")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl<S, P> AsyncTcpServer<S, P>
where
    S: Service,
    P: StreamServerProtocol,
{
    /// Starts building a server for `protocol`, making handlers with `service`.
    pub fn builder(protocol: P, service: S) -> TcpServerBuilder<S, P> {
        TcpServerBuilder {
            service,
            protocol,
            cfg: TcpSettings::default(),
        }
    }

    /// Binds the listeners; idempotent. Fails with [`ServerError::Closed`] after `close`.
    pub async fn activate(&self) -> Result<(), ServerError> {
        self.core.shell.activate(|| self.bind())
    }

    fn bind(&self) -> Result<Vec<Arc<TcpListener>>, ServerError> {
        let cfg = &self.cfg;
        let addrs =
            bind::resolve(&cfg.listen.host, cfg.listen.port).map_err(ServerError::Resolve)?;
        let opts = ListenOptions {
            backlog: cfg.backlog,
            reuse_port: cfg.listen.reuse_port,
        };
        let listeners = bind::tcp_listeners(&addrs, opts).map_err(ServerError::Bind)?;
        listeners
            .into_iter()
            .map(|l| {
                TcpListener::from_std(l)
                    .map(Arc::new)
                    .map_err(ServerError::Listener)
            })
            .collect()
    }

    /// True while listeners are bound (after activation, until close).
    pub fn is_listening(&self) -> bool {
        self.core.shell.is_listening()
    }

    /// True while `serve_forever` is accepting.
    pub fn is_serving(&self) -> bool {
        self.core.shell.is_serving()
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

    /// Closes the listeners for good. Connections already accepted are served until they
    /// end; a running `serve_forever` returns then. Idempotent.
    pub fn close(&self) {
        self.core.shell.close();
    }

    /// Stops a running `serve_forever`: stops accepting, lets connections answer what they
    /// have read and close (reset at the shutdown timeout), then returns. Listeners stay
    /// bound, so the server can serve again. Without a run it returns at once.
    pub async fn shutdown(&self) {
        self.core.shell.shutdown(self.cfg.shutdown_timeout).await;
    }

    /// Serves until [`shutdown`](Self::shutdown) (or until closed and every connection
    /// ended). Activates first if needed; sets `is_up` once accepting.
    pub async fn serve_forever(&self, is_up: impl EventSet) -> Result<(), ServerError> {
        self.core.serve_forever(|| self.bind(), is_up).await
    }
}

fn new_connection<P: StreamServerProtocol>(
    protocol: Arc<P>,
    cfg: &TcpConfig,
    info: ConnInfo,
) -> Option<Connection<P, ServerRole>> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls {
        return match easynet_core::tls::TlsSession::server(tls.clone()) {
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
