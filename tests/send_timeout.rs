//! `send_timeout` on the stream clients (TCP and Unix, blocking and async): a peer that
//! does not read fills the socket buffers; the send gives up on time, closes the
//! connection, and the peer never sees a later request run into the cut one. The async
//! one dropped before its timeout keeps the request whole, as `send`.

#![cfg(all(unix, feature = "mio", feature = "tokio"))]

use std::io::{self, BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use easynet::protocol::Stream;
use easynet::{aio as tok, blocking as mio};

const LIMIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(300);

/// Far more than loopback TCP or Unix socket buffers hold.
fn big() -> String {
    "x".repeat(32 << 20)
}

/// A connected TCP pair: our end for the client, the peer's.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    (ours, theirs)
}

/// Asserts that `$send` (a send_timeout of `big()` with `SHORT`) timed out, on time.
macro_rules! times_out_on_time {
    ($send:expr) => {{
        let start = Instant::now();
        let r = $send;
        let took = start.elapsed();
        assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
        assert!(took >= SHORT && took < LIMIT, "timed out after {took:?}");
    }};
}

/// Reads what the peer got until the client's end: part of the big request, never all of
/// it, and no line end (no complete request, nothing after it).
fn the_peer_got_a_cut_request(mut peer: impl Read) {
    let mut got = Vec::new();
    match peer.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{e}"),
    }
    assert!(!got.is_empty() && got.len() < 32 << 20, "got {}", got.len());
    assert!(
        got.iter().all(|&b| b == b'x'),
        "a line end or other bytes came"
    );
}

/// The peer reads lines from `peer` on a thread.
fn read_lines(peer: impl Read + Send + 'static, n: usize) -> std::thread::JoinHandle<Vec<usize>> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(peer);
        (0..n)
            .map(|_| {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                line.len()
            })
            .collect()
    })
}

mod blocking {
    use super::*;
    use mio::{
        ClientError, TcpClient, TcpClientOptions, UnixStreamClient, UnixStreamClientOptions,
    };

    #[test]
    fn tcp_send_timeout_gives_up_on_time_and_closes() {
        let (ours, theirs) = tcp_pair();
        theirs.set_read_timeout(Some(LIMIT)).unwrap();
        let mut c = TcpClient::from_std(ours, Stream::lines(), TcpClientOptions::new()).unwrap();
        // A peer that reads is served well within the time.
        c.send_timeout(&"hi".to_owned(), LIMIT).unwrap();
        let mut hi = [0u8; 3];
        (&theirs).read_exact(&mut hi).unwrap();
        assert_eq!(&hi, b"hi\n");

        times_out_on_time!(c.send_timeout(&big(), SHORT));
        assert!(c.is_closed());
        assert!(matches!(
            c.send(&"after".to_owned()),
            Err(ClientError::Closed)
        ));
        the_peer_got_a_cut_request(theirs);
    }

    #[test]
    fn unix_send_timeout_gives_up_on_time_and_closes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_read_timeout(Some(LIMIT)).unwrap();
        let options = UnixStreamClientOptions::new();
        let mut c = UnixStreamClient::from_std(ours, Stream::lines(), options).unwrap();
        times_out_on_time!(c.send_timeout(&big(), SHORT));
        assert!(c.is_closed());
        let after = c.send_timeout(&"after".to_owned(), SHORT);
        assert!(matches!(after, Err(ClientError::Closed)), "{after:?}");
        the_peer_got_a_cut_request(theirs);
    }
}

mod on_tokio {
    use super::*;
    use tok::UnixStreamClientOptions;
    use tok::{AsyncTcpClient, AsyncUnixStreamClient, ClientError, TcpClientOptions};
    use tokio::time::timeout;

    #[tokio::test]
    async fn tcp_send_timeout_gives_up_on_time_and_closes() {
        let (ours, theirs) = tcp_pair();
        theirs.set_read_timeout(Some(LIMIT)).unwrap();
        let mut c = AsyncTcpClient::from_std(ours, Stream::lines(), TcpClientOptions::new())
            .await
            .unwrap();
        timeout(LIMIT, c.send_timeout(&"hi".to_owned(), LIMIT))
            .await
            .unwrap()
            .unwrap();
        let mut hi = [0u8; 3];
        (&theirs).read_exact(&mut hi).unwrap();
        assert_eq!(&hi, b"hi\n");

        times_out_on_time!(timeout(LIMIT, c.send_timeout(&big(), SHORT)).await.unwrap());
        assert!(c.is_closed());
        let after = c.send(&"after".to_owned()).await;
        assert!(matches!(after, Err(ClientError::Closed)), "{after:?}");
        tokio::task::spawn_blocking(move || the_peer_got_a_cut_request(theirs))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn unix_send_timeout_gives_up_on_time_and_closes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_read_timeout(Some(LIMIT)).unwrap();
        let options = UnixStreamClientOptions::new();
        let mut c = AsyncUnixStreamClient::from_std(ours, Stream::lines(), options).unwrap();
        times_out_on_time!(timeout(LIMIT, c.send_timeout(&big(), SHORT)).await.unwrap());
        assert!(c.is_closed());
        let after = c.send(&"after".to_owned()).await;
        assert!(matches!(after, Err(ClientError::Closed)), "{after:?}");
        tokio::task::spawn_blocking(move || the_peer_got_a_cut_request(theirs))
            .await
            .unwrap();
    }

    /// Cancel safety: a `send_timeout` dropped before its own timeout (here by an outer,
    /// shorter one while the peer does not read) keeps the connection open and the request
    /// whole: once the peer reads, it gets all of it, then the next request.
    #[tokio::test]
    async fn a_dropped_send_timeout_keeps_the_request_whole() {
        for unix in [false, true] {
            let (mut c, theirs): (Box<dyn Client>, Box<dyn Read + Send>) = if unix {
                let (ours, theirs) = UnixStream::pair().unwrap();
                theirs.set_read_timeout(Some(LIMIT)).unwrap();
                let options = UnixStreamClientOptions::new();
                let c = AsyncUnixStreamClient::from_std(ours, Stream::lines(), options).unwrap();
                (Box::new(c), Box::new(theirs))
            } else {
                let (ours, theirs) = tcp_pair();
                theirs.set_read_timeout(Some(LIMIT)).unwrap();
                let options = TcpClientOptions::new();
                let c = AsyncTcpClient::from_std(ours, Stream::lines(), options)
                    .await
                    .unwrap();
                (Box::new(c), Box::new(theirs))
            };
            let dropped = timeout(SHORT, c.send_timeout_boxed(big(), LIMIT)).await;
            assert!(dropped.is_err(), "the send finished: {dropped:?}");
            assert!(!c.is_closed_boxed(), "unix {unix}");
            let reader = read_lines(theirs, 2);
            timeout(LIMIT, c.send_timeout_boxed("after".to_owned(), LIMIT))
                .await
                .unwrap()
                .unwrap();
            let lines = tokio::task::spawn_blocking(move || reader.join().unwrap())
                .await
                .unwrap();
            assert_eq!(lines, [(32 << 20) + 1, 6], "unix {unix}");
        }
    }

    type Lines = easynet::protocol::Stream<
        easynet::protocol::Lines,
        easynet::protocol::Utf8,
        String,
        String,
    >;

    /// The two async stream clients behind one face, for the loop above.
    trait Client {
        fn send_timeout_boxed(
            &mut self,
            request: String,
            timeout: Duration,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ClientError>> + '_>>;
        fn is_closed_boxed(&self) -> bool;
    }

    impl Client for AsyncTcpClient<Lines> {
        fn send_timeout_boxed(
            &mut self,
            request: String,
            timeout: Duration,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ClientError>> + '_>> {
            Box::pin(async move { self.send_timeout(&request, timeout).await })
        }
        fn is_closed_boxed(&self) -> bool {
            self.is_closed()
        }
    }

    impl Client for AsyncUnixStreamClient<Lines> {
        fn send_timeout_boxed(
            &mut self,
            request: String,
            timeout: Duration,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ClientError>> + '_>> {
            Box::pin(async move { self.send_timeout(&request, timeout).await })
        }
        fn is_closed_boxed(&self) -> bool {
            self.is_closed()
        }
    }
}
