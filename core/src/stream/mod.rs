//! Stream connections (TCP, optionally TLS): the per-connection machine and the session that
//! drives a portable handler with it.
//!
//! - [`Connection`] owns one connection's bytes: the receive buffer and decoder, the write
//!   queue, the optional [`TlsSession`](crate::tls::TlsSession) with its handshake and
//!   shutdown deadlines, receive timeouts and the graceful or abortive close. It serves both
//!   sides through a [`Role`]: [`ServerRole`] decodes requests and encodes responses,
//!   [`ClientRole`] the reverse. Async handlers and clients use it directly.
//! - [`Session`] adds a [`StreamHandler`](crate::handler::StreamHandler) on top and applies
//!   EasyNetwork's handler rules (when `on_connection`, `handle` and `on_disconnection` run).
//!
//! A server driver writes one loop against [`Driven`] (portable [`Session`]s and async
//! [`AsyncSession`]s alike): it feeds socket events in and, after every input, does what
//! [`poll_action`](Driven::poll_action) says ([`Action`]: move bytes and wait for the
//! readiness and time in [`Want`], send FIN, report the kernel's unsent bytes, close). The
//! workspace's `examples/poll_loop.rs` is such a loop; ARCHITECTURE.md's "Writing a driver"
//! lists the obligations in order. The older surface ([`transmit`](Session::transmit) /
//! [`advance`](Session::advance), [`wants_read`](Session::wants_read),
//! [`poll_timeout`](Session::poll_timeout), [`poll_close`](Session::poll_close)) remains
//! for simple blocking use; it has no lingering close.
//!
//! A blocking client does not write that loop: [`blocking`] drives a [`Connection`] over a
//! blocking socket (rustls's `complete_io` shape).

mod action;
mod async_session;
pub mod blocking;
mod connection;
mod driven;
mod handshake;
mod idle;
mod peer;
mod role;
mod session;

pub use action::{Action, Want};
pub use async_session::{AsyncSession, AsyncStreamHandler};
pub use connection::Connection;
pub use driven::Driven;
pub use handshake::HandshakeError;
pub use peer::{RecvError, StreamPeer};
pub use role::{ClientRole, Role, ServerRole};
pub use session::{HANDLER_CALLS_PER_TURN, Session};

use std::time::Duration;

/// How a connection ends at the socket level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseHow {
    /// Everything queued was written: shut down the write side (FIN) and close.
    Graceful,
    /// Close at once with a reset (SO_LINGER 0) for plain TCP; used after errors, handshake
    /// failures and deadlines.
    Abort,
}

/// Per-connection settings; the defaults are EasyNetwork's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// Bytes a driver reads per socket read (EasyNetwork's `max_recv_size`): 16 KiB. Read
    /// sizes follow the traffic: while reads fill it, a connection's read size doubles, up
    /// to [`max_read_size`](Self::max_read_size), and it comes back to this once small
    /// reads return.
    pub read_size: usize,
    /// Reading stops while more than this many bytes wait to be written: 256 KiB. A client
    /// that never reads cannot make the server buffer without bound.
    pub write_high_water: usize,
    /// Deadline of the TLS handshake: 60 s.
    pub tls_handshake_timeout: Duration,
    /// Deadline of a graceful close (flush, and the TLS close_notify exchange): 30 s.
    pub shutdown_timeout: Duration,
    /// Exchange close_notify on a graceful TLS close (and wait for the peer's): true.
    pub tls_standard_compatible: bool,
    /// Log each server connection's start and end at INFO (DEBUG when false): true, as
    /// EasyNetwork's `log_client_connection`.
    pub log_connections: bool,
    /// A server connection that receives no byte for this long is closed gracefully, as at
    /// a shutdown of its own (what it sent is answered first), whatever its handler waits
    /// for: `None` (EasyNetwork has none). Not a default of ours because a silent client
    /// is often legitimate (push subscribers, long polls, chat users who do not type); a
    /// peer that vanished is found by TCP keepalive, and a slow request by the handler's
    /// receive timeout. A peer that trickles a byte more often than this is not idle.
    pub idle_timeout: Option<Duration>,
    /// Where the connection counts ([`ServerStats`](crate::stats::ServerStats)) and the
    /// server-wide per-peer log budget its client-triggered lines use: a clone of the server
    /// machine's [`Recorder`](crate::stats::Recorder) (the drivers set it). `None`: nothing
    /// is counted and those lines are limited per connection only.
    pub recorder: Option<crate::stats::Recorder>,
}

/// How far a connection's read size grows past [`StreamConfig::read_size`] while reads fill it.
const READ_GROWTH: usize = 4;

impl StreamConfig {
    /// The largest read a connection asks for: 4 × [`read_size`](Self::read_size) (64 KiB by
    /// default), reached while reads keep filling the read size (bulk transfers). A driver's
    /// shared read buffer is this large.
    pub const fn max_read_size(&self) -> usize {
        self.read_size.saturating_mul(READ_GROWTH)
    }

    /// Sets [`read_size`](Self::read_size).
    pub const fn with_read_size(mut self, bytes: usize) -> Self {
        self.read_size = bytes;
        self
    }

    /// Sets [`write_high_water`](Self::write_high_water).
    pub const fn with_write_high_water(mut self, bytes: usize) -> Self {
        self.write_high_water = bytes;
        self
    }

    /// Sets [`tls_handshake_timeout`](Self::tls_handshake_timeout).
    pub const fn with_tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.tls_handshake_timeout = timeout;
        self
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout).
    pub const fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`log_connections`](Self::log_connections).
    pub const fn with_log_connections(mut self, on: bool) -> Self {
        self.log_connections = on;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// use easynet_core::stream::StreamConfig;
    ///
    /// let config = StreamConfig::default().with_idle_timeout(Some(Duration::from_secs(300)));
    /// assert_eq!(config.idle_timeout, Some(Duration::from_secs(300)));
    /// ```
    pub const fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`tls_standard_compatible`](Self::tls_standard_compatible).
    pub const fn with_tls_standard_compatible(mut self, on: bool) -> Self {
        self.tls_standard_compatible = on;
        self
    }

    /// Sets [`recorder`](Self::recorder).
    pub fn with_recorder(mut self, recorder: crate::stats::Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            read_size: 16 * 1024,
            write_high_water: 256 * 1024,
            tls_handshake_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            tls_standard_compatible: true,
            log_connections: true,
            idle_timeout: None,
            recorder: None,
        }
    }
}
