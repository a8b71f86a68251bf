//! A socket-free harness for stream sessions: a scripted peer on one side, a
//! [`Session`] on the other, a virtual clock, and a handler that records what it was told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet_core::ConnId;
use easynet_core::handler::{
    ConnInfo, HandlerResult, Next, Received, SendError, StreamContext, StreamHandler,
};
use easynet_core::protocol::{ParseError, Stream, StreamServerProtocol};
use easynet_core::stream::{CloseHow, Session, StreamConfig};

use super::clock::Clock;

/// What a [`Scripted`] handler saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Connected,
    Request(String),
    Timeout,
    /// The parse error's Display text.
    ParseError(String),
    /// `on_disconnection`, with `is_closing()` and whether a send there was refused.
    Disconnected {
        closing: bool,
        send_refused: bool,
    },
}

/// The decision a script takes for each call.
pub type Script = Box<dyn FnMut(&mut StreamContext<'_, String>, &Seen) -> HandlerResult + Send>;

/// A line handler that records each call in a shared log and answers by its script.
pub struct Scripted {
    pub log: Arc<Mutex<Vec<Seen>>>,
    pub script: Script,
}

impl Scripted {
    pub fn new(
        script: impl FnMut(&mut StreamContext<'_, String>, &Seen) -> HandlerResult + Send + 'static,
    ) -> (Self, Arc<Mutex<Vec<Seen>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = Self {
            log: log.clone(),
            script: Box::new(script),
        };
        (handler, log)
    }

    /// Echoes every request, answers timeouts with "timeout" and parse errors with "error".
    pub fn echo() -> (Self, Arc<Mutex<Vec<Seen>>>) {
        Self::new(|cx, seen| {
            match seen {
                Seen::Request(r) => cx.send(r)?,
                Seen::Timeout => cx.send(&"timeout".to_owned())?,
                Seen::ParseError(_) => cx.send(&"error".to_owned())?,
                _ => {}
            }
            Ok(Next::recv())
        })
    }

    fn record(&mut self, cx: &mut StreamContext<'_, String>, seen: Seen) -> HandlerResult {
        self.log.lock().unwrap().push(seen.clone());
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
        let send_refused = matches!(cx.send(&"bye".to_owned()), Err(SendError::Closed));
        self.log.lock().unwrap().push(Seen::Disconnected {
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

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn info(id: u64) -> ConnInfo {
    ConnInfo::new(ConnId(id), addr(40000 + id as u16), addr(9000))
}

/// A session plus the peer's view: everything written to it and how it was closed.
pub struct Sim<H, P>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    pub clock: Clock,
    pub session: Session<H, P>,
    pub written: Vec<u8>,
    pub closed: Option<CloseHow>,
    /// How many bytes the peer accepts per write; `None` means all.
    pub write_window: Option<usize>,
}

pub type LineSim = Sim<
    Scripted,
    Stream<easynet_core::protocol::Lines, easynet_core::protocol::Utf8, String, String>,
>;

impl LineSim {
    pub fn lines(handler: Scripted) -> Self {
        Self::with_config(handler, Stream::lines(), StreamConfig::default())
    }
}

impl<H, P> Sim<H, P>
where
    H: StreamHandler,
    P: StreamServerProtocol<Request = H::Request, Response = H::Response>,
{
    pub fn with_config(handler: H, protocol: P, config: StreamConfig) -> Self {
        let clock = Clock::new();
        let session = Session::new(clock.now(), handler, Arc::new(protocol), config, info(1));
        let mut sim = Self {
            clock,
            session,
            written: Vec::new(),
            closed: None,
            write_window: None,
        };
        sim.pump();
        sim
    }

    /// Does what a driver does after each input: write, then check for close.
    pub fn pump(&mut self) {
        loop {
            let pending = self.session.transmit();
            if pending.is_empty() {
                break;
            }
            let n = self
                .write_window
                .map_or(pending.len(), |w| w.min(pending.len()));
            if n == 0 {
                break;
            }
            self.written.extend_from_slice(&pending[..n]);
            self.session.advance(n);
            if self.write_window.is_some() {
                break;
            }
        }
        if self.closed.is_none() {
            self.closed = self.session.poll_close();
        }
    }

    pub fn read(&mut self, data: &[u8]) {
        assert!(self.session.wants_read(), "driver would not read now");
        self.session.handle_read(self.clock.now(), data);
        self.pump();
    }

    pub fn eof(&mut self) {
        self.session.handle_eof(self.clock.now());
        self.pump();
    }

    /// Moves the virtual clock, firing the session's timer when it is due.
    pub fn advance(&mut self, d: Duration) {
        let target = self.clock.now() + d;
        while let Some(t) = self.session.poll_timeout() {
            if t > target {
                break;
            }
            self.clock
                .advance(t.saturating_duration_since(self.clock.now()));
            self.session.handle_timeout(self.clock.now());
            self.pump();
            if self.session.poll_timeout() == Some(t) {
                break; // not consumed (e.g. waiting on writes); avoid spinning
            }
        }
        self.clock
            .advance(target.saturating_duration_since(self.clock.now()));
        self.session.handle_timeout(self.clock.now());
        self.pump();
    }

    pub fn take_written(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.written)).unwrap()
    }
}
