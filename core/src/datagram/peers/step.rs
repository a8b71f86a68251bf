//! One peer's routine once the table has looked the peer up: its record, and what its
//! routine asks next (a receive, its end) applied to it, with its one timer.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use super::{Recv, RoutineError, RoutineState};
use crate::ConnId;
use crate::addr::PeerAddr;
use crate::datagram::DatagramConfig;

/// A known peer.
pub(super) struct Peer<T, U> {
    pub(super) id: ConnId,
    pub(super) routine: RoutineState,
    pub(super) queue: VecDeque<T>,
    pub(super) dropped: u64,
    pub(super) last_activity: Instant,
    // The one timer a peer can have: its wait deadline, or its eviction time when idle.
    pub(super) timer: Option<Instant>,
    pub(super) state: U,
}

/// What [`PeerTable::step_routine`](super::PeerTable::step_routine) applied after the
/// handler's call.
#[derive(Debug)]
pub(crate) enum Stepped<T> {
    /// The routine asked for its next datagram: as [`PeerTable::recv`](super::PeerTable::recv).
    Recv(Recv<T>),
    /// The routine ended: as [`PeerTable::finish`](super::PeerTable::finish).
    Finished(Option<T>),
}

/// A peer a datagram starts (or reaches) the routine of, with what stepping it needs.
pub(super) struct Delivered<'a, T, U, A> {
    pub(super) p: &'a mut Peer<T, U>,
    pub(super) timers: &'a mut BTreeSet<(Instant, A)>,
    pub(super) queued: &'a mut usize,
    pub(super) config: &'a DatagramConfig,
    pub(super) peer: &'a A,
    pub(super) item: T,
    /// A new routine (else the waiting one got it).
    pub(super) started: bool,
}

/// What the routine of a peer already looked up asks next, applied as
/// [`PeerTable::recv`](super::PeerTable::recv) (`deferred`:
/// [`PeerTable::recv_deferred`](super::PeerTable::recv_deferred)) or
/// [`PeerTable::finish`](super::PeerTable::finish).
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_next<T, U, A: PeerAddr>(
    timers: &mut BTreeSet<(Instant, A)>,
    queued: &mut usize,
    config: &DatagramConfig,
    p: &mut Peer<T, U>,
    peer: &A,
    now: Instant,
    next: crate::handler::Next,
    deferred: bool,
) -> Result<Stepped<T>, RoutineError<A>> {
    match next {
        crate::handler::Next::Recv { timeout } => {
            let (deadline, immediate) = match timeout {
                Some(t) if t.is_zero() => (Some(now), !deferred),
                Some(t) => (now.checked_add(t), false),
                None => (None, false),
            };
            recv_on(timers, queued, p, peer, now, deadline, immediate).map(Stepped::Recv)
        }
        crate::handler::Next::Close => {
            finish_on(timers, queued, config, p, peer, now).map(Stepped::Finished)
        }
    }
}

/// [`PeerTable::recv`](super::PeerTable::recv) on a peer already looked up.
pub(super) fn recv_on<T, U, A: PeerAddr>(
    timers: &mut BTreeSet<(Instant, A)>,
    queued: &mut usize,
    p: &mut Peer<T, U>,
    peer: &A,
    now: Instant,
    deadline: Option<Instant>,
    immediate: bool,
) -> Result<Recv<T>, RoutineError<A>> {
    match p.routine {
        RoutineState::Idle => return Err(RoutineError::NoRoutine(peer.clone())),
        RoutineState::Waiting { .. } => return Err(RoutineError::AlreadyWaiting(peer.clone())),
        RoutineState::Running => {}
    }
    p.last_activity = now;
    if let Some(item) = p.queue.pop_front() {
        *queued -= 1;
        return Ok(Recv::Ready(item));
    }
    if immediate {
        return Ok(Recv::Timeout);
    }
    p.routine = RoutineState::Waiting { deadline };
    set_timer(timers, peer, p, deadline);
    Ok(Recv::Waiting)
}

/// [`PeerTable::finish`](super::PeerTable::finish) on a peer already looked up.
pub(super) fn finish_on<T, U, A: PeerAddr>(
    timers: &mut BTreeSet<(Instant, A)>,
    queued: &mut usize,
    config: &DatagramConfig,
    p: &mut Peer<T, U>,
    peer: &A,
    now: Instant,
) -> Result<Option<T>, RoutineError<A>> {
    if p.routine == RoutineState::Idle {
        return Err(RoutineError::NoRoutine(peer.clone()));
    }
    p.last_activity = now;
    if let Some(item) = p.queue.pop_front() {
        *queued -= 1;
        p.routine = RoutineState::Running;
        return Ok(Some(item));
    }
    p.routine = RoutineState::Idle;
    // Give back what a burst made the queue grow to.
    p.queue.shrink_to(4);
    if p.timer.is_none() {
        let evict_at = now.checked_add(config.idle_timeout);
        set_timer(timers, peer, p, evict_at);
    }
    Ok(None)
}

pub(super) fn set_timer<T, U, A: PeerAddr>(
    timers: &mut BTreeSet<(Instant, A)>,
    addr: &A,
    p: &mut Peer<T, U>,
    at: Option<Instant>,
) {
    if let Some(old) = p.timer.take() {
        timers.remove(&(old, addr.clone()));
    }
    if let Some(at) = at {
        timers.insert((at, addr.clone()));
        p.timer = Some(at);
    }
}
