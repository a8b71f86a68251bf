//! [`StreamSim`]: a stream server (the core's [`Server`] machine and one session per
//! connection, exactly as the drivers run them) and its simulated clients.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::net::{End, Pipe};
use super::record::{LogEvent, Logs};
use super::{Chance, Event, Faults, Side, Traced};
use crate::ConnId;
use crate::handler::{ConnInfo, Received, Service, StreamHandler};
use crate::protocol::{StreamClientProtocol, StreamServerProtocol};
use crate::server::Server;
use crate::stream::{AsyncStreamHandler, CloseHow, Connection, Driven, ServerRole, StreamConfig};

/// Rounds of [`StreamSim::run_until_idle`] before it gives up: a server that never
/// settles (a handler in a busy loop) fails the test instead of hanging it.
pub(crate) const MAX_ROUNDS: usize = 1_000_000;

/// A simulated client of a [`StreamSim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

/// Where a simulated client's connection stands, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// Connected, and the server has not closed it.
    Open,
    /// The server closed gracefully and the client read everything up to its end of stream.
    EndOfStream,
    /// The connection was reset: the server aborted it, or closed it with input unread
    /// (then the kernel resets it and what the client had not read is lost).
    Reset,
    /// The client closed it ([`StreamSim::close`] or [`StreamSim::reset`]).
    Closed,
    /// The server was not accepting.
    Refused,
    /// The client's own connection failed and it closed it: under TLS, a handshake it
    /// rejected (a certificate it does not trust, say) or a record it could not read.
    Failed,
}

mod builder;
mod client;
mod run;

use builder::MakeSession;
pub use builder::StreamSimBuilder;
#[cfg(feature = "tls")]
use builder::Tls;
use client::{Client, Raw};

/// One connection: the server's session, the client, and the wire between them.
struct Pair<P: StreamServerProtocol + StreamClientProtocol> {
    conn: ConnId,
    /// `None` once closed (and dropped) or if the handler factory failed.
    server: Option<Box<dyn Driven>>,
    server_end: End,
    client: Client<P>,
    client_end: End,
    to_server: Pipe,
    to_client: Pipe,
    replies: VecDeque<Received<P::Response>>,
    bytes: Vec<u8>,
    closed_by_client: bool,
    counted: bool,
}

/// A whole stream server and its clients in memory; see the [module docs](super).
pub struct StreamSim<S: Service, P: StreamServerProtocol + StreamClientProtocol> {
    start: Instant,
    now: Instant,
    service: Arc<S>,
    protocol: Arc<P>,
    machine: Server,
    make: MakeSession<S, P>,
    config: StreamConfig,
    client_config: StreamConfig,
    #[cfg(feature = "tls")]
    tls: Option<Tls>,
    accepting: bool,
    pairs: BTreeMap<u64, Pair<P>>,
    refused: Vec<u64>,
    next_client: u64,
    faults: Faults,
    chance: Chance,
    trace: Vec<Traced>,
    logs: Option<(Logs, tracing::Dispatch)>,
}

impl<S: Service, P: StreamServerProtocol + StreamClientProtocol> fmt::Debug for StreamSim<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSim")
            .field("elapsed", &(self.now - self.start))
            .field("server", &self.machine)
            .field("clients", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}

impl<S, P> StreamSim<S, P>
where
    S: Service,
    P: StreamServerProtocol + StreamClientProtocol,
{
    /// A simulation of a server speaking `protocol` with portable handlers that `factory`
    /// makes (one per connection; `|_| MyHandler` needs no annotation), default settings,
    /// seed 0. The argument order is the servers' builders'.
    pub fn new<H>(protocol: P, factory: S) -> Self
    where
        S: Fn(&crate::handler::ConnInfo) -> H + Service<Handler = H>,
        H: StreamHandler<Request = P::Request, Response = P::Response>,
    {
        Self::builder_with_service(protocol, factory).build()
    }

    /// As [`new`](Self::new), with [`AsyncStreamHandler`]s.
    pub fn new_async<H>(protocol: P, factory: S) -> Self
    where
        S: Fn(&crate::handler::ConnInfo) -> H + Service<Handler = H>,
        H: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    {
        Self::builder_with_service(protocol, factory).build_async()
    }

    /// Settings first: connection config, shutdown timeout, seed, faults, TLS.
    /// Handlers come from `factory`, as for [`new`](Self::new).
    pub fn builder<H>(protocol: P, factory: S) -> StreamSimBuilder<S, P>
    where
        S: Fn(&crate::handler::ConnInfo) -> H + Send + Sync + 'static,
    {
        Self::builder_with_service(protocol, factory)
    }

    /// Settings first, with handlers from a [`Service`] (its `on_start` / `on_stop` hooks
    /// run as a server's would): `.build()` for portable handlers, `.build_async()` for
    /// async ones.
    pub fn builder_with_service(protocol: P, service: S) -> StreamSimBuilder<S, P> {
        StreamSimBuilder {
            service,
            protocol,
            config: StreamConfig::default(),
            client_config: StreamConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            seed: 0,
            faults: Faults::none(),
            #[cfg(feature = "tls")]
            tls: None,
            capture_logs: false,
        }
    }

    pub(super) fn with(b: StreamSimBuilder<S, P>, make: MakeSession<S, P>) -> Self {
        let now = Instant::now();
        let machine = Server::new(b.shutdown_timeout);
        // Server connections count into the machine, as a driver sets it up.
        let config = b.config.with_recorder(machine.recorder().clone());
        let mut sim = Self {
            start: now,
            now,
            service: Arc::new(b.service),
            protocol: Arc::new(b.protocol),
            machine,
            make,
            config,
            client_config: b.client_config,
            #[cfg(feature = "tls")]
            tls: b.tls,
            accepting: false,
            pairs: BTreeMap::new(),
            refused: Vec::new(),
            next_client: 1,
            faults: b.faults,
            chance: Chance::new(b.seed),
            trace: Vec::new(),
            logs: b.capture_logs.then(|| {
                let logs = Logs::default();
                let dispatch = tracing::Dispatch::new(logs.clone());
                (logs, dispatch)
            }),
        };
        // The run a driver starts: bind (nothing to bind here), init, serve.
        sim.logged(|sim| {
            if sim.machine.begin_run().is_ok() {
                sim.machine.activated();
                if sim.machine.init(&*sim.service).is_ok() {
                    sim.machine.serving();
                    sim.accepting = true;
                }
            }
            sim.process_events();
        });
        sim
    }

    /// Runs `f` with the log capture as the default subscriber, if there is one.
    fn logged<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        match self.logs.as_ref().map(|(_, d)| d.clone()) {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, || f(self)),
            None => f(self),
        }
    }

    /// The `tracing` events emitted so far, if the builder asked to
    /// [capture them](StreamSimBuilder::capture_logs); empty otherwise.
    pub fn logs(&self) -> Vec<LogEvent> {
        self.logs
            .as_ref()
            .map(|(logs, _)| logs.events())
            .unwrap_or_default()
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Everything the simulator did so far, in order.
    pub fn trace(&self) -> &[Traced] {
        &self.trace
    }

    /// The faults injected from now on.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The service (to look at state it keeps).
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The server's counters, as a driver's `stats()` reports them.
    pub fn stats(&self) -> crate::stats::ServerStats {
        self.machine.stats()
    }

    /// True while the server serves: `on_start` succeeded and no shutdown or close
    /// has begun.
    pub fn is_serving(&self) -> bool {
        self.accepting && self.machine.is_serving()
    }

    /// True once the run is over (after a shutdown, a close, or a failed `on_start`).
    pub fn is_stopped(&self) -> bool {
        !self.machine.is_running()
    }

    /// Connections the server has open.
    pub fn connections(&self) -> usize {
        self.machine.connections()
    }

    /// Connects a new client. If the server is not accepting, the client is
    /// [`Refused`](ClientState::Refused).
    pub fn connect(&mut self) -> ClientId {
        let client = self.connect_as(false);
        self.run_until_idle();
        client
    }

    /// Connects a new client like [`connect`](Self::connect), without running: the server
    /// has accepted the connection (and made its handler) but nothing has moved on the wire
    /// yet, so what the test does next comes first. A request sent now is sent the way a
    /// client that does not wait for the TLS handshake sends it.
    ///
    /// ```
    /// # use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
    /// # use easynet_core::protocol::Stream;
    /// # use easynet_core::sim::StreamSim;
    /// # struct Echo;
    /// # impl StreamHandler for Echo {
    /// #     type Request = String;
    /// #     type Response = String;
    /// #     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
    /// #         if let Received::Request(line) = r { cx.send(&line)?; }
    /// #         Ok(Next::recv())
    /// #     }
    /// # }
    /// let mut sim = StreamSim::new(Stream::lines(), |_: &ConnInfo| Echo);
    /// let client = sim.connect_without_running();
    /// assert!(sim.trace().iter().all(|t| !matches!(t.event, easynet_core::sim::Event::Read { .. })));
    /// sim.send(client, &"early".to_owned()); // now everything runs
    /// assert_eq!(sim.replies(client), ["early"]);
    /// ```
    pub fn connect_without_running(&mut self) -> ClientId {
        self.connect_as(false)
    }

    /// Connects a client that speaks no protocol and no TLS: it sends only what
    /// [`send_bytes`](Self::send_bytes) gives it and keeps every byte it reads, undecoded
    /// ([`received_bytes`](Self::received_bytes)). For a peer that never says hello, a port
    /// scanner, or a client whose bytes the test writes by hand (a TLS client under test,
    /// say). It has no decoded replies, and [`send`](Self::send) panics for it.
    ///
    /// ```
    /// # use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
    /// # use easynet_core::protocol::Stream;
    /// # use easynet_core::sim::StreamSim;
    /// # struct Echo;
    /// # impl StreamHandler for Echo {
    /// #     type Request = String;
    /// #     type Response = String;
    /// #     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
    /// #         if let Received::Request(line) = r { cx.send(&line)?; }
    /// #         Ok(Next::recv())
    /// #     }
    /// # }
    /// let mut sim = StreamSim::new(Stream::lines(), |_: &ConnInfo| Echo);
    /// let raw = sim.connect_raw();
    /// sim.send_bytes(raw, b"ping\n");
    /// assert_eq!(sim.received_bytes(raw), b"ping\n");
    /// ```
    pub fn connect_raw(&mut self) -> ClientId {
        let client = self.connect_as(true);
        self.run_until_idle();
        client
    }

    fn connect_as(&mut self, raw: bool) -> ClientId {
        let client = self.next_client;
        self.next_client += 1;
        if !self.accepting {
            self.refused.push(client);
            self.record(Event::Refused { client });
            return ClientId(client);
        }
        let conn = self.machine.accepted();
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000u16.wrapping_add(client as u16)));
        let info = ConnInfo::new(conn, peer, local());
        let client_info = ConnInfo::new(ConnId(client), local(), peer);
        let (server, client_conn) = self.connections_for(info, client_info, raw);
        let (make, now, service) = (self.make, self.now, self.service.clone());
        let server = self.logged(|_| server.and_then(|c| make(now, &service, c)));
        self.record(Event::Connected {
            client,
            conn: conn.0,
        });
        self.pairs.insert(
            client,
            Pair {
                conn,
                server,
                server_end: End::new(Side::Server),
                client: client_conn,
                client_end: End::new(Side::Client),
                to_server: Pipe::default(),
                to_client: Pipe::default(),
                replies: VecDeque::new(),
                bytes: Vec::new(),
                closed_by_client: false,
                counted: false,
            },
        );
        ClientId(client)
    }

    fn connections_for(
        &self,
        info: ConnInfo,
        client_info: ConnInfo,
        raw: bool,
    ) -> (Option<Connection<P, ServerRole>>, Client<P>) {
        let client = |conn| {
            if raw {
                Client::Raw(Raw {
                    info: client_info.clone(),
                    close: None,
                })
            } else {
                Client::Speaking(Box::new(conn))
            }
        };
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            use crate::tls::TlsSession;
            let server = TlsSession::server(tls.server.clone()).ok().map(|s| {
                Connection::with_tls(
                    self.now,
                    self.protocol.clone(),
                    self.config.clone(),
                    info,
                    s,
                )
            });
            let tls_client = TlsSession::client(tls.client.clone(), tls.name.clone())
                .expect("the simulated client's TLS configuration is valid");
            let conn = Connection::with_tls(
                self.now,
                self.protocol.clone(),
                self.client_config.clone(),
                client_info.clone(),
                tls_client,
            );
            return (server, client(conn));
        }
        (
            Some(Connection::new(
                self.protocol.clone(),
                self.config.clone(),
                info,
            )),
            client(Connection::new(
                self.protocol.clone(),
                self.client_config.clone(),
                client_info.clone(),
            )),
        )
    }

    fn pair(&mut self, client: ClientId) -> &mut Pair<P> {
        self.pairs
            .get_mut(&client.0)
            .unwrap_or_else(|| panic!("{client} is not connected (refused?)"))
    }

    /// The client sends `request`, encoded by the protocol, then the simulation runs until
    /// idle. A request the protocol cannot encode panics (it is the test's mistake).
    pub fn send(&mut self, client: ClientId, request: &P::Request) {
        let pair = self.pair(client);
        assert!(!pair.to_server.fin, "{client} has shut down its write side");
        let Client::Speaking(conn) = &mut pair.client else {
            panic!("{client} is raw: it sends bytes (send_bytes)");
        };
        if let Err(e) = conn.send(request) {
            panic!("{client} cannot send: {e}");
        }
        self.run_until_idle();
    }

    /// The client sends these raw bytes (any framing, broken or not), then the simulation
    /// runs until idle. Bytes go after what the client sent before.
    pub fn send_bytes(&mut self, client: ClientId, bytes: &[u8]) {
        self.run_until_idle(); // what `send` queued goes first
        let pair = self.pair(client);
        assert!(!pair.to_server.fin, "{client} has shut down its write side");
        pair.to_server.buf.extend_from_slice(bytes);
        self.run_until_idle();
    }

    /// The client shuts down its write side (FIN) and keeps reading: the server sees the
    /// end of its requests.
    pub fn shutdown_write(&mut self, client: ClientId) {
        self.run_until_idle();
        let pair = self.pair(client);
        pair.to_server.fin = true;
        self.record(Event::Fin {
            client: client.0,
            from: Side::Client,
        });
        self.run_until_idle();
    }

    /// The client closes gracefully (what it queued goes first).
    pub fn close(&mut self, client: ClientId) {
        let now = self.now;
        let pair = self.pair(client);
        pair.closed_by_client = true;
        match &mut pair.client {
            Client::Speaking(conn) => conn.close(now),
            Client::Raw(raw) => raw.close = raw.close.or(Some(CloseHow::Graceful)),
        }
        self.run_until_idle();
    }

    /// The client resets the connection (what it did not send yet is lost).
    pub fn reset(&mut self, client: ClientId) {
        let now = self.now;
        let pair = self.pair(client);
        pair.closed_by_client = true;
        match &mut pair.client {
            Client::Speaking(conn) => conn.close_abortively(now),
            Client::Raw(raw) => raw.close = raw.close.or(Some(CloseHow::Abort)),
        }
        self.run_until_idle();
    }

    /// The client stops (`false`) or resumes (`true`) reading: the server's answers pile
    /// up in the socket buffer, then in its write queue (backpressure).
    pub fn set_reading(&mut self, client: ClientId, reading: bool) {
        self.pair(client).client_end.reading = reading;
        self.run_until_idle();
    }

    /// The replies the client received since the last call, decoded.
    ///
    /// # Panics
    /// If a reply could not be decoded; [`received`](Self::received) returns those too.
    pub fn replies(&mut self, client: ClientId) -> Vec<P::Response> {
        self.received(client)
            .into_iter()
            .map(|r| match r {
                Received::Request(reply) => reply,
                Received::ParseError(e) => panic!("{client} got a reply it cannot decode: {e}"),
                Received::Timeout => unreachable!("the simulated client sets no timeout"),
            })
            .collect()
    }

    /// Everything the client received since the last call: replies and parse errors.
    pub fn received(&mut self, client: ClientId) -> Vec<Received<P::Response>> {
        self.run_until_idle();
        self.pair(client).replies.drain(..).collect()
    }

    /// Every byte the client read from the wire so far (ciphertext under TLS).
    pub fn received_bytes(&mut self, client: ClientId) -> &[u8] {
        self.run_until_idle();
        &self.pair(client).bytes
    }

    /// How the client's connection stands.
    pub fn state(&self, client: ClientId) -> ClientState {
        let Some(pair) = self.pairs.get(&client.0) else {
            return ClientState::Refused;
        };
        let input_finished = match &pair.client {
            Client::Speaking(conn) => conn.is_input_finished(),
            Client::Raw(_) => false,
        };
        if pair.closed_by_client {
            ClientState::Closed
        } else if pair.client_end.closed.is_some() {
            // Closed on its own, before any reset: its connection failed.
            ClientState::Failed
        } else if pair.client_end.reset_seen {
            ClientState::Reset
        } else if pair.client_end.eof_seen || input_finished {
            ClientState::EndOfStream
        } else {
            ClientState::Open
        }
    }

    /// How the server closed `client`'s connection: `None` while its side is open (a
    /// lingering close included: its socket is still open), then
    /// [`Graceful`](CloseHow::Graceful) or [`Abort`](CloseHow::Abort). A connection whose
    /// socket failed (a reset from the client) or whose handler could not be made ends
    /// abortively, as a driver closes it. `None` for a refused client.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
    /// # use easynet_core::protocol::Stream;
    /// # use easynet_core::sim::{ClientState, StreamSim};
    /// use easynet_core::stream::CloseHow;
    /// /// Answers once, then closes.
    /// struct Once;
    /// impl StreamHandler for Once {
    ///     type Request = String;
    ///     type Response = String;
    ///     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
    ///         if let Received::Request(line) = r { cx.send(&line)?; }
    ///         Ok(Next::Close)
    ///     }
    /// }
    /// let mut sim = StreamSim::new(Stream::lines(), |_: &ConnInfo| Once);
    /// let client = sim.connect();
    /// sim.send(client, &"bye".to_owned());
    /// assert_eq!(sim.replies(client), ["bye"]);
    /// assert_eq!(sim.state(client), ClientState::EndOfStream);
    /// // The server lingers until the client has everything, then releases its socket.
    /// assert_eq!(sim.server_closed(client), None);
    /// sim.advance(Duration::from_secs(1));
    /// assert_eq!(sim.server_closed(client), Some(CloseHow::Graceful));
    /// ```
    pub fn server_closed(&self, client: ClientId) -> Option<CloseHow> {
        let pair = self.pairs.get(&client.0)?;
        let end = &pair.server_end;
        end.closed.or(end.reset_seen.then_some(CloseHow::Abort))
    }

    /// Bytes on their way to `to` on `client`'s connection: written by the other side and
    /// not read yet, what the socket buffers hold. A server that stopped reading (its write
    /// queue is over the high-water mark, a shutdown began) leaves the client's requests
    /// here; a client that stopped reading ([`set_reading`](Self::set_reading)) leaves the
    /// server's answers. 0 for a refused client.
    pub fn in_flight(&self, client: ClientId, to: Side) -> usize {
        self.pairs.get(&client.0).map_or(0, |pair| match to {
            Side::Server => pair.to_server.buf.len(),
            Side::Client => pair.to_client.buf.len(),
        })
    }
}
