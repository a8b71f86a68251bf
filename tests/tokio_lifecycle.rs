//! Tokio servers' run lifecycle: dropping `serve` (select!, timeout) is a graceful
//! shutdown, a handler can stop its own server, `serve_with_shutdown`.

#![cfg(feature = "tokio")]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use easynet::aio::{
    AsyncStreamHandler, AsyncTcpServer, AsyncUdpClient, AsyncUdpServer, ServerError, StreamPeer,
};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    Service, StreamContext, StreamHandler,
};
use easynet::protocol::{Datagram, Lines, Stream, Utf8};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);
/// How long a handler stopping its own server may take (the default shutdown timeout is 30 s).
const PROMPT: Duration = Duration::from_secs(5);

type Lines8 = Stream<Lines, Utf8, String, String>;
type Maker<H> = Box<dyn Fn(&ConnInfo) -> H + Send + Sync>;

/// A service that counts its teardowns.
struct Svc<H> {
    make: Maker<H>,
    teardowns: watch::Sender<usize>,
}

impl<H: Send + 'static> Service for Svc<H> {
    type Handler = H;
    fn new_handler(&self, info: &ConnInfo) -> H {
        (self.make)(info)
    }
    fn on_stop(&self) {
        self.teardowns.send_modify(|n| *n += 1);
    }
}

fn svc<H>(
    make: impl Fn(&ConnInfo) -> H + Send + Sync + 'static,
) -> (Svc<H>, watch::Receiver<usize>) {
    let (teardowns, rx) = watch::channel(0);
    let make: Maker<H> = Box::new(make);
    (Svc { make, teardowns }, rx)
}

async fn torn_down(rx: &mut watch::Receiver<usize>, n: usize) {
    timeout(LIMIT, rx.wait_for(|t| *t >= n))
        .await
        .expect("on_stop did not run")
        .unwrap();
}

/// Echoes lines; "slow X" reports it was read, works 300 ms, then answers X.
struct SlowEcho {
    got: mpsc::UnboundedSender<String>,
}

impl AsyncStreamHandler for SlowEcho {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        if let Some(rest) = line.strip_prefix("slow ") {
            let _ = self.got.send(rest.to_owned());
            tokio::time::sleep(Duration::from_millis(300)).await; // the work, not a wait for an event
            client.send(&rest.to_owned()).await?;
        } else {
            client.send(&line).await?;
        }
        Ok(())
    }
}

type TcpServer = AsyncTcpServer<Svc<SlowEcho>, Lines8>;

fn tcp_server() -> (
    TcpServer,
    watch::Receiver<usize>,
    mpsc::UnboundedReceiver<String>,
) {
    let (got, got_rx) = mpsc::unbounded_channel();
    let (service, teardowns) = svc(move |_| SlowEcho { got: got.clone() });
    let server = AsyncTcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .port(0)
        .shutdown_timeout(Duration::from_secs(2))
        .build_async()
        .unwrap();
    (server, teardowns, got_rx)
}

struct Peer {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Peer {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let (r, w) = timeout(LIMIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap()
            .into_split();
        Self {
            lines: BufReader::new(r).lines(),
            write: w,
        }
    }
    async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    /// The next line; `None` at the end of the stream (or a reset).
    async fn line(&mut self) -> Option<String> {
        timeout(LIMIT, self.lines.next_line())
            .await
            .expect("no answer in time")
            .ok()
            .flatten()
    }
}

/// Serves `server` in a task until `stop` fires, then drops the `serve` future (the
/// usual select! pattern); returns once it is up. The task yields `None` if it was dropped.
async fn serve_until<F>(
    serve: impl FnOnce(watch::Sender<bool>) -> F,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Option<Result<(), ServerError>>>,
)
where
    F: Future<Output = Result<(), ServerError>> + Send + 'static,
{
    let (up_tx, mut up) = watch::channel(false);
    let (stop_tx, stop) = oneshot::channel::<()>();
    let serving = serve(up_tx);
    let task = tokio::spawn(async move {
        tokio::select! {
            r = serving => Some(r),
            _ = stop => None,
        }
    });
    timeout(LIMIT, up.wait_for(|u| *u))
        .await
        .expect("not up in time")
        .expect("serve returned before it was up");
    (stop_tx, task)
}

/// Serves in a task with `serve`; returns once up, failing if the run ends first.
async fn start<F>(
    serve: impl FnOnce(watch::Sender<bool>) -> F,
) -> tokio::task::JoinHandle<Result<(), ServerError>>
where
    F: Future<Output = Result<(), ServerError>> + Send + 'static,
{
    let (up_tx, mut up) = watch::channel(false);
    let mut task = tokio::spawn(serve(up_tx));
    tokio::select! {
        biased; // a run that ended also dropped `up`: report how it ended
        r = &mut task => panic!("serve returned {r:?} instead of serving"),
        r = up.wait_for(|u| *u) => { r.expect("serve ended"); }
        () = tokio::time::sleep(LIMIT) => panic!("not up in time"),
    }
    task
}

#[tokio::test]
async fn dropping_serve_forever_shuts_tcp_down_gracefully_and_it_serves_again() {
    let (server, mut teardowns, mut got) = tcp_server();
    server.activate().await.unwrap();
    let addr = server.addresses()[0];
    let s = server.clone();
    let (stop, task) = serve_until(move |up| async move { s.serve_notify(up).await }).await;

    let mut a = Peer::connect(addr).await;
    a.send("hello").await;
    assert_eq!(a.line().await.as_deref(), Some("hello"));
    a.send("slow one").await;
    assert_eq!(
        timeout(LIMIT, got.recv()).await.unwrap().as_deref(),
        Some("one")
    );
    stop.send(()).unwrap();
    assert!(
        task.await.unwrap().is_none(),
        "the serve future was dropped"
    );

    // Graceful: what was read is answered, then the connection ends; teardown runs.
    assert_eq!(a.line().await.as_deref(), Some("one"));
    assert_eq!(a.line().await, None);
    torn_down(&mut teardowns, 1).await;
    timeout(LIMIT, server.shutdown())
        .await
        .expect("shutdown hangs");
    assert!(server.is_listening());
    assert!(!server.is_serving());

    // Not wedged: it serves again, on the same socket.
    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    let mut b = Peer::connect(addr).await;
    b.send("again").await;
    assert_eq!(b.line().await.as_deref(), Some("again"));
    timeout(LIMIT, server.shutdown()).await.unwrap();
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    torn_down(&mut teardowns, 2).await;
    server.close();
}

#[tokio::test]
async fn serve_forever_under_timeout_then_again() {
    // The `tokio::time::timeout` shape: the run is cut when the time is up.
    let (server, mut teardowns, _got) = tcp_server();
    server.activate().await.unwrap();
    let addr = server.addresses()[0];
    let cut = timeout(Duration::from_millis(200), server.serve()).await;
    assert!(cut.is_err(), "serve returned early: {cut:?}");
    torn_down(&mut teardowns, 1).await;
    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    let mut c = Peer::connect(addr).await;
    c.send("x").await;
    assert_eq!(c.line().await.as_deref(), Some("x"));
    server.close();
    drop(c);
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
}

struct UdpEcho;

impl DatagramHandler for UdpEcho {
    type Request = String;
    type Response = String;
    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        if let Received::Request(text) = r {
            cx.send(&text)?;
        }
        Ok(Next::Close)
    }
}

type UdpServer = AsyncUdpServer<Svc<UdpEcho>, Datagram<Utf8, String, String>>;

fn udp_server() -> (UdpServer, watch::Receiver<usize>) {
    let (service, teardowns) = svc(|_| UdpEcho);
    let server = AsyncUdpServer::builder_with_service(Datagram::lines(), service)
        .host("127.0.0.1")
        .port(0)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    (server, teardowns)
}

async fn udp_echo(addr: std::net::SocketAddr, text: &str) {
    let mut c = AsyncUdpClient::connect(addr, Datagram::lines())
        .await
        .unwrap();
    c.send(&text.to_owned()).await.unwrap();
    assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), text);
}

#[tokio::test]
async fn dropping_serve_forever_shuts_udp_down_and_it_serves_again() {
    let (server, mut teardowns) = udp_server();
    server.activate().await.unwrap();
    let addr = server.addresses()[0];
    let s = server.clone();
    let (stop, task) = serve_until(move |up| async move { s.serve_notify(up).await }).await;
    udp_echo(addr, "hello").await;
    stop.send(()).unwrap();
    assert!(task.await.unwrap().is_none());

    torn_down(&mut teardowns, 1).await;
    timeout(LIMIT, server.shutdown())
        .await
        .expect("shutdown hangs");
    assert!(server.is_listening());

    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    udp_echo(addr, "again").await;
    server.close();
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    torn_down(&mut teardowns, 2).await;
}

/// Answers "stopping" to "stop", then stops its own server and says "stopped"; echoes the rest.
struct Stopper {
    server: Arc<OnceLock<StopServer>>,
}

type StopServer = AsyncTcpServer<Svc<Stopper>, Lines8>;

impl AsyncStreamHandler for Stopper {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        if line == "stop" {
            client.send(&"stopping".to_owned()).await?;
            if let Some(server) = self.server.get() {
                server.shutdown().await;
            }
            client.send(&"stopped".to_owned()).await?;
        } else {
            client.send(&line).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn async_handler_stops_its_own_server_promptly() {
    let cell = Arc::new(OnceLock::new());
    let (service, mut teardowns) = svc({
        let cell = cell.clone();
        move |_| Stopper {
            server: cell.clone(),
        }
    });
    // The default shutdown timeout (30 s): waiting for ourselves would show.
    let server: StopServer = AsyncTcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .port(0)
        .build_async()
        .unwrap();
    let _ = cell.set(server.clone());
    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    let addr = server.addresses()[0];

    let mut idle = Peer::connect(addr).await;
    idle.send("ping").await;
    assert_eq!(idle.line().await.as_deref(), Some("ping"));
    let mut c = Peer::connect(addr).await;
    c.send("stop").await;
    assert_eq!(c.line().await.as_deref(), Some("stopping"));
    timeout(PROMPT, task)
        .await
        .expect("serve waited for the handler that stopped it")
        .unwrap()
        .unwrap();
    torn_down(&mut teardowns, 1).await;
    assert_eq!(idle.line().await, None, "the other connection was closed");
    assert!(server.is_listening() && !server.is_serving());

    // And it serves again.
    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    let mut d = Peer::connect(addr).await;
    d.send("again").await;
    assert_eq!(d.line().await.as_deref(), Some("again"));
    server.close();
    drop(d);
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
}

/// A portable handler cannot await: it asks for the shutdown through a channel.
struct AskStop {
    stop: mpsc::UnboundedSender<()>,
}

impl StreamHandler for AskStop {
    type Request = String;
    type Response = String;
    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        if let Received::Request(line) = r {
            if line == "stop" {
                cx.send("stopping".to_owned())?;
                let _ = self.stop.send(());
            } else {
                cx.send(&line)?;
            }
        }
        Ok(Next::recv())
    }
}

#[tokio::test]
async fn portable_handler_stops_its_server_through_a_channel() {
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
    let (service, mut teardowns) = svc(move |_| AskStop {
        stop: stop_tx.clone(),
    });
    let server = AsyncTcpServer::builder_with_service(Stream::lines(), service)
        .host("127.0.0.1")
        .port(0)
        .build()
        .unwrap();
    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    let stopper = tokio::spawn({
        let server = server.clone();
        async move {
            if stop_rx.recv().await.is_some() {
                server.shutdown().await;
            }
        }
    });
    let mut c = Peer::connect(server.addresses()[0]).await;
    c.send("stop").await;
    assert_eq!(c.line().await.as_deref(), Some("stopping"));
    timeout(PROMPT, task)
        .await
        .expect("not stopped promptly")
        .unwrap()
        .unwrap();
    timeout(PROMPT, stopper).await.unwrap().unwrap();
    torn_down(&mut teardowns, 1).await;
    assert_eq!(c.line().await, None);
    server.close();
}

#[tokio::test]
async fn serve_with_shutdown_stops_tcp_gracefully_on_its_signal() {
    let (server, mut teardowns, mut got) = tcp_server();
    server.activate().await.unwrap();
    let addr = server.addresses()[0];
    let (signal, signalled) = oneshot::channel::<()>();
    let s = server.clone();
    let task = tokio::spawn(async move {
        s.serve_with_shutdown(async {
            let _ = signalled.await;
        })
        .await
    });
    // A connection made before the run serves waits in the backlog.
    let mut a = Peer::connect(addr).await;
    a.send("hello").await;
    assert_eq!(a.line().await.as_deref(), Some("hello"));
    a.send("slow one").await;
    assert_eq!(
        timeout(LIMIT, got.recv()).await.unwrap().as_deref(),
        Some("one")
    );
    signal.send(()).unwrap();
    assert_eq!(a.line().await.as_deref(), Some("one"));
    assert_eq!(a.line().await, None);
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    torn_down(&mut teardowns, 1).await;
    assert!(server.is_listening() && !server.is_serving());

    // Cancel safety: dropping it is a graceful shutdown too.
    let s = server.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::select! {
            r = s.serve_with_shutdown(std::future::pending()) => Some(r),
            _ = stopped => None,
        }
    });
    let mut b = Peer::connect(addr).await;
    b.send("slow two").await;
    assert_eq!(
        timeout(LIMIT, got.recv()).await.unwrap().as_deref(),
        Some("two")
    );
    stop.send(()).unwrap();
    assert!(task.await.unwrap().is_none());
    assert_eq!(b.line().await.as_deref(), Some("two"));
    assert_eq!(b.line().await, None);
    torn_down(&mut teardowns, 2).await;

    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    let mut c = Peer::connect(addr).await;
    c.send("again").await;
    assert_eq!(c.line().await.as_deref(), Some("again"));
    server.close();
    drop(c);
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn serve_with_shutdown_on_udp() {
    let (server, mut teardowns) = udp_server();
    server.activate().await.unwrap();
    let addr = server.addresses()[0];

    // Its signal stops it.
    let (signal, signalled) = oneshot::channel::<()>();
    let s = server.clone();
    let task = tokio::spawn(async move {
        s.serve_with_shutdown(async {
            let _ = signalled.await;
        })
        .await
    });
    udp_echo(addr, "hello").await;
    signal.send(()).unwrap();
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    torn_down(&mut teardowns, 1).await;

    // `shutdown` from elsewhere ends it as well.
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_with_shutdown(std::future::pending()).await });
    udp_echo(addr, "two").await;
    timeout(LIMIT, server.shutdown()).await.unwrap();
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    torn_down(&mut teardowns, 2).await;

    // Dropped under a timeout: shut down, and it serves again.
    let cut = timeout(
        Duration::from_millis(200),
        server.serve_with_shutdown(std::future::pending()),
    )
    .await;
    assert!(cut.is_err());
    torn_down(&mut teardowns, 3).await;
    let s = server.clone();
    let task = start(move |up| async move { s.serve_notify(up).await }).await;
    udp_echo(addr, "again").await;
    server.close();
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
}
