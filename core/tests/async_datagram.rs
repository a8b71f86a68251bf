//! The core's `AsyncDatagramServer` without sockets or a runtime: async datagram handlers
//! polled by the core on a virtual clock. Receives and sends are cancel-safe, send results
//! reach the handler, wake-ups from outside resume a routine, one routine cannot starve the
//! others, every panic stays in its routine and shutdown drops every routine.

mod support;

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use easynet_core::datagram::{
    AsyncDatagramHandler, AsyncDatagramServer, AsyncOutput, DatagramConfig, DatagramPeer,
    DatagramSendError,
};
use easynet_core::handler::{ConnInfo, HandlerError};
use easynet_core::protocol::{Datagram, Decode, DeserializeError, Encode, SerializeError};
use easynet_core::stream::RecvError;
use support::clock::Clock;
use support::logs::Capture;
use tracing::Level;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const A: u16 = 40001;
const B: u16 = 40002;
const C: u16 = 40003;

/// UTF-8 text that panics decoding `decode-panic`.
#[derive(Debug, Clone, Copy)]
struct Touchy;

impl Decode<String> for Touchy {
    fn decode(&self, payload: BytesMut) -> Result<String, DeserializeError> {
        if &payload[..] == b"decode-panic" {
            panic!("Decode panicked on purpose");
        }
        Ok(std::str::from_utf8(&payload)?.to_owned())
    }
}

impl Encode<String> for Touchy {
    fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), SerializeError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }

    /// Shares nothing; panics for `shared-panic` (asked first on every send).
    fn encode_shared(&self, item: &String) -> Option<bytes::Bytes> {
        if item == "shared-panic" {
            panic!("encode_shared panicked on purpose");
        }
        None
    }
}

/// A one-shot event from outside the server (a timer or channel a handler awaits).
#[derive(Default)]
struct Signal {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    fn set(&self) {
        self.set.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    fn poll_set(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Polls `signal` and then `f`, as a biased `select!`: `None` if the signal is set (`f` is
/// then dropped, whatever it would have returned), else `Some(output)` once `f` finishes.
async fn race<T>(f: impl Future<Output = T>, signal: &Signal) -> Option<T> {
    let mut f = pin!(f);
    poll_fn(|cx| {
        if signal.poll_set(cx).is_ready() {
            return Poll::Ready(None);
        }
        f.as_mut().poll(cx).map(Some)
    })
    .await
}

/// The scripts a peer's first datagram picks; see each arm.
struct Script {
    signal: Arc<Signal>,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Script {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

type Client = DatagramPeer<String, String>;

impl AsyncDatagramHandler for Script {
    type Request = String;
    type Response = String;

    async fn handle(&mut self, client: &mut Client) -> Result<(), HandlerError> {
        let first = client.recv().await?;
        let reply = match first.as_str() {
            "timeout" => match client.recv_timeout(Duration::from_secs(1)).await {
                Err(RecvError::Timeout) => "timed out".to_owned(),
                other => format!("{other:?}"),
            },
            // A receive dropped when the signal wins; the next one gets its own deadline
            // and the datagram that came meanwhile.
            "race" => {
                let raced = race(client.recv_timeout(Duration::from_secs(10)), &self.signal).await;
                client.send(&format!("raced {raced:?}")).await?;
                match client.recv_timeout(Duration::from_millis(300)).await {
                    Ok(text) => format!("then {text}"),
                    Err(e) => format!("then {e}"),
                }
            }
            "wait-signal" => {
                poll_fn(|cx| self.signal.poll_set(cx)).await;
                "woken".to_owned()
            }
            "panic" => panic!("handler panicked on purpose"),
            "fail" => return Err("handler failed on purpose".into()),
            "closed" => return Err(DatagramSendError::Closed.into()),
            "sendfail" => match client.send(&"too big".to_owned()).await {
                Err(DatagramSendError::Io(e)) => format!("send failed: {}", e.kind()),
                other => format!("{other:?}"),
            },
            // A send never polled sends nothing; one dropped in the poll that queued it
            // neither; the client stays usable.
            "send-drop" => {
                drop(client.send(&"never".to_owned()));
                // Polled once (its datagram queued), then dropped in the same poll.
                let (text, mut queued) = ("dropped".to_owned(), false);
                let mut send = pin!(client.send(&text));
                poll_fn(|cx| {
                    if !queued {
                        queued = true;
                        assert!(
                            send.as_mut().poll(cx).is_pending(),
                            "it waits for its result"
                        );
                    }
                    Poll::Ready(())
                })
                .await;
                "after".to_owned()
            }
            "drain" => {
                poll_fn(|cx| self.signal.poll_set(cx)).await;
                let mut n = 0;
                while client.recv_timeout(Duration::ZERO).await.is_ok() {
                    n += 1;
                }
                format!("drained {n}")
            }
            // Wakes itself in its last poll: its waker ends queued.
            "wake-last" => {
                client.send(&"waking".to_owned()).await?;
                poll_fn(|cx| {
                    cx.waker().wake_by_ref();
                    Poll::Ready(())
                })
                .await;
                return Ok(());
            }
            "forever" => loop {
                client.recv().await?;
            },
            "max" => match client.recv_timeout(Duration::MAX).await {
                Ok(text) => format!("max {text}"),
                Err(e) => format!("max {e}"),
            },
            other => other.to_owned(),
        };
        client.send(&reply).await?;
        Ok(())
    }
}

type Service = Box<dyn Fn(&ConnInfo) -> Script + Send + Sync>;
type Server = AsyncDatagramServer<Service, Datagram<Touchy, String, String>>;

struct Harness {
    clock: Clock,
    server: Server,
    signal: Arc<Signal>,
    dropped: Arc<AtomicUsize>,
    made: Arc<AtomicUsize>,
    sent: Vec<(u16, String)>,
}

impl Harness {
    fn new(config: DatagramConfig) -> Self {
        Self::with_factory_panics(0, config)
    }

    fn with_factory_panics(panics: usize, config: DatagramConfig) -> Self {
        let signal = Arc::new(Signal::default());
        let dropped = Arc::new(AtomicUsize::new(0));
        let made = Arc::new(AtomicUsize::new(0));
        let (s, d, m) = (signal.clone(), dropped.clone(), made.clone());
        let service: Service = Box::new(move |_: &ConnInfo| {
            if m.fetch_add(1, Ordering::SeqCst) < panics {
                panic!("factory panicked on purpose");
            }
            Script {
                signal: s.clone(),
                dropped: d.clone(),
            }
        });
        let server = Server::new(
            Arc::new(service),
            Arc::new(Datagram::new(Touchy)),
            addr(9000),
            config,
        )
        .unwrap();
        Self {
            clock: Clock::new(),
            server,
            signal,
            dropped,
            made,
            sent: Vec::new(),
        }
    }

    fn datagram(&mut self, from: u16, text: &str) {
        let now = self.clock.now();
        self.server
            .handle_datagram(now, addr(from), BytesMut::from(text.as_bytes()));
        self.settle();
    }

    /// Drives the server as a driver would until nothing is left to do now: sends (a
    /// datagram "too big" fails with EMSGSIZE), resumes, wake-ups.
    fn settle(&mut self) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..10_000 {
            let now = self.clock.now();
            match self.server.poll_output() {
                AsyncOutput::Transmit(id, t) => {
                    let text = String::from_utf8(t.data.to_vec()).unwrap();
                    let result = if text == "too big" {
                        Err(io::Error::from_raw_os_error(90)) // EMSGSIZE
                    } else {
                        self.sent.push((t.to.port(), text));
                        Ok(())
                    };
                    self.server.handle_sent(now, id, result);
                }
                AsyncOutput::Idle { resume: true, .. } => self.server.resume(now),
                AsyncOutput::Idle { .. } => {
                    if self.server.poll_wake(&mut cx).is_ready() {
                        self.server.resume(now);
                    } else {
                        return;
                    }
                }
                _ => unreachable!(),
            }
        }
        panic!("the server never went idle");
    }

    fn advance_ms(&mut self, ms: u64) {
        let now = self.clock.advance_ms(ms);
        self.server.handle_timeout(now);
        self.settle();
    }

    fn sent(&mut self) -> Vec<(u16, String)> {
        std::mem::take(&mut self.sent)
    }

    fn texts(&mut self, peer: u16) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|(p, _)| *p == peer)
            .map(|(_, t)| t)
            .collect()
    }
}

#[test]
fn a_routine_answers_and_the_next_datagram_starts_the_next_routine() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "one");
    h.datagram(A, "two");
    h.datagram(B, "three");
    assert_eq!(
        h.sent(),
        vec![
            (A, "one".to_owned()),
            (A, "two".to_owned()),
            (B, "three".to_owned())
        ]
    );
    assert_eq!(h.server.routines(), 0);
    assert_eq!(h.made.load(Ordering::SeqCst), 2, "one handler per peer");
}

/// An ended routine's link and waker are kept for the next routine (of any peer). The
/// waker's last poll left a wake-up queued; the next routine's own wake-up still reaches it
/// (the reuse and each poll clear the flag).
#[test]
fn a_routine_after_one_that_woke_itself_last_is_woken() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "wake-last");
    assert_eq!(h.texts(A), ["waking"]);
    assert_eq!(h.server.routines(), 0);
    h.datagram(B, "wait-signal");
    assert!(h.sent().is_empty());
    h.signal.set();
    h.settle();
    assert_eq!(h.texts(B), ["woken"]);
}

#[test]
fn a_receive_timeout_runs_on_the_virtual_clock() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "timeout");
    assert!(h.sent().is_empty());
    h.advance_ms(999);
    assert!(h.sent().is_empty(), "not before its deadline");
    h.advance_ms(1);
    assert_eq!(h.texts(A), ["timed out"]);
}

#[test]
fn a_timeout_the_clock_cannot_add_waits_for_ever() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "max");
    assert_eq!(h.server.poll_timeout(), None, "no deadline");
    h.advance_ms(1_000_000);
    h.datagram(A, "late");
    assert_eq!(h.texts(A), ["max late"]);
}

#[test]
fn a_dropped_receive_loses_no_datagram() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "race");
    h.signal.set(); // the receive is dropped
    h.settle();
    assert_eq!(h.texts(A), ["raced None"]);
    h.datagram(A, "next");
    assert_eq!(h.texts(A), ["then next"]);
}

#[test]
fn a_dropped_receive_leaves_no_stale_deadline() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "race");
    h.signal.set();
    h.settle();
    assert_eq!(h.texts(A), ["raced None"]);
    // The next receive times out after its own 300 ms, not the dropped one's 10 s.
    h.advance_ms(299);
    assert!(h.sent().is_empty());
    h.advance_ms(1);
    assert_eq!(h.texts(A), ["then timed out"]);
    assert_eq!(
        h.server.poll_timeout().map(|t| t > h.clock.now()),
        Some(true)
    );
}

#[test]
fn a_datagram_for_a_dropped_receive_goes_to_the_next_call() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "race");
    // The datagram is handed to the receive, but the signal wins before the call sees it:
    // it is the next call's.
    let now = h.clock.now();
    h.signal.set();
    h.server
        .handle_datagram(now, addr(A), BytesMut::from(&b"meanwhile"[..]));
    h.settle();
    assert_eq!(h.texts(A), ["raced None", "then meanwhile"]);
    assert_eq!(h.server.routines(), 0);
}

#[test]
fn a_send_error_is_returned_to_the_handler() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "sendfail");
    let texts = h.texts(A);
    assert_eq!(texts.len(), 1);
    assert!(texts[0].starts_with("send failed"), "{texts:?}");
}

#[test]
fn a_dropped_send_sends_nothing_and_the_client_stays_usable() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "send-drop");
    assert_eq!(h.texts(A), ["after"]);
}

#[test]
fn a_wake_up_from_outside_resumes_the_routine() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "wait-signal");
    assert!(h.sent().is_empty());
    h.signal.set();
    h.settle();
    assert_eq!(h.texts(A), ["woken"]);
}

#[test]
fn one_busy_routine_yields_to_the_others() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "drain");
    let now = h.clock.now();
    for i in 0..500 {
        h.server
            .handle_datagram(now, addr(A), BytesMut::from(format!("{i}").as_bytes()));
    }
    h.signal.set();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(h.server.poll_wake(&mut cx).is_ready());
    h.server.resume(now);
    // One turn took part of the queue and asks to be resumed; another peer is served in
    // between.
    assert!(matches!(
        h.server.poll_output(),
        AsyncOutput::Idle { resume: true, .. }
    ));
    h.server
        .handle_datagram(now, addr(B), BytesMut::from(&b"probe"[..]));
    let AsyncOutput::Transmit(id, t) = h.server.poll_output() else {
        panic!("the probe is answered before the drain ends");
    };
    assert_eq!((t.to.port(), &t.data[..]), (B, &b"probe"[..]));
    h.server.handle_sent(now, id, Ok(()));
    h.settle();
    assert_eq!(h.texts(A), ["drained 500"]);
}

#[test]
fn panics_and_errors_end_one_routine_and_are_logged_once() {
    let capture = Capture::default();
    let dispatch = tracing::Dispatch::new(capture.clone());
    tracing::dispatcher::with_default(&dispatch, || {
        let mut h = Harness::with_factory_panics(1, DatagramConfig::default());
        h.datagram(A, "lost"); // the factory panics: dropped
        h.datagram(A, "panic");
        h.datagram(A, "decode-panic");
        h.datagram(A, "fail");
        h.datagram(A, "closed");
        // Echoed: the send's encode_shared panics. A second later, so that the log budget
        // of 127.0.0.1 (A's, B's and C's), which A spent, has room again.
        h.advance_ms(1000);
        h.datagram(C, "shared-panic");
        h.datagram(B, "still here");
        h.datagram(A, "and here");
        assert_eq!(
            h.sent(),
            vec![(B, "still here".to_owned()), (A, "and here".to_owned())]
        );
        // Each failed routine dropped its handler; the next got a fresh one.
        assert_eq!(h.made.load(Ordering::SeqCst), 1 + 4 + 1 + 1 + 1);
    });
    let logs = capture.logs();
    let count = |level: Level, needle: &str| {
        logs.iter()
            .filter(|l| l.level == level && l.text.contains(needle))
            .count()
    };
    assert_eq!(count(Level::ERROR, "factory panicked on purpose"), 1);
    assert_eq!(count(Level::ERROR, "handler panicked on purpose"), 1);
    assert_eq!(count(Level::ERROR, "Decode panicked on purpose"), 1);
    assert_eq!(count(Level::ERROR, "handler failed on purpose"), 1);
    assert_eq!(count(Level::ERROR, "encode_shared panicked on purpose"), 1);
    assert_eq!(count(Level::WARN, "closed client"), 1);
    assert_eq!(
        logs.iter().filter(|l| l.level == Level::ERROR).count(),
        5,
        "{logs:#?}"
    );
}

#[test]
fn shutdown_drops_every_routine_and_its_handler() {
    let mut h = Harness::new(DatagramConfig::default());
    h.datagram(A, "forever");
    h.datagram(B, "wait-signal");
    h.datagram(A, "queued");
    assert_eq!(h.server.routines(), 2);
    let now = h.clock.now();
    h.server.shutdown(now);
    assert_eq!(h.server.routines(), 0);
    assert!(h.server.is_closing());
    assert_eq!(h.dropped.load(Ordering::SeqCst), 2, "both handlers dropped");
    h.signal.set();
    h.settle();
    h.datagram(A, "after");
    assert!(h.sent().is_empty(), "nothing runs after shutdown");
    assert_eq!(h.server.poll_timeout(), None);
}
