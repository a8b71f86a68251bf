//! The datagram (UDP) endpoint: one routine per peer, a bounded queue of pending datagrams
//! per peer, parse on demand, receive timeouts and idle eviction.
//!
//! The layers:
//!
//! - [`PeerTable`] is the pure per-peer machine, generic over the payload. It decides which
//!   routine gets which datagram when, owns the deadlines and counts drops. Both drivers use
//!   it.
//! - [`DatagramServer`] runs the portable synchronous
//!   [`DatagramHandler`](crate::handler::DatagramHandler) on a [`PeerTable`]: datagrams in,
//!   [`Output::Transmit`]s out, drained until [`Output::Idle`].
//! - [`AsyncDatagramServer`] is the same for [`AsyncDatagramHandler`]s: it owns each
//!   routine's future and polls it itself (no runtime needed); the handler's
//!   [`DatagramPeer`] is a view over that routine's state. Underneath,
//!   [`RoutineTable`] decides which datagram goes to which routine and when (cancel-safe:
//!   a receive can be cancelled).
//!
//! User code (factory, decoding, encoding, handler, its `Drop`) runs contained
//! ([`contain`]): a panic ends at most that peer's routine and is logged once.
//!
//! Both are generic over the peer address ([`PeerAddr`](crate::addr::PeerAddr)):
//! `SocketAddr` for UDP, [`UnixAddr`](crate::addr::UnixAddr) for Unix datagram sockets.
//!
//! Where we differ from EasyNetwork (whose per-client queue is unbounded): each peer's queue
//! holds at most [`DatagramConfig::max_pending`] datagrams, more are dropped and counted,
//! and peers idle for [`DatagramConfig::idle_timeout`] are forgotten (their handler dropped).

mod async_server;
pub mod contain;
mod peer;
mod peers;
mod routines;
mod send;
mod server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::protocol::ConfigError;

pub use async_server::{AsyncDatagramServer, AsyncOutput, SendId};
pub use peer::{AsyncDatagramHandler, DatagramPeer, DatagramSendError};
pub use peers::{
    Arrival, DatagramStats, PeerEvent, PeerInfo, PeerTable, Recv, RoutineError, RoutineState,
};
pub use routines::{Reply, RoutineId, RoutineOutput, RoutineTable};
pub use send::send_in_order;
pub use server::DatagramServer;

/// A datagram as queued for its peer's routine: its bytes, or only its length when it is
/// past [`DatagramConfig::max_datagram_size`] (so memory stays bounded). Decoding it
/// ([`contain::decode`]) gives the request, or `ParseError::FrameTooLarge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The whole datagram, not decoded yet.
    Data(BytesMut),
    /// A datagram of `got` bytes, past the `limit`; its bytes were not kept.
    TooLarge {
        /// The size limit.
        limit: usize,
        /// The datagram's size.
        got: usize,
    },
}

impl Payload {
    /// `data` as queued under a size `limit`.
    #[inline]
    pub fn new(data: BytesMut, limit: usize) -> Self {
        if data.len() > limit {
            Payload::TooLarge {
                limit,
                got: data.len(),
            }
        } else {
            Payload::Data(data)
        }
    }
}

/// Settings of a datagram endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramConfig {
    /// Most datagrams queued per peer while its routine is busy; more are dropped. At least 1.
    /// Default 1024.
    pub max_pending: usize,
    /// How long a peer with no active routine and nothing queued is kept before it is
    /// evicted and its handler dropped. Default 120 s.
    pub idle_timeout: Duration,
    /// Largest datagram delivered as a request. A longer one is not queued: its handler gets
    /// [`ParseError::FrameTooLarge`](crate::protocol::ParseError::FrameTooLarge) instead.
    /// Default 65 535 (any UDP datagram).
    pub max_datagram_size: usize,
    /// Where the endpoint counts ([`ServerStats`](crate::stats::ServerStats)): a clone of
    /// the server machine's [`Recorder`](crate::stats::Recorder) (the drivers set it).
    /// `None`: a recorder of the endpoint's own.
    pub recorder: Option<crate::stats::Recorder>,
}

impl DatagramConfig {
    /// Default of [`max_pending`](Self::max_pending).
    pub const DEFAULT_MAX_PENDING: usize = 1024;
    /// Default of [`idle_timeout`](Self::idle_timeout).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default of [`max_datagram_size`](Self::max_datagram_size).
    pub const DEFAULT_MAX_DATAGRAM_SIZE: usize = u16::MAX as usize;

    /// This configuration with another queue bound.
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// This configuration with another idle timeout.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// This configuration with another datagram size limit.
    pub fn with_max_datagram_size(mut self, bytes: usize) -> Self {
        self.max_datagram_size = bytes;
        self
    }

    /// This configuration counting into `recorder`.
    pub fn with_recorder(mut self, recorder: crate::stats::Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Checks the settings: `max_pending` and `max_datagram_size` must be at least 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_pending == 0 {
            return Err(ConfigError::Zero {
                what: "max_pending",
            });
        }
        if self.max_datagram_size == 0 {
            return Err(ConfigError::Zero {
                what: "max_datagram_size",
            });
        }
        Ok(())
    }
}

impl Default for DatagramConfig {
    fn default() -> Self {
        Self {
            max_pending: Self::DEFAULT_MAX_PENDING,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_datagram_size: Self::DEFAULT_MAX_DATAGRAM_SIZE,
            recorder: None,
        }
    }
}

/// One datagram for the driver to send from the endpoint's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<A = SocketAddr> {
    /// The peer it goes to.
    pub to: A,
    /// The whole datagram.
    pub data: Bytes,
}

/// What [`DatagramServer::poll_output`] asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output<A = SocketAddr> {
    /// Send this datagram; responses come in the order the handlers sent them.
    Transmit(Transmit<A>),
    /// Nothing more to do now: wait for a datagram, or until `next_timeout` and then call
    /// [`DatagramServer::handle_timeout`]. Ends every drain loop.
    Idle {
        /// When the next timer is due, if any.
        next_timeout: Option<Instant>,
    },
}
