//! The lingering close both drivers do after a graceful close's FIN.
//!
//! Closing a socket with unread input makes the kernel reset the connection, which destroys
//! answers still on their way to the peer. So after FIN a driver drops the input waiting;
//! if the peer is still sending, it keeps reading and dropping until the peer's EOF, for at
//! most [`LINGER`] and never past a shutdown's deadline (as nginx's lingering close). A peer
//! that sends nothing more is closed at once.
//!
//! ```
//! use easynet_common::{Discard, discard_input};
//!
//! let mut input: &[u8] = b"late request\n";
//! let mut buf = [0u8; 4];
//! // A `&[u8]` reader ends with EOF once read: the peer is done.
//! assert_eq!(discard_input(|b| std::io::Read::read(&mut input, b), &mut buf, 16), Discard::Ended);
//! ```

use std::io;
use std::time::Duration;

/// How long a graceful close waits for a still-sending peer's EOF after FIN.
pub const LINGER: Duration = Duration::from_secs(2);

/// What [`discard_input`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// End of stream, or an error: the peer is done and the socket can be closed.
    Ended,
    /// Nothing more waits now; `dropped` says whether anything was read and dropped.
    Drained {
        /// True if input was waiting (the peer is still sending).
        dropped: bool,
    },
    /// `max_reads` reads were done and more input may wait.
    Budget,
}

impl Discard {
    /// True when closing now could reset the connection: input was waiting and no EOF
    /// came, so the driver should linger.
    pub fn peer_still_sending(self) -> bool {
        matches!(self, Discard::Budget | Discard::Drained { dropped: true })
    }
}

/// Reads with `read` into `buf` and drops the bytes, at most `max_reads` times, until the
/// socket would block, ends, or fails.
pub fn discard_input(
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    buf: &mut [u8],
    max_reads: usize,
) -> Discard {
    let mut dropped = false;
    for _ in 0..max_reads {
        match read(buf) {
            Ok(0) => return Discard::Ended,
            Ok(_) => dropped = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Discard::Drained { dropped };
            }
            Err(_) => return Discard::Ended,
        }
    }
    Discard::Budget
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(steps: Vec<io::Result<usize>>) -> impl FnMut(&mut [u8]) -> io::Result<usize> {
        let mut steps = steps.into_iter();
        move |_| steps.next().unwrap_or(Ok(0))
    }

    fn would_block() -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    #[test]
    fn tells_a_quiet_peer_from_a_sending_one_and_a_finished_one() {
        let mut buf = [0u8; 8];
        let quiet = discard_input(script(vec![would_block()]), &mut buf, 16);
        assert_eq!(quiet, Discard::Drained { dropped: false });
        assert!(!quiet.peer_still_sending());
        let sending = discard_input(script(vec![Ok(8), Ok(3), would_block()]), &mut buf, 16);
        assert_eq!(sending, Discard::Drained { dropped: true });
        assert!(sending.peer_still_sending());
        let done = discard_input(script(vec![Ok(8), Ok(0)]), &mut buf, 16);
        assert_eq!(done, Discard::Ended);
        let reset = discard_input(
            script(vec![Err(io::ErrorKind::ConnectionReset.into())]),
            &mut buf,
            16,
        );
        assert_eq!(reset, Discard::Ended);
    }

    #[test]
    fn stops_at_the_budget_and_retries_interrupted_reads() {
        let mut buf = [0u8; 8];
        let flood = discard_input(|_| Ok(8), &mut buf, 4);
        assert_eq!(flood, Discard::Budget);
        assert!(flood.peer_still_sending());
        let interrupted = script(vec![Err(io::ErrorKind::Interrupted.into()), Ok(0)]);
        assert_eq!(discard_input(interrupted, &mut buf, 16), Discard::Ended);
    }
}
