//! What every tokio server shares: the lifecycle, the bound sockets and the current run.
//!
//! A run is a task of its own: `serve` starts it and waits for it, so that dropping
//! that future (`select!`, `timeout`) does not drop the run half-way (connections cut,
//! teardown skipped, the lifecycle stuck in "serving"): it shuts the run down gracefully and
//! the task finishes it.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use easynet_core::ConnId;
use easynet_core::addr::Addr;
use easynet_core::handler::Service;
use easynet_core::lifecycle::Activation;
use easynet_core::server::{Server, run_init};
use easynet_core::stats::{Recorder, ServerStats};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::conn::now;
use crate::{EventSet, ServerError};

struct State<L> {
    /// The core's server machine: lifecycle, run order, the one shutdown deadline,
    /// connection table.
    server: Server,
    sockets: Vec<Arc<L>>,
    run: Option<Run>,
    /// Accept loops waiting for room under `max_connections` (one per listener at most).
    room: Vec<Waker>,
}

struct Run {
    id: RunId,
    cancel: CancellationToken,
    /// Set by [`Shell::serving`]; `serve` sets its `is_up` then.
    up: watch::Sender<bool>,
    done: watch::Receiver<bool>,
    /// The connections' shutdown orders (a stream server's run sets it when it serves).
    orders: Option<Arc<ShutdownOrders>>,
}

/// The shutdown deadline a stream server's connections follow (`conn::drive`).
pub(crate) type ShutdownOrders = watch::Sender<Option<std::time::Instant>>;

/// Orders the connections to close by `deadline`, unless they already have an earlier one.
pub(crate) fn order_shutdown(orders: &ShutdownOrders, deadline: std::time::Instant) {
    orders.send_if_modified(|current| {
        let earlier = current.is_none_or(|c| deadline < c);
        if earlier {
            *current = Some(deadline);
        }
        earlier
    });
}

/// One run of one server (unique in the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunId(u64);

tokio::task_local! {
    /// The run whose connection the current task serves.
    static CONNECTION_OF: RunId;
}

impl RunId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs `f`, a connection of this run, marked as such: a `shutdown` it calls does not
    /// wait for the run, which waits for it.
    pub(crate) fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        CONNECTION_OF.scope(self, f)
    }

    fn current() -> Option<Self> {
        CONNECTION_OF.try_with(|id| *id).ok()
    }
}

/// A server's lifecycle around its sockets of type `L`.
pub(crate) struct Shell<L> {
    state: Mutex<State<L>>,
    /// Cancelled by `close`: socket tasks drop their sockets.
    pub(crate) closed: CancellationToken,
    shutdown_timeout: Duration,
}

/// Ends its run when dropped: when the run's task returns, panics, or is dropped with its
/// runtime, so that the server never stays "running".
struct RunGuard<L> {
    shell: Arc<Shell<L>>,
    id: RunId,
    done: watch::Sender<bool>,
}

impl<L> Drop for RunGuard<L> {
    fn drop(&mut self) {
        {
            let mut state = self.shell.lock();
            if state.run.as_ref().is_some_and(|r| r.id == self.id) {
                state.server.end_run();
                state.run = None;
            }
        }
        self.done.send_replace(true);
    }
}

/// Shuts its run down if dropped while armed: `serve`'s future was dropped.
struct StopOnDrop<'a, L> {
    shell: &'a Shell<L>,
    run: Option<RunId>,
}

impl<L> Drop for StopOnDrop<'_, L> {
    fn drop(&mut self) {
        if let Some(id) = self.run {
            self.shell.begin_shutdown(Some(id), None);
        }
    }
}

/// A run just begun: what its task needs.
struct Begun<L> {
    guard: RunGuard<L>,
    cancel: CancellationToken,
    sockets: Vec<Arc<L>>,
    up: watch::Receiver<bool>,
}

impl<L> Shell<L> {
    pub(crate) fn new(shutdown_timeout: Duration, recorder: Recorder) -> Self {
        Self {
            state: Mutex::new(State {
                server: Server::with_recorder(shutdown_timeout, recorder),
                sockets: Vec::new(),
                run: None,
                room: Vec::new(),
            }),
            closed: CancellationToken::new(),
            shutdown_timeout,
        }
    }

    /// At most `max` connections open at once (the core's rule: [`Server::may_accept`]).
    pub(crate) fn with_max_connections(self, max: Option<usize>) -> Self {
        {
            let mut state = self.lock();
            let server = std::mem::replace(&mut state.server, Server::new(self.shutdown_timeout));
            state.server = server.with_max_connections(max);
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<L>> {
        // The state stays consistent across a panic elsewhere: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds with `bind` unless already bound (idempotent).
    pub(crate) fn activate(
        &self,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
    ) -> Result<(), ServerError> {
        let mut state = self.lock();
        match state.server.activate()? {
            Activation::AlreadyActive => Ok(()),
            Activation::Bind => {
                state.sockets = bind()?;
                state.server.activated();
                Ok(())
            }
        }
    }

    /// Starts a run (binding first if needed). A run already shutting down (its
    /// `serve` dropped, say) is waited for first; a serving one is `AlreadyRunning`.
    async fn begin_run(
        self: &Arc<Self>,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
    ) -> Result<Begun<L>, ServerError> {
        let mut bind = Some(bind);
        loop {
            let mut done = {
                let mut state = self.lock();
                match &state.run {
                    Some(run) if run.cancel.is_cancelled() => run.done.clone(),
                    _ => return self.start_run(&mut state, bind.take().expect("bound once")),
                }
            };
            let _ = done.wait_for(|d| *d).await;
        }
    }

    fn start_run(
        self: &Arc<Self>,
        state: &mut State<L>,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
    ) -> Result<Begun<L>, ServerError> {
        if state.server.begin_run()? == Activation::Bind {
            match bind() {
                Ok(sockets) => {
                    state.sockets = sockets;
                    state.server.activated();
                }
                Err(e) => {
                    state.server.activation_failed();
                    state.server.end_run();
                    return Err(e);
                }
            }
        }
        let (id, cancel) = (RunId::next(), CancellationToken::new());
        let (done, done_rx) = watch::channel(false);
        let (up, up_rx) = watch::channel(false);
        state.run = Some(Run {
            id,
            cancel: cancel.clone(),
            up,
            done: done_rx,
            orders: None,
        });
        Ok(Begun {
            guard: RunGuard {
                shell: self.clone(),
                id,
                done,
            },
            cancel,
            sockets: state.sockets.clone(),
            up: up_rx,
        })
    }
}

impl<L: Send + Sync + 'static> Shell<L> {
    /// One whole run: begins it (binding first if needed), runs `serve` (given the run's id,
    /// cancel token and sockets; the tasks own the sockets, so `close` really closes them)
    /// in a task of its own, sets `is_up` once serving, shuts the run down when `stop`
    /// completes, and returns the run's result. Dropping this future shuts the run down
    /// gracefully; the task finishes it.
    pub(crate) async fn run<F, Fut>(
        self: &Arc<Self>,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
        is_up: impl EventSet,
        stop: impl Future<Output = ()>,
        serve: F,
    ) -> Result<(), ServerError>
    where
        F: FnOnce(RunId, CancellationToken, Vec<Arc<L>>) -> Fut,
        Fut: Future<Output = Result<(), ServerError>> + Send + 'static,
    {
        let Begun {
            guard,
            cancel,
            sockets,
            mut up,
        } = self.begin_run(bind).await?;
        let id = guard.id;
        let serving = serve(id, cancel, sockets);
        let mut task = tokio::spawn(async move {
            let _guard = guard;
            serving.await
        });
        let mut on_drop = StopOnDrop {
            shell: self,
            run: Some(id),
        };
        let mut stop = std::pin::pin!(stop);
        let (mut up_seen, mut stopping) = (false, false);
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                r = up.wait_for(|u| *u), if !up_seen => {
                    up_seen = true;
                    if r.is_ok() {
                        is_up.set();
                    }
                }
                () = &mut stop, if !stopping => {
                    stopping = true;
                    self.begin_shutdown(Some(id), None);
                }
            }
        };
        on_drop.run = None;
        if !up_seen && *up.borrow() {
            is_up.set(); // it served, however briefly: `is_up` waiters must not hang
        }
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(e) => Err(ServerError::Listener(io::Error::other(e))),
        }
    }
}

impl<L> Shell<L> {
    /// The run's setup is done: it is serving.
    pub(crate) fn serving(&self) {
        let mut state = self.lock();
        state.server.serving();
        if let Some(run) = &state.run {
            run.up.send_replace(true);
        }
    }

    /// Asks the current run (only if it is `only`, when given) to stop, its connections
    /// within `timeout` (default: the server's shutdown timeout; during a shutdown, only an
    /// earlier deadline counts); returns its id and its end.
    fn begin_shutdown(
        &self,
        only: Option<RunId>,
        timeout: Option<Duration>,
    ) -> Option<(RunId, watch::Receiver<bool>)> {
        let mut state = self.lock();
        let run = state.run.as_ref()?;
        if only.is_some_and(|id| id != run.id) {
            return None;
        }
        let (id, cancel, done) = (run.id, run.cancel.clone(), run.done.clone());
        let orders = run.orders.clone();
        let deadline = match timeout {
            Some(t) => state.server.shutdown_within(now(), t),
            None => state.server.shutdown(now()),
        };
        drop(state);
        // The run orders its connections once its accept loops stopped; ordering here too
        // (earliest wins) is what hurries a shutdown under way.
        if let (Some(orders), Some(deadline)) = (orders, deadline) {
            order_shutdown(&orders, deadline);
        }
        cancel.cancel();
        Some((id, done))
    }

    /// The run `id` serves connections that follow `orders`.
    pub(crate) fn set_orders(&self, id: RunId, orders: Arc<ShutdownOrders>) {
        if let Some(run) = self.lock().run.as_mut().filter(|r| r.id == id) {
            run.orders = Some(orders);
        }
    }

    /// Stops the current run, if any, and waits until it has ended; from one of that run's
    /// own connections, returns once the shutdown has begun.
    pub(crate) async fn shutdown(&self, timeout: Option<Duration>) {
        let Some((id, mut done)) = self.begin_shutdown(None, timeout) else {
            return;
        };
        // The run waits for its connections: one of them waiting for the run would stall
        // it for the whole shutdown timeout.
        if RunId::current() == Some(id) {
            return;
        }
        let _ = done.wait_for(|d| *d).await;
    }

    /// Runs `on_start` (contained, outside the lock: the hook may use the server) and
    /// tells the server machine.
    pub(crate) fn init<S: Service>(&self, service: &S) -> Result<(), ServerError> {
        let result = run_init(service);
        self.lock().server.initialized(result.is_ok());
        result.map_err(ServerError::Start)
    }

    /// The run's shutdown deadline: the one the core set when the shutdown began, or
    /// (a closed run that ends by itself) one set now.
    pub(crate) fn deadline(&self) -> std::time::Instant {
        let now = now();
        self.lock()
            .server
            .shutdown(now)
            .unwrap_or_else(|| easynet_core::deadline_after(now, self.shutdown_timeout))
    }

    /// Accepts one connection from `listener` if the server machine has room for it, and
    /// enters it in the connection table (its id), under one lock: several accept loops
    /// never take more than `max_connections` between them. Without room, waits for a
    /// connection to close.
    pub(crate) fn poll_admit(
        &self,
        cx: &mut Context<'_>,
        listener: &L,
    ) -> Poll<io::Result<(L::Stream, Addr, ConnId)>>
    where
        L: crate::stream_server::Listener,
    {
        let mut state = self.lock();
        if !state.server.may_accept() {
            if !state.room.iter().any(|w| w.will_wake(cx.waker())) {
                state.room.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        listener
            .poll_accept(cx)
            .map_ok(|(stream, peer)| (stream, peer, state.server.accepted()))
    }

    /// The server's counters.
    pub(crate) fn stats(&self) -> ServerStats {
        self.lock().server.stats()
    }

    /// A connection ended; accept loops waiting for room go on.
    pub(crate) fn closed(&self, id: ConnId) {
        let mut state = self.lock();
        if state.server.closed(id) {
            for waker in state.room.drain(..) {
                waker.wake();
            }
        }
    }

    /// Closes for good (idempotent).
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.server.close();
        state.sockets.clear();
        self.closed.cancel();
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.lock().server.is_listening()
    }

    pub(crate) fn is_serving(&self) -> bool {
        self.lock().server.is_serving()
    }

    /// The bound sockets while listening; empty otherwise.
    pub(crate) fn sockets(&self) -> Vec<Arc<L>> {
        let state = self.lock();
        if state.server.is_listening() {
            state.sockets.clone()
        } else {
            Vec::new()
        }
    }
}

/// What every tokio server has around its `core` (a stream or datagram core with a
/// `shell`): `Clone`, `Debug`, `builder`, `activate`, the state queries, `close`,
/// `shutdown`, `serve`. The server's own impl provides `fn bind(&self)`.
macro_rules! server_methods {
    ($server:ident, $builder:ident, $settings:ident, $proto:ident) => {
        impl<S, P> Clone for $server<S, P> {
            fn clone(&self) -> Self {
                Self {
                    core: self.core.clone(),
                    cfg: self.cfg.clone(),
                    _protocol: std::marker::PhantomData,
                }
            }
        }

        impl<S, P> std::fmt::Debug for $server<S, P> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($server))
                    .field("config", &self.cfg)
                    .finish_non_exhaustive()
            }
        }

        impl<S: Service, P: $proto> $server<S, P> {
            /// Starts building a server for `protocol`, making one handler per connection (or datagram peer) with `factory`,
            /// a closure given the peer's [`ConnInfo`](easynet_core::handler::ConnInfo):
            /// `|_| MyHandler` needs no type annotation. A [`Service`] with `on_start` /
            /// `on_stop` hooks goes to [`builder_with_service`](Self::builder_with_service).
            pub fn builder<H>(protocol: P, factory: S) -> $builder<S, P>
            where
                S: Fn(&easynet_core::handler::ConnInfo) -> H + Send + Sync + 'static,
            {
                Self::builder_with_service(protocol, factory)
            }

            /// Starts building a server for `protocol` whose handlers `service` makes
            /// (EasyNetwork's request handler with `service_init` / `service_actions`).
            pub fn builder_with_service(protocol: P, service: S) -> $builder<S, P> {
                $builder {
                    service,
                    protocol,
                    cfg: $settings::default(),
                }
            }

            /// Binds the sockets; idempotent. Fails with [`ServerError::Closed`] after
            /// `close`. Datagrams or connections that arrive before serving wait in the
            /// kernel.
            pub async fn activate(&self) -> Result<(), ServerError> {
                self.core.shell.activate(|| self.bind())
            }

            /// True while the sockets are bound (after activation, until close).
            pub fn is_listening(&self) -> bool {
                self.core.shell.is_listening()
            }

            /// True while `serve` is accepting or receiving.
            pub fn is_serving(&self) -> bool {
                self.core.shell.is_serving()
            }

            /// Closes the sockets for good. A stream server serves the connections it
            /// accepted until they end and a running `serve` returns then; a
            /// datagram server's run returns at once. Idempotent.
            pub fn close(&self) {
                self.core.shell.close();
            }

            /// Stops a running `serve`: stops accepting, lets connections answer
            /// what they have read and close (reset at the shutdown timeout), runs
            /// `on_stop`, then returns. The sockets stay bound, so the server can
            /// serve again. Without a run it returns at once.
            ///
            /// A handler may stop its own server. Called from a connection of the run it
            /// stops (an async handler), it begins the shutdown and returns at once: the run
            /// waits for that connection, so waiting for the run would wait for itself.
            /// Called anywhere else, including a task the handler spawned, it waits for the
            /// run to end; a connection must not wait for such a task.
            ///
            /// Cancel safety: the shutdown begins at the first poll; dropping the future
            /// after that does not stop it.
            pub async fn shutdown(&self) {
                self.core.shell.shutdown(None).await;
            }

            /// As [`shutdown`](Self::shutdown), with `timeout` for the connections instead
            /// of the server's shutdown timeout; then they are reset. During a shutdown it
            /// can hurry it, never delay it: `shutdown_within(Duration::ZERO)` resets every
            /// connection at once (the "second Ctrl-C").
            ///
            /// Cancel safety: as for `shutdown`.
            pub async fn shutdown_within(&self, timeout: std::time::Duration) {
                self.core.shell.shutdown(Some(timeout)).await;
            }

            /// Serves until [`shutdown`](Self::shutdown) (or until closed and every
            /// connection ended). Activates first if needed: call
            /// [`activate`](Self::activate) before to learn the bound addresses, or use
            /// [`serve_notify`](Self::serve_notify). Fails with [`ServerError::AlreadyRunning`] while another run serves; a run
            /// that is shutting down is waited for first. The run is a task of its own on
            /// the current runtime.
            ///
            /// Cancel safety: dropping the future (`select!`, `tokio::time::timeout`) shuts
            /// the run down gracefully, as [`shutdown`](Self::shutdown) does, in the
            /// background: connections answer what they have read and close within the
            /// shutdown timeout, then `on_stop` runs. The server can then serve
            /// again (a later `serve` or `shutdown` waits for that end).
            pub async fn serve(&self) -> Result<(), ServerError> {
                self.serve_notify(()).await
            }

            /// [`serve`](Self::serve), setting `is_up` once the server is serving (bound,
            /// `on_start` done, accepting): EasyNetwork's `serve_forever(is_up_event)`.
            ///
            /// Cancel safety: as for `serve`.
            pub async fn serve_notify(&self, is_up: impl EventSet) -> Result<(), ServerError> {
                self.core
                    .serve_notify(|| self.bind(), is_up, std::future::pending())
                    .await
            }

            /// Serves like [`serve`](Self::serve) until `signal`
            /// completes, then shuts down gracefully (as [`shutdown`](Self::shutdown)) and
            /// returns the run's result; it returns earlier if the run ends otherwise
            /// (`shutdown` from elsewhere, `close`, a listener failure). Activates first if
            /// needed. There is no `is_up`: call [`activate`](Self::activate) first to learn
            /// the addresses (connections and datagrams that come before the run serves
            /// wait in the kernel), or use `serve_notify`. For example
            /// `server.serve_with_shutdown(async { let _ = tokio::signal::ctrl_c().await; })`.
            ///
            /// Cancel safety: as for `serve`, dropping the future is a graceful
            /// shutdown.
            pub async fn serve_with_shutdown(
                &self,
                signal: impl std::future::Future<Output = ()> + Send,
            ) -> Result<(), ServerError> {
                self.core.serve_notify(|| self.bind(), (), signal).await
            }
        }
    };
}
pub(crate) use server_methods;
