//! The README's `Upper` handler, and an async handler, in the simulator: replies, timeouts
//! and shutdown, without a socket or a runtime.

use std::time::Duration;

use easynet_core::handler::{
    ConnInfo, HandlerError, HandlerResult, Next, Received, StreamContext, StreamHandler,
};
use easynet_core::protocol::Stream;
use easynet_core::sim::{ClientState, StreamSim};
use easynet_core::stream::{AsyncStreamHandler, StreamPeer};

struct Upper;

impl StreamHandler for Upper {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(line) => cx.send(line.to_uppercase())?,
            Received::ParseError(e) => cx.send(format!("error: {e}"))?,
            Received::Timeout => return Ok(Next::Close),
        }
        Ok(Next::recv_timeout(Duration::from_secs(60)))
    }
}

struct AsyncUpper;

impl AsyncStreamHandler for AsyncUpper {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv_timeout(Duration::from_secs(60)).await?;
        client.send(line.to_uppercase()).await?;
        Ok(())
    }
}

#[test]
fn the_readme_handler() {
    let mut sim = StreamSim::new(Stream::lines(), |_: &ConnInfo| Upper);
    let c = sim.connect();
    sim.send(c, &"hello".to_owned());
    assert_eq!(sim.replies(c), ["HELLO"]);
    sim.advance(Duration::from_secs(60));
    assert_eq!(
        sim.state(c),
        ClientState::EndOfStream,
        "closed after 60 s of silence"
    );
    let d = sim.connect();
    sim.send(d, &"bye".to_owned());
    sim.shutdown();
    assert_eq!(sim.replies(d), ["BYE"]);
    assert!(sim.is_stopped());
}

#[test]
fn an_async_handler() {
    let mut sim = StreamSim::new_async(Stream::lines(), |_: &ConnInfo| AsyncUpper);
    let c = sim.connect();
    sim.send(c, &"hello".to_owned());
    assert_eq!(sim.replies(c), ["HELLO"]);
    sim.advance(Duration::from_secs(60)); // recv_timeout's error ends the connection
    assert_eq!(sim.state(c), ClientState::Reset);
    sim.shutdown();
    assert!(sim.is_stopped());
}
