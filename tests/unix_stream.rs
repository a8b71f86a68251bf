//! Unix stream servers and clients on both drivers, over real sockets in the temp dir and
//! (Linux) abstract names: echo, peer credentials, addresses, socket-file removal, stale
//! paths, graceful shutdown, lingering close, async handlers; the stream clients' options
//! (local address, `max_recv_size`) and `from_std`.

#![cfg(unix)]

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::Path;
use std::time::Duration;

use easynet::addr::UnixAddr;
use easynet::handler::ConnInfo;
use easynet::protocol::Stream;
use support::unix::{TempPath, Whoami, me};

const LIMIT: Duration = Duration::from_secs(10);

/// Sends `a`, `quit` and 4 MiB the server never reads as requests (from another thread,
/// ending with our EOF); the answer to `a` must be followed by a clean end of stream, and
/// all of the 4 MiB must be taken: the server lingers, dropping input, until our EOF. (A
/// plain close with unread input would fail the rest of our writes with EPIPE.)
fn quit_with_unread_input_ends_cleanly(server: &Path) {
    let stream = StdStream::connect(server).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut data = b"a\nquit\n".to_vec();
        data.extend_from_slice(&[b'z'; 4 << 20]);
        let sent = w.write_all(&data);
        let _ = w.shutdown(Shutdown::Write);
        sent
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "a\n");
    let mut rest = Vec::new();
    let end = reader.read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "expected end of stream, got {end:?}");
    let sent = writer.join().unwrap();
    assert!(sent.is_ok(), "the server stopped taking input: {sent:?}");
}

/// Bytes a client left unread in its socket after its first response: `ab\ncd\n` is
/// queued at once by a raw peer, so a client reading 3 bytes at a time (`max_recv_size`)
/// leaves `cd\n` behind and one reading 16 KiB takes all 6. Read through a duplicate of
/// the client's descriptor, past any readiness the runtime caches.
fn unread_after_first_line(client: std::os::fd::BorrowedFd<'_>) -> usize {
    let mut raw = StdStream::from(client.try_clone_to_owned().unwrap());
    raw.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match raw.read(&mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(feature = "tokio")]
mod on_tokio {
    use super::*;
    use easynet::aio::{
        AsyncStreamHandler, AsyncUnixStreamClient, AsyncUnixStreamServer, ClientError, ServerError,
        StreamPeer, UnixStreamClientOptions,
    };
    use easynet::handler::HandlerError;
    use tokio::time::timeout;

    type Lines = Stream<easynet::protocol::Lines, easynet::protocol::Utf8, String, String>;

    fn whoami(_: &ConnInfo) -> Whoami {
        Whoami
    }

    fn server(addr: UnixAddr) -> AsyncUnixStreamServer<fn(&ConnInfo) -> Whoami, Lines> {
        AsyncUnixStreamServer::builder(Stream::lines(), whoami as fn(&ConnInfo) -> Whoami)
            .address(addr)
            .shutdown_timeout(Duration::from_secs(3))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn echo_credentials_and_file_removed_on_close() {
        let tmp = TempPath::new("tokio-stream");
        let server = server(UnixAddr::pathname(tmp.path()));
        server.activate().await.unwrap();
        assert_eq!(server.address(), Some(UnixAddr::pathname(tmp.path())));
        assert!(tmp.path().exists());
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve().await });

        let mut client = AsyncUnixStreamClient::connect(tmp.path(), Stream::lines())
            .await
            .unwrap();
        assert_eq!(client.peer_addr(), &UnixAddr::pathname(tmp.path()));
        let cred = client.peer_cred().expect("server credentials");
        assert_eq!(cred.pid, Some(std::process::id()));
        for line in ["hello", "whoami", "local", "peer"] {
            client.send(&line.to_owned()).await.unwrap();
        }
        let mut replies = Vec::new();
        for _ in 0..4 {
            replies.push(timeout(LIMIT, client.recv()).await.unwrap().unwrap());
        }
        assert_eq!(
            replies,
            [
                "hello".to_owned(),
                me(),
                tmp.path().display().to_string(),
                "(unnamed)".to_owned()
            ]
        );
        client.close().await;

        server.shutdown().await;
        run.await.unwrap().unwrap();
        assert!(tmp.path().exists(), "shutdown keeps the socket bound");
        server.close();
        assert!(!tmp.path().exists(), "close removes the socket file");
    }

    #[tokio::test]
    async fn graceful_shutdown_closes_connections_cleanly() {
        let tmp = TempPath::new("tokio-shutdown");
        let server = server(UnixAddr::pathname(tmp.path()));
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve_notify(tx).await });
        timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();
        let mut client = AsyncUnixStreamClient::connect(tmp.path(), Stream::lines())
            .await
            .unwrap();
        client.send(&"one".to_owned()).await.unwrap();
        assert_eq!(timeout(LIMIT, client.recv()).await.unwrap().unwrap(), "one");
        let stop = {
            let s = server.clone();
            tokio::spawn(async move { s.shutdown().await })
        };
        // The open connection is closed gracefully (end of stream, not a reset).
        assert!(matches!(
            timeout(LIMIT, client.recv()).await.unwrap(),
            Err(easynet::aio::ClientError::Eof)
        ));
        stop.await.unwrap();
        run.await.unwrap().unwrap();
        server.close();
        assert!(!tmp.path().exists());
    }

    #[tokio::test]
    async fn a_close_with_unread_input_lingers_until_the_peer_ends() {
        let tmp = TempPath::new("tokio-linger");
        let server = server(UnixAddr::pathname(tmp.path()));
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve_notify(tx).await });
        timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();
        let path = tmp.path().to_owned();
        tokio::task::spawn_blocking(move || quit_with_unread_input_ends_cleanly(&path))
            .await
            .unwrap();
        server.shutdown().await;
        run.await.unwrap().unwrap();
        server.close();
    }

    #[tokio::test]
    async fn stale_file_replaced_live_path_and_plain_file_refused() {
        let tmp = TempPath::new("tokio-stale");
        // A listener that went away without removing its file (std never removes it).
        drop(StdListener::bind(tmp.path()).unwrap());
        let server = server(UnixAddr::pathname(tmp.path()));
        server.activate().await.expect("stale file replaced");

        // A second server on the same path: refused, and the first keeps its file.
        let other = super::on_tokio::server(UnixAddr::pathname(tmp.path()));
        match other.activate().await {
            Err(ServerError::BindUnix { error, .. }) => {
                assert_eq!(error.kind(), io::ErrorKind::AddrInUse)
            }
            r => panic!("expected BindUnix, got {r:?}"),
        }
        server.close();
        assert!(!tmp.path().exists());

        std::fs::write(tmp.path(), b"data").unwrap();
        let third = super::on_tokio::server(UnixAddr::pathname(tmp.path()));
        assert!(matches!(
            third.activate().await,
            Err(ServerError::BindUnix { .. })
        ));
        assert_eq!(std::fs::read(tmp.path()).unwrap(), b"data", "never removed");
    }

    struct AsyncEcho;

    impl AsyncStreamHandler for AsyncEcho {
        type Request = String;
        type Response = String;

        async fn handle(
            &mut self,
            client: &mut StreamPeer<String, String>,
        ) -> Result<(), HandlerError> {
            let line = client.recv().await?;
            let cred = client.info().peer_cred.expect("credentials");
            client.send(&format!("{line} {}", cred.uid)).await?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn async_handlers_run_on_unix_streams() {
        let tmp = TempPath::new("tokio-async");
        let server = AsyncUnixStreamServer::builder(Stream::lines(), |_: &ConnInfo| AsyncEcho)
            .path(tmp.path())
            .build_async()
            .unwrap();
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve_notify(tx).await });
        timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();
        let mut client = AsyncUnixStreamClient::connect(tmp.path(), Stream::lines())
            .await
            .unwrap();
        client.send(&"hi".to_owned()).await.unwrap();
        let uid = me().split(' ').next().unwrap().to_owned();
        assert_eq!(
            timeout(LIMIT, client.recv()).await.unwrap().unwrap(),
            format!("hi {uid}")
        );
        server.shutdown().await;
        run.await.unwrap().unwrap();
        server.close();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn abstract_names() {
        let name = support::unix::abstract_name("tokio-abstract");
        let addr = UnixAddr::abstract_name(&name);
        let server = server(addr.clone());
        let (tx, mut up) = tokio::sync::watch::channel(false);
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve_notify(tx).await });
        timeout(LIMIT, up.wait_for(|u| *u)).await.unwrap().unwrap();
        let mut client = AsyncUnixStreamClient::connect_addr(&addr, Stream::lines())
            .await
            .unwrap();
        client.send(&"local".to_owned()).await.unwrap();
        assert_eq!(
            timeout(LIMIT, client.recv()).await.unwrap().unwrap(),
            addr.to_string()
        );
        server.shutdown().await;
        run.await.unwrap().unwrap();
        server.close();
    }

    #[tokio::test]
    async fn options_bind_a_local_address_and_from_std_takes_a_connected_stream() {
        let tmp = TempPath::new("tokio-opts");
        let addr = UnixAddr::pathname(tmp.path());
        let server = server(addr.clone());
        server.activate().await.unwrap();
        let s = server.clone();
        let run = tokio::spawn(async move { s.serve().await });

        let local = TempPath::new("tokio-opts-local");
        let options = UnixStreamClientOptions::new().local_addr(UnixAddr::pathname(local.path()));
        let mut c = AsyncUnixStreamClient::connect_with(&addr, Stream::lines(), options)
            .await
            .unwrap();
        assert_eq!(c.local_addr(), &UnixAddr::pathname(local.path()));
        c.send(&"peer".to_owned()).await.unwrap();
        let seen = timeout(LIMIT, c.recv()).await.unwrap().unwrap();
        assert_eq!(seen, local.path().display().to_string());
        assert!(local.path().exists());
        drop(c);
        assert!(
            !local.path().exists(),
            "the client's socket file goes with it"
        );

        #[cfg(target_os = "linux")]
        {
            // A client bound to an abstract name: the server's handler sees that name.
            let name = UnixAddr::abstract_name(support::unix::abstract_name("tokio-client"));
            let options = UnixStreamClientOptions::new().local_addr(name.clone());
            let mut c = AsyncUnixStreamClient::connect_with(&addr, Stream::lines(), options)
                .await
                .unwrap();
            assert_eq!(c.local_addr(), &name);
            c.send(&"peer".to_owned()).await.unwrap();
            let seen = timeout(LIMIT, c.recv()).await.unwrap().unwrap();
            assert_eq!(seen, name.to_string());
        }

        let zero = UnixStreamClientOptions::new().max_recv_size(0);
        let bad = AsyncUnixStreamClient::connect_with(&addr, Stream::lines(), zero.clone()).await;
        assert!(matches!(bad, Err(ClientError::Config(_))), "{bad:?}");
        let bad = AsyncUnixStreamClient::from_std(
            StdStream::connect(tmp.path()).unwrap(),
            Stream::lines(),
            zero,
        );
        assert!(matches!(bad, Err(ClientError::Config(_))), "{bad:?}");

        let stream = StdStream::connect(tmp.path()).unwrap();
        let options = UnixStreamClientOptions::new();
        let mut c = AsyncUnixStreamClient::from_std(stream, Stream::lines(), options).unwrap();
        assert_eq!(c.peer_addr(), &addr);
        c.send(&"from std".to_owned()).await.unwrap();
        assert_eq!(timeout(LIMIT, c.recv()).await.unwrap().unwrap(), "from std");
        c.close().await;

        server.shutdown().await;
        run.await.unwrap().unwrap();
        server.close();
    }

    #[tokio::test]
    async fn max_recv_size_bounds_each_read() {
        use std::os::fd::AsFd;
        for (size, left) in [(3, 3), (16 * 1024, 0)] {
            let tmp = TempPath::new("tokio-recv-size");
            let listener = StdListener::bind(tmp.path()).unwrap();
            let options = UnixStreamClientOptions::new().max_recv_size(size);
            let addr = UnixAddr::pathname(tmp.path());
            let mut c = AsyncUnixStreamClient::connect_with(&addr, Stream::lines(), options)
                .await
                .unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"ab\ncd\n").unwrap();
            assert_eq!(timeout(LIMIT, c.recv()).await.unwrap().unwrap(), "ab");
            assert_eq!(
                unread_after_first_line(c.socket().as_fd()),
                left,
                "size {size}"
            );
        }
    }
}

#[cfg(feature = "mio")]
mod on_mio {
    use super::*;
    use easynet::blocking::{
        ClientError, ServerError, ServerThread, UnixStreamClient, UnixStreamClientOptions,
        UnixStreamServer,
    };

    fn start(addr: UnixAddr) -> ServerThread {
        let server = UnixStreamServer::builder(Stream::lines(), |_: &ConnInfo| Whoami)
            .address(addr)
            .shutdown_timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        ServerThread::start(server).unwrap()
    }

    #[test]
    fn echo_credentials_and_file_removed_after_the_run() {
        let tmp = TempPath::new("mio-stream");
        let mut thread = start(UnixAddr::pathname(tmp.path()));
        assert_eq!(
            thread.handle().local_addresses(),
            vec![easynet::addr::Addr::from(UnixAddr::pathname(tmp.path()))]
        );
        let mut client = UnixStreamClient::connect(tmp.path(), Stream::lines()).unwrap();
        assert_eq!(
            client.peer_cred().map(|c| c.pid),
            Some(Some(std::process::id()))
        );
        for line in ["hello", "whoami", "local"] {
            client.send(&line.to_owned()).unwrap();
        }
        let replies: Vec<String> = (0..3)
            .map(|_| client.recv_timeout(LIMIT).unwrap())
            .collect();
        assert_eq!(
            replies,
            ["hello".to_owned(), me(), tmp.path().display().to_string()]
        );
        // Graceful: the open connection gets end of stream at shutdown.
        thread.join(None).unwrap();
        assert!(matches!(
            client.recv_timeout(LIMIT),
            Err(easynet::blocking::ClientError::Eof)
        ));
        assert!(
            !tmp.path().exists(),
            "the run's end removes the socket file"
        );
    }

    #[test]
    fn a_close_with_unread_input_lingers_until_the_peer_ends() {
        let tmp = TempPath::new("mio-linger");
        let mut thread = start(UnixAddr::pathname(tmp.path()));
        quit_with_unread_input_ends_cleanly(tmp.path());
        thread.join(None).unwrap();
    }

    #[test]
    fn path_in_use_is_refused() {
        let tmp = TempPath::new("mio-inuse");
        let live = StdListener::bind(tmp.path()).unwrap();
        let server = UnixStreamServer::builder(Stream::lines(), |_: &ConnInfo| Whoami)
            .path(tmp.path())
            .build()
            .unwrap();
        match server.serve() {
            Err(ServerError::BindUnix { error, .. }) => {
                assert_eq!(error.kind(), io::ErrorKind::AddrInUse)
            }
            r => panic!("expected BindUnix, got {r:?}"),
        }
        assert!(tmp.path().exists(), "the live socket's file is not touched");
        drop(live);
        // Now stale: the next run replaces it.
        let mut thread = start(UnixAddr::pathname(tmp.path()));
        let mut client = UnixStreamClient::connect(tmp.path(), Stream::lines()).unwrap();
        client.send(&"ok".to_owned()).unwrap();
        assert_eq!(client.recv_timeout(LIMIT).unwrap(), "ok");
        thread.join(None).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_names() {
        let addr = UnixAddr::abstract_name(support::unix::abstract_name("mio-abstract"));
        let mut thread = start(addr.clone());
        let mut client = UnixStreamClient::connect_addr(&addr, Stream::lines()).unwrap();
        client.send(&"whoami".to_owned()).unwrap();
        assert_eq!(client.recv_timeout(LIMIT).unwrap(), me());
        thread.join(None).unwrap();
    }

    #[test]
    fn options_bind_a_local_address_and_from_std_takes_a_connected_stream() {
        let tmp = TempPath::new("mio-opts");
        let addr = UnixAddr::pathname(tmp.path());
        let mut thread = start(addr.clone());

        let local = TempPath::new("mio-opts-local");
        let options = UnixStreamClientOptions::new().local_addr(UnixAddr::pathname(local.path()));
        let mut c = UnixStreamClient::connect_with(&addr, Stream::lines(), options).unwrap();
        assert_eq!(c.local_addr(), &UnixAddr::pathname(local.path()));
        c.send(&"peer".to_owned()).unwrap();
        let seen = c.recv_timeout(LIMIT).unwrap();
        assert_eq!(seen, local.path().display().to_string());
        assert!(local.path().exists());
        drop(c);
        assert!(
            !local.path().exists(),
            "the client's socket file goes with it"
        );

        #[cfg(target_os = "linux")]
        {
            // A client bound to an abstract name: the server's handler sees that name.
            let name = UnixAddr::abstract_name(support::unix::abstract_name("mio-client"));
            let options = UnixStreamClientOptions::new().local_addr(name.clone());
            let mut c = UnixStreamClient::connect_with(&addr, Stream::lines(), options).unwrap();
            assert_eq!(c.local_addr(), &name);
            c.send(&"peer".to_owned()).unwrap();
            assert_eq!(c.recv_timeout(LIMIT).unwrap(), name.to_string());
        }

        let zero = UnixStreamClientOptions::new().max_recv_size(0);
        let bad = UnixStreamClient::connect_with(&addr, Stream::lines(), zero.clone());
        assert!(matches!(bad, Err(ClientError::Config(_))), "{bad:?}");
        let stream = StdStream::connect(tmp.path()).unwrap();
        let bad = UnixStreamClient::from_std(stream, Stream::lines(), zero);
        assert!(matches!(bad, Err(ClientError::Config(_))), "{bad:?}");

        let stream = StdStream::connect(tmp.path()).unwrap();
        let options = UnixStreamClientOptions::new();
        let mut c = UnixStreamClient::from_std(stream, Stream::lines(), options).unwrap();
        assert_eq!(c.peer_addr(), &addr);
        c.send(&"from std".to_owned()).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), "from std");
        c.close();
        thread.join(None).unwrap();
    }

    #[test]
    fn max_recv_size_bounds_each_read() {
        use std::os::fd::AsFd;
        for (size, left) in [(3, 3), (16 * 1024, 0)] {
            let tmp = TempPath::new("mio-recv-size");
            let listener = StdListener::bind(tmp.path()).unwrap();
            let options = UnixStreamClientOptions::new().max_recv_size(size);
            let addr = UnixAddr::pathname(tmp.path());
            let mut c = UnixStreamClient::connect_with(&addr, Stream::lines(), options).unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"ab\ncd\n").unwrap();
            assert_eq!(c.recv_timeout(LIMIT).unwrap(), "ab");
            assert_eq!(
                unread_after_first_line(c.socket().as_fd()),
                left,
                "size {size}"
            );
        }
    }
}

#[test]
fn a_unix_server_needs_an_address() {
    #[cfg(feature = "tokio")]
    assert!(matches!(
        easynet::aio::AsyncUnixStreamServer::builder(Stream::lines(), |_: &ConnInfo| Whoami)
            .build(),
        Err(easynet::aio::ConfigError::NoUnixAddress)
    ));
    #[cfg(feature = "mio")]
    assert!(matches!(
        easynet::blocking::UnixDatagramServer::builder(
            easynet::protocol::Datagram::lines(),
            |_: &ConnInfo| Whoami
        )
        .build(),
        Err(easynet::blocking::ConfigError::NoUnixAddress)
    ));
}
