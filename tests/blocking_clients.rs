//! The blocking clients of easynet-mio against both drivers' servers and raw peers.

#![cfg(all(feature = "tokio", feature = "mio"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use easynet::blocking::{ClientError, ServerThread, TcpClient, UdpClient, UdpServer};
use easynet::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
use easynet::protocol::{Datagram, Stream};
use support::drivers::{self, Opts, Start};

const LIMIT: Duration = Duration::from_secs(10);

fn both(scenario: fn(Start)) {
    scenario(drivers::tokio);
    scenario(drivers::mio);
}

#[test]
fn echo_then_responses_end_at_eof() {
    both(|start| {
        let server = start(Opts::default());
        let mut c = TcpClient::connect(server.addr, Stream::lines()).unwrap();
        for t in ["one", "two"] {
            c.send(&t.to_owned()).unwrap();
        }
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), "one");
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), "two");
        c.send(&"three".to_owned()).unwrap();
        c.send(&"quit".to_owned()).unwrap();
        let rest: Vec<String> = c.responses(Some(LIMIT)).map(Result::unwrap).collect();
        assert_eq!(rest, ["three"]);
        assert!(matches!(c.recv(), Err(ClientError::Eof)));
        c.close();
        c.close(); // idempotent
        assert!(matches!(c.send(&"x".to_owned()), Err(ClientError::Closed)));
        server.stop();
    });
}

#[cfg(feature = "tls")]
#[test]
fn tls_client_and_untrusted_certificate() {
    both(|start| {
        let id = certs::Identity::localhost();
        let server = start(Opts {
            tls: Some(id.server_config().into()),
            ..Opts::default()
        });
        let mut c = TcpClient::connect_tls(
            server.addr,
            Stream::lines(),
            id.client_config(),
            certs::localhost(),
        )
        .unwrap();
        assert_eq!(
            c.tls_info().unwrap().protocol_version,
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        c.send(&"private".to_owned()).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), "private");
        c.close();
        let other = certs::Identity::localhost();
        let res = TcpClient::connect_tls(
            server.addr,
            Stream::lines(),
            other.client_config(),
            certs::localhost(),
        );
        assert!(matches!(res, Err(ClientError::Handshake(_))), "{res:?}");
        server.stop();
    });
}

#[test]
fn timeouts_keep_partial_bytes_and_parse_errors_are_recoverable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hal").unwrap();
        go_rx.recv().unwrap();
        s.write_all(b"f\n\xff\xfe\nnext\n").unwrap();
    });
    let mut c = TcpClient::connect(addr, Stream::lines()).unwrap();
    assert!(matches!(
        c.recv_timeout(Duration::from_millis(50)),
        Err(ClientError::Timeout)
    ));
    assert!(matches!(
        c.recv_timeout(Duration::ZERO),
        Err(ClientError::Timeout)
    ));
    go_tx.send(()).unwrap();
    assert_eq!(
        c.recv_timeout(LIMIT).unwrap(),
        "half",
        "partial bytes were kept"
    );
    assert!(matches!(c.recv_timeout(LIMIT), Err(ClientError::Parse(_))));
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "next");
    peer.join().unwrap();
    assert!(matches!(c.recv_timeout(LIMIT), Err(ClientError::Eof)));
}

struct Echo;

impl DatagramHandler for Echo {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        if let Received::Request(t) = r {
            cx.send(&t)?;
        }
        Ok(Next::Close)
    }
}

#[test]
fn udp_client_echo_timeout_and_close() {
    let server = UdpServer::builder(Datagram::lines(), |_: &ConnInfo| Echo)
        .host("127.0.0.1")
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let mut c = UdpClient::connect(thread.addresses()[0], Datagram::lines()).unwrap();
    c.send(&"ping".to_owned()).unwrap();
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "ping");
    assert!(matches!(
        c.recv_timeout(Duration::from_millis(50)),
        Err(ClientError::Timeout)
    ));
    c.send(&"a".to_owned()).unwrap();
    let got: Vec<String> = c
        .responses(Some(Duration::from_millis(300)))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, ["a"]);
    c.close();
    assert!(matches!(c.send(&"x".to_owned()), Err(ClientError::Closed)));
    thread.join(None).unwrap();
}
