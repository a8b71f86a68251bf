//! The errors of a server's life and of its settings, one type per concept, shared by every
//! driver: [`ServerError`] (activate, serve), [`BindError`] (one address that could not be
//! bound) and [`ConfigError`] (a builder or protocol setting that cannot work).
//!
//! easynet's errors put their cause in their own message and return no
//! [`source`](std::error::Error::source) for it, so a chain printer (`anyhow`'s `{:#}`,
//! `tracing`'s error fields) prints every cause once.
//!
//! ```
//! use easynet_core::error::ServerError;
//!
//! let e = ServerError::Resolve(std::io::Error::other("no such host"));
//! assert_eq!(e.to_string(), "cannot resolve host: no such host");
//! assert!(std::error::Error::source(&e).is_none());
//! ```

use std::io;
use std::net::SocketAddr;

use crate::addr::UnixAddr;
use crate::handler::HandlerError;

/// Why a server could not be activated or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The server was closed; it cannot be activated or served again.
    #[error("server is closed")]
    Closed,
    /// Another run is already starting or serving.
    #[error("server is already running")]
    AlreadyRunning,
    /// The host could not be resolved.
    #[error("cannot resolve host: {0}")]
    Resolve(io::Error),
    /// Binding failed on some addresses; nothing was left bound.
    #[error("error when trying to create listeners: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Bind(Vec<BindError>),
    /// Binding the Unix socket failed (path in use, not a socket, no permission...).
    #[error("error while attempting to bind on address {addr}: {error}")]
    BindUnix {
        /// The address that could not be bound.
        addr: UnixAddr,
        /// The OS error.
        error: io::Error,
    },
    /// [`Service::on_start`](crate::handler::Service::on_start) failed; the run did not
    /// start.
    #[error("on_start failed: {0}")]
    Start(HandlerError),
    /// A listener failed with an error that is not about one connection or capacity.
    #[error("listener failed: {0}")]
    Listener(io::Error),
}

impl ServerError {
    /// Binding the Unix socket at `addr` failed with `error`.
    pub fn bind_unix(addr: &UnixAddr, error: io::Error) -> Self {
        ServerError::BindUnix {
            addr: addr.clone(),
            error,
        }
    }
}

/// A bind failure for one address.
#[derive(Debug, thiserror::Error)]
#[error("error while attempting to bind on address {addr}: {error}")]
#[non_exhaustive]
pub struct BindError {
    /// The address that could not be bound.
    pub addr: SocketAddr,
    /// The OS error.
    pub error: io::Error,
}

impl BindError {
    /// Binding `addr` failed with `error`.
    pub fn new(addr: SocketAddr, error: io::Error) -> Self {
        Self { addr, error }
    }
}

/// A setting cannot work: a protocol's limits (raised when the protocol is built) or a
/// server's or client's builder options (raised by `build` / `connect`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit or size must be strictly positive.
    #[error("{what} must be strictly positive")]
    Zero {
        /// The name of the setting.
        what: &'static str,
    },
    /// A setting is outside the range its codec accepts.
    #[error("{what} must be between {min} and {max}, got {got}")]
    OutOfRange {
        /// The name of the setting.
        what: &'static str,
        /// The smallest accepted value.
        min: i64,
        /// The largest accepted value.
        max: i64,
        /// The value given.
        got: i64,
    },
    /// The maximum frame length does not fit in the length prefix.
    #[error("maximum length {max} does not fit in a {width_bytes}-byte length prefix")]
    MaxExceedsPrefix {
        /// The requested maximum.
        max: usize,
        /// The width of the prefix in bytes.
        width_bytes: usize,
    },
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
