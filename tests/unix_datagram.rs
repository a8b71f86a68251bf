//! Unix datagram servers and clients on both drivers, over real sockets in the temp dir and
//! (Linux) abstract names: echo, peer addresses, unnamed senders (dropped and counted, the
//! server goes on), the datagram size limit, socket-file removal, async handlers.

#![cfg(unix)]

mod support;

use std::io;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::time::Duration;

use easynet::addr::UnixAddr;
use easynet::datagram::DatagramConfig;
use easynet::handler::ConnInfo;
use easynet::protocol::Datagram;
use support::unix::{TempPath, Whoami, too_large};

const LIMIT: Duration = Duration::from_secs(10);
/// The servers' `max_datagram_size` in these tests.
const MAX_SIZE: usize = 64;

fn small_datagrams() -> DatagramConfig {
    DatagramConfig::default().with_max_datagram_size(MAX_SIZE)
}

/// A message one byte past [`MAX_SIZE`] (a datagram carries no separator).
fn oversized() -> String {
    "x".repeat(MAX_SIZE + 1)
}

/// An unnamed socket's datagram gets no answer; waits `wait` for one that must not come.
fn unnamed_gets_nothing(server: &std::path::Path, wait: Duration) {
    let unnamed = StdDatagram::unbound().unwrap();
    unnamed.send_to(b"hello\n", server).unwrap();
    unnamed.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    let err = unnamed.recv(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ));
}

#[cfg(feature = "tokio")]
mod on_tokio {
    use super::*;
    use easynet::aio::{
        AsyncDatagramHandler, AsyncUnixDatagramClient, AsyncUnixDatagramServer, DatagramPeer,
        RecvError,
    };
    use easynet::handler::HandlerError;
    use easynet::protocol::ParseError;
    use tokio::time::timeout;

    #[tokio::test]
    async fn echo_peer_addresses_unnamed_senders_and_file_removed_on_close() {
        let tmp = TempPath::new("tokio-dgram");
        let client_path = TempPath::new("tokio-dgram-client");
        let server = AsyncUnixDatagramServer::builder(Datagram::lines(), |_: &ConnInfo| Whoami)
            .path(tmp.path())
            .datagram_config(small_datagrams())
            .build()
            .unwrap();
        let drops = server.dropped_datagrams();
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve_notify(tx).await });
        timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();
        assert_eq!(server.address(), Some(UnixAddr::pathname(tmp.path())));

        // A client bound at a path of its own.
        let mut client = AsyncUnixDatagramClient::connect_from(
            &UnixAddr::pathname(tmp.path()),
            &UnixAddr::pathname(client_path.path()),
            Datagram::lines(),
        )
        .await
        .unwrap();
        for line in ["hello", "peer", "local"] {
            client.send(&line.to_owned()).await.unwrap();
            let reply = timeout(LIMIT, client.recv()).await.unwrap().unwrap();
            let want = match line {
                "peer" => client_path.path().display().to_string(),
                "local" => tmp.path().display().to_string(),
                other => other.to_owned(),
            };
            assert_eq!(reply, want);
        }

        // An unnamed sender cannot be answered; the server goes on serving the others.
        tokio::task::spawn_blocking({
            let p = tmp.path().to_owned();
            move || unnamed_gets_nothing(&p, Duration::from_millis(200))
        })
        .await
        .unwrap();
        client.send(&"still".to_owned()).await.unwrap();
        assert_eq!(
            timeout(LIMIT, client.recv()).await.unwrap().unwrap(),
            "still"
        );
        assert_eq!(drops.get(), 1, "the unnamed sender's datagram is counted");

        // Past max_datagram_size: a typed error reaches the handler.
        client.send(&oversized()).await.unwrap();
        assert_eq!(
            timeout(LIMIT, client.recv()).await.unwrap().unwrap(),
            too_large(MAX_SIZE + 1, MAX_SIZE)
        );

        drop(client);
        assert!(
            !client_path.path().exists(),
            "the client's file goes with it"
        );
        server.close();
        run.await.unwrap().unwrap();
        assert!(!tmp.path().exists(), "close removes the socket file");
    }

    struct AsyncEcho;

    impl AsyncDatagramHandler for AsyncEcho {
        type Request = String;
        type Response = String;

        async fn handle(
            &mut self,
            client: &mut DatagramPeer<String, String>,
        ) -> Result<(), HandlerError> {
            let reply = match client.recv().await {
                Ok(text) => format!("{text} from {}", client.peer_addr()),
                Err(RecvError::Parse(ParseError::FrameTooLarge { limit, got })) => {
                    too_large(got, limit)
                }
                Err(e) => return Err(e.into()),
            };
            client.send(&reply).await?;
            Ok(())
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn async_handlers_on_an_abstract_name() {
        let addr = UnixAddr::abstract_name(support::unix::abstract_name("tokio-dgram-async"));
        let server = AsyncUnixDatagramServer::builder(Datagram::lines(), |_: &ConnInfo| AsyncEcho)
            .address(addr.clone())
            .datagram_config(small_datagrams())
            .build_async()
            .unwrap();
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve_notify(tx).await });
        timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();

        // A client bound at an abstract name of its own.
        let name = support::unix::abstract_name("tokio-dgram-async-client");
        let mut client = AsyncUnixDatagramClient::connect_from(
            &addr,
            &UnixAddr::abstract_name(&name),
            Datagram::lines(),
        )
        .await
        .unwrap();
        client.send(&"hi".to_owned()).await.unwrap();
        assert_eq!(
            timeout(LIMIT, client.recv()).await.unwrap().unwrap(),
            format!("hi from {}", UnixAddr::abstract_name(&name))
        );
        // Past max_datagram_size: async handlers get RecvError::Parse(FrameTooLarge).
        client.send(&oversized()).await.unwrap();
        assert_eq!(
            timeout(LIMIT, client.recv()).await.unwrap().unwrap(),
            too_large(MAX_SIZE + 1, MAX_SIZE)
        );
        assert_eq!(server.dropped_datagrams().get(), 0);
        server.shutdown().await;
        run.await.unwrap().unwrap();
        server.close();
    }
}

#[cfg(feature = "mio")]
mod on_mio {
    use super::*;
    use easynet::blocking::{ServerThread, UnixDatagramClient, UnixDatagramServer};

    #[test]
    fn echo_unnamed_senders_and_file_removed_after_the_run() {
        let tmp = TempPath::new("mio-dgram");
        let server = UnixDatagramServer::builder(Datagram::lines(), |_: &ConnInfo| Whoami)
            .path(tmp.path())
            .shutdown_timeout(Duration::from_secs(3))
            .datagram_config(small_datagrams())
            .build()
            .unwrap();
        let drops = server.dropped_datagrams();
        let mut thread = ServerThread::start(server).unwrap();
        // Linux: the client autobinds an abstract name; elsewhere it binds a path.
        let client_path = TempPath::new("mio-dgram-client");
        let local = if cfg!(target_os = "linux") {
            None
        } else {
            Some(UnixAddr::pathname(client_path.path()))
        };
        let server_addr = UnixAddr::pathname(tmp.path());
        let mut client = match &local {
            None => UnixDatagramClient::connect(tmp.path(), Datagram::lines()).unwrap(),
            Some(l) => {
                UnixDatagramClient::connect_from(&server_addr, l, Datagram::lines()).unwrap()
            }
        };
        client.send(&"hello".to_owned()).unwrap();
        assert_eq!(client.recv_timeout(LIMIT).unwrap(), "hello");
        client.send(&"peer".to_owned()).unwrap();
        assert_eq!(
            client.recv_timeout(LIMIT).unwrap(),
            client.local_addr().unwrap().to_string()
        );

        unnamed_gets_nothing(tmp.path(), Duration::from_millis(200));
        client.send(&"still".to_owned()).unwrap();
        assert_eq!(client.recv_timeout(LIMIT).unwrap(), "still");
        assert_eq!(drops.get(), 1, "the unnamed sender's datagram is counted");

        // Past max_datagram_size: a typed error reaches the handler.
        client.send(&oversized()).unwrap();
        assert_eq!(
            client.recv_timeout(LIMIT).unwrap(),
            too_large(MAX_SIZE + 1, MAX_SIZE)
        );

        thread.join(None).unwrap();
        assert!(
            !tmp.path().exists(),
            "the run's end removes the socket file"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_names() {
        let addr = UnixAddr::abstract_name(support::unix::abstract_name("mio-dgram-abstract"));
        let server = UnixDatagramServer::builder(Datagram::lines(), |_: &ConnInfo| Whoami)
            .address(addr.clone())
            .build()
            .unwrap();
        let mut thread = ServerThread::start(server).unwrap();
        let mut client = UnixDatagramClient::connect_from(
            &addr,
            &UnixAddr::abstract_name(support::unix::abstract_name("mio-c")),
            Datagram::lines(),
        )
        .unwrap();
        client.send(&"local".to_owned()).unwrap();
        assert_eq!(client.recv_timeout(LIMIT).unwrap(), addr.to_string());
        thread.join(None).unwrap();
    }
}
