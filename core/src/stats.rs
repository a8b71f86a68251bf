//! Server counters: a cheap [`ServerStats`] snapshot, and the [`Recorder`] the machines of
//! one server count into (and take their per-peer log budgets from).
//!
//! The rules are counted here, in the core, so every driver (and the simulator) reports the
//! same numbers. Cost on the hot path: a stream connection counts into plain integers of its
//! own and adds them to the shared relaxed atomics when it is asked what to do next
//! (`poll_action`, once per socket event, not per request) and when it closes; datagram
//! endpoints run on one thread and add to the atomics directly. No lock is taken per
//! request: the one mutex guards the log budgets, taken only when a line might be written.
//!
//! ```
//! use easynet_core::stats::Recorder;
//!
//! let recorder = Recorder::new(); // a driver gives a clone to each connection's config
//! let stats = recorder.snapshot();
//! assert_eq!((stats.accepted, stats.open, stats.requests), (0, 0, 0));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::addr::Addr;
use crate::log_limit::PeerLogLimits;

/// A snapshot of one server's counters, since it was built (across runs). Stream servers
/// fill the connection fields; datagram servers have no connections and count datagrams.
/// Every server of both drivers has `stats()`; here the server machine alone:
///
/// ```
/// use std::time::Duration;
/// use easynet_core::server::Server;
///
/// let mut server = Server::new(Duration::from_secs(30));
/// let id = server.accepted();
/// assert_eq!(server.stats().open, 1);
/// server.closed(id);
/// let s = server.stats();
/// assert_eq!((s.accepted, s.open, s.closed), (1, 0, 1));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now (accepted and not yet closed).
    pub open: u64,
    /// Connections ended.
    pub closed: u64,
    /// How the ended connections ended. Sums to `closed` except for connections a driver
    /// dropped before they started (it could not register the socket).
    pub closed_by: CloseCounts,
    /// Bytes received: read from stream sockets (TLS: ciphertext) or datagram payloads.
    pub bytes_in: u64,
    /// Bytes sent: written to stream sockets (TLS: ciphertext) or datagram payloads given
    /// to the socket.
    pub bytes_out: u64,
    /// Requests handed to handlers (decoded messages).
    pub requests: u64,
    /// Messages that could not be decoded (each handed to a handler as a parse error).
    pub parse_errors: u64,
    /// TLS handshakes that failed (an error or alert, or the handshake deadline).
    pub handshake_failures: u64,
    /// Handlers that ended with an error (the connection is reset, the datagram routine
    /// ends).
    pub handler_errors: u64,
    /// Panics caught in user code: handler factories, handlers, decoders and encoders.
    pub handler_panics: u64,
    /// Datagrams received (datagram servers).
    pub datagrams_in: u64,
    /// Datagrams sent (datagram servers).
    pub datagrams_out: u64,
    /// Datagrams we dropped: a peer's queue was full, still queued at shutdown, or (Unix)
    /// an unnamed sender that cannot be answered. The kernel's drops are
    /// `socket_dropped_datagrams`.
    pub dropped_datagrams: u64,
    /// Datagrams the socket's receive buffer dropped, as the kernel reports them (Linux
    /// SO_RXQ_OVFL, read with each datagram received; 0 elsewhere and for Unix datagram
    /// sockets). Counted when the next datagram is read after the drops; drops from before a
    /// run (a socket given with `from_std`, an earlier run) are left out where the kernel's
    /// count can be read at the start (SO_MEMINFO: Linux on x86, ARM, RISC-V).
    pub socket_dropped_datagrams: u64,
}

/// How connections ended; see [`CloseReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseCounts {
    /// [`CloseReason::Normal`].
    pub normal: u64,
    /// [`CloseReason::ByPeer`].
    pub by_peer: u64,
    /// [`CloseReason::Reset`].
    pub reset: u64,
    /// [`CloseReason::Timeout`].
    pub timeout: u64,
    /// [`CloseReason::Error`].
    pub error: u64,
    /// [`CloseReason::Shutdown`].
    pub shutdown: u64,
}

/// Why a connection ended: the first cause wins (a graceful close that then times out is
/// still `Normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Our side closed: the handler returned `Next::Close`, a pusher closed it, or the
    /// server was closed.
    Normal,
    /// The peer closed first (EOF, or TLS close_notify).
    ByPeer,
    /// Reading or writing failed (reset by the peer, broken pipe).
    Reset,
    /// A deadline passed: the TLS handshake's.
    Timeout,
    /// Our error: a handler error or panic, a TLS error, a failed decoder.
    Error,
    /// A server shutdown closed it.
    Shutdown,
}

/// Indices into the shared counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Accepted,
    Closed,
    BytesIn,
    BytesOut,
    Requests,
    ParseErrors,
    HandshakeFailures,
    HandlerErrors,
    HandlerPanics,
    DatagramsIn,
    DatagramsOut,
    Dropped,
    SocketDropped,
    CloseNormal,
    CloseByPeer,
    CloseReset,
    CloseTimeout,
    CloseError,
    CloseShutdown,
}

const COUNTERS: usize = Counter::CloseShutdown as usize + 1;

struct Shared {
    counters: [AtomicU64; COUNTERS],
    logs: Mutex<PeerLogLimits<Addr>>,
}

/// Where the machines of one server count, shared by all of them (a cheap clone: one
/// `Arc`). The [`Server`](crate::server::Server) machine owns one; a driver puts a clone in
/// each connection's [`StreamConfig`](crate::stream::StreamConfig) and each datagram
/// endpoint's [`DatagramConfig`](crate::datagram::DatagramConfig). It also holds the
/// server's per-peer log budgets ([`log_limit`](crate::log_limit)) for events a client can
/// repeat by reconnecting (failed handshakes, handler errors).
#[derive(Clone)]
pub struct Recorder(Arc<Shared>);

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Recorder").field(&self.snapshot()).finish()
    }
}

/// Two configurations are equal when they count into the same recorder.
impl PartialEq for Recorder {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Recorder {}

impl Recorder {
    /// A recorder with every counter at 0.
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            logs: Mutex::new(PeerLogLimits::default()),
        }))
    }

    /// The counters now. Each is read on its own (relaxed): a snapshot taken while the
    /// server runs may be a few events apart between fields.
    pub fn snapshot(&self) -> ServerStats {
        let c = |k: Counter| self.0.counters[k as usize].load(Ordering::Relaxed);
        let (accepted, closed) = (c(Counter::Accepted), c(Counter::Closed));
        ServerStats {
            accepted,
            open: accepted.saturating_sub(closed),
            closed,
            closed_by: CloseCounts {
                normal: c(Counter::CloseNormal),
                by_peer: c(Counter::CloseByPeer),
                reset: c(Counter::CloseReset),
                timeout: c(Counter::CloseTimeout),
                error: c(Counter::CloseError),
                shutdown: c(Counter::CloseShutdown),
            },
            bytes_in: c(Counter::BytesIn),
            bytes_out: c(Counter::BytesOut),
            requests: c(Counter::Requests),
            parse_errors: c(Counter::ParseErrors),
            handshake_failures: c(Counter::HandshakeFailures),
            handler_errors: c(Counter::HandlerErrors),
            handler_panics: c(Counter::HandlerPanics),
            datagrams_in: c(Counter::DatagramsIn),
            datagrams_out: c(Counter::DatagramsOut),
            dropped_datagrams: c(Counter::Dropped),
            socket_dropped_datagrams: c(Counter::SocketDropped),
        }
    }

    /// Counts `n` datagrams dropped by the driver (a Unix datagram from an unnamed sender,
    /// which the core never sees).
    pub fn add_dropped(&self, n: u64) {
        self.add(Counter::Dropped, n);
    }

    /// The server-wide per-peer log budget ([`PeerLogLimits::check`]), keyed by the peer's
    /// address without its port (reconnecting from new ports does not buy new lines).
    /// For a driver's own client-triggered lines.
    pub fn check_log(&self, peer: &Addr, now: Instant) -> Option<u64> {
        let key = match peer {
            Addr::Inet(a) => Addr::Inet(std::net::SocketAddr::new(a.ip(), 0)),
            other => other.clone(),
        };
        self.0
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(key, now)
    }

    pub(crate) fn add(&self, k: Counter, n: u64) {
        if n > 0 {
            self.0.counters[k as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_close(&self, reason: CloseReason) {
        let k = match reason {
            CloseReason::Normal => Counter::CloseNormal,
            CloseReason::ByPeer => Counter::CloseByPeer,
            CloseReason::Reset => Counter::CloseReset,
            CloseReason::Timeout => Counter::CloseTimeout,
            CloseReason::Error => Counter::CloseError,
            CloseReason::Shutdown => Counter::CloseShutdown,
        };
        self.add(k, 1);
    }
}

/// One socket's drop counter as the kernel reports it (SO_RXQ_OVFL): cumulative per
/// socket, a `u32` that wraps. A driver keeps one per datagram socket and reports each value
/// it reads; the increase since the last one is added to the server's
/// [`ServerStats::socket_dropped_datagrams`], so several sockets add up. A value behind the
/// last one (less than half the `u32` range behind: a datagram queued before the starting
/// count was taken) adds nothing.
///
/// The drivers ask for the count with every read: their reads are batches (`recvmmsg`),
/// each datagram with a control buffer that the kernel fills in only once the socket has
/// dropped, so asking costs nothing until then, and drops while a batch is handled are
/// seen with the next datagram read.
///
/// ```
/// use easynet_core::stats::{Recorder, SocketDrops};
///
/// let recorder = Recorder::new();
/// let mut socket = SocketDrops::new(recorder.clone());
/// socket.report(3);
/// socket.report(5);
/// assert_eq!(recorder.snapshot().socket_dropped_datagrams, 5);
/// ```
#[derive(Debug)]
pub struct SocketDrops {
    /// The last value reported; the kernel's count starts at 0 with the socket.
    last: u32,
    recorder: Recorder,
}

impl SocketDrops {
    /// A socket whose count starts at 0, counting into `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Self::starting_at(recorder, 0)
    }

    /// A socket whose count is `now` (its drops before the server served it, or before this
    /// run: not counted), counting into `recorder`.
    pub fn starting_at(recorder: Recorder, now: u32) -> Self {
        Self {
            last: now,
            recorder,
        }
    }

    /// The kernel's cumulative count read with a datagram: adds what it grew by.
    pub fn report(&mut self, reported: u32) {
        let grown = reported.wrapping_sub(self.last);
        if grown > u32::MAX / 2 {
            // Behind the last value: read with a datagram queued before it was taken.
            return;
        }
        self.last = reported;
        self.recorder.add(Counter::SocketDropped, u64::from(grown));
    }
}

/// One connection's counts since it last added them to its [`Recorder`]: plain integers,
/// so counting a request or a read costs an increment.
#[derive(Debug, Default)]
pub(crate) struct ConnCounts {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) requests: u64,
    pub(crate) parse_errors: u64,
    pub(crate) handshake_failures: u64,
    pub(crate) handler_errors: u64,
    pub(crate) handler_panics: u64,
}

impl ConnCounts {
    /// Adds the counts to `to` and starts again from 0.
    pub(crate) fn fold(&mut self, to: &Recorder) {
        let c = std::mem::take(self);
        to.add(Counter::BytesIn, c.bytes_in);
        to.add(Counter::BytesOut, c.bytes_out);
        to.add(Counter::Requests, c.requests);
        to.add(Counter::ParseErrors, c.parse_errors);
        to.add(Counter::HandshakeFailures, c.handshake_failures);
        to.add(Counter::HandlerErrors, c.handler_errors);
        to.add(Counter::HandlerPanics, c.handler_panics);
    }

    /// Something was counted since the last fold.
    pub(crate) fn is_dirty(&self) -> bool {
        (self.bytes_in
            | self.bytes_out
            | self.requests
            | self.parse_errors
            | self.handshake_failures
            | self.handler_errors
            | self.handler_panics)
            != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_counts_reach_the_snapshot_once() {
        let r = Recorder::new();
        let mut c = ConnCounts {
            bytes_in: 10,
            requests: 2,
            ..ConnCounts::default()
        };
        assert!(c.is_dirty());
        c.fold(&r);
        assert!(!c.is_dirty());
        c.fold(&r);
        r.add(Counter::Accepted, 3);
        r.add(Counter::Closed, 1);
        r.add_close(CloseReason::ByPeer);
        let s = r.snapshot();
        assert_eq!((s.bytes_in, s.requests, s.accepted, s.open), (10, 2, 3, 2));
        assert_eq!(s.closed_by.by_peer, 1);
    }

    #[test]
    fn socket_drops_add_increases_per_socket_across_wrap() {
        let r = Recorder::new();
        let (mut a, mut b) = (
            SocketDrops::new(r.clone()),
            SocketDrops::starting_at(r.clone(), 100),
        );
        a.report(10);
        a.report(10); // unchanged: nothing new
        a.report(2_000_000_000);
        a.report(4_000_000_000);
        a.report(5); // wrapped: 2^32 + 5 in all
        a.report(3); // an older datagram's count: nothing
        b.report(90); // queued before b's start: nothing
        b.report(104);
        assert_eq!(r.snapshot().socket_dropped_datagrams, (1 << 32) + 5 + 4);
    }

    #[test]
    fn log_budget_is_per_host_not_per_port() {
        let r = Recorder::new();
        let now = Instant::now();
        let a = |port| Addr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        let passed = (1..=100u16)
            .filter(|&p| r.check_log(&a(p), now).is_some())
            .count();
        assert_eq!(passed, crate::log_limit::DEFAULT_BURST as usize);
    }
}
