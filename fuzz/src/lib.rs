//! Shared pieces of the fuzz targets: chunking, a framing checker, an echo session driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use easynet_core::ConnId;
use easynet_core::handler::{
    ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler,
};
use easynet_core::protocol::{Framing, ParseError, Stream};
use easynet_core::stream::{Action, Session, StreamConfig};

/// Splits `data` into chunks whose sizes come from `sizes` (cycled; 0 counts as 1).
pub fn chunks<'a>(sizes: &'a [u8], mut data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let n = if sizes.is_empty() {
            data.len()
        } else {
            usize::from(sizes[i % sizes.len()]).max(1)
        };
        i += 1;
        let (head, tail) = data.split_at(n.min(data.len()));
        data = tail;
        Some(head)
    })
}

/// Feeds `data` to `framing` in chunks and checks its contract: frames never exceed
/// `limit`, the buffer never holds more than `limit + slack` bytes after a decode call,
/// and any chunking yields the same frames and errors as one whole read.
pub fn check_framing<F: Framing>(
    framing: &F,
    limit: usize,
    slack: usize,
    sizes: &[u8],
    data: &[u8],
) {
    let whole = run_framing(framing, limit, slack, std::iter::once(data));
    let chunked = run_framing(framing, limit, slack, chunks(sizes, data));
    assert_eq!(whole, chunked, "chunking changed the frames");
}

#[derive(Debug, PartialEq, Eq)]
enum Item {
    Frame(Vec<u8>),
    Error(String),
}

fn run_framing<'a, F: Framing>(
    framing: &F,
    limit: usize,
    slack: usize,
    reads: impl Iterator<Item = &'a [u8]>,
) -> Vec<Item> {
    let mut state = F::State::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match framing.decode(&mut state, &mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= limit, "frame of {} > {limit}", frame.len());
                    out.push(Item::Frame(frame.to_vec()));
                }
                Ok(None) => break,
                Err(e) => out.push(Item::Error(kind(&e))),
            }
        }
        assert!(
            buf.len() <= limit + slack,
            "{} bytes held with a limit of {limit}",
            buf.len()
        );
    }
    out
}

fn kind(e: &ParseError) -> String {
    match e {
        ParseError::LineTooLong { .. } => "line".into(),
        ParseError::FrameTooLarge { got, .. } => format!("frame {got}"),
        ParseError::Deserialize(_) => "payload".into(),
        other => other.to_string(),
    }
}

/// Echoes lines; "quit" closes; parse errors and timeouts get an answer.
pub struct Echo;

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, _: &mut StreamContext<'_, String>) -> HandlerResult {
        Ok(Next::Recv {
            timeout: Some(Duration::from_secs(1)),
        })
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) => cx.send(&l)?,
            Received::Timeout => cx.send(&"timeout".to_owned())?,
            Received::ParseError(_) => cx.send(&"error".to_owned())?,
        }
        Ok(Next::Recv {
            timeout: Some(Duration::from_secs(1)),
        })
    }
}

/// Drives an echo session the way a driver does: reads in chunks (only while it wants to
/// read), writes through a window of `window` bytes, moves the clock, ends with EOF. The
/// session must end, and never buffer more than its limits allow.
pub fn run_session(sizes: &[u8], window: usize, data: &[u8]) {
    const LIMIT: usize = 64;
    let protocol = Arc::new(Stream::<_, _, String, String>::new(
        easynet_core::protocol::Lines::new().limit(LIMIT).unwrap(),
        easynet_core::protocol::Utf8::new(),
    ));
    let config = StreamConfig::default()
        .with_write_high_water(256)
        .with_read_size(64);
    let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let info = ConnInfo::new(ConnId(1), addr(40000), addr(9000));
    let mut now = Instant::now();
    let mut session = Session::new(now, Echo, protocol, config, info);
    let mut written = 0usize;
    // The servers' contract: ask `poll_action`, do it, until told to wait. The socket takes
    // at most `window` bytes per write; the kernel never holds anything for the peer.
    let mut pump = |session: &mut Session<Echo, _>, now: Instant| loop {
        match session.poll_action(now) {
            Action::Io(want) if want.write => {
                let mut socket = Window(window.max(1), &mut written);
                let _ = session.write_to(&mut socket);
            }
            Action::Io(want) if want.resume => session.resume(now),
            Action::Io(_) => return None,
            Action::ShutdownWrite => {}
            Action::QueryUnsent => session.handle_unsent(now, Some(0)),
            Action::Close(how) => return Some(how),
            _ => return None,
        }
    };
    let mut closed = pump(&mut session, now);
    for (i, chunk) in chunks(sizes, data).enumerate() {
        if closed.is_some() || session.is_finished() {
            break;
        }
        if session.wants_read() {
            session.handle_read(now, chunk);
        }
        // Buffered input stays bounded: one line limit plus one read, at most.
        assert!(session.connection().buffered() <= LIMIT + 2 + chunk.len());
        if i % 7 == 6 {
            now += Duration::from_millis(600);
            session.handle_timeout(now);
        }
        closed = closed.or(pump(&mut session, now));
    }
    if closed.is_none() {
        session.handle_eof(now);
        closed = pump(&mut session, now);
    }
    // Whatever is left ends by its deadlines.
    let mut guard = 0;
    while closed.is_none() && !session.is_finished() && guard < 100 {
        guard += 1;
        now += Duration::from_secs(31);
        session.handle_timeout(now);
        closed = pump(&mut session, now);
    }
    assert!(
        closed.is_some() || session.is_finished(),
        "session did not end after EOF and every deadline"
    );
}

fn tls_configs() -> &'static (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    static CONFIGS: std::sync::OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> =
        std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| {
        use rustls::pki_types::PrivateKeyDer;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = c.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    })
}

/// Runs a TLS echo session against a rustls client sending `plaintext`; the client's bytes
/// are XORed at the given offsets on their way. The session must end after EOF and every
/// deadline, whatever arrived.
pub fn run_tls_session(plaintext: &[u8], flips: &[(u16, u8)]) {
    use std::io::{Read, Write};
    let (server_cfg, client_cfg) = tls_configs();
    let protocol = Arc::new(Stream::<_, _, String, String>::new(
        easynet_core::protocol::Lines::new().limit(64).unwrap(),
        easynet_core::protocol::Utf8::new(),
    ));
    let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let info = ConnInfo::new(ConnId(1), addr(40000), addr(9000));
    let mut now = Instant::now();
    let tls = easynet_core::tls::TlsSession::server(server_cfg.clone()).unwrap();
    let config = StreamConfig::default().with_write_high_water(4096);
    let mut session = Session::with_tls(now, Echo, protocol, config, info, tls);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_cfg.clone(), name).unwrap();
    let _ = client.writer().write_all(plaintext);
    let mut offset = 0usize;
    let mut closed = None;
    for _ in 0..64 {
        let mut wire = Vec::new();
        while client.wants_write() {
            if client.write_tls(&mut wire).is_err() {
                break;
            }
        }
        for (at, x) in flips {
            let at = usize::from(*at);
            if at >= offset && at < offset + wire.len() {
                wire[at - offset] ^= x;
            }
        }
        offset += wire.len();
        if !wire.is_empty() && session.wants_read() {
            session.handle_read(now, &wire);
        }
        let out = session.transmit().to_vec();
        session.advance(out.len());
        closed = closed.or(session.poll_close());
        let mut progressed = !wire.is_empty() || !out.is_empty();
        if !out.is_empty() {
            let mut rd = &out[..];
            while !rd.is_empty() {
                if client.read_tls(&mut rd).is_err() {
                    break;
                }
                if client.process_new_packets().is_err() {
                    progressed = false;
                    break;
                }
            }
            let mut sink = Vec::new();
            let _ = client.reader().read_to_end(&mut sink);
        }
        if closed.is_some() || !progressed {
            break;
        }
    }
    if closed.is_none() {
        session.handle_eof(now);
        let out = session.transmit().len();
        session.advance(out);
        closed = session.poll_close();
    }
    let mut guard = 0;
    while closed.is_none() && !session.is_finished() && guard < 100 {
        guard += 1;
        now += Duration::from_secs(61);
        session.handle_timeout(now);
        let out = session.transmit().len();
        session.advance(out);
        closed = session.poll_close();
    }
    assert!(
        closed.is_some() || session.is_finished(),
        "TLS session did not end after EOF and every deadline"
    );
}

/// A socket that takes at most `.0` bytes per write, counting them in `.1`.
struct Window<'a>(usize, &'a mut usize);

impl std::io::Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0);
        *self.1 += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
