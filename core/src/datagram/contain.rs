//! Containment of user code on the datagram path, written once for every driver.
//!
//! User code runs at five places: the handler factory ([`Service::new_handler`]), the
//! protocol's decoding and encoding (`Decode`/`Encode`, converters included), the handler
//! itself, and its `Drop`. A panic in any of them ends at most that peer's routine, is
//! logged once at ERROR (with the peer and conn fields and the panic message), and the
//! endpoint goes on:
//!
//! | panic in | what happens |
//! |---|---|
//! | the factory | the datagram is dropped; the peer's next datagram tries again |
//! | decoding, encoding, the handler | the routine ends; the peer gets a fresh handler |
//! | the handler's `Drop` | nothing else (the handler was being dropped anyway) |
//!
//! [`DatagramServer`](super::DatagramServer) and
//! [`AsyncDatagramServer`](super::AsyncDatagramServer) call these helpers themselves; they
//! are public for drivers and tests that run user code of their own.
//! How a handler's *error* is logged is the rule of [`HandlerError`].

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use bytes::BytesMut;

use super::Payload;
use crate::ConnId;
use crate::addr::Addr;
use crate::handler::{ConnInfo, HandlerError, SendError, Service};
use crate::protocol::{DatagramServerProtocol, ParseError, SerializeError};
use crate::stats::{Counter, Recorder};

/// A panic in user code that was caught and logged already.
///
/// Drivers that must unwind to end an async routine (a panicking `Decode` inside
/// `recv`, say) unwind with this as the payload, so that [`handler_panicked`] does not log
/// the same panic twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("user code panicked (logged)")
    }
}

impl std::error::Error for Panicked {}

/// Where an endpoint's contained user code counts its outcomes, and the clock its
/// client-triggered lines are limited by (the server's per-peer log budget). Without a
/// recorder nothing is counted and every line is written (the public helpers).
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub(crate) recorder: Option<&'a Recorder>,
    pub(crate) now: Instant,
}

impl Scope<'_> {
    fn count(&self, k: Counter) {
        if let Some(r) = self.recorder {
            r.add(k, 1);
        }
    }

    /// `Some(suppressed)`: write the line about `peer`.
    fn budget(&self, peer: &Addr) -> Option<u64> {
        match self.recorder {
            Some(r) => r.check_log(peer, self.now),
            None => Some(0),
        }
    }
}

/// Runs `f`; a panic is counted, logged once (ERROR, `what` panicked, within the peer's
/// log budget) and becomes [`Panicked`].
fn contained<R>(
    scope: Option<&Scope<'_>>,
    peer: &Addr,
    conn: ConnId,
    what: &str,
    f: impl FnOnce() -> R,
) -> Result<R, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        log_panic(scope, peer, conn, what, &*panic);
        forget_payload(panic);
        Panicked
    })
}

fn log_panic(
    scope: Option<&Scope<'_>>,
    peer: &Addr,
    conn: ConnId,
    what: &str,
    panic: &(dyn Any + Send),
) {
    let suppressed = match scope {
        Some(scope) => {
            scope.count(Counter::HandlerPanics);
            scope.budget(peer)
        }
        None => Some(0),
    };
    if let Some(suppressed) = suppressed {
        let message = panic_message(panic);
        tracing::error!(%peer, %conn, panic = message, suppressed, "{what} panicked");
    }
}

/// Drops a panic payload; its own `Drop` is user code too.
fn forget_payload(panic: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(|| drop(panic))) {
        std::mem::forget(again);
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Makes the handler of the peer in `info`; a panicking factory is logged and gives
/// [`Panicked`] (the caller drops the datagram).
pub fn new_handler<S: Service>(service: &S, info: &ConnInfo) -> Result<S::Handler, Panicked> {
    new_handler_in(None, service, info)
}

pub(crate) fn new_handler_in<S: Service>(
    scope: Option<&Scope<'_>>,
    service: &S,
    info: &ConnInfo,
) -> Result<S::Handler, Panicked> {
    contained(
        scope,
        &info.peer,
        info.id,
        "datagram handler factory",
        || service.new_handler(info),
    )
}

/// Decodes a delivered datagram as a request. A datagram past the size limit is
/// [`ParseError::FrameTooLarge`]; a panicking protocol is logged and gives [`Panicked`]
/// (the caller ends the routine).
pub fn decode<P: DatagramServerProtocol>(
    protocol: &P,
    info: &ConnInfo,
    payload: Payload,
) -> Result<Result<P::Request, ParseError>, Panicked> {
    decode_in(None, protocol, info, payload)
}

/// [`decode`], counting requests and parse errors.
pub(crate) fn decode_in<P: DatagramServerProtocol + ?Sized>(
    scope: Option<&Scope<'_>>,
    protocol: &P,
    info: &ConnInfo,
    payload: Payload,
) -> Result<Result<P::Request, ParseError>, Panicked> {
    let decoded = match payload {
        Payload::Data(data) => contained(
            scope,
            &info.peer,
            info.id,
            "datagram protocol (decode)",
            || protocol.decode_request(data),
        ),
        Payload::TooLarge { limit, got } => Ok(Err(ParseError::FrameTooLarge { limit, got })),
    };
    if let (Some(scope), Ok(d)) = (scope, &decoded) {
        scope.count(match d {
            Ok(_) => Counter::Requests,
            Err(_) => Counter::ParseErrors,
        });
    }
    decoded
}

/// Encodes a response into `dst`; a panicking protocol is logged and gives [`Panicked`]
/// (the caller ends the routine).
pub fn encode<P: DatagramServerProtocol>(
    protocol: &P,
    info: &ConnInfo,
    response: &P::Response,
    dst: &mut BytesMut,
) -> Result<Result<(), SerializeError>, Panicked> {
    encode_in(None, protocol, info, response, dst)
}

pub(crate) fn encode_in<P: DatagramServerProtocol + ?Sized>(
    scope: Option<&Scope<'_>>,
    protocol: &P,
    info: &ConnInfo,
    response: &P::Response,
    dst: &mut BytesMut,
) -> Result<Result<(), SerializeError>, Panicked> {
    contained(
        scope,
        &info.peer,
        info.id,
        "datagram protocol (encode)",
        || protocol.encode_response(response, dst),
    )
}

/// [`encode_in`] into a datagram of its own: the response's own bytes when the protocol
/// shares them ([`DatagramServerProtocol::response_bytes`], no copy), else a new buffer.
pub(crate) fn encode_bytes_in<P: DatagramServerProtocol + ?Sized>(
    scope: Option<&Scope<'_>>,
    protocol: &P,
    info: &ConnInfo,
    response: &P::Response,
) -> Result<Result<bytes::Bytes, SerializeError>, Panicked> {
    contained(
        scope,
        &info.peer,
        info.id,
        "datagram protocol (encode)",
        || crate::protocol::response_datagram(protocol, response),
    )
}

/// [`encode_in`], taking the response: the datagram comes back whole when it is the
/// response's own buffer (`Ok(Ok(Some))`, no copy), else it was appended to `dst`.
pub(crate) fn encode_owned_in<P: DatagramServerProtocol + ?Sized>(
    scope: Option<&Scope<'_>>,
    protocol: &P,
    info: &ConnInfo,
    response: P::Response,
    dst: &mut BytesMut,
) -> Result<Result<Option<bytes::Bytes>, SerializeError>, Panicked> {
    contained(
        scope,
        &info.peer,
        info.id,
        "datagram protocol (encode)",
        || protocol.encode_response_owned(response, dst),
    )
}

/// Logs the error a handler returned, by the rule of [`HandlerError`]: a send on a closed
/// client is one WARN, anything else one ERROR. [`SendError::Closed`] is recognised here;
/// `closed_send` says the error is a driver's own closed-send error. The error is
/// formatted and dropped inside `catch_unwind` (its `Display` and `Drop` are user code).
pub fn handler_failed(info: &ConnInfo, error: HandlerError, closed_send: bool) {
    handler_failed_in(None, info, error, closed_send);
}

/// [`handler_failed`], counted, and limited by the peer's log budget.
pub(crate) fn handler_failed_in(
    scope: Option<&Scope<'_>>,
    info: &ConnInfo,
    error: HandlerError,
    closed_send: bool,
) {
    let (peer, conn) = (&info.peer, info.id);
    let closed =
        closed_send || matches!(error.downcast_ref::<SendError>(), Some(SendError::Closed));
    if !closed && let Some(scope) = scope {
        scope.count(Counter::HandlerErrors);
    }
    let suppressed = scope.map_or(Some(0), |s| s.budget(peer));
    if closed && let Some(suppressed) = suppressed {
        tracing::warn!(%peer, %conn, suppressed, "datagram handler sent on a closed client");
    } else if let Some(suppressed) = suppressed {
        let text = catch_unwind(AssertUnwindSafe(|| error.to_string())).unwrap_or_else(|p| {
            forget_payload(p);
            "<the error's Display panicked>".to_owned()
        });
        tracing::error!(%peer, %conn, error = text, suppressed, "error in datagram handler");
    }
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(error))) {
        forget_payload(p);
    }
}

/// Logs a handler panic once (nothing if its payload is [`Panicked`]: logged where it was
/// caught, one ERROR otherwise), then drops the payload contained.
pub fn handler_panicked(info: &ConnInfo, panic: Box<dyn Any + Send>) {
    handler_panicked_in(None, info, panic);
}

/// [`handler_panicked`], counted (once: a [`Panicked`] payload was counted where it was
/// caught), and limited by the peer's log budget.
pub(crate) fn handler_panicked_in(
    scope: Option<&Scope<'_>>,
    info: &ConnInfo,
    panic: Box<dyn Any + Send>,
) {
    if !panic.is::<Panicked>() {
        log_panic(scope, &info.peer, info.id, "datagram handler", &*panic);
    }
    forget_payload(panic);
}

/// Drops a handler, containing (and logging) a panic in its `Drop`.
pub fn drop_handler<H>(info: &ConnInfo, handler: H) {
    drop_contained(&info.peer, info.id, handler);
}

fn drop_contained<H>(peer: &dyn fmt::Display, conn: ConnId, handler: H) {
    // Not limited: a handler is dropped once per routine failure or eviction, which the
    // lines before it already limit.
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| drop(handler))) {
        let message = panic_message(&*panic);
        tracing::error!(%peer, %conn, panic = message, "datagram handler (drop) panicked");
        forget_payload(panic);
    }
}

/// A peer's handler while no routine holds it. It is released with the peer's name where
/// the peer is known ([`release`](Self::release)); a handler still inside when the slot is
/// dropped is dropped contained too.
pub(crate) struct HandlerSlot<H>(Option<H>);

impl<H> Default for HandlerSlot<H> {
    fn default() -> Self {
        Self(None)
    }
}

impl<H> HandlerSlot<H> {
    pub(crate) fn take(&mut self) -> Option<H> {
        self.0.take()
    }

    /// Keeps `handler`; one already kept (never, through the machines) is dropped contained.
    pub(crate) fn put(&mut self, handler: H) {
        drop(HandlerSlot(self.0.replace(handler)));
    }

    pub(crate) fn insert(&mut self, handler: H) -> &mut H {
        self.0.insert(handler)
    }

    pub(crate) fn get_mut(&mut self) -> Option<&mut H> {
        self.0.as_mut()
    }

    /// Drops the handler, if any, logging a panic in its `Drop` with the peer's name.
    pub(crate) fn release(&mut self, peer: &dyn fmt::Display, conn: ConnId) {
        if let Some(handler) = self.0.take() {
            drop_contained(peer, conn, handler);
        }
    }
}

impl<H> Drop for HandlerSlot<H> {
    fn drop(&mut self) {
        if let Some(handler) = self.0.take()
            && let Err(panic) = catch_unwind(AssertUnwindSafe(|| drop(handler)))
        {
            let message = panic_message(&*panic);
            tracing::error!(panic = message, "datagram handler (drop) panicked");
            forget_payload(panic);
        }
    }
}
