//! [`Driven`]: what a server's connection loop calls, whatever handler kind runs behind it.
//!
//! [`Session`](super::Session) (portable handlers) and
//! [`AsyncSession`](super::AsyncSession) (async handlers) both implement it, so a driver
//! writes one connection loop per runtime and every rule stays in the core.

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
    /// Bytes to read per socket read.
    fn read_size(&self) -> usize;
    /// Who is at the other end.
    fn info(&self) -> &ConnInfo;
    /// Ready when something outside the connection (an async handler's timer or channel)
    /// woke it: the driver then calls [`resume`](Self::resume). Registers `cx`'s waker
    /// otherwise. Portable handlers are never woken from outside.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Pending
    }
}
