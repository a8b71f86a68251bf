//! The async TCP client's connect: every resolved address tried in turn, each with a head
//! start over the next (RFC 8305, "happy eyeballs"), the first to connect wins; all within
//! the connect timeout. The attempts are futures polled here (no task): dropping the
//! connect drops them and closes their sockets.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;

use easynet_common::{TcpClientOptions, attempts_failed, connect_timed_out};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

type Attempt = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

fn attempt(addr: SocketAddr, local: Option<SocketAddr>) -> Attempt {
    Box::pin(async move {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(local) = local {
            socket.bind(local)?;
        }
        socket.connect(addr).await
    })
}

enum Event {
    Start,
    Done(usize, io::Result<TcpStream>),
}

/// Connects to the first of `targets` (in the order to try them) that answers.
pub(crate) async fn connect(
    targets: &[SocketAddr],
    options: &TcpClientOptions,
) -> io::Result<TcpStream> {
    let race = async {
        let mut attempts: Vec<(SocketAddr, Attempt)> = Vec::new();
        let mut started = 0;
        let mut errors = Vec::new();
        let next_start = tokio::time::sleep_until(Instant::now());
        tokio::pin!(next_start);
        loop {
            let event = poll_fn(|cx| {
                for (i, (_, a)) in attempts.iter_mut().enumerate() {
                    if let Poll::Ready(r) = a.as_mut().poll(cx) {
                        return Poll::Ready(Event::Done(i, r));
                    }
                }
                let due = attempts.is_empty() || next_start.as_mut().poll(cx).is_ready();
                if started < targets.len() && due {
                    return Poll::Ready(Event::Start);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Start => {
                    let addr = targets[started];
                    started += 1;
                    attempts.push((addr, attempt(addr, options.local_addr)));
                    next_start
                        .as_mut()
                        .reset(Instant::from_std(easynet_core::deadline_after(
                            std::time::Instant::now(),
                            options.happy_eyeballs_delay,
                        )));
                }
                Event::Done(_, Ok(stream)) => return Ok(stream),
                Event::Done(i, Err(e)) => {
                    let (addr, _) = attempts.remove(i);
                    errors.push((addr, e));
                    if attempts.is_empty() && started == targets.len() {
                        return Err(attempts_failed(errors));
                    }
                    // A failed attempt gives its turn to the next at once (RFC 8305 §5).
                    next_start.as_mut().reset(Instant::now());
                }
            }
        }
    };
    match options.connect_timeout {
        Some(t) => tokio::time::timeout(t, race)
            .await
            .map_err(|_| connect_timed_out(t))?,
        None => race.await,
    }
}
