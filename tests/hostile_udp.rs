//! Hostile datagrams on both drivers (issue 6): oversized and invalid datagrams get typed
//! errors, a flooding peer does not starve the others, and every datagram sent is accounted
//! for: answered, or dropped and counted (by the server's per-peer queues, or by the
//! kernel's socket buffers, read from /proc/net/udp).
//!
//! The tests run one at a time ([`SERIAL`]): the flood measures the process's memory, which
//! a panic elsewhere (symbolizing its backtrace) would disturb.

#![cfg(all(feature = "tokio", feature = "mio"))]

#[path = "support/hostile.rs"]
mod hostile;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use easynet::aio::{AsyncDatagramHandler, DatagramPeer, DropCounter, RecvError};
use easynet::datagram::DatagramConfig;
use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
};
use easynet::protocol::{Datagram, MAX_DATAGRAM_SIZE};
use hostile::{DRIVERS, Driver, LIMIT, describe};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Echoes; answers parse errors with their name; "panic" panics, "fail" fails.
struct Probe;

impl DatagramHandler for Probe {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        match r {
            Received::Request(t) if t == "panic" => panic!("requested panic"),
            Received::Request(t) if t == "fail" => return Err("requested failure".into()),
            Received::Request(t) => cx.send(&t)?,
            Received::ParseError(e) => cx.send(describe(&e))?,
            Received::Timeout => {}
        }
        Ok(Next::Close)
    }
}

/// A UDP server in the background.
struct Udp {
    addr: SocketAddr,
    drops: DropCounter,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Udp {
    fn drop(&mut self) {
        if let Some(f) = self.stop.take() {
            f();
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

fn serve(driver: Driver, config: DatagramConfig) -> Udp {
    let protocol = Datagram::lines();
    let service = |_: &ConnInfo| Probe;
    match driver {
        Driver::Tokio => {
            let server = easynet::aio::AsyncUdpServer::builder(protocol, service)
                .host("127.0.0.1")
                .datagram_config(config)
                .build()
                .unwrap();
            run_tokio(
                server.clone(),
                server.dropped_datagrams(),
                move |rt, task| {
                    rt.block_on(async {
                        server.shutdown().await;
                        task.await.unwrap().unwrap();
                    })
                },
            )
        }
        Driver::Mio => {
            let server = easynet::blocking::UdpServer::builder(protocol, service)
                .host("127.0.0.1")
                .datagram_config(config)
                .build()
                .unwrap();
            let drops = server.dropped_datagrams();
            let mut thread = easynet::blocking::ServerThread::start(server).unwrap();
            Udp {
                addr: thread.addresses()[0],
                drops,
                stop: Some(Box::new(move || thread.join(None).unwrap())),
            }
        }
    }
}

type Task = tokio::task::JoinHandle<Result<(), easynet::aio::ServerError>>;

fn run_tokio<S, P>(
    server: easynet::aio::AsyncUdpServer<S, P>,
    drops: DropCounter,
    stop: impl FnOnce(&tokio::runtime::Runtime, Task) + Send + 'static,
) -> Udp
where
    S: easynet::handler::Service,
    P: easynet::protocol::DatagramServerProtocol,
{
    let rt = runtime();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = rt.spawn(async move { s.serve_notify(tx).await });
    rt.block_on(async {
        tokio::time::timeout(LIMIT, rx.wait_for(|u| *u))
            .await
            .unwrap()
            .unwrap();
    });
    Udp {
        addr: server.addresses()[0],
        drops,
        stop: Some(Box::new(move || stop(&rt, task))),
    }
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

fn ask(s: &UdpSocket, to: SocketAddr, data: &[u8]) -> String {
    s.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn oversized_and_invalid_datagrams_get_typed_errors_and_others_are_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for driver in DRIVERS {
        let server = serve(
            driver,
            DatagramConfig::default().with_max_datagram_size(1024),
        );
        let (a, b) = (client(), client());
        let big = vec![b'x'; MAX_DATAGRAM_SIZE];
        assert_eq!(
            ask(&a, server.addr, &big),
            format!("error: frame too large 1024 {MAX_DATAGRAM_SIZE}"),
            "{driver:?}"
        );
        assert_eq!(ask(&b, server.addr, b"meanwhile"), "meanwhile");
        // Nothing past 64 KiB can be sent at all: the sender's kernel refuses it.
        assert!(a.send_to(&vec![0u8; 64 * 1024 + 1], server.addr).is_err());
        assert_eq!(
            ask(&a, server.addr, b"\xff\xfe"),
            "error: utf8",
            "{driver:?}"
        );
        assert_eq!(ask(&a, server.addr, b"next"), "next");
        // Handler faults end that routine only; the peer's next datagram gets a fresh one.
        for fault in [&b"panic"[..], b"fail"] {
            a.send_to(fault, server.addr).unwrap();
            assert_eq!(ask(&b, server.addr, b"other peer"), "other peer");
            assert_eq!(
                ask(&a, server.addr, b"after fault"),
                "after fault",
                "{driver:?}"
            );
        }
        assert_eq!(server.drops.get(), 0);
    }
    // The same limit holds for async handlers (tokio).
    let server = easynet::aio::AsyncUdpServer::builder(Datagram::lines(), |_: &ConnInfo| Slow)
        .host("127.0.0.1")
        .datagram_config(DatagramConfig::default().with_max_datagram_size(1024))
        .build_async()
        .unwrap();
    let udp = run_tokio(
        server.clone(),
        server.dropped_datagrams(),
        move |rt, task| {
            rt.block_on(async {
                server.shutdown().await;
                task.await.unwrap().unwrap();
            })
        },
    );
    let a = client();
    let big = vec![b'x'; MAX_DATAGRAM_SIZE];
    assert_eq!(
        ask(&a, udp.addr, &big),
        format!("error: frame too large 1024 {MAX_DATAGRAM_SIZE}")
    );
    assert_eq!(ask(&a, udp.addr, b"next"), "next");
}

/// Kernel drops on the UDP socket bound to `port` (the last column of /proc/net/udp).
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local = cols.get(1)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (p == port).then(|| cols.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Receives on `s` until nothing came for `quiet`; returns how many datagrams came.
fn drain(s: &UdpSocket, quiet: Duration) -> u64 {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut n = 0;
    loop {
        match s.recv_from(&mut buf) {
            Ok(_) => n += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return n;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

struct Flood {
    sent: u64,
    answered: u64,
    client_drops: u64,
}

/// Floods `server` from one socket until `other` got `asks` answers (asking with retries);
/// returns the flood's accounting.
fn flood(server: SocketAddr, asks: usize) -> (Flood, u64, u64) {
    let flooder = client();
    let port = flooder.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let answers = {
        let r = flooder.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += drain(&r, Duration::from_millis(20));
            }
            n += drain(&r, Duration::from_millis(300));
            // Read while the socket is still open.
            (n, kernel_drops(port))
        })
    };
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            // Bounded: at most 2 million datagrams, or until the other peer is done.
            while !stop.load(Ordering::SeqCst) && i < 2_000_000 {
                if flooder.send_to(format!("f{i}").as_bytes(), server).is_ok() {
                    i += 1;
                    if i.is_multiple_of(1024) {
                        sent.store(i, Ordering::SeqCst);
                    }
                }
            }
            sent.store(i, Ordering::SeqCst);
        })
    };
    // Another peer asks while the flood goes on; a request lost in a full socket buffer is
    // asked again.
    assert!(hostile::wait_until(LIMIT, || sent.load(Ordering::SeqCst) >= 50_000));
    let other = client();
    other
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut other_sent, mut other_got, mut done) = (0u64, 0u64, 0);
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + LIMIT;
    while done < asks && Instant::now() < deadline {
        let msg = format!("o{done}");
        other.send_to(msg.as_bytes(), server).unwrap();
        other_sent += 1;
        // No answer within the read timeout: lost, ask again.
        while let Ok((n, _)) = other.recv_from(&mut buf) {
            other_got += 1;
            if &buf[..n] == msg.as_bytes() {
                done += 1;
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let (answered, flooder_drops) = answers.join().unwrap();
    other_got += drain(&other, Duration::from_millis(100));
    assert_eq!(done, asks, "the other peer was answered during the flood");
    let client_drops = flooder_drops + kernel_drops(other.local_addr().unwrap().port());
    let f = Flood {
        sent: sent.load(Ordering::SeqCst) + other_sent,
        answered: answered + other_got,
        client_drops,
    };
    (f, other_sent, other_got)
}

#[test]
fn a_flooding_peer_is_bounded_counted_and_does_not_starve_others() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for driver in DRIVERS {
        let server = serve(driver, DatagramConfig::default());
        let rss = hostile::rss_kib();
        let (f, other_sent, other_got) = flood(server.addr, 20);
        let server_drops = kernel_drops(server.addr.port()) + server.drops.get();
        let grown = hostile::rss_kib().saturating_sub(rss);
        eprintln!(
            "{driver:?}: sent {}, answered {}, dropped by the server's socket/queues {server_drops}, \
             by the clients' sockets {}; other peer {other_got}/{other_sent}; RSS +{grown} KiB",
            f.sent, f.answered, f.client_drops
        );
        assert_eq!(
            f.sent,
            f.answered + server_drops + f.client_drops,
            "{driver:?}: every datagram answered or counted as dropped"
        );
        assert!(grown < 16 * 1024, "{driver:?}: RSS grew by {grown} KiB");
        drop(server);
    }
    async_flood_drops_are_counted_by_the_server();
}

/// Answers one datagram per routine, slowly: a flooding peer's datagrams queue up.
struct Slow;

impl AsyncDatagramHandler for Slow {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let got = match client.recv().await {
            Ok(t) => t,
            Err(RecvError::Closed) => return Ok(()),
            Err(RecvError::Parse(e)) => describe(&e),
            Err(e) => return Err(e.into()),
        };
        if got.starts_with('f') {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        client.send(&got).await?;
        Ok(())
    }
}

/// Async handlers (tokio): the flooder's queue holds at most `max_pending`, the rest is
/// dropped and counted by the server.
fn async_flood_drops_are_counted_by_the_server() {
    let server = easynet::aio::AsyncUdpServer::builder(Datagram::lines(), |_: &ConnInfo| Slow)
        .host("127.0.0.1")
        .datagram_config(DatagramConfig::default().with_max_pending(16))
        .build_async()
        .unwrap();
    let drops = server.dropped_datagrams();
    let udp = run_tokio(server.clone(), drops.clone(), move |rt, task| {
        rt.block_on(async {
            server.shutdown().await;
            task.await.unwrap().unwrap();
        })
    });
    let (f, other_sent, other_got) = flood(udp.addr, 20);
    let counted = drops.get();
    let kernel = kernel_drops(udp.addr.port());
    eprintln!(
        "Tokio async: sent {}, answered {}, dropped by the server's queues {counted}, by its \
         socket {kernel}, by the clients' sockets {}; other peer {other_got}/{other_sent}",
        f.sent, f.answered, f.client_drops
    );
    assert!(
        counted > 0,
        "the flooder's queue overflowed and drops were counted"
    );
    assert_eq!(f.sent, f.answered + counted + kernel + f.client_drops);
}
