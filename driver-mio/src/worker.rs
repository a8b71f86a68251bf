//! One event-loop thread of a blocking stream server (TCP or Unix): mio readiness in,
//! [`Session`]s out. Written once against [`MioListener`].
//!
//! Sockets are registered once for both readable and writable (edge-triggered) and the loop
//! remembers which side is ready, so no re-registration syscall is ever needed. A connection
//! is read only while its session wants to read (handler waiting, write queue under its
//! high-water mark); otherwise the kernel's flow control pushes back on the peer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use easynet_core::ConnId;
use easynet_core::accept::{AcceptAction, AcceptGate};
use easynet_core::addr::Addr;
use easynet_core::handler::{ConnInfo, Service, StreamHandler};
use easynet_core::protocol::StreamServerProtocol;
use easynet_core::stream::{Action, CloseHow, Connection, Driven, Session, StreamConfig, Want};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::control::Control;
use easynet_common::TcpKeepalive;

const WAKER: Token = Token(usize::MAX);
/// Reads per connection per wake-up before others get a turn (handler calls have their own
/// budget in the core).
const READ_BUDGET: usize = 16;

/// Connections woken from outside the loop (a pusher queued a frame): their slot and
/// generation, and the loop's waker.
struct Woken {
    conns: Mutex<Vec<(usize, u64)>>,
    poll: Arc<mio::Waker>,
}

/// The waker a connection's session gets for [`Driven::poll_wake`].
struct ConnWake {
    idx: usize,
    generation: u64,
    woken: Arc<Woken>,
}

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut conns = self.woken.conns.lock().unwrap_or_else(|e| e.into_inner());
        let first = conns.is_empty();
        conns.push((self.idx, self.generation));
        drop(conns);
        if first {
            let _ = self.woken.poll.wake();
        }
    }
}

/// A listening socket a worker accepts on: TCP or Unix.
pub(crate) trait MioListener: Source + Send + 'static {
    type Stream: Read + Write + Source + Send + 'static;

    /// Reads into a connection's receive buffer ([`easynet_common::recv_into`]).
    fn recv_into(stream: &Self::Stream, buf: &mut bytes::BytesMut) -> io::Result<usize>;

    /// The next connection and its peer's address.
    fn accept_conn(&self) -> io::Result<(Self::Stream, Addr)>;
    /// Tunes an accepted stream (TCP: `keepalive`) and describes it; `None` if it is
    /// already gone.
    fn conn_info(
        &self,
        stream: &Self::Stream,
        id: ConnId,
        peer: Addr,
        keepalive: Option<&TcpKeepalive>,
    ) -> Option<ConnInfo>;
    /// Sends end-of-stream.
    fn shutdown_write(stream: &Self::Stream);
    /// Makes the close a reset where the transport has one.
    fn set_abortive(stream: &Self::Stream);
    /// Bytes the kernel still holds for the peer, if the OS can tell.
    fn unsent(stream: &Self::Stream) -> Option<usize>;
}

impl MioListener for TcpListener {
    type Stream = TcpStream;

    fn recv_into(stream: &TcpStream, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        easynet_common::recv_into(stream, buf)
    }
    fn accept_conn(&self) -> io::Result<(TcpStream, Addr)> {
        self.accept().map(|(s, peer)| (s, peer.into()))
    }
    fn conn_info(
        &self,
        stream: &TcpStream,
        id: ConnId,
        peer: Addr,
        keepalive: Option<&TcpKeepalive>,
    ) -> Option<ConnInfo> {
        let local = stream.local_addr().ok()?;
        easynet_common::tune_accepted_with(stream, keepalive);
        Some(ConnInfo::new(id, peer, local))
    }
    fn shutdown_write(stream: &TcpStream) {
        let _ = stream.shutdown(Shutdown::Write);
    }
    fn set_abortive(stream: &TcpStream) {
        easynet_common::set_abortive(stream);
    }
    fn unsent(stream: &TcpStream) -> Option<usize> {
        easynet_common::unsent_bytes(stream)
    }
}

/// What a worker needs to make sessions.
pub(crate) struct Factory<S, P> {
    pub service: Arc<S>,
    pub protocol: Arc<P>,
    pub stream: StreamConfig,
    /// TCP keepalive of accepted connections (TCP only).
    pub keepalive: Option<TcpKeepalive>,
    #[cfg(feature = "tls")]
    pub tls: Option<easynet_core::tls::SharedServerConfig>,
}

impl<S, P> Factory<S, P> {
    pub(crate) fn new(
        service: S,
        protocol: P,
        stream: StreamConfig,
        keepalive: Option<TcpKeepalive>,
        #[cfg(feature = "tls")] tls: Option<easynet_core::tls::SharedServerConfig>,
    ) -> Arc<Self> {
        Arc::new(Self {
            service: Arc::new(service),
            protocol: Arc::new(protocol),
            stream,
            keepalive,
            #[cfg(feature = "tls")]
            tls,
        })
    }
}

struct Entry<
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
    St,
> {
    stream: St,
    session: Session<H, P>,
    readable: bool,
    writable: bool,
    /// The peer's end of stream (or an error) was reported: read until a read says so.
    read_closed: bool,
    /// The session asked to go on after the others had their turn.
    resume: bool,
    /// On the `ready` list (once at most: a duplicate would give it two turns per round).
    queued: bool,
    /// The deadline last pushed on the timer heap, to avoid duplicates.
    timer: Option<Instant>,
    generation: u64,
    /// Made once the session can be woken from outside (it handed out a pusher).
    waker: Option<Waker>,
    /// What the last turn ended waiting for (read, write), while only a socket event can
    /// change it (`Driven::want_until_event`); its timeout is `timer`. Taken by the next
    /// turn ([`Worker::turn`]).
    /// Two flags, not a `Want`: an idle connection's memory is mostly this struct.
    waiting: Option<(bool, bool)>,
}

/// One connection slot of a worker.
type WorkerEntry<S, P, L> = Entry<<S as Service>::Handler, P, <L as MioListener>::Stream>;

pub(crate) struct Worker<S: Service, P, L: MioListener = TcpListener>
where
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    poll: Poll,
    /// Indexed by token; `None` once a listener failed.
    listeners: Vec<Option<L>>,
    conn_base: usize,
    conns: Vec<Option<WorkerEntry<S, P, L>>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    generation: u64,
    gate: AcceptGate,
    factory: Arc<Factory<S, P>>,
    control: Arc<Control>,
    buf: Vec<u8>,
    /// Connections that used up their read budget and still have data to read.
    ready: Vec<usize>,
    shutting_down: bool,
    /// Accepting stopped at `max_connections`; the control wakes the loop when one closes.
    full: bool,
    /// The shutdown deadline, once ordered.
    deadline: Option<Instant>,
    woken: Arc<Woken>,
}

impl<S: Service, P, L: MioListener> Worker<S, P, L>
where
    S::Handler: StreamHandler<Request = P::Request, Response = P::Response>,
    P: StreamServerProtocol,
{
    /// A loop over `listeners`; returns it with its waker.
    pub(crate) fn new(
        listeners: Vec<L>,
        factory: Arc<Factory<S, P>>,
        control: Arc<Control>,
    ) -> io::Result<(Self, Arc<mio::Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (i, mut l) in listeners.into_iter().enumerate() {
            poll.registry()
                .register(&mut l, Token(i), Interest::READABLE)?;
            mio_listeners.push(Some(l));
        }
        let buf = vec![0; factory.stream.max_read_size()];
        Ok((
            Self {
                poll,
                conn_base: mio_listeners.len(),
                listeners: mio_listeners,
                conns: Vec::new(),
                free: Vec::new(),
                timers: BinaryHeap::new(),
                generation: 0,
                gate: AcceptGate::new(),
                factory,
                control,
                buf,
                ready: Vec::new(),
                shutting_down: false,
                full: false,
                deadline: None,
                woken: Arc::new(Woken {
                    conns: Mutex::new(Vec::new()),
                    poll: waker.clone(),
                }),
            },
            waker,
        ))
    }

    fn listening(&self) -> bool {
        self.listeners.iter().any(Option::is_some)
    }

    /// Runs until shut down (or closed and every connection ended).
    pub(crate) fn run(self) -> io::Result<()> {
        let control = self.control.clone();
        control.enter_loop();
        let result = self.run_loop();
        control.leave_loop();
        result
    }

    fn run_loop(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // One clock read per wake-up: the time after the wait serves the events and then
        // the next turn's orders and timers (late by the events' handling at most).
        let mut now = Instant::now();
        // Orders and pushers' wake-ups come with a WAKER event: the run state's lock and
        // the woken list's are taken after one, not on every turn.
        let mut woken = true;
        loop {
            if woken {
                self.apply_orders(now);
            }
            self.fire_timers(now);
            if self.gate.poll_timeout().is_some_and(|t| t <= now) {
                self.gate.handle_timeout(now);
                self.accept_all(now); // edge-triggered: no new event would come
            }
            if self.full && self.control.may_accept() {
                self.full = false;
                self.accept_all(now); // the same: the waiting ones raised their edge already
            }
            // After the timers: a deadline may have closed the last connection, and then
            // no event or timer would ever wake the poll below.
            if (self.shutting_down || !self.listening()) && self.live() == 0 {
                return Ok(());
            }
            let timeout = if self.ready.is_empty() {
                self.next_timeout()
                    .map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            let polled = self.poll.poll(&mut events, timeout);
            now = Instant::now();
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            woken = false;
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    woken = true;
                    continue;
                }
                if token.0 < self.conn_base {
                    self.accept(now, token.0);
                    continue;
                }
                let idx = token.0 - self.conn_base;
                if let Some(Some(e)) = self.conns.get_mut(idx) {
                    let closed = event.is_read_closed() || event.is_error();
                    e.read_closed |= closed;
                    e.readable |= event.is_readable() || closed;
                    e.writable |= event.is_writable() || event.is_write_closed();
                    self.turn(now, idx, true); // from the last turn's wait, if kept
                }
            }
            for idx in std::mem::take(&mut self.ready) {
                if let Some(Some(e)) = self.conns.get_mut(idx) {
                    e.queued = false;
                    self.pump(now, idx);
                }
            }
            if !woken {
                continue;
            }
            let conns =
                std::mem::take(&mut *self.woken.conns.lock().unwrap_or_else(|e| e.into_inner()));
            for (idx, generation) in conns {
                if let Some(Some(e)) = self.conns.get(idx)
                    && e.generation == generation
                {
                    self.pump(now, idx);
                }
            }
        }
    }

    fn live(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    fn next_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _, _))| *t);
        match (timer, self.gate.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn apply_orders(&mut self, now: Instant) {
        let orders = self.control.orders();
        if (orders.closed || orders.shutdown.is_some()) && self.listening() {
            for mut l in self.listeners.iter_mut().filter_map(Option::take) {
                let _ = self.poll.registry().deregister(&mut l);
            }
        }
        // The first order, or a hurried one (an earlier deadline).
        if let Some(deadline) = orders.shutdown
            && (!self.shutting_down || self.deadline.is_some_and(|d| deadline < d))
        {
            self.shutting_down = true;
            self.deadline = Some(deadline);
            for idx in 0..self.conns.len() {
                if let Some(e) = self.conns[idx].as_mut() {
                    e.session.shutdown(now, deadline);
                    self.pump(now, idx);
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, idx, generation))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(Some(e)) = self.conns.get_mut(idx) else {
                continue;
            };
            if e.generation != generation || e.timer != Some(t) {
                continue; // stale entry
            }
            e.timer = None;
            e.session.handle_timeout(now);
            self.pump(now, idx);
        }
    }

    fn accept_all(&mut self, now: Instant) {
        for i in 0..self.listeners.len() {
            self.accept(now, i);
        }
    }

    fn accept(&mut self, now: Instant, listener: usize) {
        while self.gate.can_accept(now) && !self.shutting_down {
            let Some(Some(l)) = self.listeners.get(listener) else {
                return;
            };
            match self.control.admit(|| l.accept_conn()) {
                None => {
                    self.full = true; // at max_connections: they wait in the backlog
                    return;
                }
                Some(Ok(((stream, peer), id))) => self.add(now, listener, stream, peer, id),
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Some(Err(e)) => match self.gate.on_error(now, &e) {
                    AcceptAction::Pause { .. } => return,
                    AcceptAction::Fail => {
                        if let Some(mut l) = self.listeners.get_mut(listener).and_then(Option::take)
                        {
                            let _ = self.poll.registry().deregister(&mut l);
                        }
                        return;
                    }
                    _ => {}
                },
            }
        }
    }

    fn add(
        &mut self,
        now: Instant,
        listener: usize,
        mut stream: L::Stream,
        peer: Addr,
        id: ConnId,
    ) {
        let f = &self.factory;
        let Some(info) = self.listeners[listener]
            .as_ref()
            .and_then(|l| l.conn_info(&stream, id, peer, f.keepalive.as_ref()))
        else {
            self.control.closed(id);
            return;
        };
        #[cfg(feature = "tls")]
        let conn = match &f.tls {
            Some(cfg) => match easynet_core::tls::TlsSession::server(cfg.get()) {
                Ok(tls) => {
                    Connection::with_tls(now, f.protocol.clone(), f.stream.clone(), info, tls)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS session");
                    self.control.closed(id);
                    return;
                }
            },
            None => Connection::new(f.protocol.clone(), f.stream.clone(), info),
        };
        #[cfg(not(feature = "tls"))]
        let conn = Connection::new(f.protocol.clone(), f.stream.clone(), info);
        let Some(session) = Session::start(now, &*f.service, conn) else {
            self.control.closed(id);
            return; // the factory panicked (logged)
        };
        let idx = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let token = Token(idx + self.conn_base);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot register connection");
            self.free.push(idx);
            self.control.closed(id);
            return;
        }
        self.generation += 1;
        self.conns[idx] = Some(Entry {
            stream,
            session,
            readable: true, // try at once: data may already be there
            writable: true,
            read_closed: false,
            resume: false,
            queued: false,
            timer: None,
            generation: self.generation,
            waker: None,
            waiting: None,
        });
        self.pump(now, idx);
    }

    /// Does what one connection's session asks until it must wait, then arms its timer.
    /// For turns that something other than a socket event began (accept, timers, orders,
    /// wake-ups, resumes): the session may have changed, so it is asked afresh.
    fn pump(&mut self, now: Instant, idx: usize) {
        self.turn(now, idx, false);
    }

    /// One turn of a connection. `event`: a socket event began it, so it starts from the
    /// `Want` the last turn ended on when that still holds (`Entry::waiting`) instead of
    /// asking `poll_action` again: one less per request.
    fn turn(&mut self, now: Instant, idx: usize, event: bool) {
        let buf = &mut self.buf;
        let Some(Some(e)) = self.conns.get_mut(idx) else {
            return;
        };
        // `Driven::want_until_event`: kept for socket events only; every other turn follows
        // a call that may have changed the session (a deadline passed meanwhile is the
        // timer's turn, and the session acts on it after the read or write anyway), and so
        // does a resume (never pending with a kept wait today: said here, not assumed).
        let last = e
            .waiting
            .take()
            .filter(|_| event && !e.resume)
            .map(|(read, write)| {
                let mut want = Want::default();
                (want.read, want.write, want.timeout) = (read, write, e.timer);
                want
            });
        if std::mem::take(&mut e.resume) {
            e.session.resume(now);
        }
        let mut reads = 0;
        let mut again = false;
        // The `Want` a write left valid (`Driven::want_after_write`), or the last turn's.
        let mut kept: Option<Want> = last;
        let end = loop {
            let action = match kept.take() {
                Some(want) => Action::Io(want),
                None => e.session.poll_action(now),
            };
            let want = match action {
                Action::Io(want) => want,
                Action::ShutdownWrite => {
                    L::shutdown_write(&e.stream);
                    e.readable = true; // the linger reads now, whatever the flag says
                    continue;
                }
                Action::QueryUnsent => {
                    e.session.handle_unsent(now, L::unsent(&e.stream));
                    continue;
                }
                Action::Close(how) => {
                    if how == CloseHow::Abort {
                        L::set_abortive(&e.stream);
                    }
                    return self.release(idx);
                }
                _ => {
                    L::set_abortive(&e.stream);
                    return self.release(idx);
                }
            };
            if want.write && e.writable {
                match e.session.write_to(&mut e.stream) {
                    Ok(_) => kept = e.session.want_after_write(want),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => e.writable = false,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => e.session.handle_io_error(now),
                }
                continue;
            }
            if want.read && e.readable {
                if reads == READ_BUDGET {
                    again = true; // others get a turn; this one goes on next round
                    break want;
                }
                reads += 1;
                // In place when the session offers its receive buffer (bulk transfers),
                // else through the worker's buffer (an idle connection owns none).
                let (res, asked, in_place) = match e.session.read_buffer() {
                    Some(rbuf) => {
                        let asked = rbuf.capacity() - rbuf.len();
                        (L::recv_into(&e.stream, rbuf), asked, true)
                    }
                    None => {
                        let asked = e.session.read_size().clamp(1, buf.len());
                        (e.stream.read(&mut buf[..asked]), asked, false)
                    }
                };
                match res {
                    Ok(0) => e.session.handle_eof(now),
                    Ok(n) => {
                        // A short read emptied the socket: new bytes will raise a new edge,
                        // so the read that would only say WouldBlock is skipped. Not once
                        // the peer's EOF was reported: that edge has been used up.
                        if n < asked && !e.read_closed {
                            e.readable = false;
                        }
                        if in_place {
                            e.session.handle_read_in_place(now, n);
                        } else {
                            e.session.handle_read(now, &buf[..n]);
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => e.readable = false,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => e.session.handle_io_error(now),
                }
                continue;
            }
            if want.resume {
                // The turn's handler budget ran out: the others go first.
                e.resume = true;
                again = true;
            }
            break want;
        };
        let timeout = end.timeout;
        // A session with pushers is woken when one queues a frame while it waits.
        if Driven::wakeable(&e.session) {
            let waker = e.waker.get_or_insert_with(|| {
                Waker::from(Arc::new(ConnWake {
                    idx,
                    generation: e.generation,
                    woken: self.woken.clone(),
                }))
            });
            if Driven::poll_wake(&mut e.session, &mut Context::from_waker(waker)).is_ready() {
                again = true;
            }
        }
        if timeout != e.timer {
            e.timer = timeout;
            if let Some(t) = timeout {
                self.timers.push(Reverse((t, idx, e.generation)));
            }
        }
        if again && !e.queued {
            e.queued = true;
            self.ready.push(idx);
        }
        // Not for one with a turn to come (its next turn is not an event's).
        if !again {
            e.waiting = Driven::want_until_event(&e.session, end).map(|w| (w.read, w.write));
        }
    }

    /// Closes a connection's socket and frees its slot.
    fn release(&mut self, idx: usize) {
        let Some(mut e) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut e.stream);
        self.free.push(idx);
        self.control.closed(e.session.info().id);
    }
}
