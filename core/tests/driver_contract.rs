//! The driver contract ([`Action`]) and the rules the core owns, without sockets: the
//! lingering close, fairness between connections, contained user code (factory, decoder,
//! async handlers), receive deadlines and the async handlers' cancel safety.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use easynet_core::ConnId;
use easynet_core::handler::{
    ConnInfo, HandlerError, HandlerResult, Next, Received, StreamContext, StreamHandler,
};
use easynet_core::protocol::{Decode, DeserializeError, Encode, Lines, SerializeError, Stream};
use easynet_core::stream::{
    Action, AsyncSession, AsyncStreamHandler, CloseHow, Connection, Driven, HANDLER_CALLS_PER_TURN,
    RecvError, Session, StreamConfig, StreamPeer, Want,
};

fn info() -> ConnInfo {
    let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    ConnInfo::new(ConnId(1), addr, addr)
}

fn lines_conn() -> Connection<
    Stream<Lines, easynet_core::protocol::Utf8, String, String>,
    easynet_core::stream::ServerRole,
> {
    Connection::new(Arc::new(Stream::lines()), StreamConfig::default(), info())
}

/// Echo; "quit" closes; "slow" answers the next receive with a `Duration::MAX` timeout.
#[derive(Default)]
struct Echo {
    calls: Arc<AtomicUsize>,
    closing_seen: Arc<Mutex<Vec<bool>>>,
}

impl StreamHandler for Echo {
    type Request = String;
    type Response = String;

    fn handle(&mut self, cx: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.closing_seen.lock().unwrap().push(cx.is_closing());
        match r {
            Received::Request(l) if l == "quit" => return Ok(Next::Close),
            Received::Request(l) if l == "forever" => {
                cx.send(&l)?;
                return Ok(Next::recv_timeout(Duration::MAX));
            }
            Received::Request(l) => cx.send(&l)?,
            Received::Timeout => cx.send("timeout".to_owned())?,
            Received::ParseError(_) => cx.send("error".to_owned())?,
        }
        Ok(Next::recv())
    }
}

/// Does what the driver would, writing into `out`, until the session waits: returns the
/// wait (or the close).
fn run(d: &mut impl Driven, now: Instant, out: &mut Vec<u8>, unsent: Option<usize>) -> Action {
    loop {
        match d.poll_action(now) {
            Action::Io(Want { write: true, .. }) => {
                d.write_to(out).unwrap();
            }
            Action::QueryUnsent => d.handle_unsent(now, unsent),
            other => return other,
        }
    }
}

#[test]
fn a_graceful_close_sends_fin_then_lingers_until_the_peer_is_quiet_and_has_everything() {
    let t0 = Instant::now();
    let mut s = Session::new(
        t0,
        Echo::default(),
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    s.handle_read(t0, b"a\nquit\nlate request\n");
    let mut out = Vec::new();
    assert_eq!(run(&mut s, t0, &mut out, Some(0)), Action::ShutdownWrite);
    assert_eq!(out, b"a\n");
    // Lingering: reading and dropping, no close yet.
    let Action::Io(want) = run(&mut s, t0, &mut out, Some(0)) else {
        panic!()
    };
    assert!(want.read && !want.write);
    let first_query = want.timeout.unwrap();
    assert!(first_query > t0);
    s.handle_read(first_query, b"still sending\n");
    // The peer spoke since: not released although the send queue is empty.
    assert!(matches!(
        run(&mut s, first_query, &mut out, Some(0)),
        Action::Io(_)
    ));
    let Action::Io(want) = s.poll_action(first_query) else {
        panic!()
    };
    let second = want.timeout.unwrap();
    // Quiet, but the kernel still holds bytes for it: keep lingering.
    assert!(matches!(
        run(&mut s, second, &mut out, Some(10)),
        Action::Io(_)
    ));
    let Action::Io(want) = s.poll_action(second) else {
        panic!()
    };
    let third = want.timeout.unwrap();
    assert_eq!(
        run(&mut s, third, &mut out, Some(0)),
        Action::Close(CloseHow::Graceful)
    );
    assert_eq!(out, b"a\n", "nothing read after quit was handled");
}

#[test]
fn a_lingering_close_ends_at_the_peers_eof_or_the_shutdown_deadline() {
    let t0 = Instant::now();
    let mut s = Session::new(
        t0,
        Echo::default(),
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    s.handle_read(t0, b"quit\n");
    let mut out = Vec::new();
    assert_eq!(run(&mut s, t0, &mut out, None), Action::ShutdownWrite);
    s.handle_eof(t0);
    assert_eq!(s.poll_action(t0), Action::Close(CloseHow::Graceful));

    // A peer that keeps sending, an OS that cannot tell: the shutdown deadline ends it.
    let mut s = Session::new(
        t0,
        Echo::default(),
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    let deadline = t0 + Duration::from_secs(5);
    s.shutdown(t0, deadline);
    assert_eq!(run(&mut s, t0, &mut out, None), Action::ShutdownWrite);
    let Action::Io(want) = run(&mut s, t0, &mut out, None) else {
        panic!()
    };
    let query = want.timeout.unwrap();
    let Action::Io(want) = run(&mut s, query, &mut out, None) else {
        panic!()
    };
    assert_eq!(
        want.timeout,
        Some(deadline),
        "no more queries once the OS cannot tell"
    );
    s.handle_read(deadline - Duration::from_millis(1), b"more");
    s.handle_timeout(deadline);
    assert_eq!(s.poll_action(deadline), Action::Close(CloseHow::Graceful));
}

#[test]
fn a_flood_of_requests_is_handled_in_turns_counted_in_handler_calls() {
    let t0 = Instant::now();
    let handler = Echo::default();
    let calls = handler.calls.clone();
    let mut s = Session::new(
        t0,
        handler,
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    s.handle_read(t0, &b"x\n".repeat(1000));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        HANDLER_CALLS_PER_TURN as usize
    );
    let mut out = Vec::new();
    let Action::Io(want) = run(&mut s, t0, &mut out, None) else {
        panic!()
    };
    assert!(
        want.resume && !want.read,
        "the others' turn, then resume: {want:?}"
    );
    let mut turns = 1;
    while let Action::Io(Want { resume: true, .. }) = run(&mut s, t0, &mut out, None) {
        s.resume(t0);
        turns += 1;
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1000);
    assert_eq!(turns, 1000usize.div_ceil(HANDLER_CALLS_PER_TURN as usize));
    assert_eq!(out.len(), 2000);
}

#[test]
fn a_receive_timeout_the_clock_cannot_add_waits_for_ever() {
    let t0 = Instant::now();
    let mut s = Session::new(
        t0,
        Echo::default(),
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    s.handle_read(t0, b"forever\n");
    let mut out = Vec::new();
    let Action::Io(want) = run(&mut s, t0, &mut out, None) else {
        panic!()
    };
    assert_eq!(want.timeout, None);
    s.handle_read(t0, b"next\n");
    run(&mut s, t0, &mut out, None);
    assert_eq!(out, b"forever\nnext\n");
}

#[test]
fn is_closing_is_true_for_a_request_that_came_with_the_peers_eof() {
    let t0 = Instant::now();
    let handler = Echo::default();
    let seen = handler.closing_seen.clone();
    let mut s = Session::new(
        t0,
        handler,
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    s.handle_read(
        t0, b"one
",
    );
    // The last request and the peer's EOF arrive before the handler runs again.
    let mut conn = lines_conn();
    conn.handle_read(
        t0, b"last
",
    );
    conn.handle_eof(t0);
    let handler = Echo {
        closing_seen: seen.clone(),
        ..Default::default()
    };
    let mut last = Session::from_connection(t0, handler, conn);
    let mut out = Vec::new();
    run(&mut last, t0, &mut out, Some(0));
    assert_eq!(out, b"last\n", "answers still go out");
    assert_eq!(*seen.lock().unwrap(), vec![false, true]);
    drop(s);
}

/// A serializer that panics on "boom" (a buggy user decoder).
#[derive(Clone)]
struct Fragile;

impl Decode<String> for Fragile {
    fn decode(&self, payload: BytesMut) -> Result<String, DeserializeError> {
        let s = String::from_utf8_lossy(&payload).trim_end().to_owned();
        assert!(s != "boom", "decoder bug");
        Ok(s)
    }
}

impl Encode<String> for Fragile {
    fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), SerializeError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }
}

#[test]
fn a_panicking_decoder_closes_only_its_connection() {
    let t0 = Instant::now();
    let protocol = Arc::new(Stream::new(Lines::new(), Fragile));
    let mut s = Session::new(
        t0,
        Echo::default(),
        protocol,
        StreamConfig::default(),
        info(),
    );
    s.handle_read(t0, b"ok\nboom\nnever\n");
    let mut out = Vec::new();
    assert_eq!(
        run(&mut s, t0, &mut out, None),
        Action::Close(CloseHow::Abort)
    );
    assert_eq!(out, b"ok\n", "what was answered before is flushed first");
    assert!(s.is_finished());
}

#[test]
fn a_panicking_handler_factory_drops_only_that_connection() {
    let t0 = Instant::now();
    let service = |_: &ConnInfo| -> Echo { panic!("factory bug") };
    assert!(Session::start(t0, &service, lines_conn()).is_none());
    let ok = |_: &ConnInfo| Echo::default();
    assert!(Session::start(t0, &ok, lines_conn()).is_some());
}

/// An async handler that drops a receive half-way (as `select!` would), then waits with a
/// timeout; "panic" panics.
struct Canceller {
    log: Arc<Mutex<Vec<String>>>,
}

impl AsyncStreamHandler for Canceller {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        {
            // Polled once with nothing buffered, then dropped.
            let mut recv = pin!(client.recv());
            let mut cx = Context::from_waker(Waker::noop());
            assert!(recv.as_mut().poll(&mut cx).is_pending());
        }
        let got = client.recv_timeout(Duration::from_millis(300)).await;
        let text = match got {
            Ok(line) if line == "panic" => panic!("handler bug"),
            Ok(line) => line,
            Err(RecvError::Timeout) => "timeout".to_owned(),
            Err(e) => return Err(e.into()),
        };
        self.log.lock().unwrap().push(text.clone());
        client.send(&text).await?;
        Ok(())
    }
}

#[test]
fn a_dropped_async_receive_leaves_no_stale_deadline_and_loses_nothing() {
    let t0 = Instant::now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut s = AsyncSession::new(t0, Canceller { log: log.clone() }, lines_conn());
    let mut out = Vec::new();
    let Action::Io(want) = run(&mut s, t0, &mut out, None) else {
        panic!()
    };
    assert_eq!(want.timeout, Some(t0 + Duration::from_millis(300)));
    let t1 = t0 + Duration::from_millis(300);
    s.handle_timeout(t1);
    run(&mut s, t1, &mut out, None);
    assert_eq!(out, b"timeout\n");
    // The next call drops a receive again: the line that comes is not lost.
    s.handle_read(t1, b"hello\n");
    run(&mut s, t1, &mut out, None);
    assert_eq!(out, b"timeout\nhello\n");
    assert_eq!(*log.lock().unwrap(), ["timeout", "hello"]);
}

#[test]
fn an_async_handler_panic_closes_only_its_connection() {
    let t0 = Instant::now();
    let mut s = AsyncSession::new(
        t0,
        Canceller {
            log: Arc::default(),
        },
        lines_conn(),
    );
    s.handle_read(t0, b"panic\n");
    let mut out = Vec::new();
    assert_eq!(
        run(&mut s, t0, &mut out, None),
        Action::Close(CloseHow::Abort)
    );
    assert!(s.is_finished());
}

/// Loops on receive: a flood is handled in turns, as for portable handlers.
struct Looper(Arc<AtomicUsize>);

impl AsyncStreamHandler for Looper {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        loop {
            let line = client.recv().await?;
            self.0.fetch_add(1, Ordering::Relaxed);
            client.send(&line).await?;
        }
    }
}

#[test]
fn an_async_handler_flood_is_handled_in_turns() {
    let t0 = Instant::now();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut s = AsyncSession::new(t0, Looper(calls.clone()), lines_conn());
    s.handle_read(t0, &b"x\n".repeat(1000));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        HANDLER_CALLS_PER_TURN as usize
    );
    let mut out = Vec::new();
    while let Action::Io(Want { resume: true, .. }) = run(&mut s, t0, &mut out, None) {
        s.resume(t0);
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1000);
    assert_eq!(out.len(), 2000);
    s.handle_eof(t0);
    assert_eq!(run(&mut s, t0, &mut out, Some(0)), Action::ShutdownWrite);
}

#[test]
fn an_async_handler_woken_from_outside_asks_the_driver_to_resume() {
    struct Waits(Arc<Mutex<Option<Waker>>>, bool);
    impl AsyncStreamHandler for Waits {
        type Request = String;
        type Response = String;
        async fn handle(
            &mut self,
            client: &mut StreamPeer<String, String>,
        ) -> Result<(), HandlerError> {
            let slot = self.0.clone();
            let mut fired = false;
            std::future::poll_fn(|cx| {
                if fired {
                    return Poll::Ready(());
                }
                fired = true;
                *slot.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            self.1 = true;
            client.send(&"woken".to_owned()).await?;
            client.recv().await?;
            Ok(())
        }
    }
    let t0 = Instant::now();
    let slot = Arc::new(Mutex::new(None));
    let mut s = AsyncSession::new(t0, Waits(slot.clone(), false), lines_conn());
    let driver_wakes = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let waker = Waker::from(Arc::new(Count(driver_wakes.clone())));
    let mut cx = Context::from_waker(&waker);
    assert!(s.poll_wake(&mut cx).is_pending());
    slot.lock().unwrap().take().unwrap().wake();
    assert_eq!(driver_wakes.load(Ordering::Relaxed), 1);
    assert!(s.poll_wake(&mut cx).is_ready());
    s.resume(t0);
    let mut out = Vec::new();
    run(&mut s, t0, &mut out, None);
    assert_eq!(out, b"woken\n");
}

/// A handler whose `Drop` panics and whose errors' `Display` panics.
struct Nasty;

#[derive(Debug)]
struct NastyError;

impl std::fmt::Display for NastyError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("Display bug")
    }
}

impl std::error::Error for NastyError {}

impl Drop for Nasty {
    fn drop(&mut self) {
        panic!("Drop bug");
    }
}

impl StreamHandler for Nasty {
    type Request = String;
    type Response = String;

    fn handle(&mut self, _: &mut StreamContext<'_, String>, r: Received<String>) -> HandlerResult {
        match r {
            Received::Request(l) if l == "fail" => Err(NastyError.into()),
            _ => Ok(Next::recv()),
        }
    }
}

#[test]
fn a_handler_whose_drop_and_error_display_panic_is_contained() {
    let t0 = Instant::now();
    // The error's Display panics while it is logged; the handler's Drop when it goes.
    let mut s = Session::new(
        t0,
        Nasty,
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    s.handle_read(t0, b"fail\n");
    let mut out = Vec::new();
    assert_eq!(
        run(&mut s, t0, &mut out, None),
        Action::Close(CloseHow::Abort)
    );
    assert!(s.handler().is_none(), "dropped once no call can come");
    // Dropped mid-way by its driver.
    let s = Session::new(
        t0,
        Nasty,
        Arc::new(Stream::lines()),
        StreamConfig::default(),
        info(),
    );
    drop(s);
}

/// Awaits something that never comes (not its connection).
struct Distracted;

impl AsyncStreamHandler for Distracted {
    type Request = String;
    type Response = String;

    async fn handle(&mut self, _: &mut StreamPeer<String, String>) -> Result<(), HandlerError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[test]
fn the_shutdown_deadline_holds_for_a_handler_that_never_receives() {
    let t0 = Instant::now();
    let mut s = AsyncSession::new(t0, Distracted, lines_conn());
    let mut out = Vec::new();
    let Action::Io(want) = run(&mut s, t0, &mut out, None) else {
        panic!()
    };
    assert_eq!(want.timeout, None, "idle: nothing to wake for");
    let deadline = t0 + Duration::from_secs(3);
    s.shutdown(t0, deadline);
    let Action::Io(want) = run(&mut s, t0, &mut out, None) else {
        panic!()
    };
    assert_eq!(want.timeout, Some(deadline));
    s.handle_timeout(deadline);
    assert_eq!(s.poll_action(deadline), Action::Close(CloseHow::Abort));
}

/// Drops a `send` that waits for room (as `select!` would), then sends again.
struct DropsSend;

impl AsyncStreamHandler for DropsSend {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        let big = line.repeat(4);
        {
            let mut send = pin!(client.send(&big));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(
                send.as_mut().poll(&mut cx).is_pending(),
                "over the high-water mark"
            );
        }
        client.send(&"after".to_owned()).await?;
        Ok(())
    }
}

#[test]
fn a_dropped_async_send_keeps_its_message_whole_and_the_client_usable() {
    let t0 = Instant::now();
    let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let conn = Connection::new(
        Arc::new(Stream::lines()),
        StreamConfig::default().with_write_high_water(4),
        ConnInfo::new(ConnId(1), addr, addr),
    );
    let mut s = AsyncSession::new(t0, DropsSend, conn);
    s.handle_read(t0, b"abc\n");
    let mut out = Vec::new();
    run(&mut s, t0, &mut out, None);
    assert_eq!(out, b"abcabcabcabc\nafter\n");
}
