//! Builders serve on sockets bound elsewhere (`from_std`: socket activation, a supervisor,
//! a test), on both drivers, TCP, UDP and Unix; a socket of the wrong type is a build error.

#![cfg(all(feature = "tokio", feature = "mio"))]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use easynet::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
use easynet::protocol::{Datagram, Stream};
use easynet_common::ConfigError;
use support::drivers::Echo;

fn echo(_: &ConnInfo) -> Echo {
    Echo { timeout: None }
}

struct DgramEcho;

impl DatagramHandler for DgramEcho {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        if let Received::Request(l) = r {
            cx.send(&l)?;
        }
        Ok(Next::Close)
    }
}

fn dgram_echo(_: &ConnInfo) -> DgramEcho {
    DgramEcho
}

fn ask_tcp(addr: SocketAddr, line: &str) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut got = String::new();
    BufReader::new(&s).read_line(&mut got).unwrap();
    got
}

fn ask_udp(addr: SocketAddr, line: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(line.as_bytes(), addr).unwrap();
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn tokio_serves_inherited_tcp_and_udp_sockets() {
    use easynet::aio::{AsyncTcpServer, AsyncUdpServer};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (listener.local_addr().unwrap(), socket.local_addr().unwrap());
    let tcp = AsyncTcpServer::builder(Stream::lines(), echo)
        .from_std(listener)
        .build()
        .unwrap();
    let udp = AsyncUdpServer::builder(Datagram::lines(), dgram_echo)
        .from_std(socket)
        .build()
        .unwrap();
    rt.block_on(async {
        tcp.activate().await.unwrap();
        udp.activate().await.unwrap();
        assert_eq!(tcp.addresses(), [tcp_addr]);
        assert_eq!(udp.addresses(), [udp_addr]);
        let (t, u) = (tcp.clone(), udp.clone());
        let tasks = (
            tokio::spawn(async move { t.serve().await }),
            tokio::spawn(async move { u.serve().await }),
        );
        let answers = tokio::task::spawn_blocking(move || {
            (ask_tcp(tcp_addr, "over tcp"), ask_udp(udp_addr, "over udp"))
        })
        .await
        .unwrap();
        assert_eq!(answers, ("over tcp\n".to_owned(), "over udp".to_owned()));
        tcp.shutdown().await;
        udp.shutdown().await;
        tasks.0.await.unwrap().unwrap();
        tasks.1.await.unwrap().unwrap();
    });
}

#[test]
fn mio_serves_inherited_tcp_and_udp_sockets_on_every_run() {
    use easynet::blocking::{ServerThread, TcpServer, UdpServer};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (listener.local_addr().unwrap(), socket.local_addr().unwrap());
    let tcp = TcpServer::builder(Stream::lines(), echo)
        .from_std(listener)
        .workers(2)
        .build()
        .unwrap();
    let udp = UdpServer::builder(Datagram::lines(), dgram_echo)
        .from_std(socket)
        .build()
        .unwrap();
    // Each blocking run binds anew, and with an inherited socket serves it again.
    for run in 0..2 {
        let (up, is_up) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let serving = scope.spawn(|| tcp.serve_notify(up));
            is_up.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(tcp.addresses(), [tcp_addr]);
            assert_eq!(
                ask_tcp(tcp_addr, &format!("run{run}")),
                format!("run{run}\n")
            );
            tcp.shutdown(None);
            serving.join().unwrap().unwrap();
        });
    }
    let mut u = ServerThread::start(udp).unwrap();
    assert_eq!(ask_udp(udp_addr, "over udp"), "over udp");
    u.join(None).unwrap();
}

#[test]
fn a_socket_of_the_wrong_type_is_refused_at_build() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = easynet::aio::AsyncTcpServer::builder(Stream::lines(), echo)
        .from_std(udp)
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::InheritedSocket);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = easynet::blocking::UdpServer::builder(Datagram::lines(), dgram_echo)
        .from_std(tcp)
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::InheritedSocket);
}

/// A Unix listener and a Unix datagram socket bound elsewhere, served by each driver; the
/// server never removes files it did not make.
#[cfg(unix)]
#[test]
fn both_drivers_serve_inherited_unix_sockets() {
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    use support::unix::TempPath;

    fn ask_stream(path: &std::path::Path, line: &str) -> String {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (&s).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut got = String::new();
        BufReader::new(&s).read_line(&mut got).unwrap();
        got
    }
    fn ask_dgram(path: &std::path::Path, line: &str) -> String {
        let me = TempPath::new("inherited-client");
        let s = UnixDatagram::bind(me.path()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.send_to(line.as_bytes(), path).unwrap();
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    // tokio
    let (sp, dp) = (TempPath::new("inh-stream"), TempPath::new("inh-dgram"));
    let stream = easynet::aio::AsyncUnixStreamServer::builder(Stream::lines(), echo)
        .from_std(UnixListener::bind(sp.path()).unwrap())
        .build()
        .unwrap();
    let dgram = easynet::aio::AsyncUnixDatagramServer::builder(Datagram::lines(), dgram_echo)
        .from_std(UnixDatagram::bind(dp.path()).unwrap())
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        stream.activate().await.unwrap();
        dgram.activate().await.unwrap();
        assert_eq!(
            stream.address(),
            Some(easynet::addr::UnixAddr::pathname(sp.path()))
        );
        let (s, d) = (stream.clone(), dgram.clone());
        let tasks = (
            tokio::spawn(async move { s.serve().await }),
            tokio::spawn(async move { d.serve().await }),
        );
        let (a, b) = (sp.0.clone(), dp.0.clone());
        let answers =
            tokio::task::spawn_blocking(move || (ask_stream(&a, "s"), ask_dgram(&b, "d")))
                .await
                .unwrap();
        assert_eq!(answers, ("s\n".to_owned(), "d".to_owned()));
        stream.shutdown().await;
        dgram.shutdown().await;
        tasks.0.await.unwrap().unwrap();
        tasks.1.await.unwrap().unwrap();
    });
    stream.close();
    dgram.close();
    drop((stream, dgram));
    assert!(
        sp.path().exists() && dp.path().exists(),
        "not ours to remove"
    );

    // mio
    let (sp, dp) = (TempPath::new("inh-stream"), TempPath::new("inh-dgram"));
    let stream = easynet::blocking::UnixStreamServer::builder(Stream::lines(), echo)
        .from_std(UnixListener::bind(sp.path()).unwrap())
        .build()
        .unwrap();
    let dgram = easynet::blocking::UnixDatagramServer::builder(Datagram::lines(), dgram_echo)
        .from_std(UnixDatagram::bind(dp.path()).unwrap())
        .build()
        .unwrap();
    let mut s = easynet::blocking::ServerThread::start(stream).unwrap();
    let mut d = easynet::blocking::ServerThread::start(dgram).unwrap();
    assert_eq!(ask_stream(sp.path(), "s"), "s\n");
    assert_eq!(ask_dgram(dp.path(), "d"), "d");
    s.join(None).unwrap();
    d.join(None).unwrap();
    assert!(
        sp.path().exists() && dp.path().exists(),
        "not ours to remove"
    );

    // A TCP listener is not a Unix one.
    let err = easynet::blocking::UnixStreamServer::builder(Stream::lines(), echo)
        .from_std(TcpListener::bind("127.0.0.1:0").unwrap())
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::InheritedSocket);
}
