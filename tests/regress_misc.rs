//! Regressions on both drivers (where they apply): a fault in user code or an extreme value
//! from a handler ends at most that connection or that datagram peer's routine, never the
//! server.
//!
//! (a) a panic in the handler factory (`Service::new_handler`): TCP and UDP, portable and
//!     async handlers;
//! (b) a panic in a user `Framing` or `Decode`: TCP (framing and decode) and UDP (decode);
//! (c) `Next::recv_timeout(Duration::MAX)` from a portable handler, `recv_timeout(
//!     Duration::MAX)` in an async handler: treated as no timeout; the connection goes on.
//!
//! Each test records what it saw (answers, how the run ended) and asserts once, so a failure
//! shows the whole picture; after the first missing answer it asks nothing more (`None`).

#![cfg(all(feature = "tokio", feature = "mio"))]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use easynet::aio::{AsyncDatagramHandler, AsyncStreamHandler, DatagramPeer, RecvError, StreamPeer};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    Service, StreamContext, StreamHandler,
};
use easynet::protocol::{
    Datagram, DatagramServerProtocol, Decode, DeserializeError, Encode, Framing, Lines, ParseError,
    SerializeError, Stream, StreamServerProtocol, Utf8,
};

/// Every read, connect and wait of this file gives up after this.
const LIMIT: Duration = Duration::from_secs(10);
/// How long a client waits for one answer; a dead server costs this per question, so the
/// scenarios stop asking after the first missing answer.
const ANSWER: Duration = Duration::from_secs(2);
/// How long to wait for an answer nobody needs (to a datagram that made the server panic).
const GLANCE: Duration = Duration::from_millis(300);
/// The servers' shutdown timeout (short: nothing here needs to drain).
const SHUTDOWN: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// Handlers

/// Line echo; "forever" answers "ok" and then waits with `Next::recv_timeout(Duration::MAX)`.
struct Echo;

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "forever" => {
                cx.send("ok".to_owned())?;
                return Ok(Next::recv_timeout(Duration::MAX));
            }
            Received::Request(l) => cx.send(&l)?,
            Received::Timeout => cx.send("timeout".to_owned())?,
            Received::ParseError(e) => cx.send(format!("error: {e}"))?,
        }
        Ok(Next::recv())
    }
}

/// Datagram echo; "forever" answers "ok" and then waits with
/// `Next::recv_timeout(Duration::MAX)`.
struct DgramEcho;

impl DatagramHandler for DgramEcho {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        match r {
            Received::Request(l) if l == "forever" => {
                cx.send("ok".to_owned())?;
                return Ok(Next::recv_timeout(Duration::MAX));
            }
            Received::Request(l) => cx.send(&l)?,
            Received::Timeout => cx.send("timeout".to_owned())?,
            Received::ParseError(e) => cx.send(format!("error: {e}"))?,
        }
        Ok(Next::Close)
    }
}

/// Async line echo; after "forever" (answered "ok") every receive is
/// `recv_timeout(Duration::MAX)`.
#[derive(Default)]
struct AsyncEcho {
    forever: bool,
}

impl AsyncStreamHandler for AsyncEcho {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let got = if self.forever {
            client.recv_timeout(Duration::MAX).await
        } else {
            client.recv().await
        };
        match got {
            Ok(l) if l == "forever" => {
                self.forever = true;
                client.send(&"ok".to_owned()).await?;
            }
            Ok(l) => client.send(&l).await?,
            Err(RecvError::Timeout) => client.send(&"timeout".to_owned()).await?,
            Err(RecvError::Parse(e)) => client.send(&format!("error: {e}")).await?,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// Async datagram echo; "forever" answers "ok", then waits for the peer's next datagram
/// with `recv_timeout(Duration::MAX)` and echoes it.
struct AsyncDgramEcho;

impl AsyncDatagramHandler for AsyncDgramEcho {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let first = match client.recv().await {
            Ok(l) => l,
            Err(RecvError::Parse(e)) => {
                client.send(&format!("error: {e}")).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if first == "forever" {
            client.send(&"ok".to_owned()).await?;
            match client.recv_timeout(Duration::MAX).await {
                Ok(l) => client.send(&l).await?,
                Err(RecvError::Timeout) => client.send(&"timeout".to_owned()).await?,
                Err(e) => return Err(e.into()),
            }
        } else {
            client.send(&first).await?;
        }
        Ok(())
    }
}

/// A service whose first handler is never made: the factory panics for the first connection
/// or datagram peer.
fn first_panics<H: Send + 'static>(
    make: fn() -> H,
) -> impl Fn(&ConnInfo) -> H + Send + Sync + 'static {
    let first = Arc::new(AtomicBool::new(true));
    move |_: &ConnInfo| {
        if first.swap(false, Ordering::SeqCst) {
            panic!("handler factory panicked on purpose");
        }
        make()
    }
}

// ---------------------------------------------------------------------------------------
// A framing and a serializer that panic on a magic input

/// `Lines`, but decoding the line "magic-frame" panics.
#[derive(Clone, Default)]
struct PanickyLines(Lines);

impl Framing for PanickyLines {
    type State = <Lines as Framing>::State;

    fn decode(
        &self,
        state: &mut Self::State,
        src: &mut BytesMut,
    ) -> Result<Option<BytesMut>, ParseError> {
        let frame = self.0.decode(state, src)?;
        if frame.as_deref() == Some(b"magic-frame") {
            panic!("framing panicked on purpose");
        }
        Ok(frame)
    }

    fn encode_start(&self, dst: &mut BytesMut) -> usize {
        self.0.encode_start(dst)
    }

    fn encode_end(&self, dst: &mut BytesMut, mark: usize) -> Result<(), SerializeError> {
        self.0.encode_end(dst, mark)
    }
}

/// `Utf8`, but decoding the payload "magic-decode" panics.
#[derive(Clone, Copy)]
struct PanickyText(Utf8);

impl Decode<String> for PanickyText {
    fn decode(&self, payload: BytesMut) -> Result<String, DeserializeError> {
        if &payload[..] == b"magic-decode" {
            panic!("decoder panicked on purpose");
        }
        self.0.decode(payload)
    }
}

impl Encode<String> for PanickyText {
    fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), SerializeError> {
        self.0.encode(item, dst)
    }
}

fn panicky_stream() -> Stream<PanickyLines, PanickyText, String, String> {
    Stream::new(PanickyLines::default(), PanickyText(Utf8::new()))
}

fn panicky_datagram() -> Datagram<PanickyText, String, String> {
    Datagram::new(PanickyText(Utf8::new()))
}

// ---------------------------------------------------------------------------------------
// Servers

/// A server in the background. `stop` shuts it down and reports how its run ended (an
/// error, or a panic of the serving thread, is an `Err`).
struct Running {
    addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
}

impl Running {
    fn stop(mut self) -> Result<(), String> {
        let f = self.stop.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(LIMIT + LIMIT) {
            Ok(r) => r,
            Err(_) => Err("the server did not stop in time".into()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(f) = self.stop.take() {
            let _ = f();
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

/// Spawns `serve` on `rt`, waits until it is up, returns how to stop it.
fn tokio_running<F>(
    rt: tokio::runtime::Runtime,
    serve: impl FnOnce(tokio::sync::watch::Sender<bool>) -> F,
    shutdown: impl Future<Output = ()> + Send + 'static,
    addr: impl FnOnce() -> SocketAddr,
) -> Running
where
    F: Future<Output = Result<(), easynet::aio::ServerError>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let task = rt.spawn(serve(tx));
    rt.block_on(async {
        tokio::time::timeout(LIMIT, rx.wait_for(|up| *up))
            .await
            .expect("serving within the limit")
            .expect("serving");
    });
    let addr = addr();
    Running {
        addr,
        stop: Some(Box::new(move || {
            let r = rt.block_on(async {
                if tokio::time::timeout(LIMIT, shutdown).await.is_err() {
                    return Err("shutdown() did not return in time".to_owned());
                }
                match tokio::time::timeout(LIMIT, task).await {
                    Err(_) => Err("serve did not return in time".to_owned()),
                    Ok(Err(e)) => Err(format!("the serve task failed: {e}")),
                    Ok(Ok(Err(e))) => Err(format!("serve returned an error: {e}")),
                    Ok(Ok(Ok(()))) => Ok(()),
                }
            });
            rt.shutdown_timeout(Duration::ZERO);
            r
        })),
    }
}

/// Portable stream handlers on a tokio `AsyncTcpServer`.
fn tokio_tcp<P, S>(protocol: P, service: S) -> Running
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
{
    let server = easynet::aio::AsyncTcpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(SHUTDOWN)
        .build()
        .unwrap();
    let (s, t) = (server.clone(), server.clone());
    tokio_running(
        runtime(),
        move |tx| async move { s.serve_notify(tx).await },
        async move { t.shutdown().await },
        move || server.addresses()[0],
    )
}

/// Async stream handlers on a tokio `AsyncTcpServer` (`build_async`).
fn tokio_tcp_async<P, S>(protocol: P, service: S) -> Running
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: AsyncStreamHandler<Request = P::Request, Response = P::Response>,
    P::Response: Sync,
{
    let server = easynet::aio::AsyncTcpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(SHUTDOWN)
        .build_async()
        .unwrap();
    let (s, t) = (server.clone(), server.clone());
    tokio_running(
        runtime(),
        move |tx| async move { s.serve_notify(tx).await },
        async move { t.shutdown().await },
        move || server.addresses()[0],
    )
}

/// Portable datagram handlers on a tokio `AsyncUdpServer`.
fn tokio_udp<P, S>(protocol: P, service: S) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    let server = easynet::aio::AsyncUdpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(SHUTDOWN)
        .build()
        .unwrap();
    let (s, t) = (server.clone(), server.clone());
    tokio_running(
        runtime(),
        move |tx| async move { s.serve_notify(tx).await },
        async move { t.shutdown().await },
        move || server.addresses()[0],
    )
}

/// Async datagram handlers on a tokio `AsyncUdpServer` (`build_async`).
fn tokio_udp_async<P, S>(protocol: P, service: S) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P::Response: Sync,
{
    let server = easynet::aio::AsyncUdpServer::builder_with_service(protocol, service)
        .host("127.0.0.1")
        .shutdown_timeout(SHUTDOWN)
        .build_async()
        .unwrap();
    let (s, t) = (server.clone(), server.clone());
    tokio_running(
        runtime(),
        move |tx| async move { s.serve_notify(tx).await },
        async move { t.shutdown().await },
        move || server.addresses()[0],
    )
}

/// A mio server on a `ServerThread`; a panic of its thread makes `stop` an `Err`.
fn mio_running(server: impl easynet::blocking::BlockingServer) -> Running {
    let mut thread = easynet::blocking::ServerThread::start(server).unwrap();
    let addr = thread.addresses()[0];
    Running {
        addr,
        stop: Some(Box::new(move || {
            thread
                .join(None)
                .map_err(|e| format!("the run ended with: {e}"))
        })),
    }
}

fn mio_tcp<P, S>(protocol: P, service: S) -> Running
where
    P: StreamServerProtocol,
    S: Service,
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
{
    mio_running(
        easynet::blocking::TcpServer::builder_with_service(protocol, service)
            .host("127.0.0.1")
            .shutdown_timeout(SHUTDOWN)
            .build()
            .unwrap(),
    )
}

fn mio_udp<P, S>(protocol: P, service: S) -> Running
where
    P: DatagramServerProtocol,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
{
    mio_running(
        easynet::blocking::UdpServer::builder_with_service(protocol, service)
            .host("127.0.0.1")
            .shutdown_timeout(SHUTDOWN)
            .build()
            .unwrap(),
    )
}

// ---------------------------------------------------------------------------------------
// Clients

/// A blocking line client.
struct Line {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Line {
    fn connect(addr: SocketAddr) -> Option<Self> {
        let s = TcpStream::connect_timeout(&addr, ANSWER).ok()?;
        s.set_read_timeout(Some(ANSWER)).unwrap();
        s.set_write_timeout(Some(ANSWER)).unwrap();
        Some(Self {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        })
    }

    /// Sends `line`, returns the answer: `None` on EOF, reset or timeout.
    fn ask(&mut self, line: &str) -> Option<String> {
        self.w.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut got = String::new();
        match self.r.read_line(&mut got) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(got.trim_end_matches('\n').to_owned()),
        }
    }

    /// True if the server closed the connection (EOF or reset) within [`ANSWER`].
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match self.r.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// One question on a fresh connection; `None` if it could not connect or got no answer.
fn ask_once(addr: SocketAddr, line: &str) -> Option<String> {
    Line::connect(addr)?.ask(line)
}

/// A UDP peer connected to the server.
fn peer(addr: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(addr).unwrap();
    s.set_read_timeout(Some(ANSWER)).unwrap();
    s
}

/// Sends one datagram, returns the answer (`None` after [`ANSWER`]).
fn ask_udp(s: &UdpSocket, text: &str) -> Option<String> {
    ask_udp_within(s, text, ANSWER)
}

fn ask_udp_within(s: &UdpSocket, text: &str, wait: Duration) -> Option<String> {
    s.set_read_timeout(Some(wait)).unwrap();
    s.send(text.as_bytes()).ok()?;
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn hello() -> Option<String> {
    Some("hello".to_owned())
}

// ---------------------------------------------------------------------------------------
// (a) A panic in the handler factory

/// The first connection's handler factory panics; a second client must still be served
/// and the run must end without error.
fn factory_panic_tcp(name: &str, server: Running) {
    let first = Line::connect(server.addr).map(|mut c| c.ask("first"));
    let second = ask_once(server.addr, "hello");
    let third = second.as_ref().and_then(|_| ask_once(server.addr, "hello"));
    let stopped = server.stop();
    assert!(
        second == hello() && third == hello() && stopped.is_ok(),
        "{name}: after a panic in the handler factory for the first connection (it got \
         {first:?}): second client got {second:?}, third {third:?} (want \"hello\"); \
         the run ended with {stopped:?} (want Ok)"
    );
}

#[test]
fn mio_tcp_panic_in_handler_factory_does_not_stop_the_server() {
    factory_panic_tcp("mio TCP", mio_tcp(Stream::lines(), first_panics(|| Echo)));
}

#[test]
fn tokio_tcp_panic_in_handler_factory_does_not_stop_the_server() {
    factory_panic_tcp(
        "tokio TCP",
        tokio_tcp(Stream::lines(), first_panics(|| Echo)),
    );
}

#[test]
fn tokio_tcp_async_panic_in_handler_factory_does_not_stop_the_server() {
    factory_panic_tcp(
        "tokio TCP, async handlers",
        tokio_tcp_async(Stream::lines(), first_panics(AsyncEcho::default)),
    );
}

/// The first peer's handler factory panics; another peer (and the first one again) must
/// still be served and the run must end without error.
fn factory_panic_udp(name: &str, server: Running) {
    let a = peer(server.addr);
    let first = ask_udp_within(&a, "first", GLANCE);
    let b = peer(server.addr);
    let other = ask_udp(&b, "hello");
    let again = other.as_ref().and_then(|_| ask_udp(&a, "hello"));
    let stopped = server.stop();
    assert!(
        other == hello() && again == hello() && stopped.is_ok(),
        "{name}: after a panic in the handler factory for the first peer (it got {first:?}): \
         another peer got {other:?}, the first peer again {again:?} (want \"hello\"); \
         the run ended with {stopped:?} (want Ok)"
    );
}

#[test]
fn mio_udp_panic_in_handler_factory_does_not_stop_the_server() {
    factory_panic_udp(
        "mio UDP",
        mio_udp(Datagram::lines(), first_panics(|| DgramEcho)),
    );
}

#[test]
fn tokio_udp_panic_in_handler_factory_does_not_stop_the_server() {
    factory_panic_udp(
        "tokio UDP",
        tokio_udp(Datagram::lines(), first_panics(|| DgramEcho)),
    );
}

#[test]
fn tokio_udp_async_panic_in_handler_factory_does_not_stop_the_server() {
    factory_panic_udp(
        "tokio UDP, async handlers",
        tokio_udp_async(Datagram::lines(), first_panics(|| AsyncDgramEcho)),
    );
}

// ---------------------------------------------------------------------------------------
// (b) A panic in a user framing or decoder

/// A connection whose framing panics, then one whose decoder panics: each is closed, and
/// the server keeps serving everyone else.
fn codec_panic_tcp(name: &str, server: Running) {
    let mut bystander = Line::connect(server.addr).expect("connect");
    let before = bystander.ask("hello");
    let mut framing = Line::connect(server.addr).expect("connect");
    let framing_answer = framing.ask("magic-frame");
    let framing_closed = framing.closed();
    let after_framing = bystander.ask("hello");
    let (mut decoder_answer, mut decoder_closed) = (None, false);
    let (mut after_decoder, mut newcomer) = (None, None);
    if after_framing.is_some() {
        let mut decoder = Line::connect(server.addr).expect("connect");
        decoder_answer = decoder.ask("magic-decode");
        decoder_closed = decoder.closed();
        after_decoder = bystander.ask("hello");
        newcomer = after_decoder
            .as_ref()
            .and_then(|_| ask_once(server.addr, "hello"));
    }
    let stopped = server.stop();
    assert!(
        before == hello()
            && after_framing == hello()
            && after_decoder == hello()
            && newcomer == hello()
            && framing_closed
            && decoder_closed
            && stopped.is_ok(),
        "{name}: a panicking framing (its connection got {framing_answer:?}, closed: \
         {framing_closed}) and a panicking decoder (got {decoder_answer:?}, closed: \
         {decoder_closed}); another client got {before:?} before, {after_framing:?} and \
         {after_decoder:?} after, a new client {newcomer:?} (want \"hello\" each); the run \
         ended with {stopped:?} (want Ok)"
    );
}

#[test]
fn mio_tcp_panicking_framing_or_decoder_closes_only_its_connection() {
    codec_panic_tcp("mio TCP", mio_tcp(panicky_stream(), |_: &ConnInfo| Echo));
}

#[test]
fn tokio_tcp_panicking_framing_or_decoder_closes_only_its_connection() {
    codec_panic_tcp(
        "tokio TCP",
        tokio_tcp(panicky_stream(), |_: &ConnInfo| Echo),
    );
}

#[test]
fn tokio_tcp_async_panicking_framing_or_decoder_closes_only_its_connection() {
    codec_panic_tcp(
        "tokio TCP, async handlers",
        tokio_tcp_async(panicky_stream(), |_: &ConnInfo| AsyncEcho::default()),
    );
}

/// A datagram whose decoding panics: the server keeps serving that peer and the others.
fn codec_panic_udp(name: &str, server: Running) {
    let a = peer(server.addr);
    let before = ask_udp(&a, "hello");
    let magic = ask_udp_within(&a, "magic-decode", GLANCE);
    let b = peer(server.addr);
    let other = ask_udp(&b, "hello");
    let again = other.as_ref().and_then(|_| ask_udp(&a, "hello"));
    let stopped = server.stop();
    assert!(
        before == hello() && other == hello() && again == hello() && stopped.is_ok(),
        "{name}: a datagram whose decoding panics (answered {magic:?}); the same peer got \
         {before:?} before and {again:?} after, another peer {other:?} (want \"hello\" \
         each); the run ended with {stopped:?} (want Ok)"
    );
}

#[test]
fn mio_udp_panicking_decoder_does_not_stop_the_server() {
    codec_panic_udp(
        "mio UDP",
        mio_udp(panicky_datagram(), |_: &ConnInfo| DgramEcho),
    );
}

#[test]
fn tokio_udp_panicking_decoder_does_not_stop_the_server() {
    codec_panic_udp(
        "tokio UDP",
        tokio_udp(panicky_datagram(), |_: &ConnInfo| DgramEcho),
    );
}

#[test]
fn tokio_udp_async_panicking_decoder_does_not_stop_the_server() {
    codec_panic_udp(
        "tokio UDP, async handlers",
        tokio_udp_async(panicky_datagram(), |_: &ConnInfo| AsyncDgramEcho),
    );
}

// ---------------------------------------------------------------------------------------
// (c) A receive timeout of Duration::MAX

/// "forever" makes the handler wait with a `Duration::MAX` timeout: that is no timeout, and
/// the same connection goes on being served, as do others.
fn recv_timeout_max_tcp(name: &str, server: Running) {
    let mut c = Line::connect(server.addr).expect("connect");
    let ok = c.ask("forever");
    let same = c.ask("hello");
    let again = same.as_ref().and_then(|_| c.ask("forever"));
    let same_again = again.as_ref().and_then(|_| c.ask("hello"));
    let other = ask_once(server.addr, "hello");
    let stopped = server.stop();
    assert!(
        ok.as_deref() == Some("ok")
            && again.as_deref() == Some("ok")
            && same == hello()
            && same_again == hello()
            && other == hello()
            && stopped.is_ok(),
        "{name}: a receive with a Duration::MAX timeout: \"forever\" got {ok:?} (want \
         \"ok\"), then the same connection got {same:?}, {again:?}, {same_again:?}; another \
         client {other:?} (want \"hello\"); the run ended with {stopped:?} (want Ok)"
    );
}

#[test]
fn mio_tcp_recv_timeout_duration_max_is_no_timeout() {
    recv_timeout_max_tcp("mio TCP", mio_tcp(Stream::lines(), |_: &ConnInfo| Echo));
}

#[test]
fn tokio_tcp_recv_timeout_duration_max_is_no_timeout() {
    recv_timeout_max_tcp("tokio TCP", tokio_tcp(Stream::lines(), |_: &ConnInfo| Echo));
}

#[test]
fn tokio_tcp_async_recv_timeout_duration_max_is_no_timeout() {
    recv_timeout_max_tcp(
        "tokio TCP, async handlers",
        tokio_tcp_async(Stream::lines(), |_: &ConnInfo| AsyncEcho::default()),
    );
}

/// The same for a datagram routine: after "forever" the routine waits for the peer's next
/// datagram with a `Duration::MAX` timeout and echoes it.
fn recv_timeout_max_udp(name: &str, server: Running) {
    let a = peer(server.addr);
    let ok = ask_udp(&a, "forever");
    let next = ok.as_ref().and_then(|_| ask_udp(&a, "hello"));
    let b = peer(server.addr);
    let other = ask_udp(&b, "hello");
    let stopped = server.stop();
    assert!(
        ok.as_deref() == Some("ok") && next == hello() && other == hello() && stopped.is_ok(),
        "{name}: a routine waiting with a Duration::MAX timeout: \"forever\" got {ok:?} \
         (want \"ok\"), the next datagram {next:?}, another peer {other:?} (want \
         \"hello\"); the run ended with {stopped:?} (want Ok)"
    );
}

#[test]
fn mio_udp_recv_timeout_duration_max_is_no_timeout() {
    recv_timeout_max_udp(
        "mio UDP",
        mio_udp(Datagram::lines(), |_: &ConnInfo| DgramEcho),
    );
}

#[test]
fn tokio_udp_recv_timeout_duration_max_is_no_timeout() {
    recv_timeout_max_udp(
        "tokio UDP",
        tokio_udp(Datagram::lines(), |_: &ConnInfo| DgramEcho),
    );
}

#[test]
fn tokio_udp_async_recv_timeout_duration_max_is_no_timeout() {
    recv_timeout_max_udp(
        "tokio UDP, async handlers",
        tokio_udp_async(Datagram::lines(), |_: &ConnInfo| AsyncDgramEcho),
    );
}
