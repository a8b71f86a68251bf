//! A small stateful protocol served with easynet, as an application would write it: a
//! key-value store over lines (`SET key value`, `GET key`, `DEL key`), sharing one map
//! between connections; a connection idle for 30 s is closed. Its tests
//! (`tests/kv.rs`) check its rules in the simulator, with no socket.
//!
//! ```
//! use easynet_core::protocol::Stream;
//! use easynet_core::sim::{ClientState, StreamSim};
//! use sim_downstream::Kv;
//!
//! let mut sim = StreamSim::builder_with_service(Stream::lines(), Kv::default()).build();
//! let (a, b) = (sim.connect(), sim.connect());
//! sim.send(a, &"SET colour blue".to_owned());
//! sim.send(b, &"GET colour".to_owned());
//! assert_eq!(sim.replies(a), ["OK"]);
//! assert_eq!(sim.replies(b), ["blue"]);
//! sim.advance(std::time::Duration::from_secs(30));
//! assert_eq!(sim.state(a), ClientState::EndOfStream);
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet_core::handler::{
    ConnInfo, HandlerResult, Next, Received, Service, StreamContext, StreamHandler,
};

/// How long a connection may stay silent.
pub const IDLE: Duration = Duration::from_secs(30);

/// The service: one map shared by every connection.
#[derive(Default)]
pub struct Kv {
    map: Arc<Mutex<HashMap<String, String>>>,
}

impl Service for Kv {
    type Handler = KvHandler;

    fn new_handler(&self, _: &ConnInfo) -> KvHandler {
        KvHandler {
            map: self.map.clone(),
        }
    }
}

/// One connection's handler.
pub struct KvHandler {
    map: Arc<Mutex<HashMap<String, String>>>,
}

impl KvHandler {
    fn answer(&self, line: &str) -> String {
        let mut map = self.map.lock().unwrap();
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                map.insert(k.to_owned(), v.to_owned());
                "OK".to_owned()
            }
            (Some("GET"), Some(k), None) => map.get(k).cloned().unwrap_or("NOT FOUND".to_owned()),
            (Some("DEL"), Some(k), None) => match map.remove(k) {
                Some(_) => "OK".to_owned(),
                None => "NOT FOUND".to_owned(),
            },
            _ => "ERROR".to_owned(),
        }
    }
}

impl StreamHandler for KvHandler {
    type Request = String;
    type Response = String;

    fn on_connection(&mut self, _: &mut StreamContext<'_, String>) -> HandlerResult {
        Ok(Next::recv_timeout(IDLE))
    }

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(line) => cx.send(self.answer(&line))?,
            Received::ParseError(_) => cx.send("ERROR".to_owned())?,
            Received::Timeout => return Ok(Next::Close),
        }
        Ok(Next::recv_timeout(IDLE))
    }
}
