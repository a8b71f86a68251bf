//! What only the poll loop example (examples/poll_loop.rs) needs beyond the scenarios it
//! shares with the drivers (`both_drivers.rs`): async handlers woken from outside their
//! connection, and datagrams.

#![cfg(all(unix, feature = "tls", feature = "json"))]

mod support;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use easynet::handler::{
    ConnInfo, DatagramContext, DatagramHandler, HandlerError, HandlerResult, Next, Received,
};
use easynet::protocol::{Datagram, Stream};
use easynet::stream::{AsyncSession, AsyncStreamHandler, StreamPeer};
use support::drivers::{self, Opts};

const LIMIT: Duration = Duration::from_secs(10);

/// Ready once a thread of its own has slept: a timer outside the connection, as a runtime's
/// would be. Only its waker can tell the loop (`Driven::poll_wake`).
struct Delay {
    done: Arc<AtomicBool>,
    started: bool,
    after: Duration,
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !std::mem::replace(&mut self.started, true) {
            let (done, waker, after) = (self.done.clone(), cx.waker().clone(), self.after);
            std::thread::spawn(move || {
                std::thread::sleep(after);
                done.store(true, Ordering::Release);
                waker.wake();
            });
        }
        Poll::Pending
    }
}

fn delay(after: Duration) -> Delay {
    Delay {
        done: Arc::default(),
        started: false,
        after,
    }
}

/// Echoes each line after a delay only an outside wake-up ends.
struct SlowEcho;

impl AsyncStreamHandler for SlowEcho {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut StreamPeer<String, String>,
    ) -> Result<(), HandlerError> {
        let line = client.recv().await?;
        delay(Duration::from_millis(50)).await;
        client.send(&line).await?;
        Ok(())
    }
}

#[test]
fn an_async_handler_woken_from_outside_is_resumed() {
    let service = |_: &ConnInfo| SlowEcho;
    let server = drivers::poll_loop_tcp(
        Stream::lines(),
        service,
        Opts::default(),
        AsyncSession::start,
    );
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"one\ntwo\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for want in ["one\n", "two\n"] {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, want);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "each answer waited for its delay"
    );
    drop((s, reader));
    server.stop();
}

/// Answers each datagram in upper case.
struct Upper;

impl DatagramHandler for Upper {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        if let Received::Request(text) = r {
            cx.send(text.to_uppercase())?;
        }
        Ok(Next::Close)
    }
}

#[test]
fn datagrams_are_answered_until_the_stop() {
    let server = drivers::poll_loop_udp(Datagram::lines(), |_: &ConnInfo| Upper);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 64];
    for word in ["hello", "world"] {
        sock.send_to(format!("{word}\n").as_bytes(), server.addr)
            .unwrap();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (word.to_uppercase().as_bytes(), server.addr)
        );
    }
    let addr = server.addr;
    server.stop();
    // Stopped: the socket is closed, nothing answers.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = sock.send_to(b"late\n", addr);
    assert!(sock.recv_from(&mut buf).is_err());
}
