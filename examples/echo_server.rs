//! Echo server: every request goes back to its sender. JSON lines over TCP on
//! 127.0.0.1:9000 by default.
//!
//! ```text
//! cargo run --release --example echo_server -- [--driver tokio|mio] [--transport tcp|udp]
//!     [--framing json|line|raw] [--host H] [--port P] [--tls-cert PEM --tls-key PEM]
//!     [--unix PATH] [--max-connections N] [--idle-timeout SECS] [--stats-every SECS]
//! ```
//!
//! `--unix PATH` serves a Unix stream socket at PATH instead of TCP (Unix only). TLS needs
//! the `tls` feature (`--features tls`). `--max-connections N` stops accepting at N open
//! connections (the next ones wait in the kernel's backlog) and `--idle-timeout SECS`
//! closes a connection that sent nothing for SECS seconds (TCP, TLS, Unix); over UDP the
//! idle timeout is the peers' idle eviction. Both are off by default.
//!
//! Under socket activation (`LISTEN_PID`/`LISTEN_FDS`, as systemd or
//! `systemd-socket-activate -l 127.0.0.1:9000 echo_server` set them) it serves on the
//! sockets passed, of the kind `--transport` names (TCP listeners, or UDP sockets), instead
//! of binding `--host`/`--port`; with `--unix`, on the Unix stream listener passed instead
//! of binding PATH.
//!
//! Prints `listening on ADDR` once per bound address when ready. SIGINT or SIGTERM shut it
//! down gracefully (requests already read are answered; it logs how many connections are
//! draining) and it exits with status 0; a second SIGINT or SIGTERM during that shutdown
//! resets every connection still open at once and it exits with status 130. Logs go
//! to stderr, filtered by `RUST_LOG` (default `info`), through a non-blocking writer: a slow
//! or blocked stderr costs log lines (dropped, not waited for), never the server's time.
//! Bad requests are logged at most 5 times a second per connection (UDP: per peer), with
//! the count of those left out. `--stats-every SECS` logs the server's counters.

#[path = "common/logging.rs"]
mod logging;

use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use easynet::addr::Addr;
use easynet::aio::{AsyncTcpServer, AsyncUdpServer};
use easynet::datagram::DatagramConfig;
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received, StreamContext,
    StreamHandler,
};
use easynet::log_limit::LogLimiter;
use easynet::protocol::{Datagram, DatagramServerProtocol, Stream, StreamServerProtocol};
use easynet::stats::ServerStats;

const USAGE: &str = "\
Echo server: every request goes back to its sender.

Usage: echo_server [OPTIONS]

Options:
  --driver tokio|mio        event loop: tokio (async) or mio (blocking) [default: tokio]
  --transport tcp|udp       [default: tcp]
  --framing json|line|raw   JSON lines, text lines or raw bytes [default: json]
  --host HOST               [default: 127.0.0.1]
  --port PORT               [default: 9000]
  --tls-cert PEM            serve TLS over TCP with this certificate chain (feature tls)
  --tls-key PEM             ... and this private key
  --unix PATH               a Unix stream socket at PATH instead of TCP
  --max-connections N       stop accepting at N open connections (TCP, TLS, Unix)
  --idle-timeout SECS       close connections silent for SECS seconds (TCP, TLS,
                            Unix); UDP: forget peers silent that long [default: 120]
  --stats-every SECS        log the server's counters every SECS seconds
  -h, --help                print this help

Serves on the sockets passed under socket activation (LISTEN_PID/LISTEN_FDS) when given.
Prints `listening on ADDR` per bound address; SIGINT or SIGTERM shut it down gracefully
(exit status 0), a second one resets the connections still open (exit status 130).
Logs go to stderr; RUST_LOG sets the filter [default: info].
";

/// Sends every request back; a parse error is logged and the connection goes on. A client
/// can send bad requests at will: the lines are limited per connection (per peer for UDP),
/// and what was left out is counted.
pub struct Echo<T> {
    peer: Addr,
    limit: LogLimiter,
    _msg: PhantomData<fn() -> T>,
}

impl<T> Echo<T> {
    pub fn new(info: &ConnInfo) -> Self {
        Echo {
            peer: info.peer.clone(),
            limit: LogLimiter::default(),
            _msg: PhantomData,
        }
    }

    fn bad_request(&mut self, now: std::time::Instant, e: &dyn Display) {
        if let Some(suppressed) = self.limit.check(now) {
            tracing::warn!(peer = %self.peer, suppressed, "bad request: {e}");
        }
    }
}

impl<T> Drop for Echo<T> {
    fn drop(&mut self) {
        let suppressed = self.limit.take_suppressed();
        if suppressed > 0 {
            tracing::warn!(peer = %self.peer, "suppressed {suppressed} similar messages (bad request)");
        }
    }
}

impl<T: Send + 'static> StreamHandler for Echo<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut StreamContext<'_, T>, received: Received<T>) -> HandlerResult {
        match received {
            Received::Request(msg) => cx.send(&msg)?,
            Received::ParseError(e) => self.bad_request(cx.now(), &e),
            Received::Timeout => {}
        }
        Ok(Next::recv())
    }
}

impl<T: Send + 'static> DatagramHandler for Echo<T> {
    type Request = T;
    type Response = T;

    fn handle(&mut self, cx: &mut DatagramContext<'_, T>, received: Received<T>) -> HandlerResult {
        match received {
            Received::Request(msg) => cx.send(&msg)?,
            Received::ParseError(e) => self.bad_request(cx.now(), &e),
            Received::Timeout => {}
        }
        Ok(Next::Close)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Driver {
    Tokio,
    Mio,
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Udp,
}

#[derive(Clone, Copy)]
enum Framing {
    Json,
    Line,
    Raw,
}

struct Args {
    driver: Driver,
    transport: Transport,
    framing: Framing,
    host: String,
    port: u16,
    tls: Option<(String, String)>,
    unix: Option<String>,
    max_connections: Option<usize>,
    idle_timeout: Option<Duration>,
    /// Passed by a service manager (socket activation), of the kind `transport` names.
    inherited: Vec<socket2::Socket>,
    stats_every: Option<Duration>,
}

fn parse_args() -> anyhow::Result<Args> {
    use lexopt::prelude::*;
    let mut a = Args {
        driver: Driver::Tokio,
        transport: Transport::Tcp,
        framing: Framing::Json,
        host: "127.0.0.1".into(),
        port: 9000,
        tls: None,
        unix: None,
        max_connections: None,
        idle_timeout: None,
        inherited: Vec::new(),
        stats_every: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("driver") => {
                a.driver = match parser.value()?.string()?.as_str() {
                    "tokio" => Driver::Tokio,
                    "mio" => Driver::Mio,
                    d => bail!("unknown driver {d:?} (tokio or mio)"),
                }
            }
            Long("transport") => {
                a.transport = match parser.value()?.string()?.as_str() {
                    "tcp" => Transport::Tcp,
                    "udp" => Transport::Udp,
                    t => bail!("unknown transport {t:?} (tcp or udp)"),
                }
            }
            Long("framing") => {
                a.framing = match parser.value()?.string()?.as_str() {
                    "json" => Framing::Json,
                    "line" => Framing::Line,
                    "raw" => Framing::Raw,
                    f => bail!("unknown framing {f:?} (json, line or raw)"),
                }
            }
            Long("host") => a.host = parser.value()?.string()?,
            Long("port") => a.port = parser.value()?.parse()?,
            Long("tls-cert") => cert = Some(parser.value()?.string()?),
            Long("tls-key") => key = Some(parser.value()?.string()?),
            Long("unix") => a.unix = Some(parser.value()?.string()?),
            Long("max-connections") => a.max_connections = Some(parser.value()?.parse()?),
            Long("idle-timeout") => {
                let secs: f64 = parser.value()?.parse()?;
                a.idle_timeout = Some(
                    Duration::try_from_secs_f64(secs)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .context("--idle-timeout takes a positive number of seconds")?,
                );
            }
            Long("stats-every") => {
                let secs: f64 = parser.value()?.parse()?;
                if !(secs > 0.0 && secs.is_finite()) {
                    bail!("--stats-every takes a positive number of seconds");
                }
                a.stats_every = Some(Duration::from_secs_f64(secs));
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    a.tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    if a.tls.is_some() && !cfg!(feature = "tls") {
        bail!("TLS needs the tls feature: cargo run --example echo_server --features tls");
    }
    if a.tls.is_some() && a.transport == Transport::Udp {
        bail!("TLS is for --transport tcp");
    }
    if a.max_connections.is_some() && a.transport == Transport::Udp {
        bail!("--max-connections is for stream transports (UDP has no connections)");
    }
    if a.unix.is_some() && (a.transport != Transport::Tcp || a.tls.is_some()) {
        bail!("--unix serves a plain stream socket (no --transport udp, no TLS)");
    }
    Ok(a)
}

/// The application picks the rustls crypto provider; this example uses ring.
#[cfg(feature = "tls")]
fn tls_config(cert: &str, key: &str) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {cert}"))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading key {key}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(std::sync::Arc::new(config))
}

/// `--max-connections` and `--idle-timeout` on any stream server builder.
macro_rules! limits {
    ($builder:expr, $args:expr) => {{
        let mut builder = $builder;
        if let Some(n) = $args.max_connections {
            builder = builder.max_connections(n);
        }
        if let Some(d) = $args.idle_timeout {
            builder = builder.idle_timeout(d);
        }
        builder
    }};
}

/// The sockets passed under socket activation, or `.host().port()`, on a TCP or UDP
/// builder.
macro_rules! listen {
    ($builder:expr, $args:expr) => {{
        let mut builder = $builder;
        if $args.inherited.is_empty() {
            builder = builder.host($args.host.as_str()).port($args.port);
        }
        for socket in &$args.inherited {
            builder = builder.from_std(socket.try_clone()?);
        }
        builder
    }};
}

/// The Unix listener passed under socket activation, or `.path(path)`.
#[cfg(unix)]
macro_rules! unix_listen {
    ($builder:expr, $args:expr, $path:expr) => {{
        match $args.inherited.first() {
            Some(socket) => $builder.from_std(socket.try_clone()?),
            None => $builder.path($path),
        }
    }};
}

/// The sockets a service manager passed that `--transport` (or `--unix`) serves on.
#[cfg(unix)]
fn inherited(
    passed: Vec<easynet::aio::InheritedSocket>,
    args: &Args,
) -> anyhow::Result<Vec<socket2::Socket>> {
    use easynet::aio::SocketKind;
    if passed.is_empty() {
        return Ok(Vec::new());
    }
    let want = match (&args.unix, args.transport) {
        (Some(_), _) => SocketKind::UnixStream,
        (None, Transport::Tcp) => SocketKind::Tcp,
        (None, Transport::Udp) => SocketKind::Udp,
    };
    let n = passed.len();
    let sockets: Vec<_> = passed
        .into_iter()
        .filter(|s| s.kind() == want)
        .map(|s| socket2::Socket::from(s.into_fd()))
        .collect();
    if sockets.is_empty() {
        bail!("socket activation passed {n} sockets, none of them for --transport or --unix");
    }
    Ok(sockets)
}

/// `--idle-timeout` over UDP: the peers' idle eviction.
fn datagram_config(args: &Args) -> DatagramConfig {
    let config = DatagramConfig::default();
    match args.idle_timeout {
        Some(d) => config.with_idle_timeout(d),
        None => config,
    }
}

/// Logs the server's counters every `every` (if given), from a thread of its own: reading
/// them costs a few atomic loads, and the line goes through the non-blocking writer.
fn report_stats(every: Option<Duration>, stats: impl Fn() -> ServerStats + Send + 'static) {
    let Some(every) = every else {
        return;
    };
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(every);
            let s = stats();
            tracing::info!(
                accepted = s.accepted,
                open = s.open,
                closed = s.closed,
                closed_by = ?s.closed_by,
                bytes_in = s.bytes_in,
                bytes_out = s.bytes_out,
                requests = s.requests,
                parse_errors = s.parse_errors,
                handshake_failures = s.handshake_failures,
                handler_errors = s.handler_errors,
                handler_panics = s.handler_panics,
                datagrams_in = s.datagrams_in,
                datagrams_out = s.datagrams_out,
                dropped_datagrams = s.dropped_datagrams,
                socket_dropped_datagrams = s.socket_dropped_datagrams,
                "stats"
            );
        }
    });
}

fn announce(addrs: &[impl Display]) {
    let mut out = std::io::stdout().lock();
    for a in addrs {
        let _ = writeln!(out, "listening on {a}");
    }
    let _ = out.flush();
}

/// Set by the second signal: connections were cut short; the exit status says so.
static HURRIED: AtomicBool = AtomicBool::new(false);

/// On the first SIGINT or SIGTERM (Ctrl-C or close on Windows), logs how many connections
/// are draining (`open`) and runs `stop`, a graceful shutdown; on the second, runs `hurry`,
/// which resets every connection at once. Neither may block: the next signal must get
/// through. Registered before `listening on` is printed, so a signal sent right after it
/// is not missed.
fn on_signals(
    open: impl Fn() -> u64 + Send + 'static,
    stop: impl FnOnce() + Send + 'static,
    hurry: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let stages = Mutex::new((Some(stop), Some(hurry)));
    ctrlc::set_handler(move || {
        let (stop, hurry) = {
            let mut stages = stages.lock().unwrap_or_else(|e| e.into_inner());
            match stages.0.take() {
                Some(stop) => (Some(stop), None),
                None => (None, stages.1.take()),
            }
        };
        if let Some(stop) = stop {
            tracing::info!(
                "shutting down, {} connections draining (a second signal closes them at once)",
                open()
            );
            stop();
        } else if let Some(hurry) = hurry {
            tracing::warn!("second signal: closing every connection now");
            HURRIED.store(true, Ordering::Relaxed);
            hurry();
        }
    })
    .context("installing the signal handler")
}

/// A future that resolves on the first SIGINT or SIGTERM; the second makes `server` reset
/// its connections (`shutdown_within(0)`).
macro_rules! stop_signal {
    ($server:expr) => {{
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (open, hurry) = ($server.clone(), $server.clone());
        let runtime = tokio::runtime::Handle::current();
        on_signals(
            move || open.stats().open,
            move || {
                let _ = tx.send(());
            },
            move || {
                runtime.spawn(async move { hurry.shutdown_within(Duration::ZERO).await });
            },
        )?;
        async move {
            let _ = rx.await;
        }
    }};
}

/// Activates `$server`, prints `$addrs` (clients that come before the run serves wait in
/// the kernel's queue), serves until a signal, then shuts down gracefully.
macro_rules! serve_until_signal {
    ($server:expr, |$s:ident| $addrs:expr) => {{
        let server = $server;
        let stop = stop_signal!(server);
        server.activate().await?;
        let $s = &server;
        announce(&$addrs);
        server.serve_with_shutdown(stop).await?;
        Ok(())
    }};
}

async fn serve_tcp<T, P>(args: &Args, protocol: P) -> anyhow::Result<()>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut builder = limits!(
        listen!(AsyncTcpServer::builder(protocol, Echo::<T>::new), args),
        args
    );
    #[cfg(feature = "tls")]
    if let Some((cert, key)) = &args.tls {
        builder = builder.tls(tls_config(cert, key)?);
    }
    let server = builder.build()?;
    let s = server.clone();
    report_stats(args.stats_every, move || s.stats());
    serve_until_signal!(server, |s| s.addresses())
}

async fn serve_udp<T, P>(args: &Args, protocol: P) -> anyhow::Result<()>
where
    T: Send + 'static,
    P: DatagramServerProtocol<Request = T, Response = T>,
{
    let server = listen!(AsyncUdpServer::builder(protocol, Echo::<T>::new), args)
        .datagram_config(datagram_config(args))
        .build()?;
    let s = server.clone();
    report_stats(args.stats_every, move || s.stats());
    serve_until_signal!(server, |s| s.addresses())
}

#[cfg(unix)]
async fn serve_unix<T, P>(args: &Args, path: &str, protocol: P) -> anyhow::Result<()>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    let server = limits!(
        unix_listen!(
            easynet::aio::AsyncUnixStreamServer::builder(protocol, Echo::<T>::new),
            args,
            path
        ),
        args
    )
    .build()?;
    let s = server.clone();
    report_stats(args.stats_every, move || s.stats());
    serve_until_signal!(server, |s| Vec::from_iter(s.address()))
}

/// Prints the addresses when the blocking server is up.
struct Announce(easynet::blocking::ServerHandle);

impl easynet::blocking::EventSet for Announce {
    fn set(&self) {
        announce(&self.0.local_addresses());
    }
}

/// Serves a blocking server on this thread until a signal shuts it down.
fn serve_mio<S: easynet::blocking::BlockingServer>(args: &Args, server: S) -> anyhow::Result<()> {
    let stats = server.handle();
    report_stats(args.stats_every, move || stats.stats());
    let (open, stop, hurry) = (server.handle(), server.handle(), server.handle());
    on_signals(
        move || open.stats().open,
        // `shutdown` waits for the run: not on the signal thread.
        move || drop(std::thread::spawn(move || stop.shutdown(None))),
        move || hurry.shutdown(Some(Duration::ZERO)),
    )?;
    server.serve_notify(&Announce(server.handle()))?;
    Ok(())
}

fn mio_tcp<T, P>(args: &Args, protocol: P) -> anyhow::Result<()>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut builder = limits!(
        listen!(
            easynet::blocking::TcpServer::builder(protocol, Echo::<T>::new),
            args
        ),
        args
    );
    #[cfg(feature = "tls")]
    if let Some((cert, key)) = &args.tls {
        builder = builder.tls(tls_config(cert, key)?);
    }
    serve_mio(args, builder.build()?)
}

fn mio_udp<T, P>(args: &Args, protocol: P) -> anyhow::Result<()>
where
    T: Send + 'static,
    P: DatagramServerProtocol<Request = T, Response = T>,
{
    let server = listen!(
        easynet::blocking::UdpServer::builder(protocol, Echo::<T>::new),
        args
    )
    .datagram_config(datagram_config(args))
    .build()?;
    serve_mio(args, server)
}

#[cfg(unix)]
fn mio_unix<T, P>(args: &Args, path: &str, protocol: P) -> anyhow::Result<()>
where
    T: Send + 'static,
    P: StreamServerProtocol<Request = T, Response = T>,
{
    let server = limits!(
        unix_listen!(
            easynet::blocking::UnixStreamServer::builder(protocol, Echo::<T>::new),
            args,
            path
        ),
        args
    )
    .build()?;
    serve_mio(args, server)
}

type Json = serde_json::Value;

/// `--unix PATH`: a Unix stream socket on either driver.
#[cfg(unix)]
fn main_unix(args: &Args, path: &str) -> anyhow::Result<()> {
    if args.driver == Driver::Mio {
        return match args.framing {
            Framing::Json => mio_unix(args, path, Stream::<_, _, Json, Json>::json_lines()),
            Framing::Line => mio_unix(args, path, Stream::lines()),
            Framing::Raw => mio_unix(args, path, Stream::raw()),
        };
    }
    tokio_runtime()?.block_on(async {
        match args.framing {
            Framing::Json => serve_unix(args, path, Stream::<_, _, Json, Json>::json_lines()).await,
            Framing::Line => serve_unix(args, path, Stream::lines()).await,
            Framing::Raw => serve_unix(args, path, Stream::raw()).await,
        }
    })
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn main() -> anyhow::Result<ExitCode> {
    run()?;
    // 130, as a shell reports a process ended by SIGINT: the second signal cut it short.
    Ok(if HURRIED.load(Ordering::Relaxed) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn run() -> anyhow::Result<()> {
    // First, before any thread exists: it takes the sockets and clears the variables.
    // SAFETY: no other thread yet, and nothing else owns the descriptors passed.
    #[cfg(unix)]
    let passed = unsafe { easynet::aio::listen_fds() }.context("socket activation")?;
    let _flush_logs_at_exit = logging::init();
    // lexopt's messages already include their cause: print them once.
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut args = parse_args().map_err(|e| anyhow::anyhow!("{e} (see --help)"))?;
    #[cfg(unix)]
    {
        args.inherited = inherited(passed, &args)?;
    }
    if let Some(path) = &args.unix {
        #[cfg(unix)]
        return main_unix(&args, path);
        #[cfg(not(unix))]
        bail!("--unix {path}: Unix sockets need a Unix OS");
    }
    use {Framing as F, Transport as T};
    if args.driver == Driver::Mio {
        return match (args.transport, args.framing) {
            (T::Tcp, F::Json) => mio_tcp(&args, Stream::<_, _, Json, Json>::json_lines()),
            (T::Tcp, F::Line) => mio_tcp(&args, Stream::lines()),
            (T::Tcp, F::Raw) => mio_tcp(&args, Stream::raw()),
            (T::Udp, F::Json) => mio_udp(&args, Datagram::<_, Json, Json>::json()),
            (T::Udp, F::Line) => mio_udp(&args, Datagram::lines()),
            (T::Udp, F::Raw) => mio_udp(&args, Datagram::raw()),
        };
    }
    tokio_runtime()?.block_on(async {
        match (args.transport, args.framing) {
            (T::Tcp, F::Json) => serve_tcp(&args, Stream::<_, _, Json, Json>::json_lines()).await,
            (T::Tcp, F::Line) => serve_tcp(&args, Stream::lines()).await,
            (T::Tcp, F::Raw) => serve_tcp(&args, Stream::raw()).await,
            (T::Udp, F::Json) => serve_udp(&args, Datagram::<_, Json, Json>::json()).await,
            (T::Udp, F::Line) => serve_udp(&args, Datagram::lines()).await,
            (T::Udp, F::Raw) => serve_udp(&args, Datagram::raw()).await,
        }
    })
}
