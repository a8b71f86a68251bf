//! [`Server`]: the server-level machine, one per server, in the shape of quinn-proto's
//! `Endpoint` beside its connections.
//!
//! It owns what concerns the whole server rather than one connection: the
//! [`Lifecycle`], the order of a run (bind, `on_start`, serving, shutdown fan-out,
//! connections draining, `on_stop`, stopped), the one shutdown deadline every
//! connection gets, the connection table and its limit ([`max_connections`]: a driver
//! accepts only while [`may_accept`] says so, and accepts again when [`closed`] says that
//! a slot is free). Each accept loop has its own
//! [`AcceptGate`](crate::accept::AcceptGate) (pause on EMFILE and the like), which logs its
//! decisions itself.
//! A driver feeds it what happened and does what [`poll_event`](Server::poll_event) says;
//! without sockets, a test or a simulator can drive a whole server the same way.
//!
//! [`max_connections`]: Server::with_max_connections
//! [`may_accept`]: Server::may_accept
//! [`closed`]: Server::closed
//!
//! ```
//! use std::time::{Duration, Instant};
//! use easynet_core::lifecycle::Activation;
//! use easynet_core::server::{Event, Server};
//!
//! let now = Instant::now();
//! let mut server = Server::new(Duration::from_secs(30));
//! assert!(matches!(server.begin_run(), Ok(Activation::Bind))); // the driver binds one listener
//! server.activated();
//! assert!(server.init(&|_: &easynet_core::handler::ConnInfo| ()).is_ok());
//! server.serving();
//! let id = server.accepted();
//! let deadline = server.shutdown(now).unwrap();
//! assert_eq!(server.poll_event(), Some(Event::StopAccepting));
//! assert_eq!(server.poll_event(), Some(Event::Shutdown { deadline }));
//! server.closed(id); // the last connection ended: teardown, then the run is over
//! assert_eq!(server.poll_event(), Some(Event::Teardown));
//! server.teardown_done();
//! assert_eq!(server.poll_event(), Some(Event::Stopped));
//! assert!(server.is_listening() && !server.is_serving());
//! ```

use std::collections::{HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::ConnId;
use crate::handler::{HandlerError, Service};
use crate::lifecycle::{Activation, Lifecycle, ServerError, ServerState, Shutdown};
use crate::panic_message;

/// What the driver does next for the whole server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Stop accepting and let the listeners go (a shutdown, or `close`); connections
    /// already accepted go on.
    StopAccepting,
    /// Tell every connection: a shutdown began, close by `deadline` (the same instant for
    /// all of them). Comes again with an earlier deadline when the shutdown is hurried
    /// ([`Server::shutdown_within`]); connections keep the earliest.
    Shutdown {
        /// When connections still open are closed abortively.
        deadline: Instant,
    },
    /// Run `on_stop` now ([`run_teardown`] contains it), then call
    /// [`teardown_done`](Server::teardown_done). Once per run that initialized.
    Teardown,
    /// The run is over: `serve` returns.
    Stopped,
}

pub use crate::stats::ServerStats;
use crate::stats::{Counter, Recorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// `on_start` has not succeeded: nothing to tear down.
    Uninitialized,
    Pending,
    Asked,
    Done,
}

#[derive(Debug)]
struct Run {
    conns: HashSet<ConnId>,
    /// Set once: by a shutdown, or when a closed server's connections are all gone.
    deadline: Option<Instant>,
    accepting: bool,
    teardown: Teardown,
    stopped: bool,
}

/// The server-level machine; see the [module docs](self).
#[derive(Debug)]
pub struct Server {
    lifecycle: Lifecycle,
    shutdown_timeout: Duration,
    run: Option<Run>,
    next_conn: u64,
    events: VecDeque<Event>,
    recorder: Recorder,
    /// At most this many connections open at once; `None`: no limit of ours.
    max_connections: Option<usize>,
}

impl Server {
    /// A server whose connections get `shutdown_timeout` to finish at a shutdown.
    pub fn new(shutdown_timeout: Duration) -> Self {
        Self::with_recorder(shutdown_timeout, Recorder::new())
    }

    /// [`new`](Self::new), counting into `recorder` (made before the server, to be given
    /// to the connection and endpoint configurations built with it).
    pub fn with_recorder(shutdown_timeout: Duration, recorder: Recorder) -> Self {
        Self {
            lifecycle: Lifecycle::new(),
            shutdown_timeout,
            run: None,
            next_conn: 1,
            events: VecDeque::new(),
            recorder,
            max_connections: None,
        }
    }

    /// At most `max` connections open at once (`None`, the default: no limit but the
    /// process's file descriptors). At the limit a driver stops accepting, so new
    /// connections wait in the kernel's backlog, and accepts again once one closes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use easynet_core::server::Server;
    ///
    /// let mut server = Server::new(Duration::from_secs(30)).with_max_connections(Some(1));
    /// server.begin_run().unwrap();
    /// server.activated();
    /// server.serving();
    /// assert!(server.may_accept());
    /// let id = server.accepted();
    /// assert!(!server.may_accept()); // full: leave the next ones in the backlog
    /// assert!(server.closed(id)); // a slot is free: accept again
    /// assert!(server.may_accept());
    /// ```
    pub fn with_max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }

    /// The limit set by [`with_max_connections`](Self::with_max_connections).
    pub fn max_connections(&self) -> Option<usize> {
        self.max_connections
    }

    /// True while a run accepts and its connections are below the limit: a driver calls
    /// [`accepted`](Self::accepted) only after this said true (checked and accepted under
    /// one lock when several loops accept).
    pub fn may_accept(&self) -> bool {
        self.run.as_ref().is_some_and(|r| {
            r.accepting && !r.stopped && self.max_connections.is_none_or(|m| r.conns.len() < m)
        })
    }

    /// The lifecycle state.
    pub fn state(&self) -> ServerState {
        self.lifecycle.state()
    }

    /// See [`Lifecycle::activate`]: bind unless bound.
    pub fn activate(&mut self) -> Result<Activation, ServerError> {
        self.lifecycle.activate()
    }

    /// The listeners are bound.
    pub fn activated(&mut self) {
        self.lifecycle.activated();
    }

    /// Binding failed.
    pub fn activation_failed(&mut self) {
        self.lifecycle.activation_failed();
    }

    /// The listeners were let go (a standalone run binds anew each time).
    pub fn deactivated(&mut self) {
        self.lifecycle.deactivated();
    }

    /// Starts a run; [`Activation::Bind`] asks the driver to bind first. Fails while
    /// another run is going or after `close`.
    pub fn begin_run(&mut self) -> Result<Activation, ServerError> {
        let activation = self.lifecycle.begin_serve()?;
        self.events.clear();
        self.run = Some(Run {
            conns: HashSet::new(),
            deadline: None,
            accepting: true,
            teardown: Teardown::Uninitialized,
            stopped: false,
        });
        Ok(activation)
    }

    /// Runs `on_start`, contained: an error or a panic ends the run (logged by the
    /// caller from the returned error); no teardown follows. Call it after binding.
    pub fn init<S: Service>(&mut self, service: &S) -> Result<(), HandlerError> {
        let result = run_init(service);
        self.initialized(result.is_ok());
        result
    }

    /// `on_start` ran elsewhere ([`run_init`], outside a lock the hook might need):
    /// `ok` or not. A failed init ends the run with no teardown.
    pub fn initialized(&mut self, ok: bool) {
        if let Some(run) = self.run.as_mut() {
            if ok {
                run.teardown = Teardown::Pending;
            } else {
                self.stop();
            }
        }
    }

    /// Setup is done and accepting has started: the server is serving (`is_up`).
    pub fn serving(&mut self) {
        self.lifecycle.serving();
    }

    /// A connection was accepted: its id, entered in the connection table.
    pub fn accepted(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.recorder.add(Counter::Accepted, 1);
        if let Some(run) = self.run.as_mut() {
            run.conns.insert(id);
        }
        id
    }

    /// Connection `id` ended (closed, reset or dropped). Once per accepted id. True when
    /// this made room under [`max_connections`](Self::with_max_connections): accept loops
    /// paused by the limit accept again.
    pub fn closed(&mut self, id: ConnId) -> bool {
        // Counted even after the shutdown deadline emptied the table: the socket is gone now.
        self.recorder.add(Counter::Closed, 1);
        let mut room = false;
        if let Some(run) = self.run.as_mut()
            && run.conns.remove(&id)
        {
            room = self
                .max_connections
                .is_some_and(|m| run.conns.len() + 1 == m);
        }
        self.maybe_teardown();
        room && self.may_accept()
    }

    /// Stops the run: accepting ends and every connection is told to close by the one
    /// deadline, `now + shutdown_timeout`, computed here and only here. Returns it; `None`
    /// without a run. Idempotent: a second call returns the first deadline.
    pub fn shutdown(&mut self, now: Instant) -> Option<Instant> {
        if let Some(deadline) = self.run.as_ref()?.deadline {
            return Some(deadline);
        }
        self.shutdown_within(now, self.shutdown_timeout)
    }

    /// As [`shutdown`](Self::shutdown), with `timeout` instead of the server's shutdown
    /// timeout. During a shutdown it can only hurry it: an earlier deadline replaces the
    /// one set (a new `Event::Shutdown` tells the connections), a later one changes nothing.
    /// `Duration::ZERO` closes every connection abortively at once: the "second Ctrl-C".
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use easynet_core::server::{Event, Server};
    ///
    /// let mut server = Server::new(Duration::from_secs(30));
    /// server.begin_run().unwrap();
    /// server.activated();
    /// server.serving();
    /// let now = Instant::now();
    /// let graceful = server.shutdown(now).unwrap();
    /// assert_eq!(graceful, now + Duration::from_secs(30));
    /// assert_eq!(server.shutdown_within(now, Duration::ZERO), Some(now)); // hurried
    /// let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
    /// assert!(events.contains(&Event::Shutdown { deadline: now }));
    /// ```
    pub fn shutdown_within(&mut self, now: Instant, timeout: Duration) -> Option<Instant> {
        let run = self.run.as_mut()?;
        let asked = crate::deadline_after(now, timeout);
        if let Some(deadline) = run.deadline {
            if asked >= deadline {
                return Some(deadline);
            }
            self.lifecycle.shutdown(now, timeout);
            run.deadline = Some(asked);
            self.events.push_back(Event::Shutdown { deadline: asked });
            return Some(asked);
        }
        let deadline = match self.lifecycle.shutdown(now, timeout) {
            Shutdown::Stop { deadline } => deadline,
            // Closed during the run: the connections still get the same bound.
            _ => asked,
        };
        run.deadline = Some(deadline);
        if std::mem::take(&mut run.accepting) {
            self.events.push_back(Event::StopAccepting);
        }
        self.events.push_back(Event::Shutdown { deadline });
        self.maybe_teardown();
        Some(deadline)
    }

    /// Closes for good: listeners go at once, accepted connections are served to their
    /// end, then the run stops. Idempotent.
    pub fn close(&mut self) {
        self.lifecycle.close();
        if let Some(run) = self.run.as_mut()
            && std::mem::take(&mut run.accepting)
        {
            self.events.push_back(Event::StopAccepting);
        }
        self.maybe_teardown();
    }

    /// The clock reached `now`: past the shutdown deadline the run tears down even if
    /// connections are left (each resets itself at that deadline).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if run.deadline.is_some_and(|d| now >= d) {
            run.conns.clear();
            self.maybe_teardown();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let run = self.run.as_ref()?;
        run.deadline.filter(|_| !run.conns.is_empty())
    }

    /// The next thing to do, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// `on_stop` has run (or timed out): the run is over.
    pub fn teardown_done(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.teardown = Teardown::Done;
        }
        self.stop();
    }

    /// The run is over whatever its state (the driver's run ended: normally, by a failed
    /// listener or setup, or its task was dropped): back to listening. Idempotent.
    pub fn end_run(&mut self) {
        self.stop();
    }

    fn maybe_teardown(&mut self) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let ending = run.deadline.is_some() || self.lifecycle.is_closed() || !run.accepting;
        if !ending || !run.conns.is_empty() {
            return;
        }
        match run.teardown {
            Teardown::Pending => {
                run.teardown = Teardown::Asked;
                self.events.push_back(Event::Teardown);
            }
            Teardown::Uninitialized => self.stop(),
            Teardown::Asked | Teardown::Done => {}
        }
    }

    fn stop(&mut self) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if !std::mem::replace(&mut run.stopped, true) {
            self.lifecycle.stopped();
            self.events.push_back(Event::Stopped);
        }
    }

    /// True while a run is going (from `begin_run` to [`Event::Stopped`]).
    pub fn is_running(&self) -> bool {
        self.run.as_ref().is_some_and(|r| !r.stopped)
    }

    /// Connections open in this run.
    pub fn connections(&self) -> usize {
        self.run.as_ref().map_or(0, |r| r.conns.len())
    }

    /// The shutdown deadline, once a shutdown began.
    pub fn deadline(&self) -> Option<Instant> {
        self.run.as_ref().and_then(|r| r.deadline)
    }

    /// See [`Lifecycle::is_listening`].
    pub fn is_listening(&self) -> bool {
        self.lifecycle.is_listening()
    }

    /// See [`Lifecycle::is_serving`].
    pub fn is_serving(&self) -> bool {
        self.lifecycle.is_serving()
    }

    /// See [`Lifecycle::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.lifecycle.is_closed()
    }

    /// Counters across runs (what this machine and every connection and endpoint given
    /// its [`recorder`](Self::recorder) counted).
    pub fn stats(&self) -> ServerStats {
        self.recorder.snapshot()
    }

    /// Where this server's connections and datagram endpoints count: put a clone in their
    /// [`StreamConfig`](crate::stream::StreamConfig) or
    /// [`DatagramConfig`](crate::datagram::DatagramConfig) (`with_recorder`).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }
}

/// Runs `on_start`, contained: a panic becomes its error.
pub fn run_init<S: Service + ?Sized>(service: &S) -> Result<(), HandlerError> {
    match catch_unwind(AssertUnwindSafe(|| service.on_start())) {
        Ok(result) => result,
        Err(panic) => Err(panic_message("on_start", panic).into()),
    }
}

/// Runs `on_stop`, contained: a panic is logged once and the server goes on.
pub fn run_teardown<S: Service + ?Sized>(service: &S) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| service.on_stop())) {
        tracing::error!(error = %panic_message("on_stop", panic), "exception occurred during teardown");
    }
}
