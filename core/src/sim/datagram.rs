//! [`DatagramSim`]: a datagram server (the core's [`DatagramServer`] or
//! [`AsyncDatagramServer`], as the drivers run them) and simulated peers, over a network
//! that can lose, duplicate and reorder datagrams.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Chance, Event, Faults, Side, Traced};
use crate::datagram::{
    AsyncDatagramHandler, AsyncDatagramServer, AsyncOutput, DatagramConfig, DatagramServer, Output,
    Transmit,
};
use crate::handler::{DatagramHandler, Service};
use crate::protocol::{DatagramClientProtocol, DatagramServerProtocol, ParseError};
use crate::server::{self, Server};

/// A simulated peer of a [`DatagramSim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(u64);

impl PeerId {
    /// The peer's address as the server sees it.
    pub fn addr(self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000u16.wrapping_add(self.0 as u16)))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.0)
    }
}

/// The server's endpoint, whatever its handlers are.
trait Endpoint: Send {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn shutdown(&mut self, now: Instant);
    /// The next datagram it sends (a send succeeds at once), or `None` once idle.
    fn poll_transmit(&mut self, now: Instant, cx: &mut Context<'_>) -> Option<Transmit>;
    fn drops(&self) -> u64;
    fn stats(&self) -> crate::stats::ServerStats;
}

impl<S, P> Endpoint for DatagramServer<S, P>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        DatagramServer::handle_datagram(self, now, from, data);
    }
    fn handle_timeout(&mut self, now: Instant) {
        DatagramServer::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        DatagramServer::poll_timeout(self)
    }
    fn shutdown(&mut self, now: Instant) {
        DatagramServer::shutdown(self, now);
    }
    fn poll_transmit(&mut self, _: Instant, _: &mut Context<'_>) -> Option<Transmit> {
        match self.poll_output() {
            Output::Transmit(t) => Some(t),
            _ => None,
        }
    }
    fn drops(&self) -> u64 {
        DatagramServer::drops(self)
    }
    fn stats(&self) -> crate::stats::ServerStats {
        self.recorder().snapshot()
    }
}

impl<S, P> Endpoint for AsyncDatagramServer<S, P>
where
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        AsyncDatagramServer::handle_datagram(self, now, from, data);
    }
    fn handle_timeout(&mut self, now: Instant) {
        AsyncDatagramServer::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        AsyncDatagramServer::poll_timeout(self)
    }
    fn shutdown(&mut self, now: Instant) {
        AsyncDatagramServer::shutdown(self, now);
    }
    fn poll_transmit(&mut self, now: Instant, cx: &mut Context<'_>) -> Option<Transmit> {
        loop {
            match self.poll_output() {
                AsyncOutput::Transmit(id, t) => {
                    self.handle_sent(now, id, Ok(()));
                    return Some(t);
                }
                AsyncOutput::Idle { resume: true, .. } => self.resume(now),
                _ if self.poll_wake(cx).is_ready() => self.resume(now),
                _ => return None,
            }
        }
    }
    fn drops(&self) -> u64 {
        AsyncDatagramServer::drops(self)
    }
    fn stats(&self) -> crate::stats::ServerStats {
        self.recorder().snapshot()
    }
}

/// Set when an async handler is woken from outside.
#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// One direction of the simulated network, with its faults.
#[derive(Default)]
struct Wire {
    in_flight: VecDeque<(u64, Bytes)>,
    /// A datagram held back to arrive after the next one.
    held: Option<(u64, Bytes)>,
}

/// Settings of a [`DatagramSim`]; [`DatagramSim::builder`] makes one.
pub struct DatagramSimBuilder<S, P> {
    service: S,
    protocol: P,
    config: DatagramConfig,
    shutdown_timeout: Duration,
    seed: u64,
    faults: Faults,
}

impl<S, P> fmt::Debug for DatagramSimBuilder<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSimBuilder")
            .field("config", &self.config)
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl<S, P> DatagramSimBuilder<S, P>
where
    S: Service,
    P: DatagramServerProtocol + DatagramClientProtocol,
{
    /// The endpoint's settings (queue bound, idle eviction, size limit).
    pub fn config(mut self, config: DatagramConfig) -> Self {
        self.config = config;
        self
    }

    /// How long a graceful shutdown may take (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The seed of every random choice (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Faults from the start (default none).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The simulation, for portable [`DatagramHandler`]s.
    ///
    /// # Panics
    /// If the configuration is invalid.
    pub fn build(self) -> DatagramSim<S, P>
    where
        S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    {
        let (service, protocol) = (Arc::new(self.service), Arc::new(self.protocol));
        let endpoint = DatagramServer::new(
            service.clone(),
            protocol.clone(),
            local(),
            self.config.clone(),
        )
        .expect("a valid DatagramConfig");
        DatagramSim::with(
            service,
            protocol,
            Box::new(endpoint),
            self.shutdown_timeout,
            self.seed,
            self.faults,
        )
    }

    /// The simulation, for [`AsyncDatagramHandler`]s, polled by the simulator.
    ///
    /// # Panics
    /// If the configuration is invalid.
    pub fn build_async(self) -> DatagramSim<S, P>
    where
        S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    {
        let (service, protocol) = (Arc::new(self.service), Arc::new(self.protocol));
        let endpoint = AsyncDatagramServer::new(
            service.clone(),
            protocol.clone(),
            local(),
            self.config.clone(),
        )
        .expect("a valid DatagramConfig");
        DatagramSim::with(
            service,
            protocol,
            Box::new(endpoint),
            self.shutdown_timeout,
            self.seed,
            self.faults,
        )
    }
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}

/// A whole datagram server and its peers in memory; see the [module docs](super).
///
/// ```
/// use easynet_core::datagram::{DatagramPeer, AsyncDatagramHandler};
/// use easynet_core::handler::{ConnInfo, HandlerError};
/// use easynet_core::protocol::Datagram;
/// use easynet_core::sim::{DatagramSim, Faults};
///
/// struct Upper;
/// impl AsyncDatagramHandler for Upper {
///     type Request = String;
///     type Response = String;
///     async fn handle(&mut self, client: &mut DatagramPeer<String, String>) -> Result<(), HandlerError> {
///         let text = client.recv().await?;
///         client.send(&text.to_uppercase()).await?;
///         Ok(())
///     }
/// }
///
/// let mut sim = DatagramSim::builder(Datagram::lines(), |_: &ConnInfo| Upper)
///     .faults(Faults::none().with_datagram_faults(0, 1000, 0)) // every datagram twice
///     .build_async();
/// let peer = sim.peer();
/// sim.send(peer, &"hi".to_owned());
/// assert_eq!(sim.replies(peer), ["HI", "HI", "HI", "HI"]); // 2 requests, each answer twice
/// sim.shutdown();
/// assert!(sim.is_stopped());
/// ```
pub struct DatagramSim<S: Service, P: DatagramClientProtocol> {
    start: Instant,
    now: Instant,
    service: Arc<S>,
    protocol: Arc<P>,
    machine: Server,
    endpoint: Box<dyn Endpoint>,
    serving: bool,
    to_server: Wire,
    to_peers: Wire,
    replies: BTreeMap<u64, VecDeque<Result<P::Response, ParseError>>>,
    next_peer: u64,
    faults: Faults,
    chance: Chance,
    trace: Vec<Traced>,
    waker: Waker,
}

impl<S: Service, P: DatagramClientProtocol> fmt::Debug for DatagramSim<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSim")
            .field("elapsed", &(self.now - self.start))
            .field("server", &self.machine)
            .field("peers", &(self.next_peer - 1))
            .finish_non_exhaustive()
    }
}

impl<S, P> DatagramSim<S, P>
where
    S: Service,
    P: DatagramServerProtocol + DatagramClientProtocol,
{
    /// A simulation of a server speaking `protocol` with portable handlers that `factory`
    /// makes (one per peer; `|_| MyHandler` needs no annotation), default settings,
    /// seed 0. The argument order is the servers' builders'.
    pub fn new<H>(protocol: P, factory: S) -> Self
    where
        S: Fn(&crate::handler::ConnInfo) -> H + Service<Handler = H>,
        H: DatagramHandler<Request = P::Request, Response = P::Response>,
    {
        Self::builder_with_service(protocol, factory).build()
    }

    /// As [`new`](Self::new), with [`AsyncDatagramHandler`]s.
    pub fn new_async<H>(protocol: P, factory: S) -> Self
    where
        S: Fn(&crate::handler::ConnInfo) -> H + Service<Handler = H>,
        H: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    {
        Self::builder_with_service(protocol, factory).build_async()
    }

    /// Settings first: endpoint config, shutdown timeout, seed, faults.
    /// Handlers come from `factory`, as for [`new`](Self::new).
    pub fn builder<H>(protocol: P, factory: S) -> DatagramSimBuilder<S, P>
    where
        S: Fn(&crate::handler::ConnInfo) -> H + Send + Sync + 'static,
    {
        Self::builder_with_service(protocol, factory)
    }

    /// Settings first, with handlers from a [`Service`] (its `on_start` / `on_stop` hooks
    /// run as a server's would): `.build()` for portable handlers, `.build_async()` for
    /// async ones.
    pub fn builder_with_service(protocol: P, service: S) -> DatagramSimBuilder<S, P> {
        DatagramSimBuilder {
            service,
            protocol,
            config: DatagramConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            seed: 0,
            faults: Faults::none(),
        }
    }

    fn with(
        service: Arc<S>,
        protocol: Arc<P>,
        endpoint: Box<dyn Endpoint>,
        shutdown_timeout: Duration,
        seed: u64,
        faults: Faults,
    ) -> Self {
        let now = Instant::now();
        let mut sim = Self {
            start: now,
            now,
            service,
            protocol,
            machine: Server::new(shutdown_timeout),
            endpoint,
            serving: false,
            to_server: Wire::default(),
            to_peers: Wire::default(),
            replies: BTreeMap::new(),
            next_peer: 1,
            faults,
            chance: Chance::new(seed),
            trace: Vec::new(),
            waker: Waker::from(Arc::new(Woken::default())),
        };
        if sim.machine.begin_run().is_ok() {
            sim.machine.activated();
            if sim.machine.init(&*sim.service).is_ok() {
                sim.machine.serving();
                sim.serving = true;
            }
        }
        sim.process_events();
        sim
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Everything the simulator did so far, in order.
    pub fn trace(&self) -> &[Traced] {
        &self.trace
    }

    /// The faults injected from now on.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// True once the run is over.
    pub fn is_stopped(&self) -> bool {
        !self.machine.is_running()
    }

    /// Datagrams the endpoint dropped (queues full, shutdown).
    pub fn drops(&self) -> u64 {
        self.endpoint.drops()
    }

    /// The endpoint's counters, as a driver's `stats()` reports them.
    pub fn stats(&self) -> crate::stats::ServerStats {
        self.endpoint.stats()
    }

    /// A new peer.
    pub fn peer(&mut self) -> PeerId {
        let peer = self.next_peer;
        self.next_peer += 1;
        self.replies.insert(peer, VecDeque::new());
        PeerId(peer)
    }

    /// `peer` sends `request`, encoded by the protocol, then the simulation runs until
    /// idle.
    pub fn send(&mut self, peer: PeerId, request: &P::Request) {
        let mut data = BytesMut::new();
        if let Err(e) = self.protocol.encode_request(request, &mut data) {
            panic!("{peer} cannot send: {e}");
        }
        self.send_bytes(peer, &data);
    }

    /// `peer` sends one datagram of these bytes, then the simulation runs until idle.
    pub fn send_bytes(&mut self, peer: PeerId, datagram: &[u8]) {
        let datagram = Bytes::copy_from_slice(datagram);
        self.transmit(Side::Server, peer.0, datagram);
        self.run_until_idle();
    }

    /// The replies `peer` received since the last call, decoded.
    ///
    /// # Panics
    /// If one could not be decoded; [`received`](Self::received) returns those too.
    pub fn replies(&mut self, peer: PeerId) -> Vec<P::Response> {
        self.received(peer)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{peer} got a reply it cannot decode: {e}")))
            .collect()
    }

    /// Everything `peer` received since the last call.
    pub fn received(&mut self, peer: PeerId) -> Vec<Result<P::Response, ParseError>> {
        self.run_until_idle();
        self.replies
            .get_mut(&peer.0)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Runs until nothing more happens without the clock moving.
    pub fn run_until_idle(&mut self) {
        for _ in 0..super::stream::MAX_ROUNDS {
            if !self.round() {
                return;
            }
        }
        panic!("the simulation does not settle (a handler in a busy loop?)");
    }

    fn round(&mut self) -> bool {
        let mut progress = false;
        if self.endpoint.poll_timeout().is_some_and(|t| t <= self.now) {
            self.endpoint.handle_timeout(self.now);
            progress = true;
        }
        while let Some((peer, data)) = self.to_server.in_flight.pop_front() {
            self.record(Event::Datagram {
                peer,
                to: Side::Server,
                bytes: data.len(),
            });
            if self.serving {
                let from = PeerId(peer).addr();
                self.endpoint
                    .handle_datagram(self.now, from, BytesMut::from(&data[..]));
            }
            progress = true;
        }
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        while let Some(t) = self.endpoint.poll_transmit(self.now, &mut cx) {
            let peer = u64::from(t.to.port().wrapping_sub(40000));
            self.transmit(Side::Client, peer, t.data);
            progress = true;
        }
        while let Some((peer, data)) = self.to_peers.in_flight.pop_front() {
            self.record(Event::Datagram {
                peer,
                to: Side::Client,
                bytes: data.len(),
            });
            let reply = self.protocol.decode_response(BytesMut::from(&data[..]));
            self.replies.entry(peer).or_default().push_back(reply);
            progress = true;
        }
        if self.machine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.machine.handle_timeout(self.now);
        }
        progress | self.process_events()
    }

    /// Puts a datagram on the wire towards `to`, with the faults.
    fn transmit(&mut self, to: Side, peer: u64, data: Bytes) {
        let faults = self.faults.clone();
        if self.chance.per_mille(faults.loss_per_mille) {
            self.record(Event::Lost { peer, to });
            return;
        }
        let copies = if self.chance.per_mille(faults.duplicate_per_mille) {
            self.record(Event::Duplicated { peer, to });
            2
        } else {
            1
        };
        let reorder = self.chance.per_mille(faults.reorder_per_mille);
        if reorder {
            self.record(Event::Reordered { peer, to });
        }
        let wire = match to {
            Side::Server => &mut self.to_server,
            Side::Client => &mut self.to_peers,
        };
        for _ in 0..copies {
            if reorder && wire.held.is_none() {
                wire.held = Some((peer, data.clone()));
                continue;
            }
            wire.in_flight.push_back((peer, data.clone()));
            if let Some(late) = wire.held.take() {
                wire.in_flight.push_back(late);
            }
        }
    }

    fn process_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.machine.poll_event() {
            any = true;
            match event {
                server::Event::StopAccepting => self.serving = false,
                server::Event::Shutdown { .. } => {
                    self.record(Event::Shutdown);
                    self.endpoint.shutdown(self.now);
                }
                server::Event::Teardown => {
                    server::run_teardown(&*self.service);
                    self.record(Event::Teardown);
                    self.machine.teardown_done();
                }
                server::Event::Stopped => self.record(Event::Stopped),
            }
        }
        any
    }

    /// The next instant something is due (a receive timeout, an idle eviction).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    /// Moves the virtual clock forward by `d`, firing every deadline on the way in order.
    pub fn advance(&mut self, d: Duration) {
        let target = crate::deadline_after(self.now, d);
        self.run_until_idle();
        while let Some(next) = self.next_deadline().filter(|&t| t <= target) {
            self.now = self.now.max(next);
            self.run_until_idle();
        }
        self.now = target;
        self.run_until_idle();
    }

    /// Delivers a datagram held back for reordering now (it waits for the next one
    /// otherwise).
    pub fn flush_reordered(&mut self) {
        for wire in [&mut self.to_server, &mut self.to_peers] {
            if let Some(late) = wire.held.take() {
                wire.in_flight.push_back(late);
            }
        }
        self.run_until_idle();
    }

    /// Shuts the server down gracefully: the endpoint stops (routines dropped, queued
    /// datagrams dropped and counted), then teardown runs.
    pub fn shutdown(&mut self) {
        self.machine.shutdown(self.now);
        self.process_events();
        self.run_until_idle();
    }

    fn record(&mut self, event: Event) {
        self.trace.push(Traced {
            at: self.now - self.start,
            event,
        });
    }
}
