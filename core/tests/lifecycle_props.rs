//! Random call sequences on the server lifecycle: no panic, and EasyNetwork's rules hold.

use std::time::{Duration, Instant};

use easynet_core::lifecycle::{Activation, Lifecycle, ServerError, ServerState, Shutdown};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Activate { bind_ok: bool },
    BeginServe { bind_ok: bool },
    Serving,
    Shutdown(u64),
    Stopped,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(|bind_ok| Op::Activate { bind_ok }),
        any::<bool>().prop_map(|bind_ok| Op::BeginServe { bind_ok }),
        Just(Op::Serving),
        (0u64..100).prop_map(Op::Shutdown),
        Just(Op::Stopped),
        Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lifecycle_rules_hold(ops in proptest::collection::vec(op(), 0..30)) {
        let now = Instant::now();
        let mut s = Lifecycle::new();
        let mut closed = false;
        let mut running = false;
        for op in ops {
            match op {
                Op::Activate { bind_ok } => match s.activate() {
                    Err(e) => { prop_assert!(closed); prop_assert!(matches!(e, ServerError::Closed)); }
                    Ok(Activation::Bind) => if bind_ok { s.activated() } else { s.activation_failed() },
                    Ok(Activation::AlreadyActive) => prop_assert!(s.is_listening()),
                },
                Op::BeginServe { bind_ok } => match s.begin_serve() {
                    Err(ServerError::Closed) => prop_assert!(closed),
                    Err(ServerError::AlreadyRunning) => prop_assert!(running),
                    Err(e) => prop_assert!(false, "unexpected {}", e),
                    Ok(a) => {
                        prop_assert!(!closed && !running);
                        running = true;
                        if a == Activation::Bind {
                            if bind_ok { s.activated() } else { s.activation_failed(); s.stopped(); running = false; }
                        }
                    }
                },
                Op::Serving => s.serving(),
                Op::Shutdown(ms) => match s.shutdown(now, Duration::from_millis(ms)) {
                    Shutdown::NotRunning => prop_assert!(!running),
                    Shutdown::Stop { .. } => prop_assert!(running),
                },
                Op::Stopped => { s.stopped(); running = false; }
                Op::Close => { s.close(); closed = true; }
            }
            // Invariants.
            prop_assert!(!s.is_serving() || s.is_listening());
            prop_assert!(!(closed && s.is_listening()), "closed servers do not listen");
            if closed && !running { prop_assert_eq!(s.state(), ServerState::Closed); }
            prop_assert_eq!(s.is_closed(), closed);
        }
        // Shutdown then stop always ends the run, and close always ends everything.
        let _ = s.shutdown(now, Duration::ZERO);
        s.stopped();
        let running_state = matches!(s.state(), ServerState::Starting | ServerState::Serving | ServerState::ShuttingDown { .. });
        prop_assert!(!running_state);
        s.close();
        prop_assert_eq!(s.state(), ServerState::Closed);
    }
}
