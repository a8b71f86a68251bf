//! Observation: [`record`] wraps a service so that every handler call is noted, and
//! [`Logs`] keeps the `tracing` events a simulation emits.

use std::fmt::{self, Debug, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};

use crate::ConnId;
use crate::datagram::{AsyncDatagramHandler, DatagramPeer};
use crate::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Received, Service,
    StreamContext, StreamHandler,
};
use crate::stream::{AsyncStreamHandler, StreamPeer};

/// One handler call, as a [`record`]ed service notes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `on_connection`.
    Connection,
    /// `handle` with a request (its `Debug` text).
    Request(String),
    /// `handle` with a receive timeout.
    Timeout,
    /// `handle` with a parse error (its text).
    ParseError(String),
    /// An async handler's `handle` call began.
    Handle,
    /// `on_disconnection`.
    Disconnection,
}

/// The calls a [`record`]ed service's handlers got, by connection (or datagram peer), in
/// order. Clones share the same record.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<(ConnId, Call)>>>);

impl Calls {
    fn lock(&self) -> MutexGuard<'_, Vec<(ConnId, Call)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, conn: ConnId, call: Call) {
        self.lock().push((conn, call));
    }

    /// Every call so far.
    pub fn all(&self) -> Vec<(ConnId, Call)> {
        self.lock().clone()
    }

    /// The calls of connection `conn` so far.
    pub fn of(&self, conn: ConnId) -> Vec<Call> {
        self.lock()
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, call)| call.clone())
            .collect()
    }
}

/// `service` with every handler call noted in the returned [`Calls`].
///
/// ```
/// use easynet_core::ConnId;
/// use easynet_core::handler::{ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler};
/// use easynet_core::protocol::Stream;
/// use easynet_core::sim::{Call, StreamSim, record};
///
/// struct Echo;
/// impl StreamHandler for Echo {
///     type Request = String;
///     type Response = String;
///     fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
///         if let Received::Request(line) = r { cx.send(&line)?; }
///         Ok(Next::recv())
///     }
/// }
///
/// let (service, calls) = record(|_: &ConnInfo| Echo);
/// let mut sim = StreamSim::builder_with_service(Stream::lines(), service).build();
/// let client = sim.connect();
/// sim.send_bytes(client, b"hi\n\xff\n");
/// sim.close(client);
/// assert_eq!(calls.of(ConnId(1)), [
///     Call::Connection,
///     Call::Request("\"hi\"".into()),
///     Call::ParseError("invalid UTF-8: invalid utf-8 sequence of 1 bytes from index 0".into()),
///     Call::Disconnection,
/// ]);
/// ```
pub fn record<S: Service>(service: S) -> (Recorded<S>, Calls) {
    let calls = Calls::default();
    let recorded = Recorded {
        inner: service,
        calls: calls.clone(),
    };
    (recorded, calls)
}

/// A service whose handlers note their calls; see [`record`].
#[derive(Debug)]
pub struct Recorded<S> {
    inner: S,
    calls: Calls,
}

impl<S: Service> Service for Recorded<S> {
    type Handler = RecordedHandler<S::Handler>;

    fn on_start(&self) -> Result<(), HandlerError> {
        self.inner.on_start()
    }

    fn new_handler(&self, info: &ConnInfo) -> Self::Handler {
        RecordedHandler {
            inner: self.inner.new_handler(info),
            conn: info.id,
            calls: self.calls.clone(),
        }
    }

    fn on_stop(&self) {
        self.inner.on_stop();
    }
}

/// A handler of a [`Recorded`] service.
#[derive(Debug)]
pub struct RecordedHandler<H> {
    inner: H,
    conn: ConnId,
    calls: Calls,
}

impl<H> RecordedHandler<H> {
    fn note<T: Debug>(&self, received: &Received<T>) {
        let call = match received {
            Received::Request(r) => Call::Request(format!("{r:?}")),
            Received::Timeout => Call::Timeout,
            Received::ParseError(e) => Call::ParseError(e.to_string()),
        };
        self.calls.push(self.conn, call);
    }
}

impl<H: StreamHandler> StreamHandler for RecordedHandler<H>
where
    H::Request: Debug,
{
    type Request = H::Request;
    type Response = H::Response;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, H::Response>) -> HandlerResult {
        self.calls.push(self.conn, Call::Connection);
        self.inner.on_connection(cx)
    }

    fn handle(
        &mut self,
        cx: &mut StreamContext<'_, H::Response>,
        received: Received<H::Request>,
    ) -> HandlerResult {
        self.note(&received);
        self.inner.handle(cx, received)
    }

    fn on_disconnection(&mut self, cx: &mut StreamContext<'_, H::Response>) {
        self.calls.push(self.conn, Call::Disconnection);
        self.inner.on_disconnection(cx);
    }
}

impl<H: DatagramHandler> DatagramHandler for RecordedHandler<H>
where
    H::Request: Debug,
{
    type Request = H::Request;
    type Response = H::Response;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, H::Response>,
        received: Received<H::Request>,
    ) -> HandlerResult {
        self.note(&received);
        self.inner.handle(cx, received)
    }
}

impl<H: AsyncStreamHandler> AsyncStreamHandler for RecordedHandler<H> {
    type Request = H::Request;
    type Response = H::Response;

    async fn on_connection(
        &mut self,
        client: &mut StreamPeer<H::Request, H::Response>,
    ) -> Result<(), HandlerError> {
        self.calls.push(self.conn, Call::Connection);
        self.inner.on_connection(client).await
    }

    async fn handle(
        &mut self,
        client: &mut StreamPeer<H::Request, H::Response>,
    ) -> Result<(), HandlerError> {
        self.calls.push(self.conn, Call::Handle);
        self.inner.handle(client).await
    }

    async fn on_disconnection(&mut self, client: &mut StreamPeer<H::Request, H::Response>) {
        self.calls.push(self.conn, Call::Disconnection);
        self.inner.on_disconnection(client).await;
    }
}

impl<H: AsyncDatagramHandler> AsyncDatagramHandler for RecordedHandler<H> {
    type Request = H::Request;
    type Response = H::Response;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<H::Request, H::Response>,
    ) -> Result<(), HandlerError> {
        self.calls.push(self.conn, Call::Handle);
        self.inner.handle(client).await
    }
}

/// One `tracing` event a simulation emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Its level.
    pub level: Level,
    /// Its fields as `name=value`, the message first.
    pub text: String,
}

/// The `tracing` events emitted while the simulator ran (its own calls only, on this
/// thread), when [`StreamSimBuilder::capture_logs`](super::StreamSimBuilder::capture_logs)
/// asked for them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<LogEvent>>>);

impl Logs {
    pub(crate) fn events(&self) -> Vec<LogEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{}={:?}", field.name(), value);
    }
}

impl Subscriber for Logs {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let log = LogEvent {
            level: *event.metadata().level(),
            text: fields.0,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(log);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
