//! Runs the same portable handler on either driver, so one scenario tests both: the line
//! `Echo` (`tokio`, `mio`) or any protocol and handler (`tokio_tcp`, `mio_tcp`, `tokio_udp`,
//! `mio_udp`).

use std::net::SocketAddr;
use std::time::Duration;

use easynet::handler::{
    ConnInfo, DatagramHandler, HandlerResult, Next, Received, Service, StreamContext, StreamHandler,
};
use easynet::protocol::{DatagramServerProtocol, Stream, StreamServerProtocol};
use easynet::stats::ServerStats;
use easynet::stream::StreamConfig;

/// Echoes lines; "timeout" on timeouts, "error" on parse errors; "quit" closes; "panic" panics.
/// The same type runs on both drivers unchanged.
pub struct Echo {
    pub timeout: Option<Duration>,
}

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, _: &mut StreamContext<'_, String>) -> HandlerResult {
        Ok(Next::Recv {
            timeout: self.timeout,
        })
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) if l == "panic" => panic!("requested panic"),
            Received::Request(l) => cx.send(&l)?,
            Received::Timeout => cx.send("timeout".to_owned())?,
            Received::ParseError(_) => cx.send("error".to_owned())?,
        }
        Ok(Next::Recv {
            timeout: self.timeout,
        })
    }
}

/// What a scenario may set.
#[derive(Clone, Default)]
pub struct Opts {
    pub timeout: Option<Duration>,
    pub write_high_water: Option<usize>,
    pub tls: Option<easynet::tls::SharedServerConfig>,
    pub handshake_timeout: Option<Duration>,
    /// The server's shutdown timeout; 3 s unless set.
    pub shutdown_timeout: Option<Duration>,
    /// `idle_timeout` (the poll loop example too: it is a per-connection setting).
    pub idle_timeout: Option<Duration>,
    /// `max_connections` (the two drivers and the poll loop example).
    pub max_connections: Option<usize>,
    /// `tcp_keepalive` when set (the two drivers only).
    pub tcp_keepalive: Option<Option<easynet_common::TcpKeepalive>>,
}

impl Opts {
    fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout.unwrap_or(Duration::from_secs(3))
    }

    fn stream(&self) -> StreamConfig {
        let mut c = StreamConfig::default();
        if let Some(h) = self.write_high_water {
            c = c.with_write_high_water(h);
        }
        c.with_idle_timeout(self.idle_timeout)
    }
}

/// A server running in the background; `stop` shuts it down and waits.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() + Send>>,
    /// The server's `stats()` (the two drivers; not the poll loop example).
    stats: Option<Box<dyn Fn() -> ServerStats + Send + Sync>>,
}

impl Running {
    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        (self.stats.as_ref().expect("a driver's server"))()
    }

    pub fn stop(mut self) {
        if let Some(f) = self.stop.take() {
            f();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(f) = self.stop.take() {
            f();
        }
    }
}

pub type Start = fn(Opts) -> Running;

#[cfg(feature = "tokio")]
pub fn tokio(opts: Opts) -> Running {
    let timeout = opts.timeout;
    tokio_tcp(Stream::lines(), move |_: &ConnInfo| Echo { timeout }, opts)
}

#[cfg(feature = "mio")]
pub fn mio(opts: Opts) -> Running {
    let timeout = opts.timeout;
    mio_tcp(Stream::lines(), move |_: &ConnInfo| Echo { timeout }, opts)
}

/// A one-worker runtime for a tokio server.
#[cfg(feature = "tokio")]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `serve` on `rt` and waits until it is up.
#[cfg(feature = "tokio")]
fn serve_on<F>(
    rt: &tokio::runtime::Runtime,
    serve: impl FnOnce(tokio::sync::watch::Sender<bool>) -> F,
) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let task = rt.spawn(serve(tx));
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|u| *u))
            .await
            .unwrap()
            .unwrap();
    });
    task
}

/// Any stream protocol and handler on a tokio `AsyncTcpServer`.
#[cfg(feature = "tokio")]
pub fn tokio_tcp<P, S>(protocol: P, service: S, opts: Opts) -> Running
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
{
    use easynet::aio::AsyncTcpServer;
    let rt = runtime();
    let mut b = AsyncTcpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(opts.shutdown_timeout())
        .backlog(1024)
        .stream_config(opts.stream());
    if let Some(n) = opts.max_connections {
        b = b.max_connections(n);
    }
    if let Some(k) = opts.tcp_keepalive {
        b = b.tcp_keepalive(k);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = opts.tls.clone() {
        b = b.tls(tls);
        if let Some(h) = opts.handshake_timeout {
            b = b.tls_handshake_timeout(h);
        }
    }
    let server = b.build().unwrap();
    let s = server.clone();
    let task = serve_on(&rt, move |tx| async move { s.serve_notify(tx).await });
    let addr = server.addresses()[0];
    let s = server.clone();
    Running {
        addr,
        stats: Some(Box::new(move || s.stats())),
        stop: Some(Box::new(move || {
            rt.block_on(async {
                server.shutdown().await;
                task.await.unwrap().unwrap();
            });
        })),
    }
}

/// Any stream protocol and handler on a mio `TcpServer` in a `ServerThread`.
#[cfg(feature = "mio")]
pub fn mio_tcp<P, S>(protocol: P, service: S, opts: Opts) -> Running
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
{
    use easynet::blocking::{ServerThread, TcpServer};
    let mut b = TcpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(opts.shutdown_timeout())
        .backlog(1024)
        .stream_config(opts.stream());
    if let Some(n) = opts.max_connections {
        b = b.max_connections(n);
    }
    if let Some(k) = opts.tcp_keepalive {
        b = b.tcp_keepalive(k);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = opts.tls.clone() {
        b = b.tls(tls);
        if let Some(h) = opts.handshake_timeout {
            b = b.tls_handshake_timeout(h);
        }
    }
    let mut thread = ServerThread::start(b.build().unwrap()).unwrap();
    let addr = thread.addresses()[0];
    let h = thread.handle().clone();
    Running {
        addr,
        stats: Some(Box::new(move || h.stats())),
        stop: Some(Box::new(move || thread.join(None).unwrap())),
    }
}

/// Any datagram protocol and handler on a tokio `AsyncUdpServer`.
#[cfg(feature = "tokio")]
pub fn tokio_udp<P, S>(protocol: P, service: S) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    tokio_udp_on(protocol, service, None)
}

/// [`tokio_udp`] on a socket the test bound and configured (`from_std`), if given.
#[cfg(feature = "tokio")]
pub fn tokio_udp_on<P, S>(protocol: P, service: S, socket: Option<std::net::UdpSocket>) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    use easynet::aio::AsyncUdpServer;
    let rt = runtime();
    let mut builder = AsyncUdpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(3));
    if let Some(socket) = socket {
        builder = builder.from_std(socket);
    }
    let server = builder.build().unwrap();
    let s = server.clone();
    let task = serve_on(&rt, move |tx| async move { s.serve_notify(tx).await });
    let addr = server.addresses()[0];
    let s = server.clone();
    Running {
        addr,
        stats: Some(Box::new(move || s.stats())),
        stop: Some(Box::new(move || {
            rt.block_on(async {
                server.shutdown().await;
                task.await.unwrap().unwrap();
            });
        })),
    }
}

/// Any datagram protocol and handler on a mio `UdpServer` in a `ServerThread`.
#[cfg(feature = "mio")]
pub fn mio_udp<P, S>(protocol: P, service: S) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    mio_udp_on(protocol, service, None)
}

/// [`mio_udp`] on a socket the test bound and configured (`from_std`), if given.
#[cfg(feature = "mio")]
pub fn mio_udp_on<P, S>(protocol: P, service: S, socket: Option<std::net::UdpSocket>) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    use easynet::blocking::{ServerThread, UdpServer};
    let mut builder = UdpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(3));
    if let Some(socket) = socket {
        builder = builder.from_std(socket);
    }
    let server = builder.build().unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addr = thread.addresses()[0];
    let h = thread.handle().clone();
    Running {
        addr,
        stats: Some(Box::new(move || h.stats())),
        stop: Some(Box::new(move || thread.join(None).unwrap())),
    }
}

// examples/poll_loop.rs, the single-threaded `polling` loop written against the core's
// public API, runs the same scenarios as the two drivers.
#[cfg(all(unix, feature = "tls", feature = "json"))]
#[path = "../../examples/poll_loop.rs"]
#[allow(dead_code)]
mod poll_loop;

/// The line `Echo` on the poll loop example.
#[cfg(all(unix, feature = "tls", feature = "json"))]
pub fn poll_loop(opts: Opts) -> Running {
    let timeout = opts.timeout;
    let service = move |_: &ConnInfo| Echo { timeout };
    poll_loop_tcp(
        Stream::lines(),
        service,
        opts,
        easynet::stream::Session::start,
    )
}

/// Any stream protocol and handler on the poll loop example, on a thread of its own: `start`
/// is `Session::start` (portable handlers) or `AsyncSession::start` (async handlers).
#[cfg(all(unix, feature = "tls", feature = "json"))]
pub fn poll_loop_tcp<P, S, D>(
    protocol: P,
    service: S,
    opts: Opts,
    start: poll_loop::Start<S, P, D>,
) -> Running
where
    P: StreamServerProtocol,
    S: Service,
    D: easynet::stream::Driven,
{
    // The drivers' backlog: a burst of connections must not overflow it (SYNs dropped,
    // connects retried a second later).
    let loopback = [SocketAddr::from(([127, 0, 0, 1], 0))];
    let options = easynet_common::ListenOptions {
        backlog: 1024,
        reuse_port: false,
    };
    let listener = easynet_common::tcp_listeners(&loopback, options)
        .unwrap()
        .remove(0);
    let addr = listener.local_addr().unwrap();
    let mut stream = opts.stream();
    if let Some(h) = opts.handshake_timeout {
        stream = stream.with_tls_handshake_timeout(h);
    }
    let cfg = poll_loop::Config {
        stream,
        shutdown_timeout: opts.shutdown_timeout(),
        // The poll loop takes a plain configuration: it has no reload.
        tls: opts.tls.map(|t| t.get()),
        max_connections: opts.max_connections,
    };
    on_poll_loop(addr, move |stop| {
        poll_loop::serve_tcp(listener, service, protocol, &cfg, stop, start)
    })
}

/// Any datagram protocol and portable handler on the poll loop example.
#[cfg(all(unix, feature = "tls", feature = "json"))]
pub fn poll_loop_udp<P, S>(protocol: P, service: S) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let cfg = poll_loop::Config {
        shutdown_timeout: Duration::from_secs(3),
        ..poll_loop::Config::default()
    };
    on_poll_loop(addr, move |stop| {
        poll_loop::serve_udp(socket, service, protocol, &cfg, stop)
    })
}

/// Runs a poll loop on a thread; `stop` writes to its stop pipe (as a signal would) and
/// joins the thread, which ends by the shutdown deadline.
#[cfg(all(unix, feature = "tls", feature = "json"))]
fn on_poll_loop(
    addr: SocketAddr,
    serve: impl FnOnce(std::os::unix::net::UnixStream) -> std::io::Result<()> + Send + 'static,
) -> Running {
    let (stop, stop_rx) = std::os::unix::net::UnixStream::pair().unwrap();
    let thread = std::thread::spawn(move || serve(stop_rx));
    Running {
        addr,
        stats: None,
        stop: Some(Box::new(move || {
            let _ = std::io::Write::write_all(&mut &stop, b"x");
            thread.join().unwrap().unwrap();
        })),
    }
}
