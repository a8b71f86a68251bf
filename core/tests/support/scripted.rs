//! A recording line handler for the stream tests: each connection's handler records what
//! it was told ([`Seen`]) and answers by one script the test writes. A handler, not a
//! harness: the tests run it in `easynet_core::sim::StreamSim` (or in a bare `Session`
//! where they check the session's own surface).

use std::sync::{Arc, Mutex};

use easynet_core::handler::{
    ConnInfo, HandlerResult, Received, SendError, Service, StreamContext, StreamHandler,
};
use easynet_core::protocol::ParseError;

/// What a [`Scripted`] handler saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Connected,
    Request(String),
    Timeout,
    /// The parse error's short name ([`parse_error_kind`]).
    ParseError(String),
    /// `on_disconnection`, with `is_closing()` and whether a send there was refused.
    Disconnected {
        closing: bool,
        send_refused: bool,
    },
}

/// The decision a script takes for each call.
type ScriptFn = dyn Fn(&mut StreamContext<'_, String>, &Seen) -> HandlerResult + Send + Sync;

/// What every connection's handler saw, by connection in accept order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Vec<Seen>>>>);

impl Log {
    /// What the handler of the `n`-th connection (0 first) saw; empty before it exists.
    pub fn of(&self, n: usize) -> Vec<Seen> {
        self.0.lock().unwrap().get(n).cloned().unwrap_or_default()
    }

    /// What the first connection's handler saw.
    pub fn seen(&self) -> Vec<Seen> {
        self.of(0)
    }
}

/// The service: one [`Scripted`] handler per connection, all answering by one script and
/// recording into one [`Log`].
pub struct Script {
    log: Log,
    script: Arc<ScriptFn>,
}

impl Script {
    pub fn new(
        script: impl Fn(&mut StreamContext<'_, String>, &Seen) -> HandlerResult + Send + Sync + 'static,
    ) -> (Self, Log) {
        let log = Log::default();
        let service = Self {
            log: log.clone(),
            script: Arc::new(script),
        };
        (service, log)
    }

    /// Echoes every request, answers timeouts with "timeout" and parse errors with "error".
    pub fn echo() -> (Self, Log) {
        Self::new(|cx, seen| {
            match seen {
                Seen::Request(r) => cx.send(r)?,
                Seen::Timeout => cx.send("timeout".to_owned())?,
                Seen::ParseError(_) => cx.send("error".to_owned())?,
                _ => {}
            }
            Ok(easynet_core::handler::Next::recv())
        })
    }
}

impl Service for Script {
    type Handler = Scripted;

    fn new_handler(&self, _: &ConnInfo) -> Scripted {
        let mut logs = self.log.0.lock().unwrap();
        logs.push(Vec::new());
        Scripted {
            log: self.log.clone(),
            index: logs.len() - 1,
            script: self.script.clone(),
        }
    }
}

/// A line handler that records each call in its connection's log and answers by the script.
pub struct Scripted {
    log: Log,
    index: usize,
    script: Arc<ScriptFn>,
}

impl Scripted {
    fn push(&self, seen: Seen) {
        self.log.0.lock().unwrap()[self.index].push(seen);
    }

    fn record(&mut self, cx: &mut StreamContext<'_, String>, seen: Seen) -> HandlerResult {
        self.push(seen.clone());
        (self.script)(cx, &seen)
    }
}

impl StreamHandler for Scripted {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, cx: &mut StreamContext<'_, String>) -> HandlerResult {
        self.record(cx, Seen::Connected)
    }

    fn handle(
        &mut self,
        cx: &mut StreamContext<'_, String>,
        received: Received<String>,
    ) -> HandlerResult {
        let seen = match received {
            Received::Request(r) => Seen::Request(r),
            Received::Timeout => Seen::Timeout,
            Received::ParseError(e) => Seen::ParseError(parse_error_kind(&e)),
        };
        self.record(cx, seen)
    }

    fn on_disconnection(&mut self, cx: &mut StreamContext<'_, String>) {
        let closing = cx.is_closing();
        let send_refused = matches!(cx.send("bye".to_owned()), Err(SendError::Closed));
        self.push(Seen::Disconnected {
            closing,
            send_refused,
        });
    }
}

/// A short, stable name of a parse error for assertions.
pub fn parse_error_kind(e: &ParseError) -> String {
    match e {
        ParseError::LineTooLong { .. } => "line too long".into(),
        ParseError::FrameTooLarge { .. } => "frame too large".into(),
        ParseError::Deserialize(_) => "deserialize".into(),
        other => format!("{other}"),
    }
}
