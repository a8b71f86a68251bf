//! The simulated network of one stream connection: two pipes (one per direction) with the
//! kernel's rules that matter to a server (bounded buffers, FIN, and the reset a close with
//! unread input sends, which destroys what the peer has not read yet), and one step of a
//! driver over a [`Driven`] endpoint, by the driver contract.

use std::io;
use std::time::Instant;

use bytes::BytesMut;

use super::{Chance, Event, Faults, Side};
use crate::stream::{Action, CloseHow, Driven};

/// One direction of a connection: bytes written and not yet read.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    pub(crate) buf: BytesMut,
    /// The writer shut down its write side.
    pub(crate) fin: bool,
    /// A reset travels to the reader.
    pub(crate) reset: bool,
}

/// What one side of a connection has been through.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) side: Side,
    /// Its socket is closed.
    pub(crate) closed: Option<CloseHow>,
    /// It was told of the peer's FIN.
    pub(crate) eof_seen: bool,
    /// It was told of a reset.
    pub(crate) reset_seen: bool,
    /// It reads when it wants to (a client can stop reading).
    pub(crate) reading: bool,
    /// The timer it asked for at its last step.
    pub(crate) timer: Option<Instant>,
}

impl End {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            closed: None,
            eof_seen: false,
            reset_seen: false,
            reading: true,
            timer: None,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.closed.is_some() || self.reset_seen
    }
}

/// The writer handed to `write_to`: each write takes 1 to `max_write` bytes, all of them at
/// most `room`; then `WouldBlock`.
struct Writer<'a> {
    pipe: &'a mut BytesMut,
    room: usize,
    max_write: usize,
    chance: &'a mut Chance,
}

impl io::Write for Writer<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self
            .chance
            .size(data.len().min(self.room), self.max_write)
            .min(data.len());
        self.pipe.extend_from_slice(&data[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a step needs besides the endpoint and its pipes.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) faults: &'a Faults,
    pub(crate) chance: &'a mut Chance,
    pub(crate) client: u64,
    pub(crate) trace: &'a mut dyn FnMut(Event),
}

/// Does what `d` asks once, as a driver would; true if anything happened.
pub(crate) fn step(
    d: &mut dyn Driven,
    end: &mut End,
    inbound: &mut Pipe,
    outbound: &mut Pipe,
    cx: &mut Ctx<'_>,
    tap: Option<&mut Vec<u8>>,
) -> bool {
    end.timer = None;
    if end.closed.is_some() {
        // A closed socket that receives data answers with a reset.
        if !inbound.buf.is_empty() && !outbound.reset {
            inbound.buf.clear();
            outbound.reset = true;
            return true;
        }
        return false;
    }
    if end.reset_seen {
        return false;
    }
    if inbound.reset {
        // Reported at the next read or write; unread bytes are gone.
        end.reset_seen = true;
        let lost = inbound.buf.len();
        inbound.buf.clear();
        (cx.trace)(Event::Reset {
            client: cx.client,
            to: end.side,
            lost,
        });
        d.handle_io_error(cx.now);
        return true;
    }
    match d.poll_action(cx.now) {
        Action::Io(want) => {
            end.timer = want.timeout;
            let mut progress = false;
            if want.write && !outbound.fin {
                let room = cx.faults.socket_buffer.saturating_sub(outbound.buf.len());
                if room > 0 {
                    let mut w = Writer {
                        pipe: &mut outbound.buf,
                        room,
                        max_write: cx.faults.max_write,
                        chance: cx.chance,
                    };
                    match d.write_to(&mut w) {
                        Ok(n) if n > 0 => progress = true,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            d.handle_io_error(cx.now);
                            progress = true;
                        }
                    }
                }
            }
            if want.read && end.reading {
                if !inbound.buf.is_empty() {
                    read(d, inbound, cx, end.side, tap);
                    progress = true;
                } else if inbound.fin && !end.eof_seen {
                    end.eof_seen = true;
                    d.handle_eof(cx.now);
                    progress = true;
                }
            }
            if want.resume {
                d.resume(cx.now);
                progress = true;
            }
            if want.timeout.is_some_and(|t| t <= cx.now) {
                (cx.trace)(Event::Timer {
                    client: cx.client,
                    side: end.side,
                });
                d.handle_timeout(cx.now);
                progress = true;
            }
            progress
        }
        Action::ShutdownWrite => {
            outbound.fin = true;
            (cx.trace)(Event::Fin {
                client: cx.client,
                from: end.side,
            });
            true
        }
        Action::QueryUnsent => {
            // Bytes the peer has not read yet stand for the kernel's unacknowledged bytes.
            d.handle_unsent(cx.now, Some(outbound.buf.len()));
            true
        }
        Action::Close(how) => {
            end.closed = Some(how);
            (cx.trace)(Event::Closed {
                client: cx.client,
                side: end.side,
                abort: how == CloseHow::Abort,
            });
            outbound.fin = true;
            // A reset, or a close with unread input (the kernel resets then).
            if how == CloseHow::Abort || !inbound.buf.is_empty() {
                outbound.reset = true;
            }
            inbound.buf.clear();
            true
        }
    }
}

/// One read of 1 to `max_read` bytes (at most the endpoint's read size), into the
/// endpoint's own buffer when it offers one.
fn read(
    d: &mut dyn Driven,
    inbound: &mut Pipe,
    cx: &mut Ctx<'_>,
    side: Side,
    tap: Option<&mut Vec<u8>>,
) {
    let limit = d.read_size().max(1);
    let n = cx
        .chance
        .size(inbound.buf.len(), cx.faults.max_read)
        .min(limit);
    let chunk = if let Some(buf) = d.read_buffer() {
        let n = n.min(buf.capacity() - buf.len()).max(1);
        let chunk = inbound.buf.split_to(n.min(inbound.buf.len()));
        buf.extend_from_slice(&chunk);
        d.handle_read_in_place(cx.now, chunk.len());
        chunk
    } else {
        let chunk = inbound.buf.split_to(n);
        d.handle_read(cx.now, &chunk);
        chunk
    };
    if let Some(tap) = tap {
        tap.extend_from_slice(&chunk);
    }
    (cx.trace)(Event::Read {
        client: cx.client,
        to: side,
        bytes: chunk.len(),
    });
}
