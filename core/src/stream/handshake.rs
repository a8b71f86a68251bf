//! [`HandshakeError`]: why a TLS handshake did not complete.

use std::io;
use std::time::Duration;

use bytes::Bytes;

/// Why a TLS handshake did not complete; a client's `connect` returns it.
///
/// Its text names the cause in one line and [`source`](std::error::Error::source) returns
/// nothing, so a program that prints an error with its chain (`anyhow`'s `{:#}`) prints the
/// cause once.
///
/// ```
/// use std::time::Duration;
/// use easynet_core::stream::HandshakeError;
///
/// let e = HandshakeError::Timeout(Duration::from_secs(60));
/// assert_eq!(e.to_string(), "no TLS handshake within 60s");
/// let e = HandshakeError::NotTls(bytes::Bytes::from_static(b"hello\n"));
/// assert_eq!(e.to_string(), r#"the peer does not speak TLS (it sent b"hello\n")"#);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// rustls refused the peer's messages or certificate: `invalid peer certificate:
    /// UnknownIssuer`, `CaUsedAsEndEntity`, an alert the peer sent...
    #[cfg(feature = "tls")]
    #[error("{0}")]
    Tls(rustls::Error),
    /// The peer's first bytes are not the start of a TLS record (a plain-text server): the
    /// handshake fails on them instead of waiting for its deadline. Holds the first bytes
    /// received (16 at most).
    #[error("the peer does not speak TLS (it sent {0:?})")]
    NotTls(Bytes),
    /// The handshake did not complete within the handshake timeout.
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the TLS handshake")]
    Eof,
    /// Reading the peer's TLS records failed (a record larger than TLS allows, say).
    #[error("invalid TLS records: {0}")]
    Io(io::Error),
    /// The handshake was cut short on this side (closed or aborted before it completed).
    #[error("the TLS handshake was abandoned")]
    Abandoned,
}
