//! What a [`PeerTable`](super::PeerTable) tells its caller: what became of a datagram,
//! what a routine gets when it asks for the next one, the events of timers and shutdown,
//! misuses, and snapshots.

use std::net::SocketAddr;
use std::time::Instant;

use crate::ConnId;

/// Where a peer's routine stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutineState {
    /// No routine is active; the queue is empty.
    Idle,
    /// The routine is busy (its handler is running); new datagrams are queued.
    Running,
    /// The routine waits for its next datagram, until `deadline` if there is one.
    Waiting {
        /// When [`PeerEvent::Timeout`] is due; `None` waits for ever (until shutdown).
        deadline: Option<Instant>,
    },
}

/// What happened to a datagram given to [`PeerTable::arrive`](super::PeerTable::arrive).
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Arrival<T> {
    /// No routine was active: a new routine starts with this datagram and is now running.
    Start(T),
    /// The routine was waiting: it gets this datagram now and is running again.
    Deliver(T),
    /// The routine is busy: the datagram waits in the peer's queue.
    Queued,
    /// The peer's queue is full: the datagram was dropped and counted.
    Dropped(T),
    /// The table is shut down: the datagram was dropped and counted.
    Closed(T),
}

/// What a routine gets when it asks for its next datagram with
/// [`PeerTable::recv`](super::PeerTable::recv).
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Recv<T> {
    /// The oldest queued datagram.
    Ready(T),
    /// Nothing queued and a zero timeout: the wait timed out at once.
    Timeout,
    /// Nothing queued: the routine now waits; an [`Arrival::Deliver`] or a
    /// [`PeerEvent::Timeout`] resumes it.
    Waiting,
    /// The table is shut down; the routine must end.
    Closed,
}

/// What the table reports from timers and shutdown; drain with
/// [`PeerTable::poll_event`](super::PeerTable::poll_event).
#[derive(Debug)]
#[non_exhaustive]
pub enum PeerEvent<U, A = SocketAddr> {
    /// The waiting routine of `peer` hit its deadline; it is running again and gets a timeout.
    Timeout {
        /// The peer.
        peer: A,
    },
    /// `peer` was idle for the idle timeout and was forgotten; `state` is its user state.
    Evicted {
        /// The peer.
        peer: A,
        /// The handle it had; a later datagram from it gets a new one.
        id: ConnId,
        /// Its per-peer user state, handed back so the caller can release it.
        state: U,
    },
    /// Shutdown ended the routine of `peer`, which was waiting for a datagram.
    Closed {
        /// The peer.
        peer: A,
    },
}

/// A misuse of the routine calls by the caller (never caused by peer input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoutineError<A = SocketAddr> {
    /// The table has no such peer (never seen, or evicted).
    #[error("unknown datagram peer {0}")]
    UnknownPeer(A),
    /// The peer has no active routine.
    #[error("datagram peer {0} has no active routine")]
    NoRoutine(A),
    /// The peer's routine is already waiting for a datagram.
    #[error("the routine of datagram peer {0} is already waiting")]
    AlreadyWaiting(A),
}

/// Counters of a [`PeerTable`](super::PeerTable) (and of the server built on it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagrams dropped: queue full, arrived after shutdown, or still queued at shutdown.
    pub dropped: u64,
    /// Peers currently known.
    pub peers: usize,
    /// Peers evicted after being idle.
    pub evicted: u64,
    /// Datagrams waiting in all queues now.
    pub queued: usize,
}

/// A snapshot of one peer, from [`PeerTable::peer`](super::PeerTable::peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's handle.
    pub id: ConnId,
    /// Where its routine stands.
    pub routine: RoutineState,
    /// Datagrams waiting in its queue.
    pub queued: usize,
    /// Datagrams of this peer dropped because its queue was full.
    pub dropped: u64,
    /// The last arrival or routine call of this peer.
    pub last_activity: Instant,
}
