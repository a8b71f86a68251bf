//! Async datagram handlers on tokio: one socket loop per socket drives the core's
//! [`AsyncDatagramServer`], which owns and polls the routines itself (their rules, their
//! receives and sends, containment). This loop only moves datagrams, send results, timers
//! and wake-ups between the socket and the core.

use std::io;
use std::sync::Arc;

use easynet_core::datagram::{
    AsyncDatagramHandler, AsyncDatagramServer, AsyncOutput, DatagramConfig,
};
use easynet_core::handler::Service;
use easynet_core::protocol::DatagramServerProtocol;
use easynet_core::stats::SocketDrops;
use tokio_util::sync::CancellationToken;

use crate::DropCounter;
use crate::conn::now;
use crate::datagram_server::read_batch;
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
    let mut unnamed = 0u64;
    // Drops from before this run (a given socket, an earlier run) are not ours.
    let mut socket_drops =
        SocketDrops::starting_at(server.recorder().clone(), socket.drop_count().unwrap_or(0));
    let mut counted = 0;
    let mut wait = Wait::new(&cancel, &closed);
    loop {
        // Send what the routines sent; each result goes back to its `send`.
        let (next_timeout, resume) = loop {
            match server.poll_output() {
                AsyncOutput::Transmit(id, t) => {
                    let sent = socket.send_to(&t.data, &t.to).await.map(drop);
                    server.handle_sent(now(), id, sent);
                }
                AsyncOutput::Idle {
                    next_timeout,
                    resume,
                } => break (next_timeout, resume),
                _ => {}
            }
        };
        let dropped = server.drops();
        drops.add(dropped - counted);
        counted = dropped;
        if resume {
            // Routines go on without waiting; the socket's datagrams get their turn first.
            if cancel.is_cancelled() || closed.is_cancelled() {
                break;
            }
            read_batch(
                &*socket,
                &mut socket_drops,
                &mut unnamed,
                &drops,
                |from, data| server.handle_datagram(now(), from, data),
            );
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
                read_batch(
                    &*socket,
                    &mut socket_drops,
                    &mut unnamed,
                    &drops,
                    |from, data| server.handle_datagram(now(), from, data),
                );
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
