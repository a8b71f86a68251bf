//! [`Driven`]: what a server's connection loop calls, whatever handler kind runs behind it.
//!
//! [`Session`](super::Session) (portable handlers), [`AsyncSession`](super::AsyncSession)
//! (async handlers) and a bare [`Connection`](super::Connection) (what a client drives)
//! implement it, so a driver writes one connection loop per runtime and every rule stays in
//! the core.

use std::io;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

use super::Action;
use crate::handler::ConnInfo;

/// One server connection as its driver sees it: events in, [`Action`]s out.
pub trait Driven: Send + 'static {
    /// What to do next; see [`Action`].
    fn poll_action(&mut self, now: Instant) -> Action;
    /// Bytes read from the socket.
    fn handle_read(&mut self, now: Instant, data: &[u8]);
    /// Where to read in place, when that is better (then [`handle_read_in_place`](Self::handle_read_in_place)).
    fn read_buffer(&mut self) -> Option<&mut BytesMut>;
    /// `n` bytes were read into [`read_buffer`](Self::read_buffer); 0 means end of stream.
    fn handle_read_in_place(&mut self, now: Instant, n: usize);
    /// The peer closed its write side (a read returned 0).
    fn handle_eof(&mut self, now: Instant);
    /// Reading or writing failed: the connection is gone.
    fn handle_io_error(&mut self, now: Instant);
    /// The time from [`Want::timeout`](super::Want::timeout) has come.
    fn handle_timeout(&mut self, now: Instant);
    /// The answer to [`Action::QueryUnsent`].
    fn handle_unsent(&mut self, now: Instant, unsent: Option<usize>);
    /// Goes on after [`Want::resume`](super::Want::resume).
    fn resume(&mut self, now: Instant);
    /// A server shutdown began: answer what was read, close by `deadline`.
    fn shutdown(&mut self, now: Instant, deadline: Instant);
    /// Writes queued bytes to `out` (the socket) with one write call; 0 when none wait.
    fn write_to(&mut self, out: &mut dyn io::Write) -> io::Result<usize>;
    /// Bytes to read with the next socket read (it follows the traffic: see
    /// [`StreamConfig::read_size`](super::StreamConfig::read_size)); a driver's shared read
    /// buffer holds [`StreamConfig::max_read_size`](super::StreamConfig::max_read_size).
    fn read_size(&self) -> usize;
    /// Who is at the other end.
    fn info(&self) -> &ConnInfo;
    /// True when something outside the connection can wake it ([`poll_wake`](Self::poll_wake)):
    /// an async handler. A driver with nothing else to wait for knows it is stuck otherwise.
    fn wakeable(&self) -> bool {
        false
    }

    /// False once a [`write_to`](Self::write_to) left nothing queued (see
    /// [`want_after_write`](Self::want_after_write)). True (always ask again) by default.
    fn wants_write(&self) -> bool {
        true
    }

    /// After a [`write_to`](Self::write_to) for `want` that did not fail: the
    /// [`Want`](super::Want) to act on next without asking
    /// [`poll_action`](Self::poll_action) again, or `None` to ask. A write only drains the
    /// queue, so once it emptied it (not [`wants_write`](Self::wants_write)), a `want` that
    /// had `read` set still holds, writing aside, with the same timeout, unless something
    /// outside the connection can change it ([`wakeable`](Self::wakeable)). One
    /// `poll_action` less per answer.
    fn want_after_write(&self, want: super::Want) -> Option<super::Want> {
        (want.read && !self.wants_write() && !self.wakeable()).then_some(super::Want {
            write: false,
            ..want
        })
    }

    /// The `Want` a turn ended on (the last [`poll_action`](Self::poll_action) or
    /// [`want_after_write`](Self::want_after_write) acted on), for the next turn to start
    /// from when a socket event begins it, or `None` to ask. Until the driver calls the
    /// connection again (`handle_timeout`, `shutdown`, `resume`...), only the socket changes
    /// what it waits for, unless handler work waits (`want.resume`) or something outside
    /// the connection can change it ([`wakeable`](Self::wakeable)). One `poll_action` less
    /// per request.
    fn want_until_event(&self, want: super::Want) -> Option<super::Want> {
        (!want.resume && !self.wakeable()).then_some(want)
    }

    /// Ready when something outside the connection (an async handler's timer or channel)
    /// woke it: the driver then calls [`resume`](Self::resume). Registers `cx`'s waker
    /// otherwise. Portable handlers are never woken from outside.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Pending
    }
}

impl<P: crate::protocol::StreamProtocol, R: super::Role<P>> Driven for super::Connection<P, R> {
    fn poll_action(&mut self, now: Instant) -> Action {
        super::Connection::poll_action(self, now)
    }
    fn handle_read(&mut self, now: Instant, data: &[u8]) {
        super::Connection::handle_read(self, now, data);
    }
    fn read_buffer(&mut self) -> Option<&mut BytesMut> {
        super::Connection::read_buffer(self)
    }
    fn handle_read_in_place(&mut self, now: Instant, n: usize) {
        super::Connection::handle_read_in_place(self, now, n);
    }
    fn handle_eof(&mut self, now: Instant) {
        super::Connection::handle_eof(self, now);
    }
    fn handle_io_error(&mut self, now: Instant) {
        super::Connection::handle_io_error(self, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        super::Connection::handle_timeout(self, now);
    }
    fn handle_unsent(&mut self, now: Instant, unsent: Option<usize>) {
        super::Connection::handle_unsent(self, now, unsent);
    }
    fn resume(&mut self, now: Instant) {
        let _ = now; // no handler: nothing is ever left over
    }
    fn shutdown(&mut self, now: Instant, deadline: Instant) {
        super::Connection::shutdown(self, now, deadline);
    }
    fn write_to(&mut self, out: &mut dyn io::Write) -> io::Result<usize> {
        super::Connection::write_to(self, out)
    }
    fn read_size(&self) -> usize {
        super::Connection::read_size(self)
    }
    fn wants_write(&self) -> bool {
        super::Connection::wants_write(self)
    }
    fn info(&self) -> &ConnInfo {
        super::Connection::info(self)
    }
}
