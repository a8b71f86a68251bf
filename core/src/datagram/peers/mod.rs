//! [`PeerTable`]: per-peer routines, bounded pending queues, receive deadlines and idle
//! eviction, generic over the payload so both drivers can use it.
//!
//! The table decides *who gets which datagram when*; it never runs a handler. Its caller
//! runs the routine of a peer whenever the table hands it something (an [`Arrival`], a
//! [`Recv`], the datagram returned by [`PeerTable::finish`] or a [`PeerEvent`]) and reports
//! back what the routine does next ([`PeerTable::recv`] or [`PeerTable::finish`]).
//!
//! Peers are found by address through `map`: std's keyed SipHash, fed once per address by
//! `hasher`, behind a checked hint by FxHash (`hint`), so one busy peer, or a few taking
//! turns, cost no SipHash.

use std::borrow::Borrow;
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod hasher;
mod hint;
mod map;
mod outcomes;
mod step;

use super::DatagramConfig;
use crate::ConnId;
use crate::addr::PeerAddr;
use crate::protocol::ConfigError;
use map::PeerMap;
pub use outcomes::{Arrival, DatagramStats, PeerEvent, PeerInfo, Recv, RoutineError, RoutineState};
pub(crate) use step::Stepped;
use step::{Delivered, Peer, apply_next, finish_on, recv_on, set_timer};

/// The per-peer routine machine of a datagram endpoint.
///
/// Per peer (keyed by address): at most one active routine, a FIFO of at most
/// [`max_pending`](DatagramConfig::max_pending) datagrams for it, a receive deadline and an
/// idle-eviction time, and a user state `U` (made with `Default` when the peer first shows,
/// dropped or handed back when it is evicted). `T` is the payload, usually the undecoded
/// datagram, so that it is parsed only when delivered.
///
/// Every call takes the caller's `now`; [`poll_timeout`](Self::poll_timeout) says when to
/// call [`handle_timeout`](Self::handle_timeout) next, and
/// [`poll_event`](Self::poll_event) must be drained after each call.
///
/// ```
/// use std::time::{Duration, Instant};
/// use easynet_core::datagram::{Arrival, DatagramConfig, PeerTable, Recv};
///
/// let now = Instant::now();
/// let peer = "127.0.0.1:4000".parse().unwrap();
/// let mut table: PeerTable<&str> = PeerTable::new(DatagramConfig::default()).unwrap();
/// assert_eq!(table.arrive(now, peer, "a"), Arrival::Start("a")); // routine runs with "a"
/// assert_eq!(table.arrive(now, peer, "b"), Arrival::Queued); // busy: queued
/// assert_eq!(table.recv(now, peer, None), Ok(Recv::Ready("b")));
/// assert_eq!(table.recv(now, peer, Some(Duration::from_secs(1))), Ok(Recv::Waiting));
/// assert_eq!(table.poll_timeout(), Some(now + Duration::from_secs(1)));
/// ```
pub struct PeerTable<T, U = (), A = SocketAddr> {
    config: DatagramConfig,
    peers: PeerMap<A, Peer<T, U>>,
    timers: BTreeSet<(Instant, A)>,
    events: VecDeque<PeerEvent<U, A>>,
    next_id: u64,
    closed: bool,
    dropped: u64,
    evicted: u64,
    queued: usize,
}

impl<T, U, A: PeerAddr> std::fmt::Debug for PeerTable<T, U, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTable")
            .field("config", &self.config)
            .field("closed", &self.closed)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<T, U: Default, A: PeerAddr> PeerTable<T, U, A> {
    /// An empty table; fails if the configuration is invalid.
    pub fn new(config: DatagramConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            peers: PeerMap::default(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            next_id: 0,
            closed: false,
            dropped: 0,
            evicted: 0,
            queued: 0,
        })
    }

    fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
        if let Some(r) = &self.config.recorder {
            r.add_dropped(n);
        }
    }

    /// A datagram `item` arrived from `peer`; says what became of it.
    ///
    /// A peer whose wait deadline has already passed gets its [`PeerEvent::Timeout`] first
    /// (the datagram is then queued), so a late driver sees the same order as a punctual one.
    pub fn arrive(&mut self, now: Instant, peer: A, item: T) -> Arrival<T> {
        match self.arrive_then(now, peer, item, |d| {
            if d.started {
                Arrival::Start(d.item)
            } else {
                Arrival::Deliver(d.item)
            }
        }) {
            Ok(arrival) | Err(arrival) => arrival,
        }
    }

    /// [`arrive`](Self::arrive), and when the datagram starts a routine or reaches the
    /// waiting one, one step of that routine on the same lookup of the peer (as
    /// [`step_routine`](Self::step_routine)). `Err` is what became of a datagram that ran
    /// nothing (queued, dropped, closed).
    pub(crate) fn arrive_step(
        &mut self,
        now: Instant,
        peer: A,
        item: T,
        run: impl FnOnce(ConnId, &mut U, T) -> (crate::handler::Next, bool),
    ) -> Result<Result<Stepped<T>, RoutineError<A>>, Arrival<T>> {
        self.arrive_then(now, peer, item, |d| {
            let (next, deferred) = run(d.p.id, &mut d.p.state, d.item);
            apply_next(
                d.timers, d.queued, d.config, d.p, d.peer, now, next, deferred,
            )
        })
    }

    /// The one lookup of an arrival: `deliver` gets the peer when the datagram starts its
    /// routine or reaches the waiting one; anything else is the `Err` arrival.
    fn arrive_then<R>(
        &mut self,
        now: Instant,
        peer: A,
        item: T,
        deliver: impl FnOnce(Delivered<'_, T, U, A>) -> R,
    ) -> Result<R, Arrival<T>> {
        if self.closed {
            self.count_dropped(1);
            return Err(Arrival::Closed(item));
        }
        let p = match self.peers.get_mut(&peer) {
            Some(p) => p,
            None => {
                let id = ConnId(self.next_id);
                self.next_id += 1;
                tracing::debug!(%peer, conn = %id, "new datagram peer");
                let p = self.peers.insert(
                    peer.clone(),
                    Peer {
                        id,
                        routine: RoutineState::Running,
                        queue: VecDeque::new(),
                        dropped: 0,
                        last_activity: now,
                        timer: None,
                        state: U::default(),
                    },
                );
                return Ok(deliver(Delivered {
                    p,
                    timers: &mut self.timers,
                    queued: &mut self.queued,
                    config: &self.config,
                    peer: &peer,
                    item,
                    started: true,
                }));
            }
        };
        p.last_activity = now;
        let started = match p.routine {
            RoutineState::Idle => {
                // The idle timer stays: it is checked against `last_activity` when it fires,
                // which spares two timer-set operations per datagram.
                p.routine = RoutineState::Running;
                true
            }
            RoutineState::Waiting { deadline } if deadline.is_some_and(|d| d <= now) => {
                p.routine = RoutineState::Running;
                set_timer(&mut self.timers, &peer, p, None);
                self.events.push_back(PeerEvent::Timeout { peer });
                // The queue of a waiting routine is empty and max_pending >= 1.
                p.queue.push_back(item);
                self.queued += 1;
                return Err(Arrival::Queued);
            }
            RoutineState::Waiting { .. } => {
                p.routine = RoutineState::Running;
                set_timer(&mut self.timers, &peer, p, None);
                false
            }
            RoutineState::Running if p.queue.len() < self.config.max_pending => {
                p.queue.push_back(item);
                self.queued += 1;
                return Err(Arrival::Queued);
            }
            RoutineState::Running => {
                p.dropped += 1;
                self.dropped += 1;
                if let Some(r) = &self.config.recorder {
                    r.add_dropped(1);
                }
                // Rate-limited: warn at the 1st, 2nd, 4th, 8th... drop of a peer.
                if p.dropped.is_power_of_two() {
                    tracing::warn!(%peer, conn = %p.id, dropped = p.dropped, max_pending = self.config.max_pending,
                        "datagram queue full, dropping datagrams");
                } else {
                    tracing::trace!(%peer, conn = %p.id, dropped = p.dropped, "datagram dropped");
                }
                return Err(Arrival::Dropped(item));
            }
        };
        Ok(deliver(Delivered {
            p,
            timers: &mut self.timers,
            queued: &mut self.queued,
            config: &self.config,
            peer: &peer,
            item,
            started,
        }))
    }
}

impl<T, U, A: PeerAddr> PeerTable<T, U, A> {
    /// The running routine of `peer` asks for its next datagram, waiting at most `timeout`.
    ///
    /// A queued datagram comes at once. With nothing queued, a zero timeout times out at
    /// once; otherwise the routine waits (`None` waits until a datagram or shutdown).
    pub fn recv(
        &mut self,
        now: Instant,
        peer: impl Borrow<A>,
        timeout: Option<Duration>,
    ) -> Result<Recv<T>, RoutineError<A>> {
        match timeout {
            Some(t) if t.is_zero() => self.recv_until(now, peer.borrow(), Some(now), true),
            // An overflowing deadline is as good as none.
            Some(t) => self.recv_until(now, peer.borrow(), now.checked_add(t), false),
            None => self.recv_until(now, peer.borrow(), None, false),
        }
    }

    /// Like a zero-timeout [`recv`](Self::recv), except that with nothing queued the routine
    /// waits until the next [`handle_timeout`](Self::handle_timeout) (or a datagram) instead
    /// of timing out at once. Drivers use it so a routine that keeps polling with a zero
    /// timeout cannot spin inside one call.
    pub fn recv_deferred(
        &mut self,
        now: Instant,
        peer: impl Borrow<A>,
    ) -> Result<Recv<T>, RoutineError<A>> {
        self.recv_until(now, peer.borrow(), Some(now), false)
    }

    fn recv_until(
        &mut self,
        now: Instant,
        peer: &A,
        deadline: Option<Instant>,
        immediate: bool,
    ) -> Result<Recv<T>, RoutineError<A>> {
        if self.closed {
            return Ok(Recv::Closed);
        }
        let p = known(&mut self.peers, peer)?;
        recv_on(
            &mut self.timers,
            &mut self.queued,
            p,
            peer,
            now,
            deadline,
            immediate,
        )
    }

    /// One step of the running routine of `peer` with one lookup of the peer instead of
    /// two: `run` calls its handler with the peer's handle and state and says what the
    /// routine does next; that is applied as [`recv`](Self::recv) (or, with `deferred`,
    /// [`recv_deferred`](Self::recv_deferred)) or [`finish`](Self::finish) would. `None`
    /// when the peer is unknown (or the table closed).
    pub(crate) fn step_routine(
        &mut self,
        now: Instant,
        peer: &A,
        run: impl FnOnce(ConnId, &mut U) -> (crate::handler::Next, bool),
    ) -> Option<Result<Stepped<T>, RoutineError<A>>> {
        if self.closed {
            return None;
        }
        let p = self.peers.get_mut(peer)?;
        let (next, deferred) = run(p.id, &mut p.state);
        Some(apply_next(
            &mut self.timers,
            &mut self.queued,
            &self.config,
            p,
            peer,
            now,
            next,
            deferred,
        ))
    }

    /// The waiting routine of `peer` stops waiting (its receive was cancelled): it is running
    /// again and its deadline is gone. Returns `false` if it was not waiting (a datagram or
    /// its timeout came first), which changes nothing.
    pub fn cancel_recv(
        &mut self,
        now: Instant,
        peer: impl Borrow<A>,
    ) -> Result<bool, RoutineError<A>> {
        if self.closed {
            return Ok(false);
        }
        let peer = peer.borrow();
        let p = known(&mut self.peers, peer)?;
        match p.routine {
            RoutineState::Idle => Err(RoutineError::NoRoutine(peer.clone())),
            RoutineState::Running => Ok(false),
            RoutineState::Waiting { .. } => {
                p.routine = RoutineState::Running;
                p.last_activity = now;
                set_timer(&mut self.timers, peer, p, None);
                Ok(true)
            }
        }
    }

    /// The routine of `peer` ended (returned, failed, or was cancelled while waiting).
    ///
    /// Returns the next queued datagram, with which a new routine starts at once (and is
    /// running), or `None` if the peer is now idle. After shutdown, always `None`.
    pub fn finish(
        &mut self,
        now: Instant,
        peer: impl Borrow<A>,
    ) -> Result<Option<T>, RoutineError<A>> {
        if self.closed {
            return Ok(None);
        }
        let peer = peer.borrow();
        let p = known(&mut self.peers, peer)?;
        finish_on(
            &mut self.timers,
            &mut self.queued,
            &self.config,
            p,
            peer,
            now,
        )
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work: a
    /// wait deadline or an idle eviction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Fires every timer due at `now`: waiting routines past their deadline get
    /// [`PeerEvent::Timeout`] (and are running again), idle peers past the idle timeout are
    /// evicted ([`PeerEvent::Evicted`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, peer)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            p.timer = None;
            match p.routine {
                RoutineState::Waiting { .. } => {
                    p.routine = RoutineState::Running;
                    self.events.push_back(PeerEvent::Timeout { peer });
                }
                RoutineState::Idle => {
                    // Idle timers are lazy: activity since it was set pushes eviction back.
                    if let Some(due) = p.last_activity.checked_add(self.config.idle_timeout)
                        && due > now
                    {
                        set_timer(&mut self.timers, &peer, p, Some(due));
                        continue;
                    }
                    if let Some(p) = self.peers.remove(&peer) {
                        self.evicted += 1;
                        tracing::debug!(%peer, conn = %p.id, "idle datagram peer evicted");
                        self.events.push_back(PeerEvent::Evicted {
                            peer,
                            id: p.id,
                            state: p.state,
                        });
                    }
                }
                // A stale idle timer of a running peer: `finish` arms a new one.
                RoutineState::Running => {}
            }
        }
    }

    /// The next timer or shutdown event, if any; drain after every call that can make one.
    pub fn poll_event(&mut self) -> Option<PeerEvent<U, A>> {
        self.events.pop_front()
    }

    /// Ends everything: queued datagrams are dropped (and counted), waiting routines get
    /// [`PeerEvent::Closed`], all peers and their user state are dropped. Later arrivals are
    /// dropped; later [`recv`](Self::recv) calls give [`Recv::Closed`]. Idempotent.
    pub fn shutdown(&mut self, now: Instant) {
        let _ = now;
        if self.closed {
            return;
        }
        self.closed = true;
        let mut peers: Vec<_> = self.peers.drain().collect();
        // Deterministic event order, whatever the hasher.
        peers.sort_unstable_by_key(|(_, p)| p.id);
        for (peer, p) in peers {
            self.dropped += p.queue.len() as u64;
            if let Some(r) = &self.config.recorder {
                r.add_dropped(p.queue.len() as u64);
            }
            if !p.queue.is_empty() {
                tracing::debug!(%peer, conn = %p.id, dropped = p.queue.len(), "queued datagrams dropped at shutdown");
            }
            if matches!(p.routine, RoutineState::Waiting { .. }) {
                self.events.push_back(PeerEvent::Closed { peer });
            }
        }
        self.queued = 0;
        self.timers.clear();
    }

    /// True after [`shutdown`](Self::shutdown).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A snapshot of `peer`, if known.
    pub fn peer(&self, peer: impl Borrow<A>) -> Option<PeerInfo> {
        self.peers.get(peer.borrow()).map(|p| PeerInfo {
            id: p.id,
            routine: p.routine,
            queued: p.queue.len(),
            dropped: p.dropped,
            last_activity: p.last_activity,
        })
    }

    /// The user state of `peer`, if known.
    pub fn state(&self, peer: impl Borrow<A>) -> Option<&U> {
        self.peers.get(peer.borrow()).map(|p| &p.state)
    }

    /// The handle and the user state of `peer`, mutably, if known (one lookup).
    pub fn id_and_state_mut(&mut self, peer: impl Borrow<A>) -> Option<(ConnId, &mut U)> {
        self.peers
            .get_mut(peer.borrow())
            .map(|p| (p.id, &mut p.state))
    }

    /// Every known peer with its handle and user state, mutably (in no particular order).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&A, ConnId, &mut U)> {
        self.peers.iter_mut().map(|(a, p)| (a, p.id, &mut p.state))
    }

    /// The user state of `peer`, mutably, if known.
    pub fn state_mut(&mut self, peer: impl Borrow<A>) -> Option<&mut U> {
        self.peers.get_mut(peer.borrow()).map(|p| &mut p.state)
    }

    /// The number of known peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The configuration.
    pub fn config(&self) -> &DatagramConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> DatagramStats {
        DatagramStats {
            dropped: self.dropped,
            peers: self.peers.len(),
            evicted: self.evicted,
            queued: self.queued,
        }
    }
}

/// The entry of `peer`, or [`RoutineError::UnknownPeer`] for one the table does not know.
fn known<'a, T, U, A: PeerAddr>(
    peers: &'a mut PeerMap<A, Peer<T, U>>,
    peer: &A,
) -> Result<&'a mut Peer<T, U>, RoutineError<A>> {
    peers
        .get_mut(peer)
        .ok_or_else(|| RoutineError::UnknownPeer(peer.clone()))
}
