//! [`TcpServer`]: EasyNetwork's StandaloneTCPNetworkServer on a mio event loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use easynet_common::{self as bind, EventSet, ListenOptions, TcpSettings};
use easynet_core::addr::Addr;
use easynet_core::handler::{Service, StreamHandler};
use easynet_core::protocol::StreamServerProtocol;

use crate::control::{Control, server_methods};
use crate::worker::{Factory, MioListener, Worker};
use crate::{ConfigError, ServerError};

/// Builds a [`TcpServer`]; every setting has EasyNetwork's default.
#[derive(Debug)]
pub struct TcpServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: TcpSettings,
    workers: usize,
}

impl<S, P> TcpServerBuilder<S, P>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    easynet_common::tcp_setters!(cfg);

    /// Event-loop threads; each has its own listeners on the same port (SO_REUSEPORT) and
    /// the kernel spreads connections over them. Default 1.
    ///
    /// A connection stays on the loop that accepted it (no work stealing). Give each loop a
    /// core of its own: while the scheduler has a loop's thread off the CPU, that loop's
    /// connections wait, so with more busy threads than cores the tail latency grows by
    /// milliseconds (2–4 ms at p99 in the project's benchmarks, against 0.2 ms).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Checks the settings and makes the server (nothing is bound until `serve`).
    pub fn build(mut self) -> Result<TcpServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let control = Control::limited(self.cfg.shutdown_timeout, self.cfg.max_connections);
        self.cfg.stream.recorder = Some(control.recorder());
        let factory = Factory::new(
            self.service,
            self.protocol,
            self.cfg.stream.clone(),
            self.cfg.keepalive,
            #[cfg(feature = "tls")]
            self.cfg.tls.clone(),
        );
        Ok(TcpServer {
            factory,
            control,
            workers: self.workers.max(1),
            cfg: self.cfg,
        })
    }
}

/// A blocking TCP (optionally TLS) server running portable [`StreamHandler`]s on mio event
/// loops. `serve` blocks the calling thread; a [`ServerHandle`](crate::ServerHandle) stops it from
/// another thread. Each run binds anew (with port 0, each run gets a new port).
///
/// ```no_run
/// use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// use easynet_core::protocol::Stream;
/// use easynet_mio::TcpServer;
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
/// let server = TcpServer::builder(Stream::lines(), |_: &ConnInfo| Echo)
///     .host("127.0.0.1")
///     .port(9000)
///     .build()
///     .unwrap();
/// server.serve().unwrap();
/// ```
pub struct TcpServer<S, P> {
    factory: Arc<Factory<S, P>>,
    cfg: TcpSettings,
    workers: usize,
    control: Arc<Control>,
}

impl<S, P> TcpServer<S, P>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    /// Starts building a server for `protocol`, making one handler per connection with `factory`,
    /// a closure given the peer's [`ConnInfo`](easynet_core::handler::ConnInfo):
    /// `|_| MyHandler` needs no type annotation. A [`Service`] with `on_start` /
    /// `on_stop` hooks goes to [`builder_with_service`](Self::builder_with_service).
    pub fn builder<H>(protocol: P, factory: S) -> TcpServerBuilder<S, P>
    where
        S: Fn(&easynet_core::handler::ConnInfo) -> H + Send + Sync + 'static,
    {
        Self::builder_with_service(protocol, factory)
    }

    /// Starts building a server for `protocol` whose handlers `service` makes
    /// (EasyNetwork's request handler with `service_init` / `service_actions`).
    pub fn builder_with_service(protocol: P, service: S) -> TcpServerBuilder<S, P> {
        TcpServerBuilder {
            service,
            protocol,
            cfg: TcpSettings::default(),
            workers: 1,
        }
    }

    /// The bound addresses while serving; empty otherwise.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.control.addresses()
    }

    fn run(&self, is_up: impl EventSet) -> Result<(), ServerError> {
        let cfg = &self.cfg;
        let workers = self.workers;
        let opts = ListenOptions {
            backlog: cfg.backlog,
            reuse_port: cfg.listen.reuse_port || workers > 1,
        };
        let first = match cfg.listen.inherited() {
            Some(sockets) => sockets.map_err(ServerError::Listener)?,
            None => {
                let addrs = bind::resolve(&cfg.listen.host, cfg.listen.port)
                    .map_err(ServerError::Resolve)?;
                bind::tcp_listeners(&addrs, opts).map_err(ServerError::Bind)?
            }
        };
        let bound: Vec<SocketAddr> = first.iter().filter_map(|l| l.local_addr().ok()).collect();
        let mut sets = vec![first];
        for _ in 1..workers {
            // The others share the ports the first one got (inherited: the same sockets).
            sets.push(match cfg.listen.inherited() {
                Some(dups) => dups.map_err(ServerError::Listener)?,
                None => bind::tcp_listeners(&bound, opts).map_err(ServerError::Bind)?,
            });
        }
        let dups = sets[0]
            .iter()
            .filter_map(|l| l.try_clone().ok())
            .map(socket2::Socket::from)
            .collect();
        let sets = sets
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .map(mio::net::TcpListener::from_std)
                    .collect()
            })
            .collect();
        let bound = bound.into_iter().map(Addr::from).collect();
        run_workers(&self.factory, &self.control, sets, bound, dups, is_up)
    }
}

/// Runs one event loop per listener set (the first on this thread) to the end of a run:
/// `on_start`, `is_up`, the loops, `on_stop`.
pub(crate) fn run_workers<S, P, L>(
    factory: &Arc<Factory<S, P>>,
    control: &Arc<Control>,
    sets: Vec<Vec<L>>,
    bound: Vec<Addr>,
    dups: Vec<socket2::Socket>,
    is_up: impl EventSet,
) -> Result<(), ServerError>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
    L: MioListener,
{
    control.init(&*factory.service)?;
    let mut loops = Vec::with_capacity(sets.len());
    let mut wakers = Vec::with_capacity(sets.len());
    for set in sets {
        let (w, waker) =
            Worker::new(set, factory.clone(), control.clone()).map_err(ServerError::Listener)?;
        loops.push(w);
        wakers.push(waker);
    }
    control.serving(bound.clone(), dups, wakers);
    if control.orders().shutdown.is_none() {
        let list: Vec<String> = bound.iter().map(ToString::to_string).collect();
        tracing::info!("Start serving at {}", list.join(", "));
        is_up.set();
    }
    let first = loops.remove(0);
    let result = std::thread::scope(|scope| {
        let others: Vec<_> = loops
            .into_iter()
            .map(|w| scope.spawn(move || w.run()))
            .collect();
        let mut result = first.run();
        for t in others {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("event loop panicked")));
            result = result.and(r);
        }
        result
    });
    tracing::info!("Server loop break, waiting for remaining tasks...");
    teardown(factory.service.clone(), control.shutdown_timeout());
    tracing::info!("Server stopped");
    result.map_err(ServerError::Listener)
}

/// Runs `on_stop` on a thread of its own, waiting at most `timeout` (decision 7).
pub(crate) fn teardown<S: Service>(service: Arc<S>, timeout: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("easynet-teardown".into())
        .spawn(move || {
            easynet_core::server::run_teardown(&*service);
            let _ = tx.send(());
        });
    if spawned.is_ok() && rx.recv_timeout(timeout).is_err() {
        tracing::warn!("on_stop did not finish within {timeout:?}; not waiting for it");
    }
}

server_methods!(TcpServer, StreamHandler, StreamServerProtocol);
