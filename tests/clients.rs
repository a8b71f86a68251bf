//! The TCP and UDP clients of both drivers, blocking (mio) and async (tokio), against
//! easynet servers and raw loopback peers: TLS failures that name their cause, connect
//! options (happy eyeballs, timeout, local address, an existing socket), half-close, and
//! the UDP client's zero timeout and close.

#![cfg(all(feature = "tokio", feature = "mio"))]

#[path = "../core/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use easynet::aio::{AsyncTcpClient, AsyncUdpClient};
use easynet::blocking::{ClientError, TcpClient, TcpClientOptions, UdpClient};
use easynet::protocol::{Datagram, Stream};
use support::drivers::{self, Opts};

const LIMIT: Duration = Duration::from_secs(10);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects both kinds of client with `options`; returns each one's result (the client is
/// closed at once when it connected) and how long it took.
fn both_connect(
    addr: impl Fn() -> Vec<SocketAddr>,
    options: impl Fn() -> TcpClientOptions,
) -> [(Result<SocketAddr, ClientError>, Duration); 2] {
    let t = Instant::now();
    let blocking = TcpClient::connect_with(&addr()[..], Stream::lines(), options()).map(|mut c| {
        c.close();
        c.peer_addr()
    });
    let blocking = (blocking, t.elapsed());
    let t = Instant::now();
    let not_blocking = rt().block_on(async {
        let c = tokio::time::timeout(
            LIMIT,
            AsyncTcpClient::connect_with(&addr()[..], Stream::lines(), options()),
        )
        .await
        .expect("the connect is bounded");
        match c {
            Ok(mut c) => {
                let peer = c.peer_addr();
                c.close().await;
                Ok(peer)
            }
            Err(e) => Err(e),
        }
    });
    [blocking, (not_blocking, t.elapsed())]
}

// ---- TLS --------------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use std::sync::mpsc;

    use super::*;
    use easynet::stream::HandshakeError;
    use rustls::pki_types::{PrivateKeyDer, ServerName};

    /// A certificate made as a CA (basic constraints CA:TRUE, as `openssl req -x509` makes
    /// them) and served as the end entity.
    fn ca_identity() -> certs::Identity {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        certs::Identity {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// Connects a TLS client of each kind; returns each error and how long it took.
    fn both_fail(
        addr: SocketAddr,
        options: impl Fn() -> TcpClientOptions,
    ) -> Vec<(ClientError, Duration)> {
        both_connect(|| vec![addr], options)
            .into_iter()
            .map(|(res, took)| match res {
                Ok(peer) => panic!("connected to {peer}"),
                Err(e) => (e, took),
            })
            .collect()
    }

    fn tls_to(client: &certs::Identity, name: &str) -> TcpClientOptions {
        TcpClientOptions::new().tls(
            client.client_config(),
            ServerName::try_from(name.to_owned()).unwrap(),
        )
    }

    /// One line, naming `what`.
    fn assert_names(e: &ClientError, what: &str) {
        let text = e.to_string();
        assert!(text.contains(what), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("TLS handshake failed: "), "{text}");
        // The cause is in the text only: a chain printer prints it once.
        assert!(std::error::Error::source(e).is_none());
    }

    #[test]
    fn a_ca_certificate_used_as_end_entity_is_named() {
        let id = ca_identity();
        let server = drivers::mio(Opts {
            tls: Some(id.server_config().into()),
            ..Opts::default()
        });
        for (e, _) in both_fail(server.addr, || tls_to(&id, "localhost")) {
            assert!(
                matches!(e, ClientError::Handshake(HandshakeError::Tls(_))),
                "{e:?}"
            );
            assert_names(&e, "CaUsedAsEndEntity");
        }
        server.stop();
    }

    #[test]
    fn a_wrong_ca_is_unknown_issuer_and_a_wrong_name_is_named() {
        let id = certs::Identity::localhost();
        let server = drivers::mio(Opts {
            tls: Some(id.server_config().into()),
            ..Opts::default()
        });
        // Another CA (another name: one with the same name is a BadSignature).
        let other = certs::Identity::localhost_named("another CA");
        for (e, _) in both_fail(server.addr, || tls_to(&other, "localhost")) {
            assert!(
                matches!(
                    &e,
                    ClientError::Handshake(HandshakeError::Tls(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer
                    )))
                ),
                "{e:?}"
            );
            assert_names(&e, "UnknownIssuer");
        }
        // The name checked is the one given, not the address connected to.
        for (e, _) in both_fail(server.addr, || tls_to(&id, "example.com")) {
            assert_names(&e, "not valid for name \"example.com\"");
        }
        let [(ok, _), (ok_async, _)] =
            both_connect(|| vec![server.addr], || tls_to(&id, "localhost"));
        assert_eq!(ok.unwrap(), server.addr);
        assert_eq!(ok_async.unwrap(), server.addr);
        server.stop();
    }

    /// A plain-text peer on loopback: for each connection, `answer` is written at once (or
    /// nothing), and the socket is held open until the test ends.
    fn plain_peer(answer: &'static [u8]) -> (SocketAddr, mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, wait) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            // Bounded: the test ends by dropping `done`, or LIMIT passes.
            let end = Instant::now() + LIMIT;
            while Instant::now() < end {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.write_all(answer).unwrap();
                        held.push(s);
                    }
                    Err(_) => match wait.recv_timeout(Duration::from_millis(5)) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    },
                }
            }
        });
        (addr, done)
    }

    #[test]
    fn a_plain_text_server_fails_the_handshake_at_once_and_says_so() {
        let (addr, _done) = plain_peer(b"hello\n");
        for (e, took) in both_fail(addr, || tls_to(&certs::Identity::localhost(), "localhost")) {
            assert!(
                matches!(&e, ClientError::Handshake(HandshakeError::NotTls(b)) if b.starts_with(b"h")),
                "{e:?}"
            );
            assert_names(&e, "does not speak TLS");
            // The handshake timeout is 60 s: nothing waited for it.
            assert!(took < Duration::from_secs(5), "{took:?}");
        }
    }

    #[test]
    fn a_silent_server_fails_the_handshake_at_its_timeout() {
        let (addr, _done) = plain_peer(b"");
        let timeout = Duration::from_millis(300);
        let options =
            || tls_to(&certs::Identity::localhost(), "localhost").tls_handshake_timeout(timeout);
        for (e, took) in both_fail(addr, options) {
            assert!(
                matches!(&e, ClientError::Handshake(HandshakeError::Timeout(t)) if *t == timeout),
                "{e:?}"
            );
            assert_names(&e, "no TLS handshake within 300ms");
            assert!(took >= timeout && took < LIMIT, "{took:?}");
        }
    }

    /// A TLS server peer (rustls, in a thread) that completes the handshake, then only
    /// reads: it never sends close_notify. Reports whether the client's close_notify came
    /// before its EOF, and holds the socket open until `done` is dropped.
    fn mute_tls_peer(id: &certs::Identity) -> (SocketAddr, mpsc::Receiver<bool>, mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = id.server_config();
        let (report, got) = mpsc::channel();
        let (done, wait) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(LIMIT)).unwrap();
            let mut tls = rustls::ServerConnection::new(config).unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut sock).unwrap();
            }
            // The handshake's last read may have brought the close_notify already.
            let close_notify = loop {
                match tls.process_new_packets() {
                    Ok(state) if state.peer_has_closed() => break true,
                    Ok(_) => {}
                    Err(_) => break false,
                }
                if !matches!(tls.read_tls(&mut sock), Ok(1..)) {
                    break false;
                }
            };
            report.send(close_notify).unwrap();
            let _ = wait.recv_timeout(LIMIT);
        });
        (addr, got, done)
    }

    #[test]
    fn standard_compatible_close_waits_for_close_notify_and_the_other_does_not() {
        let id = certs::Identity::localhost();
        let wait = Duration::from_millis(300);
        for standard in [true, false] {
            let options = || {
                tls_to(&id, "localhost")
                    .tls_shutdown_timeout(wait)
                    .tls_standard_compatible(standard)
            };
            let (addr, got, _done) = mute_tls_peer(&id);
            let mut c = TcpClient::connect_with(addr, Stream::lines(), options()).unwrap();
            let t = Instant::now();
            c.close();
            let took = t.elapsed();
            assert_eq!(got.recv_timeout(LIMIT).unwrap(), standard);
            // Standard: close_notify sent, the peer's awaited until the shutdown timeout.
            assert_eq!(took >= wait, standard, "{took:?}");
            assert!(took < LIMIT);

            let (addr, got, _done) = mute_tls_peer(&id);
            let took = rt().block_on(async {
                let mut c = AsyncTcpClient::connect_with(addr, Stream::lines(), options())
                    .await
                    .unwrap();
                let t = Instant::now();
                c.close().await;
                t.elapsed()
            });
            assert_eq!(got.recv_timeout(LIMIT).unwrap(), standard);
            assert_eq!(took >= wait, standard, "{took:?}");
        }
    }

    #[cfg(feature = "webpki-roots")]
    #[test]
    fn the_default_trust_store_verifies_and_refuses_a_self_signed_certificate() {
        let id = certs::Identity::localhost();
        let server = drivers::mio(Opts {
            tls: Some(id.server_config().into()),
            ..Opts::default()
        });
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = easynet::blocking::webpki_roots_config(provider).unwrap();
        let options = || TcpClientOptions::new().tls(config.clone(), certs::localhost());
        for (e, _) in both_fail(server.addr, options) {
            assert!(
                matches!(
                    &e,
                    ClientError::Handshake(HandshakeError::Tls(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer
                    )))
                ),
                "{e:?}"
            );
        }
        server.stop();
    }

    #[test]
    fn send_eof_is_not_supported_over_tls() {
        let id = certs::Identity::localhost();
        let server = drivers::mio(Opts {
            tls: Some(id.server_config().into()),
            ..Opts::default()
        });
        let mut c = TcpClient::connect_with(server.addr, Stream::lines(), tls_to(&id, "localhost"))
            .unwrap();
        let e = c.send_eof().unwrap_err();
        assert!(matches!(&e, ClientError::Io(e) if e.kind() == std::io::ErrorKind::Unsupported));
        c.send(&"still open".to_owned()).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).unwrap(), "still open");
        c.close();
        rt().block_on(async {
            let mut c = AsyncTcpClient::connect_with(
                server.addr,
                Stream::lines(),
                tls_to(&id, "localhost"),
            )
            .await
            .unwrap();
            assert!(c.send_eof().await.is_err());
            c.send(&"still open".to_owned()).await.unwrap();
            assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "still open");
            c.close().await;
        });
        server.stop();
    }
}

// ---- Connect ----------------------------------------------------------------------------

/// A listener whose accept queue is full: further connects get no answer at all (Linux
/// drops their SYN), the loopback stand-in for an address that never answers. The first
/// connect fills the queue (backlog 0 holds one); later ones are checked to hang.
struct Unanswering {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

fn unanswering() -> Unanswering {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Unanswering {
                    addr,
                    _listener: listener,
                    _queued: queued,
                };
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the accept queue never filled: this OS answers a full queue");
}

#[test]
fn happy_eyeballs_moves_on_from_an_address_that_never_answers() {
    let dead = unanswering();
    let server = drivers::mio(Opts::default());
    let delay = Duration::from_millis(200);
    let results = both_connect(
        || vec![dead.addr, server.addr],
        || TcpClientOptions::new().happy_eyeballs_delay(delay),
    );
    for (res, took) in results {
        assert_eq!(res.unwrap(), server.addr);
        // The second address got its turn after the first one's head start, not after the
        // OS gave up on it (minutes).
        assert!(took >= delay && took < LIMIT, "{took:?}");
    }
    server.stop();
}

#[test]
fn a_refused_address_hands_over_to_the_next_at_once() {
    let server = drivers::mio(Opts::default());
    // Nothing listens on ::1 at that port: refused, then 127.0.0.1 is tried without
    // waiting for the (here very long) delay.
    let v6: SocketAddr = format!("[::1]:{}", server.addr.port()).parse().unwrap();
    let results = both_connect(
        || vec![v6, server.addr],
        || TcpClientOptions::new().happy_eyeballs_delay(Duration::from_secs(60)),
    );
    for (res, took) in results {
        assert_eq!(res.unwrap(), server.addr);
        assert!(took < LIMIT, "{took:?}");
    }
    server.stop();
}

#[test]
fn the_connect_timeout_bounds_every_attempt() {
    let dead = unanswering();
    let timeout = Duration::from_millis(300);
    let results = both_connect(
        || vec![dead.addr],
        || TcpClientOptions::new().connect_timeout(timeout),
    );
    for (res, took) in results {
        let e = res.unwrap_err();
        assert!(
            matches!(&e, ClientError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{e:?}"
        );
        assert!(took >= timeout && took < LIMIT, "{took:?}");
    }
}

#[test]
fn all_failed_attempts_are_reported_together() {
    let a = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (res, _) in both_connect(|| vec![a, b], TcpClientOptions::new) {
        let text = res.unwrap_err().to_string();
        assert!(
            text.contains(&a.to_string()) && text.contains(&b.to_string()),
            "{text}"
        );
    }
}

#[test]
fn local_address_existing_socket_and_max_recv_size() {
    let server = drivers::mio(Opts::default());
    let local: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let options = || TcpClientOptions::new().local_addr(local).max_recv_size(3);
    let mut c = TcpClient::connect_with(server.addr, Stream::lines(), options()).unwrap();
    assert_eq!(c.local_addr().ip(), local.ip());
    // Reads of 3 bytes at most still make whole lines.
    c.send(&"a longer line".to_owned()).unwrap();
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "a longer line");
    c.close();
    let bad = TcpClient::connect_with(server.addr, Stream::lines(), options().max_recv_size(0));
    assert!(matches!(bad, Err(ClientError::Config(_))), "{bad:?}");

    let stream = TcpStream::connect(server.addr).unwrap();
    let mut c = TcpClient::from_std(stream, Stream::lines(), TcpClientOptions::new()).unwrap();
    c.send(&"from std".to_owned()).unwrap();
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "from std");
    c.close();

    rt().block_on(async {
        let mut c = AsyncTcpClient::connect_with(server.addr, Stream::lines(), options())
            .await
            .unwrap();
        assert_eq!(c.local_addr().ip(), local.ip());
        c.send(&"a longer line".to_owned()).await.unwrap();
        assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "a longer line");
        c.close().await;
        let bad =
            AsyncTcpClient::connect_with(server.addr, Stream::lines(), options().max_recv_size(0))
                .await;
        assert!(matches!(bad, Err(ClientError::Config(_))), "{bad:?}");

        let stream = TcpStream::connect(server.addr).unwrap();
        let mut c = AsyncTcpClient::from_std(stream, Stream::lines(), TcpClientOptions::new())
            .await
            .unwrap();
        c.send(&"from std".to_owned()).await.unwrap();
        assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "from std");
        c.close().await;
    });
    server.stop();
}

// ---- Half-close -------------------------------------------------------------------------

/// A raw peer that reads everything until EOF, then answers with what it read and closes.
fn answer_at_eof() -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
        got
    });
    (addr, peer)
}

#[test]
fn send_eof_half_closes_and_responses_still_come() {
    let (addr, peer) = answer_at_eof();
    let mut c = TcpClient::connect(addr, Stream::lines()).unwrap();
    c.send(&"one".to_owned()).unwrap();
    c.send_eof().unwrap();
    c.send_eof().unwrap(); // idempotent
    assert!(matches!(c.send(&"x".to_owned()), Err(ClientError::Closed)));
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "one");
    assert!(matches!(c.recv_timeout(LIMIT), Err(ClientError::Eof)));
    c.close();
    assert!(c.is_closed());
    assert_eq!(peer.join().unwrap(), b"one\n");

    let (addr, peer) = answer_at_eof();
    rt().block_on(async {
        let mut c = AsyncTcpClient::connect(addr, Stream::lines())
            .await
            .unwrap();
        c.send(&"two".to_owned()).await.unwrap();
        c.send_eof().await.unwrap();
        c.send_eof().await.unwrap();
        assert!(matches!(
            c.send(&"x".to_owned()).await,
            Err(ClientError::Closed)
        ));
        assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "two");
        assert!(matches!(c.recv_timeout(LIMIT).await, Err(ClientError::Eof)));
        c.close().await;
        assert!(c.is_closed());
    });
    assert_eq!(peer.join().unwrap(), b"two\n");
}

#[test]
fn blocking_clients_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let server = drivers::mio(Opts::default());
    let c = TcpClient::connect(server.addr, Stream::lines()).unwrap();
    send_sync(&c);
    let udp = UdpClient::connect(server.addr, Datagram::lines()).unwrap();
    send_sync(&udp);
    // Sync: one client behind a lock, used from two threads in turn.
    let shared = std::sync::Mutex::new(c);
    std::thread::scope(|s| {
        for t in ["left", "right"] {
            let shared = &shared;
            s.spawn(move || {
                let mut c = shared.lock().unwrap();
                c.send(&t.to_owned()).unwrap();
                assert_eq!(c.recv_timeout(LIMIT).unwrap(), t);
            });
        }
    });
    shared.into_inner().unwrap().close();
    server.stop();
}

// ---- UDP --------------------------------------------------------------------------------

/// A raw UDP peer and a client of each kind connected to it.
fn udp_peer() -> UdpSocket {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    peer
}

#[test]
fn a_zero_udp_timeout_takes_what_is_queued_or_fails_at_once() {
    const CALLS: u32 = 200;
    let peer = udp_peer();
    let mut c = UdpClient::connect(peer.local_addr().unwrap(), Datagram::lines()).unwrap();
    let me = c.local_addr().unwrap();
    // Loopback delivers during send_to: the datagram is queued when it returns.
    peer.send_to(b"queued", me).unwrap();
    assert_eq!(c.recv_timeout(Duration::ZERO).unwrap(), "queued");
    // Nothing queued: at once, not after a millisecond's wait each.
    let t = Instant::now();
    for _ in 0..CALLS {
        assert!(matches!(
            c.recv_timeout(Duration::ZERO),
            Err(ClientError::Timeout)
        ));
    }
    assert!(
        t.elapsed() < Duration::from_millis(CALLS.into()),
        "{:?}",
        t.elapsed()
    );
    // Blocking again afterwards.
    peer.send_to(b"later", me).unwrap();
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "later");

    rt().block_on(async {
        let mut c = AsyncUdpClient::connect(peer.local_addr().unwrap(), Datagram::lines())
            .await
            .unwrap();
        let me = c.local_addr().unwrap();
        peer.send_to(b"queued", me).unwrap();
        assert_eq!(c.recv_timeout(Duration::ZERO).await.unwrap(), "queued");
        let t = Instant::now();
        for _ in 0..CALLS {
            assert!(matches!(
                c.recv_timeout(Duration::ZERO).await,
                Err(ClientError::Timeout)
            ));
        }
        assert!(
            t.elapsed() < Duration::from_millis(CALLS.into()),
            "{:?}",
            t.elapsed()
        );
        peer.send_to(b"later", me).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "later");
    });
}

#[test]
fn closing_a_udp_client_releases_its_socket() {
    let peer = udp_peer();
    let mut c = UdpClient::connect(peer.local_addr().unwrap(), Datagram::lines()).unwrap();
    let me = c.local_addr().unwrap();
    c.close();
    c.close(); // idempotent
    assert!(c.is_closed() && c.socket().is_none() && c.local_addr().is_err());
    assert!(matches!(c.send(&"x".to_owned()), Err(ClientError::Closed)));
    // The port is free again: the socket is gone, not only marked closed.
    drop(UdpSocket::bind(me).unwrap());

    rt().block_on(async {
        let mut c = AsyncUdpClient::connect(peer.local_addr().unwrap(), Datagram::lines())
            .await
            .unwrap();
        let me = c.local_addr().unwrap();
        c.close();
        assert!(c.is_closed() && c.socket().is_none() && c.peer_addr().is_err());
        assert!(matches!(
            c.recv_timeout(LIMIT).await,
            Err(ClientError::Closed)
        ));
        drop(UdpSocket::bind(me).unwrap());
    });
}

#[test]
fn udp_local_address_and_existing_socket() {
    let peer = udp_peer();
    let server = peer.local_addr().unwrap();
    let local: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let answer = |expect: &[u8]| {
        let mut buf = [0; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], expect);
        peer.send_to(&buf[..n], from).unwrap();
        from
    };

    let mut c = UdpClient::connect_from(server, local, Datagram::lines()).unwrap();
    c.send(&"from".to_owned()).unwrap();
    assert_eq!(answer(b"from").ip(), local.ip());
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "from");
    let unconnected = UdpSocket::bind("127.0.0.1:0").unwrap();
    let refused = UdpClient::from_std(unconnected, Datagram::lines());
    assert!(matches!(refused, Err(ClientError::Io(_))), "{refused:?}");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    let mut c = UdpClient::from_std(socket, Datagram::lines()).unwrap();
    c.send(&"std".to_owned()).unwrap();
    answer(b"std");
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "std");

    rt().block_on(async {
        let mut c = AsyncUdpClient::connect_from(server, local, Datagram::lines())
            .await
            .unwrap();
        c.send(&"from".to_owned()).await.unwrap();
        assert_eq!(answer(b"from").ip(), local.ip());
        assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "from");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server).unwrap();
        let mut c = AsyncUdpClient::from_std(socket, Datagram::lines()).unwrap();
        c.send(&"std".to_owned()).await.unwrap();
        answer(b"std");
        assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "std");
    });
}

#[cfg(target_os = "linux")]
#[test]
fn udp_ignores_other_peers_and_reports_an_unreachable_port() {
    let peer = udp_peer();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = UdpClient::connect(peer.local_addr().unwrap(), Datagram::lines()).unwrap();
    let me = c.local_addr().unwrap();
    // Connected: the kernel drops what others send; the server's datagram comes first.
    stranger.send_to(b"stranger", me).unwrap();
    peer.send_to(b"server", me).unwrap();
    assert_eq!(c.recv_timeout(LIMIT).unwrap(), "server");
    assert!(matches!(
        c.recv_timeout(Duration::ZERO),
        Err(ClientError::Timeout)
    ));
    // Nobody at the port: the ICMP port unreachable comes back as ConnectionRefused.
    let gone = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = |e: &ClientError| matches!(e, ClientError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    let mut c = UdpClient::connect(gone, Datagram::lines()).unwrap();
    c.send(&"anyone?".to_owned()).unwrap();
    let e = c.recv_timeout(LIMIT).unwrap_err();
    assert!(refused(&e), "{e:?}");

    rt().block_on(async {
        let mut c = AsyncUdpClient::connect(peer.local_addr().unwrap(), Datagram::lines())
            .await
            .unwrap();
        let me = c.local_addr().unwrap();
        stranger.send_to(b"stranger", me).unwrap();
        peer.send_to(b"server", me).unwrap();
        assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "server");
        assert!(matches!(
            c.recv_timeout(Duration::ZERO).await,
            Err(ClientError::Timeout)
        ));
        let mut c = AsyncUdpClient::connect(gone, Datagram::lines())
            .await
            .unwrap();
        c.send(&"anyone?".to_owned()).await.unwrap();
        let e = c.recv_timeout(LIMIT).await.unwrap_err();
        assert!(refused(&e), "{e:?}");
    });
}

// ---- Unix -------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod unix {
    use std::os::unix::net::{UnixDatagram, UnixListener};

    use easynet::aio::{AsyncUnixDatagramClient, AsyncUnixStreamClient};
    use easynet::blocking::{UnixDatagramClient, UnixStreamClient};

    use super::support::unix::TempPath;
    use super::*;

    #[test]
    fn unix_stream_send_eof_half_closes() {
        for kind in ["blocking", "async"] {
            let path = TempPath::new("send-eof");
            let listener = UnixListener::bind(path.path()).unwrap();
            let peer = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                s.write_all(&got).unwrap();
                got
            });
            if kind == "blocking" {
                let mut c = UnixStreamClient::connect(path.path(), Stream::lines()).unwrap();
                c.send(&"one".to_owned()).unwrap();
                c.send_eof().unwrap();
                assert!(matches!(c.send(&"x".to_owned()), Err(ClientError::Closed)));
                assert_eq!(c.recv_timeout(LIMIT).unwrap(), "one");
                assert!(matches!(c.recv_timeout(LIMIT), Err(ClientError::Eof)));
            } else {
                rt().block_on(async {
                    let mut c = AsyncUnixStreamClient::connect(path.path(), Stream::lines())
                        .await
                        .unwrap();
                    c.send(&"one".to_owned()).await.unwrap();
                    c.send_eof().await.unwrap();
                    assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "one");
                    assert!(matches!(c.recv_timeout(LIMIT).await, Err(ClientError::Eof)));
                });
            }
            assert_eq!(peer.join().unwrap(), b"one\n");
        }
    }

    /// A raw Unix datagram server: learns the client's address from its first datagram,
    /// then queues `answer` for it.
    fn answer_first(server: &UnixDatagram, answer: &[u8]) {
        let mut buf = [0; 64];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        server.send_to_addr(answer, &from).unwrap();
    }

    #[test]
    fn unix_datagram_zero_timeout_and_close() {
        let path = TempPath::new("dgram-zero");
        let server = UnixDatagram::bind(path.path()).unwrap();
        server.set_read_timeout(Some(LIMIT)).unwrap();

        let mut c = UnixDatagramClient::connect(path.path(), Datagram::lines()).unwrap();
        c.send(&"hi".to_owned()).unwrap();
        answer_first(&server, b"queued");
        assert_eq!(c.recv_timeout(Duration::ZERO).unwrap(), "queued");
        assert!(matches!(
            c.recv_timeout(Duration::ZERO),
            Err(ClientError::Timeout)
        ));
        c.close();
        assert!(c.is_closed() && c.socket().is_none() && c.local_addr().is_err());

        rt().block_on(async {
            let mut c = AsyncUnixDatagramClient::connect(path.path(), Datagram::lines())
                .await
                .unwrap();
            c.send(&"hi".to_owned()).await.unwrap();
            answer_first(&server, b"queued");
            assert_eq!(c.recv_timeout(Duration::ZERO).await.unwrap(), "queued");
            assert!(matches!(
                c.recv_timeout(Duration::ZERO).await,
                Err(ClientError::Timeout)
            ));
            c.close();
            assert!(c.is_closed() && c.socket().is_none());
            assert!(matches!(
                c.send(&"x".to_owned()).await,
                Err(ClientError::Closed)
            ));
        });
    }
}
