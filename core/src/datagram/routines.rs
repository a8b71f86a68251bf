//! [`RoutineTable`]: the routines of async datagram handlers, on a [`PeerTable`].
//!
//! [`AsyncDatagramServer`](super::AsyncDatagramServer) runs the routines (the handler stays
//! busy across awaits); the table decides everything else: which datagram starts a routine,
//! which answers a receive and when, what a cancelled receive leaves behind, and it makes
//! and keeps the handlers, contained ([`contain`]).
//!
//! The receive protocol, per routine: the routine asks ([`RoutineTable::recv`]) and gets
//! exactly one [`Reply`] for it, later or at once. It asks again only after taking that
//! reply. A receive whose caller went away (a `recv` future dropped in `select!`) is ended
//! with [`RoutineTable::cancel`]: its one reply is then [`Reply::Cancelled`], or what it got
//! before the cancel arrived; a datagram in it is the routine's next one. A reply the driver
//! cannot hand over because the routine ended is given back ([`RoutineTable::undelivered`]),
//! as is one a routine ended without taking ([`RoutineTable::finish`]): such a datagram
//! starts the peer's next routine. So no datagram is lost by cancelling and no stale
//! deadline survives.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::contain::{self, HandlerSlot, Panicked, Scope};
use super::{
    Arrival, DatagramConfig, DatagramStats, Payload, PeerEvent, PeerInfo, PeerTable, Recv,
};
use crate::addr::{Addr, PeerAddr};
use crate::handler::{ConnInfo, Service};
use crate::protocol::ConfigError;
use crate::stats::Recorder;

/// The handle of one routine, unique within its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutineId(pub u64);

/// The one answer to a routine's receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The peer's next datagram.
    Datagram(Payload),
    /// The receive's timeout expired first.
    Timeout,
    /// The receive was cancelled before anything came.
    Cancelled,
}

/// What the driver must do; drain [`RoutineTable::poll_output`] after every call.
#[non_exhaustive]
pub enum RoutineOutput<H, A = SocketAddr> {
    /// Run a routine of `peer` with `handler`: its first receive gets `first`. When it ends
    /// call [`RoutineTable::finish`].
    Start {
        /// The peer.
        peer: A,
        /// The routine's handle.
        routine: RoutineId,
        /// The peer as the handler sees it.
        info: ConnInfo,
        /// The peer's handler (made contained if the peer had none).
        handler: H,
        /// The datagram that started the routine.
        first: Payload,
    },
    /// Give `reply` to the pending receive of `routine`; if the routine has ended or cannot
    /// take it any more, hand it back with [`RoutineTable::undelivered`].
    Reply {
        /// The peer.
        peer: A,
        /// The routine whose receive this answers.
        routine: RoutineId,
        /// The answer.
        reply: Reply,
    },
}

impl<H, A: std::fmt::Debug> std::fmt::Debug for RoutineOutput<H, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoutineOutput::Start {
                peer,
                routine,
                first,
                ..
            } => f
                .debug_struct("Start")
                .field("peer", peer)
                .field("routine", routine)
                .field("first", first)
                .finish_non_exhaustive(),
            RoutineOutput::Reply {
                peer,
                routine,
                reply,
            } => f
                .debug_struct("Reply")
                .field("peer", peer)
                .field("routine", routine)
                .field("reply", reply)
                .finish(),
        }
    }
}

/// A peer as the routine table keeps it.
struct Slot<H> {
    /// The handler while no routine holds it.
    handler: HandlerSlot<H>,
    /// The active routine.
    routine: Option<RoutineId>,
    /// The active routine's receive waits in the peer table.
    waiting: bool,
    /// A datagram handed to a receive the routine did not take; the next routine gets it.
    leftover: Option<Payload>,
}

impl<H> Default for Slot<H> {
    fn default() -> Self {
        Self {
            handler: HandlerSlot::default(),
            routine: None,
            waiting: false,
            leftover: None,
        }
    }
}

/// The routines of an endpoint running async handlers: event in, action out.
///
/// Feed it datagrams ([`handle_datagram`](Self::handle_datagram)), the routines' requests
/// ([`recv`](Self::recv), [`cancel`](Self::cancel), [`finish`](Self::finish),
/// [`undelivered`](Self::undelivered)) and the clock
/// ([`handle_timeout`](Self::handle_timeout)); after each call drain
/// [`poll_output`](Self::poll_output) and do what it says. See the module documentation for
/// the receive protocol.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use bytes::BytesMut;
/// use easynet_core::datagram::{
///     DatagramConfig, Payload, Reply, RoutineOutput, RoutineTable,
/// };
/// use easynet_core::handler::ConnInfo;
///
/// struct MyHandler;
/// let local: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
/// let mut table =
///     RoutineTable::new(Arc::new(|_: &ConnInfo| MyHandler), local, DatagramConfig::default())
///         .unwrap();
/// let now = Instant::now();
/// table.handle_datagram(now, peer, BytesMut::from(&b"a"[..]));
/// let Some(RoutineOutput::Start { routine, first, .. }) = table.poll_output() else {
///     unreachable!()
/// };
/// assert_eq!(first, Payload::Data(BytesMut::from(&b"a"[..])));
/// // The routine waits for its next datagram, then gives up waiting.
/// assert!(table.recv(now, &peer, routine, Some(Duration::from_secs(5))));
/// assert!(table.poll_output().is_none());
/// table.cancel(now, &peer, routine);
/// assert!(matches!(
///     table.poll_output(),
///     Some(RoutineOutput::Reply { reply: Reply::Cancelled, .. })
/// ));
/// assert_eq!(table.poll_timeout(), None, "no stale deadline");
/// ```
pub struct RoutineTable<S: Service, A = SocketAddr> {
    service: Arc<S>,
    local: Addr,
    max_datagram_size: usize,
    table: PeerTable<Payload, Slot<S::Handler>, A>,
    out: VecDeque<RoutineOutput<S::Handler, A>>,
    next_routine: u64,
    /// The config's recorder (factory panics are counted there).
    recorder: Option<Recorder>,
}

impl<S: Service, A: PeerAddr> std::fmt::Debug for RoutineTable<S, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutineTable")
            .field("local", &self.local)
            .field("table", &self.table)
            .field("pending_outputs", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<S: Service, A: PeerAddr> RoutineTable<S, A> {
    /// A table for the endpoint bound at `local`; fails if `config` is invalid.
    pub fn new(service: Arc<S>, local: A, config: DatagramConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            recorder: config.recorder.clone(),
            service,
            local: local.to_addr(),
            max_datagram_size: config.max_datagram_size,
            table: PeerTable::new(config)?,
            out: VecDeque::new(),
            next_routine: 0,
        })
    }

    /// A datagram `data` arrived from `from`: it starts a routine, answers the waiting
    /// receive, or waits in the peer's queue (or is dropped and counted).
    pub fn handle_datagram(&mut self, now: Instant, from: A, data: BytesMut) {
        let payload = Payload::new(data, self.max_datagram_size);
        match self.table.arrive(now, from.clone(), payload) {
            Arrival::Start(first) => self.start(now, from, first),
            Arrival::Deliver(d) => {
                let routine = self.table.state_mut(&from).and_then(|slot| {
                    slot.waiting = false;
                    slot.routine
                });
                match routine {
                    Some(routine) => self.out.push_back(RoutineOutput::Reply {
                        peer: from,
                        routine,
                        reply: Reply::Datagram(d),
                    }),
                    // Not reached (a wait has a routine); serve the datagram anyway.
                    None => self.start(now, from, d),
                }
            }
            // A deadline may have passed unnoticed: its timeout goes first.
            Arrival::Queued => self.process_events(),
            _ => {}
        }
    }

    /// The receive of `routine` (of `peer`) waits at most `timeout` for the next datagram.
    /// Its one [`Reply`] comes at once (a queued datagram, or the timeout of a zero timeout)
    /// or later. Returns `false`, and nothing will answer, if `routine` is not the peer's
    /// active routine (it ended), already has a receive pending, or the table is shut down.
    pub fn recv(
        &mut self,
        now: Instant,
        peer: &A,
        routine: RoutineId,
        timeout: Option<Duration>,
    ) -> bool {
        match self.table.state(peer) {
            Some(slot) if slot.routine == Some(routine) && !slot.waiting => {}
            _ => return false,
        }
        let reply = match self.table.recv(now, peer, timeout) {
            Ok(Recv::Ready(d)) => Reply::Datagram(d),
            Ok(Recv::Timeout) => Reply::Timeout,
            Ok(Recv::Waiting) => {
                if let Some(slot) = self.table.state_mut(peer) {
                    slot.waiting = true;
                }
                return true;
            }
            Ok(Recv::Closed) | Err(_) => return false,
        };
        self.out.push_back(RoutineOutput::Reply {
            peer: peer.clone(),
            routine,
            reply,
        });
        true
    }

    /// The caller of the pending receive of `routine` went away: if it still waits, it
    /// ends now with [`Reply::Cancelled`] and its deadline is gone. If its reply was given
    /// already, nothing changes (that reply stays the routine's).
    pub fn cancel(&mut self, now: Instant, peer: &A, routine: RoutineId) {
        match self.table.state(peer) {
            Some(slot) if slot.routine == Some(routine) && slot.waiting => {}
            _ => return,
        }
        if let Ok(true) = self.table.cancel_recv(now, peer)
            && let Some(slot) = self.table.state_mut(peer)
        {
            slot.waiting = false;
            self.out.push_back(RoutineOutput::Reply {
                peer: peer.clone(),
                routine,
                reply: Reply::Cancelled,
            });
        }
    }

    /// A [`RoutineOutput::Reply`] could not be handed to `routine` (it ended): a datagram in
    /// it goes to the peer's next routine.
    pub fn undelivered(&mut self, peer: &A, routine: RoutineId, reply: Reply) {
        if let Reply::Datagram(d) = reply
            && let Some(slot) = self.table.state_mut(peer)
            && slot.routine == Some(routine)
        {
            slot.leftover = Some(d);
        }
    }

    /// `routine` of `peer` ended. `handler` is the peer's handler back (`None` if it failed:
    /// the next routine gets a fresh one); `leftover` a datagram given to a receive it did
    /// not take. The next datagram (the leftover first, then the queue) starts the next
    /// routine at once.
    pub fn finish(
        &mut self,
        now: Instant,
        peer: &A,
        routine: RoutineId,
        handler: Option<S::Handler>,
        leftover: Option<Payload>,
    ) {
        let Some((id, slot)) = self.table.id_and_state_mut(peer) else {
            // Shut down: nothing to keep (dropped contained).
            if let Some(handler) = handler {
                HandlerSlot::default().put(handler);
            }
            return;
        };
        if slot.routine != Some(routine) {
            // Not the active routine: never reached through a driver.
            if let Some(handler) = handler {
                let mut gone = HandlerSlot::default();
                gone.put(handler);
                gone.release(peer, id);
            }
            return;
        }
        slot.routine = None;
        if let Some(handler) = handler {
            slot.handler.put(handler);
        }
        let leftover = leftover.or(slot.leftover.take());
        if slot.waiting {
            // It ended with a receive waiting: the wait goes with it.
            slot.waiting = false;
            let _ = self.table.cancel_recv(now, peer);
        }
        let next = match leftover {
            // Handed to it but not taken: the peer's routine is still running in the table.
            Some(d) => Some(d),
            None => self.table.finish(now, peer).ok().flatten(),
        };
        if let Some(next) = next {
            self.start(now, peer.clone(), next);
        }
    }

    /// The clock reached `now`: due receive timeouts are answered, idle peers evicted.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.table.handle_timeout(now);
        self.process_events();
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_output(&mut self) -> Option<RoutineOutput<S::Handler, A>> {
        self.out.pop_front()
    }

    /// Stops: queued datagrams are dropped (counted), the kept handlers are dropped, and
    /// nothing starts or is answered any more. The routines themselves are the caller's to
    /// drop.
    /// Idempotent.
    pub fn shutdown(&mut self, now: Instant) {
        for (peer, id, slot) in self.table.iter_mut() {
            slot.handler.release(peer, id);
            slot.leftover = None;
        }
        self.table.shutdown(now);
        while self.table.poll_event().is_some() {}
        self.out.clear();
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_closing(&self) -> bool {
        self.table.is_closed()
    }

    /// Datagrams dropped so far (queue full, or discarded by shutdown).
    pub fn drops(&self) -> u64 {
        self.table.stats().dropped
    }

    /// All counters.
    pub fn stats(&self) -> DatagramStats {
        self.table.stats()
    }

    /// A snapshot of `peer`, if known.
    pub fn peer(&self, peer: &A) -> Option<PeerInfo> {
        self.table.peer(peer)
    }

    /// Starts a routine of `peer` with `first`, making its handler if it has none. A
    /// panicking factory drops that datagram (logged once) and the next queued one tries
    /// again.
    fn start(&mut self, now: Instant, peer: A, mut first: Payload) {
        let scope = self.recorder.as_ref().map(|r| Scope {
            recorder: Some(r),
            now,
        });
        loop {
            let Some((id, slot)) = self.table.id_and_state_mut(&peer) else {
                return;
            };
            let info = ConnInfo::new(id, peer.to_addr(), self.local.clone());
            let handler = match slot.handler.take() {
                Some(handler) => handler,
                None => match contain::new_handler_in(scope.as_ref(), &*self.service, &info) {
                    Ok(handler) => handler,
                    Err(Panicked) => match self.table.finish(now, &peer) {
                        Ok(Some(next)) => {
                            first = next;
                            continue;
                        }
                        _ => return,
                    },
                },
            };
            let routine = RoutineId(self.next_routine);
            self.next_routine += 1;
            slot.routine = Some(routine);
            slot.waiting = false;
            self.out.push_back(RoutineOutput::Start {
                peer,
                routine,
                info,
                handler,
                first,
            });
            return;
        }
    }

    fn process_events(&mut self) {
        while let Some(event) = self.table.poll_event() {
            match event {
                PeerEvent::Timeout { peer } => {
                    let routine = self.table.state_mut(&peer).and_then(|slot| {
                        slot.waiting = false;
                        slot.routine
                    });
                    if let Some(routine) = routine {
                        self.out.push_back(RoutineOutput::Reply {
                            peer,
                            routine,
                            reply: Reply::Timeout,
                        });
                    }
                }
                PeerEvent::Evicted {
                    peer,
                    id,
                    mut state,
                } => state.handler.release(&peer, id),
                _ => {}
            }
        }
    }
}
