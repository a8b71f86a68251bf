//! A timeout the clock cannot add (`Duration::MAX`) means "no deadline" on every client
//! call that takes one; it never panics (the core's rule, `deadline_after`).

#![cfg(all(feature = "tokio", feature = "mio"))]

mod support;

use std::time::Duration;

use easynet::aio::{AsyncTcpClient, AsyncUdpClient};
use easynet::blocking::{TcpClient, UdpClient};
use easynet::protocol::{Datagram, Stream};
use support::drivers::{self, Opts};

#[test]
fn blocking_clients_take_an_unaddable_timeout() {
    let server = drivers::mio(Opts::default());
    let mut client = TcpClient::connect(server.addr, Stream::lines()).unwrap();
    client
        .send_timeout(&"one".to_owned(), Duration::MAX)
        .unwrap();
    let first = client.responses(Some(Duration::MAX)).next();
    assert_eq!(first.unwrap().unwrap(), "one");
    client.close();

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut udp = UdpClient::connect(socket.local_addr().unwrap(), Datagram::lines()).unwrap();
    let _ = udp.responses(Some(Duration::MAX));
    udp.close();
    server.stop();
}

#[test]
fn async_clients_take_an_unaddable_timeout() {
    let server = drivers::tokio(Opts::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = AsyncTcpClient::connect(server.addr, Stream::lines())
            .await
            .unwrap();
        client
            .send_timeout(&"one".to_owned(), Duration::MAX)
            .await
            .unwrap();
        let first = client.responses(Some(Duration::MAX)).next().await;
        assert_eq!(first.unwrap().unwrap(), "one");
        client.close().await;

        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.local_addr().unwrap();
        let mut udp = AsyncUdpClient::connect(to, Datagram::lines())
            .await
            .unwrap();
        let _ = udp.responses(Some(Duration::MAX));
        udp.close();
    });
    server.stop();
}
