//! [`AsyncDatagramServer`]: the async handlers of a datagram endpoint, polled by the core.
//!
//! Each routine (one `handle` call of a peer's [`AsyncDatagramHandler`]) is a future the
//! server owns and polls itself, inside `catch_unwind`, whenever something it waits for
//! changed: a datagram, a receive timeout, the result of a send, or a wake-up from outside
//! (its own timers and channels, through [`poll_wake`](AsyncDatagramServer::poll_wake)).
//! Which datagram goes to which routine, and what a cancelled receive leaves behind, is the
//! [`RoutineTable`]'s rule. No runtime is involved: tokio, another event loop or a test can
//! drive it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::BytesMut;
use rustc_hash::FxBuildHasher;

use super::contain::{self, Scope};
use super::peer::{
    AsyncDatagramHandler, Codec, DatagramPeer, Link, LinkRef, RecvSlot, lock, run_routine,
};
use super::{
    DatagramConfig, DatagramStats, PeerInfo, Reply, RoutineId, RoutineOutput, RoutineTable,
    Transmit,
};
use crate::addr::PeerAddr;
use crate::handler::{ConnInfo, Service};
use crate::protocol::{ConfigError, DatagramServerProtocol};
use crate::push::{DatagramEncoder, DatagramOutbox, Encoder};
use crate::stats::{Counter, Recorder};

/// Polls of one routine in one turn before the other routines and the socket get theirs.
const POLLS_PER_TURN: u32 = crate::stream::HANDLER_CALLS_PER_TURN;

/// Ended routines' links and wakers kept for the next routines.
const SPARE_ROUTINES: usize = 64;

/// Names one send of one routine, for [`AsyncDatagramServer::handle_sent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendId {
    routine: RoutineId,
    seq: u64,
}

impl SendId {
    /// A pushed datagram ([`DatagramPusher`](crate::push::DatagramPusher)): nobody waits
    /// for its result (a failure is logged).
    const PUSHED: SendId = SendId {
        routine: RoutineId(u64::MAX),
        seq: 0,
    };
}

/// What [`AsyncDatagramServer::poll_output`] asks the driver to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum AsyncOutput<A = SocketAddr> {
    /// Send this datagram, then report how it went with
    /// [`handle_sent`](AsyncDatagramServer::handle_sent) (the handler's `send` returns that).
    Transmit(SendId, Transmit<A>),
    /// Nothing more to send now. Wait for a datagram, a wake-up
    /// ([`poll_wake`](AsyncDatagramServer::poll_wake)) or `next_timeout` (then call
    /// [`handle_timeout`](AsyncDatagramServer::handle_timeout)); if `resume`, routines are
    /// ready to go on: read what the socket has, then call
    /// [`resume`](AsyncDatagramServer::resume) without waiting. Ends every drain loop.
    Idle {
        /// When the next timer is due, if any.
        next_timeout: Option<Instant>,
        /// Routines wait to be polled again (they yielded for fairness).
        resume: bool,
    },
}

/// Routines woken from outside, for the next [`AsyncDatagramServer::resume`].
#[derive(Default)]
struct Wakes {
    woken: Mutex<Vec<RoutineId>>,
    driver: Mutex<Option<Waker>>,
}

/// The waker of one routine.
struct RoutineWake {
    id: RoutineId,
    queued: AtomicBool,
    wakes: Arc<Wakes>,
}

impl Wake for RoutineWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        self.wakes
            .woken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.id);
        let driver = self.wakes.driver.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = driver.as_ref() {
            w.wake_by_ref();
        }
    }
}

type RoutineFuture<H> = Pin<Box<dyn Future<Output = Option<H>> + Send>>;

/// One running routine.
struct Routine<H, A> {
    peer: A,
    info: ConnInfo,
    link: LinkRef,
    future: RoutineFuture<H>,
    wake: Arc<RoutineWake>,
    waker: Waker,
    /// In the ready list.
    scheduled: bool,
    /// The turn of `polls`.
    turn: u64,
    polls: u32,
}

/// A datagram endpoint running [`AsyncDatagramHandler`]s: event in, action out.
///
/// Feed it what the socket and the clock bring ([`handle_datagram`](Self::handle_datagram),
/// [`handle_timeout`](Self::handle_timeout)), the results of its sends
/// ([`handle_sent`](Self::handle_sent)) and wake-ups ([`poll_wake`](Self::poll_wake), then
/// [`resume`](Self::resume)); after each call drain [`poll_output`](Self::poll_output) until
/// [`AsyncOutput::Idle`]. The handlers' futures run inside these calls: their awaits on the
/// client need nothing else, and what they await outside (a runtime's timer, a channel)
/// wakes the waker given to [`poll_wake`](Self::poll_wake). `on_start` and
/// `on_stop` are the driver's business.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use bytes::BytesMut;
/// use easynet_core::datagram::{
///     DatagramPeer, AsyncDatagramHandler, AsyncDatagramServer, AsyncOutput,
///     DatagramConfig,
/// };
/// use easynet_core::handler::{ConnInfo, HandlerError};
/// use easynet_core::protocol::Datagram;
///
/// struct Upper;
/// impl AsyncDatagramHandler for Upper {
///     type Request = String;
///     type Response = String;
///     async fn handle(&mut self, client: &mut DatagramPeer<String, String>) -> Result<(), HandlerError> {
///         let text = client.recv().await?;
///         client.send(&text.to_uppercase()).await?;
///         Ok(())
///     }
/// }
///
/// let local: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
/// let service = Arc::new(|_: &ConnInfo| Upper);
/// let mut server = AsyncDatagramServer::new(service, Arc::new(Datagram::lines()), local, DatagramConfig::default()).unwrap();
/// let now = Instant::now();
/// server.handle_datagram(now, peer, BytesMut::from(&b"hello\n"[..]));
/// let AsyncOutput::Transmit(id, transmit) = server.poll_output() else { unreachable!() };
/// assert_eq!((transmit.to, &transmit.data[..]), (peer, &b"HELLO"[..]));
/// // The driver sent it; the handler's `send` returns and its routine ends.
/// server.handle_sent(now, id, Ok(()));
/// assert!(matches!(server.poll_output(), AsyncOutput::Idle { resume: true, .. }));
/// server.resume(now);
/// assert_eq!(server.routines(), 0);
/// ```
pub struct AsyncDatagramServer<S: Service, P: DatagramServerProtocol, A = SocketAddr> {
    table: RoutineTable<S, A>,
    protocol: Arc<P>,
    /// What pushers queue, and how they encode.
    pushed: Arc<DatagramOutbox>,
    encoder: Arc<dyn Encoder<P::Response>>,
    local: A,
    /// Keyed by the table's own counter, not by anything a peer chooses: FxHash, not std's
    /// keyed SipHash (about 150 instructions a lookup, and a datagram takes ten).
    routines: HashMap<RoutineId, Routine<S::Handler, A>, FxBuildHasher>,
    /// Routines to poll, in order.
    ready: VecDeque<RoutineId>,
    /// Links and wakers of ended routines that nothing else holds, for the next routines
    /// (three allocations fewer per routine, the link's buffers' too).
    spare: Vec<(LinkRef, Arc<RoutineWake>)>,
    wakes: Arc<Wakes>,
    out: VecDeque<(SendId, Transmit<A>)>,
    turn: u64,
    /// Where it counts: the config's recorder, or one of its own.
    recorder: Recorder,
}

impl<S: Service, P: DatagramServerProtocol, A: PeerAddr> std::fmt::Debug
    for AsyncDatagramServer<S, P, A>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncDatagramServer")
            .field("local", &self.local)
            .field("table", &self.table)
            .field("routines", &self.routines.len())
            .field("pending_transmits", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<S, P, A> AsyncDatagramServer<S, P, A>
where
    A: PeerAddr,
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    /// A server for the endpoint bound at `local`; fails if `config` is invalid.
    pub fn new(
        service: Arc<S>,
        protocol: Arc<P>,
        local: A,
        config: DatagramConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let pushed = Arc::new(DatagramOutbox::new(config.max_pending));
        let encoder: Arc<dyn Encoder<P::Response>> = Arc::new(DatagramEncoder(protocol.clone()));
        // The peer table counts drops into the same recorder.
        let mut config = config;
        let recorder = config.recorder.get_or_insert_with(Recorder::new).clone();
        Ok(Self {
            recorder,
            table: RoutineTable::new(service, local.clone(), config)?,
            protocol,
            pushed,
            encoder,
            local,
            routines: HashMap::default(),
            ready: VecDeque::new(),
            spare: Vec::new(),
            wakes: Arc::default(),
            out: VecDeque::new(),
            turn: 0,
        })
    }

    /// A datagram `data` arrived from `from`: it starts a routine, answers the waiting
    /// receive, or waits in the peer's queue (or is dropped and counted).
    pub fn handle_datagram(&mut self, now: Instant, from: A, data: BytesMut) {
        self.recorder.add(Counter::DatagramsIn, 1);
        self.recorder.add(Counter::BytesIn, data.len() as u64);
        self.table.handle_datagram(now, from, data);
        self.process();
        self.run(now);
    }

    /// The clock reached `now`: due receive timeouts are answered, idle peers evicted.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.table.handle_timeout(now);
        self.process();
        self.run(now);
    }

    /// The driver sent (or failed to send) the datagram of `id`. Its routine goes on at the
    /// next [`resume`](Self::resume). A failure no call waits for any more is logged.
    pub fn handle_sent(&mut self, _now: Instant, id: SendId, result: io::Result<()>) {
        let unclaimed = match self.routines.get(&id.routine) {
            Some(routine) => lock(&routine.link)
                .sent(id.seq, result)
                .err()
                .map(|e| (routine.info.peer.to_string(), e)),
            None => result.err().map(|e| (String::from("(gone)"), e)),
        };
        self.schedule(id.routine);
        if let Some((peer, error)) = unclaimed {
            // The handler no longer waits for it (decision 3 cannot apply): log instead.
            tracing::warn!(%peer, %error, "datagram send failed");
        }
    }

    /// Polls the routines that are ready: woken from outside, or waiting for their turn.
    pub fn resume(&mut self, now: Instant) {
        let woken =
            std::mem::take(&mut *self.wakes.woken.lock().unwrap_or_else(|e| e.into_inner()));
        for id in woken {
            self.schedule(id);
        }
        self.run(now);
    }

    /// Ready once a routine was woken from outside (what it awaits beyond its client): then
    /// call [`resume`](Self::resume). Registers `cx`'s waker for the next wake-up.
    pub fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let pushed = self.pushed.poll(cx).is_ready();
        {
            let mut driver = self.wakes.driver.lock().unwrap_or_else(|e| e.into_inner());
            if !driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *driver = Some(cx.waker().clone());
            }
        }
        let woken = self.wakes.woken.lock().unwrap_or_else(|e| e.into_inner());
        if woken.is_empty() && !pushed {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// The next thing for the driver to do; [`AsyncOutput::Idle`] ends each drain loop.
    pub fn poll_output(&mut self) -> AsyncOutput<A> {
        if self.out.is_empty() {
            let out = &mut self.out;
            self.pushed.drain(|to, data| {
                if let Some(to) = A::from_addr(&to) {
                    out.push_back((
                        SendId::PUSHED,
                        Transmit {
                            to: to.clone(),
                            data,
                        },
                    ));
                }
            });
        }
        match self.out.pop_front() {
            Some((id, transmit)) => {
                self.recorder.add(Counter::DatagramsOut, 1);
                self.recorder
                    .add(Counter::BytesOut, transmit.data.len() as u64);
                AsyncOutput::Transmit(id, transmit)
            }
            None => AsyncOutput::Idle {
                next_timeout: self.table.poll_timeout(),
                resume: !self.ready.is_empty(),
            },
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Stops: every routine is dropped where it waits (its handler with it, contained),
    /// queued datagrams are dropped (counted), kept handlers are dropped, and nothing runs
    /// any more. Datagrams the routines sent already can still be drained. Idempotent.
    pub fn shutdown(&mut self, now: Instant) {
        self.pushed.close();
        for (_, routine) in self.routines.drain() {
            lock(&routine.link).closing = true;
            contain::drop_handler(&routine.info, routine.future);
        }
        self.ready.clear();
        self.table.shutdown(now);
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_closing(&self) -> bool {
        self.table.is_closing()
    }

    /// Routines running now.
    pub fn routines(&self) -> usize {
        self.routines.len()
    }

    /// The endpoint's bound address.
    pub fn local_addr(&self) -> &A {
        &self.local
    }

    /// Datagrams dropped so far (queue full, or discarded by shutdown).
    pub fn drops(&self) -> u64 {
        self.table.drops()
    }

    /// All counters.
    pub fn stats(&self) -> DatagramStats {
        self.table.stats()
    }

    /// Where this endpoint counts ([`ServerStats`](crate::stats::ServerStats)).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// A snapshot of `peer`, if known.
    pub fn peer(&self, peer: &A) -> Option<PeerInfo> {
        self.table.peer(peer)
    }

    fn schedule(&mut self, id: RoutineId) {
        if let Some(routine) = self.routines.get_mut(&id)
            && !routine.scheduled
        {
            routine.scheduled = true;
            self.ready.push_back(id);
        }
    }

    /// Does what the routine table decided: starts routines, hands over replies.
    fn process(&mut self) {
        while let Some(output) = self.table.poll_output() {
            match output {
                RoutineOutput::Start {
                    peer,
                    routine,
                    info,
                    handler,
                    first,
                } => self.start(peer, routine, info, handler, first),
                RoutineOutput::Reply {
                    peer,
                    routine,
                    reply,
                } => match self.routines.get(&routine) {
                    Some(r) => {
                        let mut link = lock(&r.link);
                        let cancelled = matches!(link.recv, RecvSlot::Cancel);
                        link.recv = match reply {
                            Reply::Datagram(d) => RecvSlot::Got(d),
                            Reply::Timeout if !cancelled => RecvSlot::TimedOut,
                            Reply::Timeout | Reply::Cancelled => RecvSlot::Idle,
                        };
                        drop(link);
                        self.schedule(routine);
                    }
                    None => self.table.undelivered(&peer, routine, reply),
                },
            }
        }
    }

    fn start(
        &mut self,
        peer: A,
        id: RoutineId,
        info: ConnInfo,
        handler: S::Handler,
        first: super::Payload,
    ) {
        let (link, wake) = self.link_and_wake(id);
        let codec: Arc<dyn Codec<P::Request, P::Response>> = self.protocol.clone();
        let client = DatagramPeer::new(
            info.clone(),
            codec,
            first,
            link.clone(),
            (self.pushed.clone(), self.encoder.clone()),
            self.recorder.clone(),
        );
        let routine = Routine {
            peer,
            info,
            link,
            future: Box::pin(run_routine(handler, client)),
            waker: Waker::from(wake.clone()),
            wake,
            scheduled: false,
            turn: self.turn,
            polls: 0,
        };
        self.routines.insert(id, routine);
        self.schedule(id);
    }

    /// Polls ready routines; one that used its turn's polls waits for the next turn.
    fn run(&mut self, now: Instant) {
        self.turn += 1;
        let mut deferred = Vec::new();
        while let Some(id) = self.ready.pop_front() {
            let Some(routine) = self.routines.get_mut(&id) else {
                continue;
            };
            routine.scheduled = false;
            if routine.turn != self.turn {
                routine.turn = self.turn;
                routine.polls = 0;
            }
            if routine.polls >= POLLS_PER_TURN {
                deferred.push(id);
                continue;
            }
            routine.polls += 1;
            self.poll(now, id);
        }
        for id in deferred {
            self.schedule(id);
        }
    }

    /// Polls one routine, contained: a panic ends that routine only.
    fn poll(&mut self, now: Instant, id: RoutineId) {
        let Some(routine) = self.routines.get_mut(&id) else {
            return;
        };
        routine.wake.queued.store(false, Ordering::Release);
        lock(&routine.link).now = Some(now);
        let mut cx = Context::from_waker(&routine.waker);
        let future = &mut routine.future;
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => self.serve(now, id),
            Ok(Poll::Ready(handler)) => self.end(now, id, handler),
            Err(panic) => {
                if let Some(routine) = self.routines.get(&id) {
                    let scope = Scope {
                        recorder: Some(&self.recorder),
                        now,
                    };
                    contain::handler_panicked_in(Some(&scope), &routine.info, panic);
                }
                self.end(now, id, None);
            }
        }
    }

    /// Carries out what a routine asked for in its last poll: a receive, the end of a
    /// dropped one, datagrams to send.
    fn serve(&mut self, now: Instant, id: RoutineId) {
        let Some(routine) = self.routines.get(&id) else {
            return;
        };
        let peer = routine.peer.clone();
        let mut link = lock(&routine.link);
        for (seq, data) in link.outbox.drain(..) {
            let to = peer.clone();
            self.out
                .push_back((SendId { routine: id, seq }, Transmit { to, data }));
        }
        let ask = match link.recv {
            RecvSlot::Ask(timeout) => {
                link.recv = RecvSlot::Waiting;
                Some(timeout)
            }
            RecvSlot::Cancel => None,
            _ => return,
        };
        drop(link);
        match ask {
            Some(timeout) => {
                if !self.table.recv(now, &peer, id, timeout) {
                    lock(&self.routines[&id].link).recv = RecvSlot::Closed;
                    self.schedule(id);
                }
            }
            None => {
                self.table.cancel(now, &peer, id);
                self.process();
                let mut link = lock(&self.routines[&id].link);
                if matches!(link.recv, RecvSlot::Cancel) {
                    link.recv = RecvSlot::Idle; // nothing was waiting any more
                }
                drop(link);
                self.schedule(id); // a new call waits for the old one's end
            }
        }
        self.process();
    }

    /// A routine returned (`handler` back) or failed (`None`): the peer's next routine may
    /// start.
    fn end(&mut self, now: Instant, id: RoutineId, handler: Option<S::Handler>) {
        let Some(routine) = self.routines.remove(&id) else {
            return;
        };
        let leftover = {
            let mut link = lock(&routine.link);
            for (seq, data) in link.outbox.drain(..) {
                let to = routine.peer.clone();
                self.out
                    .push_back((SendId { routine: id, seq }, Transmit { to, data }));
            }
            match std::mem::replace(&mut link.recv, RecvSlot::Idle) {
                RecvSlot::Got(d) => Some(d),
                _ => None,
            }
        };
        contain::drop_handler(&routine.info, routine.future);
        drop(routine.waker);
        self.keep_spare(routine.link, routine.wake);
        self.table.finish(now, &routine.peer, id, handler, leftover);
        self.process();
    }

    /// A link and a waker for routine `id`: a spare pair when there is one, else new ones.
    fn link_and_wake(&mut self, id: RoutineId) -> (LinkRef, Arc<RoutineWake>) {
        if let Some((link, mut wake)) = self.spare.pop()
            && let Some(w) = Arc::get_mut(&mut wake)
        {
            w.id = id;
            *w.queued.get_mut() = false;
            return (link, wake);
        }
        let wake = Arc::new(RoutineWake {
            id,
            queued: AtomicBool::new(false),
            wakes: self.wakes.clone(),
        });
        (Arc::new(Mutex::new(Link::new())), wake)
    }

    /// Keeps an ended routine's link and waker for a later routine, if nothing else holds
    /// them (its future is dropped; a waker the handler handed out keeps its own) and there
    /// is room.
    fn keep_spare(&mut self, mut link: LinkRef, mut wake: Arc<RoutineWake>) {
        if self.spare.len() >= SPARE_ROUTINES || Arc::get_mut(&mut wake).is_none() {
            return;
        }
        let Some(l) = Arc::get_mut(&mut link) else {
            return;
        };
        if l.get_mut().unwrap_or_else(|e| e.into_inner()).reset() {
            self.spare.push((link, wake));
        }
    }
}
