//! What the TCP and Unix stream servers share: the run (accept loops, one task per
//! connection, graceful shutdown, teardown), written once against [`Listener`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use easynet_core::ConnId;
use easynet_core::accept::{AcceptAction, AcceptGate};
use easynet_core::addr::Addr;
use easynet_core::handler::{ConnInfo, Service, StreamHandler};
use easynet_core::protocol::StreamServerProtocol;
use easynet_core::stream::{AsyncSession, AsyncStreamHandler, Connection, ServerRole, Session};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::conn::{self, ConnStream, now};
use crate::shell::{RunId, Shell};
use crate::{EventSet, ServerError, StreamSocket};
use easynet_common::TcpKeepalive;

/// A listening socket: TCP or Unix.
pub(crate) trait Listener: Send + Sync + 'static {
    type Stream: ConnStream + Into<StreamSocket>;

    /// The next connection and its peer's address (one non-blocking accept, or the
    /// waker registered).
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Addr)>>;

    /// Tunes an accepted stream (TCP: `keepalive`) and describes it; `None` if it is
    /// already gone.
    fn conn_info(
        &self,
        stream: &Self::Stream,
        id: ConnId,
        peer: Addr,
        keepalive: Option<&TcpKeepalive>,
    ) -> Option<ConnInfo>;

    /// The bound address, for the log.
    fn local(&self) -> Option<Addr>;
}

/// Serves one accepted connection to its end.
pub(crate) type ServeConn<St> = Arc<
    dyn Fn(
            St,
            ConnInfo,
            watch::Receiver<Option<Instant>>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Makes the connection machine of a new connection (plain or TLS); `None` drops it.
pub(crate) type NewConn<P> =
    Arc<dyn Fn(ConnInfo) -> Option<Connection<P, ServerRole>> + Send + Sync>;

/// Runs portable handlers on each connection.
pub(crate) fn portable<S, P, St>(service: Arc<S>, new_conn: NewConn<P>) -> ServeConn<St>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
    St: ConnStream,
{
    Arc::new(move |stream, info, shutdown| {
        match new_conn(info).and_then(|c| Session::start(now(), &*service, c)) {
            Some(session) => Box::pin(conn::drive(stream, session, shutdown)),
            None => Box::pin(std::future::ready(())),
        }
    })
}

/// Runs async handlers on each connection.
pub(crate) fn asynchronous<S, P, St>(service: Arc<S>, new_conn: NewConn<P>) -> ServeConn<St>
where
    S: Service,
    S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
    St: ConnStream,
{
    Arc::new(move |stream, info, shutdown| {
        match new_conn(info).and_then(|c| AsyncSession::start(now(), &*service, c)) {
            Some(session) => Box::pin(conn::drive(stream, session, shutdown)),
            None => Box::pin(std::future::ready(())),
        }
    })
}

/// A stream server's shared state, whatever it listens on.
pub(crate) struct Core<S, L: Listener> {
    pub service: Arc<S>,
    /// Made by `build` or `build_async`: runs the right kind of handler.
    pub serve_conn: ServeConn<L::Stream>,
    pub shutdown_timeout: Duration,
    pub shell: Arc<Shell<L>>,
    /// TCP keepalive of accepted connections (TCP only).
    pub keepalive: Option<TcpKeepalive>,
}

impl<S: Service, L: Listener> Core<S, L> {
    pub(crate) fn new(
        service: Arc<S>,
        serve_conn: ServeConn<L::Stream>,
        shutdown_timeout: Duration,
        max_connections: Option<usize>,
        keepalive: Option<TcpKeepalive>,
        recorder: easynet_core::stats::Recorder,
    ) -> Self {
        Self {
            service,
            serve_conn,
            shutdown_timeout,
            keepalive,
            shell: Arc::new(
                Shell::new(shutdown_timeout, recorder).with_max_connections(max_connections),
            ),
        }
    }

    /// Serves until shutdown, `stop`, or until closed and every connection ended.
    pub(crate) async fn serve_notify(
        self: &Arc<Self>,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
        is_up: impl EventSet,
        stop: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let this = self.clone();
        self.shell
            .run(bind, is_up, stop, move |id, cancel, sockets| async move {
                this.run(id, &cancel, sockets).await
            })
            .await
    }

    async fn run(
        self: &Arc<Self>,
        id: RunId,
        cancel: &CancellationToken,
        listeners: Vec<Arc<L>>,
    ) -> Result<(), ServerError> {
        let service = self.service.clone();
        self.shell.init(&*service)?;
        if cancel.is_cancelled() {
            easynet_core::server::run_teardown(&*service);
            return Ok(());
        }
        let addrs: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local())
            .map(|a| a.to_string())
            .collect();
        tracing::info!("Start serving at {}", addrs.join(", "));
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let shutdown_tx = Arc::new(shutdown_tx);
        self.shell.set_orders(id, shutdown_tx.clone());
        let conns = TaskTracker::new();
        let mut accepts = JoinSet::new();
        for listener in listeners {
            let this = self.clone();
            let (cancel, conns, rx) = (cancel.clone(), conns.clone(), shutdown_rx.clone());
            accepts.spawn(async move { this.accept_loop(id, listener, cancel, conns, rx).await });
        }
        self.shell.serving();

        let mut failure = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                joined = accepts.join_next() => match joined {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => { failure = Some(e); break }
                    Some(Err(e)) => { failure = Some(ServerError::Listener(io::Error::other(e))); break }
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
        let deadline = self.shell.deadline();
        crate::shell::order_shutdown(&shutdown_tx, deadline);
        conns.close();
        // Connections enforce the deadline themselves; the margin covers the final writes.
        let _ = tokio::time::timeout_at(
            tokio::time::Instant::from_std(easynet_core::deadline_after(
                deadline,
                Duration::from_secs(1),
            )),
            conns.wait(),
        )
        .await;
        teardown(service, self.shutdown_timeout).await;
        tracing::info!("Server stopped");
        failure.map_or(Ok(()), Err)
    }

    async fn accept_loop(
        self: Arc<Self>,
        id: RunId,
        listener: Arc<L>,
        cancel: CancellationToken,
        conns: TaskTracker,
        shutdown: watch::Receiver<Option<Instant>>,
    ) -> Result<(), ServerError> {
        let mut gate = AcceptGate::new();
        let closed = self.shell.closed.clone();
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = closed.cancelled() => return Ok(()),
                // Accepts only below `max_connections` (the core's rule); at the limit the
                // connections wait in the kernel's backlog until one closes.
                r = std::future::poll_fn(|cx| self.shell.poll_admit(cx, &*listener)) => r,
            };
            match accepted {
                Ok((stream, peer, conn)) => {
                    self.spawn_connection(
                        id,
                        conn,
                        &listener,
                        stream,
                        peer,
                        &conns,
                        shutdown.clone(),
                    );
                }
                Err(e) => match gate.on_error(now(), &e) {
                    AcceptAction::Pause { until } => {
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

    #[allow(clippy::too_many_arguments)]
    fn spawn_connection(
        &self,
        run: RunId,
        id: ConnId,
        listener: &L,
        stream: L::Stream,
        peer: Addr,
        conns: &TaskTracker,
        shutdown: watch::Receiver<Option<Instant>>,
    ) {
        let Some(info) = listener.conn_info(&stream, id, peer, self.keepalive.as_ref()) else {
            self.shell.closed(id);
            return; // reset before we could look at it
        };
        let span = tracing::info_span!("conn", conn = %id, peer = %info.peer);
        let serve = (self.serve_conn)(stream, info, shutdown);
        let shell = self.shell.clone();
        // Out of the connection table when the task ends, however it ends.
        let serve = run.scope(async move {
            let _table = Closed(shell, id);
            serve.await;
        });
        // Handler panics are contained by the core: one task per connection is enough.
        conns.spawn(serve.instrument(span));
    }
}

/// Runs `on_stop` off the runtime threads, bounded by `timeout` (decision 7).
pub(crate) async fn teardown<S: Service>(service: Arc<S>, timeout: Duration) {
    let task = tokio::task::spawn_blocking(move || easynet_core::server::run_teardown(&*service));
    if tokio::time::timeout(timeout, task).await.is_err() {
        tracing::warn!("on_stop did not finish within {timeout:?}; not waiting for it");
    }
}

/// The `build`, `build_async` and `finish` methods of a stream server builder with
/// `service`, `protocol` and `cfg` fields; `$new_conn(protocol, &cfg)` makes the
/// connection machines and `$keepalive(&cfg)` the TCP keepalive.
macro_rules! stream_builder_methods {
    ($server:ident, $stream:ty, $new_conn:path, $keepalive:path) => {
        /// Makes a server whose connections run portable [`StreamHandler`]s (nothing is
        /// bound yet); fails on invalid settings.
        pub fn build(self) -> Result<$server<S, P>, ConfigError>
        where
            S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
        {
            self.finish($crate::stream_server::portable)
        }

        /// Makes a server whose connections run [`AsyncStreamHandler`]s (nothing is bound
        /// yet); fails on invalid settings.
        pub fn build_async(self) -> Result<$server<S, P>, ConfigError>
        where
            S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
        {
            self.finish($crate::stream_server::asynchronous)
        }

        fn finish(
            self,
            serve: impl FnOnce(
                Arc<S>,
                $crate::stream_server::NewConn<P>,
            ) -> $crate::stream_server::ServeConn<$stream>,
        ) -> Result<$server<S, P>, ConfigError> {
            self.cfg.validate()?;
            let service = Arc::new(self.service);
            // Every connection counts into the server machine's recorder.
            let recorder = easynet_core::stats::Recorder::new();
            let mut cfg = self.cfg;
            cfg.stream.recorder = Some(recorder.clone());
            let new_conn = $new_conn(Arc::new(self.protocol), &cfg);
            let serve_conn = serve(service.clone(), new_conn);
            Ok($server {
                core: Arc::new($crate::stream_server::Core::new(
                    service,
                    serve_conn,
                    cfg.shutdown_timeout,
                    cfg.max_connections,
                    $keepalive(&cfg),
                    recorder,
                )),
                cfg: Arc::new(cfg),
                _protocol: std::marker::PhantomData,
            })
        }
    };
}
pub(crate) use stream_builder_methods;

/// `stats()` on a stream server with a `core: Arc<Core<..>>` field.
macro_rules! stream_stats {
    ($server:ident) => {
        impl<S, P> $server<S, P> {
            /// A snapshot of the server's counters (connections accepted, open and closed
            /// by reason, bytes, requests, parse errors, failed handshakes, handler errors
            /// and panics); cheap, callable from anywhere at any time.
            pub fn stats(&self) -> easynet_core::stats::ServerStats {
                self.core.shell.stats()
            }
        }
    };
}
pub(crate) use stream_stats;

/// Takes a connection out of the server's table when dropped.
struct Closed<L>(Arc<Shell<L>>, ConnId);

impl<L> Drop for Closed<L> {
    fn drop(&mut self) {
        self.0.closed(self.1);
    }
}
