//! [`StreamSimBuilder`]: the settings of a [`StreamSim`], and which session a connection gets.

use std::fmt;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::StreamSim;
use crate::handler::{Service, StreamHandler};
use crate::protocol::{StreamClientProtocol, StreamServerProtocol};
use crate::sim::Faults;
use crate::stream::{
    AsyncSession, AsyncStreamHandler, Connection, Driven, ServerRole, Session, StreamConfig,
};

/// Makes the server side of an accepted connection: the session for the service's handler
/// kind.
pub(super) type MakeSession<S, P> =
    fn(Instant, &S, Connection<P, ServerRole>) -> Option<Box<dyn Driven>>;

pub(super) fn portable<S, P>(
    now: Instant,
    service: &S,
    conn: Connection<P, ServerRole>,
) -> Option<Box<dyn Driven>>
where
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    Session::start(now, service, conn).map(|s| Box::new(s) as Box<dyn Driven>)
}

pub(super) fn asynchronous<S, P>(
    now: Instant,
    service: &S,
    conn: Connection<P, ServerRole>,
) -> Option<Box<dyn Driven>>
where
    S: Service,
    S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    AsyncSession::start(now, service, conn).map(|s| Box::new(s) as Box<dyn Driven>)
}

#[cfg(feature = "tls")]
#[derive(Clone)]
pub(super) struct Tls {
    pub(super) server: Arc<rustls::ServerConfig>,
    pub(super) client: Arc<rustls::ClientConfig>,
    pub(super) name: rustls::pki_types::ServerName<'static>,
}

/// Settings of a [`StreamSim`]; [`StreamSim::builder`] makes one.
pub struct StreamSimBuilder<S, P> {
    pub(super) service: S,
    pub(super) protocol: P,
    pub(super) config: StreamConfig,
    pub(super) client_config: StreamConfig,
    pub(super) shutdown_timeout: Duration,
    pub(super) seed: u64,
    pub(super) faults: Faults,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<Tls>,
    pub(super) capture_logs: bool,
}

impl<S, P> fmt::Debug for StreamSimBuilder<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSimBuilder")
            .field("config", &self.config)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl<S, P> StreamSimBuilder<S, P>
where
    S: Service,
    P: StreamServerProtocol + StreamClientProtocol,
{
    /// The server's connection settings (the drivers' builders set the same).
    pub fn config(mut self, config: StreamConfig) -> Self {
        self.config = config;
        self
    }

    /// The simulated clients' connection settings.
    pub fn client_config(mut self, config: StreamConfig) -> Self {
        self.client_config = config;
        self
    }

    /// How long a graceful shutdown waits for connections (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The seed of every random choice (default 0): the same seed, the same run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Faults from the start (default none).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Keeps the `tracing` events the server emits while the simulator runs, for
    /// [`StreamSim::logs`]. The simulator's own subscriber is then the default during its
    /// calls (on this thread), in place of the test's.
    pub fn capture_logs(mut self) -> Self {
        self.capture_logs = true;
        self
    }

    /// Serves TLS with `server`; clients connect with `client` to `server_name`.
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Self {
        self.tls = Some(Tls {
            server,
            client,
            name: server_name,
        });
        self
    }

    /// The simulation, for a service of portable [`StreamHandler`]s. `on_start` has run;
    /// check [`StreamSim::is_serving`] if it can fail.
    pub fn build(self) -> StreamSim<S, P>
    where
        S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    {
        StreamSim::with(self, portable::<S, P>)
    }

    /// The simulation, for a service of [`AsyncStreamHandler`]s, polled by the simulator.
    pub fn build_async(self) -> StreamSim<S, P>
    where
        S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    {
        StreamSim::with(self, asynchronous::<S, P>)
    }
}
