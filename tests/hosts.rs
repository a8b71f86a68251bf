//! Builders take hosts as names, `IpAddr`s, `SocketAddr`s and lists of them, and closure
//! factories without annotations (`|_| Echo { timeout: None }`), on both drivers.
#![cfg(all(feature = "tokio", feature = "mio"))]

mod support;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use support::drivers::Echo;

use easynet::blocking::{ServerThread, TcpClient, TcpServer};
use easynet::protocol::Stream;

const LOCAL4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn echoes(addr: SocketAddr) {
    let mut client = TcpClient::connect(addr, Stream::lines()).unwrap();
    client.send(&"hi".to_owned()).unwrap();
    assert_eq!(client.recv().unwrap(), "hi");
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOCAL4, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn mio_ip_socket_addr_and_lists() {
    // An IpAddr takes the builder's port (0: any).
    let server = TcpServer::builder(Stream::lines(), |_| Echo { timeout: None })
        .host(LOCAL4)
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addrs = thread.addresses();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].ip(), LOCAL4);
    echoes(addrs[0]);
    thread.join(None).unwrap();

    // A SocketAddr keeps its own port, whatever `port` says.
    let wanted = SocketAddr::new(LOCAL4, free_port());
    let server = TcpServer::builder(Stream::lines(), |_| Echo { timeout: None })
        .host(wanted)
        .port(1)
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    assert_eq!(thread.addresses(), [wanted]);
    echoes(wanted);
    thread.join(None).unwrap();

    // A list mixing forms: one listener per distinct address.
    let mut hosts = vec![easynet::blocking::Host::from(LOCAL4), "127.0.0.1".into()];
    if ipv6() {
        hosts.push(Ipv6Addr::LOCALHOST.into());
    }
    let expected = hosts.len() - 1;
    let server = TcpServer::builder(Stream::lines(), |_| Echo { timeout: None })
        .hosts(hosts)
        .build()
        .unwrap();
    let mut thread = ServerThread::start(server).unwrap();
    let addrs = thread.addresses();
    assert_eq!(addrs.len(), expected, "{addrs:?}");
    for addr in addrs {
        echoes(addr);
    }
    thread.join(None).unwrap();
}

#[tokio::test]
async fn tokio_ip_socket_addr_and_lists() {
    use easynet::aio::{AsyncTcpClient, AsyncTcpServer};

    let wanted = SocketAddr::new(LOCAL4, free_port());
    let server = AsyncTcpServer::builder(Stream::lines(), |_| Echo { timeout: None })
        .host([wanted])
        .build()
        .unwrap();
    server.activate().await.unwrap();
    assert_eq!(server.addresses(), [wanted]);
    let running = tokio::spawn({
        let server = server.clone();
        async move { server.serve().await }
    });
    let mut client = AsyncTcpClient::connect(wanted, Stream::lines())
        .await
        .unwrap();
    client.send(&"hi".to_owned()).await.unwrap();
    assert_eq!(client.recv().await.unwrap(), "hi");
    client.close().await;
    server.shutdown().await;
    tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
