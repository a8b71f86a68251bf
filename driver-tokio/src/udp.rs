//! [`AsyncUdpServer`]: EasyNetwork's AsyncUDPNetworkServer on tokio.

use std::net::SocketAddr;
use std::sync::Arc;

use easynet_core::datagram::DatagramConfig;
use easynet_core::handler::{DatagramHandler, Service};
use easynet_core::protocol::DatagramServerProtocol;
use tokio::net::UdpSocket;

use crate::datagram_server::{DgramCore, datagram_builder_methods, dropped_datagrams};
use crate::shell::server_methods;
use crate::{ConfigError, EventSet, ServerError};
use easynet_common::{self as bind, UdpSettings};
use easynet_core::datagram::AsyncDatagramHandler;

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

    datagram_builder_methods!(AsyncUdpServer, UdpSocket);
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
/// server.serve().await?;
/// # Ok(()) }
/// ```
pub struct AsyncUdpServer<S, P> {
    core: Arc<DgramCore<S, UdpSocket>>,
    cfg: Arc<UdpConfig>,
    _protocol: std::marker::PhantomData<fn() -> P>,
}

server_methods!(
    AsyncUdpServer,
    UdpServerBuilder,
    UdpSettings,
    DatagramServerProtocol
);
dropped_datagrams!(AsyncUdpServer);

impl<S, P> AsyncUdpServer<S, P> {
    fn bind(&self) -> Result<Vec<Arc<UdpSocket>>, ServerError> {
        let cfg = &self.cfg;
        let sockets = match cfg.listen.inherited() {
            Some(inherited) => inherited.map_err(ServerError::Listener)?,
            None => {
                let addrs = bind::resolve(&cfg.listen.host, cfg.listen.port)
                    .map_err(ServerError::Resolve)?;
                bind::udp_sockets(&addrs, cfg.listen.reuse_port).map_err(ServerError::Bind)?
            }
        };
        sockets
            .into_iter()
            .map(|s| {
                // Best effort: without it, socket_dropped_datagrams stays 0.
                if let Err(e) = bind::enable_socket_drops(&s) {
                    tracing::debug!(error = %e, "SO_RXQ_OVFL not enabled");
                }
                UdpSocket::from_std(s)
                    .map(Arc::new)
                    .map_err(ServerError::Listener)
            })
            .collect()
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
}
