//! TLS sessions over rustls 0.23: one type for both sides, bytes in and bytes out.
//!
//! # Choosing a crypto provider
//!
//! easynet enables no rustls crypto provider: the application picks one. (A library that
//! turned one on could leave a program with two, and rustls then has no process default:
//! `rustls::ServerConfig::builder()` panics.) easynet never builds a rustls configuration
//! itself: the servers' `tls(...)`, the clients' `connect_tls` and [`TlsSession`] take the
//! `Arc<rustls::ServerConfig>` or `Arc<rustls::ClientConfig>` the application built, so no
//! easynet call can fail for want of a provider. Either
//!
//! - enable a provider on rustls (`rustls = { version = "0.23", features = ["ring"] }`, or
//!   rustls's default `aws-lc-rs`) and name it when building the configuration:
//!   `rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))`,
//!   as the examples below and in the workspace do; or
//! - install it once at start-up as the process default,
//!   `rustls::crypto::ring::default_provider().install_default()`, then use
//!   `rustls::ServerConfig::builder()`.
//!
//! [`rustls`] is re-exported at the crate root and by the drivers and the facade, so the
//! types always come from the rustls easynet was built with.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

/// Bytes of a server's first record header a client checks before rustls sees them.
const HEADER_CHECKED: u8 = 3;

/// The most plaintext one TLS record carries.
pub(crate) const MAX_RECORD: usize = 16 * 1024;

/// What the handshake settled, for handlers and logs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The negotiated protocol version.
    pub protocol_version: Option<rustls::ProtocolVersion>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The negotiated ALPN protocol.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The SNI name the client asked for (server side).
    pub server_name: Option<String>,
    /// The peer's certificate chain, if it sent one.
    pub peer_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// A TLS failure; the connection cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls rejected the peer's data or the configuration.
    #[error("TLS error: {0}")]
    Rustls(rustls::Error),
    /// Reading TLS records failed (a record larger than rustls accepts, say).
    #[error("TLS I/O error: {0}")]
    Io(io::Error),
    /// A client's first bytes from the server are not the start of a TLS record (holds
    /// the first bytes, 16 at most).
    #[error("the peer does not speak TLS (it sent {0:?})")]
    NotTls(bytes::Bytes),
}

/// A server's TLS configuration that can be replaced while the server runs.
///
/// Every server builder's `tls(...)` takes one (or an `Arc<rustls::ServerConfig>`, which it
/// wraps). Keep a clone and call [`set`](Self::set) to rotate a certificate or change any
/// other setting without a restart: connections accepted afterwards handshake with the new
/// configuration; connections already open keep the one they started with (rustls holds
/// it per session).
///
/// ```
/// use std::sync::Arc;
/// use easynet_core::tls::SharedServerConfig;
///
/// fn config(name: &str) -> Arc<rustls::ServerConfig> {
///     let cert = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
///     let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
///     let provider = Arc::new(rustls::crypto::ring::default_provider());
///     let cfg = rustls::ServerConfig::builder_with_provider(provider)
///         .with_safe_default_protocol_versions().unwrap()
///         .with_no_client_auth()
///         .with_single_cert(vec![cert.cert.der().clone()], key).unwrap();
///     Arc::new(cfg)
/// }
///
/// let (old, new) = (config("localhost"), config("localhost"));
/// let shared = SharedServerConfig::new(old.clone());
/// let server_side = shared.clone(); // what the builder's `tls(...)` keeps
/// shared.set(new.clone());
/// assert!(Arc::ptr_eq(&server_side.get(), &new));
/// ```
#[derive(Clone)]
pub struct SharedServerConfig(Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>);

impl SharedServerConfig {
    /// Shares `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(config)))
    }

    /// The configuration new connections use now.
    pub fn get(&self) -> Arc<rustls::ServerConfig> {
        // A poisoned lock still holds a whole Arc: nothing panics while holding it.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the configuration for connections accepted from now on; returns the old one.
    pub fn set(&self, config: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
        let mut slot = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *slot, config)
    }
}

impl From<Arc<rustls::ServerConfig>> for SharedServerConfig {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        Self::new(config)
    }
}

impl std::fmt::Debug for SharedServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedServerConfig").finish_non_exhaustive()
    }
}

/// One TLS session (server or client) driven with bytes in and bytes out.
///
/// rustls is already sans-IO; this wrapper gives the connection machine one shape for both
/// sides and keeps rustls API changes in one file. It turns rustls's internal buffer limit
/// off: the connection machine applies its own high-water mark.
///
/// ```
/// use std::sync::Arc;
/// use bytes::BytesMut;
/// use easynet_core::tls::TlsSession;
///
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let provider = Arc::new(rustls::crypto::ring::default_provider());
/// let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
/// let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
///     .with_safe_default_protocol_versions().unwrap()
///     .with_no_client_auth()
///     .with_single_cert(vec![cert.cert.der().clone()], key).unwrap();
/// let mut roots = rustls::RootCertStore::empty();
/// roots.add(cert.cert.der().clone()).unwrap();
/// let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
///     .with_safe_default_protocol_versions().unwrap()
///     .with_root_certificates(roots)
///     .with_no_client_auth();
///
/// let mut server = TlsSession::server(Arc::new(server_cfg)).unwrap();
/// let name = "localhost".try_into().unwrap();
/// let mut client = TlsSession::client(Arc::new(client_cfg), name).unwrap();
/// client.write_plaintext(b"hello");
/// let (mut wire, mut plain) = (BytesMut::new(), BytesMut::new());
/// for _ in 0..4 {
///     client.write_ciphertext(&mut wire);
///     server.read_ciphertext(&wire.split(), &mut plain).unwrap();
///     server.write_ciphertext(&mut wire);
///     client.read_ciphertext(&wire.split(), &mut BytesMut::new()).unwrap();
/// }
/// assert!(!server.is_handshaking());
/// assert_eq!(&plain[..], b"hello");
/// ```
pub struct TlsSession {
    conn: rustls::Connection,
    peer_closed: bool,
    /// Bytes of the first record header checked so far (a client checks 3; a server
    /// leaves it to rustls).
    checked: u8,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    fn wrap(mut conn: rustls::Connection) -> Self {
        conn.set_buffer_limit(None);
        let checked = match conn {
            rustls::Connection::Client(_) => 0,
            rustls::Connection::Server(_) => HEADER_CHECKED,
        };
        Self {
            conn,
            peer_closed: false,
            checked,
        }
    }

    /// A client checks the server's first bytes itself: rustls waits for a whole record
    /// header, so a plain-text server that sent a short line would hold the handshake until
    /// its deadline. A server's first record is a handshake (0x16) or an alert (0x15),
    /// version 3.x with x <= 4.
    fn check_first_bytes(&mut self, data: &[u8]) -> Result<(), TlsError> {
        let wanted = usize::from(HEADER_CHECKED - self.checked);
        for &b in data.iter().take(wanted) {
            let ok = match self.checked {
                0 => b == 0x15 || b == 0x16,
                1 => b == 0x03,
                _ => b <= 0x04,
            };
            if !ok {
                let shown = &data[..data.len().min(16)];
                return Err(TlsError::NotTls(bytes::Bytes::copy_from_slice(shown)));
            }
            self.checked += 1;
        }
        Ok(())
    }

    /// A server session.
    pub fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, TlsError> {
        Ok(Self::wrap(rustls::ServerConnection::new(config)?.into()))
    }

    /// A client session for `server_name`.
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, TlsError> {
        Ok(Self::wrap(
            rustls::ClientConnection::new(config, server_name)?.into(),
        ))
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds ciphertext read from the socket; appends decrypted plaintext to `plaintext`.
    ///
    /// On error an alert may be queued: call [`write_ciphertext`](Self::write_ciphertext)
    /// once more before closing.
    pub fn read_ciphertext(
        &mut self,
        mut data: &[u8],
        plaintext: &mut BytesMut,
    ) -> Result<(), TlsError> {
        if self.checked < HEADER_CHECKED {
            self.check_first_bytes(data)?;
        }
        if data.len() > MAX_RECORD && !self.conn.is_handshaking() {
            // Several records: room for all their plaintext at once (records only add to
            // its length), as growing record by record would copy what came before each
            // time.
            plaintext.reserve(data.len());
        }
        while !data.is_empty() {
            // read_tls takes what fits in its buffer; process and drain, then go on.
            let n = self.conn.read_tls(&mut data).map_err(TlsError::Io)?;
            let state = self.conn.process_new_packets()?;
            self.drain_plaintext(state.plaintext_bytes_to_read(), plaintext)?;
            self.peer_closed |= state.peer_has_closed();
            if n == 0 || self.peer_closed {
                break; // nothing more is accepted after close_notify
            }
        }
        Ok(())
    }

    fn drain_plaintext(
        &mut self,
        mut available: usize,
        out: &mut BytesMut,
    ) -> Result<(), TlsError> {
        // Copy rustls's plaintext chunks straight into `out` (`fill_buf`, no zero-filled
        // staging area as `read` would need).
        out.reserve(available);
        let mut reader = self.conn.reader();
        while available > 0 {
            match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    let n = chunk.len();
                    out.extend_from_slice(chunk);
                    reader.consume(n);
                    available -= n.min(available);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // UnexpectedEof: the peer closed without close_notify; reported by EOF.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(TlsError::Io(e)),
            }
        }
        Ok(())
    }

    /// Queues plaintext for sending (encrypted by the next `write_ciphertext`).
    pub fn write_plaintext(&mut self, data: &[u8]) {
        // With the buffer limit off, rustls takes everything (buffered until the handshake
        // completes when needed).
        let _ = self.conn.writer().write_all(data);
    }

    /// Queues `parts`, one after another, as one payload: rustls cuts its records across
    /// them (copying each byte once, into its record), so they need not be joined first.
    pub fn write_plaintext_vectored<const N: usize>(&mut self, parts: [&[u8]; N]) {
        // With the buffer limit off, rustls takes all of it in one call.
        let taken = self
            .conn
            .writer()
            .write_vectored(&parts.map(io::IoSlice::new));
        debug_assert_eq!(taken.ok(), Some(parts.iter().map(|p| p.len()).sum()));
    }

    /// Appends every pending TLS record to `out`.
    pub fn write_ciphertext(&mut self, out: &mut BytesMut) {
        let mut writer = out.writer();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut writer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Writes pending TLS records straight from rustls's buffer to `out` (a socket, say),
    /// as rustls's own `write_tls`: one vectored write, no copy on our side. Returns the
    /// bytes written (0 when nothing is pending); `out`'s errors (`WouldBlock`) pass through.
    pub fn write_tls(&mut self, out: &mut dyn Write) -> io::Result<usize> {
        self.conn.write_tls(out)
    }

    /// True when TLS records wait to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues a close_notify alert.
    pub fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// True once the peer's close_notify was received.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// What the handshake settled.
    pub fn info(&self) -> TlsInfo {
        let server_name = match &self.conn {
            rustls::Connection::Server(s) => s.server_name().map(str::to_owned),
            rustls::Connection::Client(_) => None,
        };
        TlsInfo {
            protocol_version: self.conn.protocol_version(),
            cipher_suite: self.conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn_protocol: self.conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name,
            peer_certificates: self
                .conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        }
    }
}

// The causes are in the messages, so they are not `source`s (a chain printer would
// print them twice): `From` by hand instead of `#[from]`.
impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}
