//! [`Action`]: the whole contract between a stream connection and the loop that drives it.
//!
//! A driver asks one question, [`poll_action`](super::Connection::poll_action), after every
//! input and does what it is told until told to wait:
//!
//! | action | the driver |
//! |---|---|
//! | [`Action::Io`] | writes with `write_to` while [`Want::write`] and the socket takes bytes; reads and feeds `handle_read` (or `read_buffer` + `handle_read_in_place`) while [`Want::read`] and the socket has bytes; if [`Want::resume`], lets other connections run and then calls `resume`; otherwise waits for the readiness it wants or [`Want::timeout`] (then `handle_timeout`) |
//! | [`Action::ShutdownWrite`] | sends end-of-stream (`shutdown(Write)`) and keeps the socket |
//! | [`Action::QueryUnsent`] | answers `handle_unsent` with the bytes the kernel still holds for the peer (`SIOCOUTQ`), or `None` where it cannot tell |
//! | [`Action::Close`] | closes the socket (with a reset for [`CloseHow::Abort`]); the connection is finished |
//!
//! Every rule (when to read, the close's flush and deadline, the lingering close, the
//! shutdown deadline, fairness between connections, connection logs) lives in the core; a
//! driver only moves bytes, readiness and time.

use std::time::{Duration, Instant};

use super::CloseHow;

/// What a driver does next with a connection's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Move bytes, then wait: see [`Want`].
    Io(Want),
    /// Send end-of-stream now (`shutdown(Write)`) and keep reading: every byte queued has
    /// been written and the connection lingers, dropping what the peer still sends, until
    /// the peer's EOF, until the peer has everything (see [`Action::QueryUnsent`]) or the
    /// close's deadline. Closing with unread input would make the kernel reset the
    /// connection and destroy answers still on their way. Reported once.
    ShutdownWrite,
    /// Report how many bytes the kernel still holds for the peer (`ioctl(SIOCOUTQ)` on
    /// Linux) with `handle_unsent`. Once it is zero and the peer has sent nothing since the
    /// last query, nothing a close could destroy is left and the connection is released.
    QueryUnsent,
    /// Close the socket this way; the connection is finished. Reported on every later call.
    Close(CloseHow),
}

/// The I/O a connection wants; see [`Action::Io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Want {
    /// Read from the socket while it has bytes.
    pub read: bool,
    /// Bytes wait to be written.
    pub write: bool,
    /// Call `handle_timeout` at this instant.
    pub timeout: Option<Instant>,
    /// Handler work waits, but this connection used its turn: let the others run first,
    /// then call `resume` (without waiting for readiness).
    pub resume: bool,
}

/// First wait between two send-queue queries of a lingering connection; doubled each time.
/// It is also how long a peer must have been quiet before the connection is released.
pub(crate) const UNSENT_FIRST: Duration = Duration::from_millis(10);
/// Longest wait between two send-queue queries.
pub(crate) const UNSENT_MAX: Duration = Duration::from_millis(100);

/// Where a lingering connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Linger {
    /// Released at this instant whatever happens.
    pub deadline: Instant,
    /// When to ask for the send queue next; `None` once the driver said it cannot tell.
    pub query_at: Option<Instant>,
    /// The wait after the next query.
    pub backoff: Duration,
    /// The peer sent bytes since the last query.
    pub heard: bool,
}

impl Linger {
    pub(crate) fn new(now: Instant, deadline: Instant) -> Self {
        Self {
            deadline,
            query_at: Some(crate::deadline_after(now, UNSENT_FIRST)),
            backoff: UNSENT_FIRST,
            heard: false,
        }
    }

    /// The driver answered a query: true when the connection can be released.
    pub(crate) fn unsent(&mut self, now: Instant, unsent: Option<usize>) -> bool {
        let heard = std::mem::take(&mut self.heard);
        match unsent {
            Some(0) if !heard => return true,
            Some(_) => {
                self.query_at = Some(crate::deadline_after(now, self.backoff));
                self.backoff = (self.backoff * 2).min(UNSENT_MAX);
            }
            None => self.query_at = None,
        }
        false
    }

    pub(crate) fn next_wake(&self) -> Instant {
        self.query_at
            .map_or(self.deadline, |q| q.min(self.deadline))
    }
}
