//! The blocking TCP client's connect: every resolved address tried in turn, each with a
//! head start over the next (RFC 8305, "happy eyeballs"), the first to connect wins; all
//! within the connect timeout. Non-blocking connects waited for with one `mio::Poll`, so no
//! thread is started and the losers are closed at once.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use easynet_common::{TcpClientOptions, attempts_failed, connect_timed_out, start_connect};
use mio::{Events, Interest, Poll, Token};

/// Connects to the first of `targets` (in the order to try them) that answers.
pub(crate) fn connect(targets: &[SocketAddr], options: &TcpClientOptions) -> io::Result<TcpStream> {
    let started = Instant::now();
    let deadline = options
        .connect_timeout
        .map(|t| easynet_core::deadline_after(started, t));
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(targets.len().max(1));
    // One slot per target, by token: the attempt under way, if any.
    let mut attempts: Vec<Option<mio::net::TcpStream>> = Vec::with_capacity(targets.len());
    let mut errors = Vec::new();
    let mut next_start = started;
    loop {
        let now = Instant::now();
        let live = attempts.iter().flatten().count();
        if attempts.len() < targets.len() && (now >= next_start || live == 0) {
            let addr = targets[attempts.len()];
            let slot = start_connect(addr, options.local_addr).and_then(|s| {
                let mut s = mio::net::TcpStream::from_std(s.into());
                poll.registry()
                    .register(&mut s, Token(attempts.len()), Interest::WRITABLE)?;
                Ok(s)
            });
            match slot {
                Ok(s) => attempts.push(Some(s)),
                Err(e) => {
                    errors.push((addr, e));
                    attempts.push(None);
                }
            }
            next_start = easynet_core::deadline_after(now, options.happy_eyeballs_delay);
            continue;
        }
        if live == 0 {
            return Err(attempts_failed(errors));
        }
        if deadline.is_some_and(|d| now >= d) {
            return Err(connect_timed_out(
                options.connect_timeout.unwrap_or_default(),
            ));
        }
        let next = (attempts.len() < targets.len()).then_some(next_start);
        let wake = match (next, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match poll.poll(&mut events, wake.map(|w| w.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            let i = event.token().0;
            let Some(s) = attempts[i].as_ref() else {
                continue;
            };
            let failed = match s.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match s.peer_addr() {
                    Ok(_) => None,
                    // Not yet (a spurious wake-up): wait for the next event.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                    Err(e) => Some(e),
                },
            };
            let Some(mut s) = attempts[i].take() else {
                continue;
            };
            let _ = poll.registry().deregister(&mut s);
            match failed {
                Some(e) => {
                    errors.push((targets[i], e));
                    // A failed attempt gives its turn to the next at once (RFC 8305 §5).
                    next_start = Instant::now();
                }
                None => {
                    let stream = TcpStream::from(s);
                    stream.set_nonblocking(false)?;
                    return Ok(stream);
                }
            }
        }
    }
}
