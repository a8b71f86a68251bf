//! [`ServerHandle`]: what other threads may do to a blocking server, and the run state the
//! event-loop threads share with it (a mutex, a condvar and one `mio::Waker` per loop).

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use easynet_core::ConnId;
use easynet_core::addr::Addr;
use easynet_core::handler::Service;
use easynet_core::lifecycle::Activation;
use easynet_core::server::{Server, run_init};

use crate::ServerError;

/// What the event loops read when woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orders {
    /// Stop accepting; close connections gracefully by this deadline.
    pub shutdown: Option<Instant>,
    /// Drop the listeners now; serve existing connections to their end.
    pub closed: bool,
}

struct State {
    /// The core's server machine: lifecycle, run order, shutdown deadline, connection table.
    server: Server,
    /// The threads running this run's event loops: a `shutdown` called on one of them
    /// (from a handler) must not wait for its own loop.
    loop_threads: Vec<std::thread::ThreadId>,
    addresses: Vec<Addr>,
    /// Duplicates of the run's sockets for `sockets()`; dropped at the run's end and on close.
    sockets: Vec<socket2::Socket>,
    wakers: Vec<Arc<mio::Waker>>,
    orders: Orders,
    running: bool,
}

/// The run state shared by a server, its handles and its event loops.
pub(crate) struct Control {
    state: Mutex<State>,
    stopped: Condvar,
    shutdown_timeout: Duration,
}

impl Control {
    pub(crate) fn new(shutdown_timeout: Duration) -> Arc<Self> {
        Self::limited(shutdown_timeout, None)
    }

    /// A stream server's: at most `max_connections` open at once (the core's rule).
    pub(crate) fn limited(shutdown_timeout: Duration, max_connections: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                server: Server::new(shutdown_timeout).with_max_connections(max_connections),
                loop_threads: Vec::new(),
                addresses: Vec::new(),
                sockets: Vec::new(),
                wakers: Vec::new(),
                orders: Orders {
                    shutdown: None,
                    closed: false,
                },
                running: false,
            }),
            stopped: Condvar::new(),
            shutdown_timeout,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic elsewhere: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a run; the caller binds (every run binds anew, as EasyNetwork's standalone
    /// servers do).
    pub(crate) fn begin_run(&self) -> Result<(), ServerError> {
        let mut s = self.lock();
        if s.server.begin_run()? == Activation::AlreadyActive {
            // Cannot happen (runs unbind at their end); treat as bound.
        }
        s.running = true;
        s.orders = Orders {
            shutdown: None,
            closed: s.server.is_closed(),
        };
        Ok(())
    }

    /// Runs `on_start` (contained, outside the lock: the hook may use the handle) and
    /// tells the server machine.
    pub(crate) fn init<S: Service>(&self, service: &S) -> Result<(), ServerError> {
        let result = run_init(service);
        self.lock().server.initialized(result.is_ok());
        result.map_err(ServerError::Start)
    }

    /// Accepts one connection with `accept` if the server machine has room for it, and
    /// enters it in the connection table (its id), under one lock: the loops never take
    /// more than `max_connections` between them. `None`: no room; the connections wait in
    /// the kernel's backlog and every loop is woken when one closes.
    pub(crate) fn admit<T>(
        &self,
        accept: impl FnOnce() -> std::io::Result<T>,
    ) -> Option<std::io::Result<(T, ConnId)>> {
        let mut s = self.lock();
        if !s.server.may_accept() {
            return None;
        }
        Some(accept().map(|t| (t, s.server.accepted())))
    }

    /// Where the server's connections and endpoints count.
    pub(crate) fn recorder(&self) -> easynet_core::stats::Recorder {
        self.lock().server.recorder().clone()
    }

    /// The server's counters.
    pub(crate) fn stats(&self) -> easynet_core::stats::ServerStats {
        self.lock().server.stats()
    }

    /// True while the server machine would admit a connection.
    pub(crate) fn may_accept(&self) -> bool {
        self.lock().server.may_accept()
    }

    /// A connection ended; loops that stopped accepting at the limit are woken.
    pub(crate) fn closed(&self, id: ConnId) {
        let s = &mut *self.lock();
        if s.server.closed(id) {
            Self::wake_all(s);
        }
    }

    /// The calling thread runs one of this run's loops until [`leave_loop`](Self::leave_loop).
    pub(crate) fn enter_loop(&self) {
        self.lock().loop_threads.push(std::thread::current().id());
    }

    pub(crate) fn leave_loop(&self) {
        let me = std::thread::current().id();
        self.lock().loop_threads.retain(|t| *t != me);
    }

    /// The run is bound and its loops exist: it is serving.
    pub(crate) fn serving(
        &self,
        addresses: Vec<Addr>,
        sockets: Vec<socket2::Socket>,
        wakers: Vec<Arc<mio::Waker>>,
    ) {
        let mut s = self.lock();
        s.server.activated();
        s.server.serving();
        s.addresses = addresses;
        s.sockets = sockets;
        s.wakers = wakers;
    }

    /// The run ended (or its setup failed).
    pub(crate) fn end_run(&self) {
        let mut s = self.lock();
        s.server.end_run();
        s.server.deactivated();
        s.loop_threads.clear();
        s.addresses.clear();
        s.sockets.clear();
        s.wakers.clear();
        s.running = false;
        drop(s);
        self.stopped.notify_all();
    }

    /// What the loops must do now.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    pub(crate) fn orders(&self) -> Orders {
        self.lock().orders
    }

    fn wake_all(s: &State) {
        for w in &s.wakers {
            let _ = w.wake();
        }
    }

    pub(crate) fn is_serving(&self) -> bool {
        let s = self.lock();
        s.running && s.server.is_serving()
    }

    pub(crate) fn addresses(&self) -> Vec<SocketAddr> {
        self.local_addresses()
            .iter()
            .filter_map(Addr::as_inet)
            .collect()
    }

    pub(crate) fn local_addresses(&self) -> Vec<Addr> {
        let s = self.lock();
        if s.running && s.server.is_listening() {
            s.addresses.clone()
        } else {
            Vec::new()
        }
    }

    pub(crate) fn sockets(&self) -> Vec<socket2::Socket> {
        let s = self.lock();
        if !(s.running && s.server.is_listening()) {
            return Vec::new();
        }
        s.sockets
            .iter()
            .filter_map(|sock| sock.try_clone().ok())
            .collect()
    }

    pub(crate) fn shutdown(&self, given: Option<Duration>) {
        let timeout = given.unwrap_or(self.shutdown_timeout);
        let start = Instant::now();
        let mut s = self.lock();
        if !s.running {
            return;
        }
        // The one deadline, from the core: the server's shutdown timeout, or `timeout` when
        // given (which can hurry a shutdown under way, never delay it).
        let deadline = match given {
            Some(t) => s.server.shutdown_within(start, t),
            None => s.server.shutdown(start),
        };
        if let Some(deadline) = deadline {
            s.orders.shutdown = Some(s.orders.shutdown.map_or(deadline, |d| d.min(deadline)));
        }
        Self::wake_all(&s);
        if s.loop_threads.contains(&std::thread::current().id()) {
            // Called from a handler on a loop: that loop must go on to carry it out.
            return;
        }
        // Wait for the loops, a little past the deadline they enforce themselves.
        let limit =
            easynet_core::deadline_after(start, timeout.saturating_add(Duration::from_secs(1)));
        while s.running {
            let left = limit.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break; // EasyNetwork: give up waiting, without error
            }
            s = self
                .stopped
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.server.close();
        s.orders.closed = true;
        s.sockets.clear(); // our duplicates must not keep the listeners open
        Self::wake_all(&s);
    }
}

/// A handle on a blocking server for other threads: `Send + Sync + Clone`.
///
/// ```no_run
/// # use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// # use easynet_core::protocol::Stream;
/// # struct Echo;
/// # impl StreamHandler for Echo { type Request = String; type Response = String;
/// #   fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult { Ok(Next::recv()) } }
/// use easynet_mio::TcpServer;
///
/// let server = TcpServer::builder(Stream::lines(), |_: &ConnInfo| Echo).build().unwrap();
/// let handle = server.handle();
/// std::thread::spawn(move || server.serve());
/// // ... later, from any thread:
/// handle.shutdown(None);
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) control: Arc<Control>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("serving", &self.is_serving())
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// True while `serve` is accepting.
    pub fn is_serving(&self) -> bool {
        self.control.is_serving()
    }

    /// The bound internet addresses while serving; empty otherwise (EasyNetwork's
    /// standalone rule). See [`local_addresses`](Self::local_addresses) for Unix servers.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.control.addresses()
    }

    /// The bound addresses while serving, of any kind (a Unix server's path or name);
    /// empty otherwise.
    pub fn local_addresses(&self) -> Vec<Addr> {
        self.control.local_addresses()
    }

    /// Duplicates of the listening sockets while serving (for `getsockopt` and the like);
    /// empty otherwise. Dropping them does not affect the server.
    pub fn sockets(&self) -> Vec<socket2::Socket> {
        self.control.sockets()
    }

    /// A snapshot of the server's counters, across runs: connections accepted, open and
    /// closed by reason, bytes, requests, parse errors, failed handshakes, handler errors
    /// and panics (stream servers); datagrams, bytes, requests, errors and drops (datagram
    /// servers). Cheap; callable from any thread while `serve` runs.
    ///
    /// ```
    /// # use easynet_core::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
    /// # use easynet_core::protocol::Datagram;
    /// # struct Echo;
    /// # impl DatagramHandler for Echo {
    /// #     type Request = String;
    /// #     type Response = String;
    /// #     fn handle(&mut self, _: &mut DatagramContext<'_, String>, _: Received<String>) -> HandlerResult {
    /// #         Ok(Next::Close)
    /// #     }
    /// # }
    /// let server = easynet_mio::UdpServer::builder(Datagram::lines(), |_: &ConnInfo| Echo)
    ///     .host("127.0.0.1")
    ///     .port(0)
    ///     .build()
    ///     .unwrap();
    /// let stats = server.handle().stats();
    /// assert_eq!((stats.datagrams_in, stats.requests), (0, 0));
    /// ```
    pub fn stats(&self) -> easynet_core::stats::ServerStats {
        self.control.stats()
    }

    /// Stops the running `serve` and waits for it, at most `timeout` (default: the
    /// server's shutdown timeout) plus a second; returns without error when that passes.
    /// Connections get `timeout` to finish (then they are reset); a second call with a
    /// shorter one hurries a shutdown under way (`Some(Duration::ZERO)`: reset them all
    /// now, the second Ctrl-C), a longer one changes nothing.
    /// Without a run, or called twice, it is harmless. Called from a handler (on one of the
    /// server's own loop threads) it orders the shutdown and returns at once: the loop
    /// carries it out when the handler returns.
    pub fn shutdown(&self, timeout: Option<Duration>) {
        self.control.shutdown(timeout);
    }

    /// Closes the server for good: new connections are refused at once, existing ones are
    /// served to their end, then `serve` returns. Idempotent.
    pub fn close(&self) {
        self.control.close();
    }
}

/// What every blocking server offers around its run (`control`, `cfg` and `fn run`):
/// `Debug`, handle, state, stop, `serve`, and the [`BlockingServer`](crate::BlockingServer)
/// impl for [`ServerThread`](crate::ServerThread).
macro_rules! server_methods {
    ($name:ident, $handler:ident, $proto:ident) => {
        impl<S, P> std::fmt::Debug for $name<S, P> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("config", &self.cfg)
                    .finish_non_exhaustive()
            }
        }

        impl<S, P> $name<S, P>
        where
            S: Service,
            S::Handler: $handler<Request = P::Request, Response = P::Response>,
            P: $proto,
        {
            /// A handle for other threads.
            pub fn handle(&self) -> $crate::ServerHandle {
                $crate::ServerHandle {
                    control: self.control.clone(),
                }
            }

            /// True while `serve` is accepting or receiving.
            pub fn is_serving(&self) -> bool {
                self.control.is_serving()
            }

            /// See [`ServerHandle::stats`]($crate::ServerHandle::stats).
            pub fn stats(&self) -> easynet_core::stats::ServerStats {
                self.control.stats()
            }

            /// See [`ServerHandle::sockets`]($crate::ServerHandle::sockets).
            pub fn sockets(&self) -> Vec<socket2::Socket> {
                self.control.sockets()
            }

            /// See [`ServerHandle::shutdown`]($crate::ServerHandle::shutdown).
            pub fn shutdown(&self, timeout: Option<std::time::Duration>) {
                self.control.shutdown(timeout);
            }

            /// See [`ServerHandle::close`]($crate::ServerHandle::close).
            pub fn close(&self) {
                self.control.close();
            }

            /// Binds, runs [`Service::on_start`] and serves until shut down (or closed and
            /// every connection ended). Blocks the calling thread (extra TCP workers run on
            /// threads of their own). A Unix server replaces a stale socket file, refuses a
            /// path in use, and removes its file when the run ends. To learn when it is
            /// serving, use [`serve_notify`](Self::serve_notify) or run it on a
            /// [`ServerThread`](crate::ServerThread).
            pub fn serve(&self) -> Result<(), ServerError> {
                self.serve_notify(())
            }

            /// [`serve`](Self::serve), setting `is_up` once the server is serving (bound,
            /// `on_start` done, accepting): EasyNetwork's `serve_forever(is_up_event)`.
            pub fn serve_notify(&self, is_up: impl EventSet) -> Result<(), ServerError> {
                self.control.begin_run()?;
                let result = self.run(is_up);
                self.control.end_run();
                result
            }
        }

        impl<S, P> crate::thread::BlockingServer for $name<S, P>
        where
            S: Service,
            S::Handler: $handler<Request = P::Request, Response = P::Response>,
            P: $proto,
        {
            fn handle(&self) -> $crate::ServerHandle {
                $name::handle(self)
            }

            fn serve_notify(&self, is_up: &dyn EventSet) -> Result<(), ServerError> {
                $name::serve_notify(self, is_up)
            }
        }
    };
}
pub(crate) use server_methods;
