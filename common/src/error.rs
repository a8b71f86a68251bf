//! Errors of the servers, shared by both drivers.

use std::io;

use easynet_core::handler::SendError;
use easynet_core::protocol::{ParseError, SerializeError};
pub use easynet_core::{ConfigError, ServerError};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client was closed (by `close`, or the connection ended); nothing was done.
    #[error("client is closed")]
    Closed,
    /// The server closed the connection before a complete response arrived.
    #[error("connection closed by the peer")]
    Eof,
    /// No complete response within the timeout; partial bytes are kept. From a stream
    /// client's `send_timeout`: the request was not handed to the kernel in time, and the
    /// connection was closed.
    #[error("timed out")]
    Timeout,
    /// The response bytes are not valid; they were skipped, the next response can be read.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The request could not be serialized; nothing was sent.
    #[error(transparent)]
    Serialize(#[from] SerializeError),
    /// The TLS handshake failed, timed out, or met a peer that does not speak TLS; it
    /// says which (`CaUsedAsEndEntity`, `UnknownIssuer`, ...). The cause is in the text, not
    /// in `source`, so a chain printer prints it once.
    #[error("TLS handshake failed: {0}")]
    Handshake(easynet_core::stream::HandshakeError),
    /// A socket error.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// An option is invalid (`max_recv_size` 0, ...); nothing was done.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl From<SendError> for ClientError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Serialize(e) => ClientError::Serialize(e),
            _ => ClientError::Closed,
        }
    }
}
