//! `stream::blocking`, without sockets: a scripted in-memory peer behind `BlockingIo`
//! (partial reads and writes, silences that advance a virtual clock, EOF, failures) and the
//! simulated TLS server of `easynet_core::sim`.

#![cfg(feature = "sim")]

mod support;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easynet_core::ConnId;
use easynet_core::handler::{ConnInfo, Received};
use easynet_core::protocol::{Lines, Stream, Utf8};
use easynet_core::sim::{ClientId, ClientState, StreamSim};
use easynet_core::stream::blocking::{self, BlockingError, BlockingIo, Progress};
use easynet_core::stream::{ClientRole, CloseHow, Connection, HandshakeError, StreamConfig};
use easynet_core::tls::TlsSession;
use proptest::prelude::*;
use support::certs::{Identity, localhost};
use support::chunks::chunks;
use support::scripted::{Log, Script, Seen};

type Lp = Stream<Lines, Utf8, String, String>;

/// The virtual clock, shared by the test's `clock` closure and the peer (whose silences
/// are where time passes).
#[derive(Clone)]
struct Clock(Rc<Cell<Instant>>);

impl Clock {
    fn new() -> Self {
        Self(Rc::new(Cell::new(Instant::now())))
    }
    fn now(&self) -> Instant {
        self.0.get()
    }
    fn advance(&self, d: Duration) {
        self.0.set(self.0.get() + d);
    }
    /// The closure the helpers take.
    fn f(&self) -> impl FnMut() -> Instant + use<> {
        let c = self.clone();
        move || c.now()
    }
}

/// What the peer does when the client reads.
#[derive(Debug, Clone)]
enum Step {
    Bytes(Vec<u8>),
    /// Sends nothing for this long.
    Silence(Duration),
    Eof,
    Fail(io::ErrorKind),
}

/// A scripted peer; once its script is done it is silent for ever.
struct Peer {
    clock: Clock,
    script: VecDeque<Step>,
    /// Most bytes one read returns.
    read_chunk: usize,
    /// Most bytes one write takes.
    write_window: usize,
    write_error: Option<io::ErrorKind>,
    timeout: Option<Duration>,
    written: Vec<u8>,
    reads: usize,
    fin: bool,
    abortive: bool,
}

impl Peer {
    fn new(clock: &Clock, script: impl IntoIterator<Item = Step>) -> Self {
        Self {
            clock: clock.clone(),
            script: script.into_iter().collect(),
            read_chunk: usize::MAX,
            write_window: usize::MAX,
            write_error: None,
            timeout: None,
            written: Vec::new(),
            reads: 0,
            fin: false,
            abortive: false,
        }
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        loop {
            match self.script.pop_front() {
                Some(Step::Bytes(mut b)) => {
                    let n = b.len().min(buf.len()).min(self.read_chunk);
                    buf[..n].copy_from_slice(&b[..n]);
                    if n < b.len() {
                        self.script.push_front(Step::Bytes(b.split_off(n)));
                    }
                    return Ok(n);
                }
                Some(Step::Silence(d)) => match self.timeout {
                    Some(t) if t < d => {
                        self.clock.advance(t);
                        self.script.push_front(Step::Silence(d - t));
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    _ => self.clock.advance(d),
                },
                Some(Step::Eof) => {
                    self.script.push_front(Step::Eof);
                    return Ok(0);
                }
                Some(Step::Fail(kind)) => return Err(kind.into()),
                None => {
                    let Some(t) = self.timeout else {
                        return Err(io::Error::other("a silent peer and no timeout: blocked"));
                    };
                    self.clock.advance(t);
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
        }
    }
}

impl Write for Peer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(kind) = self.write_error {
            return Err(kind.into());
        }
        let n = data.len().min(self.write_window);
        self.written.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlockingIo for Peer {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        assert_ne!(
            timeout,
            Some(Duration::ZERO),
            "zero means no timeout to the OS"
        );
        self.timeout = timeout;
        Ok(())
    }
    fn shutdown_write(&mut self) {
        self.fin = true;
    }
    fn set_abortive(&mut self) {
        self.abortive = true;
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn client() -> Connection<Lp, ClientRole> {
    let info = ConnInfo::new(ConnId(0), addr(9000), addr(40001));
    Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info)
}

fn line(received: Result<Received<String>, BlockingError>) -> String {
    match received {
        Ok(Received::Request(r)) => r,
        other => panic!("expected a line, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any chunking of reads and writes, with silences (3.6 s at most in all, under the
    /// receive timeout) and
    /// interrupted reads between them, gives the same messages both ways.
    #[test]
    fn any_chunking_gives_the_same_messages(
        requests in prop::collection::vec("[a-z]{0,12}", 1..8),
        responses in prop::collection::vec("[a-z]{0,12}", 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        pauses in prop::collection::vec(0u64..3, 12),
        window in 1usize..16,
        read_chunk in 1usize..16,
    ) {
        let clock = Clock::new();
        let stream: Vec<u8> = responses.iter().flat_map(|r| format!("{r}\n").into_bytes()).collect();
        let mut script = Vec::new();
        for (i, chunk) in chunks(&stream, &cuts).into_iter().enumerate() {
            match pauses[i % pauses.len()] {
                1 => script.push(Step::Silence(Duration::from_millis(300))),
                2 => script.push(Step::Fail(io::ErrorKind::Interrupted)),
                _ => {}
            }
            script.push(Step::Bytes(chunk));
        }
        script.push(Step::Eof);
        let mut peer = Peer::new(&clock, script);
        peer.write_window = window;
        peer.read_chunk = read_chunk;
        let mut conn = client();

        for r in &requests {
            conn.send(r).unwrap();
        }
        blocking::flush(&mut conn, &mut peer, clock.f()).unwrap();
        let sent: Vec<u8> = requests.iter().flat_map(|r| format!("{r}\n").into_bytes()).collect();
        prop_assert_eq!(&peer.written, &sent);

        let mut got = Vec::new();
        loop {
            match blocking::recv(&mut conn, &mut peer, clock.f(), Some(Duration::from_secs(10))) {
                Ok(Received::Request(r)) => got.push(r),
                Err(BlockingError::Eof) => break,
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert_eq!(got, responses);
        prop_assert_eq!(blocking::close(&mut conn, &mut peer, clock.f()).unwrap(), CloseHow::Graceful);
        prop_assert!(peer.fin && !peer.abortive);
    }
}

#[test]
fn a_receive_timeout_fires_at_its_instant_and_keeps_partial_bytes() {
    let clock = Clock::new();
    let t0 = clock.now();
    let script = [
        Step::Bytes(b"hal".to_vec()),
        Step::Silence(Duration::from_secs(10)),
        Step::Bytes(b"f\n".to_vec()),
    ];
    let mut peer = Peer::new(&clock, script);
    let mut conn = client();

    let got = blocking::recv(
        &mut conn,
        &mut peer,
        clock.f(),
        Some(Duration::from_secs(4)),
    );
    assert!(matches!(got, Ok(Received::Timeout)), "{got:?}");
    assert_eq!(clock.now(), t0 + Duration::from_secs(4));
    assert_eq!(
        peer.timeout,
        Some(Duration::from_secs(4)),
        "the read waited the whole timeout"
    );

    // A zero timeout returns what is buffered only: no read.
    let reads = peer.reads;
    let got = blocking::recv(&mut conn, &mut peer, clock.f(), Some(Duration::ZERO));
    assert!(matches!(got, Ok(Received::Timeout)), "{got:?}");
    assert_eq!(peer.reads, reads);
    assert_eq!(clock.now(), t0 + Duration::from_secs(4));

    // The line completes 10 s after the start, within this receive's 7 s.
    let got = blocking::recv(
        &mut conn,
        &mut peer,
        clock.f(),
        Some(Duration::from_secs(7)),
    );
    assert_eq!(line(got), "half");
    assert_eq!(clock.now(), t0 + Duration::from_secs(10));
    assert!(!conn.is_receiving());
}

#[test]
fn buffered_messages_come_before_the_eof_and_the_partial_one_is_dropped() {
    let clock = Clock::new();
    let mut peer = Peer::new(&clock, [Step::Bytes(b"a\nb\npar".to_vec()), Step::Eof]);
    let mut conn = client();
    assert_eq!(
        line(blocking::recv(&mut conn, &mut peer, clock.f(), None)),
        "a"
    );
    assert_eq!(
        line(blocking::recv(&mut conn, &mut peer, clock.f(), None)),
        "b"
    );
    let got = blocking::recv(&mut conn, &mut peer, clock.f(), None);
    assert!(matches!(got, Err(BlockingError::Eof)), "{got:?}");
    let reads = peer.reads;
    let got = blocking::recv(&mut conn, &mut peer, clock.f(), None);
    assert!(matches!(got, Err(BlockingError::Eof)), "{got:?}");
    assert_eq!(peer.reads, reads, "nothing is read after the EOF");
    assert!(!conn.is_receiving(), "no receive stays armed");
    // Our side still closes gracefully.
    assert_eq!(
        blocking::close(&mut conn, &mut peer, clock.f()).unwrap(),
        CloseHow::Graceful
    );
    assert!(peer.fin);
}

#[test]
fn a_graceful_close_flushes_everything_then_sends_fin() {
    let clock = Clock::new();
    // The peer would fail any read: a plain close needs none.
    let mut peer = Peer::new(&clock, [Step::Fail(io::ErrorKind::ConnectionReset)]);
    peer.write_window = 3;
    let mut conn = client();
    for r in ["one", "two", "three"] {
        conn.send(&r.to_owned()).unwrap();
    }
    let how = blocking::close(&mut conn, &mut peer, clock.f()).unwrap();
    assert_eq!(how, CloseHow::Graceful);
    assert_eq!(peer.written, b"one\ntwo\nthree\n");
    assert!(peer.fin && !peer.abortive);
    assert_eq!(peer.reads, 0);
    assert!(conn.is_closed());
    assert!(conn.send(&"late".to_owned()).is_err());
    // Closing again ends the socket the same way and writes nothing.
    assert_eq!(
        blocking::close(&mut conn, &mut peer, clock.f()).unwrap(),
        CloseHow::Graceful
    );
    assert_eq!(peer.written, b"one\ntwo\nthree\n");
}

#[test]
fn a_failed_write_closes_the_connection_abortively() {
    let clock = Clock::new();
    let mut peer = Peer::new(&clock, []);
    peer.write_error = Some(io::ErrorKind::BrokenPipe);
    let mut conn = client();
    conn.send(&"x".to_owned()).unwrap();
    let res = blocking::flush(&mut conn, &mut peer, clock.f());
    assert!(
        matches!(&res, Err(BlockingError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe),
        "{res:?}"
    );
    assert!(conn.is_closed() && peer.abortive && !peer.fin);
    let got = blocking::recv(&mut conn, &mut peer, clock.f(), None);
    assert!(matches!(got, Err(BlockingError::Eof)), "{got:?}");
    assert_eq!(peer.reads, 0);
}

#[test]
fn a_failed_read_closes_the_connection_abortively() {
    let clock = Clock::new();
    let mut peer = Peer::new(
        &clock,
        [
            Step::Fail(io::ErrorKind::Interrupted), // retried
            Step::Fail(io::ErrorKind::ConnectionReset),
        ],
    );
    let mut conn = client();
    let got = blocking::recv(&mut conn, &mut peer, clock.f(), None);
    assert!(
        matches!(&got, Err(BlockingError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset),
        "{got:?}"
    );
    assert_eq!(peer.reads, 2);
    assert!(conn.is_closed() && peer.abortive);
    assert!(!conn.is_receiving());
}

#[test]
fn complete_io_waits_until_the_callers_bound_and_idles_with_nothing_to_wait_for() {
    let clock = Clock::new();
    let t0 = clock.now();
    let mut peer = Peer::new(&clock, []);
    let mut conn = client();

    // No receive armed: the request goes out, nothing is read.
    conn.send(&"q".to_owned()).unwrap();
    let p = blocking::complete_io(&mut conn, &mut peer, clock.f(), None).unwrap();
    assert_eq!(p, Progress::Idle);
    assert_eq!((peer.written.as_slice(), peer.reads), (&b"q\n"[..], 0));

    // A receive without a deadline: the read is bounded by `until` alone.
    conn.recv(clock.now(), None);
    let until = t0 + Duration::from_millis(2500);
    let p = blocking::complete_io(&mut conn, &mut peer, clock.f(), Some(until)).unwrap();
    assert_eq!(p, Progress::Timeout);
    assert_eq!(clock.now(), until);
    assert!(conn.is_receiving() && !conn.is_closing());
    // The bound has passed: no read at all.
    let reads = peer.reads;
    let p = blocking::complete_io(&mut conn, &mut peer, clock.f(), Some(until)).unwrap();
    assert_eq!((p, peer.reads), (Progress::Timeout, reads));
}

/// The simulated TLS echo server (`easynet_core::sim`) behind `BlockingIo`, through a raw
/// simulated client whose bytes the blocking client under test makes: its writes go to
/// the server, at most `write_window` at a time; its reads take what the server sent, at
/// most `read_chunk` at a time; a silence moves the simulator's clock by the read timeout.
struct TlsPeer {
    sim: Server,
    raw: ClientId,
    log: Log,
    /// Bytes of the server's already handed to the client.
    taken: usize,
    /// The server no longer answers (its bytes never arrive).
    mute: bool,
    timeout: Option<Duration>,
    read_chunk: usize,
    write_window: usize,
    fin: bool,
    abortive: bool,
}

/// The simulator, shared by the peer and the test's `clock` closure (the simulator's clock
/// is the virtual clock).
#[derive(Clone)]
struct Server(Rc<RefCell<StreamSim<Script, Lp>>>);

impl Server {
    fn now(&self) -> Instant {
        self.0.borrow().now()
    }
    /// The closure the helpers take.
    fn f(&self) -> impl FnMut() -> Instant + use<> {
        let s = self.clone();
        move || s.now()
    }
}

impl TlsPeer {
    fn new(id: &Identity) -> Self {
        let (script, log) = Script::echo();
        let mut sim = StreamSim::builder_with_service(Stream::lines(), script)
            .tls(id.server_config(), id.client_config(), localhost())
            .build();
        let raw = sim.connect_raw();
        Self {
            sim: Server(Rc::new(RefCell::new(sim))),
            raw,
            log,
            taken: 0,
            mute: false,
            timeout: None,
            read_chunk: 97,
            write_window: 61,
            fin: false,
            abortive: false,
        }
    }
}

impl Read for TlsPeer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut sim = self.sim.0.borrow_mut();
        if !self.mute {
            let out = &sim.received_bytes(self.raw)[self.taken..];
            if !out.is_empty() {
                let n = out.len().min(buf.len()).min(self.read_chunk);
                buf[..n].copy_from_slice(&out[..n]);
                self.taken += n;
                return Ok(n);
            }
            match sim.state(self.raw) {
                ClientState::EndOfStream => return Ok(0),
                ClientState::Reset => return Err(io::ErrorKind::ConnectionReset.into()),
                _ => {}
            }
        }
        let Some(t) = self.timeout else {
            return Err(io::Error::other("a silent peer and no timeout: blocked"));
        };
        sim.advance(t);
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for TlsPeer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.write_window);
        self.sim.0.borrow_mut().send_bytes(self.raw, &data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlockingIo for TlsPeer {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.timeout = timeout;
        Ok(())
    }
    fn shutdown_write(&mut self) {
        self.fin = true;
        self.sim.0.borrow_mut().shutdown_write(self.raw);
    }
    fn set_abortive(&mut self) {
        self.abortive = true;
    }
}

fn tls_client(now: Instant, id: &Identity) -> Connection<Lp, ClientRole> {
    let tls = TlsSession::client(id.client_config(), localhost()).unwrap();
    let info = ConnInfo::new(ConnId(0), addr(9000), addr(40001));
    Connection::with_tls(
        now,
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info,
        tls,
    )
}

#[test]
fn tls_handshake_echo_and_close_notify_exchange() {
    let id = Identity::localhost();
    let mut peer = TlsPeer::new(&id);
    let clock = peer.sim.clone();
    let t0 = clock.now();
    let mut conn = tls_client(t0, &id);

    blocking::handshake(&mut conn, &mut peer, clock.f()).unwrap();
    assert!(conn.is_ready() && conn.info().tls.is_some());
    conn.send(&"private".to_owned()).unwrap();
    blocking::flush(&mut conn, &mut peer, clock.f()).unwrap();
    let got = blocking::recv(
        &mut conn,
        &mut peer,
        clock.f(),
        Some(Duration::from_secs(5)),
    );
    assert_eq!(line(got), "private");

    // close_notify both ways, then FIN: graceful, and no deadline was needed.
    let how = blocking::close(&mut conn, &mut peer, clock.f()).unwrap();
    assert_eq!(how, CloseHow::Graceful);
    assert!(peer.fin && !peer.abortive);
    assert_eq!(clock.now(), t0);
    assert!(peer.log.seen().contains(&Seen::Request("private".into())));
}

#[test]
fn a_silent_server_fails_the_handshake_at_its_deadline() {
    let id = Identity::localhost();
    let mut peer = TlsPeer::new(&id);
    peer.mute = true;
    let clock = peer.sim.clone();
    let t0 = clock.now();
    let mut conn = tls_client(t0, &id);
    let res = blocking::handshake(&mut conn, &mut peer, clock.f());
    assert!(
        matches!(res, Err(BlockingError::Handshake(HandshakeError::Timeout(t))) if t == StreamConfig::default().tls_handshake_timeout),
        "{res:?}"
    );
    assert_eq!(
        clock.now(),
        t0 + StreamConfig::default().tls_handshake_timeout
    );
    assert!(conn.is_closed() && peer.abortive && !peer.fin);
}

#[test]
fn an_untrusted_certificate_fails_the_handshake_at_once() {
    let id = Identity::localhost();
    let mut peer = TlsPeer::new(&id);
    let clock = peer.sim.clone();
    let t0 = clock.now();
    let mut conn = tls_client(t0, &Identity::localhost_named("another CA"));
    let res = blocking::handshake(&mut conn, &mut peer, clock.f());
    assert!(
        matches!(
            &res,
            Err(BlockingError::Handshake(HandshakeError::Tls(
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            )))
        ),
        "{res:?}"
    );
    assert_eq!(clock.now(), t0);
    assert!(conn.is_closed() && peer.abortive);
    assert!(!peer.log.seen().contains(&Seen::Connected));
}

#[test]
fn a_tls_close_is_bounded_by_its_deadline() {
    let id = Identity::localhost();
    let mut peer = TlsPeer::new(&id);
    let clock = peer.sim.clone();
    let mut conn = tls_client(clock.now(), &id);
    blocking::handshake(&mut conn, &mut peer, clock.f()).unwrap();
    // The server's close_notify never comes.
    peer.mute = true;
    let t1 = clock.now();
    let how = blocking::close(&mut conn, &mut peer, clock.f()).unwrap();
    assert_eq!(how, CloseHow::Abort);
    assert_eq!(clock.now(), t1 + StreamConfig::default().shutdown_timeout);
    assert!(peer.abortive && !peer.fin);
}

/// A client meeting a server that answers in plain text.
fn not_tls(read_chunk: usize) -> (Result<(), BlockingError>, Duration, Peer) {
    let clock = Clock::new();
    let t0 = clock.now();
    let mut peer = Peer::new(&clock, [Step::Bytes(b"hi\n".to_vec())]);
    peer.read_chunk = read_chunk;
    let mut conn = tls_client(t0, &Identity::localhost());
    let res = blocking::handshake(&mut conn, &mut peer, clock.f());
    assert!(conn.is_closed());
    (res, clock.now() - t0, peer)
}

#[test]
fn a_plain_text_server_fails_the_handshake_on_its_first_bytes() {
    for chunk in [usize::MAX, 1] {
        let (res, waited, peer) = not_tls(chunk);
        let Err(BlockingError::Handshake(HandshakeError::NotTls(sent))) = &res else {
            panic!("{res:?}");
        };
        // Byte by byte, the first byte is enough.
        let expected: &[u8] = if chunk == 1 { b"h" } else { b"hi\n" };
        assert_eq!(&sent[..], expected);
        assert_eq!(waited, Duration::ZERO, "no wait for the deadline");
        assert!(peer.abortive);
        let text = res.unwrap_err().to_string();
        assert!(text.contains("does not speak TLS"), "{text}");
    }
}

#[test]
fn a_record_header_split_across_reads_is_not_mistaken_for_plain_text() {
    // A real server's flight, one byte per read: the checks span reads.
    let id = Identity::localhost();
    let mut peer = TlsPeer::new(&id);
    peer.read_chunk = 1;
    let clock = peer.sim.clone();
    let mut conn = tls_client(clock.now(), &id);
    blocking::handshake(&mut conn, &mut peer, clock.f()).unwrap();
    assert!(conn.is_ready());
}
