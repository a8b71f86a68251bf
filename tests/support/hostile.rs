#![allow(dead_code)]
//! What the hostile-input tests share: any protocol and handler on either driver, a probe
//! handler that names what it received, and counters of the process (fds, RSS, tasks).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use easynet::handler::{
    ConnInfo, HandlerResult, Next, Received, Service, StreamContext, StreamHandler,
};
use easynet::protocol::{ParseError, StreamServerProtocol};
use easynet::stream::StreamConfig;

/// Every blocking read or wait of these tests gives up after this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// The two drivers; every scenario runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Tokio,
    Mio,
}

pub const DRIVERS: [Driver; 2] = [Driver::Tokio, Driver::Mio];

/// A message type the probe can echo and describe errors with.
pub trait Msg: From<String> + Send + 'static {
    fn text(&self) -> Option<&str>;
}

impl Msg for String {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl Msg for serde_json::Value {
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
}

/// A short name of a parse error, sent back to the client: the error reached the handler
/// typed.
pub fn describe(e: &ParseError) -> String {
    match e {
        ParseError::LineTooLong { limit, got } => format!("error: line too long {limit} {got}"),
        ParseError::FrameTooLarge { limit, got } => format!("error: frame too large {limit} {got}"),
        ParseError::Deserialize(d) => {
            let s = d.to_string();
            if s.starts_with("invalid UTF-8") {
                "error: utf8".into()
            } else if s.starts_with("invalid JSON") {
                "error: json".into()
            } else {
                format!("error: {s}")
            }
        }
        other => format!("error: {other}"),
    }
}

/// Echoes; answers parse errors with [`describe`]; "quit" closes, "panic" panics, "fail"
/// returns an error. Counts the requests it handled.
pub struct Probe<T> {
    handled: Arc<AtomicU64>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Msg> StreamHandler for Probe<T> {
    type Request = T;
    type Response = T;

    fn on_connection(&mut self, _: &mut StreamContext<'_, T>) -> HandlerResult {
        Ok(Next::Recv { timeout: None })
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, T>, r: Received<T>) -> HandlerResult {
        match r {
            Received::Request(m) => {
                match m.text() {
                    Some("quit") => return Ok(Next::Close),
                    Some("panic") => panic!("requested panic"),
                    Some("fail") => return Err("requested failure".into()),
                    _ => {}
                }
                self.handled.fetch_add(1, Ordering::SeqCst);
                cx.send(&m)?;
            }
            Received::Timeout => cx.send(T::from("timeout".to_owned()))?,
            Received::ParseError(e) => cx.send(T::from(describe(&e)))?,
        }
        Ok(Next::Recv { timeout: None })
    }
}

/// Makes [`Probe`]s that share one counter of handled requests.
pub struct ProbeService<T> {
    pub handled: Arc<AtomicU64>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> Default for ProbeService<T> {
    fn default() -> Self {
        Self {
            handled: Arc::default(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Msg> Service for ProbeService<T> {
    type Handler = Probe<T>;

    fn new_handler(&self, _: &ConnInfo) -> Probe<T> {
        Probe {
            handled: self.handled.clone(),
            _t: std::marker::PhantomData,
        }
    }
}

/// Server settings a scenario may change.
#[derive(Clone)]
pub struct Setup {
    pub stream: StreamConfig,
    pub shutdown_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub handshake_timeout: Option<Duration>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            stream: StreamConfig::default(),
            shutdown_timeout: Duration::from_secs(3),
            tls: None,
            handshake_timeout: None,
        }
    }
}

/// A server running in the background; dropping it shuts it down and waits.
pub struct Server {
    pub driver: Driver,
    pub addr: SocketAddr,
    /// The tokio runtime's handle (tokio driver only), for its task metrics.
    pub runtime: Option<tokio::runtime::Handle>,
    stop: Option<Box<dyn FnOnce() + Send>>,
    /// Hurries a shutdown under way: every connection is reset now.
    hurry: Arc<dyn Fn() + Send + Sync>,
}

impl Server {
    /// Shuts down gracefully and waits for the run to end; returns how long it took. Fails
    /// (rather than hangs) if the run has not ended within [`LIMIT`].
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        if let Some(f) = self.stop.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                f();
                let _ = tx.send(());
            });
            match rx.recv_timeout(LIMIT) {
                Ok(()) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{:?}: the server did not stop within {LIMIT:?}",
                        self.driver
                    )
                }
                Err(e) => panic!("{:?}: stopping the server failed: {e}", self.driver),
            }
        }
        t.elapsed()
    }

    /// What resets every connection of a shutdown under way (the "second Ctrl-C"), callable
    /// from any thread.
    pub fn hurry(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.hurry.clone()
    }

    /// Tasks alive in the server's runtime (0 on mio, which has no tasks).
    pub fn alive_tasks(&self) -> usize {
        self.runtime
            .as_ref()
            .map_or(0, |h| h.metrics().num_alive_tasks())
    }

    /// A connected blocking client with timeouts.
    pub fn connect(&self) -> Peer {
        Peer::connect(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(f) = self.stop.take() {
            f();
        }
    }
}

/// Runs `service` with `protocol` on `driver`, bound to 127.0.0.1 on a free port.
pub fn serve<P, S>(driver: Driver, protocol: P, service: S, setup: Setup) -> Server
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
{
    match driver {
        Driver::Tokio => serve_tokio(protocol, service, setup),
        Driver::Mio => serve_mio(protocol, service, setup),
    }
}

fn serve_tokio<P, S>(protocol: P, service: S, setup: Setup) -> Server
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
{
    use easynet::aio::AsyncTcpServer;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut b = AsyncTcpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .log_client_connection(false)
        .shutdown_timeout(setup.shutdown_timeout)
        .stream_config(setup.stream.clone());
    #[cfg(feature = "tls")]
    if let Some(tls) = setup.tls.clone() {
        b = b.tls(tls);
        if let Some(h) = setup.handshake_timeout {
            b = b.tls_handshake_timeout(h);
        }
    }
    let server = b.build().unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = rt.spawn(async move { s.serve_notify(tx).await });
    rt.block_on(async {
        tokio::time::timeout(LIMIT, rx.wait_for(|u| *u))
            .await
            .unwrap()
            .unwrap();
    });
    let addr = server.addresses()[0];
    let runtime = Some(rt.handle().clone());
    let (h, s) = (rt.handle().clone(), server.clone());
    Server {
        driver: Driver::Tokio,
        addr,
        runtime,
        hurry: Arc::new(move || h.block_on(s.shutdown_within(Duration::ZERO))),
        stop: Some(Box::new(move || {
            rt.block_on(async {
                tokio::time::timeout(LIMIT, server.shutdown())
                    .await
                    .expect("shutdown within its bound");
                task.await.unwrap().expect("the run ended without error");
            });
        })),
    }
}

fn serve_mio<P, S>(protocol: P, service: S, setup: Setup) -> Server
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
{
    use easynet::blocking::{ServerThread, TcpServer};
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut b = TcpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .log_client_connection(false)
        .shutdown_timeout(setup.shutdown_timeout)
        .stream_config(setup.stream.clone());
    #[cfg(feature = "tls")]
    if let Some(tls) = setup.tls.clone() {
        b = b.tls(tls);
        if let Some(h) = setup.handshake_timeout {
            b = b.tls_handshake_timeout(h);
        }
    }
    let mut thread = ServerThread::start(b.build().unwrap()).unwrap();
    let addr = thread.addresses()[0];
    let handle = thread.handle().clone();
    Server {
        driver: Driver::Mio,
        addr,
        runtime: None,
        hurry: Arc::new(move || handle.shutdown(Some(Duration::ZERO))),
        stop: Some(Box::new(move || {
            thread.join(None).expect("the run ended without error")
        })),
    }
}

/// A blocking line client with timeouts on every read and write.
pub struct Peer {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Peer {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        Self {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.writer.write_all(data).unwrap();
    }

    /// The next line, or `None` at EOF or reset.
    pub fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => None,
            Ok(_) => Some(l.trim_end_matches('\n').to_owned()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// One round trip: sends `line` and returns the answer.
    pub fn ask(&mut self, line: &str) -> Option<String> {
        self.send(format!("{line}\n").as_bytes());
        self.line()
    }

    /// Reads until EOF or reset; true if that came within `LIMIT`.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Waits until `done` holds, polling every few ms; false at the deadline.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// File descriptors open in this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident set size of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resets the connection (SO_LINGER 0) when the stream is dropped.
pub fn reset_on_drop(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}
