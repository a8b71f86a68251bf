//! What a connection tells the server's [`Recorder`](crate::stats::Recorder): its counts,
//! how it ended, and whether a client-triggered line may be written.

use std::time::Instant;

use super::Connection;
use crate::protocol::StreamProtocol;
use crate::stats::CloseReason;
use crate::stream::Role;

impl<P: StreamProtocol, R: Role<P>> Connection<P, R> {
    /// Records why the connection ends, unless a cause is known already.
    pub(super) fn end_because(&mut self, reason: CloseReason) {
        self.reason.get_or_insert(reason);
    }

    /// The per-peer budget of the server's recorder: `Some(suppressed)` means write the line.
    /// Without a recorder every line is written (a client connection: the peer is a server).
    pub(crate) fn log_budget(&self, now: Instant) -> Option<u64> {
        match &self.config.recorder {
            Some(r) => r.check_log(&self.info.peer, now),
            None => Some(0),
        }
    }

    /// Adds the counts gathered since the last call to the recorder: once per
    /// `poll_action`, so a request costs plain increments.
    pub(super) fn fold_counts(&mut self) {
        if let Some(r) = &self.config.recorder
            && self.counts.is_dirty()
        {
            self.counts.fold(r);
        }
    }

    /// The connection is over: the last counts and its reason, once.
    pub(super) fn count_end(&mut self) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        if let Some(r) = &self.config.recorder {
            self.counts.fold(r);
            r.add_close(self.reason.unwrap_or(CloseReason::Error));
        }
    }

    /// A handler (or its factory, or an async handler's future) ended with an error.
    pub(crate) fn count_handler_error(&mut self) {
        self.counts.handler_errors += 1;
        self.end_because(CloseReason::Error);
    }

    /// User code panicked on this connection.
    pub(crate) fn count_handler_panic(&mut self) {
        self.counts.handler_panics += 1;
        self.end_because(CloseReason::Error);
    }
}
