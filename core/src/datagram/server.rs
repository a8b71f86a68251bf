//! [`DatagramServer`]: the synchronous [`DatagramHandler`]s of a datagram endpoint, driven on
//! a [`PeerTable`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::contain::{self, HandlerSlot, Panicked, Scope};
use super::peers::Stepped;
use super::{
    DatagramConfig, DatagramStats, Output, Payload, PeerEvent, PeerInfo, PeerTable, Recv, Transmit,
};
use crate::ConnId;
use crate::addr::{Addr, PeerAddr};
use crate::handler::{
    ConnInfo, DatagramContext, DatagramHandler, DatagramSink, Next, Received, ResponseSink,
    SendError, Service,
};
use crate::protocol::{ConfigError, DatagramServerProtocol};
use crate::push::{DatagramEncoder, DatagramOutbox, DatagramPusher, Encoder};
use crate::stats::{Counter, Recorder};

/// What resumes a routine: a datagram still to decode, or its timeout.
enum Step {
    Datagram(Payload),
    Timeout,
}

/// A datagram endpoint running synchronous handlers: event in, action out.
///
/// Feed it what the socket and the clock bring ([`handle_datagram`](Self::handle_datagram),
/// [`handle_timeout`](Self::handle_timeout), [`shutdown`](Self::shutdown)) and after each
/// call drain [`poll_output`](Self::poll_output) until [`Output::Idle`], sending every
/// [`Output::Transmit`] from the endpoint's socket.
///
/// Each peer gets one handler value, made by the service when the peer first shows and kept
/// until the peer is evicted. Datagrams are decoded only when delivered; a decode error
/// reaches the handler as [`Received::ParseError`]. A handler error or panic is logged and
/// ends that routine only; the peer's next routine gets a fresh handler. All user code (the
/// factory, decoding, encoding, the handler, its `Drop`) runs contained: see
/// [`contain`](super::contain). `on_start` and `on_stop` are the driver's
/// business.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use bytes::BytesMut;
/// use easynet_core::datagram::{DatagramConfig, DatagramServer, Output};
/// use easynet_core::handler::{
///     ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received,
/// };
/// use easynet_core::protocol::Datagram;
///
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     type Request = String;
///     type Response = String;
///
///     fn handle(&mut self, cx: &mut DatagramContext<'_, String>, received: Received<String>) -> HandlerResult {
///         if let Received::Request(text) = received {
///             cx.send(text.to_uppercase())?;
///         }
///         Ok(Next::Close) // one datagram per routine
///     }
/// }
///
/// let local: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let peer = "127.0.0.1:40000".parse().unwrap();
/// let mut server = DatagramServer::new(
///     Arc::new(|_: &ConnInfo| Echo),
///     Arc::new(Datagram::lines()),
///     local,
///     DatagramConfig::default(),
/// )
/// .unwrap();
///
/// let now = Instant::now();
/// server.handle_datagram(now, peer, BytesMut::from(&b"hello\n"[..]));
/// let mut sent = Vec::new();
/// loop {
///     match server.poll_output() {
///         Output::Transmit(t) => sent.push((t.to, t.data)),
///         Output::Idle { .. } => break,
///         _ => unreachable!(),
///     }
/// }
/// assert_eq!(sent, vec![(peer, bytes::Bytes::from_static(b"HELLO"))]);
/// ```
pub struct DatagramServer<S: Service, P: DatagramServerProtocol, A = SocketAddr> {
    service: Arc<S>,
    protocol: Arc<P>,
    local: A,
    // Made once: handlers get it per call without converting `local` again.
    local_addr: Addr,
    /// What the handlers of the last peer called saw: a peer sending datagrams in a row
    /// gets the same one again.
    last_info: Option<ConnInfo>,
    // The user state of a peer is its handler; empty until made, or after it failed.
    table: PeerTable<Payload, HandlerSlot<S::Handler>, A>,
    out: VecDeque<Transmit<A>>,
    closing: bool,
    max_datagram_size: usize,
    /// What pushers queue, and how they encode.
    pushed: Arc<DatagramOutbox>,
    encoder: Arc<dyn Encoder<P::Response>>,
    /// Where it counts: the config's recorder, or one of its own.
    recorder: Recorder,
}

impl<S: Service, P: DatagramServerProtocol, A: PeerAddr> std::fmt::Debug
    for DatagramServer<S, P, A>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramServer")
            .field("local", &self.local)
            .field("closing", &self.closing)
            .field("table", &self.table)
            .field("pending_transmits", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<S, P, A> DatagramServer<S, P, A>
where
    A: PeerAddr,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
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
            pushed,
            encoder,
            service,
            protocol,
            local_addr: local.to_addr(),
            last_info: None,
            local,
            max_datagram_size: config.max_datagram_size,
            table: PeerTable::new(config)?,
            out: VecDeque::new(),
            closing: false,
        })
    }

    /// A datagram `data` arrived from `from`. One longer than
    /// [`DatagramConfig::max_datagram_size`] reaches the handler as
    /// [`ParseError::FrameTooLarge`](crate::protocol::ParseError::FrameTooLarge).
    pub fn handle_datagram(&mut self, now: Instant, from: A, data: BytesMut) {
        self.recorder.add(Counter::DatagramsIn, 1);
        self.recorder.add(Counter::BytesIn, data.len() as u64);
        let payload = Payload::new(data, self.max_datagram_size);
        let scope = Scope {
            recorder: Some(&self.recorder),
            now,
        };
        let (service, protocol, out) = (&*self.service, &*self.protocol, &mut self.out);
        let (pushed, encoder, local) = (&self.pushed, &self.encoder, &self.local_addr);
        let last_info = &mut self.last_info;
        // The arrival and the routine's first step on one lookup of the peer.
        let stepped = self
            .table
            .arrive_step(now, from.clone(), payload, |id, slot, d| {
                let info = info_for(last_info, id, &from, local);
                let step = Step::Datagram(d);
                let next = call(
                    &scope,
                    service,
                    protocol,
                    (pushed, encoder),
                    out,
                    slot,
                    info,
                    &from,
                    step,
                );
                (next, false)
            });
        match stepped {
            Ok(stepped) => {
                let mut immediate_timeouts = 0;
                if let Some(step) = next_step(Some(stepped), &mut immediate_timeouts) {
                    self.drive_from(now, from, step, immediate_timeouts);
                }
            }
            // Queued behind a deadline that had passed unnoticed: the timeout goes first.
            Err(_) => self.process_events(now),
        }
    }

    /// The clock reached `now`: fires due receive timeouts and evicts idle peers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.table.handle_timeout(now);
        self.process_events(now);
    }

    /// Stops serving: queued datagrams are dropped, waiting routines end, every handler is
    /// dropped and no handler is called again. Responses already queued can still be
    /// drained. Idempotent.
    pub fn shutdown(&mut self, now: Instant) {
        self.closing = true;
        self.pushed.close();
        for (peer, id, slot) in self.table.iter_mut() {
            slot.release(peer, id);
        }
        self.table.shutdown(now);
        self.process_events(now);
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The next thing for the driver to do; [`Output::Idle`] ends each drain loop.
    #[inline]
    pub fn poll_output(&mut self) -> Output<A> {
        if self.out.is_empty() && self.pushed.has_queued() {
            self.take_pushed();
        }
        match self.out.pop_front() {
            Some(t) => {
                self.recorder.add(Counter::DatagramsOut, 1);
                self.recorder.add(Counter::BytesOut, t.data.len() as u64);
                Output::Transmit(t)
            }
            None => Output::Idle {
                next_timeout: self.table.poll_timeout(),
            },
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Ready once datagrams were pushed ([`DatagramContext::pusher`]) while the driver
    /// waited: drain [`poll_output`](Self::poll_output) then. Registers the waker.
    pub fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.pushed.poll(cx)
    }

    #[cold]
    fn take_pushed(&mut self) {
        let out = &mut self.out;
        self.pushed.drain(|to, data| match A::from_addr(&to) {
            Some(to) => out.push_back(Transmit {
                to: to.clone(),
                data,
            }),
            None => tracing::debug!(peer = %to, "pushed datagram for an address of another kind"),
        });
    }

    /// The endpoint's bound address.
    pub fn local_addr(&self) -> &A {
        &self.local
    }

    /// Datagrams dropped so far (queue full, or discarded by shutdown).
    pub fn drops(&self) -> u64 {
        self.table.stats().dropped
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
    pub fn peer(&self, peer: impl std::borrow::Borrow<A>) -> Option<PeerInfo> {
        self.table.peer(peer)
    }

    fn process_events(&mut self, now: Instant) {
        while let Some(event) = self.table.poll_event() {
            match event {
                PeerEvent::Timeout { peer } => self.drive(now, peer, Step::Timeout),
                PeerEvent::Evicted {
                    peer,
                    id,
                    mut state,
                } => state.release(&peer, id),
                _ => {}
            }
        }
    }

    /// Runs the routine of `peer` from `step` until it waits or the peer goes idle. Bounded:
    /// it consumes only what is queued now, and a repeated zero-timeout poll is deferred.
    fn drive(&mut self, now: Instant, peer: A, step: Step) {
        self.drive_from(now, peer, step, 0);
    }

    /// [`drive`](Self::drive), after `immediate_timeouts` zero-timeout receives that timed
    /// out at once.
    fn drive_from(&mut self, now: Instant, peer: A, mut step: Step, mut immediate_timeouts: u32) {
        loop {
            if self.closing {
                return;
            }
            let scope = Scope {
                recorder: Some(&self.recorder),
                now,
            };
            let (service, protocol, out) = (&*self.service, &*self.protocol, &mut self.out);
            let (pushed, encoder, local) = (&self.pushed, &self.encoder, &self.local_addr);
            let last_info = &mut self.last_info;
            // One lookup of the peer for the handler's call and what it asks next.
            let stepped = self.table.step_routine(now, &peer, |id, slot| {
                let info = info_for(last_info, id, &peer, local);
                let next = call(
                    &scope,
                    service,
                    protocol,
                    (pushed, encoder),
                    out,
                    slot,
                    info,
                    &peer,
                    step,
                );
                // A zero timeout again after one that timed out at once waits for the next
                // timer instead (no spin inside one call).
                (next, immediate_timeouts > 0)
            });
            match next_step(stepped, &mut immediate_timeouts) {
                Some(s) => step = s,
                None => return,
            }
        }
    }
}

/// The `ConnInfo` of peer `id` at `peer`: the last one called, with its id and address
/// changed when another peer was called last (peers taking turns then cost two stores, not
/// an info made and dropped per datagram). Ids are never reused within a table, so the id
/// alone tells; handlers see the info by shared reference, so the rest (the local address,
/// no credentials, no TLS) is as made.
fn info_for<'a, A: PeerAddr>(
    last: &'a mut Option<ConnInfo>,
    id: ConnId,
    peer: &A,
    local: &Addr,
) -> &'a ConnInfo {
    match last {
        Some(info) => {
            if info.id != id {
                info.id = id;
                info.peer = peer.to_addr();
            }
            info
        }
        None => last.insert(ConnInfo::new(id, peer.to_addr(), local.clone())),
    }
}

/// What the routine runs next after a step: a datagram, an immediate timeout (counted), or
/// nothing (it waits, the peer is idle, or it is gone).
fn next_step<A>(
    stepped: Option<Result<Stepped<Payload>, super::RoutineError<A>>>,
    immediate_timeouts: &mut u32,
) -> Option<Step> {
    match stepped {
        Some(Ok(Stepped::Recv(Recv::Ready(data)))) => Some(Step::Datagram(data)),
        Some(Ok(Stepped::Recv(Recv::Timeout))) => {
            *immediate_timeouts += 1;
            Some(Step::Timeout)
        }
        Some(Ok(Stepped::Finished(Some(data)))) => Some(Step::Datagram(data)),
        _ => None,
    }
}

/// One step of the routine of `peer`: decode, make the handler if the peer has none, call
/// it. Every piece of user code runs contained; a panic or an error ends the routine and
/// releases the handler (the peer's next routine gets a fresh one). Returns what the
/// routine does next.
#[allow(clippy::too_many_arguments)]
fn call<S, P, A>(
    scope: &Scope<'_>,
    service: &S,
    protocol: &P,
    push: (&Arc<DatagramOutbox>, &Arc<dyn Encoder<P::Response>>),
    out: &mut VecDeque<Transmit<A>>,
    slot: &mut HandlerSlot<S::Handler>,
    info: &ConnInfo,
    peer: &A,
    step: Step,
) -> Next
where
    A: PeerAddr,
    S: Service,
    S::Handler: DatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
{
    let received = match step {
        Step::Datagram(payload) => match contain::decode_in(Some(scope), protocol, info, payload) {
            Ok(Ok(request)) => Received::Request(request),
            Ok(Err(e)) => Received::ParseError(e),
            Err(Panicked) => {
                slot.release(peer, info.id);
                return Next::Close;
            }
        },
        Step::Timeout => Received::Timeout,
    };
    let handler = match slot.get_mut() {
        Some(handler) => handler,
        None => match contain::new_handler_in(Some(scope), service, info) {
            Ok(handler) => slot.insert(handler),
            // The datagram is dropped; the peer's next one tries again.
            Err(Panicked) => return Next::Close,
        },
    };
    let mut sink = Outbox {
        scope,
        protocol,
        push,
        info,
        to: peer,
        out,
        closing: false,
    };
    let mut cx = DatagramContext {
        sink: &mut sink,
        info,
        now: scope.now,
    };
    match catch_unwind(AssertUnwindSafe(|| handler.handle(&mut cx, received))) {
        Ok(Ok(next)) => next,
        Ok(Err(error)) => {
            contain::handler_failed_in(Some(scope), info, error, false);
            slot.release(peer, info.id);
            Next::Close
        }
        Err(panic) => {
            contain::handler_panicked_in(Some(scope), info, panic);
            slot.release(peer, info.id);
            Next::Close
        }
    }
}

/// The sink a handler's context sends into during one call.
struct Outbox<'a, P: DatagramServerProtocol, A> {
    scope: &'a Scope<'a>,
    protocol: &'a P,
    push: (&'a Arc<DatagramOutbox>, &'a Arc<dyn Encoder<P::Response>>),
    info: &'a ConnInfo,
    to: &'a A,
    out: &'a mut VecDeque<Transmit<A>>,
    closing: bool,
}

impl<P: DatagramServerProtocol, A: Clone> ResponseSink<P::Response> for Outbox<'_, P, A> {
    fn send(&mut self, response: &P::Response) -> Result<(), SendError> {
        if self.closing {
            return Err(SendError::Closed);
        }
        let data =
            match contain::encode_bytes_in(Some(self.scope), self.protocol, self.info, response) {
                Ok(encoded) => encoded?,
                // Logged already: unwinding ends the routine like a handler panic, not logged
                // again (the payload is `Panicked`).
                Err(Panicked) => std::panic::resume_unwind(Box::new(Panicked)),
            };
        self.out.push_back(Transmit {
            to: self.to.clone(),
            data,
        });
        Ok(())
    }

    fn send_owned(&mut self, response: P::Response) -> Result<(), SendError> {
        if self.closing {
            return Err(SendError::Closed);
        }
        let mut data = BytesMut::new();
        let data = match contain::encode_owned_in(
            Some(self.scope),
            self.protocol,
            self.info,
            response,
            &mut data,
        ) {
            Ok(encoded) => encoded?.unwrap_or_else(|| data.freeze()),
            // As in `send`: logged already, the routine ends.
            Err(Panicked) => std::panic::resume_unwind(Box::new(Panicked)),
        };
        self.out.push_back(Transmit {
            to: self.to.clone(),
            data,
        });
        Ok(())
    }

    fn is_closing(&self) -> bool {
        self.closing
    }
}

impl<P: DatagramServerProtocol, A: Clone> DatagramSink<P::Response> for Outbox<'_, P, A> {
    fn pusher(&mut self) -> DatagramPusher<P::Response> {
        DatagramPusher::new(self.push.0.clone(), self.push.1.clone(), self.info.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::UnixAddr;
    use crate::handler::DatagramContext;
    use crate::protocol::{Datagram, SerializeError};

    /// Answers each datagram with who sent it and where.
    struct Who;

    impl DatagramHandler for Who {
        type Request = String;
        type Response = String;

        fn handle(
            &mut self,
            cx: &mut DatagramContext<'_, String>,
            _: Received<String>,
        ) -> crate::handler::HandlerResult {
            let reply = format!("{} -> {}", cx.peer_addr(), cx.local_addr());
            cx.send(&reply)?;
            Ok(Next::Close)
        }
    }

    #[test]
    fn unix_peers_are_keyed_and_answered_by_their_address() {
        let local = UnixAddr::pathname("/run/srv.sock");
        let mut server = DatagramServer::new(
            Arc::new(|_: &ConnInfo| Who),
            Arc::new(Datagram::lines()),
            local.clone(),
            DatagramConfig::default(),
        )
        .unwrap();
        let (a, b) = (UnixAddr::pathname("/tmp/a"), UnixAddr::abstract_name(b"b"));
        let now = Instant::now();
        server.handle_datagram(now, a.clone(), BytesMut::from(&b"x\n"[..]));
        server.handle_datagram(now, b.clone(), BytesMut::from(&b"y\n"[..]));
        let mut sent = Vec::new();
        while let Output::Transmit(t) = server.poll_output() {
            sent.push((t.to, t.data));
        }
        assert_eq!(
            sent,
            vec![
                (a.clone(), bytes::Bytes::from("/tmp/a -> /run/srv.sock")),
                (b.clone(), bytes::Bytes::from("@b -> /run/srv.sock")),
            ]
        );
        assert_ne!(server.peer(&a).unwrap().id, server.peer(&b).unwrap().id);
        assert_eq!(server.local_addr(), &local);
    }

    /// The `ConnInfo` kept for the last peer is never shown to another one.
    #[test]
    fn each_call_sees_its_own_peer() {
        let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut server = DatagramServer::new(
            Arc::new(|_: &ConnInfo| Who),
            Arc::new(Datagram::lines()),
            local,
            DatagramConfig::default(),
        )
        .unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[::1]:1".parse().unwrap();
        let now = Instant::now();
        let order = [a, a, b, a, b, b];
        for peer in order {
            server.handle_datagram(now, peer, BytesMut::from(&b"x\n"[..]));
        }
        let mut sent = Vec::new();
        while let Output::Transmit(t) = server.poll_output() {
            sent.push((t.to, t.data));
        }
        let want: Vec<_> = order
            .iter()
            .map(|p| (*p, bytes::Bytes::from(format!("{p} -> {local}"))))
            .collect();
        assert_eq!(sent, want);
    }

    #[test]
    fn outbox_refuses_sends_once_closing() {
        let protocol = Datagram::lines();
        let mut out = VecDeque::new();
        let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = ConnInfo::new(crate::ConnId(0), to, to);
        let pushed = Arc::new(DatagramOutbox::new(1));
        let encoder: Arc<dyn Encoder<String>> =
            Arc::new(DatagramEncoder(Arc::new(protocol.clone())));
        let scope = Scope {
            recorder: None,
            now: std::time::Instant::now(),
        };
        let mut sink = Outbox {
            scope: &scope,
            protocol: &protocol,
            push: (&pushed, &encoder),
            info: &info,
            to: &to,
            out: &mut out,
            closing: true,
        };
        assert!(sink.is_closing());
        assert!(matches!(
            sink.send(&"x".to_string()),
            Err(SendError::Closed)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn outbox_reports_serialize_errors_and_queues_nothing() {
        let protocol = Datagram::lines();
        let mut out = VecDeque::new();
        let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = ConnInfo::new(crate::ConnId(0), to, to);
        let pushed = Arc::new(DatagramOutbox::new(1));
        let encoder: Arc<dyn Encoder<String>> =
            Arc::new(DatagramEncoder(Arc::new(protocol.clone())));
        let scope = Scope {
            recorder: None,
            now: std::time::Instant::now(),
        };
        let mut sink = Outbox {
            scope: &scope,
            protocol: &protocol,
            push: (&pushed, &encoder),
            info: &info,
            to: &to,
            out: &mut out,
            closing: false,
        };
        let huge = "x".repeat(crate::protocol::MAX_DATAGRAM_SIZE + 1);
        assert!(matches!(
            sink.send(&huge),
            Err(SendError::Serialize(SerializeError::TooLarge { .. }))
        ));
        sink.send(&"ok".to_string()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].data[..], b"ok");
    }
}
