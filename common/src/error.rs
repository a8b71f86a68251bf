//! Errors of the servers, shared by both drivers.

use std::io;

use easynet_core::handler::{HandlerError, SendError};
use easynet_core::protocol::{ParseError, SerializeError};

use crate::BindError;

/// Why a server could not be activated or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The server was closed; it cannot be activated or served again.
    #[error("server is closed")]
    Closed,
    /// Another `serve` is starting or running.
    #[error("server is already running")]
    AlreadyRunning,
    /// The host could not be resolved.
    #[error("cannot resolve host: {0}")]
    Resolve(#[source] std::io::Error),
    /// Binding failed on some addresses; nothing was left bound.
    #[error("error when trying to create listeners: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Bind(Vec<BindError>),
    /// Binding the Unix socket failed (path in use, not a socket, no permission...).
    #[error("error while attempting to bind on address {addr}: {source}")]
    BindUnix {
        /// The address that could not be bound.
        addr: easynet_core::addr::UnixAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `on_start` failed; the run did not start.
    #[error("on_start failed: {0}")]
    Start(#[source] HandlerError),
    /// A listener failed with an error that is not about one connection or capacity.
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
}

impl ServerError {
    /// Binding the Unix socket at `addr` failed with `source`.
    pub fn bind_unix(addr: &easynet_core::addr::UnixAddr, source: std::io::Error) -> Self {
        ServerError::BindUnix {
            addr: addr.clone(),
            source,
        }
    }
}

impl From<easynet_core::lifecycle::ServerError> for ServerError {
    fn from(e: easynet_core::lifecycle::ServerError) -> Self {
        match e {
            easynet_core::lifecycle::ServerError::AlreadyRunning => ServerError::AlreadyRunning,
            _ => ServerError::Closed,
        }
    }
}

/// A builder setting is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_recv_size` must be strictly positive.
    #[error("'max_recv_size' must be a strictly positive integer")]
    MaxRecvSize,
    /// The per-peer datagram queue bound must be at least 1.
    #[error("'max_pending' must be a strictly positive integer")]
    MaxPending,
    /// A Unix server needs a path or an abstract name to bind.
    #[error("a Unix socket server needs a path or an abstract name")]
    NoUnixAddress,
    /// A socket given to `from_std` is not of the server's type (a TCP server takes a
    /// stream socket, a UDP server a datagram socket).
    #[error("the inherited socket is not of the server's type")]
    InheritedSocket,
    /// `max_connections` must be at least 1.
    #[error("'max_connections' must be a strictly positive integer")]
    MaxConnections,
    /// `idle_timeout` must be longer than zero.
    #[error("'idle_timeout' must be longer than zero")]
    IdleTimeout,
    /// A TLS option was given without a TLS configuration.
    #[error("{0} is only meaningful with tls")]
    TlsOptionWithoutTls(&'static str),
}

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
