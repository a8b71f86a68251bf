//! [`AsyncUdpServer`]: EasyNetwork's AsyncUDPNetworkServer on tokio.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use easynet_core::datagram::{DatagramConfig, DatagramServer, Output};
use easynet_core::handler::{DatagramHandler, Service};
use easynet_core::protocol::DatagramServerProtocol;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_datagram::{self, AsyncDatagramHandler};
use crate::conn::now;
use crate::shell::Shell;
use crate::{ConfigError, DropCounter, EventSet, ServerError};
use easynet_common::{self as bind, UdpSettings};

/// Largest datagram read: 64 KiB.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Datagrams read per wake-up before the answers go out.
const READ_BUDGET: usize = 32;

thread_local! {
    // One receive buffer per worker thread, not per socket or peer.
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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
        let drops = DropCounter::default();
        let counter = drops.clone();
        self.finish(drops, |service, protocol, config| {
            Arc::new(move |socket, cancel, closed| {
                let local = socket.local_addr();
                let endpoint = local.and_then(|local| {
                    DatagramServer::new(service.clone(), protocol.clone(), local, config.clone())
                        .map_err(io::Error::other)
                });
                let drops = counter.clone();
                Box::pin(
                    async move { serve_socket(socket, endpoint?, cancel, closed, drops).await },
                )
            })
        })
    }

    /// Makes a server whose peers run [`AsyncDatagramHandler`]s (nothing is bound yet).
    pub fn build_async(self) -> Result<AsyncUdpServer<S, P>, ConfigError>
    where
        S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    {
        let drops = DropCounter::default();
        let counter = drops.clone();
        self.finish(drops, |service, protocol, config| {
            Arc::new(move |socket, cancel, closed| {
                let (service, protocol, config) =
                    (service.clone(), protocol.clone(), config.clone());
                Box::pin(async_datagram::serve_socket(
                    socket,
                    service,
                    protocol,
                    config,
                    cancel,
                    closed,
                    counter.clone(),
                ))
            })
        })
    }

    fn finish(
        self,
        drops: DropCounter,
        serve: impl FnOnce(Arc<S>, Arc<P>, DatagramConfig) -> ServeSocket,
    ) -> Result<AsyncUdpServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let service = Arc::new(self.service);
        let serve_socket = serve(
            service.clone(),
            Arc::new(self.protocol),
            self.cfg.datagram.clone(),
        );
        Ok(AsyncUdpServer {
            inner: Arc::new(Shared {
                service,
                serve_socket,
                drops,
                cfg: self.cfg,
                shell: Shell::new(),
                _protocol: std::marker::PhantomData,
            }),
        })
    }
}

/// Serves one bound socket until cancelled.
type ServeSocket = Arc<
    dyn Fn(
            Arc<UdpSocket>,
            CancellationToken,
            CancellationToken,
        ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>>
        + Send
        + Sync,
>;

struct Shared<S, P> {
    service: Arc<S>,
    serve_socket: ServeSocket,
    drops: DropCounter,
    cfg: UdpConfig,
    shell: Shell<UdpSocket>,
    _protocol: std::marker::PhantomData<fn() -> P>,
}

/// An async UDP server running portable [`DatagramHandler`]s: one task per socket drives the
/// core's [`DatagramServer`] (per-peer routines, bounded queues, idle eviction).
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
    inner: Arc<Shared<S, P>>,
}

impl<S, P> Clone for AsyncUdpServer<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S, P> std::fmt::Debug for AsyncUdpServer<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncUdpServer")
            .field("config", &self.inner.cfg)
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
        let cfg = &self.inner.cfg;
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
        self.inner.shell.activate(|| self.bind())
    }

    /// True while sockets are bound.
    pub fn is_listening(&self) -> bool {
        self.inner.shell.is_listening()
    }

    /// True while `serve_forever` is receiving.
    pub fn is_serving(&self) -> bool {
        self.inner.shell.is_serving()
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
        self.inner.shell.sockets()
    }

    /// Datagrams dropped so far (a peer's queue was full, or datagrams were queued at
    /// shutdown); a handle that stays current.
    pub fn dropped_datagrams(&self) -> DropCounter {
        self.inner.drops.clone()
    }

    /// Closes for good; a running `serve_forever` returns at once (UDP has no connections).
    pub fn close(&self) {
        self.inner.shell.close();
    }

    /// Stops a running `serve_forever` and waits for it; sockets stay bound.
    pub async fn shutdown(&self) {
        self.inner
            .shell
            .shutdown(self.inner.cfg.shutdown_timeout)
            .await;
    }

    /// Serves until [`shutdown`](Self::shutdown) or [`close`](Self::close).
    pub async fn serve_forever(&self, is_up: impl EventSet) -> Result<(), ServerError> {
        let mut run = self.inner.shell.begin_run(|| self.bind())?;
        // The tasks own the sockets, so `close` really closes them.
        let sockets = std::mem::take(&mut run.sockets);
        let result = self.run(&run.cancel, sockets, is_up).await;
        self.inner.shell.end_run(run);
        result
    }

    async fn run(
        &self,
        cancel: &CancellationToken,
        sockets: Vec<Arc<UdpSocket>>,
        is_up: impl EventSet,
    ) -> Result<(), ServerError> {
        let service = self.inner.service.clone();
        service.service_init().map_err(ServerError::ServiceInit)?;
        let addrs: Vec<String> = sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        tracing::info!("Start serving at {}", addrs.join(", "));
        let mut tasks = JoinSet::new();
        for socket in sockets {
            let (cancel, closed) = (cancel.clone(), self.inner.shell.closed.clone());
            tasks.spawn((self.inner.serve_socket)(socket, cancel, closed));
        }
        self.inner.shell.serving();
        is_up.set();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(ServerError::Listener(e))),
                Err(e) => failure = failure.or(Some(ServerError::Listener(io::Error::other(e)))),
            }
            cancel.cancel(); // one socket failing stops the run
        }
        crate::tcp::teardown(service, self.inner.cfg.shutdown_timeout).await;
        tracing::info!("Server stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// One socket's loop: datagrams in, handler responses out, timers in between.
async fn serve_socket<S, P>(
    socket: Arc<UdpSocket>,
    mut endpoint: DatagramServer<S, P>,
    cancel: CancellationToken,
    closed: CancellationToken,
    drops: DropCounter,
) -> io::Result<()>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    let mut counted = 0;
    loop {
        let dropped = endpoint.drops();
        drops.add(dropped - counted);
        counted = dropped;
        // Send what the handlers produced; the next poll gives the next timer.
        let next_timeout = loop {
            match endpoint.poll_output() {
                Output::Transmit(t) => {
                    let sent = match socket.try_send_to(&t.data, t.to) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            socket.send_to(&t.data, t.to).await
                        }
                        other => other,
                    };
                    if let Err(e) = sent {
                        // The handler has returned already; log (ARCHITECTURE.md, datagrams).
                        tracing::warn!(peer = %t.to, error = %e, "datagram send failed");
                    }
                }
                Output::Idle { next_timeout } => break next_timeout,
                _ => {}
            }
        };
        let sleep = next_timeout.map(tokio::time::Instant::from_std);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = closed.cancelled() => break,
            res = socket.readable() => {
                res?;
                // Take what is there (bounded), then answer it all.
                RECV_BUF.with_borrow_mut(|buf| {
                    if buf.len() < MAX_DATAGRAM {
                        buf.resize(MAX_DATAGRAM, 0);
                    }
                    for _ in 0..READ_BUDGET {
                        match socket.try_recv_from(buf) {
                            Ok((n, from)) => endpoint.handle_datagram(now(), from, BytesMut::from(&buf[..n])),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            // ICMP errors (connection refused from an earlier send) concern one peer.
                            Err(e) => tracing::debug!(error = %e, "datagram receive error"),
                        }
                    }
                });
            }
            () = async { if let Some(t) = sleep { tokio::time::sleep_until(t).await } else { std::future::pending().await } } => {
                endpoint.handle_timeout(now());
            }
        }
    }
    endpoint.shutdown(now());
    drops.add(endpoint.drops() - counted);
    while let Output::Transmit(t) = endpoint.poll_output() {
        let _ = socket.try_send_to(&t.data, t.to);
    }
    Ok(())
}
