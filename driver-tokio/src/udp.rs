//! [`AsyncUdpServer`]: EasyNetwork's AsyncUDPNetworkServer on tokio.

use std::net::SocketAddr;
use std::sync::Arc;

use easynet_core::datagram::DatagramConfig;
use easynet_core::handler::{DatagramHandler, Service};
use easynet_core::protocol::DatagramServerProtocol;
use tokio::net::UdpSocket;

use crate::async_datagram::AsyncDatagramHandler;
use crate::datagram_server::{self, DgramCore, ServeSocket};
use crate::{ConfigError, EventSet, ServerError};
use easynet_common::{self as bind, UdpSettings};

type UdpConfig = UdpSettings;

/// Builds an [`AsyncUdpServer`].
#[derive(Debug)]
pub struct UdpServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: UdpConfig,
}

impl<S, P> UdpServerBuilder<S, P>
where
    S: Service,
    P: DatagramServerProtocol,
{
    easynet_common::listen_setters!(cfg);

    /// Per-peer queue bound and idle eviction.
    pub fn datagram_config(mut self, config: DatagramConfig) -> Self {
        self.cfg.datagram = config;
        self
    }

    /// Makes a server whose peers run portable [`DatagramHandler`]s (nothing is bound yet).
    pub fn build(self) -> Result<AsyncUdpServer<S, P>, ConfigError>
    where
        S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    {
        self.finish(datagram_server::portable)
    }

    /// Makes a server whose peers run [`AsyncDatagramHandler`]s (nothing is bound yet).
    pub fn build_async(self) -> Result<AsyncUdpServer<S, P>, ConfigError>
    where
        S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    {
        self.finish(datagram_server::asynchronous)
    }

    fn finish(
        self,
        serve: impl FnOnce(Arc<S>, Arc<P>, DatagramConfig) -> ServeSocket<UdpSocket>,
    ) -> Result<AsyncUdpServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let service = Arc::new(self.service);
        let serve_socket = serve(
            service.clone(),
            Arc::new(self.protocol),
            self.cfg.datagram.clone(),
        );
        Ok(AsyncUdpServer {
            core: Arc::new(DgramCore::new(
                service,
                serve_socket,
                self.cfg.shutdown_timeout,
            )),
            cfg: Arc::new(self.cfg),
            _protocol: std::marker::PhantomData,
        })
    }
}

/// An async UDP server running portable [`DatagramHandler`]s: one task per socket drives the
/// core's [`DatagramServer`](easynet_core::datagram::DatagramServer) (per-peer routines, bounded queues, idle eviction).
///
/// ```no_run
/// use easynet_core::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
/// use easynet_core::protocol::Datagram;
/// use easynet_tokio::AsyncUdpServer;
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
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = AsyncUdpServer::builder(Datagram::lines(), |_: &ConnInfo| Echo)
///     .host("127.0.0.1")
///     .port(9000)
///     .build()?;
/// server.serve_forever(()).await?;
/// # Ok(()) }
/// ```
pub struct AsyncUdpServer<S, P> {
    core: Arc<DgramCore<S, UdpSocket>>,
    cfg: Arc<UdpConfig>,
    _protocol: std::marker::PhantomData<fn() -> P>,
}

impl<S, P> Clone for AsyncUdpServer<S, P> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            cfg: self.cfg.clone(),
            _protocol: std::marker::PhantomData,
        }
    }
}

impl<S, P> std::fmt::Debug for AsyncUdpServer<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncUdpServer")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl<S, P> AsyncUdpServer<S, P>
where
    S: Service,
    P: DatagramServerProtocol,
{
    /// Starts building a server for `protocol`, making one handler per peer with `service`.
    pub fn builder(protocol: P, service: S) -> UdpServerBuilder<S, P> {
        UdpServerBuilder {
            service,
            protocol,
            cfg: UdpSettings::default(),
        }
    }

    fn bind(&self) -> Result<Vec<Arc<UdpSocket>>, ServerError> {
        let cfg = &self.cfg;
        let addrs =
            bind::resolve(&cfg.listen.host, cfg.listen.port).map_err(ServerError::Resolve)?;
        let sockets =
            bind::udp_sockets(&addrs, cfg.listen.reuse_port).map_err(ServerError::Bind)?;
        sockets
            .into_iter()
            .map(|s| {
                UdpSocket::from_std(s)
                    .map(Arc::new)
                    .map_err(ServerError::Listener)
            })
            .collect()
    }

    /// Binds the sockets; idempotent. Datagrams that arrive before serving wait in the kernel.
    pub async fn activate(&self) -> Result<(), ServerError> {
        self.core.shell.activate(|| self.bind())
    }

    /// True while sockets are bound.
    pub fn is_listening(&self) -> bool {
        self.core.shell.is_listening()
    }

    /// True while `serve_forever` is receiving.
    pub fn is_serving(&self) -> bool {
        self.core.shell.is_serving()
    }

    /// The bound addresses; empty before activation and after close.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets()
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// The bound sockets; same rule as [`addresses`](Self::addresses).
    pub fn sockets(&self) -> Vec<Arc<UdpSocket>> {
        self.core.shell.sockets()
    }

    /// Closes for good; a running `serve_forever` returns at once (UDP has no connections).
    pub fn close(&self) {
        self.core.shell.close();
    }

    /// Stops a running `serve_forever` and waits for it; sockets stay bound.
    pub async fn shutdown(&self) {
        self.core.shell.shutdown(self.cfg.shutdown_timeout).await;
    }

    /// Serves until [`shutdown`](Self::shutdown) or [`close`](Self::close).
    pub async fn serve_forever(&self, is_up: impl EventSet) -> Result<(), ServerError> {
        self.core.serve_forever(|| self.bind(), is_up).await
    }
}
