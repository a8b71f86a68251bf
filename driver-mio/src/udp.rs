//! [`UdpServer`]: EasyNetwork's StandaloneUDPNetworkServer on a mio event loop.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use easynet_common::{
    self as bind, DATAGRAM_BATCH, DatagramBuffers, EventSet, ReadAhead, UdpSettings,
};
use easynet_core::addr::PeerAddr;
use easynet_core::datagram::{DatagramConfig, DatagramServer, Output, Transmit, send_in_order};
use easynet_core::handler::{DatagramHandler, Service};
use easynet_core::protocol::DatagramServerProtocol;
use easynet_core::stats::SocketDrops;
use mio::event::Source;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::control::{Control, server_methods};
use crate::tcp::teardown;
use crate::{ConfigError, DropCounter, ServerError};

const WAKER: Token = Token(usize::MAX);
/// Datagrams read per socket per wake-up before the others get a turn.
const READ_BUDGET: usize = 64;

/// Builds a [`UdpServer`].
#[derive(Debug)]
pub struct UdpServerBuilder<S, P> {
    service: S,
    protocol: P,
    cfg: UdpSettings,
}

impl<S, P> UdpServerBuilder<S, P>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    easynet_common::listen_setters!(cfg);

    /// Per-peer queue bound and idle eviction.
    pub fn datagram_config(mut self, config: DatagramConfig) -> Self {
        self.cfg.datagram = config;
        self
    }

    /// Checks the settings and makes the server (nothing is bound until `serve`).
    pub fn build(mut self) -> Result<UdpServer<S, P>, ConfigError> {
        self.cfg.validate()?;
        let control = Control::new(self.cfg.shutdown_timeout);
        self.cfg.datagram.recorder = Some(control.recorder());
        Ok(UdpServer {
            service: Arc::new(self.service),
            protocol: Arc::new(self.protocol),
            control,
            drops: DropCounter::default(),
            cfg: self.cfg,
        })
    }
}

/// A blocking UDP server running portable [`DatagramHandler`]s on a mio event loop: per-peer
/// routines, bounded per-peer queues and idle eviction come from the core's
/// [`DatagramServer`].
///
/// ```no_run
/// use easynet_core::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
/// use easynet_core::protocol::Datagram;
/// use easynet_mio::UdpServer;
///
/// struct Echo;
/// impl DatagramHandler for Echo {
///     type Request = String;
///     type Response = String;
///     fn handle(&mut self, cx: &mut DatagramContext<'_, String>, r: Received<String>) -> HandlerResult {
///         if let Received::Request(text) = r { cx.send(&text)?; }
///         Ok(Next::Close)
///     }
/// }
///
/// let server = UdpServer::builder(Datagram::lines(), |_: &ConnInfo| Echo)
///     .host("127.0.0.1")
///     .port(9000)
///     .build()
///     .unwrap();
/// server.serve().unwrap();
/// ```
pub struct UdpServer<S, P> {
    service: Arc<S>,
    protocol: Arc<P>,
    cfg: UdpSettings,
    control: Arc<Control>,
    drops: DropCounter,
}

struct Endpoint<S: Service, P: DatagramServerProtocol, D: MioDgram> {
    socket: D,
    server: DatagramServer<S, P, D::Addr>,
    pending: VecDeque<Transmit<D::Addr>>,
    /// Datagrams taken from `server` to be sent together; empty between flushes.
    batch: Vec<Transmit<D::Addr>>,
    /// The kernel's drop count of `socket` (counted into `server`'s recorder).
    socket_drops: SocketDrops,
    /// Drops of `server` already added to the server's counter.
    counted: u64,
    /// Datagrams the next read asks for (batched reads).
    read_ahead: ReadAhead,
    readable: bool,
    writable: bool,
    /// Registered for writable events too: only while datagrams wait for room (mio#1718;
    /// otherwise every datagram sent would wake the loop once more).
    write_interest: bool,
    /// Datagrams dropped because their sender cannot be answered.
    unnamed: u64,
}

impl<S, P> UdpServer<S, P>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    /// Starts building a server for `protocol`, making one handler per peer with `factory`,
    /// a closure given the peer's [`ConnInfo`](easynet_core::handler::ConnInfo):
    /// `|_| MyHandler` needs no type annotation. A [`Service`] with `on_start` /
    /// `on_stop` hooks goes to [`builder_with_service`](Self::builder_with_service).
    pub fn builder<H>(protocol: P, factory: S) -> UdpServerBuilder<S, P>
    where
        S: Fn(&easynet_core::handler::ConnInfo) -> H + Send + Sync + 'static,
    {
        Self::builder_with_service(protocol, factory)
    }

    /// Starts building a server for `protocol` whose handlers `service` makes
    /// (EasyNetwork's request handler with `service_init` / `service_actions`).
    pub fn builder_with_service(protocol: P, service: S) -> UdpServerBuilder<S, P> {
        UdpServerBuilder {
            service,
            protocol,
            cfg: UdpSettings::default(),
        }
    }

    /// The bound addresses while serving; empty otherwise.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.control.addresses()
    }

    fn run(&self, is_up: impl EventSet) -> Result<(), ServerError> {
        let listen = &self.cfg.listen;
        let sockets = match listen.inherited() {
            Some(inherited) => inherited.map_err(ServerError::Listener)?,
            None => {
                let addrs =
                    bind::resolve(&listen.host, listen.port).map_err(ServerError::Resolve)?;
                bind::udp_sockets(&addrs, listen.reuse_port).map_err(ServerError::Bind)?
            }
        };
        let dups = sockets
            .iter()
            .filter_map(|s| s.try_clone().ok())
            .map(socket2::Socket::from)
            .collect();
        let sockets = sockets
            .into_iter()
            .map(|s| {
                // Best effort: without it, socket_dropped_datagrams stays 0.
                if let Err(e) = bind::enable_socket_drops(&s) {
                    tracing::debug!(error = %e, "SO_RXQ_OVFL not enabled");
                }
                Ok((s.local_addr()?, UdpSocket::from_std(s)))
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(ServerError::Listener)?;
        let server = Parts {
            service: &self.service,
            protocol: &self.protocol,
            config: &self.cfg.datagram,
            control: &self.control,
            drops: &self.drops,
        };
        run_endpoints(server, sockets, dups, is_up)
    }
}

/// A bound datagram socket a loop receives on and answers from: UDP or Unix.
pub(crate) trait MioDgram: Source + Send + 'static {
    /// What peers are keyed by.
    type Addr: PeerAddr;

    /// One datagram, read with `buffers` into a buffer of its own; the sender is `None`
    /// when it cannot be answered (an unnamed Unix socket), and the loop drops it. Last,
    /// the socket's drop count if the kernel reports it (UDP on Linux: SO_RXQ_OVFL, asked
    /// with every read, see [`SocketDrops`](easynet_core::stats::SocketDrops); Unix datagram
    /// sockets have none).
    fn recv_dgram(
        &self,
        buffers: &mut DatagramBuffers,
    ) -> io::Result<(BytesMut, Option<Self::Addr>, Option<u32>)>;
    fn send_dgram(&self, buf: &[u8], to: &Self::Addr) -> io::Result<usize>;
    /// Datagrams read by one system call, each given to `each` as
    /// [`recv_dgram`](Self::recv_dgram) returns it; how many, and the drop count as
    /// `recv_dgram` reports it. By default one, with `recv_dgram`; UDP on Linux reads up to
    /// `max` (1 to [`DATAGRAM_BATCH`](easynet_common::DATAGRAM_BATCH)) with `recvmmsg`.
    fn recv_dgrams(
        &self,
        buffers: &mut DatagramBuffers,
        _max: usize,
        mut each: impl FnMut(BytesMut, Option<Self::Addr>),
    ) -> io::Result<(usize, Option<u32>)> {
        let (data, from, count) = self.recv_dgram(buffers)?;
        each(data, from);
        Ok((1, count))
    }
    /// Sends datagrams from the front of `ts` (not empty) by one system call, in order;
    /// how many went (fewer when the socket filled up or the next one failed), or the
    /// first one's error. By default the first alone; UDP on Linux sends up to
    /// [`DATAGRAM_BATCH`](easynet_common::DATAGRAM_BATCH) with `sendmmsg`.
    fn send_dgrams(&self, ts: &[Transmit<Self::Addr>]) -> io::Result<usize> {
        self.send_dgram(&ts[0].data, &ts[0].to).map(|_| 1)
    }
    /// The kernel's drop count now, where [`recv_dgram`](Self::recv_dgram) reports one.
    fn drop_count(&self) -> Option<u32> {
        None
    }
}

impl MioDgram for UdpSocket {
    type Addr = SocketAddr;

    fn recv_dgram(
        &self,
        buffers: &mut DatagramBuffers,
    ) -> io::Result<(BytesMut, Option<SocketAddr>, Option<u32>)> {
        // try_io: mio's own bookkeeping of a WouldBlock (needed on some platforms).
        self.try_io(|| buffers.recv_from_counting(self, true))
            .map(|(data, from, drops)| (data, Some(from), drops))
    }
    fn send_dgram(&self, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
        self.send_to(buf, *to)
    }
    #[cfg(target_os = "linux")]
    fn recv_dgrams(
        &self,
        buffers: &mut DatagramBuffers,
        max: usize,
        mut each: impl FnMut(BytesMut, Option<SocketAddr>),
    ) -> io::Result<(usize, Option<u32>)> {
        self.try_io(|| {
            buffers.recv_batch_from(self, true, max, |data, from| each(data, Some(from)))
        })
    }
    #[cfg(target_os = "linux")]
    fn send_dgrams(&self, ts: &[Transmit]) -> io::Result<usize> {
        self.try_io(|| bind::send_batch_to(self, ts))
    }
    fn drop_count(&self) -> Option<u32> {
        bind::socket_drop_count(self)
    }
}

/// What a datagram run borrows from its server (UDP or Unix).
pub(crate) struct Parts<'a, S, P> {
    pub(crate) service: &'a Arc<S>,
    pub(crate) protocol: &'a Arc<P>,
    pub(crate) config: &'a DatagramConfig,
    pub(crate) control: &'a Control,
    /// Where every dropped datagram is counted.
    pub(crate) drops: &'a DropCounter,
}

/// Runs bound datagram sockets (with their addresses) to the end of a run: `on_start`,
/// `is_up`, the loop, shutdown, `on_stop`.
pub(crate) fn run_endpoints<S, P, D>(
    server: Parts<'_, S, P>,
    sockets: Vec<(D::Addr, D)>,
    dups: Vec<socket2::Socket>,
    is_up: impl EventSet,
) -> Result<(), ServerError>
where
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: MioDgram,
{
    let Parts {
        service,
        protocol,
        config,
        control,
        drops,
    } = server;
    let poll = Poll::new().map_err(ServerError::Listener)?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(ServerError::Listener)?);
    let mut endpoints = Vec::with_capacity(sockets.len());
    let mut bound = Vec::with_capacity(sockets.len());
    for (i, (local, mut socket)) in sockets.into_iter().enumerate() {
        poll.registry()
            .register(&mut socket, Token(i), Interest::READABLE)
            .map_err(ServerError::Listener)?;
        bound.push(local.to_addr());
        let server = DatagramServer::new(service.clone(), protocol.clone(), local, config.clone())
            .map_err(|e| ServerError::Listener(io::Error::other(e)))?;
        // Drops from before this run (a given socket, an earlier run) are not ours.
        let socket_drops =
            SocketDrops::starting_at(server.recorder().clone(), socket.drop_count().unwrap_or(0));
        endpoints.push(Endpoint {
            socket,
            socket_drops,
            server,
            pending: VecDeque::new(),
            batch: Vec::with_capacity(DATAGRAM_BATCH),
            counted: 0,
            read_ahead: ReadAhead::new(),
            readable: true,
            writable: true,
            write_interest: false,
            unnamed: 0,
        });
    }
    control.init(&**service)?;
    let wake = std::task::Waker::from(Arc::new(PollWake(waker.clone())));
    control.serving(bound.clone(), dups, vec![waker]);
    if control.orders().shutdown.is_none() {
        let list: Vec<String> = bound.iter().map(ToString::to_string).collect();
        tracing::info!("Start serving at {}", list.join(", "));
        is_up.set();
    }
    control.enter_loop();
    let result = serve(poll, &mut endpoints, control, drops, &wake);
    control.leave_loop();
    for e in &mut endpoints {
        e.server.shutdown(Instant::now());
        count_drops(e, drops);
        flush(e, None);
    }
    teardown(service.clone(), control.shutdown_timeout());
    tracing::info!("Server stopped");
    result.map_err(ServerError::Listener)
}

/// Wakes the loop's poll: a pusher queued a datagram.
struct PollWake(Arc<mio::Waker>);

impl std::task::Wake for PollWake {
    fn wake(self: Arc<Self>) {
        let _ = self.0.wake();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.0.wake();
    }
}

fn serve<S, P, D>(
    mut poll: Poll,
    endpoints: &mut [Endpoint<S, P, D>],
    control: &Control,
    drops: &DropCounter,
    wake: &std::task::Waker,
) -> io::Result<()>
where
    D: MioDgram,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    let mut events = Events::with_capacity(256);
    let mut buffers = DatagramBuffers::new();
    // Orders and pushed datagrams come with a wake-up (WAKER): the locks of the run state
    // and of the push queues are taken after one, not on every turn.
    let mut woken = true;
    loop {
        if woken {
            let orders = control.orders();
            if orders.shutdown.is_some() || orders.closed {
                return Ok(());
            }
        }
        let now = Instant::now();
        let mut busy = false;
        for (i, e) in endpoints.iter_mut().enumerate() {
            // Output made outside the reads: pushed datagrams (after a wake-up), timeouts,
            // datagrams that waited for room (a writable event).
            let mut output = e.writable && !e.pending.is_empty();
            if woken {
                // Registers the waker (first turn) and takes a push's signal.
                let _ = e
                    .server
                    .poll_wake(&mut std::task::Context::from_waker(wake));
                output = true;
            }
            if e.server.poll_timeout().is_some_and(|t| t <= now) {
                e.server.handle_timeout(now);
                output = true;
            }
            if output {
                flush(e, Some((poll.registry(), i)));
            }
            read(e, &mut buffers, now, Some((poll.registry(), i)), drops);
            busy |= e.readable;
            count_drops(e, drops);
        }
        woken = false;
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            endpoints
                .iter()
                .filter_map(|e| e.server.poll_timeout())
                .min()
                // From the turn's clock read: late by the turn's handling at most, which
                // the poll's millisecond rounding covers.
                .map(|t| t.saturating_duration_since(now))
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            woken |= event.token() == WAKER;
            if let Some(e) = endpoints.get_mut(event.token().0) {
                e.readable |= event.is_readable();
                e.writable |= event.is_writable();
            }
        }
    }
}

/// Reads the endpoint's socket until it would block or [`READ_BUDGET`] datagrams are read,
/// as many per read as its [`ReadAhead`] asks, and sends each read's answers before the
/// next read: the peers can go on at once, and the buffer the datagrams were read into is
/// free again. With the endpoint's registry and token, [`flush`] asks for writable events
/// while answers wait.
fn read<S, P, D>(
    e: &mut Endpoint<S, P, D>,
    buffers: &mut DatagramBuffers,
    now: Instant,
    registry: Option<(&mio::Registry, usize)>,
    drops: &DropCounter,
) where
    D: MioDgram,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    let mut reads = 0;
    while e.readable && reads < READ_BUDGET {
        let (server, unnamed) = (&mut e.server, &mut e.unnamed);
        let ask = e.read_ahead.next();
        let received = e.socket.recv_dgrams(buffers, ask, |data, from| match from {
            Some(from) => server.handle_datagram(now, from, data),
            None => {
                server.recorder().add_dropped(1);
                unanswerable(unnamed, drops);
            }
        });
        match received {
            Ok((n, count)) => {
                reads += n;
                e.read_ahead.got(n);
                if let Some(count) = count {
                    e.socket_drops.report(count);
                }
                flush(e, registry);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                e.readable = false;
                e.read_ahead.drained();
            }
            // ICMP errors from an earlier send concern one peer only.
            Err(err) => {
                reads += 1;
                tracing::debug!(error = %err, "datagram receive error");
            }
        }
    }
}

/// Adds the endpoint's new queue drops to the server's counter.
fn count_drops<S, P, D>(e: &mut Endpoint<S, P, D>, drops: &DropCounter)
where
    D: MioDgram,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    let dropped = e.server.drops();
    drops.add(dropped - e.counted);
    e.counted = dropped;
}

/// Moves the endpoint's responses to its socket until it would block; with the endpoint's
/// registry and token, asks for writable events only while datagrams wait.
fn flush<S, P, D>(e: &mut Endpoint<S, P, D>, registry: Option<(&mio::Registry, usize)>)
where
    D: MioDgram,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    // Those waiting for room first, in order.
    while e.writable && !e.pending.is_empty() {
        let gone = send(&e.socket, e.pending.as_slices().0, &mut e.writable);
        e.pending.drain(..gone);
    }
    // Then the core's, a batch at a time, straight from it while nothing waits.
    loop {
        while e.batch.len() < DATAGRAM_BATCH {
            let Output::Transmit(t) = e.server.poll_output() else {
                break;
            };
            e.batch.push(t);
        }
        let last = e.batch.len() < DATAGRAM_BATCH;
        let gone = if e.writable && e.pending.is_empty() && !e.batch.is_empty() {
            send(&e.socket, &e.batch, &mut e.writable)
        } else {
            0
        };
        e.pending.extend(e.batch.drain(gone..));
        // Sent ones let go of the buffer their request was read into.
        e.batch.clear();
        if last {
            break;
        }
    }
    let waiting = !e.pending.is_empty();
    if let Some((registry, token)) = registry
        && waiting != e.write_interest
    {
        let interest = if waiting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match registry.reregister(&mut e.socket, Token(token), interest) {
            Ok(()) => e.write_interest = waiting,
            Err(err) => tracing::warn!(error = %err, "cannot change the socket's interest"),
        }
    }
}

/// Sends `ts` from `socket` in order ([`send_in_order`]); clears `writable` when the
/// socket is full. Returns how many are gone.
fn send<D: MioDgram>(socket: &D, ts: &[Transmit<D::Addr>], writable: &mut bool) -> usize {
    let gone = send_in_order(ts, |ts| socket.send_dgrams(ts));
    if gone < ts.len() {
        *writable = false;
    }
    gone
}

/// Logs a datagram from a sender that cannot be answered (an unnamed Unix socket); it is
/// dropped and the loop goes on. Rate-limited: the 1st, 2nd, 4th, 8th... of a socket.
fn unanswerable(count: &mut u64, drops: &DropCounter) {
    drops.add(1);
    *count += 1;
    if count.is_power_of_two() {
        tracing::warn!(
            dropped = *count,
            "datagram from an unnamed Unix socket dropped: it cannot be answered (bind the client socket)"
        );
    }
}

server_methods!(UdpServer, DatagramHandler, DatagramServerProtocol);

/// `dropped_datagrams()` on a datagram server with a `drops` field: UDP or Unix.
macro_rules! dropped_datagrams {
    ($name:ident) => {
        impl<S, P> $name<S, P> {
            /// Datagrams dropped so far: a peer's queue was full, datagrams were still queued
            /// at shutdown, or (Unix) the sender was an unnamed socket that cannot be
            /// answered. A handle that stays current, so take it before moving the server to
            /// a [`ServerThread`](crate::ServerThread).
            pub fn dropped_datagrams(&self) -> $crate::DropCounter {
                self.drops.clone()
            }
        }
    };
}
pub(crate) use dropped_datagrams;
dropped_datagrams!(UdpServer);

#[cfg(test)]
mod tests;
