//! What the core logs for stream connections, by the one rule every handler kind follows:
//! each connection's start and end; a closed send returned by a handler is one WARN;
//! `RecvError::Closed` propagated by an async handler is a normal end; anything else one
//! ERROR.

mod support;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use easynet_core::ConnId;
use easynet_core::handler::{
    ConnInfo, HandlerError, HandlerResult, Next, Received, SendError, StreamContext, StreamHandler,
};
use easynet_core::protocol::Stream;
use easynet_core::stream::{
    Action, AsyncSession, AsyncStreamHandler, Connection, Driven, RecvError, Session, StreamConfig,
    StreamPeer, Want,
};
use support::logs::Capture;
use tracing::Level;

fn levels_of(capture: &Capture) -> Vec<Level> {
    capture.logs().iter().map(|l| l.level).collect()
}

fn texts(capture: &Capture) -> Vec<String> {
    capture.logs().into_iter().map(|l| l.text).collect()
}

fn conn(
    log_connections: bool,
) -> Connection<
    Stream<easynet_core::protocol::Lines, easynet_core::protocol::Utf8, String, String>,
    easynet_core::stream::ServerRole,
> {
    let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    Connection::new(
        Arc::new(Stream::lines()),
        StreamConfig::default().with_log_connections(log_connections),
        ConnInfo::new(ConnId(7), addr, addr),
    )
}

/// Drives `d` to the end: the peer sends `input`, then EOF.
fn run_to_close(d: &mut impl Driven, input: &[u8]) {
    let now = Instant::now();
    d.handle_read(now, input);
    d.handle_eof(now);
    let mut out = Vec::new();
    loop {
        match d.poll_action(now) {
            Action::Io(Want { write: true, .. }) => {
                d.write_to(&mut out).unwrap();
            }
            Action::Io(Want { resume: true, .. }) => d.resume(now),
            Action::QueryUnsent => d.handle_unsent(now, Some(0)),
            Action::Close(_) => return,
            Action::Io(_) | Action::ShutdownWrite => {}
            _ => return,
        }
    }
}

/// Returns the error its request names.
struct Fails;

#[derive(Debug)]
struct BadDisplay;

impl fmt::Display for BadDisplay {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("Display bug")
    }
}

impl std::error::Error for BadDisplay {}

impl StreamHandler for Fails {
    type Request = String;
    type Response = String;

    fn handle(&mut self, _: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "closed" => Err(SendError::Closed.into()),
            Received::Request(l) if l == "display" => Err(BadDisplay.into()),
            Received::Request(l) => Err(l.into()),
            _ => Ok(Next::recv()),
        }
    }
}

#[test]
fn connections_are_logged_once_at_start_and_end_at_the_chosen_level() {
    for (on, level) in [(true, Level::INFO), (false, Level::DEBUG)] {
        let capture = Capture::default();
        tracing::subscriber::with_default(capture.clone(), || {
            struct Quiet;
            impl StreamHandler for Quiet {
                type Request = String;
                type Response = String;
                fn handle(
                    &mut self,
                    _: &mut StreamContext<'_, String>,
                    _: Received<String>,
                ) -> HandlerResult {
                    Ok(Next::recv())
                }
            }
            let mut s = Session::from_connection(Instant::now(), Quiet, conn(on));
            run_to_close(&mut s, b"x\n");
        });
        assert_eq!(levels_of(&capture), [level, level], "{:?}", texts(&capture));
        let texts = texts(&capture);
        assert!(texts[0].contains("Accepted new connection"), "{texts:?}");
        assert!(texts[1].contains("disconnected"), "{texts:?}");
    }
}

#[test]
fn a_closed_send_returned_by_a_portable_handler_is_one_warn() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let mut s = Session::from_connection(Instant::now(), Fails, conn(false));
        run_to_close(&mut s, b"closed\n");
    });
    let levels = levels_of(&capture);
    assert_eq!(
        levels.iter().filter(|l| **l == Level::WARN).count(),
        1,
        "{:?}",
        texts(&capture)
    );
    assert!(!levels.contains(&Level::ERROR), "{:?}", texts(&capture));
}

#[test]
fn other_handler_errors_are_one_error_even_when_their_display_panics() {
    for input in [&b"boom\n"[..], b"display\n"] {
        let capture = Capture::default();
        tracing::subscriber::with_default(capture.clone(), || {
            let mut s = Session::from_connection(Instant::now(), Fails, conn(false));
            run_to_close(&mut s, input);
        });
        let errors: Vec<_> = capture
            .logs()
            .into_iter()
            .filter(|l| l.level == Level::ERROR)
            .map(|l| l.text)
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}

/// Async: "closed" returns a closed send, anything else waits for the next request with
/// `?`, which gives `RecvError::Closed` at the peer's EOF.
struct AsyncFails;

impl AsyncStreamHandler for AsyncFails {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        if line == "closed" {
            return Err(SendError::Closed.into());
        }
        Ok(())
    }
}

#[test]
fn async_handlers_follow_the_same_rule() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let mut s = AsyncSession::new(Instant::now(), AsyncFails, conn(false));
        run_to_close(&mut s, b"closed\n");
    });
    let levels = levels_of(&capture);
    assert_eq!(
        levels.iter().filter(|l| **l == Level::WARN).count(),
        1,
        "{:?}",
        texts(&capture)
    );
    assert!(!levels.contains(&Level::ERROR), "{:?}", texts(&capture));

    // `RecvError::Closed` propagated with `?` after the peer left: not logged at all.
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let mut s = AsyncSession::new(Instant::now(), AsyncFails, conn(false));
        run_to_close(&mut s, b"fine\n");
    });
    let levels = levels_of(&capture);
    assert!(
        !levels.contains(&Level::ERROR) && !levels.contains(&Level::WARN),
        "{:?}",
        texts(&capture)
    );
    let _ = RecvError::Closed;
}
