//! Random event sequences on a stream connection, in the public simulator: no panic, the
//! handler rules hold, and a shutdown followed by its deadline always reaches a closed
//! socket.

#![cfg(feature = "sim")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet_core::handler::Next;
use easynet_core::protocol::Stream;
use easynet_core::sim::{ClientState, Faults, StreamSim, strategy};
use proptest::prelude::*;
use support::scripted::{Script, Seen};

#[derive(Debug, Clone)]
enum Op {
    /// The client sends these bytes.
    Read(Vec<u8>),
    /// The client shuts down its write side.
    Eof,
    /// The client resets the connection.
    IoError,
    Advance(u64),
    /// A graceful shutdown of the server begins.
    Shutdown,
    /// How the client's socket takes the server's answers: `None` whole, `Some(0)` not
    /// at all (the client stops reading), `Some(n)` reads and writes of 1 to `n` bytes
    /// through socket buffers of `n`.
    Window(Option<usize>),
}

#[derive(Debug, Clone, Copy)]
enum Decision {
    Recv,
    RecvTimeout(u64),
    Close,
    Fail,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'\n'), Just(0xff), Just(b'z')], 0..12).prop_map(Op::Read),
        1 => Just(Op::Eof),
        1 => Just(Op::IoError),
        3 => (0u64..4000).prop_map(Op::Advance),
        1 => Just(Op::Shutdown),
        1 => proptest::option::of(0usize..8).prop_map(Op::Window),
    ]
}

fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        6 => Just(Decision::Recv),
        3 => (0u64..2000).prop_map(Decision::RecvTimeout),
        1 => Just(Decision::Close),
        1 => Just(Decision::Fail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_keep_the_handler_rules(
        ops in proptest::collection::vec(op(), 0..40),
        decisions in proptest::collection::vec(decision(), 1..16),
        grace in 0u64..5000,
        seed in strategy::seed(),
    ) {
        let plan = Arc::new(Mutex::new((decisions, 0usize)));
        let failed_on_connection = Arc::new(Mutex::new(false));
        let (p, f) = (plan.clone(), failed_on_connection.clone());
        let (script, log) = Script::new(move |cx, seen| {
            let mut plan = p.lock().unwrap();
            let d = plan.0[plan.1 % plan.0.len()];
            plan.1 += 1;
            if let Seen::Request(r) = seen { let _ = cx.send(r); }
            match d {
                Decision::Recv => Ok(Next::recv()),
                // Zero timeouts answering every timeout would be a busy loop on any
                // driver (the simulator refuses to settle): a timeout gets at least 1 ms.
                Decision::RecvTimeout(ms) => {
                    let ms = if *seen == Seen::Timeout { ms.max(1) } else { ms };
                    Ok(Next::recv_timeout(Duration::from_millis(ms)))
                }
                Decision::Close => Ok(Next::Close),
                Decision::Fail => {
                    if *seen == Seen::Connected { *f.lock().unwrap() = true; }
                    Err("scripted failure".into())
                }
            }
        });
        let mut sim = StreamSim::builder_with_service(Stream::lines(), script)
            .shutdown_timeout(Duration::from_millis(grace))
            .seed(seed)
            .build();
        let c = sim.connect();
        // The client's own ends: it shut down its write side, it reset.
        let (mut fin, mut reset) = (false, false);
        // How many handler calls there were when the server closed the socket.
        let mut calls_at_close = None;
        for op in ops {
            let writing = !fin && !reset;
            match op {
                Op::Read(data) => if writing && sim.state(c) != ClientState::Reset {
                    sim.send_bytes(c, &data);
                },
                Op::Eof => if writing {
                    fin = true;
                    sim.shutdown_write(c);
                },
                Op::IoError => if !reset {
                    reset = true;
                    sim.reset(c);
                },
                Op::Advance(ms) => sim.advance(Duration::from_millis(ms)),
                Op::Shutdown => sim.begin_shutdown(),
                Op::Window(None) => {
                    sim.set_faults(Faults::none());
                    sim.set_reading(c, true);
                }
                Op::Window(Some(0)) => sim.set_reading(c, false),
                Op::Window(Some(n)) => {
                    sim.set_faults(Faults::chunked(n).with_socket_buffer(n));
                    sim.set_reading(c, true);
                }
            }
            let seen = log.seen();
            check(&seen, *failed_on_connection.lock().unwrap());
            if sim.server_closed(c).is_some() {
                let at_close = *calls_at_close.get_or_insert(seen.len());
                prop_assert_eq!(seen.len(), at_close, "a handler call after the close");
                prop_assert_eq!(sim.connections(), 0);
            }
        }
        // Whatever happened, a shutdown plus its deadline closes the socket.
        sim.begin_shutdown();
        sim.advance(Duration::from_millis(grace));
        prop_assert!(sim.server_closed(c).is_some(), "not closed after shutdown deadline: {:?}", sim);
        prop_assert!(sim.is_stopped());
        check(&log.seen(), *failed_on_connection.lock().unwrap());
    }
}

fn check(log: &[Seen], failed_on_connection: bool) {
    assert_eq!(
        log.first(),
        Some(&Seen::Connected),
        "on_connection comes first"
    );
    let disconnects = log
        .iter()
        .filter(|s| matches!(s, Seen::Disconnected { .. }))
        .count();
    assert!(disconnects <= 1, "on_disconnection at most once: {log:?}");
    if let Some(pos) = log
        .iter()
        .position(|s| matches!(s, Seen::Disconnected { .. }))
    {
        assert_eq!(
            pos,
            log.len() - 1,
            "no handler call after on_disconnection: {log:?}"
        );
        assert_eq!(
            log[pos],
            Seen::Disconnected {
                closing: true,
                send_refused: true
            }
        );
    }
    if failed_on_connection {
        assert_eq!(disconnects, 0, "on_connection failed: no on_disconnection");
        assert_eq!(log.len(), 1);
    }
}
