//! Regressions of the datagram path over loopback, on every driver and handler kind they
//! apply to (mio portable, tokio portable, tokio async; UDP and Unix datagram):
//!
//! - user code is contained: a panic in the handler factory, a `Decode`, an `Encode`, a
//!   handler's `Drop` or its error's `Display` ends at most that peer's routine, is logged
//!   once at ERROR, and the server goes on serving that peer and the others;
//! - a send on a closed client returned from a handler is one WARN, never an ERROR;
//! - `DatagramPeer::recv`/`recv_timeout` are cancel-safe;
//! - `shutdown()`/`close()` cancel async routines (abort and await): no routine runs after
//!   `shutdown()` returns, and the UDP port can be bound again once a closed run returned.
//!
//! Logs are captured by a process-wide `tracing::Subscriber` ([`logs`]); each test looks
//! only at the events naming its own peers (every peer has its own address).

#![cfg(all(feature = "tokio", feature = "mio", unix))]

mod support;

use std::fmt::{self, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use easynet::aio::{
    AsyncDatagramHandler, AsyncUdpServer, AsyncUnixDatagramServer, DatagramPeer, DatagramSendError,
    RecvError,
};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    SendError,
};
use easynet::protocol::{Datagram, Decode, DeserializeError, Encode, SerializeError};
use support::unix::TempPath;
use tokio::time::timeout;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Metadata, Subscriber};

/// Every wait of these tests gives up after this.
const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Log capture

#[derive(Debug, Clone)]
struct Log {
    level: Level,
    text: String,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Log>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Formats like a real subscriber would, user `Display` included.
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let log = Log {
            level: *event.metadata().level(),
            text: fields.0,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(log);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    /// The events at `level` that name `peer` (`peer=` it, whole), from event `since` on.
    fn at(&self, level: Level, peer: &str, since: usize) -> Vec<Log> {
        let field = format!(" peer={peer}");
        let names = |text: &str| {
            text.match_indices(&field).any(|(i, _)| {
                text[i + field.len()..].starts_with([' ', '"']) || i + field.len() == text.len()
            })
        };
        let lock = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lock.iter()
            .skip(since)
            .filter(|l| l.level == level && names(&l.text))
            .cloned()
            .collect()
    }

    /// Events so far.
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The process-wide capture, installed by the first test that asks.
fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(capture.clone()).expect("no other subscriber");
        capture
    })
}

// ---------------------------------------------------------------------------------------
// A touchy serializer and a handler of both kinds

/// UTF-8 text that panics decoding `decode-panic` and encoding `encode-panic`.
#[derive(Debug, Clone, Copy)]
struct Touchy;

impl Decode<String> for Touchy {
    fn decode(&self, payload: BytesMut) -> Result<String, DeserializeError> {
        if &payload[..] == b"decode-panic" {
            panic!("Decode panicked on purpose");
        }
        Ok(std::str::from_utf8(&payload)?.to_owned())
    }
}

impl Encode<String> for Touchy {
    fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), SerializeError> {
        if item == "encode-panic" {
            panic!("Encode panicked on purpose");
        }
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }
}

type TouchyText = Datagram<Touchy, String, String>;

/// An error whose `Display` panics.
#[derive(Debug)]
struct BadDisplay;

impl fmt::Display for BadDisplay {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("Display panicked on purpose")
    }
}

impl std::error::Error for BadDisplay {}

/// One datagram per routine, on either handler kind: "encode" answers a response the
/// serializer panics on, "closed" returns a closed-send error, "bad-display" an error whose
/// `Display` panics, "drop-panic" makes its `Drop` panic; anything else is echoed.
#[derive(Default)]
struct Probe {
    panic_on_drop: bool,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if self.panic_on_drop && !std::thread::panicking() {
            panic!("handler Drop panicked on purpose");
        }
    }
}

impl DatagramHandler for Probe {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        let Received::Request(text) = r else {
            return Ok(Next::Close);
        };
        match text.as_str() {
            "encode" => cx.send("encode-panic".to_owned())?,
            "closed" => return Err(SendError::Closed.into()),
            "bad-display" => return Err(BadDisplay.into()),
            "drop-panic" => {
                self.panic_on_drop = true;
                cx.send(&text)?;
            }
            _ => cx.send(&text)?,
        }
        Ok(Next::Close)
    }
}

impl AsyncDatagramHandler for Probe {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let text = client.recv().await?;
        match text.as_str() {
            "encode" => client.send(&"encode-panic".to_owned()).await?,
            "closed" => return Err(DatagramSendError::Closed.into()),
            "bad-display" => return Err(BadDisplay.into()),
            "drop-panic" => {
                self.panic_on_drop = true;
                client.send(&text).await?;
            }
            _ => client.send(&text).await?,
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Servers of every kind, and peers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    MioUdp,
    TokioUdp,
    TokioUdpAsync,
    MioUnix,
    TokioUnix,
    TokioUnixAsync,
}

const KINDS: [Kind; 6] = [
    Kind::MioUdp,
    Kind::TokioUdp,
    Kind::TokioUdpAsync,
    Kind::MioUnix,
    Kind::TokioUnix,
    Kind::TokioUnixAsync,
];

enum Target {
    Udp(SocketAddr),
    Unix(PathBuf),
}

/// A server in the background; `stop` shuts it down and checks its run ended well.
struct Running {
    target: Target,
    _path: Option<TempPath>,
    stop: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Running {
    fn stop(mut self) {
        if let Some(f) = self.stop.take() {
            f(true);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(f) = self.stop.take() {
            // Already failing: clean up without asserting.
            f(false);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs a built tokio server (UDP or Unix) on its own runtime until `Running::stop`.
macro_rules! on_tokio {
    ($server:expr, $target:expr, $path:expr) => {{
        let server = $server;
        let rt = runtime();
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let task = rt.spawn(async move { s.serve_notify(tx).await });
        rt.block_on(async { timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap() });
        let target = $target(&server);
        Running {
            target,
            _path: $path,
            stop: Some(Box::new(move |check: bool| {
                rt.block_on(async move {
                    let stopped = timeout(LIMIT, server.shutdown()).await;
                    let ended = timeout(LIMIT, task).await;
                    if check {
                        stopped.expect("shutdown returns in time");
                        ended
                            .expect("the run ends in time")
                            .expect("the run's task did not panic")
                            .expect("the run ended without error");
                    }
                });
            })),
        }
    }};
}

/// Serves [`Probe`]s over [`Touchy`] on `kind`; the factory panics for its first
/// `factory_panics` calls.
fn start(kind: Kind, factory_panics: usize) -> Running {
    let made = Arc::new(AtomicUsize::new(0));
    let service = move |_: &ConnInfo| {
        if made.fetch_add(1, Ordering::SeqCst) < factory_panics {
            panic!("handler factory panicked on purpose");
        }
        Probe::default()
    };
    let protocol: TouchyText = Datagram::new(Touchy);
    let udp = |s: &AsyncUdpServer<_, _>| Target::Udp(s.addresses()[0]);
    match kind {
        Kind::MioUdp => {
            let server = easynet::blocking::UdpServer::builder(protocol, service)
                .host("127.0.0.1")
                .shutdown_timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            let mut thread = easynet::blocking::ServerThread::start(server).unwrap();
            Running {
                target: Target::Udp(thread.addresses()[0]),
                _path: None,
                stop: Some(Box::new(move |check| {
                    let r = thread.join(None);
                    if check {
                        r.expect("the run ended without error");
                    }
                })),
            }
        }
        Kind::MioUnix => {
            let tmp = TempPath::new("regress-mio");
            let server = easynet::blocking::UnixDatagramServer::builder(protocol, service)
                .path(tmp.path())
                .shutdown_timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            let mut thread = easynet::blocking::ServerThread::start(server).unwrap();
            Running {
                target: Target::Unix(tmp.path().to_owned()),
                _path: Some(tmp),
                stop: Some(Box::new(move |check| {
                    let r = thread.join(None);
                    if check {
                        r.expect("the run ended without error");
                    }
                })),
            }
        }
        Kind::TokioUdp | Kind::TokioUdpAsync => {
            let b = AsyncUdpServer::builder(protocol, service)
                .host("127.0.0.1")
                .shutdown_timeout(Duration::from_secs(3));
            let server = if kind == Kind::TokioUdp {
                b.build()
            } else {
                b.build_async()
            };
            on_tokio!(server.unwrap(), udp, None)
        }
        Kind::TokioUnix | Kind::TokioUnixAsync => {
            let tmp = TempPath::new("regress-tokio");
            let b = AsyncUnixDatagramServer::builder(protocol, service)
                .path(tmp.path())
                .shutdown_timeout(Duration::from_secs(3));
            let server = if kind == Kind::TokioUnix {
                b.build()
            } else {
                b.build_async()
            };
            let path = tmp.path().to_owned();
            on_tokio!(
                server.unwrap(),
                |_: &AsyncUnixDatagramServer<_, _>| Target::Unix(path),
                Some(tmp)
            )
        }
    }
}

/// A peer of a running server, with an address of its own, and where the logs stood when
/// it got that address: an earlier test's peer may have had the same port.
struct Peer {
    sock: Sock,
    since: usize,
}

enum Sock {
    Udp(UdpSocket, SocketAddr),
    Unix(UnixDatagram, PathBuf, TempPath),
}

impl Peer {
    fn new(target: &Target) -> Self {
        let since = logs().len();
        let sock = match target {
            Target::Udp(to) => {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                Sock::Udp(s, *to)
            }
            Target::Unix(to) => {
                let me = TempPath::new("regress-peer");
                let s = UnixDatagram::bind(me.path()).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                Sock::Unix(s, to.clone(), me)
            }
        };
        Self { sock, since }
    }

    /// How the server names this peer in its logs.
    fn name(&self) -> String {
        match &self.sock {
            Sock::Udp(s, _) => s.local_addr().unwrap().to_string(),
            Sock::Unix(_, _, me) => me.path().display().to_string(),
        }
    }

    fn send(&self, text: &str) {
        match &self.sock {
            Sock::Udp(s, to) => s.send_to(text.as_bytes(), to).map(drop),
            Sock::Unix(s, to, _) => s.send_to(text.as_bytes(), to).map(drop),
        }
        .unwrap();
    }

    /// The next answer; fails the test after [`LIMIT`].
    fn recv(&self) -> String {
        let mut buf = [0u8; 1024];
        let n = match &self.sock {
            Sock::Udp(s, _) => s.recv(&mut buf),
            Sock::Unix(s, _, _) => s.recv(&mut buf),
        }
        .expect("an answer in time (is the server still serving?)");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn ask(&self, text: &str) -> String {
        self.send(text);
        self.recv()
    }

    fn errors(&self) -> Vec<Log> {
        logs().at(Level::ERROR, &self.name(), self.since)
    }

    fn warnings(&self) -> Vec<Log> {
        logs().at(Level::WARN, &self.name(), self.since)
    }
}

/// Runs `scenario` on every kind of server, naming the kind in a failure.
fn on_every_kind(factory_panics: usize, scenario: impl Fn(Kind, &Peer, &Peer)) {
    logs();
    for kind in KINDS {
        let server = start(kind, factory_panics);
        let (a, b) = (Peer::new(&server.target), Peer::new(&server.target));
        scenario(kind, &a, &b);
        server.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Containment of user code

#[test]
fn a_panicking_handler_factory_drops_one_datagram_and_the_server_goes_on() {
    on_every_kind(1, |kind, a, b| {
        a.send("a1"); // the factory panics: a1 is dropped
        assert_eq!(a.ask("a2"), "a2", "{kind:?}: the same peer later");
        assert_eq!(b.ask("b1"), "b1", "{kind:?}: another peer");
        let errors = a.errors();
        assert_eq!(errors.len(), 1, "{kind:?}: logged once: {errors:?}");
        assert!(
            errors[0].text.contains("on purpose"),
            "{kind:?}: {errors:?}"
        );
    });
}

#[test]
fn a_panicking_decode_ends_that_routine_and_the_server_goes_on() {
    on_every_kind(0, |kind, a, b| {
        a.send("decode-panic");
        assert_eq!(a.ask("a1"), "a1", "{kind:?}: the same peer later");
        assert_eq!(b.ask("b1"), "b1", "{kind:?}: another peer");
        let errors = a.errors();
        assert_eq!(errors.len(), 1, "{kind:?}: logged once: {errors:?}");
        assert!(
            errors[0].text.contains("on purpose"),
            "{kind:?}: {errors:?}"
        );
    });
}

#[test]
fn a_panicking_encode_ends_that_routine_and_the_server_goes_on() {
    on_every_kind(0, |kind, a, b| {
        a.send("encode");
        assert_eq!(a.ask("a1"), "a1", "{kind:?}: the same peer later");
        assert_eq!(b.ask("b1"), "b1", "{kind:?}: another peer");
        let errors = a.errors();
        assert_eq!(errors.len(), 1, "{kind:?}: logged once: {errors:?}");
        assert!(
            errors[0].text.contains("on purpose"),
            "{kind:?}: {errors:?}"
        );
    });
}

#[test]
fn a_panicking_error_display_or_handler_drop_is_contained() {
    on_every_kind(0, |kind, a, b| {
        a.send("bad-display");
        assert_eq!(a.ask("a1"), "a1", "{kind:?}");
        assert_eq!(a.errors().len(), 1, "{kind:?}: {:?}", a.errors());
        assert_eq!(b.ask("drop-panic"), "drop-panic", "{kind:?}");
        // The error replaces the handler: dropping the old one panics.
        b.send("bad-display");
        assert_eq!(b.ask("b1"), "b1", "{kind:?}");
        let errors = b.errors();
        assert_eq!(errors.len(), 2, "{kind:?}: error + drop: {errors:?}");
    });
}

#[test]
fn a_closed_send_returned_from_a_handler_is_one_warn_never_an_error() {
    on_every_kind(0, |kind, a, _| {
        a.send("closed");
        assert_eq!(a.ask("a1"), "a1", "{kind:?}");
        assert_eq!(a.warnings().len(), 1, "{kind:?}: {:?}", a.warnings());
        assert_eq!(a.errors().len(), 0, "{kind:?}: {:?}", a.errors());
    });
}

// ---------------------------------------------------------------------------------------
// Cancel safety of DatagramPeer (tokio async, UDP)

/// Drops a receive in `select!` or under `timeout`, then receives again; answers what the
/// second receive got (and how long it took).
struct Canceller {
    go: Arc<tokio::sync::Notify>,
}

fn outcome(r: Result<String, RecvError>, since: Instant) -> String {
    let ms = since.elapsed().as_millis();
    match r {
        Ok(t) => format!("got {t}"),
        Err(RecvError::Timeout) => format!("timeout {ms}"),
        Err(e) => format!("error {e:?}"),
    }
}

impl AsyncDatagramHandler for Canceller {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let first = client.recv().await?;
        let short = Duration::from_millis(50);
        match first.as_str() {
            // recv() dropped in select!, then recv_timeout(300 ms).
            "select-then-timeout" => {
                tokio::select! {
                    r = client.recv() => return Err(format!("unexpected {r:?}").into()),
                    () = tokio::time::sleep(short) => {}
                }
                let t0 = Instant::now();
                let r = client.recv_timeout(Duration::from_millis(300)).await;
                client.send(&outcome(r, t0)).await?;
            }
            // recv_timeout(200 ms) dropped under timeout, then recv_timeout(600 ms): it must
            // not end at the stale 200 ms deadline.
            "stale-deadline" => {
                let dropped = timeout(short, client.recv_timeout(Duration::from_millis(200))).await;
                assert!(dropped.is_err(), "the first receive is dropped");
                let t0 = Instant::now();
                let r = client.recv_timeout(Duration::from_millis(600)).await;
                client.send(&outcome(r, t0)).await?;
            }
            // recv() dropped, then the peer sends p1, p2: both come, in order.
            "then-datagrams" => {
                assert!(timeout(short, client.recv()).await.is_err());
                client.send(&"armed".to_owned()).await?;
                let t0 = Instant::now();
                let r1 = outcome(client.recv_timeout(LIMIT).await, t0);
                let r2 = outcome(client.recv_timeout(LIMIT).await, t0);
                client.send(&format!("{r1}, {r2}")).await?;
            }
            // recv() dropped, then the routine returns once the test says so: a datagram
            // handed to the dropped receive meanwhile starts the next routine.
            "then-return" => {
                assert!(timeout(short, client.recv()).await.is_err());
                client.send(&"armed".to_owned()).await?;
                let _ = timeout(LIMIT, self.go.notified()).await;
            }
            other => client.send(&format!("echo {other}")).await?,
        }
        Ok(())
    }
}

async fn udp_async<H, F>(
    make: F,
) -> (
    AsyncUdpServer<F, TouchyText>,
    tokio::task::JoinHandle<Result<(), easynet::aio::ServerError>>,
)
where
    F: Fn(&ConnInfo) -> H + Send + Sync + 'static,
    H: AsyncDatagramHandler<Request = String, Response = String>,
{
    let server = AsyncUdpServer::builder(Datagram::new(Touchy), make)
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(3))
        .build_async()
        .unwrap();
    let (tx, mut up) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let run = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();
    (server, run)
}

async fn async_peer(to: SocketAddr) -> tokio::net::UdpSocket {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(to).await.unwrap();
    s
}

async fn answer(s: &tokio::net::UdpSocket) -> String {
    let mut buf = [0u8; 1024];
    let n = timeout(LIMIT, s.recv(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// "timeout N": the wait ended after N ms.
fn waited(answer: &str) -> u128 {
    answer
        .strip_prefix("timeout ")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("a timeout, got {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_datagram_receives_are_cancel_safe() {
    let go = Arc::new(tokio::sync::Notify::new());
    let g = go.clone();
    let (server, run) = udp_async(move |_: &ConnInfo| Canceller { go: g.clone() }).await;
    let to = server.addresses()[0];

    let p = async_peer(to).await;
    p.send(b"select-then-timeout").await.unwrap();
    let got = answer(&p).await;
    assert!((290..5_000).contains(&waited(&got)), "{got}");

    let p = async_peer(to).await;
    p.send(b"stale-deadline").await.unwrap();
    let got = answer(&p).await;
    assert!(
        (590..5_000).contains(&waited(&got)),
        "not the stale deadline: {got}"
    );

    let p = async_peer(to).await;
    p.send(b"then-datagrams").await.unwrap();
    assert_eq!(answer(&p).await, "armed");
    p.send(b"p1").await.unwrap();
    p.send(b"p2").await.unwrap();
    assert_eq!(answer(&p).await, "got p1, got p2", "no datagram lost");

    let p = async_peer(to).await;
    p.send(b"then-return").await.unwrap();
    assert_eq!(answer(&p).await, "armed");
    p.send(b"p1").await.unwrap();
    go.notify_one();
    assert_eq!(
        answer(&p).await,
        "echo p1",
        "not lost with the ended routine"
    );

    timeout(LIMIT, server.shutdown()).await.unwrap();
    run.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------
// shutdown() and close() cancel async routines

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Takes its datagram, says so, then awaits for ever holding a [`DropFlag`].
struct Forever {
    dropped: Arc<AtomicBool>,
    started: Arc<tokio::sync::Notify>,
}

impl AsyncDatagramHandler for Forever {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let _flag = DropFlag(self.dropped.clone());
        client.recv().await?;
        self.started.notify_one();
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn forever() -> (
    impl Fn(&ConnInfo) -> Forever + Send + Sync + 'static,
    Arc<AtomicBool>,
    Arc<tokio::sync::Notify>,
) {
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(tokio::sync::Notify::new());
    let (d, s) = (dropped.clone(), started.clone());
    let make = move |_: &ConnInfo| Forever {
        dropped: d.clone(),
        started: s.clone(),
    };
    (make, dropped, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_shutdown_cancels_async_routines_before_it_returns() {
    let (make, dropped, started) = forever();
    let (server, run) = udp_async(make).await;
    let p = async_peer(server.addresses()[0]).await;
    p.send(b"hi").await.unwrap();
    timeout(LIMIT, started.notified()).await.unwrap();
    timeout(LIMIT, server.shutdown()).await.unwrap();
    assert!(
        dropped.load(Ordering::SeqCst),
        "the routine's future was dropped"
    );
    run.await.unwrap().unwrap();
    server.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_close_cancels_async_routines_and_frees_the_port() {
    let (make, dropped, started) = forever();
    let (server, run) = udp_async(make).await;
    let addr = server.addresses()[0];
    let p = async_peer(addr).await;
    p.send(b"hi").await.unwrap();
    timeout(LIMIT, started.notified()).await.unwrap();
    server.close();
    timeout(LIMIT, run).await.unwrap().unwrap().unwrap();
    assert!(
        dropped.load(Ordering::SeqCst),
        "the routine's future was dropped"
    );
    let again = UdpSocket::bind(addr);
    assert!(again.is_ok(), "the port is free: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_shutdown_and_close_cancel_async_routines() {
    let tmp = TempPath::new("regress-forever");
    let (make, dropped, started) = forever();
    let server = AsyncUnixDatagramServer::builder(Datagram::new(Touchy), make)
        .path(tmp.path())
        .build_async()
        .unwrap();
    for end in ["shutdown", "close"] {
        dropped.store(false, Ordering::SeqCst);
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve_notify(tx).await });
        timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();
        let me = TempPath::new("regress-forever-peer");
        let p = tokio::net::UnixDatagram::bind(me.path()).unwrap();
        p.send_to(b"hi", tmp.path()).await.unwrap();
        timeout(LIMIT, started.notified()).await.unwrap();
        if end == "shutdown" {
            timeout(LIMIT, server.shutdown()).await.unwrap();
            assert!(
                dropped.load(Ordering::SeqCst),
                "{end}: the routine was dropped"
            );
            run.await.unwrap().unwrap();
        } else {
            server.close();
            timeout(LIMIT, run).await.unwrap().unwrap().unwrap();
            assert!(
                dropped.load(Ordering::SeqCst),
                "{end}: the routine was dropped"
            );
            assert!(!tmp.path().exists(), "close removes the socket file");
        }
    }
}
