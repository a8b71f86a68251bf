//! easynet-core: the sans-IO heart of easynet.
//!
//! This crate holds everything a server or client does that is not I/O: protocols (how
//! messages become bytes and back), the portable handler traits, and the state machines of
//! the server lifecycle, of a stream connection (optionally TLS through rustls) and of a
//! datagram endpoint. It opens no socket, starts no thread and never reads a clock: every
//! input carries an explicit `now`, and every machine says when it next needs to be woken.
//! The drivers, `easynet-mio` and `easynet-tokio`, only move bytes between sockets and these
//! machines.
//!
//! # Modules
//!
//! - [`addr`]: [`Addr`](addr::Addr) (internet or Unix) as handlers see it, and
//!   [`UnixAddr`](addr::UnixAddr), a plain value with no I/O.
//! - [`protocol`]: framings (lines, length-prefixed, raw), serializers (UTF-8, bytes, JSON)
//!   and the protocol traits both sides use.
//! - [`handler`]: the synchronous [`StreamHandler`](handler::StreamHandler) and
//!   [`DatagramHandler`](handler::DatagramHandler) traits and the [`Service`](handler::Service)
//!   that makes them.
//! - [`lifecycle`]: the server's created / listening / serving / closed rules.
//! - [`accept`]: which accept errors pause accepting and for how long.
//! - [`server`]: the server-level machine (run order, shutdown fan-out with one deadline,
//!   accept gates, connection table) a driver drives beside its connections.
//! - [`stream`]: the per-connection machine and the session that drives a handler with it.
//! - [`datagram`]: per-peer routines, the bounded pending queue and idle eviction.
//! - [`tls`] (feature `tls`): the rustls session wrapper.
//! - `sim` (feature `sim`): a deterministic in-memory simulator of whole servers and their
//!   clients, to test a server's logic without sockets (see below).
//!
//! # Testing a server without sockets
//!
//! With the `sim` feature (in `[dev-dependencies]`: `easynet-core = { version = "0.1",
//! features = ["sim"] }`), `sim::StreamSim` and `sim::DatagramSim` run a whole server (its
//! service hooks, many connections, shutdown) with the very sessions the drivers run, on a
//! virtual clock, with simulated clients and seeded faults; `sim::strategy` has proptest
//! strategies. No socket, no thread, no runtime, no sleeping; the same seed gives the same
//! run.
//!
//! # How to drive it
//!
//! A driver feeds what happened (bytes read, end of stream, a timer firing) and then does
//! what the machine asks (write these bytes, close now, wake me at this instant). There is
//! one question per machine: [`Driven::poll_action`](stream::Driven::poll_action) for a
//! stream connection (portable [`Session`](stream::Session) and async
//! [`AsyncSession`](stream::AsyncSession) alike),
//! [`Server::poll_event`](server::Server::poll_event) for the whole server, and
//! [`DatagramServer::poll_output`](datagram::DatagramServer::poll_output) (or
//! [`AsyncDatagramServer::poll_output`](datagram::AsyncDatagramServer::poll_output)) for a
//! datagram endpoint.
//!
//! # Writing a driver
//!
//! `examples/poll_loop.rs` of the workspace is a complete third driver in one file: a
//! single-threaded loop on the `polling` crate serving TCP (with TLS and async handlers) and
//! UDP through this crate's public API, with signals and a graceful shutdown; the workspace
//! runs the drivers' shared scenarios against it. The "Writing a driver" chapter of the
//! workspace's `ARCHITECTURE.md` lists every obligation of a driver, in order (bind, run
//! start, accepting, each connection's loop, timers, wake-ups, fairness, shutdown,
//! teardown, datagram endpoints), with that example as its reference.

#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![warn(unreachable_pub)]
// `deny`, not `forbid`: protocol::checked makes text of bytes it has just checked.
#![deny(unsafe_code)]
// docs.rs: label every feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod accept;
pub mod addr;
pub mod datagram;
pub mod error;
pub mod handler;
pub mod lifecycle;
pub mod log_limit;
pub mod protocol;
pub mod push;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod stream;
#[cfg(feature = "tls")]
pub mod tls;

/// The rustls this crate is built against (its types are in our API).
#[cfg(feature = "tls")]
pub use rustls;

pub use error::{ConfigError, ServerError};

/// Handle of a connection or datagram peer, unique within one server run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A caught panic's message, for the one log line that reports it.
pub(crate) fn panic_message(what: &str, panic: Box<dyn std::any::Any + Send>) -> String {
    format!(
        "{what} panicked: {}",
        datagram::contain::panic_message(&*panic)
    )
}

/// `now + d`, or the latest instant the clock can hold near it when that overflows
/// (`Duration::MAX` and the like mean "no deadline worth the name", never a panic).
///
/// ```
/// use std::time::{Duration, Instant};
/// let now = Instant::now();
/// assert_eq!(easynet_core::deadline_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// assert!(easynet_core::deadline_after(now, Duration::MAX) > now);
/// ```
pub fn deadline_after(now: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    const FAR: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}
