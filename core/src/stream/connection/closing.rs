//! How a connection ends: a graceful close (flush, then FIN or TLS close_notify), an
//! abortive one, a shutdown's deadline.

use super::*;

impl<P: StreamProtocol, R: Role<P>> Connection<P, R> {
    /// Begins a graceful close: queued bytes are flushed (and TLS close_notify exchanged when
    /// standard-compatible), bounded by the shutdown timeout; then the socket is closed.
    pub fn close(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Handshaking { .. } | Phase::Open) {
            return;
        }
        self.end_because(if self.shutdown.is_some() {
            CloseReason::Shutdown
        } else if self.eof {
            CloseReason::ByPeer
        } else {
            CloseReason::Normal
        });
        self.closing = true;
        if let Phase::Handshaking { .. } = self.phase {
            self.phase = Phase::Closed(CloseHow::Abort);
            return;
        }
        let mut deadline = self.close_deadline(now);
        if let Some(d) = self.shutdown {
            deadline = deadline.min(d);
        }
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut await_close_notify = false;
        #[cfg(feature = "tls")]
        self.flush_plaintext(); // the answers go before the close_notify
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut()
            && self.config.tls_standard_compatible
        {
            tls.send_close_notify();
            // During a server shutdown the deadline is for flushing answers, not for
            // waiting on every idle peer's close_notify.
            await_close_notify = !self.eof && self.shutdown.is_none();
        }
        self.rbuf.clear();
        self.phase = Phase::Closing {
            deadline,
            then: CloseHow::Graceful,
            await_close_notify,
        };
    }

    /// Flushes what is queued, then closes with a reset (after a handler error).
    pub fn close_abortively(&mut self, now: Instant) {
        if !self.is_closed() {
            self.rbuf.clear();
            self.fail(now);
        }
    }

    /// Drops everything and closes with a reset now.
    pub fn abort(&mut self) {
        self.end_because(CloseReason::Normal);
        self.closing = true;
        self.clear_writes();
        self.rbuf.clear();
        self.phase = Phase::Closed(CloseHow::Abort);
    }

    /// A server shutdown began: read nothing more; the owner answers what is buffered and
    /// closes by `deadline`. A connection still in its TLS handshake is dropped.
    pub fn shutdown(&mut self, now: Instant, deadline: Instant) {
        let _ = now;
        self.shutdown = Some(self.shutdown.map_or(deadline, |d| d.min(deadline)));
        match &mut self.phase {
            Phase::Handshaking { .. } => {
                self.end_because(CloseReason::Shutdown);
                self.abort();
            }
            Phase::Closing { deadline: d, .. } | Phase::Fin { deadline: d } => {
                *d = (*d).min(deadline);
            }
            Phase::Lingering(l) => l.deadline = l.deadline.min(deadline),
            Phase::Open | Phase::Closed(_) => {}
        }
    }

    /// Marks the connection closing without closing it yet (sends are refused from now on).
    pub fn mark_closing(&mut self) {
        self.closing = true;
    }

    /// True when a close's flush (and close_notify exchange) is complete.
    pub(super) fn flushed(&mut self, await_close_notify: bool) -> bool {
        #[allow(unused_mut)]
        let mut waiting = await_close_notify && !self.eof;
        #[cfg(feature = "tls")]
        {
            self.seal();
            if let Some(tls) = &self.tls {
                waiting &= !tls.peer_closed();
            }
        }
        self.queued() == 0 && !waiting
    }

    /// `Some` once the socket must be closed, and how (a graceful close sends FIN and
    /// closes, without lingering); then on every later call. For the clients' loops;
    /// a server's loop uses [`poll_action`](Self::poll_action).
    pub fn poll_close(&mut self) -> Option<CloseHow> {
        let phase = self.phase; // a copy: `flushed` needs `self`
        match phase {
            Phase::Closing {
                then,
                await_close_notify,
                ..
            } if self.flushed(await_close_notify) => self.phase = Phase::Closed(then),
            Phase::Fin { .. } | Phase::Lingering(_) => {
                self.phase = Phase::Closed(CloseHow::Graceful);
            }
            _ => {}
        }
        match self.phase {
            Phase::Closed(how) => Some(how),
            _ => None,
        }
    }
}
