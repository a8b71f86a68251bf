//! Server limits in the core, without sockets: the idle timeout on the simulator's virtual
//! clock (portable and async handlers) and `max_connections` in the server machine.

#![cfg(feature = "sim")]

#[cfg(feature = "tls")]
mod support;

use std::time::Duration;

use easynet_core::handler::{
    ConnInfo, HandlerError, HandlerResult, Next, Received, StreamContext, StreamHandler,
};
use easynet_core::lifecycle::Activation;
use easynet_core::protocol::Stream;
use easynet_core::server::{Event, Server};
use easynet_core::sim::{ClientState, StreamSim};
use easynet_core::stream::{AsyncStreamHandler, StreamConfig, StreamPeer};

const IDLE: Duration = Duration::from_secs(10);

/// Echoes lines; no receive timeout of its own, so only the server's idle timeout can end a
/// silent connection.
struct Echo;

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        if let Received::Request(l) = r {
            cx.send(&l)?;
        }
        Ok(Next::recv())
    }
}

fn idle_config() -> StreamConfig {
    StreamConfig::default().with_idle_timeout(Some(IDLE))
}

#[test]
fn a_silent_connection_is_closed_gracefully_at_the_idle_timeout_and_no_earlier() {
    let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| Echo)
        .config(idle_config())
        .build();
    let silent = sim.connect();
    assert_eq!(sim.advance_to_next_deadline(), Some(IDLE));
    assert_eq!(sim.state(silent), ClientState::EndOfStream);
}

#[test]
fn each_byte_restarts_the_idle_timeout_and_talkers_are_kept() {
    let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| Echo)
        .config(idle_config())
        .build();
    let trickle = sim.connect();
    let talker = sim.connect();
    // A byte every 6 s keeps the trickler; a request every 6 s keeps the talker.
    for i in 0..5 {
        sim.advance(Duration::from_secs(6));
        sim.send_bytes(trickle, b"x");
        sim.send(talker, &format!("req{i}"));
        assert_eq!(sim.replies(talker), [format!("req{i}")]);
    }
    assert_eq!(sim.state(trickle), ClientState::Open);
    // Then silence: both go exactly 10 s after their last byte.
    sim.advance(Duration::from_millis(9_999));
    assert_eq!(sim.state(trickle), ClientState::Open);
    assert_eq!(sim.state(talker), ClientState::Open);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.state(trickle), ClientState::EndOfStream);
    assert_eq!(sim.state(talker), ClientState::EndOfStream);
}

#[test]
fn requests_read_before_the_idle_timeout_are_answered_before_the_close() {
    let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| Echo)
        .config(idle_config())
        .build();
    let c = sim.connect();
    sim.send_bytes(c, b"whole\npart");
    sim.advance(IDLE);
    assert_eq!(sim.replies(c), ["whole"]);
    assert_eq!(sim.state(c), ClientState::EndOfStream);
    assert_eq!(sim.received_bytes(c), b"whole\n");
}

/// Waits on something other than its client for a long time: the idle timeout still ends
/// its connection, with its receive ending `Closed`.
struct Busy;

impl AsyncStreamHandler for Busy {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        client.send(&line).await?;
        Ok(())
    }
}

#[test]
fn the_idle_timeout_ends_an_async_handler_waiting_without_a_deadline() {
    let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| Busy)
        .config(idle_config())
        .build_async();
    let c = sim.connect();
    sim.send(c, &"one".to_owned());
    assert_eq!(sim.replies(c), ["one"]);
    sim.advance(IDLE - Duration::from_millis(1));
    assert_eq!(sim.state(c), ClientState::Open);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.state(c), ClientState::EndOfStream);
}

#[test]
fn no_idle_timeout_by_default() {
    assert_eq!(StreamConfig::default().idle_timeout, None);
    let mut sim = StreamSim::new(Stream::lines(), |_: &ConnInfo| Echo);
    let c = sim.connect();
    assert_eq!(sim.advance_to_next_deadline(), None);
    sim.advance(Duration::from_secs(24 * 3600));
    assert_eq!(sim.state(c), ClientState::Open);
}

fn serving(max: Option<usize>) -> Server {
    let mut server = Server::new(Duration::from_secs(30)).with_max_connections(max);
    assert!(matches!(server.begin_run(), Ok(Activation::Bind)));
    server.activated();
    server.initialized(true);
    server.serving();
    server
}

#[test]
fn max_connections_stops_accepting_at_the_limit_and_says_when_there_is_room() {
    let mut server = serving(Some(2));
    assert_eq!(server.max_connections(), Some(2));
    let a = server.accepted();
    assert!(server.may_accept());
    let b = server.accepted();
    assert!(!server.may_accept(), "full");
    assert!(
        server.closed(a),
        "room again: the paused accept loops go on"
    );
    assert!(server.may_accept());
    let c = server.accepted();
    assert!(!server.may_accept());
    // A close below the limit, or of an unknown id, is no news.
    assert!(server.closed(b));
    assert!(!server.closed(c), "already below the limit");
    assert!(!server.closed(b), "unknown id");
    assert_eq!(server.connections(), 0);
}

#[test]
fn no_accepting_outside_a_serving_run_or_after_a_shutdown_whatever_the_room() {
    let idle = Server::new(Duration::from_secs(1));
    assert!(!idle.may_accept(), "no run");
    let mut server = serving(None);
    for _ in 0..10_000 {
        server.accepted();
    }
    assert!(server.may_accept(), "no limit by default");
    let mut limited = serving(Some(1));
    let id = limited.accepted();
    limited.shutdown(std::time::Instant::now());
    assert_eq!(limited.poll_event(), Some(Event::StopAccepting));
    assert!(!limited.closed(id), "shutting down: no accepting again");
    assert!(!limited.may_accept());
}

#[cfg(feature = "tls")]
#[test]
fn under_tls_a_silent_handshake_is_dropped_and_a_silent_session_closed_with_close_notify() {
    let id = support::certs::Identity::localhost();
    let mut sim = StreamSim::builder(Stream::lines(), |_: &ConnInfo| Echo)
        .config(idle_config()) // 10 s, well before the 60 s handshake deadline
        .tls(
            id.server_config(),
            id.client_config(),
            support::certs::localhost(),
        )
        .build();
    let silent = sim.connect_raw(); // never says hello
    let client = sim.connect();
    sim.send(client, &"hello".to_owned());
    assert_eq!(sim.replies(client), ["hello"]);
    sim.advance(IDLE);
    assert_eq!(sim.state(silent), ClientState::Reset, "no handler: dropped");
    assert_eq!(sim.state(client), ClientState::EndOfStream);
}
