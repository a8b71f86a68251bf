//! The client end of a simulated connection: a protocol-speaking `Connection`, or raw bytes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::Pair;
use crate::handler::ConnInfo;
use crate::protocol::{StreamClientProtocol, StreamServerProtocol};
use crate::sim::net::{Ctx, step};
use crate::stream::{Action, ClientRole, CloseHow, Connection, Driven, Want};

/// A client that speaks no protocol and no TLS ([`StreamSim::connect_raw`]): it sends
/// only the bytes the test gives it and keeps what it reads (the tap records it).
pub(super) struct Raw {
    pub(super) info: ConnInfo,
    pub(super) close: Option<CloseHow>,
}

impl Driven for Raw {
    fn poll_action(&mut self, _: Instant) -> Action {
        match self.close {
            Some(how) => Action::Close(how),
            None => Action::Io(Want {
                read: true,
                write: false,
                timeout: None,
                resume: false,
            }),
        }
    }
    fn handle_read(&mut self, _: Instant, _: &[u8]) {}
    fn read_buffer(&mut self) -> Option<&mut bytes::BytesMut> {
        None
    }
    fn handle_read_in_place(&mut self, _: Instant, _: usize) {}
    fn handle_eof(&mut self, _: Instant) {}
    fn handle_io_error(&mut self, _: Instant) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn handle_unsent(&mut self, _: Instant, _: Option<usize>) {}
    fn resume(&mut self, _: Instant) {}
    fn shutdown(&mut self, _: Instant, _: Instant) {}
    fn write_to(&mut self, _: &mut dyn std::io::Write) -> std::io::Result<usize> {
        Ok(0)
    }
    fn read_size(&self) -> usize {
        64 * 1024
    }
    fn info(&self) -> &ConnInfo {
        &self.info
    }
}

/// The client end of a connection.
pub(super) enum Client<P: StreamServerProtocol + StreamClientProtocol> {
    /// Speaks the protocol (and TLS): what [`StreamSim::send`] and the replies use.
    Speaking(Box<Connection<P, ClientRole>>),
    /// Bytes only ([`StreamSim::connect_raw`]).
    Raw(Raw),
}

impl<P: StreamServerProtocol + StreamClientProtocol> Client<P> {
    pub(super) fn driven(&mut self) -> &mut dyn Driven {
        match self {
            Self::Speaking(conn) => &mut **conn,
            Self::Raw(raw) => raw,
        }
    }
}

/// One step of the client, with its reads recorded.
pub(super) fn client_step<P: StreamServerProtocol + StreamClientProtocol>(
    pair: &mut Pair<P>,
    ctx: &mut Ctx<'_>,
) -> bool {
    step(
        pair.client.driven(),
        &mut pair.client_end,
        &mut pair.to_client,
        &mut pair.to_server,
        ctx,
        Some(&mut pair.bytes),
    )
}

/// Drops a session (user `Drop` code), containing a panic.
pub(super) fn drop_contained(session: Box<dyn Driven>) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| drop(session))) {
        std::mem::forget(panic);
    }
}
