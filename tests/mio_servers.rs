//! The blocking (mio) servers over loopback: lifecycle from other threads, re-serving,
//! close, worker threads, UDP (reference/behaviour.md §1.7, §3).

#![cfg(feature = "mio")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use easynet::blocking::{ServerError, ServerThread, TcpServer, UdpServer};
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
    Service,
};
use easynet::protocol::{Datagram, Stream};
use support::drivers::Echo;

const LIMIT: Duration = Duration::from_secs(10);

fn echo_server() -> TcpServer<
    impl Service<Handler = Echo>,
    Stream<easynet::protocol::Lines, easynet::protocol::Utf8, String, String>,
> {
    TcpServer::builder(Stream::lines(), |_: &ConnInfo| Echo { timeout: None })
        .host("127.0.0.1")
        .shutdown_timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

fn roundtrip(addr: std::net::SocketAddr, text: &str) -> Option<String> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(LIMIT)).unwrap();
    (&s).write_all(format!("{text}\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    Some(line.trim_end().to_owned())
}

/// Runs `serve` (handed the up-signal) on a thread and returns once the server is up, with
/// where its result arrives: wait for it with a deadline, so that a run that never ends
/// fails the test instead of hanging it.
fn serve_in_background(
    serve: impl FnOnce(mpsc::Sender<()>) -> Result<(), ServerError> + Send + 'static,
) -> mpsc::Receiver<Result<(), ServerError>> {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(serve(tx));
    });
    rx.recv_timeout(LIMIT).expect("server up");
    done_rx
}

#[test]
fn handle_controls_the_run_from_other_threads_and_serving_again_binds_anew() {
    let server = Arc::new(echo_server());
    let handle = server.handle();
    assert!(!handle.is_serving());
    assert!(handle.addresses().is_empty());
    handle.shutdown(Some(Duration::from_millis(10))); // before serving: harmless
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = mpsc::channel();
        let s = server.clone();
        let run = std::thread::spawn(move || s.serve_notify(tx));
        rx.recv_timeout(LIMIT).expect("server up");
        assert!(handle.is_serving());
        let addr = handle.addresses()[0];
        ports.push(addr.port());
        assert!(matches!(server.serve(), Err(ServerError::AlreadyRunning)));
        assert_eq!(roundtrip(addr, "hello").as_deref(), Some("hello"));
        handle.shutdown(None);
        handle.shutdown(None); // twice: harmless
        run.join().unwrap().unwrap();
        assert!(!handle.is_serving());
        assert!(
            handle.addresses().is_empty(),
            "standalone servers report no address when not serving"
        );
    }
    assert_eq!(ports.len(), 3);
}

#[test]
fn close_refuses_new_connections_and_serves_existing_ones_to_their_end() {
    let server = Arc::new(echo_server());
    let handle = server.handle();
    let s = server.clone();
    let done_rx = serve_in_background(move |up| s.serve_notify(up));
    let addr = handle.addresses()[0];
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reader = BufReader::new(c.try_clone().unwrap());
    (&c).write_all(b"before\n").unwrap();
    let mut l = String::new();
    reader.read_line(&mut l).unwrap();
    assert_eq!(l, "before\n");
    handle.close();
    // The loop drops its listener when woken; then connecting is refused.
    let deadline = std::time::Instant::now() + LIMIT;
    while TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "listener still open after close"
        );
        std::thread::yield_now();
    }
    (&c).write_all(b"after\nquit\n").unwrap();
    l.clear();
    reader.read_line(&mut l).unwrap();
    assert_eq!(l, "after\n");
    // Returns once the last connection ended; bounded, so a close that never comes fails.
    let ended = done_rx.recv_timeout(LIMIT);
    assert!(
        matches!(ended, Ok(Ok(()))),
        "serve did not return: {ended:?}"
    );
    assert!(matches!(server.serve(), Err(ServerError::Closed)));
}

#[test]
fn several_worker_threads_share_the_port() {
    let server = TcpServer::builder(Stream::lines(), |_: &ConnInfo| Echo { timeout: None })
        .host("127.0.0.1")
        .workers(2)
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addr = thread.addresses()[0];
    let clients: Vec<_> = (0..16)
        .map(|i| std::thread::spawn(move || roundtrip(addr, &format!("c{i}"))))
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), Some(format!("c{i}")));
    }
    thread.join(None).unwrap();
}

#[test]
fn start_reports_bind_and_service_init_errors() {
    let first = ServerThread::start(echo_server()).unwrap();
    let port = first.addresses()[0].port();
    let clash = TcpServer::builder(Stream::lines(), |_: &ConnInfo| Echo { timeout: None })
        .host("127.0.0.1")
        .port(port)
        .build()
        .unwrap();
    assert!(matches!(
        ServerThread::start(clash),
        Err(ServerError::Bind(_))
    ));

    struct Failing;
    impl Service for Failing {
        type Handler = Echo;
        fn on_start(&self) -> Result<(), HandlerError> {
            Err("no database".into())
        }
        fn new_handler(&self, _: &ConnInfo) -> Echo {
            Echo { timeout: None }
        }
    }
    let failing = TcpServer::builder_with_service(Stream::lines(), Failing)
        .host("127.0.0.1")
        .build()
        .unwrap();
    match ServerThread::start(failing) {
        Err(ServerError::Start(e)) => assert_eq!(e.to_string(), "no database"),
        other => panic!("expected a on_start error, got {other:?}"),
    }
}

/// Echoes; "collect N" gathers the peer's next N datagrams into one reply.
#[derive(Default)]
struct Collect {
    want: usize,
    got: Vec<String>,
}

impl DatagramHandler for Collect {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        let Received::Request(text) = r else {
            cx.send("other".to_owned())?;
            return Ok(Next::Close);
        };
        if self.want > 0 {
            self.got.push(text);
            if self.got.len() < self.want {
                return Ok(Next::recv());
            }
            self.want = 0;
            cx.send(std::mem::take(&mut self.got).join(","))?;
            return Ok(Next::Close);
        }
        if let Some(n) = text.strip_prefix("collect ") {
            self.want = n.parse()?;
            return Ok(Next::recv());
        }
        cx.send(&text)?;
        Ok(Next::Close)
    }
}

#[test]
fn udp_server_runs_per_peer_routines() {
    let server = UdpServer::builder(Datagram::lines(), |_: &ConnInfo| Collect::default())
        .host("127.0.0.1")
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addr = thread.addresses()[0];
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&a, &b] {
        s.connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
    }
    a.send(b"collect 2").unwrap();
    a.send(b"x").unwrap();
    b.send(b"solo").unwrap();
    a.send(b"y").unwrap();
    let mut buf = [0u8; 64];
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"solo");
    let n = a.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"x,y");
    a.send(b"\xff").unwrap();
    let n = a.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"other", "a parse error reaches the handler");
    thread.join(None).unwrap();
}

/// Answers "bye" to "stop", then stops its own server through the handle.
struct Stopper(Arc<std::sync::OnceLock<easynet::blocking::ServerHandle>>);

impl easynet::handler::StreamHandler for Stopper {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut easynet::handler::StreamContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        if let Received::Request(line) = r
            && line == "stop"
        {
            cx.send("bye".to_owned())?;
            // On the loop thread: this must not wait for the loop it blocks.
            self.0.get().expect("handle set").shutdown(None);
        }
        Ok(Next::recv())
    }
}

#[test]
fn a_handler_stops_its_own_server_without_blocking_its_loop() {
    let slot = Arc::new(std::sync::OnceLock::new());
    let s = slot.clone();
    // The default shutdown timeout (30 s): waiting for itself would show.
    let server = TcpServer::builder(Stream::lines(), move |_: &ConnInfo| Stopper(s.clone()))
        .host("127.0.0.1")
        .build()
        .unwrap();
    slot.set(server.handle()).unwrap();
    let handle = server.handle();
    let done_rx = serve_in_background(move |up| server.serve_notify(up));
    let addr = handle.addresses()[0];
    assert_eq!(roundtrip(addr, "stop").as_deref(), Some("bye"));
    let ended = done_rx.recv_timeout(Duration::from_secs(5));
    assert!(
        matches!(ended, Ok(Ok(()))),
        "serve did not return promptly: {ended:?}"
    );
}
