//! A third driver, written as an embedder would: one thread, one readiness loop on the
//! `polling` crate, the echo handlers served over TCP or UDP through the core's public API
//! only. ARCHITECTURE.md, "Writing a driver", walks through it.
//!
//! ```text
//! cargo run --example poll_loop --features tls -- [--transport tcp|udp]
//!     [--framing json|line|raw] [--host H] [--port P]
//! ```
//!
//! Prints `listening on ADDR` when ready; SIGINT or SIGTERM shut it down gracefully
//! (requests already read are answered) and it exits with status 0. `serve_tcp` also takes
//! TLS and async handlers (the tests run both). Unix only: signals arrive through a pipe.

#[path = "common/logging.rs"]
mod logging;

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind::Interrupted, ErrorKind::WouldBlock, Read};
use std::marker::PhantomData;
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use easynet::accept::{AcceptAction, AcceptGate};
use easynet::datagram::{DatagramConfig, DatagramServer, Output, Transmit};
use easynet::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next};
use easynet::handler::{Received, Service, StreamContext, StreamHandler};
use easynet::protocol::{Datagram, DatagramServerProtocol, Stream, StreamServerProtocol};
use easynet::server::{Event, Server, run_teardown};
use easynet::stream::{Action, CloseHow, Connection, Driven, ServerRole, Session, StreamConfig};
use easynet::tls::TlsSession;
use easynet_common::{set_abortive, unsent_bytes};
use polling::{Events, Poller};

/// Poller keys: connections count up from 0; `usize::MAX` is the poller's own.
const STOP: usize = usize::MAX - 1;
const LISTENER: usize = usize::MAX - 2;
/// Socket reads per connection (datagrams: per 4) per turn, before the others get theirs.
const READS_PER_TURN: usize = 16;

/// What the serving loops need besides the handlers.
#[derive(Clone, Default)]
pub struct Config {
    pub stream: StreamConfig,
    /// How long connections get to finish once a shutdown begins (`Server::new`).
    pub shutdown_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// At most this many connections open at once (`Server::with_max_connections`).
    pub max_connections: Option<usize>,
}

/// How a connection's session is made: `Session::start` (portable handlers) or
/// `AsyncSession::start` (async handlers). The loop only sees [`Driven`].
pub type Start<S, P, D> = fn(Instant, &S, Connection<P, ServerRole>) -> Option<D>;

/// Starts a run of the server machine over sockets already bound: `on_start` included.
fn begin(service: &impl Service, cfg: &Config) -> io::Result<Server> {
    let mut server = Server::new(cfg.shutdown_timeout).with_max_connections(cfg.max_connections);
    server.begin_run().map_err(io::Error::other)?; // it asks us to bind: done already
    server.activated();
    server.init(service).map_err(io::Error::other)?;
    server.serving();
    Ok(server)
}

/// Wakes the loop for connection `.0`: an async handler's own timer or channel fired.
struct Wakeup(usize, Arc<Mutex<Vec<usize>>>, Arc<Poller>);

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.1.lock().unwrap().push(self.0);
        let _ = self.2.notify();
    }
}

struct Conn<D> {
    stream: TcpStream,
    session: D,
    timer: Option<Instant>,
    /// Call `resume` at its next turn (its handler budget ran out, or it was woken).
    resume: bool,
    waker: Waker,
}

/// One turn of a connection: does what the core's `Action` says until it must wait, then
/// arms the readiness it wants (or puts it on `ready`). False: close it and forget it.
fn pump<D: Driven>(
    c: &mut Conn<D>,
    key: usize,
    now: Instant,
    buf: &mut [u8],
    p: &Poller,
    ready: &mut Vec<usize>,
) -> bool {
    if std::mem::take(&mut c.resume) {
        c.session.resume(now);
    }
    let (mut can_read, mut can_write, mut reads) = (true, true, 0);
    loop {
        match c.session.poll_action(now) {
            Action::Io(w) if w.write && can_write => match c.session.write_to(&mut c.stream) {
                Err(e) if e.kind() == WouldBlock => can_write = false,
                Err(e) if e.kind() != Interrupted => c.session.handle_io_error(now),
                _ => {}
            },
            Action::Io(w) if w.read && can_read && reads < READS_PER_TURN => {
                reads += 1;
                match c.stream.read(&mut buf[..c.session.read_size()]) {
                    Ok(0) => c.session.handle_eof(now),
                    Ok(n) => c.session.handle_read(now, &buf[..n]),
                    Err(e) if e.kind() == WouldBlock => can_read = false,
                    Err(e) if e.kind() != Interrupted => c.session.handle_io_error(now),
                    Err(_) => {}
                }
            }
            Action::Io(w) => {
                // Wait for the readiness wanted, the timeout or an outside wake-up; or, when
                // its turn is used up (reads, handler calls) or it was woken, go again later.
                c.timer = w.timeout;
                let mut cx = Context::from_waker(&c.waker);
                c.resume =
                    w.resume || (c.session.wakeable() && c.session.poll_wake(&mut cx).is_ready());
                let again = c.resume || (w.read && can_read);
                if again {
                    ready.push(key);
                }
                let interest = polling::Event::new(key, w.read && !again, w.write && !again);
                return p.modify(&c.stream, interest).is_ok();
            }
            Action::ShutdownWrite => drop(c.stream.shutdown(Shutdown::Write)), // FIN; read on
            Action::QueryUnsent => c.session.handle_unsent(now, unsent_bytes(&c.stream)),
            Action::Close(CloseHow::Graceful) => return false,
            // `Close(Abort)`, or an action this loop does not know (`Action` is non-exhaustive).
            _ => {
                set_abortive(&c.stream); // SO_LINGER 0: the close is a reset
                return false;
            }
        }
    }
}

/// Serves TCP on `listener` until a byte arrives on `stop`, then shuts down gracefully.
pub fn serve_tcp<S: Service, P: StreamServerProtocol, D: Driven>(
    listener: TcpListener,
    service: S,
    protocol: P,
    cfg: &Config,
    stop: UnixStream,
    start: Start<S, P, D>,
) -> io::Result<()> {
    let mut server = begin(&service, cfg)?;
    let (p, protocol) = (Arc::new(Poller::new()?), Arc::new(protocol));
    // A close made room under `max_connections`: accept again without waiting for an event
    // (the waiting connections' readiness was not re-armed while full).
    let mut room = false;
    listener.set_nonblocking(true)?;
    stop.set_nonblocking(true)?;
    // SAFETY (here and below): every source is deleted from the poller before it is dropped.
    unsafe {
        p.add(&listener, polling::Event::readable(LISTENER))?;
        p.add(&stop, polling::Event::readable(STOP))?;
    }
    let (mut listener, mut gate) = (Some(listener), AcceptGate::new());
    let (mut conns, mut next_key) = (HashMap::<usize, Conn<D>>::new(), 0);
    let (woken, mut ready, mut events) = (Arc::<Mutex<Vec<_>>>::default(), vec![], Events::new());
    // One read buffer for every connection; `read_size()` grows up to `max_read_size()`.
    let mut buf = vec![0; cfg.stream.max_read_size()];
    loop {
        let mut now = Instant::now();
        while let Some(event) = server.poll_event() {
            match event {
                Event::StopAccepting => {
                    if let Some(l) = listener.take() {
                        p.delete(&l)?;
                    }
                }
                Event::Shutdown { deadline } => {
                    for (key, c) in &mut conns {
                        c.session.shutdown(now, deadline);
                        ready.push(*key);
                    }
                }
                Event::Teardown => {
                    run_teardown(&service); // on this thread: the loop waits for it
                    server.teardown_done();
                }
                Event::Stopped => return p.delete(&stop),
                _ => {}
            }
        }
        // Wait for readiness, the first timer or a wake-up; only look if turns are left.
        let timers = conns
            .values()
            .filter_map(|c| c.timer)
            .chain(gate.poll_timeout());
        let next = timers.chain(server.poll_timeout()).min();
        let next = if ready.is_empty() && !room {
            next
        } else {
            Some(now)
        };
        events.clear();
        p.wait(&mut events, next.map(|t| t.saturating_duration_since(now)))?;
        now = Instant::now();
        let mut accept = std::mem::take(&mut room) || gate.poll_timeout().is_some_and(|t| t <= now); // room, or a pause is over
        gate.handle_timeout(now);
        for ev in events.iter() {
            match ev.key {
                STOP => drop(server.shutdown(now)),
                LISTENER => accept = true,
                key => ready.push(key),
            }
        }
        ready.extend(woken.lock().unwrap().drain(..));
        for (key, c) in conns
            .iter_mut()
            .filter(|(_, c)| c.timer.is_some_and(|t| t <= now))
        {
            c.timer = None;
            c.session.handle_timeout(now);
            ready.push(*key);
        }
        // Full (`may_accept` false): the next connections wait in the kernel's backlog.
        let can = |gate: &AcceptGate, server: &Server| gate.can_accept(now) && server.may_accept();
        while let Some(l) = listener.as_ref().filter(|_| accept && can(&gate, &server)) {
            let (stream, peer) = match l.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == WouldBlock => {
                    p.modify(l, polling::Event::readable(LISTENER))?; // oneshot: re-arm
                    break;
                }
                // Skipped, paused until `gate.poll_timeout()`, or the listener failed (logged
                // by the gate): then the run ends, gracefully.
                Err(e) => match gate.on_error(now, &e) {
                    AcceptAction::Fail => {
                        let _ = server.shutdown(now);
                        break;
                    }
                    _ => continue,
                },
            };
            let id = server.accepted();
            let info = stream.local_addr().map(|to| ConnInfo::new(id, peer, to));
            // Connections count into the server machine (`server.stats()`).
            let config = cfg.stream.clone().with_recorder(server.recorder().clone());
            let proto = protocol.clone();
            let conn = info.ok().and_then(|info| match &cfg.tls {
                Some(tls) => TlsSession::server(tls.clone())
                    .ok()
                    .map(|tls| Connection::with_tls(now, proto, config, info, tls)),
                None => Some(Connection::new(proto, config, info)),
            });
            let session = conn.and_then(|conn| start(now, &service, conn)); // None: factory panicked
            let (Some(session), Ok(())) = (session, stream.set_nonblocking(true)) else {
                room |= server.closed(id);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let key = next_key;
            next_key += 1;
            let waker = Waker::from(Arc::new(Wakeup(key, woken.clone(), p.clone())));
            unsafe { p.add(&stream, polling::Event::none(key))? };
            let (timer, resume) = (None, false);
            conns.insert(
                key,
                Conn {
                    stream,
                    session,
                    timer,
                    resume,
                    waker,
                },
            );
            ready.push(key);
        }
        let mut turn = std::mem::take(&mut ready);
        turn.sort_unstable();
        turn.dedup(); // one turn per connection per round
        for key in turn {
            let Some(c) = conns.get_mut(&key) else {
                continue;
            };
            if !pump(c, key, now, &mut buf, &p, &mut ready) {
                let c = conns.remove(&key).expect("pumped");
                p.delete(&c.stream)?;
                room |= server.closed(c.session.info().id);
            }
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now); // after the connections: they reset themselves first
        }
    }
}

/// Serves UDP on `socket` until a byte arrives on `stop`; what the handlers sent before the
/// shutdown is still sent.
pub fn serve_udp<S: Service, P: DatagramServerProtocol>(
    socket: UdpSocket,
    service: S,
    protocol: P,
    cfg: &Config,
    stop: UnixStream,
) -> io::Result<()>
where
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    let mut server = begin(&service, cfg)?;
    let (service, local, config) = (
        Arc::new(service),
        socket.local_addr()?,
        DatagramConfig::default().with_recorder(server.recorder().clone()),
    );
    let mut dgram = DatagramServer::new(service.clone(), Arc::new(protocol), local, config)
        .map_err(io::Error::other)?;
    let p = Poller::new()?;
    socket.set_nonblocking(true)?;
    stop.set_nonblocking(true)?;
    // SAFETY: both are deleted from the poller before they are dropped.
    unsafe {
        p.add(&socket, polling::Event::readable(0))?;
        p.add(&stop, polling::Event::readable(STOP))?;
    }
    let (mut out, mut events, mut buf) =
        (VecDeque::<Transmit>::new(), Events::new(), vec![0; 65536]);
    let (mut readable, mut stopped) = (true, false);
    loop {
        let now = Instant::now();
        while let Some(event) = server.poll_event() {
            match event {
                Event::StopAccepting => dgram.shutdown(now), // no handler runs any more
                Event::Teardown => {
                    run_teardown(&*service);
                    server.teardown_done();
                }
                Event::Stopped => stopped = true, // after sending what is left
                _ => {}
            }
        }
        if dgram.poll_timeout().is_some_and(|t| t <= now) {
            dgram.handle_timeout(now);
        }
        let mut reads = 0;
        while readable && !dgram.is_closing() && reads < READS_PER_TURN * 4 {
            reads += 1;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => dgram.handle_datagram(now, from, buf[..n].into()),
                Err(e) if e.kind() == WouldBlock => readable = false,
                Err(_) => {} // an ICMP error about an earlier send: one peer's business
            }
        }
        while let Output::Transmit(t) = dgram.poll_output() {
            out.push_back(t);
        }
        while let Some(t) = out.front() {
            match socket.send_to(&t.data, t.to) {
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => tracing::warn!(peer = %t.to, error = %e, "datagram send failed"),
                Ok(_) => {}
            }
            out.pop_front();
        }
        if stopped {
            break;
        }
        p.modify(&socket, polling::Event::new(0, !readable, !out.is_empty()))?;
        let next = if readable {
            Some(now)
        } else {
            dgram.poll_timeout()
        };
        events.clear();
        p.wait(&mut events, next.map(|t| t.saturating_duration_since(now)))?;
        for ev in events.iter() {
            match ev.key {
                STOP => drop(server.shutdown(Instant::now())),
                _ => readable |= ev.readable,
            }
        }
    }
    p.delete(&socket)?;
    p.delete(&stop)
}

/// Sends every request back (a stream connection goes on; a datagram routine ends).
struct Echo<T>(PhantomData<fn() -> T>);

impl<T: Send + 'static> StreamHandler for Echo<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut StreamContext<'_, T>, received: Received<T>) -> HandlerResult {
        if let Received::Request(msg) = received {
            cx.send(&msg)?;
        }
        Ok(Next::recv())
    }
}

impl<T: Send + 'static> DatagramHandler for Echo<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut DatagramContext<'_, T>, received: Received<T>) -> HandlerResult {
        if let Received::Request(msg) = received {
            cx.send(&msg)?;
        }
        Ok(Next::Close)
    }
}

fn echo<T>(_: &ConnInfo) -> Echo<T> {
    Echo(PhantomData)
}

fn tcp<T: Send + 'static>(
    addr: (&str, u16),
    protocol: impl StreamServerProtocol<Request = T, Response = T>,
    cfg: Config,
    stop: UnixStream,
) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    serve_tcp(listener, echo::<T>, protocol, &cfg, stop, Session::start)
}

fn udp<T: Send + 'static>(
    addr: (&str, u16),
    protocol: impl DatagramServerProtocol<Request = T, Response = T>,
    cfg: Config,
    stop: UnixStream,
) -> io::Result<()> {
    let socket = UdpSocket::bind(addr)?;
    println!("listening on {}", socket.local_addr()?);
    serve_udp(socket, echo::<T>, protocol, &cfg, stop)
}

const USAGE: &str = "\
A third driver: the echo handlers on a single-threaded `polling` loop (Unix).

Usage: poll_loop [OPTIONS]

Options:
  --transport tcp|udp       [default: tcp]
  --framing json|line|raw   [default: json]
  --host HOST               [default: 127.0.0.1]
  --port PORT               [default: 9000]
  -h, --help                print this help

Prints `listening on ADDR`; SIGINT or SIGTERM shut it down gracefully.
Logs go to stderr; RUST_LOG sets the filter [default: info].
";

fn parse_args() -> anyhow::Result<(String, String, String, u16)> {
    use lexopt::prelude::*;
    let (mut transport, mut framing) = ("tcp".to_owned(), "json".to_owned());
    let (mut host, mut port) = ("127.0.0.1".to_owned(), 9000);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("transport") => transport = parser.value()?.string()?,
            Long("framing") => framing = parser.value()?.string()?,
            Long("host") => host = parser.value()?.string()?,
            Long("port") => port = parser.value()?.parse()?,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok((transport, framing, host, port))
}

fn main() -> anyhow::Result<()> {
    let _flush_logs_at_exit = logging::init();
    // lexopt's messages already include their cause: print them once.
    let (transport, framing, host, port) =
        parse_args().map_err(|e| anyhow::anyhow!("{e} (see --help)"))?;
    let cfg = Config {
        shutdown_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    // A signal writes a byte to `stop`'s peer. Registered before "listening on" is printed,
    // so that a signal sent right after it is never missed.
    let (stop, signalled) = UnixStream::pair()?;
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(signal, signalled.try_clone()?)?;
    }
    type Json = serde_json::Value;
    let addr = (host.as_str(), port);
    match (transport.as_str(), framing.as_str()) {
        ("tcp", "json") => tcp(addr, Stream::<_, _, Json, Json>::json_lines(), cfg, stop),
        ("tcp", "line") => tcp(addr, Stream::lines(), cfg, stop),
        ("tcp", "raw") => tcp(addr, Stream::raw(), cfg, stop),
        ("udp", "json") => udp(addr, Datagram::<_, Json, Json>::json(), cfg, stop),
        ("udp", "line") => udp(addr, Datagram::lines(), cfg, stop),
        ("udp", "raw") => udp(addr, Datagram::raw(), cfg, stop),
        (t, f) => anyhow::bail!("unknown transport/framing {t}/{f}"),
    }?;
    Ok(())
}
