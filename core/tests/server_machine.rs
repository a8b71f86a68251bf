//! The server-level machine without sockets: run order, the one shutdown deadline, the
//! connection table, contained hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use easynet_core::handler::{ConnInfo, HandlerError, Service};
use easynet_core::lifecycle::{Activation, ServerError, ServerState};
use easynet_core::server::{Event, Server, run_teardown};

#[derive(Default)]
struct Hooks {
    init: AtomicUsize,
    teardown: AtomicUsize,
    fail_init: bool,
    panic: bool,
}

impl Service for Hooks {
    type Handler = ();
    fn on_start(&self) -> Result<(), HandlerError> {
        self.init.fetch_add(1, Ordering::Relaxed);
        if self.panic {
            panic!("init bug");
        }
        if self.fail_init {
            return Err("no database".into());
        }
        Ok(())
    }
    fn new_handler(&self, _: &ConnInfo) {}
    fn on_stop(&self) {
        self.teardown.fetch_add(1, Ordering::Relaxed);
        if self.panic {
            panic!("teardown bug");
        }
    }
}

fn events(server: &mut Server) -> Vec<Event> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

fn serving(server: &mut Server, hooks: &Hooks) {
    assert!(matches!(server.begin_run(), Ok(Activation::Bind)));
    server.activated();
    server.init(hooks).unwrap();
    server.serving();
    assert!(server.is_serving());
}

#[test]
fn shutdown_fans_out_one_deadline_then_teardown_after_the_last_connection() {
    let t0 = Instant::now();
    let hooks = Hooks::default();
    let mut server = Server::new(Duration::from_secs(30));
    serving(&mut server, &hooks);
    let (a, b) = (server.accepted(), server.accepted());
    assert_ne!(a, b);
    assert_eq!(server.connections(), 2);
    let deadline = server.shutdown(t0).unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(30));
    // Later calls (another thread, a handler) get the same deadline.
    assert_eq!(server.shutdown(t0 + Duration::from_secs(5)), Some(deadline));
    assert_eq!(
        events(&mut server),
        [Event::StopAccepting, Event::Shutdown { deadline }]
    );
    assert_eq!(server.state(), ServerState::ShuttingDown { deadline });
    server.closed(a);
    assert!(events(&mut server).is_empty(), "one connection left");
    assert_eq!(server.poll_timeout(), Some(deadline));
    server.closed(b);
    assert_eq!(events(&mut server), [Event::Teardown]);
    run_teardown(&hooks);
    server.teardown_done();
    assert_eq!(events(&mut server), [Event::Stopped]);
    assert_eq!(server.state(), ServerState::Listening);
    assert_eq!(hooks.teardown.load(Ordering::Relaxed), 1);
    // And it can serve again.
    assert!(matches!(server.begin_run(), Ok(Activation::AlreadyActive)));
}

#[test]
fn the_deadline_tears_down_even_with_connections_left() {
    let t0 = Instant::now();
    let hooks = Hooks::default();
    let mut server = Server::new(Duration::from_secs(1));
    serving(&mut server, &hooks);
    let _stuck = server.accepted();
    let deadline = server.shutdown(t0).unwrap();
    events(&mut server);
    server.handle_timeout(deadline - Duration::from_millis(1));
    assert!(events(&mut server).is_empty());
    server.handle_timeout(deadline);
    assert_eq!(events(&mut server), [Event::Teardown]);
}

#[test]
fn close_serves_accepted_connections_to_their_end() {
    let hooks = Hooks::default();
    let mut server = Server::new(Duration::from_secs(30));
    serving(&mut server, &hooks);
    let c = server.accepted();
    server.close();
    assert_eq!(events(&mut server), [Event::StopAccepting]);
    assert!(!server.is_serving());
    server.closed(c);
    assert_eq!(events(&mut server), [Event::Teardown]);
    server.teardown_done();
    assert_eq!(events(&mut server), [Event::Stopped]);
    assert_eq!(server.state(), ServerState::Closed);
    assert!(matches!(server.begin_run(), Err(ServerError::Closed)));
}

#[test]
fn a_failing_or_panicking_init_ends_the_run_without_teardown() {
    for hooks in [
        Hooks {
            fail_init: true,
            ..Default::default()
        },
        Hooks {
            panic: true,
            ..Default::default()
        },
    ] {
        let mut server = Server::new(Duration::from_secs(30));
        assert!(matches!(server.begin_run(), Ok(Activation::Bind)));
        server.activated();
        let err = server.init(&hooks).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(events(&mut server), [Event::Stopped]);
        assert!(!server.is_running());
        assert_eq!(hooks.teardown.load(Ordering::Relaxed), 0);
        assert!(
            matches!(server.begin_run(), Ok(Activation::AlreadyActive)),
            "can try again"
        );
    }
}

#[test]
fn a_panicking_teardown_is_contained() {
    let hooks = Arc::new(Hooks {
        panic: true,
        ..Default::default()
    });
    run_teardown(&*hooks);
    assert_eq!(hooks.teardown.load(Ordering::Relaxed), 1);
}

#[test]
fn a_second_run_is_refused_while_one_is_going_and_ids_stay_unique_across_runs() {
    let t0 = Instant::now();
    let hooks = Hooks::default();
    let mut server = Server::new(Duration::from_secs(30));
    serving(&mut server, &hooks);
    assert!(matches!(
        server.begin_run(),
        Err(ServerError::AlreadyRunning)
    ));
    let first = server.accepted();
    server.closed(first);
    server.shutdown(t0);
    server.end_run();
    server.begin_run().unwrap();
    assert!(server.accepted() > first);
    assert_eq!(server.stats().accepted, 2);
    assert_eq!(server.stats().closed, 1);
}
