//! The server lifecycle: created, listening, serving, shutting down, closed.
//!
//! Both drivers keep one [`Lifecycle`] per server and ask it before acting, so the rules of
//! EasyNetwork's servers live in one place:
//!
//! - `activate` binds once; calling it again is a no-op ([`Activation::AlreadyActive`]);
//!   after `close` it fails with [`ServerError::Closed`].
//! - `serve` while another run is starting or serving fails with
//!   [`ServerError::AlreadyRunning`]; it activates first if needed.
//! - `shutdown` stops a run with a deadline and returns the server to *listening*, so it can
//!   serve again; with no run it does nothing.
//! - `close` is idempotent and final. Connections already accepted keep being served until
//!   they end (EasyNetwork's rule); addresses are reported while the server is listening.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use easynet_core::lifecycle::{Activation, Lifecycle, ServerError, ServerState};
//!
//! let now = Instant::now();
//! let mut server = Lifecycle::new();
//! assert!(matches!(server.begin_serve(), Ok(Activation::Bind))); // driver binds, then:
//! server.activated();
//! server.serving(); // on_start done, accept loops started: `is_up`
//! assert!(server.is_serving());
//! assert!(matches!(server.begin_serve(), Err(ServerError::AlreadyRunning)));
//! server.shutdown(now, Duration::from_secs(30));
//! server.stopped();
//! assert_eq!(server.state(), ServerState::Listening);
//! server.close();
//! assert!(matches!(server.activate(), Err(ServerError::Closed)));
//! ```

use std::time::{Duration, Instant};

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerState {
    /// Nothing is bound.
    Created,
    /// Listeners are bound; no run is going.
    Listening,
    /// A run is in its setup (binding, `on_start`).
    Starting,
    /// A run is accepting and serving.
    Serving,
    /// A run is stopping; connections must be gone by `deadline`.
    ShuttingDown {
        /// When remaining connections are closed abortively.
        deadline: Instant,
    },
    /// Closed for good.
    Closed,
}

pub use crate::error::ServerError;

/// What `activate` asks of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Bind the listeners now, then call [`Lifecycle::activated`] (or
    /// [`Lifecycle::activation_failed`]).
    Bind,
    /// The listeners are already bound.
    AlreadyActive,
}

/// What `shutdown` asks of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// No run is going: nothing to do.
    NotRunning,
    /// Stop accepting, close connections gracefully by `deadline`, then call
    /// [`Lifecycle::stopped`]. Also returned, with the first deadline, when a shutdown is
    /// already under way.
    Stop {
        /// When remaining connections are closed abortively.
        deadline: Instant,
    },
}

/// The lifecycle rules of one server.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: ServerState,
    bound: bool,
    closed: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A server with nothing bound.
    pub const fn new() -> Self {
        Self {
            state: ServerState::Created,
            bound: false,
            closed: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> ServerState {
        if self.closed && !self.is_running() {
            return ServerState::Closed;
        }
        self.state
    }

    fn is_running(&self) -> bool {
        matches!(
            self.state,
            ServerState::Starting | ServerState::Serving | ServerState::ShuttingDown { .. }
        )
    }

    /// Asks to bind the listeners (idempotent).
    pub fn activate(&mut self) -> Result<Activation, ServerError> {
        if self.closed {
            return Err(ServerError::Closed);
        }
        if self.bound {
            return Ok(Activation::AlreadyActive);
        }
        Ok(Activation::Bind)
    }

    /// The driver bound every listener.
    pub fn activated(&mut self) {
        if self.closed {
            return;
        }
        self.bound = true;
        if self.state == ServerState::Created {
            self.state = ServerState::Listening;
        }
    }

    /// Binding failed; nothing is left bound.
    pub fn activation_failed(&mut self) {
        self.bound = false;
        if !self.is_running() {
            self.state = ServerState::Created;
        }
    }

    /// The listeners were closed without closing the server (a standalone server binds anew
    /// for each run); the next `begin_serve` binds again.
    pub fn deactivated(&mut self) {
        self.bound = false;
        if self.state == ServerState::Listening {
            self.state = ServerState::Created;
        }
    }

    /// Starts a serve run: fails if closed or running; otherwise says whether to bind first.
    pub fn begin_serve(&mut self) -> Result<Activation, ServerError> {
        if self.closed {
            return Err(ServerError::Closed);
        }
        if self.is_running() {
            return Err(ServerError::AlreadyRunning);
        }
        let activation = self.activate()?;
        self.state = ServerState::Starting;
        Ok(activation)
    }

    /// The run's setup succeeded (`on_start` done, accepting started): it is serving.
    pub fn serving(&mut self) {
        if self.state == ServerState::Starting {
            self.state = ServerState::Serving;
        }
    }

    /// Asks the run to stop, with `timeout` for connections to finish. While a shutdown is
    /// under way, the deadline only moves earlier.
    pub fn shutdown(&mut self, now: Instant, timeout: Duration) -> Shutdown {
        match self.state {
            ServerState::Starting | ServerState::Serving => {
                // A timeout the clock cannot add means no deadline worth the name.
                let deadline = crate::deadline_after(now, timeout);
                self.state = ServerState::ShuttingDown { deadline };
                Shutdown::Stop { deadline }
            }
            // A second shutdown may hurry the first, never delay it.
            ServerState::ShuttingDown { deadline } => {
                let deadline = deadline.min(crate::deadline_after(now, timeout));
                self.state = ServerState::ShuttingDown { deadline };
                Shutdown::Stop { deadline }
            }
            _ => Shutdown::NotRunning,
        }
    }

    /// The run has ended (normally, by shutdown, or because its setup failed).
    pub fn stopped(&mut self) {
        if self.is_running() {
            self.state = if self.bound {
                ServerState::Listening
            } else {
                ServerState::Created
            };
        }
    }

    /// Closes the server for good; listeners go away at once. Returns false if it already was.
    pub fn close(&mut self) -> bool {
        let first = !self.closed;
        self.closed = true;
        self.bound = false;
        if !self.is_running() {
            self.state = ServerState::Closed;
        }
        first
    }

    /// True while listeners are bound (after activation, until close).
    pub fn is_listening(&self) -> bool {
        self.bound && !self.closed
    }

    /// True while a run is accepting: serving and listening.
    pub fn is_serving(&self) -> bool {
        self.state == ServerState::Serving && self.is_listening()
    }

    /// True once `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The shutdown deadline, while shutting down.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ServerState::ShuttingDown { deadline } => Some(deadline),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activate_is_idempotent_and_refused_after_close() {
        let mut s = Lifecycle::new();
        assert!(!s.is_listening());
        assert!(matches!(s.activate(), Ok(Activation::Bind)));
        s.activated();
        assert!(s.is_listening());
        assert!(matches!(s.activate(), Ok(Activation::AlreadyActive)));
        assert!(s.close());
        assert!(!s.close());
        assert!(matches!(s.activate(), Err(ServerError::Closed)));
        assert!(matches!(s.begin_serve(), Err(ServerError::Closed)));
        assert_eq!(s.state(), ServerState::Closed);
    }

    #[test]
    fn serve_after_activate_does_not_rebind_and_can_serve_again_after_shutdown() {
        let now = Instant::now();
        let mut s = Lifecycle::new();
        assert!(matches!(s.activate(), Ok(Activation::Bind)));
        s.activated();
        assert!(matches!(s.begin_serve(), Ok(Activation::AlreadyActive)));
        assert!(!s.is_serving(), "not serving during setup");
        s.serving();
        assert!(s.is_serving());
        assert_eq!(
            s.shutdown(now, Duration::from_secs(1)),
            Shutdown::Stop {
                deadline: now + Duration::from_secs(1)
            }
        );
        // A second shutdown keeps the first deadline.
        let later = now + Duration::from_millis(500);
        assert_eq!(
            s.shutdown(later, Duration::from_secs(9)),
            Shutdown::Stop {
                deadline: now + Duration::from_secs(1)
            }
        );
        assert!(!s.is_serving());
        s.stopped();
        assert_eq!(s.state(), ServerState::Listening);
        assert!(s.is_listening(), "addresses stay reported after shutdown");
        assert!(matches!(s.begin_serve(), Ok(Activation::AlreadyActive)));
    }

    #[test]
    fn shutdown_without_run_is_harmless() {
        let mut s = Lifecycle::new();
        assert_eq!(
            s.shutdown(Instant::now(), Duration::ZERO),
            Shutdown::NotRunning
        );
        s.stopped();
        assert_eq!(s.state(), ServerState::Created);
    }

    #[test]
    fn a_second_shutdown_hurries_but_never_delays() {
        let mut s = Lifecycle::new();
        s.begin_serve().unwrap();
        s.activated();
        s.serving();
        let now = Instant::now();
        let t = |secs| Duration::from_secs(secs);
        assert_eq!(
            s.shutdown(now, t(30)),
            Shutdown::Stop {
                deadline: now + t(30)
            }
        );
        assert_eq!(
            s.shutdown(now, t(60)),
            Shutdown::Stop {
                deadline: now + t(30)
            }
        );
        assert_eq!(s.shutdown(now, t(0)), Shutdown::Stop { deadline: now });
        assert_eq!(s.state(), ServerState::ShuttingDown { deadline: now });
    }

    #[test]
    fn already_running_during_setup() {
        let mut s = Lifecycle::new();
        assert!(matches!(s.begin_serve(), Ok(Activation::Bind)));
        assert!(matches!(s.begin_serve(), Err(ServerError::AlreadyRunning)));
    }

    #[test]
    fn close_while_serving_keeps_run_until_it_stops() {
        let mut s = Lifecycle::new();
        s.begin_serve().unwrap();
        s.activated();
        s.serving();
        s.close();
        assert!(!s.is_listening());
        assert!(!s.is_serving());
        assert_eq!(
            s.state(),
            ServerState::Serving,
            "existing connections are still served"
        );
        assert!(matches!(s.begin_serve(), Err(ServerError::Closed)));
        s.stopped();
        assert_eq!(s.state(), ServerState::Closed);
    }

    #[test]
    fn deactivated_server_binds_again_on_the_next_run() {
        let mut s = Lifecycle::new();
        assert!(matches!(s.begin_serve(), Ok(Activation::Bind)));
        s.activated();
        s.serving();
        let _ = s.shutdown(Instant::now(), Duration::ZERO);
        s.stopped();
        s.deactivated();
        assert!(!s.is_listening());
        assert_eq!(s.state(), ServerState::Created);
        assert!(matches!(s.begin_serve(), Ok(Activation::Bind)));
    }

    #[test]
    fn failed_bind_leaves_nothing_bound() {
        let mut s = Lifecycle::new();
        assert!(matches!(s.begin_serve(), Ok(Activation::Bind)));
        s.activation_failed();
        s.stopped();
        assert_eq!(s.state(), ServerState::Created);
        assert!(!s.is_listening());
    }
}
