//! Random event sequences on a stream session: no panic, handler rules hold, and a
//! shutdown followed by its deadline always reaches a closed socket.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use easynet_core::handler::Next;
use proptest::prelude::*;
use support::sim::{LineSim, Scripted, Seen};

#[derive(Debug, Clone)]
enum Op {
    Read(Vec<u8>),
    Eof,
    IoError,
    Advance(u64),
    Shutdown(u64),
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
        1 => (0u64..3000).prop_map(Op::Shutdown),
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
    ) {
        let plan = Arc::new(Mutex::new((decisions, 0usize)));
        let failed_on_connection = Arc::new(Mutex::new(false));
        let (p, f) = (plan.clone(), failed_on_connection.clone());
        let (h, log) = Scripted::new(move |cx, seen| {
            let mut plan = p.lock().unwrap();
            let d = plan.0[plan.1 % plan.0.len()];
            plan.1 += 1;
            if let Seen::Request(r) = seen { let _ = cx.send(r); }
            match d {
                Decision::Recv => Ok(Next::recv()),
                Decision::RecvTimeout(ms) => Ok(Next::recv_timeout(Duration::from_millis(ms))),
                Decision::Close => Ok(Next::Close),
                Decision::Fail => {
                    if *seen == Seen::Connected { *f.lock().unwrap() = true; }
                    Err("scripted failure".into())
                }
            }
        });
        let mut sim = LineSim::lines(h);
        for op in ops {
            match op {
                Op::Read(data) => if sim.session.wants_read() { sim.read(&data) },
                Op::Eof => if sim.session.wants_read() { sim.eof() },
                Op::IoError => if sim.closed.is_none() { sim.session.handle_io_error(sim.clock.now()); sim.pump() },
                Op::Advance(ms) => sim.advance(Duration::from_millis(ms)),
                Op::Shutdown(ms) => {
                    let deadline = sim.clock.now() + Duration::from_millis(ms);
                    sim.session.shutdown(sim.clock.now(), deadline);
                    sim.pump();
                }
                Op::Window(w) => { sim.write_window = w; sim.pump() }
            }
            check(&log.lock().unwrap(), *failed_on_connection.lock().unwrap());
            if sim.closed.is_some() {
                prop_assert!(sim.session.is_finished());
                prop_assert!(!sim.session.wants_read());
            }
        }
        // Whatever happened, a shutdown plus its deadline closes the socket.
        let deadline = sim.clock.now() + Duration::from_millis(grace);
        sim.session.shutdown(sim.clock.now(), deadline);
        sim.pump();
        sim.advance(Duration::from_millis(grace));
        prop_assert!(sim.closed.is_some(), "not closed after shutdown deadline: {:?}", sim.session);
        prop_assert!(sim.session.is_finished());
        check(&log.lock().unwrap(), *failed_on_connection.lock().unwrap());
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
