//! [`AsyncTcpServer`]: EasyNetwork's AsyncTCPNetworkServer on tokio.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use easynet_core::ConnId;
use easynet_core::accept::{AcceptAction, AcceptGate};
use easynet_core::handler::{ConnInfo, Service, StreamHandler};
use easynet_core::protocol::StreamServerProtocol;
use easynet_core::stream::{Connection, ServerRole, Session};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::async_stream::{self, AsyncStreamHandler};
use crate::conn::{self, now};
use crate::shell::Shell;
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
        self.finish(false, |service, protocol, cfg| {
            Arc::new(move |stream, info, shutdown| {
                let handler = service.new_handler(&info);
                let session = new_session(handler, protocol.clone(), &cfg, info);
                let log = cfg.log_client_connection;
                Box::pin(async move {
                    if let Some(session) = session {
                        conn::drive(stream, session, shutdown, log).await;
                    }
                })
            })
        })
    }

    /// Makes a server whose connections run [`AsyncStreamHandler`]s (nothing is bound yet);
    /// fails on invalid settings.
    pub fn build_async(self) -> Result<AsyncTcpServer<S, P>, ConfigError>
    where
        S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    {
        self.finish(true, |service, protocol, cfg| {
            Arc::new(move |stream, info, shutdown| {
                let handler = service.new_handler(&info);
                let conn = new_connection(protocol.clone(), &cfg, info);
                let log = cfg.log_client_connection;
                Box::pin(async move {
                    if let Some(conn) = conn {
                        async_stream::run(handler, stream, conn, shutdown, log).await;
                    }
                })
            })
        })
    }

    fn finish(
        self,
        supervise: bool,
        serve: impl FnOnce(Arc<S>, Arc<P>, TcpConfig) -> ServeConn,
    ) -> Result<AsyncTcpServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let service = Arc::new(self.service);
        let protocol = Arc::new(self.protocol);
        let serve_conn = serve(service.clone(), protocol, self.cfg.clone());
        Ok(AsyncTcpServer {
            inner: Arc::new(Shared {
                service,
                serve_conn,
                supervise,
                _protocol: std::marker::PhantomData,
                cfg: self.cfg,
                shell: Shell::new(),
                next_conn: AtomicU64::new(1),
            }),
        })
    }
}

/// Serves one accepted connection to its end.
type ServeConn = Arc<
    dyn Fn(
            TcpStream,
            ConnInfo,
            watch::Receiver<Option<Instant>>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

struct Shared<S, P> {
    service: Arc<S>,
    /// Made by `build` or `build_async`: runs the right kind of handler.
    serve_conn: ServeConn,
    /// Run each connection in a task of its own so that a panic is reported.
    supervise: bool,
    _protocol: std::marker::PhantomData<fn() -> P>,
    cfg: TcpConfig,
    shell: Shell<TcpListener>,
    next_conn: AtomicU64,
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
    inner: Arc<Shared<S, P>>,
}

impl<S, P> Clone for AsyncTcpServer<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S, P> std::fmt::Debug for AsyncTcpServer<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTcpServer")
            .field("config", &self.inner.cfg)
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
        self.inner.shell.activate(|| self.bind())
    }

    fn bind(&self) -> Result<Vec<Arc<TcpListener>>, ServerError> {
        let cfg = &self.inner.cfg;
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
        self.inner.shell.is_listening()
    }

    /// True while `serve_forever` is accepting.
    pub fn is_serving(&self) -> bool {
        self.inner.shell.is_serving()
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
        self.inner.shell.sockets()
    }

    /// Closes the listeners for good. Connections already accepted are served until they
    /// end; a running `serve_forever` returns then. Idempotent.
    pub fn close(&self) {
        self.inner.shell.close();
    }

    /// Stops a running `serve_forever`: stops accepting, lets connections answer what they
    /// have read and close (reset at the shutdown timeout), then returns. Listeners stay
    /// bound, so the server can serve again. Without a run it returns at once.
    pub async fn shutdown(&self) {
        self.inner
            .shell
            .shutdown(self.inner.cfg.shutdown_timeout)
            .await;
    }

    /// Serves until [`shutdown`](Self::shutdown) (or until closed and every connection
    /// ended). Activates first if needed; sets `is_up` once accepting.
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
        listeners: Vec<Arc<TcpListener>>,
        is_up: impl EventSet,
    ) -> Result<(), ServerError> {
        let service = self.inner.service.clone();
        service.service_init().map_err(ServerError::ServiceInit)?;
        if cancel.is_cancelled() {
            service.service_teardown();
            return Ok(());
        }
        let addrs: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        tracing::info!("Start serving at {}", addrs.join(", "));
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let conns = TaskTracker::new();
        let mut accepts = JoinSet::new();
        for listener in listeners {
            let this = self.clone();
            let (cancel, conns, rx) = (cancel.clone(), conns.clone(), shutdown_rx.clone());
            accepts.spawn(async move { this.accept_loop(listener, cancel, conns, rx).await });
        }
        self.inner.shell.serving();
        is_up.set();

        let mut failure = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                joined = accepts.join_next() => match joined {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => { failure = Some(e); break }
                    Some(Err(e)) => { failure = Some(ServerError::Listener(std::io::Error::other(e))); break }
                    None => {
                        // Closed: serve the remaining connections until they end.
                        conns.close();
                        tokio::select! {
                            () = conns.wait() => break,
                            () = cancel.cancelled() => break,
                        }
                    }
                },
            }
        }
        tracing::info!("Server loop break, waiting for remaining tasks...");
        accepts.shutdown().await;
        let deadline = now() + self.inner.cfg.shutdown_timeout;
        shutdown_tx.send_replace(Some(deadline));
        conns.close();
        // Connections enforce the deadline themselves; the margin covers the final writes.
        let _ = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline) + Duration::from_secs(1),
            conns.wait(),
        )
        .await;
        teardown(service, self.inner.cfg.shutdown_timeout).await;
        tracing::info!("Server stopped");
        failure.map_or(Ok(()), Err)
    }

    async fn accept_loop(
        self,
        listener: Arc<TcpListener>,
        cancel: CancellationToken,
        conns: TaskTracker,
        shutdown: watch::Receiver<Option<Instant>>,
    ) -> Result<(), ServerError> {
        let mut gate = AcceptGate::new();
        let closed = self.inner.shell.closed.clone();
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = closed.cancelled() => return Ok(()),
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => self.spawn_connection(stream, peer, &conns, shutdown.clone()),
                Err(e) => match gate.on_error(now(), &e) {
                    AcceptAction::Pause { until } => {
                        tracing::error!("accept returned {e}; retrying in 0.1 seconds");
                        tokio::select! {
                            () = cancel.cancelled() => return Ok(()),
                            () = closed.cancelled() => return Ok(()),
                            () = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {}
                        }
                    }
                    AcceptAction::Fail => return Err(ServerError::Listener(e)),
                    _ => {}
                },
            }
        }
    }

    fn spawn_connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        conns: &TaskTracker,
        shutdown: watch::Receiver<Option<Instant>>,
    ) {
        let Ok(local) = stream.local_addr() else {
            return; // reset before we could look at it
        };
        bind::tune_accepted(&stream);
        let id = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let info = ConnInfo::new(id, peer, local);
        let span = tracing::info_span!("conn", conn = %id, peer = %peer);
        let serve = (self.inner.serve_conn)(stream, info, shutdown);
        if !self.inner.supervise {
            conns.spawn(serve.instrument(span));
            return;
        }
        // A panic in an async handler ends its task: report it, the server goes on.
        let task = tokio::spawn(serve.instrument(span.clone()));
        conns.spawn(
            async move {
                if let Err(e) = task.await
                    && e.is_panic()
                {
                    tracing::error!("handler panicked; connection closed");
                }
            }
            .instrument(span),
        );
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

fn new_session<H, P>(
    handler: H,
    protocol: Arc<P>,
    cfg: &TcpConfig,
    info: ConnInfo,
) -> Option<Session<H, P>>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    new_connection(protocol, cfg, info).map(|conn| Session::from_connection(now(), handler, conn))
}

/// Runs `service_teardown` off the runtime threads, bounded by `timeout` (decision 7).
pub(crate) async fn teardown<S: Service>(service: Arc<S>, timeout: Duration) {
    let task = tokio::task::spawn_blocking(move || service.service_teardown());
    if tokio::time::timeout(timeout, task).await.is_err() {
        tracing::warn!("service_teardown did not finish within {timeout:?}; not waiting for it");
    }
}
