//! Async datagram handlers on tokio: one socket loop per socket drives the core's
//! [`AsyncDatagramServer`], which owns and polls the routines itself (their rules, their
//! receives and sends, containment). This loop only moves datagrams, send results, timers
//! and wake-ups between the socket and the core.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use easynet_core::datagram::{
    AsyncDatagramHandler, AsyncDatagramServer, AsyncOutput, DatagramConfig,
};
use easynet_core::handler::Service;
use easynet_core::protocol::DatagramServerProtocol;
use easynet_core::stats::SocketDrops;
use tokio_util::sync::CancellationToken;

use crate::DropCounter;
use crate::conn::now;
use crate::datagram_server::{READ_BUDGET, Reads, read_once};
use crate::dgram::{DgramSocket, Event, Wait};

/// One socket's loop for async handlers, until cancelled or closed; then the routines are
/// dropped (none runs once this returns) and the datagrams they sent already go out.
pub(crate) async fn serve_socket<S, P, D>(
    socket: Arc<D>,
    service: Arc<S>,
    protocol: Arc<P>,
    config: DatagramConfig,
    cancel: CancellationToken,
    closed: CancellationToken,
    drops: DropCounter,
) -> io::Result<()>
where
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    let local = socket.local()?;
    let mut server =
        AsyncDatagramServer::new(service, protocol, local, config).map_err(io::Error::other)?;
    // Drops from before this run (a given socket, an earlier run) are not ours.
    let mut reads = Reads::new(SocketDrops::starting_at(
        server.recorder().clone(),
        socket.drop_count().unwrap_or(0),
    ));
    let mut counted = 0;
    let mut wait = Wait::new(&cancel, &closed);
    loop {
        let (next_timeout, resume) = send_transmits(&mut server, &*socket).await;
        let dropped = server.drops();
        drops.add(dropped - counted);
        counted = dropped;
        if resume {
            // Routines go on without waiting; the socket's datagrams get their turn first.
            if cancel.is_cancelled() || closed.is_cancelled() {
                break;
            }
            read_and_answer(&mut server, &*socket, &mut reads, &drops).await;
            server.resume(now());
            tokio::task::consume_budget().await;
            continue;
        }
        let event = wait
            .wait(&*socket, next_timeout, |cx| server.poll_wake(cx))
            .await;
        match event {
            Event::Stop => break,
            Event::Readable(res) => {
                res?;
                read_and_answer(&mut server, &*socket, &mut reads, &drops).await;
            }
            Event::Timer => server.handle_timeout(now()),
            Event::Woken => server.resume(now()),
        }
    }
    // Shutdown and close cancel the routines: dropped here, so none runs once this returns.
    server.shutdown(now());
    drops.add(server.drops() - counted);
    while let AsyncOutput::Transmit(_, t) = server.poll_output() {
        let _ = socket.try_send_to(&t.data, &t.to);
    }
    Ok(())
}

/// Sends what the routines sent, one datagram per call, each result back to its `send`,
/// until the server has nothing more: its next timer, and whether routines are ready to go
/// on ([`AsyncOutput::Idle`]).
///
/// Cancel safety: dropped while it waits for room, the datagram it was sending is lost and
/// the routine's `send` of it gets no result until shutdown (`Closed`); those sent stay
/// sent, and the rest stay in the server for a later call, which sends nothing twice.
/// `serve_socket` never drops it part-way, only whole with the server.
async fn send_transmits<S, P, D>(
    server: &mut AsyncDatagramServer<S, P, D::Addr>,
    socket: &D,
) -> (Option<Instant>, bool)
where
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    loop {
        match server.poll_output() {
            AsyncOutput::Transmit(id, t) => {
                let sent = socket.send_to(&t.data, &t.to).await.map(drop);
                server.handle_sent(now(), id, sent);
            }
            AsyncOutput::Idle {
                next_timeout,
                resume,
            } => return (next_timeout, resume),
            _ => {}
        }
    }
}

/// Reads what the socket has, at most [`READ_BUDGET`] datagrams, answering each read
/// before the next as the portable loop does: what the routines sent goes out (each result
/// back to its `send`) and they go on ([`AsyncDatagramServer::resume`]), turn after turn
/// until none is ready. So a read's requests, and the datagrams queued behind them, are let
/// go of before the next read (unless a handler keeps one), whose buffer is then free
/// again: a batch read in place, not one datagram copied. A read of `n` datagrams gets at
/// most `n` turns: a routine that always sends again keeps neither the socket from being
/// read nor the loop from stopping.
///
/// Cancel safety: that of [`send_transmits`]; the datagrams read are in the server already.
async fn read_and_answer<S, P, D>(
    server: &mut AsyncDatagramServer<S, P, D::Addr>,
    socket: &D,
    reads: &mut Reads,
    drops: &DropCounter,
) where
    S: Service,
    S::Handler: AsyncDatagramHandler<Request = P::Request, Response = P::Response>,
    P: DatagramServerProtocol,
    D: DgramSocket,
{
    let mut read = 0;
    while read < READ_BUDGET {
        let deliver = |from, data| server.handle_datagram(now(), from, data);
        let Some(n) = read_once(socket, reads, drops, deliver) else {
            break;
        };
        read += n;
        for turn in 0..=n {
            let (_, ready) = send_transmits(server, socket).await;
            if !ready || turn == n {
                break;
            }
            server.resume(now());
        }
    }
}

#[cfg(test)]
mod tests;
