//! The key-value server's rules, property-tested in the simulator.

use easynet_core::protocol::Stream;
use easynet_core::sim::{ClientState, StreamSim, strategy};
use proptest::prelude::*;
use sim_downstream::{IDLE, Kv};

const SCRIPT: &[u8] = b"SET a 1\nGET a\nbad\nDEL a\nGET a\n";
const REPLIES: [&str; 5] = ["OK", "1", "ERROR", "OK", "NOT FOUND"];

proptest! {
    #[test]
    fn any_chunking_and_faults_give_the_same_replies(faults in strategy::faults(), seed in strategy::seed(), cuts in strategy::chunking(16)) {
        let mut sim = StreamSim::builder_with_service(Stream::lines(), Kv::default()).faults(faults).seed(seed).build();
        let c = sim.connect();
        for piece in strategy::split(SCRIPT, &cuts) {
            sim.send_bytes(c, piece);
        }
        prop_assert_eq!(sim.replies(c), REPLIES);
    }

    #[test]
    fn shutdown_answers_every_request_read(n in 1..200usize, faults in strategy::faults(), seed in strategy::seed()) {
        let mut sim = StreamSim::builder_with_service(Stream::lines(), Kv::default()).faults(faults).seed(seed).build();
        let c = sim.connect();
        for i in 0..n {
            sim.send(c, &format!("SET k{i} {i}"));
        }
        sim.shutdown();
        prop_assert_eq!(sim.replies(c).len(), n);
        prop_assert_eq!(sim.state(c), ClientState::EndOfStream);
    }

    #[test]
    fn an_idle_connection_is_closed_after_exactly_the_idle_timeout(quiet_ms in 0..30_000u64) {
        let mut sim = StreamSim::builder_with_service(Stream::lines(), Kv::default()).build();
        let c = sim.connect();
        sim.advance(std::time::Duration::from_millis(quiet_ms));
        sim.send(c, &"GET x".to_owned());
        sim.advance(IDLE - std::time::Duration::from_millis(1));
        prop_assert_eq!(sim.state(c), ClientState::Open);
        sim.advance(std::time::Duration::from_millis(1));
        prop_assert_eq!(sim.state(c), ClientState::EndOfStream);
    }
}
